"""The one path from a `Dataset` to what a method needs: tensors, the network's config, the modality, augmentation.

[`prepare`] is used by the [`DistillTrainer`], the expert trainer and the KD teacher, so the three see the same
columns, normalisation, image size and network for the same settings.
"""

import dataclasses
import os
from dataclasses import dataclass

import torch
from datasets import Dataset, IterableDataset
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from .augment import SiameseAugment
from .config import DistillConfig
from .data import check_labels
from .hub_utils import check_hub_access, looks_like_local_path
from .modalities import ImageData, Modality, TextData, resolve_modality
from .modeling import default_convnet_config
from .models import EmbeddingClassifier
from .registry import get_method_class
from .splits import FeatureSplit, LabelledSplit

#: Splits already converted to tensors by a modality (given as they are, e.g. by tests and benchmarks).
PREPARED_TYPES = (ImageData, TextData)


def resolve_architecture(
    model: str | os.PathLike | PretrainedConfig | PreTrainedModel | None,
) -> PretrainedConfig | None:
    """The architecture a method uses (a config; `None` for the papers' ConvNet, built once the data is known).

    Args:
        model: `None` (the papers' ConvNet, built once the data's shape is known), a Hub id or local path, a
            `PretrainedConfig`, or a `PreTrainedModel` (its architecture is used; methods draw fresh weights).

    Raises:
        ValueError: A local path that does not exist, an unknown or gated Hub model, or a folder without a config.
        RuntimeError: The Hub cannot be reached (checked with one request, so this fails fast).
    """
    if model is None:
        return None
    if isinstance(model, PreTrainedModel):
        return model.config
    if isinstance(model, PretrainedConfig):
        return model
    if isinstance(model, str | os.PathLike):
        given_as_path, model = isinstance(model, os.PathLike), os.fspath(model)
        if not os.path.isdir(model):
            if given_as_path or looks_like_local_path(model):
                raise ValueError(f"Local model path {model!r} does not exist; pass an existing folder or a Hub id.")
            # One quick request: a typo or no network fails here at once, not after from_pretrained's retries.
            check_hub_access(model, repo_type="model")
        try:
            config = AutoConfig.from_pretrained(model)
        except Exception as error:
            raise ValueError(
                f"Could not load a model config from {model!r}: {error}. Pass a local folder with a config.json, "
                "a reachable Hub id, or a transformers config object."
            ) from error
        return config
    raise TypeError(f"model must be None, a Hub id/path, a PretrainedConfig or a PreTrainedModel, got {type(model)}.")


def prepare_splits(
    train_dataset: Dataset | ImageData,
    eval_dataset: Dataset | ImageData | None,
    config: DistillConfig,
    architecture: PretrainedConfig | None = None,
    model_settings: dict | None = None,
    modality: Modality | None = None,
) -> tuple[ImageData, ImageData | None]:
    """Validates both splits (cheaply, before any long work) and converts them to tensors.

    The training split is prepared with the settings the modality derives from `config`, `architecture` and
    `model_settings` (what a pretrained model's processor imposes); the test split like the training split.
    """
    modality = modality or resolve_modality(config.modality, train_dataset)
    if isinstance(train_dataset, PREPARED_TYPES):
        return _prepared_splits(train_dataset, eval_dataset, config, modality)
    role = modality.column_role
    mapping = {k: v for k, v in ((role, getattr(config, f"{role}_column", None)), ("label", config.label_column)) if v}
    input_column, label_column = modality.find_columns(train_dataset, mapping or None)
    init = "real" if config.init == "real" or get_method_class(config.method).selects_real_rows else config.init
    checks = {"images_per_class": config.images_per_class, "init": init, "split": config.train_split}
    streamed = isinstance(train_dataset, IterableDataset) or isinstance(eval_dataset, IterableDataset)
    if streamed and modality.name != "image":
        raise ValueError(
            f"Streamed datasets (IterableDataset) are read into a row store of images; {modality.name} data must be "
            "a datasets.Dataset: load it without streaming."
        )
    if streamed and not getattr(config, "data_on_disk", False):
        raise ValueError(
            "A streamed dataset (IterableDataset) is read once and written to disk: set data_on_disk=True "
            "(--data_on_disk true), or streaming=True when the run loads it."
        )
    # A stream's labels are known once it has been read: its checks come after the preparation.
    if not isinstance(train_dataset, IterableDataset):
        modality.validate(train_dataset, input_column, label_column, **checks)
    if eval_dataset is not None and not isinstance(eval_dataset, IterableDataset):
        modality.validate(eval_dataset, input_column, label_column, split=config.test_split or "test")
    columns = {role: input_column, "label": label_column}
    settings = modality.preparation_settings(config, architecture, model_settings or {})
    train_data = modality.fit_preprocessing(
        prepare_split(train_dataset, modality, settings, config.train_split, columns), config
    )
    if isinstance(train_dataset, IterableDataset):
        check_labels(train_data.labels.numpy(), train_data.class_names, label_column, **checks)
    test_data = None
    if eval_dataset is not None:
        test_data = prepare_split(eval_dataset, modality, modality.settings_of(train_data), config.test_split, columns)
        if test_data.num_classes != train_data.num_classes:
            raise ValueError(
                f"The test split has {test_data.num_classes} classes but the training split has "
                f"{train_data.num_classes}: both must share one ClassLabel feature."
            )
    return train_data, test_data


