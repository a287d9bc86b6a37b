"""Macenko stain normalisation (:mod:`pcam.stain.macenko`), on patches whose stains are known.

The synthetic patches are smooth random haematoxylin and eosin concentration fields, with some
background, rendered through a chosen ``[2, 3]`` stain matrix (``OD = C @ M``) to uint8. Two
matrices: Ruifrok and Johnston's H&E, and a clearly different one (haematoxylin bluer, eosin
more orange). Fits on such patches find the rows with cosines above 0.99995 (the quantisation
to uint8 is the only error), so the tests ask for 0.999: 2.6 degrees.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcam.data.patch_io import PatchSizeError
from pcam.errors import (
    InvalidArgumentError,
    LayoutError,
    MissingFileError,
    PCamError,
    UnreadableFileError,
)
from pcam.stain import (
    BackgroundOnlyError,
    MacenkoStains,
    StainNormaliser,
    fit_stains,
    macenko,
    normalise,
)
from pcam.stain.macenko import (
    MIN_TISSUE_PIXELS,
    SingleStainError,
    StainFitError,
    StainNormalisationWarning,
    Unchanged,
    _signs,
    intensities,
    masked_percentiles,
    normalise_counted,
    optical_density,
    tissue_mask,
)

Floats = npt.NDArray[np.float64]
Bytes = npt.NDArray[np.uint8]


def _unit_rows(rows: list[list[float]]) -> Floats:
    matrix = np.array(rows, dtype=np.float64)
    unit: Floats = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return unit


RUIFROK = _unit_rows([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
"""Ruifrok and Johnston's haematoxylin and eosin OD vectors."""
BLUE_ORANGE = _unit_rows([[0.80, 0.55, 0.20], [0.10, 0.55, 0.83]])
"""Haematoxylin absorbing more red (bluer), eosin absorbing blue (more orange)."""
MATRICES = {"ruifrok": RUIFROK, "blue-orange": BLUE_ORANGE}
COSINE = 0.999
"""Least cosine between a fitted and a true stain vector (2.6 degrees); see the docstring."""


def _smooth_fields(rng: np.random.Generator, count: int, scale: float) -> Floats:
    """``[count, 96, 96]`` Gaussian-smoothed noise (``scale`` pixels), zero mean, unit std."""
    frequencies = np.fft.fftfreq(96)
    squared = frequencies[:, None] ** 2 + frequencies[None, :] ** 2
    kernel = np.exp(-0.5 * squared * (2.0 * np.pi * scale) ** 2)
    noise = rng.standard_normal((count, 96, 96))
    field = np.fft.ifft2(np.fft.fft2(noise) * kernel).real
    field -= field.mean(axis=(1, 2), keepdims=True)
    normalised: Floats = field / field.std(axis=(1, 2), keepdims=True)
    return normalised


def _concentrations(seed: int, count: int, h_scale: float = 0.9, e_scale: float = 0.5) -> Floats:
    """``[count, 96, 96, 2]`` H and E concentrations: blobs of nuclei, stroma, some glass.

    About 40% of the pixels hold haematoxylin, 70% eosin, 16% neither (background), and some
    one stain alone: the robust extreme angles are the pure stains.
    """
    rng = np.random.default_rng(seed)
    nuclei = np.clip(h_scale * (_smooth_fields(rng, count, 6.0) - 0.3), 0.0, None)
    stroma = np.clip(e_scale * (_smooth_fields(rng, count, 6.0) + 0.6), 0.0, None)
    tissue = _smooth_fields(rng, count, 10.0) > -1.0
    return np.stack([nuclei * tissue, stroma * tissue], axis=-1)


def _render(concentrations: Floats, matrix: Floats) -> Bytes:
    """Concentrations through ``matrix`` to uint8: ``I = round(256 exp(-C @ M) - 1)``."""
    values = 256.0 * np.exp(-(concentrations @ matrix)) - 1.0
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def _tissue_percentile(
    concentrations: Floats, images: Bytes, percentile: float, axis: tuple[int, ...] | None = None
) -> Floats:
    """Percentile of the true concentrations over the tissue pixels (OD > 0.15 in a channel).

    Over every pixel of the batch (``axis=None``), or per patch.
    """
    density = np.log(256.0) - np.log(images.astype(np.float64) + 1.0)
    tissue = np.any(density > 0.15, axis=-1)
    if axis is None:
        return np.percentile(concentrations[tissue], percentile, axis=0)
    return np.stack(
        [
            np.percentile(c[t], percentile, axis=0)
            for c, t in zip(concentrations, tissue, strict=True)
        ]
    )


def _cosines(fitted: Floats, matrix: Floats) -> Floats:
    """Cosine of each fitted row with the same row of ``matrix`` (rows of unit length)."""
    cosines: Floats = np.sum(fitted * matrix, axis=1)
    return cosines


def _mean_error(first: Bytes, second: Bytes) -> float:
    return float(np.abs(first.astype(np.int64) - second.astype(np.int64)).mean())


def _white(count: int = 1) -> Bytes:
    return np.full((count, 96, 96, 3), 255, dtype=np.uint8)


