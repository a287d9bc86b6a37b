"""Download the PCam files from Zenodo record 2546921, hash-checked and resumable.

Every file goes through the same steps, and none ever sits under its final name unless it verified:

1. ``<name>.gz.part`` is fetched with ``urllib.request``; if a ``.part`` is already there (a cut
   connection, a killed run) the request asks for the rest with ``Range: bytes=N-``. The md5 is
   computed while the bytes stream in. A cut connection is retried (resumed) a few times.
2. Only when the md5 matches the table is ``.part`` renamed to ``<name>.gz``.
3. The ``.gz`` is unpacked with ``gzip.open`` in 1 MiB chunks (constant memory) into
   ``<name>.part``, whose md5 is checked against the table before it is renamed to ``<name>``.
   The ``.gz`` is then deleted unless ``keep_gz``. The meta CSVs are served uncompressed and
   skip this step.

A wrong md5 that equals the md5 of *another* file in the table means the mirror swapped two
files, and the error says which. A 200 answer whose body is an HTML page (login page, error page)
is caught on its first bytes, before anything is written.

Why not a library: ``pooch`` (the well-kept choice for hash-checked downloads) downloads to a
temporary file and moves it only after the hash check, which is what we want, but it does not
resume: a cut connection on the 6.4 GB train file starts again from byte 0. Resuming is the
main requirement here, and the code that does it (a ``Range`` header, append, stream md5) is
short, so it is written here on the standard library, with no new dependency.

The checksum table is data (``PCAM_FILES``), corrected for the valid/test swap in the official
README; tests pass their own table. ``$PCAM_DOWNLOAD_URL`` replaces the Zenodo base URL (mirror).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

from pcam import layout
from pcam.errors import DownloadError, OutputPathError, UnknownSplitError
from pcam.outputs import check_writable, warn_if_low_space

ZENODO_URL: Final = "https://zenodo.org/records/2546921/files"
"""Base URL of the official PCam files; a file is at ``<base>/<file>?download=1``."""

URL_ENV: Final = "PCAM_DOWNLOAD_URL"
"""Environment variable that replaces :data:`ZENODO_URL` (a mirror)."""

CHUNK: Final = 1 << 20
"""Bytes read and written at a time, for the download and for unpacking."""

RETRIES: Final = 3
"""How many times a cut connection is resumed within one call before giving up."""

_MIRROR_HINT: Final = f"check the network, or set {URL_ENV} to a working mirror"


@dataclass(frozen=True)
class PCamFile:
    """One file of the download: its final name, its split and its checksums."""

    name: str
    """Final file name in the destination, e.g. ``camelyonpatch_level_2_split_valid_x.h5``."""
    split: str
    """Split the file belongs to."""
    served_md5: str
    """md5 of the file as served (the ``.gz`` for HDF5 files)."""
    md5: str | None = None
    """md5 of the unpacked file; ``None`` when the file is served uncompressed."""

    @property
    def gzipped(self) -> bool:
        """Whether the file is served gzipped (``<name>.gz``) and must be unpacked."""
        return self.md5 is not None

    @property
    def served_name(self) -> str:
        """File name on the server."""
        return self.name + ".gz" if self.gzipped else self.name


def _h5(split: str, kind: layout.ArrayKind, gz_md5: str, h5_md5: str) -> PCamFile:
    return PCamFile(layout.h5_name(split, kind), split, gz_md5, h5_md5)


PCAM_FILES: Final[tuple[PCamFile, ...]] = (
    _h5("train", "x", "1571f514728f59376b705fc836ff4b63", "01844da899645b4d6f84946d417ba453"),
    _h5("train", "y", "35c2d7259d906cfc8143347bb8e05be7", "0781386bf6c2fb62d58ff18891466aca"),
    _h5("valid", "x", "d5b63470df7cfa627aeec8b9dc0c066e", "81cf9680f1724c40673f10dc88e909b1"),
    _h5("valid", "y", "2b85f58b927af9964a4c15b8f7e8f179", "94d8aacc249253159ce2a2e78a86e658"),
    _h5("test", "x", "d8c2d60d490dbd479f8199bdfa0cf6ec", "2614b2e6717d6356be141d9d6dbfcb7e"),
    _h5("test", "y", "60a7035772fbdb7f34eb86d4420cf66a", "11ed647efe9fe457a4eb45df1dba19ba"),
    PCamFile(layout.meta_name("train"), "train", "5a3dd671e465cfd74b5b822125e65b0a"),
    PCamFile(layout.meta_name("valid"), "valid", "67589e00a4a37ec317f2d1932c7502ca"),
    PCamFile(layout.meta_name("test"), "test", "3455fd69135b66734e1008f3af684566"),
)
"""The corrected checksum table of Zenodo record 2546921 (valid and test rows un-swapped)."""

Progress = Callable[[str, int, "int | None"], None]
"""``progress(what, bytes_done, bytes_total_or_None)``, called as bytes arrive or unpack."""


@dataclass(frozen=True)
class Downloaded:
    """What :func:`download` did with one file."""

    path: Path
    """Final path of the verified file."""
    status: Literal["downloaded", "present"]
    """``present``: a verified file was already there and was kept."""


def base_url_from_env() -> str:
    """``$PCAM_DOWNLOAD_URL`` if set and not empty, else :data:`ZENODO_URL`."""
    return os.environ.get(URL_ENV) or ZENODO_URL


def file_url(base_url: str, entry: PCamFile) -> str:
    """URL of one file: ``<base>/<served name>?download=1``."""
    return f"{base_url.rstrip('/')}/{entry.served_name}?download=1"


def md5_of(path: Path) -> str:
    """md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    dest: Path,
    splits: Iterable[str] = layout.SPLITS,
    *,
    base_url: str | None = None,
    table: Sequence[PCamFile] = PCAM_FILES,
    progress: Progress | None = None,
    overwrite: bool = False,
    keep_gz: bool = False,
    timeout: float = 60.0,
) -> list[Downloaded]:
    """Download, verify and unpack the files of ``splits`` into ``dest``.

    ``base_url`` defaults to ``$PCAM_DOWNLOAD_URL`` or Zenodo. A final file already present is
    checked and kept (status ``present``) unless ``overwrite``; one present with the wrong md5 is
    an error. ``timeout`` (seconds) bounds each connect and read. Raises :class:`DownloadError`
    with a one-line message on any failure; a partial ``.part`` is kept so the next call resumes.
    """
    dest = Path(dest)
    base = base_url if base_url is not None else base_url_from_env()
    check_base_url(base)
    wanted = set(splits)
    for split in wanted:
        if split not in layout.SPLITS:
            raise UnknownSplitError(split, layout.SPLITS)
    if dest.exists() and not dest.is_dir():
        raise OutputPathError(dest, "a file")
    check_writable(dest)  # before any byte is fetched
    needed = sum(_unpacked_bytes(split) for split in wanted)
    warn_if_low_space(dest, 2 * needed, "downloading and unpacking", command="pcam download")
    dest.mkdir(parents=True, exist_ok=True)
    done: list[Downloaded] = []
    for entry in (e for e in table if e.split in wanted):
        done.append(_one(dest, entry, base, table, progress, overwrite, keep_gz, timeout))
    return done


