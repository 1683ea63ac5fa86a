# Copyright 2025 The hf_distill Authors. Licensed under the Apache License, Version 2.0.
"""Top-1 accuracy on the real test split: the `evaluate` metric shipped with the package
([`load_accuracy_metric`]) and the `compute_metrics` the [`KDTrainer`] uses."""

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

METRICS_DIR = Path(__file__).resolve().parent.parent / "metrics"


def load_accuracy_metric():
    """The top-1 accuracy metric shipped with the package, loaded with `evaluate.load` from its local folder.

    Loading a local module script needs no network (`evaluate` copies it into its module cache and imports it). If
    `evaluate` cannot load it, a plain object with the same `compute(predictions=..., references=...)` ->
    `{"accuracy": fraction}` interface is returned instead, so evaluation never depends on the Hub.
    """
    try:
        import evaluate

        return evaluate.load(str(METRICS_DIR / "accuracy"), keep_in_memory=True)
    except Exception as error:  # noqa: BLE001 - any failure of the optional loader falls back to the same formula
        logger.warning("evaluate.load of the shipped accuracy metric failed (%s); using a plain function.", error)
        return _PlainAccuracy()


class _PlainAccuracy:
    """Fallback with the metric's interface (`compute` -> `{"accuracy": fraction}`)."""

    name = "accuracy"

    def compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict:
        predictions, references = np.asarray(predictions), np.asarray(references)
        correct = (predictions == references).astype(np.float64)
        weights = np.ones_like(correct) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        total = float((correct * weights).sum())
        return {"accuracy": total / float(weights.sum()) if normalize else total}


def _accuracy_compute_metrics(metric):
    def compute_metrics(eval_pred) -> dict:
        predictions = eval_pred.predictions
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        predictions = np.asarray(predictions)
        if predictions.ndim > 1:  # logits (when preprocess_logits_for_metrics was not used)
            predictions = predictions.argmax(-1)
        return metric.compute(predictions=predictions, references=np.asarray(eval_pred.label_ids))

    return compute_metrics


def _argmax_logits(logits, labels):
    # Keep only the predicted class per example: the evaluation loop then gathers N ints instead of N x K floats.
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.argmax(dim=-1)
