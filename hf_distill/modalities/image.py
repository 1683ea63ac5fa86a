"""The image modality: `datasets.Image` columns, normalised `(C, H, W)` tensors under `pixel_values`, PIL previews."""

import torch
from datasets import Array3D, Dataset, Features, Image
from PIL import Image as PILImage

from ..augment import SiameseAugment, resolve_strategy
from ..registry import register_modality
from .base import Modality
from .image_data import (
    IMAGE_COLUMN_CANDIDATES,
    ImageData,
    find_columns,
    is_array_image_feature,
    validate_image_dataset,
)
from .image_decoding import prepare_images


@register_modality("image")
class ImageModality(Modality):
    """Images: a `datasets.Image` (or numeric array) column, normalised `(C, H, W)` float tensors, `pixel_values`."""

    input_name = "pixel_values"
    input_column = "pixel_values"
    preview_column = "image"
    task = "image-classification"

    @classmethod
    def detect(cls, features: Features) -> bool:
        return any(isinstance(feature, Image) for feature in features.values()) or any(
            name in features and is_array_image_feature(features[name]) for name in IMAGE_COLUMN_CANDIDATES
        )

    def find_columns(self, dataset: Dataset, column_mapping: dict[str, str] | None = None) -> tuple[str, str]:
        return find_columns(dataset, column_mapping)

    def validate(self, dataset: Dataset, input_column: str, label_column: str, **checks) -> None:
        validate_image_dataset(dataset, input_column, label_column, **checks)

    def prepare(self, dataset: Dataset, input_column: str, label_column: str, **settings) -> ImageData:
        """Decodes, resizes and normalises the images (see [`prepare_images`] for `settings`)."""
        return prepare_images(dataset, input_column, label_column, **settings)

    def augmentation(self, strategy: str | None, class_names: list[str]) -> SiameseAugment:
        return SiameseAugment(resolve_strategy(strategy, class_names))

    def preview(self, inputs: torch.Tensor, mean: list[float], std: list[float]) -> list[PILImage.Image]:
        """De-normalised previews (mode `L` for one channel, `RGB` for three)."""
        mean_ = torch.tensor(mean).view(1, -1, 1, 1)
        std_ = torch.tensor(std).view(1, -1, 1, 1)
        pixels = (inputs.detach().cpu().float() * std_ + mean_).clamp(0, 1)
        arrays = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        if arrays.shape[-1] == 1:
            return [PILImage.fromarray(a[..., 0], mode="L") for a in arrays]
        return [PILImage.fromarray(a[..., :3], mode="RGB") for a in arrays]

    def export_features(self, example_shape: tuple[int, ...]) -> dict:
        return {"image": Image(), "pixel_values": Array3D(shape=tuple(example_shape), dtype="float32")}

    def export_columns(self, inputs: torch.Tensor, mean: list[float], std: list[float]) -> dict:
        return {"image": self.preview(inputs, mean, std), "pixel_values": inputs.detach().cpu().float().numpy()}
