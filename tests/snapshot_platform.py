"""The platform the golden snapshots were recorded on, and whether this run is on the same one.

Kept apart from ``test_snapshots.py`` (no TensorFlow import) so the report header can say which
tolerances apply before any test runs.
"""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

SNAPSHOTS = Path(__file__).with_name("test_snapshots")
"""The recorded snapshots (``pytest-regressions`` files) and the platform they come from."""

PLATFORM_FILE = SNAPSHOTS / "platform.json"


def platform_fingerprint() -> dict[str, Any]:
    """What decides the exact bits of a run: TensorFlow, the CPU's vector units, oneDNN.

    The same fingerprint gives bit-identical runs (measured: Python 3.11 and 3.13 on one
    machine). A different one takes other kernels, whose rounding the training amplifies.
    """
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    vector_units = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return {
        "tensorflow": version("tensorflow"),
        "machine": platform.machine(),
        "vector_units": vector_units,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }


def recorded_platform() -> dict[str, Any] | None:
    """The fingerprint of the platform the snapshots were recorded on (``None``: unknown)."""
    if not PLATFORM_FILE.is_file():
        return None
    recorded: dict[str, Any] = json.loads(PLATFORM_FILE.read_text())
    return recorded


def same_platform() -> bool:
    """Whether this run can expect the recorded bits exactly."""
    return recorded_platform() == platform_fingerprint()
