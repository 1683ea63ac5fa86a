"""Expert trajectories for trajectory matching (MTT): training them through the one training loop, and storing them.

An *expert* is a network trained on the whole real training split with plain SGD; its *trajectory* is its
parameters at initialisation (epoch 0) and after every epoch. MTT (Cazenavette et al., CVPR 2022) distills by making
a few SGD steps on the synthetic set travel as far along such a trajectory as `expert_epochs` epochs on real data.

The storage format and [`ExpertTrajectories`], which reads it, are in [`hf_distill.trajectories`]; cards and
pushes in [`hf_distill.cards`] / [`hf_distill.hub`].

Settings default to MTT's `buffer.py`: SGD with lr 0.01, no momentum, no weight decay, batch 256, DSA augmentation
while training; MTT trains 100 experts for 50 epochs (CIFAR).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm
from transformers import PretrainedConfig

from .augment import SiameseAugment
from .checkpointing import save_tensors, write_json_atomic
from .constants import EXPERTS_INDEX_NAME, __version__
from .evaluation import model_accuracy
from .functional import ParameterSpec
from .modalities import ImageData, ImageModality, Modality
from .modeling import build_network, fresh_model
from .preparation import prepare
from .seeding import derive_generator
from .splits import LabelledSplit
from .training import TrainingCallback, model_forward, resolve_mixed_precision, train_classifier
from .trajectories import (
    EXPERTS_FORMAT,
    EXPERTS_FORMAT_VERSION,
    ExpertTrajectories,
    epoch_key,
    expert_file_name,
)

__all__ = [
    "EXPERTS_INDEX_NAME",
    "ExpertTrajectories",
    "expert_file_name",
    "train_experts",
    "train_experts_for_config",
]

logger = logging.getLogger(__name__)

#: Settings that must agree between runs writing into the same folder (they shape every stored trajectory).
_TRAINING_KEYS = ("lr", "momentum", "weight_decay", "batch_size", "dsa_strategy", "seed", "mixed_precision")


def _flat_parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float().cpu()


def _default_device(inputs: torch.Tensor) -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else inputs.device


# ---------------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------------


def train_experts(
    train_data: LabelledSplit,
    model_config: PretrainedConfig | torch.nn.Module,
    output_dir: str | os.PathLike,
    num_experts: int,
    num_epochs: int,
    lr: float = 0.01,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    dsa_strategy: str | None = "auto",
    seed: int = 0,
    mixed_precision: str = "no",
    torch_compile: bool = False,
    test_data: ImageData | None = None,
    device: str | torch.device | None = None,
    source: dict | None = None,
    show_progress: bool = True,
    modality: Modality | None = None,
    input_name: str | None = None,
) -> Path:
    """Trains `num_experts` networks on the whole training split and stores their trajectories in `output_dir`.

    Expert `i` starts from `fresh_model(model_config, derive_generator(seed, "expert", i))` and shuffles and augments
    with `derive_generator(seed, "expert", i, "train")`, so every expert is reproducible on its own. Its file is
    written atomically once it is trained and the index after it: re-running with the same `output_dir` skips the
    experts already stored (an interrupted run loses at most the expert in progress), and a larger `num_experts`
    adds experts to an existing folder.

    Args:
        train_data ([`ImageData`] or another `LabelledSplit`): The normalised training split (as
            `DistillTrainer.train_data`), or its frozen embeddings (a `FeatureSplit`, text).
        model_config (`PretrainedConfig` or `torch.nn.Module`): The architecture; it must be the one the distillation
            uses (`DistillTrainer.model_config`, or `Prepared.network_template()`: a module is copied and re-drawn).
        output_dir (`str` or `os.PathLike`): Folder of the expert files and `experts.json`.
        num_experts (`int`): Number of experts the folder should hold (MTT: 100).
        num_epochs (`int`): Epochs per expert (MTT: 50). MTT needs `max_start_epoch + expert_epochs - 1` of them.
        lr (`float`, *optional*, defaults to 0.01): SGD learning rate (MTT's `lr_teacher`).
        momentum (`float`, *optional*, defaults to 0.0), weight_decay (`float`, *optional*, defaults to 0.0):
            SGD settings (MTT's experts use neither).
        batch_size (`int`, *optional*, defaults to 256): Training batch size.
        dsa_strategy (`str`, *optional*, defaults to `"auto"`): Augmentation while training (`"auto"`: DSA's
            default, without flip for digits, as `DistillConfig.dsa_strategy`; `None`/`"none"`: off).
        seed (`int`, *optional*, defaults to 0): Seed of initialisation, shuffling and augmentation.
        mixed_precision (`str`, *optional*, defaults to `"no"`): `"bf16"` trains in bfloat16 autocast (the stored
            parameters are float32 either way).
        torch_compile (`bool`, *optional*, defaults to `False`): Compile the network's forward with `torch.compile`
            (a one-off cost of ~20 s; with bf16 it roughly halves an epoch on a CPU with AMX). Not recorded as a
            training setting: it changes the speed, not the trajectories' recipe.
        test_data ([`ImageData`], *optional*): The real test split; each expert's final test accuracy is recorded.
        device (`str` or `torch.device`, *optional*): Where to train (default: CUDA when available, else the
            images' device).
        source (`dict`, *optional*): Where the data came from (e.g. `{"dataset": "ylecun/mnist"}`), recorded in the
            index and shown on the card.
        show_progress (`bool`, *optional*, defaults to `True`): tqdm progress bars.
        modality ([`Modality`], *optional*): How the networks take the inputs and how they are augmented (default:
            images).
        input_name (`str`, *optional*): The keyword the networks take their inputs under (default: the modality's;
            `Prepared.network_input_name`).

    Returns:
        `Path`: `output_dir`; load it with [`ExpertTrajectories.from_pretrained`].

    Raises:
        ValueError: Invalid settings, or `output_dir` holds experts trained with other settings.

    Example:

    ```python
    >>> from hf_distill.experts import train_experts
    >>> from hf_distill.preparation import prepare
    >>> prepared = prepare(config, train, test)  # as DistillTrainer(config, train, test) does
    >>> train_experts(prepared.train_data, prepared.model_config, "experts/mnist", num_experts=10, num_epochs=30,
    ...               test_data=prepared.test_data)

    [`train_experts_for_config`] does these steps for you.
    ```
    """
    if num_experts < 1 or num_epochs < 1:
        raise ValueError(f"num_experts and num_epochs must be >= 1, got {num_experts} and {num_epochs}.")
    if lr <= 0 or momentum < 0 or weight_decay < 0 or batch_size < 1:
        raise ValueError(
            f"Need lr > 0, momentum >= 0, weight_decay >= 0 and batch_size >= 1; got {lr}, {momentum}, "
            f"{weight_decay}, {batch_size}."
        )
    device = torch.device(device) if device is not None else _default_device(train_data.inputs)
    mixed_precision = resolve_mixed_precision(mixed_precision, device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    modality = modality or ImageModality()
    input_name = input_name or modality.input_name
    augment = modality.augmentation(dsa_strategy, train_data.class_names)
    strategy = augment.strategy
    spec = ParameterSpec.from_module(build_network(model_config))
    training = {
        "optimizer": "sgd",
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "dsa_strategy": strategy,
        "seed": seed,
        "mixed_precision": mixed_precision,
    }
    index = _start_index(output_dir, spec, model_config, num_epochs, training, train_data, source)

    inputs = train_data.inputs.to(device)
    labels = train_data.labels.to(device)
    records = {record["file"]: record for record in index["experts"]}
    progress = tqdm(range(num_experts), desc="Experts", disable=not show_progress)
    for expert in progress:
        name = expert_file_name(expert)
        if name in records and (output_dir / name).is_file():
            continue  # resume: stored by an earlier run
        if (output_dir / name).is_file():
            # The file was written but the run stopped before the index was: keep it, re-measure what we can.
            record = _record_from_file(output_dir / name, name, model_config, spec, test_data, device, input_name)
        else:
            record = _train_one_expert(
                expert,
                name,
                output_dir,
                model_config,
                spec,
                inputs,
                labels,
                num_epochs,
                training,
                augment,
                test_data,
                device,
                show_progress,
                torch_compile,
                input_name,
            )
        records[name] = record
        index["experts"] = [records[key] for key in sorted(records)]
        write_json_atomic(output_dir / EXPERTS_INDEX_NAME, index)
        if record.get("test_accuracy") is not None:
            progress.set_postfix(test_accuracy=f"{record['test_accuracy']:.2f}")
    progress.close()
    return output_dir


def train_experts_for_config(
    config,
    train_dataset,
    eval_dataset=None,
    output_dir: str | os.PathLike | None = None,
    num_experts: int = 100,
    num_epochs: int = 50,
    model=None,
    source: dict | None = None,
    **settings,
) -> Path:
    """[`train_experts`] on the data and architecture a [`DistillTrainer`] builds from `config`.

    The splits are prepared (columns, resizing, normalisation) and the network is configured exactly as
    `DistillTrainer(config, train_dataset, eval_dataset, model=model)` would, so the experts fit a later distillation
    with the same settings (e.g. `TrajectoryMatchingConfig(expert_path=output_dir, ...)`). `config.seed` and
    `config.mixed_precision` are used unless `settings` overrides them.

    Args:
        config ([`DistillConfig`]): Any method's config; its data and network fields are used.
        train_dataset (`datasets.Dataset` or [`ImageData`]): The training split.
        eval_dataset (`datasets.Dataset` or [`ImageData`], *optional*): The test split (each expert's accuracy).
        output_dir (`str` or `os.PathLike`): Where the experts go (required).
        num_experts (`int`, *optional*, defaults to 100), num_epochs (`int`, *optional*, defaults to 50): MTT's
            buffer sizes for CIFAR.
        model (*optional*): The architecture, as `DistillTrainer`'s `model` argument (default:
            `config.model_name_or_path`, then the papers' ConvNet).
        source (`dict`, *optional*): Where the data came from, for the index and the card.
        **settings: Other [`train_experts`] arguments (`lr`, `batch_size`, `dsa_strategy`, `device`, ...).

    Returns:
        `Path`: `output_dir`.

    Example:

    ```python
    >>> from datasets import load_dataset
    >>> from hf_distill.experts import train_experts_for_config
    >>> from hf_distill.methods.trajectory_matching import TrajectoryMatchingConfig
    >>> splits = load_dataset("ylecun/mnist")
    >>> config = TrajectoryMatchingConfig(images_per_class=10)
    >>> train_experts_for_config(config, splits["train"], splits["test"], "experts/mnist", num_experts=10)
    >>> config.expert_path = "experts/mnist"
    ```
    """
    if output_dir is None:
        raise ValueError("output_dir is required: the folder the expert trajectories are written to.")
    prepared = prepare(config, train_dataset, eval_dataset, model)
    settings.setdefault("seed", config.seed)
    settings.setdefault("mixed_precision", config.mixed_precision)
    settings.setdefault("torch_compile", config.torch_compile)
    settings.setdefault("dsa_strategy", config.dsa_strategy)
    test_data = prepared.test_data
    return train_experts(
        prepared.network_split(prepared.train_data),
        prepared.network_template(),
        output_dir,
        num_experts=num_experts,
        num_epochs=num_epochs,
        test_data=None if test_data is None else prepared.network_split(test_data),
        modality=prepared.modality,
        input_name=prepared.network_input_name,
        source=source,
        **settings,
    )


def _start_index(
    output_dir: Path,
    spec: ParameterSpec,
    model_config: PretrainedConfig | torch.nn.Module,
    num_epochs: int,
    training: dict,
    train_data: LabelledSplit,
    source: dict | None,
) -> dict:
    """The index to extend: the folder's own when its settings match, else a new one."""
    index = {
        "format": EXPERTS_FORMAT,
        "format_version": EXPERTS_FORMAT_VERSION,
        "hf_distill_version": __version__,
        "parameter_names": list(spec.names),
        "parameter_shapes": [list(shape) for shape in spec.shapes],
        "num_parameters": spec.num_parameters,
        "model_config": model_config.to_dict(),
        "num_epochs": num_epochs,
        "training": training,
        # Images only (frozen embeddings have no pixel statistics): `ExpertTrajectories.check_data` compares them.
        "image_mean": list(train_data.mean) if hasattr(train_data, "mean") else None,
        "image_std": list(train_data.std) if hasattr(train_data, "std") else None,
        "image_shape": list(train_data.example_shape),
        "class_names": list(train_data.class_names),
        "num_train_images": len(train_data),
        "source": source or {},
        "experts": [],
    }
    path = output_dir / EXPERTS_INDEX_NAME
    if not path.is_file():
        stray = sorted(p.name for p in output_dir.glob("expert_*.safetensors"))
        if stray:
            raise ValueError(
                f"{output_dir} holds expert files ({', '.join(stray[:3])}, ...) but no {EXPERTS_INDEX_NAME}: their "
                "settings are unknown. Use an empty output_dir, or remove those files."
            )
        return index
    existing = json.loads(path.read_text())
    differences = [
        key
        for key, ours, theirs in (
            (
                "parameter names/shapes",
                (index["parameter_names"], index["parameter_shapes"]),
                (existing.get("parameter_names"), existing.get("parameter_shapes")),
            ),
            ("num_epochs", num_epochs, existing.get("num_epochs")),
            ("image_shape", index["image_shape"], existing.get("image_shape")),
            ("class_names", index["class_names"], existing.get("class_names")),
            *((f"training.{key}", training[key], (existing.get("training") or {}).get(key)) for key in _TRAINING_KEYS),
        )
        if ours != theirs
    ]
    if differences:
        raise ValueError(
            f"{output_dir} already holds experts trained with other settings ({', '.join(differences)} differ). "
            "Pass the settings recorded in its experts.json to add experts to it, or use another output_dir."
        )
    existing["hf_distill_version"] = __version__
    return existing


class _TrajectoryRecorder(TrainingCallback):
    """Keeps the flat parameters after every epoch (epoch 0: the initialisation) and the last epoch's accuracy.

    The accuracy is on the epoch's (augmented) training batches, as MTT's `buffer.py` reports it.
    """

    def __init__(self, model: torch.nn.Module, labels: torch.Tensor):
        self.labels = labels
        self.trajectory = {epoch_key(0): _flat_parameters(model)}
        self.correct = 0
        self.train_accuracy = 0.0

    def on_batch_end(self, epoch, rows, logits, loss) -> None:
        self.correct += (logits.argmax(-1) == self.labels[rows]).sum().item()

    def on_epoch_end(self, epoch, model) -> dict:
        self.train_accuracy = 100.0 * self.correct / self.labels.shape[0]
        self.correct = 0
        self.trajectory[epoch_key(epoch + 1)] = _flat_parameters(model)
        return {"train_accuracy": f"{self.train_accuracy:.1f}"}


def _train_one_expert(
    expert: int,
    name: str,
    output_dir: Path,
    model_config: PretrainedConfig | torch.nn.Module,
    spec: ParameterSpec,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    num_epochs: int,
    training: dict,
    augment: SiameseAugment,
    test_data: LabelledSplit | None,
    device: torch.device,
    show_progress: bool,
    torch_compile: bool,
    input_name: str,
) -> dict:
    started = time.perf_counter()
    model = fresh_model(model_config, derive_generator(training["seed"], "expert", expert)).to(device)
    model.train()
    if ParameterSpec.from_module(model) != spec:
        raise RuntimeError("The model's parameters changed between two builds of the same config.")
    generator = derive_generator(training["seed"], "expert", expert, "train")
    optimizer = torch.optim.SGD(
        model.parameters(), lr=training["lr"], momentum=training["momentum"], weight_decay=training["weight_decay"]
    )
    # The compiled module shares the parameters, so the optimiser and the snapshots see the same tensors.
    forward = torch.compile(model, dynamic=False) if torch_compile else model
    recorder = _TrajectoryRecorder(model, labels)
    train_classifier(
        model,
        inputs,
        labels,
        optimizer=optimizer,
        epochs=num_epochs,
        batch_size=training["batch_size"],
        generator=generator,
        augment=augment,
        forward=model_forward(forward, input_name),
        mixed_precision=training["mixed_precision"],
        callbacks=[recorder],
        show_progress=show_progress,
        desc=f"Expert {expert}",
    )
    trajectory, train_accuracy = recorder.trajectory, recorder.train_accuracy
    metadata = {"format": EXPERTS_FORMAT, "expert": str(expert), "num_epochs": str(num_epochs)}
    tmp = output_dir / f".{name}.tmp"
    save_tensors(trajectory, tmp, metadata=metadata)
    os.replace(tmp, output_dir / name)
    test = None if test_data is None else 100.0 * model_accuracy(model, test_data, input_name=input_name)
    return {
        "file": name,
        "train_accuracy": round(train_accuracy, 4),
        "test_accuracy": None if test is None else round(test, 4),
        "train_seconds": round(time.perf_counter() - started, 2),
    }


def _record_from_file(
    path: Path,
    name: str,
    model_config: PretrainedConfig | torch.nn.Module,
    spec: ParameterSpec,
    test_data: LabelledSplit | None,
    device: torch.device,
    input_name: str,
) -> dict:
    test = None
    if test_data is not None:
        with safe_open(str(path), framework="pt") as handle:
            keys = sorted(handle.keys())
            final = handle.get_tensor(keys[-1])
        model = spec.copy_into(fresh_model(model_config, derive_generator(0, "expert-record")).to(device), final)
        test = round(100.0 * model_accuracy(model, test_data, input_name=input_name), 4)
    return {"file": name, "train_accuracy": None, "test_accuracy": test, "train_seconds": None}
