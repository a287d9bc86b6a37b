"""Properties of the NumPy reader on real HDF5 files in all three storage layouts."""

from __future__ import annotations

import pickle
import tempfile
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcam.data import d4
from pcam.data.order import epoch_order
from pcam.data.reader import EpochReader, StreamOptions, _remember, unpack_pixels
from pcam.data.split import open_split
from pcam.errors import InvalidArgumentError
from pcam.testing import write_split
from pcam.testing.strategies import SplitSpec, split_specs, stream_options, write_spec
from tests.profiles import examples


def _patch_index(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """The index written into the first pixel by ``random_arrays``."""
    first = images[:, 0, 0].astype(np.int64)
    return first[:, 0] + 256 * first[:, 1] + 65536 * first[:, 2]


def _epoch(
    reader: EpochReader, epoch: int
) -> tuple[list[npt.NDArray[np.uint8]], list[npt.NDArray[np.int32]]]:
    images, labels = [], []
    for batch_images, batch_labels in reader.batches(epoch):
        if batch_images.dtype == np.uint32:
            batch_images = unpack_pixels(batch_images)
        images.append(batch_images)
        labels.append(batch_labels)
    return images, labels


@settings(max_examples=examples(30))
@given(spec=split_specs(max_size=200), options=stream_options(augment=False))
def test_batches_hold_the_shard_order_exactly(spec: SplitSpec, options: StreamOptions) -> None:
    with tempfile.TemporaryDirectory() as root:
        images, labels = write_spec(root, "valid", spec)
        reader = EpochReader(open_split(root, "valid"), options)
        for epoch in (0, 1):
            order = reader.order(epoch)
            got_images, got_labels = _epoch(reader, epoch)
            sizes = [b.size for b in got_labels]
            bs = options.batch_size
            expected_count = order.size - order.size % bs if options.drop_remainder else order.size
            assert sum(sizes) == expected_count
            assert len(sizes) == reader.num_batches()
            assert all(s == bs for s in sizes[:-1])
            if sizes:
                assert 1 <= sizes[-1] <= bs
            visited = order[:expected_count]
            np.testing.assert_array_equal(
                np.concatenate(got_images or [images[:0]]), images[visited]
            )
            np.testing.assert_array_equal(
                np.concatenate(got_labels or [labels[:0].astype(np.int32)]),
                labels[visited].astype(np.int32),
            )


@settings(max_examples=examples(20))
@given(spec=split_specs(max_size=200), options=stream_options(augment=False))
def test_unshuffled_single_shard_stream_equals_the_file(
    spec: SplitSpec, options: StreamOptions
) -> None:
    options = replace(options, shuffle=False, num_shards=1, shard_index=0, drop_remainder=False)
    with tempfile.TemporaryDirectory() as root:
        images, labels = write_spec(root, "test", spec)
        got_images, got_labels = _epoch(EpochReader(open_split(root, "test"), options), 0)
        np.testing.assert_array_equal(np.concatenate(got_images), images)
        np.testing.assert_array_equal(np.concatenate(got_labels), labels)


@settings(max_examples=examples(20))
@given(
    spec=split_specs(min_size=2, max_size=200),
    options=stream_options(augment=False),
    epoch=st.integers(0, 5),
)
def test_shards_together_are_one_permutation_per_epoch(
    spec: SplitSpec, options: StreamOptions, epoch: int
) -> None:
    options = replace(options, shuffle=True, drop_remainder=False)
    with tempfile.TemporaryDirectory() as root:
        _images, _ = write_spec(root, "valid", spec)
        split = open_split(root, "valid")
        seen: list[npt.NDArray[np.int64]] = []
        for shard in range(options.num_shards):
            reader = EpochReader(split, replace(options, shard_index=shard))
            seen.extend(_patch_index(im) for im in _epoch(reader, epoch)[0])
        np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(spec.n))


@settings(max_examples=examples(20))
@given(spec=split_specs(max_size=150), options=stream_options(augment=True))
def test_augmented_patches_are_symmetries_of_the_right_patch(
    spec: SplitSpec, options: StreamOptions
) -> None:
    """Images and labels stay aligned through shuffle, shard and D4 augmentation."""
    with tempfile.TemporaryDirectory() as root:
        images, labels = write_spec(root, "valid", spec)
        reader = EpochReader(open_split(root, "valid"), options)
        variants = {
            d4.apply_one(images[i], c).tobytes(): i for i in range(spec.n) for c in range(8)
        }
        got_images, got_labels = _epoch(reader, 0)
        for batch_images, batch_labels in zip(got_images, got_labels, strict=True):
            for image, label in zip(batch_images, batch_labels, strict=True):
                source = variants[image.tobytes()]  # KeyError: not a symmetry of any patch
                assert label == labels[source]


