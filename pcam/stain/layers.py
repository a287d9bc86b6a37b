"""The colour augmentation as a Keras layer, inside the model (``pcam train --augment-on device``).

:class:`ColourAugmentation` runs :func:`pcam.stain.augment.augment_colours` in the model's train
step, on whatever device the model runs on, so a GPU host spends its CPU cores on reading. It is
active in training only: at inference (``model.predict``, evaluation, Grad-CAM, the app) it
returns its input unchanged. Its random draws come from a Keras seed generator, whose state the
run's backup restores (:mod:`pcam.model.backup`), so a resumed run goes on with the same draws.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from pcam.config import check_colour_augment
from pcam.stain.augment import augment_colours


@keras.saving.register_keras_serializable(package="pcam")
class ColourAugmentation(keras.layers.Layer):  # type: ignore[misc]
    """Colour-augment ``uint8 [B, 96, 96, 3]`` patches in training; the identity otherwise."""

    def __init__(self, kind: str = "hed-light", seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_colour_augment(kind)
        self.kind = kind
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name=f"{self.name}_seed")

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """Augment the batch when ``training``, else return it unchanged."""
        if not training or self.kind == "none":
            return inputs
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        return augment_colours(inputs, seed, self.kind)

    def compute_output_spec(self, inputs: Any, training: bool | None = None) -> Any:
        """The input's shape and dtype: colours change, not sizes or types."""
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        """The layer's settings, for saving with the model."""
        return {**super().get_config(), "kind": self.kind, "seed": self.seed}
