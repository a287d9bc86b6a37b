"""The colour stage of training's augmentation: RGB jitter, HED stain jitter, or both.

One function, :func:`augment_colours`, used by both placements: the loader's ``tf.data``
pipeline (``--augment-on loader``) and the Keras layer inside the model's train step
(``--augment-on device``, :class:`pcam.stain.layers.ColourAugmentation`). Same function, same
distribution of augmented patches; only where the seeds come from differs.
"""

from __future__ import annotations

import tensorflow as tf

from pcam.config import COLOUR_AUGMENTS, check_colour_augment
from pcam.data.colour import ColourJitter, jitter_colours
from pcam.stain.hed import HED_PRESETS, jitter_stains

__all__ = ["COLOUR_AUGMENTS", "augment_colours", "check_colour_augment"]


def augment_colours(
    images: tf.Tensor, seed: tf.Tensor, kind: str, rgb: ColourJitter | None = None
) -> tf.Tensor:
    """Apply the colour augmentation ``kind`` to each patch of a ``uint8 [B, H, W, 3]`` batch.

    ``seed`` is a stateless seed (int tensor ``[2]``); the HED and the RGB draws use two
    different seeds folded from it, so the combined kinds draw them independently.
    """
    check_colour_augment(kind)
    images = tf.convert_to_tensor(images)
    if kind == "none":
        return images
    parts = kind.split("+")
    seed = tf.cast(seed, tf.int64)
    hed = [part for part in parts if part in HED_PRESETS]
    if hed:
        images = jitter_stains(
            images, tf.random.experimental.stateless_fold_in(seed, 1), HED_PRESETS[hed[0]]
        )
    if "rgb" in parts:
        images = jitter_colours(images, seed, rgb)
    return images
