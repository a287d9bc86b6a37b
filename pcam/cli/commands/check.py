"""``pcam check --data DIR``: validate PCam files and print one row per split."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from pcam import layout
from pcam.cli import options
from pcam.data.split import PCamSplit, find_splits
from pcam.data.summary import split_summary


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam check`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "check",
        help="validate PCam files and print a summary",
        description="Validate the PCam files in --data DIR (names, keys, shapes, dtypes, "
        "lengths, labels) and print one row per split. With --deep, also read every patch back "
        "and name the first one that cannot be read (a damaged chunk of a compressed file).",
    )
    options.add_data(parser, required=False)
    options.add_deprecated_positional(parser, "DATA_DIR", "--data")
    parser.add_argument(
        "--split",
        choices=layout.SPLITS,
        default=None,
        help="check only this split (default: every split present)",
    )
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also read back every patch, label and mask (every chunk of a compressed file), "
        "with a progress bar, and name the first unreadable one",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the summary table; with ``--deep``, read everything back first."""
    splits = find_splits(args.data, args.split)
    if not args.deep:
        print(split_summary(splits))
        return options.EXIT_OK
    seconds = _read_back(splits)  # a damaged file raises before anything is printed
    print(split_summary(splits))
    patches = sum(len(split) for split in splits)
    print(
        f"deep check: every patch, label and mask read back ({patches:,} patches in "
        f"{seconds:.2f} s)"
    )
    return options.EXIT_OK


def _read_back(splits: Sequence[PCamSplit]) -> float:
    """Read every stored row of ``splits`` with a progress bar each; return the seconds taken."""
    from pcam.data.verify import verify_readable

    began = time.perf_counter()
    for split in splits:
        with options.progress_bar(len(split), f"reading {split.split}") as update:
            verify_readable(split, progress=update)
    return time.perf_counter() - began
