"""``open_split`` / ``PCamSplit`` on small written splits of every storage layout."""

from __future__ import annotations

import mmap
import multiprocessing
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcam import layout
from pcam.data.split import PCamSplit, _normalise_index, open_split, runs
from pcam.errors import InvalidArgumentError, LayoutError, MissingFileError, first_line
from pcam.testing.strategies import SplitSpec, random_arrays, split_specs, write_spec
from pcam.testing.synthetic import write_split
from tests.profiles import examples

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


@settings(max_examples=examples(25), deadline=None)
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


# -- exact facts, messages and boundaries (see tools/mutation.py) --------------------------------


def test_repr_and_size(written: Written) -> None:
    split = written.split
    root = split.root
    assert repr(split) == f"PCamSplit(root={str(root)!r}, split='valid', n={N})"
    x, y = layout.h5_path(root, "valid", "x"), layout.h5_path(root, "valid", "y")
    assert split.size_bytes == x.stat().st_size + y.stat().st_size
    assert split.meta_path is None
    assert split.mask_info is None


def test_array_info(written: Written) -> None:
    info = written.split.images_info
    assert (info.key, info.shape, info.dtype) == ("x", (N, *layout.IMAGE_SHAPE), "uint8")
    assert info.path == layout.h5_path(written.split.root, "valid", "x")
    assert info.layout == EXPECTED_LAYOUT[written.storage]
    labels = written.split.labels_info
    assert (labels.key, labels.shape, labels.dtype) == ("y", (N, *layout.LABEL_SHAPE), "uint8")
    if written.storage == "contiguous":
        assert info.offset is not None
        assert info.offset > 0
        raw = info.path.read_bytes()[info.offset : info.offset + written.images.nbytes]
        assert raw == written.images.tobytes()  # the offset is where the bytes really are
    else:
        assert info.offset is None


def test_image_map(written: Written) -> None:
    split = written.split
    if written.storage != "contiguous":
        with pytest.raises(LayoutError) as raised:
            split.image_map()
        assert str(raised.value) == (
            f"{split.images_info.path}: expected a contiguous, uncompressed dataset to memory-map, "
            f"found a {split.layout} dataset; use read_images, which works for every layout"
        )
        return
    image_map = split.image_map()
    assert image_map.shape == (N, *layout.IMAGE_SHAPE)
    np.testing.assert_array_equal(image_map, written.images)
    assert not image_map.flags.writeable
    assert split.image_map() is image_map  # one map per file and process


def test_filters_are_named_in_the_layout(tmp_path: Path) -> None:
    images, labels = random_arrays(5, seed=3)
    for options, expected in (
        (
            {"compression": "gzip", "shuffle": True, "fletcher32": True},
            "chunked+gzip+shuffle+fletcher32",
        ),
        ({"compression": "lzf"}, "chunked+lzf"),
        ({"chunks": (1, 96, 96, 3), "fletcher32": True}, "chunked+fletcher32"),
    ):
        root = tmp_path / expected
        root.mkdir()
        with h5py.File(layout.h5_path(root, "test", "x"), "w") as handle:
            handle.create_dataset("x", data=images, **options)
        with h5py.File(layout.h5_path(root, "test", "y"), "w") as handle:
            handle.create_dataset("y", data=labels.reshape(-1, 1, 1, 1))
        split = open_split(root, "test")
        assert split.layout == expected
        np.testing.assert_array_equal(split.read_images(np.array([4, 0])), images[[4, 0]])


def test_index_boundaries_and_negative_indices(written: Written) -> None:
    split, images = written.split, written.images
    for index in ([-N, N - 1], [-1, 0, -2], [N - 1]):
        got = split.read_images(np.array(index))
        np.testing.assert_array_equal(got, images[index])
        assert got.dtype == np.uint8
    np.testing.assert_array_equal(split.read_images([3, 1]), images[[3, 1]])  # a list
    np.testing.assert_array_equal(split.read_images(slice(None, None, -3)), images[::-3])
    np.testing.assert_array_equal(split.read_images(slice(-5, None)), images[-5:])
    np.testing.assert_array_equal(split.read_images(np.array([], dtype=np.int64)), images[:0])
    for bad in ([-N - 1], [N], [0, N + 5]):
        with pytest.raises(InvalidArgumentError) as raised:
            split.read_images(np.array(bad))
        assert str(raised.value) == (
            f"index: expected indices in [{-N}, {N}), found '{min(bad)}..{max(bad)}'"
        )


