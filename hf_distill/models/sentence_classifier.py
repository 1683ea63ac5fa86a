"""A text encoder with a linear head on its mean-pooled sentence embedding ([`MeanPoolingForSequenceClassification`]).

Sentence encoders such as all-MiniLM-L6-v2 are trained to be read through the mean of their last hidden states, not
through BERT's `[CLS]` pooler: on SST-2 a logistic regression on the mean-pooled embedding of all-MiniLM-L6-v2
scores 80.0 (4,000 training sentences), on its `[CLS]` state 74.0 and on its pooler output 70.9 (see
benchmarks/README.md). This classifier keeps the encoder's own pooling. It is text protocol (b)'s classifier and the
default KD student of a text set; registered with `AutoConfig` / `AutoModelForSequenceClassification`, so a saved
one loads with `AutoModelForSequenceClassification.from_pretrained` once `hf_distill` is imported.
"""

import copy

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of `hidden` `(B, L, D)` over the positions `mask` `(B, L)` keeps, L2-normalised: `(B, D)`."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    summed = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    return nn.functional.normalize(summed, dim=-1)


class MeanPoolingClassifierConfig(PretrainedConfig):
    """Configuration of [`MeanPoolingForSequenceClassification`]: the encoder's own config (as a dict, under
    `encoder`) plus the usual classification fields (`num_labels`, `id2label`, ...)."""

    model_type = "hf_distill_mean_pooling_classifier"

    def __init__(self, encoder: dict | PretrainedConfig | None = None, **kwargs):
        self.encoder = encoder.to_dict() if isinstance(encoder, PretrainedConfig) else dict(encoder or {})
        super().__init__(**kwargs)

    def encoder_config(self) -> PretrainedConfig:
        """The encoder's config as its own class (e.g. a `BertConfig`)."""
        values = dict(self.encoder)
        if "model_type" not in values:
            raise ValueError(
                "MeanPoolingClassifierConfig.encoder must hold the encoder's config, with its model_type."
            )
        return AutoConfig.for_model(values.pop("model_type"), **values)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.encoder["vocab_size"])


class MeanPoolingForSequenceClassification(PreTrainedModel):
    """`encoder` -> the mean of its last hidden states over the mask, L2-normalised -> `nn.Linear(hidden, labels)`.

    Takes `input_ids` or `inputs_embeds` with an `attention_mask`; with `labels`, the output has the cross-entropy
    `loss`. Build one around a pretrained encoder with [`from_encoder`].
    """

    config_class = MeanPoolingClassifierConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"

    def __init__(self, config: MeanPoolingClassifierConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder_config())
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @classmethod
    def from_encoder(
        cls, encoder: PreTrainedModel, num_labels: int | None = None, id2label: dict[int, str] | None = None
    ) -> "MeanPoolingForSequenceClassification":
        """A classifier around a copy of `encoder` (every parameter trainable) with a fresh head for `num_labels`
        classes (or `id2label`'s)."""
        if id2label is None:
            id2label = {index: f"LABEL_{index}" for index in range(num_labels or 2)}
        config = MeanPoolingClassifierConfig(
            encoder=encoder.config,
            id2label=dict(id2label),
            label2id={name: index for index, name in id2label.items()},
        )
        return cls(config, copy.deepcopy(encoder).requires_grad_(True))

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Only the head is ours to initialise (PyTorch's default); the encoder comes initialised or pretrained.
        if module is getattr(self, "classifier", None):
            module.reset_parameters()

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
            attention_mask = torch.ones(shape, dtype=torch.long, device=self.classifier.weight.device)
        hidden = self.encoder(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask
        ).last_hidden_state
        logits = self.classifier(mean_pooled(hidden, attention_mask))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


# Registration makes `AutoModelForSequenceClassification.from_pretrained` load a saved one (after `import hf_distill`).
AutoConfig.register(MeanPoolingClassifierConfig.model_type, MeanPoolingClassifierConfig, exist_ok=True)
AutoModelForSequenceClassification.register(
    MeanPoolingClassifierConfig, MeanPoolingForSequenceClassification, exist_ok=True
)
