"""Shared set-up of the benchmarks: synthetic splits written once per run, and a summary of
images/s and ratios to each benchmark's baseline printed at the end."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

QUICK = os.environ.get("PCAM_BENCH_QUICK", "1" if os.environ.get("CI") else "0") == "1"
"""A smoke run, the default under CI (``PCAM_BENCH_QUICK=0`` turns it off): a 4,000-patch loader
split instead of 33,000, 3 rounds of the small model instead of 5 and no ResNet50 train-step
rounds, so CI stays within its time budget.
``pytest benchmarks`` on a workstation runs everything; ``python -m tox -e bench`` is a smoke run
unless ``PCAM_BENCH_QUICK=0``."""
BENCH_PATCHES = int(os.environ.get("PCAM_BENCH_PATCHES", "4000" if QUICK else "33000"))
"""Patches of the loader benchmarks' split (33,000 patches = 0.91 GB)."""
TRAIN_PATCHES = 4096  # 113 MB: a whole number of batches of 32 and of 64
LOADER_SECTION = "pcam loader benchmarks"
LOADER_BASELINE = "raw h5py sequential read"
RESULTS: dict[str, dict[str, Any]] = {}
_RESERVED = ("section", "images_per_s", "ratio", "baseline")


def _write(root: Path, patches: int, description: str) -> Path:
    """Write a synthetic train split of ``patches`` patches under ``root``, with a progress bar."""
    from tqdm import tqdm

    from pcam.testing import write_split

    with tqdm(total=patches, desc=description, unit="patch", file=sys.stderr) as bar:

        def update_to(done: int) -> None:
            bar.update(done - bar.n)

        write_split(root, "train", patches, seed=0, with_meta=False, progress=update_to)
    return root


@pytest.fixture(scope="session")
def big_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic train split of ``PCAM_BENCH_PATCHES`` patches (default 0.91 GB), real layout."""
    return _write(tmp_path_factory.mktemp("pcam-bench"), BENCH_PATCHES, "writing benchmark split")


@pytest.fixture(scope="session")
def train_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic train split of ``TRAIN_PATCHES`` patches for the train and inference benchmarks.

    Small enough to stay in the page cache: those benchmarks weigh the loader's CPU work against
    the model's, not the disk (the loader benchmarks do that on ``big_split``).
    """
    return _write(tmp_path_factory.mktemp("pcam-train-bench"), TRAIN_PATCHES, "writing train split")


def record(
    name: str,
    *,
    section: str = LOADER_SECTION,
    ratio: float | None = None,
    baseline: str | None = None,
    **values: Any,
) -> None:
    """Keep one benchmark's figures for the end-of-run summary, under ``section``.

    ``ratio`` is the benchmark's images/s divided by those of ``baseline`` (a short name of what
    it was compared with, measured in the same run). Without one, an ``images_per_s`` in the
    loader section is compared with the raw h5py read.
    """
    RESULTS[name] = {"section": section, "ratio": ratio, "baseline": baseline, **values}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    raw = RESULTS.get(LOADER_BASELINE, {}).get("images_per_s")
    sections: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, values in RESULTS.items():
        sections.setdefault(values["section"], []).append((name, values))
    for section, rows in sections.items():
        terminalreporter.section(f"{section} (same machine, same run)")
        for name, values in rows:
            parts = [f"{name:<46}"]
            ratio, baseline = values["ratio"], values["baseline"]
            if "images_per_s" in values:
                parts.append(f"{values['images_per_s']:>10,.0f} images/s")
                if ratio is None and raw and section == LOADER_SECTION:
                    ratio, baseline = values["images_per_s"] / raw, "raw read"
            if ratio is not None:
                parts.append(f"{ratio:5.2f}x {baseline or 'baseline'}")
            for key, value in values.items():
                if key not in _RESERVED:
                    parts.append(f"{key}={value}")
            terminalreporter.write_line("  ".join(parts))