@pytest.mark.parametrize(
    ("index", "found"),
    [
        (np.zeros((2, 2), dtype=np.int64), "a int64 array of shape (2, 2)"),
        (np.array([True, False]), "a bool array of shape (2,)"),
        (np.array([1.0, 2.0]), "a float64 array of shape (2,)"),
        (np.array(3), "a int64 array of shape ()"),
        (np.empty((0, 2), dtype=np.int64), "a int64 array of shape (0, 2)"),
    ],
)
def test_index_that_is_not_a_list_of_integers(
    written: Written, index: npt.NDArray[np.integer[Any]], found: str
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        written.split.read_images(index)
    assert str(raised.value) == (
        f"index: expected a slice or a 1-D sequence of integer indices, found {found!r}"
    )


def test_runs() -> None:
    starts, stops = runs(np.array([0, 1, 2, 5, 7, 8], dtype=np.int32))
    assert starts.dtype == stops.dtype == np.dtype(np.int64)
    assert (starts.tolist(), stops.tolist()) == ([0, 5, 7], [3, 6, 9])
    starts, stops = runs(np.array([4], dtype=np.int64))
    assert (starts.tolist(), stops.tolist()) == ([4], [5])
    starts, stops = runs(np.array([], dtype=np.int64))
    assert (starts.size, stops.size) == (0, 0)


def test_read_mask(tmp_path: Path) -> None:
    write_split(tmp_path, "train", 6, seed=4, with_mask=True)
    with h5py.File(layout.h5_path(tmp_path, "train", "mask"), "r") as handle:
        masks = np.asarray(handle["mask"][...])
    split = open_split(tmp_path, "train")
    assert split.has_mask
    assert split.mask_info is not None
    assert split.mask_info.key == "mask"
    for index in (slice(1, 4), np.array([5, 0, 5])):
        got = split.read_mask(index)
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got, masks[index])
    split.close()


def test_read_mask_message(written: Written) -> None:
    with pytest.raises(MissingFileError) as raised:
        written.split.read_mask(slice(0, 1))
    assert str(raised.value) == (
        f"{layout.h5_path(written.split.root, 'valid', 'mask')}: expected a PCam mask file "
        "(dataset 'mask'), found no such file; masks exist for the train split only; write them "
        "with pcam synth --with-mask"
    )
    with pytest.raises(MissingFileError) as raised:
        written.split.read_meta()
    assert str(raised.value) == (
        f"{layout.meta_path(written.split.root, 'valid')}: expected a meta CSV, found no such "
        "file; the meta CSV is optional; download it or write it with pcam synth"
    )


