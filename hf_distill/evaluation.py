"""The standard evaluation protocol: what an accuracy figure for a distilled set means.

Train N fresh networks on the distilled set (SGD lr 0.01, momentum 0.9, weight decay 5e-4, lr x0.1 at half the
epochs, batch 256, DSA augmentation), test each on the whole real test split, report mean ± std (population std,
as the papers' `np.std`). Beside it: a random real subset of the same size, and on request the whole training
split. Any transformers vision classifier config can be the evaluation architecture.
"""

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import PretrainedConfig

from .augment import SiameseAugment
from .evaluation_cache import cached_evaluation, tensor_digest
from .modalities import ImageData, ImageModality, Modality
from .modeling import fresh_model, reinitialize_
from .seeding import derive_generator, seeded_rng
from .splits import ClassBalancedSampler
from .training import TEST_BATCH_SIZE, TrainingCallback, accuracy, loss_for_targets, model_forward, train_classifier

#: The global gradient norm every step of training on regression targets (KIP/RFAD sets) is clipped to. The
#: squared loss at the protocol's lr 0.01 diverges on networks with a wide classifier input (a ConvNet-2 without
#: pooling on MNIST's rfad set: mean loss 1.1, 304, 13,207 in its first epochs, then NaN: 9.80 %); cross-entropy on
#: labels does not need it. benchmarks/regression_targets_probe.py measured clips of 1, 3 and 10: that network
#: trains to 92.96 / 94.53 / 93.74 %, a pooled ConvNet-3 (stable without a clip, 97.56) to 97.04 / 97.45 / 97.56. 10
#: is the largest that stops the divergence and leaves the stable training exactly as it was (the clip never acts).
REGRESSION_MAX_GRAD_NORM = 10.0


def protocol_max_grad_norm(target_type: str) -> float | None:
    """The gradient clip the protocol trains `target_type` targets with: [`REGRESSION_MAX_GRAD_NORM`] for regression
    targets, none for labels (as the papers)."""
    return REGRESSION_MAX_GRAD_NORM if target_type == "regression" else None


@dataclass
class EvaluationProtocol:
    """How evaluation models are trained (defaults: DC/DSA/DM papers).

    Args:
        num_models (`int`): Fresh models trained per figure.
        epochs (`int`): Training epochs (the authors' code: 1000 for DSA, DM, MTT and DC on MNIST; 300 for DC on
            Fashion-MNIST).
        lr (`float`), momentum (`float`), weight_decay (`float`): SGD settings; lr x0.1 at half the epochs.
        batch_size (`int`): Training batch size.
        dsa_strategy (`str`, *optional*): Augmentation while training; `None` turns it off.
        test_batch_size (`int`): Batch size for testing.
        seed (`int`): Seed from which model initialisation, shuffling and augmentation are derived.
        text_protocol (`str`): Text only: `"linear_probe"` (protocol (a): a logistic regression on the frozen
            encoder, see `TextModality.evaluate`) or `"fine_tune"` (protocol (b): copies of the encoder with a fresh
            linear head, every parameter trained by this protocol's SGD schedule).
    """

    num_models: int = 3
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa_strategy: str | None = None
    test_batch_size: int = TEST_BATCH_SIZE
    seed: int = 0
    text_protocol: str = "linear_probe"

    def to_dict(self) -> dict:
        return asdict(self)


def train_with_protocol(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    protocol: EvaluationProtocol,
    generator: torch.Generator,
    show_progress: bool = False,
    desc: str = "train",
    input_name: str = "pixel_values",
    target_type: str = "hard",
    mixed_precision: str = "no",
    callbacks: Sequence[TrainingCallback] = (),
    forward=None,
    max_grad_norm: float | str | None = "auto",
) -> torch.nn.Module:
    """Trains `model` on `inputs` with the protocol's SGD schedule and augmentation (see [`train_classifier`]).

    Args:
        model (`torch.nn.Module`): A classifier whose forward returns an object with `.logits`.
        inputs (`torch.Tensor`): Normalised training examples (on the model's device), e.g. `(N, C, H, W)` images.
        targets (`torch.Tensor`): Hard labels `(N,)` (int64) or soft labels `(N, num_classes)` (probabilities).
        protocol ([`EvaluationProtocol`]): Optimiser settings.
        generator (`torch.Generator`): Source of shuffling and augmentation randomness.
        input_name (`str`, *optional*): The model's input keyword (the modality's).
        target_type (`str`, *optional*): `"hard"`, `"soft"` or `"regression"` (trained with the squared loss).
        mixed_precision (`str`, *optional*), callbacks (*optional*): As [`train_classifier`]'s.
        forward (*optional*): `inputs -> logits` (default: `model(**{input_name: inputs}).logits`; text: the
            modality's, which passes the attention mask).
        max_grad_norm (`float` or `str`, *optional*, defaults to `"auto"`): Clip each step's gradient to this global
            norm; `"auto"`: the protocol's for `target_type` (see [`protocol_max_grad_norm`]).

    Returns:
        `torch.nn.Module`: The trained model (in eval mode).
    """
    if max_grad_norm == "auto":
        max_grad_norm = protocol_max_grad_norm(target_type)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay
    )
    # Dropout (text encoders, ViT) draws from the global generator: fork it, keyed by this model's generator, so a
    # figure does not depend on what ran before it.
    with seeded_rng(generator.initial_seed(), [inputs.device]):
        train_classifier(
            model,
            inputs,
            targets,
            optimizer=optimizer,
            epochs=protocol.epochs,
            batch_size=protocol.batch_size,
            generator=generator,
            augment=SiameseAugment(protocol.dsa_strategy),
            forward=forward or model_forward(model, input_name),
            lr_drop_epoch=protocol.epochs // 2,
            loss_function=loss_for_targets(target_type),
            max_grad_norm=max_grad_norm,
            mixed_precision=mixed_precision,
            callbacks=callbacks,
            show_progress=show_progress,
            desc=desc,
        )
    return model.eval()


