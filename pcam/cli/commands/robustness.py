"""``pcam robustness --model M --data DIR --out DIR``: scores and Grad-CAM under colour shifts."""

from __future__ import annotations

import argparse
from typing import Any

from pcam import layout
from pcam.cli import options
from pcam.data.split import open_split


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam robustness`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "robustness",
        help="score a saved model under stain and scanner colour shifts",
        description="Predict every patch of a split as it is and under each of ten fixed "
        "colour shifts (HED stain shifts at three strengths, towards haematoxylin (h+) and "
        "towards eosin (e+); a warm and a cool scanner cast, gamma 0.8, contrast 0.8), and "
        "write robustness.json, robustness.csv and robustness.png: accuracy, ROC AUC and F1 per "
        "shift with the drop from the unshifted split, and how well the Grad-CAM maps of a "
        "seeded sample of patches correlate with those of their shifted copies. A model with a "
        "calibration file (pcam calibrate) is scored with calibrated probabilities.",
    )
    options.add_saved_model(parser)
    options.add_data(parser)
    parser.add_argument(
        "--split", choices=layout.SPLITS, default="test", help="split to score (default: test)"
    )
    options.add_out(parser, "robustness folder to write")
    options.add_batch_size(parser, 256)
    options.add_tta(parser)
    parser.add_argument(
        "--cam-patches",
        type=options.seed,
        default=32,
        help="patches whose Grad-CAM maps are compared, shifted against unshifted; 0 skips the "
        "check (default: 32)",
    )
    options.add_seed(parser, "seed of the Grad-CAM patches")
    options.add_no_calibration(parser)
    options.add_overwrite(parser, "replace a robustness folder pcam wrote (never another folder)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Score with a progress bar over every pass, then print the table and the folder."""
    from pcam.evaluation.robustness import SHIFTS, format_robustness, robustness
    from pcam.explain.gradcam import GradCAM

    split = open_split(args.data, args.split)
    passes = 1 + len(SHIFTS)
    label = f"scoring {args.split} under {len(SHIFTS)} shifts" + (" (x8 TTA)" if args.tta else "")
    with options.progress_bar(len(split) * passes, label) as update:
        report = robustness(
            args.model,
            args.data,
            args.split,
            args.out,
            cam_maker=GradCAM,
            batch_size=args.batch_size,
            tta=args.tta,
            cam_patches=args.cam_patches,
            seed=args.seed,
            overwrite=args.overwrite,
            calibration=not args.no_calibration,
            progress=update,
        )
    print(format_robustness(report))
    print(f"robustness: {args.out} ({options.listing(args.out)}); {passes} passes")
    return options.EXIT_OK
