"""Top-1 accuracy for the [`KDTrainer`]: its `compute_metrics`, and the `evaluate` module shipped with the package."""

from pathlib import Path

from ..training import predictions_accuracy

METRICS_DIR = Path(__file__).resolve().parent.parent / "metrics"


def load_accuracy_metric():
    """The top-1 accuracy metric shipped with the package, loaded with `evaluate.load` from its local folder.

    Loading a local module script needs no network (`evaluate` copies it into its module cache and imports it); it
    computes [`hf_distill.training.predictions_accuracy`], as the [`KDTrainer`]'s `compute_metrics` does.
    Returns an `evaluate.EvaluationModule`.
    """
    try:
        import evaluate  # an optional dependency, and a second of imports that only this helper needs
    except ImportError:
        raise ImportError(
            "load_accuracy_metric needs the `evaluate` library: pip install evaluate (or hf_distill[evaluate])."
        ) from None

    return evaluate.load(str(METRICS_DIR / "accuracy"), keep_in_memory=True)


def compute_accuracy(eval_pred) -> dict:
    """`compute_metrics` for `transformers.Trainer`: `{"accuracy": fraction}` from predicted classes or logits."""
    predictions = eval_pred.predictions
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    if predictions.ndim > 1:  # logits (when preprocess_logits_for_metrics was not used)
        predictions = predictions.argmax(-1)
    return {"accuracy": predictions_accuracy(predictions, eval_pred.label_ids)}


def argmax_logits(logits, labels):
    """`preprocess_logits_for_metrics`: keep only the predicted class, so the loop gathers N ints, not N x K floats."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.argmax(dim=-1)
