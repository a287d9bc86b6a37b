"""Golden figures of deterministic runs: the platform they hold on, and a check against them.

A deterministic run (``TrainConfig(deterministic=True)``) gives bit-identical figures on one
platform: the same TensorFlow, the same CPU vector units, the same oneDNN setting (Python's
version does not matter: measured with 3.11 and 3.13). Elsewhere other kernels round
differently and training amplifies it a little. :func:`check_figures` compares exactly on the
recording platform and within a stated tolerance elsewhere. The test suite's own snapshots use
``pytest-regressions``; this module serves the notebook, which runs outside pytest's fixtures.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pcam.outputs import write_json_atomically


def platform_fingerprint() -> dict[str, Any]:
    """What decides the exact bits of a run: TensorFlow, the CPU's vector units, oneDNN."""
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


def check_figures(
    path: str | os.PathLike[str],
    parameters: Mapping[str, Any],
    figures: Mapping[str, float | None],
    *,
    other_platform_tolerance: Mapping[str, float],
    record: bool = False,
    required: bool = False,
) -> str:
    """Compare ``figures`` with those recorded in ``path`` for the same ``parameters``.

    ``path`` is a JSON list of ``{"parameters", "platform", "figures"}`` entries. On the
    recording platform every figure must be equal (to 1e-12); on another one each may move by
    ``other_platform_tolerance[name]`` (absolute; ``"default"`` for the rest). Returns one line
    saying what was compared; raises ``AssertionError`` naming each figure that moved. With
    ``record`` the entry for these parameters is written (replaced) instead, on this platform.
    Parameters without an entry are reported, not failed, unless ``required``.
    """
    snapshot = Path(path)
    entries: list[dict[str, Any]] = json.loads(snapshot.read_text()) if snapshot.is_file() else []
    wanted = json.loads(json.dumps(dict(parameters)))
    here = platform_fingerprint()
    if record:
        kept = [entry for entry in entries if entry["parameters"] != wanted]
        kept.append({"parameters": wanted, "platform": here, "figures": dict(figures)})
        write_json_atomically(snapshot, kept)
        return f"recorded {len(figures)} figures in {snapshot}"
    matching = [entry for entry in entries if entry["parameters"] == wanted]
    if not matching:
        message = f"no snapshot in {snapshot} for these parameters: nothing compared"
        if required:
            raise AssertionError(
                f"expected a snapshot entry for {wanted}, found {len(entries)} entries for other "
                f"parameters in {snapshot}; record one with PCAM_NOTEBOOK_RECORD_SNAPSHOT=1 "
                "(python -m tox -e regen)"
            )
        return message
    entry = matching[0]
    same = entry["platform"] == here
    moved = []
    for name, expected in entry["figures"].items():
        found = figures.get(name)
        if expected is None or found is None:
            if expected != found:
                moved.append(f"{name}: expected {expected}, found {found}")
            continue
        allowed = (
            1e-12
            if same
            else other_platform_tolerance.get(name, other_platform_tolerance["default"])
        )
        if not math.isclose(found, expected, rel_tol=0.0, abs_tol=allowed):
            moved.append(
                f"{name}: expected {expected:.6g}, found {found:.6g} (allowed {allowed:g})"
            )
    missing = sorted(set(figures) - set(entry["figures"]))
    if missing:
        moved.append(f"figures not in the snapshot: {', '.join(missing)}")
    where = "the recording platform" if same else "another platform than the recording one"
    if moved:
        raise AssertionError(
            f"{len(moved)} figure(s) moved from the snapshot in {snapshot} ({where}): "
            + "; ".join(moved)
            + ". A deliberate change: re-record (README, 'Golden snapshots')."
        )
    return f"{len(entry['figures'])} figures equal the snapshot in {snapshot} ({where})"
