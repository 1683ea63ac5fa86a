"""Model families shipped with hf_distill, registered with the `transformers` Auto classes on import."""

from .convnet import ConvNetConfig, ConvNetForImageClassification, ConvNetPreTrainedModel, default_convnet_config

__all__ = ["ConvNetConfig", "ConvNetForImageClassification", "ConvNetPreTrainedModel", "default_convnet_config"]
