"""Synthetic PCam (``pcam.testing.synthetic``): labels, content, file layout and safe writing."""

from __future__ import annotations

import csv
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcam import layout
from pcam.data.split import open_split
from pcam.errors import InvalidArgumentError, OutputExistsError
from pcam.outputs import MARKER, written_files
from pcam.testing.synthetic import CHUNK, SYNTHETIC, generate, write_arrays, write_split
from tests.profiles import examples

C0, C1 = layout.CENTRE_START, layout.CENTRE_STOP
REAL_LABEL_SIZES = {"train": 262_144, "valid": 32_768, "test": 32_768}


# -- helpers -------------------------------------------------------------------------------------


def shared_data_dir() -> Path:
    """The real data: ``$PCAM_SHARED_DATA``, else ``<repo root>/../shared/data``."""
    configured = os.environ.get("PCAM_SHARED_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require(path: Path) -> Path:
    """``path`` if it exists, else skip the test naming it."""
    if not path.exists():
        pytest.skip(f"real PCam data not available: {path} is missing")
    return path


def read_dataset(path: Path, key: str) -> npt.NDArray[Any]:
    with h5py.File(path, "r") as handle:
        return np.asarray(handle[key][...])


def describe(path: Path, key: str) -> dict[str, Any]:
    """The storage facts of one dataset that the real PCam files fix."""
    with h5py.File(path, "r") as handle:
        dataset = handle[key]
        facts = {
            "dtype": dataset.dtype,
            "item_shape": tuple(dataset.shape[1:]),
            "chunks": dataset.chunks,
            "compression": dataset.compression,
            "filters": (dataset.shuffle, dataset.fletcher32, dataset.scaleoffset),
            "offset": dataset.id.get_offset(),
        }
    # The version bounds a file was written with show in its superblock version (0 for
    # 'earliest'); h5py's File.libver reports the bounds of the *reader*, which change with the
    # HDF5 build (h5py 3.16 bundles HDF5 2.0), so it is not compared.
    facts["superblock_version"] = path.read_bytes()[8]
    return facts


def file_bytes(root: Path) -> dict[str, bytes]:
    return {entry.name: entry.read_bytes() for entry in sorted(root.iterdir())}


def centre(masks: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    return masks[:, C0:C1, C0:C1]


# -- writing and reading back ------------------------------------------------------------------


def test_written_split_passes_open_split(tmp_path: Path) -> None:
    written = write_split(tmp_path, "valid", 40, seed=3)
    assert sorted(written) == sorted(
        [
            layout.h5_path(tmp_path, "valid", "x"),
            layout.h5_path(tmp_path, "valid", "y"),
            layout.meta_path(tmp_path, "valid"),
        ]
    )
    assert sorted(os.listdir(tmp_path)) == sorted([MARKER, *(path.name for path in written)])
    assert written_files(tmp_path, SYNTHETIC) == {path.name for path in written}
    split = open_split(tmp_path, "valid")
    assert len(split) == 40
    assert split.layout == "contiguous"
    assert split.read_images(slice(None)).shape == (40, *layout.IMAGE_SHAPE)


@pytest.mark.parametrize(
    ("n", "positive_fraction"),
    [(1, 0.5), (7, 0.5), (33, 0.25), (5, 0.9), (CHUNK + 88, 0.3)],
)
def test_exact_class_balance(tmp_path: Path, n: int, positive_fraction: float) -> None:
    write_split(tmp_path, "test", n, seed=n, positive_fraction=positive_fraction, with_meta=False)
    labels = open_split(tmp_path, "test").labels
    assert labels.size == n
    assert int(labels.sum()) == round(n * positive_fraction)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_split(tmp_path / name, "valid", 16, seed=seed)
    x = {
        name: read_dataset(layout.h5_path(tmp_path / name, "valid", "x"), "x").tobytes()
        for name in "abc"
    }
    assert x["a"] == x["b"]
    assert x["a"] != x["c"]
    meta = {name: layout.meta_path(tmp_path / name, "valid").read_bytes() for name in "abc"}
    assert meta["a"] == meta["b"]
    assert meta["a"] != meta["c"]


# -- the label rule --------------------------------------------------------------------------------


@settings(max_examples=examples(20), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 24),
    positive_fraction=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    outer_ring_fraction=st.sampled_from([0.0, 0.25, 1.0]),
)
def test_label_follows_centre_rule(
    seed: int, n: int, positive_fraction: float, outer_ring_fraction: float
) -> None:
    batch = generate(
        n, seed=seed, positive_fraction=positive_fraction, outer_ring_fraction=outer_ring_fraction
    )
    assert batch.images.shape == (n, *layout.IMAGE_SHAPE)
    assert batch.images.dtype == np.uint8
    assert batch.masks.shape == (n, *layout.IMAGE_SHAPE[:2])
    assert batch.labels.shape == (n,)
    assert set(np.unique(batch.labels).tolist()) <= {0, 1}
    np.testing.assert_array_equal(batch.labels, centre(batch.masks).any(axis=(1, 2)))
    assert int(batch.labels.sum()) == round(n * positive_fraction)
    positive = batch.labels == 1
    assert centre(batch.masks[positive]).any(axis=(1, 2)).all()
    negative_masks = batch.masks[~positive]
    assert not centre(negative_masks).any()
    if outer_ring_fraction == 0.0:
        assert not negative_masks.any()
    if outer_ring_fraction == 1.0:
        assert negative_masks.any(axis=(1, 2)).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_decoys_exist_with_default_outer_ring_fraction(seed: int) -> None:
    batch = generate(128, seed=seed)
    negative = batch.labels == 0
    decoys = batch.masks[negative].any(axis=(1, 2))
    # about a quarter of the 64 negatives carry an outer-ring cluster, none in the centre
    assert 4 <= int(decoys.sum()) <= 32
    assert not centre(batch.masks[negative]).any()
    without = generate(128, seed=seed, outer_ring_fraction=0.0)
    assert not without.masks[without.labels == 0].any()


@pytest.mark.parametrize(("positive_fraction", "label"), [(0.0, 0), (1.0, 1)])
def test_all_one_class(positive_fraction: float, label: int) -> None:
    batch = generate(64, seed=2, positive_fraction=positive_fraction)
    assert (batch.labels == label).all()


def test_tumour_signal_is_darker_centre() -> None:
    batch = generate(256, seed=11)
    positive = batch.labels == 1
    assert 100 <= int(positive.sum()) <= 156
    green = batch.images[:, C0:C1, C0:C1, 1].astype(np.float64)
    darkness = 255.0 - green.mean(axis=(1, 2))
    assert darkness[positive].mean() > darkness[~positive].mean() + 20.0


# -- layout against the real files -----------------------------------------------------------------


def _plausible_time(raw: bytes, low: float, high: float) -> bool:
    (value,) = struct.unpack("<I", raw)
    return bool(low <= value <= high)


@pytest.mark.parametrize("split", layout.SPLITS)
def test_label_file_bytes_match_real_label_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str
) -> None:
    real = require(shared_data_dir() / "pcam-labels" / layout.h5_name(split, "y"))
    labels = read_dataset(real, "y")
    assert labels.shape == (REAL_LABEL_SIZES[split], *layout.LABEL_SHAPE)
    # Write the real labels through the package's own writer. The images of a full-size split
    # would be 0.9-7 GB, so shrink the image item shape for this test only: the y file does not
    # depend on it (it is a separate file written by the same code).
    monkeypatch.setattr(layout, "IMAGE_SHAPE", (1, 1, 1))
    images = np.zeros((labels.shape[0], 1, 1, 1), dtype=np.uint8)
    write_arrays(tmp_path, split, images, labels)
    ours = layout.h5_path(tmp_path, split, "y").read_bytes()
    theirs = real.read_bytes()
    assert len(ours) == len(theirs)
    differ = np.flatnonzero(np.frombuffer(ours, np.uint8) != np.frombuffer(theirs, np.uint8))
    # the only difference allowed is the 4-byte object modification time (track_times)
    assert differ.size > 0, "expected the modification times to differ"
    first, last = int(differ[0]), int(differ[-1])
    assert last - first < 4, f"bytes differ beyond one timestamp: {differ[:20].tolist()}"
    now = time.time()
    assert any(
        _plausible_time(ours[start : start + 4], now - 2 * 86_400, now + 86_400)
        and _plausible_time(theirs[start : start + 4], 1.2e9, now)
        for start in range(last - 3, first + 1)
    ), f"differing bytes {differ.tolist()} are not a modification timestamp"


