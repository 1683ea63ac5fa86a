"""[`train_student`]: the one-call entry point over [`KDTrainer`] (distilled set, teacher, training, evaluation,
output folder)."""

import logging
import os
from pathlib import Path

from datasets import Dataset
from torch import nn

from ..augment import strategy_or_none
from ..constants import CONFIG_NAME, TEACHER_DIR
from ..modalities import ImageData, TextData
from ..modeling import load_teacher
from ..splits import LabelledSplit
from .config import IMAGE_TEACHER_EPOCHS, TEXT_TEACHER_EPOCHS, KDConfig
from .data import DistilledSet, load_distilled_set, load_source_splits, prepare_test_split
from .teacher import describe_teacher, train_teacher
from .text_teacher import train_text_teacher
from .trainer import KDTrainer

logger = logging.getLogger(__name__)


def train_student(config: KDConfig, teacher: nn.Module | str | None = None) -> KDTrainer:
    """Loads the distilled set, gets a teacher, trains the student, evaluates it on the real test split and saves it.

    Steps: [`load_distilled_set`] (`config.distilled_dataset`); the real splits from the recorded source (or
    `config.source_dataset`); the teacher: `teacher`, else `config.teacher_name_or_path`, else, with
    `config.train_teacher`, [`train_teacher`] on the full real train split normalised like the set (saved to
    `<output_dir>/teacher`; under several processes only the main one trains it); [`KDTrainer.train`]; evaluation
    (`eval_results`); [`KDTrainer.save_pretrained`] to `config.output_dir`.

    Returns:
        [`KDTrainer`]: with `eval_results` (`None` when no test split is available), `teacher_info`.
    """
    if not config.distilled_dataset:
        raise ValueError("config.distilled_dataset is required: the folder written by `hf-distill distill`.")
    distilled = load_distilled_set(config.distilled_dataset, revision=config.distilled_revision)
    need_source = config.train_teacher and teacher is None
    train_split, test_split = load_source_splits(distilled, config.source_dataset)
    if need_source and train_split is None:
        raise ValueError(
            "train_teacher needs the real dataset, but none is recorded in the distilled set's "
            f"{CONFIG_NAME}: pass source_dataset (--source_dataset)."
        )
    test_data = prepare_test_split(distilled, test_split) if test_split is not None else None
    if test_data is None:
        logger.warning("No real test split found (source %s): the student is not evaluated.", distilled.source)

    teacher_info = None
    if teacher is None and config.teacher_name_or_path:
        teacher = load_teacher(config.teacher_name_or_path, modality=distilled.modality)
        teacher_info = describe_teacher(teacher, config.teacher_name_or_path)
    elif teacher is None and config.train_teacher:
        teacher = _train_teacher_for(config, distilled, train_split, test_data)
        teacher_info = describe_teacher(teacher, str(Path(config.output_dir) / TEACHER_DIR))
    elif teacher is not None:
        name = os.fspath(teacher) if isinstance(teacher, (str, os.PathLike)) else None
        teacher = load_teacher(teacher, modality=distilled.modality)
        teacher_info = describe_teacher(teacher, name)

    trainer = KDTrainer(
        args=config, teacher=teacher, distilled=distilled, eval_dataset=test_data, teacher_info=teacher_info
    )
    if trainer.teacher is not None and test_data is not None and trainer.teacher_info is not None:
        if trainer.teacher_info.get("test_accuracy") is None:
            trainer.teacher_info["test_accuracy"] = trainer.teacher_accuracy(test_data)
    output = trainer.train()
    if test_data is not None:
        test_info = {
            "test_split": distilled.source.get("test_split") or "test",
            "dataset": config.source_dataset or distilled.source.get("dataset"),
        }
        trainer.evaluate_test(test_info, seconds=output.metrics.get("train_runtime"))
    trainer.save_pretrained(config.output_dir)
    return trainer


def _train_teacher_for(
    config: KDConfig, distilled: DistilledSet, train_split: Dataset, test_data: LabelledSplit | None
) -> nn.Module:
    """The teacher trained on the whole real train split by the modality's trainer (under several processes only the
    main one trains it and saves it to `<output_dir>/teacher`; the others load it, so every process distills the
    same one)."""
    from accelerate import PartialState

    state = PartialState()
    teacher_dir = Path(config.output_dir) / TEACHER_DIR
    teacher = None
    if state.is_main_process:
        train = TEACHER_TRAINERS.get(distilled.modality.name)
        if train is None:
            raise ValueError(
                f"train_teacher has no teacher recipe for {distilled.modality.name!r} sets (it has one for "
                f"{sorted(TEACHER_TRAINERS)}): pass teacher_name_or_path."
            )
        teacher = train(config, distilled, train_split, test_data, teacher_dir if config.should_save else None)
    state.wait_for_everyone()
    if teacher is None:
        teacher = load_teacher(teacher_dir, modality=distilled.modality)
    return teacher


def _train_image_teacher(
    config: KDConfig, distilled: DistilledSet, train_split: Dataset, test_data: ImageData | None, output_dir
) -> nn.Module:
    """A ConvNet trained on the real images, normalised like the set, with the student's augmentation by default."""
    strategy = config.teacher_augmentation
    if strategy == "auto":
        strategy = config.augmentation if config.augmentation != "auto" else distilled.dsa_strategy
    channels, height, width = distilled.image_shape
    return train_teacher(
        train_split,
        test_data,
        epochs=config.teacher_epochs or IMAGE_TEACHER_EPOCHS,
        augmentation=strategy_or_none(strategy),
        net_width=config.teacher_net_width,
        net_depth=config.teacher_net_depth,
        image_mean=distilled.image_mean,
        image_std=distilled.image_std,
        image_size=(height, width),
        num_channels=channels,
        seed=config.seed,
        device=config.device,
        show_progress=not config.disable_tqdm,
        dataset_name=config.source_dataset or distilled.source.get("dataset"),
        output_dir=output_dir,
    )


def _train_text_teacher(
    config: KDConfig, distilled: DistilledSet, train_split: Dataset, test_data: TextData | None, output_dir
) -> nn.Module:
    """The set's encoder fine-tuned on the real sentences (see [`train_text_teacher`])."""
    return train_text_teacher(
        train_split,
        test_data,
        encoder_name_or_path=distilled.metadata["model_name_or_path"],
        max_length=distilled.preparation_settings()["max_length"],
        epochs=config.teacher_epochs or TEXT_TEACHER_EPOCHS,
        seed=config.seed,
        show_progress=not config.disable_tqdm,
        dataset_name=config.source_dataset or distilled.source.get("dataset"),
        output_dir=output_dir,
    )


#: How `train_teacher=True` trains a teacher for a set of each modality.
TEACHER_TRAINERS = {"image": _train_image_teacher, "text": _train_text_teacher}
