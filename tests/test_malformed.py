"""A corpus of malformed PCam inputs: each one must raise one precise, one-line ``PCamError``."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import pytest

from pcam import layout
from pcam.data.split import open_split
from pcam.errors import (
    DamagedDataError,
    EmptySplitError,
    LabelValueError,
    LayoutError,
    LengthMismatchError,
    MissingFileError,
    PCamError,
    UnknownSplitError,
    UnreadableFileError,
)
from pcam.testing.synthetic import write_split

N = 8


@dataclass(frozen=True)
class Case:
    """A broken dataset on disk and the error ``open_split(root, split)`` must raise."""

    root: Path
    split: str
    error: type[PCamError]
    pattern: str


Builder = Callable[[Path], Case]


# -- helpers -------------------------------------------------------------------------------------


def _message(path: Path, expected: str, found: str) -> str:
    """Regex: the path, then ``expected <expected>``, then ``found <found>``, in that order."""
    return rf"{re.escape(str(path))}.*\bexpected {expected}.*\bfound {found}"


def _x(root: Path, split: str = "valid") -> Path:
    return layout.h5_path(root, split, "x")


def _y(root: Path, split: str = "valid") -> Path:
    return layout.h5_path(root, split, "y")


def _valid(root: Path) -> Path:
    write_split(root, "valid", N, seed=0)
    return root


def _read(path: Path, key: str) -> npt.NDArray[Any]:
    with h5py.File(path, "r") as handle:
        return np.asarray(handle[key][...])


def _rewrite(path: Path, key: str, data: npt.NDArray[Any], **kwargs: Any) -> None:
    """Replace ``path`` by an HDF5 file holding ``data`` as dataset ``key`` (PCam file format)."""
    with h5py.File(path, "w", libver=layout.HDF5_LIBVER) as handle:
        handle.create_dataset(key, data=data, **kwargs)


def _listing(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Everything under ``root`` (and ``root`` itself): is-dir, size and mtime in nanoseconds."""
    entries = [root, *sorted(root.rglob("*"))]
    listing = {}
    for entry in entries:
        info = entry.lstat()
        listing[str(entry.relative_to(root))] = (entry.is_dir(), info.st_size, info.st_mtime_ns)
    return listing


def _last_chunk(path: Path, key: str) -> tuple[int, int]:
    """Byte offset and size of the stored chunk that holds the last element of ``key``."""
    with h5py.File(path, "r") as handle:
        dataset = handle[key]
        last = tuple(size - 1 for size in dataset.shape)
        coord = tuple(i - i % c for i, c in zip(last, dataset.chunks, strict=True))
        info = dataset.id.get_chunk_info_by_coord(coord)
        return int(info.byte_offset), int(info.size)


# -- the cases -------------------------------------------------------------------------------------