REAL_LAYOUT_FILES = [
    ("pcam-labels", "train", "y"),
    ("pcam-labels", "valid", "y"),
    ("pcam-labels", "test", "y"),
    ("pcam-sample", "train", "x"),
    ("pcam-sample", "valid", "y"),
]


@pytest.mark.parametrize(("folder", "split", "kind"), REAL_LAYOUT_FILES)
def test_written_layout_matches_real_files(
    tmp_path: Path, folder: str, split: str, kind: layout.ArrayKind
) -> None:
    real = require(shared_data_dir() / folder / layout.h5_name(split, kind))
    theirs = describe(real, kind)
    item_shape = layout.IMAGE_SHAPE if kind == "x" else layout.LABEL_SHAPE
    assert theirs["dtype"] == np.uint8
    assert theirs["item_shape"] == item_shape
    assert theirs["chunks"] is None
    assert theirs["compression"] is None
    assert theirs["superblock_version"] == 0
    write_split(tmp_path, split, 8, seed=1, with_meta=False)
    ours = describe(layout.h5_path(tmp_path, split, kind), kind)
    assert ours == theirs
    with h5py.File(layout.h5_path(tmp_path, split, kind), "r") as handle:
        assert handle[kind].ndim == 4


# -- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected_layout"),
    [
        ({"chunked": True}, "chunked"),
        ({"compression": "gzip"}, "chunked+gzip"),
        ({"chunked": True, "compression": "lzf"}, "chunked+lzf"),
    ],
)
def test_chunked_and_compressed_read_back_same_pixels(
    tmp_path: Path, options: dict[str, Any], expected_layout: str
) -> None:
    write_split(tmp_path / "plain", "valid", 20, seed=4)
    write_split(tmp_path / "other", "valid", 20, seed=4, **options)
    plain = open_split(tmp_path / "plain", "valid")
    other = open_split(tmp_path / "other", "valid")
    assert plain.layout == "contiguous"
    assert other.layout == expected_layout
    assert not other.is_memory_mappable
    np.testing.assert_array_equal(other.read_images(slice(None)), plain.read_images(slice(None)))
    np.testing.assert_array_equal(other.labels, plain.labels)


