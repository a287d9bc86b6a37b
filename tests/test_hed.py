"""HED stain jitter (:mod:`pcam.stain.hed`) and the colour stage (:mod:`pcam.stain.augment`)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

tf = pytest.importorskip("tensorflow")

from pcam.config import COLOUR_AUGMENTS  # noqa: E402
from pcam.data.colour import jitter_colours  # noqa: E402
from pcam.stain import hed  # noqa: E402
from pcam.stain.augment import augment_colours  # noqa: E402

BATCHES = arrays(
    np.uint8,
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.just(3)),
)


def _tissue(seed: int = 0, count: int = 8) -> npt.NDArray[np.uint8]:
    """Pink and purple tissue-like patches: no pixel saturated, none white."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 120, 180], np.float64)
    noise = rng.normal(0.0, 25.0, (count, 16, 16, 3))
    return np.clip(base + noise, 20, 240).astype(np.uint8)


def _reference_shift(
    images: npt.NDArray[np.uint8], scales: npt.NDArray[np.float64], shifts: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """The stain change written out step by step in float64: unmix, scale, shift, mix back."""
    density = np.log(256.0) - np.log(images.astype(np.float64) + 1.0)
    stains = density @ hed.HED_FROM_RGB
    weight = np.minimum(density.sum(-1, keepdims=True) / hed.FULL_SHIFT_OD, 1.0)
    moved = stains * scales[:, None, None, :] + weight * shifts[:, None, None, :]
    mixed: npt.NDArray[np.float64] = moved @ hed.RGB_FROM_HED
    return 256.0 * np.exp(-mixed) - 1.0


def test_the_stain_matrix_is_ruifrok_and_johnston_normalised_and_its_inverse() -> None:
    rows = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
    np.testing.assert_allclose(hed.RGB_FROM_HED, rows / np.linalg.norm(rows, axis=1)[:, None])
    np.testing.assert_allclose(hed.RGB_FROM_HED @ hed.HED_FROM_RGB, np.eye(3), atol=1e-12)
    assert hed.STAINS == ("haematoxylin", "eosin", "dab")


def test_the_presets_are_tellez_light_and_strong() -> None:
    assert {
        "hed-light": hed.HedJitter(scale=0.05, shift=0.05),
        "hed-strong": hed.HedJitter(scale=0.2, shift=0.2),
    } == hed.HED_PRESETS


def test_the_optical_density_round_trip_is_exact_for_every_uint8_value() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    density = hed.optical_density(values).numpy()
    assert density[0, 15, 15, 0] == 0.0  # 255 is no absorption
    np.testing.assert_allclose(density[0, 0, 0], np.log(256.0), rtol=1e-6)
    np.testing.assert_array_equal(hed.intensities(density).numpy(), values)


@settings(max_examples=30, deadline=None)
@given(images=BATCHES)
def test_zero_jitter_is_the_identity(images: npt.NDArray[np.uint8]) -> None:
    unchanged = hed.shift_stains(images, tf.ones([3]), tf.zeros([3])).numpy()
    np.testing.assert_array_equal(unchanged, images)
    seed = tf.constant([4, 2], tf.int64)
    still = hed.jitter_stains(images, seed, hed.HedJitter(scale=0.0, shift=0.0)).numpy()
    np.testing.assert_array_equal(still, images)


@settings(max_examples=30, deadline=None)
@given(
    count=st.integers(1, 4),
    scale=st.floats(0.0, 0.5),
    shift=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**31 - 1),
)
def test_white_background_stays_white_under_any_jitter(
    count: int, scale: float, shift: float, seed: int
) -> None:
    white = np.full((count, 4, 4, 3), 255, np.uint8)
    jitter = hed.HedJitter(scale=scale, shift=shift)
    out = hed.jitter_stains(white, tf.constant([seed, 1], tf.int64), jitter).numpy()
    np.testing.assert_array_equal(out, white)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_the_shift_equals_the_stain_change_written_out_in_float64(seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    images[0, :2] = 255  # glass
    images[1, :2] = 250  # near-white: a part of the shift
    scales = rng.uniform(0.6, 1.4, (3, 3))
    shifts = rng.uniform(-0.3, 0.3, (3, 3))
    out = hed.shift_stains(images, scales, shifts).numpy().astype(np.float64)
    expected = np.clip(_reference_shift(images, scales, shifts), 0, 255)
    assert np.abs(out - expected).max() <= 0.5 + 1e-3  # rounded to the nearest level


def test_scaling_haematoxylin_changes_haematoxylin_only() -> None:
    images = _tissue()
    before = hed.stain_concentrations(images).numpy()
    out = hed.shift_stains(images, tf.constant([1.3, 1.0, 1.0]), tf.zeros([3]))
    after = hed.stain_concentrations(out).numpy()
    ratio = np.median(after[..., 0] / before[..., 0])
    assert ratio == pytest.approx(1.3, abs=0.02)
    assert np.abs(after[..., 1] - before[..., 1]).mean() < 0.01
    more_eosin = hed.shift_stains(images, tf.ones([3]), tf.constant([0.0, 0.1, 0.0]))
    eosin_after = hed.stain_concentrations(more_eosin).numpy()
    assert np.median(eosin_after[..., 1] - before[..., 1]) == pytest.approx(0.1, abs=0.01)
    assert np.abs(eosin_after[..., 0] - before[..., 0]).mean() < 0.01


def test_per_patch_factors_cover_their_ranges_and_nothing_more() -> None:
    jitter = hed.HedJitter(scale=0.2, shift=0.1)
    scales, shifts = hed.stain_factors(4096, tf.constant([1, 2], tf.int64), jitter)
    scales, shifts = scales.numpy(), shifts.numpy()
    assert scales.shape == shifts.shape == (4096, 3)
    assert scales.min() >= 0.8
    assert scales.max() <= 1.2
    assert scales.min() < 0.81
    assert scales.max() > 1.19
    assert np.abs(shifts).max() <= 0.1
    assert np.abs(shifts).max() > 0.099
    assert abs(float(np.corrcoef(scales[:, 0], shifts[:, 0])[0, 1])) < 0.1  # independent draws


def test_the_same_seed_gives_the_same_batch_and_each_patch_its_own_draw() -> None:
    images = np.repeat(_tissue(count=1), 6, axis=0)
    jitter = hed.HED_PRESETS["hed-strong"]

    def draw(seed: tuple[int, int]) -> npt.NDArray[np.uint8]:
        return np.asarray(hed.jitter_stains(images, tf.constant(seed, tf.int64), jitter).numpy())

    first = draw((3, 0))
    np.testing.assert_array_equal(first, draw((3, 0)))
    assert len({patch.tobytes() for patch in first}) == 6
    for other in ((3, 1), (4, 0)):
        assert not np.array_equal(first, draw(other))


def test_strong_moves_colours_more_than_light() -> None:
    images = _tissue(count=64)
    seed = tf.constant([0, 5], tf.int64)
    moved = {
        name: np.abs(hed.jitter_stains(images, seed, jitter).numpy() - images.astype(int)).mean()
        for name, jitter in hed.HED_PRESETS.items()
    }
    assert 0.5 < moved["hed-light"] < moved["hed-strong"] / 2.5


def test_the_colour_stage_dispatches_to_the_named_augmentations() -> None:
    images = _tissue(count=4)
    seed = tf.constant([7, 3], tf.int64)
    stain_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    strong = hed.jitter_stains(images, stain_seed, hed.HED_PRESETS["hed-strong"]).numpy()
    light = hed.jitter_stains(images, stain_seed, hed.HED_PRESETS["hed-light"]).numpy()
    expected = {
        "none": images,
        "rgb": jitter_colours(images, seed).numpy(),
        "hed-light": light,
        "hed-strong": strong,
        "rgb+hed-light": jitter_colours(light, seed).numpy(),
        "rgb+hed-strong": jitter_colours(strong, seed).numpy(),
    }
    assert set(expected) == set(COLOUR_AUGMENTS)
    for kind, want in expected.items():
        np.testing.assert_array_equal(augment_colours(images, seed, kind).numpy(), want)
    assert not np.array_equal(expected["rgb+hed-light"], expected["rgb"])


def test_a_density_below_zero_saturates_at_white() -> None:
    """A stain shift can take a pale pixel's density below 0: it must clip to 255, not wrap."""
    out = hed.intensities(tf.constant([-1.0, -0.01, 0.0, 0.001, 20.0])).numpy()
    np.testing.assert_array_equal(out, [255, 255, 255, 255, 0])
    pale = np.full((1, 2, 2, 3), 240, np.uint8)
    lighter = hed.shift_stains(pale, tf.ones([3]), tf.constant([-0.5, -0.5, -0.5])).numpy()
    np.testing.assert_array_equal(lighter, np.full_like(pale, 255))


def test_the_factors_are_the_seeded_uniform_draws() -> None:
    """Scales are ``1 + u * scale`` and shifts ``v * shift`` for the seed's six uniform draws."""
    seed = tf.constant([5, 8], tf.int64)
    jitter = hed.HedJitter(scale=0.3, shift=0.1)
    scales, shifts = hed.stain_factors(16, seed, jitter)
    draws = tf.random.stateless_uniform([16, 6], seed=seed, minval=-1.0, maxval=1.0).numpy()
    np.testing.assert_allclose(scales.numpy(), 1.0 + 0.3 * draws[:, :3], rtol=1e-6)
    np.testing.assert_allclose(shifts.numpy(), 0.1 * draws[:, 3:], rtol=1e-6)


def test_the_colour_stage_passes_the_rgb_ranges_on() -> None:
    from pcam.data.colour import ColourJitter

    images = _tissue(count=4)
    seed = tf.constant([2, 9], tf.int64)
    still = ColourJitter(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    np.testing.assert_array_equal(augment_colours(images, seed, "rgb", still).numpy(), images)
    bright = ColourJitter(brightness=0.3, contrast=0.0, saturation=0.0, hue=0.0)
    expected = jitter_colours(images, seed, bright).numpy()
    np.testing.assert_array_equal(augment_colours(images, seed, "rgb", bright).numpy(), expected)
    assert not np.array_equal(expected, jitter_colours(images, seed).numpy())
