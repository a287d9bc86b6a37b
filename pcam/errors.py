"""Errors raised for bad PCam input.

Every message is one line that says what was expected, what was found, where, and what to do, so
the command line can print it as it is, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message, or its class name when it has none.

    With ``limit``, a longer line is cut to ``limit`` characters, ending in ``...``.
    """
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    if limit is not None and len(line) > limit:
        return line[: max(0, limit - 3)] + "..."
    return line


class PCamError(Exception):
    """Base class of every error this package raises for bad user input."""


class UnknownSplitError(PCamError, ValueError):
    """A split name that PCam does not have."""

    def __init__(self, split: str, known: tuple[str, ...]) -> None:
        super().__init__(
            f"unknown split {split!r}: expected one of {', '.join(known)}; pass one of those names"
        )


class MissingFileError(PCamError, FileNotFoundError):
    """A file or directory the split needs is not there, or something else is in its place."""

    def __init__(self, path: Path, what: str, hint: str, found: str = "no such file") -> None:
        super().__init__(f"{path}: expected {what}, found {found}; {hint}")


class OutputPathError(PCamError, OSError):
    """A place to write output that is not a writable directory."""

    def __init__(self, path: Path, found: str) -> None:
        super().__init__(
            f"{path}: expected a directory to write PCam files into, found {found}; "
            "choose another path"
        )


class ExpectedFoundError(PCamError):
    """The common form: ``WHERE: expected WHAT, found WHAT; WHAT TO DO``."""

    def __init__(self, where: object, expected: str, found: str, hint: str) -> None:
        super().__init__(f"{where}: expected {expected}, found {found}; {hint}")


class UnreadableFileError(ExpectedFoundError, OSError):
    """A file exists but is not a readable HDF5 (or CSV) file."""

    def __init__(self, path: Path, expected: str, found: str, hint: str) -> None:
        super().__init__(path, expected, found, hint)


class LayoutError(ExpectedFoundError, ValueError):
    """A dataset key, shape or dtype differs from the PCam layout."""

    def __init__(self, path: Path, expected: str, found: str, hint: str) -> None:
        super().__init__(path, expected, found, hint)


class LengthMismatchError(PCamError, ValueError):
    """The images and labels of one split hold different numbers of patches."""

    def __init__(
        self, x_path: Path, x_len: int, other_path: Path, other_len: int, noun: str = "labels"
    ) -> None:
        super().__init__(
            f"{x_path} holds {x_len} patches but {other_path} holds {other_len} {noun}: expected "
            "the same number in both; the files are from different splits or one is incomplete"
        )


class LabelValueError(PCamError, ValueError):
    """A label file holds values other than 0 and 1."""

    def __init__(self, path: Path, bad_values: list[int], first_index: int) -> None:
        shown = ", ".join(str(v) for v in bad_values[:5])
        super().__init__(
            f"{path}: expected labels 0 or 1, found {shown} (first at index {first_index}); "
            "the file is not a PCam label file or is corrupt"
        )


class EmptySplitError(PCamError, ValueError):
    """A split with no patches."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path}: expected at least one patch, found 0; write or download the split again"
        )


class InvalidArgumentError(PCamError, ValueError):
    """An argument outside its allowed range (batch size, shard index, sizes ...)."""

    def __init__(self, name: str, expected: str, found: object) -> None:
        super().__init__(f"{name}: expected {expected}, found {found!r}")


class OutputExistsError(PCamError, FileExistsError):
    """A command would overwrite files the user did not ask to replace."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path}: expected a new or empty place to write, found existing files; "
            "choose another directory or pass --overwrite"
        )


class DownloadError(ExpectedFoundError, OSError):
    """A download failed (no connection, an HTTP error) or what arrived is not the expected file."""

    def __init__(self, url: str, expected: str, found: str, hint: str) -> None:
        super().__init__(url, expected, found, hint)


class NoGPUError(PCamError, RuntimeError):
    """A run that asked for a GPU (``--require-gpu``) found none visible to TensorFlow."""

    def __init__(self) -> None:
        super().__init__(
            "expected a GPU visible to TensorFlow, found none "
            "(tf.config.list_physical_devices('GPU') is empty); check the driver and CUDA "
            "libraries (nvidia-smi, pip install 'tensorflow[and-cuda]'), or drop --require-gpu"
        )


class UnsafeOutputError(PCamError, FileExistsError):
    """An output place that pcam must not write into or replace: it holds files pcam did not write.

    ``--overwrite`` replaces only what the project itself wrote (a folder with pcam's marker file
    and nothing else in it); the current directory, a folder holding an input, and a folder with
    anyone else's files are never replaced.
    """

    def __init__(self, path: Path, expected: str, found: str) -> None:
        super().__init__(
            f"{path}: expected {expected}, found {found}; choose another output path "
            "(pcam never deletes files it did not write)"
        )


class OutputNotWritableError(PCamError, OSError):
    """An output place the operating system will not let this user write into."""

    def __init__(self, path: Path, found: str) -> None:
        super().__init__(
            f"{path}: expected a folder this user can write into, found {found}; "
            "choose another output path or fix its permissions"
        )


class DamagedDataError(UnreadableFileError):
    """Stored data that cannot be read back: a damaged chunk of a chunked or compressed file.

    ``first_index`` is the first row (patch, label or mask) that cannot be read, or ``None`` when
    it could not be found (the rows read on a second try). ``rows`` is ``(start, stop)`` of the
    damaged chunk (of the one unreadable row in a file that is not chunked), or of the rows being
    read when ``first_index`` is ``None``.
    """

    def __init__(
        self,
        path: Path,
        noun: str,
        rows: tuple[int, int],
        first_index: int | None,
        reason: str,
        hint: str,
        *,
        chunked: bool = True,
    ) -> None:
        self.first_index = first_index
        self.rows = rows
        start, stop = rows
        if first_index is None:
            found = f"damaged data while reading {noun} {start}-{stop - 1} ({reason})"
        else:
            where = f"a damaged chunk at {noun} {start}-{stop - 1}" if chunked else "damaged data"
            found = f"{where} (first unreadable index {first_index}: {reason})"
        super().__init__(path, f"readable {noun}", found, hint)
