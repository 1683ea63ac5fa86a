"""Decoding an image split into one normalised `(N, C, H, W)` float tensor ([`prepare_images`]).

Images are decoded in batches (PIL or numeric arrays), converted to the channel count asked for, resized when
needed and normalised per channel with given statistics or the split's own.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, Image
from datasets.utils.tqdm import tqdm

from ..data import check_label_range, class_names_of, read_labels
from .image_data import ImageData, is_array_image_feature

logger = logging.getLogger(__name__)

_LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights PIL uses for RGB -> L

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


class ImageCollector:
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
                        f"(row {row_b}), as (H, W). Set image_size=<side> (--image_size) to resize every image to one "
                        "square size."
                    )
        elif size != self.image_size:
            tensor = to_float(tensor)
            tensor = F.interpolate(tensor, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        self.channel_counts[int(tensor.shape[1])] += len(positions)
        self.groups.append((torch.from_numpy(np.asarray(positions, dtype=np.int64)), tensor))


def _writable(array: np.ndarray, dtype: type) -> np.ndarray:
    """A C-contiguous, writable array of `dtype` (copies only when needed, e.g. read-only Arrow buffers)."""
    array = np.ascontiguousarray(array, dtype=dtype)
    return array if array.flags.writeable else array.copy()


def to_float(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    return tensor.float()


def _convert_channels(tensor: torch.Tensor, num_channels: int) -> torch.Tensor:
    current = tensor.shape[1]
    if current == num_channels:
        return tensor
    tensor = to_float(tensor)
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


def normalize_image_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"`image_size` must be an int or a pair (H, W) of positive ints, got {image_size!r}.")
    return size


def _decode(decoder: Image, value: dict, row: int, column: str) -> Any:
    """One decoded image; a file PIL cannot read is an error naming the row and the file."""
    try:
        image = decoder.decode_example(value)
        image.load()  # PIL decodes lazily: a truncated file fails here, not later inside a conversion
        return image
    except (OSError, SyntaxError, ValueError) as error:
        where = f" ({value['path']})" if value.get("path") else ""
        raise ValueError(
            f"Row {row} of column {column!r}{where} is not a readable image: {error}. Fix or drop that row (e.g. "
            "ds.select(...) without it) and run again."
        ) from None


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
    size = checked_settings(ds, image_column, mean, std, image_size, num_channels, batch_size)
    if len(ds) == 0:
        raise ValueError(f"Cannot prepare images from an empty dataset (column {image_column!r} has 0 rows).")

    labels = read_labels(ds, label_column)
    class_names = class_names_of(ds, label_column, labels)
    check_label_range(labels, len(class_names), label_column, "given")

    collector = ImageCollector(image_column, size)
    total = len(ds)
    with tqdm(total=total, desc=desc or f"Preparing {image_column!r}", unit="img", leave=False) as progress:
        for groups, _ in decoded_batches(ds, image_column, batch_size):
            for group_positions, chw in groups:
                collector.add(group_positions, chw)
            progress.update(sum(len(positions) for positions, _ in groups))
    check_finite(collector.nonfinite, image_column)
    target_channels = num_channels or majority_channels(collector.channel_counts, image_column)
    images = assemble_rows(collector, 0, total, target_channels, image_column)
    collector.groups.clear()
    mean_values, std_values = normalization_stats(
        mean, std, target_channels, image_column, lambda: _blocks(images), images.shape[0] * images[0, 0].numel()
    )
    images.sub_(torch.tensor(mean_values, dtype=torch.float32).view(1, -1, 1, 1))
    images.div_(torch.tensor(std_values, dtype=torch.float32).view(1, -1, 1, 1))
    return ImageData(
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=class_names,
        mean=mean_values,
        std=std_values,
    )


def checked_settings(
    ds, image_column: str, mean, std, image_size, num_channels: int | None, batch_size: int
) -> tuple[int, int] | None:
    """Checks what a preparation is asked for (before any decoding); returns the size to resize to, as `(H, W)`."""
    if image_column not in ds.features:
        raise ValueError(f"Image column {image_column!r} not found; the columns are {list(ds.features)}.")
    if num_channels not in (None, 1, 3):
        raise ValueError(f"`num_channels` must be 1 or 3 (or None to keep the images' own), got {num_channels!r}.")
    if (mean is None) != (std is None):
        raise ValueError("Pass both `mean` and `std`, or neither (then both are computed from this split).")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
    return normalize_image_size(image_size)


def decoded_batches(
    ds, image_column: str, batch_size: int, label_column: str | None = None
) -> Iterator[tuple[list[tuple[np.ndarray, np.ndarray]], list | None]]:
    """The split's images, `batch_size` rows at a time, in row order: per batch, groups `(positions, (n, C, H, W)
    array)` of images with one shape and dtype (`uint8`/integer pixels, or floats in `[0, 1]`), and the batch's
    values of `label_column` (when given; else `None`). `ds` may be a `datasets.Dataset` or an `IterableDataset`
    (read once, in order)."""
    feature = ds.features[image_column]
    images_only = ds.select_columns([image_column, *([label_column] if label_column else [])])
    start = 0
    if isinstance(feature, Image):
        decoder = feature if feature.decode else Image(mode=feature.mode)
        for batch in images_only.with_format("arrow").iter(batch_size=batch_size):
            encoded = batch.column(image_column).to_pylist()
            arrays, positions = [], []
            for offset, value in enumerate(encoded):
                if value is None:
                    raise ValueError(
                        f"Row {start + offset} of column {image_column!r} has no image (null). Drop such rows "
                        "first with ds.filter(...)."
                    )
                arrays.append(_pil_to_array(_decode(decoder, value, start + offset, image_column)))
                positions.append(start + offset)
            yield _group_rows(positions, arrays), batch.column(label_column).to_pylist() if label_column else None
            start += len(encoded)
    elif is_array_image_feature(feature):
        for batch in images_only.with_format("numpy").iter(batch_size=batch_size):
            values = batch[image_column]
            n = len(values)
            labels = list(batch[label_column]) if label_column else None
            if isinstance(values, np.ndarray) and values.dtype != object:
                yield [(np.arange(start, start + n), _array_to_chw(values, image_column, batched=True))], labels
            else:
                arrays = [
                    _array_to_chw(np.asarray(v), image_column, batched=False)[0].transpose(1, 2, 0) for v in values
                ]
                yield _group_rows(list(range(start, start + n)), arrays), labels
            start += n
    else:
        raise ValueError(
            f"Column {image_column!r} has feature {feature!r}, which is neither datasets.Image() nor a numeric "
            f"array. Cast it with ds.cast_column({image_column!r}, datasets.Image()) if it holds image "
            "paths/bytes."
        )


def check_finite(nonfinite: int, image_column: str) -> None:
    if nonfinite:
        raise ValueError(
            f"Column {image_column!r} contains {nonfinite} NaN/inf pixel values. Clean or drop those rows "
            "(e.g. replace them with np.nan_to_num) before distilling."
        )


def majority_channels(counts: Counter, image_column: str) -> int:
    """The channel count most images have (3 on a tie); a split that mixes them is converted, with a warning."""
    target_channels = 3 if counts.get(3, 0) >= counts.get(1, 0) else 1
    if len(counts) > 1:
        logger.warning(
            "Column %r mixes images with %s channels; converting all to %d channel(s) (a model given with "
            "model_name_or_path decides by its num_channels).",
            image_column,
            dict(counts),
            target_channels,
        )
    return target_channels


def assemble_rows(
    collector: ImageCollector, start: int, count: int, channels: int, image_column: str, keep_uint8: bool = False
) -> torch.Tensor:
    """Rows `start .. start + count` of `collector`'s groups as one `(count, channels, H, W)` tensor in row order:
    float32 in `[0, 1]`, or, with `keep_uint8`, `uint8` when every group is `uint8` and needs no conversion other
    than repeating one channel (exactly what the float conversion would then give, divided by 255)."""
    first = collector.groups[0][1]
    height, width = int(first.shape[2]), int(first.shape[3])
    as_uint8 = keep_uint8 and all(
        tensor.dtype == torch.uint8 and tensor.shape[1] in (channels, 1) for _, tensor in collector.groups
    )
    images = torch.empty((count, channels, height, width), dtype=torch.uint8 if as_uint8 else torch.float32)
    covered = 0
    for positions, tensor in collector.groups:
        if as_uint8:
            tensor = tensor.expand(-1, channels, -1, -1)
        else:
            tensor = to_float(_convert_channels(tensor, channels))
        positions = positions - start
        if positions.numel() and int(positions[-1]) - int(positions[0]) + 1 == positions.numel():
            images[int(positions[0]) : int(positions[-1]) + 1] = tensor
        else:
            images[positions] = tensor
        covered += positions.numel()
    if covered != count:  # pragma: no cover - defensive
        raise RuntimeError(f"Decoded {covered} images for {count} rows in column {image_column!r}.")
    return images


def normalization_stats(
    mean, std, channels: int, image_column: str, blocks: Callable[[], Iterable[torch.Tensor]], pixels: int
) -> tuple[list[float], list[float]]:
    """The per-channel `mean`/`std` given (checked), or those of the images `blocks()` yields in `[0, 1]` floats
    (`pixels`: images x H x W); a constant channel gets std 1."""
    if mean is None:
        mean_values, std_values = _channel_stats(blocks(), pixels, channels)
        degenerate = [c for c, s in enumerate(std_values) if s < 1e-8]
        if degenerate:
            logger.warning("Channels %s of %r are constant; using std=1.0 for them.", degenerate, image_column)
            std_values = [1.0 if s < 1e-8 else s for s in std_values]
        return mean_values, std_values
    mean_values = [float(m) for m in mean]
    std_values = [float(s) for s in std]
    if len(mean_values) != channels or len(std_values) != channels:
        raise ValueError(
            f"`mean`/`std` need one value per channel ({channels}), got {len(mean_values)} and "
            f"{len(std_values)}. Use the statistics of a split prepared with the same num_channels."
        )
    if any(not np.isfinite(s) or s <= 0 for s in std_values):
        raise ValueError(f"`std` values must be positive, got {std_values}.")
    return mean_values, std_values


def _blocks(images: torch.Tensor, chunk: int = 4096) -> Iterator[torch.Tensor]:
    for start in range(0, images.shape[0], chunk):
        yield images[start : start + chunk]


def _channel_stats(blocks: Iterable[torch.Tensor], pixels: int, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of `(n, C, H, W)` image blocks (`pixels`: all blocks' n x H x W),
    accumulated in float64 block by block."""
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for block in blocks:
        block = block.to(torch.float64)
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.square().sum(dim=(0, 2, 3))
    mean = total / pixels
    var = (total_sq / pixels - mean.square()).clamp_min(0.0)
    return mean.tolist(), var.sqrt().tolist()
