"""A validated, read-only handle on one PCam split: ``open_split(root, split)``.

The handle checks the files once, when it is made, and then reads patches on demand. It never loads
the images of a split into memory. Images of a contiguous, uncompressed file (the real PCam layout)
are read through a memory map of the file; chunked or compressed files are read through h5py.
Open files are held per process and dropped on pickling, so a handle survives ``fork`` and
``pickle`` and reopens its files lazily where it is used.
"""

from __future__ import annotations

import csv
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from pcam import layout
from pcam.errors import (
    DamagedDataError,
    EmptySplitError,
    InvalidArgumentError,
    LabelValueError,
    LayoutError,
    LengthMismatchError,
    MissingFileError,
    UnknownSplitError,
    UnreadableFileError,
    first_line,
)

Indices = slice | npt.NDArray[np.integer[Any]]

_FIX_HINT = "write the split again (pcam synth) or download it again (pcam download)"

_READ_ERRORS = (OSError, ValueError, RuntimeError)
"""What h5py raises for data it cannot read back (a chunk that does not decode, a short file)."""

NOUNS = {"x": "patches", "y": "labels", "mask": "masks"}
"""What one row of each PCam dataset key is called in messages."""


@dataclass(frozen=True)
class ArrayInfo:
    """What ``open_split`` found out about one HDF5 dataset."""

    path: Path
    key: str
    shape: tuple[int, ...]
    layout: str
    """``contiguous``, ``chunked`` or ``chunked+<filter>``."""
    dtype: str
    offset: int | None
    """Byte offset of the data in the file when it is contiguous and allocated, else ``None``."""


@dataclass
class _OpenFiles:
    """Per-process open files of a split: h5py files and memory maps, made on first use."""

    pid: int = field(default_factory=os.getpid)
    files: dict[Path, h5py.File] = field(default_factory=dict)
    maps: dict[Path, np.memmap[Any, np.dtype[Any]]] = field(default_factory=dict)


