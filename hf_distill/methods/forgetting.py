"""Forgetting events (Toneva, Sordoni, Combes, Trischler, Bengio & Gordon, "An Empirical Study of Example
Forgetting during Deep Neural Network Learning", ICLR 2019): while a network trains on the whole real split, count
for every example how often it goes from classified correctly to misclassified; keep the most forgotten."""

from dataclasses import dataclass, field

import torch

from ..registry import register_method
from ..training import TrainingCallback
from .base import SelectionContext
from .coreset import ScoredCoreset, ScoredCoresetConfig


@dataclass
class ForgettingConfig(ScoredCoresetConfig):
    """Forgetting-event counts over `selection_epochs` epochs of training on the whole real split."""

    method: str = field(default="forgetting", init=False, metadata={"help": "Forgetting events."})

    def __post_init__(self):
        super().__post_init__()
        if self.selection_epochs < 2:
            raise ValueError(
                "forgetting counts events between presentations of an example, so it needs selection_epochs >= 2 "
                f"(the paper: 200), got {self.selection_epochs}."
            )


class ForgettingEvents(TrainingCallback):
    """Counts, per example, the presentations at which it is misclassified after having been classified correctly
    at its previous presentation (the prediction on its augmented input, before the batch's update, as the paper).

    Args:
        labels (`torch.LongTensor` of shape `(N,)`): The labels of the training rows.
    """

    def __init__(self, labels: torch.Tensor):
        self.labels = labels.cpu()
        self.events = torch.zeros(len(labels))
        self.correct_before = torch.zeros(len(labels), dtype=torch.bool)
        self.ever_learned = torch.zeros(len(labels), dtype=torch.bool)

    def on_batch_end(self, epoch: int, rows: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> None:
        rows = rows.cpu()
        correct = logits.argmax(-1).cpu() == self.labels[rows]
        self.events[rows] += (self.correct_before[rows] & ~correct).float()
        self.correct_before[rows] = correct
        self.ever_learned[rows] |= correct

    def scores(self) -> torch.Tensor:
        """Forgetting events per example; never-learned examples count as forgotten most (the paper's convention)."""
        return torch.where(self.ever_learned, self.events, torch.full_like(self.events, float("inf")))


@register_method("forgetting")
class Forgetting(ScoredCoreset):
    """Keeps, per class, the examples forgotten most often during training (or, `keep="lowest"`, the unforgettable)."""

    config_class = ForgettingConfig
    paper = {
        "title": "An Empirical Study of Example Forgetting during Deep Neural Network Learning",
        "authors": "Mariya Toneva, Alessandro Sordoni, Remi Tachet des Combes, Adam Trischler, Yoshua Bengio, "
        "Geoffrey J. Gordon",
        "year": "2019",
        "url": "https://arxiv.org/abs/1812.05159",
        "bibtex": (
            "@inproceedings{toneva2019empirical,\n"
            "  title={An Empirical Study of Example Forgetting during Deep Neural Network Learning},\n"
            "  author={Toneva, Mariya and Sordoni, Alessandro and Combes, Remi Tachet des and Trischler, Adam and "
            "Bengio, Yoshua and Gordon, Geoffrey J.},\n"
            "  booktitle={International Conference on Learning Representations (ICLR)},\n"
            "  year={2019}\n}"
        ),
    }

    def scores(self, context: SelectionContext) -> torch.Tensor:
        events = ForgettingEvents(self.train_data.labels)
        context.network(epochs=self.config.selection_epochs, callbacks=[events], key="forgetting")
        return events.scores()