def truncated_x(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    os.truncate(x, x.stat().st_size // 2)
    return Case(
        root, "valid", UnreadableFileError, _message(x, r"[^;]*(HDF5|bytes)", r"[^;]*truncated")
    )


def truncated_y(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    y = _y(root)
    os.truncate(y, y.stat().st_size // 2)
    return Case(
        root, "valid", UnreadableFileError, _message(y, r"[^;]*(HDF5|bytes)", r"[^;]*truncated")
    )


def x_random_bytes(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    x.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return Case(
        root, "valid", UnreadableFileError, _message(x, r"an HDF5 file", r"[^;]*not (an )?HDF5")
    )


def x_text_file(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    x.write_text("id,label\n0,1\n1,0\n")
    return Case(
        root, "valid", UnreadableFileError, _message(x, r"an HDF5 file", r"[^;]*not (an )?HDF5")
    )


def x_empty_file(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    x.write_bytes(b"")
    return Case(
        root,
        "valid",
        UnreadableFileError,
        _message(x, r"an HDF5 file", r"[^;]*(empty|0 bytes|not (an )?HDF5)"),
    )


def x_wrong_key(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    _rewrite(x, "images", _read(x, "x"))
    return Case(root, "valid", LayoutError, _message(x, r"a dataset named 'x'", r"'images'"))


def y_wrong_key(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    y = _y(root)
    _rewrite(y, "labels", _read(y, "y"))
    return Case(root, "valid", LayoutError, _message(y, r"a dataset named 'y'", r"'labels'"))


def x_and_y_swapped(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x, y = _x(root), _y(root)
    images = x.read_bytes()
    x.write_bytes(y.read_bytes())
    y.write_bytes(images)
    return Case(root, "valid", LayoutError, _message(x, r"a dataset named 'x'", r"'y'"))


def x_without_datasets(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    with h5py.File(x, "w", libver=layout.HDF5_LIBVER):
        pass
    return Case(root, "valid", LayoutError, _message(x, r"a dataset named 'x'", r"no datasets"))


def x_float32(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    _rewrite(x, "x", _read(x, "x").astype(np.float32) / 255)
    return Case(root, "valid", LayoutError, _message(x, r"'x' of dtype uint8", r"dtype float32"))


def x_rank3(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    _rewrite(x, "x", _read(x, "x")[..., 0])
    return Case(
        root,
        "valid",
        LayoutError,
        _message(x, r"'x' of shape \(N, 96, 96, 3\)", r"shape \(8, 96, 96\)"),
    )


def x_64px(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    _rewrite(x, "x", np.ascontiguousarray(_read(x, "x")[:, :64, :64]))
    return Case(
        root,
        "valid",
        LayoutError,
        _message(x, r"'x' of shape \(N, 96, 96, 3\)", r"shape \(8, 64, 64, 3\)"),
    )


def x_rgba(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    rgb = _read(x, "x")
    alpha = np.full((*rgb.shape[:3], 1), 255, dtype=np.uint8)
    _rewrite(x, "x", np.concatenate([rgb, alpha], axis=-1))
    return Case(
        root,
        "valid",
        LayoutError,
        _message(x, r"'x' of shape \(N, 96, 96, 3\)", r"shape \(8, 96, 96, 4\)"),
    )


def y_flat(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    y = _y(root)
    _rewrite(y, "y", _read(y, "y").reshape(-1))
    return Case(
        root, "valid", LayoutError, _message(y, r"'y' of shape \(N, 1, 1, 1\)", r"shape \(8,\)")
    )


def y_int64(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    y = _y(root)
    _rewrite(y, "y", _read(y, "y").astype(np.int64))
    return Case(root, "valid", LayoutError, _message(y, r"'y' of dtype uint8", r"dtype int64"))


def length_mismatch(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x, y = _x(root), _y(root)
    _rewrite(y, "y", _read(y, "y")[: N - 1])
    pattern = (
        rf"{re.escape(str(x))} holds {N} patches but {re.escape(str(y))} holds {N - 1} labels"
        r".*\bexpected the same number"
    )
    return Case(root, "valid", LengthMismatchError, pattern)


def labels_out_of_range(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    y = _y(root)
    labels = _read(y, "y")
    labels[2] = 2
    labels[5] = 255
    _rewrite(y, "y", labels)
    return Case(
        root,
        "valid",
        LabelValueError,
        _message(y, r"labels 0 or 1", r"2, 255 \(first at index 2\)"),
    )


def empty_split(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x, y = _x(root), _y(root)
    _rewrite(x, "x", np.zeros((0, *layout.IMAGE_SHAPE), dtype=np.uint8))
    _rewrite(y, "y", np.zeros((0, *layout.LABEL_SHAPE), dtype=np.uint8))
    return Case(root, "valid", EmptySplitError, _message(x, r"at least one patch", r"0\b"))


def missing_x(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    x.unlink()
    return Case(
        root,
        "valid",
        MissingFileError,
        _message(x, r"an HDF5 file of PCam images", r"no such file"),
    )


def missing_y(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    y = _y(root)
    y.unlink()
    return Case(
        root,
        "valid",
        MissingFileError,
        _message(y, r"an HDF5 file of PCam labels", r"no such file"),
    )


def x_dangling_symlink(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    x.unlink()
    x.symlink_to(tmp_path / "gone.h5")
    return Case(
        root,
        "valid",
        MissingFileError,
        _message(x, r"an HDF5 file of PCam images", r"no such file"),
    )


def missing_data_dir(tmp_path: Path) -> Case:
    root = tmp_path / "nowhere"
    return Case(
        root,
        "valid",
        MissingFileError,
        _message(root, r"a directory of PCam files", r"no such (file|directory)"),
    )


def data_dir_is_a_file(tmp_path: Path) -> Case:
    root = tmp_path / "data"
    root.write_text("not a directory\n")
    # the message must say what is there: a file, not "no such file"
    return Case(
        root,
        "valid",
        MissingFileError,
        _message(root, r"a directory of PCam files", r"(?!no such)[^;]*(\bfile\b|not a directory)"),
    )


def x_is_a_directory(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    x.unlink()
    x.mkdir()
    # the message must say what is there: a directory, not a permission problem
    return Case(
        root,
        "valid",
        UnreadableFileError,
        _message(x, r"an HDF5 file of PCam images", r"[^;]*directory"),
    )


def unknown_split(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    return Case(
        root,
        "training",
        UnknownSplitError,
        r"unknown split 'training'.*\bexpected one of train, valid, test",
    )


def x_key_is_group(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    x = _x(root)
    images = _read(x, "x")
    with h5py.File(x, "w", libver=layout.HDF5_LIBVER) as handle:
        handle.create_group("x").create_dataset("x", data=images)
    return Case(root, "valid", LayoutError, _message(x, r"'x' to be a dataset", r"a group"))


def y_key_is_group(tmp_path: Path) -> Case:
    root = _valid(tmp_path)
    y = _y(root)
    with h5py.File(y, "w", libver=layout.HDF5_LIBVER) as handle:
        handle.create_group("y")
    return Case(root, "valid", LayoutError, _message(y, r"'y' to be a dataset", r"a group"))


def gzip_last_chunk_corrupt(tmp_path: Path) -> Case:
    write_split(tmp_path, "valid", N, seed=0, chunked=True, compression="gzip")
    x = _x(tmp_path)
    offset, size = _last_chunk(x, "x")
    assert offset + size > x.stat().st_size // 2  # near the end of the file
    with x.open("r+b") as handle:  # keep the zlib header, garble the deflate stream after it
        handle.seek(offset + 2)
        handle.write(b"\xff" * (size - 4))
    # the damage is real: h5py cannot decode the last patch, but still decodes the first one
    with h5py.File(x, "r") as handle:
        assert handle["x"][0].shape == layout.IMAGE_SHAPE
        with pytest.raises(OSError, match=r"(?i)filter|inflate|read"):
            handle["x"][N - 1]
    return Case(
        tmp_path,
        "valid",
        UnreadableFileError,
        _message(x, rf"{N} readable patches", r"[^;]*cannot be (read|decoded)"),
    )


def mask_wrong_shape(tmp_path: Path) -> Case:
    write_split(tmp_path, "train", N, seed=0, with_mask=True)
    mask = layout.h5_path(tmp_path, "train", "mask")
    _rewrite(mask, "mask", _read(mask, "mask")[..., 0])
    return Case(
        tmp_path,
        "train",
        LayoutError,
        _message(mask, r"'mask' of shape \(N, 96, 96, 1\)", r"shape \(8, 96, 96\)"),
    )


def mask_uint8(tmp_path: Path) -> Case:
    write_split(tmp_path, "train", N, seed=0, with_mask=True)
    mask = layout.h5_path(tmp_path, "train", "mask")
    _rewrite(mask, "mask", _read(mask, "mask").astype(np.uint8))
    return Case(
        tmp_path, "train", LayoutError, _message(mask, r"'mask' of dtype bool", r"dtype uint8")
    )


def mask_too_short(tmp_path: Path) -> Case:
    write_split(tmp_path, "train", N, seed=0, with_mask=True)
    mask = layout.h5_path(tmp_path, "train", "mask")
    _rewrite(mask, "mask", _read(mask, "mask")[: N - 2])
    x = _x(tmp_path, "train")
    pattern = rf"{re.escape(str(x))} holds {N} patches but {re.escape(str(mask))} holds {N - 2}\b"
    return Case(tmp_path, "train", LengthMismatchError, pattern)


def y_gzip_inner_chunk_corrupt(tmp_path: Path) -> Case:
    # a user-made chunked, compressed label file whose FIRST chunk is damaged: the last-patch
    # check passes, so the damage only shows when all labels are read
    root = _valid(tmp_path)
    y = _y(root)
    _rewrite(y, "y", _read(y, "y"), chunks=(2, 1, 1, 1), compression="gzip")
    with h5py.File(y, "r") as handle:
        info = handle["y"].id.get_chunk_info_by_coord((0, 0, 0, 0))
    with y.open("r+b") as handle:
        handle.seek(info.byte_offset + 2)
        handle.write(b"\xff" * (info.size - 2))
    with h5py.File(y, "r") as handle:
        assert handle["y"][N - 1].shape == layout.LABEL_SHAPE
        with pytest.raises(OSError, match=r"(?i)filter|inflate|read"):
            handle["y"][0]
    return Case(
        root,
        "valid",
        DamagedDataError,
        _message(y, r"[^;]*", r"[^;]*(cannot be (read|decoded)|damaged|corrupt)"),
    )


def x_never_written(tmp_path: Path) -> Case:
    # the writer created the dataset and stopped: no storage was ever allocated, so HDF5 would
    # serve N patches of fill value (zeros) from a file of ~1 kB
    root = _valid(tmp_path)
    x = _x(root)
    with h5py.File(x, "w", libver=layout.HDF5_LIBVER) as handle:
        handle.create_dataset("x", shape=(N, *layout.IMAGE_SHAPE), dtype=np.uint8)
    assert x.stat().st_size < N * int(np.prod(layout.IMAGE_SHAPE))
    return Case(
        root,
        "valid",
        UnreadableFileError,
        _message(x, r"[^;]*", r"[^;]*(no data|not written|unallocated|truncated|0 bytes)"),
    )


CASES: list[Builder] = [
    truncated_x,
    truncated_y,
    x_random_bytes,
    x_text_file,
    x_empty_file,
    x_wrong_key,
    y_wrong_key,
    x_and_y_swapped,
    x_without_datasets,
    x_float32,
    x_rank3,
    x_64px,
    x_rgba,
    y_flat,
    y_int64,
    length_mismatch,
    labels_out_of_range,
    empty_split,
    missing_x,
    missing_y,
    x_dangling_symlink,
    missing_data_dir,
    data_dir_is_a_file,
    x_is_a_directory,
    unknown_split,
    x_key_is_group,
    y_key_is_group,
    gzip_last_chunk_corrupt,
    y_gzip_inner_chunk_corrupt,
    x_never_written,
    mask_wrong_shape,
    mask_uint8,
    mask_too_short,
]


_FIX_HINT = "write the split again (pcam synth) or download it again (pcam download)"


_WHAT_TO_DO = {
    "length_mismatch": "the files are from different splits or one is incomplete",
    "mask_too_short": "the files are from different splits or one is incomplete",
    "labels_out_of_range": "the file is not a PCam label file or is corrupt",
    "empty_split": "write or download the split again",
    "missing_x": "run pcam synth or pcam download first",
    "missing_y": "run pcam synth or pcam download first",
    "x_dangling_symlink": "run pcam synth or pcam download first",
    "missing_data_dir": "check the path or run pcam synth / download",
    "data_dir_is_a_file": "check the path or run pcam synth / download",
    "x_is_a_directory": "remove or rename it",
    "unknown_split": "pass one of those names",
}
"""The end of each case's message (what to do), where it is not ``_FIX_HINT``."""


_DIR_HINT = "check the path or run pcam synth / download"

_EXACT: dict[str, Callable[[Path], str]] = {
    "x_is_a_directory": lambda root: (
        f"{_x(root)}: expected an HDF5 file of PCam images (dataset 'x'), found a directory; "
        "remove or rename it"
    ),
    "x_random_bytes": lambda root: (
        f"{_x(root)}: expected an HDF5 file of PCam images (dataset 'x'), found a file that is "
        f"not HDF5; {_FIX_HINT}"
    ),
    "x_never_written": lambda root: (
        f"{_x(root)}: expected {N} patches of data, found a dataset with no data (never "
        f"written); {_FIX_HINT}"
    ),
    "missing_data_dir": lambda root: (
        f"{root}: expected a directory of PCam files, found no such directory; {_DIR_HINT}"
    ),
    "data_dir_is_a_file": lambda root: (
        f"{root}: expected a directory of PCam files, found a file, not a directory; {_DIR_HINT}"
    ),
    "mask_too_short": lambda root: (
        f"{_x(root, 'train')} holds {N} patches but {layout.h5_path(root, 'train', 'mask')} holds "
        f"{N - 2} masks: expected the same number in both; the files are from different splits "
        "or one is incomplete"
    ),
}
"""The whole message of the cases whose pattern above leaves words open, given ``case.root``."""


@pytest.mark.parametrize("build", [pytest.param(b, id=b.__name__) for b in CASES])
def test_malformed_input_raises_one_clear_error(build: Builder, tmp_path: Path) -> None:
    case = build(tmp_path)
    before = _listing(tmp_path)
    with pytest.raises(PCamError) as caught:
        open_split(case.root, case.split)
    message = str(caught.value)
    assert type(caught.value) is case.error, f"{type(caught.value).__name__}: {message}"
    assert re.search(case.pattern, message), f"{message!r} does not match {case.pattern!r}"
    assert "\n" not in message, message
    assert "\r" not in message, message
    assert message.endswith(f"; {_WHAT_TO_DO.get(build.__name__, _FIX_HINT)}"), message
    if build.__name__ in _EXACT:
        assert message == _EXACT[build.__name__](case.root)
    assert _listing(tmp_path) == before, "open_split changed the data directory"


def test_the_undamaged_files_open(tmp_path: Path) -> None:
    # the corpus starts from this split: it must be valid, or every case above proves nothing
    write_split(tmp_path, "train", N, seed=0, with_mask=True)
    write_split(tmp_path, "valid", N, seed=0, chunked=True, compression="gzip")
    train, valid = open_split(tmp_path, "train"), open_split(tmp_path, "valid")
    assert (len(train), len(valid)) == (N, N)
    assert train.has_mask
    assert train.layout == "contiguous"
    assert valid.layout.startswith("chunked+gzip")
    assert valid.read_images(slice(N - 1, N)).shape == (1, *layout.IMAGE_SHAPE)


def test_rewritten_pcam_files_open(tmp_path: Path) -> None:
    # _rewrite itself writes a valid file when given valid data (so the cases test only the damage)
    root = _valid(tmp_path)
    x, y = _x(root), _y(root)
    images, labels = _read(x, "x"), _read(y, "y")
    _rewrite(x, "x", images)
    _rewrite(y, "y", labels)
    split = open_split(root, "valid")
    np.testing.assert_array_equal(split.read_images(slice(None)), images)
    np.testing.assert_array_equal(split.labels, labels.reshape(-1))


# -- damage that only shows when the data is read: exact messages ----------------------------------


def _garble_first_chunk(path: Path, key: str) -> None:
    """Garble the deflate stream of the stored chunk holding element 0 of ``key``."""
    with h5py.File(path, "r") as handle:
        info = handle[key].id.get_chunk_info_by_coord((0,) * handle[key].ndim)
    with path.open("r+b") as handle:
        handle.seek(info.byte_offset + 2)
        handle.write(b"\xff" * (info.size - 2))


def _h5py_error(path: Path, key: str, selection: Any) -> str:
    """The first line of h5py's own error for reading ``selection`` of ``key``."""
    with h5py.File(path, "r") as handle, pytest.raises(OSError, match=r"(?i)filter|read") as raised:
        handle[key][selection]
    return str(raised.value).strip().splitlines()[0]


def test_damaged_patches_raise_when_read(tmp_path: Path) -> None:
    write_split(tmp_path, "valid", N, seed=0, chunked=True, compression="gzip")
    x = _x(tmp_path)
    _garble_first_chunk(x, "x")
    split = open_split(tmp_path, "valid")  # the last chunk is fine: the damage is not seen yet
    assert split.read_images(slice(N - 1, N)).shape == (1, *layout.IMAGE_SHAPE)
    for index in (slice(0, 2), np.array([1, 0])):
        with pytest.raises(DamagedDataError) as raised:
            split.read_images(index)
        first = _h5py_error(x, "x", 0)
        assert str(raised.value) == (
            f"{x}: expected readable patches, found a damaged chunk at patches 0-1 (first "
            f"unreadable index 0: {first}); {_FIX_HINT}"
        )
        assert (raised.value.first_index, raised.value.rows) == (0, (0, 2))


def test_damaged_labels_exact_message(tmp_path: Path) -> None:
    case = y_gzip_inner_chunk_corrupt(tmp_path)
    y = _y(case.root)
    with pytest.raises(DamagedDataError) as raised:
        open_split(case.root, case.split)
    first = _h5py_error(y, "y", 0)
    assert str(raised.value) == (
        f"{y}: expected readable labels, found a damaged chunk at labels 0-1 (first unreadable "
        f"index 0: {first}); {_FIX_HINT}"
    )


def test_unreadable_file_exact_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # root reads every file whatever its mode, so the permission check is simulated
    root = _valid(tmp_path)
    x = _x(root)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path) != x and real_access(path, mode)
    )
    with pytest.raises(UnreadableFileError) as raised:
        open_split(root, "valid")
    assert str(raised.value) == (
        f"{x}: expected an HDF5 file of PCam images (dataset 'x'), found a file this user cannot "
        "read; check its permissions"
    )


def test_the_keys_found_are_listed(tmp_path: Path) -> None:
    root = _valid(tmp_path)
    x = _x(root)
    images = _read(x, "x")
    with h5py.File(x, "w", libver=layout.HDF5_LIBVER) as handle:
        handle.create_dataset("images", data=images)
        handle.create_dataset("labels", data=np.zeros(N, dtype=np.uint8))
    with pytest.raises(LayoutError) as raised:
        open_split(root, "valid")
    assert str(raised.value) == (
        f"{x}: expected a dataset named 'x', found 'images', 'labels'; {_FIX_HINT}"
    )


def test_a_mask_file_that_is_not_hdf5(tmp_path: Path) -> None:
    write_split(tmp_path, "train", N, seed=0, with_mask=True)
    mask = layout.h5_path(tmp_path, "train", "mask")
    mask.write_bytes(b"not HDF5")
    with pytest.raises(UnreadableFileError) as raised:
        open_split(tmp_path, "train")
    assert str(raised.value) == (
        f"{mask}: expected an HDF5 file of PCam tumour masks (dataset 'mask'), found a file that "
        f"is not HDF5; {_FIX_HINT}"
    )


def test_only_the_last_patch_damaged(tmp_path: Path) -> None:
    # one patch a chunk: the damage is in the last patch alone, and open_split must find it
    root = _valid(tmp_path)
    x = _x(root)
    _rewrite(x, "x", _read(x, "x"), chunks=(1, *layout.IMAGE_SHAPE), compression="gzip")
    offset, size = _last_chunk(x, "x")
    with x.open("r+b") as handle:
        handle.seek(offset + 2)
        handle.write(b"\xff" * (size - 4))
    with pytest.raises(UnreadableFileError) as raised:
        open_split(root, "valid")
    first = _h5py_error(x, "x", N - 1)
    assert str(raised.value) == (
        f"{x}: expected {N} readable patches, found a last patch that cannot be read ({first}); "
        f"{_FIX_HINT}"
    )
