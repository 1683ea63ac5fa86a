"""Distribution matching (DM): Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023.

Each iteration draws a fresh randomly initialised network and matches, class by class, the mean embedding of
augmented real images with the mean embedding of the identically augmented synthetic images.

With `feature_layers` the means are matched at several depths of the network (the layer-wise alignment of CAFE,
Wang et al., CVPR 2022), not only at the embedding the classifier sees. With `network_pool_path` some iterations
embed with partly trained networks (snapshots of expert trajectories) instead of a fresh one: the model sampling of
IDM (Zhao et al., "Improved Distribution Matching for Dataset Condensation", CVPR 2023), whose networks are trained
a few hundred steps on the real data, without IDM's training of a network queue during distillation.

On text the embedding network is the modality's pretrained, frozen encoder (its mean-pooled sentence embedding, the
one the text evaluation protocol's linear classifier sees), and the learned examples are input embeddings.
"""

import warnings
from dataclasses import dataclass, field

import torch

from ..config import SyntheticOptimizationConfig
from ..modeling import batch_norm_layers, build_model, reinitialize_
from ..registry import register_method
from ..seeding import derive_generator
from ..synthetic import SyntheticSet
from ..trajectories import ExpertTrajectories
from .base import DistillationMethod, features_in_chunks


@dataclass
class DistributionMatchingConfig(SyntheticOptimizationConfig):
    """Distribution matching. Defaults are the paper's (Sec. 4.1 and the authors' `main_DM.py`)."""

    method: str = field(default="dm", init=False, metadata={"help": "Distribution matching."})
    num_iterations: int = field(default=20000, metadata={"help": "Iterations (paper: 20,000)."})
    lr_images: float = field(default=1.0, metadata={"help": "SGD learning rate on pixels (paper: 1.0)."})
    momentum_images: float = field(default=0.5, metadata={"help": "SGD momentum on pixels (paper: 0.5)."})
    batch_real: int = field(default=256, metadata={"help": "Real images per class per iteration (paper: 256)."})
    feature_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Hidden states whose class means are matched (multi-layer DM; indices as in "
            "`extract_features`, e.g. [0, 1, 2] for every block of ConvNet-3, negatives count from the end). "
            "Each layer's squared distance is scaled by (size of the last listed layer / its size), so wide early "
            "layers do not outweigh the rest, and [-1] is the paper's single-layer loss on a ConvNet. Default: the "
            "embedding only (the paper)."
        },
    )
    network_pool_path: str | None = field(
        default=None,
        metadata={
            "help": "Expert trajectories (a folder written by `hf-distill train-experts`, or a Hub repository: the "
            "experts MTT reads) to embed with besides fresh networks. Each iteration draws an epoch e uniformly from "
            "0..network_pool_max_epoch: e = 0 is a freshly initialised network (the paper), e >= 1 a random "
            "expert's parameters after e epochs on the real data (IDM's model sampling: partly trained networks "
            "embed more discriminatively). Default: fresh networks only (the paper)."
        },
    )
    network_pool_max_epoch: int = field(
        default=2,
        metadata={
            "help": "Latest expert epoch drawn with network_pool_path (IDM's networks are trained up to a few "
            "epochs' worth of steps)."
        },
    )
    real_forward_chunk: int | None = field(
        default=None,
        metadata={"help": "Deprecated alias of forward_chunk (it used to apply to the real pass only)."},
    )

    def __post_init__(self):
        if self.real_forward_chunk is not None:
            warnings.warn(
                "real_forward_chunk is deprecated: use forward_chunk (it chunks the synthetic pass too).",
                FutureWarning,
                stacklevel=3,
            )
            self.forward_chunk, self.real_forward_chunk = self.real_forward_chunk, None
        super().__post_init__()  # validates forward_chunk, the alias's value included
        if self.feature_layers is not None and len(self.feature_layers) == 0:
            raise ValueError("feature_layers must list at least one hidden state index, or be None (the embedding).")
        if self.network_pool_max_epoch < 1:
            raise ValueError(
                f"network_pool_max_epoch={self.network_pool_max_epoch}: it must be at least 1 (epoch 0 is the fresh "
                "network every iteration already uses; leave network_pool_path unset for fresh networks only)."
            )


