"""hf_distill: dataset distillation for the Hugging Face ecosystem."""

from .api import distill_dataset
from .augment import SiameseAugment
from .config import DistillConfig, SyntheticOptimizationConfig
from .constants import __version__ as __version__
from .evaluation import EvaluationProtocol
from .experts import train_experts
from .hub import push_experts_to_hub
from .kd import KDConfig, KDTrainer
from .methods import (
    METHODS,
    DifferentiableSiameseAugmentationConfig,
    DistillationMethod,
    DistributionMatchingConfig,
    FeatureRegressionConfig,
    GradientMatchingConfig,
    MetaLearningConfig,
    RandomFeatureConfig,
    RandomSelectionConfig,
    TrajectoryMatchingConfig,
    register_method,
)
from .modalities import ImageData, ImageModality, Modality
from .modeling import ConvNetConfig, ConvNetForImageClassification
from .synthetic import SyntheticSet
from .trainer import DistillTrainer
from .trajectories import ExpertTrajectories

__all__ = [
    "ConvNetConfig",
    "ConvNetForImageClassification",
    "DistillConfig",
    "DistillTrainer",
    "DifferentiableSiameseAugmentationConfig",
    "DistillationMethod",
    "DistributionMatchingConfig",
    "EvaluationProtocol",
    "FeatureRegressionConfig",
    "GradientMatchingConfig",
    "ExpertTrajectories",
    "ImageData",
    "ImageModality",
    "KDConfig",
    "KDTrainer",
    "METHODS",
    "MetaLearningConfig",
    "Modality",
    "RandomFeatureConfig",
    "RandomSelectionConfig",
    "SiameseAugment",
    "SyntheticOptimizationConfig",
    "SyntheticSet",
    "TrajectoryMatchingConfig",
    "distill_dataset",
    "push_experts_to_hub",
    "register_method",
    "train_experts",
]
