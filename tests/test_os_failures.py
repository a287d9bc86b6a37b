"""The operating system's failures: a full disk, a read-only folder, a path through a file.

Every command meets each of them with one line on stderr, exit 1, no traceback, and nothing
half-written; a run killed by a full disk resumes once there is room again.

Permissions are real: as root, the commands run under ``setpriv`` without ``CAP_DAC_OVERRIDE``
(root otherwise writes anywhere). File-size limits are real too: ``RLIMIT_FSIZE`` (``ulimit -f``)
makes the kernel refuse a write past the limit with ``EFBIG``, as a full disk refuses with
``ENOSPC``; Python ignores the ``SIGXFSZ`` that comes with it, so the write raises.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pcam import layout
from pcam.cli import describe_os_error, main
from pcam.model.backup import METADATA_FILE, WEIGHTS_FILE, discard_unusable_backup
from pcam.outputs import MARKER
from pcam.testing.synthetic import write_split
from tests.conftest import deterministic_config

ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONDONTWRITEBYTECODE": "1",
}
DROP_DAC = ["--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override"]


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def _pcam(
    argv: list[str | Path], *, cwd: Path, file_limit: int | None = None, unprivileged: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pcam ARGV``: under a file-size limit (bytes), or without root's override."""
    command = [sys.executable, "-m", "pcam", *map(str, argv)]
    if unprivileged and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permissions cannot bite")
        command = [setpriv, *DROP_DAC, *command]

    def limit() -> None:
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        command,
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
        check=False,
    )


