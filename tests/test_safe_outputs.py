"""The safe-output rule on the command line: the cases a hostile but realistic user met.

``--out .``, ``--out`` the run folder of the model being evaluated, a folder holding the data, a
folder with the user's own files, and the predictions CSV replacing an input. The rule itself is
tested in ``tests/test_outputs.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pcam import layout
from pcam.cli import main
from pcam.outputs import read_marker
from pcam.testing.synthetic import write_split

NEVER = "choose another output path (pcam never deletes files it did not write)"


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (``None`` for folders)."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


# -- the command line: evaluate, explain, predict ------------------------------------------------


@pytest.fixture
def workspace(
    deterministic_run: Path, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A user's working directory: ``data/``, ``run/`` (a trained model) and ``notes.txt``."""
    (tmp_path / "data").mkdir()
    for name in (layout.h5_name("valid", "x"), layout.h5_name("valid", "y")):
        os.symlink(synthetic_root / name, tmp_path / "data" / name)
    shutil.copytree(deterministic_run, tmp_path / "run")
    (tmp_path / "notes.txt").write_text("the user's notes")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _evaluate(out: str, *more: str) -> int:
    argv = ["evaluate", "--model", "run/model.keras", "--data", "data", "--split", "valid"]
    return main([*argv, "--out", out, "--bootstrap", "10", *more])


@pytest.mark.slow
def test_evaluate_never_deletes_the_working_directory_or_the_run(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(workspace)
    assert _evaluate(".", "--overwrite") == 1
    assert capsys.readouterr().err == (
        "pcam evaluate: error: .: expected a report folder that pcam wrote, found the current "
        f"directory; {NEVER}\n"
    )
    assert _evaluate("run", "--overwrite") == 1
    assert capsys.readouterr().err == (
        "pcam evaluate: error: run: expected a report folder that pcam wrote, found the folder "
        f"holding the input run/model.keras; {NEVER}\n"
    )
    assert _evaluate("data", "--overwrite") == 1
    assert "found the folder holding the input data;" in capsys.readouterr().err
    assert _tree(workspace) == before
    # the report pcam writes it may replace, again and again
    assert _evaluate("report") == 0
    assert _evaluate("report", "--overwrite") == 0
    assert read_marker(workspace / "report") is not None
    (workspace / "report" / "my-notes.txt").write_text("mine")
    assert _evaluate("report", "--overwrite") == 1
    assert "found files pcam did not write (my-notes.txt);" in capsys.readouterr().err
    assert (workspace / "report" / "my-notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_explain_never_deletes_the_run_of_its_model(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(workspace)
    argv = ["explain", "--model", "run/model.keras", "--data", "data", "--n", "2"]
    for out in (".", "run"):
        assert main([*argv, "--out", out, "--overwrite"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"pcam explain: error: {out}: expected an explanation folder")
        assert err.count("\n") == 1
    assert _tree(workspace) == before


@pytest.mark.slow
def test_predict_overwrites_only_its_own_csv(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(workspace)
    x_file = layout.h5_name("valid", "x")
    argv = ["predict", "--model", "run/model.keras", f"data/{x_file}", "--overwrite"]
    assert main([*argv, "--out", "notes.txt"]) == 1
    assert capsys.readouterr().err == (
        "pcam predict: error: notes.txt: expected a predictions CSV that pcam wrote, to replace "
        "with --overwrite, found a file whose first line is not source,index,probability,label; "
        f"{NEVER}\n"
    )
    assert main([*argv, "--out", "run/model.keras"]) == 1
    assert "found the input run/model.keras;" in capsys.readouterr().err
    assert main([*argv, "--out", f"data/{x_file}"]) == 1
    assert f"found the input data/{x_file};" in capsys.readouterr().err
    assert _tree(workspace) == before
    assert main([*argv, "--out", "predictions.csv"]) == 0
    first = (workspace / "predictions.csv").read_text()
    assert main([*argv, "--out", "predictions.csv"]) == 0  # its own CSV it replaces
    assert (workspace / "predictions.csv").read_text() == first


def test_demo_refuses_a_folder_holding_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "thesis.tex").write_text("months of work")
    before = _tree(tmp_path)
    assert main(["demo", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"pcam demo: error: {tmp_path}: expected a new or empty folder, or a demo folder that "
        f"pcam wrote, found files pcam did not write (report); {NEVER}\n"
    )
    assert _tree(tmp_path) == before


def test_fullcheck_refuses_a_folder_holding_other_files(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    write_split(data, "test", 16, seed=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "run").mkdir()
    (out / "run" / "keep.txt").write_text("mine")
    before = _tree(out)
    argv = [
        "fullcheck",
        "--data",
        str(data),
        "--out",
        str(out),
        "--arch",
        "small",
        "--weights",
        "none",
    ]
    assert main([*argv, "--overwrite"]) == 1
    assert capsys.readouterr().err == (
        f"pcam fullcheck: error: {out}: expected a new or empty folder, or a full check folder "
        f"that pcam wrote, found files pcam did not write (run); {NEVER}\n"
    )
    assert _tree(out) == before
