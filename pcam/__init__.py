"""pcam: a streaming loader, a ResNet50 classifier and Grad-CAM for PatchCamelyon (PCam).

Importing ``pcam`` is cheap: TensorFlow is imported only by the modules that need it. The
module paths of earlier releases (``pcam.gradcam``, ``pcam.train``, ...) keep working as
deprecated aliases of their new homes (:mod:`pcam.moved`).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pcam import moved

try:
    __version__ = version("pcam")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

moved.install()

__all__ = ["__version__"]
