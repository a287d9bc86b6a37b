"""CAM quality metrics on hand-built maps, masks and models with known answers."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pcam.errors import InvalidArgumentError
from pcam.explain.cam_quality import (
    _blur_matrix,
    baseline_images,
    cam_report,
    deletion_insertion,
    energy_inside,
    pointing_game,
    random_maps,
)

SIDE = 32
SQUARE = (slice(8, 16), slice(8, 16))  # 64 of 1024 pixels: exactly 1/16 of the patch


def _mask(*regions: tuple[slice, slice], count: int = 1) -> npt.NDArray[np.bool_]:
    mask = np.zeros((count, SIDE, SIDE), dtype=bool)
    for region in regions:
        mask[(slice(None), *region)] = True
    return mask


def _peak(row: int, col: int) -> npt.NDArray[np.float32]:
    maps = np.zeros((1, SIDE, SIDE), dtype=np.float32)
    maps[0, row, col] = 1.0
    maps[0, row - 1 : row + 2, col - 1 : col + 2] += 0.5  # a bump, maximum at its centre
    maps /= maps.max()
    return maps


# -- pointing game and energy ----------------------------------------------------------------------


def test_a_map_peaked_inside_the_mask_hits_and_outside_misses() -> None:
    mask = _mask(SQUARE)
    assert pointing_game(_peak(12, 12), mask).tolist() == [1.0]
    assert pointing_game(_peak(25, 25), mask).tolist() == [0.0]
    both = np.concatenate([_peak(12, 12), _peak(25, 25)])
    assert pointing_game(both, np.concatenate([mask, mask])).tolist() == [1.0, 0.0]


def test_tied_maxima_score_their_share_inside_the_mask() -> None:
    mask = _mask(SQUARE)
    maps = np.zeros((1, SIDE, SIDE))
    maps[0, 10, 10] = maps[0, 25, 25] = 1.0  # one maximum inside, one outside
    assert pointing_game(maps, mask).tolist() == [0.5]
    # a flat (or all-zero) map ties everywhere: it scores the mask's area, which is chance
    assert pointing_game(np.ones((1, SIDE, SIDE)), mask).tolist() == [1 / 16]
    assert pointing_game(np.zeros((1, SIDE, SIDE)), mask).tolist() == [1 / 16]


def test_patches_with_an_empty_mask_have_no_score() -> None:
    masks = np.concatenate([_mask(SQUARE), _mask()])
    maps = np.concatenate([_peak(12, 12), _peak(12, 12)])
    hits = pointing_game(maps, masks)
    energy = energy_inside(maps, masks)
    assert hits[0] == 1.0
    assert math.isnan(hits[1])
    assert math.isnan(energy[1])


def test_energy_of_a_uniform_map_is_the_mask_area() -> None:
    masks = np.concatenate([_mask(SQUARE), _mask((slice(0, 16), slice(0, SIDE)))])
    uniform = np.full((2, SIDE, SIDE), 0.3)
    np.testing.assert_allclose(energy_inside(uniform, masks), [1 / 16, 1 / 2])
    np.testing.assert_allclose(energy_inside(np.zeros((2, SIDE, SIDE)), masks), [1 / 16, 1 / 2])
    np.testing.assert_allclose(energy_inside(masks.astype(float), masks), [1.0, 1.0])
    half = masks.astype(float) + 0.5 * ~masks  # mass 64 inside, 0.5 * 960 outside
    assert energy_inside(half[:1], masks[:1])[0] == pytest.approx(64 / (64 + 480))


def test_masks_in_the_pcam_file_shape_are_accepted() -> None:
    mask = _mask(SQUARE)
    assert pointing_game(_peak(12, 12), mask[..., None]).tolist() == [1.0]


@pytest.mark.parametrize(
    ("maps", "masks", "named"),
    [
        pytest.param(np.ones((1, 3, 3)), _mask(SQUARE), "upsample", id="map-not-at-patch-size"),
        pytest.param(np.ones((1, SIDE, SIDE)), _mask(SQUARE).astype(np.uint8), "boolean", id="int"),
        pytest.param(-np.ones((1, SIDE, SIDE)), _mask(SQUARE), "non-negative", id="negative"),
        pytest.param(np.full((1, SIDE, SIDE), np.nan), _mask(SQUARE), "finite", id="nan"),
        pytest.param(np.ones((SIDE, SIDE)), _mask(SQUARE), "[B >= 1, H, W]", id="no-batch"),
        pytest.param(np.ones((2, SIDE, SIDE)), _mask(SQUARE), "one mask per map", id="count"),
    ],
)
def test_bad_maps_or_masks_raise_one_line(
    maps: npt.NDArray[np.float64], masks: npt.NDArray[np.bool_], named: str
) -> None:
    for metric in (pointing_game, energy_inside):
        with pytest.raises(InvalidArgumentError, match=r"expected") as error:
            metric(maps, masks)
        assert named in str(error.value)
        assert "\n" not in str(error.value)


# -- deletion and insertion ------------------------------------------------------------------------


def _square_images(count: int) -> npt.NDArray[np.uint8]:
    """Dark patches with a bright 8x8 square: the only thing the model below looks at."""
    images = np.full((count, SIDE, SIDE, 3), 20, dtype=np.uint8)
    images[(slice(None), *SQUARE)] = 250
    return images


class _SquareModel:
    """Probability: the share of the square's pixels that are still bright; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.patches = 0

    def __call__(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
        self.calls += 1
        self.patches += images.shape[0]
        assert images.dtype == np.uint8
        result: npt.NDArray[np.float64] = (images[(slice(None), *SQUARE, 0)] > 200).mean(
            axis=(1, 2)
        )
        return result[:, None]  # like Keras: [N, 1]


def test_deletion_falls_faster_and_insertion_rises_faster_with_the_true_map() -> None:
    images = _square_images(6)
    true_maps = _mask(SQUARE, count=6).astype(np.float32)
    noise = random_maps(true_maps.shape, seed=3)
    model = _SquareModel()
    good = deletion_insertion(model, images, true_maps, steps=16)
    bad = deletion_insertion(model, images, noise, steps=16)
    np.testing.assert_allclose(good.fractions, np.linspace(0, 1, 17))
    # the square is 1/16 of the patch: removing the top 1/16 of the true map removes it all
    np.testing.assert_allclose(good.deletion[:, :2], [[1.0, 0.0]] * 6)
    np.testing.assert_allclose(good.insertion[:, :2], [[0.0, 1.0]] * 6)
    assert good.deletion_auc.max() < 0.05
    assert good.insertion_auc.min() > 0.95
    # random order: the square goes pixel by pixel, a roughly linear curve
    assert 0.35 < bad.deletion_auc.mean() < 0.65
    assert 0.35 < bad.insertion_auc.mean() < 0.65
    for curves in (good, bad):  # the ends: the original patch and the removed one
        np.testing.assert_allclose(curves.deletion[:, 0], 1.0)
        np.testing.assert_allclose(curves.deletion[:, -1], 0.0)
        np.testing.assert_allclose(curves.insertion[:, 0], 0.0)
        np.testing.assert_allclose(curves.insertion[:, -1], 1.0)


def test_every_step_is_predicted_in_a_few_batched_calls() -> None:
    model = _SquareModel()
    images = _square_images(16)
    deletion_insertion(model, images, random_maps((16, SIDE, SIDE), 0), steps=16, batch_size=512)
    assert model.patches == 16 * 2 * 17
    assert model.calls == 2  # 15 patches (510 predictions) per call


def test_class_zero_follows_one_minus_the_probability() -> None:
    images = _square_images(2)
    maps = _mask(SQUARE, count=2).astype(np.float32)
    tumour = deletion_insertion(_SquareModel(), images, maps, steps=4)
    normal = deletion_insertion(_SquareModel(), images, maps, steps=4, class_index=0)
    np.testing.assert_allclose(normal.deletion, 1.0 - tumour.deletion)
    np.testing.assert_allclose(normal.insertion_auc, 1.0 - tumour.insertion_auc)


def test_ties_are_broken_in_a_seeded_order() -> None:
    images = _square_images(2)
    flat = np.ones((2, SIDE, SIDE))  # every pixel tied: the seed decides the order
    first = deletion_insertion(_SquareModel(), images, flat, steps=8, seed=1)
    again = deletion_insertion(_SquareModel(), images, flat, steps=8, seed=1)
    other = deletion_insertion(_SquareModel(), images, flat, steps=8, seed=2)
    np.testing.assert_array_equal(first.deletion, again.deletion)
    assert not np.array_equal(first.deletion, other.deletion)


def test_removed_pixels_are_blurred_or_the_mean_colour() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 96, 96, 3)).astype(np.uint8)
    blurred = baseline_images(images, "blur")
    assert blurred.dtype == np.uint8
    assert blurred.shape == images.shape
    colour = images.mean(axis=(1, 2))
    np.testing.assert_allclose(blurred.mean(axis=(1, 2)), colour, atol=1.0)  # colour kept
    assert blurred.std() < images.std() / 10  # detail gone
    mean = baseline_images(images, "mean")
    assert (mean == mean[:, :1, :1]).all()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        pytest.param({"steps": 0}, "steps", id="steps"),
        pytest.param({"baseline": "zeros"}, "baseline", id="baseline"),
        pytest.param({"class_index": 2}, "class_index", id="class"),
        pytest.param({"images": np.zeros((1, SIDE, SIDE, 3), np.float32)}, "uint8", id="float"),
        pytest.param({"maps": np.ones((1, 3, 3))}, "upsample", id="coarse-map"),
    ],
)
def test_bad_deletion_arguments_raise_one_line(kwargs: dict[str, object], named: str) -> None:
    arguments: dict[str, object] = {
        "images": _square_images(1),
        "maps": np.ones((1, SIDE, SIDE)),
        **kwargs,
    }
    images, maps = arguments.pop("images"), arguments.pop("maps")
    with pytest.raises(InvalidArgumentError) as error:
        deletion_insertion(_SquareModel(), images, maps, **arguments)  # type: ignore[arg-type]
    assert named in str(error.value)
    assert "\n" not in str(error.value)


