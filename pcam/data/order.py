"""The order in which one epoch visits a split: block shuffle, window shuffle and sharding.

Pure NumPy, no TensorFlow. Reading patches one by one in random order is about 30 times slower
than reading runs, so a shuffled epoch is built in two levels:

1. the split is cut into blocks of ``block_size`` consecutive patches and the blocks are permuted;
2. the permuted sequence is cut into windows of ``window_size`` patches and each window is
   permuted inside (the "buffer").

The result is a true permutation of the split (every patch once per epoch), the same for the same
``seed`` and ``epoch``, and different across epochs. With several shards the permuted blocks are
dealt round-robin, so shards are disjoint, cover the split, and each reads whole blocks; the short
last block always goes to the same shard, so every shard has the same size in every epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pcam.errors import InvalidArgumentError

DEFAULT_BLOCK_SIZE = 128
"""Consecutive patches read as one run (128 patches are 3.5 MB)."""

DEFAULT_WINDOW_SIZE = 2048
"""Patches shuffled together inside one window (16 blocks of 128)."""


def check_sharding(num_shards: int, shard_index: int) -> None:
    """Raise :class:`InvalidArgumentError` unless ``0 <= shard_index < num_shards``."""
    if not isinstance(num_shards, int) or num_shards < 1:
        raise InvalidArgumentError("num_shards", "an integer >= 1", num_shards)
    if not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise InvalidArgumentError("shard_index", f"an integer in [0, {num_shards})", shard_index)


def epoch_order(
    n: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
    block_size: int = DEFAULT_BLOCK_SIZE,
    window_size: int = DEFAULT_WINDOW_SIZE,
) -> npt.NDArray[np.int64]:
    """Indices of the patches one shard visits in one epoch, in visiting order.

    Without ``shuffle`` a shard is a contiguous range (``n * i // k`` to ``n * (i + 1) // k``), so
    evaluation reads sequentially. With ``shuffle`` the order is the two-level permutation
    described in the module docstring, seeded by ``(seed, epoch)``.
    """
    if n < 0:
        raise InvalidArgumentError("n", "a number of patches >= 0", n)
    check_sharding(num_shards, shard_index)
    if block_size < 1:
        raise InvalidArgumentError("block_size", "an integer >= 1", block_size)
    if window_size < 1:
        raise InvalidArgumentError("window_size", "an integer >= 1", window_size)
    if not shuffle:
        start = n * shard_index // num_shards
        stop = n * (shard_index + 1) // num_shards
        return np.arange(start, stop, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch])
    full_blocks = n // block_size
    blocks = rng.permutation(full_blocks)[shard_index::num_shards]
    if n % block_size and shard_index == full_blocks % num_shards:
        # the short last block always goes to the same shard, so shard sizes never change
        blocks = np.insert(blocks, rng.integers(0, blocks.size + 1), full_blocks)
    indices = _expand_blocks(blocks, block_size, n)
    window_of = np.arange(indices.size, dtype=np.int64) // window_size
    within = np.lexsort((rng.random(indices.size), window_of))
    return indices[within]


def _expand_blocks(
    blocks: npt.NDArray[np.integer[Any]], block_size: int, n: int
) -> npt.NDArray[np.int64]:
    """The patch indices of ``blocks``, block after block, clipped to the split's length."""
    starts = blocks.astype(np.int64) * block_size
    lengths = np.minimum(starts + block_size, n) - starts
    offsets = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(
        np.cumsum(lengths) - lengths, lengths
    )
    indices: npt.NDArray[np.int64] = np.repeat(starts, lengths) + offsets
    return indices


def num_batches(count: int, batch_size: int, *, drop_remainder: bool) -> int:
    """Batches over ``count`` items: the last one is partial, or dropped with ``drop_remainder``."""
    if batch_size < 1:
        raise InvalidArgumentError("batch_size", "an integer >= 1", batch_size)
    return count // batch_size if drop_remainder else -(-count // batch_size)
