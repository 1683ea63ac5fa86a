"""What every prepared split shares, whatever the modality: its classes' rows ([`indices_by_class`],
[`LabelledSplit`], the base of `ImageData` and `TextData`) and class-balanced sampling with explicit generators
([`ClassBalancedSampler`])."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .seeding import derive_generator


def indices_by_class(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Row indices of every class: `num_classes` sorted `int64` tensors (rows with a negative label are left out)."""
    labels = labels.long().cpu()
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes].tolist()
    start = int((labels < 0).sum())
    out = []
    for count in counts:
        out.append(order[start : start + count].clone())
        start += count
    return out


class LabelledSplit:
    """What every modality's prepared split shares (a mixin for dataclasses with `inputs` `(N, ...)`, `labels`
    `(N,)` int64, `class_names` and an `_indices_by_class` cache field): its length, class count, example shape and
    the rows of each class."""

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes (`len(class_names)`; some may have no rows)."""
        return len(self.class_names)

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one example of `inputs` (images `(C, H, W)`, sentences `(max_length, 2)`)."""
        return tuple(self.inputs.shape[1:])

    def indices_by_class(self) -> list[torch.Tensor]:
        """Row indices of every class (computed once and cached).

        Returns:
            `list[torch.Tensor]`: `num_classes` `int64` tensors, the i-th holding the (sorted) rows with label i.
        """
        if self._indices_by_class is None:
            self._indices_by_class = indices_by_class(self.labels, self.num_classes)
        return self._indices_by_class


@dataclass
class FeatureSplit(LabelledSplit):
    """A split as fixed embeddings `(N, D)` (a frozen pretrained encoder's): what a linear classifier on that encoder
    trains on (e.g. MTT's experts on text).

    Args:
        inputs (`torch.Tensor`): The embeddings `(N, D)`.
        labels (`torch.Tensor`): Class indices `(N,)`, `int64`.
        class_names (`list[str]`): Name of every class.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    _indices_by_class: list[torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------------


class ClassBalancedSampler:
    """Draws row indices class by class with an explicit `torch.Generator` (the global RNG is never used).

    Args:
        labels (`torch.Tensor`):
            Labels of shape `(N,)`, integers in `[0, num_classes)`.
        num_classes (`int`):
            Number of classes.

    Raises:
        ValueError: If a class has no rows, or a label is outside `[0, num_classes)`.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int):
        labels = torch.as_tensor(labels).long().cpu().reshape(-1)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"Labels must be in [0, {num_classes}), found values in [{int(labels.min())}, {int(labels.max())}]."
            )
        self.num_classes = num_classes
        self.indices = indices_by_class(labels, num_classes)
        empty = [c for c, idx in enumerate(self.indices) if idx.numel() == 0]
        if empty:
            raise ValueError(
                f"Classes {empty} have no rows, so they cannot be sampled. Check the split and label column, or "
                "remove the empty classes from the ClassLabel feature."
            )

    def counts(self) -> list[int]:
        """Number of rows of every class."""
        return [idx.numel() for idx in self.indices]

    def sample(self, class_index: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw `n` row indices of one class.

        Args:
            class_index (`int`): The class.
            n (`int`): Number of indices.
            generator (`torch.Generator`): Source of randomness (a CPU generator).

        Returns:
            `torch.LongTensor`: `n` row indices of the class, without replacement when `n` is at most the class
            size, with replacement otherwise.
        """
        if not 0 <= class_index < self.num_classes:
            raise ValueError(f"`class_index` must be in [0, {self.num_classes}), got {class_index}.")
        if n < 0:
            raise ValueError(f"`n` must be non-negative, got {n}.")
        rows = self.indices[class_index]
        count = rows.numel()
        if n <= count:
            picks = torch.randperm(count, generator=generator)[:n]
        else:
            picks = torch.randint(count, (n,), generator=generator)
        return rows[picks]

    def sample_classes(self, classes: Sequence[int], n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw `n` row indices for each of several classes.

        Args:
            classes (`Sequence[int]`): The classes, in order.
            n (`int`): Number of indices per class.
            generator (`torch.Generator`): Source of randomness.

        Returns:
            `torch.LongTensor`: `len(classes) * n` indices, class-major (the first `n` belong to `classes[0]`, ...).
        """
        if len(classes) == 0:
            return torch.empty(0, dtype=torch.long)
        return torch.cat([self.sample(int(c), n, generator) for c in classes])

    def sample_keyed(self, classes: Sequence[int], n: int, seed: int, *keys) -> torch.Tensor:
        """Like `sample_classes`, but each class draws from its own generator keyed by `(seed, *keys, class)`.

        The rows a class gets then do not depend on which other classes are sampled alongside it (what makes
        multi-process and resumed runs draw exactly what a single uninterrupted run draws).
        """
        if len(classes) == 0:
            return torch.empty(0, dtype=torch.long)
        return torch.cat([self.sample(int(c), n, derive_generator(seed, *keys, int(c))) for c in classes])
