"""Named architectures for cross-architecture evaluation (the DC, DSA, DM and MTT papers' tables): ConvNet variants
of the run's network, the papers' MLP, a ResNet-18-like `ResNetConfig` and a small `ViTConfig`. Any other name is
taken as a Hub id or local path of an `AutoModelForImageClassification` architecture."""

from __future__ import annotations

from collections.abc import Callable

from transformers import PretrainedConfig, ResNetConfig, ViTConfig

from .convnet import ConvNetConfig, as_height_width, default_convnet_config
from .mlp import MLPConfig

#: ConvNet variants: overrides of the run's ConvNet (or of the papers' default when the run used another network).
CONVNET_VARIANTS = {
    "convnet": {},
    "convnet_bn": {"net_norm": "batchnorm"},
    "convnet_nonorm": {"net_norm": "none"},
    "convnet_depth2": {"net_depth": 2},
    "convnet_depth4": {"net_depth": 4},
    "convnet_width64": {"net_width": 64},
    "convnet_width256": {"net_width": 256},
}


def _resnet(num_channels: int, image_size) -> PretrainedConfig:
    # ResNet-18's stages (2, 2, 2, 2 basic blocks of 64..512 channels); transformers' stem (7x7 stride 2 + max pool)
    # is kept, so it is "ResNet-18-like": the DC paper's CIFAR variant has a 3x3 stem without pooling.
    return ResNetConfig(
        num_channels=num_channels,
        embedding_size=64,
        hidden_sizes=[64, 128, 256, 512],
        depths=[2, 2, 2, 2],
        layer_type="basic",
    )


def _vit(num_channels: int, image_size) -> PretrainedConfig:
    # A small ViT (patches of 4 pixels: 49 tokens at 28x28, 64 at 32x32; 4 layers of width 128).
    height, width = as_height_width(image_size)
    patch = 4 if height % 4 == 0 and width % 4 == 0 else 1
    return ViTConfig(
        image_size=max(height, width),
        patch_size=patch,
        num_channels=num_channels,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
    )


OTHER_ARCHITECTURES: dict[str, Callable[[int, object], PretrainedConfig]] = {
    "mlp": lambda num_channels, image_size: MLPConfig(num_channels=num_channels, image_size=image_size),
    "resnet": _resnet,
    "vit": _vit,
}

ARCHITECTURE_NAMES = (*CONVNET_VARIANTS, *OTHER_ARCHITECTURES)


def named_architecture(
    name: str, num_channels: int, image_size, num_labels: int, run_config: PretrainedConfig | None = None
) -> PretrainedConfig | None:
    """The config of architecture `name` for the data's geometry, or `None` when `name` is not one of
    `ARCHITECTURE_NAMES` (then it is a Hub id or path). ConvNet variants start from `run_config` when it is a
    ConvNet (the network the set was distilled with), else from the papers' ConvNet."""
    if name in CONVNET_VARIANTS:
        base = run_config if isinstance(run_config, ConvNetConfig) else None
        base = base or default_convnet_config(num_channels, image_size, num_labels)
        return ConvNetConfig.from_dict({**base.to_dict(), **CONVNET_VARIANTS[name]})
    if name in OTHER_ARCHITECTURES:
        return OTHER_ARCHITECTURES[name](num_channels, image_size)
    return None
