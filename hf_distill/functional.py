"""Unrolled SGD through any `transformers` model, differentiable w.r.t. the data that drives it.

Trajectory matching (MTT, TESLA) and meta-learning (DD) train a network for a few plain-SGD steps on the synthetic
set and back-propagate through the whole unroll into the pixels, the (soft) labels and the step size. Here the
network is run with `torch.func.functional_call` on explicit parameter tensors, so no layer is re-implemented and
every architecture `build_model` makes works.

- [`ParameterSpec`]: names and shapes of a model's parameters, to flatten a parameter dict into one vector (the
  layout of MTT expert trajectories) and back into views.
- [`plan_unroll`]: the minibatch indices and augmentation parameters of every step, drawn once from an explicit
  generator, so that recomputing a step (the memory-saving modes) applies exactly the same transform.
- [`unrolled_sgd`] / [`unrolled_sgd_flat`]: the unroll itself, with three memory modes:

  - `"full"`: plain autograd through every step (create_graph). Exact; activation memory grows with the steps.
  - `"checkpoint"`: the same gradient to float rounding with constant activation memory. The forward keeps no graph,
    only the parameter vector of every step (`num_steps x num_parameters` floats); the backward walks the steps in
    reverse, recomputes each step's gradient with a graph and propagates the adjoint with a vector-Jacobian product:
    `a_i = a_{i+1} - lr * H_i a_{i+1}`, `dX += -lr * (dg_i/dX)^T a_{i+1}`, `dlr += -<g_i, a_{i+1}>`.
    The step size is one scalar or one per step (DD's learned schedule), with the same formulas step by step.
  - `"tesla"`: TESLA's first-order approximation (Cui et al., "Scaling Up Dataset Distillation to ImageNet-1K with
    Constant Memory", ICML 2023): the adjoint is *not* propagated through the Hessians, every step uses `a_N`. No
    per-step vectors are stored (the backward replays the steps forward), so memory does not grow with the steps
    at all, and no Hessian-vector product is computed. For the images, labels and step size it equals `"full"`
    when `num_steps == 1`; the gradient w.r.t. the start parameters is `a_N` (`d theta_N / d theta_0 ~ I`).

- [`AdamState`]: the student can step by Adam instead of SGD (RaT-BPTT's inner optimiser), differentiated by plain
  autograd (`"full"`); the moments live in the state, so an unroll continued in a second call resumes them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .augment import AugmentParams, SiameseAugment
from .config import SyntheticOptimizationConfig

__all__ = [
    "MEMORY_MODES",
    "AdamState",
    "ParameterSpec",
    "UnrolledSGDConfig",
    "UnrollPlan",
    "functional_logits",
    "plan_unroll",
    "unrolled_sgd",
    "unrolled_sgd_flat",
]

MEMORY_MODES = ("full", "checkpoint", "tesla")


@dataclass
class UnrolledSGDConfig(SyntheticOptimizationConfig):
    """Settings of the methods that train a student by unrolled SGD on the synthetic set (MTT, DD).

    The student's step size is learned beside the pixels (optimiser group at `lr_lr`) and, with
    `eval_use_learned_lr`, used by the evaluation protocol.
    """

    syn_lr_init: float = field(
        default=0.01,
        metadata={
            "help": "Initial student step size, learned during distillation (MTT: lr_teacher = 0.01; DD: 0.02)."
        },
    )
    batch_syn: int | None = field(
        default=None,
        metadata={"help": "Synthetic images per student step (None: all of them, MTT's and RaT-BPTT's default)."},
    )
    unroll_memory: str = field(
        default="full",
        metadata={
            "help": "How the unroll is differentiated: 'full' (autograd through every step; memory grows with the "
            "steps), 'checkpoint' (the same gradient with constant activation memory; about 1.5x the compute), "
            "or 'tesla' (TESLA's first-order approximation, ICML 2023: constant memory, no Hessian-vector products)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.syn_lr_init <= 0 or not math.isfinite(self.syn_lr_init):
            raise ValueError(f"syn_lr_init must be a positive number, got {self.syn_lr_init}.")
        if self.batch_syn is not None and self.batch_syn < 1:
            raise ValueError(f"batch_syn must be >= 1 or None (all synthetic images), got {self.batch_syn}.")
        if self.unroll_memory not in MEMORY_MODES:
            raise ValueError(f"unroll_memory must be one of {', '.join(MEMORY_MODES)}; got {self.unroll_memory!r}.")


@dataclass(frozen=True)
class ParameterSpec:
    """Names and shapes of a set of parameters, in flattening order.

    Args:
        names (`tuple[str, ...]`): Parameter names (as in `model.named_parameters()`).
        shapes (`tuple[tuple[int, ...], ...]`): Their shapes.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "shapes", tuple(tuple(int(s) for s in shape) for shape in self.shapes))
        if len(self.names) != len(self.shapes):
            raise ValueError(f"{len(self.names)} names but {len(self.shapes)} shapes.")

    @classmethod
    def from_module(cls, module: nn.Module) -> ParameterSpec:
        """The parameters of `module`, in `named_parameters()` order (the order MTT's buffers use)."""
        named = list(module.named_parameters())
        return cls(tuple(name for name, _ in named), tuple(tuple(p.shape) for _, p in named))

    @classmethod
    def from_dict(cls, params: dict[str, torch.Tensor]) -> ParameterSpec:
        """The tensors of `params`, in the dict's order."""
        return cls(tuple(params), tuple(tuple(t.shape) for t in params.values()))

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(int(torch.Size(shape).numel()) for shape in self.shapes)

    @property
    def num_parameters(self) -> int:
        """Length of the flat vector."""
        return sum(self.numels)

    def flatten(self, params: dict[str, torch.Tensor] | Iterable[torch.Tensor]) -> torch.Tensor:
        """One vector holding `params` (a dict keyed by `names`, or tensors in order); differentiable."""
        tensors = [params[name] for name in self.names] if isinstance(params, dict) else list(params)
        if len(tensors) != len(self.names):
            raise ValueError(f"Expected {len(self.names)} tensors, got {len(tensors)}.")
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of `vector` shaped like the parameters (no copy; differentiable)."""
        if vector.dim() != 1 or vector.numel() != self.num_parameters:
            raise ValueError(
                f"Expected a flat vector of {self.num_parameters} parameters, got shape {tuple(vector.shape)}."
            )
        chunks = torch.split(vector, self.numels)
        return {name: chunk.view(shape) for name, chunk, shape in zip(self.names, chunks, self.shapes)}

    def copy_into(self, network: nn.Module, vector: torch.Tensor) -> nn.Module:
        """Copies the flat `vector` into `network`'s parameters in place, by name (buffers are left as they are).

        In place, so a `torch.compile`d function of `network` sees the new values without recompiling.
        """
        parameters = self.unflatten(vector)
        with torch.no_grad():
            for name, parameter in network.named_parameters():
                parameter.copy_(parameters[name])
        return network

    def to_dict(self) -> dict:
        return {"names": list(self.names), "shapes": [list(shape) for shape in self.shapes]}


@dataclass
class UnrollPlan:
    """The minibatch rows and augmentation parameters of every step of an unroll.

    Args:
        indices (`list[torch.LongTensor]`): Rows of the synthetic set used at each step.
        augment_params (`list[AugmentParams | None]`): Augmentation of each step's batch (`None`: none).
    """

    indices: list[torch.LongTensor]
    augment_params: list[AugmentParams | None]

    def __len__(self) -> int:
        return len(self.indices)


def plan_unroll(
    num_images: int,
    num_steps: int,
    batch_size: int | None,
    generator: torch.Generator,
    augment: SiameseAugment | None = None,
    image_size: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
) -> UnrollPlan:
    """Draws the minibatches and augmentations of `num_steps` SGD steps, once, from `generator`.

    As in MTT's `distill.py`, the steps cycle through random permutations of the synthetic set cut into batches of
    `batch_size` (a new permutation when one is used up; the last batch of a permutation may be smaller). With
    augmentation, each step's parameters are drawn right after its batch.

    Args:
        num_images (`int`): Size of the synthetic set.
        num_steps (`int`): Number of SGD steps.
        batch_size (`int`, *optional*): Images per step (`None`: all of them, in a fresh random order each step).
        generator (`torch.Generator`): The only source of randomness.
        augment ([`SiameseAugment`], *optional*): Augmentation applied to every step's batch.
        image_size (`tuple[int, int]`, *optional*): `(H, W)`; required with an enabled `augment`.
        device (`torch.device` or `str`, *optional*): Where to put indices and parameters (the images' device).
    """
    if num_images < 1 or num_steps < 0:
        raise ValueError(f"Need num_images >= 1 and num_steps >= 0, got {num_images} and {num_steps}.")
    batch_size = num_images if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (or None for all images), got {batch_size}.")
    augmenting = augment is not None and augment.enabled
    if augmenting and image_size is None:
        raise ValueError("image_size is required to draw augmentation parameters.")
    indices, params = [], []
    queue: list[torch.Tensor] = []
    for _ in range(num_steps):
        if not queue:
            queue = list(torch.randperm(num_images, generator=generator).split(batch_size))
        batch = queue.pop(0)
        step_params = augment.sample(len(batch), image_size, generator) if augmenting else None
        if device is not None:
            batch = batch.to(device)
            step_params = step_params.to(device) if step_params is not None else None
        indices.append(batch)
        params.append(step_params)
    return UnrollPlan(indices, params)


@dataclass
class AdamState:
    """The moments of a student trained by Adam in the unroll (RaT-BPTT's `--inner_optim Adam`).

    The update is `torch.optim.Adam`'s (no weight decay), written with out-of-place ops so that autograd
    differentiates through it: `theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)`. [`unrolled_sgd_flat`] advances
    the state in place, so a burn-in without a graph and the window after it share one Adam.

    Args:
        exp_avg (`torch.Tensor`): The first moment `m`, shaped like the flat parameter vector.
        exp_avg_sq (`torch.Tensor`): The second moment `v`.
        count (`int`): Steps taken (for the bias corrections).
        betas (`tuple[float, float]`, defaults to `(0.9, 0.999)`): As `torch.optim.Adam`'s.
        eps (`float`, defaults to 1e-8): As `torch.optim.Adam`'s.
    """

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    count: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    @classmethod
    def zeros_like(cls, theta: torch.Tensor, **kwargs) -> AdamState:
        """A fresh state (no step taken) for the flat parameter vector `theta`."""
        zeros = torch.zeros_like(theta, dtype=torch.promote_types(theta.dtype, torch.float32))
        return cls(zeros, zeros.clone(), **kwargs)

    def direction(self, gradient: torch.Tensor) -> torch.Tensor:
        """Takes one step's moments from `gradient` and returns the step's direction `m_hat / (sqrt(v_hat) + eps)`."""
        beta1, beta2 = self.betas
        self.count += 1
        self.exp_avg = beta1 * self.exp_avg + (1 - beta1) * gradient
        self.exp_avg_sq = beta2 * self.exp_avg_sq + (1 - beta2) * gradient * gradient
        m_hat = self.exp_avg / (1 - beta1**self.count)
        v_hat = self.exp_avg_sq / (1 - beta2**self.count)
        # sqrt's derivative is infinite at 0: an entry whose gradient has always been exactly 0 (m = v = 0) would
        # turn the backward into NaN. Clamped, its direction is still 0 and its derivative 0.
        return m_hat / (v_hat.clamp_min(torch.finfo(v_hat.dtype).tiny).sqrt() + self.eps)

    def detach_(self) -> AdamState:
        """Drops the moments' graph (after steps that are not differentiated)."""
        self.exp_avg, self.exp_avg_sq = self.exp_avg.detach(), self.exp_avg_sq.detach()
        return self


def _logits(output) -> torch.Tensor:
    if hasattr(output, "logits"):
        return output.logits
    return output[0] if isinstance(output, tuple | list) else output


def functional_logits(
    model: nn.Module,
    spec: ParameterSpec,
    theta: torch.Tensor,
    inputs: torch.Tensor,
    buffers: dict[str, torch.Tensor] | None = None,
    input_name: str = "pixel_values",
) -> torch.Tensor:
    """The logits of `model` run with the flat parameter vector `theta` (laid out by `spec`) on `inputs`.

    Differentiable w.r.t. `theta` and `inputs`; `buffers` default to the model's own (not modified).
    """
    buffers = dict(model.named_buffers()) if buffers is None else buffers
    output = functional_call(model, (spec.unflatten(theta), buffers), (), {input_name: inputs})
    return _logits(output)


class _Unroll:
    """What every step of one unroll shares: the network, the buffers, the plan and the precision."""

    def __init__(
        self,
        model: nn.Module,
        spec: ParameterSpec,
        plan: UnrollPlan,
        augment: SiameseAugment | None,
        autocast_dtype: torch.dtype | None,
        input_name: str = "pixel_values",
    ):
        self.model = model
        self.input_name = input_name
        self.spec = spec
        self.plan = plan
        self.augment = augment
        self.autocast_dtype = autocast_dtype
        # Copies: a batch-norm network in train mode updates its running statistics in place; the caller's model
        # stays untouched, and recomputed steps see the same inputs.
        self.buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def step_gradient(
        self, theta: torch.Tensor, images: torch.Tensor, targets: torch.Tensor, step: int, create_graph: bool
    ) -> torch.Tensor:
        """The gradient of the step's cross-entropy w.r.t. `theta` (a flat vector that requires grad)."""
        rows = self.plan.indices[step]
        inputs = images[rows]
        params = self.plan.augment_params[step]
        if params is not None:
            inputs = self.augment.apply(inputs, params)
        with self._autocast(inputs.device):
            logits = functional_logits(self.model, self.spec, theta, inputs, self.buffers, self.input_name)
        # The loss in (at least) float32 whatever the forward's precision; cross_entropy takes class indices or
        # probabilities.
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        loss = F.cross_entropy(logits, targets[rows])
        (gradient,) = torch.autograd.grad(loss, theta, create_graph=create_graph)
        return gradient


def _step_lr(step_size: torch.Tensor, step: int) -> torch.Tensor:
    """The step size of `step`: the scalar itself, or its entry in a per-step schedule."""
    return step_size[step] if step_size.dim() else step_size


class _ReverseUnroll(torch.autograd.Function):
    """`theta_N` of the unroll, with a hand-written backward (modes `"checkpoint"` and `"tesla"`)."""

    @staticmethod
    def forward(ctx, unroll: _Unroll, mode: str, start, images, targets, step_size):
        lr = step_size.detach()
        images_, targets_ = images.detach(), targets.detach()
        thetas = []
        theta = start.detach()
        for step in range(len(unroll.plan)):
            if mode == "checkpoint":
                thetas.append(theta)
            with torch.enable_grad():
                gradient = unroll.step_gradient(theta.requires_grad_(True), images_, targets_, step, False)
            theta = (theta - _step_lr(lr, step) * gradient).detach()
        ctx.unroll, ctx.mode, ctx.thetas = unroll, mode, thetas
        ctx.save_for_backward(start, images, targets, step_size)
        return theta

    @staticmethod
    def backward(ctx, grad_output):
        unroll, mode = ctx.unroll, ctx.mode
        start, images, targets, step_size = ctx.saved_tensors
        need_start, need_images, need_targets, need_lr = ctx.needs_input_grad[2:6]
        lr = step_size.detach()
        adjoint = grad_output.detach()
        grad_images = torch.zeros_like(images) if need_images else None
        grad_targets = torch.zeros_like(targets) if need_targets else None
        lr_dtype = torch.promote_types(lr.dtype, torch.float32)
        grad_lr = torch.zeros(lr.shape, dtype=lr_dtype, device=lr.device) if need_lr else None
        num_steps = len(unroll.plan)
        # Checkpoint walks back from the last step (the adjoint of step i needs steps > i); TESLA's adjoint is
        # constant, so it replays the steps forward from theta_0 and needs no stored parameter vectors.
        steps = reversed(range(num_steps)) if mode == "checkpoint" else range(num_steps)
        theta = start.detach()
        for step in steps:
            if mode == "checkpoint":
                theta = ctx.thetas[step]
                # a_i = a_{i+1} - lr H_i a_{i+1} is needed for earlier steps, and at step 0 only for theta_0.
                propagate = step > 0 or need_start
            else:
                propagate = False
            with torch.enable_grad():
                theta_leaf = theta.detach().requires_grad_(True)
                images_leaf = images.detach().requires_grad_(need_images)
                targets_leaf = targets.detach().requires_grad_(need_targets)
                gradient = unroll.step_gradient(theta_leaf, images_leaf, targets_leaf, step, True)
                wrt = [
                    t
                    for t, wanted in (
                        (theta_leaf, propagate),
                        (images_leaf, need_images),
                        (targets_leaf, need_targets),
                    )
                    if wanted
                ]
                vjps = list(torch.autograd.grad(gradient, wrt, grad_outputs=adjoint, allow_unused=True)) if wrt else []
            vjps = [None if v is None else v.detach() for v in vjps]
            gradient = gradient.detach()
            if need_lr:
                # d theta_{i+1} / d lr_i = -g_i (a scalar step size collects every step's term).
                step_term = -(gradient * adjoint).sum()
                if grad_lr.dim():
                    grad_lr[step] += step_term
                else:
                    grad_lr = grad_lr + step_term
            lr_step = _step_lr(lr, step)
            hessian_vector = vjps.pop(0) if propagate else None
            if need_images and (v := vjps.pop(0)) is not None:
                grad_images = grad_images - lr_step * v
            if need_targets and (v := vjps.pop(0)) is not None:
                grad_targets = grad_targets - lr_step * v
            if hessian_vector is not None:
                adjoint = adjoint - lr_step * hessian_vector
            if mode == "tesla":
                theta = theta - lr_step * gradient
        # TESLA: d theta_N / d theta_0 ~ identity (the first-order approximation), so a_0 = a_N.
        grad_start = adjoint if need_start else None
        if grad_lr is not None:
            grad_lr = grad_lr.to(step_size.dtype).reshape(step_size.shape)
        return None, None, grad_start, grad_images, grad_targets, grad_lr


def unrolled_sgd_flat(
    model: nn.Module,
    spec: ParameterSpec,
    start: torch.Tensor,
    images: torch.Tensor,
    targets: torch.Tensor,
    step_size: torch.Tensor | float,
    num_steps: int,
    batch_size: int | None,
    generator: torch.Generator,
    augment: SiameseAugment | None = None,
    memory: str = "full",
    autocast_dtype: torch.dtype | None = None,
    input_name: str = "pixel_values",
    adam: AdamState | None = None,
) -> torch.Tensor:
    """[`unrolled_sgd`] on a flat parameter vector laid out by `spec` (MTT's expert format).

    With `adam` (an [`AdamState`] for `start`, advanced in place), the student steps by Adam with learning rate
    `step_size` instead of SGD; only `memory="full"` differentiates it.

    Returns:
        `torch.Tensor`: `theta_N`, a flat vector like `start`.
    """
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}.")
    if start.dim() != 1 or start.numel() != spec.num_parameters:
        raise ValueError(f"start must be a flat vector of {spec.num_parameters} parameters, got {tuple(start.shape)}.")
    if images.shape[0] != targets.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} targets.")
    if not isinstance(step_size, torch.Tensor):
        step_size = torch.tensor(float(step_size), dtype=start.dtype, device=start.device)
    if step_size.dim() and tuple(step_size.shape) != (num_steps,):
        raise ValueError(
            f"step_size must be a scalar or one value per step ({num_steps}), got shape {tuple(step_size.shape)}."
        )
    plan = plan_unroll(
        images.shape[0],
        num_steps,
        batch_size,
        generator,
        augment,
        tuple(images.shape[-2:]),
        device=images.device,
    )
    unroll = _Unroll(model, spec, plan, augment, autocast_dtype, input_name)
    differentiable = torch.is_grad_enabled() and any(t.requires_grad for t in (start, images, targets, step_size))
    if adam is not None and differentiable and memory != "full":
        raise ValueError(
            f"An Adam student is differentiated by plain autograd only: use memory='full', not {memory!r}."
        )
    if num_steps == 0:
        return start
    if memory == "full" or not differentiable:
        # Plain autograd: the graph of every step (with create_graph) is kept until backward.
        theta = start if start.requires_grad else start.detach().requires_grad_(True)
        for step in range(num_steps):
            with torch.enable_grad():
                gradient = unroll.step_gradient(theta, images, targets, step, create_graph=differentiable)
            direction = gradient if adam is None else adam.direction(gradient)
            theta = theta - _step_lr(step_size, step) * direction
            if not differentiable:
                theta = theta.detach().requires_grad_(True)
                if adam is not None:
                    adam.detach_()
        return theta if differentiable else theta.detach()
    return _ReverseUnroll.apply(unroll, memory, start, images, targets, step_size)


