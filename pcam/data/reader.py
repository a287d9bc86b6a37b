"""Batches of one epoch of one shard, read from a :class:`PCamSplit` in NumPy (no TensorFlow).

The reader follows the epoch order (see :mod:`pcam.data.order`), which keeps each window of
batches inside a few blocks of consecutive patches. On the contiguous fast path it gathers each
batch straight from the memory-mapped file, after asking the kernel to read the next window's
blocks ahead; on the h5py path it reads a window as runs of consecutive patches into one buffer
and gathers batches from it. Memory stays bounded by a couple of windows whatever the size of the
split. The D4 augmentation is done on 4-byte packed pixels right after the gather.
"""

from __future__ import annotations

import mmap
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pcam.data import d4
from pcam.data.order import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_WINDOW_SIZE,
    check_sharding,
    epoch_order,
    num_batches,
)
from pcam.data.split import PCamSplit
from pcam.errors import InvalidArgumentError
from pcam.layout import IMAGE_SHAPE

Batch = tuple[npt.NDArray[Any], npt.NDArray[np.int32]]
"""``(images, labels)``: images are ``uint8 [B, 96, 96, 3]`` or packed ``uint32 [B, 96, 96]``."""


@dataclass(frozen=True)
class StreamOptions:
    """How to stream one split. Every field has a safe default except ``batch_size``."""

    batch_size: int
    """Patches per batch (the last batch of an epoch may be smaller unless dropped)."""
    shuffle: bool = False
    """Visit patches in a fresh permutation each epoch (block and window shuffle)."""
    seed: int = 0
    """Seed of the shuffle and of the augmentation: same seed, same stream."""
    augment: bool = False
    """Apply a random symmetry of the square (D4) to every patch."""
    num_shards: int = 1
    """Number of workers splitting the data; each gets a disjoint part."""
    shard_index: int = 0
    """Which part this worker reads, in ``[0, num_shards)``."""
    drop_remainder: bool = False
    """Drop the last, partial batch of each epoch (for fixed-shape training steps)."""
    block_size: int = DEFAULT_BLOCK_SIZE
    """Consecutive patches read as one run when shuffling."""
    window_size: int = DEFAULT_WINDOW_SIZE
    """Patches shuffled together; rounded up to a whole number of batches."""

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InvalidArgumentError("batch_size", "an integer >= 1", self.batch_size)
        check_sharding(self.num_shards, self.shard_index)
        if self.block_size < 1:
            raise InvalidArgumentError("block_size", "an integer >= 1", self.block_size)
        if self.window_size < 1:
            raise InvalidArgumentError("window_size", "an integer >= 1", self.window_size)

    @property
    def effective_window(self) -> int:
        """Window size rounded up to a whole number of batches, so no batch spans two windows."""
        return -(-self.window_size // self.batch_size) * self.batch_size


class EpochReader:
    """Reads any batch of any epoch of one shard of a split, in NumPy; safe to call from threads.

    ``read_batch(epoch, step)`` is random access, so a pipeline can read several batches at once.
    Epoch orders and (on the h5py path) window buffers are cached for the two most recent uses.
    """

    def __init__(self, split: PCamSplit, options: StreamOptions) -> None:
        self.split = split
        self.options = options
        self._lock = threading.Lock()
        self._orders: OrderedDict[int, npt.NDArray[np.int64]] = OrderedDict()
        self._windows: OrderedDict[tuple[int, int], npt.NDArray[np.uint8]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"split": self.split, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["split"], state["options"])  # type: ignore[misc]

    def order(self, epoch: int) -> npt.NDArray[np.int64]:
        """Patch indices this shard visits in ``epoch``, in order."""
        with self._lock:
            cached = self._orders.get(epoch)
        if cached is not None:
            return cached
        o = self.options
        order = epoch_order(
            len(self.split),
            shuffle=o.shuffle,
            seed=o.seed,
            epoch=epoch,
            num_shards=o.num_shards,
            shard_index=o.shard_index,
            block_size=o.block_size,
            window_size=o.effective_window,
        )
        with self._lock:
            _remember(self._orders, epoch, order)
        return order

    def num_batches(self) -> int:
        """Batches per epoch of this shard (the same for every epoch)."""
        return num_batches(
            self.order(0).size, self.options.batch_size, drop_remainder=self.options.drop_remainder
        )

    def batches(self, epoch: int) -> Iterator[Batch]:
        """All batches of ``epoch`` in order (see :meth:`read_batch`)."""
        for step in range(self.num_batches()):
            yield self.read_batch(epoch, step)

    def read_batch(self, epoch: int, step: int) -> Batch:
        """Batch ``step`` of ``epoch``: ``(images, labels int32 [B])``.

        Images are ``uint8 [B, 96, 96, 3]``, or with ``augment`` D4-transformed packed pixels
        ``uint32 [B, 96, 96]`` (see :func:`unpack_pixels`). The D4 codes are drawn from
        ``(seed, epoch, step)``, so a batch is the same whoever reads it and when.
        """
        o = self.options
        order = self.order(epoch)
        start = step * o.batch_size
        index = order[start : start + o.batch_size]
        codes = None
        if o.augment:
            codes = d4.random_codes(np.random.default_rng([o.seed, epoch, step, 1]), index.size)
        if self.split.is_memory_mappable:
            window = o.effective_window
            if start % window == 0:  # first batch of a window: have the kernel read the next one
                self._advise(order[start + window : start + 2 * window])
            images = _gather(self.split.image_map(), index, codes)
        else:
            images = _gather(
                self._window_buffer(epoch, order, start), self._positions(start, index.size), codes
            )
        return images, self.split.labels[index].astype(np.int32)

    def _positions(self, start: int, count: int) -> npt.NDArray[np.int64]:
        first = start % self.options.effective_window
        return np.arange(first, first + count, dtype=np.int64)

    def _window_buffer(
        self, epoch: int, order: npt.NDArray[np.int64], start: int
    ) -> npt.NDArray[np.uint8]:
        """The patches of the window holding position ``start``, read as runs (h5py path)."""
        window = self.options.effective_window
        key = (epoch, start // window)
        with self._lock:  # one reader at a time: h5py serialises reads anyway
            buffer = self._windows.get(key)
            if buffer is None:
                first = key[1] * window
                buffer = self.split.read_images(order[first : first + window])
                _remember(self._windows, key, buffer)
            return buffer

    def _advise(self, upcoming: npt.NDArray[np.int64]) -> None:
        if upcoming.size and hasattr(mmap, "MADV_WILLNEED"):
            self.split.advise_will_need(upcoming)


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any, keep: int = 2) -> None:
    """Insert into a small least-recently-used cache."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > keep:
        cache.popitem(last=False)


_IMAGE_BYTES = int(np.prod(IMAGE_SHAPE))


def _gather(
    source: npt.NDArray[np.uint8],
    keys: npt.NDArray[np.int64],
    codes: npt.NDArray[np.uint8] | None,
) -> npt.NDArray[Any]:
    """Gather ``source[keys]``; with D4 ``codes``, transform it and return packed pixels.

    Without codes the result is ``uint8 [B, 96, 96, 3]``. With codes it is ``uint32 [B, 96, 96]``:
    each pixel's R, G, B in its three low bytes (the top byte is junk), see :func:`unpack_pixels`.
    Moving whole 4-byte pixels is several times faster than moving 3-byte ones, which is what
    makes the D4 symmetries cheap. The 4-byte reads start at every third byte; one extra patch is
    gathered at the end so that the read of the very last pixel stays inside the buffer.
    """
    if codes is None:
        return np.asarray(source[keys])
    count = keys.size
    padded = np.asarray(source[np.append(keys, keys[-1])])
    row_bytes = IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
    pixels: npt.NDArray[np.uint32] = np.ndarray(
        (count, IMAGE_SHAPE[0], IMAGE_SHAPE[1]),
        dtype=np.uint32,
        buffer=padded,
        strides=(_IMAGE_BYTES, row_bytes, IMAGE_SHAPE[2]),
    )
    packed = np.empty((count, IMAGE_SHAPE[0], IMAGE_SHAPE[1]), dtype=np.uint32)
    for code in np.unique(codes).tolist():
        chosen = np.flatnonzero(codes == code)
        packed[chosen] = d4.apply_one(pixels[chosen], int(code), channels_last=False)
    return packed


def unpack_pixels(packed: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Packed ``uint32 [B, H, W]`` pixels back to ``uint8 [B, H, W, 3]`` RGB (little-endian)."""
    as_bytes = packed.astype("<u4", copy=False).view(np.uint8).reshape(*packed.shape, 4)
    return np.ascontiguousarray(as_bytes[..., :3])
