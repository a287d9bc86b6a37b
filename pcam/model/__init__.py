"""The classifier: its architectures, heads, ImageNet weights, inference and training.

- :mod:`pcam.model.architectures`: ResNet50 or a small CNN on raw ``uint8`` patches, saving and
  loading, freezing the backbone;
- :mod:`pcam.model.heads`: the head forms pcam reads, and what their outputs mean;
- :mod:`pcam.model.weights`: fetching and caching the ImageNet weights;
- :mod:`pcam.model.inference`: the one inference function (tumour probabilities of patches);
- :mod:`pcam.model.train`: training on the streaming loader under a ``tf.distribute`` strategy,
  with :mod:`pcam.model.backup` (resuming a killed run) and :mod:`pcam.model.multiworker`.

``from pcam.model import build_model`` (and the other names of :mod:`pcam.model.architectures`,
the module ``pcam.model`` was before it became this package) keeps working. Importing this
package is cheap: TensorFlow comes with the first of those names used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pcam.model.architectures import (
        ARCHITECTURES,
        CAFFE_BGR_MEAN,
        OWN_PREFIX,
        Architecture,
        CaffePreprocess,
        backbone_layers,
        build_model,
        load_model,
        resolve_weights,
        set_backbone_trainable,
    )

__all__ = [
    "ARCHITECTURES",
    "CAFFE_BGR_MEAN",
    "OWN_PREFIX",
    "Architecture",
    "CaffePreprocess",
    "backbone_layers",
    "build_model",
    "load_model",
    "resolve_weights",
    "set_backbone_trainable",
]  # re-exported from pcam.model.architectures


def __getattr__(name: str) -> Any:
    """A name of :mod:`pcam.model.architectures`, imported on first use."""
    if name in __all__:
        return getattr(importlib.import_module("pcam.model.architectures"), name)
    raise AttributeError(f"module 'pcam.model' has no attribute {name!r}")
