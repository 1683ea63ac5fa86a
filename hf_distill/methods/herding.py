"""Herding (Welling, "Herding Dynamical Weights to Learn", ICML 2009), as the coreset baseline of the DC/DSA/DM
papers and iCaRL (Rebuffi et al., CVPR 2017): per class, greedily add the example that keeps the running mean of
the selected embeddings closest to the class mean."""

from dataclasses import dataclass, field

import torch

from ..registry import register_method
from .coreset import CoresetConfig, EmbeddingCoreset


@dataclass
class HerdingConfig(CoresetConfig):
    """Herding selection in the embedding of a network of the run's architecture."""

    method: str = field(default="herding", init=False, metadata={"help": "Herding (greedy mean matching)."})


def herding_order(features: torch.Tensor, k: int) -> torch.LongTensor:
    """The first `k` rows herding picks from `features` `(n, D)`.

    Step `t` (from 1) picks the unselected `x` minimising `||t * mu - (S + x)||`, where `mu` is the mean of all rows
    and `S` the sum of those already picked: the running mean stays as close to `mu` as one more row allows.
    (DeepCore's `herding.py` takes the argmax of that distance; the DC/iCaRL rule is the argmin used here.)
    """
    mean = features.mean(0)
    picked_sum = torch.zeros_like(mean)
    available = torch.ones(len(features), dtype=torch.bool)
    order = []
    for t in range(1, k + 1):
        distances = (t * mean - picked_sum - features).norm(dim=1)
        distances[~available] = float("inf")
        index = int(distances.argmin())
        order.append(index)
        available[index] = False
        picked_sum += features[index]
    return torch.tensor(order, dtype=torch.long)


@register_method("herding")
class Herding(EmbeddingCoreset):
    """Keeps, per class, the rows whose embedding mean tracks the class mean best."""

    config_class = HerdingConfig
    paper = {
        "title": "Herding Dynamical Weights to Learn",
        "authors": "Max Welling",
        "year": "2009",
        "url": "https://dl.acm.org/doi/10.1145/1553374.1553517",
        "bibtex": (
            "@inproceedings{welling2009herding,\n"
            "  title={Herding Dynamical Weights to Learn},\n"
            "  author={Welling, Max},\n"
            "  booktitle={International Conference on Machine Learning (ICML)},\n"
            "  year={2009}\n}"
        ),
    }

    def choose(self, features: torch.Tensor, k: int) -> torch.LongTensor:
        return herding_order(features, k)