class PCamSplit:
    """One validated PCam split. Make it with :func:`open_split`."""

    def __init__(
        self,
        root: Path,
        split: str,
        images: ArrayInfo,
        labels: npt.NDArray[np.uint8],
        label_info: ArrayInfo,
        mask: ArrayInfo | None,
        meta_path: Path | None,
    ) -> None:
        self.root = root
        self.split = split
        self.images_info = images
        self.labels_info = label_info
        self.mask_info = mask
        self.meta_path = meta_path
        self._labels = labels
        self._open = _OpenFiles()

    # -- pickling: open files stay behind ---------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open = _OpenFiles()

    # -- facts -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def __repr__(self) -> str:
        return f"PCamSplit(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"

    @property
    def labels(self) -> npt.NDArray[np.uint8]:
        """All labels as a read-only ``uint8`` vector of 0/1 (one byte a patch)."""
        return self._labels

    @property
    def positive_fraction(self) -> float:
        """Fraction of patches labelled tumour (1)."""
        return float(self._labels.mean())

    @property
    def layout(self) -> str:
        """Storage layout of the images: ``contiguous``, ``chunked`` or ``chunked+<filter>``."""
        return self.images_info.layout

    @property
    def is_memory_mappable(self) -> bool:
        """True when the images are read through the contiguous fast path."""
        return self.images_info.offset is not None

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the image and label files."""
        return self.images_info.path.stat().st_size + self.labels_info.path.stat().st_size

    @property
    def has_mask(self) -> bool:
        """True when a tumour mask file is present for this split."""
        return self.mask_info is not None

    # -- reading ---------------------------------------------------------------------------------

    def read_images(self, index: Indices | Sequence[int]) -> npt.NDArray[np.uint8]:
        """Read patches as ``uint8 [n, 96, 96, 3]``.

        ``index`` is a slice or a 1-D sequence of integer indices (negative ones count from the
        end). Indices that are sorted and contiguous read fastest; any order is accepted, repeats
        too, and the patches come back in the order asked.
        """
        return self._read(self.images_info, _normalise_index(index, len(self)))

    def read_mask(self, index: Indices | Sequence[int]) -> npt.NDArray[np.bool_]:
        """Read tumour masks as ``bool [n, 96, 96, 1]``; raises if the split has no mask file."""
        if self.mask_info is None:
            raise MissingFileError(
                layout.h5_path(self.root, self.split, "mask"),
                "a PCam mask file (dataset 'mask')",
                "masks exist for the train split only; write them with pcam synth --with-mask",
            )
        return self._read(self.mask_info, _normalise_index(index, len(self))).astype(
            bool, copy=False
        )

    def read_meta(self) -> list[dict[str, str]]:
        """Read the meta CSV as one dict per patch (column name to text); raises if absent."""
        if self.meta_path is None:
            raise MissingFileError(
                layout.meta_path(self.root, self.split),
                "a meta CSV",
                "the meta CSV is optional; download it or write it with pcam synth",
            )
        with self.meta_path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if len(rows) != len(self):
            raise LayoutError(
                self.meta_path,
                f"{len(self)} rows (one per patch)",
                f"{len(rows)} rows",
                "the CSV belongs to another split or is incomplete",
            )
        return rows

    def _files(self) -> _OpenFiles:
        if self._open.pid != os.getpid():  # forked: never share HDF5 handles across processes
            self._open = _OpenFiles()
        return self._open

    def advise_will_need(self, index: npt.NDArray[np.integer[Any]]) -> None:
        """Tell the kernel that the images at ``index`` will be read soon (fast path only).

        The kernel then reads those pages ahead in the background, so a shuffled epoch over a
        file that is not yet in the page cache does not wait on one small read at a time.
        """
        if self.images_info.offset is None or index.size == 0:
            return
        raw = getattr(self._memmap(self.images_info), "_mmap", None)
        if raw is None:
            return
        item_bytes = int(np.prod(self.images_info.shape[1:]))
        base = self.images_info.offset % mmap.ALLOCATIONGRANULARITY
        starts, stops = runs(np.unique(index))
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            begin = base + start * item_bytes
            aligned = begin - begin % mmap.PAGESIZE
            raw.madvise(mmap.MADV_WILLNEED, aligned, base + stop * item_bytes - aligned)

    def image_map(self) -> npt.NDArray[np.uint8]:
        """The images as a read-only memory map ``[N, 96, 96, 3]`` (contiguous files only)."""
        if self.images_info.offset is None:
            raise LayoutError(
                self.images_info.path,
                "a contiguous, uncompressed dataset to memory-map",
                f"a {self.layout} dataset",
                "use read_images, which works for every layout",
            )
        return self._memmap(self.images_info)

    def _memmap(self, info: ArrayInfo) -> np.memmap[Any, np.dtype[Any]]:
        files = self._files()
        data = files.maps.get(info.path)
        if data is None:
            data = np.memmap(
                info.path, dtype=info.dtype, mode="r", offset=info.offset or 0, shape=info.shape
            )
            files.maps[info.path] = data
        return data

    def _read(self, info: ArrayInfo, index: Indices) -> npt.NDArray[Any]:
        if info.offset is not None:
            return np.asarray(self._memmap(info)[index])
        files = self._files()
        handle = files.files.get(info.path)
        if handle is None:
            handle = h5py.File(info.path, "r")
            files.files[info.path] = handle
        dataset = handle[info.key]
        noun = NOUNS.get(info.key, "rows")
        if isinstance(index, slice):
            return read_rows(dataset, info.path, index.start, index.stop, noun)
        return _read_fancy(dataset, np.asarray(index), info.path, noun)

    def close(self) -> None:
        """Close the files this process opened (they reopen on the next read)."""
        for handle in self._files().files.values():
            handle.close()
        self._open = _OpenFiles()


def _normalise_index(index: Indices | Sequence[int], length: int) -> Indices:
    """A slice with step 1, or an int64 array of indices in ``[0, length)``."""
    if isinstance(index, slice):
        start, stop, step = index.indices(length)
        return slice(start, stop) if step == 1 else np.arange(start, stop, step, dtype=np.int64)
    array = np.asarray(index)
    if array.size == 0 and array.ndim == 1:
        return np.empty(0, dtype=np.int64)
    if array.ndim != 1 or array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise InvalidArgumentError(
            "index",
            "a slice or a 1-D sequence of integer indices",
            f"a {array.dtype} array of shape {array.shape}",
        )
    if array.min() < -length or array.max() >= length:
        raise InvalidArgumentError(
            "index", f"indices in [{-length}, {length})", f"{int(array.min())}..{int(array.max())}"
        )
    return np.where(array < 0, array + length, array).astype(np.int64)


def _read_fancy(
    dataset: h5py.Dataset, index: npt.NDArray[np.integer[Any]], path: Path, noun: str
) -> npt.NDArray[Any]:
    """Read arbitrary indices from an h5py dataset as runs of consecutive indices."""
    if index.size == 0:
        return np.empty((0, *dataset.shape[1:]), dtype=dataset.dtype)
    order = np.argsort(index, kind="stable")
    unique, inverse = np.unique(index[order], return_inverse=True)
    gathered = np.empty((unique.size, *dataset.shape[1:]), dtype=dataset.dtype)
    position = 0
    for start, stop in zip(*(bound.tolist() for bound in runs(unique)), strict=True):
        gathered[position : position + stop - start] = read_rows(dataset, path, start, stop, noun)
        position += stop - start
    out = np.empty((index.size, *dataset.shape[1:]), dtype=dataset.dtype)
    out[order] = gathered[inverse]
    return out


def read_rows(
    dataset: h5py.Dataset, path: Path, start: int, stop: int, noun: str = "patches"
) -> npt.NDArray[Any]:
    """Rows ``start:stop`` of an open h5py dataset, read in one call.

    Data that cannot be read back (a damaged chunk of a compressed file, a short file) raises
    :class:`pcam.errors.DamagedDataError` naming ``path`` and the first unreadable row, found by
    reading the rows again chunk by chunk (see :func:`locate_damage`). ``noun`` names the rows in
    the message (``patches``, ``labels``, ``masks``).
    """
    try:
        return np.asarray(dataset[start:stop])
    except _READ_ERRORS as error:
        raise damage_error(dataset, path, start, stop, noun, error) from None


def damage_error(
    dataset: h5py.Dataset,
    path: Path,
    start: int,
    stop: int,
    noun: str,
    error: BaseException,
) -> DamagedDataError:
    """The one-line error for a failed read of rows ``start:stop``, naming the first bad row."""
    found = locate_damage(dataset, start, stop)
    if found is None:  # every row read on a second try: name the rows and h5py's first complaint
        return DamagedDataError(path, noun, (start, stop), None, first_line(error), _FIX_HINT)
    first, chunk_rows, chunk_error = found
    return DamagedDataError(
        path,
        noun,
        chunk_rows,
        first,
        first_line(chunk_error),
        _FIX_HINT,
        chunked=dataset.chunks is not None,
    )


def locate_damage(
    dataset: h5py.Dataset, start: int, stop: int
) -> tuple[int, tuple[int, int], BaseException] | None:
    """The first row in ``[start, stop)`` that cannot be read, or ``None`` if every row reads.

    Returns ``(row, (chunk_start, chunk_stop), error)``: the row, the rows of its stored chunk
    (along the first axis; just the row when the dataset is not chunked) and h5py's error for it.
    Reads the rows chunk by chunk, then the first failing chunk row by row.
    """
    step = dataset.chunks[0] if dataset.chunks is not None else 1
    length = int(dataset.shape[0])
    chunk_start = start - start % step
    while chunk_start < stop:
        chunk_stop = min(chunk_start + step, length)
        low, high = max(chunk_start, start), min(chunk_stop, stop)
        try:
            dataset[low:high]
        except _READ_ERRORS:
            for row in range(low, high):
                try:
                    dataset[row]
                except _READ_ERRORS as error:
                    return row, (chunk_start, chunk_stop), error
        chunk_start = chunk_stop
    return None


def runs(
    sorted_unique: npt.NDArray[np.integer[Any]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Starts and stops (exclusive) of the runs of consecutive values in a sorted unique array."""
    values = sorted_unique.astype(np.int64)
    if values.size == 0:
        return values, values
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    starts = values[np.concatenate(([0], breaks))]
    stops = values[np.concatenate((breaks - 1, [values.size - 1]))] + 1
    return starts, stops


