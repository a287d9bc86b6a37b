from __future__ import annotations

from typing import Any

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


def _reference_order(
    n: int, *, seed: int, epoch: int, shards: int, index: int, block: int, window: int
) -> list[int]:
    """The documented two-level shuffle, written out plainly (same random draws, same order)."""
    rng = np.random.default_rng([seed, epoch])
    full = n // block
    mine = [int(b) for b in rng.permutation(full)[index::shards]]
    if n % block and index == full % shards:  # the short last block: always the same shard
        mine.insert(int(rng.integers(0, len(mine) + 1)), full)
    indices = [i for b in mine for i in range(b * block, min(b * block + block, n))]
    keys = rng.random(len(indices))
    out: list[int] = []
    for first in range(0, len(indices), window):
        chunk = indices[first : first + window]
        out += [chunk[j] for j in np.argsort(keys[first : first + window], kind="stable")]
    return out


@given(
    n=st.integers(0, 700),
    shards=st.integers(1, 4),
    data=st.data(),
    seed=st.integers(0, 99),
    epoch=st.integers(0, 9),
    block=st.sampled_from([1, 3, 8, 16]),
    window=st.sampled_from([1, 5, 32]),
)
def test_shuffled_order_is_exactly_the_documented_two_level_shuffle(
    n: int, shards: int, data: st.DataObject, seed: int, epoch: int, block: int, window: int
) -> None:
    index = data.draw(st.integers(0, shards - 1))
    order = epoch_order(
        n,
        shuffle=True,
        seed=seed,
        epoch=epoch,
        num_shards=shards,
        shard_index=index,
        block_size=block,
        window_size=window,
    )
    expected = _reference_order(
        n, seed=seed, epoch=epoch, shards=shards, index=index, block=block, window=window
    )
    assert order.tolist() == expected


def test_an_exact_multiple_of_the_block_size_has_no_short_block() -> None:
    # 64 patches in blocks of 8: eight whole blocks, nothing inserted, no extra random draw
    for index in range(2):
        order = epoch_order(64, shuffle=True, seed=5, num_shards=2, shard_index=index, block_size=8)
        expected = _reference_order(
            64, seed=5, epoch=0, shards=2, index=index, block=8, window=2048
        )
        assert order.tolist() == expected
        assert order.size == 32


def test_seed_and_epoch_default_to_zero() -> None:
    np.testing.assert_array_equal(
        epoch_order(1000, shuffle=True), epoch_order(1000, shuffle=True, seed=0, epoch=0)
    )


def test_unshuffled_shard_bounds_are_exact() -> None:
    # n * i // k to n * (i + 1) // k: 10 patches in 3 shards are 0-2, 3-5, 6-9
    parts = [epoch_order(10, shuffle=False, num_shards=3, shard_index=i).tolist() for i in range(3)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert epoch_order(10, shuffle=False).dtype == np.int64


def test_the_last_valid_shard_index_and_one_shard_are_accepted() -> None:
    assert epoch_order(10, shuffle=True, num_shards=3, shard_index=2, block_size=1).size == 3
    assert epoch_order(10, shuffle=False, num_shards=1, shard_index=0).size == 10
    assert epoch_order(0, shuffle=True).size == 0
    assert epoch_order(1, shuffle=True, block_size=1, window_size=1).tolist() == [0]


def test_batch_size_one_is_accepted() -> None:
    assert num_batches(3, 1, drop_remainder=False) == 3
    assert num_batches(3, 1, drop_remainder=True) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "n: expected a number of patches >= 0, found -1"),
        ({"num_shards": 0}, "num_shards: expected an integer >= 1, found 0"),
        ({"num_shards": 2.0}, "num_shards: expected an integer >= 1, found 2.0"),
        (
            {"num_shards": 3, "shard_index": 3},
            "shard_index: expected an integer in [0, 3), found 3",
        ),
        ({"shard_index": -1}, "shard_index: expected an integer in [0, 1), found -1"),
        (
            {"num_shards": 2, "shard_index": 1.0},
            "shard_index: expected an integer in [0, 2), found 1.0",
        ),
        ({"block_size": 0}, "block_size: expected an integer >= 1, found 0"),
        ({"window_size": 0}, "window_size: expected an integer >= 1, found 0"),
    ],
)
def test_bad_arguments_give_exact_messages(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"n": 10} | kwargs
    with pytest.raises(InvalidArgumentError) as caught:
        epoch_order(shuffle=True, **arguments)
    assert str(caught.value) == message


def test_bad_batch_size_gives_an_exact_message() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        num_batches(10, 0, drop_remainder=False)
    assert str(caught.value) == "batch_size: expected an integer >= 1, found 0"
