"""Distributed training on real ``tf.distribute`` strategies, against a single-device run.

``MirroredStrategy`` runs over two logical CPU devices of one process; ``MultiWorkerMirrored``
over two worker processes on 127.0.0.1 that find each other through ``TF_CONFIG``. Each is a
separate process (a strategy, or logical devices, must be set up before TensorFlow starts).
All three train the small model with the same settings; they must reach the same accuracy
within a tolerance (they see the same patches per epoch, cut into batches differently).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

pytestmark = pytest.mark.slow

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
EPOCHS = 3
FLOOR = 0.85
"""Validation accuracy every run must reach (chance is 0.5; one device gets ~0.95)."""
TOLERANCE = 0.08
"""Largest allowed difference in final validation accuracy and AUC from the one-device run."""

TRAIN_ONE = f"""
import json, sys
import tensorflow as tf
devices = int(sys.argv[3])
if devices > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * devices
    )
from pcam.model.train import TrainConfig, make_strategy, train
epochs = int(sys.argv[5]) if len(sys.argv) > 5 else {EPOCHS}
samples = int(sys.argv[6]) if len(sys.argv) > 6 else None
config = TrainConfig(data=sys.argv[1], out=sys.argv[2], model="small", epochs=epochs,
                     batch_size=64, strategy=sys.argv[4], patience={EPOCHS}, seed=0,
                     max_train_samples=samples, deterministic=True)
history = train(config, verbose=0)
print("HISTORY" + json.dumps(history))
"""


def _launch(
    data: Path,
    out: Path,
    *,
    devices: int,
    strategy: str,
    env: dict[str, str] | None = None,
    short: bool = False,
) -> subprocess.Popen[str]:
    """Train in a new process; ``short``: 2 epochs of 256 patches (enough to compare bits)."""
    extra = ["2", "256"] if short else []
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN_ONE, str(data), str(out), str(devices), strategy, *extra],
        env=env or ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _history(process: subprocess.Popen[str], timeout: float = 600) -> dict[str, list[float]]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"training did not finish in {timeout} s: {stderr[-3000:]}") from None
    assert process.returncode == 0, stderr[-3000:]
    history: dict[str, list[float]] = json.loads(stdout.split("HISTORY")[-1])
    return history


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _epochs_logged(log: Path) -> list[int]:
    with log.open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _assert_agrees(name: str, history: dict[str, list[float]], single: Sequence[float]) -> None:
    accuracy, auc = history["val_accuracy"][-1], history["val_auc"][-1]
    assert len(history["loss"]) == EPOCHS
    assert accuracy >= FLOOR, (name, accuracy)
    assert abs(accuracy - single[0]) <= TOLERANCE, (name, accuracy, "single device", single[0])
    assert abs(auc - single[1]) <= TOLERANCE, (name, auc, "single device", single[1])


@pytest.fixture(scope="module")
def single_device(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    """Final validation accuracy and AUC of the one-device run."""
    out = tmp_path_factory.mktemp("single") / "run"
    history = _history(_launch(synthetic_root, out, devices=1, strategy="default"))
    assert history["val_accuracy"][-1] >= FLOOR, history
    return [history["val_accuracy"][-1], history["val_auc"][-1]]


def test_mirrored_over_two_logical_cpus_agrees_with_one_device(
    synthetic_root: Path, tmp_path: Path, single_device: list[float]
) -> None:
    history = _history(_launch(synthetic_root, tmp_path / "run", devices=2, strategy="mirrored"))
    _assert_agrees("mirrored", history, single_device)


def test_mirrored_training_is_deterministic(synthetic_root: Path, tmp_path: Path) -> None:
    """Two deterministic mirrored runs over two logical CPUs: the same bits, log and model."""
    import numpy as np

    from pcam.model.architectures import load_model

    runs = [tmp_path / "first", tmp_path / "second"]
    launched = [
        _launch(synthetic_root, run, devices=2, strategy="mirrored", short=True) for run in runs
    ]
    histories = [_history(process) for process in launched]
    assert histories[0] == histories[1]
    logs = [(run / "training_log.csv").read_bytes() for run in runs]
    assert logs[0] == logs[1]
    weights = [load_model(run / "model.keras").get_weights() for run in runs]
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


def test_multiworker_over_two_processes_agrees_with_one_device(
    synthetic_root: Path, tmp_path: Path, single_device: list[float]
) -> None:
    """Two workers on 127.0.0.1 sharing one run directory, as on a shared disk."""
    run = tmp_path / "run"
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    workers = []
    for index in range(2):
        config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {**ENV, "TF_CONFIG": json.dumps(config)}
        workers.append(_launch(synthetic_root, run, devices=1, strategy="multiworker", env=env))
    try:
        histories = [_history(worker) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    _assert_agrees("multiworker chief", histories[0], single_device)
    # the workers trained one model together: they report the same all-reduced metrics
    assert histories[1]["val_accuracy"] == pytest.approx(histories[0]["val_accuracy"], abs=1e-6)
    assert histories[1]["loss"] == pytest.approx(histories[0]["loss"], abs=1e-6)
    # the chief owns the run directory; the other worker keeps its logs apart, and no model
    from pcam.model.architectures import load_model

    load_model(run / "model.keras")
    assert _epochs_logged(run / "training_log.csv") == list(range(EPOCHS))
    assert _epochs_logged(run / "worker-1" / "training_log.csv") == list(range(EPOCHS))
    assert not list((run / "worker-1").glob("*.keras"))
    assert not (run / "backup").exists()
    assert not list(run.glob("**/.*partial*"))
