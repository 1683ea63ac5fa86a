"""The one training loop of the package (a classifier on given examples) and the one accuracy function.

Evaluation models, expert trajectories, the KD teacher and the inner loop of gradient matching all train through
[`train_classifier`]; what differs between them (optimiser, learning-rate drop, augmentation, precision, what to
record) is an argument or a [`TrainingCallback`]. Every random draw comes from the generators passed in.
"""

import contextlib
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .augment import SiameseAugment
from .constants import MIXED_PRECISIONS

logger = logging.getLogger(__name__)

#: Examples per forward pass when testing. 256, not more: a width-128 ConvNet's activations on 1,024 CIFAR images
#: held ~0.8 GB, the peak of a whole run on data kept on disk; accuracy does not depend on it (eval mode).
TEST_BATCH_SIZE = 256

Forward = Callable[[torch.Tensor], torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def regression_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The squared loss towards real-valued targets (mean over examples and outputs), as KIP/RFAD train with."""
    return F.mse_loss(outputs, targets)


def loss_for_targets(target_type: str) -> Loss:
    """The training loss of a set's targets: cross-entropy for `"hard"` labels and `"soft"` probabilities, the squared
    loss for `"regression"` targets."""
    if target_type not in ("hard", "soft", "regression"):
        raise ValueError(f"Unknown target type {target_type!r}: expected 'hard', 'soft' or 'regression'.")
    return regression_loss if target_type == "regression" else F.cross_entropy


class TrainingCallback:
    """Hooks into [`train_classifier`]: per-example statistics after each batch, snapshots after each epoch.

    Subclass it and override what you need; both hooks do nothing by default.
    """

    def on_batch_end(self, epoch: int, rows: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> None:
        """After the optimiser step of a batch.

        Args:
            epoch (`int`): The epoch (from 0).
            rows (`torch.LongTensor`): The batch's row indices into the training examples.
            logits (`torch.Tensor`): The batch's logits (detached; computed before the step).
            loss (`torch.Tensor`): The batch's mean loss (detached).
        """

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict | None:
        """After the last batch of an epoch; a returned dict is shown beside the progress bar."""
        return None


def has_native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX.

    Elsewhere (e.g. an AVX2-only CPU) oneDNN emulates bfloat16 and a bf16 forward is several times slower than
    float32 (DM on MNIST IPC 10, 2 cores: 7.8 s per iteration against 1.5 s).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_mixed_precision(mixed_precision: str, device: torch.device) -> str:
    """`"auto"` -> `"bf16"` where `device` has native bfloat16, else `"no"`; an explicit `"bf16"` on a device that
    would emulate it is kept, with a warning that says how much slower it is likely to be."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {list(MIXED_PRECISIONS)}, got {mixed_precision!r}.")
    native = has_native_bf16(device)
    if mixed_precision == "auto":
        return "bf16" if native else "no"
    if mixed_precision == "bf16" and not native:
        logger.warning(
            "mixed_precision='bf16' on %s without native bfloat16 (no AVX512-BF16/AMX): it is emulated and usually "
            "several times slower than float32. Use mixed_precision='auto' (bf16 only where it is fast) or 'no'.",
            device.type.upper(),
        )
    return mixed_precision