# -- fitting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("name", sorted(MATRICES))
def test_a_pooled_fit_recovers_the_stain_matrix_in_order_and_the_99th_percentiles(
    name: str, seed: int
) -> None:
    matrix = MATRICES[name]
    concentrations = _concentrations(seed, 8)
    images = _render(concentrations, matrix)
    stains = fit_stains(images)
    assert stains.stain_matrix.shape == (2, 3)
    assert np.all(_cosines(stains.stain_matrix, matrix) > COSINE)  # H first, E second, signs +
    assert np.all(_cosines(stains.stain_matrix, matrix[::-1]) < 0.9)  # the order is told apart
    p99 = _tissue_percentile(concentrations, images, 99.0)
    p95 = _tissue_percentile(concentrations, images, 95.0)
    np.testing.assert_allclose(stains.max_concentrations, p99, rtol=0.02)
    assert np.all(np.abs(p95 / p99 - 1.0) > 0.1)  # a 95th percentile would fail the line above


@given(seed=st.integers(0, 100_000), name=st.sampled_from(sorted(MATRICES)))
def test_a_fit_on_one_patch_recovers_the_stain_matrix(seed: int, name: str) -> None:
    matrix = MATRICES[name]
    concentrations = _concentrations(seed, 1)[0]
    image = _render(concentrations, matrix)
    stains = fit_stains(image)
    assert np.all(_cosines(stains.stain_matrix, matrix) > COSINE)
    expected = _tissue_percentile(concentrations[None], image[None], 99.0)
    np.testing.assert_allclose(stains.max_concentrations, expected, rtol=0.03)


@pytest.mark.parametrize(("h_scale", "e_scale"), [(2.0, 0.15), (0.2, 1.0)])
@pytest.mark.parametrize("name", sorted(MATRICES))
def test_haematoxylin_comes_first_whichever_stain_is_more_abundant(
    name: str, h_scale: float, e_scale: float
) -> None:
    matrix = MATRICES[name]
    images = _render(_concentrations(7, 4, h_scale=h_scale, e_scale=e_scale), matrix)
    stains = fit_stains(images)
    assert np.all(_cosines(stains.stain_matrix, matrix) > COSINE)
    assert stains.stain_matrix[0, 0] > stains.stain_matrix[1, 0]  # H: the larger red OD


def test_the_stain_vectors_point_into_positive_optical_density() -> None:
    stains = fit_stains(_render(_concentrations(3, 4), BLUE_ORANGE))
    assert np.all(stains.stain_matrix > 0.0)
    np.testing.assert_allclose(np.linalg.norm(stains.stain_matrix, axis=1), 1.0)
    assert np.all(stains.max_concentrations > 0.0)


def test_a_fit_ignores_background_pixels() -> None:
    images = _render(_concentrations(4, 4), RUIFROK)
    padded = np.concatenate([images, _white(4)], axis=2)  # half of every patch is glass
    first, second = fit_stains(images), fit_stains(padded)
    np.testing.assert_allclose(second.stain_matrix, first.stain_matrix, atol=1e-12)
    np.testing.assert_allclose(second.max_concentrations, first.max_concentrations, rtol=1e-12)


# -- normalising -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target"), [("ruifrok", "blue-orange"), ("blue-orange", "ruifrok")]
)
def test_normalising_renders_the_same_fields_in_the_reference_stains(
    source: str, target: str
) -> None:
    concentrations = _concentrations(10, 6)
    images = _render(concentrations, MATRICES[source])
    reference = fit_stains(_render(_concentrations(20, 8), MATRICES[target]))
    normalised = normalise(images, reference)
    assert normalised.shape == images.shape
    assert normalised.dtype == np.uint8
    # each patch's concentrations scaled so its 99th percentiles become the reference's maxima
    scales = reference.max_concentrations / _tissue_percentile(concentrations, images, 99.0, (0,))
    expected = _render(concentrations * scales[:, None, None, :], MATRICES[target])
    after = _mean_error(normalised, expected)
    before = _mean_error(images, _render(concentrations, MATRICES[target]))
    assert after < 1.0
    assert before > 20.0 * after
    refit = fit_stains(normalised)
    assert np.all(_cosines(refit.stain_matrix, MATRICES[target]) > COSINE)
    np.testing.assert_allclose(refit.max_concentrations, reference.max_concentrations, rtol=0.03)


@given(seed=st.integers(0, 100_000), name=st.sampled_from(sorted(MATRICES)))
def test_normalising_a_patch_to_its_own_stains_is_nearly_the_identity(seed: int, name: str) -> None:
    image = _render(_concentrations(seed, 1)[0], MATRICES[name])
    normalised = normalise(image, fit_stains(image))
    difference = np.abs(normalised.astype(np.int64) - image)
    assert difference.max() <= 1  # uint8 rounding only
    assert difference.mean() < 0.05


@pytest.mark.parametrize("name", sorted(MATRICES))
def test_normalising_restores_a_faded_patch(name: str) -> None:
    """Half the stain: the concentrations must be scaled up by reference / patch maxima."""
    concentrations = _concentrations(5, 3)
    for patch in concentrations:
        image = _render(patch, MATRICES[name])
        faded = _render(0.5 * patch, MATRICES[name])
        restored = normalise(faded, fit_stains(image))
        assert _mean_error(restored, image) < 1.5  # the faded patch's rounding, doubled
        assert _mean_error(faded, image) > 15.0


def test_each_patch_is_normalised_on_its_own() -> None:
    images = _render(_concentrations(6, 3), BLUE_ORANGE)
    reference = fit_stains(_render(_concentrations(8, 4), RUIFROK))
    together = normalise(images, reference)
    for index, image in enumerate(images):
        np.testing.assert_array_equal(normalise(image, reference), together[index])


