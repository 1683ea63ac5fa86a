"""EL2N and GraNd scores (Paul, Ganguli & Dziugaite, "Deep Learning on a Data Diet: Finding Important Examples
Early in Training", NeurIPS 2021): how far a network's prediction is from the label (EL2N) or how large the loss
gradient is (GraNd), early in training, averaged over several networks; keep the examples that score highest."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..registry import register_method
from .base import SelectionContext
from .coreset import ScoredCoreset, ScoredCoresetConfig

DATA_DIET_PAPER = {
    "title": "Deep Learning on a Data Diet: Finding Important Examples Early in Training",
    "authors": "Mansheej Paul, Surya Ganguli, Gintare Karolina Dziugaite",
    "year": "2021",
    "url": "https://arxiv.org/abs/2107.07075",
    "bibtex": (
        "@inproceedings{paul2021deep,\n"
        "  title={Deep Learning on a Data Diet: Finding Important Examples Early in Training},\n"
        "  author={Paul, Mansheej and Ganguli, Surya and Dziugaite, Gintare Karolina},\n"
        "  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},\n"
        "  year={2021}\n}"
    ),
}


@dataclass
class EarlyScoreConfig(ScoredCoresetConfig):
    """Scores averaged over `num_score_models` networks, each trained `selection_epochs` on the whole real split."""

    num_score_models: int = field(
        default=10, metadata={"help": "Independently initialised networks the score is averaged over (paper: 10)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.num_score_models < 1:
            raise ValueError(f"num_score_models must be >= 1, got {self.num_score_models}.")


@dataclass
class EL2NConfig(EarlyScoreConfig):
    """EL2N: the error L2 norm after a few epochs of training."""

    method: str = field(default="el2n", init=False, metadata={"help": "EL2N scores (error L2 norm)."})
    selection_epochs: int = field(
        default=20,
        metadata={"help": "Epochs each scoring network trains first (paper: 20 of 200; 0 would score chance)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.selection_epochs < 1:
            raise ValueError("el2n scores a network after some training: selection_epochs must be >= 1 (paper: 20).")


@dataclass
class GraNdConfig(EarlyScoreConfig):
    """GraNd: the norm of the loss gradient, at initialisation by default."""

    method: str = field(default="grand", init=False, metadata={"help": "GraNd scores (gradient norm)."})
    selection_epochs: int = field(
        default=0, metadata={"help": "Epochs each scoring network trains first (paper: 0, at initialisation)."}
    )


class EarlyTrainingScore(ScoredCoreset):
    """A score of each example under several networks trained briefly, averaged: subclasses give one network's."""

    paper = DATA_DIET_PAPER

    def network_scores(self, context: SelectionContext, network: nn.Module) -> torch.Tensor:
        """One network's score of every training row, `(N,)`."""
        raise NotImplementedError

    def scores(self, context: SelectionContext) -> torch.Tensor:
        total = torch.zeros(len(self.train_data.labels), dtype=torch.float64)
        # At initialisation (GraNd) each network is minutes of passes over the split with no training bar of its own.
        networks = tqdm(
            range(self.config.num_score_models),
            desc=f"Scoring ({self.config.method})",
            disable=not context.shows_progress,
        )
        for model_index in networks:
            key = f"{self.config.method}-{model_index}"
            network = context.network(epochs=self.config.selection_epochs, key=key)
            total += self.network_scores(context, network).double()
        return total / self.config.num_score_models

    def prediction_error(self, logits: torch.Tensor) -> torch.Tensor:
        """`softmax(logits) - onehot(label)` of every row: the error vector EL2N measures and the cross-entropy's
        gradient w.r.t. the logits."""
        labels = self.train_data.labels.to(logits.device)
        return logits.softmax(-1) - F.one_hot(labels, logits.shape[-1]).to(logits.dtype)


@register_method("el2n")
class EL2N(EarlyTrainingScore):
    """Keeps, per class, the examples whose early-training prediction error `||p - y||_2` is largest."""

    config_class = EL2NConfig

    def network_scores(self, context: SelectionContext, network: nn.Module) -> torch.Tensor:
        return self.prediction_error(context.logits(network)).norm(dim=-1)


@register_method("grand")
class GraNd(EarlyTrainingScore):
    """Keeps, per class, the examples whose loss gradient is largest (at initialisation by default).

    The norm is that of the gradient w.r.t. the classification head (a linear layer on the embedding), exact in
    closed form: for `logits = W h + b`, `dL/dW = (p - y) h^T` and `dL/db = p - y`, so the norm is
    `||p - y|| * sqrt(||h||^2 + 1)`. DeepCore scores the same last-layer gradient; the paper takes every parameter's,
    which costs a per-example backward pass through the whole network.
    """

    config_class = GraNdConfig

    def network_scores(self, context: SelectionContext, network: nn.Module) -> torch.Tensor:
        error = self.prediction_error(context.logits(network)).norm(dim=-1)
        embedding = context.features(network).float()
        return error * (embedding.pow(2).sum(-1) + 1.0).sqrt()
