"""Moderate colour jitter for H&E patches, in TensorFlow, as one affine colour map per image.

Brightness, contrast, saturation and hue changes are all affine maps of the RGB vector, so their
composition is one 3x3 matrix and one offset per image. Applying it is one batched matrix product
over the pixels, instead of the chain of colour-space conversions ``tf.image`` does, and it is
deterministic for a given seed tensor (stateless random ops).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

_GREY_AXIS = tf.constant([1.0, 1.0, 1.0]) / math.sqrt(3.0)
_CROSS_GREY = tf.constant([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3.0)
_MID = 127.5


@dataclass(frozen=True)
class ColourJitter:
    """Ranges of the random colour changes (each drawn uniformly in ``[-x, +x]``)."""

    brightness: float = 0.08
    """Shift of all channels, as a fraction of the full 0-255 range."""
    contrast: float = 0.12
    """Relative change of the spread around mid-grey."""
    saturation: float = 0.12
    """Relative change of the distance from the grey axis."""
    hue: float = 0.04
    """Rotation about the grey axis, as a fraction of a full turn (H&E hues shift a little)."""


def colour_matrices(
    batch: tf.Tensor, seed: tf.Tensor, jitter: ColourJitter
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-image colour matrices ``[B, 3, 3]`` and offsets ``[B, 1, 3]`` (float32).

    ``seed`` is a stateless-random seed, an int tensor of shape ``[2]``.
    """
    draws = tf.random.stateless_uniform([batch, 4], seed=seed, minval=-1.0, maxval=1.0)
    brightness = draws[:, 0] * jitter.brightness * 255.0
    contrast = 1.0 + draws[:, 1] * jitter.contrast
    saturation = 1.0 + draws[:, 2] * jitter.saturation
    angle = draws[:, 3] * jitter.hue * 2.0 * math.pi
    identity = tf.eye(3, batch_shape=[batch])
    grey = tf.tensordot(_GREY_AXIS, _GREY_AXIS, axes=0)  # projector onto the grey axis
    cross = _CROSS_GREY  # cross product with the grey axis, as a matrix
    cos = tf.cos(angle)[:, None, None]
    sin = tf.sin(angle)[:, None, None]
    rotation = cos * identity + sin * cross + (1.0 - cos) * grey
    saturate = saturation[:, None, None] * identity + (1.0 - saturation[:, None, None]) * grey
    matrix = contrast[:, None, None] * tf.matmul(saturate, rotation)
    offset = (
        _MID
        + brightness[:, None, None]
        - tf.linalg.matvec(matrix, tf.fill([batch, 3], _MID))[:, None, :]
    )
    return matrix, offset


def jitter_colours(
    images: tf.Tensor, seed: tf.Tensor, jitter: ColourJitter | None = None
) -> tf.Tensor:
    """Apply a random moderate colour change to each image of a ``uint8 [B, H, W, 3]`` batch.

    Written as per-channel multiply-adds (not a matrix product with an inner size of 3), which
    XLA fuses into one pass over the pixels.
    """
    jitter = jitter or ColourJitter()
    matrix, offset = colour_matrices(tf.shape(images)[0], seed, jitter)
    pixels = tf.cast(images, tf.float32)
    matrix = matrix[:, None, None, :, :]  # [B, 1, 1, out, in]
    moved = offset[:, None, :, :]
    for channel in range(3):
        moved = moved + pixels[..., channel : channel + 1] * matrix[..., channel]
    return tf.cast(tf.clip_by_value(moved + 0.5, 0.0, 255.0), tf.uint8)


def unpack_pixels(packed: tf.Tensor) -> tf.Tensor:
    """Packed ``uint32 [B, H, W]`` pixels (RGB in the low bytes) to ``uint8 [B, H, W, 3]``."""
    return tf.bitcast(packed, tf.uint8)[..., :3]
