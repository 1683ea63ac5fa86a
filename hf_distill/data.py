"""Data, whatever the modality: loading a source dataset, and its labels and their checks.

The entry points are:

- [`load_source`]: a `datasets.Dataset`/`DatasetDict`, a local folder (`save_to_disk`, parquet, Hub layout or
  imagefolder), a Hub id, or the builtin offline demo set [`DIGITS_SOURCE`] -> `(train, test)` splits.
- [`find_label_column`] / [`validate_labels`]: the label column, and cheap checks of it (no input is decoded)
  with error messages that say how to fix the input.

Per-class structure of a prepared split (`LabelledSplit`, `ClassBalancedSampler`) is `hf_distill.splits`;
finding and preparing the inputs (images, text) is the modality's job: `hf_distill.modalities`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as arrow_dataset
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    Image,
    IterableDataset,
    IterableDatasetDict,
    Value,
    load_dataset,
    load_dataset_builder,
    load_from_disk,
)

from .constants import DIGITS_SOURCE
from .hub_utils import check_hub_access, hub_error, looks_like_local_path

logger = logging.getLogger(__name__)

LABEL_COLUMN_CANDIDATES = ("label", "labels")
"""Preferred label column names."""

#: The bundled 8x8 digits (see `hf_distill/demo/README.md`).
DIGITS_FILE = Path(__file__).parent / "demo" / "digits.npz"
#: How a user names the columns: config fields, and the flags of the same names.
COLUMN_MAPPING_HINT = (
    "set image_column=<column> (or text_column=<column>) and/or label_column=<column> (--image_column / "
    "--text_column / --label_column)"
)
_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")

# ---------------------------------------------------------------------------------------------------------------------
# Builtin offline demo dataset
# ---------------------------------------------------------------------------------------------------------------------


def make_digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> DatasetDict:
    """Build the bundled 8x8 handwritten digits (scikit-learn's `load_digits`, shipped in `hf_distill/demo/`) as an
    image `DatasetDict` (no download).

    Pixels (0..16) are scaled to 0..255 `uint8` and stored as 8x8 `PIL` images of mode `L`.
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

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
    with np.load(DIGITS_FILE) as digits:
        images, targets = digits["images"].astype(np.float64), digits["target"].astype(np.int64)
    pixels = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
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
    dd: DatasetDict, train_split: str, test_split: str | None, source: str, require_test_split: bool = False
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
        if require_test_split:
            raise ValueError(
                f"Split {test_split!r} not found in {source}; available splits: {available}. Evaluation needs a "
                f"test split: pass test_split=<one of {available}> (--test_split)."
            )
        logger.warning(
            "Split %r not found in %s (available splits: %s); continuing without a test split. "
            "Pass test_split=<split name> to evaluate on another split.",
            test_split,
            source,
            available,
        )
        return dd[train_split], None
    return dd[train_split], dd[test_split]


def _as_pair(
    loaded: Any, train_split: str, test_split: str | None, source: str, require_test_split: bool = False
) -> tuple[Dataset, Dataset | None]:
    if isinstance(loaded, DatasetDict | IterableDatasetDict):
        return _pick_splits(loaded, train_split, test_split, source, require_test_split)
    if isinstance(loaded, Dataset | IterableDataset):
        if require_test_split and test_split is not None:
            raise ValueError(
                f"{source} is a single split: evaluation needs a test split. Pass a DatasetDict or the test split "
                "(eval_dataset=...), or set test_split=None to distill without evaluating."
            )
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
    require_test_split: bool = False,
    streaming: bool = False,
) -> tuple[Dataset, Dataset | None]:
    """Load the train (and, when present, test) split of a source dataset.

    `dataset` can be:

    - [`DIGITS_SOURCE`] (`"sklearn:digits"`): the builtin offline demo set ([`make_digits_dataset`]);
    - a `datasets.Dataset` (or `IterableDataset`): returned as the train split, with no test split;
    - a `datasets.DatasetDict` (or `IterableDatasetDict`): `train_split` and `test_split` are picked from it;
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
        streaming (`bool`, *optional*, defaults to `False`):
            Load data files and Hub ids with `load_dataset(..., streaming=True)`: `IterableDataset`s, read once
            (images are then written to a row store on disk; see `data_on_disk`). A `save_to_disk` folder is
            already on disk and is loaded as it is.
        require_test_split (`bool`, *optional*, defaults to `False`):
            A missing `test_split` is an error (listing the available splits) instead of a warning: for a run that
            will evaluate, so that it fails before distilling.

    Returns:
        `tuple[datasets.Dataset, datasets.Dataset | None]`: The train split and the test split (or `None`).

    Raises:
        ValueError: If the train split is missing (the message lists the available splits), a local path does not
            exist, or the dataset cannot be found/loaded: unknown Hub id, gated dataset, unknown revision, bad
            configuration name (the message names the source and what to do).
        RuntimeError: If the Hub cannot be reached (checked with one request, so this fails fast), offline mode
            is on and the dataset is not cached, or loading fails for another reason.
    """
    if isinstance(dataset, DatasetDict | Dataset | IterableDatasetDict | IterableDataset):
        return _as_pair(dataset, train_split, test_split, "the given dataset", require_test_split)
    if not isinstance(dataset, (str, os.PathLike)):
        raise TypeError(
            "`dataset` must be a Hub id, a local path, a datasets.Dataset or a datasets.DatasetDict, got "
            f"{type(dataset).__name__}."
        )
    if isinstance(dataset, str) and dataset == DIGITS_SOURCE:
        return _as_pair(make_digits_dataset(), train_split, test_split, f"{DIGITS_SOURCE!r}", require_test_split)

    source = os.fspath(dataset)
    path = Path(source).expanduser()
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
    if path.exists():
        loaded, described = _load_local(path, train_split, name=name, cache_dir=cache_dir, streaming=streaming)
    elif isinstance(dataset, os.PathLike) or looks_like_local_path(source):
        raise ValueError(
            f"Local dataset path {source!r} does not exist. Check the path, or pass a Hub dataset id "
            "(e.g. 'ylecun/mnist')."
        )
    else:
        loaded = _load_hub(source, name=name, revision=revision, token=token, cache_dir=cache_dir, streaming=streaming)
        described = f"dataset {source!r}"
    return _as_pair(loaded, train_split, test_split, described, require_test_split)


