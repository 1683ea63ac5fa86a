"""[`KDTrainer`]: a [`~transformers.Trainer`] that distills a frozen teacher (and/or soft labels) into a student.

The output folder (see [`KDTrainer.save_pretrained`]) holds the student (`config.json`, `model.safetensors`), what
prepares raw inputs for it (images: `preprocessor_config.json`, so `AutoImageProcessor` +
`AutoModelForImageClassification` classify raw PIL images; text: the encoder's tokenizer, so `AutoTokenizer` +
`AutoModelForSequenceClassification` classify raw sentences), `kd_config.json` (every setting, the teacher, the
distilled set and its source) and `eval_results.json`.
"""

import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, Trainer

from ..augment import CutMix, strategy_or_none
from ..checkpointing import save_tensors, write_json_atomic
from ..constants import EVAL_RESULTS_NAME, KD_CONFIG_NAME, SOFT_LABEL_COLUMN, __version__
from ..modalities import ImageModality
from ..modeling import load_teacher
from ..seeding import derive_generator
from ..splits import LabelledSplit
from ..training import accuracy
from .config import KDConfig
from .data import DistilledSet, KDDataCollator, SplitRows, prepare_test_split
from .losses import distillation_loss, soft_labels_are_probabilities
from .metrics import argmax_logits, compute_accuracy
from .student import build_student
from .teacher import describe_teacher, teacher_input_settings

logger = logging.getLogger(__name__)


