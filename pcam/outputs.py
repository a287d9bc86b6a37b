"""Where pcam writes, and the one rule for replacing: only what pcam itself wrote.

Every folder pcam writes as a whole (a report, an explanation, a run, a full check, a demo) holds
a marker file, :data:`MARKER`, that names its kind and, for the folders written in one piece, the
entries pcam put there. ``--overwrite`` replaces a folder only when the marker says pcam wrote it,
as the same kind of output, and nothing else has been put in it; it never replaces the current
directory, a folder holding it, or a folder holding one of the command's inputs. The messages
say which of these it found.

A folder written in one piece is filled under a hidden staging name beside its destination and
renamed into place once complete; the old one is moved aside first and removed only after the new
one is in place, so a failure at any point leaves the old output whole. A JSON record is written
to a hidden temporary file beside it and renamed over it. Every output is checked for
writability before any long work starts (:func:`check_writable`), and :func:`warn_if_low_space`
warns before a job whose output may not fit.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pcam
from pcam.errors import (
    OutputExistsError,
    OutputNotWritableError,
    OutputPathError,
    UnsafeOutputError,
)

MARKER = ".pcam-output.json"
"""The file that marks a folder as pcam's output: ``{"kind": ..., "files": [...], ...}``."""

PathLike = str | os.PathLike[str]


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker record of ``folder``, or ``None`` when it has none (or an unreadable one)."""
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("kind"), str) else None


def write_marker(folder: Path, kind: str, files: Iterable[str] | None = None) -> None:
    """Mark ``folder`` as pcam's output of ``kind``, listing ``files`` when given (atomically)."""
    record: dict[str, Any] = {"kind": kind, "pcam_version": pcam.__version__}
    if files is not None:
        record["files"] = sorted(set(files) - {MARKER})
    write_json_atomically(folder / MARKER, record)


def check_writable(path: Path) -> None:
    """Raise unless a file can be made in ``path``, or where ``path`` would be made.

    ``path`` is a folder; when it does not exist yet, the nearest existing folder above it must
    be writable and nothing on the way may be a file. The check makes (and removes) a small file,
    so it sees what the operating system will do: permissions, read-only mounts, ACLs.
    """
    existing = path
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise OutputPathError(existing, "a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(existing, "a file in the way")
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".pcam-write-check-", dir=existing)
    except PermissionError:
        raise OutputNotWritableError(existing, "a folder without write permission") from None
    except OSError as error:
        raise OutputNotWritableError(existing, _os_reason(error)) from None
    os.close(descriptor)
    os.unlink(probe)


def _foreign_files(names: list[str]) -> str:
    """``files pcam did not write (a, b, c, ...)``: the first three of ``names``, sorted."""
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"files pcam did not write ({shown})"


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: ``a report``, ``an explanation``."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _os_reason(error: OSError) -> str:
    """A short description of an operating-system refusal, for the ``found ...`` part."""
    return (error.strerror or type(error).__name__).lower()


def refuse_unsafe_replacement(
    destination: Path, kind: str, *, inputs: Iterable[PathLike] = ()
) -> None:
    """Raise :class:`UnsafeOutputError` unless ``--overwrite`` may replace ``destination``.

    It may when ``destination`` holds pcam's marker for ``kind`` and, for outputs that list their
    files, nothing else; and it is neither the current directory nor a folder above it, nor a
    folder holding (or being) one of ``inputs``.
    """
    expected = f"{_a(kind)} folder that pcam wrote"
    resolved = destination.resolve()
    here = Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        found = "the current directory" if resolved == here else "a folder above the current one"
        raise UnsafeOutputError(destination, expected, found)
    for item in inputs:
        source = Path(item).resolve()
        if source == resolved or resolved in source.parents:
            raise UnsafeOutputError(destination, expected, f"the folder holding the input {item}")
    marker = read_marker(destination)
    if marker is None:
        raise UnsafeOutputError(destination, expected, f"a folder without pcam's {MARKER}")
    if marker["kind"] != kind:
        raise UnsafeOutputError(destination, expected, f"pcam's {marker['kind']} folder")
    listed = marker.get("files")
    if listed is None:
        return
    foreign = sorted(
        entry.name
        for entry in destination.iterdir()
        if entry.name != MARKER and entry.name not in listed
    )
    if foreign:
        raise UnsafeOutputError(destination, expected, _foreign_files(foreign))


def refuse_existing_directory(
    destination: Path, *, overwrite: bool, kind: str = "report", inputs: Iterable[PathLike] = ()
) -> None:
    """Raise unless ``destination`` may receive a new ``kind`` output written in one piece.

    It may when it is new, or an empty folder, or (with ``overwrite``) a folder that
    :func:`refuse_unsafe_replacement` allows; and the folder it would be made in is writable.
    """
    if destination.exists() and not destination.is_dir():
        raise OutputPathError(destination, "a file")
    if destination.is_dir() and any(destination.iterdir()):
        if not overwrite:
            raise OutputExistsError(destination)
        refuse_unsafe_replacement(destination, kind, inputs=inputs)
    check_writable(destination.parent)


