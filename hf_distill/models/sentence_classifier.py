"""A pretrained text encoder with a linear head on its pooled sentence embedding: text protocol (b)'s classifier."""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from ..modalities.text import mean_pooled


class SentenceEncoderClassifier(nn.Module):
    """`encoder` (fine-tuned with the head) -> mean of the last hidden states over the mask, L2-normalised (the
    embedding protocol (a) probes) -> `nn.Linear(hidden_size, num_classes)`.

    Args:
        encoder (`PreTrainedModel`): A text encoder taking `input_ids` or `inputs_embeds` with an `attention_mask`
            (a copy: its parameters are trained).
        num_classes (`int`): Classes of the head.
    """

    def __init__(self, encoder: PreTrainedModel, num_classes: int):
        super().__init__()
        self.encoder = encoder.requires_grad_(True)
        self.classifier = nn.Linear(encoder.get_input_embeddings().weight.shape[1], num_classes)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        hidden = self.encoder(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask
        ).last_hidden_state
        return SequenceClassifierOutput(logits=self.classifier(mean_pooled(hidden, attention_mask)))
