"""``verify_readable``: read back every stored byte of a split, for ``pcam check --deep``.

``open_split`` checks the metadata of the files and the last patch only, so a damaged chunk in the
middle of a compressed file shows only when training or prediction reaches it. This reads every
patch, label and mask (every chunk of a chunked file) and raises one line naming the file and the
first row that cannot be read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import h5py
import numpy as np

from pcam.data.split import NOUNS, ArrayInfo, PCamSplit, read_rows

BLOCK_BYTES = 16 * 1024 * 1024
"""About how many bytes one read takes (rounded to whole chunks, at least one chunk)."""


def verify_readable(
    split: PCamSplit,
    progress: Callable[[int], None] | None = None,
    *,
    block_bytes: int = BLOCK_BYTES,
) -> int:
    """Read every row of the image, label and (if present) mask files of ``split``.

    Each file is read in blocks of whole chunks (every chunk of a chunked or compressed file is
    decoded once), through its own h5py handle rather than the memory map. Raises
    :class:`pcam.errors.DamagedDataError` at the first row that cannot be read, naming the file
    and that row. ``progress(done)`` is called after each block, with ``done`` going from 0 to
    ``len(split)``: the share of the split's bytes read so far, counted in patches. Returns the
    number of patches of the split. ``block_bytes`` is about how much one read takes (see
    :func:`blocks`).
    """
    infos = [split.images_info, split.labels_info]
    if split.mask_info is not None:
        infos.append(split.mask_info)
    total_bytes = sum(_row_bytes(info) for info in infos) * len(split)
    done_bytes = 0
    for info in infos:
        with h5py.File(info.path, "r") as handle:
            dataset = handle[info.key]
            for start, stop in blocks(dataset, block_bytes):
                read_rows(dataset, info.path, start, stop, NOUNS.get(info.key, "rows"))
                done_bytes += (stop - start) * _row_bytes(info)
                if progress is not None:
                    progress(done_bytes * len(split) // total_bytes)
    return len(split)


def blocks(dataset: h5py.Dataset, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges that cover ``dataset`` in order, each a whole number of chunks.

    A block holds about ``block_bytes`` (at least one chunk, or one row of a file that is not
    chunked); only the last block may be shorter.
    """
    length = int(dataset.shape[0])
    row_bytes = max(1, int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize)
    chunk_rows = dataset.chunks[0] if dataset.chunks is not None else 1
    rows = max(1, block_bytes // (chunk_rows * row_bytes)) * chunk_rows
    for start in range(0, length, rows):
        yield start, min(start + rows, length)


def _row_bytes(info: ArrayInfo) -> int:
    """Bytes of one row (one patch's image, label or mask) of a dataset."""
    return int(np.prod(info.shape[1:])) * np.dtype(info.dtype).itemsize
