from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.profiles import load_profile

if TYPE_CHECKING:
    from pcam.model.train import TrainConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["tests.slow_report"]

load_profile()  # hypothesis: dev, ci (CI=true) or thorough (HYPOTHESIS_PROFILE); tests/profiles.py


def pytest_report_header(config: pytest.Config) -> str:
    """Say which golden-snapshot tolerances apply (see tests/test_snapshots.py)."""
    from tests.snapshot_platform import recorded_platform, same_platform

    if recorded_platform() is None:
        return "snapshots: no recorded platform; cross-platform tolerances"
    if same_platform():
        return "snapshots: recorded on this platform; exact tolerances"
    return (
        "snapshots: recorded on another platform (CPU, TensorFlow or oneDNN); "
        "cross-platform tolerances"
    )


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic PCam dataset (train 1,536 with mask, valid 512), written once."""
    from pcam.testing import write_split

    root = tmp_path_factory.mktemp("pcam-synthetic")
    write_split(root, "train", 1536, seed=0, with_mask=True)
    write_split(root, "valid", 512, seed=1)
    return root


def deterministic_config(data: Path, out: Path, **changes: object) -> TrainConfig:
    """A short deterministic run of the small model: 4 epochs of 8 steps of 64 patches."""
    from pcam.model.train import TrainConfig

    settings: dict[str, Any] = {
        "data": str(data),
        "out": str(out),
        "model": "small",
        "epochs": 4,
        "batch_size": 64,
        "max_train_samples": 512,
        "patience": 10,
        "seed": 0,
        "deterministic": True,
    }
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def deterministic_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One deterministic run of :func:`deterministic_config`, shared by the tests that need it.

    The reference of the determinism and resume tests and the source of the golden snapshots.
    """
    from pcam.model.train import train

    run = tmp_path_factory.mktemp("deterministic") / "run"
    train(deterministic_config(synthetic_root, run), verbose=0)
    return run
