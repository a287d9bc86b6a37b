"""Fit a model's temperature on a held-out split, and ``pcam calibrate``'s job.

:func:`fit_temperature` finds the ``T`` in :data:`TEMPERATURE_BOUNDS` that minimises the negative
log-likelihood (NLL) of ``sigmoid(z / T)`` on labelled log-odds ``z``: a 1-D bounded search, first
on a log-spaced grid that holds ``T = 1`` exactly, then by bounded Brent refinement (SciPy's
``minimize_scalar``) between the grid neighbours of the best grid point. The NLL is the report's
(:func:`nll`, probabilities clipped to ``[1e-7, 1 - 1e-7]`` as in ``metrics.json``), so the fit
never raises the NLL it was fitted on: ``T = 1`` is a candidate, kept unless another temperature
is strictly better (log-odds that carry no information, all equal say, keep ``T = 1``).

:func:`calibrate` predicts the log-odds of a split (``valid`` by default, never ``test``: what is
tuned on the test split no longer measures the model), fits ``T``, chooses the operating-point
thresholds on the same split (:mod:`pcam.evaluation.operating`), and writes the calibration file
beside the model (:mod:`pcam.model.temperature`) with the figures before and after.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

from pcam.errors import InvalidArgumentError
from pcam.evaluation.calibration import calibration_report
from pcam.evaluation.predictions import check_scores
from pcam.model.temperature import sigmoid

TEMPERATURE_BOUNDS = (0.05, 20.0)
"""The temperatures searched: from 20 times sharper to 20 times softer than the model."""

CALIBRATION_SPLITS = ("valid", "train")
"""The splits a temperature may be fitted on; ``test`` is refused."""

_CLIP = 1e-7
_GRID_POINTS = 49


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted temperature and the NLL before (``T = 1``) and after, on the fitted data."""

    temperature: float
    nll_before: float
    nll_after: float


def nll(labels: npt.ArrayLike, log_odds: npt.ArrayLike, temperature: float = 1.0) -> float:
    """The mean NLL of ``sigmoid(z / T)``, clipped to ``[1e-7, 1 - 1e-7]`` as the reports are."""
    truth, z = check_scores(labels, log_odds, name="log_odds")
    return _nll(truth, z, temperature)


