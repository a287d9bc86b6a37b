"""Properties of the NumPy reader on real HDF5 files in all three storage layouts."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from pcam.data import d4
from pcam.data.reader import EpochReader, StreamOptions, unpack_pixels
from pcam.data.split import open_split
from pcam.testing.strategies import SplitSpec, split_specs, stream_options, write_spec


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


@settings(max_examples=30)
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


@settings(max_examples=20)
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


@settings(max_examples=20)
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


@settings(max_examples=20)
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
