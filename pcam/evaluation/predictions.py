"""Checked predictions: the labels and scores every evaluation figure starts from."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pcam.errors import InvalidArgumentError


def check_scores(
    labels: npt.ArrayLike, scores: npt.ArrayLike, *, name: str = "scores"
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Flat int64 labels and float64 scores (log-odds, say), after checking them.

    Expected: at least one label, each 0 or 1, and one finite score per label. Anything else is
    an :class:`~pcam.errors.InvalidArgumentError` of one line that names it (the scores as
    ``name``).
    """
    truth = np.asarray(labels).reshape(-1)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if truth.size == 0:
        raise InvalidArgumentError("labels", "at least one label", "none")
    if truth.size != values.size:
        raise InvalidArgumentError(name, f"one per label ({truth.size})", f"{values.size} values")
    if not np.isin(truth, (0, 1)).all():
        bad = sorted({float(v) for v in np.unique(truth[~np.isin(truth, (0, 1))])})[:5]
        raise InvalidArgumentError("labels", "values 0 or 1", bad)
    finite = np.isfinite(values)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise InvalidArgumentError(
            name,
            "finite values",
            f"{int(np.count_nonzero(~finite))} not finite, first {values[first]} at index {first}",
        )
    return truth.astype(np.int64), values


def check_predictions(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Flat int64 labels and float64 probabilities, after checking them.

    Expected: what :func:`check_scores` expects, with every probability in [0, 1]. Anything else
    is an :class:`~pcam.errors.InvalidArgumentError` of one line that names it.
    """
    truth, scores = check_scores(labels, probabilities, name="probabilities")
    if scores.min() < 0 or scores.max() > 1:
        raise InvalidArgumentError(
            "probabilities", "finite values in [0, 1]", f"range {scores.min()}..{scores.max()}"
        )
    return truth, scores
