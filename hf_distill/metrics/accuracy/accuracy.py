"""hf_distill's top-1 accuracy as an `evaluate` module, so that `evaluate.load` works offline.

`evaluate.load("accuracy")` fetches its module script from the Hub, which an offline machine cannot reach. This
folder ships with the package: `evaluate.load(str(hf_distill.kd.METRICS_DIR / "accuracy"))` (or
[`hf_distill.kd.load_accuracy_metric`]) loads it from disk. The figure is the package's one accuracy function,
[`hf_distill.training.predictions_accuracy`]; only absolute imports appear here, because `evaluate` copies this
script into its module cache and would look for a relatively imported file beside it.
"""

import datasets
import evaluate

from hf_distill.training import predictions_accuracy

_DESCRIPTION = "The fraction of examples whose predicted class index equals the reference class index."

_INPUTS = """
Args:
    predictions (`list[int]`): Predicted class indices.
    references (`list[int]`): True class indices, one per prediction.

Returns:
    `dict`: `{"accuracy": float}` in [0, 1].
"""


class Accuracy(evaluate.Metric):
    """Top-1 accuracy of class predictions, computed by `hf_distill.training.predictions_accuracy`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references) -> dict:
        return {"accuracy": predictions_accuracy(predictions, references)}
