"""TensorFlow's C++ start-up log is kept off the ``pcam`` command's terminal (pcam.cli.quiet)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pcam.cli.quiet import _pump, is_noise
from pcam.testing.synthetic import write_split

LOGGED = [
    b"I0000 00:00:1795804244.312595   20984 port.cc:153] oneDNN custom operations are on.",
    b"I0000 00:00:1795804244.312934   20984 cudart_stub.cc:31] Could not find cuda drivers",
    b"E0000 00:00:1795804250.166873   20984 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    b"W0000 00:00:1795804250.1   7 gpu_device.cc:2342] Cannot dlopen some GPU libraries.",
    b"F1127 16:40:01.123456    12 some/dir/file.cc:7] fatal",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
KEPT = [
    b"pcam train: error: run: expected a folder this user can write into, found ...",
    b"pcam train: warning: Skipping variable loading for optimizer 'adam'",
    b"WARNING:tensorflow:5 out of the last 7 calls triggered tf.function retracing",
    b"I0000 is not a log line without its time and source",
    b"E0000 00:00:17 no pid or source here",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU. And then something else",
    b"",
]
SHOWN = re.compile(r"^[IWEF]\d{4} |cuInit|absl::InitializeLog", re.MULTILINE)


@pytest.mark.parametrize("line", LOGGED)
def test_tensorflow_log_lines_are_noise(line: bytes) -> None:
    assert is_noise(line)


@pytest.mark.parametrize("line", KEPT)
def test_pcam_lines_and_python_warnings_are_kept(line: bytes) -> None:
    assert not is_noise(line)


def _through_the_pump(chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    """Everything the pump writes for ``chunks``, and what had arrived after each chunk."""
    source_read, source_write = os.pipe()
    sink_read, sink_write = os.pipe()
    pump = threading.Thread(target=_pump, args=(source_read, sink_write))
    pump.start()
    os.set_blocking(sink_read, False)
    seen: list[bytes] = []
    for chunk in chunks:
        os.write(source_write, chunk)
        arrived = b""
        for _ in range(100):  # let the pump pass on what it will pass on at once
            threading.Event().wait(0.005)
            try:
                arrived += os.read(sink_read, 65536)
            except BlockingIOError:
                if arrived:
                    break
        seen.append(arrived)
    os.close(source_write)
    pump.join(timeout=5)
    os.close(sink_write)
    rest = b""
    while True:
        try:
            data = os.read(sink_read, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        rest += data
    os.close(sink_read)
    return b"".join(seen) + rest, seen


def test_the_pump_drops_the_log_keeps_the_rest_in_order_and_passes_progress_bars_at_once() -> None:
    everything, seen = _through_the_pump(
        [
            LOGGED[5] + b"\n" + LOGGED[0] + b"\npcam demo: 1/6 writing",
            b" synthetic data\n" + LOGGED[2][:30],
            LOGGED[2][30:] + b"\n\rpredicting:  50%|#####     | 1/2",
            b"\rpredicting: 100%|##########| 2/2\n" + LOGGED[6] + b"\nlast line, no newline",
        ]
    )
    assert everything == (
        b"pcam demo: 1/6 writing synthetic data\n"
        b"\rpredicting:  50%|#####     | 1/2"
        b"\rpredicting: 100%|##########| 2/2\n"
        b"last line, no newline"
    )
    assert seen[1] == b"pcam demo: 1/6 writing synthetic data\n"  # held only to its newline
    assert seen[2] == b"\rpredicting:  50%|#####     | 1/2"  # a progress bar goes at once


@pytest.mark.slow
def test_the_command_prints_only_its_own_lines(tmp_path: Path) -> None:
    """``pcam train`` and ``pcam evaluate`` as a user runs them: no TensorFlow C++ log."""
    data = tmp_path / "data"
    write_split(data, "train", 64, seed=0)
    write_split(data, "valid", 16, seed=1)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PCAM_TF_LOG")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    train = [sys.executable, "-m", "pcam", "train", "--data", str(data), "--out"]
    train += [str(tmp_path / "run"), "--arch", "small", "--epochs", "1", "--batch-size", "32"]
    evaluate = [sys.executable, "-m", "pcam", "evaluate", "--model"]
    evaluate += [str(tmp_path / "run" / "model.keras"), "--data", str(data), "--split", "valid"]
    for command in (train, [*evaluate, "--out", str(tmp_path / "report")]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert SHOWN.findall(result.stdout + result.stderr) == [], result.stderr
    assert "report:" in result.stdout
    shown = subprocess.run(
        [*evaluate, "--out", str(tmp_path / "again")],
        env={**env, "PCAM_TF_LOG": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    if not SHOWN.search(shown.stderr):
        pytest.skip("TensorFlow logged nothing at start-up on this machine: nothing to show")
    assert SHOWN.search(shown.stderr)  # PCAM_TF_LOG=1 gives the log back