def test_background_patches_pass_through_unchanged_with_one_warning() -> None:
    tissue = _render(_concentrations(11, 3), BLUE_ORANGE)
    sparse = _white()[0]
    sparse[0, : MIN_TISSUE_PIXELS - 1] = tissue[0, 40, 40]  # 99 tissue pixels: too few
    batch = np.stack([tissue[0], _white()[0], tissue[1], sparse, tissue[2]])
    reference = fit_stains(_render(_concentrations(12, 4), RUIFROK))
    with pytest.warns(StainNormalisationWarning) as record:
        normalised = normalise(batch, reference)
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message
    assert "2 of 5 patches passed through unchanged" in message
    assert "2 background-only" in message
    np.testing.assert_array_equal(normalised[1], batch[1])
    np.testing.assert_array_equal(normalised[3], batch[3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tissue alone: no warning
        np.testing.assert_array_equal(normalised[[0, 2, 4]], normalise(tissue, reference))
    assert _mean_error(normalised[0], tissue[0]) > 5.0


def test_an_all_background_batch_passes_through_with_the_warning() -> None:
    batch = _white(3)
    batch[1, :5, :5] = (120, 60, 140)  # 25 tissue pixels
    reference = fit_stains(_render(_concentrations(12, 2), RUIFROK))
    with pytest.warns(StainNormalisationWarning, match=r"3 of 3 patches"):
        normalised = normalise(batch, reference)
    np.testing.assert_array_equal(normalised, batch)
    assert normalised is not batch


def test_a_patch_of_one_colour_passes_through_with_its_reason() -> None:
    flat = np.full((1, 96, 96, 3), (150, 80, 160), dtype=np.uint8)
    reference = fit_stains(_render(_concentrations(12, 2), RUIFROK))
    with pytest.warns(StainNormalisationWarning, match=r"1 with one stain colour"):
        normalised = normalise(flat, reference)
    np.testing.assert_array_equal(normalised, flat)


@functools.cache
def _reference(name: str) -> MacenkoStains:
    return fit_stains(_render(_concentrations(1, 2), MATRICES[name]))


def _random_batch(seed: int, kind: str) -> Bytes:
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 4))
    if kind == "noise":
        batch = rng.integers(0, 256, (count, 24, 24, 3), dtype=np.uint8)
    elif kind == "flat":
        batch = np.broadcast_to(
            rng.integers(0, 256, (count, 1, 1, 3), dtype=np.uint8), (count, 24, 24, 3)
        ).copy()
    else:
        matrix = _unit_rows(rng.uniform(0.01, 1.0, (2, 3)).tolist())
        batch = _render(_concentrations(seed, count)[:, :24, :24], matrix)
    batch[:, ::5, ::3] = 255  # some glass in every patch
    return batch


@given(
    seed=st.integers(0, 100_000),
    kind=st.sampled_from(["noise", "flat", "stained"]),
    ruifrok=st.booleans(),
)
def test_any_batch_keeps_its_shape_and_its_white_pixels(
    seed: int, kind: str, ruifrok: bool
) -> None:
    batch = _random_batch(seed, kind)
    reference = _reference("ruifrok" if ruifrok else "blue-orange")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StainNormalisationWarning)
        normalised = normalise(batch, reference)
    assert normalised.shape == batch.shape
    assert normalised.dtype == np.uint8
    white = np.all(batch == 255, axis=-1)
    assert np.all(normalised[white] == 255)  # OD 0 maps to OD 0, whatever the fit


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images",
    [
        _white()[0],
        np.full((96, 96, 3), 250, dtype=np.uint8),  # OD 0.02: pale, not tissue
        np.zeros((0, 96, 96, 3), dtype=np.uint8),
    ],
    ids=["white", "pale", "empty"],
)
def test_a_background_only_reference_is_refused_in_one_line(images: Bytes) -> None:
    with pytest.raises(BackgroundOnlyError) as caught:
        fit_stains(images)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("background-only reference: expected patches with stained tissue")
    assert "found 0;" in message
    assert isinstance(caught.value, PCamError)
    assert isinstance(caught.value, ValueError)


def test_the_minimum_of_tissue_pixels_is_exact() -> None:
    pixels = _render(_concentrations(13, 1), RUIFROK)[0]
    tissue = pixels[np.any(pixels < 200, axis=-1)][:MIN_TISSUE_PIXELS]  # OD > 0.24 somewhere
    image = _white()[0]
    image.reshape(-1, 3)[: MIN_TISSUE_PIXELS - 1] = tissue[:-1]
    with pytest.raises(BackgroundOnlyError, match=rf"found {MIN_TISSUE_PIXELS - 1};") as caught:
        fit_stains(image)
    assert caught.value.found == MIN_TISSUE_PIXELS - 1
    image.reshape(-1, 3)[:MIN_TISSUE_PIXELS] = tissue
    assert fit_stains(image).stain_matrix.shape == (2, 3)


def test_a_reference_of_one_colour_is_refused_in_one_line() -> None:
    with pytest.raises(SingleStainError, match=r"^one-stain reference: expected two stain") as e:
        fit_stains(np.full((96, 96, 3), (150, 80, 160), dtype=np.uint8))
    assert "\n" not in str(e.value)
    assert isinstance(e.value, StainFitError)
    assert e.value.angle < 3.0


