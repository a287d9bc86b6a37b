"""Keras 3 ``fit`` under ``MultiWorkerMirroredStrategy``: two workarounds, one place.

Keras 3 (checked on 3.15) cannot run ``Model.fit`` under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585, open), for two reasons:

1. ``fit`` builds the model's state by reducing its first input batch with
   ``strategy.reduce``, which this strategy cannot do for an ``(images, labels)`` pair
   ("Attempt to convert a value (PerReplica...) to a Tensor").
2. Each step's logs are reduced with ``strategy.reduce("MEAN", value, axis=0)``, which fails
   for the scalar loss and metrics ("Invalid reduction dimension 0 for input with 0
   dimensions").

:func:`prepare_multiworker_fit` builds the model from a placeholder batch of the loader's dtypes
and shapes (so Keras' own build has nothing to do and is skipped), and makes the log reduction
a mean over replicas (``axis=None``) for this strategy only, as Keras does for
``MirroredStrategy``. The training itself, gradients all-reduced by the strategy, is untouched.
``tests/test_distribute.py`` trains two real workers on 127.0.0.1 and guards both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcam.layout import IMAGE_SHAPE


def prepare_multiworker_fit(model: Any, strategy: Any) -> None:
    """Make a compiled ``model`` trainable with ``fit`` under ``MultiWorkerMirroredStrategy``."""
    import keras
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    needed = ("_symbolic_build", "_maybe_symbolic_build")
    if not all(hasattr(model, name) for name in needed) or not hasattr(
        trainer, "reduce_per_replica"
    ):
        raise RuntimeError(
            f"Keras {keras.__version__} is laid out differently from 3.15: "
            "pcam.model.multiworker needs updating for multi-worker training"
        )
    images = np.zeros((1, *IMAGE_SHAPE), dtype=np.uint8)
    labels = np.zeros((1,), dtype=np.int32)
    with strategy.scope():
        model._symbolic_build(data_batch=(images, labels))
    model._maybe_symbolic_build = _skip_build
    if not getattr(trainer.reduce_per_replica, "pcam_multiworker", False):
        trainer.reduce_per_replica = _reduce_with_multiworker_mean(trainer.reduce_per_replica)


def _skip_build(iterator: Any = None, data_batch: Any = None) -> None:
    """Stand-in for Keras' build-from-first-batch: the model is built already."""


def _reduce_with_multiworker_mean(keras_reduce: Any) -> Any:
    """Keras' ``reduce_per_replica``, with ``mean`` over replicas for multi-worker logs."""
    import tensorflow as tf

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if not multiworker or reduction not in ("auto", "mean"):
            return keras_reduce(values, strategy, reduction)
        return tf.nest.map_structure(
            lambda value: strategy.reduce("MEAN", value, axis=None), values
        )

    reduce_per_replica.pcam_multiworker = True  # type: ignore[attr-defined]
    return reduce_per_replica
