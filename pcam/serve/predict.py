r"""Predict the tumour probability of patches with a saved model and write them as CSV.

The inputs are patch images (PNG, JPEG or TIFF files, or folders of them: a folder gives its
image files by name, not recursively, as :mod:`pcam.explain.explanation` reads them) and PCam image
files (``*_x.h5``, dataset ``x``, every row predicted), mixed in any order. They are streamed in
batches: an HDF5 file is read one batch-sized slice at a time, never whole. Images that are not
96x96 are refused, centre-cropped or resized as ``fit`` says (:mod:`pcam.data.patch_io`).

The CSV has one row per patch, in input order, with the columns

- ``source``: the image file, or the HDF5 file, as named (folder entries as ``folder/name``);
- ``index``: the row in the HDF5 file, empty for an image file;
- ``probability``: the tumour probability, written as the shortest decimal that reads back as
  the exact double (Python ``repr``); with ``tta`` the mean over the 8 symmetries of the square;
- ``label``: ``tumour`` when ``probability >= threshold``, else ``normal``.

Text cells (the ``source``) are written so that no file name can break the CSV or act in a
spreadsheet (:func:`csv_text`): a name that is not valid UTF-8 (on Linux, bytes the file system
allows but UTF-8 does not) keeps its readable part and shows each bad byte as ``\xNN``
(``bad\xff.png``), and the row is kept; a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return, which a spreadsheet could run as a formula, gets a leading ``'``
(OWASP's advice against CSV injection: ``'=cmd|calc.png``). Numbers are written as they are.

Every input is listed and checked (paths exist, HDF5 files hold PCam images) and the output is
checked before the model is loaded. The CSV is written under a temporary name beside its
destination and renamed when complete, so an error or Ctrl-C leaves nothing behind; to a stream
(standard output) it is written in one piece at the end.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import numpy as np
import numpy.typing as npt

from pcam import layout
from pcam.data.patch_io import FitMode, decode_patch
from pcam.errors import (
    InvalidArgumentError,
    LayoutError,
    MissingFileError,
    OutputExistsError,
    OutputPathError,
    UnsafeOutputError,
)
from pcam.model.heads import DEFAULT_THRESHOLD
from pcam.outputs import atomic_path, check_writable
from pcam.stopping import deferring, raise_if_stopped

HDF5_SUFFIXES: Final = (".h5", ".hdf5")
"""File name endings read as PCam image files (any case); anything else is read as an image."""

COLUMNS: Final = ("source", "index", "probability", "label")
"""The CSV header."""

FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection)."""

InputPath = str | os.PathLike[str]

Normalise = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]]
"""A change of the patches before the model sees them (stain normalisation): same shape out."""


@dataclass(frozen=True)
class Source:
    """One input: an image file (one patch) or a PCam image file (``count`` patches)."""

    path: Path
    kind: Literal["image", "h5"]
    count: int


@dataclass(frozen=True)
class PatchBatch:
    """Up to ``batch_size`` patches, with where each one came from."""

    images: npt.NDArray[np.uint8]
    """``[b, 96, 96, 3]`` RGB."""
    sources: list[str]
    """The file each patch came from."""
    indices: list[int | None]
    """The row of each patch in its HDF5 file; ``None`` for an image file."""
    notes: list[str | None]
    """What was done to fit each image to 96x96 (``None``: nothing)."""

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class PredictionSummary:
    """What :func:`predict` did."""

    patches: int
    tumour: int
    fitted: int
    """Images centre-cropped or resized to 96x96."""
    seconds: float
    """Time spent streaming, predicting and writing (the model load excluded)."""
    out: str
    """Where the CSV went (a path, or ``-`` for a stream)."""
    tta: bool
    threshold: float
    probabilities: str = "uncalibrated probabilities"
    """Which probabilities were written (:meth:`pcam.model.temperature.Calibration.describe`)."""
    stain_normalisation: str | None = None
    """How the patches were normalised before the model saw them (``None``: not at all)."""

    @property
    def rate(self) -> float:
        """Patches per second."""
        return self.patches / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        """One line for people: patches, tumour patches, time, speed, where the CSV went."""
        fitted = f", {_plural(self.fitted, 'image')} fitted to 96x96" if self.fitted else ""
        tta = " with 8-symmetry TTA" if self.tta else ""
        where = "standard output" if self.out == "-" else self.out
        return (
            f"{_plural(self.patches, 'patch')} predicted{tta} "
            f"({self.tumour} tumour at threshold {self.threshold:g}{fitted}) in "
            f"{self.seconds:.1f} s, {self.rate:.0f} patches/s; CSV: {where}; "
            f"{self.probabilities}"
            + (f"; {self.stain_normalisation}" if self.stain_normalisation else "")
        )