class KDTrainer(Trainer):
    """A [`~transformers.Trainer`] that distills a frozen teacher (and/or the set's soft labels) into a student.

    Each training batch is augmented on the fly (DSA, `args.augmentation`) with draws from a `torch.Generator` seeded
    by `(args.seed, process, global step, micro-step)`, then mixed by CutMix when `args.cutmix`; the student and the
    teacher see the same augmented batch. The loss is [`distillation_loss`]; `ce_loss` and `kd_loss` are logged beside
    `loss`. Evaluation on the real test split reports `eval_accuracy` ([`hf_distill.training.predictions_accuracy`]).

    Args:
        model (`PreTrainedModel`, *optional*): The student; built with [`build_student`] from `args` and `distilled`
            when omitted.
        args ([`KDConfig`], *optional*): Settings (defaults: `KDConfig()`).
        teacher (`nn.Module` or `str`, *optional*): The teacher (see [`load_teacher`]); frozen and moved to the
            training device here. May be `None` when `alpha == 1` or the set has soft labels.
        distilled ([`DistilledSet`], *optional*): The distilled set: the default training data, the augmentation for
            `augmentation="auto"`, the processor saved with the student and the preparation of a raw `eval_dataset`
            (see [`DistilledSet.preparation_settings`]).
        train_dataset (*optional*): Rows with the modality's input column (`pixel_values`, `inputs_embeds`),
            `label(s)` and optionally `soft_label(s)`; default: the distilled set.
        eval_dataset (*optional*): The real test split: a prepared split ([`ImageData`], [`TextData`]), a
            `datasets.Dataset` of raw examples (prepared like the set), or any dataset of `{input, "labels"}` rows.
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
        self.modality = distilled.modality if distilled is not None else ImageModality()
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
            self.soft_labels_are_probabilities = soft_labels_are_probabilities(np.asarray(values))

        if teacher is not None and not isinstance(teacher, nn.Module):
            teacher_name = os.fspath(teacher)
            teacher = load_teacher(teacher, modality=self.modality)
            teacher_info = teacher_info or describe_teacher(teacher, teacher_name)
        if teacher is None and args.alpha < 1 and not self.use_soft_labels:
            raise ValueError(
                f"alpha={args.alpha} < 1 weighs a KD term, which needs a teacher (teacher_name_or_path, "
                "train_teacher=True, or `teacher=`) or a distilled set with soft labels. Set alpha=1 to train with "
                "plain cross-entropy."
            )

        # Evaluation data and metric.
        input_column = self.modality.input_column
        if isinstance(eval_dataset, Dataset) and input_column not in eval_dataset.column_names:
            if distilled is None:
                raise ValueError(
                    "A raw eval_dataset is prepared with the distilled set's statistics: pass `distilled`."
                )
            eval_dataset = prepare_test_split(distilled, eval_dataset)
        if isinstance(eval_dataset, LabelledSplit):
            if distilled is not None and eval_dataset.num_classes != distilled.num_classes:
                raise ValueError(
                    f"The eval split has {eval_dataset.num_classes} classes, the distilled set "
                    f"{distilled.num_classes}: evaluate on a split of the dataset the set was distilled from."
                )
            eval_dataset = SplitRows(eval_dataset, self.modality.input_name)
        if compute_metrics is None and eval_dataset is not None:
            compute_metrics = compute_accuracy
            kwargs.setdefault("preprocess_logits_for_metrics", argmax_logits)
        if processing_class is None and distilled is not None:  # saved with the student: raw inputs -> tensors
            processing_class = self.modality.processor(distilled.preparation_settings())

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator or KDDataCollator(self.modality),
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
        self.augmentation_resolved = strategy_or_none(strategy)
        class_names = distilled.class_names if distilled is not None else []
        self.augment = self.modality.augmentation(self.augmentation_resolved, class_names)
        self._augment_step = (-1, 0)  # (global step, micro-step) of the last draw
        if args.cutmix and not isinstance(self.modality, ImageModality):
            raise ValueError(
                f"cutmix mixes images; this set is {self.modality.name}. For text, augmentation='splice' is its "
                "counterpart (the head of one example joined to the tail of another)."
            )

        # Teacher: frozen, eval mode, on the training device.
        self.teacher = None
        self.teacher_info = teacher_info
        if teacher is not None:
            self.teacher = load_teacher(teacher, device=self.args.device, modality=self.modality)
            if self.teacher_info is None:
                self.teacher_info = describe_teacher(self.teacher, args.teacher_name_or_path)
            self._teacher_settings = teacher_input_settings(self.teacher)
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
        sample = self.data_collator([self.train_dataset[0]])[self.modality.input_name].to(self.args.device)
        try:
            logits = self.teacher_logits(sample)
        except Exception as error:
            raise ValueError(
                f"The teacher failed on a {tuple(sample.shape[1:])} example of the distilled set: "
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
        """The batch as the teacher expects it. Images: un-whitened (a ZCA set), re-normalised (exact, it is affine)
        and resized when they differ (teachers see images normalised per channel, never whitened). Other inputs (text:
        the teacher reads the set's `inputs_embeds` as they are) pass unchanged."""
        settings = self._teacher_settings
        if self.distilled is None:
            return pixel_values
        x = pixel_values
        if self.distilled.zca is not None:
            x = self.distilled.zca.inverse(x)
        if not settings:
            return x
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
        output = (
            self.modality.forward(self.teacher, x) if isinstance(self.teacher, PreTrainedModel) else self.teacher(x)
        )
        if hasattr(output, "logits"):
            return output.logits
        if isinstance(output, (tuple, list)):
            return output[0]
        return output

    def teacher_accuracy(self, data: LabelledSplit) -> float | None:
        """The teacher's top-1 accuracy (percent) on `data` (prepared like the distilled set)."""
        if self.teacher is None:
            return None
        return 100.0 * accuracy(
            self.teacher_logits, data.inputs, data.labels, self.args.device, self.args.per_device_eval_batch_size
        )

    # ------------------------------------------------------------------ augmentation

    def augment_batch(self, pixel_values: torch.Tensor, step: int, micro_step: int = 0) -> torch.Tensor:
        """Augments a batch with draws keyed by `(args.seed, process index, step, micro_step)` (never the clock).

        The same key always gives the same transforms, whatever ran before (resumed or repeated runs match).
        """
        if not self.augment.enabled:
            return pixel_values
        generator = derive_generator(self.args.seed, "kd-augment", self.args.process_index, step, micro_step)
        return self.augment(pixel_values, generator)

    def _training_augmentation(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, CutMix | None]:
        """The augmented batch, then CutMix when `args.cutmix` (its own draws, keyed like the augmentation's)."""
        step = self.state.global_step
        last_step, micro = self._augment_step
        micro = micro + 1 if step == last_step else 0  # gradient accumulation: several batches per step
        self._augment_step = (step, micro)
        pixel_values = self.augment_batch(pixel_values, step, micro)
        if not self.args.cutmix:
            return pixel_values, None
        generator = derive_generator(self.args.seed, "kd-cutmix", self.args.process_index, step, micro)
        mixing = CutMix.apply(pixel_values, self.args.cutmix, generator)
        return mixing.mixed, mixing

    # ------------------------------------------------------------------ loss and logging

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The KD loss of a batch (see [`distillation_loss`]); augmentation only while training."""
        pixel_values = inputs[self.modality.input_name]
        labels = inputs.get("labels")
        soft_labels = inputs.get("soft_labels") if self.use_soft_labels else None
        mixing = None
        if model.training:
            pixel_values, mixing = self._training_augmentation(pixel_values)
        outputs = self.modality.forward(model, pixel_values)
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
            mix_targets=mixing.mix if mixing is not None else None,
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

    def create_optimizer(self, model=None):
        """With `args.head_learning_rate`, the optimizer trains the head (`classifier`) at that rate and the rest at
        `learning_rate`; otherwise the Trainer's."""
        if self.optimizer is not None or self.args.head_learning_rate is None:
            return super().create_optimizer(model)
        model = model if model is not None else self.model
        head = getattr(self.accelerator.unwrap_model(model), "classifier", None)
        if not isinstance(head, nn.Module):
            raise ValueError(
                "head_learning_rate needs a student whose classification head is its `classifier` module (as "
                f"transformers' classifiers name it); {type(model).__name__} has none. Unset head_learning_rate."
            )
        head_ids = {id(p) for p in head.parameters()}
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer_class, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        groups = [
            {"params": [p for p in trainable if id(p) not in head_ids], "weight_decay": self.args.weight_decay},
            {
                "params": [p for p in trainable if id(p) in head_ids],
                "lr": self.args.head_learning_rate,
                "weight_decay": self.args.weight_decay,
            },
        ]
        self.optimizer = optimizer_class(groups, **optimizer_kwargs)
        return self.optimizer

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
        student = self.accelerator.unwrap_model(self.model)
        student_config = getattr(student, "config", None)
        distilled = self.distilled
        return {
            "hf_distill_version": __version__,
            **self.args.kd_settings(),
            "modality": self.modality.name,
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
        write_json_atomic(output_dir / KD_CONFIG_NAME, self.kd_config_dict())
        if self.eval_results is not None:
            write_json_atomic(output_dir / EVAL_RESULTS_NAME, self.eval_results)

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
