"""Tumour probabilities of patches from a model: the one inference function of the package.

``pcam evaluate``, ``pcam predict``, the full check and the web app all call
:func:`tumour_probabilities`, so they read a model's outputs the same way: through its head
(:mod:`pcam.model.heads`: the probability itself, the sigmoid of a logit, or the tumour column of a
two-class head), optionally averaged over the 8 symmetries of the square.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pcam.data import d4
from pcam.model.heads import head_of


def tumour_probabilities(
    model: Any, images: npt.NDArray[np.uint8], *, tta: bool = False
) -> npt.NDArray[np.float64]:
    """Tumour probabilities ``[B]`` of one batch of patches ``uint8 [B, 96, 96, 3]``.

    With ``tta`` the batch is predicted under each of the 8 symmetries of the square
    (:mod:`pcam.data.d4`) and the 8 probabilities of each patch are averaged (test-time
    augmentation; 8 model calls).
    """
    head = head_of(model)
    views = [d4.apply_one(images, code) for code in range(d4.NUM_SYMMETRIES)] if tta else [images]
    scores = [
        head.tumour_probabilities(model.predict_on_batch(np.ascontiguousarray(view)))
        for view in views
    ]
    mean: npt.NDArray[np.float64] = np.mean(np.asarray(scores, dtype=np.float64), axis=0)
    return mean