BAD_IMAGES = {
    "float": np.zeros((96, 96, 3), dtype=np.float32),
    "grey": np.zeros((96, 96), dtype=np.uint8),
    "rgba": np.zeros((96, 96, 4), dtype=np.uint8),
    "five-d": np.zeros((1, 1, 96, 96, 3), dtype=np.uint8),
    "list": [[[1, 2, 3]]],
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_images_are_refused(name: str) -> None:
    reference = fit_stains(_render(_concentrations(1, 1), RUIFROK))
    with pytest.raises(InvalidArgumentError, match=r"^images: expected uint8 RGB patches"):
        fit_stains(BAD_IMAGES[name])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^images: expected uint8 RGB patches"):
        normalise(BAD_IMAGES[name], reference)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("od_threshold", -0.1), ("od_threshold", float("nan")), ("angle_percentile", 50.0)],
)
def test_bad_parameters_are_refused(keyword: str, value: float) -> None:
    image = _render(_concentrations(1, 1), RUIFROK)
    with pytest.raises(InvalidArgumentError, match=rf"^{keyword}: expected"):
        fit_stains(image, **{keyword: value})
    with pytest.raises(InvalidArgumentError, match=rf"^{keyword}: expected"):
        normalise(image, fit_stains(image), **{keyword: value})


def test_a_reference_must_be_macenko_stains() -> None:
    message = "reference: expected MacenkoStains, found 'dict'"
    with pytest.raises(InvalidArgumentError) as caught:
        normalise(_white(), {"stain_matrix": RUIFROK})  # type: ignore[arg-type]
    assert str(caught.value) == message
    with pytest.raises(InvalidArgumentError) as caught:
        StainNormaliser({"stain_matrix": RUIFROK})  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_one_patch_in_one_patch_out() -> None:
    images = _render(_concentrations(2, 2), BLUE_ORANGE)
    reference = fit_stains(images)
    assert normalise(images[0], reference).shape == (96, 96, 3)
    assert normalise(images, reference).shape == (2, 96, 96, 3)
    assert normalise(images[:, :50, :70], reference).shape == (2, 50, 70, 3)
    assert normalise(images[:0], reference).shape == (0, 96, 96, 3)
    empty, unchanged = normalise_counted(images[:0], reference)
    assert empty.shape == (0, 96, 96, 3)
    assert unchanged == Unchanged(0, 0, 0)
    with pytest.warns(StainNormalisationWarning, match=r"2 of 2 patches"):
        assert normalise(images[:, :0], reference).shape == (2, 0, 96, 3)


# -- the stains and the normaliser -----------------------------------------------------------------


def test_stains_round_trip_through_a_dict_and_json() -> None:
    stains = fit_stains(_render(_concentrations(3, 2), RUIFROK))
    values = json.loads(json.dumps(stains.to_dict()))
    assert values["stains"] == ["haematoxylin", "eosin"]
    again = MacenkoStains.from_dict(values)
    assert again == stains
    assert hash(again) == hash(stains)
    assert not again.stain_matrix.flags.writeable
    assert again != MacenkoStains(RUIFROK, np.array([1.0, 1.0]))


