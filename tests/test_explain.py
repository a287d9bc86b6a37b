"""``pcam explain``: grid, overlays, metrics on a split or image files; bad input; localisation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tensorflow")
from PIL import Image

import pcam
from pcam.cli import main
from pcam.data import open_split
from pcam.errors import InvalidArgumentError
from pcam.explain.explanation import read_patch_file, sample_indices
from pcam.explain.plots import overlay
from pcam.outputs import MARKER, read_marker

PNG = b"\x89PNG\r\n\x1a\n"
OUTPUTS = {"explain.json", "grid.png", "overlays"}


@pytest.fixture(scope="module")
def model_path(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model trained for 3 epochs on the synthetic train split (about 35 s).

    With the recipe the localisation margins below were measured on (RGB jitter, width 16,
    batches of 64), fixed here so that the Grad-CAM tests do not move with the training
    defaults. The defaults of issue 17 (HED light, width 32, batches of 32) localise less
    sharply on this data (pointing game 0.56-0.65, energy inside 0.11 over seeds 0 and 1;
    README, "Training recipe"); the notebook's floor guards that path.
    """
    from pcam.model.train import TrainConfig, train

    run = tmp_path_factory.mktemp("explain-run")
    config = TrainConfig(
        data=str(synthetic_root),
        out=str(run),
        model="small",
        epochs=3,
        seed=0,
        colour_augment="rgb",
        width=16,
        batch_size=64,
        patience=5,
    )
    train(config, verbose=0)
    return run / "model.keras"


