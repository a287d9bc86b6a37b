"""``pcam export`` under its parity contract, and serving exported models without Keras.

Each format is exported and then run in its own runtime, called directly here
(``tf.saved_model.load``, ``onnxruntime.InferenceSession``, the LiteRT ``Interpreter``), on
synthetic patches and on the real PCam sample where it is present: the probabilities must equal
the Keras model's within 1e-5 (float32 models) at batch 64 and batch 1, and the SavedModel's
``explain`` signature must give :class:`pcam.explain.gradcam.GradCAM`'s maps within 1e-4.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
pytest.importorskip("ai_edge_litert")

from pcam.cli import main
from pcam.errors import PCamError
from pcam.serve.artifacts import (
    ArtifactInputError,
    Format,
    format_of,
    open_artifact,
    read_record,
    record_path,
)
from pcam.serve.export import (
    MIXED_PRECISION_TOLERANCE,
    ExportParityError,
    MissingConverterError,
    export_model,
)
from pcam.testing import generate, write_split
from tests.test_realdata import shared_data_dir

TOLERANCE = 1e-5
GRADCAM_TOLERANCE = 1e-4
FORMATS: tuple[Format, ...] = ("savedmodel", "onnx", "litert")
OUT_NAMES = {"savedmodel": "exported", "onnx": "model.onnx", "litert": "model.tflite"}
REPO = Path(__file__).resolve().parents[1]


# -- each format in its own runtime, called directly -------------------------------------------


# Each artifact is loaded once per test process (ResNet50's SavedModel takes seconds to load),
# keyed by path and modification time: a test that writes a new file gets a new session.
_LOADED: dict[tuple[str, str, int], Any] = {}


def _loaded(kind: str, path: Path, load: Callable[[], Any]) -> Any:
    key = (kind, str(path), path.stat().st_mtime_ns)
    if key not in _LOADED:
        _LOADED[key] = load()
    return _LOADED[key]


def run_saved_model(path: Path, images: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    import tensorflow as tf

    def load() -> Any:
        return tf.saved_model.load(str(path)).signatures["serving_default"]

    serve = _loaded("savedmodel", path / "saved_model.pb", load)
    return np.asarray(serve(patches=tf.constant(images))["tumour_probability"], np.float64)


def run_onnx(path: Path, images: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    import onnxruntime

    def load() -> Any:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    session = _loaded("onnx", path, load)
    assert [i.name for i in session.get_inputs()] == ["patches"]
    assert [o.name for o in session.get_outputs()] == ["tumour_probability"]
    return np.asarray(session.run(["tumour_probability"], {"patches": images})[0], np.float64)


def run_litert(path: Path, images: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    from ai_edge_litert.interpreter import Interpreter

    def load() -> Any:
        return Interpreter(model_path=str(path)).get_signature_runner("serving_default")

    runner = _loaded("litert", path, load)
    assert list(runner.get_input_details()) == ["patches"]
    return np.asarray(runner(patches=images)["tumour_probability"], np.float64)


RUNTIMES: dict[str, Callable[[Path, npt.NDArray[Any]], npt.NDArray[np.float64]]] = {
    "savedmodel": run_saved_model,
    "onnx": run_onnx,
    "litert": run_litert,
}


def keras_probabilities(model_path: Path, images: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
    """``model.predict`` of the saved Keras model: its head's tumour probability."""
    import keras

    model = _loaded("keras", model_path, lambda: keras.models.load_model(model_path))
    return np.asarray(model.predict(images, verbose=0), np.float64)[:, -1]


def synthetic_patches(n: int = 64, seed: int = 11) -> npt.NDArray[np.uint8]:
    return generate(n, seed=seed).images


def real_patches(n: int = 64) -> npt.NDArray[np.uint8]:
    from pcam.data import open_split

    root = shared_data_dir() / "pcam-sample"
    if not (root / "camelyonpatch_level_2_split_valid_x.h5").is_file():
        pytest.skip(f"real PCam data not available: {root} has no valid split")
    # a mix of both classes: the sample's first rows in order, and some from further on
    images: npt.NDArray[np.uint8] = open_split(root, "valid").read_images(list(range(0, 4 * n, 4)))
    return images


