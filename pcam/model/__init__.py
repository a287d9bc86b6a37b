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

from typing import TYPE_CHECKING

from pcam.moved import lazy_attributes

if TYPE_CHECKING:
    from pcam.config import ARCHITECTURES, Architecture
    from pcam.model.architectures import (
        CAFFE_BGR_MEAN,
        OWN_PREFIX,
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
]

__getattr__ = lazy_attributes(__name__, "pcam.model.architectures", __all__)
