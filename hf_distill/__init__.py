"""hf_distill: dataset distillation for the Hugging Face ecosystem."""

__version__ = "0.1.0.dev0"

from .api import distill_dataset
from .augment import SiameseAugment
from .config import DistillConfig, SyntheticOptimizationConfig
from .data import ImageData
from .evaluation import EvaluationProtocol
from .kd import KDConfig, KDTrainer
from .methods import (
    METHODS,
    DistillationMethod,
    DistributionMatchingConfig,
    RandomSelectionConfig,
    register_method,
)
from .modeling import ConvNetConfig, ConvNetForImageClassification
from .synthetic import SyntheticSet
from .trainer import DistillTrainer

__all__ = [
    "METHODS",
    "ConvNetConfig",
    "ConvNetForImageClassification",
    "DistillConfig",
    "DistillTrainer",
    "DistillationMethod",
    "DistributionMatchingConfig",
    "EvaluationProtocol",
    "ImageData",
    "KDConfig",
    "KDTrainer",
    "RandomSelectionConfig",
    "SiameseAugment",
    "SyntheticOptimizationConfig",
    "SyntheticSet",
    "distill_dataset",
    "register_method",
]