def fit_temperature(
    labels: npt.ArrayLike,
    log_odds: npt.ArrayLike,
    *,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> TemperatureFit:
    """The temperature in ``bounds`` with the lowest NLL on these labelled log-odds.

    Expected: labels 0/1 of both classes and one finite log-odds value per label; anything else
    is a one-line :class:`~pcam.errors.InvalidArgumentError`.
    """
    from scipy.optimize import minimize_scalar

    truth, z = check_scores(labels, log_odds, name="log_odds")
    if len(np.unique(truth)) != 2:
        raise InvalidArgumentError(
            "labels",
            "both normal (0) and tumour (1) patches to fit a temperature on",
            f"{truth.size} patches of class {int(truth[0])} only",
        )
    low, high = bounds
    if not 0 < low <= 1.0 <= high:
        raise InvalidArgumentError("bounds", "0 < low <= 1 <= high", bounds)
    grid = np.unique(np.concatenate([np.geomspace(low, high, _GRID_POINTS), [1.0]]))
    losses = np.array([_nll(truth, z, t) for t in grid])
    best = int(np.argmin(losses))
    one = int(np.flatnonzero(grid == 1.0)[0])
    if losses[one] <= losses[best]:  # the model as it is, unless another T is strictly better
        best = one
    temperature, loss = float(grid[best]), float(losses[best])
    left, right = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    if right > left:
        refined = minimize_scalar(
            lambda log_t: _nll(truth, z, float(np.exp(log_t))),
            bounds=(float(np.log(left)), float(np.log(right))),
            method="bounded",
            options={"xatol": 1e-6},
        )
        if float(refined.fun) < loss:
            temperature, loss = float(np.exp(refined.x)), float(refined.fun)
    return TemperatureFit(temperature, _nll(truth, z, 1.0), loss)


def split_log_odds(
    model: Any,
    root: str | os.PathLike[str],
    split: str,
    *,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Labels and tumour log-odds (:func:`pcam.model.inference.tumour_log_odds`) of a split."""
    from pcam.evaluation.evaluate import score_split
    from pcam.model.inference import tumour_log_odds

    return score_split(
        root,
        split,
        lambda images: tumour_log_odds(model, images),
        batch_size=batch_size,
        progress=progress,
    )


def calibrate(
    model_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    split: str = "valid",
    *,
    batch_size: int = 256,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Fit the temperature and thresholds of a saved model on a split; write its calibration file.

    Every input is checked before the model loads: the split (``valid`` or ``train``), the data,
    and the calibration file's place (new, or with ``overwrite`` one pcam wrote). Returns the
    record written.
    """
    from pcam.data.split import open_split
    from pcam.evaluation.operating import choose_thresholds
    from pcam.model.architectures import load_model
    from pcam.model.temperature import (
        check_calibration_destination,
        write_calibration,
    )

    if split not in CALIBRATION_SPLITS:
        raise InvalidArgumentError(
            "split",
            "valid (or train): a temperature fitted on test would be scored on the data that "
            "tuned it",
            split,
        )
    check_calibration_destination(model_path, overwrite=overwrite)
    open_split(data_dir, split)  # a bad data directory fails before the model is loaded
    model = load_model(model_path, calibration=False)
    labels, log_odds = split_log_odds(
        model, data_dir, split, batch_size=batch_size, progress=progress
    )
    fit = fit_temperature(labels, log_odds)
    before, after = sigmoid(log_odds), sigmoid(log_odds / fit.temperature)
    details = {
        "fitted_on": {
            "data": str(data_dir),
            "split": split,
            "patches": int(labels.size),
            "tumour_fraction": float(labels.mean()),
        },
        "bounds": list(TEMPERATURE_BOUNDS),
        "before": {"nll": fit.nll_before, **_figures(labels, before)},
        "after": {"nll": fit.nll_after, **_figures(labels, after)},
    }
    path = write_calibration(
        model_path,
        fit.temperature,
        thresholds=choose_thresholds(labels, log_odds),
        details=details,
        overwrite=overwrite,
    )
    # the record as written (reading it through read_calibration would hash the model again)
    return {"file": str(path), **json.loads(path.read_text())}


def _figures(
    labels: npt.NDArray[np.int64], probabilities: npt.NDArray[np.float64]
) -> dict[str, float]:
    report = calibration_report(labels, probabilities)
    return {
        "ece": report["ece"],
        "ece_equal_mass": report["ece_equal_mass"],
        "brier": report["brier"],
        "roc_auc": float(skm.roc_auc_score(labels, probabilities)),
    }


def format_calibration(record: dict[str, Any]) -> str:
    """The calibration as a few lines: temperature, and the figures before and after."""
    fitted = record["fitted_on"]
    lines = [
        f"temperature {record['temperature']:.4f}, fitted on {fitted['split']} "
        f"({fitted['patches']:,} patches, {fitted['tumour_fraction']:.1%} tumour)",
        f"{'':>14}{'NLL':>9}{'ECE':>9}{'ECE (mass)':>12}{'Brier':>9}{'ROC AUC':>9}",
    ]
    for name in ("before", "after"):
        figures = record[name]
        lines.append(
            f"{name:>14}{figures['nll']:9.4f}{figures['ece']:9.4f}"
            f"{figures['ece_equal_mass']:12.4f}{figures['brier']:9.4f}{figures['roc_auc']:9.4f}"
        )
    return "\n".join(lines)


def _nll(truth: npt.NDArray[np.int64], z: npt.NDArray[np.float64], temperature: float) -> float:
    p = np.clip(sigmoid(z / temperature), _CLIP, 1 - _CLIP)
    return float(-np.mean(np.where(truth == 1, np.log(p), np.log1p(-p))))
