"""Performance matching by kernel ridge regression: RFAD (Loo et al., NeurIPS 2022) and FRePo (Zhou et al., NeurIPS
2022).

Meta-learning optimises a synthetic set for how well a model trained on it does on real data. These methods make
the inner training exact and cheap: a linear readout on fixed features `phi`, fitted to the synthetic set `S` (targets
`Y_S`) by ridge regression, predicts for real images `T`

    Y_T = K_TS (K_SS + ridge * tr(K_SS) / |S| * I)^-1 Y_S,    K_AB = a * phi(A) phi(B)^T + b,

which is differentiable in the synthetic images (and learned targets); they are optimised so that `Y_T` matches the
real labels. The methods differ in where `phi` comes from:

- `rfad`: random features. `num_models` freshly drawn networks per iteration (He-normal weights, as the NNGP
  kernel of the ConvNet assumes), their embeddings concatenated: a Monte-Carlo estimate of the ConvNet's NNGP
  kernel at a cost linear in `|S|`; the readout's variances `a = 2`, `b = 0.01`; Platt-scaled cross-entropy loss.
- `frepo`: neural features. One network drawn from a pool of `num_models` networks that are themselves trained
  online on the synthetic set (one Adam step each time one is drawn, reset after `max_online_updates` steps), so
  the features range from random to trained; the squared loss, and a margin term on learned targets.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SyntheticOptimizationConfig
from ..modeling import batch_norm_layers, build_model, convnet_variant, reinitialize_
from ..registry import register_method
from ..seeding import derive_generator
from ..synthetic import SyntheticSet
from ..training import model_forward
from .base import DistillationMethod, features_in_chunks

#: Losses on the kernel's predictions for the real batch.
KERNEL_LOSSES = ("mse", "platt")
#: What Adam keeps per parameter (saved with FRePo's pool).
ADAM_STATE = ("exp_avg", "exp_avg_sq", "step")
#: How the kernel networks' weights are drawn.
KERNEL_INITS = ("default", "nngp")


def kernel_ridge_predict(
    support: torch.Tensor,
    support_targets: torch.Tensor,
    query: torch.Tensor,
    ridge: float = 1e-6,
    weight_variance: float = 1.0,
    bias_variance: float = 0.0,
) -> torch.Tensor:
    """Kernel ridge regression fitted on `(support, support_targets)`, evaluated at `query`.

    The kernel is `weight_variance * <x, y> + bias_variance` on the features (a linear readout with those prior
    variances), the ridge `ridge * tr(K_SS) / |S|` (relative to the kernel's scale, as KIP, RFAD and FRePo do). The
    solve runs in float64: with a small ridge, `K_SS` is badly conditioned.

    Args:
        support (`torch.Tensor` of shape `(S, D)`): Features of the examples the regression is fitted on.
        support_targets (`torch.Tensor` of shape `(S, C)`): Their targets.
        query (`torch.Tensor` of shape `(Q, D)`): Features of the examples to predict.
        ridge (`float`, *optional*, defaults to 1e-6): Regularisation, relative to the mean diagonal of `K_SS`.
        weight_variance (`float`, *optional*, defaults to 1.0), bias_variance (`float`, *optional*, defaults to 0.0):
            The readout's prior variances.

    Returns:
        `torch.Tensor` of shape `(Q, C)`, float32: the predictions (differentiable in all three inputs).
    """
    support, query = support.double(), query.double()
    k_ss = weight_variance * support @ support.T + bias_variance
    size = k_ss.shape[0]
    k_ss = k_ss + ridge * torch.diagonal(k_ss).sum() / size * torch.eye(size, dtype=k_ss.dtype, device=k_ss.device)
    weights = torch.linalg.solve(k_ss, support_targets.double())
    k_qs = weight_variance * query @ support.T + bias_variance
    return (k_qs @ weights).float()


def centred_one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """`one_hot(labels) - 1 / num_classes`: the regression targets of hard labels (KIP, RFAD, FRePo)."""
    return F.one_hot(labels, num_classes).float() - 1.0 / num_classes


def half_squared_error(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`0.5 * |predictions - targets|^2` summed over outputs, averaged over rows (FRePo's `mean_squared_loss`)."""
    return 0.5 * ((predictions.float() - targets) ** 2).sum(dim=1).mean()


def nngp_initialize_(network: nn.Module, generator: torch.Generator, bias_std: float = 0.1) -> nn.Module:
    """Re-draws `network` in place with the weights the NNGP kernel of a ReLU network assumes (RFAD's `models.py`).

    Convolution and linear weights are `N(0, 2 / fan_in)` (He-normal, so activations keep their scale through the
    layers), their biases `N(0, bias_std^2)`; any other parameter (e.g. normalisation) gets PyTorch's default. The
    draws come from `generator` (on the CPU) alone.
    """
    reinitialize_(network, generator)
    with torch.no_grad():
        for module in network.modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            weight = module.weight
            fan_in = weight[0].numel()
            weight.copy_(torch.randn(weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * bias_std)
    return network


@dataclass
class KernelRidgeConfig(SyntheticOptimizationConfig):
    """Settings every kernel-ridge-regression method shares."""

    optimizer: str = field(default="adam", metadata={"help": "Pixel optimiser (RFAD: AdaBelief; FRePo: LAMB)."})
    lr_images: float = field(default=1e-3, metadata={"help": "Learning rate on the synthetic pixels."})
    batch_real: int = field(
        default=100, metadata={"help": "Real images per class whose predictions are scored each iteration."}
    )
    num_models: int = field(default=8, metadata={"help": "Networks whose features define the kernel."})
    dsa_strategy: str = field(
        default="none",
        metadata={
            "help": "Siamese augmentation of the real batch and the synthetic set before the kernel (one transform "
            "per class, as dm/dsa): 'none' (RFAD, FRePo, KIP distil without augmentation), 'auto' or a strategy. "
            "The evaluation's augmentation is `eval_dsa_strategy`."
        },
    )
    ridge: float = field(default=1e-6, metadata={"help": "Ridge, relative to the mean diagonal of K_SS."})
    kernel_loss: str = field(
        default="mse",
        metadata={
            "help": "Loss on the real batch's predictions: 'mse' (half the squared error to the centred one-hot "
            "labels, summed over classes) or 'platt' (cross-entropy of the predictions times a learned temperature)."
        },
    )
    lr_temperature: float = field(
        default=1e-2, metadata={"help": "Learning rate of the Platt temperature's log (RFAD: 1e-2)."}
    )
    kernel_net_width: int | None = field(
        default=None, metadata={"help": "Width of the kernel's ConvNets (default: net_width)."}
    )
    kernel_net_norm: str | None = field(
        default="none",
        metadata={"help": "Normalisation of the kernel's ConvNets (RFAD, FRePo: none); None keeps net_norm."},
    )
    target_margin: bool = field(
        default=False,
        metadata={
            "help": "With learned regression targets, add FRePo's margin term: mean over rows of "
            "-min(top1 - top2, 1 / num_classes), so every learned target keeps its class ahead."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.kernel_loss not in KERNEL_LOSSES:
            raise ValueError(f"kernel_loss={self.kernel_loss!r}: expected one of {list(KERNEL_LOSSES)}.")
        if self.num_models < 1:
            raise ValueError(f"num_models={self.num_models}: the kernel needs at least one network.")
        if self.ridge <= 0:
            raise ValueError(f"ridge={self.ridge}: it must be > 0 (K_SS alone is singular when features repeat).")
        if self.lr_temperature <= 0:
            raise ValueError(f"lr_temperature must be > 0, got {self.lr_temperature}.")


class KernelRidgeMethod(DistillationMethod):
    """The loss every KRR method shares; subclasses say where the features come from ([`kernel_features`]).

    The loss couples every class (one regression over the whole set), so each process computes all of it.
    """

    class_separable = False
    #: The readout's prior variances `(a, b)` of the kernel `a * <x, y> + b`.
    readout_variances: tuple[float, float] = (1.0, 0.0)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.config
        self.kernel_config = convnet_variant(self.model_config, config.kernel_net_width, config.kernel_net_norm)
        self.log_temperature = nn.Parameter(torch.zeros(())) if config.kernel_loss == "platt" else None
        self.networks: list[nn.Module] = []
        self.embeddings = []

    def build_kernel_networks(self, count: int) -> None:
        """`count` networks of the kernel's architecture (eval mode, parameters frozen: gradients reach the inputs
        only) and their embedding functions (compiled once each, when the config asks for it)."""
        self.networks = [
            self.prepare_network(build_model(self.kernel_config)).requires_grad_(False).eval() for _ in range(count)
        ]
        self.embeddings = [self.feature_function(network) for network in self.networks]
        # Batch statistics must not depend on how a batch is split into forward passes.
        self.chunk = None if batch_norm_layers(self.networks[0]) else self.config.forward_chunk

    def embed(self, index: int, inputs: torch.Tensor) -> torch.Tensor:
        """Network `index`'s embedding of `inputs`, `(N, D)` float32, in passes of `forward_chunk`."""
        with self.autocast(inputs.device):
            (features,) = features_in_chunks(self.embeddings[index], self.prepare_inputs(inputs), self.chunk)
        return features.float()

    def kernel_features(
        self, synthetic: torch.Tensor, real: torch.Tensor, iteration: int | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features `(synthetic, real)` of iteration `iteration` (or of a named draw, e.g. `"evaluation"`):
        differentiable in `synthetic`; `real`'s detached."""
        raise NotImplementedError

    def support_targets(self, synthetic: SyntheticSet) -> torch.Tensor:
        """The regression targets of the synthetic set: learned ones, else centred one-hot (soft labels centred
        likewise)."""
        if synthetic.target_type == "regression":
            return synthetic.regression_targets
        if synthetic.target_type == "soft":
            return synthetic.targets() - 1.0 / synthetic.num_classes
        return centred_one_hot(synthetic.labels, synthetic.num_classes)

    def loss(self, synthetic: SyntheticSet, classes: list[int], iteration: int, update: int = 0) -> torch.Tensor:
        config = self.config
        device = synthetic.images.device
        rows = self.sample_real(classes, config.batch_real, iteration)
        real = self.train_data.images[rows].to(device)
        labels = self.train_data.labels[rows].to(device)
        real, syn = self.siamese_augment(
            real, synthetic.images, classes, config.batch_real, synthetic.images_per_class, iteration
        )
        syn_features, real_features = self.kernel_features(syn, real, iteration)
        a, b = self.readout_variances
        predictions = kernel_ridge_predict(
            syn_features, self.support_targets(synthetic), real_features, config.ridge, a, b
        )
        if self.log_temperature is not None:
            loss = F.cross_entropy(predictions * self.log_temperature.to(device).exp(), labels)
        else:
            loss = half_squared_error(predictions, centred_one_hot(labels, synthetic.num_classes))
        if config.target_margin and synthetic.target_type == "regression":
            top2 = synthetic.regression_targets.topk(2, dim=1).values
            loss = loss - (top2[:, 0] - top2[:, 1]).clamp(max=1.0 / synthetic.num_classes).mean()
        return loss

    @torch.no_grad()
    def kernel_regression_accuracy(
        self, synthetic: SyntheticSet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000
    ) -> float:
        """Test accuracy (in %) of the kernel's ridge regression fitted on the synthetic set, as KIP and RFAD report
        beside finite networks: the method's own kernel, drawn once under the key `"evaluation"`."""
        a, b = self.readout_variances
        correct = 0
        device = synthetic.images.device
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device)
            syn_features, features = self.kernel_features(synthetic.images.detach(), batch, "evaluation")
            predictions = kernel_ridge_predict(
                syn_features, self.support_targets(synthetic).detach(), features, self.config.ridge, a, b
            )
            correct += int((predictions.argmax(dim=1).cpu() == labels[start : start + batch_size]).sum())
        return 100.0 * correct / len(images)

    def evaluate_set(self, synthetic: SyntheticSet, test_images: torch.Tensor, test_labels: torch.Tensor) -> dict:
        accuracy = self.kernel_regression_accuracy(synthetic, test_images, test_labels)
        return {
            "kernel_regression": {
                "mean": accuracy,
                "std": 0.0,
                "accuracies": [accuracy],
                "num_models": self.config.num_models,
                "num_images": synthetic.images.shape[0],
            }
        }

    def optimizer_parameters(self, synthetic: SyntheticSet) -> list[dict]:
        groups = super().optimizer_parameters(synthetic)
        if self.log_temperature is not None:
            groups.append({"params": [self.log_temperature], "lr": self.config.lr_temperature})
        return groups

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.log_temperature is None else {"log_temperature": self.log_temperature.detach().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        if self.log_temperature is not None:
            if "log_temperature" not in state:
                raise ValueError("The checkpoint has no Platt temperature: it was written with another kernel_loss.")
            with torch.no_grad():
                self.log_temperature.copy_(state.pop("log_temperature"))
        super().load_state_dict(state)


@dataclass
class RandomFeatureConfig(KernelRidgeConfig):
    """RFAD: kernel ridge regression on random features. Defaults are the authors' `run_distillation.py` (Loo et
    al., 2022) unless said: they run until the validation loss stops improving (up to 100,000 iterations)."""

    method: str = field(default="rfad", init=False, metadata={"help": "Random feature approximation (RFAD)."})
    num_iterations: int = field(default=10000, metadata={"help": "Iterations (authors: early stopping)."})
    batch_real: int = field(
        default=512, metadata={"help": "Real images per class per iteration (authors: 4 x 1,280 in all)."}
    )
    num_models: int = field(default=8, metadata={"help": "Random networks per iteration (authors: 8)."})
    ridge: float = field(default=5e-3, metadata={"help": "Relative ridge (authors' --jit: 5e-3)."})
    kernel_loss: str = field(default="platt", metadata={"help": "'platt' (authors' --platt) or 'mse'."})
    kernel_net_width: int | None = field(
        default=256, metadata={"help": "Width of the random ConvNets (authors: 2 x 128)."}
    )
    kernel_init: str = field(
        default="nngp",
        metadata={"help": "'nngp': He-normal weights, N(0, 0.01) biases (the authors'); 'default': PyTorch's."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.kernel_init not in KERNEL_INITS:
            raise ValueError(f"kernel_init={self.kernel_init!r}: expected one of {list(KERNEL_INITS)}.")


@register_method("rfad")
class RandomFeatureDistillation(KernelRidgeMethod):
    """RFAD: the NNGP kernel of a ConvNet estimated from the embeddings of a few random finite networks."""

    config_class = RandomFeatureConfig
    readout_variances = (2.0, 0.01)  # the authors' readout: K = 2 <phi, phi'> + 0.01
    paper = {
        "title": "Efficient Dataset Distillation using Random Feature Approximation",
        "authors": "Noel Loo, Ramin Hasani, Alexander Amini, Daniela Rus",
        "year": "2022",
        "url": "https://arxiv.org/abs/2210.12067",
        "bibtex": (
            "@inproceedings{loo2022efficient,\n"
            "  title={Efficient Dataset Distillation using Random Feature Approximation},\n"
            "  author={Loo, Noel and Hasani, Ramin and Amini, Alexander and Rus, Daniela},\n"
            "  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},\n"
            "  year={2022}\n}"
        ),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # One object per network: each iteration's graph holds every network's parameters until backward.
        self.build_kernel_networks(self.config.num_models)

    def kernel_features(
        self, synthetic: torch.Tensor, real: torch.Tensor, iteration: int | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        initialize = nngp_initialize_ if config.kernel_init == "nngp" else reinitialize_
        syn_parts, real_parts = [], []
        for index, network in enumerate(self.networks):
            initialize(network.to(synthetic.device), derive_generator(config.seed, iteration, "kernel", index))
            with torch.no_grad():
                real_parts.append(self.embed(index, real))
            syn_parts.append(self.embed(index, synthetic))
        # Scaled so the kernel is the mean over networks and features, whatever their number.
        scale = (len(self.networks) * syn_parts[0].shape[1]) ** -0.5
        return torch.cat(syn_parts, dim=1) * scale, torch.cat(real_parts, dim=1) * scale


@dataclass
class FeatureRegressionConfig(KernelRidgeConfig):
    """FRePo: kernel ridge regression on the features of a pool of networks trained online. Defaults are the
    authors' `script/distill.py` (Zhou et al., 2022) unless said."""

    method: str = field(default="frepo", init=False, metadata={"help": "Neural feature regression with pooling."})
    num_iterations: int = field(default=500000, metadata={"help": "Iterations (authors: 500,000 on a GPU)."})
    lr_images: float = field(default=3e-4, metadata={"help": "Learning rate on the pixels (authors: LAMB, 3e-4)."})
    batch_real: int = field(
        default=100, metadata={"help": "Real images per class per iteration (authors: 1,024 in all)."}
    )
    num_models: int = field(default=10, metadata={"help": "Networks in the pool (authors: 10)."})
    learn_regression_targets: bool = field(
        default=True, metadata={"help": "Learn the targets (authors' learn_label: true)."}
    )
    target_margin: bool = field(default=True, metadata={"help": "FRePo's margin term on learned targets."})
    max_online_updates: int = field(
        default=100, metadata={"help": "Online steps after which a pool network is re-drawn (authors: 100)."}
    )
    online_lr: float = field(default=3e-4, metadata={"help": "Adam learning rate of the pool's networks."})
    online_batch_size: int = field(
        default=500, metadata={"help": "Synthetic examples per online step (authors: min(|S|, 500))."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_online_updates < 1 or self.online_batch_size < 1 or self.online_lr <= 0:
            raise ValueError(
                f"max_online_updates ({self.max_online_updates}) and online_batch_size ({self.online_batch_size}) "
                f"must be >= 1 and online_lr ({self.online_lr}) > 0."
            )


@register_method("frepo")
class FeatureRegression(KernelRidgeMethod):
    """FRePo: one network of a pool embeds both sets each iteration, then takes one training step on the synthetic
    set (or is re-drawn once it has taken `max_online_updates`), so the pool spans training stages."""

    config_class = FeatureRegressionConfig
    paper = {
        "title": "Dataset Distillation using Neural Feature Regression",
        "authors": "Yongchao Zhou, Ehsan Nezhadarya, Jimmy Ba",
        "year": "2022",
        "url": "https://arxiv.org/abs/2206.00719",
        "bibtex": (
            "@inproceedings{zhou2022dataset,\n"
            "  title={Dataset Distillation using Neural Feature Regression},\n"
            "  author={Zhou, Yongchao and Nezhadarya, Ehsan and Ba, Jimmy},\n"
            "  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},\n"
            "  year={2022}\n}"
        ),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.config
        self.build_kernel_networks(config.num_models)
        self.pool_optimizers = [None] * config.num_models
        for index in range(config.num_models):
            self._redraw(index, derive_generator(config.seed, "pool", index))
        # Staggered ages (the authors' init_step), so the networks are not all re-drawn at once.
        self.pool_steps = [config.max_online_updates // config.num_models * i for i in range(config.num_models)]

    def _redraw(self, index: int, generator: torch.Generator) -> None:
        reinitialize_(self.networks[index], generator)
        self._new_optimizer(index)

    def _new_optimizer(self, index: int) -> torch.optim.Optimizer:
        """A fresh Adam for pool network `index` (after a re-draw, or to be filled from a checkpoint)."""
        self.pool_optimizers[index] = torch.optim.Adam(self.networks[index].parameters(), lr=self.config.online_lr)
        return self.pool_optimizers[index]

    def draw(self, iteration: int | str) -> int:
        """The pool index of iteration `iteration` (uniform, from the seed)."""
        generator = derive_generator(self.config.seed, iteration, "pool")
        return int(torch.randint(self.config.num_models, (1,), generator=generator))

    def kernel_features(
        self, synthetic: torch.Tensor, real: torch.Tensor, iteration: int | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.draw(iteration)
        self.networks[index].to(synthetic.device).eval()
        with torch.no_grad():
            real_features = self.embed(index, real)
        return self.embed(index, synthetic), real_features

    def after_update(self, synthetic: SyntheticSet, iteration: int, update: int) -> None:
        """Trains the drawn network one step on the updated set (the squared loss to its targets), or re-draws it."""
        config, index = self.config, self.draw(iteration)
        if self.pool_steps[index] > config.max_online_updates:
            self._redraw(index, derive_generator(config.seed, iteration, "pool-redraw"))
            self.pool_steps[index] = 0
            return
        network = self.networks[index].to(synthetic.images.device).train().requires_grad_(True)
        size = synthetic.images.shape[0]
        rows = torch.randperm(size, generator=derive_generator(config.seed, iteration, "online"))
        rows = rows[: config.online_batch_size].to(synthetic.images.device)
        inputs = synthetic.images.detach()[rows]
        targets = self.support_targets(synthetic).detach()[rows]
        optimizer = self.pool_optimizers[index]
        with self.autocast(inputs.device):
            outputs = model_forward(network, self.modality.input_name)(self.prepare_inputs(inputs))
        loss = half_squared_error(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        network.requires_grad_(False)
        self.pool_steps[index] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The pool: every network's parameters, its Adam moments and step, and its age."""
        state = super().state_dict()
        state["pool.steps"] = torch.tensor(self.pool_steps, dtype=torch.long)
        for index, (network, optimizer) in enumerate(zip(self.networks, self.pool_optimizers)):
            for name, parameter in network.named_parameters():
                state[f"pool.{index}.param.{name}"] = parameter.detach().cpu().clone()
                moments = optimizer.state.get(parameter, {})
                for key in ADAM_STATE:
                    if key in moments:
                        state[f"pool.{index}.{key}.{name}"] = torch.as_tensor(moments[key]).detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        if "pool.steps" not in state or len(state["pool.steps"]) != self.config.num_models:
            raise ValueError(f"The checkpoint holds no pool of {self.config.num_models} networks: was it frepo's?")
        self.pool_steps = [int(step) for step in state.pop("pool.steps")]
        for index, network in enumerate(self.networks):
            optimizer = self._new_optimizer(index)
            for name, parameter in network.named_parameters():
                with torch.no_grad():
                    parameter.copy_(state.pop(f"pool.{index}.param.{name}"))
                moments = {key: state.pop(f"pool.{index}.{key}.{name}", None) for key in ADAM_STATE}
                if moments["step"] is not None:
                    moments["step"] = moments["step"].float()
                    # Adam keeps its step count on the CPU (non-capturable), the moments beside the parameter.
                    optimizer.state[parameter] = {
                        key: value if key == "step" else value.to(parameter.device) for key, value in moments.items()
                    }
        super().load_state_dict(state)
