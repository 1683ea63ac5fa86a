# Copyright 2025 The hf_distill Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Data layer: loading a source dataset, finding its columns, validating it and turning it into tensors.

The entry points are:

- [`load_source`]: a `datasets.Dataset`/`DatasetDict`, a local folder (`save_to_disk`, parquet, Hub layout or
  imagefolder), a Hub id, or the builtin offline demo set [`DIGITS_SOURCE`] -> `(train, test)` splits.
- [`find_columns`]: detect the image and label columns (overridable with `column_mapping`).
- [`validate_image_dataset`]: cheap checks (label column only) with error messages that say how to fix the input.
- [`prepare_images`]: decode the images in batches into a normalised `(N, C, H, W)` float tensor ([`ImageData`]).
- [`ClassBalancedSampler`]: draw row indices per class with an explicit `torch.Generator`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import (
    Array2D,
    Array3D,
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    Image,
    LargeList,
    List,
    Value,
    load_dataset,
    load_from_disk,
)
from datasets.utils.tqdm import tqdm

from .constants import DIGITS_SOURCE
from .hub_utils import check_hub_access, hub_error, looks_like_local_path
from .seeding import derive_generator

logger = logging.getLogger(__name__)


IMAGE_COLUMN_CANDIDATES = ("pixel_values", "image", "img")
"""Names under which an already-tensor (numeric array) image column is recognised."""

LABEL_COLUMN_CANDIDATES = ("label", "labels")
"""Preferred label column names."""

_LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights PIL uses for RGB -> L
_COLUMN_MAPPING_HINT = "pass column_mapping={'image': <image column>, 'label': <label column>}"
_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")


# ---------------------------------------------------------------------------------------------------------------------
# ImageData
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class ImageData:
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
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    mean: list[float]
    std: list[float]
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

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes (`len(class_names)`)."""
        return len(self.class_names)

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

    def indices_by_class(self) -> list[torch.Tensor]:
        """Row indices of every class (computed once and cached).

        Returns:
            `list[torch.Tensor]`: `num_classes` `int64` tensors, the i-th holding the (sorted) rows with label i.
        """
        if self._indices_by_class is None:
            self._indices_by_class = _indices_by_class(self.labels, self.num_classes)
        return self._indices_by_class

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
        if not torch.is_floating_point(x):
            x = x.float()
        mean, std = self._stats(x)
        return (x * std + mean).clamp(0.0, 1.0)

    def subset(self, indices: torch.Tensor | Sequence[int] | np.ndarray) -> ImageData:
        """Select rows.

        Args:
            indices (`torch.Tensor`, `Sequence[int]` or `np.ndarray`): Row indices (or a boolean mask).

        Returns:
            [`ImageData`]: The selected rows, with the same `class_names`, `mean` and `std`.
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
        )


def _indices_by_class(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    labels = labels.long().cpu()
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes].tolist()
    start = int((labels < 0).sum())
    out = []
    for count in counts:
        out.append(order[start : start + count].clone())
        start += count
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Builtin offline demo dataset
# ---------------------------------------------------------------------------------------------------------------------


def make_digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> DatasetDict:
    """Build scikit-learn's bundled 8x8 handwritten digits as an image `DatasetDict` (no download).

    Pixels (0..16 in scikit-learn) are scaled to 0..255 `uint8` and stored as 8x8 `PIL` images of mode `L`.
    The train/test split is stratified: in every class, `round(count * test_fraction)` rows, drawn with a
    `numpy.random.Generator` seeded with `seed`, go to the test split. Rows keep the original order.

    Args:
        test_fraction (`float`, *optional*, defaults to 0.2):
            Fraction of every class that goes to the test split, in `(0, 1)`.
        seed (`int`, *optional*, defaults to 0):
            Seed of the split.

    Returns:
        `datasets.DatasetDict`: Splits `train` and `test`, with columns `image` (`Image()`) and `label`
        (`ClassLabel(names=["0", ..., "9"])`).

    Raises:
        ValueError: If `test_fraction` is not in `(0, 1)`.
    """
    import PIL.Image
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    targets = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(targets), dtype=bool)
    for c in range(10):
        rows = np.flatnonzero(targets == c)
        n_test = int(round(len(rows) * test_fraction))
        is_test[rng.permutation(rows)[:n_test]] = True
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})

    def build(mask: np.ndarray) -> Dataset:
        rows = np.flatnonzero(mask)
        return Dataset.from_dict(
            {
                "image": [PIL.Image.fromarray(pixels[i], mode="L") for i in rows],
                "label": targets[rows].tolist(),
            },
            features=features,
        )

    return DatasetDict({"train": build(~is_test), "test": build(is_test)})


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def _pick_splits(
    dd: DatasetDict, train_split: str, test_split: str | None, source: str
) -> tuple[Dataset, Dataset | None]:
    available = list(dd.keys())
    if train_split not in dd:
        raise ValueError(
            f"Split {train_split!r} not found in {source}; available splits: {available}. "
            f"Pass train_split=<one of {available}>."
        )
    if test_split is None:
        return dd[train_split], None
    if test_split not in dd:
        logger.warning(
            "Split %r not found in %s (available splits: %s); continuing without a test split. "
            "Pass test_split=<split name> to evaluate on another split.",
            test_split,
            source,
            available,
        )
        return dd[train_split], None
    return dd[train_split], dd[test_split]