@pytest.fixture(scope="module")
def patch_files(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four valid patches as image files: a folder (PNG, JPEG, TIFF) and a loose PNG."""
    root = tmp_path_factory.mktemp("patch-files")
    folder = root / "folder"
    folder.mkdir()
    images = open_split(synthetic_root, "valid").read_images(np.arange(4))
    Image.fromarray(images[0]).save(folder / "a.png")
    Image.fromarray(images[1]).save(folder / "b.jpg", quality=95)
    Image.fromarray(images[2]).save(folder / "c.tif")
    (folder / "notes.txt").write_text("not a patch: folders contribute image files only")
    Image.fromarray(images[3]).save(root / "a.png")  # the same stem as folder/a.png
    np.save(root / "pixels.npy", images)
    return root


def _call(argv: list[str | Path]) -> int:
    try:
        return main([str(arg) for arg in argv])
    except SystemExit as stop:
        return int(stop.code or 0)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- on a split ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_explain_a_split_writes_the_grid_overlays_and_metrics(
    model_path: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "explained"
    argv: list[str | Path] = ["explain", "--model", model_path, "--data", synthetic_root]
    argv += ["--split", "train", "--n", "8", "--layer", "block3_pool", "--out", out]
    assert _call(argv) == 0
    printed, err = capsys.readouterr()
    assert "pointing game" in printed
    assert "Traceback" not in err
    assert set(p.name for p in out.iterdir()) == {*OUTPUTS, MARKER}
    assert read_marker(out) == {
        "kind": "explanation",
        "pcam_version": pcam.__version__,
        "files": sorted(OUTPUTS),
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explained"]  # no staging left
    grid = out / "grid.png"
    assert grid.read_bytes().startswith(PNG)
    with Image.open(grid) as image:
        assert image.size[0] > 600
        assert image.size[1] > 600
    report = json.loads((out / "explain.json").read_text())
    assert report["layer"] == ["block3_pool"]
    assert report["layer_size"] == [6, 6]
    assert report["method"] == "gradcam"
    assert report["class_name"] == "tumour"
    indices = report["inputs"]["indices"]
    assert report["inputs"]["split"] == "train"
    assert indices == sorted(indices)
    patches = report["patches"]
    assert [p["label"] for p in patches].count(1) == 4  # balanced
    split = open_split(synthetic_root, "train")
    assert [p["label"] for p in patches] == split.labels[indices].tolist()
    import keras

    expected = keras.models.load_model(model_path).predict_on_batch(split.read_images(indices))
    np.testing.assert_allclose([p["probability"] for p in patches], expected[:, 0], atol=1e-4)
    overlays = sorted((out / "overlays").iterdir())
    assert [p.stem for p in overlays] == sorted(p["name"] for p in patches)
    with Image.open(overlays[0]) as image:
        assert (image.size, image.mode) == ((96, 96), "RGB")
    metrics = report["metrics"]
    assert metrics["names"] == [p["name"] for p in patches if p["label"] == 1]
    assert (metrics["with_mask"], metrics["without_mask"]) == (4, 0)
    assert metrics["random_grid"] == [6, 6]
    for side in ("cam", "random"):
        for key in ("pointing_game", "energy_inside", "deletion_auc", "insertion_auc"):
            assert 0.0 <= metrics[side][key] <= 1.0, (side, key)


@pytest.mark.slow
def test_an_existing_output_is_kept_and_only_pcams_own_is_overwritten(
    model_path: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv: list[str | Path] = ["explain", "--model", model_path, "--data", synthetic_root]
    argv += ["--n", "2", "--out", out]
    assert _call(argv) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    # --overwrite does not make a user's folder pcam's to delete
    assert _call([*argv, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"pcam explain: error: {out}: expected an explanation folder that pcam wrote, found a "
        f"folder without pcam's {MARKER}; choose another output path (pcam never deletes files "
        "it did not write)\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    (out / "keep.txt").unlink()
    assert _call(argv) == 0  # an empty folder is fine
    assert _call([*argv, "--overwrite"]) == 0  # and pcam's own output is replaced
    assert set(p.name for p in out.iterdir()) == {*OUTPUTS, MARKER}
    report = json.loads((out / "explain.json").read_text())
    assert report["inputs"]["split"] == "valid"  # the default split
    assert "with_mask" not in report["metrics"]  # valid has no mask: deletion/insertion only


def test_samples_are_balanced_sorted_and_seeded() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    chosen = sample_indices(labels, 16, seed=3)
    assert chosen.tolist() == sorted(set(chosen.tolist()))
    assert labels[chosen].sum() == 8
    assert sample_indices(labels, 16, seed=3).tolist() == chosen.tolist()
    assert sample_indices(labels, 16, seed=4).tolist() != chosen.tolist()
    assert labels[sample_indices(labels, 30, seed=0)].sum() == 10  # short of tumour: all of it
    assert labels[sample_indices(labels, 15, seed=0)].sum() == 8  # odd: tumour rounds up
    assert sample_indices(labels, 500, seed=0).tolist() == list(range(100))


# -- on image files --------------------------------------------------------------------------------


@pytest.mark.slow
def test_explain_image_files_and_folders(
    model_path: Path, patch_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "files"
    argv: list[str | Path] = ["explain", "--model", model_path]
    argv += [patch_files / "folder", patch_files / "a.png"]
    assert _call([*argv, "--out", out, "--method", "gradcam++"]) == 0
    printed = capsys.readouterr().out
    assert "image files" in printed
    report = json.loads((out / "explain.json").read_text())
    assert [p["name"] for p in report["patches"]] == ["a", "b", "c", "a-2"]
    assert all(p["label"] is None for p in report["patches"])
    assert report["layer"] == ["block4_pool"]  # GradCAM's default: the last spatial layer
    assert report["method"] == "gradcam++"
    assert report["metrics"]["patches"] == 4  # labels unknown: every patch
    assert "pointing_game" not in report["metrics"]["cam"]
    assert len(list((out / "overlays").glob("*.png"))) == 4


@pytest.mark.slow
def test_predicted_follows_the_threshold_given(
    model_path: Path, patch_files: Path, tmp_path: Path
) -> None:
    """``predicted`` in explain.json (and the grid's colours) use ``--threshold``, not 0.5."""
    argv: list[str | Path] = ["explain", "--model", model_path, patch_files / "folder"]
    assert _call([*argv, patch_files / "a.png", "--out", tmp_path / "default"]) == 0
    default = json.loads((tmp_path / "default" / "explain.json").read_text())
    assert default["threshold"] == 0.5
    probabilities = [p["probability"] for p in default["patches"]]
    assert [p["predicted"] for p in default["patches"]] == [int(p >= 0.5) for p in probabilities]
    ordered = sorted(probabilities)
    middles = [(low + high) / 2 for low, high in itertools.pairwise(ordered)]
    threshold = next(
        t for t in middles if [p >= t for p in probabilities] != [p >= 0.5 for p in probabilities]
    )
    out = tmp_path / "moved"
    assert _call([*argv, patch_files / "a.png", "--out", out, "--threshold", threshold]) == 0
    report = json.loads((out / "explain.json").read_text())
    assert report["threshold"] == pytest.approx(threshold)
    assert [p["probability"] for p in report["patches"]] == probabilities
    assert [p["predicted"] for p in report["patches"]] == [
        int(p >= threshold) for p in probabilities
    ]


def test_the_grid_colours_a_title_by_the_prediction_at_the_threshold() -> None:
    from pcam.explain.plots import _patch_title

    assert _patch_title("p", 0.7, 0) == ("p\np(tumour) 0.70, true normal", "tab:red")
    assert _patch_title("p", 0.7, 0, threshold=0.8)[1] == "tab:green"
    assert _patch_title("p", 0.8, 1, threshold=0.8)[1] == "tab:green"  # at the threshold: tumour
    assert _patch_title("p", 0.7, 1, threshold=0.8)[1] == "tab:red"
    assert _patch_title("p", 0.7, None, threshold=0.8)[1] == "black"


def test_patch_files_read_back_their_pixels(patch_files: Path) -> None:
    pixels = np.load(patch_files / "pixels.npy")
    np.testing.assert_array_equal(read_patch_file(patch_files / "folder" / "a.png"), pixels[0])
    np.testing.assert_array_equal(read_patch_file(patch_files / "folder" / "c.tif"), pixels[2])
    jpeg = read_patch_file(patch_files / "folder" / "b.jpg").astype(int)
    assert np.abs(jpeg - pixels[1]).mean() < 6  # lossy, but the same patch


def test_overlay_blends_the_patch_with_the_coloured_map() -> None:
    image = np.full((96, 96, 3), 200, dtype=np.uint8)
    heatmap = np.zeros((96, 96))
    heatmap[40:56, 40:56] = 1.0
    assert np.array_equal(overlay(image, heatmap, alpha=0.0), image)
    coloured = overlay(image, heatmap, alpha=1.0)
    assert coloured.dtype == np.uint8
    assert coloured[48, 48].tolist() != coloured[0, 0].tolist()  # jet: hot red, cold blue
    assert coloured[48, 48, 0] > 100 > coloured[0, 0, 0]
    with pytest.raises(InvalidArgumentError, match="upsample"):
        overlay(image, np.zeros((3, 3)))
    with pytest.raises(InvalidArgumentError, match="uint8"):
        overlay(image.astype(np.float32), heatmap)


# -- bad input: one line, exit status, nothing written ---------------------------------------------


def _bad_image(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.png"
    if kind == "wrong_size":
        Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(path)
    elif kind == "sixteen_bit":
        Image.fromarray(np.zeros((96, 96), np.uint16)).save(path)
    elif kind == "grey":
        Image.fromarray(np.zeros((96, 96), np.uint8)).save(path)
    elif kind == "corrupt":
        path.write_bytes(b"this is not an image")
    elif kind == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "empty_folder":
        path = folder / "empty"
        path.mkdir()
    elif kind == "missing":
        path = folder / "nowhere.png"
    return path


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        pytest.param("unknown_layer", 1, "layer: expected the name of one of the model's"),
        pytest.param("non_spatial_layer", 1, "expected a spatial layer (4-D output, side > 1)"),
        pytest.param("missing_model", 1, "expected a saved pcam model (.keras), found no such"),
        pytest.param("wrong_size", 1, "found a 128x96 image; PCam models take 96x96 patches"),
        pytest.param("sixteen_bit", 1, "found image mode I;16; save it as 8-bit RGB"),
        pytest.param("grey", 1, "found image mode L; save it as 8-bit RGB"),
        pytest.param("corrupt", 1, "found a file Pillow cannot read as an image"),
        pytest.param("truncated", 1, "found a file Pillow cannot read as an image"),
        pytest.param("empty_folder", 1, "found no .png, .jpg, .jpeg, .tif, .tiff files"),
        pytest.param("missing", 1, "nowhere.png: expected a 96x96 patch"),
        pytest.param("data_and_images", 2, "pass either --data DIR (with --split) or IMAGE"),
        pytest.param("no_input", 2, "pass either --data DIR (with --split) or IMAGE"),
        pytest.param("split_with_images", 2, "--split goes with --data DIR"),
        pytest.param("bad_method", 2, "argument --method: invalid choice"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(
    case: str,
    code: int,
    message: str,
    model_path: Path,
    synthetic_root: Path,
    patch_files: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model: Path = model_path
    inputs: list[Any] = ["--data", synthetic_root, "--split", "train"]
    options: list[Any] = []
    if case == "unknown_layer":
        options = ["--layer", "block9_conv"]
    elif case == "non_spatial_layer":
        options = ["--layer", "pcam_pool"]
    elif case == "missing_model":
        model = tmp_path / "nope.keras"
    elif case == "data_and_images":
        inputs += [patch_files / "a.png"]
    elif case == "no_input":
        inputs = []
    elif case == "split_with_images":
        inputs = [patch_files / "a.png", "--split", "train"]
    elif case == "bad_method":
        options = ["--method", "saliency"]
    else:
        inputs = [patch_files / "a.png", _bad_image(case, tmp_path)]
    before = _tree(tmp_path)
    out = tmp_path / "out"
    assert _call(["explain", "--model", model, *inputs, *options, "--out", out]) == code
    printed, err = capsys.readouterr()
    assert message in err
    assert err.count("\n") == 1, err
    assert err.startswith("pcam explain: error: "), err
    assert "Traceback" not in err
    assert printed == ""
    assert _tree(tmp_path) == before  # nothing written, not even the output directory


# -- localisation ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_grad_cam_finds_the_tumour_far_better_than_random_maps(
    model_path: Path, synthetic_root: Path
) -> None:
    """Measured on 48 tumour train patches (see the report for the numbers).

    At block3_pool (6x6) Grad-CAM's maximum falls in the tumour in 0.69-0.94 of the patches
    over three trainings (two seeds, two data sizes) against 0.13-0.14 for random 6x6 maps, and
    removing its most salient pixels lowers the probability much faster (deletion AUC 0.25-0.37
    against 0.68-0.71). The margins asserted are about half of the smallest measured.
    """
    from pcam.explain.cam_quality import cam_report
    from pcam.explain.gradcam import GradCAM
    from pcam.model.architectures import load_model

    model = load_model(model_path)
    split = open_split(synthetic_root, "train")
    tumour = np.flatnonzero(split.labels == 1)
    chosen = np.sort(np.random.default_rng(0).choice(tumour, 48, replace=False))
    images = split.read_images(chosen)
    masks: npt.NDArray[np.bool_] = split.read_mask(chosen)[..., 0]
    maps, probabilities = GradCAM(model, "block3_pool").explain(images, 1, size=(96, 96))
    assert probabilities.mean() > 0.8  # the model has learnt the tumour
    report = cam_report(
        model.predict_on_batch, images, maps, masks, steps=8, random_grid=(6, 6), seed=0
    )
    cam, noise = report["cam"], report["random"]
    print(json.dumps({key: report[key] for key in ("cam", "random", "mask_area")}))
    assert cam["pointing_game"] >= noise["pointing_game"] + 0.3, (cam, noise)
    assert cam["energy_inside"] >= noise["energy_inside"] + 0.04, (cam, noise)
    assert cam["deletion_auc"] <= noise["deletion_auc"] - 0.15, (cam, noise)
    assert cam["insertion_auc"] >= noise["insertion_auc"] + 0.05, (cam, noise)