# -- inputs ----------------------------------------------------------------------------------------


def resolve_inputs(inputs: Sequence[InputPath]) -> list[Source]:
    """The patch sources named by ``inputs``, in order, each checked.

    A folder gives its PNG, JPEG and TIFF files by name (not recursively); a ``.h5`` or
    ``.hdf5`` file must hold PCam images (dataset ``x``, ``uint8 [N, 96, 96, 3]``); any other
    file is an image, decoded when its turn comes. Raises a :class:`pcam.errors.PCamError`
    with a one-line message for a missing path, a folder without images, or a bad HDF5 file.
    """
    from pcam.data.patch_io import image_files

    sources: list[Source] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            try:
                files = image_files([entry])
            except MissingFileError as error:
                raise _folder_error(entry, error) from None
            sources.extend(Source(file, "image", 1) for file in files)
        elif entry.suffix.lower() in HDF5_SUFFIXES:
            sources.append(Source(entry, "h5", _h5_length(entry)))
        elif entry.exists():
            sources.append(Source(entry, "image", 1))
        else:
            raise MissingFileError(
                entry,
                "a patch image (PNG, JPEG or TIFF), a folder of them or a PCam *_x.h5 file",
                "check the path",
            )
    if not sources:
        raise InvalidArgumentError(
            "inputs", "at least one patch image, folder of them or PCam *_x.h5 file", []
        )
    return sources


def count_patches(sources: Iterable[Source]) -> int:
    """The number of patches the sources hold."""
    return sum(source.count for source in sources)


def iter_patches(
    inputs: Sequence[InputPath | Source],
    *,
    fit: FitMode = "error",
    batch_size: int = 256,
) -> Iterator[PatchBatch]:
    """Batches of ``batch_size`` patches (the last may be smaller) from the inputs, in order.

    ``inputs`` are paths (see :func:`resolve_inputs`) or sources it returned. Images are decoded
    one by one with :func:`pcam.data.patch_io.decode_patch` under ``fit``; HDF5 files are read in
    slices of at most ``batch_size`` rows. Memory holds about one batch.
    """
    if batch_size < 1:
        raise InvalidArgumentError("batch_size", "an integer >= 1", batch_size)
    sources = _as_sources(inputs)
    pieces: list[PatchBatch] = []
    held = 0
    for piece in _pieces(sources, fit, batch_size):
        pieces.append(piece)
        held += len(piece)
        while held >= batch_size:
            batch, rest = _split(_join(pieces), batch_size)
            yield batch
            pieces, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield _join(pieces)


def predict_patches(
    model: Any,
    batches: Iterable[PatchBatch],
    *,
    tta: bool = False,
    progress: Callable[[int], None] | None = None,
    normalise: Normalise | None = None,
) -> Iterator[tuple[PatchBatch, npt.NDArray[np.float64]]]:
    """Each batch with its tumour probabilities ``[b]`` (float64), as the batches come.

    With ``tta`` each patch is predicted under the 8 symmetries of the square and the
    probabilities are averaged (:func:`pcam.model.inference.tumour_probabilities`). ``progress`` is
    called with the number of patches done after each batch. ``normalise`` (stain
    normalisation, say) is applied to each batch's images before the model sees them.
    """
    done = 0
    for batch in batches:
        images = batch.images if normalise is None else normalise(batch.images)
        probabilities = serving_probabilities(model, images, tta=tta)
        yield batch, probabilities
        done += len(batch)
        if progress is not None:
            progress(done)


# -- output ----------------------------------------------------------------------------------------


class OutputFileExistsError(OutputExistsError):
    """The CSV to write exists and ``overwrite`` was not asked for."""

    def __init__(self, path: Path) -> None:
        Exception.__init__(
            self,
            f"{path}: expected a new file to write the predictions to, found an existing file; "
            "choose another --out or pass --overwrite",
        )


