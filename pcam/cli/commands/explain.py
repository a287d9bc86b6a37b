"""``pcam explain --model M (--data DIR | IMAGE...) --out DIR``: Grad-CAM grid and metrics."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pcam import layout
from pcam.cli import options


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam explain`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "explain",
        help="class activation maps of a saved model: grid, overlays and localisation metrics",
        description="Compute Grad-CAM (or Grad-CAM++, LayerCAM) heatmaps of the tumour class for "
        "N patches of a split (--data DIR --split S; half tumour, sampled by --seed) or for "
        "96x96 RGB patch images (PNG, JPEG, TIFF, or folders of them). OUT gets grid.png "
        "(patch, heatmap, overlay, probability and label), overlays/ and explain.json (with "
        "the pointing game and energy inside the tumour mask where the split has one, and "
        "deletion/insertion curves, each against random maps).",
    )
    parser.add_argument(
        "images",
        metavar="IMAGE",
        type=Path,
        nargs="*",
        help="patch images or folders of them (instead of --data)",
    )
    options.add_saved_model(parser)
    options.add_data(parser, required=False, help="directory of PCam files (instead of IMAGE)")
    parser.add_argument(
        "--split",
        choices=layout.SPLITS,
        default=None,
        help="split to take patches from, with --data (default: valid; train has the masks)",
    )
    options.add_out(parser, "output directory to write")
    parser.add_argument(
        "--n", type=options.count, default=16, help="patches to explain (default: 16)"
    )
    parser.add_argument(
        "--layer",
        action="append",
        default=None,
        metavar="NAME",
        help="layer to explain at; repeat to fuse several (default: the last spatial layer)",
    )
    parser.add_argument(
        "--method",
        choices=("gradcam", "gradcam++", "layercam"),
        default="gradcam",
        help="map method (default: gradcam)",
    )
    options.add_seed(parser, "sampling seed")
    options.add_threshold(parser, "predicted tumour, in the grid's colours and explain.json")
    options.add_no_calibration(parser)
    options.add_overwrite(parser, "replace an explanation pcam wrote (never another folder)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Explain with a progress bar, then print the summary of the maps' metrics."""
    if (args.data is None) == (not args.images):
        found = "neither" if args.data is None else "both"
        args.usage_error(f"pass either --data DIR (with --split) or IMAGE paths; found {found}")
    if args.split is not None and args.data is None:
        args.usage_error("--split goes with --data DIR, not with IMAGE paths")
    from pcam.explain.explanation import explain, format_summary

    with options.progress_bar(args.n, "explaining") as update:
        report = explain(
            args.model,
            args.data if args.data is not None else args.images,
            args.out,
            split=(args.split or "valid") if args.data is not None else None,
            n=args.n,
            layer=args.layer,
            method=args.method,
            seed=args.seed,
            threshold=args.threshold,
            overwrite=args.overwrite,
            calibration=not args.no_calibration,
            progress=update,
        )
    print(format_summary(report))
    print(f"grid, overlays and explain.json: {args.out}")
    return options.EXIT_OK
