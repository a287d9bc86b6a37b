"""``pcam evaluate``: predictions in file order, metrics.json, plots, one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from pcam.cli import main
from pcam.data import d4, open_split
from pcam.evaluation.evaluate import evaluate, format_table, predict_split

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained on the synthetic train split, saved with a Keras CSV log."""
    import keras

    from pcam.data import make_dataset
    from pcam.testing.models import tiny_model

    run = tmp_path_factory.mktemp("run")
    model = tiny_model(seed=1)
    model.fit(
        make_dataset(synthetic_root, "train", batch_size=64, shuffle=True, augment=True),
        validation_data=make_dataset(synthetic_root, "valid", batch_size=128, shuffle=False),
        epochs=3,
        verbose=0,
        shuffle=False,
        callbacks=[keras.callbacks.CSVLogger(str(run / "training_log.csv"))],
    )
    model.save(run / "model.keras")
    return run / "model.keras"


def _call(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


def test_report_has_every_field_and_every_plot(
    trained: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    report = evaluate(trained, synthetic_root, "valid", out, bootstrap_rounds=100)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for key in (
        "n",
        "threshold",
        "accuracy",
        "per_class",
        "macro_avg",
        "weighted_avg",
        "roc_auc",
        "nll",
        "confusion_matrix",
        "ci95",
        "model",
        "split",
        "tta",
    ):
        assert key in saved, key
    assert saved["n"] == 512
    assert saved["accuracy"] > 0.85, saved["accuracy"]
    assert saved["roc_auc"] > 0.9
    low, high = saved["ci95"]["accuracy"]
    assert low <= saved["accuracy"] <= high
    for name in (
        "roc.png",
        "confusion_matrix.png",
        "per_class.png",
        "reliability.png",
        "training_curves.png",
    ):
        assert (out / name).read_bytes()[:8] == PNG, name
    assert "ROC AUC" in format_table(report)


def test_predictions_are_in_file_order_and_match_model_predict(
    trained: Path, synthetic_root: Path
) -> None:
    from pcam.model.architectures import load_model

    model = load_model(trained)
    split = open_split(synthetic_root, "valid")
    labels, probabilities = predict_split(model, synthetic_root, "valid", batch_size=100)
    np.testing.assert_array_equal(labels, split.labels)
    expected = model.predict(split.read_images(slice(None)), verbose=0).reshape(-1)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_tta_averages_the_eight_symmetries(trained: Path, synthetic_root: Path) -> None:
    from pcam.model.architectures import load_model

    model = load_model(trained)
    images = open_split(synthetic_root, "valid").read_images(slice(0, 64))
    expected = np.mean(
        [
            model.predict(np.ascontiguousarray(d4.apply_one(images, c)), verbose=0).reshape(-1)
            for c in range(8)
        ],
        axis=0,
    )
    _, probabilities = predict_split(model, synthetic_root, "valid", batch_size=64, tta=True)
    np.testing.assert_allclose(probabilities[:64], expected, atol=1e-5)


def test_cli_evaluate_prints_the_table(
    trained: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    argv = [
        "evaluate",
        "--model",
        str(trained),
        "--data",
        str(synthetic_root),
        "--split",
        "valid",
        "--out",
        str(out),
        "--bootstrap",
        "50",
    ]
    assert _call(argv) == 0
    printed = capsys.readouterr().out
    assert "precision" in printed
    assert "weighted avg" in printed
    assert "ROC AUC" in printed
    assert (out / "metrics.json").exists()
    assert _call(argv) == 1  # the report exists: not replaced without --overwrite
    assert "pass --overwrite" in capsys.readouterr().err
    assert _call([*argv, "--overwrite"]) == 0


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("missing_model", 1, "expected a saved pcam model (.keras), found no such file"),
        ("corrupt_model", 1, "a file Keras cannot load"),
        ("missing_split", 1, "camelyonpatch_level_2_split_test_x.h5: expected an HDF5 file"),
        ("bad_threshold", 2, "argument --threshold: expected a number in (0, 1)"),
        ("bad_split", 2, "argument --split: invalid choice"),
    ],
)
def test_cli_evaluate_bad_input(
    case: str,
    code: int,
    message: str,
    trained: Path,
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model: Any = trained
    split, threshold = "valid", "0.5"
    if case == "missing_model":
        model = tmp_path / "nope.keras"
    elif case == "corrupt_model":
        model = tmp_path / "corrupt.keras"
        model.write_bytes(b"PK\x03\x04 truncated")
    elif case == "missing_split":
        split = "test"
    elif case == "bad_threshold":
        threshold = "1.5"
    else:
        split = "training"
    before = _tree(tmp_path)
    argv = [
        "evaluate",
        "--model",
        str(model),
        "--data",
        str(synthetic_root),
        "--split",
        split,
        "--out",
        str(tmp_path / "report"),
        "--threshold",
        threshold,
    ]
    assert _call(argv) == code
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert _tree(tmp_path) == before  # nothing written


def test_training_curves_read_the_keras_log(trained: Path) -> None:
    with (trained.parent / "training_log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