# -- the random baseline and the report ------------------------------------------------------------


def test_random_maps_are_deterministic_by_seed() -> None:
    first = random_maps((4, SIDE, SIDE), seed=7)
    assert first.dtype == np.float32
    assert first.shape == (4, SIDE, SIDE)
    np.testing.assert_array_equal(first, random_maps((4, SIDE, SIDE), seed=7))
    assert not np.array_equal(first, random_maps((4, SIDE, SIDE), seed=8))
    assert first.min() >= 0.0
    np.testing.assert_allclose(first.max(axis=(1, 2)), 1.0)


def test_random_maps_at_a_coarse_grid_are_smooth() -> None:
    pytest.importorskip("tensorflow")
    coarse = random_maps((3, 96, 96), seed=0, grid=(6, 6))
    np.testing.assert_array_equal(coarse, random_maps((3, 96, 96), seed=0, grid=(6, 6)))
    np.testing.assert_allclose(coarse.max(axis=(1, 2)), 1.0)
    step = np.abs(np.diff(coarse, axis=2)).max()
    assert step < 0.1  # neighbouring pixels are close: bilinear from 16 px cells


def test_random_maps_point_at_chance() -> None:
    masks = _mask((slice(0, 8), slice(0, SIDE)), count=4000)  # a quarter of the patch
    hits = pointing_game(random_maps(masks.shape, seed=0), masks)
    assert hits.mean() == pytest.approx(0.25, abs=0.03)
    assert energy_inside(random_maps(masks.shape, seed=1), masks).mean() == pytest.approx(
        0.25, abs=0.01
    )