def open_split(root: str | os.PathLike[str], split: str) -> PCamSplit:
    """Open and validate one PCam split under ``root``.

    Checks that the ``x`` and ``y`` files exist and are HDF5, hold the datasets ``x`` and ``y``
    with the PCam shapes and dtypes, agree in length, are not empty or truncated, and that every
    label is 0 or 1. Finds the optional meta CSV and (train) mask file. Raises a
    :class:`pcam.errors.PCamError` subclass with a one-line message on any problem.
    """
    if split not in layout.SPLITS:
        raise UnknownSplitError(split, layout.SPLITS)
    root_path = Path(root)
    if not root_path.is_dir():
        raise MissingFileError(
            root_path,
            "a directory of PCam files",
            "check the path or run pcam synth / download",
            found="a file, not a directory" if root_path.exists() else "no such directory",
        )
    x_path = layout.h5_path(root_path, split, "x")
    y_path = layout.h5_path(root_path, split, "y")
    images = inspect_array_file(x_path, "x", layout.IMAGE_SHAPE, np.dtype(np.uint8), "images")
    label_info = inspect_array_file(y_path, "y", layout.LABEL_SHAPE, np.dtype(np.uint8), "labels")
    if images.shape[0] != label_info.shape[0]:
        raise LengthMismatchError(x_path, images.shape[0], y_path, label_info.shape[0])
    labels = _read_labels(label_info)
    mask_file = layout.h5_path(root_path, split, "mask")
    mask = None
    if mask_file.exists():
        mask = inspect_array_file(
            mask_file, "mask", layout.MASK_SHAPE, np.dtype(bool), "tumour masks"
        )
        if mask.shape[0] != images.shape[0]:
            raise LengthMismatchError(
                x_path, images.shape[0], mask_file, mask.shape[0], noun="masks"
            )
    meta_file = layout.meta_path(root_path, split)
    return PCamSplit(
        root_path,
        split,
        images,
        labels,
        label_info,
        mask,
        meta_file if meta_file.exists() else None,
    )


