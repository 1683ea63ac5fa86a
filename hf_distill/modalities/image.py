"""The image modality: `datasets.Image` columns, normalised `(C, H, W)` tensors under `pixel_values`, PIL previews."""

import torch
from datasets import Array3D, Dataset, Features, Image
from PIL import Image as PILImage
from transformers import AutoImageProcessor, AutoModelForImageClassification, PretrainedConfig

from ..augment import SiameseAugment, resolve_strategy
from ..registry import register_modality
from ..row_store import RowsOnDisk
from .base import Modality
from .image_data import (
    IMAGE_COLUMN_CANDIDATES,
    ImageData,
    denormalize,
    find_columns,
    is_array_image_feature,
    validate_image_dataset,
)
from .image_decoding import prepare_images
from .image_disk import default_store_dir, prepare_images_on_disk
from .zca import ZCAWhitening


def _architecture_image_size(config: PretrainedConfig | None) -> tuple[int, int] | None:
    # The ConvNet is built for the data's size; other architectures (e.g. ViT's patch grid) fix theirs.
    size = getattr(config, "image_size", None) if config is not None else None
    if size is None or getattr(config, "model_type", "") == "hf_distill_convnet":
        return None
    return (size, size) if isinstance(size, int) else tuple(size)


def build_image_processor(mean: list[float], std: list[float], image_size: tuple[int, int], num_channels: int):
    """An image processor that turns raw images into the tensors a model trained on this data expects.

    Resize to `image_size` (bilinear), rescale by 1/255, normalise with `mean`/`std`; 3-channel data converts inputs
    to RGB. Saved as a `ViTImageProcessor`, so `AutoImageProcessor.from_pretrained(folder)` and the
    `image-classification` pipeline load it without hf_distill. Single-channel data expects mode `L` images (the
    processor cannot convert RGB to grayscale).
    """
    try:  # transformers 5: the PIL backend (always available); the torchvision one is chosen at load when installed
        from transformers import ViTImageProcessorPil as processor_class
    except ImportError:  # transformers 4: the PIL/NumPy processor
        from transformers import ViTImageProcessor as processor_class
    height, width = (int(s) for s in image_size)
    return processor_class(
        do_resize=True,
        size={"height": height, "width": width},
        resample=2,  # PIL bilinear
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[float(m) for m in mean],
        image_std=[float(s) for s in std],
        do_convert_rgb=num_channels == 3,
    )


def _refuse_zca_on_disk(refuse: bool) -> None:
    if refuse:
        raise ValueError(
            "zca=True cannot be used with data_on_disk=True yet: whitening is fitted on, and applied to, the whole "
            "split in memory. Use one or the other."
        )


