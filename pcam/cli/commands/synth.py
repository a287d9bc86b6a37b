"""``pcam synth --out DIR``: a synthetic PCam dataset in the real file layout."""

from __future__ import annotations

import argparse
from typing import Any

from pcam.cli import options
from pcam.data.split import open_split
from pcam.data.summary import split_summary


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam synth`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "synth",
        help="write a synthetic PCam dataset in the real file layout",
        description="Write synthetic H&E-like patches as PCam files (real layout, real names). "
        "Labels follow the PCam rule: tumour in the centre 32x32 region.",
    )
    options.add_out(parser, "directory to write the PCam files to", required=False)
    options.add_deprecated_positional(parser, "OUT_DIR", "--out")
    options.add_splits(parser, "write")
    parser.add_argument(
        "--n",
        type=options.count,
        default=1024,
        help="patches per split; valid and test get a quarter (default: 1024)",
    )
    options.add_seed(parser)
    parser.add_argument(
        "--with-mask", action="store_true", help="also write the train tumour mask file"
    )
    parser.add_argument(
        "--chunked",
        action="store_true",
        help="chunked storage instead of the real contiguous layout",
    )
    parser.add_argument(
        "--compression",
        choices=("gzip", "lzf"),
        default=None,
        help="compress the images (implies chunked)",
    )
    options.add_overwrite(
        parser, "replace PCam files that pcam synth wrote here before (never others)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the splits with a progress bar each, then print their summary table."""
    from pcam.testing.synthetic import write_splits

    write_splits(
        args.out,
        args.splits,
        args.n,
        seed=args.seed,
        with_mask=args.with_mask,
        chunked=args.chunked,
        compression=args.compression,
        overwrite=args.overwrite,
        progress=options.progress_bar,
    )
    print(split_summary([open_split(args.out, split) for split in args.splits]))
    return options.EXIT_OK