@register_method("dm")
class DistributionMatching(DistillationMethod):
    """Single-layer distribution matching on the embedding the classifier head sees."""

    config_class = DistributionMatchingConfig
    modalities = ("image", "text")
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
        self.frozen_class_means = self._frozen_class_means()
        if self.frozen_class_means is not None:
            return
        # One network, re-drawn in place each iteration: building a model object per iteration costs more
        # than re-drawing its weights. Only the synthetic pixels need gradients.
        self.network = self.prepare_network(build_model(self.model_config).requires_grad_(False))
        self.features = self.feature_function(self.network, self.config.feature_layers)
        # Batch statistics must not depend on how a batch is split into forward passes.
        self.chunk = None if batch_norm_layers(self.network) else self.config.forward_chunk
        self.network_pool = None
        if self.config.network_pool_path:
            self.network_pool = ExpertTrajectories.for_network(
                self.config.network_pool_path,
                self.network,
                self.train_data,
                max_epoch=self.config.network_pool_max_epoch,
                description="the DM network",
            )

    def _frozen_class_means(self) -> torch.Tensor | None:
        """The class means of the real embeddings when the modality embeds with a pretrained, frozen model (text),
        `(num_classes, D)`; `None` when each iteration draws a network (images).

        A frozen network never changes, so the real side of the loss is a constant: it is computed once, over the
        whole split (exactly the expectation that DM's sampled real batches estimate).
        """
        features = self.frozen_embedding
        if features is None:
            return None
        if self.config.feature_layers is not None or self.config.network_pool_path:
            raise ValueError(
                f"feature_layers and network_pool_path need networks of the run's architecture; the "
                f"{self.modality.name} modality embeds with its frozen pretrained encoder: leave them unset."
            )
        return torch.stack([features[rows].float().mean(dim=0) for rows in self.train_data.indices_by_class()])

    def _frozen_encoder_loss(self, synthetic: SyntheticSet, classes: list[int]) -> torch.Tensor:
        """DM's loss against the constant class means of a frozen encoder (see [`_frozen_class_means`])."""
        device = synthetic.images.device
        with self.autocast(device):
            syn_features = self.network_inputs(synthetic.images_of(classes)).float()
        syn_means = syn_features.view(len(classes), synthetic.images_per_class, -1).mean(dim=1)
        return ((self.frozen_class_means[classes].to(device) - syn_means) ** 2).sum()

    def draw_network(self, iteration: int, device: torch.device) -> torch.nn.Module:
        """The embedding network of `iteration`: a fresh draw, or (with `network_pool_path`) an expert snapshot.

        Parameters are written in place into one network object, so the compiled feature function is reused.
        """
        config = self.config
        network = self.network.to(device)
        if self.network_pool is not None:
            generator = derive_generator(config.seed, iteration, "network_pool")
            epoch = int(torch.randint(config.network_pool_max_epoch + 1, (1,), generator=generator))
            if epoch > 0:
                expert = int(torch.randint(self.network_pool.num_experts, (1,), generator=generator))
                return self.network_pool.load_into(network, expert, epoch)
        return reinitialize_(network, derive_generator(config.seed, iteration, "network"))

    def chunked_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """`self.features` of `images` in passes of `forward_chunk` images, one `(N, D_l)` tensor per layer."""
        return features_in_chunks(self.features, images, self.chunk)

    def loss(self, synthetic: SyntheticSet, classes: list[int], iteration: int, update: int = 0) -> torch.Tensor:
        if self.frozen_class_means is not None:
            return self._frozen_encoder_loss(synthetic, classes)
        config = self.config
        device = synthetic.images.device
        network = self.draw_network(iteration, device)
        network.train()

        n_real, n_syn = config.batch_real, synthetic.images_per_class
        real = self.train_data.images[self.sample_real(classes, n_real, iteration)].to(device)
        syn = synthetic.images_of(classes)
        real, syn = self.siamese_augment(real, syn, classes, n_real, n_syn, iteration)
        real, syn = self.prepare_inputs(real), self.prepare_inputs(syn)

        with self.autocast(device):
            with torch.no_grad():
                real_layers = self.chunked_features(real)
            syn_layers = self.chunked_features(syn)
        last_size = real_layers[-1].shape[1]
        loss = 0.0
        for real_features, syn_features in zip(real_layers, syn_layers):
            # Means and the distance in float32 whatever the forward's precision.
            real_means = real_features.float().view(len(classes), n_real, -1).mean(dim=1)
            syn_means = syn_features.float().view(len(classes), n_syn, -1).mean(dim=1)
            # Sum over classes as the paper does: each class's pixels get the gradient of their own term.
            loss = loss + ((real_means - syn_means) ** 2).sum() * (last_size / real_features.shape[1])
        return loss