def test_cam_report_compares_the_maps_with_random_maps_as_json() -> None:
    images = _square_images(5)
    masks = _mask(SQUARE, count=5)
    masks[4] = False  # one patch without tumour
    maps = _mask(SQUARE, count=5).astype(np.float32)
    report = cam_report(_SquareModel(), images, maps, masks, steps=8, seed=0)
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert (report["patches"], report["with_mask"], report["without_mask"]) == (5, 4, 1)
    assert report["mask_area"] == pytest.approx(1 / 16)
    assert report["cam"]["pointing_game"] == 1.0
    assert report["cam"]["energy_inside"] == 1.0
    assert report["random"]["pointing_game"] < 0.5
    assert report["cam"]["deletion_auc"] < report["random"]["deletion_auc"]
    assert report["cam"]["insertion_auc"] > report["random"]["insertion_auc"]
    assert len(report["cam"]["deletion_curve"]) == len(report["fractions"]) == 9
    assert report["per_patch"]["cam"]["pointing_game"] == [1.0, 1.0, 1.0, 1.0, None]
    without = cam_report(_SquareModel(), images, maps, steps=8)
    assert "pointing_game" not in without["cam"]
    assert "with_mask" not in without


# -- asymmetric and edge cases, exact messages, the report's schema --------------------------------


