"""The head of a binary Keras classifier: which layer holds its logits, what its output means.

pcam reads these head forms, after any backbone (nested ``keras.applications`` models
included); class 1 is tumour, class 0 normal:

- ``Dense(1, activation="sigmoid")``: the output ``[B, 1]`` is the tumour probability;
- ``Dense(1)`` then ``Activation("sigmoid")``: the same;
- ``Dense(1)`` with no activation: the output is the tumour logit, the probability its sigmoid;
- ``Dense(2, activation="softmax")``, or ``Dense(2)`` then ``Activation("softmax")`` or
  ``Softmax()``: the output ``[B, 2]`` holds both probabilities, tumour in column 1;
- ``Dense(2)`` with no activation: two logits, the probability column 1 of their softmax.

The separate activation layer may have its own dtype (``float32`` under a mixed-precision
policy, as Keras' mixed-precision guide recommends). The *logits* are the dense layer's
pre-activation outputs; Grad-CAM differentiates them (:mod:`pcam.explain.gradcam`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from pcam.errors import InvalidArgumentError

Activation = Literal["sigmoid", "softmax", "linear"]

DEFAULT_THRESHOLD: Final = 0.5
"""The tumour probability at or above which a patch is called tumour, unless the user says
otherwise (every command's ``--threshold``, the app's slider)."""

SUPPORTED_HEADS = (
    "a binary classifier ending in Dense(1, sigmoid), Dense(1) + Activation('sigmoid'), "
    "Dense(1) logits, Dense(2, softmax), Dense(2) + Activation('softmax') or Softmax(), "
    "or Dense(2) logits"
)
"""What :func:`head_of` accepts, as the ``expected`` part of its one-line error."""

_UNITS_OF: dict[Activation, tuple[int, ...]] = {
    "sigmoid": (1,),
    "softmax": (2,),
    "linear": (1, 2),
}


@dataclass(frozen=True)
class Head:
    """The dense layer whose pre-activation outputs are the logits, and the activation after it.

    ``separate`` is true when the activation is a layer of its own after ``dense``.
    """

    dense: Any
    activation: Activation
    separate: bool

    @property
    def units(self) -> int:
        """1 (one logit, of tumour against normal) or 2 (one logit per class)."""
        return int(self.dense.units)

    def describe(self) -> str:
        """The head in the notation of :data:`SUPPORTED_HEADS`, e.g. ``Dense(1) logits``."""
        if self.activation == "linear":
            return f"Dense({self.units}) logits"
        if self.separate:
            return f"Dense({self.units}) + Activation({self.activation!r})"
        return f"Dense({self.units}, {self.activation})"

    def tumour_probabilities(self, outputs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Tumour probabilities ``[B]`` from the model's outputs ``[B, units]`` (any dtype)."""
        values = np.asarray(outputs, dtype=np.float64).reshape(-1, self.units)
        if self.activation == "sigmoid":
            return values[:, 0]
        if self.activation == "softmax":
            return values[:, 1]
        if self.units == 1:
            return _sigmoid(values[:, 0])
        return _sigmoid(values[:, 1] - values[:, 0])  # softmax of two logits, column 1

    def log_odds_from_features(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Tumour log-odds ``[B]`` from the features ``[B, d]`` entering the dense layer.

        The logits ``features @ kernel + bias`` in float64; the log-odds are the one logit, or
        tumour's minus normal's (column 1 of a softmax is the sigmoid of that difference).
        """
        x = np.asarray(features, dtype=np.float64)
        logits = x @ np.asarray(self.dense.kernel, dtype=np.float64)
        if self.dense.use_bias:
            logits = logits + np.asarray(self.dense.bias, dtype=np.float64)
        if self.units == 1:
            log_odds: npt.NDArray[np.float64] = logits[:, 0]
            return log_odds
        return logits[:, 1] - logits[:, 0]


def head_of(model: Any) -> Head:
    """The model's :class:`Head`; a one-line :class:`InvalidArgumentError` for any other head."""
    found = _inspect(model)
    if isinstance(found, str):
        raise InvalidArgumentError("model", SUPPORTED_HEADS, found)
    return found


def unsupported_head(model: Any) -> str | None:
    """``None`` for a supported head, else what was found instead (for a one-line error)."""
    found = _inspect(model)
    return found if isinstance(found, str) else None


def _inspect(model: Any) -> Head | str:
    layers = list(getattr(model, "layers", []))
    if not layers:
        return "a model without layers"
    last = layers[-1]
    if _is_dense(last):
        return _checked(last, _activation_name(last.activation), separate=False)
    after = _separate_activation(last)
    if after is not None and len(layers) >= 2:
        dense = layers[-2]
        if not _is_dense(dense) or not _feeds(dense, last):
            return f"a last layer {last.name!r} ({after}) that does not follow a Dense layer"
        if _activation_name(dense.activation) != "linear":
            return (
                f"a Dense layer {dense.name!r} with activation "
                f"{_activation_name(dense.activation)!r} followed by a {after} layer"
            )
        return _checked(dense, after, separate=True)
    return f"a last layer {last.name!r} of type {type(last).__name__}"


def _checked(dense: Any, activation: str | None, *, separate: bool) -> Head | str:
    """A :class:`Head` when ``activation`` and the number of units make a binary head."""
    if activation not in _UNITS_OF:
        return f"a Dense layer {dense.name!r} with activation {activation!r}"
    if int(dense.units) not in _UNITS_OF[activation]:
        return f"a {activation} Dense layer {dense.name!r} with {dense.units} units"
    return Head(dense, activation, separate)


def _is_dense(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.layers.Dense)


def _separate_activation(layer: Any) -> str | None:
    """The activation of an ``Activation`` or last-axis ``Softmax`` layer, else ``None``."""
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return "softmax" if layer.axis in (-1, (-1,), [-1], 1, (1,), [1]) else None
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer.activation) or "unknown"
    return None


def _activation_name(activation: Any) -> str | None:
    return getattr(activation, "__name__", None)


def _feeds(dense: Any, layer: Any) -> bool:
    """Whether ``layer``'s only input is ``dense``'s output."""
    try:
        return layer.input is dense.output
    except (AttributeError, ValueError):
        return False


def _sigmoid(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``1 / (1 + exp(-x))`` without overflow for large ``|x|``."""
    result: npt.NDArray[np.float64] = np.exp(-np.logaddexp(0.0, -values))
    return result
