"""The platform the golden snapshots were recorded on, and whether this run is on the same one.

Kept apart from ``test_snapshots.py`` (no TensorFlow import) so the report header can say which
tolerances apply before any test runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pcam.testing.snapshot import platform_fingerprint

SNAPSHOTS = Path(__file__).with_name("test_snapshots")
"""The recorded snapshots (``pytest-regressions`` files) and the platform they come from."""

PLATFORM_FILE = SNAPSHOTS / "platform.json"


def recorded_platform() -> dict[str, Any] | None:
    """The fingerprint of the platform the snapshots were recorded on (``None``: unknown)."""
    if not PLATFORM_FILE.is_file():
        return None
    recorded: dict[str, Any] = json.loads(PLATFORM_FILE.read_text())
    return recorded


def same_platform() -> bool:
    """Whether this run can expect the recorded bits exactly."""
    return recorded_platform() == platform_fingerprint()