#: Rows per table when a parquet source is streamed (`datasets`' default is a whole row group: tens of thousands of
#: images in a file written by `Dataset.to_parquet`).
STREAMED_PARQUET_BATCH_ROWS = 1000


def _load_dataset(path: str, name: str | None = None, *, streaming: bool = False, **kwargs: Any):
    """`load_dataset(path, name, streaming=streaming, **kwargs)`, except that streamed parquet is read without
    pyarrow's pre-buffering and [`STREAMED_PARQUET_BATCH_ROWS`] rows at a time (unless `kwargs` say otherwise): with
    the defaults, the resident memory of one pass over a stream grew with the rows read (CIFAR-10 repeated to 250,000
    rows: 1.4 GB after the pass, 0.8 GB with these settings; benchmarks/README.md, "Data on disk")."""
    if not streaming:
        return load_dataset(path, name, **kwargs)
    builder = load_dataset_builder(path, name, **kwargs)
    # The parquet builder's config class is not exported by `datasets`: recognised by the builder's name and options.
    if builder.name == "parquet" and hasattr(builder.config, "fragment_scan_options"):
        if builder.config.fragment_scan_options is None:
            builder.config.fragment_scan_options = arrow_dataset.ParquetFragmentScanOptions(pre_buffer=False)
        builder.config.batch_size = builder.config.batch_size or STREAMED_PARQUET_BATCH_ROWS
    return builder.as_streaming_dataset()


def _load_local(
    path: Path, train_split: str, *, name: str | None, cache_dir: str | None, streaming: bool = False
) -> tuple[Dataset | DatasetDict, str]:
    """What a local folder or file holds, and how to name it in messages."""
    source = f"local dataset {str(path)!r}"
    if path.is_dir() and any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS):
        try:
            return load_from_disk(str(path)), source
        except IndexError:  # what `datasets` raises for a split saved with no rows
            raise ValueError(
                f"Could not load {source}: a split in it has no rows (or its data files are missing). Save the "
                "dataset again with its rows."
            ) from None
    kwargs: dict[str, Any] = {"cache_dir": cache_dir, "streaming": streaming}
    if name is not None:
        kwargs["name"] = name
    try:
        if path.is_file():
            builder = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}
            suffix = path.suffix.lower()
            if suffix not in builder:
                raise ValueError(f"unsupported file type {suffix!r} (expected one of {sorted(builder)})")
            files = {train_split: str(path)}
            loaded = _load_dataset(builder[suffix], data_files=files, cache_dir=cache_dir, streaming=streaming)
        else:
            try:
                loaded = _load_dataset(str(path), **kwargs)
            except Exception as first_error:
                logger.info("load_dataset(%r) failed (%s); trying the imagefolder builder.", str(path), first_error)
                try:
                    loaded = _load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir, streaming=streaming)
                except Exception:
                    raise first_error from None
    except Exception as e:
        raise ValueError(
            f"Could not load {source}: {type(e).__name__}: {e}. Check that the folder holds a dataset written with "
            "save_to_disk, data files (parquet/csv/json/arrow, optionally with a README.md `configs:` block), or an "
            "imagefolder tree (<split>/<class>/<image>), and that `name` is one of its configurations."
        ) from e
    return loaded, source


