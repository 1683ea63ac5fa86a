"""The student: a pretrained checkpoint or a fresh model of any architecture, sized to the distilled set
([`build_student`])."""

from pathlib import Path

from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from ..modeling import fresh_model
from ..preparation import convnet_config, with_classes
from ..seeding import derive_generator, derive_seed, seeded_rng
from .config import KDConfig
from .data import DistilledSet


def build_student(config: KDConfig, distilled: DistilledSet) -> tuple[PreTrainedModel, str | None]:
    """The student: a checkpoint, the modality's default, or a fresh model of `student_config`.

    A checkpoint (`student_name_or_path`) is loaded with the modality's classifier class
    (`AutoModelForImageClassification`, `AutoModelForSequenceClassification`), the head resized to the set's classes.
    Without one nor a `student_config`, the modality's default student (text: the encoder the set was distilled with,
    with a fresh head on its mean-pooled embedding, [`MeanPoolingForSequenceClassification`]), else a fresh model of
    `student_config` (images: the papers' ConvNet-3). The modality then binds it to the set's inputs (text: the
    encoder's word-embedding table, frozen, see `TextModality.bind_classifier`).

    Returns:
        `tuple`: the model, and `base_model` (the Hub id when the student starts from a Hub checkpoint, else `None`).
    """
    modality = distilled.modality
    example_shape = tuple(distilled.inputs().shape[1:])
    class_names = distilled.class_names
    id2label = dict(enumerate(class_names))
    name = config.student_name_or_path
    default = None
    if name is None and config.student_config is None:
        with seeded_rng(derive_seed(config.seed, "kd-student", "head")):  # its fresh head draws from the global RNG
            default = modality.default_student(class_names)
    if default is not None:
        model, name = default
        modality.check_classifier(model.config, example_shape)
        return modality.bind_classifier(model), _hub_name(name)
    if name:
        try:
            with seeded_rng(derive_seed(config.seed, "kd-student", "head")):  # the resized head is drawn afresh
                model = modality.classifier_class.from_pretrained(
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
        modality.check_classifier(model.config, example_shape)
        return modality.bind_classifier(model), _hub_name(name)

    value = config.student_config
    if value is None or (isinstance(value, dict) and "model_type" not in value):
        channels, height, width = example_shape
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
        model_config = _fitted(architecture, distilled)
    modality.check_classifier(model_config, example_shape)
    generator = derive_generator(config.seed, "kd-student", "init")
    return modality.bind_classifier(fresh_model(model_config, generator, modality.classifier_class)), None


def _hub_name(name: str | None) -> str | None:
    """`name` when it is a Hub checkpoint (the card's `base_model`), `None` for a local folder."""
    return None if not name or Path(name).expanduser().exists() else name


def _fitted(architecture: PretrainedConfig, distilled: DistilledSet) -> PretrainedConfig:
    """`architecture` with the set's classes; an image classifier (a config with `num_channels`) also with the set's
    channels and, where the architecture is sized by it, image size."""
    model_config = with_classes(architecture, distilled.class_names)
    if not hasattr(model_config, "num_channels"):
        return model_config
    channels, height, width = distilled.image_shape
    model_config.num_channels = channels
    if model_config.model_type == "hf_distill_convnet":  # its classifier is sized by the images
        model_config.image_size = height if height == width else [height, width]
    elif isinstance(getattr(model_config, "image_size", None), int):  # e.g. ViT: patch grid of the set's images
        model_config.image_size = height
    return model_config
