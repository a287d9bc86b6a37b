"""Whether a predicted tumour probability of 0.9 means tumour nine times in ten.

The reliability of the tumour probability ``p`` is read off bins of ``p``: in each bin, the mean
predicted probability against the observed fraction of tumour patches. The bins are those of
scikit-learn's ``calibration_curve`` (equal-width over [0, 1], or equal-mass: quantiles of ``p``),
so :func:`reliability_bins` agrees with it bin for bin and adds what it lacks, the count of each
bin. From them:

- the expected calibration error (ECE): the mean over patches of ``|mean p - observed|`` of
  their bin, i.e. the bins' gaps weighted by their share of the patches; 0 for a calibrated
  model, and 15 bins by default (:data:`DEFAULT_BINS`), equal-width and equal-mass;
- the Brier score, ``mean((p - label)^2)``, from scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

from pcam.errors import InvalidArgumentError
from pcam.evaluation.predictions import check_predictions

DEFAULT_BINS = 15
"""Bins of the expected calibration error and of the reliability diagram."""

BinStrategy = Literal["uniform", "quantile"]
"""Equal-width bins over [0, 1] (``uniform``) or equal-mass bins (``quantile``)."""


@dataclass(frozen=True)
class ReliabilityBins:
    """The bins of a reliability diagram.

    ``edges`` has ``bins + 1`` values; per bin, ``counts`` is its number of patches,
    ``mean_probability`` their mean tumour probability and ``observed_frequency`` their
    fraction of tumour labels (both NaN in an empty bin).
    """

    edges: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    mean_probability: npt.NDArray[np.float64]
    observed_frequency: npt.NDArray[np.float64]


def reliability_bins(
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    *,
    bins: int = DEFAULT_BINS,
    strategy: BinStrategy = "uniform",
) -> ReliabilityBins:
    """Bin the tumour probabilities as ``sklearn.calibration.calibration_curve`` does."""
    truth, scores = _check(labels, probabilities, bins, strategy)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    else:
        edges = np.percentile(scores, np.linspace(0.0, 100.0, bins + 1))
    index = np.searchsorted(edges[1:-1], scores)
    counts = np.bincount(index, minlength=bins).astype(np.int64)
    sums = np.bincount(index, weights=scores, minlength=bins)
    positives = np.bincount(index, weights=truth, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / counts, np.nan)
        observed = np.where(counts > 0, positives / counts, np.nan)
    return ReliabilityBins(edges.astype(np.float64), counts, mean, observed)


def expected_calibration_error(
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    *,
    bins: int = DEFAULT_BINS,
    strategy: BinStrategy = "uniform",
) -> float:
    """The bins' ``|mean probability - observed frequency|``, weighted by their patch counts."""
    binned = reliability_bins(labels, probabilities, bins=bins, strategy=strategy)
    filled = binned.counts > 0
    gaps = np.abs(binned.mean_probability[filled] - binned.observed_frequency[filled])
    return float(np.sum(gaps * binned.counts[filled]) / np.sum(binned.counts))


def calibration_report(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, *, bins: int = DEFAULT_BINS
) -> dict[str, Any]:
    """The calibration figures of ``metrics.json``: both ECEs, the Brier score, the bins used."""
    truth, scores = _check(labels, probabilities, bins, "uniform")
    return {
        "bins": bins,
        "ece": expected_calibration_error(truth, scores, bins=bins, strategy="uniform"),
        "ece_equal_mass": expected_calibration_error(truth, scores, bins=bins, strategy="quantile"),
        "brier": float(skm.brier_score_loss(truth, scores, pos_label=1)),
    }


def _check(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, bins: int, strategy: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    truth, scores = check_predictions(labels, probabilities)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise InvalidArgumentError("bins", "a whole number >= 1", bins)
    if strategy not in ("uniform", "quantile"):
        raise InvalidArgumentError("strategy", "uniform or quantile", strategy)
    return truth, scores
