"""A pytest plugin that keeps the tiers honest: it names the unmarked tests that ran long.

At the end of a run it lists every test that took more than ``--slow-report-seconds`` (5 by
default; setup, call and teardown together) without the ``slow`` marker, slowest first, under
the heading ``tests over N s without the slow marker``. It reports; it never fails a run, since a
busy machine makes any test slow now and then. Under pytest-xdist the controller sees every
worker's reports, so one list covers the whole run.
"""

from __future__ import annotations

import pytest

DEFAULT_SECONDS = 5.0
"""How long an unmarked test may take before the report names it."""

SLOW_MARKER = "slow"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--slow-report-seconds``: the report's limit (0 turns the report off)."""
    parser.addoption(
        "--slow-report-seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help="name the tests without the slow marker that took longer than this "
        f"(default {DEFAULT_SECONDS:g} s; 0: no report)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the run's report (not in an xdist worker: the controller sees every test)."""
    limit = float(config.getoption("--slow-report-seconds"))
    if limit > 0 and not hasattr(config, "workerinput"):
        config.pluginmanager.register(SlowReport(limit), "pcam-slow-report")


def unmarked_over(durations: dict[str, float], unmarked: set[str], limit: float) -> list[str]:
    """The report's lines: ``" 12.3 s  tests/x.py::test_y"``, slowest first, over ``limit``."""
    slow = sorted(
        ((seconds, nodeid) for nodeid, seconds in durations.items() if nodeid in unmarked),
        key=lambda item: (-item[0], item[1]),
    )
    return [f"{seconds:5.1f} s  {nodeid}" for seconds, nodeid in slow if seconds > limit]


class SlowReport:
    """The tallies of one run, and the section they end in."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.durations: dict[str, float] = {}
        self.unmarked: set[str] = set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Add each phase's duration to its test, and note the tests without the marker."""
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration
        if SLOW_MARKER not in report.keywords:
            self.unmarked.add(report.nodeid)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Write the list, if anything is on it."""
        lines = unmarked_over(self.durations, self.unmarked, self.limit)
        if not lines:
            return
        terminalreporter.section(f"tests over {self.limit:g} s without the {SLOW_MARKER} marker")
        for line in lines:
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            f"mark them @pytest.mark.{SLOW_MARKER} (or make them faster): the fast tier is "
            f'`pytest -m "not {SLOW_MARKER}"`'
        )
