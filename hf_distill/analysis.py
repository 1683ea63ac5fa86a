"""Look at a dataset before condensing it: class balance, per-class image statistics, near-duplicates and outliers in
an embedding (`hf-distill analyze`, [`analyze_dataset`]).

The embedding is the one the coresets use: a network of the run's architecture, random (`selection_epochs=0`, the
default here: seconds, and DM shows random ConvNet features are informative) or trained on the split, through
[`SelectionContext`]; with `selection_cache_dir` the trained network is shared with later herding/k-center runs.
"""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict

from .checkpointing import write_json_atomic
from .data import load_source
from .methods import SelectionContext
from .methods.coreset import CoresetConfig
from .modalities import ImageData
from .modeling import describe_architecture
from .models import EmbeddingClassifier
from .preparation import prepare

ANALYSIS_NAME = "analysis.json"
ANALYSIS_PLOT_NAME = "analysis.png"


@dataclass
class AnalysisConfig(CoresetConfig):
    """What `hf-distill analyze` looks at, and with which network (every data and network option of a run applies)."""

    method: str = field(default="random", init=False, metadata={"help": "Unused: analysis selects nothing."})
    selection_epochs: int = field(
        default=0, metadata={"help": "Epochs the embedding network trains on the split first (0: a random network)."}
    )
    duplicate_threshold: float = field(
        default=0.99, metadata={"help": "Cosine similarity in the embedding above which two rows are near-duplicates."}
    )
    outlier_z: float = field(
        default=3.0,
        metadata={"help": "A row is an outlier when its distance to its class mean is this many std above the mean."},
    )
    max_listed: int = field(default=50, metadata={"help": "Rows or pairs listed per finding (the counts cover all)."})
    chunk_size: int = field(default=1024, metadata={"help": "Rows per block of the all-pairs similarity pass."})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.duplicate_threshold <= 1.0:
            raise ValueError(f"duplicate_threshold must be in (0, 1], got {self.duplicate_threshold}.")
        if self.outlier_z <= 0 or self.max_listed < 0 or self.chunk_size < 1:
            raise ValueError("outlier_z must be > 0, max_listed >= 0 and chunk_size >= 1.")


def class_counts(labels: torch.Tensor, class_names: list[str]) -> dict:
    """Rows in all and per class, and the imbalance ratio (largest class / smallest)."""
    counts = torch.bincount(labels, minlength=len(class_names))
    return {
        "num_rows": int(labels.numel()),
        "num_classes": len(class_names),
        "imbalance_ratio": round(float(counts.max()) / max(float(counts.min()), 1.0), 3),
        "smallest_class": class_names[int(counts.argmin())],
        "largest_class": class_names[int(counts.argmax())],
        "per_class": {name: {"rows": int(counts[index])} for index, name in enumerate(class_names)},
    }


def class_statistics(images: torch.Tensor, labels: torch.Tensor, class_names: list[str], mean, std) -> dict:
    """[`class_counts`] and per-class per-channel pixel mean and std in [0, 1] units."""
    report = class_counts(labels, class_names)
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)
    for index, name in enumerate(class_names):
        pixels = images[labels == index] * std + mean  # undo the normalisation: pixel units
        report["per_class"][name]["pixel_mean"] = [round(float(v), 4) for v in pixels.mean(dim=(0, 2, 3))]
        report["per_class"][name]["pixel_std"] = [round(float(v), 4) for v in pixels.std(dim=(0, 2, 3))]
    return report