def _as_pair(loaded: Any, train_split: str, test_split: str | None, source: str) -> tuple[Dataset, Dataset | None]:
    if isinstance(loaded, DatasetDict):
        return _pick_splits(loaded, train_split, test_split, source)
    if isinstance(loaded, Dataset):
        return loaded, None
    raise TypeError(f"Expected a Dataset or DatasetDict from {source}, got {type(loaded).__name__}.")


def load_source(
    dataset: str | os.PathLike | Dataset | DatasetDict,
    *,
    train_split: str = "train",
    test_split: str | None = "test",
    name: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Dataset, Dataset | None]:
    """Load the train (and, when present, test) split of a source dataset.

    `dataset` can be:

    - [`DIGITS_SOURCE`] (`"sklearn:digits"`): the builtin offline demo set ([`make_digits_dataset`]);
    - a `datasets.Dataset`: returned as the train split, with no test split;
    - a `datasets.DatasetDict`: `train_split` and `test_split` are picked from it;
    - a local folder written by `save_to_disk` (a `Dataset` or a `DatasetDict`): loaded with
      `datasets.load_from_disk`;
    - any other local folder or data file (parquet/csv/json/arrow files, a Hub-layout folder with a dataset card,
      or an imagefolder tree): loaded with `load_dataset(path)` (an image tree falls back to
      `load_dataset("imagefolder", data_dir=path)`);
    - otherwise a Hub dataset id: `load_dataset(id, name, revision=revision, token=token, cache_dir=cache_dir)`.

    Args:
        dataset (`str`, `os.PathLike`, `datasets.Dataset` or `datasets.DatasetDict`):
            The source, see above.
        train_split (`str`, *optional*, defaults to `"train"`):
            Name of the split to distill.
        test_split (`str`, *optional*, defaults to `"test"`):
            Name of the evaluation split. A missing test split gives `None` (with a logged warning); pass `None` to
            not load one.
        name (`str`, *optional*):
            Dataset configuration name (Hub ids and Hub-layout folders).
        revision (`str`, *optional*):
            Git revision of a Hub dataset.
        token (`str` or `bool`, *optional*):
            Hugging Face token for private or gated Hub datasets.
        cache_dir (`str` or `os.PathLike`, *optional*):
            Cache directory for `load_dataset`.

    Returns:
        `tuple[datasets.Dataset, datasets.Dataset | None]`: The train split and the test split (or `None`).

    Raises:
        ValueError: If the train split is missing (the message lists the available splits), a local path does not
            exist, or the dataset cannot be found/loaded: unknown Hub id, gated dataset, unknown revision, bad
            configuration name (the message names the source and what to do).
        RuntimeError: If the Hub cannot be reached (checked with one request, so this fails fast), offline mode
            is on and the dataset is not cached, or loading fails for another reason.
    """
    if isinstance(dataset, DatasetDict):
        return _pick_splits(dataset, train_split, test_split, "the given DatasetDict")
    if isinstance(dataset, Dataset):
        return dataset, None
    if not isinstance(dataset, (str, os.PathLike)):
        raise TypeError(
            "`dataset` must be a Hub id, a local path, a datasets.Dataset or a datasets.DatasetDict, got "
            f"{type(dataset).__name__}."
        )
    if isinstance(dataset, str) and dataset == DIGITS_SOURCE:
        return _pick_splits(make_digits_dataset(), train_split, test_split, f"{DIGITS_SOURCE!r}")

    source = os.fspath(dataset)
    path = Path(source).expanduser()
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
    if path.exists():
        return _load_local(path, train_split, test_split, name=name, cache_dir=cache_dir)
    if isinstance(dataset, os.PathLike) or looks_like_local_path(source):
        raise ValueError(
            f"Local dataset path {source!r} does not exist. Check the path, or pass a Hub dataset id "
            "(e.g. 'ylecun/mnist')."
        )
    return _load_hub(source, train_split, test_split, name=name, revision=revision, token=token, cache_dir=cache_dir)


