# Copyright 2025 The hf_distill Authors. Licensed under the Apache License, Version 2.0.
"""Teacher -> student knowledge distillation on a distilled set: [`KDConfig`] + [`KDTrainer`].

A distilled set holds a handful of images per class. A student trained on it with the hard labels alone sees very
little signal; a teacher (any image classifier, typically one trained on the full real training split) labels every
augmented view of those images with a full distribution over the classes, which carries far more information
(Hinton et al., 2015; the soft-label results of SRe2L, RDED and Qin et al., 2024 on distilled sets).

The loss on a batch (student logits `s`, teacher logits `t`, hard labels `y`, temperature `T`) is

    alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))          (KL averaged per example)

When the distilled set has a `soft_label` column (learned labels), its rows are used as (part of) the KD target, see
[`kd_target_probabilities`]. `alpha=1` is plain cross-entropy and needs no teacher.

```python
>>> from hf_distill.kd import KDConfig, train_student
>>> config = KDConfig(distilled_dataset="outputs/mnist-dm-ipc10", train_teacher=True, output_dir="outputs/student")
>>> trainer = train_student(config)       # trains the teacher on real MNIST, then the student on the distilled set
>>> trainer.eval_results["accuracy"]      # percent, on the whole real test split
```

The output folder (see [`KDTrainer.save_pretrained`]) holds the student (`config.json`, `model.safetensors`), an image
processor (`preprocessor_config.json`) so `AutoImageProcessor` + `AutoModelForImageClassification` classify raw PIL
images, `kd_config.json` (every setting, the teacher, the distilled set and its source) and `eval_results.json`.
"""

import json
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, load_dataset, load_from_disk
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import SaveStrategy, SchedulerType
from transformers.training_args import OptimizerNames

from .augment import SiameseAugment
from .checkpointing import save_tensors
from .config import CONFIG_NAME
from .data import ImageData, find_columns, load_source, prepare_images
from .evaluation import EvaluationProtocol, train_classifier
from .modeling import default_convnet_config, fresh_model
from .seeding import derive_generator
from .synthetic import SOFT_LABEL_COLUMN
from .trainer import DATASET_DIR, _processor_settings, build_model_config

logger = logging.getLogger(__name__)

__all__ = [
    "DistilledSet",
    "KDConfig",
    "KDDataCollator",
    "KDTrainer",
    "build_image_processor",
    "build_student",
    "distillation_loss",
    "kd_target_probabilities",
    "load_accuracy_metric",
    "load_distilled_set",
    "load_teacher",
    "prepare_test_split",
    "train_student",
    "train_teacher",
]

KD_CONFIG_NAME = "kd_config.json"
EVAL_RESULTS_NAME = "eval_results.json"
TEACHER_DIR = "teacher"
METRICS_DIR = Path(__file__).resolve().parent / "metrics"
SOFT_LABEL_CHOICES = ("auto", "yes", "no")


