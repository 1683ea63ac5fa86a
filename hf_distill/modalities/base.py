"""`Modality`: everything about one kind of input (images, text) that methods, sets, evaluation and kd must not name.

A modality finds its column in a dataset, prepares a split into tensors, knows the keyword a model takes those
tensors under (`pixel_values`, `inputs_embeds`), builds the augmentation, renders previews and says which columns
an exported set has and which task its card names. A new modality is one module in `hf_distill/modalities/` with a
subclass decorated with `@register_modality("name")`.
"""

from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, Features
from torch import nn

from ..augment import SiameseAugment


class Modality:
    """The interface every modality implements (see [`ImageModality`] for the first one)."""

    name: ClassVar[str] = ""
    #: The keyword the models' forward takes the inputs under.
    input_name: ClassVar[str] = ""
    #: The exported column that holds the exact (optimised) input values.
    input_column: ClassVar[str] = ""
    #: The exported column that holds a human-readable preview of each example.
    preview_column: ClassVar[str] = ""
    #: The task of the dataset card and of a student's model card (`task_categories`, `pipeline_tag`).
    task: ClassVar[str] = ""
    #: The role of the input column in `column_mapping` and the config (`image` -> `image_column`).
    column_role: ClassVar[str] = ""
    #: The `transformers` Auto class of a classifier of this modality's inputs (a KD teacher or student).
    classifier_class: ClassVar[type | None] = None

    @classmethod
    def detect(cls, features: Features) -> bool:
        """Whether a dataset with these features holds this modality's inputs (used by `modality="auto"`)."""
        raise NotImplementedError

    def find_columns(self, dataset: Dataset, column_mapping: dict[str, str] | None = None) -> tuple[str, str]:
        """`(input column, label column)` of `dataset`, overridable with `column_mapping`."""
        raise NotImplementedError

    def validate(self, dataset: Dataset, input_column: str, label_column: str, **checks) -> None:
        """Cheap checks before any long work (no input decoded), with errors that say what to fix."""
        raise NotImplementedError

    def prepare(self, dataset: Dataset, input_column: str, label_column: str, **settings) -> Any:
        """The split as tensors (the modality's data class, e.g. [`ImageData`]); `settings` as
        [`preparation_settings`] and [`settings_of`] return them, plus `desc` (the progress bar's label)."""
        raise NotImplementedError

    def model_settings(self, name_or_path: str) -> dict:
        """What a pretrained model imposes on its inputs (read from its processor), or `{}`."""
        return {}

    def preparation_settings(self, config: Any, architecture: Any, model_settings: dict) -> dict:
        """The [`prepare`] settings of the training split for a run's `config` and `architecture`."""
        return {}

    def recorded_settings(self, metadata: dict) -> dict:
        """The [`prepare`] settings a distilled set records (its `distill_config.json`), which prepare a real split
        like the set's inputs; loads what they name (text: the encoder). Raises a `ValueError` naming what is
        missing."""
        return {}

    def processor(self, settings: dict):
        """What turns raw inputs into the tensors of data prepared with `settings` (an image processor, a tokenizer),
        saved beside a classifier so it can be used without hf_distill; `None` when there is none."""
        return None

    def default_student(self, class_names: list[str]) -> tuple[nn.Module, str] | None:
        """The model a KD student starts from when none is given, with the name of the checkpoint it comes from;
        `None`: a fresh model of the student config (images: the papers' ConvNet)."""
        return None

    def check_classifier(self, model_config, example_shape: tuple[int, ...]) -> None:
        """Raises a `ValueError` saying what to change when a classifier of `model_config` cannot take examples of
        `example_shape` (the set's inputs, as [`inputs_from_columns`] returns them)."""

    def bind_classifier(self, model: nn.Module) -> nn.Module:
        """Makes a classifier trained on a set read raw inputs the way the set's were made (text: the encoder's
        word-embedding table, frozen); returns it."""
        return model

    def fit_preprocessing(self, data: Any, config: Any) -> Any:
        """Preprocessing fitted on the prepared training split (images: ZCA whitening with `config.zca`); the
        transform is kept on the returned data, so [`settings_of`] passes it on to the other splits."""
        if getattr(config, "zca", False):
            raise ValueError(f"zca whitening is an image option; the {self.name!r} modality has none: set zca=False.")
        return data

    def settings_of(self, data: Any) -> dict:
        """The [`prepare`] settings that make another split comparable with prepared `data` (same normalisation)."""
        return {}

    def to_learnable(self, inputs: torch.Tensor) -> torch.Tensor:
        """Real examples as the float tensor a synthetic set optimises and exports (images: as they are)."""
        return inputs

    def pretrained_features(self, data: Any) -> torch.Tensor | None:
        """The embedding of every row of `data` under the modality's pretrained, frozen model, when it works in one
        (text); `None` when embeddings come from networks of the run's architecture (images)."""
        return None

    def evaluate(
        self, inputs: torch.Tensor, targets: torch.Tensor, test_data: Any, key: str = "distilled", **_
    ) -> dict | None:
        """The modality's own evaluation protocol for a set (text: a linear probe); `None` for the standard one
        (fresh networks trained by the one training loop, see `hf_distill.evaluation`)."""
        return None

    def forward(self, model: nn.Module, inputs: torch.Tensor, **kwargs) -> Any:
        """`model`'s output on `inputs`, passed under [`input_name`]."""
        return model(**{self.input_name: inputs}, **kwargs)

    def logits(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """`model`'s logits on `inputs`."""
        return self.forward(model, inputs).logits

    def augmentation(self, strategy: str | None, class_names: list[str]) -> SiameseAugment:
        """The differentiable siamese augmentation `strategy` asks for (off by default)."""
        return SiameseAugment(None)

    def preview(self, inputs: torch.Tensor, mean: list[float], std: list[float], **preprocessing) -> list:
        """A human-readable preview of each example (e.g. PIL images); `preprocessing` as on the prepared data
        (images: `zca`)."""
        raise NotImplementedError

    def export_features(self, example_shape: tuple[int, ...]) -> dict:
        """The `datasets` features of the input and preview columns of an exported set."""
        raise NotImplementedError

    def export_columns(self, inputs: torch.Tensor, mean: list[float], std: list[float], **preprocessing) -> dict:
        """The input and preview columns of an exported set (matching [`export_features`])."""
        raise NotImplementedError

    def stored_columns(self) -> list[str]:
        """The exported columns [`inputs_from_columns`] reads back."""
        return [self.input_column]

    def inputs_from_columns(self, columns: dict) -> torch.Tensor:
        """The exact inputs of an exported set, from its [`stored_columns`] (as read with the numpy format)."""
        return torch.as_tensor(np.asarray(columns[self.input_column]), dtype=torch.float32)
