"""Augmentations of text examples for knowledge distillation: new views of a sentence that a teacher labels afresh.

Both work on the one-tensor layout of [`hf_distill.modalities.text_data`] — learned examples `(B, L, D + 1)`
(`inputs_embeds` and the mask) and real sentences `(B, L, 2)` (token ids and the mask) alike — and draw from the
generator they are given, never the global RNG. A strategy names one or several, joined by `+` and applied in that
order (`"splice+token_dropout"`).
"""

from __future__ import annotations

import torch

from .text_data import mask_channel

#: The names a text strategy is built from.
TOKEN_DROPOUT, SPLICE = "token_dropout", "splice"
#: The share of tokens token dropout leaves out (the SST-2 KD sweep: 0.2 and 0.35 within 0.1 of each other).
TOKEN_DROPOUT_RATE = 0.2


class TokenDropout:
    """Removes each token of each example but the first (`[CLS]`) from the attention mask with probability `rate`:
    a view of the sentence with some words left out (word dropout, Iyyer et al., 2015). The input embeddings are
    untouched.

    Args:
        rate (`float`, *optional*, defaults to 0.2): The probability of dropping a token.
    """

    def __init__(self, rate: float = TOKEN_DROPOUT_RATE):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"The token dropout rate must be in [0, 1), got {rate}.")
        self.rate = rate
        self.enabled = rate > 0

    def __call__(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`inputs` (learned `(B, L, D + 1)` or token `(B, L, 2)` examples) with tokens dropped from their mask."""
        if not self.enabled:
            return inputs
        channel = mask_channel(inputs)
        keep = torch.rand(inputs.shape[:2], generator=generator, device=generator.device) >= self.rate
        keep[:, 0] = True
        inputs = inputs.clone()
        inputs[..., channel] = inputs[..., channel] * keep.to(inputs.device, inputs.dtype)
        return inputs


class SentenceSplice:
    """Joins the head of each example to the tail of another example of the batch: a new sentence, often with halves
    of opposite sentiment, that a KD teacher labels afresh (the text counterpart of CutMix; with 20 examples a batch
    has 380 ordered pairs and every cut point makes another sentence).

    Example `i` keeps its positions `[0, a)` (from `[CLS]`, at least one token) and continues with positions
    `[b, n_j)` of a partner `j != i` drawn uniformly (at least its `[SEP]`), where the cut points `a` and `b` are
    uniform inside each sentence; the result is cut at the example length `L`, and the mask covers exactly what was
    joined. Masks are taken to be a prefix of ones (as tokenised and learned examples are), so splice before dropping
    tokens. Position embeddings are added inside the encoder, so the moved tokens take their new positions.

    Args:
        probability (`float`, *optional*, defaults to 1.0): The share of examples spliced (the others pass as they
            are). On the SST-2 KD recipe it lifted held-out accuracy by 0.4 points on average over 4 runs
            (84.05-84.75 against 84.10 without it), within the seed-to-seed spread.
    """

    def __init__(self, probability: float = 1.0):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"The splice probability must be in [0, 1], got {probability}.")
        self.probability = probability
        self.enabled = probability > 0

    def __call__(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`inputs` with each example (with probability `probability`) spliced to a partner's tail."""
        batch, length = inputs.shape[:2]
        if not self.enabled or batch < 2:
            return inputs
        channel = mask_channel(inputs)
        device = generator.device
        lengths = (inputs[..., channel] > 0).sum(dim=1).to(device)
        draws = torch.rand(batch, 3, generator=generator, device=device)
        offset = torch.randint(1, batch, (batch,), generator=generator, device=device)
        partner = (torch.arange(batch, device=device) + offset) % batch  # never the example itself
        head = 1 + (draws[:, 0] * (lengths - 2).clamp(min=0)).long()  # keeps [CLS] and >= 1 more position
        tail = 1 + (draws[:, 1] * (lengths[partner] - 2).clamp(min=0)).long()  # keeps the partner's [SEP]
        spliced = draws[:, 2] < self.probability

        position = torch.arange(length, device=device).expand(batch, length)
        from_partner = spliced[:, None] & (position >= head[:, None])
        source_row = torch.where(from_partner, partner[:, None], torch.arange(batch, device=device)[:, None])
        source_position = torch.where(from_partner, tail[:, None] + position - head[:, None], position)
        valid = source_position < lengths[source_row]
        out = inputs[source_row.to(inputs.device), source_position.clamp(max=length - 1).to(inputs.device)]
        out[..., channel] = valid.to(inputs.device, out.dtype)
        return out


class TextAugmentation:
    """Several text augmentations applied in turn (see [`text_augmentation`]).

    Args:
        steps (`list`): The augmentations, each `(inputs, generator) -> inputs`.
        strategy (`str`): The name they were built from (recorded with a KD student).
    """

    def __init__(self, steps: list, strategy: str):
        self.steps = steps
        self.strategy = strategy
        self.enabled = any(step.enabled for step in steps)

    def __call__(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in self.steps:
            inputs = step(inputs, generator)
        return inputs


_BUILDERS = {TOKEN_DROPOUT: TokenDropout, SPLICE: SentenceSplice}


def is_text_strategy(strategy: str | None) -> bool:
    """Whether `strategy` names text augmentations (`token_dropout`, `splice`, or both joined by `+`)."""
    return bool(strategy) and all(name in _BUILDERS for name in strategy.split("+"))


def text_augmentation(strategy: str) -> TextAugmentation:
    """The augmentation a text strategy names: `"token_dropout"`, `"splice"` or several joined by `+`, applied in
    that order (`"splice+token_dropout"`: splice, then drop tokens of the result).

    Raises:
        ValueError: A name that is not a text augmentation.
    """
    if not is_text_strategy(strategy):
        raise ValueError(
            f"Text sets take the augmentations {sorted(_BUILDERS)}, alone or joined by '+' (e.g. "
            f"'{SPLICE}+{TOKEN_DROPOUT}'), or none; got {strategy!r}."
        )
    return TextAugmentation([_BUILDERS[name]() for name in strategy.split("+")], strategy)
