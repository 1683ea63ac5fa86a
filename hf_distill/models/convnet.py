"""The ConvNet family of the dataset distillation literature (DC, DSA, DM, MTT, ...) as a `transformers` model.

[`ConvNetConfig`] / [`ConvNetForImageClassification`] save, push and load like any `transformers` model and are
registered with `AutoConfig` / `AutoModelForImageClassification`; [`default_convnet_config`] gives the papers'
settings for a dataset's geometry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

CONVNET_NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
CONVNET_ACTIVATIONS = ("relu", "leakyrelu", "sigmoid")
CONVNET_POOLINGS = ("avgpooling", "maxpooling", "none")


def _check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"Invalid {name}={value!r}; valid values are: {', '.join(repr(v) for v in valid)}.")


def as_height_width(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    if isinstance(image_size, Sequence) and len(image_size) == 2 and all(isinstance(s, int) for s in image_size):
        return int(image_size[0]), int(image_size[1])
    raise ValueError(f"image_size must be an int or a (height, width) pair of ints, got {image_size!r}.")


class ConvNetConfig(PretrainedConfig):
    r"""
    Configuration of the ConvNet used by the dataset distillation papers (`networks.py` / `ConvNet` in the DC, DSA,
    DM and MTT reference code).

    The network is `net_depth` blocks of `Conv2d(3x3) -> norm -> activation -> pooling` followed by a single linear
    classifier on the flattened feature map.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Number of input image channels.
        image_size (`int` or `tuple[int, int]`, *optional*, defaults to 32):
            Input resolution (square side, or `(height, width)`). Used to size the classifier.
        net_width (`int`, *optional*, defaults to 128):
            Number of channels of every convolution.
        net_depth (`int`, *optional*, defaults to 3):
            Number of convolutional blocks.
        net_norm (`str`, *optional*, defaults to `"instancenorm"`):
            One of `"instancenorm"` (`GroupNorm(width, width)`, what the papers call instance norm), `"batchnorm"`,
            `"layernorm"` (`GroupNorm(1, width)`), `"groupnorm"` (`GroupNorm(4, width)`) or `"none"`.
        net_act (`str`, *optional*, defaults to `"relu"`):
            One of `"relu"`, `"leakyrelu"` (slope 0.01) or `"sigmoid"`.
        net_pooling (`str`, *optional*, defaults to `"avgpooling"`):
            One of `"avgpooling"`, `"maxpooling"` (both 2x2, stride 2) or `"none"`.
        first_layer_padding (`int`, *optional*):
            Padding of the first convolution. Defaults to 3 for single-channel inputs (the reference code pads 28x28
            grayscale digits to an effective 32x32 this way) and 1 otherwise. Later convolutions always use 1.
        kwargs:
            Forwarded to [`~transformers.PretrainedConfig`] (e.g. `num_labels`, `id2label`). `num_labels` defaults
            to 10.

    Raises:
        `ValueError`: if an option is not one of the valid values, or if the pooling stack shrinks the feature map
        to nothing.
    """

    model_type = "hf_distill_convnet"

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int | Sequence[int] = 32,
        net_width: int = 128,
        net_depth: int = 3,
        net_norm: str = "instancenorm",
        net_act: str = "relu",
        net_pooling: str = "avgpooling",
        first_layer_padding: int | None = None,
        **kwargs,
    ):
        _check_choice("net_norm", net_norm, CONVNET_NORMS)
        _check_choice("net_act", net_act, CONVNET_ACTIVATIONS)
        _check_choice("net_pooling", net_pooling, CONVNET_POOLINGS)
        for name, value in (("num_channels", num_channels), ("net_width", net_width), ("net_depth", net_depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if first_layer_padding is not None and (not isinstance(first_layer_padding, int) or first_layer_padding < 0):
            raise ValueError(f"first_layer_padding must be None or a non-negative int, got {first_layer_padding!r}.")
        height, width = as_height_width(image_size)
        if height < 1 or width < 1:
            raise ValueError(f"image_size must be positive, got {image_size!r}.")

        self.num_channels = num_channels
        # JSON has no tuples: keep ints as ints and pairs as lists so that a save/load round trip compares equal.
        self.image_size = image_size if isinstance(image_size, int) else [height, width]
        self.net_width = net_width
        self.net_depth = net_depth
        self.net_norm = net_norm
        self.net_act = net_act
        self.net_pooling = net_pooling
        self.first_layer_padding = first_layer_padding
        # The papers' benchmarks are 10-way (MNIST, CIFAR-10, ...); only default when no label map is given so that
        # a saved `id2label` is never contradicted on reload.
        if "id2label" not in kwargs:
            kwargs.setdefault("num_labels", 10)
        super().__init__(**kwargs)

        # Validate the geometry now rather than at model construction, where the error would be less clear.
        channels, out_h, out_w = _convnet_feature_shape(self)
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"image_size={image_size!r} is too small for net_depth={net_depth} with net_pooling={net_pooling!r}: "
                f"the final feature map would be {out_h}x{out_w}. Reduce net_depth or use net_pooling='none'."
            )

    @property
    def resolved_first_layer_padding(self) -> int:
        """`int`: The padding actually used by the first convolution."""
        if self.first_layer_padding is not None:
            return self.first_layer_padding
        return 3 if self.num_channels == 1 else 1


def _convnet_feature_shape(config: ConvNetConfig) -> tuple[int, int, int]:
    """(channels, height, width) of the last block's output, computed from the layer arithmetic.

    The reference code special-cases 28x28 inputs by pretending they are 32x32; computing the shapes exactly also
    covers odd sizes (e.g. 8x8 with three pools -> 1x1) and non-default paddings.
    """
    height, width = as_height_width(config.image_size)
    for depth in range(config.net_depth):
        padding = config.resolved_first_layer_padding if depth == 0 else 1
        # 3x3 convolution, stride 1.
        height, width = height + 2 * padding - 2, width + 2 * padding - 2
        if config.net_pooling != "none":
            # 2x2 pooling with stride 2 floors odd sizes.
            height, width = height // 2, width // 2
    return config.net_width, height, width


def _make_norm(net_norm: str, width: int) -> nn.Module | None:
    if net_norm == "instancenorm":
        # Instance norm with affine parameters, written as GroupNorm exactly like the reference code.
        return nn.GroupNorm(width, width, affine=True)
    if net_norm == "batchnorm":
        return nn.BatchNorm2d(width, affine=True)
    if net_norm == "layernorm":
        return nn.GroupNorm(1, width, affine=True)
    if net_norm == "groupnorm":
        return nn.GroupNorm(4, width, affine=True)
    return None


def _make_act(net_act: str) -> nn.Module:
    if net_act == "relu":
        # In place, as the reference: nothing needs the normalised pre-activation (group/batch norm and
        # convolution backward read their inputs), and on a CPU without a large cache a fresh activation tensor
        # per layer costs more than the ReLU itself (DM float32: -0.2 s per iteration on MNIST IPC 10).
        return nn.ReLU(inplace=True)
    if net_act == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    return nn.Sigmoid()


def _make_pool(net_pooling: str) -> nn.Module | None:
    if net_pooling == "avgpooling":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if net_pooling == "maxpooling":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    return None


class ConvNetPreTrainedModel(PreTrainedModel):
    """
    Base class wiring [`ConvNetConfig`] into the `transformers` loading machinery.

    Weights keep PyTorch's default layer initialisation (what the distillation papers use) instead of the usual
    `transformers` normal(0, 0.02) scheme.
    """

    config_class = ConvNetConfig
    base_model_prefix = "convnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    # Set while a model is being constructed: the torch layers have just drawn their default initialisation, so
    # `post_init` must not draw it a second time. Skipping the redundant draw keeps construction cheap and makes
    # `torch.manual_seed(s); ConvNetForImageClassification(config)` produce the same weights as the reference
    # `ConvNet` under the same seed (identical module creation order).
    _skip_init_weights = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """
        (Re)initialise `module` with PyTorch's default scheme, i.e. its own `reset_parameters()`.

        This is what `from_pretrained` calls for parameters missing from a checkpoint. Tensors that were loaded are
        flagged `_is_hf_initialized` by `transformers`; they are left untouched (restored if `reset_parameters` writes
        them directly, as `BatchNorm`'s running statistics are), so loading is exact.

        Args:
            module (`nn.Module`): The submodule to initialise (non-recursive).
        """
        if self._skip_init_weights:
            return
        reset = getattr(module, "reset_parameters", None)
        if reset is None:
            return
        tensors = [t for t in chain(module.parameters(recurse=False), module.buffers(recurse=False)) if t is not None]
        loaded = [t for t in tensors if getattr(t, "_is_hf_initialized", False)]
        if tensors and len(loaded) == len(tensors):
            return
        saved = [(t, t.detach().clone()) for t in loaded]
        reset()
        for tensor, value in saved:
            tensor.copy_(value)


class ConvNetForImageClassification(ConvNetPreTrainedModel):
    """
    The dataset distillation ConvNet with a linear classification head.

    Parameter names and order match the reference `ConvNet` (`features.{i}.*`, `classifier.*`), so state dicts and
    flattened parameter vectors (e.g. MTT expert trajectories) from the reference code line up.

    Args:
        config ([`ConvNetConfig`]): Model configuration.
    """

    def __init__(self, config: ConvNetConfig):
        super().__init__(config)
        layers: list[nn.Module] = []
        # Index (in `features`) of the last module of each block, to collect per-block hidden states.
        block_ends: list[int] = []
        in_channels = config.num_channels
        for depth in range(config.net_depth):
            padding = config.resolved_first_layer_padding if depth == 0 else 1
            layers.append(nn.Conv2d(in_channels, config.net_width, kernel_size=3, padding=padding))
            norm = _make_norm(config.net_norm, config.net_width)
            if norm is not None:
                layers.append(norm)
            layers.append(_make_act(config.net_act))
            pool = _make_pool(config.net_pooling)
            if pool is not None:
                layers.append(pool)
            block_ends.append(len(layers) - 1)
            in_channels = config.net_width
        self.features = nn.Sequential(*layers)
        self._block_ends = tuple(block_ends)
        channels, height, width = _convnet_feature_shape(config)
        self._feature_dim = channels * height * width
        self.classifier = nn.Linear(self._feature_dim, config.num_labels)

        self._skip_init_weights = True
        try:
            self.post_init()
        finally:
            # Later calls (e.g. for keys missing from a checkpoint in `from_pretrained`) must initialise for real.
            self._skip_init_weights = False

    @property
    def feature_dim(self) -> int:
        """`int`: Size of the flattened feature vector fed to the classifier."""
        return self._feature_dim

    def _run_blocks(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        if pixel_values is None:
            raise ValueError("pixel_values must be provided.")
        hidden_states: list[torch.Tensor] | None = [] if output_hidden_states else None
        out = pixel_values
        block_ends = set(self._block_ends)
        for index, layer in enumerate(self.features):
            out = layer(out)
            if hidden_states is not None and index in block_ends:
                hidden_states.append(out)
        return out, (tuple(hidden_states) if hidden_states is not None else None)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """
        Flattened features right before the classifier (the reference `ConvNet.embed`, used by DM-style methods).

        Args:
            pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`): Input images.

        Returns:
            `torch.Tensor` of shape `(batch_size, feature_dim)`.
        """
        out, _ = self._run_blocks(pixel_values)
        return out.flatten(1)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
                Input images.
            labels (`torch.Tensor`, *optional*):
                Either class indices of shape `(batch_size,)`, or class probabilities (soft labels, as learned by some
                distillation methods) of shape `(batch_size, num_labels)`. When given, the cross-entropy loss is
                returned.
            output_hidden_states (`bool`, *optional*):
                Whether to return the output of every convolutional block (after pooling).
            return_dict (`bool`, *optional*):
                Whether to return an [`~transformers.modeling_outputs.ImageClassifierOutput`] or a plain tuple.
            kwargs:
                Ignored; accepted for compatibility with generic `transformers` callers.

        Returns:
            [`~transformers.modeling_outputs.ImageClassifierOutput`] (or a tuple `(loss?, logits, hidden_states?)`)
            with `logits` of shape `(batch_size, num_labels)`.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        features, hidden_states = self._run_blocks(pixel_values, output_hidden_states=bool(output_hidden_states))
        logits = self.classifier(features.flatten(1))

        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if labels.is_floating_point() and labels.shape == logits.shape:
                # Soft labels: cross-entropy against a target distribution.
                loss = F.cross_entropy(logits, labels.to(logits.dtype))
            else:
                loss = F.cross_entropy(logits, labels.long().view(-1))

        if not return_dict:
            output = (logits,) + ((hidden_states,) if hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)


# Registration makes `AutoConfig` / `AutoModelForImageClassification` (and therefore `from_pretrained` on a saved
# ConvNet) work. `exist_ok=True` keeps re-imports (e.g. `importlib.reload` in notebooks) from raising.
AutoConfig.register(ConvNetConfig.model_type, ConvNetConfig, exist_ok=True)
AutoModelForImageClassification.register(ConvNetConfig, ConvNetForImageClassification, exist_ok=True)


def default_convnet_config(num_channels: int, image_size: int, num_labels: int, **overrides) -> ConvNetConfig:
    """
    The ConvNet configuration the papers use for a dataset of the given geometry.

    Width 128, instance norm, ReLU and average pooling. Depth is 3 up to 32x32 (MNIST, CIFAR) and grows with the
    resolution so the last feature map stays around 4x4, as in the MTT code (`ConvNetD4` for 64x64 Tiny ImageNet,
    `ConvNetD5` for 128x128 ImageNet subsets).

    Args:
        num_channels (`int`): Number of image channels.
        image_size (`int`): Image side (the larger side for non-square images).
        num_labels (`int`): Number of classes.
        overrides:
            Any [`ConvNetConfig`] argument, taking precedence over the defaults above.

    Returns:
        [`ConvNetConfig`]
    """
    side = max(as_height_width(image_size))
    depth = 3 if side <= 32 else max(3, round(math.log2(side / 4)))
    kwargs = {
        "num_channels": num_channels,
        "image_size": image_size,
        "num_labels": num_labels,
        "net_width": 128,
        "net_depth": depth,
        "net_norm": "instancenorm",
        "net_act": "relu",
        "net_pooling": "avgpooling",
    }
    kwargs.update(overrides)
    return ConvNetConfig(**kwargs)
