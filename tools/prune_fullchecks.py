"""Remove old full-check folders from the GPU runner's persistent output directory.

The GPU workflow keeps each commit's ``pcam fullcheck`` output in ``ROOT/<commit>`` so that a job
that dies resumes where it stopped. This keeps that directory from growing without bound: it
removes the folders of other commits, except the ``--keep-last`` most recently active ones and
any active within ``--min-age-hours`` (another job may be using it). Only folders pcam marked as
a full check (``.pcam-output.json`` of kind ``full check``) are ever removed; anything else in
ROOT is left alone and listed.

Standalone (standard library only), so it runs before any environment is installed::

    python tools/prune_fullchecks.py ROOT --keep COMMIT [--keep-last 3] [--min-age-hours 24]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

MARKER = ".pcam-output.json"
"""pcam's output marker (the same name as :data:`pcam.outputs.MARKER`)."""
FULL_CHECK = "full check"
"""The marker kind of a ``pcam fullcheck`` folder (:data:`pcam.fullcheck.FULL_CHECK`)."""


def is_full_check(folder: Path) -> bool:
    """Whether ``folder`` holds pcam's marker of a full check."""
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("kind") == FULL_CHECK


def last_active(folder: Path) -> float:
    """The latest modification time of ``folder`` and of what it holds, in seconds."""
    times = [folder.stat().st_mtime]
    for entry in folder.rglob("*"):
        try:
            times.append(entry.stat().st_mtime)
        except OSError:  # removed while we looked
            continue
    return max(times)


def prune(
    root: Path, *, keep: str, keep_last: int, min_age_hours: float, now: float | None = None
) -> tuple[list[Path], list[Path]]:
    """Remove the old full checks under ``root``; returns ``(removed, left_alone_not_pcam)``."""
    now = time.time() if now is None else now
    checks, others = [], []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink() and is_full_check(entry):
            checks.append((last_active(entry), entry))
        else:
            others.append(entry)
    checks.sort(reverse=True)
    removed = []
    for active, folder in checks[keep_last:]:
        if now - active >= min_age_hours * 3600:
            shutil.rmtree(folder)
            removed.append(folder)
    return removed, others


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, prune, and print one line per folder removed or left alone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the persistent directory of full checks")
    parser.add_argument("--keep", required=True, help="this commit's folder name (never removed)")
    parser.add_argument("--keep-last", type=int, default=3, help="recent checks kept (default 3)")
    parser.add_argument(
        "--min-age-hours", type=float, default=24.0, help="idle hours before removal (default 24)"
    )
    args = parser.parse_args(argv)
    if args.keep_last < 0 or args.min_age_hours < 0:
        parser.error("--keep-last and --min-age-hours must be >= 0")
    if not args.keep or "/" in args.keep or args.keep in (".", ".."):
        parser.error(f"--keep: expected a folder name (the commit), found {args.keep!r}")
    removed, others = prune(
        args.root, keep=args.keep, keep_last=args.keep_last, min_age_hours=args.min_age_hours
    )
    for folder in removed:
        print(f"removed the old full check {folder}")
    for entry in others:
        print(f"left alone (not a pcam full check): {entry}", file=sys.stderr)
    print(f"{len(removed)} old full check(s) removed from {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