def test_each_map_is_judged_by_its_own_maximum() -> None:
    """Maps of very different scale in one batch: each one's own peak is what points."""
    mask = _mask(SQUARE, count=2)
    maps = np.zeros((2, SIDE, SIDE))
    maps[0, 12, 12], maps[0, 25, 25] = 0.4, 0.1  # weak map, peak inside
    maps[1, 25, 25], maps[1, 12, 12] = 9.0, 3.0  # strong map, peak outside
    assert pointing_game(maps, mask).tolist() == [1.0, 0.0]
    assert energy_inside(maps, mask).tolist() == pytest.approx([0.8, 0.25])


def test_the_tie_tolerance_is_one_millionth_inclusive() -> None:
    mask = _mask(SQUARE)
    maps = np.zeros((3, SIDE, SIDE))
    maps[:, 25, 25] = 1.0  # outside
    maps[0, 12, 12] = 1.0 - 1e-6  # exactly at the tolerance: tied
    maps[1, 12, 12] = 1.0 - 1e-7  # inside it: tied
    maps[2, 12, 12] = 1.0 - 1e-5  # beyond it: not tied
    assert pointing_game(maps, np.concatenate([mask] * 3)).tolist() == [0.5, 0.5, 0.0]


def test_energy_of_a_light_map_is_a_fraction_of_its_own_mass() -> None:
    """A map whose whole mass is below 1 is still divided by that mass."""
    masks = _mask(SQUARE, count=2)
    maps = np.zeros((2, SIDE, SIDE))
    maps[0, 12, 12] = 0.5  # all its (small) mass inside
    maps[1, 12, 12], maps[1, 25, 25] = 0.1, 0.3  # a quarter inside
    assert energy_inside(maps, masks).tolist() == pytest.approx([1.0, 0.25])


def test_an_all_zero_map_scores_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        energy = energy_inside(np.zeros((1, SIDE, SIDE)), _mask(SQUARE))
    assert energy.tolist() == [1 / 16]


def test_a_mask_one_pixel_wide_is_not_taken_for_a_channel_axis() -> None:
    maps = np.zeros((2, 3, 1))
    maps[:, 1, 0] = 1.0
    masks = np.zeros((2, 3, 1), dtype=bool)
    masks[0, 1, 0] = True
    assert pointing_game(maps, masks).tolist()[0] == 1.0
    assert math.isnan(pointing_game(maps, masks).tolist()[1])


