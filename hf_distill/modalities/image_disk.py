"""Image splits kept on disk ([`prepare_images_on_disk`]): decoded once into a [`RowStore`] (pixels as `uint8`
whenever that is exact), then read back by rows and normalised as they are read, so memory does not grow with the
split.

The result is an [`ImageData`] whose `images` is a [`RowsOnDisk`]: the methods and training loops index it like the
in-memory tensor and get exactly the values the in-memory path would hold (the same decoding, conversion and
normalisation, applied to fewer rows at a time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, IterableDataset
from datasets import config as datasets_config
from datasets.utils.tqdm import tqdm
from safetensors.torch import load_file

from ..checkpointing import save_tensors_atomic
from ..data import check_label_feature, check_label_range, class_names_of, read_labels
from ..page_release import release_file_pages
from ..row_store import STORE_HEADER, RowsOnDisk, RowStore, RowStoreWriter
from .image_data import ImageData
from .image_decoding import (
    ImageCollector,
    assemble_rows,
    check_finite,
    checked_settings,
    decoded_batches,
    majority_channels,
    normalization_stats,
    to_float,
)

logger = logging.getLogger(__name__)

#: The pixel statistics of a store, kept beside its rows once computed (`[mean, std]`, one value per channel).
STATS_FILE = "stats.safetensors"
#: Bumped whenever what a store holds for the same inputs changes, so old stores are not reused.
STORE_FORMAT = 1


def default_store_dir() -> Path:
    """Where row stores go unless told: beside the `datasets` cache (`HF_DATASETS_CACHE/hf_distill_rows`)."""
    return Path(datasets_config.HF_DATASETS_CACHE) / "hf_distill_rows"


class NormalizedPixels:
    """Raw stored pixels -> normalised float32 images: `uint8` divided by 255, then `(x - mean) / std` per channel
    (the same operations, in the same order, as the in-memory preparation)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, raw: np.ndarray) -> torch.Tensor:
        images = to_float(torch.from_numpy(raw))  # `raw` is a fresh array from the store: safe to change in place
        return images.sub_(self.mean).div_(self.std)


def store_key(ds: Dataset, image_column: str, image_size, num_channels: int | None) -> str | None:
    """The store's name for this split and these settings: a digest of the dataset's fingerprint (`None` when it
    has none, e.g. a stream: then nothing is reused)."""
    fingerprint = getattr(ds, "_fingerprint", None)
    if fingerprint is None:
        return None
    settings = [STORE_FORMAT, fingerprint, image_column, image_size, num_channels]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:20]


def prepare_images_on_disk(
    ds: Dataset,
    image_column: str,
    label_column: str,
    *,
    store_dir: str | os.PathLike | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int | Sequence[int] | None = None,
    num_channels: int | None = None,
    batch_size: int = 1000,
    desc: str | None = None,
) -> ImageData:
    """Like [`prepare_images`], but the images stay on disk: decoded once into a row store under `store_dir` (named
    by the dataset's fingerprint and the settings, so a later run on the same data reads it back without decoding),
    and read by rows. Memory holds the labels and whatever rows a step reads.

    The channel count, when not given, is the first 1,000 rows' majority (the in-memory path takes the whole split's:
    pass `num_channels` on a split that mixes them). Statistics, when not given, come from one pass over the store.

    Args:
        store_dir (`str` or `os.PathLike`, *optional*): Where stores are kept (default: [`default_store_dir`]).
        Other arguments: as [`prepare_images`].

    Returns:
        [`ImageData`]: With `images` a [`RowsOnDisk`] of shape `(N, C, H, W)`.
    """
    size = checked_settings(ds, image_column, mean, std, image_size, num_channels, batch_size)
    store_dir = Path(store_dir) if store_dir is not None else default_store_dir()
    desc = f"{desc or f'Preparing {image_column!r}'} (to disk)"
    streamed = isinstance(ds, IterableDataset)
    if streamed:
        check_label_feature(ds.features[label_column], label_column)
    elif len(ds) == 0:
        raise ValueError(f"Cannot prepare images from an empty dataset (column {image_column!r} has 0 rows).")
    key = None if streamed else store_key(ds, image_column, size, num_channels)
    if key is not None and (store_dir / key / STORE_HEADER).is_file():
        store = RowStore(store_dir / key)
        logger.info("Reading the decoded images of %r from %s.", image_column, store.path)
    else:
        # A stream (no fingerprint, read once) gets a store of its own, removed when the run ends.
        store_dir.mkdir(parents=True, exist_ok=True)
        path = store_dir / key if key else Path(tempfile.mkdtemp(prefix="stream-", dir=store_dir)) / "rows"
        store, labels = write_store(
            ds, image_column, size, num_channels, batch_size, path, desc, label_column if streamed else None, store_dir
        )
        if key is None:
            weakref.finalize(store, shutil.rmtree, path.parent, True)
    if streamed:
        labels = _labels_of_stream(labels, label_column)
    else:
        labels = _stored(store, _labels_file(label_column), lambda: read_labels(ds, label_column))
    class_names = class_names_of(ds, label_column, labels)
    check_label_range(labels, len(class_names), label_column, "given")
    if store.num_rows != len(labels):  # pragma: no cover - defensive
        raise RuntimeError(f"The store {store.path} holds {store.num_rows} rows for a split of {len(labels)}.")

    channels, height, width = store.row_shape
    if mean is None:  # the statistics of the stored pixels: one pass over the store, once per store
        mean, std = _stored(store, STATS_FILE, lambda: np.asarray(_store_stats(store, image_column)))
    mean_values, std_values = normalization_stats(mean, std, channels, image_column, None, 0)
    release_file_pages(_source_files(ds))  # from here on rows come from the store: the source's pages can go
    return ImageData(
        images=RowsOnDisk(store, NormalizedPixels(mean_values, std_values)),
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=class_names,
        mean=mean_values,
        std=std_values,
    )


