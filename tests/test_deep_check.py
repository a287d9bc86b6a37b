"""``pcam check --deep`` and damaged chunks met mid-run: one line naming the file and the index.

A damaged chunk in the middle of a compressed file passes ``open_split`` (and plain ``pcam
check``), which read the metadata, the labels and the last patch only. ``verify_readable`` reads
every row; the reader names the first bad row too. The ``tf.data`` pipeline, ``pcam predict``,
``evaluate`` and ``train`` meeting a damaged file are in ``tests/test_pipeline_errors.py``, which
shares the helpers below: this file stays free of the deep-learning stack, so the mutation tests
of ``pcam/data/split.py`` and ``pcam/data/verify.py`` run it quickly.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import pytest

from pcam import layout
from pcam.cli import main
from pcam.data.split import PCamSplit, damage_error, locate_damage, open_split, read_rows
from pcam.data.verify import blocks, verify_readable
from pcam.errors import DamagedDataError
from pcam.testing import write_split
from tests.test_realdata import SAMPLE_SIZES, require, shared_data_dir

N = 600
FIX_HINT = "write the split again (pcam synth) or download it again (pcam download)"
X_ROW = 96 * 96 * 3
MASK_ROW = 96 * 96


# -- helpers ---------------------------------------------------------------------------------------


def _x(root: Path, split: str = "valid") -> Path:
    return layout.h5_path(root, split, "x")


@pytest.fixture(scope="module")
def gzip_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid split of ``N`` patches whose images are chunked and gzip-compressed, written once."""
    root = tmp_path_factory.mktemp("gzip-template")
    write_split(root, "valid", N, seed=0, chunked=True, compression="gzip")
    return root


def _copy_split(template: Path, root: Path) -> Path:
    """A private copy of the template's files under ``root`` (to damage)."""
    root.mkdir(parents=True, exist_ok=True)
    for path in template.iterdir():
        shutil.copyfile(path, root / path.name)
    return root


def _chunk_rows(path: Path, key: str) -> int:
    with h5py.File(path, "r") as handle:
        chunks = handle[key].chunks
    assert chunks is not None
    return int(chunks[0])


def _flip_middle(path: Path, key: str, count: int = 64) -> int:
    """Invert ``count`` bytes in the middle of ``path``; return the first row they damage.

    That row is found from the file's own chunk index (independently of the code under test):
    the lowest first-axis offset among the stored chunks that the flipped bytes fall in.
    """
    middle = path.stat().st_size // 2
    with h5py.File(path, "r") as handle:
        dataset = handle[key]
        hit = [
            int(info.chunk_offset[0])
            for info in map(dataset.id.get_chunk_info, range(dataset.id.get_num_chunks()))
            if info.byte_offset < middle + count and middle < info.byte_offset + info.size
        ]
    assert hit, "the middle of the file holds no chunk data"
    with path.open("r+b") as stream:
        stream.seek(middle)
        flipped = bytes(byte ^ 0xFF for byte in stream.read(count))
        stream.seek(middle)
        stream.write(flipped)
    return min(hit)


def _garble_chunk(path: Path, key: str, row: int) -> None:
    """Garble the deflate stream of the stored chunk that starts at ``row`` (first axis)."""
    with h5py.File(path, "r") as handle:
        dataset = handle[key]
        info = dataset.id.get_chunk_info_by_coord((row,) + (0,) * (dataset.ndim - 1))
    with path.open("r+b") as stream:
        stream.seek(info.byte_offset + 2)  # keep the zlib header
        stream.write(b"\xff" * (info.size - 2))


def _rewrite_chunked(path: Path, key: str, rows: int) -> None:
    """Rewrite ``path`` with ``key`` gzip-compressed in chunks of ``rows`` rows."""
    with h5py.File(path, "r") as handle:
        data = np.asarray(handle[key][...])
    with h5py.File(path, "w", libver=layout.HDF5_LIBVER) as handle:
        handle.create_dataset(key, data=data, chunks=(rows, *data.shape[1:]), compression="gzip")


def _reason(path: Path, key: str, row: int) -> str:
    """The first line of h5py's own error for reading row ``row`` of ``key``."""
    with h5py.File(path, "r") as handle, pytest.raises(OSError, match=r"(?i)read") as raised:
        handle[key][row]
    return str(raised.value).strip().splitlines()[0]


