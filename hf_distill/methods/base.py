"""The method interface: what the `DistillTrainer` asks of every method.

A method is a config dataclass (a `DistillConfig` subclass with the paper's defaults) and a `DistillationMethod`
subclass decorated with `@register_method("name")`. There are two kinds:

- *selection* methods (coresets) pick real rows once: they implement `select`;
- *optimising* methods learn the synthetic set: they implement `loss`, which the `DistillTrainer` minimises
  with the pixel optimiser the config describes.
"""

import contextlib
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig

from ..augment import SiameseAugment
from ..config import DistillConfig
from ..data import ClassBalancedSampler, ImageData
from ..modeling import extract_features
from ..seeding import derive_generator
from ..synthetic import SyntheticSet
from ..training import autocast_context


class DistillationMethod:
    """Base class of every method.

    Args:
        config ([`DistillConfig`]): The method's config.
        train_data ([`ImageData`]): The prepared real training split.
        model_config (`PretrainedConfig`): Architecture of the networks the method trains or samples.
        augment ([`SiameseAugment`]): Augmentation applied identically to real and synthetic batches.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[DistillConfig]] = DistillConfig
    #: Whether the method selects real rows (a coreset) instead of optimising pixels.
    selects_real_rows: ClassVar[bool] = False
    #: Paper metadata for cards and docs: title, authors, year, url, bibtex.
    paper: ClassVar[dict[str, str]] = {}
    #: Whether the loss is a sum of independent per-class terms. Such losses are shared out between processes by
    #: class and their gradients summed; the others are computed whole by every process and averaged.
    class_separable: ClassVar[bool] = True
    #: Whether the loss depends on the synthetic labels (learned soft labels need it).
    uses_labels: ClassVar[bool] = True

    def __init__(
        self,
        config: DistillConfig,
        train_data: ImageData,
        model_config: PretrainedConfig,
        augment: SiameseAugment,
    ):
        self.config = config
        self.train_data = train_data
        self.model_config = model_config
        self.augment = augment
        self.sampler = ClassBalancedSampler(train_data.labels, train_data.num_classes)

    # ------------------------------------------------------------------ shared pieces

    def prepare_network(self, network: nn.Module) -> nn.Module:
        """Puts a network in the memory layout the precision setting wants (channels-last for bf16)."""
        if self.config.mixed_precision == "bf16":
            network = network.to(memory_format=torch.channels_last)
        return network

    def prepare_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """Matches the inputs' memory layout to `prepare_network` (differentiable; values unchanged)."""
        if self.config.mixed_precision == "bf16":
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bfloat16 autocast when `mixed_precision="bf16"`, else a no-op context."""
        return autocast_context(self.config.mixed_precision, device)

    def feature_function(
        self, network: nn.Module, layers: list[int] | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]]:
        """`extract_features(network, x, layers)`, compiled with `torch.compile` when the config asks for it.

        The compiled function reads the network's parameters at call time, so re-drawing them in place (as DM does
        each iteration) needs no recompilation.
        """

        def features(images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
            return extract_features(network, images, layers)

        return torch.compile(features, dynamic=False) if self.config.torch_compile else features

    def sample_real(self, classes: list[int], n: int, *keys) -> torch.LongTensor:
        """Row indices of `n` real images for each class in `classes` (class-major).

        Each class draws from its own generator keyed by `(seed, *keys, class)`, so the rows a class gets do not
        depend on which other classes this process handles.
        """
        return self.sampler.sample_keyed(classes, n, self.config.seed, *keys, "real")

    def siamese_augment(
        self,
        real: torch.Tensor,
        synthetic: torch.Tensor,
        classes: list[int],
        n_real: int,
        n_syn: int,
        *keys,
        per_class: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augments class-major real and synthetic batches with the same transforms (DSA).

        Parameters are drawn once for all classes of the dataset from a generator keyed by `(seed, *keys)`, so the
        draw does not depend on how classes are split across processes. By default class `c` uses rows
        `c * stride + j`: image `j` of a class gets the same transform in both batches. With `per_class=True` every
        real and synthetic image of class `c` gets the one transform of row `c` (the DSA code's siamese "batch
        mode", which gradient matching uses: both gradients are then taken under the same transform).
        """
        if not self.augment.enabled:
            return real, synthetic
        stride = 1 if per_class else max(n_real, n_syn)
        params = self.augment.sample(
            self.train_data.num_classes * stride,
            self.train_data.image_size,
            derive_generator(self.config.seed, *keys, "augment"),
        )
        class_index = torch.tensor(classes, dtype=torch.long)
        if per_class:
            real_rows, syn_rows = class_index.repeat_interleave(n_real), class_index.repeat_interleave(n_syn)
            return (
                self.augment.apply(real, params.select(real_rows)),
                self.augment.apply(synthetic, params.select(syn_rows)),
            )
        starts = class_index.unsqueeze(1) * stride
        real_rows = (starts + torch.arange(n_real)).flatten()
        syn_rows = (starts + torch.arange(n_syn)).flatten()
        return (
            self.augment.apply(real, params.select(real_rows)),
            self.augment.apply(synthetic, params.select(syn_rows)),
        )

    # ------------------------------------------------------------------ interface

    def select(self) -> torch.LongTensor:
        """Selection methods: row indices of the real images to keep, class-major, `images_per_class` each."""
        raise NotImplementedError(f"{type(self).__name__} does not select real rows.")

    @property
    def updates_per_iteration(self) -> int:
        """Optimiser steps on the synthetic set per iteration (DC/DSA: the outer loop; most methods: 1)."""
        return 1

    def loss(self, synthetic: SyntheticSet, classes: list[int], iteration: int, update: int = 0) -> torch.Tensor:
        """Optimising methods: the matching loss of `classes` at `(iteration, update)` (a scalar to minimise).

        The trainer calls it for `update = 0 .. updates_per_iteration - 1`, each followed by one optimiser step and
        [`after_update`]. All randomness must come from generators derived from `(config.seed, iteration, ...)`,
        and state kept between updates must be rebuilt at `update == 0` (checkpoints fall between iterations).
        """
        raise NotImplementedError(f"{type(self).__name__} does not optimise a synthetic set.")

    def after_update(self, synthetic: SyntheticSet, iteration: int, update: int) -> None:
        """Called after each optimiser step (DC/DSA train their network on the updated set here)."""

    def initial_step_size(self) -> float | None:
        """A learnable step size to give the synthetic set (MTT's syn_lr), or `None` for methods that learn none."""
        return None

    def optimizer_parameters(self, synthetic: SyntheticSet) -> list[dict]:
        """Parameter groups for the optimiser: the images, plus soft labels and the step size when learned."""
        groups = [{"params": [synthetic.images]}]
        if synthetic.label_logits is not None:
            groups.append({"params": [synthetic.label_logits], "lr": self.config.lr_labels})
        if synthetic.step_size is not None:
            groups.append({"params": [synthetic.step_size], "lr": self.config.lr_lr})
        return groups
