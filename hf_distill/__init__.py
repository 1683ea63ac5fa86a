"""hf_distill: dataset distillation for the Hugging Face ecosystem."""

from .analysis import AnalysisConfig, analyze_dataset
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
    EL2NConfig,
    FeatureRegressionConfig,
    ForgettingConfig,
    GradientMatchingConfig,
    GraNdConfig,
    HerdingConfig,
    KCenterConfig,
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
    "AnalysisConfig",
    "ConvNetConfig",
    "ConvNetForImageClassification",
    "DistillConfig",
    "DistillTrainer",
    "DifferentiableSiameseAugmentationConfig",
    "DistillationMethod",
    "DistributionMatchingConfig",
    "EvaluationProtocol",
    "EL2NConfig",
    "FeatureRegressionConfig",
    "ForgettingConfig",
    "GradientMatchingConfig",
    "GraNdConfig",
    "HerdingConfig",
    "KCenterConfig",
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
    "analyze_dataset",
    "distill_dataset",
    "push_experts_to_hub",
    "register_method",
    "train_experts",
]