def inspect_array_file(
    path: Path, key: str, item_shape: tuple[int, ...], dtype: np.dtype[Any], what: str
) -> ArrayInfo:
    """Check one HDF5 array file against the PCam layout and describe it (one-line errors).

    ``key`` is its dataset, ``item_shape`` and ``dtype`` those of one row, ``what`` how the
    messages name its content ("images", "labels"...).
    """
    expected_file = f"an HDF5 file of PCam {what} (dataset {key!r})"
    if not path.exists():
        raise MissingFileError(path, expected_file, "run pcam synth or pcam download first")
    if path.is_dir():
        raise UnreadableFileError(path, expected_file, "a directory", "remove or rename it")
    if not os.access(path, os.R_OK):
        raise UnreadableFileError(
            path, expected_file, "a file this user cannot read", "check its permissions"
        )
    if not h5py.is_hdf5(path):
        raise UnreadableFileError(path, expected_file, "a file that is not HDF5", _FIX_HINT)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise UnreadableFileError(
            path, expected_file, f"a damaged HDF5 file ({first_line(error)})", _FIX_HINT
        ) from None
    with handle:
        if key not in handle:
            keys = ", ".join(repr(k) for k in handle) or "no datasets"
            raise LayoutError(path, f"a dataset named {key!r}", keys, _FIX_HINT)
        dataset = handle[key]
        if not isinstance(dataset, h5py.Dataset):
            raise LayoutError(path, f"{key!r} to be a dataset", "a group", _FIX_HINT)
        expected_shape = "(N, " + ", ".join(str(s) for s in item_shape) + ")"
        if dataset.ndim != 1 + len(item_shape) or tuple(dataset.shape[1:]) != item_shape:
            raise LayoutError(
                path, f"{key!r} of shape {expected_shape}", f"shape {dataset.shape}", _FIX_HINT
            )
        if dataset.dtype != dtype:
            raise LayoutError(
                path, f"{key!r} of dtype {dtype}", f"dtype {dataset.dtype}", _FIX_HINT
            )
        count = int(dataset.shape[0])
        if count == 0:
            raise EmptySplitError(path)
        storage, offset = _storage(dataset)
        if storage == "contiguous" and offset is None:
            raise UnreadableFileError(
                path,
                f"{count} patches of data",
                "a dataset with no data (never written)",
                _FIX_HINT,
            )
        expected_end = (offset or 0) + dataset.nbytes
        if offset is not None and path.stat().st_size < expected_end:
            raise UnreadableFileError(
                path,
                f"{expected_end} bytes for {count} patches",
                f"{path.stat().st_size} bytes (truncated)",
                _FIX_HINT,
            )
        try:
            dataset[count - 1]  # chunked files: the last chunk exists and decodes
        except (OSError, ValueError, RuntimeError) as error:
            raise UnreadableFileError(
                path,
                f"{count} readable patches",
                f"a last patch that cannot be read ({first_line(error)})",
                _FIX_HINT,
            ) from None
        return ArrayInfo(path, key, tuple(dataset.shape), storage, str(dtype), offset)


