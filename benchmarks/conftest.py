"""Shared set-up of the loader benchmarks: one large synthetic split written once per run, and a
summary of images/s and ratios to the baseline printed at the end."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH_PATCHES = int(os.environ.get("PCAM_BENCH_PATCHES", "33000"))  # 33,000 patches = 0.91 GB
RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def big_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic train split of ``PCAM_BENCH_PATCHES`` patches (default 0.91 GB), real layout."""
    from tqdm import tqdm

    from pcam.testing import write_split

    root = tmp_path_factory.mktemp("pcam-bench")
    with tqdm(
        total=BENCH_PATCHES, desc="writing benchmark split", unit="patch", file=sys.stderr
    ) as bar:

        def update_to(done: int) -> None:
            bar.update(done - bar.n)

        write_split(root, "train", BENCH_PATCHES, seed=0, with_meta=False, progress=update_to)
    return root


def record(name: str, **values: Any) -> None:
    """Keep one benchmark's figures for the end-of-run summary."""
    RESULTS[name] = values


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    baseline = RESULTS.get("raw h5py sequential read", {}).get("images_per_s")
    terminalreporter.section("pcam loader benchmarks (same machine, same run)")
    for name, values in RESULTS.items():
        parts = [f"{name:<46}"]
        if "images_per_s" in values:
            parts.append(f"{values['images_per_s']:>10,.0f} images/s")
            if baseline:
                parts.append(f"{values['images_per_s'] / baseline:5.2f}x raw read")
        for key, value in values.items():
            if key != "images_per_s":
                parts.append(f"{key}={value}")
        terminalreporter.write_line("  ".join(parts))
