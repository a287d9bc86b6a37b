"""``pcam predict`` and :mod:`pcam.data.patch_io`: CSV rows, streaming, TTA, fitting, errors."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tensorflow")
from PIL import Image

from pcam.cli import main
from pcam.data import open_split
from pcam.data.patch_io import PatchSizeError, decode_patch, fit_patch
from pcam.errors import PCamError
from pcam.serve.predict import PatchBatch, iter_patches, predict, write_predictions_csv
from pcam.testing import write_split

H5_NAME = "camelyonpatch_level_2_split_test_x.h5"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny PCam-shaped model, saved without an optimizer (a second or two)."""
    import keras

    from pcam.testing.models import tiny_model

    path = tmp_path_factory.mktemp("predict-model") / "model.keras"
    compiled = tiny_model(seed=0)
    keras.Model(compiled.inputs, compiled.outputs).save(path)
    return path


@pytest.fixture(scope="module")
def model(model_path: Path) -> Any:
    """The saved model, loaded once for the expected predictions."""
    import keras

    return keras.models.load_model(model_path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic PCam test split of 40 patches."""
    root = tmp_path_factory.mktemp("predict-data")
    write_split(root, "test", 40, seed=3)
    return root


@pytest.fixture(scope="module")
def patch_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three patches (PNG, JPEG, TIFF, and a text file) and a loose PNG."""
    root = tmp_path_factory.mktemp("predict-files")
    folder = root / "folder"
    folder.mkdir()
    pixels = np.random.default_rng(7).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels[0]).save(folder / "b.png")
    Image.fromarray(pixels[1]).save(folder / "a.jpg", quality=95)
    Image.fromarray(pixels[2]).save(folder / "c.tif")
    (folder / "notes.txt").write_text("not a patch")
    Image.fromarray(pixels[3]).save(root / "loose.png")
    return root


