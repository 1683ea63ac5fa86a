"""`SyntheticSet`: the learnable distilled images, their labels, and conversion to a `datasets.Dataset`."""

import math
from pathlib import Path

import numpy as np
import torch
from datasets import Array3D, ClassLabel, Dataset, Features, Image, List, Value
from PIL import Image as PILImage
from safetensors.torch import load_file
from torch import nn

from .checkpointing import save_tensors
from .constants import SOFT_LABEL_COLUMN


class SyntheticSet(nn.Module):
    """A distilled set: `images_per_class` images for each class, stored class-major.

    Row `c * images_per_class + j` is image `j` of class `c`. `images` holds the exact normalised values that
    are optimised (and exported as `pixel_values`); `mean`/`std` turn them back into viewable pixels.

    Args:
        images (`torch.Tensor` of shape `(num_classes * images_per_class, C, H, W)`): Normalised images.
        num_classes (`int`): Number of classes.
        class_names (`list[str]`): Class names, in label order.
        mean (`list[float]`), std (`list[float]`): Per-channel normalisation, in [0, 1] pixel units.
        requires_grad (`bool`, *optional*, defaults to `True`): Whether the images are learnable.
        label_logits (`torch.Tensor` of shape `(num_classes * images_per_class, num_classes)`, *optional*):
            Learnable soft labels (logits; the targets are their softmax). `None`: hard labels only.
        step_size (`float`, *optional*): A learnable learning rate (MTT, meta-learning), used by evaluation.
    """

    def __init__(
        self,
        images: torch.Tensor,
        num_classes: int,
        class_names: list[str],
        mean: list[float],
        std: list[float],
        requires_grad: bool = True,
        label_logits: torch.Tensor | None = None,
        step_size: float | None = None,
    ):
        super().__init__()
        if images.shape[0] % num_classes:
            raise ValueError(f"{images.shape[0]} images cannot be split evenly into {num_classes} classes.")
        self.num_classes = num_classes
        self.images_per_class = images.shape[0] // num_classes
        self.class_names = list(class_names)
        self.mean = list(mean)
        self.std = list(std)
        self.images = nn.Parameter(images.detach().clone().float(), requires_grad=requires_grad)
        labels = torch.arange(num_classes).repeat_interleave(self.images_per_class)
        self.register_buffer("labels", labels, persistent=False)
        self.label_logits = None
        if label_logits is not None:
            if tuple(label_logits.shape) != (images.shape[0], num_classes):
                raise ValueError(
                    f"label_logits must have shape {(images.shape[0], num_classes)}, got {tuple(label_logits.shape)}."
                )
            self.label_logits = nn.Parameter(label_logits.detach().clone().float(), requires_grad=requires_grad)
        self.step_size = None
        if step_size is not None:
            self.step_size = nn.Parameter(torch.tensor(float(step_size)), requires_grad=requires_grad)

    @staticmethod
    def initial_label_logits(labels: torch.Tensor, num_classes: int, confidence: float = 0.9) -> torch.Tensor:
        """Logits whose softmax puts `confidence` on the true class and spreads the rest evenly (label smoothing).

        Learnable labels start close to the hard ones; starting exactly one-hot would need infinite logits.
        """
        if not 1.0 / num_classes < confidence < 1.0:
            raise ValueError(f"confidence must be in (1/num_classes, 1), got {confidence}.")
        off = (1.0 - confidence) / (num_classes - 1)
        logits = torch.full((len(labels), num_classes), math.log(off))
        logits[torch.arange(len(labels)), labels] = math.log(confidence)
        return logits

    @property
    def has_soft_labels(self) -> bool:
        return self.label_logits is not None

    def targets(self) -> torch.Tensor:
        """Training targets: soft-label probabilities (differentiable) when learned, else the hard labels."""
        if self.label_logits is None:
            return self.labels
        return self.label_logits.softmax(dim=-1)

    def targets_of(self, classes: list[int]) -> torch.Tensor:
        """`targets()` of the rows of `classes`, class-major."""
        if list(classes) == list(range(self.num_classes)):
            return self.targets()
        rows = self.rows(classes).to(self.labels.device)
        if self.label_logits is None:
            return self.labels[rows]
        return self.label_logits[rows].softmax(dim=-1)

    @property
    def learned_lr(self) -> float | None:
        """The learned step size as a float (`None` when the set has none)."""
        return None if self.step_size is None else float(self.step_size.detach())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def rows(self, classes: list[int]) -> torch.LongTensor:
        """Row indices of the images of `classes`, class-major."""
        ipc = self.images_per_class
        starts = torch.tensor(classes, dtype=torch.long).unsqueeze(1) * ipc
        return (starts + torch.arange(ipc)).flatten()

    def images_of(self, classes: list[int]) -> torch.Tensor:
        """The (differentiable) images of `classes`, class-major."""
        if list(classes) == list(range(self.num_classes)):
            return self.images
        return self.images[self.rows(classes).to(self.images.device)]

    def denormalized(self) -> torch.Tensor:
        """The images in [0, 1] pixel units (clamped), detached, on CPU."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (self.images.detach().cpu() * std + mean).clamp(0, 1)

    # ------------------------------------------------------------------ export

    def to_pil_images(self) -> list[PILImage.Image]:
        """De-normalised previews (mode `L` for one channel, `RGB` for three)."""
        arrays = (self.denormalized() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        if arrays.shape[-1] == 1:
            return [PILImage.fromarray(a[..., 0], mode="L") for a in arrays]
        return [PILImage.fromarray(a[..., :3], mode="RGB") for a in arrays]

    def to_dataset(self) -> Dataset:
        """The distilled set as a `datasets.Dataset`.

        Columns: `image` (de-normalised PIL preview), `pixel_values` (float32, C x H x W, the exact optimised
        values), `label` (`ClassLabel` with the source names) and, when labels were learned, `soft_label`
        (`num_classes` float32 probabilities per row).
        """
        features = {
            "image": Image(),
            "pixel_values": Array3D(shape=self.image_shape, dtype="float32"),
            "label": ClassLabel(names=self.class_names),
        }
        data = {
            "image": self.to_pil_images(),
            "pixel_values": self.images.detach().cpu().float().numpy(),
            "label": self.labels.tolist(),
        }
        if self.label_logits is not None:
            features[SOFT_LABEL_COLUMN] = List(Value("float32"), length=self.num_classes)
            data[SOFT_LABEL_COLUMN] = self.targets().detach().cpu().float().numpy()
        return Dataset.from_dict(data, features=Features(features))

    def grid_image(self, max_cell: int = 64) -> PILImage.Image:
        """One row per class, `images_per_class` columns; small images are enlarged (nearest) for viewing."""
        previews = self.to_pil_images()
        height, width = self.image_shape[1:]
        scale = max(1, math.floor(max_cell / max(height, width)))
        cell_h, cell_w, pad = height * scale, width * scale, 2
        grid = PILImage.new(
            "RGB",
            (self.images_per_class * (cell_w + pad) + pad, self.num_classes * (cell_h + pad) + pad),
            color=(255, 255, 255),
        )
        for index, preview in enumerate(previews):
            row, col = divmod(index, self.images_per_class)
            cell = preview.convert("RGB").resize((cell_w, cell_h), PILImage.NEAREST)
            grid.paste(cell, (pad + col * (cell_w + pad), pad + row * (cell_h + pad)))
        return grid

    # ------------------------------------------------------------------ persistence (checkpoints)

    def save(self, path: str | Path) -> None:
        """Writes the learnable state as safetensors (the metadata holds names and normalisation)."""
        metadata = {
            "num_classes": str(self.num_classes),
            "class_names": "\x1f".join(self.class_names),
            "mean": ",".join(map(repr, self.mean)),
            "std": ",".join(map(repr, self.std)),
        }
        save_tensors({name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}, path, metadata)

    def load_state(self, path: str | Path) -> None:
        """Restores values written by `save` into this set (shapes must match)."""
        self.load_state_dict(load_file(str(path)))

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, mean: list[float], std: list[float], step_size: float | None = None
    ) -> "SyntheticSet":
        """Rebuilds a (frozen) set from `to_dataset()`'s output (`pixel_values`, `label`, optional `soft_label`)."""
        columns = ["pixel_values", "label"]
        if SOFT_LABEL_COLUMN in dataset.column_names:
            columns.append(SOFT_LABEL_COLUMN)
        data = dataset.with_format("numpy", columns=columns)[:]
        labels = torch.as_tensor(np.asarray(data["label"]), dtype=torch.long)
        order = torch.argsort(labels, stable=True)
        images = torch.as_tensor(np.asarray(data["pixel_values"]), dtype=torch.float32)[order]
        label_logits = None
        if SOFT_LABEL_COLUMN in data:
            # Stored as probabilities; their log is a logit vector with the same softmax.
            probabilities = torch.as_tensor(np.asarray(data[SOFT_LABEL_COLUMN]), dtype=torch.float32)[order]
            label_logits = probabilities.clamp_min(1e-12).log()
        names = dataset.features["label"].names
        return cls(
            images, len(names), names, mean, std, requires_grad=False, label_logits=label_logits, step_size=step_size
        )
