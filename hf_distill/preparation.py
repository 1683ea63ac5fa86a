"""The one path from a `Dataset` to what a method needs: tensors, the network's config, the modality, augmentation.

[`prepare`] is used by the [`DistillTrainer`], the expert trainer and the KD teacher, so the three see the same
columns, normalisation, image size and network for the same settings.
"""

import os
from dataclasses import dataclass

from datasets import Dataset
from transformers import AutoConfig, AutoImageProcessor, PretrainedConfig, PreTrainedModel

from .augment import SiameseAugment
from .config import DistillConfig
from .hub_utils import check_hub_access, looks_like_local_path
from .modalities import ImageData, ImageModality, Modality, resolve_modality
from .modeling import default_convnet_config
from .registry import get_method_class


def processor_settings(name_or_path: str) -> dict:
    """Image size and normalisation from a model's image processor, when it has one."""
    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path)
    except Exception:  # noqa: BLE001 - a model without a processor is fine: statistics come from the data
        return {}
    settings = {}
    if getattr(processor, "image_mean", None) is not None:
        settings["mean"], settings["std"] = list(processor.image_mean), list(processor.image_std)
    size = getattr(processor, "size", None) or {}
    if isinstance(size, dict) and "height" in size and "width" in size:
        settings["image_size"] = (size["height"], size["width"])
    elif isinstance(size, dict) and "shortest_edge" in size:
        settings["image_size"] = (size["shortest_edge"], size["shortest_edge"])
    return settings


def resolve_architecture(
    model: str | os.PathLike | PretrainedConfig | PreTrainedModel | None,
) -> tuple[PretrainedConfig | None, dict]:
    """The architecture a method uses, and image settings its processor imposes.

    Args:
        model: `None` (the papers' ConvNet, built once the data's shape is known), a Hub id or local path, a
            `PretrainedConfig`, or a `PreTrainedModel` (its architecture is used; methods draw fresh weights).

    Returns:
        `tuple`: `(config or None, {"mean", "std", "image_size"} from an image processor, possibly empty)`.

    Raises:
        ValueError: A local path that does not exist, an unknown or gated Hub model, or a folder without a config.
        RuntimeError: The Hub cannot be reached (checked with one request, so this fails fast).
    """
    if model is None:
        return None, {}
    if isinstance(model, PreTrainedModel):
        return model.config, {}
    if isinstance(model, PretrainedConfig):
        return model, {}
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
        return config, processor_settings(model)
    raise TypeError(f"model must be None, a Hub id/path, a PretrainedConfig or a PreTrainedModel, got {type(model)}.")


def config_image_size(config: PretrainedConfig | None) -> tuple[int, int] | None:
    size = getattr(config, "image_size", None) if config is not None else None
    if size is None or getattr(config, "model_type", "") == "hf_distill_convnet":
        return None
    return (size, size) if isinstance(size, int) else tuple(size)


def prepare_splits(
    train_dataset: Dataset | ImageData,
    eval_dataset: Dataset | ImageData | None,
    config: DistillConfig,
    architecture: PretrainedConfig | None = None,
    processor_settings: dict | None = None,
    modality: Modality | None = None,
) -> tuple[ImageData, ImageData | None]:
    """Validates both splits (cheaply, before any long work) and converts them to normalised tensors.

    The test split is normalised with the training split's statistics (or the model processor's).
    """
    if isinstance(train_dataset, ImageData):
        return train_dataset, eval_dataset
    modality = modality or resolve_modality(config.modality, train_dataset)
    processor_settings = processor_settings or {}
    mapping = {k: v for k, v in (("image", config.image_column), ("label", config.label_column)) if v}
    input_column, label_column = modality.find_columns(train_dataset, mapping or None)
    init = "real" if config.init == "real" or get_method_class(config.method).selects_real_rows else config.init
    modality.validate(
        train_dataset,
        input_column,
        label_column,
        images_per_class=config.images_per_class,
        init=init,
        split=config.train_split,
    )
    if eval_dataset is not None:
        modality.validate(eval_dataset, input_column, label_column, split=config.test_split or "test")
    image_size = (
        (config.image_size, config.image_size)
        if config.image_size
        else processor_settings.get("image_size") or config_image_size(architecture)
    )
    num_channels = getattr(architecture, "num_channels", None) if architecture is not None else None
    columns = {"image": input_column, "label": label_column}
    train_data = prepare_like(
        train_dataset,
        processor_settings.get("mean"),
        processor_settings.get("std"),
        image_size,
        num_channels,
        config.train_split,
        columns,
        modality,
    )
    test_data = None
    if eval_dataset is not None:
        test_data = prepare_like(
            eval_dataset,
            train_data.mean,
            train_data.std,
            train_data.image_size,
            train_data.num_channels,
            config.test_split,
            columns,
            modality,
        )
        if test_data.num_classes != train_data.num_classes:
            raise ValueError(
                f"The test split has {test_data.num_classes} classes but the training split has "
                f"{train_data.num_classes}: both must share one ClassLabel feature."
            )
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


def prepare_like(
    split: Dataset | ImageData,
    mean: list[float] | None,
    std: list[float] | None,
    image_size: tuple[int, int] | None,
    num_channels: int | None,
    name: str,
    column_mapping: dict[str, str] | None = None,
    modality: Modality | None = None,
) -> ImageData:
    """A split as tensors normalised with the given statistics, size and channels (a test split like its training
    split, a real split like a distilled set); statistics left `None` are computed from the split itself."""
    if isinstance(split, ImageData):
        return split
    if not isinstance(split, Dataset):
        raise TypeError(f"The {name} split must be a datasets.Dataset or an ImageData, got {type(split).__name__}.")
    modality = modality or ImageModality()
    input_column, label_column = modality.find_columns(split, column_mapping)
    return modality.prepare(
        split,
        input_column,
        label_column,
        mean=mean,
        std=std,
        image_size=image_size,
        num_channels=num_channels,
        desc=f"Preparing {name}",
    )


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
    id2label = dict(enumerate(data.class_names))
    fitted = architecture.__class__.from_dict(architecture.to_dict())
    fitted.num_labels = data.num_classes
    fitted.id2label, fitted.label2id = id2label, {v: k for k, v in id2label.items()}
    if hasattr(fitted, "num_channels"):
        fitted.num_channels = data.num_channels
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
    architecture, settings = resolve_architecture(model or config.model_name_or_path)
    train_data, test_data = prepare_splits(train_dataset, eval_dataset, config, architecture, settings, modality)
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
