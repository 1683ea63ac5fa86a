"""Coreset selection: methods that keep real rows instead of synthesising images."""

from dataclasses import dataclass, field

import torch

from ..config import DistillConfig
from ..registry import register_method
from .base import DistillationMethod, SelectionContext


@dataclass
class RandomSelectionConfig(DistillConfig):
    """A class-balanced random subset of the real training images: the baseline of every table."""

    method: str = field(default="random", init=False, metadata={"help": "Random real subset."})
    num_iterations: int = field(default=0, metadata={"help": "Unused: selection takes no iterations."})


@register_method("random")
class RandomSelection(DistillationMethod):
    """Keeps `images_per_class` real images per class, drawn uniformly without replacement."""

    config_class = RandomSelectionConfig
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
