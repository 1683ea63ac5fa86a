"""The data a student trains and is evaluated on: the distilled set ([`DistilledSet`], [`load_distilled_set`]), the
real test split normalised like it ([`prepare_test_split`]) and the batches ([`KDDataCollator`])."""

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, load_dataset, load_from_disk

from ..constants import CONFIG_NAME, DATASET_DIR, SOFT_LABEL_COLUMN, ZCA_NAME
from ..data import load_source
from ..hub_utils import check_hub_access, hub_download, is_hub_id, looks_like_local_path
from ..modalities import ImageData, ImageModality, Modality
from ..modalities.zca import ZCAWhitening
from ..preparation import prepare_split
from ..registry import get_modality_class
from ..splits import LabelledSplit


@dataclass
class DistilledSet:
    """A distilled set and the metadata `DistillTrainer.save` recorded beside it.

    Args:
        dataset (`datasets.Dataset`): Columns `pixel_values` (normalised `C x H x W` float32), `label` (`ClassLabel`),
            optionally `image` (preview) and `soft_label` (`num_classes` floats per row).
        metadata (`dict`): The content of `distill_config.json` (`image_mean`, `image_std`, `image_shape`,
            `class_names`, `num_classes`, `dsa_strategy_resolved`, `source`, `method`, `images_per_class`, ...).
        name_or_path (`str`, *optional*): Where it was loaded from (recorded in `kd_config.json`).
        zca ([`ZCAWhitening`], *optional*): The whitening `pixel_values` live in (sets distilled with `zca: true`;
            read from `zca.safetensors` beside the set). Real splits are whitened with it before they meet the set.
    """

    dataset: Dataset
    metadata: dict
    name_or_path: str | None = None
    zca: ZCAWhitening | None = None

    def __post_init__(self):
        if self.metadata.get("zca") and self.zca is None:
            raise ValueError(
                f"The distilled set was made in a ZCA-whitened space ({CONFIG_NAME} says so) but its transform "
                f"({ZCA_NAME}, saved beside it) was not loaded: without it every real image would be compared with "
                "the set in the wrong space. Load the set with load_distilled_set from its folder or Hub repository."
            )
        needed = {*self.modality.stored_columns(), "label"}
        columns = set(self.dataset.column_names)
        if not needed <= columns:
            raise ValueError(
                f"The distilled set needs the columns {sorted(needed)}, it has {sorted(columns)}. Pass a set written "
                "by DistillTrainer.save."
            )
        self.preparation_settings()  # fails now, saying what is missing, if the metadata cannot prepare real data

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
        return [float(v) for v in self.metadata.get("image_mean") or []]

    @property
    def image_std(self) -> list[float]:
        return [float(v) for v in self.metadata.get("image_std") or []]

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one example as the set's metadata records it (images: `(C, H, W)` of `pixel_values`)."""
        if self.metadata.get("image_shape"):
            return tuple(int(v) for v in self.metadata["image_shape"])
        return tuple(np.asarray(self.dataset[0][self.modality.input_column]).shape)

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

    def preparation_settings(self) -> dict:
        """The settings that prepare a real split like the set's inputs (images: its normalisation, size, channels
        and ZCA transform; text: its encoder and `max_length`), read from its metadata by its modality."""
        metadata = (
            self.metadata if self.metadata.get("image_shape") else {**self.metadata, "image_shape": self.image_shape}
        )
        settings = self.modality.recorded_settings(metadata)
        return settings | ({"zca": self.zca} if self.zca is not None else {})

    @cached_property
    def modality(self) -> Modality:
        """The kind of input the set holds (recorded by the distillation; sets without a record are images), with
        what it needs loaded (text: the encoder and tokenizer)."""
        modality = get_modality_class(self.metadata.get("modality") or "image")()
        modality.recorded_settings(self.metadata)
        return modality

    def inputs(self) -> torch.Tensor:
        """The set's exact inputs, one row per example (images: `pixel_values`; text: `inputs_embeds` with the
        attention mask as a last channel, see `TextModality`)."""
        columns = self.modality.stored_columns()
        return self.modality.inputs_from_columns(self.dataset.with_format("numpy", columns=columns)[:])

    @property
    def labels(self) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.dataset["label"]), dtype=torch.long)

    def image_data(self) -> ImageData:
        """The set as an [`ImageData`] (exact `pixel_values`, labels, class names, normalisation)."""
        return ImageData(
            images=self.inputs(),
            labels=self.labels,
            class_names=self.class_names,
            mean=self.image_mean,
            std=self.image_std,
            zca=self.zca,
        )

    def training_dataset(self, soft_labels: bool) -> Dataset:
        """The rows the student trains on, as torch tensors: the exact inputs under the modality's input column,
        `label`, and `soft_label` when asked (previews are never decoded)."""
        columns = {self.modality.input_column: self.inputs().numpy(), "label": self.labels.numpy()}
        if soft_labels:
            columns[SOFT_LABEL_COLUMN] = np.asarray(self.dataset[SOFT_LABEL_COLUMN], dtype=np.float32)
        return Dataset.from_dict(columns).with_format("torch")


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
        zca = None
        if metadata.get("zca"):
            if not (path / ZCA_NAME).is_file():
                raise ValueError(f"{path} was distilled with ZCA whitening but {ZCA_NAME} is missing from it.")
            zca = ZCAWhitening.load(path / ZCA_NAME)
        return DistilledSet(load_from_disk(str(path / DATASET_DIR)), metadata, str(name_or_path), zca)

    repo_id = os.fspath(name_or_path)
    if looks_like_local_path(repo_id) or not is_hub_id(repo_id):
        raise ValueError(
            f"Distilled set {repo_id!r}: no such folder, and not a Hub dataset id ('owner/name'). Pass the folder "
            "written by `hf-distill distill`, or the Hub dataset it was pushed to."
        )
    # One request first: no network or a wrong id fails at once with a clear message, not after retries.
    check_hub_access(repo_id, repo_type="dataset", revision=revision, token=token)
    hint = ": it is not a set pushed by hf-distill (`hf-distill push`)"
    config_file = hub_download(
        repo_id, CONFIG_NAME, repo_type="dataset", revision=revision, token=token, missing_hint=hint
    )
    metadata = json.loads(Path(config_file).read_text())
    zca = None
    if metadata.get("zca"):
        zca_file = hub_download(
            repo_id,
            ZCA_NAME,
            repo_type="dataset",
            revision=revision,
            token=token,
            missing_hint=f": the set was distilled with ZCA whitening, so {ZCA_NAME} must be pushed beside it",
        )
        zca = ZCAWhitening.load(zca_file)
    dataset = load_dataset(repo_id, split="train", revision=revision, token=token)
    return DistilledSet(dataset, metadata, repo_id, zca)