@pytest.mark.parametrize(
    ("maps", "masks", "message"),
    [
        pytest.param(
            np.ones((SIDE, SIDE)),
            _mask(SQUARE),
            "maps: expected numeric maps [B >= 1, H, W], found 'float64 array of shape (32, 32)'",
            id="no-batch",
        ),
        pytest.param(
            np.ones((0, SIDE, SIDE)),
            _mask(SQUARE),
            "maps: expected numeric maps [B >= 1, H, W], "
            "found 'float64 array of shape (0, 32, 32)'",
            id="empty",
        ),
        pytest.param(
            np.full((1, SIDE, SIDE), "a"),
            _mask(SQUARE),
            "maps: expected numeric maps [B >= 1, H, W], found '<U1 array of shape (1, 32, 32)'",
            id="strings",
        ),
        pytest.param(
            np.array([[[np.nan, np.inf, -1.0, -2.0, -3.0]]]),
            np.ones((1, 1, 5), dtype=bool),
            "maps: expected finite, non-negative map values (such as Grad-CAM's [0, 1]), "
            "found '2 values NaN or infinite and 3 negative'",
            id="nan-and-negative",
        ),
        pytest.param(
            np.ones((1, SIDE, SIDE)),
            _mask(SQUARE, count=2),
            "masks: expected one mask per map, shape (1, 32, 32) (upsample the maps to the patch "
            "size first), found 'shape (2, 32, 32)'",
            id="mask-count",
        ),
        pytest.param(
            np.ones((1, SIDE, SIDE)),
            _mask(SQUARE).astype(np.uint8),
            "masks: expected boolean masks (True: tumour), found dtype('uint8')",
            id="mask-dtype",
        ),
    ],
)
def test_bad_maps_or_masks_messages_in_full(
    maps: npt.NDArray[Any], masks: npt.NDArray[Any], message: str
) -> None:
    for metric in (pointing_game, energy_inside):
        with pytest.raises(InvalidArgumentError) as error:
            metric(maps, masks)
        assert str(error.value) == message