def model_accuracy(
    model: torch.nn.Module,
    data: ImageData,
    batch_size: int = TEST_BATCH_SIZE,
    input_name: str = "pixel_values",
    forward=None,
) -> float:
    """Top-1 accuracy (in [0, 1]) of `model` on every example of `data` (see [`accuracy`]); `forward` as
    [`train_with_protocol`]'s."""
    model.eval()
    device = next(model.parameters()).device
    return accuracy(forward or model_forward(model, input_name), data.inputs, data.labels, device, batch_size)


def fresh_classifier(
    model_config: PretrainedConfig, generator: torch.Generator, modality: Modality
) -> torch.nn.Module:
    """A new classifier to train on a set: a freshly drawn network of `model_config`, or, for a modality with a
    default student (text: a copy of its encoder with a linear head on the mean-pooled embedding, protocol (b)), that
    student with its head drawn from `generator`."""
    class_names = [model_config.id2label[index] for index in range(model_config.num_labels)]
    default = modality.default_student(class_names)
    if default is None:
        return fresh_model(model_config, generator)
    classifier, _ = default
    reinitialize_(classifier.classifier, generator)
    return classifier


def evaluate_images(
    images: torch.Tensor,
    targets: torch.Tensor,
    test_data: ImageData,
    model_config: PretrainedConfig,
    protocol: EvaluationProtocol,
    key: str = "distilled",
    accelerator: Accelerator | None = None,
    show_progress: bool = True,
    modality: Modality | None = None,
    target_type: str = "hard",
) -> dict:
    """Trains `protocol.num_models` fresh models on `(images, targets)` and tests them on `test_data`.

    With several processes, models are shared out between them and the accuracies gathered, so every process
    returns the same result. `modality` says how models take the inputs (default: images); `target_type` which loss
    trains them (`"regression"` targets: the squared loss).

    Returns:
        `dict`: `mean` and `std` (percent), `accuracies` (percent, per model), `num_models`, `epochs`,
        `architecture` (the model type) and `num_images`.
    """
    modality = modality or ImageModality()
    own = modality.evaluate(images, targets, test_data, key=key, target_type=target_type, protocol=protocol)
    if own is not None:  # the modality's own protocol (text: a linear probe on its frozen encoder)
        return own
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else images.device
    input_name = modality.input_name
    images, targets = images.to(device), targets.to(device)
    results = []
    for index in range(rank, protocol.num_models, world):
        model = fresh_classifier(model_config, derive_generator(protocol.seed, key, "model", index), modality).to(
            device
        )
        generator = derive_generator(protocol.seed, key, "train", index)

        def forward(inputs: torch.Tensor, model=model) -> torch.Tensor:
            return modality.logits(model, inputs)

        train_with_protocol(
            model,
            images,
            targets,
            protocol,
            generator,
            show_progress=show_progress and rank == 0,
            desc=f"eval {key} {index + 1}/{protocol.num_models}",
            input_name=input_name,
            target_type=target_type,
            forward=forward,
        )
        accuracy_ = model_accuracy(model, test_data, protocol.test_batch_size, input_name, forward)
        results.append((index, 100.0 * accuracy_))
    if world > 1:
        results = gather_object(results)
    accuracies = [accuracy for _, accuracy in sorted(results)]
    return {
        "mean": float(np.mean(accuracies)),
        "std": float(np.std(accuracies)),
        "accuracies": accuracies,
        "num_models": protocol.num_models,
        "epochs": protocol.epochs,
        "architecture": model_config.model_type,
        "num_images": int(images.shape[0]),
        **({"max_grad_norm": clip} if (clip := protocol_max_grad_norm(target_type)) is not None else {}),
    }


def random_real_subset(train_data: ImageData, images_per_class: int, seed: int) -> torch.LongTensor:
    """Rows of a class-balanced random real subset (the baseline of every table), class-major."""
    sampler = ClassBalancedSampler(train_data.labels, train_data.num_classes)
    return sampler.sample_keyed(range(train_data.num_classes), images_per_class, seed, "random-baseline")


