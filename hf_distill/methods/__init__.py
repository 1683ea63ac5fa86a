"""Distillation methods. Importing this package registers every method in `METHODS`."""

from .base import METHODS, DistillationMethod, get_method_class, register_method
from .coreset import RandomSelection, RandomSelectionConfig
from .distribution_matching import DistributionMatching, DistributionMatchingConfig
from .trajectory_matching import TrajectoryMatching, TrajectoryMatchingConfig

__all__ = [
    "METHODS",
    "DistillationMethod",
    "DistributionMatching",
    "DistributionMatchingConfig",
    "RandomSelection",
    "RandomSelectionConfig",
    "TrajectoryMatching",
    "TrajectoryMatchingConfig",
    "get_method_class",
    "register_method",
]
