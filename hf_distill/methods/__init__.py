"""Distillation methods. Importing this package registers every method in `METHODS`."""

from ..registry import METHODS, get_method_class, register_method
from .base import DistillationMethod, SelectionContext
from .coreset import CoresetConfig, RandomSelection, RandomSelectionConfig, ScoredCoresetConfig
from .decoupled import RDED, RDEDConfig, SRe2L, SRe2LConfig, TeacherConfig, TeacherMethod
from .distribution_matching import DistributionMatching, DistributionMatchingConfig
from .el2n import EL2N, EL2NConfig, GraNd, GraNdConfig
from .forgetting import Forgetting, ForgettingConfig
from .gradient_matching import (
    DifferentiableSiameseAugmentation,
    DifferentiableSiameseAugmentationConfig,
    GradientMatching,
    GradientMatchingConfig,
)
from .herding import Herding, HerdingConfig
from .k_center import KCenter, KCenterConfig
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
    "EL2N",
    "RDED",
    "RDEDConfig",
    "SRe2L",
    "SRe2LConfig",
    "TeacherConfig",
    "TeacherMethod",
    "METHODS",
    "CoresetConfig",
    "EL2NConfig",
    "Forgetting",
    "ForgettingConfig",
    "GraNd",
    "GraNdConfig",
    "Herding",
    "HerdingConfig",
    "KCenter",
    "KCenterConfig",
    "ScoredCoresetConfig",
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
