"""Text splits as token tensors ([`TextData`]) and the text column of a dataset ([`find_text_columns`], checks).

A text example is one tensor whose last axis holds a token and its attention mask, so that every piece of code that
samples rows, indexes classes or checkpoints a set handles text exactly as it handles images:

- a real sentence is `(max_length, 2)` int64: `[..., 0]` the token ids, `[..., 1]` the attention mask;
- a learned (or exported) example is `(max_length, hidden_size + 1)` float32: `[..., :-1]` the input embeddings the
  encoder takes as `inputs_embeds`, `[..., -1]` the attention mask (held fixed: it gets no gradient).

[`hf_distill.modalities.text.TextModality`] turns one form into the other and runs the encoder on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset, Value

from ..data import (
    COLUMN_MAPPING_HINT,
    checked_column_mapping,
    describe_columns,
    find_label_column,
    validate_labels,
)
from ..splits import LabelledSplit


def mask_channel(examples: torch.Tensor) -> int:
    """Where a batch of text examples holds its attention mask: the last channel of learned examples, channel 1 of
    token examples."""
    return examples.shape[-1] - 1 if torch.is_floating_point(examples) else 1


TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content", "review", "document")
"""Names preferred, in this order, when a dataset has several string columns."""


def is_text_feature(feature) -> bool:
    """Whether a `datasets` feature holds one string per row."""
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


@dataclass(eq=False)
class TextData(LabelledSplit):
    """A labelled text split as token tensors.

    Args:
        inputs (`torch.Tensor` of shape `(N, max_length, 2)`, `int64`): Token ids (`[..., 0]`) and attention mask
            (`[..., 1]`) of every sentence, padded or truncated to `max_length` tokens by the encoder's tokenizer.
        labels (`torch.Tensor` of shape `(N,)`, `int64`): Class indices.
        class_names (`list[str]`): Name of every class.
        texts (`list[str]`): The sentences as they are in the dataset (what a selected row exports).
        encoder (`str`): The text model (Hub id or path) whose tokenizer made the ids.
        feature_cache_dir (`str`, *optional*): Where the frozen encoder's sentence embeddings of the split are
            cached on disk (see `TextModality.features`).
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    texts: list[str]
    encoder: str
    feature_cache_dir: str | None = None
    _indices_by_class: list[torch.Tensor] | None = field(default=None, init=False, repr=False)
    #: Sentence embeddings of every row under the frozen encoder, once computed (see `TextModality.features`).
    sentence_features: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.inputs.ndim != 3 or self.inputs.shape[-1] != 2 or torch.is_floating_point(self.inputs):
            raise ValueError(
                f"`inputs` must be int64 token ids and masks of shape (N, max_length, 2), got {self.inputs.dtype} "
                f"{tuple(self.inputs.shape)}."
            )
        if self.labels.shape != (self.inputs.shape[0],) or len(self.texts) != self.inputs.shape[0]:
            raise ValueError(
                f"`labels` and `texts` need one entry per sentence ({self.inputs.shape[0]}), got "
                f"{tuple(self.labels.shape)} and {len(self.texts)}."
            )

    @property
    def max_length(self) -> int:
        """Tokens per example."""
        return self.inputs.shape[1]


def find_text_columns(ds: Dataset, column_mapping: dict[str, str] | None = None) -> tuple[str, str]:
    """`(text column, label column)` of a text classification dataset.

    Text column: `column_mapping["text"]` when given, else the first string column named `text`, `sentence`,
    `content`, `review` or `document`, else the only string column. Label column: as [`find_label_column`].

    Raises:
        ValueError: No string column, several and none of the usual names, a mapped column that is missing or not
            strings; the message lists the columns and says how to choose.
    """
    features = ds.features
    column_mapping = checked_column_mapping(features, column_mapping, "text")
    if "text" in column_mapping:
        text_column = column_mapping["text"]
        if not is_text_feature(features[text_column]):
            raise ValueError(
                f"Column {text_column!r} given as the text column has feature {features[text_column]!r}; it must hold "
                f"one string per row (Value('string')). Cast it with ds = ds.cast_column({text_column!r}, "
                "Value('string')) or pick another column."
            )
    else:
        strings = [name for name, feature in features.items() if is_text_feature(feature)]
        preferred = [name for name in TEXT_COLUMN_CANDIDATES if name in strings]
        if preferred:
            text_column = preferred[0]
        elif len(strings) == 1:
            text_column = strings[0]
        elif strings:
            raise ValueError(
                f"Several string columns ({', '.join(map(repr, strings))}) and none is named "
                f"{' / '.join(TEXT_COLUMN_CANDIDATES)}: set text_column (--text_column) to the one to distill."
            )
        else:
            raise ValueError(
                f"Could not find a text column. Columns found: {describe_columns(features)}. Expected a "
                f"Value('string') column. To fix it, {COLUMN_MAPPING_HINT}."
            )
    return text_column, find_label_column(features, text_column, column_mapping.get("label"))


def validate_text_dataset(ds: Dataset, text_column: str, label_column: str, split: str = "train", **checks) -> None:
    """Check that a text split can be distilled: its text column exists, holds strings and has no missing values,
    then [`validate_labels`] (with `checks`: `images_per_class`, `init`). Reads only those two columns."""
    if text_column not in ds.features:
        raise ValueError(
            f"Text column {text_column!r} not found in the {split!r} split; the columns are {list(ds.features)}. "
            f"To fix it, {COLUMN_MAPPING_HINT}."
        )
    if not is_text_feature(ds.features[text_column]):
        raise ValueError(
            f"Text column {text_column!r} of the {split!r} split has feature {ds.features[text_column]!r}, "
            "not strings."
        )
    column = ds.select_columns([text_column]).with_format("arrow")[:].column(text_column)
    if column.null_count:
        raise ValueError(
            f"Text column {text_column!r} of the {split!r} split has {column.null_count} missing (null) values. Drop "
            f"them first, e.g. ds = ds.filter(lambda t: t is not None, input_columns={text_column!r})."
        )
    validate_labels(ds, label_column, split=split, **checks)


def read_texts(ds: Dataset, text_column: str) -> list[str]:
    """The text column as a list of Python strings (one Arrow read, no row-by-row decoding)."""
    return ds.select_columns([text_column]).with_format("arrow")[:].column(text_column).to_pylist()


def pack_tokens(input_ids: np.ndarray, attention_mask: np.ndarray) -> torch.Tensor:
    """`(N, L)` ids and masks as the `(N, L, 2)` int64 tensor [`TextData`] holds."""
    return torch.stack([torch.as_tensor(input_ids), torch.as_tensor(attention_mask)], dim=-1).long()
