"""A tiny model trained for a few seconds through ``make_dataset`` must beat chance by far.

This is the end-to-end check that images and labels stay aligned through shuffling and
augmentation: a misaligned pipeline trains to chance (0.5).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

from pcam.data import make_dataset
from pcam.testing.models import tiny_model


@pytest.mark.slow
def test_tiny_model_learns_the_centre_rule_through_the_loader(synthetic_root: Path) -> None:
    model = tiny_model(seed=0)
    train = make_dataset(synthetic_root, "train", batch_size=64, shuffle=True, seed=0, augment=True)
    model.fit(train, epochs=4, verbose=0, shuffle=False)  # the loader shuffles
    valid = make_dataset(synthetic_root, "valid", batch_size=128, shuffle=False)
    _, accuracy = model.evaluate(valid, verbose=0)
    assert accuracy >= 0.85, f"valid accuracy {accuracy:.3f} after 4 epochs (chance is 0.5)"
