"""A linear classifier on precomputed embeddings: the selection network of a modality that embeds with a pretrained,
frozen encoder (text), where training "the network" on the real split means training its head."""

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput


class EmbeddingClassifier(nn.Module):
    """`logits = W h + b` for embeddings `h` `(N, D)`, taken as `features=`; [`embed`] is the identity, so
    `extract_features` returns the embedding the head sees.

    Args:
        embedding_size (`int`): `D`.
        num_classes (`int`): Classes of the head.
    """

    #: The keyword the forward takes its inputs under.
    input_name = "features"
    #: How [`to_dict`] names the architecture (as a `config.json`'s `model_type`).
    model_type = "hf_distill_embedding_classifier"

    def __init__(self, embedding_size: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(embedding_size, num_classes)

    def to_dict(self) -> dict:
        """The architecture as a `config.json`-like dict (what expert trajectories record of their network)."""
        return {
            "model_type": self.model_type,
            "embedding_size": self.classifier.in_features,
            "num_labels": self.classifier.out_features,
        }

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def forward(self, features: torch.Tensor) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.classifier(features))