def unrolled_sgd(
    model: nn.Module,
    start_params: dict[str, torch.Tensor],
    images: torch.Tensor,
    targets: torch.Tensor,
    step_size: torch.Tensor | float,
    num_steps: int,
    batch_size: int | None,
    generator: torch.Generator,
    augment: SiameseAugment | None = None,
    memory: str = "full",
    autocast_dtype: torch.dtype | None = None,
    input_name: str = "pixel_values",
) -> dict[str, torch.Tensor]:
    """Runs `num_steps` plain-SGD steps of `model` on `(images, targets)`, differentiably.

    `theta_{i+1} = theta_i - step_size * grad_theta CE(f(theta_i, aug_i(X[b_i])), Y[b_i])`, with the batches `b_i`
    and augmentations `aug_i` drawn once by [`plan_unroll`] from `generator`. The network runs through
    `torch.func.functional_call` with the given parameters; its buffers are copied and used as they are (the model
    itself is not modified). The model's train/eval mode is the caller's choice (MTT trains in train mode).

    Args:
        model (`nn.Module`): The network (any `transformers` classifier; its own parameter values are ignored).
        start_params (`dict[str, torch.Tensor]`): `theta_0`, keyed by parameter name (every parameter of `model`).
        images (`torch.Tensor` of shape `(N, C, H, W)`): The training images (e.g. learnable synthetic pixels).
        targets (`torch.Tensor`): Class indices `(N,)` or probabilities `(N, num_classes)` (soft labels).
        step_size (`torch.Tensor` or `float`): The SGD learning rate: a 0-dim tensor to learn it, or a tensor of
            shape `(num_steps,)` for one per step.
        num_steps (`int`): Number of SGD steps.
        batch_size (`int`, *optional*): Images per step (`None`: all).
        generator (`torch.Generator`): Source of the batch order and augmentation parameters.
        augment ([`SiameseAugment`], *optional*): Differentiable augmentation of every batch.
        memory (`str`, *optional*, defaults to `"full"`): `"full"`, `"checkpoint"` or `"tesla"` (see the module
            docstring: exact with growing memory, exact with constant activation memory, first-order).
        autocast_dtype (`torch.dtype`, *optional*): Run the forward passes in this autocast precision (bfloat16).

    Returns:
        `dict[str, torch.Tensor]`: `theta_N`, differentiable w.r.t. `images`, `targets` (when floating),
        `step_size` and `start_params` (whichever require grad).
    """
    spec = ParameterSpec.from_dict(start_params)
    start = spec.flatten(start_params)
    final = unrolled_sgd_flat(
        model,
        spec,
        start,
        images,
        targets,
        step_size,
        num_steps,
        batch_size,
        generator,
        augment=augment,
        memory=memory,
        autocast_dtype=autocast_dtype,
        input_name=input_name,
    )
    return spec.unflatten(final)
