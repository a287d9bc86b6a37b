"""``make_dataset``: a PCam split as a streaming ``tf.data.Dataset``.

The NumPy :class:`~pcam.data.reader.EpochReader` does the reading (memory map or h5py), the
shuffle and the D4 symmetries; TensorFlow adds the colour stage (parallel ``map``, see
:mod:`pcam.stain.augment`) and prefetching.
Memory stays constant whatever the size of the split.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import os
import threading
from typing import Any

import numpy as np
import tensorflow as tf

from pcam.config import DEFAULT_COLOUR_AUGMENT, check_colour_augment
from pcam.data.colour import ColourJitter, unpack_pixels
from pcam.data.pipeline_errors import remember_pipeline_error, unwrap_pipeline_error
from pcam.data.reader import Batch, EpochReader, StreamOptions
from pcam.data.split import open_split
from pcam.errors import InvalidArgumentError, PCamError
from pcam.layout import IMAGE_SHAPE

__all__ = ["make_dataset", "unwrap_pipeline_error"]

try:  # the class of the iterators that ``iter(dataset)`` returns in eager mode
    from tensorflow.python.data.ops.iterator_ops import OwnedIterator as _OwnedIterator
except ImportError:  # pragma: no cover - a TensorFlow that moved it: no exit hook
    _OwnedIterator = None


class _EpochCounter:
    """Numbers the epochs of a dataset that is iterated several times (thread-safe)."""

    def __init__(self, first: int = 0) -> None:
        self._next = first
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            epoch = self._next
            self._next += 1
            return epoch


def _release_live_iterators() -> None:
    """Free every eager ``tf.data`` iterator still alive, while the interpreter still runs.

    An iterator that outlives the script (``it = iter(dataset)`` at module level, a notebook
    variable) is otherwise freed during interpreter shutdown.
    Its parallel ``map`` may then be inside a ``numpy_function`` call that needs the GIL, which
    Python no longer hands out; the iterator's destructor waits for that call for ever and the
    process never exits. Freeing the iterators' resources here, from an ``atexit`` hook, lets the
    destructors run while Python still serves those calls.
    """
    if _OwnedIterator is None:  # pragma: no cover
        return
    for candidate in gc.get_objects():
        if isinstance(candidate, _OwnedIterator) and hasattr(candidate, "_iterator_resource"):
            del candidate._iterator_resource


_exit_hook_lock = threading.Lock()
_exit_hook_registered = False


def _checked_steps(
    reader: EpochReader, options: StreamOptions, repeat: bool, start_batch: int
) -> int:
    """The batches of one epoch, once ``repeat`` and ``start_batch`` are checked against it."""
    steps = reader.num_batches()
    if repeat and steps == 0:  # an endless stream of empty epochs would never yield
        raise InvalidArgumentError(
            "batch_size",
            f"at most the {reader.order(0).size} patches of this shard",
            options.batch_size,
        )
    if not isinstance(start_batch, int) or start_batch < 0:
        raise InvalidArgumentError("start_batch", "an integer >= 0", start_batch)
    if not repeat and start_batch % max(steps, 1):
        raise InvalidArgumentError(
            "start_batch",
            f"a multiple of the {steps} batches of an epoch (repeat=False)",
            start_batch,
        )
    return steps


def _batch_positions(steps: int, repeat: bool, start_batch: int) -> tf.data.Dataset:
    """The stream's batch numbers, counted over all epochs, from ``start_batch`` on.

    With ``repeat``, one endless run. Without, one element expanded into one epoch's batch
    numbers: each pass over the dataset draws the next epoch number, so each Keras epoch is a
    new permutation.
    """
    if repeat:
        return tf.data.Dataset.counter(start=start_batch, dtype=tf.int64)
    counter = _EpochCounter(first=start_batch // max(steps, 1))

    def next_epoch(_: tf.Tensor) -> tf.Tensor:
        epoch = tf.numpy_function(lambda: np.int64(counter.take()), [], tf.int64, stateful=True)
        return tf.ensure_shape(epoch, [])

    return (
        tf.data.Dataset.range(1)
        .map(next_epoch)
        .flat_map(lambda epoch: tf.data.Dataset.range(epoch * steps, (epoch + 1) * steps))
    )


def _colour_stage(
    dataset: tf.data.Dataset, seed: int, kind: str, jitter: ColourJitter | None
) -> tf.data.Dataset:
    """Unpack the packed pixels and augment their colours, seeded by ``(seed, batch number)``.

    ``kind`` is one of :data:`pcam.config.COLOUR_AUGMENTS` (see :mod:`pcam.stain.augment`).
    """
    from pcam.stain.augment import augment_colours

    def colour_step(packed: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
        batch_seed = tf.stack([tf.constant(seed, tf.int64), position])
        return augment_colours(unpack_pixels(packed), batch_seed, kind, jitter)

    # XLA fuses unpacking and the colour maps into one pass over the pixels
    compiled_step = tf.function(colour_step, jit_compile=True)
    return dataset.map(
        lambda packed, labels, position: (compiled_step(packed, position), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _stream_options(options: StreamOptions | None, fields: dict[str, Any]) -> StreamOptions:
    """``options``, or the :class:`StreamOptions` made of ``fields`` (one-line errors)."""
    if options is not None:
        if fields:
            raise InvalidArgumentError(
                "options", "StreamOptions or its fields as keywords, not both", sorted(fields)
            )
        return options
    known = {field.name for field in dataclasses.fields(StreamOptions)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InvalidArgumentError(
            "make_dataset", f"fields of StreamOptions ({', '.join(sorted(known))})", unknown
        )
    if "batch_size" not in fields:
        raise InvalidArgumentError("batch_size", "an integer >= 1", None)
    return StreamOptions(**fields)


def _register_exit_hook() -> None:
    """Register :func:`_release_live_iterators` with ``atexit`` once per process."""
    global _exit_hook_registered
    with _exit_hook_lock:
        if not _exit_hook_registered:
            atexit.register(_release_live_iterators)
            _exit_hook_registered = True


def _read_batch(reader: EpochReader, epoch: np.int64, step: np.int64) -> Batch:
    """``reader.read_batch`` for ``tf.numpy_function``: a PCamError is remembered, then raised.

    TensorFlow turns it into an ``OpError``; :func:`unwrap_pipeline_error` gives it back.
    """
    try:
        return reader.read_batch(int(epoch), int(step))
    except PCamError as error:
        remember_pipeline_error(error)
        raise


def make_dataset(
    root: str | os.PathLike[str],
    split: str,
    options: StreamOptions | None = None,
    *,
    repeat: bool = False,
    colour_jitter: ColourJitter | None = None,
    colour_augment: str = DEFAULT_COLOUR_AUGMENT,
    start_batch: int = 0,
    **fields: Any,
) -> tf.data.Dataset:
    """Stream one PCam split as batches ``(images uint8 [B, 96, 96, 3], labels int32 [B])``.

    ``options`` (:class:`pcam.data.reader.StreamOptions`) says how: batch size, shuffle, seed,
    augmentation, sharding, dropping the last batch. As a convenience its fields may be given
    as keywords instead (``make_dataset(root, "train", batch_size=64, shuffle=True)``); not both.

    - ``shuffle``: a fresh permutation of the split each epoch (block and window shuffle, see
      :mod:`pcam.data.order`), the same sequence of epochs for the same ``seed``.
    - ``augment``: a random symmetry of the square (D4) and a colour augmentation per patch:
      ``colour_augment`` names it (:data:`pcam.config.COLOUR_AUGMENTS`; ``hed-light`` and
      ``hed-strong`` jitter the stains in HED optical density, ``rgb`` is a moderate RGB jitter
      whose ranges ``colour_jitter`` sets, default :class:`pcam.data.colour.ColourJitter`;
      ``none`` leaves colours to the model, ``pcam train --augment-on device``).
    - ``repeat``: loop over epochs forever (each a new permutation); otherwise the dataset holds
      one epoch, and each new iteration over it (a Keras epoch) is the next epoch.
    - ``num_shards`` / ``shard_index``: read only one of ``num_shards`` disjoint parts that
      together cover the split (for multi-worker training).
    - ``drop_remainder``: drop the last, partial batch of each epoch.
    - ``start_batch``: batches of the stream already consumed, counted over all epochs (a
      resumed training run); the stream goes on exactly as if it had produced them. Without
      ``repeat`` it must be a whole number of epochs.

    The split is validated here (see :func:`pcam.data.open_split`), so bad files fail at once.
    Files are opened lazily by the reader, so the dataset survives forks and pickling. Data that
    cannot be read back mid-stream (a damaged chunk) raises a TensorFlow ``OpError`` when the
    batch is reached; :func:`unwrap_pipeline_error` turns it into the one-line
    :class:`pcam.errors.DamagedDataError` naming the file and the first unreadable patch.
    """
    options = _stream_options(options, fields)
    check_colour_augment(colour_augment)
    handle = open_split(root, split)
    _register_exit_hook()
    reader = EpochReader(handle, options)
    steps = _checked_steps(reader, options, repeat, start_batch)
    batch_dim = options.batch_size if options.drop_remainder else None
    if options.augment:  # packed 4-byte pixels, unpacked by the colour stage (pcam.data.reader)
        image_spec = tf.TensorSpec(shape=(batch_dim, *IMAGE_SHAPE[:2]), dtype=tf.uint32)
    else:
        image_spec = tf.TensorSpec(shape=(batch_dim, *IMAGE_SHAPE), dtype=tf.uint8)

    def read(position: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Batch number ``position`` counted over all epochs: epoch and step come from it."""
        epoch, step = position // max(steps, 1), position % max(steps, 1)
        images, labels = tf.numpy_function(
            lambda e, s: _read_batch(reader, e, s),
            [epoch, step],
            [image_spec.dtype, tf.int32],
            stateful=False,
        )
        images = tf.ensure_shape(images, image_spec.shape)
        labels = tf.ensure_shape(labels, [batch_dim])
        return (images, labels, position) if options.augment else (images, labels)

    positions = _batch_positions(steps, repeat, start_batch)
    dataset = positions.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not repeat:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    if options.augment:
        dataset = _colour_stage(dataset, options.seed, colour_augment, colour_jitter)
    return dataset.prefetch(tf.data.AUTOTUNE)