# ---------------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class KDConfig(TrainingArguments):
    """Settings of knowledge distillation from a teacher to a student on a distilled set.

    Every [`~transformers.TrainingArguments`] field is available; the defaults below are changed to the dataset
    distillation evaluation protocol (DC/DSA/DM papers): 300 epochs, SGD lr 0.01 with momentum 0.9 and weight decay
    5e-4, lr x0.1 at half the steps, batch 256, no gradient clipping, seed 0, no checkpoints, no trackers.
    """

    # --- what to distill from and into ---
    distilled_dataset: str | None = field(
        default=None,
        metadata={
            "help": "The distilled set: a folder written by DistillTrainer.save / `hf-distill distill` "
            "(with dataset/ and distill_config.json), or a Hub dataset id pushed by hf_distill.",
            "aliases": ["--distilled"],
        },
    )
    distilled_revision: str | None = field(
        default=None, metadata={"help": "Revision of a Hub distilled set (ignored for local folders)."}
    )
    source_dataset: str | None = field(
        default=None,
        metadata={
            "help": "The real dataset whose test split evaluates the student (and whose train split trains the "
            "teacher with --train_teacher). Default: the source recorded in distill_config.json."
        },
    )
    teacher_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Teacher image classifier: a Hub id or a local folder (AutoModelForImageClassification), e.g. "
            "the teacher/ folder of an earlier run. Its number of classes must match the distilled set's.",
            "aliases": ["--teacher"],
        },
    )
    train_teacher: bool = field(
        default=False,
        metadata={
            "help": "Train the teacher first: a ConvNet on the FULL real train split, normalised exactly like the "
            "distilled set (saved to <output_dir>/teacher)."
        },
    )
    teacher_epochs: int = field(
        default=20,
        metadata={
            # argparse %-formats help strings: a literal percent sign is written %% (as in TrainingArguments).
            "help": "Epochs of the teacher trained with --train_teacher (20 suits MNIST/CIFAR-sized splits; a split "
            "of ~1,400 images such as sklearn:digits needs ~100 with augmentation: 20 gave an 88%% teacher, 100 98%%)."
        },
    )
    teacher_net_width: int = field(default=128, metadata={"help": "Width of that teacher ConvNet (papers: 128)."})
    teacher_net_depth: int | None = field(
        default=None, metadata={"help": "Depth of that teacher ConvNet (default: 3 up to 32x32, as the papers)."}
    )
    teacher_augmentation: str = field(
        default="auto",
        metadata={
            "help": "Augmentation while training that teacher: 'auto' (the same DSA strategy the student sees, so "
            "the teacher knows the augmented views it labels), 'none', or a DSA strategy."
        },
    )
    student_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start the student from a pretrained checkpoint (Hub id or folder); its head is resized to the "
            "distilled set's classes. Mutually exclusive with --student_config.",
            "aliases": ["--student"],
        },
    )
    student_config: dict | str | None = field(
        default=None,
        metadata={
            "help": "Student architecture (random init): a JSON string/file, a folder or Hub id with a config.json, "
            "a dict or a PretrainedConfig. A mapping with `model_type` is any transformers vision classifier; one "
            "without it overrides the ConvNet defaults, e.g. '{\"net_width\": 64}'. Default: the papers' ConvNet-3 "
            "(width 128, instance norm) sized to the images."
        },
    )

    # --- the loss ---
    alpha: float = field(
        default=0.1,
        metadata={
            "help": "Weight of the cross-entropy on the hard labels; 1 - alpha weighs the T^2-scaled KL to the "
            "teacher/soft labels. 0.1 follows Hinton et al. (2015, sec. 2.1: best results with a considerably lower "
            "weight on the hard-label term) and the soft-label-dominated objectives that work best on tiny sets "
            "(SRe2L/RDED use the KL alone); 1.0 = plain CE, no teacher needed."
        },
    )
    temperature: float = field(
        default=4.0, metadata={"help": "Softmax temperature T of both teacher and student in the KD term."}
    )
    use_soft_labels: str = field(
        default="auto",
        metadata={
            "help": "Use the distilled set's `soft_label` column as KD target: 'auto' (when the set has it), 'yes' "
            "(required), 'no' (ignore it).",
            "choices": list(SOFT_LABEL_CHOICES),
        },
    )
    soft_label_weight: float = field(
        default=0.5,
        metadata={
            "help": "With both a teacher and soft labels, the KD target is w * softmax(soft / T) + (1 - w) * "
            "softmax(teacher / T). Without a teacher the soft labels are the whole target (w = 1)."
        },
    )
    augmentation: str = field(
        default="auto",
        metadata={
            "help": "Augmentation of every training batch (student and teacher see the same augmented batch): "
            "'auto' (the distilled set's dsa_strategy_resolved), 'none', or a DSA strategy such as "
            "'color_crop_cutout_flip_scale_rotate'."
        },
    )
    lr_decay_at_half: bool = field(
        default=True,
        metadata={
            "help": "Multiply the learning rate by 0.1 at half the training steps (the evaluation protocol's "
            "schedule); overrides lr_scheduler_type and warmup. --no_lr_decay_at_half uses lr_scheduler_type."
        },
    )

    # --- TrainingArguments defaults changed for ~100-image sets (the evaluation protocol) ---
    num_train_epochs: float = field(
        default=300.0, metadata={"help": "Training epochs (DC/DSA protocol: 300; DM/MTT: 1000)."}
    )
    learning_rate: float = field(default=0.01, metadata={"help": "SGD learning rate (protocol: 0.01)."})
    per_device_train_batch_size: int = field(default=256, metadata={"help": "Training batch size (protocol: 256)."})
    per_device_eval_batch_size: int = field(default=1024, metadata={"help": "Batch size on the real test split."})
    optim: OptimizerNames | str = field(default="sgd", metadata={"help": "Optimizer (protocol: SGD)."})
    optim_args: str | None = field(
        default="momentum=0.9", metadata={"help": "Optimizer arguments (protocol: SGD momentum 0.9)."}
    )
    weight_decay: float = field(default=5e-4, metadata={"help": "Weight decay (protocol: 5e-4)."})
    lr_scheduler_type: SchedulerType | str = field(
        default="constant", metadata={"help": "Scheduler when --no_lr_decay_at_half; see SchedulerType."}
    )
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping (0: none, as the protocol)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_strategy: SaveStrategy | str = field(
        default="no", metadata={"help": "Checkpoint strategy ('no': only the final student is written)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep every column: the collator picks pixel_values, labels, soft labels."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the student's init, shuffling and augmentation draws."})

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(
                f"alpha must be in [0, 1] (the weight of the hard-label cross-entropy), got {self.alpha}. Use 1.0 for "
                "plain cross-entropy, 0.0 for the KD term alone."
            )
        if not self.temperature > 0 or not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a positive number, got {self.temperature}. Typical values: 1-10.")
        if not 0.0 <= self.soft_label_weight <= 1.0:
            raise ValueError(f"soft_label_weight must be in [0, 1], got {self.soft_label_weight}.")
        if isinstance(self.use_soft_labels, bool):  # `use_soft_labels: true` in a YAML recipe
            self.use_soft_labels = "yes" if self.use_soft_labels else "no"
        if self.use_soft_labels not in SOFT_LABEL_CHOICES:
            raise ValueError(
                f"use_soft_labels must be one of {list(SOFT_LABEL_CHOICES)}, got {self.use_soft_labels!r}."
            )
        for name in ("augmentation", "teacher_augmentation"):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, "none")
            elif value != "auto":
                SiameseAugment(value)  # raises a ValueError naming the valid families
        if self.teacher_name_or_path and self.train_teacher:
            raise ValueError("Pass either teacher_name_or_path (an existing teacher) or train_teacher=True, not both.")
        if self.teacher_epochs < 1:
            raise ValueError(f"teacher_epochs must be >= 1, got {self.teacher_epochs}.")
        if self.teacher_net_width < 1 or (self.teacher_net_depth is not None and self.teacher_net_depth < 1):
            raise ValueError("teacher_net_width and teacher_net_depth must be positive integers.")
        if self.student_name_or_path and self.student_config is not None:
            raise ValueError(
                "Pass either student_name_or_path (start from a checkpoint) or student_config (random init of an "
                "architecture), not both."
            )
        self.student_config = _normalize_student_config(self.student_config)
        accelerator_available = getattr(torch, "accelerator", None)
        accelerator_available = accelerator_available.is_available() if accelerator_available else False
        if self.dataloader_pin_memory and not (accelerator_available or torch.cuda.is_available()):
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU it only warns
        if self.output_dir is None and self.distilled_dataset:
            self.output_dir = f"outputs/{Path(str(self.distilled_dataset).rstrip('/')).name}-kd"
        super().__post_init__()

    def kd_settings(self) -> dict[str, Any]:
        """The settings that define the distillation (beyond the generic training arguments)."""
        names = (
            "alpha",
            "temperature",
            "use_soft_labels",
            "soft_label_weight",
            "augmentation",
            "distilled_dataset",
            "distilled_revision",
            "source_dataset",
            "teacher_name_or_path",
            "train_teacher",
            "teacher_epochs",
            "teacher_net_width",
            "teacher_net_depth",
            "teacher_augmentation",
            "student_name_or_path",
            "student_config",
            "lr_decay_at_half",
            "num_train_epochs",
            "learning_rate",
            "per_device_train_batch_size",
            "optim",
            "optim_args",
            "weight_decay",
            "seed",
        )
        values = self.to_dict()
        return {name: values[name] for name in names}


def _normalize_student_config(value: Any) -> dict | str | None:
    """JSON strings and files become dicts (the config stays JSON-serialisable); folders and Hub ids stay strings."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, PretrainedConfig):
        return value.to_dict()
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(
            f"student_config must be a JSON string or file, a folder or Hub id, a dict or a PretrainedConfig; got "
            f"{type(value).__name__}."
        )
    text = os.fspath(value).strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"student_config is not valid JSON ({error}): {text!r}") from error
    path = Path(text).expanduser()
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"student_config file {path} is not valid JSON: {error}") from error
    return text


# ---------------------------------------------------------------------------------------------------------------------
# The distilled set
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class DistilledSet:
    """A distilled set and the metadata `DistillTrainer.save` recorded beside it.

    Args:
        dataset (`datasets.Dataset`): Columns `pixel_values` (normalised `C x H x W` float32), `label` (`ClassLabel`),
            optionally `image` (preview) and `soft_label` (`num_classes` floats per row).
        metadata (`dict`): The content of `distill_config.json` (`image_mean`, `image_std`, `image_shape`,
            `class_names`, `num_classes`, `dsa_strategy_resolved`, `source`, `method`, `images_per_class`, ...).
        name_or_path (`str`, *optional*): Where it was loaded from (recorded in `kd_config.json`).
    """

    dataset: Dataset
    metadata: dict
    name_or_path: str | None = None

    def __post_init__(self):
        missing = [key for key in ("image_mean", "image_std") if key not in self.metadata]
        if missing:
            raise ValueError(
                f"The distilled set's metadata lacks {missing}: it must come from DistillTrainer.save "
                f"({CONFIG_NAME} records the normalisation of pixel_values)."
            )
        columns = set(self.dataset.column_names)
        if not {"pixel_values", "label"} <= columns:
            raise ValueError(
                f"The distilled set needs `pixel_values` and `label` columns, it has {sorted(columns)}. Pass a set "
                "written by DistillTrainer.save."
            )

    @property
    def class_names(self) -> list[str]:
        feature = self.dataset.features["label"]
        if isinstance(feature, ClassLabel):
            return list(feature.names)
        return [str(name) for name in self.metadata.get("class_names") or range(self.num_classes)]

    @property
    def num_classes(self) -> int:
        feature = self.dataset.features["label"]
        if isinstance(feature, ClassLabel):
            return feature.num_classes
        return int(self.metadata.get("num_classes") or len(self.metadata["class_names"]))

    @property
    def image_mean(self) -> list[float]:
        return [float(v) for v in self.metadata["image_mean"]]

    @property
    def image_std(self) -> list[float]:
        return [float(v) for v in self.metadata["image_std"]]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """`(C, H, W)` of `pixel_values`."""
        if self.metadata.get("image_shape"):
            return tuple(int(v) for v in self.metadata["image_shape"])
        return tuple(np.asarray(self.dataset[0]["pixel_values"]).shape)

    @property
    def source(self) -> dict:
        return dict(self.metadata.get("source") or {})

    @property
    def dsa_strategy(self) -> str | None:
        """The augmentation the set's evaluation used (sets written before it was recorded: the distillation's)."""
        if "eval_dsa_strategy_resolved" in self.metadata:
            return self.metadata["eval_dsa_strategy_resolved"]
        return self.metadata.get("dsa_strategy_resolved")

    @property
    def has_soft_labels(self) -> bool:
        return SOFT_LABEL_COLUMN in self.dataset.column_names

    def image_data(self) -> ImageData:
        """The set as an [`ImageData`] (exact `pixel_values`, labels, class names, normalisation)."""
        data = self.dataset.with_format("numpy", columns=["pixel_values", "label"])[:]
        return ImageData(
            images=torch.as_tensor(np.asarray(data["pixel_values"]), dtype=torch.float32),
            labels=torch.as_tensor(np.asarray(data["label"]), dtype=torch.long),
            class_names=self.class_names,
            mean=self.image_mean,
            std=self.image_std,
        )

    def training_dataset(self, soft_labels: bool) -> Dataset:
        """The columns the student trains on, as torch tensors (the preview images are never decoded)."""
        columns = ["pixel_values", "label"] + ([SOFT_LABEL_COLUMN] if soft_labels else [])
        return self.dataset.select_columns(columns).with_format("torch")


def load_distilled_set(name_or_path: str | os.PathLike, revision: str | None = None, token=None) -> DistilledSet:
    """Loads a distilled set written by `DistillTrainer.save` (a folder) or pushed to the Hub (a dataset id).

    Args:
        name_or_path (`str` or `os.PathLike`): A folder with `dataset/` and `distill_config.json`, or a Hub dataset id
            whose repository holds `distill_config.json` beside the data.
        revision (`str`, *optional*): Hub revision.
        token (`str` or `bool`, *optional*): Hub token.

    Raises:
        ValueError: If the folder lacks `distill_config.json` or `dataset/`, or the Hub repository cannot be read.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file; pass the folder written by DistillTrainer.save (hf-distill distill).")
        if not (path / CONFIG_NAME).is_file():
            raise ValueError(
                f"{path} has no {CONFIG_NAME}: it is not a folder written by DistillTrainer.save / `hf-distill "
                f"distill`. Pass such a folder (it holds {DATASET_DIR}/ and {CONFIG_NAME})."
            )
        if not (path / DATASET_DIR).is_dir():
            raise ValueError(f"{path} has {CONFIG_NAME} but no {DATASET_DIR}/ folder (the set itself).")
        metadata = json.loads((path / CONFIG_NAME).read_text())
        return DistilledSet(load_from_disk(str(path / DATASET_DIR)), metadata, str(name_or_path))

    from huggingface_hub import hf_hub_download

    repo_id = os.fspath(name_or_path)
    try:
        config_file = hf_hub_download(repo_id, CONFIG_NAME, repo_type="dataset", revision=revision, token=token)
        dataset = load_dataset(repo_id, split="train", revision=revision, token=token)
    except Exception as error:
        raise ValueError(
            f"{repo_id!r} is neither a local folder nor a readable Hub dataset with {CONFIG_NAME}: "
            f"{type(error).__name__}: {error}. Check the path, or the id, revision and token (offline: pass the "
            "folder written by `hf-distill distill`)."
        ) from error
    return DistilledSet(dataset, json.loads(Path(config_file).read_text()), repo_id)


