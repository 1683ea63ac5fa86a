"""Coreset selection: methods that keep real rows instead of synthesising images.

Every coreset here selects per class (`images_per_class` rows of each), so it compares with distillation at equal
IPC, as the DC/DM papers' baselines and DeepCore's `balance=True` do. Two shapes share the per-class loop:

- [`EmbeddingCoreset`]: picks rows by their position in an embedding (herding, k-center) given by a network of the
  run's architecture, random or trained `selection_epochs` on the whole real split through the one training loop;
- [`ScoredCoreset`]: ranks rows by a per-example score (forgetting events, EL2N, GraNd) and keeps the highest (the
  papers' and DeepCore's choice) or the lowest per class.

On text (a modality that embeds with a pretrained, frozen encoder) the embedding is the encoder's sentence embedding
and the scoring networks are linear classifiers on it (see `SelectionContext.network`); selections are real
sentences either way.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpointing import save_tensors_atomic
from ..config import DistillConfig
from ..constants import SELECTION_SCORES_NAME
from ..registry import register_method
from .base import DistillationMethod, SelectionContext, TrainedNetworkConfig

logger = logging.getLogger(__name__)

KEEP_CHOICES = ("highest", "lowest")


@dataclass
class RandomSelectionConfig(DistillConfig):
    """A class-balanced random subset of the real training images: the baseline of every table."""

    method: str = field(default="random", init=False, metadata={"help": "Random real subset."})
    num_iterations: int = field(default=0, metadata={"help": "Unused: selection takes no iterations."})


@register_method("random")
class RandomSelection(DistillationMethod):
    """Keeps `images_per_class` real images per class, drawn uniformly without replacement."""

    config_class = RandomSelectionConfig
    modalities = ("image", "text")
    selects_real_rows = True
    paper = {
        "title": "Dataset Condensation with Gradient Matching (random-subset baseline, Table 1)",
        "authors": "Bo Zhao, Konda Reddy Mopuri, Hakan Bilen",
        "year": "2021",
        "url": "https://arxiv.org/abs/2006.05929",
        "bibtex": (
            "@inproceedings{zhao2021dataset,\n"
            "  title={Dataset Condensation with Gradient Matching},\n"
            "  author={Zhao, Bo and Mopuri, Konda Reddy and Bilen, Hakan},\n"
            "  booktitle={International Conference on Learning Representations (ICLR)},\n"
            "  year={2021}\n}"
        ),
    }

    def select(self, context: SelectionContext) -> torch.LongTensor:
        return self.sample_real(list(range(self.train_data.num_classes)), self.config.images_per_class, "select")


@dataclass
class CoresetConfig(TrainedNetworkConfig):
    """Settings of the coresets that look at the data through a network of the run's architecture."""

    num_iterations: int = field(default=0, metadata={"help": "Unused: selection takes no iterations."})
    selection_epochs: int = field(
        default=10,
        metadata={
            "help": "Epochs the selection network trains on the whole real training split (the evaluation "
            "protocol's SGD schedule) before it embeds or scores the rows; 0: a randomly initialised network. "
            "DeepCore trains 200 (a ResNet-18 on a GPU); each epoch costs one pass over the training split."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.selection_epochs < 0:
            raise ValueError(f"selection_epochs must be >= 0 (0: a random network), got {self.selection_epochs}.")


@dataclass
class ScoredCoresetConfig(CoresetConfig):
    """Settings of the coresets that rank rows by a per-example score."""

    keep: str = field(
        default="highest",
        metadata={
            "help": "Which rows of each class to keep: 'highest' scores (the papers and DeepCore: the hardest, "
            "most informative examples) or 'lowest' (the easiest, which can serve tiny budgets better)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.keep not in KEEP_CHOICES:
            raise ValueError(f"keep must be one of {', '.join(KEEP_CHOICES)}; got {self.keep!r}.")


class CoresetSelection(DistillationMethod):
    """A selection made class by class: `choose` gets the rows of one class and returns the ones to keep."""

    config_class = CoresetConfig
    selects_real_rows = True
    modalities = ("image", "text")

    def per_class(self, choose) -> torch.LongTensor:
        """`images_per_class` rows of every class, class-major: `choose(rows, k)` returns positions into `rows`."""
        k = self.config.images_per_class
        picked = []
        for rows in self.sampler.indices:
            positions = torch.as_tensor(choose(rows, k), dtype=torch.long)
            if positions.numel() != k or positions.unique().numel() != k:
                name = type(self).__name__
                raise RuntimeError(f"{name} chose {positions.tolist()} where {k} distinct rows were due.")
            picked.append(rows[positions])
        return torch.cat(picked)


class EmbeddingCoreset(CoresetSelection):
    """Selection by position in an embedding: subclasses implement `choose(features, k)` for one class.

    The embedding is the run's network trained `selection_epochs` epochs (images), or the pretrained encoder a
    modality works in (text: its sentence embeddings; `selection_epochs` does not apply)."""

    def choose(self, features: torch.Tensor, k: int) -> torch.LongTensor:
        """Positions of the `k` rows to keep among `features` `(n, D)`, the rows of one class."""
        raise NotImplementedError

    def select(self, context: SelectionContext) -> torch.LongTensor:
        features = context.embedding(self.config.selection_epochs).double()
        return self.per_class(lambda rows, k: self.choose(features[rows], k))


class ScoredCoreset(CoresetSelection):
    """Selection by a per-example score: subclasses implement `scores(context)`; the top (or bottom) `k` of each
    class are kept, ties broken by row order.

    The scores of every row are written beside the set (`selection_scores.safetensors`: `scores` and `labels`,
    indexed like `selected_rows`), so another budget or `keep` can be read off them without training again, and
    `distill_config.json` says in how many classes the cut fell among tied scores (where row order decided)."""

    config_class = ScoredCoresetConfig
    row_scores: torch.Tensor | None = None  # set by `select` in this process; `None` for a set reloaded from disk
    classes_tied_at_cut: int = 0  # set by `select`

    def scores(self, context: SelectionContext) -> torch.Tensor:
        """One score per real training row, `(N,)`, higher meaning harder."""
        raise NotImplementedError

    def select(self, context: SelectionContext) -> torch.LongTensor:
        self.row_scores = self.scores(context).double().cpu()
        ranked = self.row_scores if self.config.keep == "highest" else -self.row_scores
        tied_classes = []

        def keep_top(rows: torch.Tensor, k: int) -> torch.Tensor:
            values, order = torch.sort(ranked[rows], descending=True, stable=True)
            # Tied at the cut: the last row kept scores as the best one left out, so row order chose between them.
            tied_classes.append(len(rows) > k and bool(values[k - 1] == values[k]))
            return order[:k]

        picked = self.per_class(keep_top)
        self.classes_tied_at_cut = tied = sum(tied_classes)
        if tied:
            logger.warning(
                "%s: in %d of %d classes the last row kept scores the same as rows left out, so row order chose "
                "among them (e.g. examples never learned in a short selection run); more selection_epochs or "
                "score models separate them.",
                self.config.method,
                tied,
                len(self.sampler.indices),
            )
        return picked

    def run_metadata(self) -> dict:
        if self.row_scores is None:
            return {}
        return {
            "selection_scores": {
                "file": SELECTION_SCORES_NAME,
                "rows": len(self.row_scores),
                "non_finite": int((~torch.isfinite(self.row_scores)).sum()),
                "classes_cut_among_ties": self.classes_tied_at_cut,
            }
        }

    def save_artifacts(self, output_dir: Path) -> None:
        if self.row_scores is not None:
            labels = self.train_data.labels.cpu().long().contiguous()
            save_tensors_atomic(
                {"scores": self.row_scores.contiguous(), "labels": labels}, output_dir / SELECTION_SCORES_NAME
            )