def _load_local(
    path: Path, train_split: str, test_split: str | None, *, name: str | None, cache_dir: str | None
) -> tuple[Dataset, Dataset | None]:
    source = f"local dataset {str(path)!r}"
    if path.is_dir() and any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS):
        return _as_pair(load_from_disk(str(path)), train_split, test_split, source)
    kwargs: dict[str, Any] = {"cache_dir": cache_dir}
    if name is not None:
        kwargs["name"] = name
    try:
        if path.is_file():
            builder = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}
            suffix = path.suffix.lower()
            if suffix not in builder:
                raise ValueError(f"unsupported file type {suffix!r} (expected one of {sorted(builder)})")
            loaded = load_dataset(builder[suffix], data_files={train_split: str(path)}, cache_dir=cache_dir)
        else:
            try:
                loaded = load_dataset(str(path), **kwargs)
            except Exception as first_error:
                logger.info("load_dataset(%r) failed (%s); trying the imagefolder builder.", str(path), first_error)
                try:
                    loaded = load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir)
                except Exception:
                    raise first_error from None
    except Exception as e:
        raise ValueError(
            f"Could not load {source}: {type(e).__name__}: {e}. Check that the folder holds a dataset written with "
            "save_to_disk, data files (parquet/csv/json/arrow, optionally with a README.md `configs:` block), or an "
            "imagefolder tree (<split>/<class>/<image>), and that `name` is one of its configurations."
        ) from e
    return _as_pair(loaded, train_split, test_split, source)