def test_augmentation_uses_all_eight_symmetries_evenly(synthetic_root: Path) -> None:
    split = open_split(synthetic_root, "valid")
    options = StreamOptions(batch_size=64, augment=True, seed=5)
    reader = EpochReader(split, options)
    codes_seen = np.zeros(8)
    source = split.read_images(slice(None))
    for step, (packed, _) in enumerate(reader.batches(0)):
        batch = unpack_pixels(packed)
        for offset, image in enumerate(batch):
            original = source[step * 64 + offset]
            matches = [c for c in range(8) if np.array_equal(d4.apply_one(original, c), image)]
            codes_seen[matches[0]] += 1
    assert codes_seen.sum() == len(split)
    assert codes_seen.min() > 0.6 * len(split) / 8


def test_reads_are_the_same_from_any_thread_and_in_any_order(synthetic_root: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    options = StreamOptions(batch_size=100, shuffle=True, augment=True, seed=2)
    reader = EpochReader(open_split(synthetic_root, "train"), options)
    steps = list(range(reader.num_batches())) * 2
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda s: reader.read_batch(1, s), reversed(steps)))
    fresh = EpochReader(open_split(synthetic_root, "train"), options)
    for step, (images, labels) in zip(reversed(steps), parallel, strict=True):
        again_images, again_labels = fresh.read_batch(1, step)
        np.testing.assert_array_equal(images, again_images)
        np.testing.assert_array_equal(labels, again_labels)