def _load_hub(
    repo_id: str,
    *,
    name: str | None,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | None,
    streaming: bool = False,
) -> Dataset | DatasetDict:
    # One request first: a typo, a gated dataset, a bad revision or no network fails at once with one clear
    # message, instead of after `load_dataset`'s retries (half a minute per file without a connection).
    check_hub_access(repo_id, repo_type="dataset", revision=revision, token=token)
    try:
        loaded = _load_dataset(repo_id, name, revision=revision, token=token, cache_dir=cache_dir, streaming=streaming)
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
    return loaded


# ---------------------------------------------------------------------------------------------------------------------
# Label column
# ---------------------------------------------------------------------------------------------------------------------


def is_int_dtype(dtype: str) -> bool:
    """Whether an Arrow dtype name is an integer type."""
    return dtype.startswith(("int", "uint"))


def _is_int_label_feature(feature: Any) -> bool:
    return isinstance(feature, ClassLabel) or (isinstance(feature, Value) and is_int_dtype(feature.dtype))


def describe_columns(features: Features) -> str:
    """`'name': feature, ...` for error messages."""
    return ", ".join(f"{k!r}: {v!r}" for k, v in features.items()) or "(none)"


def find_label_column(features: Features, input_column: str, mapped: str | None = None) -> str:
    """The label column: `mapped` when given (checked), else a `ClassLabel` column (preferring `label`/`labels`),
    else an integer column named `label` or `labels`; never the `input_column`.

    Raises:
        ValueError: No label column, or one that is neither a `ClassLabel` nor integers (the message says how to fix).
    """
    if mapped is not None:
        if mapped == input_column:
            raise ValueError(f"The input and label columns must differ, both are {mapped!r}.")
        check_label_feature(features[mapped], mapped)
        return mapped
    others = {k: v for k, v in features.items() if k != input_column}
    class_label_columns = [k for k, v in others.items() if isinstance(v, ClassLabel)]
    preferred = [k for k in LABEL_COLUMN_CANDIDATES if k in class_label_columns]
    if preferred:
        return preferred[0]
    if class_label_columns:
        return class_label_columns[0]
    for candidate in LABEL_COLUMN_CANDIDATES:
        if candidate in others:
            check_label_feature(others[candidate], candidate)
            return candidate
    raise ValueError(
        f"Could not find a label column. Columns found: {describe_columns(features)}. Expected a ClassLabel column, "
        f"or an integer column named {' / '.join(LABEL_COLUMN_CANDIDATES)}. To fix it, {COLUMN_MAPPING_HINT} (a "
        "string label column can be encoded with ds = ds.class_encode_column(<column>))."
    )


def checked_column_mapping(features: Features, column_mapping: dict[str, str] | None, input_role: str) -> dict:
    """`column_mapping` as a dict, checked: only the keys `input_role` (e.g. `"image"`) and `"label"`, each naming a
    column of `features`.

    Raises:
        ValueError: Another key, or a column the dataset does not have (the message lists the columns).
    """
    column_mapping = dict(column_mapping or {})
    unknown = set(column_mapping) - {input_role, "label"}
    if unknown:
        raise ValueError(
            f"Unknown column_mapping keys {sorted(unknown)}; the supported keys are {input_role!r} and 'label', e.g. "
            f"column_mapping={{{input_role!r}: <column>, 'label': <column>}}."
        )
    for role, column in column_mapping.items():
        if column not in features:
            raise ValueError(
                f"{role}_column={column!r} (--{role}_column) is not a column of the dataset; the columns are "
                f"{list(features)}."
            )
    return column_mapping


