"""`make_grid(tensor, nrow)` and `save_image(tensor, path, nrow)`: `(N, C, H, W)` images tiled `nrow` to a row,
as a tensor or a PNG (what the scripts log and save)."""

import numpy as np
import torch
from PIL import Image


def make_grid(tensor, nrow=8, normalize=False, scale_each=False, **_):
    """The images tiled `nrow` to a row, `(C, rows * H, nrow * W)`; `normalize` maps each image (`scale_each`) or
    the whole batch to [0, 1] by its min and max, as torchvision does without `value_range`."""
    images = tensor.detach().cpu().float().clone()
    if normalize:
        groups = images if scale_each else [images]
        for group in groups:
            low, high = group.min(), group.max()
            group.sub_(low).div_(max(float(high - low), 1e-5))
    n, channels, height, width = images.shape
    rows = -(-n // nrow)
    grid = torch.zeros(channels, rows * height, nrow * width)
    for i, image in enumerate(images):
        row, col = divmod(i, nrow)
        grid[:, row * height : (row + 1) * height, col * width : (col + 1) * width] = image
    return grid


def save_image(tensor, path, nrow=8, **_):
    grid = make_grid(tensor.clamp(0, 1), nrow=nrow).numpy()
    grid = (grid * 255 + 0.5).astype(np.uint8)
    Image.fromarray(grid[0] if grid.shape[0] == 1 else grid.transpose(1, 2, 0)).save(path)
