"""The MLP of the dataset distillation papers' cross-architecture tables (DC, `networks.py` `MLP`: the flattened
image, two hidden layers of 128 units with ReLU, a linear head) as a `transformers` model, registered with the Auto
classes like the ConvNet."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig
from transformers.modeling_outputs import ImageClassifierOutput

from .convnet import ConvNetPreTrainedModel, as_height_width


class MLPConfig(PretrainedConfig):
    """Configuration of [`MLPForImageClassification`].

    Args:
        num_channels (`int`, *optional*, defaults to 3), image_size (`int` or `(height, width)`, *optional*,
            defaults to 32): The input geometry (the first layer takes `num_channels * height * width` values).
        hidden_size (`int`, *optional*, defaults to 128): Units per hidden layer (DC: 128).
        num_hidden_layers (`int`, *optional*, defaults to 2): Hidden layers (DC: 2, i.e. three linear layers).
        kwargs: Passed to [`~transformers.PretrainedConfig`] (`num_labels`, `id2label`, ...).
    """

    model_type = "hf_distill_mlp"

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int | tuple[int, int] = 32,
        hidden_size: int = 128,
        num_hidden_layers: int = 2,
        **kwargs,
    ):
        as_height_width(image_size)  # validates
        if hidden_size < 1 or num_hidden_layers < 0:
            raise ValueError(
                f"hidden_size must be >= 1 and num_hidden_layers >= 0, got {hidden_size} and {num_hidden_layers}."
            )
        self.num_channels = num_channels
        self.image_size = image_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        super().__init__(**kwargs)


class MLPForImageClassification(ConvNetPreTrainedModel):
    """An MLP on the flattened image; PyTorch's default initialisation, as the ConvNet (whose base class it shares)."""

    config_class = MLPConfig
    base_model_prefix = "mlp"

    def __init__(self, config: MLPConfig):
        super().__init__(config)
        layers: list[nn.Module] = []
        size = config.num_channels * math.prod(as_height_width(config.image_size))
        for _ in range(config.num_hidden_layers):
            layers += [nn.Linear(size, config.hidden_size), nn.ReLU()]
            size = config.hidden_size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(size, config.num_labels)
        self._skip_init_weights = True
        try:
            self.post_init()
        finally:
            self._skip_init_weights = False

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's output, `(batch_size, hidden_size)` (what the head sees)."""
        return self.features(pixel_values.flatten(1))

    def forward(self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs):
        """`logits` of shape `(batch_size, num_labels)` (and the cross-entropy when `labels` are given)."""
        if pixel_values is None:
            raise ValueError("pixel_values must be provided.")
        logits = self.classifier(self.embed(pixel_values))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels.to(logits.device))
        return ImageClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(MLPConfig.model_type, MLPConfig, exist_ok=True)
AutoModelForImageClassification.register(MLPConfig, MLPForImageClassification, exist_ok=True)
