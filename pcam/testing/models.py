"""A tiny Keras classifier for fast tests: trains on synthetic PCam in seconds on a CPU.

It keeps spatial layout up to its dense head (no global pooling), so it can learn the PCam rule
that only the centre 32x32 region decides the label. Like the real models of this package it
takes raw ``uint8`` patches and scales them itself.
"""

from __future__ import annotations

from typing import Any


def tiny_model(*, seed: int = 0, learning_rate: float = 3e-3) -> Any:
    """A compiled ~10k-parameter CNN: ``uint8 [B, 96, 96, 3]`` to tumour probability ``[B, 1]``."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(96, 96, 3), dtype="uint8", name="patch")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 5, strides=2, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(4, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="tumour")(x)
    model = keras.Model(inputs, outputs, name="tiny_pcam")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model