class OutputFolderError(OutputPathError):
    """The CSV destination is a folder."""

    def __init__(self, path: Path) -> None:
        Exception.__init__(
            self,
            f"{path}: expected the name of a CSV file to write, found a folder; "
            f"pass --out {path / 'predictions.csv'}",
        )


def check_output(
    out: InputPath, *, overwrite: bool = False, inputs: Sequence[InputPath] = ()
) -> Path:
    """The CSV destination, refused unless it is new, or (with ``overwrite``) pcam's own CSV.

    ``overwrite`` replaces only a predictions CSV that pcam wrote (its first line is the header
    :data:`COLUMNS`), and never one of ``inputs`` (the model, the images). The folder it goes in
    must be writable (or makeable).
    """
    destination = Path(out)
    if destination.is_dir():
        raise OutputFolderError(destination)
    if destination.exists():
        if not overwrite:
            raise OutputFileExistsError(destination)
        expected = "a predictions CSV that pcam wrote, to replace with --overwrite"
        for item in inputs:
            if Path(item).resolve() == destination.resolve():
                raise UnsafeOutputError(destination, expected, f"the input {item}")
        if not _is_predictions_csv(destination):
            raise UnsafeOutputError(
                destination, expected, f"a file whose first line is not {','.join(COLUMNS)}"
            )
    check_writable(destination.parent)
    return destination


def _is_predictions_csv(path: Path) -> bool:
    """Whether ``path`` starts with the header line pcam predict writes."""
    try:
        with path.open("rb") as stream:
            first = stream.readline(256)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == ",".join(COLUMNS).encode()


def write_predictions_csv(
    results: Iterable[tuple[PatchBatch, npt.NDArray[np.float64]]],
    out: InputPath | TextIO,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    overwrite: bool = False,
) -> tuple[int, int]:
    """Write the CSV rows of ``results`` to ``out``; returns ``(patches, tumour patches)``.

    ``out`` is a path, filled under a temporary name beside it and renamed into place when every
    row is written (an existing file is replaced only with ``overwrite``; missing parent folders
    are made, and removed again on failure), or a text stream, written in one piece at the end.
    On any error or interruption nothing is left behind.
    """
    if not isinstance(out, (str, os.PathLike)):
        buffer = io.StringIO()
        counts = _write_rows(results, buffer, threshold)
        out.write(buffer.getvalue())
        out.flush()
        return counts
    destination = check_output(out, overwrite=overwrite)
    made = _make_parents(destination.parent)
    try:
        with atomic_path(destination, suffix=".part") as staging:
            with staging.open("w", newline="", encoding="utf-8") as stream:
                counts = _write_rows(results, stream, threshold)
            check_output(destination, overwrite=overwrite)  # appeared while predicting?
    except BaseException:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return counts


def predict(
    model: Any,
    inputs: Sequence[InputPath | Source],
    out: InputPath | TextIO,
    *,
    tta: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 256,
    fit: FitMode = "error",
    overwrite: bool = False,
    calibration: bool = True,
    progress: Callable[[int], None] | None = None,
    normalise: Normalise | None = None,
) -> PredictionSummary:
    """Predict every patch of ``inputs`` and write the CSV to ``out`` (a path or a stream).

    ``model`` is a loaded Keras model or the path of a saved one (loaded with
    :func:`pcam.model.architectures.load_model` after the inputs and the output are checked,
    with its calibration file unless ``calibration`` is false), or an exported model: a
    SavedModel folder, an ``.onnx`` or a ``.tflite`` file, or an opened
    :class:`pcam.serve.artifacts.Artifact`, run in its own runtime without Keras (its
    calibration is built in, so ``calibration`` must stay true). ``normalise`` changes every
    batch of patches before the model sees them (a
    :class:`pcam.stain.macenko.StainNormaliser`, say). Returns a :class:`PredictionSummary`,
    which says whether the probabilities were calibrated and how the patches were normalised.
    """
    if not 0.0 <= threshold <= 1.0:
        raise InvalidArgumentError("threshold", "a probability in [0, 1]", threshold)
    sources = _as_sources(inputs)
    if isinstance(out, (str, os.PathLike)):
        given = [source.path for source in sources]
        check_output(out, overwrite=overwrite, inputs=[*given, model] if _is_path(model) else given)
    model = load_for_serving(model, calibration=calibration)

    started = time.perf_counter()
    fitted = 0

    def counted() -> Iterator[PatchBatch]:
        nonlocal fitted
        for batch in iter_patches(sources, fit=fit, batch_size=batch_size):
            fitted += sum(note is not None for note in batch.notes)
            yield batch

    results = predict_patches(model, counted(), tta=tta, progress=progress, normalise=normalise)
    patches, tumour = write_predictions_csv(results, out, threshold=threshold, overwrite=overwrite)
    return PredictionSummary(
        patches=patches,
        tumour=tumour,
        fitted=fitted,
        seconds=time.perf_counter() - started,
        out=str(out) if isinstance(out, (str, os.PathLike)) else "-",
        tta=tta,
        threshold=threshold,
        probabilities=describe_probabilities(model),
        stain_normalisation=_describe_normalise(normalise),
    )


