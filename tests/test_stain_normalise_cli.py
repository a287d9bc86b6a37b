"""``--stain-normalise REF`` of ``pcam predict``, ``pcam evaluate`` and ``pcam app``.

The model must see exactly the normalised patches: each command's probabilities are compared,
exactly, with the model's own on :class:`pcam.stain.macenko.StainNormaliser`'s output, and
without the option with the model's on the patches as they are. A bad REF is one line, exit 1,
nothing written and no server started.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tensorflow")
from PIL import Image

from pcam.cli import main
from pcam.stain.macenko import StainNormaliser
from pcam.testing import generate
from pcam.testing.synthetic import write_arrays
from tests.test_macenko import BLUE_ORANGE, _concentrations, _render

WHITE_INDEX = 5
"""The patch of the test split that is glass only: it passes through unchanged."""


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny PCam-shaped model, saved without an optimizer."""
    import keras

    from pcam.testing.models import tiny_model

    path = tmp_path_factory.mktemp("stain-model") / "model.keras"
    compiled = tiny_model(seed=0)
    keras.Model(compiled.inputs, compiled.outputs).save(path)
    return path


@pytest.fixture(scope="module")
def model(model_path: Path) -> Any:
    from pcam.model.architectures import load_model

    return load_model(model_path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test split of 24 synthetic patches, one of them white (glass only)."""
    root = tmp_path_factory.mktemp("stain-data")
    batch = generate(24, seed=3)
    images = batch.images.copy()
    images[WHITE_INDEX] = 255
    write_arrays(root, "test", images, batch.labels)
    return root


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three reference patches in other stain colours (bluer nuclei, orange stroma), as PNG."""
    folder = tmp_path_factory.mktemp("stain-reference") / "reference"
    folder.mkdir()
    for index, image in enumerate(_render(_concentrations(30, 3), BLUE_ORANGE)):
        Image.fromarray(image).save(folder / f"ref-{index}.png")
    return folder


@pytest.fixture(scope="module")
def reference_json(reference_dir: Path) -> Path:
    path = reference_dir.parent / "reference.json"
    StainNormaliser.from_path(reference_dir).save(path)
    return path


def _images(data_dir: Path) -> npt.NDArray[np.uint8]:
    from pcam.data import open_split

    return open_split(data_dir, "test").read_images(slice(None))


def _expected(model: Any, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    from pcam.model.inference import tumour_probabilities

    return tumour_probabilities(model, images)


def _call(argv: Sequence[object]) -> int:
    try:
        return main([str(arg) for arg in argv])
    except SystemExit as stop:
        return int(stop.code or 0)


def _probabilities(path: Path) -> npt.NDArray[np.float64]:
    with path.open(newline="") as stream:
        return np.array([float(row["probability"]) for row in csv.DictReader(stream)])


def _normalised(reference: Path, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return StainNormaliser.from_path(reference, warn=False)(images)


# -- pcam predict ----------------------------------------------------------------------------------


def test_predict_gives_the_model_the_normalised_patches(
    model: Any,
    model_path: Path,
    data_dir: Path,
    reference_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h5 = data_dir / "camelyonpatch_level_2_split_test_x.h5"
    images = _images(data_dir)
    normalised = _normalised(reference_dir, images)
    np.testing.assert_array_equal(normalised[WHITE_INDEX], images[WHITE_INDEX])
    assert np.abs(normalised.astype(int) - images).mean() > 5.0  # a real change of colour

    plain, changed = tmp_path / "plain.csv", tmp_path / "changed.csv"
    assert _call(["predict", h5, "--model", model_path, "--out", plain]) == 0
    assert "stain" not in capsys.readouterr().out
    argv = ["predict", h5, "--model", model_path, "--out", changed]
    assert _call([*argv, "--stain-normalise", reference_dir]) == 0
    printed = capsys.readouterr()
    np.testing.assert_array_equal(_probabilities(plain), _expected(model, images))
    np.testing.assert_array_equal(_probabilities(changed), _expected(model, normalised))
    assert not np.array_equal(_probabilities(changed), _probabilities(plain))
    assert f"Macenko stain normalisation to {reference_dir} (3 images)" in printed.out
    assert printed.err.count("\n") == 1  # one warning for the whole run: the white patch
    assert printed.err.startswith(
        "pcam predict: warning: stain normalisation: 1 of 24 patches passed through unchanged"
    )


def test_predict_reads_a_saved_reference_as_the_images_it_came_from(
    model_path: Path, data_dir: Path, reference_dir: Path, reference_json: Path, tmp_path: Path
) -> None:
    h5 = data_dir / "camelyonpatch_level_2_split_test_x.h5"
    base = ["predict", h5, "--model", model_path, "--batch-size", "7"]  # several batches
    from_images, from_json = tmp_path / "images.csv", tmp_path / "json.csv"
    assert _call([*base, "--out", from_images, "--stain-normalise", reference_dir]) == 0
    assert _call([*base, "--out", from_json, "--stain-normalise", reference_json]) == 0
    np.testing.assert_array_equal(_probabilities(from_json), _probabilities(from_images))


def test_predict_normalises_image_files_too(
    model: Any, model_path: Path, reference_json: Path, tmp_path: Path
) -> None:
    images = generate(3, seed=8).images
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"p{index}.png")
    out = tmp_path / "out.csv"
    argv = ["predict", tmp_path, "--model", model_path, "--out", out]
    assert _call([*argv, "--stain-normalise", reference_json]) == 0
    expected = _expected(model, _normalised(reference_json, images))
    np.testing.assert_array_equal(_probabilities(out), expected)


# -- pcam evaluate ---------------------------------------------------------------------------------


@pytest.mark.slow  # two evaluations with their plots
def test_evaluate_scores_the_normalised_patches_and_records_the_reference(
    model: Any,
    model_path: Path,
    data_dir: Path,
    reference_json: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pcam.data import open_split
    from pcam.evaluation.metrics import classification_report

    base = ["evaluate", "--model", model_path, "--data", data_dir, "--bootstrap", "10"]
    assert _call([*base, "--out", tmp_path / "plain"]) == 0
    assert _call([*base, "--out", tmp_path / "changed", "--stain-normalise", reference_json]) == 0
    printed = capsys.readouterr()
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    changed = json.loads((tmp_path / "changed" / "metrics.json").read_text())
    assert "stain_normalisation" not in plain
    record = changed["stain_normalisation"]
    saved = json.loads(reference_json.read_text())
    assert record["stain_matrix"] == saved["stain_matrix"]
    assert record["max_concentrations"] == saved["max_concentrations"]
    assert record["patches_unchanged"] == 1
    images, labels = _images(data_dir), open_split(data_dir, "test").labels
    for report, shown in ((plain, images), (changed, _normalised(reference_json, images))):
        expected = classification_report(labels, _expected(model, shown), bootstrap_rounds=10)
        assert report["nll"] == expected["nll"]
        assert report["accuracy"] == expected["accuracy"]
    assert changed["nll"] != plain["nll"]
    assert f"Patches: Macenko stain normalisation to {reference_json}" in printed.out
    assert printed.err.count("pcam evaluate: warning: stain normalisation: 1 of 24") == 1


# -- pcam app --------------------------------------------------------------------------------------


def test_the_app_classifies_the_normalised_patches(
    model: Any,
    model_path: Path,
    reference_json: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pcam.serve.app import STAIN_REFERENCE_ENV, logic

    patches = generate(5, seed=9).images
    normaliser = StainNormaliser.from_path(reference_json, warn=False)
    monkeypatch.delenv(STAIN_REFERENCE_ENV, raising=False)
    plain = logic.load_classifier(model_path)
    assert plain.normaliser is None
    assert "stain" not in plain.probabilities
    np.testing.assert_array_equal(
        logic.predict(plain, patches).probabilities, _expected(model, patches).astype(np.float32)
    )
    monkeypatch.setenv(STAIN_REFERENCE_ENV, json.dumps(normaliser.to_dict()))
    changed = logic.load_classifier(model_path)  # the page's call: the reference comes along
    assert changed.normaliser is not None
    assert changed.normaliser.reference == normaliser.reference
    assert changed.probabilities.endswith(normaliser.describe())
    np.testing.assert_array_equal(
        logic.predict(changed, patches).probabilities,
        _expected(model, normaliser(patches)).astype(np.float32),
    )


def test_pcam_app_hands_the_reference_to_the_server(
    model_path: Path, reference_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("streamlit") is None:
        pytest.skip("pcam app needs Streamlit (Python 3.11 or newer)")
    from pcam.serve.app import STAIN_REFERENCE_ENV

    calls: list[tuple[list[str], dict[str, str] | None]] = []

    class Child:  # stands for the streamlit process
        def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
            calls.append((command, env))

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", Child)
    assert main(["app", "--model", str(model_path)]) == 0
    assert main(["app", "--model", str(model_path), "--stain-normalise", str(reference_dir)]) == 0
    (_, without), (command, env) = calls
    assert without is None  # the server's environment as it is
    assert env is not None
    handed = StainNormaliser.from_dict(json.loads(env[STAIN_REFERENCE_ENV]))
    assert handed.reference == StainNormaliser.from_path(reference_dir).reference
    assert "--stain-normalise" not in command


# -- bad references --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Each bad REF, with a phrase its error line must hold."""
    root = tmp_path_factory.mktemp("bad-references")
    white = root / "white.png"
    Image.fromarray(np.full((96, 96, 3), 255, np.uint8)).save(white)
    (root / "broken.json").write_text("{broken")
    (root / "empty").mkdir()
    return {
        "missing": (root / "absent.png", "no such file"),
        "background": (white, "background-only reference"),
        "json": (root / "broken.json", "invalid JSON"),
        "empty folder": (root / "empty", "no .png"),
    }


def _one_line_error(command: str, err: str, *words: str) -> None:
    assert err.startswith(f"pcam {command}: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("case", ["missing", "background", "json", "empty folder"])
def test_a_bad_reference_is_one_line_and_writes_nothing(
    case: str,
    bad_references: dict[str, tuple[Path, str]],
    model_path: Path,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reference, phrase = bad_references[case]
    h5 = data_dir / "camelyonpatch_level_2_split_test_x.h5"
    out = tmp_path / "out.csv"
    argv = ["predict", h5, "--model", model_path, "--out", out, "--stain-normalise", reference]
    assert _call(argv) == 1
    _one_line_error("predict", capsys.readouterr().err, phrase, str(reference))
    assert not out.exists()

    report = tmp_path / "report"
    argv = ["evaluate", "--model", model_path, "--data", data_dir, "--out", report]
    assert _call([*argv, "--stain-normalise", reference]) == 1
    _one_line_error("evaluate", capsys.readouterr().err, phrase, str(reference))
    assert not report.exists()

    if importlib.util.find_spec("streamlit") is not None:

        def no_server(*args: object, **kwargs: object) -> None:
            raise AssertionError("no server may start with a bad reference")

        monkeypatch.setattr(subprocess, "Popen", no_server)
        assert _call(["app", "--model", model_path, "--stain-normalise", reference]) == 1
        _one_line_error("app", capsys.readouterr().err, phrase, str(reference))


def test_the_option_is_in_each_commands_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("predict", "evaluate", "app"):
        assert _call([command, "--help"]) == 0
        assert "--stain-normalise REF" in capsys.readouterr().out
