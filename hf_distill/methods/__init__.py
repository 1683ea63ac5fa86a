"""Distillation methods. Importing this package registers every method in `METHODS`."""

from ..registry import METHODS, get_method_class, register_method
from .base import DistillationMethod, SelectionContext
from .coreset import RandomSelection, RandomSelectionConfig
from .distribution_matching import DistributionMatching, DistributionMatchingConfig
from .gradient_matching import (
    DifferentiableSiameseAugmentation,
    DifferentiableSiameseAugmentationConfig,
    GradientMatching,
    GradientMatchingConfig,
)
from .kernel_ridge import (
    FeatureRegression,
    FeatureRegressionConfig,
    KernelRidgeConfig,
    KernelRidgeMethod,
    RandomFeatureConfig,
    RandomFeatureDistillation,
)
from .meta_learning import MetaLearning, MetaLearningConfig
from .trajectory_matching import TrajectoryMatching, TrajectoryMatchingConfig

__all__ = [
    "METHODS",
    "DifferentiableSiameseAugmentation",
    "DifferentiableSiameseAugmentationConfig",
    "DistillationMethod",
    "DistributionMatching",
    "DistributionMatchingConfig",
    "FeatureRegression",
    "FeatureRegressionConfig",
    "GradientMatching",
    "GradientMatchingConfig",
    "KernelRidgeConfig",
    "KernelRidgeMethod",
    "MetaLearning",
    "MetaLearningConfig",
    "RandomSelection",
    "RandomFeatureConfig",
    "RandomFeatureDistillation",
    "RandomSelectionConfig",
    "SelectionContext",
    "TrajectoryMatching",
    "TrajectoryMatchingConfig",
    "get_method_class",
    "register_method",
]