def load_for_serving(model: Any, *, calibration: bool = True) -> Any:
    """A model to predict with: an exported one opened in its runtime, a ``.keras`` one loaded.

    Anything else (an already loaded model or :class:`pcam.serve.artifacts.Artifact`) is
    returned as it is. An exported model carries the calibration it was exported with, so
    ``calibration=False`` is refused for one, with the way to get uncalibrated probabilities.
    """
    if not isinstance(model, (str, os.PathLike)):
        return model
    from pcam.serve.artifacts import is_artifact, open_artifact

    if is_artifact(Path(model)):
        if not calibration:
            raise InvalidArgumentError(
                "--no-calibration",
                "a .keras model (an exported model has its calibration built in; export one "
                "with pcam export --no-calibration for uncalibrated probabilities)",
                str(model),
            )
        return open_artifact(Path(model))
    from pcam.model.architectures import load_model

    return load_model(model, calibration=calibration)


def serving_probabilities(
    model: Any, images: npt.NDArray[np.uint8], *, tta: bool = False
) -> npt.NDArray[np.float64]:
    """Tumour probabilities ``[B]`` from a Keras model or an exported one in its runtime."""
    from pcam.serve.artifacts import Artifact

    if isinstance(model, Artifact):  # an exported model, in its own runtime (no Keras)
        return model.probabilities(images, tta=tta)
    from pcam.model.inference import tumour_probabilities

    return tumour_probabilities(model, images, tta=tta)


def describe_probabilities(model: Any) -> str:
    """What the model's probabilities are (calibrated or not), for a summary line."""
    from pcam.serve.artifacts import Artifact

    if isinstance(model, Artifact):
        return model.describe()
    from pcam.model.temperature import calibration_of

    return calibration_of(model).describe()


# -- internals -------------------------------------------------------------------------------------


def _describe_normalise(normalise: Normalise | None) -> str | None:
    """What ``normalise`` does, for the summary line: its ``describe()`` when it has one."""
    if normalise is None:
        return None
    describe = getattr(normalise, "describe", None)
    return str(describe()) if callable(describe) else f"patches changed by {normalise!r}"


def _is_path(value: object) -> bool:
    """Whether ``value`` names a file (rather than being a loaded model or a stream)."""
    return isinstance(value, (str, os.PathLike))


def _as_sources(inputs: Sequence[InputPath | Source]) -> list[Source]:
    """Sources as they are, paths resolved by :func:`resolve_inputs`, in order."""
    if not inputs:
        return resolve_inputs([])
    sources: list[Source] = []
    for entry in inputs:
        sources.extend([entry] if isinstance(entry, Source) else resolve_inputs([entry]))
    return sources


def _h5_length(path: Path) -> int:
    """The number of patches of a PCam image file, after checking it like ``open_split`` does."""
    from pcam.data.split import inspect_array_file

    stem = path.name.lower()
    for kind, what in (("_y.h5", "labels"), ("_mask.h5", "tumour masks")):
        if stem.endswith(kind):
            raise LayoutError(
                path,
                "a PCam image file (*_x.h5)",
                f"the PCam {what} file",
                f"pass {path.name[: -len(kind)]}_x.h5 instead",
            )
    info = inspect_array_file(path, "x", layout.IMAGE_SHAPE, np.dtype(np.uint8), "images")
    return int(info.shape[0])


def _folder_error(folder: Path, error: MissingFileError) -> MissingFileError:
    """The folder error, with a pointer to the PCam image files when the folder has some."""
    h5 = sorted(p.name for p in folder.glob("*_x.h5"))
    if not h5:
        return error
    return MissingFileError(
        folder,
        "96x96 patches as PNG, JPEG or TIFF files",
        f"to predict a PCam split name its image file, such as {folder / h5[0]}",
        found="no image files but PCam files in this folder",
    )