@pytest.mark.parametrize(
    "values",
    [
        {"stain_matrix": [[1.0, 0.0, 0.0]], "max_concentrations": [1.0, 1.0]},
        {"stain_matrix": [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "max_concentrations": [1, 1]},
        {"stain_matrix": RUIFROK.tolist(), "max_concentrations": [1.0, 0.0]},
        {"stain_matrix": RUIFROK.tolist(), "max_concentrations": [1.0, float("nan")]},
        {"stain_matrix": "no", "max_concentrations": [1.0, 1.0]},
        {"stain_matrix": RUIFROK.tolist()},
        {"stain_matrix": RUIFROK.tolist(), "max_concentrations": [1, 1], "stains": ["e", "h"]},
        [1, 2],
    ],
)
def test_bad_stain_dicts_are_refused(values: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        MacenkoStains.from_dict(values)
    assert "\n" not in str(caught.value)


def test_the_normaliser_saves_and_loads_its_reference(tmp_path: Path) -> None:
    images = _render(_concentrations(14, 3), BLUE_ORANGE)
    normaliser = StainNormaliser.fit(_render(_concentrations(15, 2), RUIFROK))
    assert normaliser.describe() == "Macenko stain normalisation to 2 reference patches"
    path = tmp_path / "reference.json"
    normaliser.save(path)
    saved = json.loads(path.read_text())
    assert saved["kind"] == "pcam-macenko-reference"
    loaded = StainNormaliser.from_path(path)
    assert loaded.reference == normaliser.reference
    np.testing.assert_array_equal(loaded(images), normaliser(images))
    np.testing.assert_array_equal(normaliser(images), normalise(images, normaliser.reference))
    assert loaded.describe() == (
        f"Macenko stain normalisation to {path} (fitted on 2 reference patches)"
    )


def test_the_normaliser_counts_the_patches_it_passes_through() -> None:
    batch = np.concatenate([_white(), _render(_concentrations(17, 2), RUIFROK)])
    reference = _reference("blue-orange")
    quiet = StainNormaliser(reference, warn=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = quiet(batch)
        quiet(batch[1:])
    with pytest.warns(StainNormalisationWarning):
        np.testing.assert_array_equal(first, normalise(batch, reference))
    assert quiet.unchanged == Unchanged(patches=5, background=1, one_stain=0)
    message = quiet.unchanged_message()
    assert message is not None
    assert message.startswith("stain normalisation: 1 of 5 patches passed through unchanged")
    assert StainNormaliser(reference).unchanged_message() is None
    loud = StainNormaliser(reference)
    with pytest.warns(StainNormalisationWarning, match=r"^stain normalisation: 1 of 3 patches"):
        loud(batch)


def test_a_normaliser_dict_round_trips_and_bad_ones_are_refused() -> None:
    normaliser = StainNormaliser(_reference("ruifrok"), source="somewhere", od_threshold=0.2)
    again = StainNormaliser.from_dict(json.loads(json.dumps(normaliser.to_dict())))
    assert again.reference == normaliser.reference
    assert (again.source, again.od_threshold) == ("somewhere", 0.2)
    for bad in ({"kind": "other"}, {**normaliser.to_dict(), "od_threshold": -1}, [1]):
        with pytest.raises(LayoutError, match=r"^the env: expected a Macenko reference") as e:
            StainNormaliser.from_dict(bad, where="the env")
        assert "\n" not in str(e.value)


def _write_pngs(folder: Path, images: Bytes) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        paths.append(folder / f"patch-{index:02d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def test_the_normaliser_fits_a_png_and_a_folder_of_pngs(tmp_path: Path) -> None:
    images = _render(_concentrations(16, 3), BLUE_ORANGE)
    paths = _write_pngs(tmp_path / "reference", images)
    one = StainNormaliser.from_path(paths[1])
    assert one.reference == fit_stains(images[1])  # PNG is lossless: the very same fit
    assert one.describe() == f"Macenko stain normalisation to {paths[1]}"
    folder = StainNormaliser.from_path(tmp_path / "reference")
    assert folder.reference == fit_stains(images)
    assert folder.describe().endswith("reference (3 images)")


def test_the_normaliser_refuses_bad_paths_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"kind": "something else"}))
    (tmp_path / "broken.json").write_text(
        json.dumps({"kind": "pcam-macenko-reference", "stain_matrix": [1, 2]})
    )
    (white,) = _write_pngs(tmp_path / "white", _white())
    cases: list[tuple[Path, type[Exception], str]] = [
        (tmp_path / "missing.png", MissingFileError, "no such file"),
        (tmp_path / "missing.json", MissingFileError, "no such file"),
        (tmp_path / "bad.json", UnreadableFileError, "invalid JSON"),
        (tmp_path / "other.json", LayoutError, "kind 'something else'"),
        (tmp_path / "broken.json", LayoutError, "a bad value"),
        (white, BackgroundOnlyError, "background-only reference"),
        (tmp_path / "white", BackgroundOnlyError, "background-only reference"),
    ]
    for path, kind, text in cases:
        with pytest.raises(kind) as caught:
            StainNormaliser.from_path(path)
        message = str(caught.value)
        assert "\n" not in message
        assert text in message
        assert str(path) in message


# -- the helpers -----------------------------------------------------------------------------------


def test_optical_density_round_trips_every_intensity() -> None:
    values = np.arange(256, dtype=np.uint8)
    density = optical_density(values)
    assert density[255] == 0.0
    np.testing.assert_allclose(density, np.log(256.0 / (values + 1.0)))
    np.testing.assert_array_equal(intensities(density), values)


@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 4),
    size=st.integers(1, 40),
    percentile=st.floats(0.0, 100.0),
)
def test_masked_percentiles_agree_with_numpy(
    seed: int, rows: int, size: int, percentile: float
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, size))
    mask = rng.random((rows, size)) < 0.6
    found = masked_percentiles(values, mask, (percentile,))[0]
    for row in range(rows):
        kept = values[row][mask[row]]
        expected = np.percentile(kept, percentile) if kept.size else 0.0
        assert found[row] == pytest.approx(expected, abs=1e-12)
    everything = masked_percentiles(values, np.ones_like(mask), (percentile,))[0]
    np.testing.assert_allclose(everything, np.percentile(values, percentile, axis=1), atol=1e-12)


# -- details: messages, defaults, bounds ---------------------------------------------------------


def _stains(matrix: object, maxima: object) -> MacenkoStains:
    """:class:`MacenkoStains` from any values (the checks are what is tested)."""
    return MacenkoStains(matrix, maxima)  # type: ignore[arg-type]