def token_statistics(tokens: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict:
    """[`class_counts`] and, per class, the mean and std of the tokens per sentence and how many sentences fill all
    `max_length` positions (probably truncated); `tokens` as `TextData.inputs` (ids and mask)."""
    report = class_counts(labels, class_names)
    lengths = tokens[..., 1].sum(dim=1).float()
    for index, name in enumerate(class_names):
        own = lengths[labels == index]
        report["per_class"][name]["tokens_mean"] = round(float(own.mean()), 2)
        report["per_class"][name]["tokens_std"] = round(float(own.std()), 2)
        report["per_class"][name]["at_max_length"] = int((own >= tokens.shape[1]).sum())
    return report


def near_duplicates(features: torch.Tensor, threshold: float, chunk_size: int) -> dict:
    """All pairs whose centred features have cosine similarity >= `threshold` (in blocks of `chunk_size` rows:
    memory `chunk x N`), and every row's highest similarity to another row.

    Returns:
        `dict`: `pairs` (`(i, j, similarity)` with `i < j`, most similar first), `nearest_similarity` `(N,)`.
    """
    # Centred first: post-ReLU features all lie in one orthant, where every pair has a high cosine.
    features = features.float()
    unit = torch.nn.functional.normalize(features - features.mean(0), dim=1)
    nearest = torch.empty(len(unit))
    pairs = []
    for start in range(0, len(unit), chunk_size):
        block = unit[start : start + chunk_size] @ unit.T
        rows = torch.arange(start, start + len(block))
        block[torch.arange(len(block)), rows] = -2.0  # a row is not its own duplicate
        nearest[rows] = block.max(dim=1).values
        i, j = (block >= threshold).nonzero(as_tuple=True)
        i = i + start
        keep = i < j  # each pair once
        pairs += [(int(a), int(b), float(block[a - start, b])) for a, b in zip(i[keep], j[keep])]
    pairs.sort(key=lambda pair: -pair[2])
    return {"pairs": pairs, "nearest_similarity": nearest}


def class_outliers(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Per row: the z-score of its distance to its class mean (within its class), and the class whose mean is
    nearest (a row nearer another class's mean may be mislabelled or ambiguous)."""
    features = features.float()
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    distance = (features - means[labels]).norm(dim=1)
    z = torch.zeros_like(distance)
    for c in range(num_classes):
        rows = labels == c
        spread = distance[rows].std() if rows.sum() > 1 else torch.tensor(0.0)
        z[rows] = (distance[rows] - distance[rows].mean()) / spread.clamp_min(1e-12)
    nearest_class = torch.cdist(features, means).argmin(dim=1)
    return {"z": z, "nearest_class": nearest_class}


def analyze_prepared(config: AnalysisConfig, prepared, source: str | None = None) -> tuple[dict, dict]:
    """The analysis of prepared data (see [`analyze_dataset`]): the JSON-ready report, and the per-row curves the
    plot draws (`nearest_similarity`, `z`)."""
    start = time.perf_counter()
    data = prepared.train_data
    names, labels = list(data.class_names), data.labels
    report = {"dataset": source, "split": config.train_split}
    if isinstance(data, ImageData):
        report.update(class_statistics(data.images, labels, names, data.mean, data.std))
    else:
        report.update(token_statistics(data.inputs, labels, names))

    context = SelectionContext(config, prepared)
    features = context.embedding(config.selection_epochs)
    frozen = context.selection_inputs()[1] == EmbeddingClassifier.input_name
    report["embedding"] = {
        "network": describe_architecture(prepared.model_config.to_dict())
        + (" (pretrained, frozen)" if frozen else ""),
        "selection_epochs": 0 if frozen else config.selection_epochs,
        "dim": int(features.shape[1]),
    }

    found = near_duplicates(features, config.duplicate_threshold, config.chunk_size)
    pairs = found["pairs"]
    cross = [pair for pair in pairs if labels[pair[0]] != labels[pair[1]]]
    listed = [
        {"rows": [i, j], "labels": [names[labels[i]], names[labels[j]]], "similarity": round(s, 5)}
        for i, j, s in (cross + [p for p in pairs if labels[p[0]] == labels[p[1]]])[: config.max_listed]
    ]
    report["near_duplicates"] = {
        "threshold": config.duplicate_threshold,
        "pairs": len(pairs),
        "cross_class_pairs": len(cross),  # the same image under two labels: label noise
        "rows_with_a_duplicate": int((found["nearest_similarity"] >= config.duplicate_threshold).sum()),
        "listed": listed,  # cross-class pairs first
    }

    outliers = class_outliers(features, labels, len(names))
    z, nearest_class = outliers["z"], outliers["nearest_class"]
    flagged = (z > config.outlier_z).nonzero().flatten()
    flagged = flagged[torch.argsort(z[flagged], descending=True)]
    elsewhere = (nearest_class != labels).nonzero().flatten()
    report["outliers"] = {
        "z_threshold": config.outlier_z,
        "count": int(flagged.numel()),
        "per_class": {name: int(((z > config.outlier_z) & (labels == c)).sum()) for c, name in enumerate(names)},
        "listed": [
            {"row": int(r), "label": names[labels[r]], "z": round(float(z[r]), 3)}
            for r in flagged[: config.max_listed]
        ],
    }
    report["nearer_to_another_class_mean"] = {
        "count": int(elsewhere.numel()),
        "fraction": round(elsewhere.numel() / max(len(labels), 1), 5),
        "listed": [
            {"row": int(r), "label": names[labels[r]], "nearest_class": names[nearest_class[r]]}
            for r in elsewhere[: config.max_listed]
        ],
    }
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report, {"nearest_similarity": found["nearest_similarity"], "z": z}


def plot_analysis(report: dict, curves: dict, path: Path) -> None:
    """Three panels: rows per class, every row's highest similarity to another row, the outlier z-scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (counts, similarity, outliers) = plt.subplots(1, 3, figsize=(13, 3.6))
    names = list(report["per_class"])
    counts.bar(range(len(names)), [report["per_class"][n]["rows"] for n in names])
    counts.set(title="rows per class", xticks=range(len(names)))
    counts.set_xticklabels(names, rotation=60, fontsize=7)
    similarity.hist(curves["nearest_similarity"].numpy(), bins=100)
    similarity.axvline(report["near_duplicates"]["threshold"], color="red", linestyle="--")
    similarity.set(title="highest cosine similarity to another row", yscale="log")
    outliers.hist(curves["z"].numpy(), bins=100)
    outliers.axvline(report["outliers"]["z_threshold"], color="red", linestyle="--")
    outliers.set(title="distance to class mean (z-score)", yscale="log")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def analyze_dataset(
    dataset: str | os.PathLike | Dataset | DatasetDict,
    config: AnalysisConfig | None = None,
    output_dir: str | os.PathLike | None = None,
    *,
    dataset_config_name: str | None = None,
    command: str | None = None,
) -> dict:
    """Reports what a dataset holds before it is condensed: class balance, per-class pixel statistics (text: tokens
    per sentence), near-duplicate pairs (and those across two labels), outliers of each class and rows nearer another
    class's mean, in the embedding of a network of the run's architecture (text: the frozen encoder's).

    Args:
        dataset (`str`, `os.PathLike`, `Dataset` or `DatasetDict`): As [`distill_dataset`]'s (its train split).
        config ([`AnalysisConfig`], *optional*): Thresholds, the embedding network and the data options.
        output_dir (`str` or `os.PathLike`, *optional*): Where to write `analysis.json` and `analysis.png`.
        dataset_config_name (`str`, *optional*): Hub dataset configuration name.
        command (`str`, *optional*): The command that asked for the report, recorded in it.

    Returns:
        `dict`: the report (as written to `analysis.json`).
    """
    config = config or AnalysisConfig()
    train, _ = load_source(dataset, train_split=config.train_split, test_split=None, name=dataset_config_name)
    source = os.fspath(dataset) if isinstance(dataset, str | os.PathLike) else None
    report, curves = analyze_prepared(config, prepare(config, train), source)
    if command:
        report = {"command": command, **report}
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_dir / ANALYSIS_NAME, report)
        plot_analysis(report, curves, output_dir / ANALYSIS_PLOT_NAME)
    return report
