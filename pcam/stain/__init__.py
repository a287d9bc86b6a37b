"""Stain colour: HED stain augmentation, Macenko normalisation, and the colour augmentations.

- :mod:`pcam.stain.hed`: optical density, HED unmixing and the seeded stain jitter (TensorFlow).
- :mod:`pcam.stain.augment`: the colour stage of training (RGB jitter, HED, both), one function
  for both placements (loader or device).
- :mod:`pcam.stain.layers`: that stage as a Keras layer inside the model (``--augment-on device``).
- :mod:`pcam.stain.macenko`: Macenko stain normalisation (NumPy), :func:`normalise`.

Importing this package does not import TensorFlow; the TensorFlow modules load on use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pcam.stain.macenko import (
        BackgroundOnlyError,
        MacenkoStains,
        StainNormaliser,
        fit_stains,
        normalise,
    )


def __getattr__(name: str) -> Any:
    """The Macenko names, imported on first use (the submodules import TensorFlow or NumPy)."""
    if name in __all__:
        return getattr(importlib.import_module("pcam.stain.macenko"), name)
    raise AttributeError(f"module 'pcam.stain' has no attribute {name!r}")


__all__ = ["BackgroundOnlyError", "MacenkoStains", "StainNormaliser", "fit_stains", "normalise"]
