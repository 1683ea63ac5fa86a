"""Trajectory matching (MTT): Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022.

Each iteration picks an expert trajectory (a network trained on the real data, see `hf_distill.experts`) and a start
epoch, trains a student from the expert's parameters at that epoch for `syn_steps` SGD steps on the (augmented)
synthetic set with a learnable step size, and minimises the distance from where the student ends to where the
expert was `expert_epochs` later, normalised by how far the expert travelled:

    loss = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2

The gradient flows back through the whole unroll into the pixels, the step size and (optionally) soft labels; see
`hf_distill.functional` for the unroll and its memory modes (`unroll_memory`: exact, exact with constant
activation memory, or TESLA's first-order approximation).
"""

from dataclasses import dataclass, field

import torch

from ..functional import UnrolledSGDConfig, unrolled_sgd_flat
from ..registry import register_method
from ..seeding import derive_generator
from ..synthetic import SyntheticSet
from ..trajectories import ExpertTrajectories
from .base import UnrolledSGDMethod

#: MTT's CIFAR-10 settings by images per class (the paper's hyper-parameter appendix); an IPC between the
#: tabulated ones takes the next larger one's setting.
_SYN_STEPS_BY_IPC = ((1, 50), (10, 30), (50, 30))
_MAX_START_EPOCH_BY_IPC = ((1, 2), (10, 20), (50, 40))
_LR_LR_BY_IPC = ((1, 1e-7), (10, 1e-5), (50, 1e-5))


#: `TrajectoryMatchingConfig.expert_sampling`: each expert once per round, or independent draws.
EXPERT_SAMPLING = ("cycle", "uniform")


def _by_ipc(table: tuple[tuple[int, float], ...], images_per_class: int):
    for ipc, value in table:
        if images_per_class <= ipc:
            return value
    return table[-1][1]


@dataclass
class TrajectoryMatchingConfig(UnrolledSGDConfig):
    """Matching training trajectories (MTT). Defaults are the paper's CIFAR-10 settings (Appendix; authors' README).

    `syn_steps`, `max_start_epoch` and `lr_lr` default to `None` and are set from `images_per_class` when the config
    is created (IPC 1 / 10 / 50: 50 / 30 / 30 steps, 2 / 20 / 40 start epochs, 1e-7 / 1e-5 / 1e-5), so the saved
    `distill_config.json` records the values used. The experts (`expert_path`) come from
    `hf_distill.experts.train_experts_for_config` (same data and architecture settings as this config).

    Example:

    ```python
    >>> from hf_distill.experts import train_experts_for_config
    >>> config = TrajectoryMatchingConfig(images_per_class=10, expert_path="experts/mnist")
    >>> train_experts_for_config(config, train, test, "experts/mnist", num_experts=20, num_epochs=30)
    >>> trainer = DistillTrainer(config, train, test)
    ```
    """

    method: str = field(default="mtt", init=False, metadata={"help": "Matching training trajectories."})
    expert_path: str | None = field(
        default=None,
        metadata={
            "help": "Expert trajectories: a folder written by hf_distill.experts.train_experts_for_config (or "
            "train_experts), or a Hub model repository pushed with push_experts_to_hub. Required."
        },
    )
    expert_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of a Hub expert repository."}
    )
    num_experts: int | None = field(
        default=None, metadata={"help": "Use the first N stored experts (None: all; MTT: 100 experts)."}
    )
    expert_sampling: str = field(
        default="cycle",
        metadata={
            "help": "How each iteration's expert is drawn: 'cycle' (MTT's distill.py by default: every expert once "
            "per round, in a fresh random order each round) or 'uniform' (its --load_all: independently each "
            "iteration, so with few experts one can be matched several iterations in a row)."
        },
    )
    num_iterations: int = field(default=5000, metadata={"help": "Distillation iterations (MTT: 5,000)."})
    syn_steps: int | None = field(
        default=None,
        metadata={
            "help": "Student SGD steps on the synthetic set per iteration (MTT CIFAR-10, IPC 1/10/50: 50/30/30)."
        },
    )
    expert_epochs: int = field(
        default=2, metadata={"help": "Expert epochs the student steps must match (MTT CIFAR-10: 2)."}
    )
    max_start_epoch: int | None = field(
        default=None,
        metadata={
            "help": "Start epochs are drawn from [0, max_start_epoch), as in MTT's distill.py (CIFAR-10, IPC "
            "1/10/50: 2/20/40). The experts need max_start_epoch - 1 + expert_epochs epochs."
        },
    )
    lr_images: float = field(
        default=1000.0,
        metadata={
            "help": "SGD learning rate on the pixels. MTT used 1000 on ZCA-whitened CIFAR (IPC 1; README: CIFAR-100, "
            "ImageNet subsets); hf_distill's pixels are mean/std normalised, not whitened. Measured here on "
            "scikit-learn digits (IPC 1, 200 iterations): 100 and 1000 both lift the set from 66.7% to ~81%, 10000 "
            "only to 69%. Lower it if the loss diverges."
        },
    )
    momentum_images: float = field(
        default=0.5, metadata={"help": "Momentum of the pixel (and step-size) optimiser (MTT: 0.5)."}
    )
    lr_lr: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the learnable student step size (MTT CIFAR-10, IPC 1: 1e-7, else 1e-5)."},
    )

    def __post_init__(self):
        # Resolved before the base checks, which validate lr_lr.
        if self.images_per_class >= 1:
            if self.syn_steps is None:
                self.syn_steps = _by_ipc(_SYN_STEPS_BY_IPC, self.images_per_class)
            if self.max_start_epoch is None:
                self.max_start_epoch = _by_ipc(_MAX_START_EPOCH_BY_IPC, self.images_per_class)
            if self.lr_lr is None:
                self.lr_lr = _by_ipc(_LR_LR_BY_IPC, self.images_per_class)
        super().__post_init__()
        if self.syn_steps < 1:
            raise ValueError(f"syn_steps must be >= 1, got {self.syn_steps}.")
        if self.expert_epochs < 1:
            raise ValueError(f"expert_epochs must be >= 1, got {self.expert_epochs}.")
        if self.max_start_epoch < 1:
            raise ValueError(
                f"max_start_epoch must be >= 1 (start epochs are drawn from [0, max_start_epoch)), got "
                f"{self.max_start_epoch}."
            )
        if self.expert_sampling not in EXPERT_SAMPLING:
            raise ValueError(
                f"expert_sampling must be one of {', '.join(EXPERT_SAMPLING)}; got {self.expert_sampling!r}."
            )
        if self.num_experts is not None and self.num_experts < 1:
            raise ValueError(f"num_experts must be >= 1 or None (all stored experts), got {self.num_experts}.")

    @property
    def last_expert_epoch(self) -> int:
        """The last expert epoch an iteration can read: `max_start_epoch - 1 + expert_epochs`."""
        return self.max_start_epoch - 1 + self.expert_epochs


