"""``open_split`` / ``PCamSplit`` on small written splits of every storage layout."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcam import layout
from pcam.data.split import PCamSplit, open_split
from pcam.errors import MissingFileError
from pcam.testing.strategies import SplitSpec, random_arrays, split_specs, write_spec
from pcam.testing.synthetic import write_split

STORAGES = ("contiguous", "chunked", "gzip")
EXPECTED_LAYOUT = {"contiguous": "contiguous", "chunked": "chunked", "gzip": "chunked+gzip"}
N = 37


@dataclass(frozen=True)
class Written:
    """A split on disk with the arrays written to it."""

    split: PCamSplit
    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]
    storage: str


@pytest.fixture(params=STORAGES)
def written(request: pytest.FixtureRequest, tmp_path: Path) -> Written:
    storage: str = request.param
    images, labels = write_spec(tmp_path, "valid", SplitSpec(n=N, seed=21, storage=storage))
    return Written(open_split(tmp_path, "valid"), images, labels, storage)


def test_basics(written: Written) -> None:
    split = written.split
    assert len(split) == N
    assert split.split == "valid"
    assert split.labels.dtype == np.uint8
    np.testing.assert_array_equal(split.labels, written.labels)
    assert split.positive_fraction == pytest.approx(float(written.labels.mean()))
    assert split.layout == EXPECTED_LAYOUT[written.storage]
    assert split.is_memory_mappable is (written.storage == "contiguous")
    assert not split.has_mask


def test_labels_are_read_only(written: Written) -> None:
    labels = written.split.labels
    with pytest.raises(ValueError, match="read-only"):
        labels[0] = 1 - labels[0]
    with pytest.raises(ValueError, match="read-only"):
        labels[:] = 0
    np.testing.assert_array_equal(written.split.labels, written.labels)


def test_random_arrays_encode_their_index() -> None:
    images, labels = random_arrays(300, seed=1)
    index = (
        images[:, 0, 0, 0].astype(np.int64)
        + 256 * images[:, 0, 0, 1].astype(np.int64)
        + 65536 * images[:, 0, 0, 2].astype(np.int64)
    )
    np.testing.assert_array_equal(index, np.arange(300))
    assert set(np.unique(labels).tolist()) <= {0, 1}


@settings(max_examples=25, deadline=None)
@given(spec=split_specs(max_size=160), data=st.data())
def test_read_images_equals_written(spec: SplitSpec, data: st.DataObject) -> None:
    n = spec.n
    start = data.draw(st.integers(0, n), label="start")
    stop = data.draw(st.integers(start, n + 3), label="stop")
    step = data.draw(st.integers(1, 4), label="step")
    fancy = np.array(
        data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=40), label="fancy"),
        dtype=np.int64,
    )
    repeated = np.concatenate([fancy, fancy[::-1], fancy[:1]])
    with tempfile.TemporaryDirectory() as root:
        images, labels = write_spec(root, "train", spec)
        split = open_split(root, "train")
        assert split.layout == EXPECTED_LAYOUT[spec.storage]
        np.testing.assert_array_equal(split.labels, labels)
        np.testing.assert_array_equal(split.read_images(slice(None)), images)
        np.testing.assert_array_equal(
            split.read_images(slice(start, stop, step)), images[start:stop:step]
        )
        for index in (fancy, repeated, np.sort(fancy), np.empty(0, dtype=np.int64)):
            got = split.read_images(index)
            assert got.dtype == np.uint8
            assert got.shape == (index.size, *layout.IMAGE_SHAPE)
            np.testing.assert_array_equal(got, images[index])
        split.close()


def test_read_mask_without_mask_file(written: Written) -> None:
    with pytest.raises(MissingFileError) as raised:
        written.split.read_mask(slice(0, 2))
    message = str(raised.value)
    assert "\n" not in message
    assert layout.h5_name("valid", "mask") in message


def test_read_meta(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", 12, seed=2, with_meta=True)
    split = open_split(tmp_path, "valid")
    rows = split.read_meta()
    assert len(rows) == 12
    assert all(tuple(row) == layout.META_COLUMNS for row in rows)
    assert [int(row[""]) for row in rows] == list(range(12))
    assert [row["center_tumor_patch"] == "True" for row in rows] == split.labels.astype(
        bool
    ).tolist()


def test_read_meta_without_meta_file(written: Written) -> None:
    with pytest.raises(MissingFileError) as raised:
        written.split.read_meta()
    assert "\n" not in str(raised.value)
    assert layout.meta_name("valid") in str(raised.value)


def test_pickle_round_trip(written: Written) -> None:
    index = np.array([5, 0, 36, 5, 17], dtype=np.int64)
    before = written.split.read_images(index)  # files are open in this process
    clone = pickle.loads(pickle.dumps(written.split))
    assert isinstance(clone, PCamSplit)
    assert len(clone) == N
    assert clone.layout == written.split.layout
    np.testing.assert_array_equal(clone.labels, written.labels)
    np.testing.assert_array_equal(clone.read_images(index), before)
    np.testing.assert_array_equal(clone.read_images(slice(3, 9)), written.images[3:9])
    np.testing.assert_array_equal(written.split.read_images(index), written.images[index])


_FORKED: PCamSplit | None = None
"""The split a forked child inherits (set by the parent just before forking)."""


def _read_in_child(index: list[int]) -> tuple[int, bytes, bytes]:
    assert _FORKED is not None
    first = _FORKED.read_images(np.array(index, dtype=np.int64))
    whole = _FORKED.read_images(slice(None))
    return os.getpid(), first.tobytes(), whole.tobytes()


def test_reads_after_fork(written: Written) -> None:
    global _FORKED
    index = [30, 2, 2, 11]
    parent = written.split.read_images(np.array(index, dtype=np.int64))  # opened in the parent
    _FORKED = written.split
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            pid, first, whole = pool.apply(_read_in_child, (index,))
    finally:
        _FORKED = None
    assert pid != os.getpid()
    assert first == parent.tobytes()
    assert whole == written.images.tobytes()
    # the parent's handle still works after the child used its own
    np.testing.assert_array_equal(written.split.read_images(slice(None)), written.images)


def test_close_then_read_again(written: Written) -> None:
    split = written.split
    np.testing.assert_array_equal(split.read_images(slice(0, 4)), written.images[:4])
    split.close()
    np.testing.assert_array_equal(split.read_images(np.array([9, 1])), written.images[[9, 1]])
    split.close()
    split.close()
    np.testing.assert_array_equal(split.read_images(slice(None)), written.images)
