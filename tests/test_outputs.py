"""The safe-output rule (:mod:`pcam.outputs`): ``--overwrite`` replaces only what pcam wrote.

The rule itself, staged replacement, atomic records, claimed folders and the free-space warning,
without TensorFlow; the commands that use it are in ``tests/test_safe_outputs.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import pcam
from pcam import layout, outputs
from pcam.cli import main
from pcam.errors import (
    OutputExistsError,
    OutputNotWritableError,
    OutputPathError,
    UnsafeOutputError,
)
from pcam.outputs import (
    MARKER,
    check_writable,
    claim_directory,
    make_folder,
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


@pytest.mark.parametrize(
    ("name", "suffix", "temporary"),
    [
        ("model.keras", ".keras", ".model.partial-{pid}.keras"),
        ("latest.weights.h5", ".weights.h5", ".latest.partial-{pid}.weights.h5"),
        ("p.csv", ".part", ".p.csv.partial-{pid}.part"),
        ("log.csv", "", ".log.csv.partial-{pid}"),
    ],
)
def test_atomic_path_names_publishes_and_cleans_up(
    tmp_path: Path, name: str, suffix: str, temporary: str
) -> None:
    """Written under a hidden name beside it, renamed on success, removed on failure or when
    not published; the old content stays until the rename."""
    target = tmp_path / name
    target.write_text("old")
    with outputs.atomic_path(target, suffix=suffix) as staging:
        assert staging.name == temporary.format(pid=os.getpid())
        assert staging.parent == tmp_path
        staging.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"

    def killed_halfway() -> None:
        with outputs.atomic_path(target, suffix=suffix) as staging:
            staging.write_text("half")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        killed_halfway()
    assert target.read_text() == "new"
    with outputs.atomic_path(target, suffix=suffix, publish=False) as staging:
        staging.write_text("a worker's copy")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


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
    record_written(tmp_path, "synthetic data", ["b.h5"])
    assert written_files(tmp_path, "synthetic data") == {"a.h5", "b.h5"}
    record_written(tmp_path, "synthetic data", ["c.h5"], removed=["a.h5"])
    assert written_files(tmp_path, "synthetic data") == {"b.h5", "c.h5"}
    assert written_files(tmp_path, "report") == set()
    with pytest.raises(UnsafeOutputError) as caught:
        record_written(tmp_path, "report", ["c"])
    assert str(caught.value) == (
        f"{tmp_path}: expected a folder for report files, found pcam's synthetic data folder; "
        f"{NEVER}"
    )
    (tmp_path / "run").mkdir()
    write_marker(tmp_path / "run", "run")
    assert written_files(tmp_path / "run", "run") == set()  # a marker without a file list


# -- free space ----------------------------------------------------------------------------------


def test_low_space_gives_one_warning_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=3 * 10**6))
    assert warn_if_low_space(tmp_path / "new" / "run", 5 * 10**9, "the model", command="pcam x")
    assert capsys.readouterr().err == (
        f"pcam x: warning: {tmp_path / 'new' / 'run'}: the model needs about 5.00 GB, found "
        "3.00 MB free; free some space, or the run may stop when the disk fills (nothing "
        "half-written is left, and the same command resumes or starts again)\n"
    )
    assert not warn_if_low_space(tmp_path, 3 * 10**6, "the model")  # exactly enough
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
    argv = ["synth", "--out", str(data), "--splits", "valid", "--n", "16", "--overwrite"]
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


# -- exact messages and edges ----------------------------------------------------------------------


def test_articles() -> None:
    assert outputs._a("report") == "a report"
    assert outputs._a("explanation") == "an explanation"
    assert outputs._a("Xray") == "a Xray"


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.00 kB"),
        (1500, "1.50 kB"),
        (3 * 10**6, "3.00 MB"),
        (999 * 10**6, "999.00 MB"),
        (5 * 10**9 - 1, "5.00 GB"),
        (2048 * 10**9, "2048.00 GB"),
    ],
)
def test_sizes_in_messages(count: int, text: str) -> None:
    assert outputs.human_size(count) == text


def test_check_writable_makes_nothing_and_walks_up_to_an_existing_folder(tmp_path: Path) -> None:
    check_writable(tmp_path)
    check_writable(tmp_path / "not" / "yet" / "there")
    assert list(tmp_path.iterdir()) == []  # the probe is gone, nothing was made


def test_check_writable_names_the_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(OutputPathError) as caught:
        check_writable(tmp_path / "a-file" / "deeper" / "out")
    assert str(caught.value) == (
        f"{tmp_path / 'a-file'}: expected a directory to write PCam files into, found a file in "
        "the way; choose another path"
    )


def test_check_writable_names_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(OutputPathError) as caught:
        check_writable(tmp_path / "link" / "out")
    assert str(caught.value) == (
        f"{tmp_path / 'link'}: expected a directory to write PCam files into, found a broken "
        "link; choose another path"
    )


@pytest.mark.parametrize(
    ("error", "found"),
    [
        (PermissionError(13, "Permission denied"), "a folder without write permission"),
        (OSError(30, "Read-only file system"), "read-only file system"),
        (OSError("no strerror"), "oserror"),
    ],
)
def test_check_writable_reports_what_the_system_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, found: str
) -> None:
    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise error

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputNotWritableError) as caught:
        check_writable(tmp_path / "new")
    assert str(caught.value) == (
        f"{tmp_path}: expected a folder this user can write into, found {found}; choose another "
        "output path or fix its permissions"
    )


def test_free_space_is_asked_of_the_nearest_existing_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    asked: list[Path] = []

    def disk_usage(path: Path) -> Any:
        asked.append(Path(path))
        return usage._replace(free=12345)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    assert outputs.free_bytes(tmp_path / "a" / "b") == 12345
    assert outputs.free_bytes(tmp_path) == 12345
    assert asked == [tmp_path, tmp_path]


def test_the_warning_names_pcam_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1))
    assert warn_if_low_space(tmp_path, 2, "it")
    assert capsys.readouterr().err.startswith(f"pcam: warning: {tmp_path}: it needs about 2 B,")


def test_make_folder_names_the_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(OutputPathError) as caught:
        make_folder(tmp_path / "a-file" / "out")
    assert str(caught.value) == (
        f"{tmp_path / 'a-file' / 'out'}: expected a directory to write PCam files into, found a "
        "file in the way; choose another path"
    )


def test_claim_refuses_a_file_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("mine")
    with pytest.raises(OutputPathError) as caught:
        claim_directory(tmp_path / "run", "run")
    assert str(caught.value) == (
        f"{tmp_path / 'run'}: expected a directory to write PCam files into, found a file; "
        "choose another path"
    )


def test_claim_names_the_other_kind_exactly(tmp_path: Path) -> None:
    write_marker(tmp_path, "report", [])
    with pytest.raises(UnsafeOutputError) as caught:
        claim_directory(tmp_path, "demo")
    assert str(caught.value) == (
        f"{tmp_path}: expected a new or empty folder, or a demo folder that pcam wrote, found "
        f"pcam's report folder; {NEVER}"
    )


@pytest.mark.parametrize(
    ("names", "shown"),
    [(["a", "b", "c"], "a, b, c"), (["a", "b", "c", "d"], "a, b, c, ..."), (["z"], "z")],
)
def test_foreign_files_are_listed_three_at_most(
    tmp_path: Path, names: list[str], shown: str
) -> None:
    claimed = tmp_path / "claimed"
    report = _report(tmp_path / "report", {"metrics.json": "{}"})
    claimed.mkdir()
    for name in names:
        (claimed / name).write_text("mine")
        (report / name).write_text("mine")
    with pytest.raises(UnsafeOutputError) as by_claim:
        claim_directory(claimed, "run")
    assert f"found files pcam did not write ({shown}); " in str(by_claim.value)
    with pytest.raises(UnsafeOutputError) as by_replacement:
        refuse_unsafe_replacement(report, "report")
    assert f"found files pcam did not write ({shown}); " in str(by_replacement.value)


def test_refusals_name_the_destination(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    with pytest.raises(OutputPathError) as as_file:
        refuse_existing_directory(tmp_path / "file", overwrite=False)
    assert str(as_file.value).startswith(f"{tmp_path / 'file'}: expected a directory")
    folder = _report(tmp_path / "report", {"metrics.json": "{}"})
    with pytest.raises(OutputExistsError) as exists:
        refuse_existing_directory(folder, overwrite=False)
    assert str(exists.value).startswith(f"{folder}: expected a new or empty place to write")


def test_the_default_kind_is_a_report_and_inputs_are_passed_on(tmp_path: Path) -> None:
    folder = _report(tmp_path / "report", {"metrics.json": "{}", "model.keras": "m"})
    refuse_existing_directory(folder, overwrite=True)  # a report, the default kind
    explanation = tmp_path / "explanation"
    explanation.mkdir()
    (explanation / "grid.png").write_text("png")
    write_marker(explanation, "explanation", ["grid.png"])
    with pytest.raises(UnsafeOutputError, match="found pcam's explanation folder;"):
        refuse_existing_directory(explanation, overwrite=True)
    with pytest.raises(UnsafeOutputError, match="holding the input"):
        refuse_existing_directory(folder, overwrite=True, inputs=[folder / "model.keras"])


def test_a_staged_folder_goes_where_nothing_was(tmp_path: Path) -> None:
    destination = tmp_path / "deep" / "report"
    with staged_directory(destination) as staging:
        (staging / "metrics.json").write_text("new")
    assert (destination / "metrics.json").read_text() == "new"
    assert read_marker(destination) == {
        "kind": "report",
        "pcam_version": pcam.__version__,
        "files": ["metrics.json"],
    }
    assert sorted(p.name for p in destination.parent.iterdir()) == ["report"]


def test_the_old_output_is_moved_aside_beside_it_under_a_hidden_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = _report(tmp_path / "report", {"metrics.json": "old"})
    replace = Path.replace
    moves: list[tuple[str, Path]] = []

    def record(self: Path, target: str | os.PathLike[str]) -> Path:
        moves.append((self.name, Path(target)))
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", record)
    with staged_directory(destination) as staging:
        (staging / "metrics.json").write_text("new")
    monkeypatch.undo()
    renames = [(name, target) for name, target in moves if target.name != MARKER]
    assert renames[0][0] == "report"
    aside = renames[0][1]
    assert aside.parent == tmp_path
    assert aside.name.startswith(".report.old-")
    assert renames[1] == (renames[1][0], destination)
    assert not aside.exists()


def test_write_json_atomically_writes_indented_json_and_strings_for_the_rest(
    tmp_path: Path,
) -> None:
    record = tmp_path / "r.json"
    write_json_atomically(record, {"path": tmp_path, "n": [1, 2]})
    assert record.read_text() == (
        f'{{\n  "path": "{tmp_path}",\n  "n": [\n    1,\n    2\n  ]\n}}\n'
    )


def test_write_json_atomically_raises_the_real_error_when_nothing_was_written(
    tmp_path: Path,
) -> None:
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        write_json_atomically(tmp_path / "r.json", circular)
    assert list(tmp_path.iterdir()) == []


def test_the_write_probe_is_a_hidden_file_in_the_folder_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Path] = []
    mkstemp = tempfile.mkstemp

    def spy(*args: Any, **kwargs: Any) -> tuple[int, str]:
        descriptor, name = mkstemp(*args, **kwargs)
        made.append(Path(name))
        return descriptor, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    check_writable(tmp_path / "new" / "out")
    assert len(made) == 1
    assert made[0].parent == tmp_path  # where the output goes, not the system's temporary folder
    assert made[0].name.startswith(".pcam-write-check-")
    assert not made[0].exists()


def test_an_old_output_that_cannot_be_removed_does_not_fail_the_replacement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = _report(tmp_path / "report", {"metrics.json": "old"})

    unlink = os.unlink

    def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith("metrics.json"):  # the old copy's file will not go away
            raise PermissionError(13, "Permission denied")
        unlink(path, *args, **kwargs)

    with staged_directory(destination) as staging:
        (staging / "metrics.json").write_text("new")
        monkeypatch.setattr(os, "unlink", refuse)
    monkeypatch.undo()
    assert (destination / "metrics.json").read_text() == "new"
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(".report.old-")]
    assert len(aside) == 1  # left behind, hidden, rather than failing a complete replacement
