from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# CI runs more examples and never fails on a slow example (a shared 2-core machine is noisy).
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic PCam dataset (train 1,536 with mask, valid 512), written once."""
    from pcam.testing import write_split

    root = tmp_path_factory.mktemp("pcam-synthetic")
    write_split(root, "train", 1536, seed=0, with_mask=True)
    write_split(root, "valid", 512, seed=1)
    return root
