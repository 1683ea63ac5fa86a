"""Image splits as tensors ([`ImageData`]) and the image column of a dataset ([`find_columns`], checks).

Decoding, resizing and normalising the images is [`hf_distill.modalities.image_decoding`]; the modality that ties
them together is [`hf_distill.modalities.image.ImageModality`].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Array2D, Array3D, Dataset, Features, Image, LargeList, List, Value

from ..data import (
    COLUMN_MAPPING_HINT,
    checked_column_mapping,
    describe_columns,
    find_label_column,
    validate_labels,
)
from ..splits import LabelledSplit
from .zca import ZCAWhitening


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised images `(C, H, W)` or `(N, C, H, W)` back in `[0, 1]` pixel units: `x * std + mean`, clamped."""
    if not torch.is_floating_point(x):
        x = x.float()
    mean_ = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std_ = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std_ + mean_).clamp(0.0, 1.0)


IMAGE_COLUMN_CANDIDATES = ("pixel_values", "image", "img")
"""Names under which an already-tensor (numeric array) image column is recognised."""

# ---------------------------------------------------------------------------------------------------------------------
# ImageData
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class ImageData(LabelledSplit):
    """A labelled image split as normalised float tensors.

    Args:
        images (`torch.Tensor`):
            Images of shape `(N, C, H, W)`, `float32`, normalised as `(x - mean) / std` per channel where `x` is in
            `[0, 1]`.
        labels (`torch.Tensor`):
            Integer class indices of shape `(N,)`, `int64`.
        class_names (`list[str]`):
            Name of every class; `len(class_names)` is the number of classes (some may have no rows).
        mean (`list[float]`):
            Per-channel mean used for the normalisation, in `[0, 1]` pixel units.
        std (`list[float]`):
            Per-channel standard deviation used for the normalisation, in `[0, 1]` pixel units.
        zca ([`ZCAWhitening`], *optional*):
            When set, `images` are also ZCA-whitened with it (after the normalisation).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    mean: list[float]
    std: list[float]
    zca: ZCAWhitening | None = None
    _indices_by_class: list[torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.images.ndim != 4:
            raise ValueError(f"`images` must have shape (N, C, H, W), got {tuple(self.images.shape)}.")
        if self.labels.ndim != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"`labels` must have shape ({self.images.shape[0]},) to match `images`, got "
                f"{tuple(self.labels.shape)}."
            )
        self.mean = [float(m) for m in self.mean]
        self.std = [float(s) for s in self.std]
        if len(self.mean) != self.num_channels or len(self.std) != self.num_channels:
            raise ValueError(
                f"`mean` and `std` need one value per channel ({self.num_channels}), got {len(self.mean)} and "
                f"{len(self.std)}."
            )

    @property
    def inputs(self) -> torch.Tensor:
        """The images, under the name every modality's data shares (`TextData.inputs`)."""
        return self.images

    @inputs.setter
    def inputs(self, value: torch.Tensor) -> None:
        self.images = value

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape `(C, H, W)` of one image."""
        return tuple(self.images.shape[1:])

    @property
    def num_channels(self) -> int:
        """Number of channels `C`."""
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        """Spatial size `(H, W)`."""
        return tuple(self.images.shape[2:])

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise `[0, 1]` images with this split's `mean`/`std`.

        Args:
            x (`torch.Tensor`): Images of shape `(C, H, W)` or `(N, C, H, W)` in `[0, 1]`.

        Returns:
            `torch.Tensor`: `(x - mean) / std`, same shape.
        """
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: map normalised images back to `[0, 1]` pixel units.

        Args:
            x (`torch.Tensor`): Normalised images of shape `(C, H, W)` or `(N, C, H, W)`.

        Returns:
            `torch.Tensor`: `x * std + mean`, clamped to `[0, 1]`.
        """
        return denormalize(x, self.mean, self.std)

    def subset(self, indices: torch.Tensor | Sequence[int] | np.ndarray) -> ImageData:
        """Select rows.

        Args:
            indices (`torch.Tensor`, `Sequence[int]` or `np.ndarray`): Row indices (or a boolean mask).

        Returns:
            [`ImageData`]: The selected rows, with the same `class_names`, `mean`, `std` and `zca`.
        """
        if not isinstance(indices, torch.Tensor):
            indices = torch.as_tensor(np.asarray(indices))
        if indices.dtype != torch.bool:
            indices = indices.long()
        return ImageData(
            images=self.images[indices],
            labels=self.labels[indices],
            class_names=list(self.class_names),
            mean=list(self.mean),
            std=list(self.std),
            zca=self.zca,
        )


def _is_numeric_dtype(dtype: str) -> bool:
    return dtype.startswith(("int", "uint", "float")) or dtype in ("halffloat", "double")


def _numeric_array_depth(feature: Any) -> int:
    """Nesting depth of a numeric array feature (0 when the feature is not a numeric array)."""
    if isinstance(feature, (Array2D, Array3D)):
        return len(feature.shape) if _is_numeric_dtype(feature.dtype) else 0
    if isinstance(feature, (List, LargeList)):
        inner = feature.feature
    elif isinstance(feature, (list, tuple)) and len(feature) == 1:
        inner = feature[0]
    else:
        return 0
    if isinstance(inner, Value):
        return 1 if _is_numeric_dtype(inner.dtype) else 0
    depth = _numeric_array_depth(inner)
    return depth + 1 if depth else 0


def is_array_image_feature(feature: Any) -> bool:
    return _numeric_array_depth(feature) in (2, 3)


def _describe_columns(features: Features) -> str:
    return ", ".join(f"{k!r}: {v!r}" for k, v in features.items()) or "(none)"


def find_columns(ds: Dataset, column_mapping: dict[str, str] | None = None) -> tuple[str, str]:
    """Find the image and label columns of an image classification dataset.

    Image column: the first column whose feature is `datasets.Image`; otherwise a column named `pixel_values`,
    `image` or `img` holding a numeric (nested) sequence or `Array2D`/`Array3D` (images already stored as arrays, e.g.
    a distilled set). Label column: a `ClassLabel` column (preferring `label`/`labels`); otherwise an integer column
    named `label` or `labels`.

    Args:
        ds (`datasets.Dataset`):
            The dataset.
        column_mapping (`dict[str, str]`, *optional*):
            Explicit column names, with keys `"image"` and/or `"label"`; these override the detection.

    Returns:
        `tuple[str, str]`: `(image_column, label_column)`.

    Raises:
        ValueError: If a column cannot be found, a mapped column does not exist or has an unsupported feature, or
            the labels are not a `ClassLabel`/integer column. The message lists the columns found and how to fix it.
    """
    features = ds.features
    column_mapping = checked_column_mapping(features, column_mapping, "image")

    # Image column.
    if "image" in column_mapping:
        image_column = column_mapping["image"]
        feature = features[image_column]
        if not (isinstance(feature, Image) or is_array_image_feature(feature)):
            raise ValueError(
                f"Column {image_column!r} given as the image column has feature {feature!r}, which is neither "
                "datasets.Image() nor a numeric array (Array2D/Array3D or a nested list of numbers). If it holds "
                f"image paths or bytes, cast it first: ds = ds.cast_column({image_column!r}, datasets.Image())."
            )
    else:
        image_column = next((k for k, v in features.items() if isinstance(v, Image)), None)
        if image_column is None:
            image_column = next(
                (k for k in IMAGE_COLUMN_CANDIDATES if k in features and is_array_image_feature(features[k])), None
            )
        if image_column is None:
            raise ValueError(
                f"Could not find an image column. Columns found: {describe_columns(features)}. Expected a column "
                "with the datasets.Image() feature, or a numeric array column named "
                f"{' / '.join(IMAGE_COLUMN_CANDIDATES)}. To fix it, {COLUMN_MAPPING_HINT}, or cast a column of "
                "image paths/bytes with ds.cast_column(<column>, datasets.Image())."
            )

    # Label column.
    return image_column, find_label_column(features, image_column, column_mapping.get("label"))


def validate_image_dataset(ds: Dataset, image_column: str, label_column: str, split: str = "train", **checks) -> None:
    """Check that an image split can be distilled: its image column exists, then [`validate_labels`] (with `checks`:
    `images_per_class`, `init`).

    Only the label column is read (no image is decoded), so this is cheap even for large splits.
    """
    if image_column not in ds.features:
        raise ValueError(
            f"Image column {image_column!r} not found in the {split!r} split; the columns are {list(ds.features)}. "
            f"To fix it, {COLUMN_MAPPING_HINT}."
        )
    validate_labels(ds, label_column, split=split, **checks)
