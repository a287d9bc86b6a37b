"""Checked predictions: the labels and tumour probabilities every evaluation figure starts from."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pcam.errors import InvalidArgumentError


def check_predictions(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Flat int64 labels and float64 probabilities, after checking them.

    Expected: at least one label, each 0 or 1, and one finite probability in [0, 1] per label.
    Anything else is an :class:`~pcam.errors.InvalidArgumentError` of one line that names it.
    """
    truth = np.asarray(labels).reshape(-1)
    scores = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if truth.size == 0:
        raise InvalidArgumentError("labels", "at least one label", "none")
    if truth.size != scores.size:
        raise InvalidArgumentError(
            "probabilities", f"one per label ({truth.size})", f"{scores.size} values"
        )
    if not np.isin(truth, (0, 1)).all():
        bad = sorted({float(v) for v in np.unique(truth[~np.isin(truth, (0, 1))])})[:5]
        raise InvalidArgumentError("labels", "values 0 or 1", bad)
    if not np.isfinite(scores).all() or scores.min() < 0 or scores.max() > 1:
        raise InvalidArgumentError(
            "probabilities", "finite values in [0, 1]", f"range {scores.min()}..{scores.max()}"
        )
    return truth.astype(np.int64), scores