def _damaged(path: Path, noun: str, first: int, last: int, key: str) -> str:
    """The whole message for a damaged chunk holding rows ``first``-``last``."""
    return (
        f"{path}: expected readable {noun}, found a damaged chunk at {noun} {first}-{last} "
        f"(first unreadable index {first}: {_reason(path, key, first)}); {FIX_HINT}"
    )


def _call(argv: list[str | Path]) -> int:
    try:
        return main([str(arg) for arg in argv])
    except SystemExit as stop:
        return int(stop.code or 0)


# -- verify_readable -------------------------------------------------------------------------------


def test_deep_check_names_the_first_patch_of_the_chunk_damaged_in_the_middle(
    gzip_template: Path, tmp_path: Path
) -> None:
    root = _copy_split(gzip_template, tmp_path)
    x = _x(root)
    rows = _chunk_rows(x, "x")
    first = _flip_middle(x, "x")
    assert 0 < first < N - rows  # neither the first nor the last chunk
    assert first % rows == 0
    split = open_split(root, "valid")  # the metadata check does not see it
    assert split.layout.startswith("chunked+gzip")
    calls: list[int] = []
    with pytest.raises(DamagedDataError) as raised:
        verify_readable(split, calls.append, block_bytes=rows * X_ROW)  # one chunk a read
    assert str(raised.value) == _damaged(x, "patches", first, first + rows - 1, "x")
    assert raised.value.first_index == first
    assert raised.value.rows == (first, first + rows)
    # one progress call per chunk read before the damaged one, in patches' worth of bytes
    blocks_read = first // rows
    assert len(calls) == blocks_read
    assert calls[-1] == first * X_ROW * N // (N * (X_ROW + 1))


def test_the_whole_file_in_one_read_finds_the_same_index(
    gzip_template: Path, tmp_path: Path
) -> None:
    root = _copy_split(gzip_template, tmp_path)
    x = _x(root)
    rows = _chunk_rows(x, "x")
    first = _flip_middle(x, "x")
    with h5py.File(x, "r") as handle:
        assert list(blocks(handle["x"], block_bytes=N * X_ROW)) == [(0, N)]
    with pytest.raises(DamagedDataError) as raised:
        verify_readable(open_split(root, "valid"), block_bytes=N * X_ROW)
    assert str(raised.value) == _damaged(x, "patches", first, first + rows - 1, "x")


def test_a_damaged_label_chunk_is_named_by_open_split_and_by_verify(
    gzip_template: Path, tmp_path: Path
) -> None:
    root = _copy_split(gzip_template, tmp_path)
    y = layout.h5_path(root, "valid", "y")
    _rewrite_chunked(y, "y", 8)
    split = open_split(root, "valid")  # opened while the labels are still readable
    _garble_chunk(y, "y", 296)
    expected = _damaged(y, "labels", 296, 303, "y")
    with pytest.raises(DamagedDataError) as raised:
        verify_readable(split)  # the images read fine; the labels do not
    assert str(raised.value) == expected
    assert raised.value.first_index == 296
    with pytest.raises(DamagedDataError) as raised:
        open_split(root, "valid")  # open_split reads every label
    assert str(raised.value) == expected


def test_a_damaged_mask_chunk_passes_open_split_but_not_the_deep_check(tmp_path: Path) -> None:
    write_split(tmp_path, "train", 400, seed=0, with_mask=True)
    mask = layout.h5_path(tmp_path, "train", "mask")
    _rewrite_chunked(mask, "mask", 50)
    _garble_chunk(mask, "mask", 250)  # not the last chunk, which open_split reads
    split = open_split(tmp_path, "train")
    assert split.has_mask
    assert split.layout == "contiguous"
    with pytest.raises(DamagedDataError) as raised:
        verify_readable(split)
    assert str(raised.value) == _damaged(mask, "masks", 250, 299, "mask")


@pytest.mark.parametrize(
    ("compression", "layout_name"),
    [(None, "contiguous"), ("lzf", "chunked+lzf"), ("gzip", "chunked+gzip")],
)
def test_undamaged_files_read_back_whole(
    compression: str | None, layout_name: str, tmp_path: Path
) -> None:
    write_split(tmp_path, "train", 300, seed=2, with_mask=True, compression=compression)
    split = open_split(tmp_path, "train")
    assert split.layout == layout_name
    calls: list[int] = []
    assert verify_readable(split, calls.append, block_bytes=64 * X_ROW) == 300
    assert calls == sorted(calls)
    assert calls[-1] == 300
    assert len(calls) > 5  # read in blocks, not in one go