def test_three_stain_patches_in_a_batch_are_fitted_each_on_its_own() -> None:
    """Off the plane of two stains, a fit depends on which pixels count and how much."""
    three = _unit_rows([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
    fields = np.concatenate([_concentrations(21, 3), _concentrations(22, 3)[..., :1]], axis=-1)
    fields[1, :, 48:] = 0.0  # half glass
    fields[2, 30:] = 0.0  # two thirds glass
    images = _render(fields, three)
    reference = _reference("ruifrok")
    together = normalise(images, reference)
    for index, image in enumerate(images):
        np.testing.assert_array_equal(normalise(image, reference), together[index])


def test_the_parameter_ranges_include_0_and_exclude_their_upper_ends() -> None:
    image = _render(_concentrations(1, 1), RUIFROK)
    assert fit_stains(image, od_threshold=0.0) != fit_stains(image)
    assert fit_stains(image, angle_percentile=0.0) != fit_stains(image)
    top = float(np.log(256.0))
    cases: list[tuple[str, float, str]] = [
        ("od_threshold", -0.1, "od_threshold: expected an optical density in [0, 5.545)"),
        ("od_threshold", top, "od_threshold: expected an optical density in [0, 5.545)"),
        ("angle_percentile", -1.0, "angle_percentile: expected a percentile in [0, 50)"),
        ("angle_percentile", 50.0, "angle_percentile: expected a percentile in [0, 50)"),
    ]
    for keyword, value, expected in cases:
        with pytest.raises(InvalidArgumentError) as caught:
            fit_stains(image, **{keyword: value})
        assert str(caught.value) == f"{expected}, found {value!r}"


def test_a_pixel_at_the_threshold_is_not_tissue() -> None:
    image = _white()[0]
    image[:2] = (200, 255, 255)  # 192 pixels, red OD exactly the threshold below
    threshold = float(optical_density(np.array([200], dtype=np.uint8))[0])
    assert not np.any(tissue_mask(optical_density(image), threshold))
    with pytest.raises(BackgroundOnlyError, match=r"found 0;"):
        fit_stains(image, od_threshold=threshold)


def test_bad_images_are_refused_saying_what_was_found() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        fit_stains(np.zeros((96, 96, 3), dtype=np.float32))
    assert str(caught.value) == (
        "images: expected uint8 RGB patches [H, W, 3] or [B, H, W, 3], found 'float32 [96, 96, 3]'"
    )


def test_the_warnings_point_at_the_calling_line(monkeypatch: pytest.MonkeyPatch) -> None:
    levels: list[int] = []

    def warn(message: str, category: type[Warning], stacklevel: int = 1) -> None:
        levels.append(stacklevel)
        warnings.warn(message, category, stacklevel=stacklevel + 1)  # + this frame

    monkeypatch.setattr(macenko, "warnings", SimpleNamespace(warn=warn))
    reference = _reference("ruifrok")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        normalise(_white(), reference)
        StainNormaliser(reference)(_white())
    assert [warning.category for warning in record] == [StainNormalisationWarning] * 2
    assert levels == [2, 2]
    if not hasattr(normalise, "__wrapped__"):  # mutmut's trampolines add frames of their own
        assert [warning.filename for warning in record] == [__file__, __file__]


def test_unchanged_counts_add_up_and_give_every_reason() -> None:
    total = Unchanged(3, 1, 2) + Unchanged(1_001, 1_000, 1)
    assert total == Unchanged(1_004, 1_001, 3)
    assert total.count == 1_004
    assert total.message(0.25) == (
        "stain normalisation: 1,004 of 1,004 patches passed through unchanged, their stains "
        "could not be fitted: 1,001 background-only (fewer than 100 pixels with optical density "
        "above 0.25 in some channel); 3 with one stain colour (stain vectors less than 3 degrees "
        "apart)"
    )
    assert "above 0.15 in some channel" in Unchanged(1, 1, 0).message()


SHAPE = "expected finite numbers of shape"


@pytest.mark.parametrize(
    ("matrix", "maxima", "message"),
    [
        ([[1.0, 0.0, 0.0]], [1, 1], f"stain_matrix: {SHAPE} [2, 3], found 'shape [1, 3]'"),
        (
            [[np.nan, 0, 0], [0, 1, 0]],
            [1, 1],
            f"stain_matrix: {SHAPE} [2, 3], found 'non-finite values'",
        ),
        (RUIFROK, [1, 1, 1], f"max_concentrations: {SHAPE} [2], found 'shape [3]'"),
        (RUIFROK, [1, np.inf], f"max_concentrations: {SHAPE} [2], found 'non-finite values'"),
        ("no", [1, 1], "stain_matrix: expected nested lists of numbers, found 'no'"),
        (
            RUIFROK,
            [[1], [1, 2]],
            "max_concentrations: expected nested lists of numbers, found [[1], [1, 2]]",
        ),
        (
            [[2, 0, 0], [0, 1, 0]],
            [1, 1],
            "stain_matrix: expected rows of unit length, found [2.0, 1.0]",
        ),
        (RUIFROK, [1.0, 0.0], "max_concentrations: expected positive numbers, found [1.0, 0.0]"),
    ],
    ids=["shape", "nan", "three", "inf", "text", "ragged", "norms", "zero"],
)
def test_bad_stains_are_refused_saying_what_was_found(
    matrix: object, maxima: object, message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        _stains(matrix, maxima)
    assert str(caught.value) == message


def test_stains_hold_read_only_float64_arrays_within_a_tolerance_of_unit_rows() -> None:
    stains = _stains([[1, 0, 0], [0, 1, 0]], [1, 2])
    for array in (stains.stain_matrix, stains.max_concentrations):
        assert isinstance(array, np.ndarray)
        assert array.dtype == np.float64
        assert not array.flags.writeable
    np.testing.assert_array_equal(stains.max_concentrations, [1.0, 2.0])
    # np.allclose(norms, 1, atol=1e-6) with its default rtol of 1e-5: within 1.1e-5 of 1
    assert _stains(RUIFROK * (1.0 + 1.05e-5), [1.0, 1.0]).stain_matrix.shape == (2, 3)
    with pytest.raises(InvalidArgumentError, match=r"^stain_matrix: expected rows of unit length"):
        _stains(RUIFROK * (1.0 + 1.2e-5), [1.0, 1.0])


def test_stains_differ_when_either_array_differs() -> None:
    stains = _reference("ruifrok")
    same = MacenkoStains(stains.stain_matrix.copy(), stains.max_concentrations.copy())
    other_maxima = MacenkoStains(stains.stain_matrix, 2.0 * stains.max_concentrations)
    other_matrix = MacenkoStains(RUIFROK, stains.max_concentrations)
    assert stains == same
    assert hash(stains) == hash(same)
    assert stains != other_maxima
    assert stains != other_matrix
    assert hash(stains) != hash(other_maxima)


def test_a_stain_dict_needs_only_its_two_arrays() -> None:
    stains = MacenkoStains.from_dict(
        {"stain_matrix": [[1, 0, 0], [0, 1, 0]], "max_concentrations": [1, 2]}
    )
    assert stains.stain_matrix.dtype == np.float64
    assert stains.max_concentrations.dtype == np.float64
    np.testing.assert_array_equal(stains.max_concentrations, [1.0, 2.0])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"stain_matrix": RUIFROK.tolist()},
            "stains: expected a dict with stain_matrix and max_concentrations, "
            "found ['stain_matrix']",
        ),
        ([1, 2], "stains: expected a dict with stain_matrix and max_concentrations, found 'list'"),
        (
            {"stain_matrix": RUIFROK.tolist(), "max_concentrations": [1], "stains": ["e", "h"]},
            "stains: expected the stains ['haematoxylin', 'eosin'] in order, found ['e', 'h']",
        ),
        (
            {"stain_matrix": "no", "max_concentrations": [1, 1]},
            "stain_matrix: expected nested lists of numbers, found 'no'",
        ),
        (
            {"stain_matrix": RUIFROK.tolist(), "max_concentrations": "x"},
            "max_concentrations: expected nested lists of numbers, found 'x'",
        ),
    ],
    ids=["one-key", "list", "order", "matrix-text", "maxima-text"],
)
def test_bad_stain_dicts_are_refused_saying_what_was_found(values: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        MacenkoStains.from_dict(values)
    assert str(caught.value) == message


def test_a_normaliser_has_its_documented_defaults() -> None:
    reference = _reference("ruifrok")
    normaliser = StainNormaliser(reference)
    assert (normaliser.source, normaliser.od_threshold) == ("a fitted reference", 0.15)
    assert normaliser.warn is True
    assert normaliser.describe() == "Macenko stain normalisation to a fitted reference"
    assert repr(normaliser) == "StainNormaliser('a fitted reference')"
    assert normaliser.to_dict() == {
        "kind": "pcam-macenko-reference",
        "method": "macenko",
        "stains": ["haematoxylin", "eosin"],
        "stain_matrix": reference.stain_matrix.tolist(),
        "max_concentrations": reference.max_concentrations.tolist(),
        "od_threshold": 0.15,
        "source": "a fitted reference",
    }


def test_fitting_a_normaliser_passes_its_options_on() -> None:
    images = _render(_concentrations(15, 2), RUIFROK)
    default = StainNormaliser.fit(images)
    assert default.warn is True
    assert default.od_threshold == 0.15
    one = StainNormaliser.fit(images[0])
    assert one.source == "1 reference patch"
    assert one.reference == fit_stains(images[0])
    custom = StainNormaliser.fit(images, od_threshold=0.6, source="slides", warn=False)
    assert custom.reference == fit_stains(images, od_threshold=0.6)
    assert custom.reference != default.reference
    assert (custom.od_threshold, custom.source) == (0.6, "slides")
    assert custom.warn is False


def test_a_normaliser_uses_its_own_threshold() -> None:
    batch = _render(_concentrations(17, 2), RUIFROK)
    strict = StainNormaliser(_reference("blue-orange"), od_threshold=2.0, warn=False)
    np.testing.assert_array_equal(strict(batch), batch)  # under 100 pixels above OD 2 each
    assert strict.unchanged == Unchanged(2, 2, 0)


def test_a_normaliser_dict_fills_in_its_defaults() -> None:
    values = {"kind": "pcam-macenko-reference", **_reference("ruifrok").to_dict()}
    loaded = StainNormaliser.from_dict(values)
    assert (loaded.od_threshold, loaded.source) == (0.15, "a saved reference")
    assert loaded.warn is True
    assert StainNormaliser.from_dict(values, warn=False).warn is False
    for source in ("", 5, None, ["a"]):
        assert StainNormaliser.from_dict({**values, "source": source}).source == (
            "a saved reference"
        )


def test_bad_normaliser_dicts_are_refused_saying_what_to_do() -> None:
    expected = "expected a Macenko reference written by pcam (JSON)"
    hint = "save it again, or pass the reference images instead"
    good = StainNormaliser(_reference("ruifrok")).to_dict()
    cases: list[tuple[object, str, str]] = [
        ([1], "stain reference", "kind 'list'"),
        ({"kind": "other"}, "stain reference", "kind 'other'"),
        (
            {**good, "od_threshold": -1},
            "stain reference",
            "a bad value (od_threshold: expected an optical density in [0, 5.545), found -1.0)",
        ),
    ]
    for values, where, found in cases:
        with pytest.raises(LayoutError) as caught:
            StainNormaliser.from_dict(values)
        assert str(caught.value) == f"{where}: {expected}, found {found}; {hint}"


def test_a_saved_reference_is_read_back_with_its_options(tmp_path: Path) -> None:
    normaliser = StainNormaliser(_reference("ruifrok"), source="", od_threshold=0.3)
    path = tmp_path / "reference.json"
    normaliser.save(path)
    loaded = StainNormaliser.from_path(path)
    assert loaded.source == str(path)  # no source saved: the file alone
    assert loaded.od_threshold == 0.3
    assert loaded.warn is True
    assert StainNormaliser.from_path(path, warn=False).warn is False


def test_a_saved_reference_is_read_as_utf8_whatever_the_locale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {**StainNormaliser(_reference("ruifrok")).to_dict(), "source": "Färbung"}
    path = tmp_path / "reference.json"
    path.write_bytes(json.dumps(values, ensure_ascii=False).encode("utf-8"))
    read_text = Path.read_text

    def cp1252_locale(self: Path, encoding: str | None = None, errors: str | None = None) -> str:
        return read_text(self, encoding="cp1252" if encoding is None else encoding, errors=errors)

    monkeypatch.setattr(Path, "read_text", cp1252_locale)
    assert StainNormaliser.from_path(path).source == f"{path} (fitted on Färbung)"


def test_bad_reference_files_are_refused_saying_what_to_do(tmp_path: Path) -> None:
    expected = "expected a Macenko reference written by pcam (JSON)"
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    cases: list[tuple[Path, type[Exception], str]] = [
        (tmp_path / "missing.json", MissingFileError, "found no such file; check the path"),
        (tmp_path / "folder.json", MissingFileError, "found a folder; check the path"),
        (
            tmp_path / "bad.json",
            UnreadableFileError,
            "found invalid JSON (Expecting property name enclosed in double quotes: line 1 "
            "column 2 (char 1)); save it again, or pass the reference images instead",
        ),
    ]
    for path, kind, ending in cases:
        with pytest.raises(kind) as caught:
            StainNormaliser.from_path(path)
        assert str(caught.value) == f"{path}: {expected}, {ending}"


def test_a_normaliser_from_images_passes_its_options_on(tmp_path: Path) -> None:
    image = _render(_concentrations(16, 1), BLUE_ORANGE)[0]
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), constant_values=255)  # 100x100
    (one,) = _write_pngs(tmp_path / "one", image[None])
    (large,) = _write_pngs(tmp_path / "large", padded[None])
    assert StainNormaliser.from_path(one).warn is True
    assert StainNormaliser.from_path(one, warn=False).warn is False
    assert StainNormaliser.from_path(tmp_path / "one").describe().endswith("one (1 image)")
    cropped = StainNormaliser.from_path(large, fit="crop")
    assert cropped.reference == fit_stains(image)  # the centre 96x96: the patch itself
    with pytest.raises(PatchSizeError):
        StainNormaliser.from_path(large)


