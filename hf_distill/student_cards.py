"""The model card of a student trained by knowledge distillation on a distilled set, and the experts' card.

Rendered from the Jinja templates in `hf_distill/templates/` with the pieces [`hf_distill.cards`] shares with the
dataset card; [`hf_distill.hub`] pushes them.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .cards import (
    TEMPLATES_DIR,
    framework_versions,
    published_card,
    read_card_json,
    source_license,
    source_link,
    source_short_name,
)
from .constants import CONFIG_NAME, EVAL_RESULTS_NAME, EXPERTS_INDEX_NAME, KD_CONFIG_NAME
from .hub_utils import is_hub_id
from .modeling import describe_architecture
from .registry import get_modality_class
from .trajectories import ExpertTrajectories

MODEL_CARD_TEMPLATE = TEMPLATES_DIR / "model_card.md"
STUDENT_TAGS = ["hf-distill", "knowledge-distillation", "dataset-distillation"]
EXPERT_TAGS = ["hf-distill", "dataset-distillation", "expert-trajectories"]

_KD_SETTINGS = (
    ("learning_rate", "Learning rate"),
    ("per_device_train_batch_size", "Batch size (per device)"),
    ("weight_decay", "Weight decay"),
    ("optim", "Optimizer"),
    ("lr_scheduler_type", "Learning-rate schedule"),
    ("warmup_ratio", "Warm-up ratio"),
    ("seed", "Seed"),
)


def _name_of(value: Any, *keys: str) -> str | None:
    """A repository id or path from a string or a dict recording one under one of `keys`."""
    if isinstance(value, dict):
        return next((str(value[k]) for k in keys if value.get(k)), None)
    return str(value) if value else None


def _model_link(name: str | None) -> str:
    if not name:
        return "an unrecorded model"
    return f"[{name}](https://huggingface.co/{name})" if is_hub_id(name) else f"`{name}`"


def _dataset_link(name: str | None) -> str:
    if name and is_hub_id(name):
        return f"[{name}](https://huggingface.co/datasets/{name})"
    return f"the local distilled set `{Path(name).name}`" if name else "a distilled set"


def _teacher_text(teacher: Any) -> str:
    """The teacher recorded in kd_config.json: a `{"name_or_path", "description", "test_accuracy"}` dict or a name."""
    if not isinstance(teacher, dict):
        return _model_link(teacher) if teacher else "none (plain cross-entropy on the distilled labels)"
    name = _name_of(teacher, "name_or_path", "model_name_or_path", "repo_id")
    description = teacher.get("description") or teacher.get("model_type")
    if name and is_hub_id(name):
        text = _model_link(name) + (f" ({description})" if description else "")
    else:
        text = description or _model_link(name)
    accuracy = teacher.get("test_accuracy", teacher.get("accuracy"))
    return text + (f", {accuracy:.2f}% test accuracy" if isinstance(accuracy, int | float) else "")


def _distilled_size(kd: dict, distilled: str | None, unit: str = "images") -> str | None:
    """`'30 images, 10 per class'` (`unit`: what an example is) from kd_config.json, or from the distilled set's
    folder when it is local."""
    count, ipc = kd.get("num_distilled_images"), kd.get("images_per_class")
    if (count is None or ipc is None) and distilled and (Path(distilled) / CONFIG_NAME).is_file():
        metadata = json.loads((Path(distilled) / CONFIG_NAME).read_text())
        ipc = metadata.get("images_per_class")
        count = ipc * metadata["num_classes"] if ipc and metadata.get("num_classes") else None
    if count is None:
        return None
    return f"{count} {unit}, {ipc} per class" if ipc else f"{count} {unit}"


def render_student_card(
    student_dir: str | os.PathLike,
    repo_id: str | None = None,
    *,
    token: str | bool | None = None,
    license: str | None = None,
    versions: dict[str, str] | None = None,
) -> ModelCard:
    """Renders the model card of a student trained with knowledge distillation on a distilled set.

    Args:
        student_dir (`str` or `os.PathLike`): The KD output folder: the model (`config.json`, weights),
            `preprocessor_config.json`, `kd_config.json` (teacher, distilled dataset and its source, `base_model`,
            `alpha`, `temperature`, training settings) and `eval_results.json` (`accuracy` in percent, `test_split`,
            `dataset`, `num_test_images`, `epochs`, ...).
        repo_id (`str`, *optional*): The model repository the card is for (usage snippet, model name).
        token (`str` or `bool`, *optional*): Token to read the source dataset's card (for its license).
        license (`str`, *optional*): The card's license (default: the source dataset card's; `unknown` when it has
            none).
        versions (`dict[str, str]`, *optional*): The framework versions the card lists (default: the installed
            libraries, see [`framework_versions`]).

    Returns:
        `huggingface_hub.ModelCard`: YAML with `model-index` (accuracy on the real test split), `datasets`,
        `base_model` (only for a student that started from a Hub checkpoint), tags, license, `pipeline_tag` and
        `library_name`, and a body built from `templates/model_card.md`.
    """
    student_dir = Path(student_dir)
    hint = "pass a folder written by hf_distill's knowledge distillation (hf-distill kd)"
    kd = read_card_json(student_dir / KD_CONFIG_NAME, required=True, hint=hint)
    model_config = read_card_json(student_dir / "config.json", required=True, hint=hint)
    results = read_card_json(student_dir / EVAL_RESULTS_NAME)

    distilled_entry = kd.get("distilled_dataset")
    distilled = _name_of(distilled_entry, "id", "repo_id", "path", "name", "dataset")
    source_entry = (
        (distilled_entry.get("source") if isinstance(distilled_entry, dict) else None)
        or kd.get("distilled_source")
        or kd.get("source_dataset")
    )
    source = results.get("dataset") or _name_of(source_entry, "dataset", "id", "repo_id", "path")
    if source is None and distilled and (Path(distilled) / CONFIG_NAME).is_file():
        source = (json.loads((Path(distilled) / CONFIG_NAME).read_text()).get("source") or {}).get("dataset")
    base_model = kd.get("base_model") or None
    test_split = results.get("test_split") or "test"
    accuracy = results.get("accuracy")
    model_name = (repo_id or student_dir.name).split("/")[-1]
    architecture = describe_architecture(model_config)
    license_ = license or source_license(source, token=token) or "unknown"

    modality = kd.get("modality") or "image"
    task = get_modality_class(modality).task
    unit = "sentences" if modality == "text" else "images"
    eval_results = None
    if isinstance(accuracy, int | float):
        eval_results = [
            EvalResult(
                task_type=task,
                task_name=task.replace("-", " ").title(),
                # A Hub id, or a name: a local path means nothing on the Hub.
                dataset_type=source if is_hub_id(source) else source_short_name(source),
                dataset_name=source_short_name(source),
                dataset_split=test_split,
                metric_type="accuracy",
                metric_name="Accuracy",
                metric_value=round(float(accuracy) / 100.0, 4),
            )
        ]
    card_data = ModelCardData(
        license=license_,
        library_name="transformers",
        pipeline_tag=task,
        tags=list(STUDENT_TAGS),
        datasets=[name for name in (distilled, source) if is_hub_id(name)] or None,
        base_model=base_model,
        metrics=["accuracy"],
        model_name=model_name,
        eval_results=eval_results,
    )
    training_args = kd.get("training_args") if isinstance(kd.get("training_args"), dict) else {}
    settings = [
        (label, kd[key] if kd.get(key) is not None else training_args[key])
        for key, label in _KD_SETTINGS
        if kd.get(key) is not None or training_args.get(key) is not None
    ]
    if kd.get("lr_decay_at_half"):
        # KDTrainer multiplies the lr by 0.1 at half the steps on top of the Trainer's schedule (the protocol's).
        settings.append(("Learning-rate decay", "x0.1 at half the training steps"))
    if kd.get("distilled_method"):
        settings.insert(0, ("Distillation method of the training set", f"`{kd['distilled_method']}`"))
    if results.get("seconds") is not None:
        settings.append(("Training time", f"{results['seconds']} s"))
    return published_card(
        ModelCard.from_template(
            card_data,
            template_path=str(MODEL_CARD_TEMPLATE),
            repo_id=repo_id or "<user>/<model-name>",
            model_title=model_name,
            architecture=architecture,
            # hf_distill's own architectures (the ConvNet, the mean-pooling text classifier) load once it is imported.
            needs_hf_distill=str(model_config.get("model_type", "")).startswith("hf_distill_"),
            num_labels=len(model_config.get("id2label") or {}) or model_config.get("num_labels", "?"),
            teacher=_teacher_text(kd.get("teacher")),
            distilled_link=_dataset_link(distilled),
            distilled_size=_distilled_size(kd, distilled, unit),
            modality=modality,
            unit=unit,
            source_link=source_link(source),
            source_id=source if is_hub_id(source) else None,
            test_split=test_split,
            accuracy=f"{accuracy:.2f}" if isinstance(accuracy, int | float) else None,
            has_teacher=bool(kd.get("teacher")),
            num_test_images=results.get("num_test_images"),
            alpha=results.get("alpha", kd.get("alpha")),
            temperature=results.get("temperature", kd.get("temperature")),
            epochs=results.get("epochs", kd.get("num_train_epochs")),
            settings=settings,
            versions=versions or framework_versions(kd.get("hf_distill_version")),
        )
    )


# ---------------------------------------------------------------------------------------------------------------------
# Experts card
# ---------------------------------------------------------------------------------------------------------------------


def render_experts_card(
    expert_dir: str | os.PathLike, repo_id: str | None = None, *, versions: dict[str, str] | None = None
):
    """The model card of a folder written by [`train_experts`].

    Args:
        expert_dir (`str` or `os.PathLike`): The folder (with `experts.json`).
        repo_id (`str`, *optional*): The repository the card is for (usage snippet).
        versions (`dict[str, str]`, *optional*): Framework versions to list (default: the installed ones).

    Returns:
        `huggingface_hub.ModelCard`: YAML (tags, datasets) and a body from `templates/experts_card.md`.
    """
    expert_dir = Path(expert_dir)
    index_path = expert_dir / EXPERTS_INDEX_NAME
    if not index_path.is_file():
        raise ValueError(f"{index_path} not found: pass a folder written by hf_distill.experts.train_experts.")
    index = ExpertTrajectories.check_index(json.loads(index_path.read_text()), str(expert_dir), None, None)
    source_id = (index.get("source") or {}).get("dataset")
    records = index["experts"]
    tests = [r["test_accuracy"] for r in records if r.get("test_accuracy") is not None]
    trains = [r["train_accuracy"] for r in records if r.get("train_accuracy") is not None]
    training = index["training"]
    settings = [
        (
            "Optimizer",
            f"SGD, lr {training['lr']}, momentum {training['momentum']}, weight decay "
            f"{training['weight_decay']}, constant learning rate",
        ),
        ("Batch size", training["batch_size"]),
        ("Augmentation while training", f"`{training['dsa_strategy']}`" if training.get("dsa_strategy") else "none"),
        ("Precision", "bfloat16 autocast" if training.get("mixed_precision") == "bf16" else "float32"),
        ("Seed", training["seed"]),
    ]
    card_data = ModelCardData(
        tags=list(EXPERT_TAGS),
        datasets=[source_id] if is_hub_id(source_id) else None,
        license=None,
    )
    return published_card(
        ModelCard.from_template(
            card_data,
            template_path=str(TEMPLATES_DIR / "experts_card.md"),
            repo_id=repo_id or "<user>/<experts-name>",
            architecture=describe_architecture(index["model_config"]),
            num_experts=len(records),
            num_epochs=index["num_epochs"],
            num_parameters=index.get("num_parameters"),
            num_train_images=index.get("num_train_images"),
            source_link=source_link(source_id),
            image_shape=tuple(index.get("image_shape") or ()),
            image_mean=[round(float(m), 4) for m in index.get("image_mean") or []],
            image_std=[round(float(s), 4) for s in index.get("image_std") or []],
            num_classes=len(index.get("class_names") or []),
            settings=settings,
            test_accuracy=f"{statistics.fmean(tests):.2f}" if tests else None,
            test_range=f"{min(tests):.2f}-{max(tests):.2f}" if tests else None,
            train_accuracy=f"{statistics.fmean(trains):.2f}" if trains else None,
            architecture_kwargs=_architecture_kwargs(index["model_config"]),
            versions=versions or framework_versions(index.get("hf_distill_version")),
        )
    )


def _architecture_kwargs(model_config: dict) -> str:
    """The config arguments that make a distillation network of the experts' architecture (for the usage snippet)."""
    if model_config.get("model_type") == "hf_distill_convnet":
        keys = ("net_width", "net_depth", "net_norm", "net_act", "net_pooling")
        return "".join(f", {key}={model_config[key]!r}" for key in keys if key in model_config)
    name = model_config.get("_name_or_path")
    return f", model_name_or_path={name!r}" if name else ""