class _CornerModel:
    """Probability: the red value of the top-left pixel, so it sees what removed pixels become."""

    def __call__(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        result: npt.NDArray[np.float32] = (images[:, 0, 0, 0] / 255).astype(np.float32)
        return result


def test_the_mean_baseline_fills_removed_pixels_with_the_mean_colour() -> None:
    images = _square_images(2)
    images[1, ..., 0] = 100  # a second patch of another colour
    flat = np.ones((2, SIDE, SIDE))
    model = _CornerModel()
    for baseline in ("mean", "blur"):
        removed = baseline_images(images, baseline)
        curves = deletion_insertion(model, images, flat, steps=2, baseline=baseline)
        expected = model(removed).astype(np.float64)
        np.testing.assert_array_equal(curves.deletion[:, -1], expected)
        np.testing.assert_array_equal(curves.insertion[:, 0], expected)
        np.testing.assert_array_equal(curves.deletion[:, 0], model(images).astype(np.float64))
    mean = baseline_images(images, "mean")
    assert mean[0, 0, 0, 0] != baseline_images(images, "blur")[0, 0, 0, 0]


def test_class_zero_is_one_minus_the_probability_in_float64() -> None:
    images = _square_images(2)
    maps = _mask(SQUARE, count=2).astype(np.float32)

    def predict(batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return np.full(batch.shape[0], 0.1, dtype=np.float32)

    tumour = deletion_insertion(predict, images, maps, steps=2)
    normal = deletion_insertion(predict, images, maps, steps=2, class_index=0)
    np.testing.assert_array_equal(tumour.deletion, np.float64(np.float32(0.1)))
    np.testing.assert_array_equal(normal.deletion, 1.0 - np.float64(np.float32(0.1)))


def test_deletion_defaults_are_16_steps_and_seed_0() -> None:
    images = _square_images(2)
    flat = np.ones((2, SIDE, SIDE))  # all tied: the seed orders the pixels
    default = deletion_insertion(_SquareModel(), images, flat)
    assert default.fractions.tolist() == np.linspace(0, 1, 17).tolist()
    explicit = deletion_insertion(_SquareModel(), images, flat, steps=16, seed=0)
    np.testing.assert_array_equal(default.deletion, explicit.deletion)
    other = deletion_insertion(_SquareModel(), images, flat, steps=16, seed=1)
    assert not np.array_equal(default.deletion, other.deletion)


def test_one_step_is_allowed() -> None:
    curves = deletion_insertion(
        _SquareModel(), _square_images(1), np.ones((1, SIDE, SIDE)), steps=1
    )
    assert curves.fractions.tolist() == [0.0, 1.0]
    assert curves.deletion.tolist() == [[1.0, 0.0]]
    assert curves.insertion_auc.tolist() == [0.5]


@pytest.mark.parametrize(
    ("count", "batch_size", "calls"),
    [(15, 512, 1), (16, 512, 2), (3, 1, 3), (4, 68, 2)],  # 2 x 17 predictions per patch
)
def test_patches_per_call_fill_the_batch_size(count: int, batch_size: int, calls: int) -> None:
    model = _SquareModel()
    maps = random_maps((count, SIDE, SIDE), 0)
    deletion_insertion(model, _square_images(count), maps, steps=16, batch_size=batch_size)
    assert model.calls == calls
    assert model.patches == count * 2 * 17


def test_the_curves_follow_each_patch_in_a_batch_of_several_calls() -> None:
    """Split over calls, each patch keeps its own curve (no mix-up between chunks)."""
    images = _square_images(5)
    images[[1, 3]] = 20  # no square: probability 0 throughout
    maps = _mask(SQUARE, count=5).astype(np.float32)
    curves = deletion_insertion(_SquareModel(), images, maps, steps=4, batch_size=10)
    assert curves.deletion[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert curves.insertion[:, -1].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"steps": 0}, "steps: expected an integer >= 1, found 0", id="zero-steps"),
        pytest.param(
            {"steps": True}, "steps: expected an integer >= 1, found True", id="bool-steps"
        ),
        pytest.param(
            {"steps": 2.0}, "steps: expected an integer >= 1, found 2.0", id="float-steps"
        ),
        pytest.param(
            {"baseline": "zeros"},
            "baseline: expected one of blur, mean, found 'zeros'",
            id="baseline",
        ),
        pytest.param(
            {"class_index": 2},
            "class_index: expected 0 (normal) or 1 (tumour), found 2",
            id="class",
        ),
        pytest.param(
            {"maps": np.ones((1, 3, 3))},
            "maps: expected one map per image at the patch size, shape (1, 32, 32) (upsample "
            "them with pcam.explain.gradcam.upsample), found 'shape (1, 3, 3)'",
            id="coarse-map",
        ),
        pytest.param(
            {"maps": np.ones((3, 3))},
            "maps: expected numeric maps [B >= 1, H, W], found 'float64 array of shape (3, 3)'",
            id="map-without-batch",
        ),
        pytest.param(
            {"images": np.zeros((1, SIDE, SIDE, 3), np.float32)},
            "images: expected uint8 patches (raw 0-255 pixels), found dtype('float32')",
            id="float-images",
        ),
        pytest.param(
            {"images": np.zeros((SIDE, SIDE, 3), np.uint8)},
            "images: expected RGB patches [B >= 1, H, W, 3], found '(32, 32, 3)'",
            id="no-batch",
        ),
        pytest.param(
            {"images": np.zeros((1, SIDE, SIDE, 4), np.uint8)},
            "images: expected RGB patches [B >= 1, H, W, 3], found '(1, 32, 32, 4)'",
            id="rgba",
        ),
        pytest.param(
            {"images": np.zeros((0, SIDE, SIDE, 3), np.uint8)},
            "images: expected RGB patches [B >= 1, H, W, 3], found '(0, 32, 32, 3)'",
            id="empty",
        ),
    ],
)
def test_bad_deletion_arguments_messages_in_full(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "images": _square_images(1),
        "maps": np.ones((1, SIDE, SIDE)),
        **kwargs,
    }
    images, maps = arguments.pop("images"), arguments.pop("maps")
    with pytest.raises(InvalidArgumentError) as error:
        deletion_insertion(_SquareModel(), images, maps, **arguments)  # type: ignore[arg-type]
    assert str(error.value) == message


