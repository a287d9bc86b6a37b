"""``pcam download --out DIR``: the PCam files from Zenodo, verified and unpacked (resumes)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from pcam.cli import options


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam download`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "download",
        help="download the PCam files from Zenodo, verified and unpacked (resumes)",
        description="Download the PCam files of the chosen splits from Zenodo record 2546921 "
        "(or the mirror in $PCAM_DOWNLOAD_URL), resume partial downloads, check the md5 of "
        "each .gz and of each unpacked file, and unpack into --out DIR. A file appears under "
        "its final name only once it verified.",
    )
    options.add_out(parser, "directory to download into", required=False)
    options.add_deprecated_positional(parser, "DEST", "--out")
    options.add_splits(parser, "download")
    options.add_overwrite(parser, "download again files already present")
    parser.add_argument("--keep-gz", action="store_true", help="keep the verified .gz files")
    parser.add_argument(
        "--timeout",
        type=options.seconds,
        default=60.0,
        help="seconds to wait for the server on each connect or read (default: 60)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Download with one byte-counting bar per file; print one line per file."""
    from tqdm import tqdm

    from pcam.data.download import download

    bars: dict[str, tqdm[NoReturn]] = {}

    def progress(what: str, done: int, total: int | None) -> None:
        bar = bars.get(what)
        if bar is None:
            for old in bars.values():
                old.close()
            bar = bars[what] = tqdm(
                total=total,
                desc=what,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=False,
                file=sys.stderr,
                disable=None,
            )
        bar.update(done - bar.n)

    try:
        results = download(
            args.out,
            args.splits,
            progress=progress,
            overwrite=args.overwrite,
            keep_gz=args.keep_gz,
            timeout=args.timeout,
        )
    finally:
        for bar in bars.values():
            bar.close()
    for result in results:
        note = "already present, verified, skipped" if result.status == "present" else "verified"
        print(f"{result.path}: {note}")
    return options.EXIT_OK