def test_unfittable_reference_images_are_refused_naming_the_file(tmp_path: Path) -> None:
    (white,) = _write_pngs(tmp_path / "white", _white())
    (flat,) = _write_pngs(tmp_path / "flat", np.full((1, 96, 96, 3), (150, 80, 160), np.uint8))
    with pytest.raises(BackgroundOnlyError) as background:
        StainNormaliser.from_path(white)
    assert str(background.value) == (
        f"{white}: background-only reference: expected patches with stained tissue (at least 100 "
        "pixels with optical density above 0.15 in some channel), found 0; fit on patches that "
        "show tissue"
    )
    assert background.value.found == 0
    with pytest.raises(SingleStainError) as single:
        StainNormaliser.from_path(flat)
    assert str(single.value) == (
        f"{flat}: one-stain reference: expected two stain colours (haematoxylin and eosin) at "
        "least 3 degrees apart in optical density, found 0.0 degrees; fit on patches that show "
        "both nuclei and stroma"
    )
    assert single.value.angle == 0.0


def test_intensities_are_uint8_computed_in_float64_and_clipped() -> None:
    found = intensities(np.array([-1.0, 0.0, 7.0, 100.0]))
    assert found.dtype == np.uint8
    np.testing.assert_array_equal(found, [255, 255, 0, 0])
    half = np.linspace(0.0, 3.0, 301).astype(np.float16)
    np.testing.assert_array_equal(intensities(half), intensities(half.astype(np.float64)))


