"""k-center greedy (Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
ICLR 2018): per class, repeatedly add the example farthest from every example already picked, which minimises (to a
factor 2) the largest distance from any example of the class to its nearest picked one."""

from dataclasses import dataclass, field

import torch

from ..registry import register_method
from .coreset import CoresetConfig, EmbeddingCoreset


@dataclass
class KCenterConfig(CoresetConfig):
    """k-center greedy selection in the embedding of a network of the run's architecture."""

    method: str = field(default="k_center", init=False, metadata={"help": "k-center greedy."})


def k_center_order(features: torch.Tensor, k: int) -> torch.LongTensor:
    """The first `k` rows k-center greedy picks from `features` `(n, D)`.

    The first is the row nearest the mean (the greedy rule needs a first center: DeepCore draws it at random; the
    nearest-to-mean start makes IPC 1 a medoid, as herding's first pick, and keeps the selection seed-free), then
    each next row is the one whose distance to its nearest picked row is largest.
    """
    first = int((features - features.mean(0)).norm(dim=1).argmin())
    order = [first]
    nearest = (features - features[first]).norm(dim=1)
    nearest[first] = -1.0  # never picked twice, even among duplicate rows (all at distance 0)
    for _ in range(k - 1):
        index = int(nearest.argmax())
        order.append(index)
        nearest = torch.minimum(nearest, (features - features[index]).norm(dim=1))
        nearest[order] = -1.0
    return torch.tensor(order, dtype=torch.long)


@register_method("k_center")
class KCenter(EmbeddingCoreset):
    """Keeps, per class, rows that cover its embedding: every row is close to a kept one."""

    config_class = KCenterConfig
    paper = {
        "title": "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
        "authors": "Ozan Sener, Silvio Savarese",
        "year": "2018",
        "url": "https://arxiv.org/abs/1708.00489",
        "bibtex": (
            "@inproceedings{sener2018active,\n"
            "  title={Active Learning for Convolutional Neural Networks: A Core-Set Approach},\n"
            "  author={Sener, Ozan and Savarese, Silvio},\n"
            "  booktitle={International Conference on Learning Representations (ICLR)},\n"
            "  year={2018}\n}"
        ),
    }

    def choose(self, features: torch.Tensor, k: int) -> torch.LongTensor:
        return k_center_order(features, k)
