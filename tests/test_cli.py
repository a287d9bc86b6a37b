"""The ``pcam`` command line: exit codes, output, one-line errors and files written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import h5py
import numpy as np
import pytest

import pcam
from pcam import layout
from pcam.cli import main
from pcam.data.split import open_split
from pcam.outputs import MARKER

N = 40
HEADER = ["split", "patches", "positive", "layout", "size", "meta", "mask"]
SYNTH = ["--n", str(N), "--splits", "train", "valid", "--with-mask"]
SUBPROCESS_TIMEOUT = 120


# -- helpers -------------------------------------------------------------------------------------


def _run(argv: Sequence[str | Path]) -> int:
    """``main(argv)`` as an exit status, whether it returns it or raises ``SystemExit``."""
    try:
        return main([str(arg) for arg in argv])
    except SystemExit as stop:
        if stop.code is None:
            return 0
        return stop.code if isinstance(stop.code, int) else 1


def _python(
    args: Sequence[str | Path], cwd: Path, timeout: float = SUBPROCESS_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *(str(arg) for arg in args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
    )


def _rows(stdout: str) -> list[list[str]]:
    """The rows of a ``pcam check`` table (after checking its header and rule)."""
    lines = stdout.strip("\n").splitlines()
    assert len(lines) >= 3, stdout
    assert lines[0].split() == HEADER, stdout
    assert set(lines[1].replace(" ", "")) == {"-"}, stdout
    return [line.split() for line in lines[2:]]


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def _expected_names(with_train_mask: bool = True) -> set[str]:
    names = {layout.h5_name(s, k) for s in ("train", "valid") for k in ("x", "y")}
    names |= {layout.meta_name(s) for s in ("train", "valid")}
    names.add(MARKER)  # the record of the files synth wrote (what --overwrite may replace)
    if with_train_mask:
        names.add(layout.h5_name("train", "mask"))
    return names


def _positive_fraction(root: Path, split: str) -> str:
    with h5py.File(layout.h5_path(root, split, "y"), "r") as handle:
        return f"{float(np.asarray(handle['y'][...]).mean()):.4f}"


def _assert_one_line_error(err: str, prefix: str) -> None:
    assert "Traceback" not in err, err
    assert err.endswith("\n"), f"not one whole line: {err!r}"
    assert err.count("\n") == 1, f"not exactly one line: {err!r}"
    assert err.startswith(prefix), err


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset written by ``pcam synth`` (train 40 with mask, valid 10): read-only for tests."""
    root = tmp_path_factory.mktemp("synth") / "data"
    assert _run(["synth", "--out", root, *SYNTH]) == 0
    return root


@pytest.fixture
def data_copy(synth_dir: Path, tmp_path: Path) -> Path:
    """A private copy of ``synth_dir`` that a test may damage."""
    return Path(shutil.copytree(synth_dir, tmp_path / "data"))


# -- version and help ------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--version"]) == 0
    out, err = capsys.readouterr()
    assert out == f"pcam {version('pcam')}\n"
    assert pcam.__version__ == version("pcam") != "0.0.0+unknown"
    assert err == ""