def test_blocks_are_whole_chunks_and_cover_the_file_once(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", shape=(103, 96, 96, 3), dtype=np.uint8, chunks=(10, 48, 96, 3))
        handle.create_dataset("plain", shape=(7, 96, 96, 3), dtype=np.uint8)
    with h5py.File(path, "r") as handle:
        assert list(blocks(handle["x"], block_bytes=25 * X_ROW)) == [
            (0, 20),
            (20, 40),
            (40, 60),
            (60, 80),
            (80, 100),
            (100, 103),
        ]
        assert list(blocks(handle["x"], block_bytes=1)) == [
            (start, min(start + 10, 103)) for start in range(0, 103, 10)
        ]
        assert list(blocks(handle["plain"], block_bytes=3 * X_ROW)) == [(0, 3), (3, 6), (6, 7)]


def test_blocks_of_one_byte_rows(tmp_path: Path) -> None:
    path = tmp_path / "y.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("y", shape=(10, *layout.LABEL_SHAPE), dtype=np.uint8)
    with h5py.File(path, "r") as handle:
        assert list(blocks(handle["y"], block_bytes=4)) == [(0, 4), (4, 8), (8, 10)]


def test_progress_counts_every_file_s_bytes_in_whole_patches(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", 4, seed=0)
    split = open_split(tmp_path, "valid")
    assert split.labels_info.layout == "contiguous"
    calls: list[int] = []
    assert verify_readable(split, calls.append, block_bytes=1) == 4  # one row a read
    # 4 patches of 27,648 bytes, then 4 labels of one byte: 4 * 27,649 bytes in all. After k
    # patches, 4 * k * 27,648 // (4 * 27,649) = k - 1; after all patches and k labels, 3 until the
    # last byte is read.
    assert calls == [0, 1, 2, 3, 3, 3, 3, 4]
    assert all(type(call) is int for call in calls)


def _split_under_another_key(root: Path) -> tuple[PCamSplit, Path, int]:
    """A split whose images are stored under the key ``images``, damaged in its middle chunk.

    ``open_split`` only makes splits of the keys ``x``, ``y`` and ``mask``; this one is made by
    hand. Returns the split, its image file and the first row of the damaged chunk.
    """
    write_split(root, "valid", 64, seed=0, chunked=True, compression="gzip")
    opened = open_split(root, "valid")
    x = _x(root)
    _rewrite_chunked(x, "x", 8)
    with h5py.File(x, "r+") as handle:
        handle.move("x", "images")
    _garble_chunk(x, "images", 24)
    images = replace(opened.images_info, key="images")
    split = PCamSplit(root, "valid", images, opened.labels, opened.labels_info, None, None)
    return split, x, 24


def test_rows_of_another_key_are_called_rows(tmp_path: Path) -> None:
    split, x, first = _split_under_another_key(tmp_path)
    reason = _reason(x, "images", first + 2)
    with pytest.raises(DamagedDataError) as raised:
        split.read_images(slice(first + 2, first + 4))
    assert str(raised.value) == (
        f"{x}: expected readable rows, found a damaged chunk at rows 24-31 (first unreadable "
        f"index 26: {reason}); {FIX_HINT}"
    )
    with pytest.raises(DamagedDataError) as raised:
        verify_readable(split)
    assert str(raised.value) == _damaged(x, "rows", 24, 31, "images")


@pytest.mark.realdata
@pytest.mark.parametrize(("split", "n"), sorted(SAMPLE_SIZES.items()))
def test_the_real_sample_reads_back_whole(split: str, n: int) -> None:
    root = shared_data_dir() / "pcam-sample"
    require(layout.h5_path(root, split, "x"), layout.h5_path(root, split, "y"))
    calls: list[int] = []
    assert verify_readable(open_split(root, split), calls.append) == n
    assert calls[-1] == n


def test_the_reader_names_the_damaged_chunk_and_the_first_index_it_was_asked_for(
    gzip_template: Path, tmp_path: Path
) -> None:
    root = _copy_split(gzip_template, tmp_path)
    x = _x(root)
    rows = _chunk_rows(x, "x")
    first = _flip_middle(x, "x")
    split = open_split(root, "valid")
    reason = _reason(x, "x", first)
    chunk = f"a damaged chunk at patches {first}-{first + rows - 1}"
    for index in (slice(first + 10, first + 20), np.array([first + 19, first + 10, 0])):
        with pytest.raises(DamagedDataError) as raised:
            split.read_images(index)  # starts inside the damaged chunk
        assert str(raised.value) == (
            f"{x}: expected readable patches, found {chunk} (first unreadable index "
            f"{first + 10}: {reason}); {FIX_HINT}"
        )
        assert raised.value.rows == (first, first + rows)
    before = split.read_images(slice(first - 5, first))  # the rows just before it still read
    assert before.shape == (5, *layout.IMAGE_SHAPE)


# -- locating the damage in a file that is not chunked ---------------------------------------------


class _FlakyRows:
    """A stand-in for an h5py dataset whose rows from ``bad`` on cannot be read.

    Not chunked unless ``chunk_rows`` is given; reads that succeed after ``heal_after`` reads (if
    given) model a failure that does not come back. ``reads`` counts the reads.
    """

    def __init__(
        self, length: int, bad: int, heal_after: int | None = None, chunk_rows: int | None = None
    ) -> None:
        self.shape = (length, 2)
        self.chunks = None if chunk_rows is None else (chunk_rows, 2)
        self.bad = bad
        self.heal_after = heal_after
        self.reads = 0

    def __getitem__(self, index: Any) -> npt.NDArray[np.uint8]:
        self.reads += 1
        rows = range(self.shape[0])[index] if isinstance(index, slice) else range(index, index + 1)
        healed = self.heal_after is not None and self.reads > self.heal_after
        if not healed and rows.stop > self.bad:
            raise OSError(f"Can't read data (row {max(rows.start, self.bad)})\nsecond line")
        return np.zeros((len(rows), 2), dtype=np.uint8)


def test_a_contiguous_read_failure_is_located_row_by_row(tmp_path: Path) -> None:
    dataset = _FlakyRows(40, bad=17)
    assert locate_damage(dataset, 5, 30) is not None
    row, rows, error = locate_damage(dataset, 5, 30) or (None, None, None)
    assert (row, rows, str(error).splitlines()[0]) == (17, (17, 18), "Can't read data (row 17)")
    assert locate_damage(dataset, 0, 17) is None
    error = damage_error(dataset, tmp_path / "x.h5", 10, 20, "patches", OSError("first try"))
    assert str(error) == (
        f"{tmp_path / 'x.h5'}: expected readable patches, found damaged data (first unreadable "
        f"index 17: Can't read data (row 17)); {FIX_HINT}"
    )


def test_a_failure_that_does_not_come_back_names_the_rows_read(tmp_path: Path) -> None:
    dataset = _FlakyRows(40, bad=17, heal_after=0)  # every read succeeds from now on
    error = damage_error(
        dataset, tmp_path / "x.h5", 10, 20, "labels", OSError("Can't read data\nmore")
    )
    assert error.first_index is None
    assert str(error) == (
        f"{tmp_path / 'x.h5'}: expected readable labels, found damaged data while reading "
        f"labels 10-19 (Can't read data); {FIX_HINT}"
    )


def test_locating_reads_each_row_once_and_nothing_past_the_stop() -> None:
    dataset = _FlakyRows(40, bad=17)
    assert locate_damage(dataset, 0, 17) is None
    assert dataset.reads == 17  # one read per row (not chunked), none of the empty row 17:17
    dataset = _FlakyRows(40, bad=40)
    assert locate_damage(dataset, 30, 40) is None  # up to the end of the dataset
    assert dataset.reads == 10


def test_a_chunked_read_failure_is_located_chunk_by_chunk_then_row_by_row() -> None:
    dataset = _FlakyRows(40, bad=17, chunk_rows=8)
    found = locate_damage(dataset, 5, 30)
    assert found is not None
    row, rows, error = found
    assert (row, rows, str(error).splitlines()[0]) == (17, (16, 24), "Can't read data (row 17)")
    # rows 5-7, 8-15 and 16-23 (fails), then rows 16 and 17 (fails) one by one
    assert dataset.reads == 5
    dataset = _FlakyRows(40, bad=17, chunk_rows=8)
    assert locate_damage(dataset, 0, 16) is None
    assert dataset.reads == 2  # two whole chunks; nothing of the chunk at the stop
    dataset = _FlakyRows(40, bad=17, chunk_rows=8)
    found = locate_damage(dataset, 19, 21)  # inside the damaged chunk: from the row asked for
    assert found is not None
    assert (found[0], found[1]) == (19, (16, 24))
    assert dataset.reads == 2


def test_read_rows_returns_the_rows_or_names_the_first_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    dataset = _FlakyRows(40, bad=17)
    assert read_rows(dataset, path, 3, 17).shape == (14, 2)
    with pytest.raises(DamagedDataError) as raised:
        read_rows(dataset, path, 10, 20)  # the rows are called patches unless told otherwise
    assert str(raised.value) == (
        f"{path}: expected readable patches, found damaged data (first unreadable index 17: "
        f"Can't read data (row 17)); {FIX_HINT}"
    )
    assert raised.value.first_index == 17
    assert raised.value.rows == (17, 18)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_read_rows_names_h5py_s_complaint_when_the_failure_does_not_come_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "y.h5"
    dataset = _FlakyRows(40, bad=17, heal_after=1)  # only the first read fails
    with pytest.raises(DamagedDataError) as raised:
        read_rows(dataset, path, 10, 20, "labels")
    assert str(raised.value) == (
        f"{path}: expected readable labels, found damaged data while reading labels 10-19 "
        f"(Can't read data (row 17)); {FIX_HINT}"
    )
    assert raised.value.first_index is None
    assert raised.value.rows == (10, 20)
    assert dataset.reads == 11  # the failed read, then rows 10-19 one by one


def test_the_reader_names_damaged_masks_as_masks(tmp_path: Path) -> None:
    write_split(tmp_path, "train", 400, seed=0, with_mask=True)
    mask = layout.h5_path(tmp_path, "train", "mask")
    _rewrite_chunked(mask, "mask", 50)
    _garble_chunk(mask, "mask", 250)
    split = open_split(tmp_path, "train")
    reason = _reason(mask, "mask", 260)
    for index, first in ((slice(260, 270), 260), (np.array([265, 3, 270]), 265)):
        with pytest.raises(DamagedDataError) as raised:
            split.read_mask(index)
        assert str(raised.value) == (
            f"{mask}: expected readable masks, found a damaged chunk at masks 250-299 (first "
            f"unreadable index {first}: {reason}); {FIX_HINT}"
        )
        assert raised.value.rows == (250, 300)
    assert split.read_mask(np.array([249, 3, 300])).shape == (3, *layout.MASK_SHAPE)


# -- the command line ------------------------------------------------------------------------------


def test_check_deep_is_one_line_and_exit_1_while_plain_check_says_ok(
    gzip_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy_split(gzip_template, tmp_path)
    x = _x(root)
    rows = _chunk_rows(x, "x")
    first = _flip_middle(x, "x")
    assert _call(["check", "--data", root]) == 0  # metadata only: the damage is not seen
    printed, err = capsys.readouterr()
    assert err == ""
    assert "valid  600" in printed
    assert "chunked+gzip" in printed
    assert _call(["check", "--data", root, "--deep"]) == 1
    printed, err = capsys.readouterr()
    assert printed == ""  # nothing is printed before the failure
    assert err == f"pcam check: error: {_damaged(x, 'patches', first, first + rows - 1, 'x')}\n"


def test_check_deep_on_good_files_prints_the_summary_and_one_more_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_split(tmp_path, "train", 64, seed=0, with_mask=True)
    write_split(tmp_path, "valid", 16, seed=0, chunked=True, compression="gzip")
    assert _call(["check", "--data", tmp_path]) == 0
    plain, _ = capsys.readouterr()
    assert _call(["check", "--data", tmp_path, "--deep"]) == 0
    printed, err = capsys.readouterr()
    assert err == ""
    summary, last = printed.rstrip("\n").rsplit("\n", 1)
    assert summary + "\n" == plain
    assert last.startswith("deep check: every patch, label and mask read back (80 patches in ")
    assert last.endswith(" s)")
    assert _call(["check", "--data", tmp_path, "--deep", "--split", "valid"]) == 0
    assert "(16 patches in " in capsys.readouterr().out


def test_check_deep_names_a_damaged_label_chunk(
    gzip_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy_split(gzip_template, tmp_path)
    y = layout.h5_path(root, "valid", "y")
    _rewrite_chunked(y, "y", 8)
    _garble_chunk(y, "y", 296)
    assert _call(["check", "--data", root, "--deep"]) == 1
    printed, err = capsys.readouterr()
    assert (printed, err) == ("", f"pcam check: error: {_damaged(y, 'labels', 296, 303, 'y')}\n")
