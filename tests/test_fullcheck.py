"""The full training check (``pcam fullcheck``, ``tox -e gpu``), proven here on a tiny budget.

On a GPU with full PCam the check trains ResNet50 and must reach 0.90 accuracy and 0.965 AUC on
the test split. Here (2 CPU cores, no GPU, no full data) the same code path runs on the real PCam
sample (2,048 train and 512 valid patches; no test split, so the floors apply to valid) with the
small model, 4 epochs and floors to match.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pcam import layout
from pcam.cli import main
from pcam.fullcheck import SUMMARY_FILE, floor_failures
from tests.test_realdata import SAMPLE_SIZES, require, shared_data_dir

REAL_EPOCHS = 4
REAL_FLOOR = {"accuracy": 0.70, "roc_auc": 0.80}
"""Floors on real patches never trained on (chance: 0.5 and 0.5). Measured: 0.78 accuracy and
0.88 AUC after 4 epochs, 0.797 and 0.892 after 8 (8-symmetry averaging); the 15-epoch run of the
README reaches about 0.82 and 0.90."""


def _sample() -> Path:
    sample = shared_data_dir() / "pcam-sample"
    require(layout.h5_path(sample, "train", "x"), layout.h5_path(sample, "valid", "x"))
    return sample


def _fullcheck(sample: Path, out: Path, *extra: str) -> list[str]:
    return [
        "fullcheck",
        "--data",
        str(sample),
        "--out",
        str(out),
        "--arch",
        "small",
        "--weights",
        "none",
        "--epochs",
        str(REAL_EPOCHS),
        "--batch-size",
        "64",
        "--lr",
        "1e-3",
        "--patience",
        "99",
        "--eval-split",
        "valid",
        *extra,
    ]


def _assert_one_line_error(err: str, prefix: str) -> None:
    assert "Traceback" not in err, err
    assert err.count("\n") == 1, f"not exactly one line: {err!r}"
    assert err.startswith(prefix), err


def test_floor_failures_name_each_missed_floor() -> None:
    metrics = {"accuracy": 0.91, "roc_auc": 0.96}
    assert floor_failures(metrics, min_accuracy=0.90, min_auc=0.96) == []
    (only,) = floor_failures(metrics, min_accuracy=0.90, min_auc=0.965)
    assert only.startswith("AUC on test is 0.9600, below the floor 0.9650"), only
    both = floor_failures(metrics, min_accuracy=0.95, min_auc=0.99, split="valid")
    assert [line.split(" is ")[0] for line in both] == ["accuracy on valid", "AUC on valid"]
    nan = floor_failures({"accuracy": math.nan, "roc_auc": 0.99}, min_accuracy=0.0, min_auc=0.0)
    assert len(nan) == 1, "a NaN accuracy must fail even a zero floor"


@pytest.mark.realdata
@pytest.mark.slow
def test_fullcheck_on_the_real_sample_passes_then_fails_a_raised_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole check on real patches; then, resumed after its summary is lost, a higher floor.

    The second call finds the finished run, evaluates it again without training (as after a
    crash between training and the verdict) and must exit 1, naming both floors it missed.
    """
    pytest.importorskip("tensorflow")
    sample, out = _sample(), tmp_path / "check"
    floors = [
        "--min-accuracy",
        str(REAL_FLOOR["accuracy"]),
        "--min-auc",
        str(REAL_FLOOR["roc_auc"]),
    ]
    assert main(_fullcheck(sample, out, *floors)) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "full training check passed" in stdout, stdout
    summary = json.loads((out / SUMMARY_FILE).read_text())
    print(f"real sample, {REAL_EPOCHS} epochs, small model: {summary['figures']}")
    assert summary["passed"] is True
    assert summary["failures"] == []
    assert summary["figures"]["split"] == "valid"
    assert summary["figures"]["tta"] is True
    assert summary["epochs_trained_this_session"] == REAL_EPOCHS
    assert summary["figures"]["accuracy"] >= REAL_FLOOR["accuracy"]
    assert summary["figures"]["auc"] >= REAL_FLOOR["roc_auc"]
    report = json.loads((out / "report" / "metrics.json").read_text())
    assert report["n"] == SAMPLE_SIZES["valid"]
    assert report["accuracy"] == summary["figures"]["accuracy"]
    for name in ("roc.png", "confusion_matrix.png", "training_curves.png"):
        assert (out / "report" / name).stat().st_size > 0, name
    assert (out / "explain" / "grid.png").stat().st_size > 0
    assert (out / "run" / "model.keras").is_file()
    assert not (out / "run" / "backup").exists(), "a finished run keeps no backup"
    # calibrated on valid before scoring: the temperature file, and its figures in the summary
    calibration = summary["calibration"]
    assert calibration["file"] == str(out / "run" / "model.calibration.json")
    stored = json.loads((out / "run" / "model.calibration.json").read_text())
    assert calibration["temperature"] == stored["temperature"]
    assert calibration["valid_after"]["nll"] <= calibration["valid_before"]["nll"]
    assert calibration["valid"]["ece"] == report["calibration"]["ece"]
    assert calibration["valid"]["nll"] == report["nll"]
    assert report["probabilities"]["calibrated"] is True
    assert calibration["operating_points"] == report["operating_points"]
    assert report["operating_points"]["thresholds_from"].startswith("chosen on the valid split")
    # the stain-shift robustness suite on the same split: robustness/ and its block
    shifted = json.loads((out / "robustness" / "robustness.json").read_text())
    block = summary["robustness"]
    assert block["split"] == "valid"
    assert block["patches"] == SAMPLE_SIZES["valid"]
    rows = {row["name"]: row for row in shifted["results"]}
    assert set(block["shifts"]) == set(rows)
    for name, row in rows.items():
        for key in ("accuracy", "roc_auc", "drop_accuracy", "drop_auc", "cam_correlation"):
            assert block["shifts"][name][key] == row[key], (name, key)
    strong = [rows[name]["drop_auc"] for name in ("hed-strong-h+", "hed-strong-e+")]
    assert block["mean_drop_auc_hed_strong"] == sum(strong) / 2
    assert block["worst_drop_auc"] == max(row["drop_auc"] for row in rows.values())
    assert (out / "robustness" / "robustness.png").stat().st_size > 0

    # A finished check is not silently redone
    assert main(_fullcheck(sample, out)) == 1
    _assert_one_line_error(capsys.readouterr().err, "pcam fullcheck: error: ")

    # The summary is lost (a crash before the verdict): no new training, a raised floor fails
    (out / SUMMARY_FILE).unlink()
    model_bytes = (out / "run" / "model.keras").read_bytes()
    assert main(_fullcheck(sample, out, "--min-accuracy", "0.99", "--min-auc", "0.999")) == 1
    captured = capsys.readouterr()
    assert "training finished earlier" in captured.out
    assert (out / "run" / "model.keras").read_bytes() == model_bytes, "the model was retrained"
    failures = captured.err.strip().splitlines()
    assert len(failures) == 2, captured.err
    assert failures[0].startswith("pcam fullcheck: failed: accuracy on valid is ")
    assert failures[1].startswith("pcam fullcheck: failed: AUC on valid is ")
    again = json.loads((out / SUMMARY_FILE).read_text())
    assert again["passed"] is False
    assert again["figures"]["accuracy"] == summary["figures"]["accuracy"]
    assert again["floors"] == {"accuracy": 0.99, "auc": 0.999}


def test_fullcheck_refuses_a_missing_evaluation_split_before_training(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "check"
    assert main(_fullcheck(synthetic_root, out, "--eval-split", "test")) == 1
    _assert_one_line_error(capsys.readouterr().err, "pcam fullcheck: error: ")
    assert not out.exists(), "nothing may be written before the inputs are checked"


def test_fullcheck_with_require_gpu_stops_at_once_without_a_gpu(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tf = pytest.importorskip("tensorflow")
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: --require-gpu lets the check run")
    out = tmp_path / "check"
    assert main(_fullcheck(synthetic_root, out, "--require-gpu")) == 1
    err = capsys.readouterr().err
    _assert_one_line_error(err, "pcam fullcheck: error: expected a GPU visible to TensorFlow")
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--min-accuracy", "1.5"), ("--min-auc", "-0.1"), ("--epochs", "0"), ("--lr", "2")],
)
def test_fullcheck_rejects_out_of_range_options(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["fullcheck", "--data", str(tmp_path), "--out", str(tmp_path / "out"), flag, value])
    assert stop.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, "pcam fullcheck: error: ")
