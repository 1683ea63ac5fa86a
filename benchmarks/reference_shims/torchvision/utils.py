"""`save_image(tensor, path, nrow)`: a PNG grid of `(N, C, H, W)` images in [0, 1] (what the scripts save)."""

import numpy as np
from PIL import Image


def save_image(tensor, path, nrow=8, **_):
    images = tensor.detach().cpu().clamp(0, 1).numpy()
    n, channels, height, width = images.shape
    rows = -(-n // nrow)
    grid = np.zeros((channels, rows * height, nrow * width), dtype=np.float32)
    for i, image in enumerate(images):
        row, col = divmod(i, nrow)
        grid[:, row * height : (row + 1) * height, col * width : (col + 1) * width] = image
    grid = (grid * 255 + 0.5).astype(np.uint8)
    Image.fromarray(grid[0] if channels == 1 else grid.transpose(1, 2, 0)).save(path)
