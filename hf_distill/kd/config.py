"""[`KDConfig`]: the settings of knowledge distillation, a [`~transformers.TrainingArguments`] with the
evaluation protocol's defaults."""

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig, TrainingArguments
from transformers.trainer_utils import SaveStrategy, SchedulerType
from transformers.training_args import OptimizerNames

from ..augment import SiameseAugment
from ..modalities.text_augment import is_text_strategy

SOFT_LABEL_CHOICES = ("auto", "yes", "no")
#: Epochs of a teacher trained with `train_teacher=True` unless `teacher_epochs` says otherwise: a ConvNet on real
#: images (MNIST/CIFAR-sized splits), and a pretrained text encoder fine-tuned on real sentences (BERT's papers use
#: 2-4 epochs on small GLUE tasks; SST-2 has 67,349 sentences, so one epoch already takes ~2,100 steps of batch 32).
IMAGE_TEACHER_EPOCHS, TEXT_TEACHER_EPOCHS = 20, 1


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
    teacher_epochs: int | None = field(
        default=None,
        metadata={
            # argparse %-formats help strings: a literal percent sign is written %% (as in TrainingArguments).
            "help": "Epochs of the teacher trained with --train_teacher. Default: 20 for an image ConvNet (suits "
            "MNIST/CIFAR-sized splits; a split of ~1,400 images such as sklearn:digits needs ~100 with augmentation: "
            "20 gave an 88%% teacher, 100 98%%), 1 for a text encoder fine-tuned on the real sentences."
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
            "'auto' (the distilled set's dsa_strategy_resolved), 'none', a DSA strategy such as "
            "'color_crop_cutout_flip_scale_rotate' (images), or for text 'token_dropout' (20%% of the tokens left "
            "out of each view), 'splice' (the head of each example joined to the tail of another) or both, "
            "'splice+token_dropout'."
        },
    )
    cutmix: float = field(
        default=0.0,
        metadata={
            "help": "CutMix on every training batch after the augmentation (images only): a box of each image "
            "replaced by the same box of another, covering a share ~ Beta(a, a) of the area, a = this value; 0 turns "
            "it off. RDED's and SRe2L's students use 1.0 with the teacher labelling the mixed images (alpha 0); hard "
            "and soft labels are mixed by the area each image keeps."
        },
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the student's classification head (its `classifier` module), when it should "
            "differ from learning_rate: a pretrained encoder fine-tuned on a handful of examples keeps its features "
            "at a small learning_rate while its fresh head learns fast (the SST-2 recipe: 1e-5 and 1e-2)."
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
        if not (math.isfinite(self.cutmix) and self.cutmix >= 0):
            raise ValueError(f"cutmix must be a finite number >= 0 (0: off; RDED's students: 1.0), got {self.cutmix}.")
        for name in ("augmentation", "teacher_augmentation"):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, "none")
            elif value != "auto" and not is_text_strategy(value):
                SiameseAugment(value)  # raises a ValueError naming the valid families
        if self.teacher_name_or_path and self.train_teacher:
            raise ValueError("Pass either teacher_name_or_path (an existing teacher) or train_teacher=True, not both.")
        if self.teacher_epochs is not None and self.teacher_epochs < 1:
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
            "cutmix",
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
            "head_learning_rate",
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
