"""The dataset card of a distilled set, and the pieces every card shares (sources, licenses, versions, merging).

The cards are the Jinja templates in `hf_distill/templates/`, rendered with `DatasetCard.from_template`;
[`hf_distill.student_cards`] renders the KD student's and the experts' model cards, [`hf_distill.hub`] pushes them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, HfApi, RepoCard
from huggingface_hub import constants as hub_constants

from .constants import (
    CONFIG_NAME,
    CROSS_ARCHITECTURE_RESULTS_NAME,
    DIGITS_SOURCE,
    EVAL_RESULTS_NAME,
    __version__,
)
from .hub_utils import first_line, hub_endpoint, is_hub_id, is_offline, public_text
from .modeling import describe_architecture
from .registry import METHODS, get_modality_class

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
DATASET_CARD_TEMPLATE = TEMPLATES_DIR / "dataset_card.md"
CARD_TAGS = ["hf-distill", "dataset-distillation"]


# ---------------------------------------------------------------------------------------------------------------------
# Shared card pieces
# ---------------------------------------------------------------------------------------------------------------------


def framework_versions(hf_distill_version: str | None = None) -> dict[str, str]:
    """Versions of the libraries a card reports (`hf_distill_version`: the one recorded at training time)."""
    import datasets
    import torch
    import transformers

    return {
        "hf_distill": hf_distill_version or __version__,
        "PyTorch": torch.__version__,
        "Datasets": datasets.__version__,
        "Transformers": transformers.__version__,
    }


def merge_card(card: RepoCard, existing: RepoCard | None) -> RepoCard:
    """`card`, keeping the metadata of `existing` (the card already on the Hub) that `card` does not set.

    The YAML of `existing` (e.g. the `dataset_info` and `configs` that `datasets` writes, or keys a user added on the
    Hub) survives; keys `card` sets replace it, tags are united. The body is `card`'s.

    Args:
        card (`RepoCard`): The freshly rendered card.
        existing (`RepoCard`, *optional*): The card to update; `None` returns `card` unchanged.

    Returns:
        `RepoCard`: A card of the same class as `card`.
    """
    if existing is None:
        return card
    data = existing.data.to_dict()
    ours = card.data.to_dict()
    tags = [*_as_list(data.get("tags")), *_as_list(ours.get("tags"))]
    data.update(ours)
    if tags:
        data["tags"] = list(dict.fromkeys(tags))
    card_data = type(card).card_data_class(**data)
    return type(card)(f"---\n{card_data.to_yaml()}\n---\n{card.text}")


# ---------------------------------------------------------------------------------------------------------------------
# Pushing a distilled set
# ---------------------------------------------------------------------------------------------------------------------


def published_card(card: RepoCard) -> RepoCard:
    """`card` without the local paths its inputs recorded (see [`public_text`]): a card names a local dataset or
    model by its folder, never by where it lies on the machine that rendered it."""
    return type(card)(public_text(str(card)))


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def read_card_json(path: Path, *, required: bool = False, hint: str = "") -> dict:
    if not path.is_file():
        if required:
            raise ValueError(f"{path} not found{': ' + hint if hint else '.'}")
        return {}
    return json.loads(path.read_text())


def _size_category(num_rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if num_rows < limit:
            return name
    return "1M<n<10M" if num_rows < 10_000_000 else "other"


def source_link(source: str | None) -> str:
    """Markdown naming a source dataset: a link for Hub ids, a plain name for local or builtin data."""
    if not source:
        return "an in-memory dataset"
    if source == DIGITS_SOURCE:
        return "scikit-learn's 8x8 handwritten digits (`sklearn:digits`)"
    if is_hub_id(source):
        return f"[{source}](https://huggingface.co/datasets/{source})"
    return f"the local dataset `{Path(source).name}`"


def source_short_name(source: str | None) -> str:
    if not source:
        return "Dataset"
    if source == DIGITS_SOURCE:
        return "scikit-learn digits"
    return source if is_hub_id(source) else Path(source).name


def _card_license(data: Any) -> Any:
    return data.get("license") if data is not None else None


def source_license(source: str | None, *, revision: str | None = None, token: str | bool | None = None) -> Any:
    """The license in the dataset card of `source` (a Hub id, or a local folder with a README.md), or `None`.

    A Hub lookup failure is logged and gives `None`: a card is still written, with `license: unknown`.
    """
    if not source or source == DIGITS_SOURCE:
        return None
    path = Path(source).expanduser()
    if path.exists():
        readme = path / "README.md" if path.is_dir() else path.parent / "README.md"
        if not readme.is_file():
            return None
        try:
            return _card_license(DatasetCard.load(readme, ignore_metadata_errors=True).data)
        except Exception as error:  # noqa: BLE001 - an unreadable card must not stop a push
            logger.warning("Could not read the license of %s from %s (%s).", source, readme, first_line(error))
            return None
    if not is_hub_id(source) or is_offline("dataset"):
        return None
    api = HfApi(endpoint=hub_endpoint("dataset"), token=token)
    try:
        # One request without retries first: a missing or unreachable repository fails fast here.
        info = api.dataset_info(source, revision=revision, timeout=hub_constants.HF_HUB_ETAG_TIMEOUT)
        license_ = _card_license(info.card_data)
        if license_ is None:  # some servers leave the card data out of the API answer: read the card itself
            readme = api.hf_hub_download(source, "README.md", repo_type="dataset", revision=info.sha)
            license_ = _card_license(DatasetCard.load(readme, ignore_metadata_errors=True).data)
        return license_
    except Exception as error:  # noqa: BLE001 - the card is still useful without the license
        reason = first_line(error)
        logger.warning(
            "Could not read the license of %r from its dataset card (%s); writing 'unknown'.", source, reason
        )
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Dataset card
# ---------------------------------------------------------------------------------------------------------------------


def _format_accuracy(result: dict) -> str:
    if result.get("protocol") == "linear_probe":  # one convex fit: no spread to show
        return f"{result['mean']:.2f}"
    return f"{result['mean']:.2f} ± {result['std']:.2f}"


#: The evaluation results a card shows, in its row order, and each row's name (`{method}` is the run's method).
EVAL_RESULT_NAMES = {
    "distilled": "Distilled set (`{method}`)",
    "random_real": "Random real subset, same size",
    "full_data": "Whole training split",
    "kernel_regression": "Distilled set (`{method}`), kernel ridge regression with the method's kernel",
}


def _eval_rows(results: dict, method: str) -> list[dict]:
    names = {key: name.format(method=method) for key, name in EVAL_RESULT_NAMES.items()}
    if (results.get("random_real") or {}).get("labels") == "soft":
        names["random_real"] += ", with the soft labels of the set's teacher"
    return [
        {
            "name": name,
            "images": results[key].get("num_images", ""),
            "accuracy": _format_accuracy(results[key]),
            "models": results[key].get("num_models", ""),
            "epochs": results[key].get("epochs") or "—",
        }
        for key, name in names.items()
        if isinstance(results.get(key), dict) and "mean" in results[key]
    ]


def _cross_architecture_rows(results: dict) -> list[dict]:
    """One row per architecture of `results["cross_architecture"]` (see `DistillTrainer.evaluate_architectures`)."""
    rows = []
    for name, row in (results.get("cross_architecture") or {}).items():
        random_real = row.get("random_real") or {}
        rows.append(
            {
                "name": name,
                "architecture": row.get("architecture", ""),
                "distilled": _format_accuracy(row["distilled"]),
                "random_real": _format_accuracy(random_real) if "mean" in random_real else "—",
                "gain": f"{row['fair']['improvement_over_random']:+.2f}"
                if "improvement_over_random" in row.get("fair", {})
                else "—",
                "models": row["distilled"].get("num_models", ""),
                "epochs": row["distilled"].get("epochs", ""),
            }
        )
    return rows


def _protocol_text(protocol: dict, modality: str = "image") -> str:
    if modality == "text" and protocol.get("text_protocol") == "fine_tune":
        return (
            f"text protocol (b): copies of the pretrained encoder with a fresh linear head on its mean-pooled, "
            f"L2-normalised sentence embedding, every parameter trained with SGD (lr {protocol.get('lr')}, momentum "
            f"{protocol.get('momentum')}, weight decay {protocol.get('weight_decay')}), lr x0.1 at half the epochs, "
            f"batch {protocol.get('batch_size')}, the final distilled set, seed {protocol.get('seed')}"
        )
    if modality == "text":
        return (
            "text protocol (a): multinomial logistic regression (scikit-learn's objective, C = 1, L-BFGS to "
            "convergence) on the frozen encoder's mean-pooled, L2-normalised sentence embeddings of each training "
            "set; convex, so one fit per set"
        )
    if not protocol:
        return "see `eval_results.json`"
    augmentation = protocol.get("dsa_strategy")
    return (
        f"SGD (lr {protocol.get('lr')}, momentum {protocol.get('momentum')}, weight decay "
        f"{protocol.get('weight_decay')}), lr x0.1 at half the epochs, batch {protocol.get('batch_size')}, "
        + (f"differentiable augmentation `{augmentation}`" if augmentation else "no augmentation")
        + f", the final distilled set (not the best intermediate one), seed {protocol.get('seed')}"
    )


def _eval_summary(results: dict) -> dict:
    """The evaluation figures for the card's YAML (the full record stays in eval_results.json)."""
    keys = ("mean", "std", "num_models", "epochs", "num_images", "architecture")
    summary = {}
    for name in EVAL_RESULT_NAMES:
        if isinstance(results.get(name), dict) and "mean" in results[name]:
            entry = {k: results[name][k] for k in keys if k in results[name]}
            entry["mean"], entry["std"] = round(float(entry["mean"]), 4), round(float(entry["std"]), 4)
            summary[name] = entry
    return summary


