"""``pcam demo [--out DIR]``: the main job on built-in synthetic data (:mod:`pcam.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pcam.cli import options


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam demo`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="the main job on built-in synthetic data: data, training, evaluation, report",
        description="Write a synthetic PCam dataset (train, valid, test), check it, stream one "
        "shuffled epoch and match every patch to the file, train the small model on the "
        "streamed, augmented train split, evaluate it on the test split it never saw, and "
        "explain 16 train patches with Grad-CAM against their tumour masks: OUT/run holds the "
        "model and logs, OUT/report the metrics and plots, OUT/explain the Grad-CAM grid.",
    )
    options.add_out(
        parser,
        "working directory (default: ./pcam-demo): new, empty, or an earlier demo's, whose "
        "data/, run/, report/ and explain/ are replaced",
        required=False,
        default=Path("pcam-demo"),
    )
    parser.add_argument(
        "--n", type=options.count, default=2048, help="train patches (default: 2048)"
    )
    parser.add_argument(
        "--epochs", type=options.count, default=4, help="training epochs (default: 4)"
    )
    options.add_batch_size(parser, 64)
    options.add_seed(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo, printing each step; say where everything is."""
    from pcam.demo import run_demo

    run_demo(
        args.out,
        n=args.n,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=options.progress_bar,
        verbose=options.keras_verbosity(),
    )
    run_dir, report_dir, explain_dir = args.out / "run", args.out / "report", args.out / "explain"
    print(
        f"model and logs: {run_dir}; report: {report_dir} ({options.listing(report_dir)}); "
        f"Grad-CAM: {explain_dir}"
    )
    print(
        "This model learnt synthetic patches; on real PCam run pcam train --data DIR --out RUN, "
        "then pcam evaluate (see README)."
    )
    return options.EXIT_OK
