"""Model families shipped with hf_distill, registered with the `transformers` Auto classes on import."""

from .convnet import ConvNetConfig, ConvNetForImageClassification, ConvNetPreTrainedModel, default_convnet_config
from .embedding_classifier import EmbeddingClassifier
from .mlp import MLPConfig, MLPForImageClassification
from .sentence_classifier import MeanPoolingClassifierConfig, MeanPoolingForSequenceClassification, mean_pooled
from .zoo import ARCHITECTURE_NAMES, named_architecture

__all__ = [
    "ARCHITECTURE_NAMES",
    "ConvNetConfig",
    "ConvNetForImageClassification",
    "ConvNetPreTrainedModel",
    "EmbeddingClassifier",
    "MLPConfig",
    "MLPForImageClassification",
    "default_convnet_config",
    "MeanPoolingClassifierConfig",
    "MeanPoolingForSequenceClassification",
    "mean_pooled",
    "named_architecture",
]
