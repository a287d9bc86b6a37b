"""The 8 symmetries of the square (the dihedral group D4) on batches of patches, in NumPy.

A symmetry is coded by an integer in ``0..7``: bit 4 transposes (swaps rows and columns), then
bit 1 flips the rows (upside down), then bit 2 flips the columns (left to right). Code 0 is the
identity. Tissue has no up or left, so all 8 are label-preserving for PCam. Each image of a batch
gets its own code; applying then inverting with the same codes restores the batch exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pcam.errors import InvalidArgumentError

NUM_SYMMETRIES = 8
"""Order of the group D4."""


def random_codes(rng: np.random.Generator, count: int) -> npt.NDArray[np.uint8]:
    """Draw ``count`` symmetry codes uniformly from ``0..7``."""
    return rng.integers(0, NUM_SYMMETRIES, size=count, dtype=np.uint8)


def apply_one(
    image: npt.NDArray[Any],
    code: int,
    *,
    inverse: bool = False,
    channels_last: bool = True,
) -> npt.NDArray[Any]:
    """A view of one image, or of a batch sharing one code, under symmetry ``code``.

    The spatial axes are the two axes before the last (channels) one, so this works on a single
    ``[H, W, C]`` patch and on a ``[B, H, W, C]`` batch alike; with ``channels_last=False`` they
    are the last two axes (``[B, H, W]`` arrays of packed pixels).
    """
    if not 0 <= code < NUM_SYMMETRIES:
        raise InvalidArgumentError("code", "an integer in [0, 8)", code)
    rows, cols = (image.ndim - 3, image.ndim - 2) if channels_last else (-2, -1)
    steps = [("transpose", code & 4), ("rows", code & 1), ("cols", code & 2)]
    for step, active in reversed(steps) if inverse else steps:
        if not active:
            continue
        if step == "transpose":
            image = np.swapaxes(image, rows, cols)
        else:
            image = np.flip(image, axis=rows if step == "rows" else cols)
    return image


def transform(
    images: npt.NDArray[Any], codes: npt.NDArray[np.integer[Any]], *, inverse: bool = False
) -> npt.NDArray[Any]:
    """Apply symmetry ``codes[i]`` (or its inverse) to ``images[i]``; returns a new array.

    ``images`` is ``[B, H, W, C]`` with ``H == W``. One vectorised copy per distinct code.
    """
    codes = np.asarray(codes)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise InvalidArgumentError("images", "a batch [B, H, W, C] of square images", images.shape)
    if codes.shape != (images.shape[0],):
        raise InvalidArgumentError(
            "codes", f"one code per image, shape ({images.shape[0]},)", codes.shape
        )
    out = np.empty_like(images)
    for code in np.unique(codes).tolist():
        chosen = np.flatnonzero(codes == code)
        out[chosen] = apply_one(images[chosen], int(code), inverse=inverse)
    return out