def _call(argv: list[str | Path]) -> int:
    try:
        return main([str(arg) for arg in argv])
    except SystemExit as stop:
        return int(stop.code or 0)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def _pixels(path: Path) -> npt.NDArray[np.uint8]:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _predict(model: Any, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    return np.asarray(model.predict_on_batch(images), dtype=np.float64).reshape(-1)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _one_line_error(err: str, printed: str, *words: str) -> None:
    assert err.startswith("pcam predict: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    assert printed == ""


# -- predictions -----------------------------------------------------------------------------------


def test_files_folders_and_an_h5_split_give_one_row_per_patch_in_order(
    model: Any,
    model_path: Path,
    data_dir: Path,
    patch_files: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, loose, h5 = patch_files / "folder", patch_files / "loose.png", data_dir / H5_NAME
    files = [folder / "a.jpg", folder / "b.png", folder / "c.tif", loose]
    split_images = open_split(data_dir, "test").read_images(slice(None))
    images = np.concatenate([np.stack([_pixels(f) for f in files[:3]]), split_images])
    images = np.concatenate([images, _pixels(loose)[np.newaxis]])
    expected = _predict(model, images)
    threshold = float(np.median(expected))  # an untrained model: both labels at its median
    out = tmp_path / "out.csv"
    argv: list[str | Path] = ["predict", "--model", model_path, folder, h5, loose]
    assert _call([*argv, "--out", out, "--batch-size", "16", "--threshold", str(threshold)]) == 0

    rows = _rows(out)
    assert list(rows[0]) == ["source", "index", "probability", "label"]
    sources = [str(f) for f in files[:3]] + [str(h5)] * 40 + [str(loose)]
    assert [row["source"] for row in rows] == sources
    assert [row["index"] for row in rows] == [""] * 3 + [str(i) for i in range(40)] + [""]
    probabilities = np.array([float(row["probability"]) for row in rows])
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    labels = ["tumour" if p >= threshold else "normal" for p in probabilities]
    assert [row["label"] for row in rows] == labels
    assert {"tumour", "normal"} == set(labels)
    printed, err = capsys.readouterr()
    assert printed.count("\n") == 1
    assert f"44 patches predicted ({labels.count('tumour')} tumour" in printed
    assert "patches/s; CSV: " in printed
    assert "Traceback" not in err


def test_an_h5_split_streams_in_batches_and_equals_one_shot_prediction(
    model: Any, data_dir: Path, tmp_path: Path
) -> None:
    h5 = data_dir / H5_NAME
    batches = list(iter_patches([h5], batch_size=16))
    assert [len(batch) for batch in batches] == [16, 16, 8]
    split_images = open_split(data_dir, "test").read_images(slice(None))
    np.testing.assert_array_equal(np.concatenate([b.images for b in batches]), split_images)
    assert [i for batch in batches for i in batch.indices] == list(range(40))

    done: list[int] = []
    out = tmp_path / "nested" / "predictions.csv"
    summary = predict(model, [h5], out, batch_size=16, progress=done.append)
    assert done == [16, 32, 40]
    assert (summary.patches, summary.fitted, summary.out) == (40, 0, str(out))
    probabilities = np.array([float(row["probability"]) for row in _rows(out)])
    np.testing.assert_allclose(probabilities, _predict(model, split_images), rtol=1e-5, atol=1e-6)


def test_mixed_batches_keep_every_patch_once_in_order(patch_files: Path, data_dir: Path) -> None:
    inputs = [patch_files / "loose.png", data_dir / H5_NAME, patch_files / "folder"]
    batches = list(iter_patches(inputs, batch_size=7))
    assert [len(batch) for batch in batches] == [7] * 6 + [2]
    indices = [i for batch in batches for i in batch.indices]
    assert indices == [None, *range(40), None, None, None]


def test_tta_is_the_mean_over_the_eight_symmetries(
    model: Any, model_path: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tta.csv"
    h5 = data_dir / H5_NAME
    assert _call(["predict", "--model", model_path, h5, "--tta", "--out", out]) == 0
    images = open_split(data_dir, "test").read_images(slice(None))
    views = [np.rot90(images, k, axes=(1, 2)) for k in range(4)]
    views += [np.rot90(images.transpose(0, 2, 1, 3), k, axes=(1, 2)) for k in range(4)]
    expected = np.mean([_predict(model, np.ascontiguousarray(v)) for v in views], axis=0)
    probabilities = np.array([float(row["probability"]) for row in _rows(out)])
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(probabilities, _predict(model, images), atol=1e-6)


def test_csv_to_standard_output_keeps_stdout_for_the_csv(
    model_path: Path, patch_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(tmp_path)
    assert _call(["predict", "--model", model_path, patch_files / "folder", "--out", "-"]) == 0
    printed, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(printed)))
    assert [row["source"] for row in rows] == [
        str(patch_files / "folder" / name) for name in ("a.jpg", "b.png", "c.tif")
    ]
    assert "3 patches predicted" in err
    assert "CSV: standard output" in err
    assert _tree(tmp_path) == before


# -- fitting ---------------------------------------------------------------------------------------


def test_fit_crop_takes_the_exact_centre_and_resize_matches_pillow(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    pixels = np.random.default_rng(3).integers(0, 256, (110, 131, 3), dtype=np.uint8)
    path = tmp_path / "big.png"
    PILImage.fromarray(pixels).save(path)

    crop, note = decode_patch(path, fit="crop")
    np.testing.assert_array_equal(crop, pixels[7:103, 17:113])  # (110-96)//2, (131-96)//2
    assert note == "centre-cropped from 131x110"
    resized, note = decode_patch(path.read_bytes(), fit="resize", name="upload.png")
    pillow = PILImage.fromarray(pixels).resize((96, 96), PILImage.Resampling.BILINEAR)
    np.testing.assert_array_equal(resized, np.asarray(pillow))
    assert note == "resized from 131x110"
    assert crop.shape == resized.shape == (96, 96, 3)
    assert crop.dtype == resized.dtype == np.dtype(np.uint8)

    same, note = fit_patch(crop, "resize")
    assert note is None  # 96x96 already: untouched whatever the fit
    assert same is crop
    with pytest.raises(PatchSizeError, match=r"upload\.png: .*found a 131x110 image; .*--fit crop"):
        decode_patch(path.read_bytes(), name="upload.png")
    with pytest.raises(PatchSizeError, match="found a 131x80 image; --fit crop needs both sides"):
        fit_patch(pixels[:80], "crop")


def test_wrong_size_names_fit_and_fitted_images_predict_as_their_patch(
    model: Any,
    model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pixels = np.random.default_rng(4).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    image = tmp_path / "wide.png"
    Image.fromarray(pixels).save(image)
    out = tmp_path / "out.csv"
    assert _call(["predict", "--model", model_path, image, "--out", out]) == 1
    printed, err = capsys.readouterr()
    _one_line_error(err, printed, "wide.png", "found a 100x120 image", "--fit crop", "--fit resize")
    assert not out.exists()

    assert _call(["predict", "--model", model_path, image, "--fit", "crop", "--out", out]) == 0
    assert "1 image fitted to 96x96" in capsys.readouterr()[0]
    probability = float(_rows(out)[0]["probability"])
    centre = np.ascontiguousarray(pixels[12:108, 2:98])[np.newaxis]
    np.testing.assert_allclose(probability, _predict(model, centre)[0], rtol=1e-5, atol=1e-6)


# -- bad input -------------------------------------------------------------------------------------


def _bad_input(case: str, root: Path, data_dir: Path) -> Path:
    path = root / f"{case}.png"
    if case == "corrupt":
        good = io.BytesIO()
        Image.fromarray(np.full((96, 96, 3), 90, np.uint8)).save(good, format="PNG")
        path.write_bytes(good.getvalue()[:60])
    elif case == "text":
        path.write_text("this is a text file named .png\n")
    elif case == "grey":
        Image.fromarray(np.zeros((96, 96), np.uint8)).save(path)
    elif case == "frames":
        path = root / "frames.tif"
        frames = [Image.fromarray(np.zeros((96, 96, 3), np.uint8)) for _ in range(2)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    elif case == "labels":
        path = data_dir / "camelyonpatch_level_2_split_test_y.h5"
    elif case == "data_dir":
        path = data_dir
    elif case == "empty_folder":
        path = root / "empty"
        path.mkdir()
    return path  # "missing": never written


@pytest.mark.parametrize(
    ("case", "message"),
    [
        pytest.param("corrupt", "found a file Pillow cannot read as an image"),
        pytest.param("text", "found a file Pillow cannot read as an image (not an image format"),
        pytest.param("missing", "missing.png: expected a patch image (PNG, JPEG or TIFF), a"),
        pytest.param("grey", "found image mode L; save it as 8-bit RGB"),
        pytest.param("frames", "found 2 frames; save one patch per file"),
        pytest.param("labels", "found the PCam labels file; pass camelyonpatch_level_2_split_te"),
        pytest.param("data_dir", "name its image file, such as "),
        pytest.param("empty_folder", "found no .png, .jpg, .jpeg, .tif, .tiff files"),
    ],
)
def test_bad_input_is_one_line_exit_1_and_writes_nothing(
    case: str,
    message: str,
    model_path: Path,
    patch_files: Path,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = _bad_input(case, tmp_path, data_dir)
    before = _tree(tmp_path)
    out = tmp_path / "out.csv"
    argv: list[str | Path] = ["predict", "--model", model_path, patch_files / "loose.png", bad]
    assert _call([*argv, "--out", out]) == 1
    printed, err = capsys.readouterr()
    _one_line_error(err, printed, message)
    assert _tree(tmp_path) == before  # no CSV, no temporary file


def test_an_existing_csv_is_replaced_only_with_overwrite(
    model_path: Path, patch_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("keep me\n")
    argv: list[str | Path] = ["predict", "--model", model_path, patch_files / "loose.png"]
    assert _call([*argv, "--out", out]) == 1
    printed, err = capsys.readouterr()
    _one_line_error(err, printed, "found an existing file", "--overwrite")
    assert out.read_text() == "keep me\n"
    # --overwrite replaces only a CSV pcam predict wrote, not the user's file of that name
    assert _call([*argv, "--out", out, "--overwrite"]) == 1
    printed, err = capsys.readouterr()
    _one_line_error(err, printed, "found a file whose first line is not source,", "choose")
    assert out.read_text() == "keep me\n"
    out.write_text("source,index,probability,label\nold.png,0,0.5,tumour\n")
    assert _call([*argv, "--out", out, "--overwrite"]) == 0
    assert [row["source"] for row in _rows(out)] == [str(patch_files / "loose.png")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text file named .keras, a .png named as a model, and a Keras model of the wrong shape."""
    import keras

    root = tmp_path_factory.mktemp("bad-models")
    (root / "text.keras").write_text("not a zip file")
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(root / "wrong_shape.keras")
    return root


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("missing.keras", "expected a saved pcam model (.keras), found no such file"),
        pytest.param("text.keras", "found a file Keras cannot load"),
        pytest.param("picture.png", "found a file ending in '.png'"),
        pytest.param(
            "wrong_shape.keras", "found a Keras model with input [B, 32, 32, 3] and output [B, 2]"
        ),
    ],
)
def test_bad_model_files_are_one_line_exit_1(
    name: str,
    message: str,
    bad_models: Path,
    patch_files: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out.csv"
    argv: list[str | Path] = ["predict", "--model", bad_models / name, patch_files / "folder"]
    assert _call([*argv, "--out", out]) == 1
    printed, err = capsys.readouterr()
    _one_line_error(err, printed, message)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_leaves_nothing_behind(tmp_path: Path) -> None:
    def results() -> Any:
        batch = PatchBatch(np.zeros((2, 96, 96, 3), np.uint8), ["a", "b"], [0, 1], [None, None])
        yield batch, np.array([0.2, 0.7])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_predictions_csv(results(), tmp_path / "new" / "deeper" / "p.csv")
    assert list(tmp_path.iterdir()) == []  # neither the CSV, its temporary file nor the folders

    stream = io.StringIO()
    assert write_predictions_csv(iter([]), stream) == (0, 0)
    assert stream.getvalue() == "source,index,probability,label\n"


def test_decode_errors_are_pcam_errors_with_one_line(tmp_path: Path) -> None:
    for data in (b"", b"GIF89a truncated", b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(PCamError) as caught:
            decode_patch(data)
        assert str(caught.value).startswith("upload: expected a 96x96 RGB patch")
        assert "\n" not in str(caught.value)
    with pytest.raises(PCamError, match="found a folder"):
        decode_patch(tmp_path)
