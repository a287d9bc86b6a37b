"""The safe-output rule (:mod:`pcam.outputs`): ``--overwrite`` replaces only what pcam wrote.

Unit tests of the rule, then the cases a hostile but realistic user met on the command line:
``--out .``, ``--out`` the run folder of the model being evaluated, a folder holding the data,
a folder with the user's own files, and the predictions CSV replacing an input.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import pcam
from pcam import layout, outputs
from pcam.cli import main
from pcam.errors import OutputExistsError, OutputPathError, UnsafeOutputError
from pcam.outputs import (
    MARKER,
    claim_directory,
    read_marker,
    record_written,
    refuse_existing_directory,
    refuse_unsafe_replacement,
    staged_directory,
    warn_if_low_space,
    write_json_atomically,
    write_marker,
    written_files,
)
from pcam.testing.synthetic import write_split

NEVER = "choose another output path (pcam never deletes files it did not write)"


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (``None`` for folders)."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def _report(folder: Path, files: dict[str, str]) -> Path:
    """A report folder as pcam writes it: the files and the marker listing them."""
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    write_marker(folder, "report", files)
    return folder


# -- the rule ------------------------------------------------------------------------------------


def test_a_folder_pcam_wrote_may_be_replaced(tmp_path: Path) -> None:
    folder = _report(tmp_path / "report", {"metrics.json": "{}", "roc.png": "png"})
    refuse_unsafe_replacement(folder, "report")  # no error
    refuse_existing_directory(folder, overwrite=True, kind="report")


def test_without_overwrite_any_existing_files_are_refused(tmp_path: Path) -> None:
    folder = _report(tmp_path / "report", {"metrics.json": "{}"})
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        refuse_existing_directory(folder, overwrite=False, kind="report")


def test_new_and_empty_folders_are_fine_without_overwrite(tmp_path: Path) -> None:
    refuse_existing_directory(tmp_path / "new" / "deeper", overwrite=False)
    (tmp_path / "empty").mkdir()
    refuse_existing_directory(tmp_path / "empty", overwrite=False)


def test_a_file_where_the_folder_goes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    with pytest.raises(OutputPathError, match="found a file;"):
        refuse_existing_directory(tmp_path / "file", overwrite=True)


def test_a_folder_without_the_marker_is_never_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.json").write_text("{}")  # looks like a report, but pcam did not write it
    with pytest.raises(UnsafeOutputError) as caught:
        refuse_unsafe_replacement(folder, "report")
    assert str(caught.value) == (
        f"{folder}: expected a report folder that pcam wrote, found a folder without pcam's "
        f"{MARKER}; {NEVER}"
    )


def test_a_folder_of_another_kind_is_never_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    write_marker(folder, "run")
    with pytest.raises(UnsafeOutputError) as caught:
        refuse_unsafe_replacement(folder, "report")
    assert str(caught.value) == (
        f"{folder}: expected a report folder that pcam wrote, found pcam's run folder; {NEVER}"
    )
    with pytest.raises(UnsafeOutputError, match="expected an explanation folder"):
        refuse_unsafe_replacement(folder, "explanation")


def test_files_added_to_a_folder_pcam_wrote_are_protected(tmp_path: Path) -> None:
    folder = _report(tmp_path / "report", {"metrics.json": "{}", "roc.png": "png"})
    for name in ("notes.txt", "a.csv", "b.csv", "c.csv"):
        (folder / name).write_text("mine")
    with pytest.raises(UnsafeOutputError) as caught:
        refuse_unsafe_replacement(folder, "report")
    assert str(caught.value) == (
        f"{folder}: expected a report folder that pcam wrote, found files pcam did not write "
        f"(a.csv, b.csv, c.csv, ...); {NEVER}"
    )
    (folder / "a.csv").unlink()
    (folder / "b.csv").unlink()
    (folder / "c.csv").unlink()
    with pytest.raises(UnsafeOutputError, match=r"did not write \(notes\.txt\);"):
        refuse_unsafe_replacement(folder, "report")


def test_the_current_directory_and_its_parents_are_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _report(tmp_path / "report", {"metrics.json": "{}"})
    (folder / "inner").mkdir()
    write_marker(folder, "report", ["metrics.json", "inner"])
    monkeypatch.chdir(folder)
    with pytest.raises(UnsafeOutputError) as caught:
        refuse_unsafe_replacement(Path("."), "report")
    assert str(caught.value) == (
        f".: expected a report folder that pcam wrote, found the current directory; {NEVER}"
    )
    monkeypatch.chdir(folder / "inner")
    with pytest.raises(UnsafeOutputError, match="found a folder above the current one;"):
        refuse_unsafe_replacement(folder, "report")
    with pytest.raises(UnsafeOutputError, match="found the current directory;"):
        refuse_unsafe_replacement(Path("../inner"), "report")


def test_a_folder_holding_an_input_is_never_replaced(tmp_path: Path) -> None:
    folder = _report(tmp_path / "report", {"metrics.json": "{}", "model.keras": "weights"})
    model = folder / "model.keras"
    with pytest.raises(UnsafeOutputError) as caught:
        refuse_unsafe_replacement(folder, "report", inputs=[tmp_path / "data", model])
    assert str(caught.value) == (
        f"{folder}: expected a report folder that pcam wrote, found the folder holding the "
        f"input {model}; {NEVER}"
    )
    with pytest.raises(UnsafeOutputError, match="holding the input"):  # the input is the folder
        refuse_unsafe_replacement(folder, "report", inputs=[folder])
    with pytest.raises(UnsafeOutputError, match="holding the input"):  # deeper inside it
        refuse_unsafe_replacement(folder, "report", inputs=[folder / "a" / "b.h5"])
    refuse_unsafe_replacement(folder, "report", inputs=[tmp_path / "elsewhere.keras"])


def test_an_unreadable_marker_counts_as_no_marker(tmp_path: Path) -> None:
    folder = _report(tmp_path / "report", {"metrics.json": "{}"})
    (folder / MARKER).write_text("{not json")
    assert read_marker(folder) is None
    (folder / MARKER).write_text('["a list"]')
    assert read_marker(folder) is None
    (folder / MARKER).write_text('{"kind": 3}')
    assert read_marker(folder) is None
    with pytest.raises(UnsafeOutputError, match="without pcam's"):
        refuse_unsafe_replacement(folder, "report")


# -- staged replacement --------------------------------------------------------------------------


def test_a_staged_folder_replaces_the_old_one_and_lists_its_files(tmp_path: Path) -> None:
    destination = _report(tmp_path / "report", {"old.json": "old"})
    with staged_directory(destination, "report") as staging:
        (staging / "metrics.json").write_text("new")
        (staging / "plots").mkdir()
    assert sorted(p.name for p in destination.iterdir()) == [MARKER, "metrics.json", "plots"]
    assert read_marker(destination) == {
        "kind": "report",
        "pcam_version": pcam.__version__,
        "files": ["metrics.json", "plots"],
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # nothing left aside


def test_a_failure_while_staging_leaves_the_old_output_whole(tmp_path: Path) -> None:
    destination = _report(tmp_path / "report", {"metrics.json": "old"})
    before = _tree(tmp_path)

    def fill_then_fail() -> None:
        with staged_directory(destination) as staging:
            (staging / "metrics.json").write_text("new")
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        fill_then_fail()
    assert _tree(tmp_path) == before


def test_a_failure_in_the_final_rename_puts_the_old_output_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = _report(tmp_path / "report", {"metrics.json": "old"})
    new = tmp_path / ".staging"
    new.mkdir()
    (new / "metrics.json").write_text("new")
    before = _tree(destination)
    replace = Path.replace
    calls: list[str] = []

    def failing_second_rename(self: Path, target: str | os.PathLike[str]) -> Path:
        calls.append(self.name)
        if len(calls) == 2:  # the new folder moving into place
            raise OSError(5, "Input/output error")
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", failing_second_rename)
    with pytest.raises(OSError, match="Input/output"):
        outputs._replace_directory(new, destination)
    monkeypatch.undo()
    assert calls == ["report", ".staging", calls[2]]  # aside, the failure, back
    assert _tree(destination) == before  # moved aside, then back
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging", "report"]


def test_write_json_atomically_keeps_the_old_record_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "best.json"
    write_json_atomically(record, {"epoch": 1})

    def full_disk(self: Path, target: str | os.PathLike[str]) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_json_atomically(record, {"epoch": 2})
    monkeypatch.undo()
    assert json.loads(record.read_text()) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json"]


# -- folders pcam fills in place -----------------------------------------------------------------


def test_claim_makes_and_marks_a_new_folder(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "run"
    claim_directory(folder, "run")
    assert read_marker(folder) == {"kind": "run", "pcam_version": pcam.__version__}
    claim_directory(folder, "run")  # pcam's own: accepted again
    (folder / "model.keras").write_text("m")
    claim_directory(folder, "run")


def test_claim_refuses_foreign_files_and_other_kinds(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text("the user's own config")
    with pytest.raises(UnsafeOutputError) as caught:
        claim_directory(folder, "run")
    assert str(caught.value) == (
        f"{folder}: expected a new or empty folder, or a run folder that pcam wrote, found files "
        f"pcam did not write (config.json); {NEVER}"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    other = tmp_path / "report"
    other.mkdir()
    write_marker(other, "report", [])
    with pytest.raises(UnsafeOutputError, match="found pcam's report folder;"):
        claim_directory(other, "run")


def test_claim_tolerates_the_names_it_is_told(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    (folder / "worker-1").mkdir(parents=True)
    claim_directory(folder, "run", tolerated=lambda name: name.startswith("worker-"))
    assert read_marker(folder) is not None
    other = tmp_path / "other"
    (other / "worker-1").mkdir(parents=True)
    with pytest.raises(UnsafeOutputError, match=r"did not write \(worker-1\);"):
        claim_directory(other, "run")


def test_records_of_written_files_merge_and_refuse_other_kinds(tmp_path: Path) -> None:
    record_written(tmp_path, "synthetic data", ["a.h5"])
    record_written(tmp_path, "synthetic data", ["b.h5", "a.h5"])
    assert written_files(tmp_path, "synthetic data") == {"a.h5", "b.h5"}
    assert written_files(tmp_path, "report") == set()
    with pytest.raises(UnsafeOutputError, match="expected a folder for report files"):
        record_written(tmp_path, "report", ["c"])


# -- free space ----------------------------------------------------------------------------------


def test_low_space_gives_one_warning_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=3 * 2**20))
    assert warn_if_low_space(tmp_path / "new" / "run", 5 * 2**30, "the model", command="pcam x")
    assert capsys.readouterr().err == (
        f"pcam x: warning: {tmp_path / 'new' / 'run'}: the model needs about 5.0 GB, found "
        "3.0 MB free; free some space, or the run may stop when the disk fills (nothing "
        "half-written is left, and the same command resumes or starts again)\n"
    )
    assert not warn_if_low_space(tmp_path, 3 * 2**20, "the model")  # exactly enough
    assert not warn_if_low_space(tmp_path, 100, "the model")
    assert capsys.readouterr().err == ""


# -- synthetic data: only files synth wrote ------------------------------------------------------


def test_synth_overwrite_never_replaces_files_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    real = layout.h5_path(data, "valid", "x")
    with h5py.File(real, "w") as handle:  # a PCam file from elsewhere (downloaded, say)
        handle.create_dataset("x", data=np.zeros((2, 96, 96, 3), np.uint8))
    before = _tree(data)
    argv = ["synth", str(data), "--splits", "valid", "--n", "16", "--overwrite"]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        f"pcam synth: error: {real}: expected a file that pcam synth wrote, to replace with "
        f"--overwrite, found a file pcam did not write (not listed in {MARKER}); {NEVER}\n"
    )
    assert _tree(data) == before
    real.unlink()
    assert main(argv) == 0  # its own files it replaces
    first = real.read_bytes()
    assert main([*argv, "--seed", "5"]) == 0
    assert real.read_bytes() != first


def test_a_stale_companion_pcam_did_not_write_is_kept(tmp_path: Path) -> None:
    """``--overwrite`` drops an old mask left by synth, never a mask synth did not write."""
    write_split(tmp_path, "train", 16, seed=0, with_mask=True)
    mask = layout.h5_path(tmp_path, "train", "mask")
    write_split(tmp_path, "train", 16, seed=1, overwrite=True)  # no mask this time
    assert not mask.exists()
    with h5py.File(mask, "w") as handle:
        handle.create_dataset("mask", data=np.zeros((16, 96, 96, 1), bool))
    with pytest.raises(UnsafeOutputError, match=r"_train_mask\.h5: expected a file that pcam"):
        write_split(tmp_path, "train", 16, seed=2, overwrite=True)
    assert mask.exists()


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
    argv = ["fullcheck", str(data), "--out", str(out), "--model", "small", "--weights", "none"]
    assert main([*argv, "--overwrite"]) == 1
    assert capsys.readouterr().err == (
        f"pcam fullcheck: error: {out}: expected a new or empty folder, or a full check folder "
        f"that pcam wrote, found files pcam did not write (run); {NEVER}\n"
    )
    assert _tree(out) == before
