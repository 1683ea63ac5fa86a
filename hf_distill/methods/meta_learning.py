"""Meta-learning by back-propagation through time (DD): Wang, Zhu, Torralba & Efros, "Dataset Distillation", 2018,
with the random truncation of RaT-BPTT (Feng, Vedantam & Kempe, "Embarrassingly Simple Dataset Distillation", ICLR
2024).

Each iteration draws a fresh network, trains it by plain SGD (or Adam, RaT-BPTT's inner optimiser) on the
(augmented) synthetic set with the set's learned step size, and measures the cross-entropy of the trained network on
a batch of real images; the gradient flows back through the training steps into the pixels, the step size and
(optionally) soft labels:

    loss = CE(f(theta_N, X_real), y_real),    theta_{i+1} = theta_i - lr * grad CE(f(theta_i, aug_i(X_syn)), Y_syn)

Back-propagating through all `N` steps is DD; RaT-BPTT unrolls a random number of steps `N` in
`[window, unroll_steps]` and back-propagates through the last `window` only (the first `N - window` run without a
graph), which keeps the meta-gradient's variance and memory bounded while every stage of training is seen. The unroll
is `hf_distill.functional`'s (shared with MTT), with its memory modes.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..functional import AdamState, UnrolledSGDConfig, functional_logits, unrolled_sgd_flat
from ..modeling import batch_norm_layers, convnet_variant, reinitialize_
from ..registry import register_method
from ..seeding import derive_generator
from ..synthetic import SyntheticSet
from .base import UnrolledSGDMethod

INNER_OPTIMIZERS = ("sgd", "adam")


@dataclass
class MetaLearningConfig(UnrolledSGDConfig):
    """Meta-learning with (randomly truncated) back-propagation through time.

    Defaults follow RaT-BPTT's CIFAR-10 command (the authors' README): an unroll of up to 200 steps, a window of 60,
    Adam lr 1e-3 on the pixels, 5,000 real images per outer step. The student trains by SGD with a learned step size
    (DD's inner optimiser) unless `inner_optimizer="adam"` (RaT-BPTT's, with `syn_lr_init=1e-3`), and the step size
    is one scalar shared by every step unless `per_step_lr` (DD learns one per step).
    """

    method: str = field(default="dd", init=False, metadata={"help": "Meta-learning (DD, RaT-BPTT)."})
    num_iterations: int = field(
        default=2000, metadata={"help": "Outer iterations (RaT-BPTT CIFAR-10: up to 60,000 on a GPU)."}
    )
    unroll_steps: int = field(
        default=200,
        metadata={"help": "Most student SGD steps per iteration (RaT-BPTT: 200, its `totwindow`)."},
    )
    window: int | None = field(
        default=60,
        metadata={
            "help": "Steps back-propagated through: the last `window` of the unroll (RaT-BPTT: 60). None: all of "
            "them (DD's full BPTT; memory and time grow with unroll_steps)."
        },
    )
    random_truncation: bool = field(
        default=True,
        metadata={
            "help": "Draw the unroll's length uniformly in [window, unroll_steps] each iteration (RaT-BPTT). False: "
            "always unroll_steps steps, back-propagating through the last window (truncated BPTT)."
        },
    )
    optimizer: str = field(default="adam", metadata={"help": "Pixel optimiser (RaT-BPTT: Adam)."})
    lr_images: float = field(default=1e-3, metadata={"help": "Learning rate on the pixels (RaT-BPTT: 1e-3)."})
    lr_lr: float = field(
        default=1e-4,
        metadata={"help": "Learning rate of the student's learned step size (with Adam: about its change per step)."},
    )
    batch_real: int = field(
        default=500,
        metadata={"help": "Real images per class in the outer loss (RaT-BPTT CIFAR-10: 5,000 in all)."},
    )
    per_step_lr: bool = field(
        default=False,
        metadata={
            "help": "Learn one step size per student step (DD's schedule: `unroll_steps` values, step i of every "
            "unroll uses the i-th) instead of one shared by all (RaT-BPTT's fixed inner lr is one value)."
        },
    )
    eval_use_learned_lr: bool = field(
        default=False,
        metadata={
            "help": "Train the evaluation models with the learned step size. Off by default: it is learned for the "
            "unroll's few steps, while the protocol trains for hundreds of epochs with its own lr."
        },
    )
    inner_optimizer: str = field(
        default="sgd",
        metadata={
            "help": "The student's optimiser in the unroll: 'sgd' (DD's) or 'adam' (RaT-BPTT's `--inner_optim Adam`, "
            "whose lr is 1e-3: set syn_lr_init to it). Either way its learning rate is learned from syn_lr_init. "
            "'adam' needs unroll_memory='full'."
        },
    )
    inner_net_width: int | None = field(
        default=None,
        metadata={
            "help": "Width of the ConvNet trained in the unroll (None: net_width, the network the set is evaluated "
            "with, as the papers). A narrower one makes every step cheaper (the CPU recipes use it)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.inner_net_width is not None and self.inner_net_width < 1:
            raise ValueError(f"inner_net_width must be >= 1 or None (net_width), got {self.inner_net_width}.")
        if self.unroll_steps < 1:
            raise ValueError(f"unroll_steps must be >= 1, got {self.unroll_steps}.")
        if self.window is not None and not 1 <= self.window <= self.unroll_steps:
            raise ValueError(
                f"window={self.window}: it must be between 1 and unroll_steps ({self.unroll_steps}), or None to "
                "back-propagate through every step."
            )
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(
                f"inner_optimizer must be one of {', '.join(INNER_OPTIMIZERS)}; got {self.inner_optimizer!r}."
            )
        if self.inner_optimizer == "adam" and self.unroll_memory != "full":
            raise ValueError(
                f"inner_optimizer='adam' is differentiated by plain autograd only: set unroll_memory='full' (got "
                f"{self.unroll_memory!r})."
            )
        if self.inner_optimizer == "adam" and self.eval_use_learned_lr:
            raise ValueError(
                "eval_use_learned_lr=True would train the SGD evaluation models with the learned Adam learning rate: "
                "leave it False with inner_optimizer='adam'."
            )
        if self.learn_regression_targets:
            raise ValueError(
                "dd trains its students with cross-entropy, so it cannot learn regression targets: use "
                "learn_soft_labels=True to learn the labels."
            )

    @property
    def backprop_window(self) -> int:
        """The number of steps back-propagated through (`window`, or every step)."""
        return self.unroll_steps if self.window is None else self.window


@register_method("dd")
class MetaLearning(UnrolledSGDMethod):
    """Dataset distillation by meta-learning: a student trained on the set must do well on real data."""

    config_class = MetaLearningConfig
    # One unroll over every class at once: each process computes all of it (the trainer averages).
    class_separable = False
    paper = {
        "title": "Dataset Distillation",
        "authors": "Tongzhou Wang, Jun-Yan Zhu, Antonio Torralba, Alexei A. Efros",
        "year": "2018",
        "url": "https://arxiv.org/abs/1811.10959",
        "bibtex": (
            "@article{wang2018dataset,\n"
            "  title={Dataset Distillation},\n"
            "  author={Wang, Tongzhou and Zhu, Jun-Yan and Torralba, Antonio and Efros, Alexei A.},\n"
            "  journal={arXiv preprint arXiv:1811.10959},\n"
            "  year={2018}\n}"
        ),
    }

    def student_config(self):
        return convnet_variant(self.model_config, self.config.inner_net_width, None)

    def initial_step_size(self) -> float | list[float]:
        lr = self.config.syn_lr_init
        return [lr] * self.config.unroll_steps if self.config.per_step_lr else lr

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Batch statistics must not depend on how the real batch is split into forward passes.
        self.chunk = None if batch_norm_layers(self.network) else self.config.forward_chunk

    def draw_unroll(self, iteration: int) -> tuple[int, int]:
        """`(steps without a graph, steps back-propagated through)` of `iteration`."""
        config = self.config
        window = config.backprop_window
        if not config.random_truncation:
            return config.unroll_steps - window, window
        generator = derive_generator(config.seed, iteration, "truncation")
        return int(torch.randint(config.unroll_steps - window + 1, (1,), generator=generator)), window

    def real_batch(self, iteration: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch_real` augmented real images of every class (class-major) and their labels."""
        classes = list(range(self.train_data.num_classes))
        rows = self.sample_real(classes, self.config.batch_real, iteration)
        images = self.train_data.images[rows].to(device)
        labels = self.train_data.labels[rows].to(device)
        if self.augment.enabled:
            generator = derive_generator(self.config.seed, iteration, "real_augment")
            params = self.augment.sample(len(images), self.train_data.image_size, generator)
            images = self.augment.apply(images, params)
        return images, labels

    def real_loss(self, theta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The student's mean cross-entropy on the real batch, differentiable w.r.t. `theta`.

        The batch is large (RaT-BPTT: 5,000 images), so it runs in passes of `forward_chunk` images: each pass's
        gradient w.r.t. the final parameters is taken at once and its graph freed, and the loss returned is the
        linear surrogate `<theta, g>` (plus a constant that gives it the cross-entropy's value), whose gradient into
        the unroll is exactly the cross-entropy's.
        """
        network = self.network
        buffers = {name: buffer.detach().clone() for name, buffer in network.named_buffers()}
        leaf = theta.detach().requires_grad_(True)
        gradient = torch.zeros_like(leaf)
        total = 0.0
        for image_part, label_part in zip(*(t.split(self.chunk or len(t)) for t in (images, labels))):
            with torch.enable_grad(), self.autocast(images.device):
                logits = functional_logits(network, self.spec, leaf, image_part, buffers, self.modality.input_name)
                part_loss = F.cross_entropy(logits.float(), label_part, reduction="sum") / len(labels)
            gradient += torch.autograd.grad(part_loss, leaf)[0]
            total += float(part_loss.detach())
        surrogate = (theta * gradient).sum()
        return surrogate - surrogate.detach() + total

    def loss(self, synthetic: SyntheticSet, classes: list[int], iteration: int, update: int = 0) -> torch.Tensor:
        """The real-data cross-entropy of a fresh student trained on the synthetic set.

        `classes` is ignored: the student trains on the whole set (`class_separable = False`).
        """
        config = self.config
        device = synthetic.images.device
        network = reinitialize_(self.network.to(device), derive_generator(config.seed, iteration, "network"))
        theta = self.spec.flatten(dict(network.named_parameters())).detach()
        burn_in, window = self.draw_unroll(iteration)
        unroll = {
            "batch_size": config.batch_syn,
            "augment": self.augment,
            "autocast_dtype": self.autocast_dtype(),
            "input_name": self.modality.input_name,
            # One Adam for the whole unroll: the window resumes the moments the burn-in built up.
            "adam": AdamState.zeros_like(theta) if config.inner_optimizer == "adam" else None,
        }
        images, targets, step_size = synthetic.images, synthetic.targets(), self.student_step_size(synthetic)
        # A per-step schedule: the burn-in uses its first entries, the window the next ones.
        burn_in_lr, window_lr = (
            (step_size[:burn_in], step_size[burn_in:][:window]) if step_size.dim() else (step_size,) * 2
        )
        if burn_in:
            # Steps outside the window: the student moves, nothing is recorded for the backward.
            with torch.no_grad():
                theta = unrolled_sgd_flat(
                    network,
                    self.spec,
                    theta,
                    images.detach(),
                    targets.detach(),
                    burn_in_lr.detach(),
                    num_steps=burn_in,
                    generator=derive_generator(config.seed, iteration, "burn_in"),
                    **unroll,
                )
        theta = unrolled_sgd_flat(
            network,
            self.spec,
            theta,
            images,
            targets,
            window_lr,
            num_steps=window,
            generator=derive_generator(config.seed, iteration, "window"),
            memory=config.unroll_memory,
            **unroll,
        )
        return self.real_loss(theta, *self.real_batch(iteration, device))