def check_base_url(base: str) -> None:
    """Raise a one-line :class:`DownloadError` unless ``base`` is an http(s) or file URL.

    An http(s) URL needs a host, a file URL a path.
    """
    parts = urllib.parse.urlsplit(base)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "file"):
        found = f"the scheme {scheme!r}" if scheme else "no scheme"
    elif scheme == "file":
        found = "" if parts.path else "no path"
    else:
        found = "" if parts.netloc else "no host"
    if found:
        raise DownloadError(
            base,
            "an http://, https:// or file:// base URL",
            found,
            f"fix ${URL_ENV} (or unset it to download from Zenodo)",
        )


def _unpacked_bytes(split: str) -> int:
    """The size of a split's image file once unpacked (the labels and metadata are small)."""
    return layout.OFFICIAL_SIZES[split] * layout.PATCH_SIZE * layout.PATCH_SIZE * 3


def _one(
    dest: Path,
    entry: PCamFile,
    base: str,
    table: Sequence[PCamFile],
    progress: Progress | None,
    overwrite: bool,
    keep_gz: bool,
    timeout: float,
) -> Downloaded:
    final = dest / entry.name
    url = file_url(base, entry)
    final_md5 = entry.md5 if entry.gzipped else entry.served_md5
    assert final_md5 is not None
    if final.exists() and not overwrite:
        found = md5_of(final)
        if found == final_md5:
            return Downloaded(final, "present")
        raise DownloadError(
            str(final),
            f"md5 {final_md5}",
            f"an existing file with md5 {found}",
            "pass --overwrite to replace it",
        )
    served = dest / entry.served_name
    if not (entry.gzipped and served.exists() and md5_of(served) == entry.served_md5):
        part = served.with_name(served.name + ".part")
        _fetch(url, part, entry, table, progress, timeout)
        part.replace(served)
    if entry.gzipped:
        _unpack(served, final, entry, table, progress)
        if not keep_gz:
            served.unlink()
    return Downloaded(final, "downloaded")


