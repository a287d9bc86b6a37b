"""``tools/prune_fullchecks.py``: the GPU runner's old full checks go, nothing else ever does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pcam.fullcheck import FULL_CHECK
from pcam.outputs import MARKER, write_marker
from tests.tool_modules import load_tool

ROOT = Path(__file__).resolve().parent.parent
HOUR = 3600.0
NOW = 1_800_000_000.0


prune_tool = load_tool("prune_fullchecks")


def _check(root: Path, name: str, hours_ago: float, kind: str = FULL_CHECK) -> Path:
    """A folder pcam marked as ``kind``, with a run inside, last touched ``hours_ago``."""
    folder = root / name
    (folder / "run").mkdir(parents=True)
    (folder / "run" / "model.keras").write_bytes(b"model")
    write_marker(folder, kind)
    stamp = NOW - hours_ago * HOUR
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (stamp, stamp))
    return folder


def test_the_tool_reads_pcams_own_marker() -> None:
    assert prune_tool.MARKER == MARKER
    assert prune_tool.FULL_CHECK == FULL_CHECK


def test_old_checks_go_recent_and_current_ones_and_other_folders_stay(tmp_path: Path) -> None:
    checks = {
        name: _check(tmp_path, name, hours)
        for name, hours in [
            ("c1", 100),
            ("c2", 90),
            ("c3", 80),
            ("c4", 70),
            ("c5", 60),
            ("current", 500),
        ]
    }
    report = _check(tmp_path, "report-of-someone", 1000, kind="report")
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("the user's")
    loose = tmp_path / "file.txt"
    loose.write_text("the user's too")
    removed, others = prune_tool.prune(
        tmp_path, keep="current", keep_last=3, min_age_hours=24, now=NOW
    )
    assert sorted(p.name for p in removed) == ["c1", "c2"]  # the oldest beyond the 3 kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["c3", "c4", "c5", "current", "report-of-someone", "notes", "file.txt"]
    )
    assert sorted(p.name for p in others) == ["file.txt", "notes", "report-of-someone"]
    assert (checks["current"] / "run" / "model.keras").exists()
    assert (report / MARKER).exists()
    assert (mine / "keep.txt").exists()


def test_a_check_active_within_the_minimum_age_is_never_removed(tmp_path: Path) -> None:
    _check(tmp_path, "old", 30)
    busy = _check(tmp_path, "busy", 30)
    (busy / "run" / "training_log.csv").write_text("epoch\n")  # written just now (NOW - 0)
    os.utime(busy / "run" / "training_log.csv", (NOW - 0.5 * HOUR, NOW - 0.5 * HOUR))
    removed, _ = prune_tool.prune(tmp_path, keep="x", keep_last=0, min_age_hours=24, now=NOW)
    assert [p.name for p in removed] == ["old"]
    assert busy.exists()


def test_the_command_line_prints_what_it_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _check(tmp_path, "gone", 24 * 400)
    assert prune_tool.main([str(tmp_path), "--keep", "abc", "--keep-last", "0"]) == 0
    out = capsys.readouterr().out
    assert f"removed the old full check {tmp_path / 'gone'}" in out
    assert not (tmp_path / "gone").exists()
    assert prune_tool.main([str(tmp_path / "missing"), "--keep", "abc"]) == 0
    for bad in (["--keep", "../x"], ["--keep", "a", "--keep-last", "-1"]):
        with pytest.raises(SystemExit) as stop:
            prune_tool.main([str(tmp_path), *bad])
        assert stop.value.code == 2