def test_with_mask_writes_generated_masks(tmp_path: Path) -> None:
    write_split(
        tmp_path,
        "train",
        24,
        seed=9,
        positive_fraction=0.4,
        outer_ring_fraction=0.5,
        with_mask=True,
    )
    mask_path = layout.h5_path(tmp_path, "train", "mask")
    with h5py.File(mask_path, "r") as handle:
        assert handle["mask"].dtype == np.bool_
        assert handle["mask"].shape == (24, *layout.MASK_SHAPE)
    expected = generate(24, seed=9, positive_fraction=0.4, outer_ring_fraction=0.5)
    split = open_split(tmp_path, "train")
    assert split.has_mask
    masks = split.read_mask(slice(None))
    assert masks.dtype == np.bool_
    assert masks.shape == (24, *layout.MASK_SHAPE)
    assert masks.any()
    np.testing.assert_array_equal(masks, expected.masks[..., None])
    np.testing.assert_array_equal(split.labels, expected.labels)
    np.testing.assert_array_equal(split.read_images(slice(None)), expected.images)


def test_with_meta_writes_real_columns(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", 30, seed=12, with_meta=True)
    meta = layout.meta_path(tmp_path, "valid")
    with meta.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert meta.read_text().splitlines()[0] == ",coord_y,coord_x,tumor_patch,center_tumor_patch,wsi"
    assert tuple(rows[0]) == layout.META_COLUMNS
    body = rows[1:]
    assert len(body) == 30
    split = open_split(tmp_path, "valid")
    expected = generate(30, seed=12)
    np.testing.assert_array_equal(split.labels, expected.labels)
    for i, row in enumerate(body):
        index, coord_y, coord_x, tumour, centre_tumour, wsi = row
        assert int(index) == i
        assert int(coord_y) >= 0
        assert int(coord_x) >= 0
        assert centre_tumour == str(bool(split.labels[i]))
        assert tumour == str(bool(expected.masks[i].any()))
        assert wsi
    assert [row[4] for row in body].count("True") == int(split.labels.sum())


# -- nothing half-written --------------------------------------------------------------------------


class Abort(Exception):
    """Raised by a progress callback to stop a write."""


def _abort_after_first_block(calls: list[int]) -> Callable[[int], None]:
    def progress(done: int) -> None:
        calls.append(done)
        raise Abort(f"stopped after {done}")

    return progress


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    calls: list[int] = []
    with pytest.raises(Abort, match="stopped after"):
        write_split(
            tmp_path,
            "train",
            CHUNK + 88,
            seed=1,
            with_mask=True,
            progress=_abort_after_first_block(calls),
        )
    assert calls == [CHUNK]
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_old_files(tmp_path: Path) -> None:
    write_split(tmp_path, "train", 8, seed=1, with_mask=True)
    before = file_bytes(tmp_path)
    calls: list[int] = []
    with pytest.raises(Abort, match="stopped after"):
        write_split(
            tmp_path,
            "train",
            CHUNK + 88,
            seed=2,
            with_mask=True,
            overwrite=True,
            progress=_abort_after_first_block(calls),
        )
    assert calls == [CHUNK]
    assert file_bytes(tmp_path) == before
    assert len(open_split(tmp_path, "train")) == 8


@pytest.mark.parametrize(
    "keep",
    [
        layout.h5_name("train", "x"),
        layout.h5_name("train", "y"),
        layout.h5_name("train", "mask"),
        layout.meta_name("train"),
    ],
)
def test_existing_files_are_not_overwritten(tmp_path: Path, keep: str) -> None:
    write_split(tmp_path, "train", 6, seed=1, with_mask=True)
    for entry in tmp_path.iterdir():
        if entry.name != keep:
            entry.unlink()
    before = file_bytes(tmp_path)
    assert len(before) == 1
    with pytest.raises(OutputExistsError) as raised:
        write_split(tmp_path, "train", 6, seed=2, with_mask=True)
    assert "\n" not in str(raised.value)
    assert file_bytes(tmp_path) == before


def test_overwrite_replaces_files(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", 6, seed=1)
    before = file_bytes(tmp_path)
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_split(tmp_path, "valid", 6, seed=2)
    assert file_bytes(tmp_path) == before
    write_split(tmp_path, "valid", 6, seed=2, overwrite=True)
    after = open_split(tmp_path, "valid").read_images(slice(None))
    np.testing.assert_array_equal(after, generate(6, seed=2).images)


# -- bad arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "kwargs", "name"),
    [
        pytest.param("valid", {"n": 0}, "n", id="n=0"),
        pytest.param("valid", {"n": -3}, "n", id="n=-3"),
        pytest.param(
            "valid",
            {"n": 8, "positive_fraction": 1.5},
            "positive_fraction",
            id="positive_fraction=1.5",
        ),
        pytest.param(
            "valid",
            {"n": 8, "positive_fraction": -0.1},
            "positive_fraction",
            id="positive_fraction=-0.1",
        ),
        pytest.param(
            "valid",
            {"n": 8, "outer_ring_fraction": 1.5},
            "outer_ring_fraction",
            id="outer_ring_fraction=1.5",
        ),
        pytest.param("training", {"n": 8}, "split", id="split=training"),
        pytest.param(
            "valid", {"n": 8, "compression": "zstd"}, "compression", id="compression=zstd"
        ),
    ],
)
def test_write_split_rejects_bad_arguments(
    tmp_path: Path, split: str, kwargs: dict[str, Any], name: str
) -> None:
    root = tmp_path / "out"
    with pytest.raises(InvalidArgumentError) as raised:
        write_split(root, split, **kwargs)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{name}: expected ")
    assert not root.exists() or not any(root.iterdir()), "files written despite bad arguments"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": -1}, "n"),
        ({"n": 4, "positive_fraction": 1.5}, "positive_fraction"),
        ({"n": 4, "outer_ring_fraction": -0.5}, "outer_ring_fraction"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        generate(seed=0, **kwargs)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"{name}: expected ")


@pytest.mark.parametrize(
    ("split", "kwargs", "name"),
    [
        ("training", {}, "split"),
        ("valid", {"compression": "zstd"}, "compression"),
    ],
)
def test_write_arrays_rejects_bad_arguments(
    tmp_path: Path, split: str, kwargs: dict[str, Any], name: str
) -> None:
    images = np.zeros((2, *layout.IMAGE_SHAPE), dtype=np.uint8)
    with pytest.raises(InvalidArgumentError) as raised:
        write_arrays(tmp_path / "out", split, images, np.array([0, 1]), **kwargs)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"{name}: expected ")
    assert not (tmp_path / "out").exists()