def _storage(dataset: h5py.Dataset) -> tuple[str, int | None]:
    """Describe how a dataset is stored and, if contiguous, where its bytes start."""
    if dataset.chunks is None:
        offset = dataset.id.get_offset()
        return "contiguous", None if offset is None else int(offset)
    filters = [
        name
        for name in ("compression", "shuffle", "fletcher32", "scaleoffset")
        if getattr(dataset, name)
    ]
    if dataset.compression:
        filters[filters.index("compression")] = str(dataset.compression)
    return "chunked" + "".join(f"+{name}" for name in filters), None


def _read_labels(info: ArrayInfo) -> npt.NDArray[np.uint8]:
    """Read all labels of a split (one byte each) and check they are 0 or 1."""
    with h5py.File(info.path, "r") as handle:
        rows = read_rows(handle[info.key], info.path, 0, info.shape[0], "labels")
    labels = np.asarray(rows, dtype=np.uint8).reshape(-1)
    bad = labels > 1
    if bad.any():
        values = sorted({int(v) for v in np.unique(labels[bad])})
        raise LabelValueError(info.path, values, int(np.flatnonzero(bad)[0]))
    labels.setflags(write=False)
    return labels


def find_splits(data_dir: Path, split: str | None) -> list[PCamSplit]:
    """Open the named split, or every split whose image file is present in ``data_dir``."""
    if split is not None:
        return [open_split(data_dir, split)]
    if not data_dir.is_dir():
        open_split(data_dir, layout.SPLITS[0])  # raises the one-line error for a bad directory
    present = [s for s in layout.SPLITS if layout.h5_path(data_dir, s, "x").exists()]
    if not present:
        raise MissingFileError(
            data_dir / layout.h5_name("*", "x"),
            "PCam image files",
            "run pcam synth --out DIR or pcam download --out DIR first",
            found="none in this directory",
        )
    return [open_split(data_dir, s) for s in present]
