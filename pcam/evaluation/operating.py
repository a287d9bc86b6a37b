"""Clinically meaningful operating points: sensitivity at fixed specificity and the reverse.

Label 1 is tumour (positive), 0 normal. At a threshold ``t`` a patch is called tumour when its
score is ``>= t``; scores may be any finite numbers (probabilities or logits), since only their
order matters. On ``P`` tumour and ``N`` normal patches:

- sensitivity = tumour patches called tumour / ``P`` (the true-positive rate);
- specificity = normal patches called normal (score ``< t``) / ``N`` (1 - false-positive rate).

Only thresholds at the distinct scores (and one above them all, calling nothing tumour) give
different calls, so the curve of (sensitivity, specificity) has one point per distinct score
plus ``(0, 1)``: the points of ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
Tied scores are called together, so a threshold never splits them. From that curve:

- :func:`sensitivity_at_specificity`: the largest sensitivity over the points whose specificity
  is ``>= level`` (always defined: calling nothing tumour has specificity 1);
- :func:`specificity_at_sensitivity`: the largest specificity over the points whose sensitivity
  is ``>= level`` (calling everything tumour has sensitivity 1);
- :func:`choose_threshold`: a threshold that reaches such a point on the data given; of the
  points reaching the best value it takes the one that is also best on the fixed metric (no
  extra false positives, or no missed tumours, for nothing), and places the threshold midway
  between the lowest score it calls tumour and the highest it calls normal, so that rounding
  the scores (or the threshold) does not move a patch across it;
- :func:`average_precision`: the area under the precision-recall curve, as scikit-learn's
  ``average_precision_score`` (the step integral, no interpolation);
- :func:`operating_points`: all of them for :data:`LEVELS`, with percentile bootstrap intervals,
  as the JSON-ready block of ``metrics.json``.

Specificity is computed as ``(N - false positives) / N`` and sensitivity as
``true positives / P``: each one division of whole numbers, so a level such as 0.95 is reached
exactly when 95% of the patches are called right.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

from pcam.errors import InvalidArgumentError
from pcam.evaluation.predictions import check_scores

LEVELS: tuple[float, ...] = (0.90, 0.95, 0.98)
"""The specificities (and sensitivities) at which the other rate is reported."""

Fix = Literal["specificity", "sensitivity"]
"""The rate held at a level; the other one is made as large as possible."""

_FIXES: tuple[Fix, ...] = ("specificity", "sensitivity")
_REPORTED = {"specificity": "sensitivity", "sensitivity": "specificity"}

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def sensitivity_at_specificity(labels: npt.ArrayLike, scores: npt.ArrayLike, level: float) -> float:
    """The largest sensitivity among the thresholds whose specificity is at least ``level``."""
    truth, values = _check(labels, scores)
    checked = _check_level(level)
    tps, fps = _curve(truth, values)
    return float(_values(tps, fps, np.array([checked]))[0][0])


def specificity_at_sensitivity(labels: npt.ArrayLike, scores: npt.ArrayLike, level: float) -> float:
    """The largest specificity among the thresholds whose sensitivity is at least ``level``."""
    truth, values = _check(labels, scores)
    checked = _check_level(level)
    tps, fps = _curve(truth, values)
    return float(_values(tps, fps, np.array([checked]))[1][0])


def choose_threshold(
    labels: npt.ArrayLike, scores: npt.ArrayLike, *, fix: Fix, level: float
) -> float:
    """A threshold reaching the best point with the ``fix`` rate at least ``level`` on these data.

    With ``scores >= threshold`` called tumour, the ``fix`` rate is ``>= level`` and the other
    rate is the largest possible (:func:`sensitivity_at_specificity` or
    :func:`specificity_at_sensitivity`); among the thresholds doing so, the one with the larger
    ``fix`` rate. The threshold is the midpoint between the lowest score called tumour and the
    highest called normal (the higher of the two when no float lies strictly between them); the
    lowest score when every patch is called tumour; just above the highest score when none is.
    """
    truth, values = _check(labels, scores)
    checked = _check_level(level)
    if fix not in _FIXES:
        raise InvalidArgumentError("fix", "specificity or sensitivity", fix)
    tps, fps = _curve(truth, values)
    called = _chosen_index(tps, fps, fix, checked)
    distinct = np.unique(values)[::-1]  # the same runs as _curve, highest first
    if called == 0:
        return float(np.nextafter(distinct[0], np.inf))
    if called == distinct.size:
        return float(distinct[-1])
    upper, lower = float(distinct[called - 1]), float(distinct[called])
    middle = upper * 0.5 + lower * 0.5  # halves first: no overflow near the largest float
    return middle if lower < middle <= upper else upper


def choose_thresholds(
    labels: npt.ArrayLike, scores: npt.ArrayLike, *, levels: Iterable[float] = LEVELS
) -> dict[str, float]:
    """:func:`choose_threshold` for every point of :func:`operating_points`, by its key."""
    truth, values = _check(labels, scores)
    checked = _check_levels(levels)
    return {
        _key(fix, level): choose_threshold(truth, values, fix=fix, level=level)
        for fix in _FIXES
        for level in checked
    }


def rates_at_threshold(
    labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float
) -> tuple[float, float]:
    """``(sensitivity, specificity)`` on these data when ``scores >= threshold`` is tumour."""
    truth, values = _check(labels, scores)
    checked = _check_threshold("threshold", threshold)
    called = values >= checked
    positives = int(truth.sum())
    negatives = truth.size - positives
    hits = int(np.count_nonzero(called & (truth == 1)))
    false_alarms = int(np.count_nonzero(called & (truth == 0)))
    return hits / positives, (negatives - false_alarms) / negatives


def average_precision(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """The area under the precision-recall curve, scikit-learn's ``average_precision_score``."""
    truth, values = _check(labels, scores)
    return float(skm.average_precision_score(truth, values))


