"""``pcam calibrate --model RUN/model.keras --data DIR [--split valid]``: fit a temperature."""

from __future__ import annotations

import argparse
from typing import Any

from pcam.cli import options
from pcam.data.split import open_split


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam calibrate`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "calibrate",
        help="fit a temperature on valid so that the probabilities mean what they say",
        description="Temperature scaling: predict the tumour log-odds of every patch of a "
        "held-out split (valid by default; never test) and fit the one temperature T whose "
        "probabilities sigmoid(logit / T) have the lowest negative log-likelihood there (a "
        "bounded 1-D search; T = 1 is a candidate, so the NLL never rises). The operating-point "
        "thresholds (sensitivity at 90/95/98% specificity and the reverse) are chosen on the "
        "same split. Both go to MODEL_STEM.calibration.json beside the model, which is left "
        "untouched; pcam evaluate, predict, explain and app then use calibrated probabilities "
        "(--no-calibration to ignore it).",
    )
    options.add_saved_model(parser)
    options.add_data(parser)
    parser.add_argument(
        "--split",
        choices=("valid", "train"),
        default="valid",
        help="split to fit on (default: valid; train only where there is no valid split: the "
        "model has seen it, so T comes out too low; test is refused: it must stay unseen)",
    )
    options.add_batch_size(parser, 256)
    options.add_overwrite(parser, "replace the model's calibration file (one pcam wrote)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Fit with a progress bar, then print the temperature and the figures before and after."""
    from pcam.evaluation.temperature import calibrate, format_calibration

    split = open_split(args.data, args.split)
    with options.progress_bar(len(split), f"predicting {args.split}") as update:
        record = calibrate(
            args.model,
            args.data,
            args.split,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            progress=update,
        )
    print(format_calibration(record))
    print(f"calibration: {record['file']}")
    return options.EXIT_OK
