"""Synthetic PCam: H&E-like patches written in the real PCam file layout.

The images follow the stain physics of H&E slides (Beer-Lambert: optical density is the sum of a
haematoxylin and an eosin term, each a stain colour times a concentration field): pink stroma with
gaps, small dark-purple normal nuclei everywhere, and, for tumour, a cluster of large, crowded,
very dark and irregular nuclei. The label follows the real PCam rule: a patch is positive when its
centre 32x32 region holds at least one tumour pixel. Some negatives carry a tumour cluster in the
outer ring only, so a model must look at the centre to get them right. The mask marks the tumour
pixels, giving later Grad-CAM work a ground truth.

Files are written byte-for-byte in the real layout (contiguous, uncompressed, same names and keys,
same HDF5 version bounds) unless chunking or compression is asked for. Each file is written under
a temporary name and renamed when complete, so a crash never leaves a half-written file under a
PCam name.
"""

from __future__ import annotations

import csv
import operator
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from pcam import layout
from pcam.errors import (
    InvalidArgumentError,
    OutputExistsError,
    UnsafeOutputError,
)
from pcam.outputs import (
    MARKER,
    atomic_path,
    check_writable,
    make_folder,
    record_written,
    written_files,
)

SYNTHETIC = "synthetic data"
"""The kind recorded in a data folder's marker for the files synthetic writes put there."""

CHUNK = 512
"""Patches generated and written at a time (14 MB of images)."""

# optical density of one unit of stain in R, G, B (Ruifrok and Johnston's H&E vectors)
_H_COLOUR = np.array([0.65, 0.70, 0.29], dtype=np.float32)
_E_COLOUR = np.array([0.07, 0.99, 0.11], dtype=np.float32)
_SIZE = layout.PATCH_SIZE
_PAD = 8  # room for nucleus stamps that cross the border
_CENTRE_MARGIN = 6  # decoy clusters keep this far from the centre square


@dataclass(frozen=True)
class SyntheticBatch:
    """One block of generated patches with their labels and tumour masks."""

    images: npt.NDArray[np.uint8]
    """``[n, 96, 96, 3]`` RGB."""
    labels: npt.NDArray[np.uint8]
    """``[n]`` 0/1, by the centre-32x32 rule applied to ``masks``."""
    masks: npt.NDArray[np.bool_]
    """``[n, 96, 96]`` tumour pixels."""


def generate(
    n: int,
    *,
    seed: int,
    positive_fraction: float = 0.5,
    outer_ring_fraction: float = 0.25,
) -> SyntheticBatch:
    """Generate ``n`` H&E-like patches in memory (use :func:`write_split` for large ``n``).

    ``positive_fraction`` of the patches are tumour; ``outer_ring_fraction`` of the negatives carry
    a tumour cluster in the outer ring only (negative by the centre rule).
    """
    rng = np.random.default_rng(seed)
    positive, decoy = _draw_kinds(rng, n, positive_fraction, outer_ring_fraction)
    return _render(rng, positive, decoy)