@pytest.mark.parametrize(
    ("argv", "usage", "mentions"),
    [
        pytest.param(["--help"], "usage: pcam", ["synth", "check", "demo", "--version"], id="top"),
        pytest.param(
            ["synth", "--help"],
            "usage: pcam synth",
            ["--out", "--n", "--splits", "--seed", "--with-mask", "--overwrite"],
            id="synth",
        ),
        pytest.param(["check", "--help"], "usage: pcam check", ["--data", "--split"], id="check"),
        pytest.param(
            ["demo", "--help"], "usage: pcam demo", ["--out", "--n", "--batch-size"], id="demo"
        ),
    ],
)
def test_help_exits_zero(
    argv: list[str], usage: str, mentions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith(usage), out
    for word in mentions:
        assert word in out, f"{word!r} missing from {' '.join(argv)}"
    assert err == ""


# -- synth -----------------------------------------------------------------------------------------


def test_synth_writes_the_expected_files_and_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    assert _run(["synth", "--out", out_dir, *SYNTH]) == 0
    out, err = capsys.readouterr()
    names = set(os.listdir(out_dir))
    assert not [name for name in names if ".partial" in name], names
    assert names == _expected_names()
    rows = _rows(out)
    assert [(r[0], r[1], r[-2], r[-1]) for r in rows] == [
        ("train", f"{N}", "yes", "yes"),
        ("valid", f"{N // 4}", "yes", "no"),
    ]
    assert "Traceback" not in err
    train, valid = open_split(out_dir, "train"), open_split(out_dir, "valid")
    assert (len(train), len(valid)) == (N, N // 4)
    assert train.has_mask
    assert not valid.has_mask
    assert train.layout == valid.layout == "contiguous"
    assert len(train.read_meta()) == N
    assert len(valid.read_meta()) == N // 4


def test_synth_refuses_to_replace_existing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    assert _run(["synth", "--out", out_dir, *SYNTH]) == 0
    before = _files(out_dir)
    capsys.readouterr()
    assert _run(["synth", "--out", out_dir, *SYNTH, "--seed", "7"]) == 1
    out, err = capsys.readouterr()
    _assert_one_line_error(err, "pcam synth: error:")
    assert "--overwrite" in err
    assert out == ""
    assert _files(out_dir) == before  # same names, same bytes


def test_synth_refuses_before_writing_any_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # only valid exists: asking for train and valid must fail without writing train first
    out_dir = tmp_path / "out"
    assert _run(["synth", "--out", out_dir, "--n", "8", "--splits", "valid"]) == 0
    before = _files(out_dir)
    capsys.readouterr()
    assert _run(["synth", "--out", out_dir, "--n", "8", "--splits", "train", "valid"]) == 1
    _, err = capsys.readouterr()
    _assert_one_line_error(err, "pcam synth: error:")
    written = sorted(set(_files(out_dir)) - set(before))
    assert _files(out_dir) == before, f"written before the refusal: {written}"


def test_synth_overwrite_replaces_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    assert _run(["synth", "--out", out_dir, *SYNTH]) == 0
    before = _files(out_dir)
    assert _run(["synth", "--out", out_dir, *SYNTH, "--seed", "7", "--overwrite"]) == 0
    after = _files(out_dir)
    assert set(after) == _expected_names()
    for name in after:
        if name.endswith(("_x.h5", "_meta.csv", "_mask.h5")):
            assert after[name] != before[name], f"{name} was not replaced"
    assert len(open_split(out_dir, "train")) == N
    assert "Traceback" not in capsys.readouterr().err


def test_synth_into_a_regular_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out"
    target.write_text("keep me\n")
    assert _run(["synth", "--out", target, "--n", "8", "--splits", "valid"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    _assert_one_line_error(err, "pcam synth: error:")
    assert str(target) in err
    assert target.read_text() == "keep me\n"
    assert sorted(os.listdir(tmp_path)) == ["out"]


# -- check -----------------------------------------------------------------------------------------


def test_check_prints_one_row_per_split(
    synth_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["check", "--data", synth_dir]) == 0
    out, err = capsys.readouterr()
    rows = _rows(out)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("train", f"{N}", _positive_fraction(synth_dir, "train")),
        ("valid", f"{N // 4}", _positive_fraction(synth_dir, "valid")),
    ]
    assert [(r[3], r[-2], r[-1]) for r in rows] == [
        ("contiguous", "yes", "yes"),
        ("contiguous", "yes", "no"),
    ]
    assert err == ""


def test_check_one_split(synth_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["check", "--data", synth_dir, "--split", "valid"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [(r[0], r[1]) for r in rows] == [("valid", f"{N // 4}")]


def test_check_counts_a_skewed_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pcam.testing.synthetic import write_split

    write_split(tmp_path, "test", 16, seed=3, positive_fraction=0.25)
    assert _run(["check", "--data", tmp_path]) == 0
    assert [(r[0], r[1], r[2]) for r in _rows(capsys.readouterr().out)] == [
        ("test", "16", "0.2500")
    ]


def _missing_dir(root: Path) -> tuple[Path, list[str], str]:
    return root.parent / "nowhere", [], "nowhere"


def _empty_dir(root: Path) -> tuple[Path, list[str], str]:
    empty = root.parent / "empty"
    empty.mkdir()
    return empty, [], "empty"


def _dir_is_a_file(root: Path) -> tuple[Path, list[str], str]:
    target = root.parent / "plain"
    target.write_text("x\n")
    return target, [], "plain"


def _truncated_x(root: Path) -> tuple[Path, list[str], str]:
    x = layout.h5_path(root, "train", "x")
    os.truncate(x, x.stat().st_size // 2)
    return root, [], x.name


def _not_hdf5_y(root: Path) -> tuple[Path, list[str], str]:
    y = layout.h5_path(root, "valid", "y")
    y.write_text("label\n0\n1\n")
    return root, [], y.name


def _bad_labels(root: Path) -> tuple[Path, list[str], str]:
    y = layout.h5_path(root, "valid", "y")
    with h5py.File(y, "r+") as handle:
        handle["y"][3] = 7
    return root, [], y.name


def _missing_split(root: Path) -> tuple[Path, list[str], str]:
    return root, ["--split", "test"], layout.h5_name("test", "x")


def _corrupt_label_chunk(root: Path) -> tuple[Path, list[str], str]:
    y = layout.h5_path(root, "valid", "y")
    with h5py.File(y, "r") as handle:
        labels = np.asarray(handle["y"][...])
    with h5py.File(y, "w", libver=layout.HDF5_LIBVER) as handle:
        handle.create_dataset("y", data=labels, chunks=(2, 1, 1, 1), compression="gzip")
    with h5py.File(y, "r") as handle:
        info = handle["y"].id.get_chunk_info_by_coord((0, 0, 0, 0))
    with y.open("r+b") as handle:
        handle.seek(info.byte_offset + 2)
        handle.write(b"\xff" * (info.size - 2))
    return root, [], y.name


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_missing_dir, id="missing-dir"),
        pytest.param(_empty_dir, id="empty-dir"),
        pytest.param(_dir_is_a_file, id="dir-is-a-file"),
        pytest.param(_truncated_x, id="truncated-x"),
        pytest.param(_not_hdf5_y, id="y-not-hdf5"),
        pytest.param(_bad_labels, id="label-7"),
        pytest.param(_missing_split, id="missing-split"),
        pytest.param(_corrupt_label_chunk, id="corrupt-label-chunk"),
    ],
)
def test_check_bad_data_is_a_one_line_error(
    damage: Callable[[Path], tuple[Path, list[str], str]],
    data_copy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target, extra, named = damage(data_copy)
    assert _run(["check", "--data", target, *extra]) == 1
    out, err = capsys.readouterr()
    _assert_one_line_error(err, "pcam check: error:")
    assert named in err, err
    assert out == ""


# -- bad arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        pytest.param(["synth", "--out", "{out}", "--n", "0"], "--n", id="n-zero"),
        pytest.param(["synth", "--out", "{out}", "--n", "abc"], "'abc'", id="n-abc"),
        pytest.param(["synth", "--out", "{out}", "--seed", "-1"], "--seed", id="seed-negative"),
        pytest.param(
            ["synth", "--out", "{out}", "--splits", "training"],
            "'training'",
            id="synth-unknown-split",
        ),
        pytest.param(
            ["check", "--data", "{out}", "--split", "training"],
            "'training'",
            id="check-unknown-split",
        ),
        pytest.param(
            ["demo", "--out", "{out}", "--batch-size", "0"], "--batch-size", id="demo-batch-zero"
        ),
        pytest.param(["frobnicate"], "'frobnicate'", id="unknown-command"),
        pytest.param([], "COMMAND", id="no-command"),
        pytest.param(["synth"], "--out", id="synth-without-out-dir"),
        pytest.param(["check"], "--data", id="check-without-data-dir"),
        pytest.param(
            ["synth", "--out", "{out}", "--frobnicate"], "--frobnicate", id="unknown-option"
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    assert _run([arg.format(out=out_dir) for arg in argv]) == 2
    out, err = capsys.readouterr()
    _assert_one_line_error(err, "pcam")
    assert re.match(r"pcam( \w+)?: error: ", err), err
    assert "--help" in err
    assert named in err
    assert out == ""
    assert not out_dir.exists()


# -- through a real process ------------------------------------------------------------------------


def test_version_in_a_subprocess(tmp_path: Path) -> None:
    result = _python(["-m", "pcam", "--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"pcam {version('pcam')}\n"


@pytest.mark.parametrize(
    ("args", "code", "prefix"),
    [
        pytest.param(
            ["check", "--data", "nowhere"], 1, "pcam check: error: nowhere", id="check-missing"
        ),
        pytest.param(
            ["synth", "--out", "out", "--n", "0"], 2, "pcam synth: error: ", id="synth-n-zero"
        ),
    ],
)
def test_errors_in_a_subprocess(args: list[str], code: int, prefix: str, tmp_path: Path) -> None:
    result = _python(["-m", "pcam", *args], tmp_path)
    assert result.returncode == code, result.stderr
    _assert_one_line_error(result.stderr, prefix)
    assert result.stdout == ""
    assert os.listdir(tmp_path) == []


_IMPORTS_TF = """
import sys
from pcam.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print("exit", code)
print("tensorflow" in sys.modules)
"""


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["check", "--data", "{data}"], id="check"),
        pytest.param(["--help"], id="help"),
        pytest.param(["check", "--help"], id="check-help"),
        pytest.param(["synth", "--out", "{tmp}/new", "--n", "8", "--splits", "valid"], id="synth"),
    ],
)
def test_command_does_not_import_tensorflow(
    args: list[str], synth_dir: Path, tmp_path: Path
) -> None:
    argv = [arg.format(data=synth_dir, tmp=tmp_path) for arg in args]
    result = _python(["-c", _IMPORTS_TF, *argv], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2] in ("exit 0", "exit None"), result.stdout + result.stderr
    assert lines[-1] == "False", "TensorFlow was imported"


@pytest.mark.slow
def test_demo_runs_the_main_job_end_to_end(tmp_path: Path) -> None:
    """Data, stream check, training and a report on the test split: the README's command."""
    out = tmp_path / "demo"
    argv: list[str | Path] = ["-m", "pcam", "demo", "--out", out]  # the defaults users run
    result = _python(argv, tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "all 2,048 patches arrived once, in a new order, with their labels" in result.stdout
    assert "Traceback" not in result.stderr
    assert len(open_split(out / "data", "train")) == 2048
    report = json.loads((out / "report" / "metrics.json").read_text())
    assert report["split"] == "test"
    assert report["n"] == len(open_split(out / "data", "test"))
    assert report["accuracy"] >= 0.85, report["accuracy"]  # chance is 0.5
    assert report["roc_auc"] >= 0.9, report["roc_auc"]
    for plot in ("roc.png", "confusion_matrix.png", "per_class.png", "training_curves.png"):
        assert (out / "report" / plot).stat().st_size > 10_000, plot
    assert (out / "run" / "model.keras").is_file()
    assert (out / "explain" / "grid.png").stat().st_size > 10_000
    explained = json.loads((out / "explain" / "explain.json").read_text())
    assert explained["inputs"]["split"] == "train"
    assert len(explained["patches"]) == 16
    assert "pointing game" in result.stdout
    assert "6/6 explaining" in result.stdout
    # a second run replaces the demo's own directories instead of refusing them
    again = _python([*argv, "--n", "256", "--epochs", "1"], tmp_path, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("duplicate", "arrived twice"),
        ("wrong_label", "carries the wrong label"),
        ("foreign", "is not a patch of the file"),
        ("missing", "the epoch held 7 distinct patches, the file 8"),
    ],
)
def test_demo_check_catches_a_broken_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, problem: str
) -> None:
    """The demo's permutation check must notice each way a loader can go wrong."""
    tf = pytest.importorskip("tensorflow")
    import pcam.data.stream
    from pcam.demo import check_stream_permutation
    from pcam.testing import write_split

    write_split(tmp_path, "valid", 8, seed=3, with_meta=False)
    split = open_split(tmp_path, "valid")
    images = split.read_images(slice(None))[::-1].copy()
    labels = split.labels[::-1].astype(np.int32)
    if damage == "duplicate":
        images[1] = images[0]
        labels[1] = labels[0]
    elif damage == "wrong_label":
        labels[2] = 1 - labels[2]
    elif damage == "foreign":
        images[3] = 255 - images[3]
    else:
        images, labels = images[:7], labels[:7]
    broken = tf.data.Dataset.from_tensor_slices((images, labels)).batch(3)
    monkeypatch.setattr(pcam.data.stream, "make_dataset", lambda *args, **kwargs: broken)
    assert problem in check_stream_permutation(split, tmp_path, 3, 0)


def test_demo_check_passes_a_correct_stream(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from pcam.demo import check_stream_permutation
    from pcam.testing import write_split

    write_split(tmp_path, "valid", 40, seed=3, with_meta=False)
    assert check_stream_permutation(open_split(tmp_path, "valid"), tmp_path, 16, 0) == ""


@pytest.mark.parametrize(
    "command",
    [
        "synth",
        "check",
        "download",
        "train",
        "evaluate",
        "explain",
        "predict",
        "app",
        "demo",
        "fullcheck",
    ],
)
def test_help_texts_show_percent_signs_once(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse %-formats help strings but not descriptions: ``%%`` must not reach the user."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "%%" not in text
    if command == "evaluate":
        assert "95% bootstrap intervals" in " ".join(text.split())