def prepare_test_split(distilled: DistilledSet, test_dataset: Dataset | LabelledSplit) -> LabelledSplit:
    """Converts a real split into tensors prepared exactly like the distilled set's inputs.

    Uses [`DistilledSet.preparation_settings`] (images: the set's normalisation, size and channels, the statistics of
    the train split it was distilled from; text: its encoder's tokenizer and `max_length`), as `DistillTrainer`
    prepares its test split.

    Raises:
        ValueError: If the split's classes differ from the set's.
    """
    data = prepare_split(test_dataset, distilled.modality, distilled.preparation_settings(), "test")
    if data.num_classes != distilled.num_classes:
        raise ValueError(
            f"The test split has {data.num_classes} classes but the distilled set has {distilled.num_classes}: "
            "evaluate on a split of the dataset the set was distilled from (--source_dataset)."
        )
    return data


def load_source_splits(distilled: DistilledSet, source_dataset: str | None) -> tuple[Dataset | None, Dataset | None]:
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


class KDDataCollator:
    """Stacks a list of examples into a batch: the inputs (under the modality's input keyword, default `pixel_values`;
    float32 unless they are integer token ids), `labels` (int64), `soft_labels` (float32).

    Examples may name the label `label` or `labels` and the soft label `soft_label` or `soft_labels`; other keys (e.g.
    a preview `image`) are dropped.

    Args:
        modality ([`Modality`], *optional*): Which column holds the inputs and which keyword the model takes them
            under (default: images, `pixel_values`).
    """

    def __init__(self, modality: Modality | None = None):
        self.modality = modality or ImageModality()

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        first = features[0]
        column = self.modality.input_column if self.modality.input_column in first else self.modality.input_name
        # Real sentences are token ids (integers): only floating-point inputs are cast to float32.
        inputs = torch.stack([torch.as_tensor(f[column]) for f in features])
        inputs = inputs.float() if torch.is_floating_point(inputs) else inputs
        batch = {self.modality.input_name: inputs}
        label_key = next((k for k in ("labels", "label") if k in first), None)
        if label_key is not None:
            batch["labels"] = torch.as_tensor([int(f[label_key]) for f in features], dtype=torch.long)
        soft_key = next((k for k in ("soft_labels", SOFT_LABEL_COLUMN) if k in first), None)
        if soft_key is not None:
            batch["soft_labels"] = torch.stack([torch.as_tensor(f[soft_key], dtype=torch.float32) for f in features])
        return batch


class SplitRows(torch.utils.data.Dataset):
    """A prepared split ([`ImageData`], [`TextData`]) as a map-style dataset of `{input_name, "labels"}` rows (the
    real test split)."""

    def __init__(self, data: LabelledSplit, input_name: str = "pixel_values"):
        self.data = data
        self.input_name = input_name

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {self.input_name: self.data.inputs[index], "labels": self.data.labels[index]}