def prepare_test_split(distilled: DistilledSet, test_dataset: Dataset | ImageData) -> ImageData:
    """Converts a real split into tensors normalised exactly like the distilled set's `pixel_values`.

    Uses the set's `image_mean`/`image_std`, image size and channel count (the statistics of the train split it was
    distilled from), as `DistillTrainer` prepares its test split.

    Raises:
        ValueError: If the split's classes differ from the set's.
    """
    if isinstance(test_dataset, ImageData):
        data = test_dataset
    else:
        channels, height, width = distilled.image_shape
        image_column, label_column = find_columns(test_dataset)
        data = prepare_images(
            test_dataset,
            image_column,
            label_column,
            mean=distilled.image_mean,
            std=distilled.image_std,
            image_size=(height, width),
            num_channels=channels,
            desc="Preparing the test split",
        )
    if data.num_classes != distilled.num_classes:
        raise ValueError(
            f"The test split has {data.num_classes} classes but the distilled set has {distilled.num_classes}: "
            "evaluate on a split of the dataset the set was distilled from (--source_dataset)."
        )
    return data


def _load_source_splits(distilled: DistilledSet, source_dataset: str | None) -> tuple[Dataset | None, Dataset | None]:
    source = distilled.source
    dataset = source_dataset or source.get("dataset")
    if not dataset:
        return None, None
    return load_source(
        dataset,
        train_split=source.get("train_split") or "train",
        test_split=source.get("test_split", "test"),
        name=source.get("config_name"),
        revision=source.get("revision"),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Image processor, metric
# ---------------------------------------------------------------------------------------------------------------------


def build_image_processor(mean: list[float], std: list[float], image_size: tuple[int, int], num_channels: int):
    """An image processor that turns raw images into the tensors a model trained on this data expects.

    Resize to `image_size` (bilinear), rescale by 1/255, normalise with `mean`/`std`; 3-channel data converts inputs
    to RGB. Saved as a `ViTImageProcessor`, so `AutoImageProcessor.from_pretrained(folder)` and the
    `image-classification` pipeline load it without hf_distill. Single-channel data expects mode `L` images (the
    processor cannot convert RGB to grayscale).
    """
    try:  # transformers 5: the PIL backend (always available); the torchvision one is chosen at load when installed
        from transformers import ViTImageProcessorPil as processor_class
    except ImportError:  # transformers 4: the PIL/NumPy processor
        from transformers import ViTImageProcessor as processor_class
    height, width = (int(s) for s in image_size)
    return processor_class(
        do_resize=True,
        size={"height": height, "width": width},
        resample=2,  # PIL bilinear
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[float(m) for m in mean],
        image_std=[float(s) for s in std],
        do_convert_rgb=num_channels == 3,
    )


def load_accuracy_metric():
    """The top-1 accuracy metric shipped with the package, loaded with `evaluate.load` from its local folder.

    Loading a local module script needs no network (`evaluate` copies it into its module cache and imports it). If
    `evaluate` cannot load it, a plain object with the same `compute(predictions=..., references=...)` ->
    `{"accuracy": fraction}` interface is returned instead, so evaluation never depends on the Hub.
    """
    try:
        import evaluate

        return evaluate.load(str(METRICS_DIR / "accuracy"), keep_in_memory=True)
    except Exception as error:  # noqa: BLE001 - any failure of the optional loader falls back to the same formula
        logger.warning("evaluate.load of the shipped accuracy metric failed (%s); using a plain function.", error)
        return _PlainAccuracy()


class _PlainAccuracy:
    """Fallback with the metric's interface (`compute` -> `{"accuracy": fraction}`)."""

    name = "accuracy"

    def compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict:
        predictions, references = np.asarray(predictions), np.asarray(references)
        correct = (predictions == references).astype(np.float64)
        weights = np.ones_like(correct) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        total = float((correct * weights).sum())
        return {"accuracy": total / float(weights.sum()) if normalize else total}


def _accuracy_compute_metrics(metric):
    def compute_metrics(eval_pred) -> dict:
        predictions = eval_pred.predictions
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        predictions = np.asarray(predictions)
        if predictions.ndim > 1:  # logits (when preprocess_logits_for_metrics was not used)
            predictions = predictions.argmax(-1)
        return metric.compute(predictions=predictions, references=np.asarray(eval_pred.label_ids))

    return compute_metrics


def _argmax_logits(logits, labels):
    # Keep only the predicted class per example: the evaluation loop then gathers N ints instead of N x K floats.
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.argmax(dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------------------------------


def kd_target_probabilities(
    teacher_logits: torch.Tensor | None,
    soft_labels: torch.Tensor | None,
    temperature: float,
    soft_label_weight: float = 0.5,
    soft_labels_are_probabilities: bool = False,
) -> torch.Tensor:
    """The KD target distribution at temperature `T`.

    - teacher: `softmax(teacher_logits / T)`.
    - soft labels given as logits: `softmax(soft_labels / T)`; given as probabilities `p`: `p^(1/T) / sum(p^(1/T))`,
      which is `softmax(log(p) / T)`, i.e. the same tempering, with exact zeros kept at zero.
    - both: `w * soft + (1 - w) * teacher` with `w = soft_label_weight`.

    Args:
        teacher_logits (`torch.Tensor` of shape `(B, K)`, *optional*): The teacher's logits.
        soft_labels (`torch.Tensor` of shape `(B, K)`, *optional*): The set's soft labels for the batch.
        temperature (`float`): `T`.
        soft_label_weight (`float`, *optional*, defaults to 0.5): `w`, used only when both targets are given.
        soft_labels_are_probabilities (`bool`, *optional*, defaults to `False`): How to read `soft_labels`.

    Returns:
        `torch.Tensor` of shape `(B, K)`: float32 probabilities.
    """
    if teacher_logits is None and soft_labels is None:
        raise ValueError("The KD term needs teacher logits or soft labels (or set alpha=1 for plain cross-entropy).")
    targets = []
    if soft_labels is not None:
        soft_labels = soft_labels.float()
        if soft_labels_are_probabilities:
            tempered = soft_labels.clamp_min(0).pow(1.0 / temperature)
            soft = tempered / tempered.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(tempered.dtype).tiny)
        else:
            soft = F.softmax(soft_labels / temperature, dim=-1)
        targets.append(soft)
    if teacher_logits is not None:
        targets.append(F.softmax(teacher_logits.float() / temperature, dim=-1))
    if len(targets) == 1:
        return targets[0]
    return soft_label_weight * targets[0] + (1.0 - soft_label_weight) * targets[1]


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    *,
    alpha: float,
    temperature: float,
    soft_labels: torch.Tensor | None = None,
    soft_label_weight: float = 0.5,
    soft_labels_are_probabilities: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(target || softmax(student / T))`.

    `KL` is averaged over the batch (`reduction="batchmean"`, the true KL per example); the `T^2` factor keeps the
    gradient scale of the soft term independent of `T` (Hinton et al., 2015). The target is
    [`kd_target_probabilities`] of the teacher logits and/or soft labels. With `alpha == 1` no target is needed and
    the loss is plain cross-entropy; with `alpha == 0`, hard labels are optional.

    Returns:
        `tuple`: the loss, and `{"ce_loss": ..., "kd_loss": ...}` (detached; each present when computed; `kd_loss`
        is the `T^2`-scaled KL before the `1 - alpha` weight).
    """
    logits = student_logits.float()  # log-softmax in float32 even under bf16/fp16 autocast
    parts: dict[str, torch.Tensor] = {}
    loss = logits.new_zeros(())
    if labels is not None:
        ce = F.cross_entropy(logits, labels.long())
        parts["ce_loss"] = ce.detach()
        if alpha > 0:
            loss = loss + alpha * ce
    elif alpha > 0:
        raise ValueError(f"alpha={alpha} > 0 weighs a cross-entropy on hard labels, but no labels were given.")
    if alpha < 1:
        target = kd_target_probabilities(
            teacher_logits, soft_labels, temperature, soft_label_weight, soft_labels_are_probabilities
        )
        log_student = F.log_softmax(logits / temperature, dim=-1)
        kd = F.kl_div(log_student, target, reduction="batchmean") * temperature**2
        parts["kd_loss"] = kd.detach()
        loss = loss + (1.0 - alpha) * kd
    return loss, parts


def _soft_labels_are_probabilities(values: np.ndarray) -> bool:
    """Rows that are all non-negative and sum to 1 (within 1e-3) are probabilities; anything else is logits."""
    values = np.asarray(values, dtype=np.float64)
    return bool(values.size) and bool((values >= 0).all()) and bool(np.allclose(values.sum(-1), 1.0, atol=1e-3))


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


class KDDataCollator:
    """Stacks a list of examples into a batch: `pixel_values` (float32), `labels` (int64), `soft_labels` (float32).

    Examples may name the label `label` or `labels` and the soft label `soft_label` or `soft_labels`; other keys (e.g.
    a preview `image`) are dropped.
    """

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        first = features[0]
        batch = {
            "pixel_values": torch.stack([torch.as_tensor(f["pixel_values"], dtype=torch.float32) for f in features])
        }
        label_key = next((k for k in ("labels", "label") if k in first), None)
        if label_key is not None:
            batch["labels"] = torch.as_tensor([int(f[label_key]) for f in features], dtype=torch.long)
        soft_key = next((k for k in ("soft_labels", SOFT_LABEL_COLUMN) if k in first), None)
        if soft_key is not None:
            batch["soft_labels"] = torch.stack([torch.as_tensor(f[soft_key], dtype=torch.float32) for f in features])
        return batch


class _ImageDataDataset(torch.utils.data.Dataset):
    """An [`ImageData`] as a map-style dataset of `{"pixel_values", "labels"}` (the real test split)."""

    def __init__(self, data: ImageData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.data.images[index], "labels": self.data.labels[index]}


# ---------------------------------------------------------------------------------------------------------------------
# Teachers
# ---------------------------------------------------------------------------------------------------------------------


def load_teacher(
    teacher: str | os.PathLike | nn.Module, device: str | torch.device | None = None, **from_pretrained_kwargs
) -> nn.Module:
    """A frozen teacher in eval mode.

    Args:
        teacher (`str`, `os.PathLike` or `nn.Module`): A Hub id or a local folder (loaded with
            `AutoModelForImageClassification.from_pretrained`; a folder written by [`train_teacher`] records the
            normalisation it was trained with), a `PreTrainedModel`, or any `nn.Module` mapping `(B, C, H, W)` images
            to logits (or to an output with `.logits`).
        device (`str` or `torch.device`, *optional*): Where to put it.
        **from_pretrained_kwargs: Passed to `from_pretrained` (`revision`, `token`, ...).

    Returns:
        `nn.Module`: The teacher, `eval()`, with `requires_grad=False` on every parameter. When its folder has an image
        processor, the processor's mean/std/size are attached as `teacher.hf_distill_input_settings` so
        [`KDTrainer`] can re-normalise the student's inputs for it.
    """
    if isinstance(teacher, (str, os.PathLike)):
        name = os.fspath(teacher)
        try:
            model = AutoModelForImageClassification.from_pretrained(name, **from_pretrained_kwargs)
        except Exception as error:
            raise ValueError(
                f"Could not load a teacher image classifier from {name!r}: {type(error).__name__}: {error}. Pass a "
                "folder written by save_pretrained / train_teacher (e.g. <kd output>/teacher), a reachable Hub id, "
                "or an nn.Module."
            ) from error
        if getattr(model.config, "image_mean", None) is None:
            settings = _processor_settings(name)
            if settings:
                model.hf_distill_input_settings = settings
    elif isinstance(teacher, nn.Module):
        model = teacher
    else:
        raise TypeError(f"teacher must be a Hub id, a local path or an nn.Module, got {type(teacher).__name__}.")
    model.eval()
    model.requires_grad_(False)
    if device is not None:
        model.to(device)
    return model


def _teacher_input_settings(teacher: nn.Module) -> dict:
    """Normalisation/size the teacher expects: recorded by train_teacher, else its image processor's, else none."""
    config = getattr(teacher, "config", None)
    if config is not None and getattr(config, "image_mean", None) is not None:
        settings = {"mean": list(config.image_mean), "std": list(config.image_std)}
        size = getattr(config, "image_size", None)
        if size is not None:
            settings["image_size"] = (size, size) if isinstance(size, int) else tuple(size)
        return settings
    return dict(getattr(teacher, "hf_distill_input_settings", None) or {})


def describe_teacher(teacher: nn.Module | None, name_or_path: str | None = None) -> dict | None:
    """`{"name_or_path", "description", "model_type", "test_accuracy"}` for `kd_config.json` and the model card."""
    if teacher is None:
        return None
    config = getattr(teacher, "config", None)
    trained = getattr(config, "hf_distill_teacher", None) if config is not None else None
    if name_or_path is None and isinstance(teacher, PreTrainedModel):
        name_or_path = getattr(teacher, "name_or_path", None) or None
    model_type = getattr(config, "model_type", None) or type(teacher).__name__
    if trained:
        dataset, split = trained.get("dataset") or "real", trained.get("train_split") or "train"
        description = f"ConvNet trained on the full {dataset} {split} split"
        accuracy = trained.get("test_accuracy")
    else:
        description = f"{model_type} from {name_or_path}" if name_or_path else f"{type(teacher).__name__} (in memory)"
        accuracy = None
    return {
        "name_or_path": str(name_or_path) if name_or_path else None,
        "description": description,
        "model_type": model_type,
        "test_accuracy": accuracy,
    }


def train_teacher(
    train_split: Dataset | ImageData,
    test_split: Dataset | ImageData | None = None,
    *,
    epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    augmentation: str | None = None,
    model_config: PretrainedConfig | None = None,
    net_width: int = 128,
    net_depth: int | None = None,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
    image_size: int | tuple[int, int] | None = None,
    num_channels: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    show_progress: bool = True,
    dataset_name: str | None = None,
    output_dir: str | os.PathLike | None = None,
) -> PreTrainedModel:
    """Trains a teacher ConvNet on the full real training split (minibatch SGD, tqdm bar).

    The schedule is the evaluation protocol's (`hf_distill.evaluation.train_classifier`): SGD with momentum, weight
    decay, lr x0.1 at half the epochs, DSA `augmentation` (none by default), randomness from `seed` only.

    The teacher must see inputs normalised exactly like the distilled set's `pixel_values`: pass the set's
    `image_mean`/`image_std`/`image_size`/`num_channels` with a `datasets.Dataset` (as [`train_student`] does), or an
    [`ImageData`] prepared that way. The statistics used are stored in the model config (`image_mean`, `image_std`)
    and, with `output_dir`, in an image processor beside the weights.

    Args:
        train_split (`datasets.Dataset` or [`ImageData`]): The whole real training split.
        test_split (`datasets.Dataset` or [`ImageData`], *optional*): Evaluated at the end (accuracy recorded).
        epochs (`int`, *optional*, defaults to 20): Training epochs.
        batch_size, learning_rate, momentum, weight_decay: SGD settings (protocol defaults).
        augmentation (`str`, *optional*): DSA strategy while training (`None`: none).
        model_config (`PretrainedConfig`, *optional*): Another architecture (fitted to the data's classes/channels);
            default: the papers' ConvNet with `net_width`/`net_depth`.
        net_width (`int`, *optional*, defaults to 128), net_depth (`int`, *optional*): The ConvNet's size.
        image_mean, image_std, image_size, num_channels: How to prepare a `datasets.Dataset` (see above).
        seed (`int`, *optional*, defaults to 0): Seed of the init, shuffling and augmentation.
        device (`str` or `torch.device`, *optional*): Defaults to CUDA when available.
        show_progress (`bool`, *optional*, defaults to `True`): Show the epoch bar.
        dataset_name (`str`, *optional*): Recorded in the config (the card's teacher description).
        output_dir (`str` or `os.PathLike`, *optional*): Save the teacher (`save_pretrained`, safetensors) and its
            image processor there.

    Returns:
        [`~transformers.PreTrainedModel`]: The teacher in eval mode; `config.hf_distill_teacher` records the dataset,
        epochs and test accuracy (percent, when `test_split` is given).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    train_data = _as_image_data(train_split, image_mean, image_std, image_size, num_channels, "train")
    test_data = None
    if test_split is not None:
        test_data = _as_image_data(
            test_split, train_data.mean, train_data.std, train_data.image_size, train_data.num_channels, "test"
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if model_config is None:
        overrides = {"net_width": net_width} | ({"net_depth": net_depth} if net_depth else {})
        config = _convnet_for(train_data.num_channels, train_data.image_size, train_data.class_names, overrides)
    else:
        config = build_model_config(model_config, train_data, None)
    model = fresh_model(config, derive_generator(seed, "kd-teacher", "init")).to(device)
    protocol = EvaluationProtocol(
        num_models=1,
        epochs=epochs,
        lr=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        dsa_strategy=augmentation,
        seed=seed,
    )
    started = time.perf_counter()
    train_classifier(
        model,
        train_data.images.to(device),
        train_data.labels.to(device),
        protocol,
        derive_generator(seed, "kd-teacher", "train"),
        show_progress=show_progress,
        desc="Training the teacher",
    )
    seconds = time.perf_counter() - started
    accuracy = None
    if test_data is not None:
        accuracy = 100.0 * _accuracy(lambda x: model(pixel_values=x).logits, test_data, device)
    model.config.image_mean = list(train_data.mean)
    model.config.image_std = list(train_data.std)
    model.config.hf_distill_teacher = {
        "dataset": dataset_name,
        "train_split": "train",
        "num_train_images": len(train_data),
        "epochs": epochs,
        "augmentation": augmentation,
        "seed": seed,
        "test_accuracy": accuracy,
        "seconds": round(seconds, 2),
    }
    model.eval().requires_grad_(False)
    if output_dir is not None:
        output_dir = Path(output_dir)
        model.save_pretrained(output_dir)
        build_image_processor(
            train_data.mean, train_data.std, train_data.image_size, train_data.num_channels
        ).save_pretrained(output_dir)
    return model


def _as_image_data(split, mean, std, image_size, num_channels, name: str) -> ImageData:
    if isinstance(split, ImageData):
        return split
    if not isinstance(split, Dataset):
        raise TypeError(f"The {name} split must be a datasets.Dataset or an ImageData, got {type(split).__name__}.")
    image_column, label_column = find_columns(split)
    return prepare_images(
        split,
        image_column,
        label_column,
        mean=mean,
        std=std,
        image_size=image_size,
        num_channels=num_channels,
        desc=f"Preparing the {name} split",
    )


@torch.no_grad()
def _accuracy(forward, data: ImageData, device: torch.device, batch_size: int = 1024) -> float:
    correct = 0
    for images, labels in zip(data.images.split(batch_size), data.labels.split(batch_size)):
        correct += (forward(images.to(device)).argmax(dim=-1).cpu() == labels).sum().item()
    return correct / max(1, len(data))


def _convnet_for(num_channels: int, image_size, class_names: list[str], overrides: dict) -> PretrainedConfig:
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    id2label = dict(enumerate(class_names))
    return default_convnet_config(
        num_channels,
        height if height == width else [height, width],
        len(class_names),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        **overrides,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Students
# ---------------------------------------------------------------------------------------------------------------------


def build_student(config: KDConfig, distilled: DistilledSet) -> tuple[PreTrainedModel, str | None]:
    """The student: a checkpoint (`student_name_or_path`) or a fresh model of `student_config` (default ConvNet-3).

    Returns:
        `tuple`: the model, and `base_model` (the Hub id when the student starts from a Hub checkpoint, else `None`).
    """
    channels, height, width = distilled.image_shape
    class_names = distilled.class_names
    id2label = dict(enumerate(class_names))
    if config.student_name_or_path:
        name = config.student_name_or_path
        try:
            model = AutoModelForImageClassification.from_pretrained(
                name,
                num_labels=len(class_names),
                id2label=id2label,
                label2id={v: k for k, v in id2label.items()},
                ignore_mismatched_sizes=True,  # the head is re-initialised for the set's classes
            )
        except Exception as error:
            raise ValueError(
                f"Could not load the student checkpoint {name!r}: {type(error).__name__}: {error}"
            ) from error
        _check_student_geometry(model.config, channels, height, width)
        return model, (None if Path(name).expanduser().exists() else name)

    value = config.student_config
    if value is None or (isinstance(value, dict) and "model_type" not in value):
        model_config = _convnet_for(channels, (height, width), class_names, dict(value or {}))
    else:
        if isinstance(value, dict):
            values = dict(value)
            architecture = AutoConfig.for_model(values.pop("model_type"), **values)
        else:
            try:
                architecture = AutoConfig.from_pretrained(value)
            except Exception as error:
                raise ValueError(
                    f"Could not load a student config from {value!r}: {type(error).__name__}: {error}. Pass a JSON "
                    "string/file, a folder with config.json or a reachable Hub id."
                ) from error
        model_config = build_model_config(architecture, distilled.image_data(), None)
        if model_config.model_type == "hf_distill_convnet":  # its classifier is sized by the images
            model_config.image_size = height if height == width else [height, width]
        elif isinstance(getattr(model_config, "image_size", None), int):  # e.g. ViT: patch grid of the set's images
            model_config.image_size = height
    _check_student_geometry(model_config, channels, height, width)
    return fresh_model(model_config, derive_generator(config.seed, "kd-student", "init")), None


def _check_student_geometry(model_config: PretrainedConfig, channels: int, height: int, width: int) -> None:
    model_channels = getattr(model_config, "num_channels", channels)
    if model_channels != channels:
        raise ValueError(
            f"The student expects {model_channels}-channel images but the distilled set has {channels} channels."
        )
    if getattr(model_config, "model_type", None) == "hf_distill_convnet":
        size = model_config.image_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if size != (height, width):
            raise ValueError(
                f"The student ConvNet is sized for {size} images but the distilled set's are {(height, width)}."
            )


# ---------------------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------------------


class KDTrainer(Trainer):
    """A [`~transformers.Trainer`] that distills a frozen teacher (and/or the set's soft labels) into a student.

    Each training batch is augmented on the fly (DSA, `args.augmentation`) with draws from a `torch.Generator` seeded
    by `(args.seed, process, global step, micro-step)`; the student and the teacher see the same augmented batch. The
    loss is [`distillation_loss`]; `ce_loss` and `kd_loss` are logged beside `loss`. Evaluation on the real test split
    reports `eval_accuracy` (the shipped `evaluate` metric, see [`load_accuracy_metric`]).

    Args:
        model (`PreTrainedModel`, *optional*): The student; built with [`build_student`] from `args` and `distilled`
            when omitted.
        args ([`KDConfig`], *optional*): Settings (defaults: `KDConfig()`).
        teacher (`nn.Module` or `str`, *optional*): The teacher (see [`load_teacher`]); frozen and moved to the
            training device here. May be `None` when `alpha == 1` or the set has soft labels.
        distilled ([`DistilledSet`], *optional*): The distilled set: the default training data, the augmentation for
            `augmentation="auto"`, the normalisation for the image processor and for a raw `eval_dataset`.
        train_dataset (*optional*): Rows with `pixel_values`, `label(s)` and optionally `soft_label(s)`; default: the
            distilled set.
        eval_dataset (*optional*): The real test split: an [`ImageData`], a `datasets.Dataset` of raw images
            (prepared with the set's statistics), or any dataset of `{"pixel_values", "labels"}` rows.
        teacher_info (`dict`, *optional*): Teacher description for `kd_config.json` (default: [`describe_teacher`]).
        **kwargs: Any other [`~transformers.Trainer`] argument (`callbacks`, `optimizers`, ...).
    """

    # `compute_loss` returns a per-batch mean: the Trainer divides it by the gradient accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        args: KDConfig | None = None,
        teacher: nn.Module | str | None = None,
        distilled: DistilledSet | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        teacher_info: dict | None = None,
        **kwargs,
    ):
        args = KDConfig() if args is None else args
        if not isinstance(args, KDConfig):
            raise TypeError(f"args must be a KDConfig, got {type(args).__name__}.")
        self.distilled = distilled
        self.base_model_id: str | None = None
        if model is None:
            if distilled is None:
                raise ValueError("Pass the student `model`, or `distilled` to build the default student from args.")
            model, self.base_model_id = build_student(args, distilled)

        # Soft labels: whether to use them, and how to read them.
        has_soft = distilled.has_soft_labels if distilled is not None else False
        if train_dataset is not None:
            columns = getattr(train_dataset, "column_names", None) or []
            has_soft = SOFT_LABEL_COLUMN in columns or "soft_labels" in columns
        if args.use_soft_labels == "yes" and not has_soft:
            raise ValueError(
                "use_soft_labels='yes' but the distilled set has no `soft_label` column. Use 'auto' or 'no', or a set "
                "distilled by a method that learns soft labels."
            )
        self.use_soft_labels = has_soft and args.use_soft_labels != "no"
        if train_dataset is None:
            if distilled is None:
                raise ValueError("Pass `train_dataset` or `distilled`.")
            train_dataset = distilled.training_dataset(self.use_soft_labels)
        self.soft_labels_are_probabilities = False
        if self.use_soft_labels:
            column = SOFT_LABEL_COLUMN if SOFT_LABEL_COLUMN in train_dataset.column_names else "soft_labels"
            values = train_dataset.with_format("numpy", columns=[column])[:][column]
            self.soft_labels_are_probabilities = _soft_labels_are_probabilities(np.asarray(values))

        if teacher is not None and not isinstance(teacher, nn.Module):
            teacher_name = os.fspath(teacher)
            teacher = load_teacher(teacher)
            teacher_info = teacher_info or describe_teacher(teacher, teacher_name)
        if teacher is None and args.alpha < 1 and not self.use_soft_labels:
            raise ValueError(
                f"alpha={args.alpha} < 1 weighs a KD term, which needs a teacher (teacher_name_or_path, "
                "train_teacher=True, or `teacher=`) or a distilled set with soft labels. Set alpha=1 to train with "
                "plain cross-entropy."
            )

        # Evaluation data and metric.
        if isinstance(eval_dataset, Dataset) and "pixel_values" not in eval_dataset.column_names:
            if distilled is None:
                raise ValueError(
                    "A raw eval_dataset is prepared with the distilled set's statistics: pass `distilled`."
                )
            eval_dataset = prepare_test_split(distilled, eval_dataset)
        if isinstance(eval_dataset, ImageData):
            if distilled is not None and eval_dataset.num_classes != distilled.num_classes:
                raise ValueError(
                    f"The eval split has {eval_dataset.num_classes} classes, the distilled set "
                    f"{distilled.num_classes}: evaluate on a split of the dataset the set was distilled from."
                )
            eval_dataset = _ImageDataDataset(eval_dataset)
        if compute_metrics is None and eval_dataset is not None:
            compute_metrics = _accuracy_compute_metrics(load_accuracy_metric())
            kwargs.setdefault("preprocess_logits_for_metrics", _argmax_logits)
        if processing_class is None and distilled is not None:
            channels, height, width = distilled.image_shape
            processing_class = build_image_processor(
                distilled.image_mean, distilled.image_std, (height, width), channels
            )

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator or KDDataCollator(),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            **kwargs,
        )
        if self.args.label_names is None:
            self.label_names = ["labels"]  # the collator's key, whatever the student's forward signature

        # Augmentation.
        strategy = args.augmentation
        if strategy == "auto":
            strategy = distilled.dsa_strategy if distilled is not None else None
        self.augmentation_resolved = None if strategy in (None, "", "none") else strategy
        self.augment = SiameseAugment(self.augmentation_resolved)
        self._augment_step = (-1, 0)  # (global step, micro-step) of the last draw

        # Teacher: frozen, eval mode, on the training device.
        self.teacher = None
        self.teacher_info = teacher_info
        if teacher is not None:
            self.teacher = load_teacher(teacher, device=self.args.device)
            if self.teacher_info is None:
                self.teacher_info = describe_teacher(self.teacher, args.teacher_name_or_path)
            self._teacher_settings = _teacher_input_settings(self.teacher)
            self._check_teacher()

        self._kd_metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.eval_results: dict | None = None

    # ------------------------------------------------------------------ teacher

    @property
    def num_classes(self) -> int:
        if self.distilled is not None:
            return self.distilled.num_classes
        return int(self.accelerator.unwrap_model(self.model).config.num_labels)

    def _check_teacher(self) -> None:
        """Fails early, with the fix, when the teacher cannot label this set."""
        expected = self.num_classes
        teacher_labels = getattr(getattr(self.teacher, "config", None), "num_labels", None)
        if teacher_labels is not None and teacher_labels != expected:
            raise ValueError(
                f"The teacher predicts {teacher_labels} classes but the distilled set has {expected}. Use a teacher "
                "trained on the same label set (e.g. --train_teacher)."
            )
        sample = self.data_collator([self.train_dataset[0]])["pixel_values"].to(self.args.device)
        try:
            logits = self.teacher_logits(sample)
        except Exception as error:
            raise ValueError(
                f"The teacher failed on a {tuple(sample.shape[1:])} image of the distilled set: "
                f"{type(error).__name__}: {error}"
            ) from error
        if logits.ndim != 2 or logits.shape[-1] != expected:
            raise ValueError(
                f"The teacher returns logits of shape {tuple(logits.shape)} but the distilled set has {expected} "
                "classes. Use a teacher trained on the same label set (e.g. --train_teacher)."
            )
        names = getattr(getattr(self.teacher, "config", None), "id2label", None) or {}
        teacher_names = [str(names.get(i, names.get(str(i), ""))) for i in range(expected)]
        if self.distilled is not None and not all(n.startswith("LABEL_") for n in teacher_names):
            if teacher_names != [str(n) for n in self.distilled.class_names]:
                logger.warning(
                    "The teacher's class names %s differ from the distilled set's %s: check that class i means the "
                    "same in both.",
                    teacher_names,
                    self.distilled.class_names,
                )

    def _teacher_inputs(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The batch as the teacher expects it: re-normalised (exact, it is affine) and resized when they differ."""
        settings = self._teacher_settings
        if not settings or self.distilled is None:
            return pixel_values
        x = pixel_values
        set_mean, set_std = self.distilled.image_mean, self.distilled.image_std
        mean, std = settings.get("mean"), settings.get("std")
        if mean is not None and (list(mean) != set_mean or list(std) != set_std or len(mean) != x.shape[1]):
            x = x * _channel_tensor(set_std, x) + _channel_tensor(set_mean, x)  # back to [0, 1] pixels
            if len(mean) == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = (x - _channel_tensor(mean, x)) / _channel_tensor(std, x)
        size = settings.get("image_size")
        if size is not None and tuple(size) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        return x

    @torch.no_grad()
    def teacher_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits for a batch normalised like the distilled set."""
        x = self._teacher_inputs(pixel_values)
        output = self.teacher(pixel_values=x) if isinstance(self.teacher, PreTrainedModel) else self.teacher(x)
        if hasattr(output, "logits"):
            return output.logits
        if isinstance(output, (tuple, list)):
            return output[0]
        return output

    def teacher_accuracy(self, data: ImageData) -> float | None:
        """The teacher's top-1 accuracy (percent) on `data` (prepared like the distilled set)."""
        if self.teacher is None:
            return None
        return 100.0 * _accuracy(self.teacher_logits, data, self.args.device, self.args.per_device_eval_batch_size)

    # ------------------------------------------------------------------ augmentation

    def augment_batch(self, pixel_values: torch.Tensor, step: int, micro_step: int = 0) -> torch.Tensor:
        """Augments a batch with draws keyed by `(args.seed, process index, step, micro_step)` (never the clock).

        The same key always gives the same transforms, whatever ran before (resumed or repeated runs match).
        """
        if not self.augment.enabled:
            return pixel_values
        generator = derive_generator(self.args.seed, "kd-augment", self.args.process_index, step, micro_step)
        return self.augment(pixel_values, generator)

    def _training_augmentation(self, pixel_values: torch.Tensor) -> torch.Tensor:
        step = self.state.global_step
        last_step, micro = self._augment_step
        micro = micro + 1 if step == last_step else 0  # gradient accumulation: several batches per step
        self._augment_step = (step, micro)
        return self.augment_batch(pixel_values, step, micro)

    # ------------------------------------------------------------------ loss and logging

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The KD loss of a batch (see [`distillation_loss`]); augmentation only while training."""
        pixel_values = inputs["pixel_values"]
        labels = inputs.get("labels")
        soft_labels = inputs.get("soft_labels") if self.use_soft_labels else None
        if model.training:
            pixel_values = self._training_augmentation(pixel_values)
        outputs = model(pixel_values=pixel_values)
        logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]

        alpha = self.args.alpha
        teacher_logits = None
        teacher_needed = soft_labels is None or self.args.soft_label_weight < 1
        if alpha < 1 and self.teacher is not None and teacher_needed:
            teacher_logits = self.teacher_logits(pixel_values)
        loss, parts = distillation_loss(
            logits,
            labels,
            teacher_logits,
            alpha=alpha,
            temperature=self.args.temperature,
            soft_labels=soft_labels,
            soft_label_weight=self.args.soft_label_weight if teacher_logits is not None else 1.0,
            soft_labels_are_probabilities=self.soft_labels_are_probabilities,
        )
        mode = "train" if model.training else "eval"
        for name, value in parts.items():
            self._kd_metrics[mode][name].append(value.item())
        return (loss, {"logits": logits}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the mean `ce_loss`/`kd_loss` since the last log (`eval_` prefixed after an evaluation)."""
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        if mode == "eval" or "loss" in logs:
            metrics = self._kd_metrics[mode]
            prefix = "eval_" if mode == "eval" else ""
            for name, values in metrics.items():
                if values:
                    logs[f"{prefix}{name}"] = float(np.mean(values))
            metrics.clear()
        super().log(logs, start_time)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The protocol's schedule (lr x0.1 at half the steps) when `args.lr_decay_at_half`, else the Trainer's."""
        if self.lr_scheduler is None and self.args.lr_decay_at_half:
            optimizer = optimizer if optimizer is not None else self.optimizer
            half = max(1, num_training_steps // 2)
            self.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[half], gamma=0.1)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    # ------------------------------------------------------------------ evaluation and output

    def evaluate_test(self, test_info: dict | None = None, seconds: float | None = None) -> dict:
        """Evaluates on `eval_dataset` and stores `eval_results` (the `eval_results.json` content).

        Args:
            test_info (`dict`, *optional*): `test_split` and `dataset` names to record.
            seconds (`float`, *optional*): Training time to record.
        """
        if self.eval_dataset is None:
            raise ValueError("No eval_dataset: pass the real test split to evaluate the student.")
        metrics = self.evaluate()
        test_info = dict(test_info or {})
        source = self.distilled.source if self.distilled is not None else {}
        self.eval_results = {
            "accuracy": 100.0 * float(metrics["eval_accuracy"]),
            "test_split": test_info.get("test_split", source.get("test_split")),
            "dataset": test_info.get("dataset", source.get("dataset")),
            "num_test_images": len(self.eval_dataset),
            "seconds": round(float(seconds), 2) if seconds is not None else None,
            "epochs": self.args.num_train_epochs,
            "alpha": self.args.alpha,
            "temperature": self.args.temperature,
        }
        return self.eval_results

    def kd_config_dict(self) -> dict:
        """The content of `kd_config.json`."""
        from . import __version__

        student = self.accelerator.unwrap_model(self.model)
        student_config = getattr(student, "config", None)
        distilled = self.distilled
        return {
            "hf_distill_version": __version__,
            **self.args.kd_settings(),
            "augmentation_resolved": self.augmentation_resolved,
            "soft_labels_used": self.use_soft_labels,
            "soft_label_kind": (
                ("probabilities" if self.soft_labels_are_probabilities else "logits") if self.use_soft_labels else None
            ),
            "teacher": self.teacher_info,
            "distilled_dataset": (distilled.name_or_path if distilled is not None else None)
            or self.args.distilled_dataset,
            "distilled_source": distilled.source if distilled is not None else None,
            "distilled_method": distilled.metadata.get("method") if distilled is not None else None,
            "images_per_class": distilled.metadata.get("images_per_class") if distilled is not None else None,
            "num_distilled_images": len(self.train_dataset) if self.train_dataset is not None else None,
            "image_mean": distilled.image_mean if distilled is not None else None,
            "image_std": distilled.image_std if distilled is not None else None,
            "image_shape": list(distilled.image_shape) if distilled is not None else None,
            "class_names": distilled.class_names if distilled is not None else None,
            "student_model_type": getattr(student_config, "model_type", type(student).__name__),
            "student_architecture": student_config.to_dict() if student_config is not None else None,
            "base_model": self.base_model_id,
            "training_args": self.args.to_dict(),
        }

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Writes the student (safetensors), the image processor, `kd_config.json` and `eval_results.json`.

        Unlike `Trainer._save`, no pickled `training_args.bin`: every setting is in `kd_config.json`.
        """
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        if not self.args.should_save:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        student = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if isinstance(student, PreTrainedModel):
            student.save_pretrained(output_dir, state_dict=state_dict)
        else:
            state = state_dict if state_dict is not None else student.state_dict()
            save_tensors({k: v.contiguous() for k, v in state.items()}, output_dir / "model.safetensors")
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        _write_json(output_dir / KD_CONFIG_NAME, self.kd_config_dict())
        if self.eval_results is not None:
            _write_json(output_dir / EVAL_RESULTS_NAME, self.eval_results)

    def save_pretrained(self, output_dir: str | os.PathLike | None = None) -> Path:
        """Writes the student folder (see `_save`) and returns its path.

        Layout: `config.json`, `model.safetensors`, `preprocessor_config.json`, `kd_config.json`, `eval_results.json`
        (after [`evaluate_test`]), and `teacher/` when [`train_student`] trained the teacher.
        """
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        self.save_model(str(output_dir))
        return output_dir


def _channel_tensor(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------------
# One call
# ---------------------------------------------------------------------------------------------------------------------


def train_student(config: KDConfig, teacher: nn.Module | str | None = None) -> KDTrainer:
    """Loads the distilled set, gets a teacher, trains the student, evaluates it on the real test split and saves it.

    Steps: [`load_distilled_set`] (`config.distilled_dataset`); the real splits from the recorded source (or
    `config.source_dataset`); the teacher: `teacher`, else `config.teacher_name_or_path`, else, with
    `config.train_teacher`, [`train_teacher`] on the full real train split normalised like the set (saved to
    `<output_dir>/teacher`; under several processes only the main one trains it); [`KDTrainer.train`]; evaluation
    (`eval_results`); [`KDTrainer.save_pretrained`] to `config.output_dir`.

    Returns:
        [`KDTrainer`]: with `eval_results` (`None` when no test split is available), `teacher_info`.
    """
    if not config.distilled_dataset:
        raise ValueError("config.distilled_dataset is required: the folder written by `hf-distill distill`.")
    distilled = load_distilled_set(config.distilled_dataset, revision=config.distilled_revision)
    need_source = config.train_teacher and teacher is None
    train_split, test_split = _load_source_splits(distilled, config.source_dataset)
    if need_source and train_split is None:
        raise ValueError(
            "train_teacher needs the real dataset, but none is recorded in the distilled set's "
            f"{CONFIG_NAME}: pass source_dataset (--source_dataset)."
        )
    test_data = prepare_test_split(distilled, test_split) if test_split is not None else None
    if test_data is None:
        logger.warning("No real test split found (source %s): the student is not evaluated.", distilled.source)

    teacher_info = None
    if teacher is None and config.teacher_name_or_path:
        teacher = load_teacher(config.teacher_name_or_path)
        teacher_info = describe_teacher(teacher, config.teacher_name_or_path)
    elif teacher is None and config.train_teacher:
        teacher = _train_teacher_for(config, distilled, train_split, test_data)
        teacher_info = describe_teacher(teacher, str(Path(config.output_dir) / TEACHER_DIR))
    elif teacher is not None:
        name = os.fspath(teacher) if isinstance(teacher, (str, os.PathLike)) else None
        teacher = load_teacher(teacher)
        teacher_info = describe_teacher(teacher, name)

    trainer = KDTrainer(
        args=config, teacher=teacher, distilled=distilled, eval_dataset=test_data, teacher_info=teacher_info
    )
    if trainer.teacher is not None and test_data is not None and trainer.teacher_info is not None:
        if trainer.teacher_info.get("test_accuracy") is None:
            trainer.teacher_info["test_accuracy"] = trainer.teacher_accuracy(test_data)
    output = trainer.train()
    if test_data is not None:
        test_info = {
            "test_split": distilled.source.get("test_split") or "test",
            "dataset": config.source_dataset or distilled.source.get("dataset"),
        }
        trainer.evaluate_test(test_info, seconds=output.metrics.get("train_runtime"))
    trainer.save_pretrained(config.output_dir)
    return trainer


def _train_teacher_for(
    config: KDConfig, distilled: DistilledSet, train_split: Dataset, test_data: ImageData | None
) -> nn.Module:
    from accelerate import PartialState

    state = PartialState()
    teacher_dir = Path(config.output_dir) / TEACHER_DIR
    strategy = config.teacher_augmentation
    if strategy == "auto":
        strategy = config.augmentation if config.augmentation != "auto" else distilled.dsa_strategy
    strategy = None if strategy in (None, "", "none") else strategy
    teacher = None
    if state.is_main_process:
        channels, height, width = distilled.image_shape
        teacher = train_teacher(
            train_split,
            test_data,
            epochs=config.teacher_epochs,
            augmentation=strategy,
            net_width=config.teacher_net_width,
            net_depth=config.teacher_net_depth,
            image_mean=distilled.image_mean,
            image_std=distilled.image_std,
            image_size=(height, width),
            num_channels=channels,
            seed=config.seed,
            device=config.device,
            show_progress=not config.disable_tqdm,
            dataset_name=config.source_dataset or distilled.source.get("dataset"),
            output_dir=teacher_dir if config.should_save else None,
        )
    state.wait_for_everyone()
    if teacher is None:  # other processes: the main process's teacher, so every process distills the same one
        teacher = load_teacher(teacher_dir)
    return teacher
