"""Turn a pytest log into a section of the GitHub workflow summary (``$GITHUB_STEP_SUMMARY``).

Usage: ``python tools/durations_summary.py TITLE LOG >> "$GITHUB_STEP_SUMMARY"``. The section
has the run's result line (``1182 passed in 81.20s``), the slowest tests (pytest's
``--durations`` block) and the report of tests over the limit without the ``slow`` marker
(tests/slow_report.py), each as it appears in the log. A missing or empty log gives a section
that says so: the summary step runs even when the tests did not.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RESULT = re.compile(
    r"^=+ (.*\b(passed|failed|error|errors|skipped|deselected)\b.* in [\d.]+s.*) =+$"
)
HEADING = re.compile(r"^=+ (.+?) =+$")


def block(lines: list[str], starts: str) -> list[str]:
    """The lines after the ``=== ... ===`` heading containing ``starts``, up to the next one."""
    for index, line in enumerate(lines):
        heading = HEADING.match(line)
        if heading and starts in heading.group(1):
            body: list[str] = []
            for following in lines[index + 1 :]:
                if HEADING.match(following):
                    break
                body.append(following)
            return [line for line in body if line.strip()]
    return []


def summary(title: str, log: str) -> str:
    """The Markdown section for the pytest output ``log``."""
    lines = [ANSI.sub("", line) for line in log.splitlines()]
    results = [match.group(1) for line in lines if (match := RESULT.match(line))]
    parts = [f"### {title}", ""]
    parts.append(f"**{results[-1]}**" if results else "no pytest result in the log")
    for name, starts in (("slowest tests", "slowest"), ("unmarked slow tests", "without the")):
        found = block(lines, starts)
        if found:
            parts += ["", f"{name}:", "", "```text", *found, "```"]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    """Print the section for ``TITLE LOG``."""
    if len(argv) != 2:
        print("usage: durations_summary.py TITLE LOG", file=sys.stderr)
        return 2
    title, path = argv
    log = Path(path)
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    print(summary(title, text), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
