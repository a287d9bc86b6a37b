"""Tumour probabilities of patches from a model: the one inference function of the package.

``pcam evaluate``, ``pcam predict``, the full check and the web app all call
:func:`tumour_probabilities`, so they read a model's outputs the same way: through its head
(:mod:`pcam.model.heads`: the probability itself, the sigmoid of a logit, or the tumour column of a
two-class head), at the temperature of the model's calibration file when the loader found one
(:mod:`pcam.model.temperature`), optionally averaged over the 8 symmetries of the square.

:func:`tumour_log_odds` reads the head's logits themselves (what ``pcam calibrate`` fits a
temperature to): the dense layer's pre-activation outputs, recomputed in float64 from the
features that enter it, so they stay exact where a float32 probability has saturated at 0 or 1.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from pcam.data import d4
from pcam.model.heads import Head, head_of
from pcam.model.temperature import calibration_of

_FEATURE_MODELS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def tumour_probabilities(
    model: Any, images: npt.NDArray[np.uint8], *, tta: bool = False
) -> npt.NDArray[np.float64]:
    """Tumour probabilities ``[B]`` of one batch of patches ``uint8 [B, 96, 96, 3]``.

    A model loaded with a calibration file gives ``sigmoid(log-odds / T)``, in float64 from the
    head's logits (so the thresholds chosen on those log-odds apply exactly, even at ``T = 1``);
    any other gives its head's own probability. With ``tta`` the batch is predicted under each of
    the 8 symmetries of the square (:mod:`pcam.data.d4`) and the 8 probabilities of each patch
    are averaged (test-time augmentation; 8 model calls).
    """
    head = head_of(model)
    calibration = calibration_of(model)
    views = [d4.apply_one(images, code) for code in range(d4.NUM_SYMMETRIES)] if tta else [images]
    if not calibration.calibrated:  # the model's own output, as it always was
        scores = [
            head.tumour_probabilities(model.predict_on_batch(np.ascontiguousarray(view)))
            for view in views
        ]
    else:
        scores = [calibration.probabilities(_log_odds(model, head, view)) for view in views]
    mean: npt.NDArray[np.float64] = np.mean(np.asarray(scores, dtype=np.float64), axis=0)
    return mean


def tumour_log_odds(model: Any, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """The tumour log-odds ``[B]`` of one batch: the logit, or the two logits' difference.

    Never scaled by a temperature: these are what a temperature is fitted to.
    """
    return _log_odds(model, head_of(model), images)


def _log_odds(model: Any, head: Head, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    features = _feature_model(model, head).predict_on_batch(np.ascontiguousarray(images))
    return head.log_odds_from_features(features)


def _feature_model(model: Any, head: Head) -> Any:
    """A model from the classifier's input to the features entering its head (built once)."""
    found = _FEATURE_MODELS.get(model)
    if found is None:
        import keras

        found = keras.Model(model.inputs[0], head.dense.input)
        _FEATURE_MODELS[model] = found
    return found