def test_read_meta_of_another_length(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", 12, seed=2, with_meta=True)
    meta = layout.meta_path(tmp_path, "valid")
    lines = meta.read_text().splitlines(keepends=True)
    meta.write_text("".join(lines[:-1]))
    split = open_split(tmp_path, "valid")
    assert split.meta_path == meta
    with pytest.raises(LayoutError) as raised:
        split.read_meta()
    assert str(raised.value) == (
        f"{meta}: expected 12 rows (one per patch), found 11 rows; the CSV belongs to another "
        "split or is incomplete"
    )


def test_advise_will_need_asks_for_the_pages_of_each_run(
    written: Written, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = written.split
    index = np.array([9, 1, 2, 30, 2, 36], dtype=np.int64)
    split.advise_will_need(index)  # the real madvise accepts every range it is given
    split.advise_will_need(np.array([], dtype=np.int64))
    calls: list[tuple[int, int, int]] = []

    class Recorder:
        def madvise(self, option: int, start: int, length: int) -> None:
            calls.append((option, start, length))

    class Mapped:
        _mmap = Recorder()

    monkeypatch.setattr(split, "_memmap", lambda info: Mapped())
    split.advise_will_need(np.array([], dtype=np.int64))
    assert calls == []
    split.advise_will_need(index)
    if written.storage != "contiguous":
        assert calls == []  # no memory map: nothing to advise
        return
    offset = split.images_info.offset
    assert offset is not None
    base = offset % mmap.ALLOCATIONGRANULARITY  # where the data starts in numpy's mapping
    item = int(np.prod(layout.IMAGE_SHAPE))
    assert len(calls) == 4  # runs 1-2, 9, 30, 36
    for (option, start, length), (first, stop) in zip(
        calls, [(1, 3), (9, 10), (30, 31), (36, 37)], strict=True
    ):
        assert option == mmap.MADV_WILLNEED
        assert start % mmap.PAGESIZE == 0
        assert 0 <= base + first * item - start < mmap.PAGESIZE  # the page holding the first byte
        assert start + length == base + stop * item  # up to the last byte of the run
    calls.clear()
    split.advise_will_need(np.array([7], dtype=np.int64))  # one patch is advised too
    assert [(start, length) for _, start, length in calls] == [
        (
            base + 7 * item - (base + 7 * item) % mmap.PAGESIZE,
            (base + 7 * item) % mmap.PAGESIZE + item,
        )
    ]
    monkeypatch.setattr(split, "_memmap", lambda info: object())  # a map without _mmap
    calls.clear()
    split.advise_will_need(index)
    assert calls == []


def test_h5py_files_are_opened_once_per_process(written: Written) -> None:
    split = written.split
    split.read_images(slice(0, 2))
    files = split._files().files
    opened = dict(files)
    split.read_images(np.array([3, 1]))
    split.read_images(slice(5, 6))
    assert split._files().files is files
    assert len(files) == len(opened) == (0 if written.storage == "contiguous" else 1)
    assert all(files[path] is handle for path, handle in opened.items())


def test_first_line_of_an_error() -> None:
    assert first_line(OSError("Can't read data (filter failed)\n  more detail")) == (
        "Can't read data (filter failed)"
    )
    assert first_line(OSError("  \n  padded\n")) == "padded"
    assert first_line(OSError()) == "OSError"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("abcdefghij\nmore"), limit=8) == "abcde..."
    assert first_line(ValueError("abcdefgh"), limit=8) == "abcdefgh"


def test_normalise_index_keeps_step_one_slices() -> None:
    assert _normalise_index(slice(2, 5), 10) == slice(2, 5)
    assert _normalise_index(slice(None, -3), 10) == slice(0, 7)
    assert _normalise_index(slice(8, 20, 1), 10) == slice(8, 10)
    stepped = _normalise_index(slice(1, 8, 3), 10)
    assert isinstance(stepped, np.ndarray)
    assert stepped.tolist() == [1, 4, 7]
    fancy = _normalise_index([-1, 0, -10], 10)
    assert isinstance(fancy, np.ndarray)
    assert fancy.dtype == np.dtype(np.int64)
    assert fancy.tolist() == [9, 0, 0]


def test_read_meta_keeps_line_breaks_inside_quoted_fields(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", 3, seed=2, with_meta=True)
    meta = layout.meta_path(tmp_path, "valid")
    with meta.open("w", newline="") as handle:
        handle.write(",".join(layout.META_COLUMNS) + "\r\n")
        for i in range(3):
            handle.write(f'{i},0,0,False,False,"slide\r\n{i}"\r\n')
    rows = open_split(tmp_path, "valid").read_meta()
    assert [row["wsi"] for row in rows] == ["slide\r\n0", "slide\r\n1", "slide\r\n2"]


# -- find_splits: what pcam check opens ---------------------------------------------------------


def test_find_splits_opens_the_named_split_or_every_present_one_in_order(tmp_path: Path) -> None:
    from pcam.data.split import find_splits

    write_split(tmp_path, "test", 8, seed=1)
    write_split(tmp_path, "valid", 12, seed=2)  # written after test: the order is the layout's
    found = find_splits(tmp_path, None)
    assert [(s.split, len(s)) for s in found] == [("valid", 12), ("test", 8)]
    [named] = find_splits(tmp_path, "test")
    assert (named.split, len(named)) == ("test", 8)
    with pytest.raises(MissingFileError, match=r"camelyonpatch_level_2_split_train_x\.h5"):
        find_splits(tmp_path, "train")


def test_find_splits_in_a_folder_without_pcam_files_is_one_line(tmp_path: Path) -> None:
    from pcam.data.split import find_splits

    (tmp_path / "camelyonpatch_level_2_split_train_y.h5").write_bytes(b"labels alone")
    with pytest.raises(MissingFileError) as caught:
        find_splits(tmp_path, None)
    assert str(caught.value) == (
        f"{tmp_path / 'camelyonpatch_level_2_split_*_x.h5'}: expected PCam image files, found "
        "none in this directory; run pcam synth --out DIR or pcam download --out DIR first"
    )


def test_find_splits_of_a_missing_folder_or_a_file_is_the_split_error(tmp_path: Path) -> None:
    from pcam.data.split import find_splits

    missing = tmp_path / "nowhere"
    with pytest.raises(MissingFileError) as caught:
        find_splits(missing, None)
    with pytest.raises(MissingFileError) as expected:
        open_split(missing, "train")
    assert str(caught.value) == str(expected.value)
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    with pytest.raises(MissingFileError) as caught_file:
        find_splits(a_file, None)
    assert str(a_file) in str(caught_file.value)