def _pieces(sources: Sequence[Source], fit: FitMode, batch_size: int) -> Iterator[PatchBatch]:
    """Patches source by source: one per image, HDF5 files in slices of ``batch_size`` rows."""
    import h5py

    from pcam.data.split import read_rows

    for source in sources:
        name = str(source.path)
        if source.kind == "image":
            patch, note = decode_patch(source.path, fit=fit)
            yield PatchBatch(patch[np.newaxis], [name], [None], [note])
            continue
        with h5py.File(source.path, "r") as handle:
            dataset = handle["x"]
            for start in range(0, source.count, batch_size):
                stop = min(start + batch_size, source.count)
                images = np.asarray(read_rows(dataset, source.path, start, stop), dtype=np.uint8)
                rows = list(range(start, stop))
                yield PatchBatch(images, [name] * len(rows), list(rows), [None] * len(rows))


def _join(pieces: Sequence[PatchBatch]) -> PatchBatch:
    if len(pieces) == 1:
        return pieces[0]
    return PatchBatch(
        np.concatenate([piece.images for piece in pieces]),
        [name for piece in pieces for name in piece.sources],
        [index for piece in pieces for index in piece.indices],
        [note for piece in pieces for note in piece.notes],
    )


def _split(batch: PatchBatch, size: int) -> tuple[PatchBatch, PatchBatch]:
    def part(chosen: slice) -> PatchBatch:
        return PatchBatch(
            batch.images[chosen], batch.sources[chosen], batch.indices[chosen], batch.notes[chosen]
        )

    return part(slice(0, size)), part(slice(size, None))


def _write_rows(
    results: Iterable[tuple[PatchBatch, npt.NDArray[np.float64]]],
    stream: TextIO,
    threshold: float,
) -> tuple[int, int]:
    """Write the header and a row per patch; the source goes through :func:`csv_text`.

    Python's CSV writer quotes a cell holding a newline but not one holding a lone carriage
    return (with newline line endings), which readers take for a line break: a row whose
    source holds one is written with every cell quoted.
    """
    writer = csv.writer(stream, lineterminator="\n")
    quoted = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(COLUMNS)
    patches = tumour = 0
    # a signal is noted while a batch is predicted, and raised here between two batches
    with deferring():
        for batch, probabilities in results:
            raise_if_stopped()
            for source, index, probability in zip(
                batch.sources, batch.indices, probabilities.tolist(), strict=True
            ):
                is_tumour = probability >= threshold
                cell = csv_text(source)
                (quoted if "\r" in cell else writer).writerow(
                    (
                        cell,
                        "" if index is None else index,
                        repr(float(probability)),
                        "tumour" if is_tumour else "normal",
                    )
                )
                patches += 1
                tumour += is_tumour
    return patches, tumour


def csv_text(text: str) -> str:
    r"""A text cell made safe to write as UTF-8 CSV and to open in a spreadsheet.

    A string that UTF-8 cannot encode (a file name with bytes that are not UTF-8, which Python
    holds as surrogates) gets those bytes as ``\xNN`` escapes: ``bad\xff.png``. A cell that
    starts with one of :data:`FORMULA_STARTS` gets a leading ``'``, so a spreadsheet shows it as
    text instead of running it (``'=cmd|calc.png``). Anything else is returned unchanged.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _escape_undecodable(text)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _escape_undecodable(text: str) -> str:
    r"""``text`` with what UTF-8 cannot encode shown as backslash escapes.

    A file name Python decoded with ``surrogateescape`` gets its original bytes back, escaped
    as ``\xNN``; any other lone surrogate is escaped as ``\udNNN``.
    """
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # not a surrogate-escaped file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _make_parents(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; returns those made, outermost first."""
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    if current.exists() and not current.is_dir():
        raise OutputPathError(current, "a file in the way")
    for made in reversed(missing):
        try:
            made.mkdir()
        except OSError:
            raise OutputPathError(made, "a place this user cannot make a folder in") from None
    return list(reversed(missing))


def _plural(number: int, noun: str) -> str:
    """``1 patch``, ``2 patches``, ``2 images``."""
    plural = noun + ("es" if noun.endswith("ch") else "s")
    return f"{number:,} {noun if number == 1 else plural}"
