"""tools/durations_summary.py: the workflow summary of a pytest run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.tool_modules import load_tool

ROOT = Path(__file__).resolve().parent.parent

summary = load_tool("durations_summary").summary

LOG = """\
tests/test_a.py ....                                                     [100%]
============================= slowest 3 durations ==============================
8.92s call     tests/test_train.py::test_precision
\x1b[1m1.20s\x1b[0m setup    tests/test_explain.py::test_grid

(1 durations < 0.005s hidden.  Use -vv to show these durations.)
================== tests over 5 s without the slow marker ===================
  8.9 s  tests/test_train.py::test_precision
mark them @pytest.mark.slow (or make them faster): the fast tier is `pytest -m "not slow"`
=========================== short test summary info ============================
FAILED tests/test_b.py::test_x
========== 1 failed, 1181 passed, 35 deselected, 9 warnings in 81.20s (0:01:21) ==========
"""


def test_the_section_has_the_result_the_slowest_and_the_unmarked() -> None:
    assert summary("fast tier", LOG) == (
        "### fast tier\n\n"
        "**1 failed, 1181 passed, 35 deselected, 9 warnings in 81.20s (0:01:21)**\n\n"
        "slowest tests:\n\n```text\n"
        "8.92s call     tests/test_train.py::test_precision\n"
        "1.20s setup    tests/test_explain.py::test_grid\n"
        "(1 durations < 0.005s hidden.  Use -vv to show these durations.)\n"
        "```\n\n"
        "unmarked slow tests:\n\n```text\n"
        "  8.9 s  tests/test_train.py::test_precision\n"
        "mark them @pytest.mark.slow (or make them faster): the fast tier is "
        '`pytest -m "not slow"`\n'
        "```\n"
    )


def test_a_log_without_a_result_says_so_and_the_script_never_fails(tmp_path: Path) -> None:
    assert summary("tests", "collecting ...\nERROR: boom\n") == (
        "### tests\n\nno pytest result in the log\n"
    )
    missing = tmp_path / "none.log"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "durations_summary.py"), "tests", str(missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "### tests\n\nno pytest result in the log\n")
