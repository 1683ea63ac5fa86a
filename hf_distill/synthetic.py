"""`SyntheticSet`: the learnable distilled examples, their targets, and conversion to a `datasets.Dataset`."""

import math
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, List, Value
from PIL import Image as PILImage
from safetensors.torch import load_file
from torch import nn

from .checkpointing import save_tensors
from .constants import REGRESSION_TARGET_COLUMN, SOFT_LABEL_COLUMN
from .modalities import ImageModality, Modality
from .modalities.image_data import denormalize
from .modalities.zca import ZCAWhitening

#: What a set trains models towards: its class labels, learned soft labels (probabilities), or learned real-valued
#: regression targets (kernel ridge regression's, trained with a squared loss).
TARGET_TYPES = ("hard", "soft", "regression")


class SyntheticSet(nn.Module):
    """A distilled set: `images_per_class` examples for each class, stored class-major.

    Row `c * images_per_class + j` is example `j` of class `c`. `images` holds the exact (normalised) values that
    are optimised and exported under the modality's input column (`pixel_values` for images); `mean`/`std` turn
    them back into a viewable preview.

    Args:
        images (`torch.Tensor` of shape `(num_classes * images_per_class, ...)`): Normalised inputs, e.g. images
            `(N, C, H, W)`.
        num_classes (`int`): Number of classes.
        class_names (`list[str]`): Class names, in label order.
        mean (`list[float]`), std (`list[float]`): Per-channel normalisation, in [0, 1] pixel units.
        requires_grad (`bool`, *optional*, defaults to `True`): Whether the inputs (and learned targets) are learnable.
        label_logits (`torch.Tensor` of shape `(num_classes * images_per_class, num_classes)`, *optional*):
            Learnable soft labels (logits; the targets are their softmax).
        step_size (`float` or `list[float]`, *optional*): A learnable learning rate (MTT, meta-learning), or one per
            student step (DD's schedule); evaluation can train with it (its mean, for a schedule).
        regression_targets (`torch.Tensor` of shape `(num_classes * images_per_class, num_classes)`, *optional*):
            Learnable real-valued targets (KIP/RFAD/FRePo); models train on them with a squared loss. At most one of
            `label_logits` and `regression_targets` is given; with neither, the targets are the hard labels.
        modality ([`Modality`], *optional*): How the inputs are previewed and exported (default: images).
        zca ([`ZCAWhitening`], *optional*): The whitening the inputs live in (undone for previews).
        source_previews (`list`, *optional*): What each row exports as its preview instead of the modality's
            rendering of the inputs (a selected text row: the real sentence).
    """

    def __init__(
        self,
        images: torch.Tensor,
        num_classes: int,
        class_names: list[str],
        mean: list[float],
        std: list[float],
        requires_grad: bool = True,
        label_logits: torch.Tensor | None = None,
        step_size: float | list[float] | None = None,
        regression_targets: torch.Tensor | None = None,
        modality: Modality | None = None,
        zca: ZCAWhitening | None = None,
        source_previews: list | None = None,
    ):
        super().__init__()
        if source_previews is not None and len(source_previews) != images.shape[0]:
            raise ValueError(
                f"source_previews needs one entry per example ({images.shape[0]}), got {len(source_previews)}."
            )
        self.source_previews = source_previews
        if images.shape[0] % num_classes:
            raise ValueError(f"{images.shape[0]} images cannot be split evenly into {num_classes} classes.")
        if label_logits is not None and regression_targets is not None:
            raise ValueError("A set has soft labels or regression targets, not both: pass one of them.")
        self.num_classes = num_classes
        self.images_per_class = images.shape[0] // num_classes
        self.class_names = list(class_names)
        self.mean = list(mean)
        self.std = list(std)
        self.modality = modality or ImageModality()
        self.zca = zca
        self.images = nn.Parameter(images.detach().clone().float(), requires_grad=requires_grad)
        labels = torch.arange(num_classes).repeat_interleave(self.images_per_class)
        self.register_buffer("labels", labels, persistent=False)
        self.label_logits = self._target_parameter(label_logits, "label_logits", requires_grad)
        self.regression_targets = self._target_parameter(regression_targets, "regression_targets", requires_grad)
        self.step_size = None
        if step_size is not None:
            values = torch.tensor(step_size, dtype=torch.float32)
            if values.dim() > 1 or values.numel() == 0:
                raise ValueError(f"step_size must be a number or a non-empty list of numbers, got {step_size!r}.")
            self.step_size = nn.Parameter(values, requires_grad=requires_grad)

    def _target_parameter(self, values: torch.Tensor | None, name: str, requires_grad: bool) -> nn.Parameter | None:
        if values is None:
            return None
        expected = (self.images.shape[0], self.num_classes)
        if tuple(values.shape) != expected:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(values.shape)}.")
        return nn.Parameter(values.detach().clone().float(), requires_grad=requires_grad)

    @staticmethod
    def initial_label_logits(labels: torch.Tensor, num_classes: int, confidence: float = 0.9) -> torch.Tensor:
        """Logits whose softmax puts `confidence` on the true class and spreads the rest evenly (label smoothing).

        Learnable labels start close to the hard ones; starting exactly one-hot would need infinite logits.
        """
        if not 1.0 / num_classes < confidence < 1.0:
            raise ValueError(f"confidence must be in (1/num_classes, 1), got {confidence}.")
        off = (1.0 - confidence) / (num_classes - 1)
        logits = torch.full((len(labels), num_classes), math.log(off))
        logits[torch.arange(len(labels)), labels] = math.log(confidence)
        return logits

    @staticmethod
    def initial_regression_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Centred one-hot targets (`1 - 1/C` on the true class, `-1/C` elsewhere), as KIP and RFAD start them."""
        return torch.nn.functional.one_hot(labels, num_classes).float() - 1.0 / num_classes

    def set_soft_labels(self, logits: torch.Tensor) -> None:
        """Give the set fixed soft labels (e.g. a teacher's logits on its final examples), replacing its targets."""
        if logits.shape != (self.images.shape[0], self.num_classes):
            raise ValueError(f"Soft labels need shape {(self.images.shape[0], self.num_classes)}, got {logits.shape}.")
        self.regression_targets = None
        self.label_logits = nn.Parameter(logits.detach().float().to(self.images.device), requires_grad=False)

    @property
    def has_soft_labels(self) -> bool:
        return self.label_logits is not None

    @property
    def target_type(self) -> str:
        """`"hard"`, `"soft"` or `"regression"` (see [`TARGET_TYPES`])."""
        if self.label_logits is not None:
            return "soft"
        return "regression" if self.regression_targets is not None else "hard"

    def targets(self) -> torch.Tensor:
        """Training targets: soft-label probabilities or regression targets (differentiable) when learned, else the
        hard labels."""
        if self.label_logits is not None:
            return self.label_logits.softmax(dim=-1)
        return self.labels if self.regression_targets is None else self.regression_targets

    def targets_of(self, classes: list[int]) -> torch.Tensor:
        """`targets()` of the rows of `classes`, class-major."""
        if list(classes) == list(range(self.num_classes)):
            return self.targets()
        rows = self.rows(classes).to(self.labels.device)
        if self.label_logits is not None:
            return self.label_logits[rows].softmax(dim=-1)
        return (self.labels if self.regression_targets is None else self.regression_targets)[rows]

    @property
    def learned_lr(self) -> float | None:
        """The learned step size as a float, the mean of a per-step schedule (`None` when the set has none)."""
        return None if self.step_size is None else float(self.step_size.detach().mean())

    @property
    def learned_step_sizes(self) -> list[float] | None:
        """A learned per-step schedule as a list (`None` for a single step size or none)."""
        if self.step_size is None or not self.step_size.dim():
            return None
        return self.step_size.detach().cpu().tolist()

    def step_size_metadata(self) -> dict:
        """`learned_lr` (and `learned_step_sizes` for a schedule) for `distill_config.json`; `{}` without one."""
        metadata = {} if self.learned_lr is None else {"learned_lr": self.learned_lr}
        if self.learned_step_sizes is not None:
            metadata["learned_step_sizes"] = self.learned_step_sizes
        return metadata

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one example (`(C, H, W)` for images)."""
        return tuple(self.images.shape[1:])

    def rows(self, classes: list[int]) -> torch.LongTensor:
        """Row indices of the examples of `classes`, class-major."""
        ipc = self.images_per_class
        starts = torch.tensor(classes, dtype=torch.long).unsqueeze(1) * ipc
        return (starts + torch.arange(ipc)).flatten()

    def images_of(self, classes: list[int]) -> torch.Tensor:
        """The (differentiable) examples of `classes`, class-major."""
        if list(classes) == list(range(self.num_classes)):
            return self.images
        return self.images[self.rows(classes).to(self.images.device)]

    @property
    def preprocessing(self) -> dict:
        """What the modality needs besides `mean`/`std` to preview the inputs (`zca` when they are whitened)."""
        return {"zca": self.zca} if self.zca is not None else {}

    def denormalized(self) -> torch.Tensor:
        """The images in [0, 1] pixel units (un-whitened, clamped), detached, on CPU."""
        images = self.images.detach().cpu()
        return denormalize(self.zca.inverse(images) if self.zca is not None else images, self.mean, self.std)

    # ------------------------------------------------------------------ export

    def to_pil_images(self) -> list[PILImage.Image]:
        """The modality's previews (for images: de-normalised, mode `L` for one channel, `RGB` for three)."""
        return self.modality.preview(self.images, self.mean, self.std, **self.preprocessing)

    def to_dataset(self) -> Dataset:
        """The distilled set as a `datasets.Dataset`.

        Columns: the modality's preview and exact input columns (for images `image`, a de-normalised PIL preview,
        and `pixel_values`, float32 C x H x W), `label` (`ClassLabel` with the source names) and, when targets were
        learned, `soft_label` (`num_classes` float32 probabilities per row) or `regression_target` (`num_classes`
        float32 values per row).
        """
        targets = {
            "soft": (SOFT_LABEL_COLUMN, lambda: self.targets()),
            "regression": (REGRESSION_TARGET_COLUMN, lambda: self.regression_targets),
        }
        features = {**self.modality.export_features(self.image_shape), "label": ClassLabel(names=self.class_names)}
        columns = self.modality.export_columns(self.images, self.mean, self.std, **self.preprocessing)
        if self.source_previews is not None:
            columns[self.modality.preview_column] = list(self.source_previews)
        data = {**columns, "label": self.labels.tolist()}
        if self.target_type in targets:
            column, values = targets[self.target_type]
            features[column] = List(Value("float32"), length=self.num_classes)
            data[column] = values().detach().cpu().float().numpy()
        return Dataset.from_dict(data, features=Features(features))

    def grid_image(self, max_cell: int = 64) -> PILImage.Image:
        """One row per class, `images_per_class` columns; small images are enlarged (nearest) for viewing."""
        previews = self.to_pil_images()
        height, width = self.image_shape[1:]
        scale = max(1, math.floor(max_cell / max(height, width)))
        cell_h, cell_w, pad = height * scale, width * scale, 2
        grid = PILImage.new(
            "RGB",
            (self.images_per_class * (cell_w + pad) + pad, self.num_classes * (cell_h + pad) + pad),
            color=(255, 255, 255),
        )
        for index, preview in enumerate(previews):
            row, col = divmod(index, self.images_per_class)
            cell = preview.convert("RGB").resize((cell_w, cell_h), PILImage.NEAREST)
            grid.paste(cell, (pad + col * (cell_w + pad), pad + row * (cell_h + pad)))
        return grid

    # ------------------------------------------------------------------ persistence (checkpoints)

    def save(self, path: str | Path) -> None:
        """Writes the learnable state as safetensors (the metadata holds names and normalisation)."""
        metadata = {
            "num_classes": str(self.num_classes),
            "class_names": "\x1f".join(self.class_names),
            "mean": ",".join(map(repr, self.mean)),
            "std": ",".join(map(repr, self.std)),
        }
        save_tensors({name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}, path, metadata)

    def load_state(self, path: str | Path) -> None:
        """Restores values written by `save` into this set (shapes must match)."""
        self.load_state_dict(load_file(str(path)))

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        mean: list[float],
        std: list[float],
        step_size: float | list[float] | None = None,
        modality: Modality | None = None,
        zca: ZCAWhitening | None = None,
    ) -> "SyntheticSet":
        """Rebuilds a (frozen) set from `to_dataset()`'s output (the input column, `label`, optional `soft_label` or
        `regression_target`)."""
        modality = modality or ImageModality()
        optional = [c for c in (SOFT_LABEL_COLUMN, REGRESSION_TARGET_COLUMN) if c in dataset.column_names]
        data = dataset.with_format("numpy", columns=[*modality.stored_columns(), "label", *optional])[:]
        labels = torch.as_tensor(np.asarray(data["label"]), dtype=torch.long)
        order = torch.argsort(labels, stable=True)

        def column(name: str) -> torch.Tensor:
            return torch.as_tensor(np.asarray(data[name]), dtype=torch.float32)[order]

        label_logits = regression_targets = None
        if SOFT_LABEL_COLUMN in data:
            # Stored as probabilities; their log is a logit vector with the same softmax.
            label_logits = column(SOFT_LABEL_COLUMN).clamp_min(1e-12).log()
        if REGRESSION_TARGET_COLUMN in data:
            regression_targets = column(REGRESSION_TARGET_COLUMN)
        names = dataset.features["label"].names
        return cls(
            modality.inputs_from_columns(data)[order],
            len(names),
            names,
            mean,
            std,
            requires_grad=False,
            label_logits=label_logits,
            step_size=step_size,
            regression_targets=regression_targets,
            modality=modality,
            zca=zca,
        )
