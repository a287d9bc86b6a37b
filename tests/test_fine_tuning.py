"""Two-phase fine-tuning: ``pcam train --init --unfreeze-from``, ``--weights none``, and the
full check's ``--two-phase`` recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from pcam.cli import main
from tests.conftest import deterministic_config

PHASE_TWO = ["--arch", "small", "--epochs", "1", "--batch-size", "64"]
PHASE_TWO += ["--max-train-samples", "128", "--lr", "1e-3", "--lr-schedule", "constant"]
FROZEN = ("block1_conv", "block1_bn", "block2_conv", "block2_bn", "block3_bn", "block4_bn")
TRAINED = ("block3_conv", "block4_conv", "pcam_tumour")


@pytest.fixture(scope="module")
def phase_one(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phase 1: the head alone on a frozen random backbone, one short epoch (seed 0)."""
    from pcam.model.train import train

    run = tmp_path_factory.mktemp("phase-one") / "run"
    config = deterministic_config(
        synthetic_root, run, epochs=1, max_train_samples=128, freeze_backbone=True
    )
    train(config, verbose=0)
    return run / "model.keras"


def _weights(path: Path) -> dict[str, list[Any]]:
    from pcam.model.architectures import load_model

    model = load_model(path)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def _largest_change(left: list[Any], right: list[Any]) -> float:
    return max(float(np.max(np.abs(a - b))) for a, b in zip(left, right, strict=True))


@pytest.mark.slow
def test_phase_two_starts_from_phase_one_and_trains_only_the_chosen_layers(
    synthetic_root: Path, phase_one: Path, tmp_path: Path
) -> None:
    """Layers before ``--unfreeze-from`` and every batch norm keep phase 1's weights exactly.

    Phase 2 runs with another seed, so a fresh initialisation would differ from phase 1
    everywhere; the trained layers move, but only as far as two Adam steps go.
    """
    from pcam.model.architectures import build_model

    run = tmp_path / "phase-two"
    argv = ["train", "--data", str(synthetic_root), "--out", str(run), *PHASE_TWO, "--seed", "1"]
    argv += ["--init", str(phase_one), "--unfreeze-from", "block3_conv", "--weights", "none"]
    assert main(argv) == 0
    before, after = _weights(phase_one), _weights(run / "model.keras")
    fresh = {layer.name: layer.get_weights() for layer in build_model("small", seed=1).layers}
    for name in FROZEN:
        for old, new in zip(before[name], after[name], strict=True):
            np.testing.assert_array_equal(new, old, err_msg=name)  # moving statistics too
    for name in TRAINED:
        moved = _largest_change(before[name], after[name])
        assert 0.0 < moved < 0.01, (name, moved)  # two steps of at most ~1e-3 each
    for name in ("block1_conv", "block3_conv"):
        assert _largest_change(before[name], fresh[name]) > 0.05  # seed 1 is another start
    config = json.loads((run / "config.json").read_text())
    assert (config["init"], config["unfreeze_from"]) == (str(phase_one), "block3_conv")
    assert config["weights"] is None


@pytest.mark.slow
def test_without_unfreeze_from_the_whole_backbone_trains_from_init(
    synthetic_root: Path, phase_one: Path, tmp_path: Path
) -> None:
    run = tmp_path / "all"
    argv = ["train", "--data", str(synthetic_root), "--out", str(run), *PHASE_TWO]
    assert main([*argv, "--init", str(phase_one)]) == 0
    before, after = _weights(phase_one), _weights(run / "model.keras")
    for name in ("block1_conv", "block3_conv", "pcam_tumour"):
        assert 0.0 < _largest_change(before[name], after[name]) < 0.01, name
    assert _largest_change(before["block1_bn"], after["block1_bn"]) > 0.0  # statistics update


