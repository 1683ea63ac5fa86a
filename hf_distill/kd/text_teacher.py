"""[`train_text_teacher`]: a text teacher, the set's encoder fine-tuned on the whole real training split.

A text set lives in its encoder's input-embedding space (`inputs_embeds`), so the teacher that labels it must read
that space: it is the same pretrained encoder with a sequence-classification head
(`AutoModelForSequenceClassification`), fine-tuned on every real sentence with the word-embedding table frozen, so
the set's `inputs_embeds` mean to the teacher exactly what they meant to the encoder they were distilled with.
"""

import logging
import os
import time
from pathlib import Path

import torch
from datasets import Dataset
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoModelForSequenceClassification, PreTrainedModel, Trainer, TrainingArguments

from ..evaluation import model_accuracy
from ..modalities import TextData, TextModality
from ..preparation import prepare_train_and_test
from ..seeding import seeded_rng

logger = logging.getLogger(__name__)


class _TokenRows(torch.utils.data.Dataset):
    """A prepared [`TextData`] as rows of `input_ids` and `attention_mask` cut to each sentence's own length (so the
    Trainer's `group_by_length` sampler sees real lengths), with their labels."""

    def __init__(self, data: TextData):
        self.data = data
        self.lengths = data.inputs[..., 1].sum(dim=1).clamp_min(1).tolist()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tokens = self.data.inputs[index, : self.lengths[index]]
        return {"input_ids": tokens[:, 0], "attention_mask": tokens[:, 1], "labels": self.data.labels[index]}


def collate_token_rows(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Pads a batch of token rows to its longest sentence (padded positions are masked out, so their ids do not
    matter)."""
    return {
        "input_ids": pad_sequence([row["input_ids"] for row in rows], batch_first=True),
        "attention_mask": pad_sequence([row["attention_mask"] for row in rows], batch_first=True),
        "labels": torch.stack([row["labels"] for row in rows]),
    }


def train_text_teacher(
    train_split: Dataset | TextData,
    test_split: Dataset | TextData | None = None,
    *,
    encoder_name_or_path: str,
    max_length: int,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    weight_decay: float = 0.01,
    warmup: float = 0.1,
    seed: int = 0,
    show_progress: bool = True,
    dataset_name: str | None = None,
    output_dir: str | os.PathLike | None = None,
) -> PreTrainedModel:
    """Fine-tunes `encoder_name_or_path` with a classification head on the whole real training split.

    The schedule is the usual BERT fine-tuning one (Devlin et al., 2019): AdamW, lr 2e-5, linear warmup over the
    first 10% of the steps then linear decay, batch 32, run by the `transformers.Trainer` with batches of similar
    lengths; randomness from `seed` only. The word-embedding table stays frozen (see the module docstring).
    Sentences are tokenised to `max_length` tokens, like the distilled set's.

    Args:
        train_split (`datasets.Dataset` or [`TextData`]): The whole real training split (a text and a label column).
        test_split (`datasets.Dataset` or [`TextData`], *optional*): Evaluated at the end (accuracy recorded).
        encoder_name_or_path (`str`): The encoder the set was distilled with (Hub id or folder).
        max_length (`int`): Tokens per sentence (the set's).
        epochs (`int`, *optional*, defaults to 1), batch_size, learning_rate, weight_decay, warmup: The schedule.
        seed (`int`, *optional*, defaults to 0): Seed of the head's init and the shuffling.
        show_progress (`bool`, *optional*, defaults to `True`): The Trainer's progress bar.
        dataset_name (`str`, *optional*): Recorded in the config (the card's teacher description).
        output_dir (`str` or `os.PathLike`, *optional*): Save the teacher and its tokenizer there.

    Returns:
        [`~transformers.PreTrainedModel`]: The teacher in eval mode; `config.hf_distill_teacher` records the dataset,
        epochs and test accuracy (percent, when `test_split` is given).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    modality = TextModality()
    modality.model_settings(encoder_name_or_path)
    train_data, test_data = prepare_train_and_test(train_split, test_split, modality, {"max_length": max_length})
    id2label = dict(enumerate(train_data.class_names))
    with seeded_rng(seed):  # the new head is drawn from the global generator: fork it, keyed by the seed
        model = AutoModelForSequenceClassification.from_pretrained(
            encoder_name_or_path,
            num_labels=train_data.num_classes,
            id2label=id2label,
            label2id={name: index for index, name in id2label.items()},
        )
    model.get_input_embeddings().weight.requires_grad_(False)
    arguments = TrainingArguments(
        output_dir=str(output_dir) if output_dir is not None else "hf_distill_text_teacher",
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_steps=warmup,
        lr_scheduler_type="linear",
        seed=seed,
        data_seed=seed,
        train_sampling_strategy="group_by_length",  # batches of similar lengths: little padding
        save_strategy="no",
        report_to="none",
        logging_steps=100,
        disable_tqdm=not show_progress,
        remove_unused_columns=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model, args=arguments, train_dataset=_TokenRows(train_data), data_collator=collate_token_rows
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model = trainer.model.eval().requires_grad_(False)
    accuracy = None
    if test_data is not None:
        accuracy = 100.0 * model_accuracy(model, test_data, forward=lambda x: modality.logits(model, x))
    model.config.hf_distill_teacher = {
        "dataset": dataset_name,
        "train_split": "train",
        "num_train_examples": len(train_data),
        "encoder": encoder_name_or_path,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "seed": seed,
        "test_accuracy": accuracy,
        "seconds": round(seconds, 2),
    }
    if output_dir is not None:
        output_dir = Path(output_dir)
        model.save_pretrained(output_dir)
        modality.tokenizer.save_pretrained(output_dir)
    logger.info(
        "Text teacher: %.2f%% test accuracy after %d epoch(s), %.0f s.", accuracy or float("nan"), epochs, seconds
    )
    return model
