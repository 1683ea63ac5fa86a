"""The knowledge-distillation loss ([`distillation_loss`]) and its target ([`kd_target_probabilities`]).

The loss on a batch (student logits `s`, teacher logits `t`, hard labels `y`, temperature `T`) is

    alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))          (KL averaged per example)

When the distilled set has a `soft_label` column (learned labels), its rows are used as (part of) the KD target, see
[`kd_target_probabilities`]. `alpha=1` is plain cross-entropy and needs no teacher.
"""

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

#: Mixes per-row target distributions `(B, K)` as the inputs were mixed (e.g. [`hf_distill.augment.CutMix.mix`]).
TargetMixer = Callable[[torch.Tensor], torch.Tensor]


def kd_target_probabilities(
    teacher_logits: torch.Tensor | None,
    soft_labels: torch.Tensor | None,
    temperature: float,
    soft_label_weight: float = 0.5,
    soft_labels_are_probabilities: bool = False,
    mix_targets: TargetMixer | None = None,
) -> torch.Tensor:
    """The KD target distribution at temperature `T`.

    - teacher: `softmax(teacher_logits / T)`.
    - soft labels given as logits: `softmax(soft_labels / T)`; given as probabilities `p`: `p^(1/T) / sum(p^(1/T))`,
      which is `softmax(log(p) / T)`, i.e. the same tempering, with exact zeros kept at zero.
    - both: `w * soft + (1 - w) * teacher` with `w = soft_label_weight`.

    Args:
        teacher_logits (`torch.Tensor` of shape `(B, K)`, *optional*): The teacher's logits.
        soft_labels (`torch.Tensor` of shape `(B, K)`, *optional*): The set's soft labels for the batch.
        temperature (`float`): `T`.
        soft_label_weight (`float`, *optional*, defaults to 0.5): `w`, used only when both targets are given.
        soft_labels_are_probabilities (`bool`, *optional*, defaults to `False`): How to read `soft_labels`.
        mix_targets (*optional*): When the inputs were mixed (CutMix), mixes the soft labels' rows alike (the teacher,
            which sees the mixed inputs, needs no mixing).

    Returns:
        `torch.Tensor` of shape `(B, K)`: float32 probabilities.
    """
    if teacher_logits is None and soft_labels is None:
        raise ValueError("The KD term needs teacher logits or soft labels (or set alpha=1 for plain cross-entropy).")
    targets = []
    if soft_labels is not None:
        soft_labels = soft_labels.float()
        if soft_labels_are_probabilities:
            tempered = soft_labels.clamp_min(0).pow(1.0 / temperature)
            soft = tempered / tempered.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(tempered.dtype).tiny)
        else:
            soft = F.softmax(soft_labels / temperature, dim=-1)
        targets.append(soft if mix_targets is None else mix_targets(soft))
    if teacher_logits is not None:
        targets.append(F.softmax(teacher_logits.float() / temperature, dim=-1))
    if len(targets) == 1:
        return targets[0]
    return soft_label_weight * targets[0] + (1.0 - soft_label_weight) * targets[1]


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    *,
    alpha: float,
    temperature: float,
    soft_labels: torch.Tensor | None = None,
    soft_label_weight: float = 0.5,
    soft_labels_are_probabilities: bool = False,
    mix_targets: TargetMixer | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(target || softmax(student / T))`.

    `KL` is averaged over the batch (`reduction="batchmean"`, the true KL per example); the `T^2` factor keeps the
    gradient scale of the soft term independent of `T` (Hinton et al., 2015). The target is
    [`kd_target_probabilities`] of the teacher logits and/or soft labels. With `alpha == 1` no target is needed and
    the loss is plain cross-entropy; with `alpha == 0`, hard labels are optional. `mix_targets` (inputs mixed by
    CutMix): the hard labels' one-hot rows and the soft labels are mixed by it, the teacher labels what it sees.

    Returns:
        `tuple`: the loss, and `{"ce_loss": ..., "kd_loss": ...}` (detached; each present when computed; `kd_loss`
        is the `T^2`-scaled KL before the `1 - alpha` weight).
    """
    logits = student_logits.float()  # log-softmax in float32 even under bf16/fp16 autocast
    parts: dict[str, torch.Tensor] = {}
    loss = logits.new_zeros(())
    if labels is not None:
        if mix_targets is None:
            ce = F.cross_entropy(logits, labels.long())
        else:
            ce = F.cross_entropy(logits, mix_targets(F.one_hot(labels.long(), logits.shape[-1]).float()))
        parts["ce_loss"] = ce.detach()
        if alpha > 0:
            loss = loss + alpha * ce
    elif alpha > 0:
        raise ValueError(f"alpha={alpha} > 0 weighs a cross-entropy on hard labels, but no labels were given.")
    if alpha < 1:
        target = kd_target_probabilities(
            teacher_logits, soft_labels, temperature, soft_label_weight, soft_labels_are_probabilities, mix_targets
        )
        log_student = F.log_softmax(logits / temperature, dim=-1)
        kd = F.kl_div(log_student, target, reduction="batchmean") * temperature**2
        parts["kd_loss"] = kd.detach()
        loss = loss + (1.0 - alpha) * kd
    return loss, parts


def soft_labels_are_probabilities(values: np.ndarray) -> bool:
    """Rows that are all non-negative and sum to 1 (within 1e-3) are probabilities; anything else is logits."""
    values = np.asarray(values, dtype=np.float64)
    return bool(values.size) and bool((values >= 0).all()) and bool(np.allclose(values.sum(-1), 1.0, atol=1e-3))
