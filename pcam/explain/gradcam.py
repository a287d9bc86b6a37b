"""Class activation maps (Grad-CAM, Grad-CAM++, LayerCAM) for a whole batch in one compiled call.

:class:`GradCAM` is built once per model and reused: it compiles one ``tf.function`` that runs
the forward pass to the chosen layers and the classifier's score, and the backward pass from the
score to those layers, for every patch of a batch at once. The model runs in inference mode, so
each patch's map depends on that patch alone (batched equals one by one).

The score is the classifier's *logit* for the class, the pre-activation output of its dense
head, never a probability (whose gradient vanishes where it saturates), and never the logit
divided by the model's temperature (:mod:`pcam.model.temperature`): Grad-CAM and LayerCAM maps
are unchanged by a positive scale of the score, but Grad-CAM++'s weights are not, so a
calibration file changes the probabilities reported and no map. The heads of
:mod:`pcam.model.heads` are supported, and only those:

- one unit (``Dense(1, sigmoid)``, ``Dense(1)`` + ``Activation("sigmoid")``, ``Dense(1)``
  logits): class 1 (tumour) uses the logit ``z`` and class 0 (normal) ``-z``, the logit of
  ``1 - p``;
- two units (``Dense(2, softmax)``, ``Dense(2)`` + ``Activation("softmax")`` or ``Softmax()``,
  ``Dense(2)`` logits): class ``c`` uses its own logit ``z_c``.

Any other last layer is refused with a one-line error naming these heads.

Layers are found in the model itself or inside a nested model used as a layer (a
``keras.applications`` backbone, say), without rebuilding a graph from the outer input to an
inner layer (the source of "Graph disconnected" errors elsewhere).

Maps are float32 in ``[0, 1]`` (each one divided by its own maximum; a map with no positive
evidence is all zeros, never NaN), at the layer's resolution or upsampled to the patch.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Literal

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from pcam.errors import InvalidArgumentError
from pcam.model.heads import Head, head_of
from pcam.model.temperature import calibration_of

Method = Literal["gradcam", "gradcam++", "layercam"]
METHODS: tuple[Method, ...] = ("gradcam", "gradcam++", "layercam")
_EPSILON = 1e-7


class GradCAM:
    """Batched class activation maps of one model at one or more layers.

    ``layer`` is a layer name, a list of names (their maps are upsampled to the patch size,
    each normalised, and fused by their pixel-wise maximum), or ``None`` for the last layer with
    a spatial output larger than 1x1 (``conv5_block3_out`` for ResNet50, a 3x3 map on 96 px
    patches). ``method`` is ``gradcam`` (channel weights: spatial mean of the gradient),
    ``gradcam++`` (weights from second- and third-order terms, better for several instances of
    a class) or ``layercam`` (pixel-wise positive gradients, useful on earlier, finer layers).
    """

    def __init__(
        self,
        model: keras.Model,
        layer: str | Sequence[str] | None = None,
        *,
        method: Method = "gradcam",
    ) -> None:
        if method not in METHODS:
            raise InvalidArgumentError("method", f"one of {', '.join(METHODS)}", method)
        self.model = model
        self.method = method
        names = [layer] if isinstance(layer, str) else list(layer or [])
        candidates = spatial_layers(model)
        if not names:
            if not candidates:
                raise InvalidArgumentError(
                    "layer", "a model with a spatial layer (4-D output, side > 1)", model.name
                )
            names = [candidates[-1][0]]
        self.layer_names = tuple(names)
        self._layers = [_find_layer(model, name, candidates) for name in names]
        self.head: Head = head_of(model)
        self.input_shape = tuple(model.input_shape[1:])
        self.input_dtype = str(model.inputs[0].dtype)
        self._forward = _forward_function(model, self._layers, self.head)
        _check_forward(model, self._forward, self.head, self.input_shape, self.input_dtype)
        self._compiled = tf.function(
            self.maps_and_logits,
            input_signature=[
                tf.TensorSpec((None, *self.input_shape), self.input_dtype),
                tf.TensorSpec((), tf.int32),
            ],
            reduce_retracing=True,
        )

    def heatmaps(
        self,
        images: npt.ArrayLike,
        class_index: int = 1,
        *,
        size: tuple[int, int] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Maps ``[B, h, w]`` in ``[0, 1]`` for the class ``class_index`` (1: tumour, 0: normal).

        ``size`` upsamples them (bilinear) to ``(height, width)``; with several layers they are
        always upsampled, to ``size`` or the patch size.
        """
        maps, _ = self.explain(images, class_index, size=size)
        return maps

    def explain(
        self,
        images: npt.ArrayLike,
        class_index: int = 1,
        *,
        size: tuple[int, int] | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """``(maps [B, h, w], probabilities of class 1 [B])`` from one forward-backward pass.

        The maps are of the raw logits whatever the model's calibration; the probabilities are
        calibrated when the model was loaded with a calibration file
        (:mod:`pcam.model.temperature`).
        """
        if class_index not in (0, 1):
            raise InvalidArgumentError("class_index", "0 (normal) or 1 (tumour)", class_index)
        batch = self._check_images(images)
        maps, logits = self._compiled(
            tf.convert_to_tensor(batch), tf.constant(class_index, tf.int32)
        )
        # the maps are of the raw logits; the probabilities at the model's calibration
        probabilities = _tumour_probabilities(logits / calibration_of(self.model).temperature)
        result = [m.numpy() for m in maps]
        if len(result) > 1 or size is not None:
            target = size or self.input_shape[:2]
            result = [upsample(m, target) for m in result]
        fused = result[0] if len(result) == 1 else np.maximum.reduce(result)
        return fused.astype(np.float32), probabilities.numpy().astype(np.float32)

    def _check_images(self, images: npt.ArrayLike) -> npt.NDArray[Any]:
        batch = np.asarray(images)
        if batch.ndim == len(self.input_shape):
            batch = batch[np.newaxis]
        if batch.shape[1:] != self.input_shape:
            raise InvalidArgumentError(
                "images",
                f"patches of shape {self.input_shape} (a batch: [B, *shape])",
                f"shape {batch.shape}",
            )
        if batch.dtype != np.dtype(self.input_dtype):
            if self.input_dtype == "uint8":
                raise InvalidArgumentError(
                    "images", "uint8 patches (raw 0-255 pixels, as in the PCam files)", batch.dtype
                )
            batch = batch.astype(self.input_dtype)
        return batch

    def maps_and_logits(self, images: tf.Tensor, class_index: tf.Tensor) -> tuple[list[Any], Any]:
        """``([maps [B, h, w] per layer], logits [B, units])`` as tensors, for tracing.

        The maps are normalised and at their layers' resolutions (not fused or upsampled); the
        logits are the head's raw pre-activation outputs in float32. This is what the compiled
        call runs, and what an exported model's ``explain`` signature saves
        (:mod:`pcam.serve.export`).
        """
        with tf.GradientTape() as tape:
            features, logits = self._forward(images)
            # patches are independent in inference mode: the gradient of the sum is per patch
            total = tf.reduce_sum(_class_scores(logits, class_index))
        gradients = tape.gradient(total, features)
        maps = [
            _normalise(_combine(self.method, tf.cast(f, tf.float32), tf.cast(g, tf.float32)))
            for f, g in zip(features, gradients, strict=True)
        ]
        return maps, logits


def spatial_layers(model: keras.Model) -> list[tuple[str, tuple[int, int]]]:
    """``(name, (height, width))`` of every layer with a 4-D output larger than 1x1, in order.

    Layers of nested models are included (after the nested model's own position).
    """
    found: list[tuple[str, tuple[int, int]]] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(spatial_layers(layer))
            continue
        shape = _output_shape(layer)
        if shape is not None and len(shape) == 4 and max(shape[1] or 0, shape[2] or 0) > 1:
            found.append((layer.name, (int(shape[1] or 0), int(shape[2] or 0))))
    return found


def upsample(maps: npt.ArrayLike, size: Sequence[int]) -> npt.NDArray[np.float32]:
    """Bilinear upsampling of maps ``[B, h, w]`` to ``[B, *size]``, clipped to ``[0, 1]``."""
    array = np.asarray(maps, dtype=np.float32)
    resized = tf.image.resize(array[..., np.newaxis], tuple(size), method="bilinear")
    result: npt.NDArray[np.float32] = np.clip(resized.numpy()[..., 0], 0.0, 1.0)
    return result


def _output_shape(layer: Any) -> tuple[int | None, ...] | None:
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return None
    shape = getattr(output, "shape", None)
    return tuple(shape) if shape is not None else None


def _find_layer(
    model: keras.Model, name: str, candidates: list[tuple[str, tuple[int, int]]]
) -> tuple[Any, Any]:
    """``(layer, the nested model holding it or None)``; a one-line error lists candidates."""
    names = [candidate for candidate, _ in candidates]
    for layer in model.layers:
        if layer.name == name:
            if name not in names:
                example = f" such as {names[-1]!r}" if names else ""
                raise InvalidArgumentError(
                    "layer",
                    f"a spatial layer (4-D output, side > 1){example}, not one with output "
                    f"shape {_output_shape(layer)}",
                    name,
                )
            return layer, None
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                if inner.name == name:
                    if name not in names:
                        raise InvalidArgumentError(
                            "layer", "a spatial layer (4-D output, side > 1)", name
                        )
                    return inner, layer
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    suggestion = ", ".join(repr(n) for n in (close or names[-3:]))
    raise InvalidArgumentError(
        "layer",
        f"the name of one of the model's {len(names)} spatial layers, such as {suggestion}",
        name,
    )


def _forward_function(model: keras.Model, layers: list[tuple[Any, Any]], head: Head) -> Any:
    """A function ``images -> ([feature maps], logits [B, units])``, logits in float32.

    Layers of the model itself are read from one multi-output functional model. A layer inside
    a nested model is reached by running the outer model's layers in order up to the head, with
    the nested model replaced by a two-output copy of itself (feature map and output); this
    needs the outer model to be a chain, as transfer-learning models are.
    """
    dense = head.dense
    if all(nested is None for _, nested in layers):
        tapped = keras.Model(model.inputs[0], [*(layer.output for layer, _ in layers), dense.input])

        def flat(images: tf.Tensor) -> tuple[list[Any], Any]:
            *features, before_head = tapped(images, training=False)
            return list(features), _logits(dense, before_head)

        return flat
    nested_models = {id(nested) for _, nested in layers if nested is not None}
    if len(nested_models) > 1 or any(nested is None for _, nested in layers):
        raise InvalidArgumentError(
            "layer", "layers of one nested model (or all of the outer model)", "a mix"
        )
    nested = next(nested for _, nested in layers if nested is not None)
    inner = keras.Model(nested.inputs[0], [*(layer.output for layer, _ in layers), nested.output])
    chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    before_dense = chain[: chain.index(dense)]

    def through_nested(images: tf.Tensor) -> tuple[list[Any], Any]:
        x = images
        features: list[Any] = []
        for layer in before_dense:
            if layer is nested:
                *features, x = inner(x, training=False)
            else:
                x = layer(x, training=False)
        return features, _logits(dense, x)

    return through_nested


def _check_forward(
    model: keras.Model, forward: Any, head: Head, shape: tuple[int, ...], dtype: str
) -> None:
    """Raise unless ``forward`` reproduces the model's output (it would for a chain model)."""
    probe = np.random.default_rng(0).integers(0, 256, (2, *shape)).astype(dtype)
    _, logits = forward(tf.convert_to_tensor(probe))
    expected = head.tumour_probabilities(model(probe, training=False))
    if not np.allclose(_tumour_probabilities(logits).numpy(), expected, atol=1e-3):
        raise InvalidArgumentError(
            "model",
            "a chain of layers around the nested model that holds the layer",
            "a graph that running its layers in order does not reproduce",
        )


def _logits(dense: Any, before_head: Any) -> Any:
    """The head's pre-activation outputs ``[B, units]`` in float32: ``x @ kernel + bias``."""
    kernel = tf.cast(dense.kernel, tf.float32)
    z = tf.matmul(tf.cast(before_head, tf.float32), kernel)
    if dense.use_bias:
        z = z + tf.cast(dense.bias, tf.float32)
    return z


def _class_scores(logits: Any, class_index: Any) -> Any:
    """The score ``[B]`` of class ``class_index``: ``z`` or ``-z`` for one logit, else ``z_c``."""
    if logits.shape[-1] == 1:
        sign = tf.cast(2 * class_index - 1, tf.float32)
        return sign * logits[:, 0]
    return tf.gather(logits, class_index, axis=1)


def _tumour_probabilities(logits: Any) -> Any:
    """Class 1's probability ``[B]`` from the logits: their sigmoid, or column 1 of softmax."""
    if logits.shape[-1] == 1:
        return tf.sigmoid(logits[:, 0])
    return tf.nn.softmax(logits, axis=-1)[:, 1]


def _combine(method: str, features: Any, gradients: Any) -> Any:
    """The unnormalised map ``[B, h, w]`` of one layer for one method."""
    if method == "layercam":
        return tf.nn.relu(tf.reduce_sum(tf.nn.relu(gradients) * features, axis=-1))
    if method == "gradcam++":
        # Chattopadhyay et al. 2018 with the exponential of the score, whose higher derivatives
        # are powers of the first times exp(score): exp(score) cancels in alpha and leaves a
        # positive factor per map in the weights, which the normalisation removes.
        second, third = gradients**2, gradients**3
        total = tf.reduce_sum(features, axis=(1, 2), keepdims=True)
        denominator = 2.0 * second + total * third
        usable = tf.abs(denominator) > _EPSILON
        safe = tf.where(usable, denominator, tf.ones_like(denominator))
        alpha = tf.where(usable, second / safe, tf.zeros_like(second))
        weights = tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=(1, 2))
        return tf.nn.relu(tf.einsum("bhwc,bc->bhw", features, weights))
    weights = tf.reduce_mean(gradients, axis=(1, 2))
    return tf.nn.relu(tf.einsum("bhwc,bc->bhw", features, weights))


def _normalise(maps: Any) -> Any:
    """Each map divided by its maximum; an all-zero map stays zero (no NaN)."""
    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    # however small the peak (features of 1e-15 are common in a randomly initialised network)
    return maps / tf.where(peak > 0, peak, tf.ones_like(peak))