def check_label_feature(feature: Any, column: str) -> None:
    if not _is_int_label_feature(feature):
        raise ValueError(
            f"Label column {column!r} has feature {feature!r}; labels must be a ClassLabel or an integer column. "
            f"Encode string labels with ds = ds.class_encode_column({column!r}), or cast integer-valued labels with "
            f"ds = ds.cast_column({column!r}, datasets.ClassLabel(names=[...]))."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Labels and validation
# ---------------------------------------------------------------------------------------------------------------------


def read_labels(ds: Dataset, label_column: str) -> np.ndarray:
    """Read the label column as `int64` without touching (or decoding) any other column."""
    if label_column not in ds.features:
        raise ValueError(f"Label column {label_column!r} not found; the columns are {list(ds.features)}.")
    check_label_feature(ds.features[label_column], label_column)
    table = ds.select_columns([label_column]).with_format("arrow")[:]
    column = table.column(label_column)
    if column.null_count:
        raise ValueError(
            f"Label column {label_column!r} has {column.null_count} missing (null) values. Drop those rows first, "
            f"e.g. ds = ds.filter(lambda x: x is not None, input_columns={label_column!r})."
        )
    return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def class_names_of(ds: Dataset, label_column: str, labels: np.ndarray) -> list[str]:
    feature = ds.features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    num_classes = int(labels.max()) + 1 if labels.size else 0
    return [str(i) for i in range(max(num_classes, 0))]


def check_label_range(labels: np.ndarray, num_classes: int, label_column: str, split: str) -> None:
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


def validate_labels(
    ds: Dataset,
    label_column: str,
    *,
    images_per_class: int | None = None,
    init: str = "real",
    split: str = "train",
) -> None:
    """Check that a split's labels can be distilled, with error messages that say how to fix the problem.

    Only the label column is read (no input is decoded), so this is cheap even for large splits.

    Args:
        ds (`datasets.Dataset`): The split.
        label_column (`str`): Name of the label column (`ClassLabel` or integer).
        images_per_class (`int`, *optional*): Examples per class of the distilled set; with `init="real"` every class
            needs at least this many rows.
        init (`str`, *optional*, defaults to `"real"`): Initialisation of the synthetic set; only `"real"`
            (initialise from real rows) needs real rows per class.
        split (`str`, *optional*, defaults to `"train"`): Name of the split, used in the messages.

    Raises:
        ValueError: If the label column is missing, the split is empty, a label is outside `[0, num_classes)`, or
            (with `init="real"`) a class has fewer rows than `images_per_class`.
    """
    if label_column not in ds.features:
        raise ValueError(
            f"Label column {label_column!r} not found in the {split!r} split; the columns are {list(ds.features)}. "
            f"To fix it, {COLUMN_MAPPING_HINT}."
        )
    if len(ds) == 0:
        raise ValueError(
            f"The {split!r} split is empty (0 rows). Check the split name and any filtering applied before "
            "distillation."
        )
    if images_per_class is not None and (isinstance(images_per_class, bool) or images_per_class < 1):
        raise ValueError(f"`images_per_class` must be a positive integer, got {images_per_class!r}.")
    labels = read_labels(ds, label_column)
    check_labels(labels, class_names_of(ds, label_column, labels), label_column, images_per_class, init, split)


def check_labels(
    labels: np.ndarray,
    class_names: list[str],
    label_column: str,
    images_per_class: int | None = None,
    init: str = "real",
    split: str = "train",
) -> None:
    """The checks of [`validate_labels`] on labels already read (e.g. from a stream, once it has been read)."""
    num_classes = len(class_names)
    check_label_range(labels, num_classes, label_column, split)
    if images_per_class is None:  # a test split: any classes it has are fine
        return
    if num_classes < 2:
        raise ValueError(
            f"The label column {label_column!r} of the {split!r} split has {num_classes} class(es) "
            f"({class_names}): distillation and its accuracy need at least 2. Use a dataset (or a ClassLabel) with "
            "two classes or more."
        )
    counts = np.bincount(labels, minlength=num_classes)
    empty = [(class_names[c], c) for c in range(num_classes) if counts[c] == 0]
    if empty:
        listed = ", ".join(f"{name!r} (class {c})" for name, c in empty[:10])
        raise ValueError(
            f"{len(empty)} of the {num_classes} classes named by the label column {label_column!r} have no rows in "
            f"the {split!r} split: {listed}. Every class needs examples (labels numbered from 1, or a subset of a "
            "dataset, leave ids unused): shift the ids to 0..K-1 over the classes present and cast the column to a "
            f"ClassLabel of those K names, e.g. ds.map(...) then ds.cast_column({label_column!r}, "
            "ClassLabel(names=[...]))."
        )
    if init != "real":
        return
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