# -- exact values: options, seeded codes, read-ahead and caches ----------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size: expected an integer >= 1, found 0"),
        ({"batch_size": 2.0}, "batch_size: expected an integer >= 1, found 2.0"),
        ({"batch_size": 4, "block_size": 0}, "block_size: expected an integer >= 1, found 0"),
        ({"batch_size": 4, "window_size": 0}, "window_size: expected an integer >= 1, found 0"),
        (
            {"batch_size": 4, "num_shards": 2, "shard_index": 2},
            "shard_index: expected an integer in [0, 2), found 2",
        ),
    ],
)
def test_bad_options_give_exact_messages(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        StreamOptions(**kwargs)
    assert str(caught.value) == message


def test_the_smallest_options_are_accepted_and_defaults_are_safe() -> None:
    options = StreamOptions(batch_size=1, block_size=1, window_size=1)
    assert options.effective_window == 1
    defaults = StreamOptions(batch_size=8)
    assert (defaults.shuffle, defaults.augment, defaults.drop_remainder) == (False, False, False)
    assert (defaults.seed, defaults.num_shards, defaults.shard_index) == (0, 1, 0)
    assert (defaults.block_size, defaults.window_size) == (128, 2048)


@pytest.mark.parametrize(
    ("window", "batch", "expected"), [(10, 4, 12), (8, 4, 8), (1, 5, 5), (2048, 96, 2112)]
)
def test_effective_window_is_rounded_up_to_whole_batches(
    window: int, batch: int, expected: int
) -> None:
    assert StreamOptions(batch_size=batch, window_size=window).effective_window == expected


def test_the_reader_follows_epoch_order_with_its_options(synthetic_root: Path) -> None:
    options = StreamOptions(
        batch_size=30, shuffle=True, seed=4, num_shards=2, shard_index=1, block_size=16
    )
    reader = EpochReader(open_split(synthetic_root, "valid"), options)
    for epoch in (0, 3):
        expected = epoch_order(
            512,
            shuffle=True,
            seed=4,
            epoch=epoch,
            num_shards=2,
            shard_index=1,
            block_size=16,
            window_size=2040,  # 2048 rounded up to whole batches of 30
        )
        np.testing.assert_array_equal(reader.order(epoch), expected)
    assert reader.num_batches() == -(-256 // 30)
    dropping = EpochReader(reader.split, replace(options, drop_remainder=True))
    assert dropping.num_batches() == 256 // 30


@pytest.mark.parametrize("chunked", [False, True])
def test_d4_codes_are_drawn_from_seed_epoch_and_step(tmp_path: Path, chunked: bool) -> None:
    write_split(tmp_path, "valid", 300, seed=3, chunked=chunked)
    split = open_split(tmp_path, "valid")
    source = split.read_images(slice(None))
    options = StreamOptions(batch_size=64, shuffle=True, seed=6, augment=True, window_size=128)
    reader = EpochReader(split, options)
    for epoch, step in ((0, 0), (0, 3), (2, 1), (1, 4)):
        images, labels = reader.read_batch(epoch, step)
        index = reader.order(epoch)[step * 64 : step * 64 + 64]
        codes = d4.random_codes(np.random.default_rng([6, epoch, step, 1]), index.size)
        np.testing.assert_array_equal(unpack_pixels(images), d4.transform(source[index], codes))
        np.testing.assert_array_equal(labels, split.labels[index].astype(np.int32))
        assert labels.dtype == np.int32


def test_without_augmentation_batches_are_plain_uint8_patches(synthetic_root: Path) -> None:
    split = open_split(synthetic_root, "valid")
    reader = EpochReader(split, StreamOptions(batch_size=100, shuffle=True, seed=1))
    images, labels = reader.read_batch(0, 5)  # the last, partial batch
    index = reader.order(0)[500:]
    assert images.dtype == np.uint8
    assert images.shape == (12, 96, 96, 3)
    np.testing.assert_array_equal(images, split.read_images(index))
    np.testing.assert_array_equal(labels, split.labels[index])


def test_the_next_window_is_read_ahead_at_each_window_start(synthetic_root: Path) -> None:
    split = open_split(synthetic_root, "valid")
    options = StreamOptions(batch_size=64, shuffle=True, seed=2, window_size=128)
    reader = EpochReader(split, options)
    advised: list[list[int]] = []
    split.advise_will_need = lambda index: advised.append(index.tolist())  # type: ignore[method-assign]
    order = reader.order(0)
    for step in range(reader.num_batches()):
        reader.read_batch(0, step)
    # windows start at 0, 128, 256, 384; the last window has nothing after it
    assert advised == [order[start + 128 : start + 256].tolist() for start in (0, 128, 256)]


def test_the_caches_keep_the_two_most_recent_entries() -> None:
    cache: OrderedDict[int, str] = OrderedDict()
    for key in (1, 2, 3):
        _remember(cache, key, str(key))
    assert list(cache.items()) == [(2, "2"), (3, "3")]
    _remember(cache, 2, "two")  # used again: now the most recent
    _remember(cache, 4, "4")
    assert list(cache.items()) == [(2, "two"), (4, "4")]
    _remember(cache, 5, "5", keep=3)
    assert list(cache) == [2, 4, 5]


def test_the_reader_caches_orders_and_windows(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", 300, seed=3, compression="gzip")
    split = open_split(tmp_path, "valid")
    reader = EpochReader(split, StreamOptions(batch_size=50, shuffle=True, window_size=100))
    for epoch in (0, 1, 2):
        for step in range(reader.num_batches()):
            reader.read_batch(epoch, step)
    assert list(reader._orders) == [1, 2]
    assert list(reader._windows) == [(2, 1), (2, 2)]
    assert reader.order(2) is reader.order(2)


def test_a_pickled_reader_reads_the_same_batches(synthetic_root: Path) -> None:
    options = StreamOptions(batch_size=64, shuffle=True, seed=8, augment=True)
    reader = EpochReader(open_split(synthetic_root, "valid"), options)
    first = reader.read_batch(1, 2)
    copy = pickle.loads(pickle.dumps(reader))
    assert copy.options == options
    again = copy.read_batch(1, 2)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_unpack_pixels_keeps_the_three_low_bytes_in_rgb_order() -> None:
    packed = np.array([[[0xAA030201, 0x00FFFEFD]]], dtype=np.uint32)
    np.testing.assert_array_equal(unpack_pixels(packed), [[[[1, 2, 3], [0xFD, 0xFE, 0xFF]]]])
    assert unpack_pixels(packed).flags.c_contiguous


def test_a_window_is_read_once_for_all_its_batches(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", 300, seed=3, chunked=True)
    split = open_split(tmp_path, "valid")
    reader = EpochReader(split, StreamOptions(batch_size=50, shuffle=True, window_size=100))
    real_read = split.read_images
    reads: list[list[int]] = []

    def counting_read(index: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        reads.append(index.tolist())
        return real_read(index)

    split.read_images = counting_read  # type: ignore[assignment,method-assign]
    order = reader.order(0)
    for step in (0, 1, 1, 0, 2, 3, 4, 5):
        images, _ = reader.read_batch(0, step)
        np.testing.assert_array_equal(images, real_read(order[step * 50 : step * 50 + 50]))
    assert reads == [order[start : start + 100].tolist() for start in (0, 100, 200)]
    assert list(reader._windows) == [(0, 1), (0, 2)]
    for (_, window), buffer in reader._windows.items():
        np.testing.assert_array_equal(buffer, real_read(order[window * 100 : window * 100 + 100]))


def test_the_order_uses_the_window_rounded_to_whole_batches(synthetic_root: Path) -> None:
    options = StreamOptions(batch_size=30, shuffle=True, seed=4, block_size=16, window_size=100)
    reader = EpochReader(open_split(synthetic_root, "valid"), options)
    expected = epoch_order(512, shuffle=True, seed=4, epoch=1, block_size=16, window_size=120)
    np.testing.assert_array_equal(reader.order(1), expected)