def _prepared_splits(
    train_data: ImageData, test_data: ImageData | None, config: DistillConfig, modality: Modality
) -> tuple[ImageData, ImageData | None]:
    """Splits given as tensors, with the training split's fitted preprocessing (ZCA) applied to copies of both when
    the config asks for it and the tensors do not have it yet."""
    if not getattr(config, "zca", False) or getattr(train_data, "zca", None) is not None:
        return train_data, test_data
    train_data = modality.fit_preprocessing(dataclasses.replace(train_data, images=train_data.images.clone()), config)
    if test_data is not None and test_data.zca is None:
        test_data = dataclasses.replace(test_data, images=train_data.zca(test_data.images), zca=train_data.zca)
    return train_data, test_data


def convnet_config(
    num_channels: int, image_size: tuple[int, int], class_names: list[str], **overrides
) -> PretrainedConfig:
    """The papers' ConvNet for images of this geometry and these classes (`overrides`: [`ConvNetConfig`] fields)."""
    height, width = image_size
    id2label = dict(enumerate(class_names))
    return default_convnet_config(
        num_channels,
        height if height == width else [height, width],
        len(class_names),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        **overrides,
    )


def prepare_train_and_test(
    train_split: Dataset | ImageData, test_split: Dataset | ImageData | None, modality: Modality, settings: dict
) -> tuple[ImageData, ImageData | None]:
    """The training split prepared with `settings`, and the test split (when given) prepared like it."""
    train_data = prepare_split(train_split, modality, settings, "train")
    if test_split is None:
        return train_data, None
    return train_data, prepare_split(test_split, modality, modality.settings_of(train_data), "test")


def prepare_split(
    split: Dataset | ImageData,
    modality: Modality,
    settings: dict,
    name: str,
    column_mapping: dict[str, str] | None = None,
) -> ImageData:
    """One split as tensors, prepared by `modality` with `settings` (e.g. `modality.settings_of(train_data)` for a
    split comparable with the training split, or a distilled set's normalisation); already prepared data is returned
    as it is."""
    if isinstance(split, PREPARED_TYPES):
        return split
    if not isinstance(split, Dataset | IterableDataset):
        raise TypeError(
            f"The {name} split must be a datasets.Dataset (or IterableDataset), an ImageData or a TextData, got "
            f"{type(split).__name__}."
        )
    input_column, label_column = modality.find_columns(split, column_mapping)
    return modality.prepare(split, input_column, label_column, desc=f"Preparing {name}", **settings)


def build_model_config(
    architecture: PretrainedConfig | None, data: ImageData, config: DistillConfig
) -> PretrainedConfig:
    """The config of the networks a method builds: the ConvNet from `config`, or `architecture` fitted to the data."""
    if architecture is None:
        return convnet_config(
            data.num_channels,
            data.image_size,
            data.class_names,
            net_width=config.net_width,
            net_depth=config.net_depth,
            net_norm=config.net_norm,
            net_act=config.net_act,
            net_pooling=config.net_pooling,
        )
    fitted = with_classes(architecture, data.class_names)
    if hasattr(fitted, "num_channels"):
        fitted.num_channels = data.num_channels
    return fitted


