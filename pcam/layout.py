"""The PCam file layout: split names, file names, dataset keys, shapes and dtypes.

These facts were read off the real files (see the project's shared notes): one HDF5 file per
split and array, a dataset ``x`` of shape ``(N, 96, 96, 3)`` uint8 RGB, a dataset ``y`` of shape
``(N, 1, 1, 1)`` uint8 holding 0 or 1, contiguous and uncompressed, written with
``libver=('earliest', 'v114')``; plus an optional meta CSV and, for train only, an optional mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

SPLITS: Final = ("train", "valid", "test")
"""The three PCam splits, in their usual order."""

PATCH_SIZE: Final = 96
"""Side of one patch in pixels."""

IMAGE_SHAPE: Final = (PATCH_SIZE, PATCH_SIZE, 3)
"""Shape of one patch: height, width, RGB channels."""

LABEL_SHAPE: Final = (1, 1, 1)
"""Shape of one label in the ``y`` file (a patch-level label stored as a 1x1x1 map)."""

MASK_SHAPE: Final = (PATCH_SIZE, PATCH_SIZE, 1)
"""Shape of one tumour mask in the optional train mask file."""

CENTRE_START: Final = 32
"""First row/column of the centre 32x32 region that decides the label."""

CENTRE_STOP: Final = 64
"""One past the last row/column of the centre region."""

HDF5_LIBVER: Final = ("earliest", "v114")
"""The HDF5 library-version bounds the real files were written with."""

OFFICIAL_SIZES: Final = {"train": 262_144, "valid": 32_768, "test": 32_768}
"""Number of patches in each split of the real PCam release."""

ArrayKind = Literal["x", "y", "mask"]

META_COLUMNS: Final = ("", "coord_y", "coord_x", "tumor_patch", "center_tumor_patch", "wsi")
"""Header of the real meta CSV (the first column is an unnamed index)."""


def h5_name(split: str, kind: ArrayKind) -> str:
    """File name of one array of one split, e.g. ``camelyonpatch_level_2_split_train_x.h5``."""
    return f"camelyonpatch_level_2_split_{split}_{kind}.h5"


def meta_name(split: str) -> str:
    """File name of the meta CSV of one split."""
    return f"camelyonpatch_level_2_split_{split}_meta.csv"


def h5_path(root: Path, split: str, kind: ArrayKind) -> Path:
    """Path of one array file of one split under ``root``."""
    return Path(root) / h5_name(split, kind)


def meta_path(root: Path, split: str) -> Path:
    """Path of the meta CSV of one split under ``root``."""
    return Path(root) / meta_name(split)
