"""The real PCam data at hand: the 2,048 + 512 patch sample and the three full-size label files.

Every test skips, naming the missing path, where the shared data is absent. The data directory is
``$PCAM_SHARED_DATA`` if set, else ``<repo root>/../shared/data``.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from pcam import layout
from pcam.data.split import PCamSplit, open_split

SAMPLE_SIZES = {"train": 2_048, "valid": 512}
LABEL_FILES = [("train", 262_144, 0.5000), ("valid", 32_768, 0.4995), ("test", 32_768, 0.4998)]


def shared_data_dir() -> Path:
    """The real data: ``$PCAM_SHARED_DATA``, else ``<repo root>/../shared/data``."""
    configured = os.environ.get("PCAM_SHARED_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require(*paths: Path) -> None:
    """Skip the test, naming the first missing path, unless all ``paths`` exist."""
    for path in paths:
        if not path.exists():
            pytest.skip(f"real PCam data not available: {path} is missing")


def sample_split(split: str) -> PCamSplit:
    root = shared_data_dir() / "pcam-sample"
    require(
        layout.h5_path(root, split, "x"),
        layout.h5_path(root, split, "y"),
        layout.meta_path(root, split),
    )
    return open_split(root, split)


def image_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(image.tobytes()).hexdigest() for image in images]


@pytest.mark.realdata
@pytest.mark.parametrize(("split", "n"), sorted(SAMPLE_SIZES.items()))
def test_sample_split_opens(split: str, n: int) -> None:
    handle = sample_split(split)
    assert len(handle) == n
    assert handle.labels.shape == (n,)
    assert handle.positive_fraction == 0.5
    assert handle.layout == "contiguous"
    assert handle.is_memory_mappable
    images = handle.read_images(np.array([n - 1, 0, n // 2]))
    assert images.shape == (3, *layout.IMAGE_SHAPE)
    assert images.dtype == np.uint8
    assert images.std() > 5.0  # real tissue, not blank patches


@pytest.mark.realdata
@pytest.mark.parametrize("split", sorted(SAMPLE_SIZES))
def test_sample_labels_agree_with_meta_csv(split: str) -> None:
    handle = sample_split(split)
    assert handle.meta_path is not None
    with handle.meta_path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        assert reader.fieldnames == ["index", "kaggle_id", "label"]
        rows = list(reader)
    assert len(rows) == SAMPLE_SIZES[split]
    assert [int(row["index"]) for row in rows] == list(range(len(rows)))
    csv_labels = np.array([int(row["label"]) for row in rows], dtype=np.uint8)
    np.testing.assert_array_equal(handle.labels, csv_labels)
    assert len({row["kaggle_id"] for row in rows}) == len(rows)
    meta = handle.read_meta()
    assert meta == rows
    assert all(set(row) == {"index", "kaggle_id", "label"} for row in meta)


@pytest.mark.realdata
def test_stream_valid_sample_is_a_permutation() -> None:
    handle = sample_split("valid")
    from pcam.data.stream import make_dataset  # TensorFlow: imported only when this test runs

    dataset = make_dataset(handle.root, "valid", batch_size=128, shuffle=True, seed=0)
    batches = list(dataset.as_numpy_iterator())
    assert [images.shape[0] for images, _ in batches] == [128, 128, 128, 128]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    assert images.shape == (512, *layout.IMAGE_SHAPE)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int32
    assert int(labels.sum()) == int(handle.labels.sum())
    file_images = handle.read_images(slice(None))
    streamed = image_hashes(images)
    stored = image_hashes(file_images)
    assert sorted(streamed) == sorted(stored)
    # each patch comes with its own label, and the order is shuffled
    assert Counter(zip(streamed, labels.tolist(), strict=True)) == Counter(
        zip(stored, handle.labels.tolist(), strict=True)
    )
    assert streamed != stored


@pytest.mark.realdata
@pytest.mark.parametrize(("split", "n", "fraction"), LABEL_FILES)
def test_real_label_files(split: str, n: int, fraction: float) -> None:
    path = shared_data_dir() / "pcam-labels" / layout.h5_name(split, "y")
    require(path)
    with h5py.File(path, "r") as handle:
        dataset = handle["y"]
        assert dataset.shape == (n, *layout.LABEL_SHAPE)
        assert dataset.dtype == np.uint8
        labels = np.asarray(dataset[...]).reshape(-1)
    assert n == layout.OFFICIAL_SIZES[split]
    assert set(np.unique(labels).tolist()) == {0, 1}
    assert round(float(labels.mean()), 4) == fraction
