"""The teacher: describing a frozen one ([`describe_teacher`]; [`hf_distill.modeling.load_teacher`] loads it) and
training a ConvNet on the full real train split ([`train_teacher`])."""

import os
import time
from pathlib import Path

import torch
from datasets import Dataset
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..evaluation import EvaluationProtocol, model_accuracy, train_with_protocol
from ..modalities import ImageData, ImageModality
from ..modalities.image import build_image_processor
from ..modeling import fresh_model
from ..preparation import build_model_config, convnet_config, prepare_train_and_test
from ..seeding import derive_generator


def teacher_input_settings(teacher: nn.Module) -> dict:
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
        if trained.get("encoder"):  # a text teacher: the set's encoder, fine-tuned
            description = f"{trained['encoder']} fine-tuned on the full {dataset} {split} split"
        else:
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
    modality = ImageModality()
    settings = {"mean": image_mean, "std": image_std, "image_size": image_size, "num_channels": num_channels}
    train_data, test_data = prepare_train_and_test(train_split, test_split, modality, settings)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if model_config is None:
        overrides = {"net_width": net_width} | ({"net_depth": net_depth} if net_depth else {})
        config = convnet_config(train_data.num_channels, train_data.image_size, train_data.class_names, **overrides)
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
    train_with_protocol(
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
        accuracy = 100.0 * model_accuracy(model, test_data)
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
