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
            colour_augment="none",
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


@pytest.mark.slow
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


def test_stream_options_and_their_keywords_give_the_same_stream(synthetic_root: Path) -> None:
    from pcam.data.reader import StreamOptions

    options = StreamOptions(batch_size=48, shuffle=True, seed=5, augment=True, drop_remainder=True)
    by_options = _collect(make_dataset(synthetic_root, "valid", options, colour_augment="none"))
    by_keywords = _collect(
        make_dataset(
            synthetic_root,
            "valid",
            batch_size=48,
            shuffle=True,
            seed=5,
            augment=True,
            drop_remainder=True,
            colour_augment="none",
        )
    )
    np.testing.assert_array_equal(by_options[0], by_keywords[0])
    np.testing.assert_array_equal(by_options[1], by_keywords[1])
    assert by_options[0].shape[0] == 48 * (512 // 48)  # the remainder dropped
    other_seed = _collect(
        make_dataset(synthetic_root, "valid", StreamOptions(batch_size=48, shuffle=True, seed=6))
    )
    assert not np.array_equal(other_seed[1], by_options[1])


def test_options_and_keywords_together_or_unknown_keywords_are_one_line(
    synthetic_root: Path,
) -> None:
    from pcam.data.reader import StreamOptions

    with pytest.raises(InvalidArgumentError, match="options: expected StreamOptions or its"):
        make_dataset(synthetic_root, "valid", StreamOptions(batch_size=8), shuffle=True)
    with pytest.raises(InvalidArgumentError, match=r"fields of StreamOptions .*'shufle'"):
        make_dataset(synthetic_root, "valid", batch_size=8, shufle=True)
    with pytest.raises(InvalidArgumentError, match="batch_size: expected an integer >= 1"):
        make_dataset(synthetic_root, "valid", shuffle=True)


LIVE_ITERATOR_SCRIPT = """
import sys
from pcam.data import make_dataset

# An iterator still alive when the script ends, mid-epoch, with readers busy in the background.
iterator = iter(make_dataset(sys.argv[1], "train", batch_size=64, shuffle=True, repeat=True,
                             augment=True))
next(iterator)
print("read one batch", flush=True)
"""


@pytest.mark.slow
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


# -- colour jitter: exact values, seeds and positions ---------------------------------------------

UNEVEN_JITTER = ColourJitter(brightness=0.1, contrast=0.2, saturation=0.3, hue=0.05)
"""Four different ranges, so that exchanging two of them changes the result."""


def _reference_colour_map(
    draws: npt.NDArray[np.float64], jitter: ColourJitter
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The documented affine colour map, in NumPy: matrices [B, 3, 3] and offsets [B, 3]."""
    grey_axis = np.ones(3) / np.sqrt(3.0)
    grey = np.outer(grey_axis, grey_axis)
    cross = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / np.sqrt(3.0)
    matrices, offsets = [], []
    for d_brightness, d_contrast, d_saturation, d_hue in draws:
        angle = d_hue * jitter.hue * 2.0 * np.pi
        rotation = np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * grey
        saturation = 1.0 + d_saturation * jitter.saturation
        saturate = saturation * np.eye(3) + (1.0 - saturation) * grey
        matrix = (1.0 + d_contrast * jitter.contrast) * saturate @ rotation
        offset = 127.5 + d_brightness * jitter.brightness * 255.0 - matrix @ np.full(3, 127.5)
        matrices.append(matrix)
        offsets.append(offset)
    return np.array(matrices), np.array(offsets)


def _draws(count: int, seed: tuple[int, int]) -> npt.NDArray[np.float64]:
    """The four uniform draws in [-1, 1) per image that the colour map is built from."""
    tensor = tf.random.stateless_uniform(
        [count, 4], seed=tf.constant(seed, tf.int64), minval=-1.0, maxval=1.0
    )
    return np.asarray(tensor.numpy(), dtype=np.float64)


def test_colour_matrices_equal_the_reference_map() -> None:
    from pcam.data.colour import colour_matrices

    seed = (11, 5)
    matrix, offset = colour_matrices(tf.constant(6), tf.constant(seed, tf.int64), UNEVEN_JITTER)
    assert matrix.shape == (6, 3, 3)
    assert offset.shape == (6, 1, 3)
    expected_matrix, expected_offset = _reference_colour_map(_draws(6, seed), UNEVEN_JITTER)
    np.testing.assert_allclose(matrix.numpy(), expected_matrix, atol=1e-5)
    np.testing.assert_allclose(offset.numpy()[:, 0, :], expected_offset, atol=1e-3)


def test_colour_draws_are_centred_and_fill_their_ranges() -> None:
    from pcam.data.colour import colour_matrices

    only_brightness = ColourJitter(brightness=0.1, contrast=0.0, saturation=0.0, hue=0.0)
    _, offset = colour_matrices(tf.constant(4000), tf.constant([1, 2], tf.int64), only_brightness)
    shift = offset.numpy()[:, 0, 0]  # brightness alone: every channel moves by the same amount
    np.testing.assert_allclose(offset.numpy()[:, 0, 1], shift, atol=1e-3)
    assert shift.min() < -0.9 * 25.5  # uniform in [-25.5, 25.5]
    assert shift.max() > 0.9 * 25.5
    assert abs(shift.mean()) < 1.5


def test_jitter_colours_applies_the_reference_map_to_every_pixel() -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    seed = (2, 9)
    out = jitter_colours(tf.constant(images), tf.constant(seed, tf.int64), UNEVEN_JITTER).numpy()
    assert out.dtype == np.uint8
    assert out.shape == images.shape
    matrices, offsets = _reference_colour_map(_draws(5, seed), UNEVEN_JITTER)
    moved = np.einsum("bij,bhwj->bhwi", matrices, images.astype(np.float64))
    expected = np.clip(np.floor(moved + offsets[:, None, None, :] + 0.5), 0, 255)
    assert np.abs(out.astype(np.int64) - expected).max() <= 1
    assert np.mean(out == expected) > 0.99
    # black and white patches under a strong brightness change: both clips are reached
    extremes = np.zeros((8, 4, 4, 3), np.uint8)
    extremes[:, :, 2:] = 255
    bright = ColourJitter(brightness=0.5, contrast=0.0, saturation=0.0, hue=0.0)
    clipped = jitter_colours(tf.constant(extremes), tf.constant([0, 1], tf.int64), bright).numpy()
    shifts = _draws(8, (0, 1))[:, 0] * 0.5 * 255.0
    expected_clipped = np.clip(np.floor(extremes + shifts[:, None, None, None] + 0.5), 0, 255)
    np.testing.assert_array_equal(clipped, expected_clipped)
    assert clipped.min() == 0
    assert clipped.max() == 255


def test_jitter_uses_the_default_ranges_when_none_are_given() -> None:
    images = tf.constant(np.random.default_rng(4).integers(0, 256, (3, 6, 6, 3), dtype=np.uint8))
    seed = tf.constant([8, 1], tf.int64)
    np.testing.assert_array_equal(
        jitter_colours(images, seed).numpy(), jitter_colours(images, seed, ColourJitter()).numpy()
    )
    assert ColourJitter() == ColourJitter(brightness=0.08, contrast=0.12, saturation=0.12, hue=0.04)


def test_colour_jitter_depends_on_the_seed_and_differs_per_image() -> None:
    image = np.random.default_rng(5).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    batch = tf.constant(np.repeat(image, 4, axis=0))  # four copies of one image

    def jitter(seed: tuple[int, int]) -> npt.NDArray[np.uint8]:
        return np.asarray(jitter_colours(batch, tf.constant(seed, tf.int64)).numpy())

    first = jitter((3, 0))
    np.testing.assert_array_equal(first, jitter((3, 0)))  # the same seed repeats exactly
    assert len({copy.tobytes() for copy in first}) == 4  # each image its own draw
    for other in ((3, 1), (4, 0)):  # another position, another seed: other draws
        assert not np.array_equal(first, jitter(other))


def _batches(root: Path, seed: int, jitter: ColourJitter | None) -> list[npt.NDArray[np.uint8]]:
    dataset = make_dataset(
        root,
        "valid",
        batch_size=128,
        shuffle=True,
        seed=seed,
        augment=True,
        colour_augment="rgb",
        colour_jitter=jitter,
    )
    return [images for images, _ in dataset.as_numpy_iterator()]


@pytest.mark.slow
def test_stream_colour_jitter_is_drawn_from_the_seed_and_the_batch_position(
    synthetic_root: Path,
) -> None:
    """Batch ``k`` of a stream seeded ``s`` is jittered with the stateless seed ``[s, k]``.

    So the draws differ across batches and across seeds; a jitter that ignored its seed or its
    position (one draw for every batch) fails here.
    """
    # the pipeline runs the jitter XLA-compiled, whose stateless random draws differ from eager
    # TensorFlow's for the same seed: the reference is compiled alike
    compiled = tf.function(jitter_colours, jit_compile=True)
    shifts: dict[int, list[float]] = {}
    for seed in (3, 4):
        plain = _batches(synthetic_root, seed, NO_JITTER)  # the same D4 codes, no colour
        jittered = _batches(synthetic_root, seed, None)
        assert len(plain) == len(jittered) == 4
        shifts[seed] = []
        for position, (before, after) in enumerate(zip(plain, jittered, strict=True)):
            expected = compiled(
                tf.constant(before), tf.constant([seed, position], tf.int64)
            ).numpy()
            difference = np.abs(after.astype(np.int64) - expected)
            assert difference.max() <= 1, (seed, position)  # XLA may round a half differently
            assert np.mean(difference == 0) > 0.99, (seed, position)
            shifts[seed].append(float(np.mean(after.astype(np.int64) - before)))
        assert len(set(shifts[seed])) == 4  # every batch its own draws
    assert shifts[3] != shifts[4]


def test_seeds_give_different_streams_and_the_same_seed_the_same_stream(
    synthetic_root: Path,
) -> None:
    def stream(seed: int, epochs: int = 1) -> list[npt.NDArray[np.uint8]]:
        dataset = make_dataset(
            synthetic_root, "valid", batch_size=128, shuffle=True, seed=seed, augment=True
        )
        return [np.concatenate([b for b, _ in dataset.as_numpy_iterator()]) for _ in range(epochs)]

    first_epoch, second_epoch = stream(5, epochs=2)
    (again,) = stream(5)
    (other,) = stream(6)
    np.testing.assert_array_equal(first_epoch, again)
    assert not np.array_equal(first_epoch, other)
    assert not np.array_equal(first_epoch, second_epoch)
    # orders differ too, not just the pixels: compare the order of the underlying patches
    order_of = {
        seed: make_dataset(synthetic_root, "valid", batch_size=128, shuffle=True, seed=seed)
        for seed in (5, 6)
    }
    labels = {
        seed: np.concatenate([y for _, y in d.as_numpy_iterator()]) for seed, d in order_of.items()
    }
    images = {seed: _collect(d)[0] for seed, d in order_of.items()}
    assert not np.array_equal(images[5], images[6])
    assert labels[5].size == labels[6].size == 512


@pytest.mark.slow
def test_unshuffled_augmented_epochs_differ_and_repeat_with_the_seed(synthetic_root: Path) -> None:
    def epochs(seed: int) -> list[npt.NDArray[np.uint8]]:
        dataset = make_dataset(
            synthetic_root, "valid", batch_size=256, shuffle=False, seed=seed, augment=True
        )
        return [_collect(dataset)[0] for _ in range(2)]

    first, second = epochs(1)
    again_first, again_second = epochs(1)
    np.testing.assert_array_equal(first, again_first)
    np.testing.assert_array_equal(second, again_second)
    assert not np.array_equal(first, second)  # new D4 codes and colour draws each epoch
    assert not np.array_equal(first, epochs(2)[0])


def test_a_few_bright_pixels_stay_white() -> None:
    # float to uint8 casts out of range give 0 on some paths (small tensors): the clip must be 255
    white = tf.constant(np.full((1, 1, 1, 3), 255, np.uint8))
    brighter = ColourJitter(brightness=0.5, contrast=0.0, saturation=0.0, hue=0.0)
    seed = (9, 1)
    assert _draws(1, seed)[0, 0] > 0.1  # the image gets brighter by more than 12 grey levels
    out = jitter_colours(white, tf.constant(seed, tf.int64), brighter).numpy()
    np.testing.assert_array_equal(out, np.full((1, 1, 1, 3), 255, np.uint8))


def test_colour_unpack_pixels_keeps_the_three_low_bytes() -> None:
    from pcam.data.colour import unpack_pixels

    packed = tf.constant(np.array([[[0xAA030201, 0x00FFFEFD]]], dtype=np.uint32))
    unpacked = unpack_pixels(packed).numpy()
    assert unpacked.dtype == np.uint8
    np.testing.assert_array_equal(unpacked, [[[[1, 2, 3], [0xFD, 0xFE, 0xFF]]]])
