"""The student: a pretrained checkpoint or a fresh model of any architecture, sized to the distilled set
([`build_student`])."""

from pathlib import Path

from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel

from ..modeling import fresh_model
from ..preparation import build_model_config, convnet_config
from ..seeding import derive_generator
from .config import KDConfig
from .data import DistilledSet


def build_student(config: KDConfig, distilled: DistilledSet) -> tuple[PreTrainedModel, str | None]:
    """The student: a checkpoint (`student_name_or_path`) or a fresh model of `student_config` (default ConvNet-3).

    Returns:
        `tuple`: the model, and `base_model` (the Hub id when the student starts from a Hub checkpoint, else `None`).
    """
    channels, height, width = distilled.image_shape
    class_names = distilled.class_names
    id2label = dict(enumerate(class_names))
    if config.student_name_or_path:
        name = config.student_name_or_path
        try:
            model = AutoModelForImageClassification.from_pretrained(
                name,
                num_labels=len(class_names),
                id2label=id2label,
                label2id={v: k for k, v in id2label.items()},
                ignore_mismatched_sizes=True,  # the head is re-initialised for the set's classes
            )
        except Exception as error:
            raise ValueError(
                f"Could not load the student checkpoint {name!r}: {type(error).__name__}: {error}"
            ) from error
        _check_student_geometry(model.config, channels, height, width)
        return model, (None if Path(name).expanduser().exists() else name)

    value = config.student_config
    if value is None or (isinstance(value, dict) and "model_type" not in value):
        model_config = convnet_config(channels, (height, width), class_names, **dict(value or {}))
    else:
        if isinstance(value, dict):
            values = dict(value)
            architecture = AutoConfig.for_model(values.pop("model_type"), **values)
        else:
            try:
                architecture = AutoConfig.from_pretrained(value)
            except Exception as error:
                raise ValueError(
                    f"Could not load a student config from {value!r}: {type(error).__name__}: {error}. Pass a JSON "
                    "string/file, a folder with config.json or a reachable Hub id."
                ) from error
        model_config = build_model_config(architecture, distilled.image_data(), None)
        if model_config.model_type == "hf_distill_convnet":  # its classifier is sized by the images
            model_config.image_size = height if height == width else [height, width]
        elif isinstance(getattr(model_config, "image_size", None), int):  # e.g. ViT: patch grid of the set's images
            model_config.image_size = height
    _check_student_geometry(model_config, channels, height, width)
    return fresh_model(model_config, derive_generator(config.seed, "kd-student", "init")), None


def _check_student_geometry(model_config: PretrainedConfig, channels: int, height: int, width: int) -> None:
    model_channels = getattr(model_config, "num_channels", channels)
    if model_channels != channels:
        raise ValueError(
            f"The student expects {model_channels}-channel images but the distilled set has {channels} channels."
        )
    if getattr(model_config, "model_type", None) == "hf_distill_convnet":
        size = model_config.image_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if size != (height, width):
            raise ValueError(
                f"The student ConvNet is sized for {size} images but the distilled set's are {(height, width)}."
            )
