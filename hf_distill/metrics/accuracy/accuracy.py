# Copyright 2025 The hf_distill Authors. Licensed under the Apache License, Version 2.0.
"""Top-1 accuracy as an `evaluate` module that loads without the Hub.

`evaluate.load("accuracy")` downloads the module script from the Hub; this copy ships inside the package so
`evaluate.load("<path to this folder>")` (see `hf_distill.kd.load_accuracy_metric`) works offline. It computes the same
figure as the Hub module (the fraction, or the count with `normalize=False`, of predictions equal to the references,
optionally weighted per example) with NumPy alone.

Only library imports (`datasets`, `evaluate`, `numpy`) appear below: `evaluate` copies the script into its module
cache and would try to fetch any relative import as an extra file.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy is the proportion of correct predictions among the total number of cases processed:
Accuracy = (TP + TN) / (TP + TN + FP + FN), i.e. for multi-class classification the fraction of examples whose
predicted class equals the reference class.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): Predicted class indices.
    references (`list[int]`): Ground-truth class indices.
    normalize (`bool`, *optional*, defaults to `True`): Return the fraction of correct predictions; `False` returns
        their (weighted) count.
    sample_weight (`list[float]`, *optional*): Weight of every example.

Returns:
    `dict`: `{"accuracy": float}`, in [0, 1] when `normalize=True`.

Examples:
    >>> accuracy = evaluate.load("hf_distill/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1])
    {'accuracy': 0.75}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Top-1 accuracy of class predictions (offline copy of the Hub's `accuracy` module)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/accuracy"],
        )

    def _compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(
                f"predictions and references must have the same length, got {predictions.shape[0]} and "
                f"{references.shape[0]}."
            )
        correct = (predictions == references).astype(np.float64)
        if sample_weight is not None:
            weights = np.asarray(sample_weight, dtype=np.float64)
            if weights.shape != correct.shape:
                raise ValueError(f"sample_weight needs one weight per example ({correct.shape[0]}).")
            total = float((correct * weights).sum())
            denominator = float(weights.sum())
        else:
            total = float(correct.sum())
            denominator = float(correct.shape[0])
        if not normalize:
            return {"accuracy": total}
        return {"accuracy": total / denominator if denominator else float("nan")}
