"""``pcam evaluate --model M --data DIR --out REPORT_DIR``: metrics.json and plots of a split."""

from __future__ import annotations

import argparse
from typing import Any

from pcam import layout
from pcam.cli import options
from pcam.data.split import open_split


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam evaluate`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "evaluate",
        help="evaluate a saved model on a split: metrics.json and plots",
        description="Predict every patch of a split with a saved model and write metrics.json "
        "(accuracy, per-class precision/recall/F1, ROC AUC, NLL, confusion matrix, calibration "
        "(ECE, Brier), PR AUC, sensitivity at 90/95/98% specificity and the reverse, 95% "
        "bootstrap intervals) and PNG plots to the report directory. A model with a "
        "calibration file (pcam calibrate) is scored with calibrated probabilities and its "
        "operating-point thresholds, chosen on valid, are applied to the split. With "
        "--stain-normalise every patch is stain-normalised (Macenko) to the reference before "
        "the model sees it, and metrics.json records the reference.",
    )
    options.add_saved_model(parser)
    options.add_data(parser)
    parser.add_argument(
        "--split", choices=layout.SPLITS, default="test", help="split to evaluate (default: test)"
    )
    options.add_out(parser, "report directory to write")
    options.add_batch_size(parser, 256)
    options.add_tta(parser)
    options.add_threshold(parser)
    parser.add_argument(
        "--bootstrap",
        type=options.seed,
        default=1000,
        help="bootstrap resamples for the 95%% intervals (default: 1000)",
    )
    options.add_no_calibration(parser)
    options.add_stain_normalise(parser)
    options.add_overwrite(parser, "replace a report pcam wrote (never another folder)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Evaluate with a progress bar, then print the table and what the report holds."""
    from pcam.evaluation.evaluate import evaluate, format_table

    split = open_split(args.data, args.split)
    normaliser = options.stain_normaliser(args)  # before the model loads
    work = len(split) * (8 if args.tta else 1)
    label = f"predicting {args.split}" + (" (x8 TTA)" if args.tta else "")
    with options.progress_bar(len(split), label) as update:
        report = evaluate(
            args.model,
            args.data,
            args.split,
            args.out,
            batch_size=args.batch_size,
            tta=args.tta,
            threshold=args.threshold,
            bootstrap_rounds=args.bootstrap,
            overwrite=args.overwrite,
            calibration=not args.no_calibration,
            progress=update,
            normalise=normaliser,
        )
    print(format_table(report))
    if normaliser is not None:
        print(f"Patches: {normaliser.describe()}")
    print(f"report: {args.out} ({options.listing(args.out)}); {work:,} predictions")
    options.warn_unchanged("pcam evaluate", normaliser)
    return options.EXIT_OK
