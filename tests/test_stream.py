"""``make_dataset``: the tf.data pipeline users train on."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

tf = pytest.importorskip("tensorflow")

from pcam.data import d4, make_dataset, open_split  # noqa: E402
from pcam.data.colour import ColourJitter, jitter_colours  # noqa: E402
from pcam.errors import InvalidArgumentError, MissingFileError  # noqa: E402

NO_JITTER = ColourJitter(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


def _collect(dataset: Any) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    images, labels = zip(*dataset.as_numpy_iterator(), strict=True)
    return np.concatenate(images), np.concatenate(labels)


def _keys(images: npt.NDArray[np.uint8]) -> list[bytes]:
    return sorted(image.tobytes() for image in images)


def test_unshuffled_stream_equals_the_files(synthetic_root: Path) -> None:
    split = open_split(synthetic_root, "valid")
    dataset = make_dataset(synthetic_root, "valid", batch_size=96, shuffle=False)
    assert dataset.element_spec[0].dtype == tf.uint8
    assert dataset.element_spec[1].dtype == tf.int32
    assert int(dataset.cardinality()) == 6
    images, labels = _collect(dataset)
    np.testing.assert_array_equal(images, split.read_images(slice(None)))
    np.testing.assert_array_equal(labels, split.labels)


def test_each_iteration_is_a_new_permutation_and_the_seed_repeats_it(
    synthetic_root: Path,
) -> None:
    split = open_split(synthetic_root, "valid")
    expected = _keys(split.read_images(slice(None)))

    def epochs(seed: int) -> list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]]:
        dataset = make_dataset(synthetic_root, "valid", batch_size=64, shuffle=True, seed=seed)
        return [_collect(dataset) for _ in range(2)]

    first, second = epochs(seed=7)
    assert _keys(first[0]) == expected
    assert _keys(second[0]) == expected
    assert not np.array_equal(first[0], second[0])
    again_first, again_second = epochs(seed=7)
    np.testing.assert_array_equal(first[0], again_first[0])
    np.testing.assert_array_equal(second[0], again_second[0])
    other, _ = epochs(seed=8)
    assert not np.array_equal(first[0], other[0])


def test_labels_follow_their_images_when_shuffled(synthetic_root: Path) -> None:
    split = open_split(synthetic_root, "valid")
    label_of = {
        image.tobytes(): label
        for image, label in zip(split.read_images(slice(None)), split.labels, strict=True)
    }
    images, labels = _collect(
        make_dataset(synthetic_root, "valid", batch_size=50, shuffle=True, seed=3)
    )
    assert [label_of[image.tobytes()] for image in images] == labels.tolist()


def test_repeat_streams_successive_permutations(synthetic_root: Path) -> None:
    split = open_split(synthetic_root, "valid")
    dataset = make_dataset(
        synthetic_root, "valid", batch_size=128, shuffle=True, seed=1, repeat=True
    )
    batches = list(dataset.take(8).as_numpy_iterator())  # 2 epochs of 4 batches
    epoch_one = np.concatenate([b[0] for b in batches[:4]])
    epoch_two = np.concatenate([b[0] for b in batches[4:]])
    expected = _keys(split.read_images(slice(None)))
    assert _keys(epoch_one) == expected
    assert _keys(epoch_two) == expected
    assert not np.array_equal(epoch_one, epoch_two)


def test_drop_remainder_gives_a_static_batch_shape(synthetic_root: Path) -> None:
    dataset = make_dataset(
        synthetic_root, "valid", batch_size=100, shuffle=True, drop_remainder=True
    )
    assert dataset.element_spec[0].shape.as_list() == [100, 96, 96, 3]
    sizes = [labels.size for _, labels in dataset.as_numpy_iterator()]
    assert sizes == [100] * 5


def test_shards_are_disjoint_and_cover_the_split(synthetic_root: Path) -> None:
    split = open_split(synthetic_root, "valid")
    parts = [
        _collect(
            make_dataset(
                synthetic_root,
                "valid",
                batch_size=64,
                shuffle=True,
                seed=4,
                num_shards=3,
                shard_index=i,
            )
        )[0]
        for i in range(3)
    ]
    all_keys = [key for part in parts for key in _keys(part)]
    assert sorted(all_keys) == _keys(split.read_images(slice(None)))
    assert len(set(all_keys)) == len(split)  # synthetic patches are all distinct


def test_augmentation_without_colour_is_exactly_d4(synthetic_root: Path) -> None:
    split = open_split(synthetic_root, "valid")
    source = split.read_images(slice(None))
    variants = {
        d4.apply_one(image, c).tobytes(): (i, c) for i, image in enumerate(source) for c in range(8)
    }
    images, labels = _collect(
        make_dataset(
            synthetic_root,
            "valid",
            batch_size=64,
            shuffle=True,
            seed=2,
            augment=True,
            colour_jitter=NO_JITTER,
        )
    )
    found = [variants[image.tobytes()] for image in images]
    assert sorted(i for i, _ in found) == list(range(len(split)))
    assert [split.labels[i] for i, _ in found] == labels.tolist()
    assert len({c for _, c in found}) == 8


def test_augmentation_with_colour_is_moderate_and_deterministic(synthetic_root: Path) -> None:
    def run() -> npt.NDArray[np.uint8]:
        return _collect(
            make_dataset(
                synthetic_root, "valid", batch_size=64, shuffle=False, seed=9, augment=True
            )
        )[0]

    plain = _collect(make_dataset(synthetic_root, "valid", batch_size=64, shuffle=False))[0]
    first, second = run(), run()
    np.testing.assert_array_equal(first, second)
    # colour changes are moderate: per-image mean colour moves but stays close
    moved = np.abs(
        first.reshape(len(first), -1, 3).mean(1) - plain.reshape(len(plain), -1, 3).mean(1)
    )
    assert 0.5 < moved.mean() < 25.0


def test_colour_jitter_is_identity_with_zero_ranges_and_keeps_grey_for_hue() -> None:
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    seed = tf.constant([1, 2], tf.int64)
    np.testing.assert_array_equal(jitter_colours(images, seed, NO_JITTER).numpy(), images.numpy())
    grey = tf.fill([3, 8, 8, 3], tf.constant(90, tf.uint8))
    hue_only = ColourJitter(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.5)
    np.testing.assert_allclose(jitter_colours(grey, seed, hue_only).numpy(), 90, atol=1)


def test_dataset_can_be_made_from_a_pickled_split_handle(synthetic_root: Path) -> None:
    split = pickle.loads(pickle.dumps(open_split(synthetic_root, "valid")))
    assert len(split) == 512
    assert split.read_images(np.array([5]))[0].shape == (96, 96, 3)


def test_chunked_and_compressed_files_stream_the_same(tmp_path: Path) -> None:
    from pcam.testing import write_split

    for name, options in {
        "plain": {},
        "gzip": {"compression": "gzip"},
        "chunked": {"chunked": True},
    }.items():
        write_split(tmp_path / name, "test", 700, seed=5, **options)  # type: ignore[arg-type]
    streams = [
        _collect(
            make_dataset(tmp_path / name, "test", batch_size=64, shuffle=True, seed=1, augment=True)
        )
        for name in ("plain", "gzip", "chunked")
    ]
    for images, labels in streams[1:]:
        np.testing.assert_array_equal(images, streams[0][0])
        np.testing.assert_array_equal(labels, streams[0][1])


def test_bad_arguments_fail_when_the_dataset_is_made(synthetic_root: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="batch_size: expected an integer >= 1"):
        make_dataset(synthetic_root, "valid", batch_size=0, shuffle=False)
    with pytest.raises(InvalidArgumentError, match="shard_index"):
        make_dataset(
            synthetic_root, "valid", batch_size=8, shuffle=False, num_shards=2, shard_index=2
        )
    with pytest.raises(MissingFileError, match=r"test_x\.h5"):
        make_dataset(synthetic_root, "test", batch_size=8, shuffle=False)


LIVE_ITERATOR_SCRIPT = """
import sys
from pcam.data import make_dataset

# An iterator still alive when the script ends, mid-epoch, with readers busy in the background.
iterator = iter(make_dataset(sys.argv[1], "train", batch_size=64, shuffle=True, repeat=True,
                             augment=True))
next(iterator)
print("read one batch", flush=True)
"""


def test_a_script_holding_a_live_iterator_exits(synthetic_root: Path, tmp_path: Path) -> None:
    """A script (or notebook kernel) that ends with an iterator mid-epoch exits by itself.

    Without the exit hook in :mod:`pcam.data.stream` the process hangs for ever in the
    iterator's destructor during interpreter shutdown.
    """
    script = tmp_path / "live_iterator.py"
    script.write_text(LIVE_ITERATOR_SCRIPT)
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(synthetic_root)],
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the script read its batch but never exited: an iterator blocks shutdown")
    assert "read one batch" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 0, done.stderr[-2000:]