def _error_lines(result: subprocess.CompletedProcess[str], command: str) -> list[str]:
    """The lines of ``pcam COMMAND: error: ...`` on stderr, after checking there is no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith(f"pcam {command}:")]


# -- describing the error --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "hint"),
    [
        (errno.ENOSPC, "free some space and run the same command again"),
        (errno.EFBIG, "the file grew past the size limit (ulimit -f"),
        (errno.EACCES, "check the folder's permissions"),
        (errno.EROFS, "the file system is read-only"),
        (errno.ENOTDIR, "a part of the path is a file, not a folder"),
    ],
)
def test_os_errors_become_one_line_with_the_path_and_a_hint(number: int, hint: str) -> None:
    error = OSError(number, os.strerror(number), "/data/out/metrics.json")
    assert describe_os_error(error) == (
        f"/data/out/metrics.json: expected a path to read or write, found the system error "
        f"{os.strerror(number)!r}; {_full_hint(hint)}"
    )


def _full_hint(start: str) -> str:
    from pcam.cli import OS_HINTS

    matches = [text for text in OS_HINTS.values() if text.startswith(start)]
    assert matches, start
    return matches[0]


def test_an_os_error_reaching_the_cli_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import pcam.cli.commands.check

    def full_disk(args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.h5"))

    monkeypatch.setattr(pcam.cli.commands.check, "run", full_disk)
    assert main(["check", "--data", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"pcam check: error: {tmp_path / 'x.h5'}: expected a path to read or write, found the "
        "system error 'No space left on device'; free some space and run the same command "
        "again (it starts or resumes cleanly)\n"
    )


# -- a path through a file -------------------------------------------------------------------------


@pytest.fixture
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("tiny") / "data"
    for split, n in (("train", 64), ("valid", 16), ("test", 16)):
        write_split(data, split, n, seed=len(split))
    return data


def _commands(data: Path, model: Path, out: Path) -> dict[str, list[str | Path]]:
    """Every command that writes, with ``out`` as its output."""
    x_file = layout.h5_path(data, "valid", "x")
    return {
        "synth": ["synth", "--out", out, "--n", "8", "--splits", "valid"],
        "download": ["download", "--out", out, "--splits", "valid"],
        "train": ["train", "--data", data, "--out", out, "--arch", "small", "--epochs", "1"],
        "evaluate": [
            "evaluate",
            "--model",
            model,
            "--data",
            data,
            "--split",
            "valid",
            "--out",
            out,
        ],
        "explain": ["explain", "--model", model, "--data", data, "--n", "2", "--out", out],
        "predict": ["predict", "--model", model, x_file, "--out", out / "p.csv"],
        "demo": ["demo", "--out", out],
        "fullcheck": [
            "fullcheck",
            "--data",
            data,
            "--out",
            out,
            "--arch",
            "small",
            "--weights",
            "none",
        ],
    }


@pytest.mark.slow
def test_every_command_refuses_a_path_through_a_file(
    tiny_data: Path,
    deterministic_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    monkeypatch.setenv("PCAM_DOWNLOAD_URL", "http://127.0.0.1:9/unused")
    commands = _commands(tiny_data, deterministic_run / "model.keras", blocker / "out")
    for name, argv in commands.items():
        assert main([str(part) for part in argv]) == 1, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1, (name, err)
        assert err.startswith(f"pcam {name}: error: {blocker}"), (name, err)
        assert "a file in the way" in err, (name, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert blocker.read_text() == "mine"


# -- a read-only folder ----------------------------------------------------------------------------


@pytest.mark.slow
def test_every_command_refuses_a_read_only_folder_before_working(
    tiny_data: Path, deterministic_run: Path, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    model = tmp_path / "model.keras"
    shutil.copy(deterministic_run / "model.keras", model)
    locked.chmod(0o555)
    try:
        for name, argv in _commands(tiny_data, model, locked / "out").items():
            result = _pcam(argv, cwd=tmp_path, unprivileged=True)
            assert result.returncode == 1, (name, result.stderr)
            lines = _error_lines(result, name)
            assert lines == [
                f"pcam {name}: error: {locked}: expected a folder this user can write into, "
                "found a folder without write permission; choose another output path or fix "
                "its permissions"
            ], (name, result.stderr)
            assert list(locked.iterdir()) == [], name
    finally:
        locked.chmod(0o755)


# -- a full disk (a file-size limit) ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "limit", "written"),
    [
        ("evaluate", 4096, "report"),
        ("explain", 4096, "explained"),
        ("predict", 300, "p.csv"),
        ("synth", 100_000, "synthetic"),
    ],
)
def test_a_full_disk_after_the_work_is_one_line_and_leaves_nothing(
    tiny_data: Path,
    deterministic_run: Path,
    tmp_path: Path,
    command: str,
    limit: int,
    written: str,
) -> None:
    model = tmp_path / "model.keras"
    shutil.copy(deterministic_run / "model.keras", model)
    work = tmp_path / "work"
    work.mkdir()
    commands: dict[str, list[str | Path]] = {
        "evaluate": ["evaluate", "--model", model, "--data", tiny_data, "--split", "valid"],
        "explain": ["explain", "--model", model, "--data", tiny_data, "--n", "4"],
        "predict": ["predict", "--model", model, layout.h5_path(tiny_data, "valid", "x")],
        "synth": ["synth", "--out", work / written, "--n", "64", "--splits", "valid"],
    }
    argv = commands[command]
    if command != "synth":
        argv = [*argv, "--out", work / written]
    result = _pcam(argv, cwd=tmp_path, file_limit=limit)
    assert result.returncode == 1, result.stderr
    lines = _error_lines(result, command)
    assert len(lines) == 1, result.stderr
    assert "'File too large'; the file grew past the size limit" in lines[0]
    leftovers = sorted(p.name for p in work.rglob("*") if p.name != MARKER)
    assert leftovers == [] if command != "synth" else leftovers == ["synthetic"], leftovers


@pytest.mark.slow
def test_a_full_disk_while_the_model_is_saved_leaves_nothing_and_the_run_starts_again(
    tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    argv: list[str | Path] = ["train", "--data", tiny_data, "--out", run, "--arch", "small"]
    argv += ["--epochs", "1", "--batch-size", "32"]
    result = _pcam(argv, cwd=tmp_path, file_limit=200_000)  # the model is about 1.3 MB
    assert result.returncode == 1, result.stderr
    assert _error_lines(result, "train") == [
        f"pcam train: error: {run / 'model.keras'}: expected a path to read or write, found the "
        "system error 'File too large'; the file grew past the size limit (ulimit -f, or the "
        "file system's): raise it or choose another path"
    ]
    assert not run.exists()  # no epoch finished: no half-started run, no hidden partial model
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    again = _pcam(argv, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (run / "model.keras").is_file()


class _DiskFull(OSError):
    def __init__(self) -> None:
        super().__init__(errno.ENOSPC, "No space left on device")


@pytest.mark.slow
def test_a_full_disk_while_the_backup_is_written_keeps_the_last_one_and_resumes_exactly(
    synthetic_root: Path,
    tmp_path: Path,
    deterministic_run: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fills while epoch 2's backup is written; the same command resumes from epoch 1.

    Half a weights file is written before the write fails, as on a real full disk. The resumed
    run equals an uninterrupted one bit for bit.
    """
    import keras

    from pcam.model.train import train

    run = tmp_path / "run"
    save_weights = keras.Model.save_weights
    calls = {"n": 0}

    def fill_the_disk(self: Any, filepath: str, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            Path(filepath).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 1000)  # half a file
            raise _DiskFull
        save_weights(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", fill_the_disk)
    with pytest.raises(OSError, match="No space left"):
        train(deterministic_config(synthetic_root, run), verbose=0)
    monkeypatch.undo()
    backup = run / "backup"
    assert sorted(p.name for p in backup.iterdir()) == sorted(
        [METADATA_FILE, WEIGHTS_FILE, "pcam_state.json"]
    )  # the last complete backup, no partial file
    assert '"epoch": 1' in (backup / METADATA_FILE).read_text()
    assert discard_unusable_backup(backup) is None
    assert not [p for p in run.iterdir() if ".partial-" in p.name]

    train(deterministic_config(synthetic_root, run), verbose=0)
    expected = (deterministic_run / "training_log.csv").read_bytes()
    assert (run / "training_log.csv").read_bytes() == expected
    _assert_same_weights(deterministic_run / "model.keras", run / "model.keras")


@pytest.mark.slow
def test_a_truncated_backup_is_discarded_with_one_warning_and_the_run_starts_again(
    synthetic_root: Path,
    tmp_path: Path,
    deterministic_run: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backup damaged outside pcam (an old version, a disk error) cannot stop the run."""

    from pcam.model.train import train

    run = tmp_path / "run"
    _stop_after_the_log_of_epoch(monkeypatch, 1, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        train(deterministic_config(synthetic_root, run), verbose=0)
    monkeypatch.undo()
    weights = run / "backup" / WEIGHTS_FILE
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(deterministic_config(synthetic_root, run), verbose=0)
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert f"{run / 'backup'}: expected a complete training backup, found an unreadable " in (
        messages[0] if messages else ""
    )
    assert messages[0].endswith(
        "latest.weights.h5; it was removed and training starts again from epoch 1"
    )
    # started afresh: the same log and weights as an uninterrupted run, no duplicated epochs
    expected = (deterministic_run / "training_log.csv").read_bytes()
    assert (run / "training_log.csv").read_bytes() == expected
    _assert_same_weights(deterministic_run / "model.keras", run / "model.keras")


def test_unusable_backups_are_told_apart_from_usable_ones(tmp_path: Path) -> None:
    import h5py

    backup = tmp_path / "backup"
    assert discard_unusable_backup(backup) is None  # none at all
    backup.mkdir()
    assert discard_unusable_backup(backup) is None  # made, nothing in it yet
    with h5py.File(backup / WEIGHTS_FILE, "w") as handle:
        handle.create_dataset("layers/dense/vars/0", data=np.arange(6.0))
    (backup / METADATA_FILE).write_text('{"epoch": 2, "batch": 0}')
    assert discard_unusable_backup(backup) is None
    (backup / METADATA_FILE).write_text('{"epoch": "two"}')
    problem = discard_unusable_backup(backup)
    assert problem == (
        f"{backup}: expected a complete training backup, found an unreadable "
        "training_metadata.json; it was removed and training starts again from epoch 1"
    )
    assert not backup.exists()
    backup.mkdir()
    (backup / METADATA_FILE).write_text('{"epoch": 2}')
    with h5py.File(backup / WEIGHTS_FILE, "w"):
        pass
    assert discard_unusable_backup(backup) == (
        f"{backup}: expected a complete training backup, found a latest.weights.h5 without "
        "weights; it was removed and training starts again from epoch 1"
    )


def _assert_same_weights(first: Path, second: Path) -> None:
    from pcam.model.architectures import load_model

    a = load_model(first).get_weights()
    b = load_model(second).get_weights()
    assert len(a) == len(b)
    for left, right in zip(a, b, strict=True):
        assert np.array_equal(left, right)


# -- SIGTERM ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_during_predict_stops_like_ctrl_c_and_leaves_nothing(
    synthetic_root: Path, deterministic_run: Path, tmp_path: Path
) -> None:
    """``timeout``, systemd, Docker and Slurm stop with SIGTERM: no ``.part``, no new folders."""
    import signal
    import time

    x_file = layout.h5_path(synthetic_root, "train", "x")
    out = tmp_path / "made" / "for" / "p.csv"
    command = [sys.executable, "-m", "pcam", "predict", "--model"]
    command += [str(deterministic_run / "model.keras"), *[str(x_file)] * 20, "--out", str(out)]
    child = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not list(out.parent.glob("*.part")) and time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()[1]
        time.sleep(0.02)
    assert list(out.parent.glob("*.part")), "predict never started writing"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err
    assert err.splitlines()[-1] == "pcam predict: terminated"
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture
def ctrl_c_as_usual() -> Any:
    """Ctrl-C with Python's own handler during the test, whatever the test process inherited.

    A process started in the background by a non-interactive shell (or under ``nohup``) starts
    with SIGINT ignored, and pcam rightly keeps an ignored Ctrl-C ignored
    (:func:`test_an_ignored_ctrl_c_stays_ignored`); the tests of what Ctrl-C does need it live.
    """
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _signal_then(signum: int, raised: Exception) -> Any:
    """A command's ``run`` that receives ``signum`` and lets ``raised`` out instead of the
    signal's own exception, as TensorFlow's code sometimes does (a ``SystemError``)."""
    import signal

    def run(args: Any) -> int:
        try:
            signal.raise_signal(signum)
        except KeyboardInterrupt:  # Terminated is one too
            raise raised from None
        raise AssertionError("the signal raised nothing")

    return run


@pytest.mark.parametrize(
    ("signum", "status", "line"),
    [("SIGTERM", 143, "pcam check: terminated\n"), ("SIGINT", 130, "pcam check: interrupted\n")],
)
@pytest.mark.usefixtures("ctrl_c_as_usual")
def test_whatever_unwinds_after_a_signal_is_that_signals_exit(
    signum: str,
    status: int,
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    import signal

    import pcam.cli.commands.check

    number = getattr(signal, signum)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    broken = SystemError("Objects/listobject.c:338: bad argument to internal function")
    monkeypatch.setattr(pcam.cli.commands.check, "run", _signal_then(number, broken))
    assert main(["check", "--data", str(tmp_path)]) == status
    assert capsys.readouterr().err == line
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers are given back

    def genuine(args: Any) -> int:
        raise SystemError("a real bug")

    monkeypatch.setattr(pcam.cli.commands.check, "run", genuine)  # no signal this time
    with pytest.raises(SystemError, match="a real bug"):
        main(["check", "--data", str(tmp_path)])


def test_an_ignored_ctrl_c_stays_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import signal

    import pcam.cli.commands.check

    seen: list[object] = []

    def run(args: Any) -> int:
        seen.append(signal.getsignal(signal.SIGINT))
        return 0

    monkeypatch.setattr(pcam.cli.commands.check, "run", run)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert main(["check", "--data", str(tmp_path)]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIG_IGN]


# -- the pieces of a run's recovery ----------------------------------------------------------------


def test_the_log_is_trimmed_to_the_epochs_of_the_backup(tmp_path: Path) -> None:
    from pcam.model.train import trim_log

    log = tmp_path / "training_log.csv"
    log.write_bytes(b"epoch,loss\r\n0,0.9\r\n1,0.8\r\n2,0.7\r\n")
    trim_log(log, 3)
    assert log.read_bytes() == b"epoch,loss\r\n0,0.9\r\n1,0.8\r\n2,0.7\r\n"
    trim_log(log, 2)
    assert log.read_bytes() == b"epoch,loss\r\n0,0.9\r\n1,0.8\r\n"
    trim_log(log, 0)
    assert log.read_bytes() == b"epoch,loss\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training_log.csv"]
    trim_log(tmp_path / "absent.csv", 1)  # nothing to trim
    assert not (tmp_path / "absent.csv").exists()


def test_leftovers_of_dead_processes_go_and_those_of_live_ones_stay(tmp_path: Path) -> None:
    from pcam.model.train import remove_leftovers

    dead = _a_dead_pid()
    live = os.getppid()
    (tmp_path / "backup").mkdir()
    names = [
        f".model.partial-{dead}.keras",
        f".best.json.partial-{dead}",
        f"backup/.latest.partial-{dead}.weights.h5",
        f".model.partial-{live}.keras",
        f"backup/.latest.partial-{live}.weights.h5",
        "model.keras",
        ".model.partial-notapid.keras",
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_leftovers(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in removed) == sorted(names[:3])
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == (
        sorted(names[3:])
    )


def _a_dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_TEXT)
    return int(child.stdout)


_TEXT: dict[str, Any] = {"capture_output": True, "text": True, "check": True}


def test_a_run_that_never_finished_an_epoch_leaves_only_what_was_there(tmp_path: Path) -> None:
    from pcam.model.train import remove_unstarted_run

    made = tmp_path / "made"
    made.mkdir()
    for name in (MARKER, "config.json", "training_log.csv"):
        (made / name).write_text("x")
    (made / "tensorboard" / "train").mkdir(parents=True)
    remove_unstarted_run(made, created=True)
    assert not made.exists()

    existing = tmp_path / "existing"  # the user made it (empty) and gave it as --out
    existing.mkdir()
    for name in (MARKER, "config.json"):
        (existing / name).write_text("x")
    remove_unstarted_run(existing, created=False)
    assert sorted(p.name for p in existing.iterdir()) == [MARKER]

    resumable = tmp_path / "resumable"
    (resumable / "backup").mkdir(parents=True)
    (resumable / "backup" / METADATA_FILE).write_text('{"epoch": 1}')
    (resumable / "config.json").write_text("x")
    remove_unstarted_run(resumable, created=True)
    assert sorted(p.name for p in resumable.iterdir()) == ["backup", "config.json"]


@pytest.mark.slow
def test_a_run_stopped_after_its_first_model_but_before_its_first_backup_resumes(
    synthetic_root: Path,
    tmp_path: Path,
    deterministic_run: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It has a model and no backup yet: still an interrupted run, not a finished one."""

    from pcam.model.train import train

    run = tmp_path / "run"
    # between the best model (saved) and the backup (not yet)
    _stop_after_the_log_of_epoch(monkeypatch, 0, _DiskFull())
    with pytest.raises(OSError, match="No space"):
        train(deterministic_config(synthetic_root, run), verbose=0)
    monkeypatch.undo()
    assert (run / "model.keras").is_file()
    assert list((run / "backup").iterdir()) == []
    train(deterministic_config(synthetic_root, run), verbose=0)  # the same command, no refusal
    expected = (deterministic_run / "training_log.csv").read_bytes()
    assert (run / "training_log.csv").read_bytes() == expected
    _assert_same_weights(deterministic_run / "model.keras", run / "model.keras")


def _stop_after_the_log_of_epoch(
    monkeypatch: pytest.MonkeyPatch, epoch: int, error: BaseException
) -> None:
    """Raise ``error`` once the CSV log has the row of ``epoch`` (0-based), before the backup.

    The CSV logger runs after the best model is saved and before the backup is written.
    """
    import keras

    epoch_end = keras.callbacks.CSVLogger.on_epoch_end

    def stop(self: Any, finished: int, logs: Any = None) -> None:
        epoch_end(self, finished, logs)
        if finished == epoch:
            raise error

    monkeypatch.setattr(keras.callbacks.CSVLogger, "on_epoch_end", stop)


def test_a_signal_whose_exception_was_swallowed_still_stops_predict_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorFlow can swallow the signal's exception in a callback: the next batch stops."""
    import signal

    import numpy as np

    from pcam import stopping
    from pcam.serve.predict import PatchBatch, write_predictions_csv

    def results() -> Any:
        patch = np.zeros((1, 96, 96, 3), np.uint8)
        yield PatchBatch(patch, ["a.png"], [None], [None]), np.array([0.9])
        stopping.received.append(signal.SIGTERM)  # noted by the handler, exception lost
        yield PatchBatch(patch, ["b.png"], [None], [None]), np.array([0.1])

    monkeypatch.setattr(stopping, "received", [])
    out = tmp_path / "made" / "p.csv"
    with pytest.raises(stopping.Terminated):
        write_predictions_csv(results(), out)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(stopping, "received", [signal.SIGINT])
    with pytest.raises(KeyboardInterrupt) as interrupted:
        write_predictions_csv(results(), out)
    assert not isinstance(interrupted.value, stopping.Terminated)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("ctrl_c_as_usual")
def test_a_signal_during_a_polling_loop_is_raised_by_the_loop_between_two_steps() -> None:
    """Inside ``deferring`` the handler only notes the signal: no exception enters a library."""
    import signal

    from pcam import stopping
    from pcam.cli.runner import _handle_signals

    steps: list[int] = []

    def loop() -> None:
        with stopping.deferring():
            for step in range(3):
                stopping.raise_if_stopped()
                steps.append(step)
                if step == 1:
                    signal.raise_signal(signal.SIGTERM)  # lands mid-step: only noted
                    steps.append(10 + step)  # the step goes on to its end

    def last_step() -> None:
        with stopping.deferring():
            signal.raise_signal(signal.SIGINT)
            steps.append(99)

    def outside() -> None:
        signal.raise_signal(signal.SIGTERM)
        steps.append(-1)

    previous = _handle_signals()
    stopping.received.clear()
    try:
        with pytest.raises(stopping.Terminated):
            loop()
        assert steps == [0, 1, 11]
        assert stopping.received == [signal.SIGTERM]
        assert not stopping.deferred()
        stopping.received.clear()
        with pytest.raises(KeyboardInterrupt) as interrupted:
            last_step()  # the last step's signal is raised when the block ends
        assert not isinstance(interrupted.value, stopping.Terminated)
        assert steps[-1] == 99
        stopping.received.clear()
        with pytest.raises(stopping.Terminated):
            outside()  # outside a loop the signal raises where the program is, at once
        assert steps[-1] == 99
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stopping.received.clear()


def test_an_error_inside_a_polling_loop_is_left_as_it_is() -> None:
    from pcam import stopping

    with pytest.raises(ValueError, match="boom"), stopping.deferring():
        raise ValueError("boom")
    assert not stopping.deferred()