def operating_points(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    thresholds: Mapping[str, float] | None = None,
    levels: Iterable[float] = LEVELS,
    bootstrap_rounds: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The operating points of ``metrics.json``, as JSON-ready Python values.

    ``pr_auc`` is :func:`average_precision`; ``points`` holds, for each level, first the
    sensitivity at that specificity, then the specificity at that sensitivity, each with its key
    (``sensitivity_at_specificity_0.90``, ...), its value on these data and its percentile 95%
    bootstrap interval (``None`` with ``bootstrap_rounds=0``, or when every resample held one
    class only; such resamples are left out of every interval). ``thresholds`` maps keys to
    thresholds chosen elsewhere, on the scale of ``scores``: an entry's ``threshold`` is then that
    value with the sensitivity and specificity it gives on these data, else ``None``.
    """
    truth, values = _check(labels, scores)
    checked = _check_levels(levels)
    keys = [_key(fix, level) for fix in _FIXES for level in checked]
    given = _check_thresholds(thresholds, keys)
    rounds = _check_rounds(bootstrap_rounds)

    grid = np.array(checked, dtype=np.float64)
    tps, fps = _curve(truth, values)
    estimates = _figures(tps, fps, grid)
    intervals = _bootstrap(truth, values, grid, rounds, seed)

    points: list[dict[str, Any]] = []
    for index, key in enumerate(keys):
        fix = _FIXES[index // len(checked)]
        threshold: dict[str, float] | None = None
        if key in given:
            sensitivity, specificity = rates_at_threshold(truth, values, given[key])
            threshold = {
                "value": given[key],
                "sensitivity": sensitivity,
                "specificity": specificity,
            }
        points.append(
            {
                "fix": fix,
                "level": checked[index % len(checked)],
                "key": key,
                "value": float(estimates[index]),
                "ci95": None if intervals is None else _pair(intervals[:, index]),
                "threshold": threshold,
            }
        )
    return {
        "pr_auc": float(estimates[-1]),
        "pr_auc_ci95": None if intervals is None else _pair(intervals[:, -1]),
        "points": points,
    }


def _curve(truth: IntArray, scores: FloatArray) -> tuple[IntArray, IntArray]:
    """True and false positives at each distinct score, highest first (one argsort).

    Entry ``i`` counts the patches scoring at least the ``i``-th highest distinct score; the
    counts are read at the last patch of each run of tied scores, so ties are called together,
    as in scikit-learn. The point calling nothing tumour, ``(0, 0)``, is not included.
    """
    order = np.argsort(scores)[::-1]
    ranked = scores[order]
    ends = np.flatnonzero(ranked[1:] != ranked[:-1])
    ends = np.append(ends, ranked.size - 1)
    tps = np.cumsum(truth[order])[ends]
    return tps, ends + 1 - tps


def _rates(tps: IntArray, fps: IntArray) -> tuple[FloatArray, FloatArray]:
    """Sensitivity (non-decreasing) and specificity (non-increasing), from calling nothing."""
    positives, negatives = tps[-1], fps[-1]
    sensitivity = np.concatenate(([0], tps)) / positives
    specificity = (negatives - np.concatenate(([0], fps))) / negatives
    return sensitivity, specificity


def _values(tps: IntArray, fps: IntArray, levels: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Sensitivity at specificity ``>= levels``, and specificity at sensitivity ``>= levels``."""
    sensitivity, specificity = _rates(tps, fps)
    # the last point with specificity >= level (specificity falls as more is called tumour)
    last = np.searchsorted(-specificity, -levels, side="right") - 1
    # the first point with sensitivity >= level (sensitivity rises)
    first = np.searchsorted(sensitivity, levels, side="left")
    return sensitivity[last], specificity[first]


def _chosen_index(tps: IntArray, fps: IntArray, fix: Fix, level: float) -> int:
    """How many runs of tied scores (highest first) the chosen threshold calls tumour."""
    sensitivity, specificity = _rates(tps, fps)
    hits = np.concatenate(([0], tps))
    alarms = np.concatenate(([0], fps))
    if fix == "specificity":
        last = int(np.searchsorted(-specificity, -level, side="right")) - 1
        # the first point with as many hits: fewer false alarms for the same sensitivity
        return int(np.searchsorted(hits, hits[last], side="left"))
    first = int(np.searchsorted(sensitivity, level, side="left"))
    # the last point with as few false alarms: more hits for the same specificity
    return int(np.searchsorted(alarms, alarms[first], side="right")) - 1


def _average_precision(tps: IntArray, fps: IntArray) -> float:
    """``average_precision_score`` from the curve, summed in scikit-learn's order."""
    precision = np.concatenate(((tps / (tps + fps))[::-1], [1.0]))
    recall = np.concatenate(((tps / tps[-1])[::-1], [0.0]))
    return max(0.0, float(-np.sum(np.diff(recall) * precision[:-1])))


def _figures(tps: IntArray, fps: IntArray, levels: FloatArray) -> FloatArray:
    """Sensitivities at ``levels``, specificities at ``levels``, then average precision."""
    at_specificity, at_sensitivity = _values(tps, fps, levels)
    return np.concatenate((at_specificity, at_sensitivity, [_average_precision(tps, fps)]))


def _bootstrap(
    truth: IntArray, scores: FloatArray, levels: FloatArray, rounds: int, seed: int
) -> FloatArray | None:
    """Percentile 2.5 and 97.5 of :func:`_figures` over resamples holding both classes.

    Returns an array of two rows (low, high), one column per figure, or ``None`` when no
    resample held both classes (or ``rounds`` is 0).
    """
    rng = np.random.default_rng(seed)
    size = truth.size
    kept: list[FloatArray] = []
    for _ in range(rounds):
        sample = rng.integers(0, size, size=size)
        sampled = truth[sample]
        positives = int(sampled.sum())
        if positives in (0, size):
            continue
        tps, fps = _curve(sampled, scores[sample])
        kept.append(_figures(tps, fps, levels))
    if not kept:
        return None
    return np.asarray(np.percentile(np.stack(kept), [2.5, 97.5], axis=0), dtype=np.float64)


def _pair(bounds: FloatArray) -> list[float]:
    return [float(bounds[0]), float(bounds[1])]


def _key(fix: Fix, level: float) -> str:
    shown = f"{level:.2f}"
    if float(shown) != level:
        shown = repr(level)
    return f"{_REPORTED[fix]}_at_{fix}_{shown}"


def _check(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    """Flat int64 labels and float64 scores: 0/1 labels, one finite score each, both classes."""
    truth, values = check_scores(labels, scores)
    positives = int(truth.sum())
    if positives in (0, truth.size):
        only = "tumour (1)" if positives else "normal (0)"
        raise InvalidArgumentError(
            "labels",
            "both normal (0) and tumour (1) patches, as operating points need both",
            f"only {only} patches ({truth.size})",
        )
    return truth, values


def _check_level(level: object, name: str = "level") -> float:
    if (
        isinstance(level, bool)
        or not isinstance(level, numbers.Real)
        or not 0.0 < float(level) < 1.0
    ):
        raise InvalidArgumentError(name, "a number strictly between 0 and 1", level)
    return float(level)


def _check_levels(levels: Iterable[float]) -> list[float]:
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Iterable):
        raise InvalidArgumentError("levels", "a sequence of numbers in (0, 1)", levels)
    given = list(levels)
    checked = [_check_level(level, "levels") for level in given]
    if len(set(checked)) != len(checked):
        raise InvalidArgumentError("levels", "distinct values", checked)
    return checked


def _check_rounds(rounds: object) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or int(rounds) < 0:
        raise InvalidArgumentError("bootstrap_rounds", "a whole number >= 0", rounds)
    return int(rounds)


def _check_threshold(name: str, threshold: object) -> float:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or np.isnan(float(threshold))
    ):
        raise InvalidArgumentError(name, "a number on the scale of the scores", threshold)
    return float(threshold)


def _check_thresholds(
    thresholds: Mapping[str, float] | None, keys: Sequence[str]
) -> dict[str, float]:
    if thresholds is None:
        return {}
    if not isinstance(thresholds, Mapping):
        raise InvalidArgumentError(
            "thresholds", "a mapping of point keys to thresholds", thresholds
        )
    unknown = sorted(str(key) for key in thresholds if key not in keys)
    if unknown:
        raise InvalidArgumentError("thresholds", f"keys among {', '.join(keys)}", unknown)
    return {
        key: _check_threshold(f"thresholds[{key!r}]", value) for key, value in thresholds.items()
    }