@pytest.mark.parametrize("spelling", ["none", "None", "NONE"])
def test_train_takes_weights_none_like_fullcheck(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    import pcam.fullcheck
    import pcam.model.train

    seen: list[Any] = []

    def fake(config: Any, **_: Any) -> Any:
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(pcam.model.train, "train", fake)
    monkeypatch.setattr(pcam.fullcheck, "full_check", fake)
    out = str(tmp_path / "out")
    for argv in (
        ["train", "--data", str(synthetic_root), "--out", out, "--weights", spelling],
        ["fullcheck", "--data", str(synthetic_root), "--out", out, "--weights", spelling],
    ):
        with pytest.raises(SystemExit):
            main(argv)
    assert [config.weights for config in seen] == [None, None]


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("pcam train: error: "), err
    assert err.count("\n") == 1, err
    return err


def test_bad_fine_tuning_options_are_one_line_and_leave_no_run(
    synthetic_root: Path, phase_one: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    from pcam.testing.models import tiny_model

    other = tmp_path / "other.keras"
    tiny = tiny_model(seed=0)
    keras.Model(tiny.inputs, tiny.outputs).save(other)
    run = tmp_path / "run"
    base = ["train", "--data", str(synthetic_root), "--out", str(run), *PHASE_TWO]
    cases = [
        (["--init", str(tmp_path / "missing.keras")], "missing.keras: expected a saved pcam model"),
        (["--init", str(other)], "init: expected a pcam small model (the architecture of --model)"),
        (
            ["--init", str(phase_one), "--unfreeze-from", "block3_cnv"],
            "unfreeze_from: expected the name of a layer of the small backbone, such as "
            "'block3_conv'",
        ),
        (["--init", str(phase_one), "--weights", "imagenet"], "weights: expected none with init"),
        (
            ["--unfreeze-from", "block3_conv", "--freeze-backbone"],
            "freeze_backbone: expected off with unfreeze_from",
        ),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 1, extra
        assert message in _one_line(capsys), extra
        assert not run.exists(), extra
    run.mkdir()
    inside = run / "model.keras"
    inside.write_bytes(phase_one.read_bytes())
    assert main([*base, "--init", str(inside)]) == 1
    assert "init: expected a model outside the run folder" in _one_line(capsys)
    assert sorted(p.name for p in run.iterdir()) == ["model.keras"]


@pytest.mark.slow
def test_fullcheck_two_phase_trains_the_head_then_the_top_from_it(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from pcam.fullcheck import SUMMARY_FILE

    out = tmp_path / "check"
    argv = ["fullcheck", "--data", str(synthetic_root), "--out", str(out), "--arch", "small"]
    argv += ["--weights", "none", "--epochs", "2", "--batch-size", "64", "--lr", "1e-4"]
    argv += ["--max-train-samples", "128", "--eval-split", "valid", "--no-tta"]
    argv += ["--min-accuracy", "0", "--min-auc", "0", "--two-phase", "--head-epochs", "1"]
    argv += ["--head-lr", "2e-3"]
    assert main(argv) == 0
    head = json.loads((out / "run-head" / "config.json").read_text())
    tuned = json.loads((out / "run" / "config.json").read_text())
    assert (head["freeze_backbone"], head["lr"], head["epochs"]) == (True, 2e-3, 1)
    assert (tuned["lr"], tuned["epochs"]) == (1e-4, 2)
    assert tuned["init"] == str(out / "run-head" / "model.keras")
    assert tuned["unfreeze_from"] == "block4_conv"  # the small model's last stage
    assert (tuned["freeze_backbone"], tuned["weights"]) == (False, None)
    before, after = (
        _weights(out / "run-head" / "model.keras"),
        _weights(out / "run" / "model.keras"),
    )
    for name in ("block1_conv", "block3_conv", "block3_bn", "block4_bn"):
        assert _largest_change(before[name], after[name]) == 0.0, name
    for name in ("block4_conv", "pcam_tumour"):
        assert _largest_change(before[name], after[name]) > 0.0, name
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["config"]["two_phase"] is True
    assert summary["epochs_trained_this_session"] == 3