def test_a_predict_fn_returning_the_wrong_count_is_one_line() -> None:
    def predict(batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
        return np.zeros(batch.shape[0] - 1)

    with pytest.raises(InvalidArgumentError) as error:
        deletion_insertion(predict, _square_images(2), np.ones((2, SIDE, SIDE)), steps=3)
    assert str(error.value) == "predict_fn: expected 16 probabilities, found '15'"


def _reference_blur(image: npt.NDArray[np.float64], sigma: float) -> npt.NDArray[np.float64]:
    """Separable Gaussian (radius 3 sigma) on a symmetrically extended image, one channel."""
    radius = math.ceil(3 * sigma)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(image, radius, mode="symmetric")
    rows = np.stack([np.convolve(column, kernel, mode="valid") for column in padded.T]).T
    return np.stack([np.convolve(row, kernel, mode="valid") for row in rows])


def test_the_blur_matrix_is_a_mirrored_gaussian() -> None:
    for size in (5, 32, 96):
        matrix = _blur_matrix(size, 8.0)
        assert matrix.dtype == np.float32
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)
        expected = np.stack(
            [_reference_blur(np.outer(np.eye(size)[i], 1), 8.0)[:, 0] for i in range(size)]
        )  # blur of each unit impulse: the matrix's columns
        np.testing.assert_allclose(matrix, expected.T, atol=1e-7)


def test_blurred_patches_match_an_independent_gaussian_on_a_non_square_patch() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 24, 40, 3)).astype(np.uint8)
    blurred = baseline_images(images)  # the default is the blur
    np.testing.assert_array_equal(blurred, baseline_images(images, "blur"))
    for index in range(2):
        for channel in range(3):
            expected = _reference_blur(images[index, ..., channel].astype(np.float64), 8.0)
            difference = np.abs(blurred[index, ..., channel] - np.rint(expected))
            assert difference.max() <= 1  # float32 inside: a rare .5 may round the other way


def test_black_and_white_stay_black_and_white() -> None:
    images = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    images[1] = 255
    for baseline in ("blur", "mean"):
        removed = baseline_images(images, baseline)
        assert removed.dtype == np.uint8
        np.testing.assert_array_equal(removed, images)


def test_the_mean_colour_is_each_patch_s_own() -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    images[1] //= 4  # a darker patch
    mean = baseline_images(images, "mean")
    assert mean.dtype == np.uint8
    expected = np.rint(images.reshape(3, -1, 3).mean(axis=1)).astype(np.uint8)
    np.testing.assert_array_equal(mean, np.broadcast_to(expected[:, None, None], images.shape))


