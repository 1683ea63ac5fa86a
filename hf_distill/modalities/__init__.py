"""Modalities: what each kind of input owns. Importing this package registers every modality in `MODALITIES`."""

from datasets import Dataset

from ..registry import MODALITIES, get_modality_class
from .base import Modality
from .image import ImageModality
from .image_data import ImageData
from .text import TextModality
from .text_data import TextData


def resolve_modality(name: str, dataset: Dataset | None = None) -> Modality:
    """The modality called `name`; `"auto"` picks the first registered one whose inputs `dataset` holds.

    Raises:
        ValueError: An unknown name, or `"auto"` on a dataset no modality recognises (the message lists its columns).
    """
    if name != "auto":
        return get_modality_class(name)()
    if isinstance(dataset, TextData):
        return TextModality()
    if dataset is None or not isinstance(dataset, Dataset):  # already prepared tensors: images
        return ImageModality()
    for modality_class in MODALITIES.values():
        if modality_class.detect(dataset.features):
            return modality_class()
    raise ValueError(
        f"No modality recognises the columns {dict(dataset.features)}: images need a datasets.Image() column (or a "
        f"numeric array column named pixel_values / image / img). Set modality to one of {sorted(MODALITIES)} and "
        "column_mapping, or cast the input column first."
    )


__all__ = ["ImageData", "ImageModality", "Modality", "TextData", "TextModality", "resolve_modality"]
