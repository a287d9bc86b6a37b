"""Stain jitter in haematoxylin-eosin-DAB (HED) optical-density space, in TensorFlow.

Light passing through a stained section is absorbed by each stain in proportion to its
concentration (Beer-Lambert), so in optical density, ``OD = ln(256 / (I + 1))`` per channel, a
pixel is a sum of the stains' OD vectors weighted by their concentrations. Unmixing with the
standard H&E-DAB matrix of Ruifrok and Johnston (2001) gives the three concentrations. Like Tellez
et al. (2019, "Quantifying the effects of data augmentation and stain color normalization in
convolutional neural networks for computational pathology"), the jitter scales and shifts each
stain's concentration per patch, ``c' = alpha * c + beta``, and mixes back.

Two project choices, both documented in the README:

- The ``+1`` in the optical density maps 255 to 0 and 0 to a finite value, so the round trip
  ``I -> OD -> I`` is exact for every uint8 value, saturated pixels included.
- The shift ``beta`` is weighted by how much stain a pixel holds, ``min(1, OD_sum / 0.3)``, so a
  white (255, 255, 255) background pixel has no stain before and after: glass stays glass.

Scaling then shifting in stain space and mixing back is, per patch, one 3x3 matrix on the OD
vector plus a weighted offset, ``OD' = OD @ A + w * v``: one fused pass over the pixels (two
transcendental functions per channel), XLA-compilable, seeded by a stateless seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
RGB_FROM_HED = RGB_FROM_HED / np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
"""Rows: the unit OD vectors (R, G, B) of haematoxylin, eosin and DAB (Ruifrok and Johnston)."""
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
"""Unmixing: ``concentrations = OD @ HED_FROM_RGB`` (row vectors)."""

STAINS = ("haematoxylin", "eosin", "dab")
FULL_SHIFT_OD = 0.3
"""Total optical density (over the three channels) from which a pixel gets the whole shift."""
_LOG_256 = float(np.log(256.0))


@dataclass(frozen=True)
class HedJitter:
    """Ranges of the per-patch stain changes, drawn for each stain independently.

    ``alpha ~ U[1 - scale, 1 + scale]`` and ``beta ~ U[-shift, shift]`` (optical-density units).
    """

    scale: float
    """Relative change of each stain's concentration."""
    shift: float
    """Added concentration, in natural-log optical density (dense nuclei hold about 1)."""


HED_PRESETS: dict[str, HedJitter] = {
    "hed-light": HedJitter(scale=0.05, shift=0.05),
    "hed-strong": HedJitter(scale=0.2, shift=0.2),
}
"""Tellez et al.'s light and strong HED augmentation (their sigma of 0.05 and 0.2)."""


def optical_density(images: tf.Tensor) -> tf.Tensor:
    """``uint8`` (or float) intensities ``I`` to optical density ``ln(256 / (I + 1))``, float32."""
    return _LOG_256 - tf.math.log(tf.cast(images, tf.float32) + 1.0)


def intensities(density: tf.Tensor) -> tf.Tensor:
    """Optical density back to ``uint8`` intensities (rounded, clipped to ``[0, 255]``)."""
    values = 256.0 * tf.exp(-tf.cast(density, tf.float32)) - 1.0
    return tf.cast(tf.clip_by_value(values + 0.5, 0.0, 255.0), tf.uint8)


def stain_concentrations(images: tf.Tensor) -> tf.Tensor:
    """The H, E and DAB concentrations ``float32 [..., 3]`` of ``uint8 [..., 3]`` pixels."""
    return tf.linalg.matvec(tf.constant(HED_FROM_RGB.T, tf.float32), optical_density(images))


def stain_maps(scales: tf.Tensor, shifts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-patch OD maps ``A [B, 3, 3]`` and offsets ``v [B, 3]`` of ``c' = scale * c + shift``.

    ``scales`` and ``shifts`` are ``[B, 3]`` (one value per stain); the new optical density of a
    pixel is ``OD @ A + w * v``, with ``w`` its stain weight (see the module's docstring).
    """
    unmix = tf.constant(HED_FROM_RGB, tf.float32)
    mix = tf.constant(RGB_FROM_HED, tf.float32)
    scales = tf.cast(scales, tf.float32)
    matrices = tf.matmul(unmix[None] * scales[:, None, :], tf.broadcast_to(mix, [1, 3, 3]))
    offsets = tf.matmul(tf.cast(shifts, tf.float32), mix)
    return matrices, offsets


def shift_stains(images: tf.Tensor, scales: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
    """Scale and shift each stain of each patch of ``uint8 [B, H, W, 3]``; returns ``uint8``.

    ``scales`` and ``shifts`` are ``[B, 3]`` (or ``[3]``, the same for every patch), in the order
    of :data:`STAINS`. ``scales`` of 1 and ``shifts`` of 0 give back the batch exactly.
    """
    images = tf.convert_to_tensor(images)
    batch = tf.shape(images)[0]
    scales = tf.broadcast_to(tf.cast(scales, tf.float32), [batch, 3])
    shifts = tf.broadcast_to(tf.cast(shifts, tf.float32), [batch, 3])
    matrices, offsets = stain_maps(scales, shifts)
    density = optical_density(images)
    channels = [density[..., c : c + 1] for c in range(3)]
    weight = tf.minimum((channels[0] + channels[1] + channels[2]) / FULL_SHIFT_OD, 1.0)
    matrices = matrices[:, None, None, :, :]  # [B, 1, 1, in, out]
    moved = weight * offsets[:, None, None, :]
    for channel in range(3):
        moved = moved + channels[channel] * matrices[..., channel, :]
    return intensities(moved)


def stain_factors(batch: tf.Tensor, seed: tf.Tensor, jitter: HedJitter) -> tuple[tf.Tensor, ...]:
    """Per-patch ``scales`` and ``shifts`` ``[batch, 3]`` drawn for ``jitter`` (stateless seed)."""
    draws = tf.random.stateless_uniform([batch, 6], seed=seed, minval=-1.0, maxval=1.0)
    return 1.0 + draws[:, :3] * jitter.scale, draws[:, 3:] * jitter.shift


def jitter_stains(images: tf.Tensor, seed: tf.Tensor, jitter: HedJitter) -> tf.Tensor:
    """Apply a random stain change drawn from ``jitter`` to each patch of ``uint8 [B, H, W, 3]``.

    ``seed`` is a stateless-random seed (an int tensor of shape ``[2]``): the same seed and batch
    give the same result.
    """
    images = tf.convert_to_tensor(images)
    scales, shifts = stain_factors(tf.shape(images)[0], seed, jitter)
    return shift_stains(images, scales, shifts)
