"""Distribution matching (DM): Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023.

Each iteration draws a fresh randomly initialised network and matches, class by class, the mean embedding of
augmented real images with the mean embedding of the identically augmented synthetic images.
"""

from dataclasses import dataclass, field

import torch

from ..config import SyntheticOptimizationConfig
from ..modeling import build_model, reinitialize_
from ..seeding import derive_generator
from ..synthetic import SyntheticSet
from .base import DistillationMethod, register_method


@dataclass
class DistributionMatchingConfig(SyntheticOptimizationConfig):
    """Distribution matching. Defaults are the paper's (Sec. 4.1 and the authors' `main_DM.py`)."""

    method: str = field(default="dm", init=False, metadata={"help": "Distribution matching."})
    num_iterations: int = field(default=20000, metadata={"help": "Iterations (paper: 20,000)."})
    lr_images: float = field(default=1.0, metadata={"help": "SGD learning rate on pixels (paper: 1.0)."})
    momentum_images: float = field(default=0.5, metadata={"help": "SGD momentum on pixels (paper: 0.5)."})
    batch_real: int = field(default=256, metadata={"help": "Real images per class per iteration (paper: 256)."})
    real_forward_chunk: int = field(
        default=256,
        metadata={
            "help": "Real images per forward pass. Results do not depend on it; 256 is fastest on CPU (cache reuse)."
        },
    )


@register_method("dm")
class DistributionMatching(DistillationMethod):
    """Single-layer distribution matching on the embedding the classifier head sees."""

    config_class = DistributionMatchingConfig
    uses_labels = False  # embeddings are matched class by class; labels never enter the loss
    paper = {
        "title": "Dataset Condensation with Distribution Matching",
        "authors": "Bo Zhao, Hakan Bilen",
        "year": "2023",
        "url": "https://arxiv.org/abs/2110.04181",
        "bibtex": (
            "@inproceedings{zhao2023distribution,\n"
            "  title={Dataset Condensation with Distribution Matching},\n"
            "  author={Zhao, Bo and Bilen, Hakan},\n"
            "  booktitle={IEEE/CVF Winter Conference on Applications of Computer Vision (WACV)},\n"
            "  year={2023}\n}"
        ),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # One network, re-drawn in place each iteration: building a model object per iteration costs more
        # than re-drawing its weights. Only the synthetic pixels need gradients.
        self.network = self.prepare_network(build_model(self.model_config).requires_grad_(False))
        self.features = self.feature_function(self.network)

    def loss(self, synthetic: SyntheticSet, classes: list[int], iteration: int, update: int = 0) -> torch.Tensor:
        config = self.config
        device = synthetic.images.device
        network = reinitialize_(self.network.to(device), derive_generator(config.seed, iteration, "network"))
        network.train()

        n_real, n_syn = config.batch_real, synthetic.images_per_class
        real = self.train_data.images[self.sample_real(classes, n_real, iteration)].to(device)
        syn = synthetic.images_of(classes)
        real, syn = self.siamese_augment(real, syn, classes, n_real, n_syn, iteration)
        real, syn = self.prepare_inputs(real), self.prepare_inputs(syn)

        with self.autocast(device):
            with torch.no_grad():
                real_features = torch.cat([self.features(chunk) for chunk in real.split(config.real_forward_chunk)])
            syn_features = self.features(syn)
        # Means and the distance in float32 whatever the forward's precision.
        real_means = real_features.float().view(len(classes), n_real, -1).mean(dim=1)
        syn_means = syn_features.float().view(len(classes), n_syn, -1).mean(dim=1)
        # Sum over classes as the paper does: each class's pixels get the gradient of their own term.
        return ((real_means - syn_means) ** 2).sum()
