"""Training: run directory contents, learning, resume after a kill, bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from pcam.cli import main
from pcam.outputs import write_marker
from tests.conftest import deterministic_config

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _epochs_logged(run: Path) -> list[int]:
    log = run / "training_log.csv"
    if not log.exists():
        return []
    with log.open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_small_model_trains_and_fills_the_run_directory(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from pcam.model.architectures import load_model
    from pcam.model.train import TrainConfig, train

    run = tmp_path / "run"
    history = train(
        TrainConfig(data=str(synthetic_root), out=str(run), model="small", epochs=4, seed=0),
        verbose=0,
    )
    assert max(history["val_accuracy"]) >= 0.9, history["val_accuracy"]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "small"
    assert config["epochs"] == 4
    assert _epochs_logged(run) == [0, 1, 2, 3]
    best = json.loads((run / "best.json").read_text())
    assert best["val_loss"] == pytest.approx(min(history["val_loss"]))
    assert load_model(run / "model.keras").output_shape == (None, 1)
    assert (run / "tensorboard").is_dir()
    assert not list(run.glob(".*partial*"))


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_right_epochs_and_bit_identical_weights(
    synthetic_root: Path, tmp_path: Path, deterministic_run: Path
) -> None:
    """SIGKILL in the middle of an epoch, then the same command: the uninterrupted run's weights."""
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "pcam",
        "train",
        "--data",
        str(synthetic_root),
        "--out",
        str(run),
        "--arch",
        "small",
        "--epochs",
        "4",
        "--batch-size",
        "64",
        "--max-train-samples",
        "512",
        "--patience",
        "10",
        "--seed",
        "0",
        "--deterministic",
    ]
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not _epochs_logged(run) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    assert first.poll() is None, "the run ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = _epochs_logged(run)
    assert 1 <= len(done_before) < 4
    from pcam.model.architectures import load_model

    load_model(run / "model.keras")  # the checkpoint on disk is whole
    second = subprocess.run(
        command, env=ENV, capture_output=True, text=True, timeout=600, check=False
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert _epochs_logged(run) == [0, 1, 2, 3]  # resumed: no epoch twice, none missing
    assert not (run / "backup").exists()  # removed once training finished
    _assert_same_weights(_final_weights(deterministic_run), _final_weights(run))
    expected = (deterministic_run / "training_log.csv").read_bytes()
    assert (run / "training_log.csv").read_bytes() == expected


def test_bad_input_is_one_line_and_writes_nothing(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pcam train: error:")
    assert len(err.strip().splitlines()) == 1
    assert not run.exists()
    with pytest.raises(SystemExit) as stop:
        main(["train", "--data", str(synthetic_root), "--out", str(run), "--lr", "2"])
    assert stop.value.code == 2
    assert "argument --lr: expected a number in (0, 1)" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.slow
def test_a_finished_run_is_not_trained_over_without_overwrite(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pcam.model.train import TrainConfig, train

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"a finished run's model")
    (run / "training_log.csv").write_text("epoch,loss\n0,0.5\n")
    write_marker(run, "run")  # as pcam train leaves it
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    argv = ["train", "--data", str(synthetic_root), "--out", str(run), "--arch", "small"]
    assert main(argv) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    history = train(
        TrainConfig(
            data=str(synthetic_root),
            out=str(run),
            model="small",
            epochs=1,
            max_train_samples=128,
            overwrite=True,
        ),
        verbose=0,
    )
    assert len(history["loss"]) == 1
    assert _epochs_logged(run) == [0]  # the old log was cleared, not appended to


@pytest.mark.slow
def test_precision_and_xla_follow_the_flags_and_default_off_without_a_gpu(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mixed precision and XLA are recorded in config.json and reach the compiled model."""
    import keras

    import pcam.model.train

    seen: dict[str, object] = {}
    fit = keras.Model.fit

    def spy_fit(model: keras.Model, *args: object, **kwargs: object) -> object:
        seen["jit_compile"] = model.jit_compile
        seen["policy"] = model.get_layer("block1_conv").dtype_policy.name
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy_fit)
    assert not pcam.model.train.gpu_present()
    common = ["--data", str(synthetic_root), "--arch", "small", "--epochs", "1"]
    common += ["--max-train-samples", "64", "--batch-size", "32"]
    assert main(["train", *common, "--out", str(tmp_path / "default")]) == 0
    assert seen == {"jit_compile": False, "policy": "float32"}
    config = json.loads((tmp_path / "default" / "config.json").read_text())
    assert config["mixed_precision"] is None
    assert config["xla"] is None
    flags = ["--mixed-precision", "--xla"]
    assert main(["train", *common, *flags, "--out", str(tmp_path / "forced")]) == 0
    assert seen == {"jit_compile": True, "policy": "mixed_float16"}
    config = json.loads((tmp_path / "forced" / "config.json").read_text())
    assert config["mixed_precision"] is True
    assert config["xla"] is True


@pytest.mark.slow
def test_batch_size_must_split_evenly_over_replicas(synthetic_root: Path, tmp_path: Path) -> None:
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import sys
from pcam.cli import main
sys.exit(main(["train", "--data", {str(synthetic_root)!r}, "--out", {str(tmp_path / "run")!r},
               "--arch", "small", "--strategy", "mirrored", "--batch-size", "33"]))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("pcam train")]
    assert lines == [
        "pcam train: error: batch_size: expected a multiple of the 2 replicas in sync, found 33"
    ], result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def _final_weights(run: Path) -> list[np.ndarray]:
    """The weights of the run's model, which must be its last epoch's (checked via best.json)."""
    from pcam.model.architectures import load_model

    assert json.loads((run / "best.json").read_text())["epoch"] == 4, "the last epoch is not best"
    return [np.asarray(w) for w in load_model(run / "model.keras").get_weights()]


def _assert_same_weights(left: list[np.ndarray], right: list[np.ndarray]) -> None:
    assert len(left) == len(right)
    for index, (a, b) in enumerate(zip(left, right, strict=True)):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b), f"weight {index} differs by up to {np.abs(a - b).max()}"


@pytest.mark.slow
def test_two_deterministic_runs_are_bit_identical_and_the_seed_matters(
    synthetic_root: Path, tmp_path: Path, deterministic_run: Path
) -> None:
    from pcam.model.architectures import load_model
    from pcam.model.train import train
    from pcam.testing import generate

    again = tmp_path / "again"
    train(deterministic_config(synthetic_root, again), verbose=0)
    _assert_same_weights(_final_weights(deterministic_run), _final_weights(again))
    log = (deterministic_run / "training_log.csv").read_bytes()
    assert (again / "training_log.csv").read_bytes() == log  # every logged digit
    patches = generate(64, seed=5).images
    first = load_model(deterministic_run / "model.keras").predict(patches, verbose=0)
    second = load_model(again / "model.keras").predict(patches, verbose=0)
    assert np.array_equal(first, second)

    other_seed = tmp_path / "seed1"
    train(deterministic_config(synthetic_root, other_seed, seed=1, epochs=1), verbose=0)
    assert (other_seed / "training_log.csv").read_bytes().splitlines()[1] != log.splitlines()[1]


def test_deterministic_ops_are_switched_on_only_inside_the_block() -> None:
    from tensorflow import random as tf_random
    from tensorflow.python.framework import config as tf_config

    from pcam.model.train import deterministic_ops

    assert not tf_config.is_op_determinism_enabled()
    with deterministic_ops(False, 0):
        assert not tf_config.is_op_determinism_enabled()
    with deterministic_ops(True, 7):
        assert tf_config.is_op_determinism_enabled()
        draw = float(tf_random.uniform([]))
    assert not tf_config.is_op_determinism_enabled()
    with deterministic_ops(True, 7):
        assert float(tf_random.uniform([])) == draw  # seeded from the seed given
    with deterministic_ops(True, 8):
        assert float(tf_random.uniform([])) != draw


class _Interrupt(Exception):
    """Stands for a crash in the middle of an epoch."""


@pytest.mark.slow
def test_a_run_interrupted_mid_epoch_resumes_bit_identical(
    synthetic_root: Path,
    tmp_path: Path,
    deterministic_run: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resumed run restores the loader's position, dropout draws and optimizer exactly."""
    import keras

    from pcam.model.train import train

    run = tmp_path / "run"
    batch_end = keras.callbacks.CSVLogger.on_train_batch_end
    seen = {"batches": 0}

    def crash_in_epoch_two(self: Any, batch: int, logs: Any = None) -> None:
        seen["batches"] += 1
        if seen["batches"] == 8 + 3:  # the 4th step of the 2nd epoch
            raise _Interrupt
        batch_end(self, batch, logs)

    monkeypatch.setattr(keras.callbacks.CSVLogger, "on_train_batch_end", crash_in_epoch_two)
    with pytest.raises(_Interrupt):
        train(deterministic_config(synthetic_root, run), verbose=0)
    monkeypatch.undo()
    assert _epochs_logged(run) == [0]
    assert (run / "backup" / "pcam_state.json").is_file()
    train(deterministic_config(synthetic_root, run), verbose=0)
    assert _epochs_logged(run) == [0, 1, 2, 3]
    _assert_same_weights(_final_weights(deterministic_run), _final_weights(run))
    expected = (deterministic_run / "training_log.csv").read_bytes()
    assert (run / "training_log.csv").read_bytes() == expected


@pytest.mark.parametrize(("flags", "expected"), [([], False), (["--deterministic"], True)])
def test_the_deterministic_flag_reaches_the_training_config(
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    expected: bool,
) -> None:
    import pcam.model.train

    seen: list[Any] = []

    def fake_train(config: Any, *, verbose: Any = "auto") -> dict[str, list[float]]:
        seen.append(config)
        return {"val_loss": [0.5], "val_accuracy": [0.9], "val_auc": [0.95]}

    monkeypatch.setattr(pcam.model.train, "train", fake_train)
    argv = ["train", "--data", str(synthetic_root), "--out", str(tmp_path / "run"), *flags]
    assert main(argv) == 0
    assert seen[0].deterministic is expected
