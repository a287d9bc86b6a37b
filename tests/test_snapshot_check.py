"""``pcam.testing.snapshot.check_figures``: the notebook's comparison with its golden figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcam.testing.snapshot import check_figures, platform_fingerprint

TOLERANCE = {"default": 0.02, "pointing_game": 0.05}


def _recorded(tmp_path: Path) -> Path:
    path = tmp_path / "snapshot.json"
    check_figures(
        path,
        {"seed": 0},
        {"accuracy": 0.9, "pointing_game": 0.8},
        other_platform_tolerance=TOLERANCE,
        record=True,
    )
    check_figures(
        path,
        {"seed": 1},
        {"accuracy": 0.7, "pointing_game": 0.6},
        other_platform_tolerance=TOLERANCE,
        record=True,
    )
    return path


def test_recording_keeps_one_entry_per_parameters_with_this_platform(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    check_figures(
        path,
        {"seed": 0},
        {"accuracy": 0.95, "pointing_game": 0.8},
        other_platform_tolerance=TOLERANCE,
        record=True,
    )
    entries = json.loads(path.read_text())
    assert [entry["parameters"] for entry in entries] == [{"seed": 1}, {"seed": 0}]
    assert entries[1]["figures"]["accuracy"] == 0.95
    assert all(entry["platform"] == platform_fingerprint() for entry in entries)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.json"]  # no temporary left


def test_equal_figures_pass_and_any_move_fails_on_the_recording_platform(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    message = check_figures(
        path,
        {"seed": 1},
        {"accuracy": 0.7, "pointing_game": 0.6},
        other_platform_tolerance=TOLERANCE,
    )
    assert message == f"2 figures equal the snapshot in {path} (the recording platform)"
    with pytest.raises(
        AssertionError, match=r"1 figure\(s\) moved .*accuracy: expected 0\.7, found 0\.7001"
    ):
        check_figures(
            path,
            {"seed": 1},
            {"accuracy": 0.7001, "pointing_game": 0.6},
            other_platform_tolerance=TOLERANCE,
        )
    with pytest.raises(AssertionError, match="figures not in the snapshot: nll"):
        check_figures(
            path,
            {"seed": 1},
            {"accuracy": 0.7, "pointing_game": 0.6, "nll": 0.3},
            other_platform_tolerance=TOLERANCE,
        )
    with pytest.raises(AssertionError, match=r"pointing_game: expected 0\.6, found None"):
        check_figures(
            path,
            {"seed": 1},
            {"accuracy": 0.7, "pointing_game": None},
            other_platform_tolerance=TOLERANCE,
        )


def test_another_platform_gets_each_figures_own_tolerance(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    entries = json.loads(path.read_text())
    for entry in entries:
        entry["platform"] = {**entry["platform"], "tensorflow": "0.0"}
    path.write_text(json.dumps(entries))
    moved = {"accuracy": 0.9 + 0.019, "pointing_game": 0.8 - 0.049}
    message = check_figures(path, {"seed": 0}, moved, other_platform_tolerance=TOLERANCE)
    assert message.endswith("(another platform than the recording one)")
    with pytest.raises(AssertionError, match=r"accuracy: .*\(allowed 0\.02\)"):
        check_figures(
            path,
            {"seed": 0},
            {**moved, "accuracy": 0.9 + 0.021},
            other_platform_tolerance=TOLERANCE,
        )
    with pytest.raises(AssertionError, match=r"pointing_game: .*\(allowed 0\.05\)"):
        check_figures(
            path,
            {"seed": 0},
            {**moved, "pointing_game": 0.8 - 0.051},
            other_platform_tolerance=TOLERANCE,
        )


def test_parameters_without_an_entry_fail_only_when_required(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    figures = {"accuracy": 0.5, "pointing_game": 0.5}
    message = check_figures(path, {"seed": 2}, figures, other_platform_tolerance=TOLERANCE)
    assert message == f"no snapshot in {path} for these parameters: nothing compared"
    with pytest.raises(AssertionError, match="found 2 entries for other parameters"):
        check_figures(path, {"seed": 2}, figures, other_platform_tolerance=TOLERANCE, required=True)