def test_random_maps_are_uniform_float32_draws_scaled_to_their_maximum() -> None:
    maps = random_maps((2, 3, 5), seed=11)
    draws = np.random.default_rng(11).random((2, 3, 5), dtype=np.float32)
    np.testing.assert_array_equal(maps, draws / draws.max(axis=(1, 2), keepdims=True))
    assert random_maps((1, 1, 1), seed=0).tolist() == [[[1.0]]]


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 3), "shape: expected (patches, height, width), each >= 1, found (2, 3)"),
        ((2, 0, 3), "shape: expected (patches, height, width), each >= 1, found (2, 0, 3)"),
        ((2, 3, 4, 5), "shape: expected (patches, height, width), each >= 1, found (2, 3, 4, 5)"),
    ],
)
def test_random_maps_refuse_a_bad_shape(shape: tuple[int, int, int], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        random_maps(shape, seed=0)
    assert str(error.value) == message


_METRICS = {"pointing_game", "energy_inside", "deletion_auc", "insertion_auc"}
_SUMMARY = {*_METRICS, "deletion_curve", "insertion_curve"}


def test_the_cam_report_schema_and_its_random_baseline_are_pinned() -> None:
    images = _square_images(3)
    masks = _mask(SQUARE, count=3)
    maps = np.ones((3, SIDE, SIDE))  # all tied: the seed alone orders deletion
    report = cam_report(_SquareModel(), images, maps, masks, steps=4, seed=3)
    assert set(report) == {
        "patches",
        "class_index",
        "steps",
        "removed_pixels",
        "random_grid",
        "seed",
        "with_mask",
        "without_mask",
        "mask_area",
        "fractions",
        "cam",
        "random",
        "per_patch",
    }
    assert (report["class_index"], report["steps"], report["seed"]) == (1, 4, 3)
    assert report["removed_pixels"] == "gaussian blur, sigma 8 px"
    assert report["random_grid"] == [SIDE, SIDE]
    assert report["fractions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert set(report["cam"]) == set(report["random"]) == _SUMMARY
    assert set(report["per_patch"]) == {"cam", "random"}
    assert set(report["per_patch"]["cam"]) == set(report["per_patch"]["random"]) == _METRICS
    # every figure is the functions' own, on the maps and on random_maps(shape, seed)
    noise = random_maps((3, SIDE, SIDE), 3)
    for name, candidate in (("cam", maps), ("random", noise)):
        curves = deletion_insertion(_SquareModel(), images, candidate, steps=4, seed=3)
        per_patch = report["per_patch"][name]
        assert per_patch["pointing_game"] == pointing_game(candidate, masks).tolist()
        assert per_patch["energy_inside"] == energy_inside(candidate, masks).tolist()
        assert per_patch["deletion_auc"] == curves.deletion_auc.tolist()
        assert per_patch["insertion_auc"] == curves.insertion_auc.tolist()
        summary = report[name]
        assert summary["deletion_curve"] == curves.deletion.mean(axis=0).tolist()
        assert summary["insertion_curve"] == curves.insertion.mean(axis=0).tolist()
        assert summary["deletion_auc"] == pytest.approx(curves.deletion_auc.mean())
        assert summary["insertion_auc"] == pytest.approx(curves.insertion_auc.mean())
        assert summary["energy_inside"] == pytest.approx(energy_inside(candidate, masks).mean())


def test_the_cam_report_passes_its_options_on() -> None:
    images = _square_images(2)
    images[1] = 90  # another colour: the corner pixel sees what removed pixels become
    maps = _mask(SQUARE, count=2).astype(np.float32)
    model = _CornerModel()
    report = cam_report(model, images, maps, class_index=0, baseline="mean", steps=2)
    assert report["removed_pixels"] == "mean colour"
    assert report["class_index"] == 0
    mean = deletion_insertion(model, images, maps, steps=2, baseline="mean", class_index=0)
    blur = deletion_insertion(model, images, maps, steps=2, baseline="blur", class_index=0)
    assert report["per_patch"]["cam"]["deletion_auc"] == mean.deletion_auc.tolist()
    assert report["cam"]["insertion_curve"] == mean.insertion.mean(axis=0).tolist()
    assert mean.deletion_auc.tolist() != blur.deletion_auc.tolist()
    default = cam_report(_SquareModel(), images, maps)
    assert (default["steps"], default["seed"], default["class_index"]) == (16, 0, 1)
    assert default == cam_report(_SquareModel(), images, maps, steps=16, seed=0, class_index=1)


def test_bad_maps_given_to_the_cam_report_are_named_maps() -> None:
    with pytest.raises(InvalidArgumentError) as error:
        cam_report(_SquareModel(), _square_images(1), -np.ones((1, SIDE, SIDE)))
    assert str(error.value) == (
        "maps: expected finite, non-negative map values (such as Grad-CAM's [0, 1]), "
        "found '0 values NaN or infinite and 1024 negative'"
    )


def test_the_cam_report_uses_the_random_grid() -> None:
    pytest.importorskip("tensorflow")
    images = _square_images(2)
    masks = _mask(SQUARE, count=2)
    maps = _mask(SQUARE, count=2).astype(np.float32)
    report = cam_report(_SquareModel(), images, maps, masks, steps=2, random_grid=(4, 4), seed=5)
    assert report["random_grid"] == [4, 4]
    noise = random_maps((2, SIDE, SIDE), 5, grid=(4, 4))
    assert report["per_patch"]["random"]["energy_inside"] == energy_inside(noise, masks).tolist()


def test_a_report_without_any_mask_has_no_mask_scores() -> None:
    images = _square_images(2)
    masks = _mask(count=2)  # no tumour anywhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = cam_report(_SquareModel(), images, np.ones((2, SIDE, SIDE)), masks, steps=2)
    assert (report["with_mask"], report["without_mask"], report["mask_area"]) == (0, 2, None)
    assert report["cam"]["pointing_game"] is None
    assert report["random"]["energy_inside"] is None
    assert report["per_patch"]["cam"]["pointing_game"] == [None, None]
    assert json.loads(json.dumps(report, allow_nan=False)) == report