def render_dataset_card(
    output_dir: str | os.PathLike,
    repo_id: str | None = None,
    *,
    token: str | bool | None = None,
    license: str | None = None,
    versions: dict[str, str] | None = None,
) -> DatasetCard:
    """Renders the dataset card of a distilled set saved by [`DistillTrainer.save`].

    Args:
        output_dir (`str` or `os.PathLike`): The folder (`dataset/`, `distill_config.json`, `eval_results.json`,
            `synthetic_grid.png`).
        repo_id (`str`, *optional*): The repository the card is for (used in the usage snippet).
        token (`str` or `bool`, *optional*): Token to read the source dataset's card (for its license).
        license (`str`, *optional*): The card's license (default: the source dataset card's, looked up locally or on
            the Hub; `unknown` when it has none).
        versions (`dict[str, str]`, *optional*): The framework versions the card lists (default:
            [`framework_versions`], the installed libraries). Recorded ones re-render a card identically elsewhere.

    Returns:
        `huggingface_hub.DatasetCard`: YAML (license inherited from the source dataset, task, tags, size, source,
        the evaluation figures under `hf_distill`) and a body built from `templates/dataset_card.md`.

    Example:

    ```python
    >>> from hf_distill.hub import render_dataset_card
    >>> card = render_dataset_card("outputs/mnist-dm-ipc10", "me/mnist-dm-ipc10")
    >>> card.data.tags
    ['hf-distill', 'dataset-distillation', 'dm']
    ```
    """
    output_dir = Path(output_dir)
    hint = "pass a folder written by DistillTrainer.save / hf-distill distill"
    metadata = read_card_json(output_dir / CONFIG_NAME, required=True, hint=hint)
    results = read_card_json(output_dir / EVAL_RESULTS_NAME)
    cross_architecture = read_card_json(output_dir / CROSS_ARCHITECTURE_RESULTS_NAME).get("cross_architecture")
    if cross_architecture and not results.get("cross_architecture"):
        results = {**results, "cross_architecture": cross_architecture}
    method = metadata.get("method") or "unknown"
    method_class = METHODS.get(method)
    paper = dict(getattr(method_class, "paper", None) or {})
    source = metadata.get("source") or {}
    source_id = source.get("dataset")
    num_classes = int(metadata.get("num_classes") or len(metadata.get("class_names") or []))
    images_per_class = int(metadata["images_per_class"])
    num_images = num_classes * images_per_class
    distill_architecture = describe_architecture(metadata.get("architecture"))
    license_ = license or source_license(source_id, revision=source.get("revision"), token=token) or "unknown"
    modality = metadata.get("modality") or "image"
    selects_real_rows = bool(getattr(method_class, "selects_real_rows", False))
    unit = ("sentences" if selects_real_rows else "examples") if modality == "text" else "images"
    pretty_name = f"{source_short_name(source_id)} distilled with {method} ({images_per_class} {unit} per class)"
    summary = {
        "method": method,
        "paper": paper.get("url"),
        "source_dataset": source_id,
        "source_split": source.get("train_split") or metadata.get("train_split"),
        "images_per_class": images_per_class,
        "num_classes": num_classes,
        "iterations": metadata.get("iterations_completed"),
        "architecture": distill_architecture,
        "eval_results": _eval_summary(results),
    }
    card_data = DatasetCardData(
        license=license_,
        task_categories=[get_modality_class(modality).task],
        tags=[*CARD_TAGS, method],
        size_categories=[_size_category(num_images)],
        source_datasets=[source_id] if is_hub_id(source_id) else None,
        pretty_name=pretty_name,
        hf_distill={k: v for k, v in summary.items() if v is not None},
    )
    eval_model = metadata.get("eval_model_name_or_path")
    return published_card(
        DatasetCard.from_template(
            card_data,
            template_path=str(DATASET_CARD_TEMPLATE),
            repo_id=repo_id or "<user>/<dataset-name>",
            method=method,
            method_title=paper.get("title") or method,
            paper=paper,
            selects_real_rows=selects_real_rows,
            source_link=source_link(source_id),
            source_config=source.get("config_name"),
            source_revision=source.get("revision"),
            source_split=summary["source_split"] or "train",
            test_split=source.get("test_split") or "test",
            num_images=num_images,
            num_classes=num_classes,
            images_per_class=images_per_class,
            image_shape=tuple(metadata.get("image_shape") or ()),
            image_mean=[round(float(m), 4) for m in metadata.get("image_mean") or []],
            image_std=[round(float(s), 4) for s in metadata.get("image_std") or []],
            class_names=metadata.get("class_names") or [],
            init=metadata.get("init", "real"),
            iterations=metadata.get("iterations_completed", metadata.get("num_iterations")),
            distill_seconds=metadata.get("distill_seconds", "n/a"),
            num_processes=metadata.get("num_processes", 1),
            seed=metadata.get("seed"),
            dsa_strategy=metadata.get("dsa_strategy_resolved") or "none",
            soft_labels=bool(metadata.get("learn_soft_labels")) or metadata.get("target_type") == "soft",
            teacher=metadata.get("teacher"),
            regression_targets=bool(metadata.get("learn_regression_targets")),
            regression_max_grad_norm=(results.get("distilled") or {}).get("max_grad_norm"),
            zca=metadata.get("zca"),
            learned_lr=None if metadata.get("learned_lr") is None else float(f"{metadata['learned_lr']:.6g}"),
            step_size_schedule=len(metadata.get("learned_step_sizes") or []),
            adam_student=metadata.get("inner_optimizer") == "adam",
            eval_uses_learned_lr=bool(metadata.get("eval_use_learned_lr")),
            distilled_lr=(results.get("distilled") or {}).get("lr"),
            distill_architecture=distill_architecture,
            eval_architecture=f"`{eval_model}`" if eval_model else distill_architecture,
            eval_rows=_eval_rows(results, method),
            fair=results.get("fair") or {},
            cross_architecture_rows=_cross_architecture_rows(results),
            protocol_text=_protocol_text(results.get("protocol") or {}, modality),
            modality=modality,
            text_protocol=(results.get("protocol") or {}).get("text_protocol", "linear_probe"),
            encoder=metadata.get("model_name_or_path"),
            max_length=(metadata.get("image_shape") or [None])[0],
            hidden_size=(metadata.get("architecture") or {}).get("hidden_size"),
            versions=versions or framework_versions(metadata.get("hf_distill_version")),
        )
    )