def with_classes(architecture: PretrainedConfig, class_names: list[str]) -> PretrainedConfig:
    """A copy of `architecture` whose head predicts `class_names` (`num_labels`, `id2label`, `label2id`)."""
    id2label = dict(enumerate(class_names))
    fitted = architecture.__class__.from_dict(architecture.to_dict())
    fitted.num_labels = len(id2label)
    fitted.id2label, fitted.label2id = id2label, {v: k for k, v in id2label.items()}
    return fitted


@dataclass
class Prepared:
    """What [`prepare`] returns: the splits as tensors and everything derived from them and the config.

    Attributes:
        train_data ([`ImageData`]): The training split, normalised.
        test_data ([`ImageData`], *optional*): The test split, normalised with the training split's statistics.
        model_config (`PretrainedConfig`): The network every method builds (fitted to the data's classes/channels).
        architecture (`PretrainedConfig`, *optional*): The architecture asked for (`None`: the papers' ConvNet).
        modality ([`Modality`]): The kind of input (how models take it, how it is augmented, previewed, exported).
        dsa_strategy (`str`, *optional*): The resolved distillation augmentation (`None`: off).
        augment ([`SiameseAugment`]): That augmentation.
    """

    train_data: ImageData
    test_data: ImageData | None
    model_config: PretrainedConfig
    architecture: PretrainedConfig | None
    modality: Modality
    dsa_strategy: str | None
    augment: SiameseAugment

    # A modality that embeds with a pretrained, frozen encoder (text) gives the methods that train networks a linear
    # classifier on that embedding as their network: real rows enter it as their (cached) embeddings. For images
    # these are the run's architecture and its inputs.

    @property
    def frozen_features(self) -> torch.Tensor | None:
        """The modality's pretrained, frozen embedding of every training row, `(N, D)` (text); `None` for images."""
        return self.modality.pretrained_features(self.train_data)

    @property
    def network_input_name(self) -> str:
        """The keyword the methods' networks take their inputs under."""
        return EmbeddingClassifier.input_name if self.frozen_features is not None else self.modality.input_name

    def network_template(self) -> PretrainedConfig | nn.Module:
        """What the methods' networks are built from (`modeling.fresh_model` takes either): the run's network config,
        or a linear classifier on the frozen embedding."""
        frozen = self.frozen_features
        if frozen is None:
            return self.model_config
        return EmbeddingClassifier(frozen.shape[1], self.train_data.num_classes)

    def network_split(self, split: LabelledSplit) -> LabelledSplit:
        """`split` (one this run prepared) as the methods' networks take it: itself, or its frozen embedding."""
        frozen = self.modality.pretrained_features(split)
        if frozen is None:
            return split
        return FeatureSplit(frozen, split.labels, list(split.class_names))


def prepare(
    config: DistillConfig,
    train_dataset: Dataset | ImageData,
    eval_dataset: Dataset | ImageData | None = None,
    model: str | os.PathLike | PretrainedConfig | PreTrainedModel | None = None,
) -> Prepared:
    """Validates and converts the splits, and builds the network config and the augmentation `config` asks for.

    Args:
        config ([`DistillConfig`]): Any method's config; its data, network and augmentation fields are used.
        train_dataset (`datasets.Dataset` or [`ImageData`]): The training split.
        eval_dataset (`datasets.Dataset` or [`ImageData`], *optional*): The test split.
        model (*optional*): The architecture (a Hub id or path, a `PretrainedConfig` or a `PreTrainedModel`);
            default: `config.model_name_or_path`, then the papers' ConvNet.
    """
    modality = resolve_modality(config.modality, train_dataset)
    model = model or config.model_name_or_path
    architecture = resolve_architecture(model)
    model_settings = modality.model_settings(os.fspath(model)) if isinstance(model, str | os.PathLike) else {}
    train_data, test_data = prepare_splits(train_dataset, eval_dataset, config, architecture, model_settings, modality)
    augment = modality.augmentation(config.dsa_strategy, train_data.class_names)
    return Prepared(
        train_data=train_data,
        test_data=test_data,
        model_config=build_model_config(architecture, train_data, config),
        architecture=architecture,
        modality=modality,
        dsa_strategy=augment.strategy,
        augment=augment,
    )
