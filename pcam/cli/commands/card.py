"""``pcam card RUN_DIR [--report DIR] [--fullcheck DIR] [--out FILE]``: write MODEL_CARD.md."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pcam.cli import options


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam card`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "card",
        help="write MODEL_CARD.md from what a run and its evaluations recorded",
        description="Write a model card (Markdown) of the model trained in RUN_DIR from the "
        "files pcam recorded, nothing typed by hand: the model; intended use and limitations "
        "(research use only); the training data (with checksums when a full check recorded "
        "them); the recipe and config; the metrics with their 95% intervals (--report); the "
        "calibration (the model's calibration file); the Grad-CAM quality (--explain); the "
        "robustness to stain and scanner shifts (--robustness); the full check (--fullcheck, "
        "whose report/, explain/ and robustness/ are then the defaults); and every source file "
        "with its SHA-256. A section whose record is absent says 'not recorded' and gives the "
        "command that records it.",
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="the run folder pcam train wrote"
    )
    parser.add_argument(
        "--report", type=Path, default=None, metavar="DIR", help="a report of pcam evaluate"
    )
    parser.add_argument(
        "--explain", type=Path, default=None, metavar="DIR", help="an explanation of pcam explain"
    )
    parser.add_argument(
        "--robustness",
        type=Path,
        default=None,
        metavar="DIR",
        help="a robustness folder of pcam robustness",
    )
    parser.add_argument(
        "--fullcheck",
        type=Path,
        default=None,
        metavar="DIR",
        help="the --out folder of a finished pcam fullcheck (RUN_DIR is then DIR/run)",
    )
    options.add_out(
        parser,
        "the card to write (default: MODEL_CARD.md in --fullcheck DIR, else in RUN_DIR)",
        required=False,
        metavar="FILE",
    )
    options.add_overwrite(parser, "replace a model card pcam wrote (never another file)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the card and print where it went."""
    from pcam.evaluation.card import write_card

    path = write_card(
        args.run_dir,
        report=args.report,
        fullcheck=args.fullcheck,
        explain=args.explain,
        robustness=args.robustness,
        out=args.out,
        overwrite=args.overwrite,
    )
    print(f"model card: {path}")
    return options.EXIT_OK