def _store_stats(store: RowStore, image_column: str) -> tuple[list[float], list[float]]:
    channels, height, width = store.row_shape
    return normalization_stats(
        None,
        None,
        channels,
        image_column,
        lambda: (to_float(torch.from_numpy(block)) for block in store.blocks()),
        store.num_rows * height * width,
    )


def _source_files(ds: Dataset | IterableDataset) -> list[str]:
    """The Arrow files a split is memory-mapped from (none for a stream or a split held in memory)."""
    return [entry["filename"] for entry in getattr(ds, "cache_files", None) or [] if isinstance(entry, dict)]


def _labels_file(label_column: str) -> str:
    # A digest, not the name itself: a column name may hold characters a file name cannot.
    return f"labels-{hashlib.sha256(label_column.encode()).hexdigest()[:16]}.safetensors"


def _stored(store: RowStore, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """`compute()`, kept in the store's folder as `name` the first time, read from there afterwards.

    Why: reading a label column from a memory-mapped Arrow file visits every record batch of the split, and the kernel
    reads the image bytes around each small label buffer with it; the pixel statistics are a pass over the whole
    store (~25 s at a million CIFAR-10 rows). The store's rows never change (its name is the split's fingerprint), so
    both are computed once ([`save_tensors_atomic`]: a reader finds all of the file or none).
    """
    path = store.path / name
    if path.is_file():
        return load_file(path)["value"].numpy()
    value = np.asarray(compute())
    save_tensors_atomic({"value": torch.from_numpy(np.ascontiguousarray(value))}, path)
    return value


def _labels_of_stream(values: list, label_column: str) -> np.ndarray:
    if any(value is None for value in values):
        raise ValueError(
            f"Label column {label_column!r} has missing (null) values. Drop those rows first, e.g. ds = "
            f"ds.filter(lambda y: y is not None, input_columns={label_column!r})."
        )
    return np.asarray(values, dtype=np.int64)


def write_store(
    ds: Dataset | IterableDataset,
    image_column: str,
    size: tuple[int, int] | None,
    num_channels: int | None,
    batch_size: int,
    path: Path,
    desc: str,
    label_column: str | None = None,
    store_dir: Path | None = None,
) -> tuple[RowStore, list | None]:
    """Decode every image of `ds` once into a row store at `path`: `uint8` rows while every image so far is exactly
    representable (8-bit pixels, no resize, no channel mixing), float32 in `[0, 1]` from the first one that is not.
    Returns the store and, with `label_column`, the labels read on the way (a stream is read only once)."""
    writer, channels, counts, nonfinite, start = None, num_channels, Counter(), 0, 0
    labels = [] if label_column else None
    total = len(ds) if isinstance(ds, Dataset) else None
    source_files = _source_files(ds)
    try:
        with tqdm(total=total, desc=desc, unit="img", leave=False) as progress:
            for groups, batch_labels in decoded_batches(ds, image_column, batch_size, label_column):
                if labels is not None:
                    labels.extend(batch_labels)
                count = sum(len(positions) for positions, _ in groups)
                collector = ImageCollector(image_column, size)
                for positions, chw in groups:
                    collector.add(positions, chw)
                nonfinite += collector.nonfinite
                if not nonfinite:
                    counts.update(collector.channel_counts)
                    channels = channels or majority_channels(collector.channel_counts, image_column)
                    rows = assemble_rows(collector, start, count, channels, image_column, keep_uint8=True)
                    writer = _append(writer, path, rows, start, image_column)
                start += count
                progress.update(count)
                release_file_pages(source_files)  # decoded and written: else the whole source ends up resident
        check_finite(nonfinite, image_column)
        if writer is None:
            raise ValueError(f"Cannot prepare images from an empty dataset (column {image_column!r} has no rows).")
        if len(counts) > 1 and num_channels is None:
            logger.warning(
                "Column %r mixes images with %s channels; all were converted to %d channel(s), the first rows' "
                "majority. Pass num_channels to choose.",
                image_column,
                dict(counts),
                channels,
            )
        metadata = {"image_column": image_column, "image_size": size, "num_channels": num_channels}
        metadata["store_dir"] = str(store_dir or path.parent)  # where splits prepared like this go (ImageModality)
        return writer.commit(metadata), labels
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _append(writer: RowStoreWriter | None, path: Path, rows: torch.Tensor, start: int, column: str) -> RowStoreWriter:
    """Append one decoded batch, opening the store on the first and moving it to float32 when a batch needs it."""
    if writer is None:
        writer = RowStoreWriter(path, tuple(rows.shape[1:]), np.uint8 if rows.dtype == torch.uint8 else np.float32)
    elif tuple(rows.shape[1:]) != writer.row_shape:
        raise ValueError(
            f"Images in column {column!r} have different sizes: {writer.row_shape[1:]} (row 0) and "
            f"{tuple(rows.shape[2:])} (rows from {start}), as (H, W). Set image_size=<side> (--image_size) to resize "
            "every image to one square size."
        )
    if rows.dtype == torch.uint8 and writer.dtype == np.float32:
        rows = to_float(rows)
    elif rows.dtype != torch.uint8 and writer.dtype == np.uint8:
        writer.convert(np.float32, lambda block: to_float(torch.from_numpy(block.copy())).numpy())
    writer.append(rows.numpy())
    return writer