def evaluate_random_baseline(
    train_data: ImageData,
    images_per_class: int,
    test_data: ImageData,
    model_config: PretrainedConfig,
    protocol: EvaluationProtocol,
    accelerator: Accelerator | None = None,
    modality: Modality | None = None,
    cache_dir: str | os.PathLike | None = None,
    label_logits: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
) -> dict:
    """The protocol applied to a random real subset with `images_per_class` images per class (kept in `cache_dir`
    when given, see `hf_distill.evaluation_cache`).

    With `label_logits` (e.g. a teacher's logits on the subset's inputs, as a teacher-based set is labelled), the
    subset is trained on those soft labels instead of its hard ones, and the result says so (`"labels": "soft"`): the
    fair baseline of a set with a teacher's soft labels is random real images with the same teacher's labels.
    """
    rows = random_real_subset(train_data, images_per_class, protocol.seed)
    images, labels = train_data.inputs[rows.to(train_data.inputs.device)], train_data.labels[rows]
    logits = label_logits(images) if label_logits is not None else None
    soft = logits is not None
    targets = logits.float().softmax(dim=-1).to(labels.device) if soft else labels
    result = _evaluate_cached(
        images, targets, test_data, model_config, protocol, "random", accelerator, modality, cache_dir,
        target_type="soft" if soft else "hard",
    )  # fmt: skip
    return {**result, "labels": "soft"} if soft else result


def evaluate_full_data(
    train_data: ImageData,
    test_data: ImageData,
    model_config: PretrainedConfig,
    protocol: EvaluationProtocol,
    accelerator: Accelerator | None = None,
    modality: Modality | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """The protocol applied to the whole training split (an upper bound for the distilled set; kept in `cache_dir`
    when given)."""
    images, labels = train_data.inputs, train_data.labels
    return _evaluate_cached(
        images, labels, test_data, model_config, protocol, "full", accelerator, modality, cache_dir=cache_dir
    )


def _evaluate_cached(
    images: torch.Tensor,
    labels: torch.Tensor,
    test_data: ImageData,
    model_config: PretrainedConfig,
    protocol: EvaluationProtocol,
    key: str,
    accelerator: Accelerator | None,
    modality: Modality | None,
    cache_dir: str | os.PathLike | None,
    target_type: str = "hard",
) -> dict:
    """[`evaluate_images`] on real inputs (`labels`: hard, or soft with `target_type="soft"`), read from `cache_dir`
    when the same evaluation was kept there: the digest covers the training data and targets, the test data, the
    network's config, the protocol (seed included), the modality and `key` (the models' generators are derived from
    the seed and `key`, so the same inputs give the same figures)."""
    modality = modality or ImageModality()

    def compute() -> dict:
        return evaluate_images(
            images, labels, test_data, model_config, protocol, key, accelerator, modality=modality,
            target_type=target_type,
        )  # fmt: skip

    data = (images, labels, test_data.inputs, test_data.labels)
    if cache_dir is None or not all(isinstance(tensor, torch.Tensor) for tensor in data):
        return compute()  # a split read from disk row by row (`RowsOnDisk`) is not digested: trained every time
    digest = tensor_digest(
        *data,
        extra=[
            key, model_config.to_dict(), protocol.to_dict(), list(images.shape),
            type(modality).__name__, getattr(modality, "name_or_path", None),  # text: the frozen encoder
        ],
    )  # fmt: skip
    is_main = accelerator is None or accelerator.is_main_process
    return cached_evaluation(cache_dir, key, digest, compute, is_main_process=is_main)


def fair_figures(results: dict, target_type: str = "hard") -> dict:
    """The figures that keep learned labels honest (DD-Ranking, Li et al., 2025), from a results dict.

    - `improvement_over_random`: distilled minus the random real subset of the same size, same evaluation;
    - `hard_label_recovery`: the whole real training split minus distilled (when `full_data` was evaluated);
    - `distilled_labels` (`"hard"`, `"soft"` or `"regression"`) and `baseline_labels` (the random subset's:
      `"soft"` when it was given the labeller of the set, a teacher's, else `"hard"`). A set labelled by a teacher
      is compared with random real images labelled by the same teacher (the paper's point: those match several
      methods); a set whose labels were learned with it has no such labeller, and its comparison with hard labels
      flatters it: the fields say which applies.

    Differences are in accuracy points, rounded to 0.01; a figure whose inputs are missing is left out.
    """
    distilled = (results.get("distilled") or {}).get("mean")
    fair = {"distilled_labels": target_type}
    if distilled is None:
        return fair
    if (results.get("random_real") or {}).get("mean") is not None:
        fair["improvement_over_random"] = round(distilled - results["random_real"]["mean"], 2)
        fair["baseline_labels"] = results["random_real"].get("labels", "hard")
    if (results.get("full_data") or {}).get("mean") is not None:
        fair["hard_label_recovery"] = round(results["full_data"]["mean"] - distilled, 2)
    return fair


def format_result(result: dict) -> str:
    """`'97.12 ± 0.10 (n=3, 300 epochs)'`."""
    if not result or math.isnan(result.get("mean", math.nan)):
        return "n/a"
    if result.get("protocol") == "linear_probe":
        return f"{result['mean']:.2f} (linear probe on the frozen encoder)"
    return f"{result['mean']:.2f} ± {result['std']:.2f} (n={result['num_models']}, {result['epochs']} epochs)"