def _draw_kinds(
    rng: np.random.Generator, n: int, positive_fraction: float, outer_ring_fraction: float
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which patches are tumour (exactly ``round(n * positive_fraction)``) and which decoys."""
    if n < 0:
        raise InvalidArgumentError("n", "a number of patches >= 0", n)
    if not 0.0 <= positive_fraction <= 1.0:
        raise InvalidArgumentError("positive_fraction", "a fraction in [0, 1]", positive_fraction)
    if not 0.0 <= outer_ring_fraction <= 1.0:
        raise InvalidArgumentError(
            "outer_ring_fraction", "a fraction in [0, 1]", outer_ring_fraction
        )
    positive = np.zeros(n, dtype=bool)
    positive[: round(n * positive_fraction)] = True
    rng.shuffle(positive)
    decoy = ~positive & (rng.random(n) < outer_ring_fraction)
    return positive, decoy


def _render(
    rng: np.random.Generator, positive: npt.NDArray[np.bool_], decoy: npt.NDArray[np.bool_]
) -> SyntheticBatch:
    count = positive.size
    masks = _tumour_masks(rng, positive, decoy)
    eosin = _smooth_field(rng, count, cells=6, low=0.25, high=0.65)
    gaps = _smooth_field(rng, count, cells=4, low=0.0, high=1.0) > 0.82
    eosin = np.where(gaps, eosin * 0.15, eosin)
    haematoxylin = 0.04 + 0.05 * _smooth_field(rng, count, cells=8, low=0.0, high=1.0)
    haematoxylin = haematoxylin + 0.18 * masks  # tumour cytoplasm is more basophilic
    haematoxylin += _stamp_nuclei(rng, _normal_nuclei(rng, count, gaps), count, pad=5)
    haematoxylin += _stamp_nuclei(rng, _tumour_nuclei(rng, masks), count, pad=_PAD)
    stain = rng.uniform(0.85, 1.15, size=(2, count, 1, 1)).astype(np.float32)  # slide variation
    haematoxylin = haematoxylin.astype(np.float32) * stain[0]
    haematoxylin += rng.standard_normal(size=haematoxylin.shape, dtype=np.float32) * 0.03
    eosin = eosin.astype(np.float32) * stain[1]
    eosin += rng.standard_normal(size=eosin.shape, dtype=np.float32) * 0.015
    images = _stains_to_rgb(haematoxylin, eosin)
    centre = masks[
        :, layout.CENTRE_START : layout.CENTRE_STOP, layout.CENTRE_START : layout.CENTRE_STOP
    ]
    labels: npt.NDArray[np.uint8] = np.asarray(centre.any(axis=(1, 2)), dtype=np.uint8)
    return SyntheticBatch(images=images, labels=labels, masks=masks)


_H_LEVELS, _H_MAX = 256, 3.0
_E_LEVELS, _E_MAX = 128, 1.0


def _rgb_table() -> npt.NDArray[np.uint8]:
    """RGB of every quantised (haematoxylin, eosin) pair: ``255 * exp(-optical density)``."""
    h = np.linspace(0.0, _H_MAX, _H_LEVELS, dtype=np.float32)[:, None, None]
    e = np.linspace(0.0, _E_MAX, _E_LEVELS, dtype=np.float32)[None, :, None]
    density = h * _H_COLOUR + e * _E_COLOUR
    table = np.clip(np.rint(255.0 * np.exp(-density)), 0, 255).astype(np.uint8)
    return table.reshape(_H_LEVELS * _E_LEVELS, 3)


_RGB_TABLE = _rgb_table()


def _stains_to_rgb(
    haematoxylin: npt.NDArray[np.float32], eosin: npt.NDArray[np.float32]
) -> npt.NDArray[np.uint8]:
    """Beer-Lambert colour of stain concentrations, through a quantised lookup table."""
    h = np.clip(haematoxylin * ((_H_LEVELS - 1) / _H_MAX) + 0.5, 0, _H_LEVELS - 1)
    e = np.clip(eosin * ((_E_LEVELS - 1) / _E_MAX) + 0.5, 0, _E_LEVELS - 1)
    index = h.astype(np.int32) * _E_LEVELS + e.astype(np.int32)
    rgb: npt.NDArray[np.uint8] = _RGB_TABLE[index]
    return rgb


def _smooth_field(
    rng: np.random.Generator, count: int, *, cells: int, low: float, high: float
) -> npt.NDArray[np.float32]:
    """A smooth random field per image: a coarse grid of uniforms, bilinearly upsampled."""
    coarse = rng.uniform(low, high, size=(count, cells + 1, cells + 1))
    up = _upsampler(cells)
    field: npt.NDArray[np.float32] = np.einsum(
        "ij,njk,lk->nil", up, coarse.astype(np.float32), up, optimize=True
    )
    return field


def _upsampler(cells: int) -> npt.NDArray[np.float32]:
    """Matrix mapping ``cells + 1`` grid values to 96 bilinearly interpolated ones."""
    position = np.linspace(0, cells, _SIZE)
    grid = np.arange(cells + 1)
    return np.clip(1.0 - np.abs(position[:, None] - grid[None, :]), 0.0, 1.0).astype(np.float32)


def _tumour_masks(
    rng: np.random.Generator, positive: npt.NDArray[np.bool_], decoy: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Irregular tumour regions: over the centre for positives, in the outer ring for decoys."""
    count = positive.size
    centre_y = rng.uniform(36, 60, size=count)
    centre_x = rng.uniform(36, 60, size=count)
    radius = rng.uniform(9, 22, size=count)
    # decoys: a cluster centred near one of the four borders, away from the centre square
    side = rng.integers(0, 4, size=count)
    along = rng.uniform(8, 88, size=count)
    across = rng.uniform(2, 14, size=count)
    decoy_y = np.select([side == 0, side == 1, side == 2], [across, 95 - across, along], along)
    decoy_x = np.select([side == 0, side == 1, side == 2], [along, along, across], 95 - across)
    centre_y = np.where(decoy, decoy_y, centre_y)
    centre_x = np.where(decoy, decoy_x, centre_x)
    radius = np.where(decoy, rng.uniform(8, 16, size=count), radius)
    rows = np.arange(_SIZE)[None, :, None]
    cols = np.arange(_SIZE)[None, None, :]
    distance = np.hypot(rows - centre_y[:, None, None], cols - centre_x[:, None, None])
    wobble = 1.0 + 0.35 * (_smooth_field(rng, count, cells=5, low=-1.0, high=1.0))
    masks = distance < radius[:, None, None] * wobble
    masks &= (positive | decoy)[:, None, None]
    lo, hi = layout.CENTRE_START - _CENTRE_MARGIN, layout.CENTRE_STOP + _CENTRE_MARGIN
    masks[decoy, lo:hi, lo:hi] = False
    return masks


@dataclass(frozen=True)
class _Nuclei:
    image: npt.NDArray[np.int64]
    row: npt.NDArray[np.int64]
    col: npt.NDArray[np.int64]
    size: npt.NDArray[np.float64]  # radius in pixels
    darkness: npt.NDArray[np.float64]


def _normal_nuclei(rng: np.random.Generator, count: int, gaps: npt.NDArray[np.bool_]) -> _Nuclei:
    """Small, moderately dark nuclei scattered over the tissue (not in the gaps)."""
    return _scatter_nuclei(
        rng, rng.poisson(28, size=count), ~gaps, size=(1.6, 2.8), darkness=(0.5, 0.9)
    )


def _tumour_nuclei(rng: np.random.Generator, masks: npt.NDArray[np.bool_]) -> _Nuclei:
    """Large, very dark, crowded nuclei inside the tumour regions."""
    candidates = np.full(masks.shape[0], 140)
    return _scatter_nuclei(rng, candidates, masks, size=(3.2, 5.2), darkness=(1.0, 1.5))


def _scatter_nuclei(
    rng: np.random.Generator,
    per_image: npt.NDArray[np.integer[Any]],
    allowed: npt.NDArray[np.bool_],
    *,
    size: tuple[float, float],
    darkness: tuple[float, float],
) -> _Nuclei:
    """Nuclei at uniform random positions, kept where ``allowed`` ([count, 96, 96]) is true."""
    image = np.repeat(np.arange(allowed.shape[0]), per_image)
    row = rng.integers(0, _SIZE, size=image.size)
    col = rng.integers(0, _SIZE, size=image.size)
    keep = allowed[image, row, col]
    return _Nuclei(
        image[keep],
        row[keep],
        col[keep],
        rng.uniform(*size, size=image.size)[keep],
        rng.uniform(*darkness, size=image.size)[keep],
    )


def _stamp_nuclei(
    rng: np.random.Generator, nuclei: _Nuclei, count: int, *, pad: int
) -> npt.NDArray[np.float32]:
    """Haematoxylin density of elliptical nuclei with soft edges, summed with one ``bincount``.

    Each nucleus is drawn in a ``(2 * pad + 1)`` square around its centre.
    """
    offsets = np.arange(-pad, pad + 1, dtype=np.float32)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    angle = rng.uniform(0, np.pi, size=nuclei.image.size).astype(np.float32)[:, None, None]
    stretch = rng.uniform(1.0, 1.5, size=nuclei.image.size).astype(np.float32)[:, None, None]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dy * cos + dx * sin) * stretch
    v = (dx * cos - dy * sin) / stretch
    radius = nuclei.size.astype(np.float32)[:, None, None]
    edge = np.clip(radius + 0.5 - np.sqrt(u * u + v * v), 0.0, 1.0)
    values = nuclei.darkness.astype(np.float32)[:, None, None] * edge
    side = _SIZE + 2 * pad
    rows = nuclei.row[:, None, None] + dy.astype(np.int64) + pad
    cols = nuclei.col[:, None, None] + dx.astype(np.int64) + pad
    flat = (nuclei.image[:, None, None] * side + rows) * side + cols
    field = np.bincount(flat.ravel(), weights=values.ravel(), minlength=count * side * side)
    return field.reshape(count, side, side)[:, pad:-pad, pad:-pad].astype(np.float32)