@register_method("mtt")
class TrajectoryMatching(UnrolledSGDMethod):
    """Matching training trajectories: long-range parameter matching against expert trajectories."""

    config_class = TrajectoryMatchingConfig
    # Text: the student is a linear classifier on the frozen encoder's embedding (experts trained on the cached
    # embeddings); the synthetic examples enter it through the encoder.
    modalities = ("image", "text")
    # The loss is one unroll over every class at once: each process computes all of it (the trainer averages).
    class_separable = False
    paper = {
        "title": "Dataset Distillation by Matching Training Trajectories",
        "authors": "George Cazenavette, Tongzhou Wang, Antonio Torralba, Alexei A. Efros, Jun-Yan Zhu",
        "year": "2022",
        "url": "https://arxiv.org/abs/2203.11932",
        "bibtex": (
            "@inproceedings{cazenavette2022distillation,\n"
            "  title={Dataset Distillation by Matching Training Trajectories},\n"
            "  author={Cazenavette, George and Wang, Tongzhou and Torralba, Antonio and Efros, Alexei A. and "
            "Zhu, Jun-Yan},\n"
            "  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},\n"
            "  year={2022}\n}"
        ),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.config
        if not config.expert_path:
            raise ValueError(
                "TrajectoryMatchingConfig.expert_path is not set: MTT needs expert trajectories of the "
                "distillation network trained on the real data. Make them with "
                "hf_distill.experts.train_experts_for_config(config, train_split, test_split, 'experts/<name>', "
                "num_experts=..., num_epochs=...) (same data and architecture settings as this config) and pass "
                "that folder (or a Hub repository pushed with push_experts_to_hub) as expert_path."
            )
        # The index is read (and checked against the network) now, so a wrong path or architecture fails before
        # any work; epoch vectors are read from the files when an iteration needs them.
        self.experts = ExpertTrajectories.for_network(
            config.expert_path,
            self.network,
            self.train_data,
            revision=config.expert_revision,
            max_epoch=config.last_expert_epoch,
            num_experts=config.num_experts,
        )

    def draw_segment(self, iteration: int) -> tuple[int, int]:
        """The expert and start epoch of `iteration`: the expert as `expert_sampling` says, the start epoch
        uniformly from `[0, max_start_epoch)`. Both are functions of (seed, iteration), so a resumed run draws the
        same."""
        seed, num_experts = self.config.seed, self.experts.num_experts
        generator = derive_generator(seed, iteration, "expert")
        if self.config.expert_sampling == "cycle":
            # Round `iteration // num_experts` visits the experts in its own random order, as distill.py walks
            # through its shuffled buffer.
            order = torch.randperm(num_experts, generator=derive_generator(seed, iteration // num_experts, "round"))
            expert = int(order[iteration % num_experts])
        else:
            expert = int(torch.randint(num_experts, (1,), generator=generator))
        start = int(torch.randint(self.config.max_start_epoch, (1,), generator=generator))
        return expert, start

    def loss(self, synthetic: SyntheticSet, classes: list[int], iteration: int, update: int = 0) -> torch.Tensor:
        """The normalised parameter distance after `syn_steps` student steps on every synthetic image.

        `classes` is ignored: the unroll trains on the whole set (`class_separable = False`).
        """
        config = self.config
        device = synthetic.images.device
        network = self.network.to(device)  # in train mode, as MTT's student (batch norm uses batch statistics)
        expert, start_epoch = self.draw_segment(iteration)
        start = self.experts.epoch(expert, start_epoch).to(device)
        target = self.experts.epoch(expert, start_epoch + config.expert_epochs).to(device)
        final = unrolled_sgd_flat(
            network,
            self.spec,
            start,
            self.network_inputs(synthetic.images),
            synthetic.targets(),
            self.student_step_size(synthetic),
            num_steps=config.syn_steps,
            batch_size=config.batch_syn,
            generator=derive_generator(config.seed, iteration, "unroll"),
            augment=self.augment,
            memory=config.unroll_memory,
            autocast_dtype=self.autocast_dtype(),
            input_name=self.network_input_name,
        )
        # MTT divides both distances by the number of parameters; the ratio is the same.
        return ((final - target) ** 2).sum() / ((start - target) ** 2).sum()