def test_optical_density_reads_other_integers_as_uint8() -> None:
    wide = np.array([0, 255, 256, 511], dtype=np.int64)  # never an index past the table
    expected = optical_density(np.array([0, 255, 0, 255], dtype=np.uint8))
    np.testing.assert_array_equal(optical_density(wide), expected)  # type: ignore[arg-type]


def test_a_vector_is_turned_only_when_its_components_sum_below_0() -> None:
    vectors = np.array([[1.0, -1.0, 0.0], [0.5, -0.2, 0.1], [-0.5, 0.2, 0.1], [0.9, 0.9, 0.9]])
    np.testing.assert_array_equal(_signs(vectors), [[1.0], [1.0], [-1.0], [1.0]])


def test_masked_percentiles_of_a_full_mask_are_numpys_own() -> None:
    for seed in range(10):
        rng = np.random.default_rng(seed)
        values = rng.normal(size=(3, int(rng.integers(2, 50))))
        percentiles = rng.uniform(0.0, 100.0, 5).tolist()
        found = masked_percentiles(values, np.ones(values.shape, dtype=bool), percentiles)
        np.testing.assert_array_equal(found, np.percentile(values, percentiles, axis=-1))


# -- real patches ----------------------------------------------------------------------------------


@pytest.mark.realdata
def test_a_fit_on_real_patches_finds_haematoxylin_and_eosin() -> None:
    import h5py

    from pcam import layout
    from tests.test_realdata import require, shared_data_dir

    path = layout.h5_path(shared_data_dir() / "pcam-sample", "valid", "x")
    require(path)
    with h5py.File(path, "r") as handle:
        images = np.asarray(handle["x"][:512])
    stains = fit_stains(images)
    assert _cosines(stains.stain_matrix, RUIFROK)[0] > 0.9
    assert stains.stain_matrix[1, 1] > stains.stain_matrix[0, 1]  # eosin absorbs more green
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StainNormalisationWarning)  # a few patches are glass
        normalised = normalise(images[:64], stains)
    refit = fit_stains(normalised)
    assert np.all(_cosines(refit.stain_matrix, stains.stain_matrix) > 0.99)
