"""Classification metrics for tumour-vs-normal predictions, computed with scikit-learn.

One function, :func:`classification_report`, turns labels and predicted probabilities into the
plain dictionary that ``pcam evaluate`` writes as ``metrics.json``: accuracy; precision, recall
and F1 per class with macro and weighted averages; ROC AUC; negative log-likelihood; the confusion
matrix; the calibration (expected calibration errors and Brier score, see
:mod:`pcam.evaluation.calibration`); 95% bootstrap intervals for accuracy and AUC; and the
operating points (PR AUC, sensitivity at fixed specificities and the reverse, with their
intervals and, given thresholds chosen on another split, what those give here: see
:mod:`pcam.evaluation.operating`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

from pcam.errors import InvalidArgumentError
from pcam.evaluation.calibration import calibration_report
from pcam.evaluation.operating import operating_points
from pcam.evaluation.predictions import check_predictions
from pcam.model.heads import DEFAULT_THRESHOLD

CLASS_NAMES = ("normal", "tumour")
"""Label 0 and label 1."""


def classification_report(
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    bootstrap_rounds: int = 1000,
    seed: int = 0,
    operating_thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Every figure of the evaluation report, as JSON-ready Python values.

    ``labels`` are 0/1, ``probabilities`` the predicted probability of tumour (1); a patch is
    predicted tumour when its probability is at least ``threshold``. ROC AUC and its interval,
    and the operating points, are ``None`` when the labels hold one class only (undefined
    there). ``operating_thresholds`` are probability thresholds chosen on another split, keyed
    as the operating points are.
    """
    truth, scores = _check_inputs(labels, probabilities, threshold, bootstrap_rounds)
    predicted = (scores >= threshold).astype(np.int64)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        truth, predicted, labels=[0, 1], zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(CLASS_NAMES)
    }
    both_classes = len(np.unique(truth)) == 2
    report: dict[str, Any] = {
        "n": int(truth.size),
        "threshold": float(threshold),
        "positive_fraction": float(truth.mean()),
        "accuracy": float(skm.accuracy_score(truth, predicted)),
        "per_class": per_class,
        "macro_avg": _average(precision, recall, f1, weights=None),
        "weighted_avg": _average(precision, recall, f1, weights=support),
        "roc_auc": float(skm.roc_auc_score(truth, scores)) if both_classes else None,
        "nll": float(skm.log_loss(truth, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "confusion_matrix": {
            "labels": list(CLASS_NAMES),
            "rows_are": "true class",
            "matrix": skm.confusion_matrix(truth, predicted, labels=[0, 1]).tolist(),
        },
    }
    report["calibration"] = calibration_report(truth, scores)
    report["ci95"] = _bootstrap(truth, scores, predicted, bootstrap_rounds, seed)
    report["operating_points"] = (
        operating_points(
            truth,
            scores,
            thresholds=operating_thresholds or None,
            bootstrap_rounds=bootstrap_rounds,
            seed=seed,
        )
        if both_classes
        else None
    )
    return report


def _check_inputs(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, threshold: float, rounds: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    truth, scores = check_predictions(labels, probabilities)
    if not 0.0 < threshold < 1.0:
        raise InvalidArgumentError("threshold", "a value in (0, 1)", threshold)
    if rounds < 0:
        raise InvalidArgumentError("bootstrap_rounds", "an integer >= 0", rounds)
    return truth, scores


def _average(
    precision: npt.NDArray[np.float64],
    recall: npt.NDArray[np.float64],
    f1: npt.NDArray[np.float64],
    *,
    weights: npt.NDArray[np.int64] | None,
) -> dict[str, float]:
    if weights is not None and weights.sum() == 0:
        weights = None
    return {
        "precision": float(np.average(precision, weights=weights)),
        "recall": float(np.average(recall, weights=weights)),
        "f1": float(np.average(f1, weights=weights)),
    }


def _bootstrap(
    truth: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    predicted: npt.NDArray[np.int64],
    rounds: int,
    seed: int,
) -> dict[str, Any]:
    """Percentile 95% intervals over ``rounds`` resamples of the patches (with replacement)."""
    result: dict[str, Any] = {"rounds": rounds, "accuracy": None, "roc_auc": None}
    if rounds == 0:
        return result
    rng = np.random.default_rng(seed)
    correct = (truth == predicted).astype(np.float64)
    accuracies = np.empty(rounds)
    aucs = []
    for round_index in range(rounds):
        sample = rng.integers(0, truth.size, size=truth.size)
        accuracies[round_index] = correct[sample].mean()
        sampled_truth = truth[sample]
        if sampled_truth.min() != sampled_truth.max():
            aucs.append(skm.roc_auc_score(sampled_truth, scores[sample]))
    result["accuracy"] = [float(v) for v in np.percentile(accuracies, [2.5, 97.5])]
    if aucs:
        result["roc_auc"] = [float(v) for v in np.percentile(aucs, [2.5, 97.5])]
    return result