@register_modality("image")
class ImageModality(Modality):
    """Images: a `datasets.Image` (or numeric array) column, normalised `(C, H, W)` float tensors, `pixel_values`."""

    input_name = "pixel_values"
    input_column = "pixel_values"
    preview_column = "image"
    task = "image-classification"
    column_role = "image"
    classifier_class = AutoModelForImageClassification

    @classmethod
    def detect(cls, features: Features) -> bool:
        return any(isinstance(feature, Image) for feature in features.values()) or any(
            name in features and is_array_image_feature(features[name]) for name in IMAGE_COLUMN_CANDIDATES
        )

    def find_columns(self, dataset: Dataset, column_mapping: dict[str, str] | None = None) -> tuple[str, str]:
        return find_columns(dataset, column_mapping)

    def validate(self, dataset: Dataset, input_column: str, label_column: str, **checks) -> None:
        validate_image_dataset(dataset, input_column, label_column, **checks)

    def prepare(
        self,
        dataset: Dataset,
        input_column: str,
        label_column: str,
        zca: ZCAWhitening | None = None,
        store_dir: str | None = None,
        **settings,
    ) -> ImageData:
        """Decodes, resizes and normalises the images (see [`prepare_images`] for `settings`), then whitens them
        with `zca` (a transform fitted on the training split) when given. With `store_dir`, the split stays on disk
        there (see [`prepare_images_on_disk`]) and is read by rows."""
        if store_dir is not None:
            _refuse_zca_on_disk(zca is not None)
            return prepare_images_on_disk(dataset, input_column, label_column, store_dir=store_dir, **settings)
        data = prepare_images(dataset, input_column, label_column, **settings)
        return self._whiten(data, zca) if zca is not None else data

    @staticmethod
    def _whiten(data: ImageData, zca: ZCAWhitening) -> ImageData:
        zca.whiten_(data.images)
        data.zca = zca
        return data

    def fit_preprocessing(self, data: ImageData, config) -> ImageData:
        """With `config.zca`, fits ZCA whitening on the (normalised) training split and whitens it."""
        if not getattr(config, "zca", False) or data.zca is not None:
            return data
        _refuse_zca_on_disk(isinstance(data.images, RowsOnDisk))
        return self._whiten(data, ZCAWhitening.fit(data.images, config.zca_regularization))

    def model_settings(self, name_or_path: str) -> dict:
        """`mean`, `std` and `image_size` from the model's image processor, when it has one."""
        try:
            processor = AutoImageProcessor.from_pretrained(name_or_path)
        except Exception:  # noqa: BLE001 - a model without a processor is fine: statistics come from the data
            return {}
        settings = {}
        if getattr(processor, "image_mean", None) is not None:
            settings["mean"], settings["std"] = list(processor.image_mean), list(processor.image_std)
        size = getattr(processor, "size", None) or {}
        if isinstance(size, dict) and "height" in size and "width" in size:
            settings["image_size"] = (size["height"], size["width"])
        elif isinstance(size, dict) and "shortest_edge" in size:
            settings["image_size"] = (size["shortest_edge"], size["shortest_edge"])
        return settings

    def preparation_settings(self, config, architecture: PretrainedConfig | None, model_settings: dict) -> dict:
        """The processor's statistics (else the split's own); the size `config.image_size` asks for, else the
        processor's, else the one a non-ConvNet `architecture` is built for; the architecture's channel count."""
        image_size = (
            (config.image_size, config.image_size)
            if config.image_size
            else model_settings.get("image_size") or _architecture_image_size(architecture)
        )
        on_disk = getattr(config, "data_on_disk", False)
        return {
            "store_dir": (getattr(config, "data_cache_dir", None) or str(default_store_dir())) if on_disk else None,
            "mean": model_settings.get("mean"),
            "std": model_settings.get("std"),
            "image_size": image_size,
            "num_channels": getattr(architecture, "num_channels", None) if architecture is not None else None,
        }

    def settings_of(self, data: ImageData) -> dict:
        settings = dict(mean=data.mean, std=data.std, image_size=data.image_size, num_channels=data.num_channels)
        if isinstance(data.images, RowsOnDisk):  # a split prepared like this one stays on disk too
            store = data.images.store
            settings["store_dir"] = store.metadata.get("store_dir") or str(store.path.parent)
        return settings | ({"zca": data.zca} if data.zca is not None else {})

    def recorded_settings(self, metadata: dict) -> dict:
        """The set's normalisation (`image_mean`, `image_std`) and, when recorded, size and channels (`image_shape`,
        `C x H x W`)."""
        missing = [key for key in ("image_mean", "image_std") if key not in metadata]
        if missing:
            raise ValueError(
                f"The distilled set's metadata lacks {missing}: it must come from DistillTrainer.save (its config "
                "records the normalisation of pixel_values)."
            )
        settings = {
            "mean": [float(v) for v in metadata["image_mean"]],
            "std": [float(v) for v in metadata["image_std"]],
        }
        if metadata.get("image_shape"):
            channels, height, width = (int(v) for v in metadata["image_shape"])
            settings |= {"image_size": (height, width), "num_channels": channels}
        return settings

    def processor(self, settings: dict):
        """A `ViTImageProcessor` that resizes and normalises raw images like `settings` (see
        [`build_image_processor`])."""
        return build_image_processor(
            settings["mean"], settings["std"], settings["image_size"], settings["num_channels"]
        )

    def check_classifier(self, model_config: PretrainedConfig, example_shape: tuple[int, ...]) -> None:
        """The classifier must take the set's channels (and, for the ConvNet, whose head is sized by the image,
        its size)."""
        channels, height, width = example_shape
        model_channels = getattr(model_config, "num_channels", channels)
        if model_channels != channels:
            raise ValueError(
                f"The model expects {model_channels}-channel images but the distilled set has {channels} channels."
            )
        if getattr(model_config, "model_type", None) == "hf_distill_convnet":
            size = model_config.image_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            if size != (height, width):
                raise ValueError(
                    f"The ConvNet is sized for {size} images but the distilled set's are {(height, width)}."
                )

    def augmentation(self, strategy: str | None, class_names: list[str]) -> SiameseAugment:
        return SiameseAugment(resolve_strategy(strategy, class_names))

    def preview(
        self, inputs: torch.Tensor, mean: list[float], std: list[float], zca: ZCAWhitening | None = None
    ) -> list[PILImage.Image]:
        """De-normalised (and, with `zca`, un-whitened) previews (mode `L` for one channel, `RGB` for three)."""
        inputs = inputs.detach().cpu().float()
        if zca is not None:
            inputs = zca.inverse(inputs)
        pixels = denormalize(inputs, mean, std)
        arrays = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        if arrays.shape[-1] == 1:
            return [PILImage.fromarray(a[..., 0], mode="L") for a in arrays]
        return [PILImage.fromarray(a[..., :3], mode="RGB") for a in arrays]

    def export_features(self, example_shape: tuple[int, ...]) -> dict:
        return {"image": Image(), "pixel_values": Array3D(shape=tuple(example_shape), dtype="float32")}

    def export_columns(
        self, inputs: torch.Tensor, mean: list[float], std: list[float], zca: ZCAWhitening | None = None
    ) -> dict:
        """`image` (the preview, in pixel space) and `pixel_values` (exact: normalised, and whitened with `zca`)."""
        preview = self.preview(inputs, mean, std, zca)
        return {"image": preview, "pixel_values": inputs.detach().cpu().float().numpy()}