def _load_hub(
    repo_id: str,
    train_split: str,
    test_split: str | None,
    *,
    name: str | None,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | None,
) -> tuple[Dataset, Dataset | None]:
    # One request first: a typo, a gated dataset, a bad revision or no network fails at once with one clear
    # message, instead of after `load_dataset`'s retries (half a minute per file without a connection).
    check_hub_access(repo_id, repo_type="dataset", revision=revision, token=token)
    try:
        loaded = load_dataset(repo_id, name, revision=revision, token=token, cache_dir=cache_dir)
    except Exception as e:
        clear = hub_error(e, repo_id, repo_type="dataset", revision=revision)
        if clear is not None:
            raise clear from None
        if isinstance(e, (FileNotFoundError, ValueError)):
            raise ValueError(
                f"Could not load dataset {repo_id!r} from the Hugging Face Hub: {type(e).__name__}: {e}. Check that "
                "`name` is one of its configurations and that it holds data files `datasets` can read."
            ) from e
        raise RuntimeError(
            f"Could not load dataset {repo_id!r} from the Hugging Face Hub: {type(e).__name__}: {e}. Check your "
            "network connection (or set HF_HUB_OFFLINE=1 to use a cached copy), your access to the dataset "
            "(token=...), and the `name`/`revision` arguments."
        ) from e
    return _as_pair(loaded, train_split, test_split, f"dataset {repo_id!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Column detection
# ---------------------------------------------------------------------------------------------------------------------


def _is_numeric_dtype(dtype: str) -> bool:
    return dtype.startswith(("int", "uint", "float")) or dtype in ("halffloat", "double")


def _is_int_dtype(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


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


def _is_array_image_feature(feature: Any) -> bool:
    return _numeric_array_depth(feature) in (2, 3)


def _is_int_label_feature(feature: Any) -> bool:
    return isinstance(feature, ClassLabel) or (isinstance(feature, Value) and _is_int_dtype(feature.dtype))


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
    column_mapping = dict(column_mapping or {})
    unknown = set(column_mapping) - {"image", "label"}
    if unknown:
        raise ValueError(
            f"Unknown column_mapping keys {sorted(unknown)}; the supported keys are 'image' and 'label', e.g. "
            "column_mapping={'image': 'img', 'label': 'fine_label'}."
        )
    for role, column in column_mapping.items():
        if column not in features:
            raise ValueError(
                f"column_mapping[{role!r}] = {column!r} is not a column of the dataset; the columns are "
                f"{list(features)}."
            )

    # Image column.
    if "image" in column_mapping:
        image_column = column_mapping["image"]
        feature = features[image_column]
        if not (isinstance(feature, Image) or _is_array_image_feature(feature)):
            raise ValueError(
                f"Column {image_column!r} given as the image column has feature {feature!r}, which is neither "
                "datasets.Image() nor a numeric array (Array2D/Array3D or a nested list of numbers). If it holds "
                f"image paths or bytes, cast it first: ds = ds.cast_column({image_column!r}, datasets.Image())."
            )
    else:
        image_column = next((k for k, v in features.items() if isinstance(v, Image)), None)
        if image_column is None:
            image_column = next(
                (k for k in IMAGE_COLUMN_CANDIDATES if k in features and _is_array_image_feature(features[k])), None
            )
        if image_column is None:
            raise ValueError(
                f"Could not find an image column. Columns found: {_describe_columns(features)}. Expected a column "
                "with the datasets.Image() feature, or a numeric array column named "
                f"{' / '.join(IMAGE_COLUMN_CANDIDATES)}. To fix it, {_COLUMN_MAPPING_HINT}, or cast a column of "
                "image paths/bytes with ds.cast_column(<column>, datasets.Image())."
            )

    # Label column.
    if "label" in column_mapping:
        label_column = column_mapping["label"]
        if label_column == image_column:
            raise ValueError(f"The image and label columns must differ, both are {label_column!r}.")
        _check_label_feature(features[label_column], label_column)
        return image_column, label_column

    others = {k: v for k, v in features.items() if k != image_column}
    class_label_columns = [k for k, v in others.items() if isinstance(v, ClassLabel)]
    preferred = [k for k in LABEL_COLUMN_CANDIDATES if k in class_label_columns]
    if preferred:
        return image_column, preferred[0]
    if class_label_columns:
        return image_column, class_label_columns[0]
    for candidate in LABEL_COLUMN_CANDIDATES:
        if candidate in others:
            _check_label_feature(others[candidate], candidate)
            return image_column, candidate
    raise ValueError(
        f"Could not find a label column. Columns found: {_describe_columns(features)}. Expected a ClassLabel column, "
        f"or an integer column named {' / '.join(LABEL_COLUMN_CANDIDATES)}. To fix it, {_COLUMN_MAPPING_HINT} (a "
        "string label column can be encoded with ds = ds.class_encode_column(<column>))."
    )


def _check_label_feature(feature: Any, column: str) -> None:
    if not _is_int_label_feature(feature):
        raise ValueError(
            f"Label column {column!r} has feature {feature!r}; labels must be a ClassLabel or an integer column. "
            f"Encode string labels with ds = ds.class_encode_column({column!r}), or cast integer-valued labels with "
            f"ds = ds.cast_column({column!r}, datasets.ClassLabel(names=[...]))."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Labels and validation
# ---------------------------------------------------------------------------------------------------------------------


def _read_labels(ds: Dataset, label_column: str) -> np.ndarray:
    """Read the label column as `int64` without touching (or decoding) any other column."""
    if label_column not in ds.features:
        raise ValueError(f"Label column {label_column!r} not found; the columns are {list(ds.features)}.")
    _check_label_feature(ds.features[label_column], label_column)
    table = ds.select_columns([label_column]).with_format("arrow")[:]
    column = table.column(label_column)
    if column.null_count:
        raise ValueError(
            f"Label column {label_column!r} has {column.null_count} missing (null) values. Drop those rows first, "
            f"e.g. ds = ds.filter(lambda x: x is not None, input_columns={label_column!r})."
        )
    return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _class_names(ds: Dataset, label_column: str, labels: np.ndarray) -> list[str]:
    feature = ds.features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    num_classes = int(labels.max()) + 1 if labels.size else 0
    return [str(i) for i in range(max(num_classes, 0))]


def _check_label_range(labels: np.ndarray, num_classes: int, label_column: str, split: str) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        values = sorted({int(v) for v in np.unique(labels[bad])[:10]})
        hint = (
            " Negative labels usually mark an unlabelled split (e.g. a Hub test split with hidden labels): use "
            "another split, or drop those rows with ds = ds.filter(lambda y: y >= 0, input_columns="
            f"{label_column!r})."
            if values and values[0] < 0
            else f" Fix the labels, or cast the column with a ClassLabel that lists all {max(values) + 1}+ classes."
        )
        raise ValueError(
            f"{int(bad.sum())} labels in column {label_column!r} of the {split!r} split are outside "
            f"[0, {num_classes}) (values such as {values}).{hint}"
        )


def validate_image_dataset(
    ds: Dataset,
    image_column: str,
    label_column: str,
    *,
    images_per_class: int | None = None,
    init: str = "real",
    split: str = "train",
) -> None:
    """Check that a split can be distilled, with error messages that say how to fix the problem.

    Only the label column is read (no image is decoded), so this is cheap even for large splits.

    Args:
        ds (`datasets.Dataset`):
            The split.
        image_column (`str`):
            Name of the image column (must exist).
        label_column (`str`):
            Name of the label column (`ClassLabel` or integer).
        images_per_class (`int`, *optional*):
            Number of synthetic images per class; with `init="real"` every class needs at least this many rows.
        init (`str`, *optional*, defaults to `"real"`):
            Initialisation of the synthetic set; only `"real"` (initialise from real rows) needs real rows per class.
        split (`str`, *optional*, defaults to `"train"`):
            Name of the split, used in the messages.

    Raises:
        ValueError: If a column is missing, the split is empty, a label is outside `[0, num_classes)`, or (with
            `init="real"`) a class has fewer rows than `images_per_class`.
    """
    if image_column not in ds.features:
        raise ValueError(
            f"Image column {image_column!r} not found in the {split!r} split; the columns are {list(ds.features)}. "
            "Pass column_mapping={'image': <image column>, 'label': <label column>}."
        )
    if label_column not in ds.features:
        raise ValueError(
            f"Label column {label_column!r} not found in the {split!r} split; the columns are {list(ds.features)}. "
            "Pass column_mapping={'image': <image column>, 'label': <label column>}."
        )
    if len(ds) == 0:
        raise ValueError(
            f"The {split!r} split is empty (0 rows). Check the split name and any filtering applied before "
            "distillation."
        )
    if images_per_class is not None and (isinstance(images_per_class, bool) or images_per_class < 1):
        raise ValueError(f"`images_per_class` must be a positive integer, got {images_per_class!r}.")
    labels = _read_labels(ds, label_column)
    class_names = _class_names(ds, label_column, labels)
    num_classes = len(class_names)
    _check_label_range(labels, num_classes, label_column, split)
    if images_per_class is None or init != "real":
        return
    counts = np.bincount(labels, minlength=num_classes)
    short = [(class_names[c], c, int(counts[c])) for c in range(num_classes) if counts[c] < images_per_class]
    if short:
        listed = ", ".join(f"{name!r} (class {c}): {n} rows" for name, c, n in short[:10])
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        smallest = min(n for _, _, n in short)
        lower = f"lower images_per_class to at most {smallest}" if smallest > 0 else "lower images_per_class"
        raise ValueError(
            f"init='real' needs at least images_per_class={images_per_class} rows per class, but in the {split!r} "
            f"split {len(short)} class(es) have fewer: {listed}{more}. To fix it, {lower}, or use init='noise' "
            "(which does not start from real images)."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Image decoding
# ---------------------------------------------------------------------------------------------------------------------


def _pil_to_array(image: Any) -> np.ndarray:
    """Convert one decoded image to an `(H, W, C)` array, `C` in {1, 3}: `uint8`, or `float32` in `[0, 1]`.

    Modes: `L`/`1` -> 1 channel; `RGB` -> 3; `LA`/`RGBA` (and `P`/`PA` with transparency) are composited on black
    (colour times alpha) and the alpha channel dropped; 16-bit grayscale (`I;16*`) -> 1 channel scaled by 1/65535;
    `I`/`F` -> converted to `L` by PIL; any other mode (`P`, `CMYK`, `YCbCr`, ...) -> converted to `RGB`.
    """
    import PIL.Image

    if not isinstance(image, PIL.Image.Image):
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        return array
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode == "PA":
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("L", "RGB"):
        array = np.asarray(image)
    elif mode == "1":
        array = np.asarray(image.convert("L"))
    elif mode.startswith("I;16"):
        return (np.asarray(image, dtype=np.float32) / 65535.0)[:, :, None]
    elif mode in ("LA", "RGBA"):
        array = np.asarray(image)
        color, alpha = array[..., :-1].astype(np.uint16), array[..., -1:].astype(np.uint16)
        array = ((color * alpha + 127) // 255).astype(np.uint8)
    elif mode in ("I", "F"):
        array = np.asarray(image.convert("L"))
    else:
        array = np.asarray(image.convert("RGB"))
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def _array_to_chw(array: np.ndarray, column: str, *, batched: bool) -> np.ndarray:
    """Bring array images to a `(B, C, H, W)` batch with C in {1, 3} (`array` is one image unless `batched`).

    Layout: `(H, W)` is one channel; for 3-D images a leading 1 or 3 means channel-first, otherwise a trailing 1 or 3
    (or a trailing 4 when the leading size is not 4) means channel-last; 4 channels are RGBA, composited on black.
    """
    if array.dtype == object:  # ragged nesting: numpy gives arrays of arrays
        array = np.array(array.tolist())
        if array.dtype == object:
            raise ValueError(f"Array images in column {column!r} are ragged (rows of different lengths).")
    a = array if batched else array[None]
    if a.ndim == 3:  # (B, H, W)
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(
            f"Array images in column {column!r} must have 2 (H, W) or 3 (C, H, W) dimensions, got shape "
            f"{tuple(array.shape[int(batched) :])}."
        )
    first, last = a.shape[1], a.shape[-1]
    if first not in (1, 3) and (last in (1, 3) or (first != 4 and last == 4)):  # channel-last (H, W, C)
        a = a.transpose(0, 3, 1, 2)
    if a.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"Array images in column {column!r} have shape {tuple(a.shape[1:])}: expected 1, 3 or 4 channels in "
            "(C, H, W) (or (H, W, C)) layout."
        )
    if a.shape[1] == 4:  # composite on black and drop alpha, as for RGBA images
        scale = 255.0 if np.issubdtype(a.dtype, np.integer) else 1.0
        a = (a[:, :3].astype(np.float32) * (a[:, 3:].astype(np.float32) / scale)).astype(a.dtype, copy=False)
    return a


class _Collector:
    """Accumulates decoded images as groups of equal shape, without assuming the final channel count."""

    def __init__(self, column: str, image_size: tuple[int, int] | None):
        self.column = column
        self.image_size = image_size
        self.groups: list[tuple[torch.Tensor, torch.Tensor]] = []  # (positions int64, images (n, C, H, W))
        self.channel_counts: Counter[int] = Counter()
        self.sizes: dict[tuple[int, int], int] = {}  # size -> first row with that size
        self.nonfinite = 0

    def add(self, positions: np.ndarray, chw: np.ndarray) -> None:
        """Add images `chw` of shape `(n, C, H, W)` (`uint8`/integer in 0..255, or float in [0, 1])."""
        if np.issubdtype(chw.dtype, np.floating):
            bad = ~np.isfinite(chw)
            if bad.any():
                self.nonfinite += int(bad.sum())
                return
            tensor = torch.from_numpy(_writable(chw, np.float32))
        elif chw.dtype == np.uint8:
            tensor = torch.from_numpy(_writable(chw, np.uint8))
        elif np.issubdtype(chw.dtype, np.integer):
            if chw.size and (chw.min() < 0 or chw.max() > 255):
                raise ValueError(
                    f"Integer pixel values in column {self.column!r} must be in [0, 255], found values in "
                    f"[{chw.min()}, {chw.max()}]. Store images as uint8 (0..255) or floats in [0, 1]."
                )
            tensor = torch.from_numpy(_writable(chw, np.uint8))
        else:
            raise ValueError(f"Unsupported pixel dtype {chw.dtype} in column {self.column!r}.")
        size = (int(tensor.shape[2]), int(tensor.shape[3]))
        if self.image_size is None:
            if size not in self.sizes:
                self.sizes[size] = int(positions[0])
                if len(self.sizes) > 1:
                    (size_a, row_a), (size_b, row_b) = list(self.sizes.items())[:2]
                    raise ValueError(
                        f"Images in column {self.column!r} have different sizes: {size_a} (row {row_a}) and {size_b} "
                        f"(row {row_b}), as (H, W). Pass image_size=(H, W) to resize every image to one size."
                    )
        elif size != self.image_size:
            tensor = _to_float(tensor)
            tensor = F.interpolate(tensor, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        self.channel_counts[int(tensor.shape[1])] += len(positions)
        self.groups.append((torch.from_numpy(np.asarray(positions, dtype=np.int64)), tensor))


def _writable(array: np.ndarray, dtype: type) -> np.ndarray:
    """A C-contiguous, writable array of `dtype` (copies only when needed, e.g. read-only Arrow buffers)."""
    array = np.ascontiguousarray(array, dtype=dtype)
    return array if array.flags.writeable else array.copy()


def _to_float(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    return tensor.float()


def _convert_channels(tensor: torch.Tensor, num_channels: int) -> torch.Tensor:
    current = tensor.shape[1]
    if current == num_channels:
        return tensor
    tensor = _to_float(tensor)
    if current == 1 and num_channels == 3:
        return tensor.expand(-1, 3, -1, -1)
    if current == 3 and num_channels == 1:
        weights = torch.tensor(_LUMINANCE, dtype=tensor.dtype).view(1, 3, 1, 1)
        return (tensor * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"Cannot convert {current}-channel images to {num_channels} channels.")


def _group_rows(positions: list[int], arrays: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group `(H, W, C)` arrays by shape and dtype; returns `(positions, (n, C, H, W) array)` per group."""
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault((a.shape, a.dtype.str), []).append(i)
    out = []
    for members in groups.values():
        stacked = np.stack([arrays[i] for i in members]).transpose(0, 3, 1, 2)
        out.append((np.asarray([positions[i] for i in members], dtype=np.int64), stacked))
    return out


def _normalize_image_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"`image_size` must be an int or a pair (H, W) of positive ints, got {image_size!r}.")
    return size


def prepare_images(
    ds: Dataset,
    image_column: str,
    label_column: str,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int | Sequence[int] | None = None,
    num_channels: int | None = None,
    batch_size: int = 1000,
    desc: str | None = None,
) -> ImageData:
    """Decode a split into normalised float tensors.

    Images are decoded in batches straight from the Arrow data (encoded bytes are decoded with the column's
    `datasets.Image` feature, so paths, EXIF orientation and the feature's `mode` are honoured) and converted to
    `[0, 1]` floats: `uint8` pixels are divided by 255, float array columns are used as they are.

    Channels: `L` images give 1 channel and `RGB` 3; `RGBA`/`LA` (and palette images with transparency) are
    composited on black (colour times alpha) and the alpha channel dropped; other modes (`P`, `CMYK`, ...) are
    converted to `RGB`. If a split mixes 1- and 3-channel images, all are converted to `num_channels` when given,
    otherwise to the majority (3 on a tie). With `num_channels=3`, 1-channel images are repeated; with
    `num_channels=1`, RGB images are converted with the luminance weights (0.299, 0.587, 0.114).

    Array columns (already-tensor images) may be `(H, W)`, `(C, H, W)` or `(H, W, C)` with C in {1, 3, 4}; integer
    arrays must hold 0..255 values.

    Args:
        ds (`datasets.Dataset`):
            The split.
        image_column (`str`):
            Name of the image column (`datasets.Image` or a numeric array column).
        label_column (`str`):
            Name of the label column (`ClassLabel` or integer).
        mean (`Sequence[float]`, *optional*):
            Per-channel mean in `[0, 1]` units. When `None` (with `std`), it is computed from this split; pass the
            train split's statistics when preparing a test split.
        std (`Sequence[float]`, *optional*):
            Per-channel standard deviation, see `mean`.
        image_size (`int` or `tuple[int, int]`, *optional*):
            Resize every image to `(H, W)` (bilinear with antialiasing). Required when the images differ in size.
        num_channels (`int`, *optional*):
            Number of output channels, 1 or 3. Defaults to the images' own (majority) channel count.
        batch_size (`int`, *optional*, defaults to 1000):
            Number of rows decoded at a time.
        desc (`str`, *optional*):
            Description of the progress bar.

    Returns:
        [`ImageData`]: Normalised images `(N, C, H, W)` `float32`, `int64` labels, class names (from the `ClassLabel`
        feature, or `str(i)` for integer labels), `mean` and `std`.

    Raises:
        ValueError: If a column is missing or unsupported, the split is empty, the images differ in size and
            `image_size` is not given, float pixels contain NaN/inf (the message names the column and the count),
            labels are outside `[0, num_classes)`, or `mean`/`std` are invalid.
    """
    if image_column not in ds.features:
        raise ValueError(f"Image column {image_column!r} not found; the columns are {list(ds.features)}.")
    if num_channels not in (None, 1, 3):
        raise ValueError(f"`num_channels` must be 1 or 3 (or None to keep the images' own), got {num_channels!r}.")
    if (mean is None) != (std is None):
        raise ValueError("Pass both `mean` and `std`, or neither (then both are computed from this split).")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
    size = _normalize_image_size(image_size)
    if len(ds) == 0:
        raise ValueError(f"Cannot prepare images from an empty dataset (column {image_column!r} has 0 rows).")

    labels = _read_labels(ds, label_column)
    class_names = _class_names(ds, label_column, labels)
    _check_label_range(labels, len(class_names), label_column, "given")

    feature = ds.features[image_column]
    collector = _Collector(image_column, size)
    images_only = ds.select_columns([image_column])
    total = len(ds)
    with tqdm(total=total, desc=desc or f"Preparing {image_column!r}", unit="img", leave=False) as progress:
        if isinstance(feature, Image):
            decoder = feature if feature.decode else Image(mode=feature.mode)
            start = 0
            for batch in images_only.with_format("arrow").iter(batch_size=batch_size):
                encoded = batch.column(image_column).to_pylist()
                arrays, positions = [], []
                for offset, value in enumerate(encoded):
                    if value is None:
                        raise ValueError(
                            f"Row {start + offset} of column {image_column!r} has no image (null). Drop such rows "
                            "first with ds.filter(...)."
                        )
                    arrays.append(_pil_to_array(decoder.decode_example(value)))
                    positions.append(start + offset)
                for group_positions, chw in _group_rows(positions, arrays):
                    collector.add(group_positions, chw)
                start += len(encoded)
                progress.update(len(encoded))
        elif _is_array_image_feature(feature):
            start = 0
            for batch in images_only.with_format("numpy").iter(batch_size=batch_size):
                values = batch[image_column]
                n = len(values)
                if isinstance(values, np.ndarray) and values.dtype != object:
                    collector.add(np.arange(start, start + n), _array_to_chw(values, image_column, batched=True))
                else:
                    arrays = [
                        _array_to_chw(np.asarray(v), image_column, batched=False)[0].transpose(1, 2, 0) for v in values
                    ]
                    for group_positions, chw in _group_rows(list(range(start, start + n)), arrays):
                        collector.add(group_positions, chw)
                start += n
                progress.update(n)
        else:
            raise ValueError(
                f"Column {image_column!r} has feature {feature!r}, which is neither datasets.Image() nor a numeric "
                f"array. Cast it with ds.cast_column({image_column!r}, datasets.Image()) if it holds image "
                "paths/bytes."
            )

    if collector.nonfinite:
        raise ValueError(
            f"Column {image_column!r} contains {collector.nonfinite} NaN/inf pixel values. Clean or drop those rows "
            "(e.g. replace them with np.nan_to_num) before distilling."
        )

    counts = collector.channel_counts
    target_channels = num_channels
    if target_channels is None:
        target_channels = 3 if counts.get(3, 0) >= counts.get(1, 0) else 1
        if len(counts) > 1:
            logger.warning(
                "Column %r mixes images with %s channels; converting all to %d channel(s). Pass num_channels to "
                "choose.",
                image_column,
                dict(counts),
                target_channels,
            )

    first = collector.groups[0][1]
    height, width = int(first.shape[2]), int(first.shape[3])
    images = torch.empty((total, target_channels, height, width), dtype=torch.float32)
    covered = 0
    for positions, tensor in collector.groups:
        tensor = _to_float(_convert_channels(tensor, target_channels))
        if positions.numel() and int(positions[-1]) - int(positions[0]) + 1 == positions.numel():
            images[int(positions[0]) : int(positions[-1]) + 1] = tensor
        else:
            images[positions] = tensor
        covered += positions.numel()
    collector.groups.clear()
    if covered != total:  # pragma: no cover - defensive
        raise RuntimeError(f"Decoded {covered} images for {total} rows in column {image_column!r}.")

    if mean is None:
        mean_values, std_values = _channel_stats(images)
        degenerate = [c for c, s in enumerate(std_values) if s < 1e-8]
        if degenerate:
            logger.warning("Channels %s of %r are constant; using std=1.0 for them.", degenerate, image_column)
            std_values = [1.0 if s < 1e-8 else s for s in std_values]
    else:
        mean_values = [float(m) for m in mean]
        std_values = [float(s) for s in std]
        if len(mean_values) != target_channels or len(std_values) != target_channels:
            raise ValueError(
                f"`mean`/`std` need one value per channel ({target_channels}), got {len(mean_values)} and "
                f"{len(std_values)}. Use the statistics of a split prepared with the same num_channels."
            )
        if any(not np.isfinite(s) or s <= 0 for s in std_values):
            raise ValueError(f"`std` values must be positive, got {std_values}.")

    images.sub_(torch.tensor(mean_values, dtype=torch.float32).view(1, -1, 1, 1))
    images.div_(torch.tensor(std_values, dtype=torch.float32).view(1, -1, 1, 1))
    return ImageData(
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=class_names,
        mean=mean_values,
        std=std_values,
    )


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of `(N, C, H, W)` images, accumulated in float64 chunk by chunk."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].to(torch.float64)
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    return mean.tolist(), var.sqrt().tolist()


# ---------------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------------


class ClassBalancedSampler:
    """Draws row indices class by class with an explicit `torch.Generator` (the global RNG is never used).

    Args:
        labels (`torch.Tensor`):
            Labels of shape `(N,)`, integers in `[0, num_classes)`.
        num_classes (`int`):
            Number of classes.

    Raises:
        ValueError: If a class has no rows, or a label is outside `[0, num_classes)`.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int):
        labels = torch.as_tensor(labels).long().cpu().reshape(-1)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"Labels must be in [0, {num_classes}), found values in [{int(labels.min())}, {int(labels.max())}]."
            )
        self.num_classes = num_classes
        self.indices = _indices_by_class(labels, num_classes)
        empty = [c for c, idx in enumerate(self.indices) if idx.numel() == 0]
        if empty:
            raise ValueError(
                f"Classes {empty} have no rows, so they cannot be sampled. Check the split and label column, or "
                "remove the empty classes from the ClassLabel feature."
            )

    def counts(self) -> list[int]:
        """Number of rows of every class."""
        return [idx.numel() for idx in self.indices]

    def sample(self, class_index: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw `n` row indices of one class.

        Args:
            class_index (`int`): The class.
            n (`int`): Number of indices.
            generator (`torch.Generator`): Source of randomness (a CPU generator).

        Returns:
            `torch.LongTensor`: `n` row indices of the class, without replacement when `n` is at most the class
            size, with replacement otherwise.
        """
        if not 0 <= class_index < self.num_classes:
            raise ValueError(f"`class_index` must be in [0, {self.num_classes}), got {class_index}.")
        if n < 0:
            raise ValueError(f"`n` must be non-negative, got {n}.")
        rows = self.indices[class_index]
        count = rows.numel()
        if n <= count:
            picks = torch.randperm(count, generator=generator)[:n]
        else:
            picks = torch.randint(count, (n,), generator=generator)
        return rows[picks]

    def sample_classes(self, classes: Sequence[int], n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw `n` row indices for each of several classes.

        Args:
            classes (`Sequence[int]`): The classes, in order.
            n (`int`): Number of indices per class.
            generator (`torch.Generator`): Source of randomness.

        Returns:
            `torch.LongTensor`: `len(classes) * n` indices, class-major (the first `n` belong to `classes[0]`, ...).
        """
        if len(classes) == 0:
            return torch.empty(0, dtype=torch.long)
        return torch.cat([self.sample(int(c), n, generator) for c in classes])

    def sample_keyed(self, classes: Sequence[int], n: int, seed: int, *keys) -> torch.Tensor:
        """Like `sample_classes`, but each class draws from its own generator keyed by `(seed, *keys, class)`.

        The rows a class gets then do not depend on which other classes are sampled alongside it (what makes
        multi-process and resumed runs draw exactly what a single uninterrupted run draws).
        """
        if len(classes) == 0:
            return torch.empty(0, dtype=torch.long)
        return torch.cat([self.sample(int(c), n, derive_generator(seed, *keys, int(c))) for c in classes])