def check_parity(path: Path, fmt: str, model_path: Path, images: npt.NDArray[np.uint8]) -> None:
    """The artifact's probabilities equal Keras' within 1e-5, at batch 64 and at batch 1."""
    expected = keras_probabilities(model_path, images)
    run = RUNTIMES[fmt]
    batched = run(path, images)
    assert batched.shape == (len(images),)
    np.testing.assert_allclose(batched, expected, rtol=0, atol=TOLERANCE)
    for index in (0, len(images) // 2, len(images) - 1):
        single = run(path, images[index : index + 1])
        np.testing.assert_allclose(single, expected[index : index + 1], rtol=0, atol=TOLERANCE)
    # the probabilities say something: not all equal (a constant model would pass any parity)
    assert np.ptp(expected) > 1e-3


# -- the demo-sized model (a trained small CNN) ---------------------------------------------------


@pytest.fixture(scope="module")
def small_model(deterministic_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained small CNN of the deterministic run (pcam demo's architecture and recipe)."""
    folder = tmp_path_factory.mktemp("export-small")
    shutil.copy(deterministic_run / "model.keras", folder / "model.keras")
    return folder / "model.keras"


@pytest.fixture(scope="module")
def small_exports(small_model: Path) -> dict[str, Path]:
    """The small model exported in every format (once for the module)."""
    return {
        fmt: export_model(small_model, fmt, small_model.parent / OUT_NAMES[fmt]).path
        for fmt in FORMATS
    }


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_small_model_parity_on_synthetic_patches(
    small_exports: dict[str, Path], small_model: Path, fmt: str
) -> None:
    check_parity(small_exports[fmt], fmt, small_model, synthetic_patches())


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("fmt", FORMATS)
def test_small_model_parity_on_real_patches(
    small_exports: dict[str, Path], small_model: Path, fmt: str
) -> None:
    check_parity(small_exports[fmt], fmt, small_model, real_patches())


@pytest.mark.slow
def test_saved_model_explain_signature_equals_gradcam(
    small_exports: dict[str, Path], small_model: Path
) -> None:
    check_explain(small_exports["savedmodel"], small_model, synthetic_patches(seed=5))


def check_explain(path: Path, model_path: Path, images: npt.NDArray[np.uint8]) -> None:
    """``explain``: the tumour map at the default layer, the raw log-odds and the probability."""
    import tensorflow as tf

    from pcam.explain.gradcam import GradCAM
    from pcam.model import load_model
    from pcam.model.inference import tumour_log_odds, tumour_probabilities

    model = load_model(model_path)
    cam = GradCAM(model)
    explain = tf.saved_model.load(str(path)).signatures["explain"]
    explained = []
    for batch in (images, images[:1]):
        found = {key: value.numpy() for key, value in explain(patches=tf.constant(batch)).items()}
        assert sorted(found) == ["gradcam", "tumour_logit", "tumour_probability"]
        maps = cam.heatmaps(batch)
        assert found["gradcam"].shape == maps.shape == (len(batch), 3, 3)
        np.testing.assert_allclose(found["gradcam"], maps, rtol=0, atol=GRADCAM_TOLERANCE)
        np.testing.assert_allclose(
            found["tumour_logit"], tumour_log_odds(model, batch), rtol=0, atol=1e-4
        )
        np.testing.assert_allclose(
            found["tumour_probability"],
            tumour_probabilities(model, batch),
            rtol=0,
            atol=TOLERANCE,
        )
        explained.append(found["gradcam"])
    # maps that peak at 1 (or are empty: no positive evidence) and differ between patches
    peaks = explained[0].max(axis=(1, 2))
    assert np.all(np.isclose(peaks, 1.0) | (peaks == 0.0))
    assert np.mean(peaks == 1.0) > 0.25  # the tumour patches; a normal one may have none
    assert np.ptp(explained[0].reshape(len(images), -1), axis=0).max() > 0.1


@pytest.mark.slow
def test_the_export_record_says_what_the_artifact_is(
    small_exports: dict[str, Path], small_model: Path
) -> None:
    for fmt, path in small_exports.items():
        record = read_record(path)
        assert record is not None
        assert record["format"] == fmt
        assert record["input"] == {"name": "patches", "dtype": "uint8", "shape": [None, 96, 96, 3]}
        assert record["output"]["name"] == "tumour_probability"
        assert record["probabilities"]["calibrated"] is False
        assert record["parity"]["patches"] == 64
        assert record["parity"]["max_abs_difference"] <= TOLERANCE
        assert record["source_model"] == str(small_model)
        assert format_of(path) == fmt
    assert record_path(small_exports["onnx"]).name == "model.onnx.pcam.json"
    signatures = read_record(small_exports["savedmodel"])["signatures"]  # type: ignore[index]
    assert signatures["explain"]["gradcam_layer"] == "block4_pool"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_wrong_dtype_or_shape_is_one_line(small_exports: dict[str, Path], fmt: str) -> None:
    artifact = open_artifact(small_exports[fmt])
    floats = synthetic_patches(2).astype(np.float32)
    with pytest.raises(ArtifactInputError) as raised:
        artifact.probabilities(floats)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{small_exports[fmt]}: expected uint8 patches of shape ")
    assert "found float32 of shape [2, 96, 96, 3]" in message
    small = np.zeros((2, 64, 64, 3), np.uint8)
    with pytest.raises(ArtifactInputError, match=r"found uint8 of shape \[2, 64, 64, 3\]"):
        artifact.probabilities(small)
    if fmt == "savedmodel":  # the signature itself refuses another size (TF Serving's callers)
        import tensorflow as tf

        serve = tf.saved_model.load(str(small_exports[fmt])).signatures["serving_default"]
        with pytest.raises(Exception, match="96"):
            serve(patches=tf.constant(small))


# -- calibration, heads, mixed precision (tiny models: fast) ----------------------------------


def save_tiny(folder: Path, head: str = "dense_sigmoid", seed: int = 0) -> Path:
    import keras

    from pcam.testing.models import tiny_model

    compiled = tiny_model(seed=seed, head=head)  # type: ignore[arg-type]
    path = folder / "model.keras"
    keras.Model(compiled.inputs, compiled.outputs).save(path)
    return path


def test_a_calibrated_model_exports_its_calibrated_probabilities(tmp_path: Path) -> None:
    from pcam.model import load_model
    from pcam.model.inference import tumour_probabilities
    from pcam.model.temperature import write_calibration

    model_path = save_tiny(tmp_path, "logit", seed=3)
    write_calibration(model_path, 2.5, thresholds={}, details={}, overwrite=False)
    images = synthetic_patches(16, seed=2)
    calibrated = tumour_probabilities(load_model(model_path), images)
    raw = tumour_probabilities(load_model(model_path, calibration=False), images)
    assert np.max(np.abs(calibrated - raw)) > 1e-3  # the temperature matters on these patches

    result = export_model(model_path, "onnx", tmp_path / "calibrated.onnx")
    np.testing.assert_allclose(run_onnx(result.path, images), calibrated, rtol=0, atol=TOLERANCE)
    assert result.record["probabilities"]["calibrated"] is True
    assert result.record["probabilities"]["temperature"] == 2.5
    assert open_artifact(result.path).describe().startswith("calibrated probabilities (temperat")

    plain = export_model(model_path, "onnx", tmp_path / "plain.onnx", calibration=False)
    np.testing.assert_allclose(run_onnx(plain.path, images), raw, rtol=0, atol=TOLERANCE)
    assert plain.record["probabilities"]["calibrated"] is False


@pytest.mark.parametrize("head", ["softmax", "two_logits", "logit", "activation_sigmoid"])
def test_every_head_form_exports_the_tumour_probability(tmp_path: Path, head: str) -> None:
    from pcam.model import load_model
    from pcam.model.inference import tumour_probabilities

    model_path = save_tiny(tmp_path, head, seed=1)
    images = synthetic_patches(8, seed=4)
    expected = tumour_probabilities(load_model(model_path), images)
    result = export_model(model_path, "onnx", tmp_path / "model.onnx")
    np.testing.assert_allclose(run_onnx(result.path, images), expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_a_mixed_precision_model_exports_in_float32_within_its_tolerance(
    tmp_path: Path, fmt: Format
) -> None:
    """float16 multiplications are no LiteRT built-ins: the export is a float32 copy."""
    model_path = save_tiny(tmp_path, "mixed_activation_sigmoid", seed=2)
    images = synthetic_patches(16, seed=6)
    result = export_model(model_path, fmt, tmp_path / OUT_NAMES[fmt])
    found = RUNTIMES[fmt](result.path, images)
    expected = keras_probabilities(model_path, images)
    assert np.max(np.abs(found - expected)) <= MIXED_PRECISION_TOLERANCE
    assert result.record["mixed_precision"] is True
    assert result.record["parity"]["tolerance"] == MIXED_PRECISION_TOLERANCE


# -- where it writes, and what it refuses -------------------------------------------------------


def test_export_never_replaces_a_file_it_did_not_write(tmp_path: Path) -> None:
    model_path = save_tiny(tmp_path)
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"someone's model")
    for overwrite in (False, True):
        with pytest.raises(PCamError):
            export_model(model_path, "onnx", theirs, overwrite=overwrite)
        assert theirs.read_bytes() == b"someone's model"
    ours = export_model(model_path, "onnx", tmp_path / "ours.onnx").path
    with pytest.raises(PCamError, match="pass --overwrite"):
        export_model(model_path, "onnx", ours)
    (tmp_path / "ours.onnx.pcam.json").write_text("{}")  # a record that does not match
    with pytest.raises(PCamError, match="one changed since"):
        export_model(model_path, "onnx", ours, overwrite=True)
    ours.unlink()
    export_model(model_path, "onnx", ours)
    replaced = export_model(model_path, "onnx", ours, overwrite=True)  # pcam's own: replaced
    assert replaced.record["sha256"] == hashlib.sha256(ours.read_bytes()).hexdigest()
    ours.write_bytes(ours.read_bytes() + b"edited")  # changed since pcam wrote it: not pcam's
    with pytest.raises(PCamError, match="one changed since"):
        export_model(model_path, "onnx", ours, overwrite=True)


def test_a_saved_model_folder_with_a_users_file_is_never_replaced(tmp_path: Path) -> None:
    model_path = save_tiny(tmp_path)
    folder = tmp_path / "exported"
    export_model(model_path, "savedmodel", folder)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(PCamError):
        export_model(model_path, "savedmodel", folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"
    (folder / "notes.txt").unlink()
    export_model(model_path, "savedmodel", folder, overwrite=True)
    assert (folder / "saved_model.pb").is_file()


def test_a_failed_check_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pcam.serve.export as export

    model_path = save_tiny(tmp_path)

    def off_by_a_little(model: Any, images: Any, **kwargs: Any) -> Any:
        return np.full(len(images), 0.5) + 2e-5

    monkeypatch.setattr(export, "tumour_probabilities", off_by_a_little)
    for fmt in FORMATS:
        with pytest.raises(ExportParityError, match="within 1e-05"):
            export_model(model_path, fmt, tmp_path / OUT_NAMES[fmt])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_a_missing_converter_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_path = save_tiny(tmp_path)
    from keras.src.utils import module_utils

    # Keras imports tf2onnx through a lazy module: one for a package that is not installed
    # raises what Keras raises where tf2onnx is missing
    absent = module_utils.LazyModule("pcam_no_such_tf2onnx", pip_name="tf2onnx")
    monkeypatch.setattr(module_utils, "tf2onnx", absent)
    with pytest.raises(MissingConverterError) as raised:
        export_model(model_path, "onnx", tmp_path / "model.onnx")
    assert "pip install 'pcam[export]'" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


@pytest.mark.parametrize(
    ("fmt", "out", "expected"),
    [
        ("onnx", "model.tflite", "expected a file ending in .onnx for onnx"),
        ("litert", "model.onnx", "expected a file ending in .tflite for litert"),
        ("savedmodel", "model.onnx", "expected a folder for the SavedModel"),
    ],
)
def test_the_cli_refuses_a_path_of_another_format_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, out: str, expected: str
) -> None:
    model_path = save_tiny(tmp_path)
    status = main(["export", str(model_path), "--format", fmt, "--out", str(tmp_path / out)])
    err = capsys.readouterr().err
    assert status != 0
    assert expected in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_the_cli_exports_and_says_where_and_how_close(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path = save_tiny(tmp_path)
    out = tmp_path / "model.tflite"
    assert main(["export", str(model_path), "--format", "litert", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"exported litert to {out}: tumour_probability (uncalibrated")
    assert "parity with Keras on 64 patches in LiteRT" in line
    status = main(["export", str(tmp_path / "none.keras"), "--format", "onnx", "--out", "x.onnx"])
    err = capsys.readouterr().err
    assert status != 0
    assert "none.keras" in err
    assert err.count("\n") == 1


def test_open_artifact_refuses_what_is_not_an_export_in_one_line(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"\x00not a model")
    (tmp_path / "folder").mkdir()
    for path, found in [
        (tmp_path / "absent.onnx", "absent.onnx"),
        (tmp_path / "folder", "a folder without saved_model.pb"),
        (damaged, "one its runtime cannot load"),
    ]:
        with pytest.raises(PCamError) as raised:
            open_artifact(path)
        assert found in str(raised.value)
        assert "\n" not in str(raised.value)


# -- serving: pcam predict and the app -----------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny model, its ONNX and SavedModel exports, and a 40-patch test split."""
    folder = tmp_path_factory.mktemp("served")
    model_path = save_tiny(folder, seed=7)
    export_model(model_path, "onnx", folder / "model.onnx")
    export_model(model_path, "savedmodel", folder / "exported")
    write_split(folder / "data", "test", 40, seed=3)
    return model_path, folder / "model.onnx", folder / "data"


def read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


BLOCK_KERAS = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("keras", "tensorflow", "tf_keras"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
from pcam.cli import main
status = main(sys.argv[1:])
assert not any(m.split(".")[0] in ("keras", "tensorflow") for m in sys.modules), "imported"
sys.exit(status)
"""


@pytest.mark.slow
def test_predict_serves_an_onnx_model_where_keras_cannot_be_imported(
    served: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model_path, onnx_path, data = served
    x_file = data / "camelyonpatch_level_2_split_test_x.h5"
    out = tmp_path / "onnx.csv"
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_KERAS,
            "predict",
            str(x_file),
            "--model",
            str(onnx_path),
            *("--out", str(out)),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    assert "40 patches predicted" in child.stdout
    assert "uncalibrated probabilities (the exported onnx model's own)" in child.stdout
    assert (
        main(["predict", str(x_file), "--model", str(model_path), "--out", str(tmp_path / "k.csv")])
        == 0
    )
    rows, expected = read_csv(out), read_csv(tmp_path / "k.csv")
    assert [(r["source"], r["index"], r["label"]) for r in rows] == [
        (r["source"], r["index"], r["label"]) for r in expected
    ]
    np.testing.assert_allclose(
        [float(r["probability"]) for r in rows],
        [float(r["probability"]) for r in expected],
        rtol=0,
        atol=TOLERANCE,
    )


def test_predict_on_a_saved_model_folder_with_tta_matches_keras(
    served: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from pcam.serve.predict import predict

    model_path, _, data = served
    x_file = data / "camelyonpatch_level_2_split_test_x.h5"
    predict(served[1].parent / "exported", [x_file], tmp_path / "sm.csv", tta=True)
    predict(model_path, [x_file], tmp_path / "k.csv", tta=True)
    found = [float(r["probability"]) for r in read_csv(tmp_path / "sm.csv")]
    expected = [float(r["probability"]) for r in read_csv(tmp_path / "k.csv")]
    np.testing.assert_allclose(found, expected, rtol=0, atol=TOLERANCE)


def test_no_calibration_on_an_exported_model_is_one_line(
    served: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, onnx_path, data = served
    x_file = data / "camelyonpatch_level_2_split_test_x.h5"
    argv = ["predict", str(x_file), "--model", str(onnx_path), "--no-calibration"]
    assert main([*argv, "--out", str(tmp_path / "p.csv")]) != 0
    err = capsys.readouterr().err
    assert "an exported model has its calibration built in" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "p.csv").exists()


def test_the_app_serves_an_exported_model(served: tuple[Path, Path, Path]) -> None:
    from pcam.model import load_model
    from pcam.model.inference import tumour_probabilities
    from pcam.serve.app import logic

    model_path, onnx_path, _ = served
    classifier = logic.load_classifier(onnx_path, normaliser=None)
    images = synthetic_patches(5, seed=9)
    found = logic.predict(classifier, images).probabilities
    expected = tumour_probabilities(load_model(model_path), images)
    np.testing.assert_allclose(found, expected, rtol=0, atol=TOLERANCE)
    assert classifier.layers == ()
    assert logic.model_size(classifier).startswith("an exported onnx model, run by ONNX Runtime")
    assert "exported model serves probabilities only" in logic.no_gradcam_reason(classifier)
    assert classifier.probabilities == "uncalibrated probabilities (the exported onnx model's own)"


# -- ResNet50 ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_resnet50_in_every_format(tmp_path: Path) -> None:
    """ResNet50 (random weights: ImageNet's cannot be fetched here) under the whole contract.

    One test, not one per format: pytest-xdist would export ResNet50 once per worker otherwise.
    """
    from pcam.model import build_model

    model = build_model("resnet50", weights=None, seed=4)
    model.save(tmp_path / "model.keras")
    synthetic = synthetic_patches(seed=13)
    real = real_patches() if (shared_data_dir() / "pcam-sample").is_dir() else None
    for fmt in FORMATS:
        path = export_model(tmp_path / "model.keras", fmt, tmp_path / OUT_NAMES[fmt]).path
        check_parity(path, fmt, tmp_path / "model.keras", synthetic)
        if real is not None:
            check_parity(path, fmt, tmp_path / "model.keras", real)
    check_explain(tmp_path / "exported", tmp_path / "model.keras", synthetic_patches(16, seed=8))
    record = json.loads((tmp_path / "exported" / "pcam_export.json").read_text())
    assert record["signatures"]["explain"]["gradcam_layer"] == "conv5_block3_out"
