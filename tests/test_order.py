from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcam.data.order import epoch_order, num_batches
from pcam.errors import InvalidArgumentError

sizes = st.integers(0, 3000)
blocks = st.sampled_from([1, 2, 7, 128])
windows = st.sampled_from([1, 5, 64, 2048])


@given(
    n=sizes,
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 1000),
    block=blocks,
    window=windows,
)
def test_shuffled_epoch_is_a_permutation(
    n: int, seed: int, epoch: int, block: int, window: int
) -> None:
    order = epoch_order(
        n, shuffle=True, seed=seed, epoch=epoch, block_size=block, window_size=window
    )
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


@given(
    n=sizes,
    shards=st.integers(1, 8),
    shuffle=st.booleans(),
    seed=st.integers(0, 99),
    epoch=st.integers(0, 99),
    block=blocks,
    window=windows,
)
def test_shards_are_disjoint_and_cover(
    n: int, shards: int, shuffle: bool, seed: int, epoch: int, block: int, window: int
) -> None:
    parts = [
        epoch_order(
            n,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            num_shards=shards,
            shard_index=i,
            block_size=block,
            window_size=window,
        )
        for i in range(shards)
    ]
    together = np.concatenate(parts)
    assert together.size == n
    np.testing.assert_array_equal(np.sort(together), np.arange(n))


@given(n=sizes, shards=st.integers(1, 8), block=blocks, seed=st.integers(0, 99))
def test_shard_sizes_do_not_change_across_epochs(
    n: int, shards: int, block: int, seed: int
) -> None:
    for index in range(shards):
        sizes_seen = {
            epoch_order(
                n,
                shuffle=True,
                seed=seed,
                epoch=e,
                num_shards=shards,
                shard_index=index,
                block_size=block,
            ).size
            for e in range(4)
        }
        assert len(sizes_seen) == 1


@given(n=st.integers(0, 2000), shards=st.integers(1, 5))
def test_unshuffled_shards_are_contiguous_and_in_file_order(n: int, shards: int) -> None:
    parts = [epoch_order(n, shuffle=False, num_shards=shards, shard_index=i) for i in range(shards)]
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))
    assert max(p.size for p in parts) - min(p.size for p in parts) <= 1


@given(seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 50))
def test_same_seed_same_order(seed: int, epoch: int) -> None:
    first = epoch_order(1000, shuffle=True, seed=seed, epoch=epoch)
    again = epoch_order(1000, shuffle=True, seed=seed, epoch=epoch)
    np.testing.assert_array_equal(first, again)


@given(seed=st.integers(0, 2**32 - 1))
def test_epochs_and_seeds_give_different_orders(seed: int) -> None:
    base = epoch_order(5000, shuffle=True, seed=seed, epoch=0)
    assert not np.array_equal(base, epoch_order(5000, shuffle=True, seed=seed, epoch=1))
    assert not np.array_equal(base, epoch_order(5000, shuffle=True, seed=seed + 1, epoch=0))


@given(
    n=st.integers(1, 5000),
    block=st.sampled_from([16, 128]),
    window_blocks=st.integers(1, 8),
    seed=st.integers(0, 99),
)
def test_windows_read_few_blocks(n: int, block: int, window_blocks: int, seed: int) -> None:
    """Locality is what makes shuffled reading fast: a window touches at most one more block
    than it holds whole blocks (windows need not start on a block border)."""
    window = block * window_blocks
    order = epoch_order(n, shuffle=True, seed=seed, block_size=block, window_size=window)
    for start in range(0, n, window):
        touched = np.unique(order[start : start + window] // block)
        assert touched.size <= window_blocks + 1


def test_shuffle_mixes_within_windows() -> None:
    order = epoch_order(4096, shuffle=True, seed=3, block_size=128, window_size=2048)
    # consecutive positions rarely hold consecutive patches once windows are shuffled
    assert np.mean(np.diff(order) == 1) < 0.05


@pytest.mark.parametrize(
    ("count", "batch", "drop", "expected"),
    [
        (10, 3, False, 4),
        (10, 3, True, 3),
        (9, 3, True, 3),
        (0, 4, False, 0),
        (2, 4, True, 0),
    ],
)
def test_num_batches(count: int, batch: int, drop: bool, expected: int) -> None:
    assert num_batches(count, batch, drop_remainder=drop) == expected


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_shards": 0}, "num_shards"),
        ({"num_shards": 2, "shard_index": 2}, "shard_index"),
        ({"shard_index": -1}, "shard_index"),
        ({"block_size": 0}, "block_size"),
        ({"window_size": 0}, "window_size"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"^{name}: expected"):
        epoch_order(10, shuffle=True, **kwargs)
