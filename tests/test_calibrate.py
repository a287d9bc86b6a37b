"""``pcam calibrate`` end to end, and every reader of the calibration file it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

pytest.importorskip("tensorflow")

from pcam.cli import main
from pcam.evaluation.temperature import TEMPERATURE_BOUNDS, calibrate, split_log_odds
from pcam.model.temperature import calibration_of, calibration_path, file_digest, sigmoid
from pcam.testing import write_split


@pytest.fixture(scope="module")
def trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for two epochs on the synthetic train split (run/model.keras)."""
    from pcam.data import make_dataset
    from pcam.testing.models import tiny_model

    run = tmp_path_factory.mktemp("calibrate-run")
    model = tiny_model(seed=2)
    model.fit(
        make_dataset(synthetic_root, "train", batch_size=64, shuffle=True, seed=0),
        epochs=2,
        verbose=0,
    )
    model.save(run / "model.keras")
    return run / "model.keras"


@pytest.fixture
def model_copy(trained: Path, tmp_path: Path) -> Path:
    """A fresh copy of the trained model, alone in its folder (no calibration file yet)."""
    (tmp_path / "run").mkdir()
    return Path(shutil.copy(trained, tmp_path / "run" / "model.keras"))


@pytest.fixture(scope="module")
def test_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic test split of 256 patches (another seed than train and valid)."""
    root = tmp_path_factory.mktemp("calibrate-test")
    write_split(root, "test", 256, seed=7)
    return root


def _scaled_head(model_path: Path, factor: float, out: Path) -> Path:
    """The same model with its logits multiplied by ``factor`` (kernel and bias scaled)."""
    from pcam.model.architectures import load_model
    from pcam.model.heads import head_of

    model = load_model(model_path, calibration=False)
    dense = head_of(model).dense
    dense.kernel.assign(dense.kernel * factor)
    dense.bias.assign(dense.bias * factor)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out


def test_calibrate_fits_on_valid_and_leaves_the_model_untouched(
    model_copy: Path, synthetic_root: Path
) -> None:
    digest = file_digest(model_copy)
    record = calibrate(model_copy, synthetic_root, "valid")
    assert file_digest(model_copy) == digest
    assert record["file"] == str(calibration_path(model_copy))
    low, high = TEMPERATURE_BOUNDS
    assert low <= record["temperature"] <= high
    assert record["temperature"] != 1.0
    assert record["fitted_on"]["split"] == "valid"
    assert record["fitted_on"]["patches"] == 512
    before, after = record["before"], record["after"]
    assert after["nll"] <= before["nll"]
    assert after["roc_auc"] == before["roc_auc"]  # a temperature never changes the ranking
    assert set(record["thresholds"]) == {
        f"{rate}_at_{fixed}_{level}"
        for rate, fixed in (("sensitivity", "specificity"), ("specificity", "sensitivity"))
        for level in ("0.90", "0.95", "0.98")
    }
    # the figures are those of the valid split's log-odds, recomputed here
    from pcam.model.architectures import load_model

    labels, log_odds = split_log_odds(load_model(model_copy), synthetic_root, "valid")
    nll_before = skm.log_loss(labels, np.clip(sigmoid(log_odds), 1e-7, 1 - 1e-7))
    assert before["nll"] == pytest.approx(nll_before, rel=1e-9)
    calibrated = sigmoid(log_odds / record["temperature"])
    assert after["brier"] == pytest.approx(skm.brier_score_loss(labels, calibrated), rel=1e-9)


def test_the_loaded_model_gives_calibrated_probabilities_everywhere(
    model_copy: Path, synthetic_root: Path
) -> None:
    from pcam.data import make_dataset
    from pcam.model.architectures import load_model
    from pcam.model.inference import tumour_log_odds, tumour_probabilities

    record = calibrate(model_copy, synthetic_root, "valid")
    images, _ = next(make_dataset(synthetic_root, "valid", batch_size=32).as_numpy_iterator())
    calibrated = load_model(model_copy)
    plain = load_model(model_copy, calibration=False)
    assert calibration_of(calibrated).temperature == record["temperature"]
    assert calibration_of(plain).temperature == 1.0
    assert calibration_of(plain).describe() == (
        "uncalibrated probabilities (calibration turned off)"
    )
    log_odds = tumour_log_odds(plain, images)
    assert tumour_log_odds(calibrated, images) == pytest.approx(log_odds, abs=0)
    expected = sigmoid(log_odds / record["temperature"])
    assert tumour_probabilities(calibrated, images) == pytest.approx(expected, abs=1e-12)
    raw = plain.predict_on_batch(images)[:, 0]
    assert tumour_probabilities(plain, images) == pytest.approx(raw, abs=0)
    assert sigmoid(log_odds) == pytest.approx(raw, abs=1e-6)  # the log-odds are the model's
    tta = tumour_probabilities(calibrated, images, tta=True)
    assert not np.allclose(tta, expected)  # the 8 views are calibrated and averaged
    assert np.all((tta > 0) & (tta < 1))


def test_a_sharper_head_gets_a_proportionally_higher_temperature(
    model_copy: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """Logits times 4 need T times 4, and then give the same calibrated probabilities."""
    sharp = _scaled_head(model_copy, 4.0, tmp_path / "sharp" / "model.keras")
    plain = calibrate(model_copy, synthetic_root, "valid")
    scaled = calibrate(sharp, synthetic_root, "valid")
    assert scaled["temperature"] == pytest.approx(4.0 * plain["temperature"], rel=1e-3)
    assert scaled["after"]["nll"] == pytest.approx(plain["after"]["nll"], rel=1e-6)
    assert scaled["before"]["nll"] != pytest.approx(plain["before"]["nll"], rel=1e-3)
    for key, entry in plain["thresholds"].items():
        assert scaled["thresholds"][key]["log_odds"] == pytest.approx(
            4.0 * entry["log_odds"], rel=1e-5
        )
        assert scaled["thresholds"][key]["probability"] == pytest.approx(
            entry["probability"], abs=1e-6
        )


def test_thresholds_reach_their_targets_on_valid_and_are_applied_to_test(
    model_copy: Path, synthetic_root: Path, test_root: Path, tmp_path: Path
) -> None:
    from pcam.evaluation.evaluate import evaluate

    record = calibrate(model_copy, synthetic_root, "valid")
    valid = evaluate(model_copy, synthetic_root, "valid", tmp_path / "valid", bootstrap_rounds=20)
    block = valid["operating_points"]
    assert block["thresholds_from"].startswith(f"chosen on the valid split of {synthetic_root}")
    for point in block["points"]:
        at = point["threshold"]
        chosen = record["thresholds"][point["key"]]["probability"]
        assert at["value"] == pytest.approx(chosen, rel=1e-12)
        fixed, other = (
            ("specificity", "sensitivity")
            if point["fix"] == "specificity"
            else ("sensitivity", "specificity")
        )
        assert at[fixed] >= point["level"]  # the target, reached where it was chosen
        assert at[other] == point["value"]  # and the best the curve allows there
    test = evaluate(model_copy, test_root, "test", tmp_path / "test", bootstrap_rounds=20)
    points = {p["key"]: p for p in test["operating_points"]["points"]}
    for key, entry in record["thresholds"].items():
        assert points[key]["threshold"]["value"] == pytest.approx(entry["probability"], rel=1e-12)
    assert test["probabilities"]["calibrated"] is True
    assert test["probabilities"]["fitted_on"]["split"] == "valid"


def test_without_a_calibration_file_nothing_changes_and_the_report_says_so(
    model_copy: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    from pcam.evaluation.evaluate import evaluate, format_table

    report = evaluate(model_copy, synthetic_root, "valid", tmp_path / "r", bootstrap_rounds=0)
    assert report["probabilities"]["calibrated"] is False
    assert report["probabilities"]["temperature"] == 1.0
    assert all(point["threshold"] is None for point in report["operating_points"]["points"])
    assert report["operating_points"]["thresholds_from"] is None
    table = format_table(report)
    assert "Probabilities: uncalibrated probabilities (no model.calibration.json" in table
    assert "thresholds: none (pcam calibrate chooses them on valid)" in table


def test_evaluate_reports_both_ways_from_the_same_file(
    model_copy: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    from pcam.evaluation.evaluate import evaluate

    record = calibrate(model_copy, synthetic_root, "valid")
    on = evaluate(model_copy, synthetic_root, "valid", tmp_path / "on", bootstrap_rounds=0)
    off = evaluate(
        model_copy, synthetic_root, "valid", tmp_path / "off", bootstrap_rounds=0, calibration=False
    )
    assert on["nll"] == pytest.approx(record["after"]["nll"], abs=1e-6)
    assert off["nll"] == pytest.approx(record["before"]["nll"], abs=1e-6)
    assert on["nll"] <= off["nll"]
    assert on["calibration"]["ece"] == pytest.approx(record["after"]["ece"], abs=1e-6)
    assert off["calibration"]["ece"] == pytest.approx(record["before"]["ece"], abs=1e-6)
    assert on["roc_auc"] == pytest.approx(off["roc_auc"], abs=1e-9)
    assert on["accuracy"] == off["accuracy"]  # sigmoid(z / T) >= 0.5 exactly when z >= 0


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_grad_cam_maps_are_unaffected_by_the_temperature(
    model_copy: Path, synthetic_root: Path, method: Any
) -> None:
    from pcam.data import make_dataset
    from pcam.explain.gradcam import GradCAM
    from pcam.model.architectures import load_model
    from pcam.model.inference import tumour_log_odds

    record = calibrate(model_copy, synthetic_root, "valid")
    images, _ = next(make_dataset(synthetic_root, "valid", batch_size=8).as_numpy_iterator())
    calibrated = load_model(model_copy)
    plain = load_model(model_copy, calibration=False)
    for class_index in (0, 1):
        maps, probabilities = GradCAM(calibrated, "conv2", method=method).explain(
            images, class_index
        )
        raw_maps, raw_probabilities = GradCAM(plain, "conv2", method=method).explain(
            images, class_index
        )
        assert np.array_equal(maps, raw_maps)
        assert maps.max() > 0
        log_odds = tumour_log_odds(plain, images)
        expected = sigmoid(log_odds / record["temperature"])
        assert probabilities == pytest.approx(expected, abs=1e-6)
        assert raw_probabilities == pytest.approx(sigmoid(log_odds), abs=1e-6)
        assert not np.allclose(probabilities, raw_probabilities, atol=1e-3)


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_folding_the_temperature_into_the_head_leaves_the_maps_alone(
    model_copy: Path, synthetic_root: Path, tmp_path: Path, method: Any
) -> None:
    """Why the maps may ignore T: the network with logits / T has the same Grad-CAM maps."""
    from pcam.data import make_dataset
    from pcam.explain.gradcam import GradCAM
    from pcam.model.architectures import load_model

    record = calibrate(model_copy, synthetic_root, "valid")
    folded_path = _scaled_head(
        model_copy, 1.0 / record["temperature"], tmp_path / "folded" / "model.keras"
    )
    images, _ = next(make_dataset(synthetic_root, "valid", batch_size=8).as_numpy_iterator())
    maps, probabilities = GradCAM(load_model(model_copy), "conv2", method=method).explain(images)
    folded_maps, folded_probabilities = GradCAM(
        load_model(folded_path), "conv2", method=method
    ).explain(images)
    assert folded_maps == pytest.approx(maps, abs=1e-5)
    assert folded_probabilities == pytest.approx(probabilities, abs=1e-5)


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_cli_calibrate_then_every_command_says_which_probabilities(
    model_copy: Path,
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--model", str(model_copy)]
    assert main(["calibrate", *base, "--data", str(synthetic_root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("temperature ")
    assert "fitted on valid (512 patches" in out
    assert f"calibration: {calibration_path(model_copy)}" in out
    temperature = json.loads(calibration_path(model_copy).read_text())["temperature"]

    assert main(["calibrate", *base, "--data", str(synthetic_root)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"pcam calibrate: error: {calibration_path(model_copy)}: expected a")
    assert line.endswith("pass --overwrite")

    h5 = synthetic_root / "camelyonpatch_level_2_split_valid_x.h5"
    csv_path = tmp_path / "p.csv"
    assert main(["predict", str(h5), *base, "--out", str(csv_path)]) == 0
    summary = capsys.readouterr().out.strip()
    assert summary.endswith(
        f"calibrated probabilities (temperature {temperature:.4g}, fitted on valid, from "
        f"{calibration_path(model_copy)})"
    )
    off = ["predict", str(h5), *base, "--out", str(tmp_path / "q.csv"), "--no-calibration"]
    assert main(off) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith("uncalibrated probabilities (calibration turned off)")
    )

    report = tmp_path / "report"
    assert main(["evaluate", *base, "--data", str(synthetic_root), "--split", "valid",
                 "--out", str(report), "--bootstrap", "10"]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert f"Probabilities: calibrated probabilities (temperature {temperature:.4g}" in table
    assert "thresholds chosen on the valid split" in table
    assert json.loads((report / "metrics.json").read_text())["probabilities"]["calibrated"]

    explained = tmp_path / "explained"
    assert main(["explain", *base, "--data", str(synthetic_root), "--n", "4",
                 "--out", str(explained)]) == 0  # fmt: skip
    assert "probabilities: calibrated probabilities" in capsys.readouterr().out
    saved = json.loads((explained / "explain.json").read_text())
    assert saved["probabilities"]["temperature"] == temperature


def test_a_calibration_file_of_another_model_stops_every_command_with_one_line(
    model_copy: Path,
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pcam.testing.models import tiny_model

    calibrate(model_copy, synthetic_root, "valid")
    tiny_model(seed=9).save(model_copy)  # trained again: the file no longer belongs to it
    h5 = synthetic_root / "camelyonpatch_level_2_split_valid_x.h5"
    base = ["--model", str(model_copy)]
    data = ["--data", str(synthetic_root)]
    commands = {
        "evaluate": ["evaluate", *base, *data, "--split", "valid", "--out", str(tmp_path / "r")],
        "predict": ["predict", str(h5), *base, "--out", str(tmp_path / "p.csv")],
        "explain": ["explain", *base, *data, "--n", "2", "--out", str(tmp_path / "e")],
    }
    for name, argv in commands.items():
        assert main(argv) == 1, name
        line = _one_line(capsys.readouterr().err)
        assert line.startswith(f"pcam {name}: error: {calibration_path(model_copy)}: expected")
        assert "found one fitted to another model file" in line
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == ["run"], name  # nothing half-written
    assert main([*commands["predict"], "--no-calibration"]) == 0
    capsys.readouterr()
    assert main(["calibrate", *base, *data, "--overwrite"]) == 0  # the way out it names
    capsys.readouterr()
    assert main([*commands["predict"][:-1], str(tmp_path / "again.csv")]) == 0


def test_calibrating_on_test_is_refused(
    model_copy: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pcam.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"split: expected valid \(or train\): a temp"):
        calibrate(model_copy, synthetic_root, "test")
    argv = ["calibrate", "--model", str(model_copy), "--data", str(synthetic_root)]
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--split", "test"])
    assert stopped.value.code == 2
    assert "invalid choice: 'test'" in capsys.readouterr().err
    assert not calibration_path(model_copy).exists()


def test_a_one_class_split_is_one_line_and_writes_nothing(
    model_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import h5py

    root = tmp_path / "data"
    write_split(root, "valid", 64, seed=3)
    with h5py.File(root / "camelyonpatch_level_2_split_valid_y.h5", "r+") as labels:
        labels["y"][...] = 0
    argv = ["calibrate", "--model", str(model_copy), "--data", str(root)]
    assert main(argv) == 1
    line = _one_line(capsys.readouterr().err)
    assert line == (
        "pcam calibrate: error: labels: expected both normal (0) and tumour (1) patches to fit "
        "a temperature on, found '64 patches of class 0 only'"
    )
    assert not calibration_path(model_copy).exists()


def test_the_app_reloads_when_the_calibration_file_changes(
    model_copy: Path, synthetic_root: Path
) -> None:
    from pcam.serve.app.logic import find_model, load_classifier

    source = find_model(model_copy)
    before = source.stamp
    assert before[2:] == (1, 0, 0)
    assert "uncalibrated" in load_classifier(model_copy).probabilities
    record = calibrate(model_copy, synthetic_root, "valid")
    assert source.stamp != before
    assert source.stamp[:3] == before[:3]
    classifier = load_classifier(model_copy)
    assert classifier.probabilities.startswith(
        f"calibrated probabilities (temperature {record['temperature']:.4g}"
    )
    off = find_model(model_copy, calibration=False)
    assert off.stamp[2:] == (0, 0, 0)
    assert "calibration turned off" in load_classifier(model_copy, calibration=False).probabilities


def test_the_readme_figure_tool_fits_on_half_and_draws_the_other(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.tool_modules import load_tool

    tool = load_tool("calibration_figure")
    argv = ["--data", str(synthetic_root), "--out", str(tmp_path / "docs"), "--epochs", "1"]
    assert tool.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("      fit (256 patches): NLL ")
    assert out[1].startswith(" held out (256 patches): NLL ")
    assert out[2].startswith("temperature ")
    assert out[2].endswith("(1 epochs, seed 0)")
    figure = tmp_path / "docs" / "calibration_real_sample.png"
    assert out[3] == f"figure: {figure}"
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_a_calibration_at_temperature_one_still_reads_the_log_odds(
    model_copy: Path, synthetic_root: Path
) -> None:
    """The thresholds were chosen on float64 log-odds: T = 1 must not fall back to float32."""
    from pcam.data import make_dataset
    from pcam.model.architectures import load_model
    from pcam.model.inference import tumour_log_odds, tumour_probabilities
    from pcam.model.temperature import write_calibration

    write_calibration(model_copy, 1.0, thresholds={}, details={}, overwrite=False)
    images, _ = next(make_dataset(synthetic_root, "valid", batch_size=64).as_numpy_iterator())
    model = load_model(model_copy)
    assert calibration_of(model).calibrated
    expected = sigmoid(tumour_log_odds(model, images))
    assert np.array_equal(tumour_probabilities(model, images), expected)
    raw = model.predict_on_batch(images)[:, 0].astype(np.float64)
    assert not np.array_equal(raw, expected)  # float32 rounding: the path matters
