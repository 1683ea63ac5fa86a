"""The text modality: a string column, tokenised by a pretrained text encoder, learned in its input-embedding space.

Real sentences are token ids and masks; learned examples are `inputs_embeds` (one vector per position, what the
encoder's word-embedding layer would give) with a fixed attention mask (see [`hf_distill.modalities.text_data`] for
the one-tensor layout of both). The encoder is pretrained and frozen: it embeds a sentence as the mean of its last
hidden states over the mask, L2-normalised (the sentence-transformers pooling of all-MiniLM-L6-v2 and its family),
and the evaluation protocol trains a linear classifier on that embedding (see [`linear_probe`]).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from datasets import Array2D, Dataset, Features, List, Value
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from ..augment import SiameseAugment
from ..checkpointing import save_tensors_atomic
from ..data import class_names_of, read_labels
from ..models.sentence_classifier import MeanPoolingForSequenceClassification, mean_pooled
from ..registry import register_modality
from .base import Modality
from .text_augment import TextAugmentation, text_augmentation
from .text_data import (
    TextData,
    find_text_columns,
    is_text_feature,
    mask_channel,
    pack_tokens,
    read_texts,
    validate_text_dataset,
)

#: Tokens per example unless the config says otherwise: SST-2's longest sentence has 63 with [CLS] and [SEP].
DEFAULT_MAX_LENGTH = 64


def linear_probe(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    inverse_regularization: float = 1.0,
    max_iterations: int = 1000,
) -> float:
    """Test accuracy (in [0, 1]) of a multinomial logistic regression trained on `train_features`.

    The objective is scikit-learn's `LogisticRegression` default: `C * sum(cross-entropy) + ||W||^2 / 2` (the bias
    unpenalised), with `C = inverse_regularization`, minimised to convergence by L-BFGS in float64. It is convex, so
    the result does not depend on an initialisation: one fit is the figure. `train_targets` are class indices `(N,)`
    or probabilities `(N, num_classes)` (learned soft labels).
    """
    x = train_features.double()
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    targets = train_targets.double() if torch.is_floating_point(train_targets) else train_targets.long()
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        max_iter=max_iterations,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = inverse_regularization * nn.functional.cross_entropy(x @ weight + bias, targets, reduction="sum")
        loss = loss + 0.5 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predictions = (test_features.double() @ weight + bias).argmax(dim=1)
    return float((predictions == test_labels.to(predictions.device)).double().mean())


@register_modality("text")
class TextModality(Modality):
    """Text: a string column, examples in a pretrained encoder's input-embedding space, `inputs_embeds`.

    The encoder (`model_name_or_path`: any `transformers` text encoder with a tokenizer, e.g. a BERT) is loaded by
    [`model_settings`] and kept frozen; learned examples are optimised through it.
    """

    input_name = "inputs_embeds"
    input_column = "inputs_embeds"
    preview_column = "text"
    task = "text-classification"
    column_role = "text"
    classifier_class = AutoModelForSequenceClassification

    def __init__(self, encoder: PreTrainedModel | None = None, tokenizer=None, name_or_path: str | None = None):
        self.encoder, self.tokenizer, self.name_or_path = encoder, tokenizer, name_or_path
        # The splits this modality prepared: a whole split handed back (e.g. the full-data baseline) is embedded from
        # its (cached) features instead of being encoded again.
        self._prepared: list[TextData] = []
        if encoder is not None:
            self._freeze(encoder)

    @staticmethod
    def _freeze(encoder: PreTrainedModel) -> None:
        encoder.eval()
        for parameter in encoder.parameters():
            parameter.requires_grad_(False)

    @classmethod
    def detect(cls, features: Features) -> bool:
        return any(is_text_feature(feature) for feature in features.values())

    def find_columns(self, dataset: Dataset, column_mapping: dict[str, str] | None = None) -> tuple[str, str]:
        return find_text_columns(dataset, column_mapping)

    def validate(self, dataset: Dataset, input_column: str, label_column: str, **checks) -> None:
        validate_text_dataset(dataset, input_column, label_column, **checks)

    # ------------------------------------------------------------------ the encoder

    def model_settings(self, name_or_path: str) -> dict:
        """Loads the tokenizer and the (frozen) encoder of `name_or_path`; returns `{"encoder": name_or_path}`."""
        if self.name_or_path != name_or_path:
            try:
                tokenizer = AutoTokenizer.from_pretrained(name_or_path)
                encoder = AutoModel.from_pretrained(name_or_path)
            except Exception as error:
                raise ValueError(
                    f"Could not load a text encoder and its tokenizer from {name_or_path!r}: {error}. Text needs a "
                    "transformers text model with a tokenizer (a Hub id or a local folder), e.g. "
                    "sentence-transformers/all-MiniLM-L6-v2."
                ) from error
            self._freeze(encoder)
            self.encoder, self.tokenizer, self.name_or_path = encoder, tokenizer, name_or_path
        return {"encoder": name_or_path}

    def _require_encoder(self) -> None:
        if self.encoder is None or self.tokenizer is None:
            raise ValueError(
                "Text is distilled in the input-embedding space of a pretrained text model: set model_name_or_path "
                "(--model_name_or_path) to one (a Hub id or local folder with a tokenizer, e.g. "
                "sentence-transformers/all-MiniLM-L6-v2)."
            )

    @property
    def hidden_size(self) -> int:
        self._require_encoder()
        return self.encoder.get_input_embeddings().weight.shape[1]

    def preparation_settings(self, config, architecture, model_settings: dict) -> dict:
        self._require_encoder()
        return {
            "max_length": getattr(config, "max_length", None) or DEFAULT_MAX_LENGTH,
            "feature_cache_dir": getattr(config, "feature_cache_dir", None),
        }

    def recorded_settings(self, metadata: dict) -> dict:
        """Loads the set's encoder (`model_name_or_path`) and returns its `max_length`."""
        if not metadata.get("model_name_or_path"):
            raise ValueError(
                "The text set's metadata lacks model_name_or_path: it must come from DistillTrainer.save (its config "
                "records the encoder whose input-embedding space the set lives in)."
            )
        self.model_settings(metadata["model_name_or_path"])
        return {"max_length": int(metadata.get("max_length") or DEFAULT_MAX_LENGTH)}

    def processor(self, settings: dict):
        """The encoder's tokenizer (sentences are tokenised by it)."""
        self._require_encoder()
        return self.tokenizer

    def default_student(self, class_names: list[str]) -> tuple[nn.Module, str]:
        """A copy of the encoder with a fresh head on its mean-pooled embedding
        ([`MeanPoolingForSequenceClassification`]): the encoder the set lives in, read through its own pooling."""
        self._require_encoder()
        model = MeanPoolingForSequenceClassification.from_encoder(self.encoder, id2label=dict(enumerate(class_names)))
        return model, self.name_or_path

    def check_classifier(self, model_config, example_shape: tuple[int, ...]) -> None:
        """The classifier must read the set's `inputs_embeds`: the same width as the encoder's word embeddings (and
        the same vocabulary, since the tokenizer saved with it is the encoder's)."""
        width = example_shape[-1] - 1  # inputs_embeds and the attention mask
        hidden = getattr(model_config, "hidden_size", None)
        if hidden is not None and hidden != width:
            raise ValueError(
                f"The model's hidden size is {hidden} but the set's inputs_embeds have {width} values per position "
                f"(the encoder {self.name_or_path}'s): use a model with hidden_size={width} (e.g. the encoder, or a "
                "smaller config of the same family with fewer layers)."
            )
        vocabulary = getattr(model_config, "vocab_size", None)
        if self.tokenizer is not None and vocabulary is not None and vocabulary < len(self.tokenizer):
            raise ValueError(
                f"The model's vocabulary has {vocabulary} entries but the encoder's tokenizer {len(self.tokenizer)}: "
                "use the encoder's vocab_size."
            )

    def bind_classifier(self, model: nn.Module) -> nn.Module:
        """Copies the encoder's word-embedding table into `model` and freezes it.

        The set's `inputs_embeds` are rows of (or points near) that table, and a raw sentence reaches a classifier
        through its own table: a student trained on the set must look its tokens up in the same table, whatever its
        other weights (a fresh config of the same family, another checkpoint of the same width)."""
        self._require_encoder()
        table = model.get_input_embeddings().weight
        source = self.encoder.get_input_embeddings().weight
        with torch.no_grad():
            table[: source.shape[0]].copy_(source.to(table))
        table.requires_grad_(False)
        return model

    def settings_of(self, data: TextData) -> dict:
        return {"max_length": data.max_length}

    def prepare(
        self,
        dataset: Dataset,
        input_column: str,
        label_column: str,
        max_length: int = DEFAULT_MAX_LENGTH,
        feature_cache_dir: str | None = None,
        **settings,
    ) -> TextData:
        """Tokenises the text column (padded and truncated to `max_length` tokens) and reads the labels; the
        split's sentence embeddings will be cached in `feature_cache_dir` when given."""
        self._require_encoder()
        texts = read_texts(dataset, input_column)
        encoded = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
        )
        labels = read_labels(dataset, label_column)
        data = TextData(
            inputs=pack_tokens(encoded["input_ids"], encoded["attention_mask"]),
            labels=torch.tensor(labels, dtype=torch.long),
            class_names=class_names_of(dataset, label_column, labels),
            texts=texts,
            encoder=self.name_or_path,
            feature_cache_dir=feature_cache_dir,
        )
        self._prepared.append(data)
        return data

    # ------------------------------------------------------------------ running the encoder

    def to_learnable(self, inputs: torch.Tensor) -> torch.Tensor:
        """Token ids and masks `(N, L, 2)` as input embeddings and masks `(N, L, D + 1)` (float32, exact: the rows of
        the word-embedding matrix); learned examples are returned as they are."""
        if torch.is_floating_point(inputs):
            return inputs
        self._require_encoder()
        table = self.encoder.get_input_embeddings().weight.detach()
        embeds = table[inputs[..., 0].to(table.device)].float()
        return torch.cat([embeds, inputs[..., 1:].to(embeds)], dim=-1)

    @staticmethod
    def attention_mask(inputs: torch.Tensor) -> torch.Tensor:
        """The attention mask of real (token ids) or learned (input embeddings) examples, `(N, L)`; never learned,
        so detached."""
        return inputs[..., mask_channel(inputs)].detach()

    def forward(self, model: nn.Module, inputs: torch.Tensor, **kwargs):
        """`model` on token ids (integer inputs) or on input embeddings (float inputs), with their attention mask.

        Sentences are right-padded, so the positions after the batch's longest one change nothing for a model that
        reads the mask: they are not computed (the outputs are shorter than `max_length` accordingly).
        """
        length = int(self.attention_mask(inputs).sum(dim=1).max().clamp_min(1))
        inputs = inputs[:, :length]
        if torch.is_floating_point(inputs):
            return model(inputs_embeds=inputs[..., :-1], attention_mask=self.attention_mask(inputs), **kwargs)
        return model(input_ids=inputs[..., 0], attention_mask=inputs[..., 1], **kwargs)

    def augmentation(self, strategy: str | None, class_names: list[str]) -> SiameseAugment | TextAugmentation:
        """The text augmentations `strategy` names (`"token_dropout"`, `"splice"`, or both joined by `+`; see
        [`text_augmentation`]), or none (`None`, `"none"`, `"auto"`): image augmentations do not apply to text."""
        if strategy in (None, "none", "auto"):
            return SiameseAugment(None)
        return text_augmentation(strategy)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings `(B, D)` of a batch under the frozen encoder (differentiable w.r.t. learned inputs)."""
        self._require_encoder()
        inputs = inputs.to(self.encoder.device)
        hidden = self.forward(self.encoder, inputs).last_hidden_state
        return mean_pooled(hidden, self.attention_mask(inputs)[:, : hidden.shape[1]])

    @torch.no_grad()
    def sentence_embeddings(
        self, inputs: torch.Tensor, batch_size: int = 256, show_progress: bool = False, desc: str = "Encoding"
    ) -> torch.Tensor:
        """[`embed`] of many examples, in batches of similar length (fast: little padding), `(N, D)` on the CPU in
        row order."""
        mask = self.attention_mask(inputs)
        order = torch.argsort(mask.sum(dim=1), stable=True)
        out = torch.empty(len(inputs), self.hidden_size)
        for start in tqdm(range(0, len(inputs), batch_size), desc=desc, disable=not show_progress, unit="batch"):
            rows = order[start : start + batch_size]
            out[rows] = self.embed(inputs[rows]).float().cpu()
        return out

    def features(self, data: TextData, show_progress: bool = True) -> torch.Tensor:
        """The sentence embedding of every row of `data`, `(N, D)`: computed once, then kept on `data` and, with
        `data.feature_cache_dir`, on disk (read back by any later run with the same encoder and tokens)."""
        if data.sentence_features is not None:
            return data.sentence_features
        path = self.feature_cache_path(data)
        if path is not None and path.is_file():
            data.sentence_features = load_file(str(path))["features"]
            return data.sentence_features
        data.sentence_features = self.sentence_embeddings(
            data.inputs, show_progress=show_progress, desc=f"Encoding {len(data)} sentences"
        )
        if path is not None:
            save_tensors_atomic({"features": data.sentence_features.contiguous()}, path)
        return data.sentence_features

    def feature_cache_path(self, data: TextData) -> Path | None:
        """Where `data`'s sentence embeddings are cached (`None` without `data.feature_cache_dir`): named by a digest
        of the encoder's name and config, the pooling and every token id and mask."""
        if not data.feature_cache_dir:
            return None
        digest = hashlib.sha256()
        digest.update(
            json.dumps(
                [self.name_or_path, "mean-pooling-l2", self.encoder.config.to_dict()], sort_keys=True, default=str
            ).encode()
        )
        digest.update(data.inputs.contiguous().numpy().tobytes())
        return Path(data.feature_cache_dir) / f"sentence-features-{digest.hexdigest()[:16]}.safetensors"

    def pretrained_features(self, data: TextData) -> torch.Tensor:
        return self.features(data)

    # ------------------------------------------------------------------ evaluation

    def evaluate(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        test_data: TextData,
        key: str = "distilled",
        protocol=None,
        **_,
    ) -> dict | None:
        """Protocol (a) for text: a linear classifier (logistic regression, see [`linear_probe`]) on the frozen
        encoder's sentence embeddings of the set, tested on the whole test split. With `protocol.text_protocol ==
        "fine_tune"`, `None`: protocol (b) fine-tunes copies of the encoder through the standard loop."""
        if getattr(protocol, "text_protocol", "linear_probe") == "fine_tune":
            return None
        split = next((data for data in self._prepared if inputs is data.inputs), None)
        train_features = self.features(split) if split is not None else self.sentence_embeddings(inputs.detach().cpu())
        test_features = self.features(test_data, show_progress=False)
        accuracy = 100.0 * linear_probe(
            train_features, targets.detach().cpu(), test_features, test_data.labels, test_data.num_classes
        )
        return {
            "mean": accuracy,
            "std": 0.0,
            "accuracies": [accuracy],
            "num_models": 1,
            "epochs": None,
            "protocol": "linear_probe",
            "architecture": "linear_probe",  # a logistic regression on the frozen encoder's sentence embeddings
            "encoder": self.name_or_path,
            "num_images": int(inputs.shape[0]),
        }

    # ------------------------------------------------------------------ previews and export

    @torch.no_grad()
    def nearest_tokens(self, inputs: torch.Tensor) -> torch.Tensor:
        """The vocabulary token whose input embedding is nearest (Euclidean) to each position, `(N, L)` ids."""
        self._require_encoder()
        table = self.encoder.get_input_embeddings().weight.detach().float().cpu()
        squared_norms = table.pow(2).sum(dim=1)
        embeds = inputs[..., :-1].detach().float().cpu()
        # argmin |e - t|^2 = argmax 2 e.t - |t|^2, per example (keeps the (L, V) score matrix small).
        return torch.stack([(2 * e @ table.T - squared_norms).argmax(dim=1) for e in embeds])

    def preview(self, inputs: torch.Tensor, mean=None, std=None, **preprocessing) -> list[str]:
        """Each example as text: the nearest vocabulary token at every unmasked position, decoded by the tokenizer
        (special tokens dropped). A real sentence's embeddings decode to its tokens."""
        learned = self.to_learnable(inputs.detach().cpu())
        ids, mask = self.nearest_tokens(learned), learned[..., -1] > 0.5
        return [self.tokenizer.decode(row[keep].tolist(), skip_special_tokens=True) for row, keep in zip(ids, mask)]

    def export_features(self, example_shape: tuple[int, ...]) -> dict:
        length, width = example_shape
        return {
            "text": Value("string"),
            "inputs_embeds": Array2D(shape=(length, width - 1), dtype="float32"),
            "attention_mask": List(Value("int8"), length=length),
        }

    def export_columns(self, inputs: torch.Tensor, mean=None, std=None, **preprocessing) -> dict:
        """`text` (the preview), `inputs_embeds` (exact float32 values) and `attention_mask`."""
        learned = self.to_learnable(inputs.detach().cpu().float() if torch.is_floating_point(inputs) else inputs)
        return {
            "text": self.preview(learned),
            "inputs_embeds": learned[..., :-1].numpy(),
            "attention_mask": learned[..., -1].round().to(torch.int8).numpy(),
        }

    def stored_columns(self) -> list[str]:
        return ["inputs_embeds", "attention_mask"]

    def inputs_from_columns(self, columns: dict) -> torch.Tensor:
        embeds = torch.as_tensor(np.asarray(columns["inputs_embeds"]), dtype=torch.float32)
        mask = torch.as_tensor(np.asarray(columns["attention_mask"]), dtype=torch.float32)
        return torch.cat([embeds, mask.unsqueeze(-1)], dim=-1)