@contextmanager
def staged_directory(destination: Path, kind: str = "report") -> Iterator[Path]:
    """Yield a staging folder that replaces ``destination`` once the block succeeds.

    The staging folder gets pcam's marker for ``kind`` listing what the block wrote. An existing
    ``destination`` (already allowed by :func:`refuse_existing_directory`) is moved aside, the
    staging folder renamed into its place, and only then is the old one removed. On any error the
    staging folder goes and ``destination`` is as it was.
    """
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputPathError(destination.parent, "a file in the way") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; results are for reading
    try:
        yield staging
        write_marker(staging, kind, (entry.name for entry in staging.iterdir()))
        _replace_directory(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_directory(new: Path, destination: Path) -> None:
    """Rename ``new`` to ``destination``; an existing one is moved aside and removed after."""
    if not destination.exists():
        new.replace(destination)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
    old.rmdir()  # a unique free name to move the old output to
    destination.replace(old)
    try:
        new.replace(destination)
    except BaseException:
        old.replace(destination)
        raise
    shutil.rmtree(old, ignore_errors=True)


def claim_directory(
    folder: Path, kind: str, *, tolerated: Callable[[str], bool] = lambda name: False
) -> None:
    """Make ``folder`` pcam's ``kind`` folder, or accept it when pcam already made it so.

    A new folder, or an empty one, gets the marker. A folder with the marker of another kind, or
    one holding files without any marker (except names ``tolerated`` says may appear there
    before the marker, such as other workers' folders), is refused: pcam would mix its files with
    someone else's.
    """
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(folder, "a file")
    expected = f"a new or empty folder, or {_a(kind)} folder that pcam wrote"
    marker = read_marker(folder) if folder.is_dir() else None
    if marker is not None and marker["kind"] != kind:
        raise UnsafeOutputError(folder, expected, f"pcam's {marker['kind']} folder")
    if marker is None and folder.is_dir():
        foreign = sorted(e.name for e in folder.iterdir() if not tolerated(e.name))
        if foreign:
            raise UnsafeOutputError(folder, expected, _foreign_files(foreign))
    check_writable(folder)
    if marker is None:
        make_folder(folder)
        write_marker(folder, kind)


def written_files(folder: Path, kind: str) -> set[str]:
    """The names of the files pcam recorded writing into ``folder`` as ``kind`` (may be empty)."""
    marker = read_marker(folder)
    if marker is None or marker["kind"] != kind:
        return set()
    return set(marker.get("files", []))


def record_written(
    folder: Path, kind: str, names: Iterable[str], *, removed: Iterable[str] = ()
) -> None:
    """Add ``names`` to the files pcam records writing into ``folder`` as ``kind``.

    For folders pcam shares with other files (a data folder), where ``--overwrite`` replaces a
    file only when it is on this list; ``removed`` are files pcam deleted, dropped from the list
    (a file of that name appearing later is someone else's). A folder marked as another kind of
    output is refused.
    """
    marker = read_marker(folder)
    if marker is not None and marker["kind"] != kind:
        raise UnsafeOutputError(
            folder, f"a folder for {kind} files", f"pcam's {marker['kind']} folder"
        )
    write_marker(folder, kind, (written_files(folder, kind) - set(removed)) | set(names))


def make_folder(folder: Path) -> None:
    """``mkdir -p`` with one-line errors for a file in the way."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputPathError(folder, "a file in the way") from None


@contextmanager
def atomic_path(path: Path, *, suffix: str = "", publish: bool = True) -> Iterator[Path]:
    """A hidden temporary sibling of ``path`` to write, renamed over ``path`` at the block's end.

    The temporary file is ``.<name>.partial-<pid>`` (``.<stem>.partial-<pid><suffix>`` when a
    writer insists on a ``suffix`` such as ``.keras``), the name
    :func:`pcam.model.train.remove_leftovers` recognises. On any failure (a full disk, a signal) it
    is removed and ``path`` keeps its earlier content; so it is when ``publish`` is false (a
    worker that writes but does not keep).
    """
    if suffix and path.name.endswith(suffix):
        name = f".{path.name[: -len(suffix)]}.partial-{os.getpid()}{suffix}"
    else:
        name = f".{path.name}.partial-{os.getpid()}{suffix}"
    temporary = path.with_name(name)
    try:
        yield temporary
        if publish:
            temporary.replace(path)
    finally:
        with suppress(OSError):
            temporary.unlink()


def write_json_atomically(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2, default=str) + "\n")


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an ``OSError`` raised in the block without a file name ``path`` as its file name.

    Libraries that write through handles (h5py, zipfile) report a full disk without saying
    which file; the one-line message should.
    """
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def free_bytes(path: Path) -> int | None:
    """Free space for this user where ``path`` is (or would be made); ``None`` if unknown."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def warn_if_low_space(path: Path, needed: int, what: str, *, command: str = "pcam") -> bool:
    """Print one warning line when ``path``'s disk has less than ``needed`` bytes free.

    ``needed`` is a rough estimate of ``what`` will write. Returns whether it warned.
    """
    free = free_bytes(path)
    if free is None or free >= needed:
        return False
    print(
        f"{command}: warning: {path}: {what} needs about {human_size(needed)}, found "
        f"{human_size(free)} free; free some space, or the run may stop when the disk fills "
        "(nothing half-written is left, and the same command resumes or starts again)",
        file=sys.stderr,
    )
    return True


def human_size(num_bytes: int) -> str:
    """Bytes as B, kB, MB or GB (powers of 1000, as disk sizes are quoted)."""
    size = float(num_bytes)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"