def autocast_context(mixed_precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device` when `mixed_precision == "bf16"`, else a context that does nothing."""
    if mixed_precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_forward(model: nn.Module, input_name: str = "pixel_values") -> Forward:
    """`inputs -> logits` for a transformers classifier whose main input is called `input_name`."""

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return model(**{input_name: inputs}).logits

    return forward


def train_classifier(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    augment: SiameseAugment | None = None,
    augment_generator: torch.Generator | None = None,
    forward: Forward | None = None,
    mixed_precision: str = "no",
    lr_drop_epoch: int | None = None,
    lr_drop_factor: float = 0.1,
    loss_function: Loss = F.cross_entropy,
    max_grad_norm: float | None = None,
    callbacks: Sequence[TrainingCallback] = (),
    show_progress: bool = False,
    desc: str = "train",
) -> nn.Module:
    """Trains `model` on `(inputs, targets)` with mini-batch steps of `optimizer`; returns it (still in train mode).

    Each epoch visits every example once in an order drawn from `generator`; each batch is augmented (when
    `augment` is on, with draws from `augment_generator`, default `generator`), passed through `forward`, and
    scored against `targets` with `loss_function`.

    Args:
        model (`torch.nn.Module`): The classifier (put in train mode here).
        inputs (`torch.Tensor`): Training examples, first dimension `N`, on the model's device.
        targets (`torch.Tensor`): Hard labels `(N,)` (int64) or soft labels `(N, num_classes)` (probabilities).
        optimizer (`torch.optim.Optimizer`): Over `model`'s parameters.
        epochs (`int`), batch_size (`int`): The schedule.
        generator (`torch.Generator`): The example order (and augmentation, unless `augment_generator` is given).
        augment ([`SiameseAugment`], *optional*): Augmentation of each batch.
        augment_generator (`torch.Generator`, *optional*): Source of the augmentation draws.
        forward (*optional*): `inputs -> logits` (default: `model(pixel_values=inputs).logits`); e.g. a compiled
            function, or one that changes the memory layout.
        mixed_precision (`str`, *optional*, defaults to `"no"`): `"bf16"` runs each forward in bfloat16 autocast.
        lr_drop_epoch (`int`, *optional*): At the start of this epoch every learning rate is multiplied by
            `lr_drop_factor` (the evaluation protocol drops it x0.1 at half the epochs).
        loss_function (*optional*): `(logits, targets) -> loss` (default: cross-entropy; see [`loss_for_targets`]).
        max_grad_norm (`float`, *optional*): Clip the gradient of the optimiser's parameters to this global norm
            before each step (default: no clipping).
        callbacks (`Sequence[TrainingCallback]`, *optional*): Per-batch statistics and per-epoch snapshots.
        show_progress (`bool`, *optional*), desc (`str`, *optional*): A progress bar over the epochs.
    """
    forward = forward or model_forward(model)
    augment_generator = augment_generator or generator
    augmenting = augment is not None and augment.enabled
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    model.train()
    progress = tqdm(range(epochs), desc=desc, leave=False, disable=not show_progress)
    for epoch in progress:
        if epoch == lr_drop_epoch:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * lr_drop_factor
        order = torch.randperm(inputs.shape[0], generator=generator).to(inputs.device)
        for rows in order.split(batch_size):
            batch = inputs[rows]
            if augmenting:
                batch = augment(batch, augment_generator)
            with autocast_context(mixed_precision, inputs.device):
                logits = forward(batch)
            loss = loss_function(logits.float(), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
            optimizer.step()
            for callback in callbacks:
                callback.on_batch_end(epoch, rows, logits.detach(), loss.detach())
        postfix = {}
        for callback in callbacks:
            postfix.update(callback.on_epoch_end(epoch, model) or {})
        if postfix:
            progress.set_postfix(postfix)
    progress.close()
    return model


def predictions_accuracy(predictions, references) -> float:
    """The fraction (in [0, 1]) of `predictions` equal to `references` (class indices; arrays or tensors)."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(f"{predictions.shape[0]} predictions for {references.shape[0]} references.")
    return float((predictions == references).mean()) if references.size else 0.0


@torch.no_grad()
def accuracy(
    forward: Forward,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    batch_size: int = TEST_BATCH_SIZE,
) -> float:
    """Top-1 accuracy (in [0, 1]) of `forward` (`inputs -> logits`) on every example, in batches of `batch_size`.

    Put the model in eval mode first.
    """
    predictions = [forward(batch.to(device)).argmax(dim=-1).cpu() for batch in inputs.split(batch_size)]
    predicted = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
    return predictions_accuracy(predicted.numpy(), labels.cpu().numpy())
