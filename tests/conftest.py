"""Shared fixtures: tiny in-memory image datasets and a tiny distillation config. Everything is offline.

`HF_HUB_OFFLINE` is deliberately left alone (a Hub test needs to control it); only telemetry and progress bars
are turned off.
"""

import os

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image  # noqa: E402

from hf_distill import DistributionMatchingConfig  # noqa: E402

TINY_CONFIG_DEFAULTS = {
    "net_width": 8,
    "net_depth": 2,
    "batch_real": 8,
    "images_per_class": 2,
    "num_iterations": 3,
    "eval_epochs": 2,
    "eval_num_models": 1,
    "save_steps": 0,
    "logging_steps": 1,
}


def make_image_dataset_dict(
    num_classes: int = 3, rows_per_class: int = 10, size: int = 8, mode: str = "L", seed: int = 0
) -> DatasetDict:
    """A `DatasetDict(train, test)` of random `size`x`size` images with `Image()` and `ClassLabel` features.

    Class `c` has its own brightness and a bright horizontal band at its own height, so the problem is easy to
    learn (also for instance-normalised ConvNets, which ignore global brightness); rows are interleaved by class
    (0, 1, 2, 0, 1, 2, ...). The test split has `max(2, rows_per_class // 2)` rows per class.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}.")
    rng = np.random.default_rng(seed)
    names = [f"class_{c}" for c in range(num_classes)]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    shape = (size, size) if mode == "L" else (size, size, 3)

    def split(rows: int) -> Dataset:
        images, labels = [], []
        for _ in range(rows):
            for c in range(num_classes):
                level = 200.0 * (c + 0.5) / num_classes
                values = rng.normal(level, 15.0, size=shape)
                values[c * size // num_classes : (c + 1) * size // num_classes] += 80.0
                pixels = np.clip(values, 0, 255).astype(np.uint8)
                images.append(PIL.Image.fromarray(pixels))  # uint8 (H, W) -> L, (H, W, 3) -> RGB
                labels.append(c)
        return Dataset.from_dict({"image": images, "label": labels}, features=features)

    return DatasetDict({"train": split(rows_per_class), "test": split(max(2, rows_per_class // 2))})


@pytest.fixture
def tiny_image_dataset():
    """Factory `make(num_classes=3, rows_per_class=10, size=8, mode="L", seed=0) -> DatasetDict(train, test)`."""
    return make_image_dataset_dict


@pytest.fixture
def tiny_config():
    """Factory `make(**overrides) -> DistributionMatchingConfig` with CPU-sized settings (no `output_dir`)."""

    def make(**overrides) -> DistributionMatchingConfig:
        return DistributionMatchingConfig(**{**TINY_CONFIG_DEFAULTS, **overrides})

    return make
