"""CAM quality metrics on hand-built maps, masks and models with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest

from pcam.cam_quality import (
    baseline_images,
    cam_report,
    deletion_insertion,
    energy_inside,
    pointing_game,
    random_maps,
)
from pcam.errors import InvalidArgumentError

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
