"""A tiny Keras classifier for fast tests: trains on synthetic PCam in seconds on a CPU.

It keeps spatial layout up to its dense head (no global pooling), so it can learn the PCam rule
that only the centre 32x32 region decides the label. Like the real models of this package it
takes raw ``uint8`` patches and scales them itself. Its head can be any of the forms pcam
reads (:mod:`pcam.model.heads`), to test that every command accepts each of them.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

HeadForm = Literal[
    "dense_sigmoid",
    "activation_sigmoid",
    "mixed_activation_sigmoid",
    "logit",
    "softmax",
    "softmax_layer",
    "two_logits",
]
HEAD_FORMS: tuple[HeadForm, ...] = get_args(HeadForm)
"""The head forms of :func:`tiny_model`: one per row of :mod:`pcam.model.heads`, mixed precision."""


def tiny_model(
    *, seed: int = 0, learning_rate: float = 3e-3, head: HeadForm = "dense_sigmoid"
) -> Any:
    """A compiled ~10k-parameter CNN taking ``uint8 [B, 96, 96, 3]`` patches.

    ``head`` is ``dense_sigmoid`` (``Dense(1, sigmoid)``: the tumour probability ``[B, 1]``),
    ``activation_sigmoid`` (``Dense(1)`` + ``Activation("sigmoid")``),
    ``mixed_activation_sigmoid`` (the same with every layer in ``mixed_float16`` but a float32
    activation), ``logit`` (``Dense(1)``: the tumour logit), ``softmax`` (``Dense(2, softmax)``),
    ``softmax_layer`` (``Dense(2)`` + ``Softmax()``) or ``two_logits`` (``Dense(2)``); the loss
    matches the head.
    """
    import keras

    if head not in HEAD_FORMS:
        raise ValueError(f"head: expected one of {', '.join(HEAD_FORMS)}, found {head!r}")
    keras.utils.set_random_seed(seed)
    dtype = "mixed_float16" if head.startswith("mixed_") else "float32"
    inputs = keras.Input(shape=(96, 96, 3), dtype="uint8", name="patch")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale", dtype=dtype)(inputs)
    x = keras.layers.Conv2D(
        8, 5, strides=2, padding="same", activation="relu", name="conv1", dtype=dtype
    )(x)
    x = keras.layers.MaxPooling2D(2, name="pool1", dtype=dtype)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2", dtype=dtype)(x)
    x = keras.layers.MaxPooling2D(4, name="pool2", dtype=dtype)(x)
    x = keras.layers.Flatten(name="flatten", dtype=dtype)(x)
    units = 2 if head in ("softmax", "softmax_layer", "two_logits") else 1
    activation = {"dense_sigmoid": "sigmoid", "softmax": "softmax"}.get(head)
    outputs = keras.layers.Dense(units, activation=activation, name="tumour", dtype=dtype)(x)
    if head.endswith("activation_sigmoid"):
        outputs = keras.layers.Activation("sigmoid", name="probability", dtype="float32")(outputs)
    elif head == "softmax_layer":
        outputs = keras.layers.Softmax(name="probabilities")(outputs)
    model = keras.Model(inputs, outputs, name="tiny_pcam")
    if units == 1:
        loss = keras.losses.BinaryCrossentropy(from_logits=head == "logit")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=head == "two_logits")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    return model
