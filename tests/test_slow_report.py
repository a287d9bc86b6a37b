"""The report of unmarked slow tests (tests/slow_report.py): what it names, and what it leaves."""

from __future__ import annotations

import re

import pytest

from tests.slow_report import unmarked_over

pytest_plugins = ["pytester"]

INNER_TESTS = """
import time

import re

import pytest


def test_quick():
    pass


def test_unmarked_and_slow():
    time.sleep(0.2)


@pytest.mark.slow
def test_marked_and_slow():
    time.sleep(0.2)


@pytest.fixture
def slow_setup():
    time.sleep(0.15)
    yield
    time.sleep(0.15)


def test_slow_only_in_setup_and_teardown(slow_setup):
    pass
"""


def _run(pytester: pytest.Pytester, *args: str) -> list[str]:
    """Run INNER_TESTS in a pytest of their own, with the plugin, and return its output."""
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_inprocess("-p", "tests.slow_report", *args)
    result.assert_outcomes(passed=4)
    return result.outlines


def test_the_report_names_only_unmarked_tests_over_the_limit(pytester: pytest.Pytester) -> None:
    lines = _run(pytester, "--slow-report-seconds", "0.17")
    heading = [
        i for i, line in enumerate(lines) if "tests over 0.17 s without the slow marker" in line
    ]
    assert len(heading) == 1
    listed = [line for line in lines[heading[0] + 1 :] if re.match(r"\s*\d+\.\d s  ", line)]
    assert [line.split("  ")[-1] for line in listed] == [
        "test_inner.py::test_slow_only_in_setup_and_teardown",  # 0.3 s over its phases
        "test_inner.py::test_unmarked_and_slow",
    ]
    footer = lines.index(listed[-1]) + 1
    assert 'the fast tier is `pytest -m "not slow"`' in lines[footer]
    assert not any("test_marked_and_slow" in line or "test_quick" in line for line in lines)


def test_the_default_limit_is_five_seconds_and_zero_turns_it_off(
    pytester: pytest.Pytester,
) -> None:
    assert not any("without the slow marker" in line for line in _run(pytester))
    assert not any(
        "without the slow marker" in line for line in _run(pytester, "--slow-report-seconds", "0")
    )
    lines = _run(pytester, "--slow-report-seconds", "0.25")  # between the two unmarked tests
    listed = [line.split("  ")[-1] for line in lines if line.endswith("teardown")]
    assert listed == ["test_inner.py::test_slow_only_in_setup_and_teardown"]
    assert not any(line.endswith("test_unmarked_and_slow") for line in lines)


def test_unmarked_over_sorts_slowest_first_and_formats_seconds() -> None:
    durations = {"a": 6.0, "b": 12.34, "c": 7.0, "d": 5.0, "e": 100.0}
    assert unmarked_over(durations, {"a", "b", "d", "e"} - {"e"}, 5.0) == [
        " 12.3 s  b",
        "  6.0 s  a",
    ]
    assert unmarked_over({"x": 2.0, "w": 2.0}, {"x", "w"}, 1.0) == ["  2.0 s  w", "  2.0 s  x"]
