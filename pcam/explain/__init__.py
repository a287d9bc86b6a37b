"""Explanations: class activation maps, their quality, and the figures people look at.

- :mod:`pcam.explain.gradcam`: Grad-CAM, Grad-CAM++ and LayerCAM for a whole batch;
- :mod:`pcam.explain.cam_quality`: pointing game, energy, deletion and insertion;
- :mod:`pcam.explain.plots`: overlays and grids of patches with their maps;
- :mod:`pcam.explain.explanation`: ``pcam explain``, from a saved model and patches to
  ``grid.png``, ``overlays/`` and ``explain.json``.

``from pcam.explain import explain`` (and the other names of :mod:`pcam.explain.explanation`,
the module ``pcam.explain`` was before it became this package) keeps working. Importing this
package is cheap: TensorFlow comes with the first of those names used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcam.moved import lazy_attributes

if TYPE_CHECKING:
    from pcam.explain.explanation import (
        Patches,
        explain,
        format_summary,
        image_patches,
        read_patch_file,
        sample_indices,
        split_patches,
    )

__all__ = [
    "Patches",
    "explain",
    "format_summary",
    "image_patches",
    "read_patch_file",
    "sample_indices",
    "split_patches",
]

__getattr__ = lazy_attributes(__name__, "pcam.explain.explanation", __all__)