# -- writing files ---------------------------------------------------------------------------------


def write_split(
    root: str | os.PathLike[str],
    split: str,
    n: int,
    *,
    seed: int = 0,
    positive_fraction: float = 0.5,
    outer_ring_fraction: float = 0.25,
    chunked: bool = False,
    compression: str | None = None,
    with_meta: bool = True,
    with_mask: bool = False,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write ``n`` synthetic patches as one PCam split under ``root``; returns the files written.

    The layout is the real one (contiguous, uncompressed) unless ``chunked`` or ``compression``
    (``"gzip"`` or ``"lzf"``) is given. ``with_meta`` writes the meta CSV, ``with_mask`` the tumour
    mask file (``dataset 'mask'``, bool ``[n, 96, 96, 1]``). ``progress`` is called with the
    number of patches written after each block. Existing PCam files of this split are replaced only
    with ``overwrite``. Files appear under their final names only once complete.
    """
    n = _count(n)
    rng = np.random.default_rng(seed)
    return _write_blocks(
        root,
        split,
        n,
        _blocks(rng, n, positive_fraction, outer_ring_fraction),
        chunked=chunked,
        compression=compression,
        with_meta=with_meta,
        with_mask=with_mask,
        overwrite=overwrite,
        progress=progress,
        rng=rng,
    )


ProgressBar = Callable[[int, str], AbstractContextManager[Callable[[int], None]]]
"""``progress(total, description)``: a context manager yielding ``update(done)`` (a bar)."""


def write_splits(
    root: str | os.PathLike[str],
    splits: Sequence[str],
    n: int,
    *,
    seed: int = 0,
    with_mask: bool = False,
    chunked: bool = False,
    compression: str | None = None,
    overwrite: bool = False,
    progress: ProgressBar | None = None,
) -> list[Path]:
    """Write a synthetic dataset: ``n`` train patches, ``n // 4`` (at least 1) in each other split.

    The mask file goes with train only. Without ``overwrite``, every split's files are checked
    first, so a refusal comes before any split is written. Each split gets its own seed
    (``seed + 1000 * position``) and, with ``progress``, its own bar. Returns the files written.
    """
    root = Path(root)
    if not overwrite:
        for split in splits:
            masked = with_mask and split == "train"
            refuse_existing(split_outputs(root, split, with_meta=True, with_mask=masked))
    written = []
    for offset, split in enumerate(splits):
        count = n if split == "train" else max(1, n // 4)
        with progress(count, f"writing {split}") if progress else nullcontext(None) as update:
            written += write_split(
                root,
                split,
                count,
                seed=seed + 1000 * offset,
                with_mask=with_mask and split == "train",
                chunked=chunked,
                compression=compression,
                overwrite=overwrite,
                progress=update,
            )
    return written


def _count(n: object) -> int:
    """``n`` as a number of patches >= 1 (any integer type), or an InvalidArgumentError."""
    try:
        count = operator.index(n)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgumentError("n", "a number of patches >= 1", n) from None
    if count < 1:
        raise InvalidArgumentError("n", "a number of patches >= 1", n)
    return count


def write_arrays(
    root: str | os.PathLike[str],
    split: str,
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.integer[Any]],
    *,
    masks: npt.NDArray[np.bool_] | None = None,
    chunked: bool = False,
    compression: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write given arrays as one PCam split (images ``[n, 96, 96, 3]`` uint8, labels ``[n]``).

    For tests that need exact, known content. Same layout options and guarantees as
    :func:`write_split`; writes the mask file when ``masks`` (``[n, 96, 96]`` bool) is given.
    """
    images = np.asarray(images, dtype=np.uint8)
    count = images.shape[0] if images.ndim == 4 else 0
    if images.shape != (count, *layout.IMAGE_SHAPE) or count < 1:
        raise InvalidArgumentError("images", "uint8 [n >= 1, 96, 96, 3]", images.shape)
    labels = np.asarray(labels).reshape(-1).astype(np.uint8)
    if labels.shape != (count,):
        raise InvalidArgumentError("labels", f"{count} labels", labels.shape)
    mask_array = np.zeros((count, *layout.IMAGE_SHAPE[:2]), bool) if masks is None else masks
    batch = SyntheticBatch(
        images=images, labels=labels.astype(np.uint8), masks=np.asarray(mask_array, bool)
    )
    return _write_blocks(
        root,
        split,
        count,
        [(0, batch)],
        chunked=chunked,
        compression=compression,
        with_meta=False,
        with_mask=masks is not None,
        overwrite=overwrite,
        progress=None,
        rng=np.random.default_rng(0),
    )


def _write_blocks(
    root: str | os.PathLike[str],
    split: str,
    n: int,
    blocks: Iterable[tuple[int, SyntheticBatch]],
    *,
    chunked: bool,
    compression: str | None,
    with_meta: bool,
    with_mask: bool,
    overwrite: bool,
    progress: Callable[[int], None] | None,
    rng: np.random.Generator,
) -> list[Path]:
    """Write ``n`` patches, given block by block, as the files of one split."""
    if split not in layout.SPLITS:
        raise InvalidArgumentError("split", f"one of {', '.join(layout.SPLITS)}", split)
    if compression not in (None, "gzip", "lzf"):
        raise InvalidArgumentError("compression", "None, 'gzip' or 'lzf'", compression)
    root_path = Path(root)
    final = split_outputs(root_path, split, with_meta=with_meta, with_mask=with_mask)
    companions = split_outputs(root_path, split, with_meta=True, with_mask=True)
    if not overwrite:
        refuse_existing(final)
    else:  # replace only files pcam synth wrote, never downloaded or hand-made PCam files
        refuse_foreign([path for path in {*final, *companions} if path.exists()])
    make_output_dir(root_path)
    targets = dict(zip(("x", "y", "mask"), final[: 3 if with_mask else 2], strict=False))
    meta = final[-1] if with_meta else None
    shapes = {"x": layout.IMAGE_SHAPE, "y": layout.LABEL_SHAPE, "mask": layout.MASK_SHAPE}
    dtypes = {"x": np.uint8, "y": np.uint8, "mask": np.bool_}
    storage = {"chunks": True if chunked or compression else None, "compression": compression}
    try:
        with ExitStack() as stack:
            temporary = {path: stack.enter_context(atomic_path(path)) for path in final}
            files = {
                kind: stack.enter_context(
                    h5py.File(temporary[path], "w", libver=layout.HDF5_LIBVER)
                )
                for kind, path in targets.items()
            }
            datasets = {
                kind: handle.create_dataset(
                    kind,
                    shape=(n, *shapes[kind]),
                    dtype=dtypes[kind],
                    track_times=True,
                    **(storage if kind == "x" else {}),
                )
                for kind, handle in files.items()
            }
            meta_writer = None
            if meta is not None:
                meta_file = stack.enter_context(temporary[meta].open("w", newline=""))
                meta_writer = csv.writer(meta_file)
                meta_writer.writerow(layout.META_COLUMNS)
            for start, batch in blocks:
                stop = start + batch.labels.size
                datasets["x"][start:stop] = batch.images
                datasets["y"][start:stop] = batch.labels.reshape(-1, 1, 1, 1)
                if "mask" in datasets:
                    datasets["mask"][start:stop] = batch.masks[..., None]
                if meta_writer is not None:
                    _write_meta_rows(meta_writer, rng, split, start, batch)
                if progress is not None:
                    progress(stop)
            for handle in files.values():
                handle.close()
    except RuntimeError as error:  # HDF5 reports a full disk on close as a RuntimeError
        raise _as_os_error(error, final[0]) from error
    stale = set(companions[2:]) - set(final) if overwrite else set()
    for path in stale:  # a mask or meta CSV of an earlier write would not match the new data
        path.unlink(missing_ok=True)
    record_written(
        root_path,
        SYNTHETIC,
        (path.name for path in final),
        removed=(path.name for path in stale),
    )
    return final


def _as_os_error(error: RuntimeError, path: Path) -> Exception:
    """The ``OSError`` inside an HDF5 ``RuntimeError`` ("... errno = 28 ..."), else ``error``."""
    found = re.search(r"errno = (\d+)", str(error))
    if found is None:
        return error
    number = int(found.group(1))
    return OSError(number, os.strerror(number), str(path))


def split_outputs(root: Path, split: str, *, with_meta: bool, with_mask: bool) -> list[Path]:
    """The files a split write makes, in the order x, y, [mask], [meta CSV]."""
    kinds: tuple[layout.ArrayKind, ...] = ("x", "y", "mask") if with_mask else ("x", "y")
    paths = [layout.h5_path(root, split, kind) for kind in kinds]
    return [*paths, layout.meta_path(root, split)] if with_meta else paths


def refuse_existing(paths: Iterable[Path]) -> None:
    """Raise :class:`OutputExistsError` for the first of ``paths`` that exists."""
    for path in paths:
        if path.exists():
            raise OutputExistsError(path)


def refuse_foreign(paths: Iterable[Path]) -> None:
    """Raise :class:`UnsafeOutputError` for the first of ``paths`` that pcam synth did not write.

    Its folder's marker (:mod:`pcam.outputs`) lists the files synthetic writes put there.
    """
    for path in sorted(paths):
        if path.name not in written_files(path.parent, SYNTHETIC):
            raise UnsafeOutputError(
                path,
                "a file that pcam synth wrote, to replace with --overwrite",
                f"a file pcam did not write (not listed in {MARKER})",
            )


def make_output_dir(root: Path) -> None:
    """Create ``root`` (and parents), or raise a one-line error when it cannot be written."""
    check_writable(root)
    make_folder(root)


def _blocks(
    rng: np.random.Generator, n: int, positive_fraction: float, outer_ring_fraction: float
) -> Iterator[tuple[int, SyntheticBatch]]:
    """Generate ``n`` patches block by block with the split's exact class balance."""
    positive, decoy = _draw_kinds(rng, n, positive_fraction, outer_ring_fraction)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        yield start, _render(rng, positive[start:stop], decoy[start:stop])


def _write_meta_rows(
    writer: Any, rng: np.random.Generator, split: str, start: int, batch: SyntheticBatch
) -> None:
    """Meta rows in the real column order: index, coord_y, coord_x, tumor, centre tumor, wsi."""
    count = batch.labels.size
    coords = rng.integers(0, 200_000, size=(count, 2)) // 96 * 96
    slides = rng.integers(0, 20, size=count)
    tumour: npt.NDArray[np.bool_] = np.asarray(batch.masks.any(axis=(1, 2)))
    for i in range(count):
        writer.writerow(
            [
                start + i,
                int(coords[i, 0]),
                int(coords[i, 1]),
                bool(tumour[i]),
                bool(batch.labels[i]),
                f"synthetic_{split}_slide_{int(slides[i]):03d}",
            ]
        )