class _Partial:
    """A ``.part`` file being downloaded, with the running md5 of the bytes it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.md5(usedforsecurity=False)
        self.size = 0
        if path.exists():  # left by an earlier run: hash what is there, then append
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    self.digest.update(chunk)
                    self.size += len(chunk)

    def restart(self) -> None:
        """Forget the bytes held (the server sent the whole file again)."""
        self.digest = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.path.write_bytes(b"")

    def append(self, out: IO[bytes], chunk: bytes) -> None:
        """Write ``chunk`` at the end and add it to the md5."""
        out.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)


def _fetch(
    url: str,
    part: Path,
    entry: PCamFile,
    table: Sequence[PCamFile],
    progress: Progress | None,
    timeout: float,
) -> None:
    """Fetch ``url`` into ``part``, resuming it, and check its md5; delete it if wrong."""
    partial = _Partial(part)
    for attempt in range(RETRIES + 1):
        try:
            _fetch_once(url, partial, entry.served_name, progress, timeout)
            break
        except DownloadError:
            raise
        except (http.client.IncompleteRead, ConnectionResetError, TimeoutError) as error:
            if attempt == RETRIES:
                raise DownloadError(
                    url,
                    f"the whole of {entry.served_name}",
                    f"the connection cut {RETRIES + 1} times ({_reason(error)}), "
                    f"{partial.size} bytes kept in {part}",
                    "run the same command again to resume",
                ) from error
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(
                url,
                f"the file {entry.served_name}",
                f"an error while downloading into {part} ({_reason(error)})",
                "check the network and the free disk space, then run the same command again",
            ) from error
    found = partial.digest.hexdigest()
    if found != entry.served_md5:
        part.unlink()
        raise _bad_md5(url, entry, entry.served_name, entry.served_md5, found, table)


def _fetch_once(
    url: str, partial: _Partial, what: str, progress: Progress | None, timeout: float
) -> None:
    start = partial.size
    request = urllib.request.Request(url, headers={"User-Agent": "pcam-download"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # the .part already holds the whole file
            return
        raise DownloadError(
            url, f"the file {what}", f"HTTP {error.code} {error.reason}", _MIRROR_HINT
        ) from error
    except (urllib.error.URLError, OSError) as error:
        if isinstance(error, TimeoutError) or isinstance(
            getattr(error, "reason", None), TimeoutError
        ):
            raise DownloadError(
                url, "an answer", f"none within {timeout:g} s (timed out)", _MIRROR_HINT
            ) from error
        raise DownloadError(
            url, "an answer", f"no connection ({_reason(error)})", _MIRROR_HINT
        ) from error
    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {start}-"):
                raise DownloadError(
                    url,
                    f"the bytes from {start} on",
                    f"Content-Range {content_range!r}",
                    f"delete {partial.path} and run the same command again",
                )
        elif start:  # 200: the server ignored Range; start over
            partial.restart()
            start = 0
        total = start + int(length) if length else None
        first = response.read1(CHUNK)
        content_type = response.headers.get_content_type()
        if content_type == "text/html" or (start == 0 and first.lstrip()[:1] == b"<"):
            raise DownloadError(
                url,
                f"the file {what}",
                f"an HTML page ({content_type}, starts with {first[:40]!r})",
                "the server sent a web page (error or login page) instead of the data; open "
                f"the URL in a browser to see why, or set {URL_ENV} to a working mirror",
            )
        with partial.path.open("ab") as out:
            chunk = first
            while chunk:
                partial.append(out, chunk)
                if progress is not None:
                    progress(what, partial.size, total)
                chunk = response.read1(CHUNK)
        if total is not None and partial.size < total:  # the server closed the connection early
            raise http.client.IncompleteRead(b"", total - partial.size)


def _unpack(
    gz: Path, final: Path, entry: PCamFile, table: Sequence[PCamFile], progress: Progress | None
) -> None:
    """Unpack ``gz`` to ``final`` through ``<final>.part``, in constant memory, md5-checked."""
    part = final.with_name(final.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    try:
        with gzip.open(gz, "rb") as source, part.open("wb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(f"unpacking {entry.name}", done, None)
    except (OSError, EOFError, zlib.error) as error:
        part.unlink(missing_ok=True)
        raise DownloadError(
            str(gz), "a gzip file", f"unreadable data ({error})", "delete it and download again"
        ) from error
    found = digest.hexdigest()
    if found != entry.md5:
        part.unlink()
        assert entry.md5 is not None
        raise _bad_md5(str(gz), entry, entry.name, entry.md5, found, table)
    part.replace(final)


def _bad_md5(
    url: str,
    entry: PCamFile,
    name: str,
    expected: str,
    found: str,
    table: Sequence[PCamFile],
) -> DownloadError:
    """The error for a wrong md5: a swap when it matches another file of the table."""
    for other in table:
        if other.name == entry.name:
            continue
        for other_name, other_md5 in (
            (other.served_name, other.served_md5),
            (other.name, other.md5),
        ):
            if found == other_md5:
                return DownloadError(
                    url,
                    f"{name} (md5 {expected})",
                    f"another file: this is {other_name} (its md5 {found}), served under the name "
                    f"{name}: "
                    "the mirror swapped them",
                    f"report it to the mirror, or set {URL_ENV} to another one",
                )
    return DownloadError(
        url,
        f"{name} with md5 {expected}",
        f"md5 {found} (corrupt or incomplete data; removed)",
        "run the same command again; if it repeats, the server's copy is damaged",
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"host not found: {reason}"
    if isinstance(error, http.client.IncompleteRead):
        return f"{error.expected} bytes short"
    return str(reason if reason is not None else error) or type(error).__name__
