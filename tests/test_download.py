"""``pcam download`` against a real HTTP server on 127.0.0.1 serving small gzipped fixtures."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import pcam.data.download
from pcam import cli, layout
from pcam.data.download import URL_ENV, PCamFile, download
from pcam.errors import DownloadError, OutputPathError, UnknownSplitError
from pcam.testing import write_split


@dataclass
class _Plan:
    """What the server serves and how it misbehaves."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)  # cut once after N bytes
    cut_times: dict[str, int] = field(default_factory=dict)  # cut that many answers (default 1)
    html: bool = False
    page: tuple[str, bytes] | None = None  # (content type, body) sent with 200 for every file
    ignore_range: bool = False
    no_length: bool = False  # no Content-Length header: the body ends when the connection closes
    content_range: str | None = None  # replaces the Content-Range of a 206 ("": none sent)
    garbage: bytes | None = None  # sent instead of an HTTP answer, then the connection closes
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    agents: list[str | None] = field(default_factory=list)  # User-Agent of each request


class _Handler(http.server.BaseHTTPRequestHandler):
    plan: _Plan

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        ranged = self.headers.get("Range")
        self.plan.requests.append((name, ranged))
        self.plan.agents.append(self.headers.get("User-Agent"))
        if self.plan.garbage is not None:
            self.wfile.write(self.plan.garbage)
            self.close_connection = True
            return
        if self.plan.ignore_range:
            ranged = None
        page = self.plan.page
        if self.plan.html:
            page = (
                "text/html; charset=utf-8",
                b"<!DOCTYPE html><html><body>Service unavailable</body></html>",
            )
        if page is not None:
            self.send_response(200)
            self.send_header("Content-Type", page[0])
            self.send_header("Content-Length", str(len(page[1])))
            self.end_headers()
            self.wfile.write(page[1])
            return
        data = self.plan.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = int(ranged.removeprefix("bytes=").rstrip("-")) if ranged else 0
        if ranged and start >= len(data):  # as real servers do (RFC 9110)
            self.send_error(416)
            return
        body = data[start:]
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Type", "application/octet-stream")
        if not self.plan.no_length:
            self.send_header("Content-Length", str(len(body)))
        if ranged and self.plan.content_range is None:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        elif ranged and self.plan.content_range:
            self.send_header("Content-Range", self.plan.content_range)
        self.end_headers()
        cut = self.plan.cut_after.get(name)
        if cut is not None:
            times = self.plan.cut_times.get(name, 1) - 1
            self.plan.cut_times[name] = times
            if times <= 0:
                del self.plan.cut_after[name]
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@dataclass
class _Fixture:
    url: str
    plan: _Plan
    table: tuple[PCamFile, ...]
    originals: dict[str, bytes]


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture(scope="module")
def fixture_files(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, bytes], dict[str, bytes], tuple[PCamFile, ...]]:
    """Served bytes by served name, original bytes by final name, and their checksum table."""
    root = tmp_path_factory.mktemp("pcam-src")
    served: dict[str, bytes] = {}
    originals: dict[str, bytes] = {}
    table: list[PCamFile] = []
    for seed, split in enumerate(("valid", "test")):
        write_split(root, split, 8, seed=seed)
        for kind in ("x", "y"):
            name = layout.h5_name(split, kind)
            raw = (root / name).read_bytes()
            packed = gzip.compress(raw, mtime=0)
            originals[name] = raw
            served[name + ".gz"] = packed
            table.append(PCamFile(name, split, _md5(packed), _md5(raw)))
        meta = layout.meta_name(split)
        originals[meta] = served[meta] = (root / meta).read_bytes()
        table.append(PCamFile(meta, split, _md5(served[meta])))
    return served, originals, tuple(table)


@pytest.fixture
def server(
    fixture_files: tuple[dict[str, bytes], dict[str, bytes], tuple[PCamFile, ...]],
) -> Iterator[_Fixture]:
    served, originals, table = fixture_files
    plan = _Plan(files=dict(served))
    handler = type("Handler", (_Handler,), {"plan": plan})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield _Fixture(f"http://127.0.0.1:{httpd.server_address[1]}/files", plan, table, originals)
    finally:
        httpd.shutdown()
        httpd.server_close()


def _dead_url() -> str:
    """A URL on a port that was bound and closed: nothing listens there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/files"


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.suffix in (".part", ".gz"))


def test_success(server: _Fixture, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int | None]] = []
    results = download(
        tmp_path,
        ["valid"],
        base_url=server.url,
        table=server.table,
        progress=lambda *a: seen.append(a),
    )
    assert [r.status for r in results] == ["downloaded"] * 3
    for result in results:
        assert result.path.read_bytes() == server.originals[result.path.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        e.name for e in server.table if e.split == "valid"
    )
    assert seen
    assert seen[0][2] is not None


def test_resume_after_cut_connection(server: _Fixture, tmp_path: Path) -> None:
    name = layout.h5_name("valid", "x") + ".gz"
    cut = len(server.plan.files[name]) // 3
    server.plan.cut_after[name] = cut
    download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    hits = [r for n, r in server.plan.requests if n == name]
    assert hits == [None, f"bytes={cut}-"]
    path = tmp_path / layout.h5_name("valid", "x")
    assert path.read_bytes() == server.originals[path.name]
    assert _leftovers(tmp_path) == []


def test_resume_from_part_left_by_earlier_run(server: _Fixture, tmp_path: Path) -> None:
    name = layout.h5_name("valid", "y") + ".gz"
    (tmp_path / (name + ".part")).write_bytes(server.plan.files[name][:10])
    download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert (name, "bytes=10-") in server.plan.requests
    assert _leftovers(tmp_path) == []


def test_server_that_ignores_range_restarts(server: _Fixture, tmp_path: Path) -> None:
    name = layout.h5_name("valid", "y") + ".gz"
    (tmp_path / (name + ".part")).write_bytes(b"stale bytes from another file")
    server.plan.ignore_range = True
    download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    path = tmp_path / layout.h5_name("valid", "y")
    assert path.read_bytes() == server.originals[path.name]


def test_timeout(
    fixture_files: tuple[object, object, tuple[PCamFile, ...]], tmp_path: Path
) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/files"
        with pytest.raises(DownloadError, match="timed out"):
            download(tmp_path, ["valid"], base_url=url, table=fixture_files[2], timeout=0.2)


def test_corrupt_data(server: _Fixture, tmp_path: Path) -> None:
    name = layout.h5_name("valid", "x") + ".gz"
    data = bytearray(server.plan.files[name])
    data[len(data) // 2] ^= 0xFF
    server.plan.files[name] = bytes(data)
    with pytest.raises(DownloadError, match="corrupt") as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / layout.h5_name("valid", "x")).exists()
    assert _leftovers(tmp_path) == []


def test_swapped_files(server: _Fixture, tmp_path: Path) -> None:
    valid, test = layout.h5_name("valid", "y") + ".gz", layout.h5_name("test", "y") + ".gz"
    files = server.plan.files
    files[valid], files[test] = files[test], files[valid]
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    message = str(caught.value)
    assert f"this is {test}" in message
    assert f"served under the name {valid}" in message
    assert "swapped" in message
    assert "\n" not in message
    assert not (tmp_path / layout.h5_name("valid", "y")).exists()


def test_html_page(server: _Fixture, tmp_path: Path) -> None:
    server.plan.html = True
    with pytest.raises(DownloadError, match="HTML page") as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert "<!DOCTYPE" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_not_found(server: _Fixture, tmp_path: Path) -> None:
    del server.plan.files[layout.h5_name("valid", "x") + ".gz"]
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert not (tmp_path / layout.h5_name("valid", "x")).exists()


def test_server_down(
    fixture_files: tuple[object, object, tuple[PCamFile, ...]], tmp_path: Path
) -> None:
    with pytest.raises(DownloadError, match="connection refused") as caught:
        download(tmp_path, ["valid"], base_url=_dead_url(), table=fixture_files[2], timeout=5)
    assert URL_ENV in str(caught.value)


def test_existing_verified_file_is_skipped(server: _Fixture, tmp_path: Path) -> None:
    download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    server.plan.requests.clear()
    results = download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert [r.status for r in results] == ["present"] * 3
    assert server.plan.requests == []
    again = download(tmp_path, ["valid"], base_url=server.url, table=server.table, overwrite=True)
    assert [r.status for r in again] == ["downloaded"] * 3


def test_existing_wrong_file_is_an_error(server: _Fixture, tmp_path: Path) -> None:
    (tmp_path / layout.h5_name("valid", "y")).write_bytes(b"not this")
    with pytest.raises(DownloadError, match="--overwrite"):
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)


def test_cli_download(
    server: _Fixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(URL_ENV, server.url)
    # the command uses the real table; point it at the fixture table instead
    monkeypatch.setattr(
        pcam.data.download, "download", functools.partial(download, table=server.table)
    )
    assert cli.main(["download", "--out", str(tmp_path / "d"), "--splits", "valid"]) == 0
    out = capsys.readouterr().out
    assert out.count("verified") == 3
    assert (tmp_path / "d" / layout.h5_name("valid", "x")).exists()


def test_cli_server_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(URL_ENV, _dead_url())
    assert cli.main(["download", "--out", str(tmp_path), "--splits", "valid"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pcam download: error: ")
    assert err.count("\n") == 1
    assert "connection refused" in err


# -- the checksum table --------------------------------------------------------------------------

# The corrected table (../shared/pcam-format.md: the .gz md5 as published by TensorFlow Datasets,
# the .h5 md5 as published by another loader; the official README swaps the valid and test rows).
EXPECTED_TABLE = {
    "camelyonpatch_level_2_split_train_x.h5": (
        "train",
        "1571f514728f59376b705fc836ff4b63",
        "01844da899645b4d6f84946d417ba453",
    ),
    "camelyonpatch_level_2_split_train_y.h5": (
        "train",
        "35c2d7259d906cfc8143347bb8e05be7",
        "0781386bf6c2fb62d58ff18891466aca",
    ),
    "camelyonpatch_level_2_split_valid_x.h5": (
        "valid",
        "d5b63470df7cfa627aeec8b9dc0c066e",
        "81cf9680f1724c40673f10dc88e909b1",
    ),
    "camelyonpatch_level_2_split_valid_y.h5": (
        "valid",
        "2b85f58b927af9964a4c15b8f7e8f179",
        "94d8aacc249253159ce2a2e78a86e658",
    ),
    "camelyonpatch_level_2_split_test_x.h5": (
        "test",
        "d8c2d60d490dbd479f8199bdfa0cf6ec",
        "2614b2e6717d6356be141d9d6dbfcb7e",
    ),
    "camelyonpatch_level_2_split_test_y.h5": (
        "test",
        "60a7035772fbdb7f34eb86d4420cf66a",
        "11ed647efe9fe457a4eb45df1dba19ba",
    ),
    "camelyonpatch_level_2_split_train_meta.csv": (
        "train",
        "5a3dd671e465cfd74b5b822125e65b0a",
        None,
    ),
    "camelyonpatch_level_2_split_valid_meta.csv": (
        "valid",
        "67589e00a4a37ec317f2d1932c7502ca",
        None,
    ),
    "camelyonpatch_level_2_split_test_meta.csv": ("test", "3455fd69135b66734e1008f3af684566", None),
}


def test_the_checksum_table_is_the_corrected_one() -> None:
    table = {
        entry.name: (entry.split, entry.served_md5, entry.md5)
        for entry in pcam.data.download.PCAM_FILES
    }
    assert table == EXPECTED_TABLE
    assert [entry.name for entry in pcam.data.download.PCAM_FILES] == list(EXPECTED_TABLE)


def test_every_file_of_the_table_belongs_to_its_split_and_is_served_as_expected() -> None:
    digests = [e.served_md5 for e in pcam.data.download.PCAM_FILES]
    digests += [e.md5 for e in pcam.data.download.PCAM_FILES if e.md5 is not None]
    assert len(set(digests)) == len(digests) == 15  # no digest twice: no row copied or swapped
    for entry in pcam.data.download.PCAM_FILES:
        assert f"_split_{entry.split}_" in entry.name, entry
        assert entry.split in layout.SPLITS
        if entry.name.endswith(".h5"):
            assert entry.gzipped
            assert entry.served_name == entry.name + ".gz"
        else:
            assert not entry.gzipped
            assert entry.served_name == entry.name


@pytest.mark.realdata
@pytest.mark.parametrize("split", layout.SPLITS)
def test_the_table_matches_the_real_label_files(split: str) -> None:
    """The real ``*_y.h5`` files in ``../shared/data/pcam-labels`` have the table's unpacked md5.

    Two rows exchanged in the table (the official README's valid/test swap) fail here, long
    before a real download would notice.
    """
    from tests.test_realdata import require, shared_data_dir

    name = layout.h5_name(split, "y")
    path = shared_data_dir() / "pcam-labels" / name
    require(path)
    (entry,) = [e for e in pcam.data.download.PCAM_FILES if e.name == name]
    assert entry.split == split
    found = pcam.data.download.md5_of(path)
    assert found == hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    assert found == entry.md5, f"{name}: md5 {found}, the table says {entry.md5}"


def test_md5_of_reads_files_larger_than_one_chunk(tmp_path: Path) -> None:
    data = bytes(range(256)) * (pcam.data.download.CHUNK // 256 * 2 + 3)  # two chunks and a bit
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert pcam.data.download.md5_of(path) == _md5(data)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert pcam.data.download.md5_of(empty) == _md5(b"")


# -- exact messages, boundaries and progress (see tools/mutation.py) -----------------------------

_HINT_MIRROR = f"check the network, or set {URL_ENV} to a working mirror"


def _url(server: _Fixture, served: str) -> str:
    return f"{server.url}/{served}?download=1"


def _entry(name: str, served: bytes, raw: bytes | None = None) -> PCamFile:
    """A table row for a test file: gzipped (``raw`` given) or served as it is."""
    return PCamFile(name, "valid", _md5(served), None if raw is None else _md5(raw))


def test_h5_rows_name_the_file_of_their_split_and_kind() -> None:
    row = pcam.data.download._h5("valid", "x", "a" * 32, "b" * 32)
    assert row == PCamFile(layout.h5_name("valid", "x"), "valid", "a" * 32, "b" * 32)


def test_file_url_strips_only_trailing_slashes() -> None:
    entry = PCamFile("f.h5", "valid", "0" * 32, "1" * 32)
    for base in ("https://MIRROR.EXAMPLE/PCAMX/", "https://MIRROR.EXAMPLE/PCAMX//"):
        assert pcam.data.download.file_url(base, entry) == (
            "https://MIRROR.EXAMPLE/PCAMX/f.h5.gz?download=1"
        )
    assert pcam.data.download.file_url(" /files", entry) == " /files/f.h5.gz?download=1"


def test_reason_of_each_kind_of_error() -> None:
    import http.client
    import urllib.error

    reason = pcam.data.download._reason
    assert reason(urllib.error.URLError(ConnectionRefusedError(111, "x"))) == "connection refused"
    gai = socket.gaierror(-2, "Name or service not known")
    assert reason(urllib.error.URLError(gai)) == f"host not found: {gai}"
    assert reason(http.client.IncompleteRead(b"ab", 5)) == "5 bytes short"
    assert reason(urllib.error.URLError("unknown url type: ftp")) == "unknown url type: ftp"
    assert reason(ConnectionResetError(104, "reset")) == "[Errno 104] reset"
    assert reason(OSError()) == "OSError"


def test_md5_and_resume_read_in_constant_memory(tmp_path: Path) -> None:
    import tracemalloc

    chunk = pcam.data.download.CHUNK
    data = bytes(range(256)) * (8 * chunk // 256 + 1)  # eight chunks and a bit
    path = tmp_path / "big.gz.part"
    path.write_bytes(data)
    was_tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        found = pcam.data.download.md5_of(path)
        md5_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        partial = pcam.data.download._Partial(path)
        partial_peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert found == _md5(data)
    assert (partial.size, partial.digest.hexdigest()) == (len(data), _md5(data))
    assert md5_peak < 3 * chunk, md5_peak  # a few chunks, never the whole file
    assert partial_peak < 3 * chunk, partial_peak


def test_unpack_in_chunks_through_a_part_file(server: _Fixture, tmp_path: Path) -> None:
    chunk = pcam.data.download.CHUNK
    raw = bytes(range(256)) * (5 * chunk // 512)  # two and a half chunks
    gz = gzip.compress(raw, mtime=0)
    server.plan.files["big.h5.gz"] = gz
    table = (_entry("big.h5", gz, raw),)
    seen: list[tuple[str, int, int | None, bool, bool]] = []

    def progress(what: str, done: int, total: int | None) -> None:
        part, final = tmp_path / "big.h5.part", tmp_path / "big.h5"
        seen.append((what, done, total, part.exists(), final.exists()))

    (result,) = download(tmp_path, ["valid"], base_url=server.url, table=table, progress=progress)
    assert result == pcam.data.download.Downloaded(tmp_path / "big.h5", "downloaded")
    assert result.path.read_bytes() == raw
    fetched = [s for s in seen if s[0] == "big.h5.gz"]
    assert fetched[-1] == ("big.h5.gz", len(gz), len(gz), False, False)
    assert [s[1] for s in fetched] == sorted({s[1] for s in fetched})
    unpacked = [s for s in seen if s[0] != "big.h5.gz"]
    assert unpacked == [
        ("unpacking big.h5", chunk, None, True, False),
        ("unpacking big.h5", 2 * chunk, None, True, False),
        ("unpacking big.h5", len(raw), None, True, False),
    ]
    assert _leftovers(tmp_path) == []


def test_progress_of_a_restarted_download(server: _Fixture, tmp_path: Path) -> None:
    name = layout.h5_name("valid", "y")
    served = server.plan.files[name + ".gz"]
    (tmp_path / (name + ".gz.part")).write_bytes(b"stale bytes from another file")
    server.plan.ignore_range = True
    seen: list[tuple[str, int, int | None]] = []
    table = tuple(e for e in server.table if e.name == name)
    download(
        tmp_path, ["valid"], base_url=server.url, table=table, progress=lambda *a: seen.append(a)
    )
    assert seen[-2] == (name + ".gz", len(served), len(served))
    assert seen[-1] == (f"unpacking {name}", len(server.originals[name]), None)
    assert {s[0] for s in seen[:-1]} == {name + ".gz"}


def test_requests_name_the_client(server: _Fixture, tmp_path: Path) -> None:
    download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert server.plan.agents == ["pcam-download"] * 3


def test_a_body_without_length_ends_with_the_connection(server: _Fixture, tmp_path: Path) -> None:
    server.plan.no_length = True
    seen: list[tuple[str, int, int | None]] = []
    results = download(
        tmp_path,
        ["valid"],
        base_url=server.url,
        table=server.table,
        progress=lambda *a: seen.append(a),
    )
    for result in results:
        assert result.path.read_bytes() == server.originals[result.path.name]
    assert all(s[2] is None for s in seen)


def test_three_cuts_resume_and_a_fourth_gives_up(server: _Fixture, tmp_path: Path) -> None:
    name = layout.h5_name("valid", "x") + ".gz"
    data = server.plan.files[name]
    cut = len(data) // 10
    table = tuple(e for e in server.table if e.served_name == name)
    server.plan.cut_after[name], server.plan.cut_times[name] = cut, 3
    download(tmp_path / "a", ["valid"], base_url=server.url, table=table)
    assert [r for n, r in server.plan.requests] == [None] + [f"bytes={k * cut}-" for k in (1, 2, 3)]
    server.plan.requests.clear()
    server.plan.cut_after[name], server.plan.cut_times[name] = cut, 4
    part = tmp_path / "b" / (name + ".part")
    with pytest.raises(DownloadError) as caught:
        download(tmp_path / "b", ["valid"], base_url=server.url, table=table)
    assert str(caught.value) == (
        f"{_url(server, name)}: expected the whole of {name}, found the connection cut 4 times "
        f"({len(data) - 4 * cut} bytes short), {4 * cut} bytes kept in {part}; "
        "run the same command again to resume"
    )
    assert len(server.plan.requests) == 4
    assert part.read_bytes() == data[: 4 * cut]


def test_a_server_that_does_not_speak_http(server: _Fixture, tmp_path: Path) -> None:
    name = layout.h5_name("valid", "x") + ".gz"
    server.plan.garbage = b"NONSENSE"
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert str(caught.value) == (
        f"{_url(server, name)}: expected the file {name}, found an error while downloading into "
        f"{tmp_path / (name + '.part')} (NONSENSE); check the network and the free disk space, "
        "then run the same command again"
    )


def test_a_complete_part_is_answered_416_and_kept(server: _Fixture, tmp_path: Path) -> None:
    name = layout.h5_name("valid", "y")
    served = server.plan.files[name + ".gz"]
    (tmp_path / (name + ".gz.part")).write_bytes(served)
    table = tuple(e for e in server.table if e.name == name)
    (result,) = download(tmp_path, ["valid"], base_url=server.url, table=table)
    assert server.plan.requests == [(name + ".gz", f"bytes={len(served)}-")]
    assert result.path.read_bytes() == server.originals[name]


def test_an_http_error_on_a_resumed_download(server: _Fixture, tmp_path: Path) -> None:
    name = layout.h5_name("valid", "x") + ".gz"
    (tmp_path / (name + ".part")).write_bytes(server.plan.files.pop(name)[:10])
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert str(caught.value) == (
        f"{_url(server, name)}: expected the file {name}, found HTTP 404 Not Found; {_HINT_MIRROR}"
    )
    assert server.plan.requests == [(name, "bytes=10-")]


def test_a_206_without_content_range(server: _Fixture, tmp_path: Path) -> None:
    name = layout.h5_name("valid", "x") + ".gz"
    part = tmp_path / (name + ".part")
    part.write_bytes(server.plan.files[name][:10])
    server.plan.content_range = ""
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert str(caught.value) == (
        f"{_url(server, name)}: expected the bytes from 10 on, found Content-Range ''; "
        f"delete {part} and run the same command again"
    )


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", b"Service unavailable"),  # an HTML type, whatever the body
        ("application/octet-stream", b"\r\n  <html><head><title>Maintenance</title></head></html>"),
    ],
)
def test_html_pages_by_type_or_by_first_byte(
    server: _Fixture, tmp_path: Path, content_type: str, body: bytes
) -> None:
    name = layout.h5_name("valid", "x") + ".gz"
    server.plan.page = (content_type, body)
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert str(caught.value) == (
        f"{_url(server, name)}: expected the file {name}, found an HTML page ({content_type}, "
        f"starts with {body[:40]!r}); the server sent a web page (error or login page) instead "
        f"of the data; open the URL in a browser to see why, or set {URL_ENV} to a working mirror"
    )
    assert list(tmp_path.iterdir()) == []


def test_exact_network_messages(
    fixture_files: tuple[object, object, tuple[PCamFile, ...]], tmp_path: Path
) -> None:
    name = layout.h5_name("valid", "x") + ".gz"
    dead = _dead_url()
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=dead, table=fixture_files[2], timeout=5)
    assert str(caught.value) == (
        f"{dead}/{name}?download=1: expected an answer, found no connection (connection refused); "
        + _HINT_MIRROR
    )
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/files"
        with pytest.raises(DownloadError) as caught:
            download(tmp_path, ["valid"], base_url=url, table=fixture_files[2], timeout=0.25)
    assert str(caught.value) == (
        f"{url}/{name}?download=1: expected an answer, found none within 0.25 s (timed out); "
        + _HINT_MIRROR
    )


def test_exact_md5_messages(server: _Fixture, tmp_path: Path) -> None:
    valid, test = layout.h5_name("valid", "y") + ".gz", layout.h5_name("test", "y") + ".gz"
    files = server.plan.files
    (row,) = [e for e in server.table if e.served_name == valid]
    files[valid], files[test] = files[test], files[valid]
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert str(caught.value) == (
        f"{_url(server, valid)}: expected {valid} (md5 {row.served_md5}), found another file: "
        f"this is {test} (its md5 {_md5(files[valid])}), served under the name {valid}: the mirror "
        f"swapped them; report it to the mirror, or set {URL_ENV} to another one"
    )
    files[valid] = b"garbage"
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert str(caught.value) == (
        f"{_url(server, valid)}: expected {valid} with md5 {row.served_md5}, found md5 "
        f"{_md5(b'garbage')} (corrupt or incomplete data; removed); run the same command again; "
        "if it repeats, the server's copy is damaged"
    )


def test_unpacked_md5_mismatch_and_swap(server: _Fixture, tmp_path: Path) -> None:
    valid, test = layout.h5_name("valid", "y"), layout.h5_name("test", "y")
    gz = tmp_path / (valid + ".gz")
    (row,) = [e for e in server.table if e.name == valid]
    wrong = (PCamFile(row.name, row.split, row.served_md5, _md5(b"other")),)
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=wrong)
    assert str(caught.value) == (
        f"{gz}: expected {valid} with md5 {_md5(b'other')}, found md5 "
        f"{_md5(server.originals[valid])} (corrupt or incomplete data; removed); run the same "
        "command again; if it repeats, the server's copy is damaged"
    )
    assert not (tmp_path / (valid + ".part")).exists()
    # the unpacked md5 of the valid and test label rows exchanged (the official README's error)
    md5 = {e.name: e.md5 for e in server.table}
    swapped = {valid: md5[test], test: md5[valid]}
    table = tuple(
        PCamFile(e.name, e.split, e.served_md5, swapped.get(e.name, e.md5)) for e in server.table
    )
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=table)
    assert str(caught.value) == (
        f"{gz}: expected {valid} (md5 {md5[test]}), found another file: this is {test} (its md5 "
        f"{md5[valid]}), served under the name {valid}: the mirror swapped them; report it to the "
        f"mirror, or set {URL_ENV} to another one"
    )


def test_unreadable_gzip(server: _Fixture, tmp_path: Path) -> None:
    server.plan.files["bad.h5.gz"] = b"not gzip data"
    table = (_entry("bad.h5", b"not gzip data", b"whatever"),)
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, ["valid"], base_url=server.url, table=table)
    gz = tmp_path / "bad.h5.gz"
    assert str(caught.value) == (
        f"{gz}: expected a gzip file, found unreadable data (Not a gzipped file (b'no')); "
        "delete it and download again"
    )
    assert _leftovers(tmp_path) == ["bad.h5.gz"]
    # a .gz gone before it is unpacked: the same error, no .part left behind
    gz.unlink()
    with pytest.raises(DownloadError, match=r"expected a gzip file, found unreadable data \("):
        pcam.data.download._unpack(gz, tmp_path / "bad.h5", table[0], table, None)
    assert list(tmp_path.iterdir()) == []


def test_a_kept_verified_gz_is_unpacked_without_a_request(server: _Fixture, tmp_path: Path) -> None:
    download(tmp_path, ["valid"], base_url=server.url, table=server.table, keep_gz=True)
    names = [layout.h5_name("valid", kind) for kind in ("x", "y")]
    assert _leftovers(tmp_path) == sorted(name + ".gz" for name in names)
    for name in names:
        (tmp_path / name).unlink()
    (tmp_path / (names[1] + ".gz")).write_bytes(b"a damaged copy")
    server.plan.requests.clear()
    results = download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert [r.status for r in results] == ["downloaded", "downloaded", "present"]
    assert server.plan.requests == [(names[1] + ".gz", None)]  # only the damaged one again
    for result in results:
        assert result.path.read_bytes() == server.originals[result.path.name]
    assert _leftovers(tmp_path) == []


def test_present_files_and_their_errors(server: _Fixture, tmp_path: Path) -> None:
    dest = tmp_path / "new" / "dir"  # parents made too
    download(dest, ["valid"], base_url=server.url, table=server.table)
    results = download(dest, ["valid"], base_url=server.url, table=server.table)
    assert results == [
        pcam.data.download.Downloaded(dest / e.name, "present")
        for e in server.table
        if e.split == "valid"
    ]
    final = dest / layout.h5_name("valid", "y")
    final.write_bytes(b"not this")
    (row,) = [e for e in server.table if e.name == final.name]
    with pytest.raises(DownloadError) as caught:
        download(dest, ["valid"], base_url=server.url, table=server.table)
    assert str(caught.value) == (
        f"{final}: expected md5 {row.md5}, found an existing file with md5 {_md5(b'not this')}; "
        "pass --overwrite to replace it"
    )
    with pytest.raises(OutputPathError) as raised:
        download(final, ["valid"], base_url=server.url, table=server.table)
    assert str(raised.value) == (
        f"{final}: expected a directory to write PCam files into, found a file; choose another path"
    )
    with pytest.raises(UnknownSplitError) as unknown:
        download(dest, ["valid", "training"], base_url=server.url, table=server.table)
    assert str(unknown.value) == (
        "unknown split 'training': expected one of train, valid, test; pass one of those names"
    )


def test_works_where_md5_is_only_allowed_for_non_security_use(
    server: _Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a FIPS-mode OpenSSL refuses md5 unless the caller says usedforsecurity=False
    real = hashlib.md5

    def fips_md5(data: bytes = b"", *, usedforsecurity: bool = True) -> hashlib._Hash:
        if usedforsecurity is not False:
            raise ValueError("[digital envelope routines] unsupported")
        return real(data, usedforsecurity=False)

    name = layout.h5_name("valid", "y")
    monkeypatch.setattr(hashlib, "md5", fips_md5)
    (tmp_path / (name + ".gz.part")).write_bytes(b"stale")  # hashed, then restarted
    server.plan.ignore_range = True
    download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    results = download(tmp_path, ["valid"], base_url=server.url, table=server.table)
    assert [r.status for r in results] == ["present"] * 3


@pytest.mark.parametrize(
    ("base", "found"),
    [
        ("notaurl", "no scheme"),
        ("ftp://mirror.example/pcam", "the scheme 'ftp'"),
        ("zenodo.org/records/2546921/files", "no scheme"),
        ("http:", "no host"),
        ("HTTPS:/", "no host"),
        ("https:///pcam", "no host"),
        ("file://", "no path"),
    ],
)
def test_a_base_url_that_is_not_one_is_refused_before_anything_is_made(
    tmp_path: Path, base: str, found: str
) -> None:
    dest = tmp_path / "new" / "dest"
    with pytest.raises(DownloadError) as raised:
        download(dest, ["valid"], base_url=base)
    assert str(raised.value) == (
        f"{base}: expected an http://, https:// or file:// base URL, found {found}; fix "
        "$PCAM_DOWNLOAD_URL (or unset it to download from Zenodo)"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:9/pcam", "HTTPS://Mirror/x", "file:///srv/pcam"]
)
def test_http_https_and_file_urls_are_accepted(base: str) -> None:
    pcam.data.download.check_base_url(base)


def test_bad_splits_and_destinations_are_refused_before_the_destination_is_made(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(UnknownSplitError):
        download(dest, ["training"], base_url="http://127.0.0.1:9")
    assert not dest.exists()
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(OutputPathError) as raised:
        download(tmp_path / "a-file" / "dest", ["valid"], base_url="http://127.0.0.1:9")
    assert str(raised.value) == (
        f"{tmp_path / 'a-file'}: expected a directory to write PCam files into, found a file in "
        "the way; choose another path"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_short_disk_gets_one_warning_for_the_unpacked_size_twice(
    server: _Fixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10**9))
    download(tmp_path / "dest", ["valid"], base_url=server.url, table=server.table)
    valid_bytes = 32_768 * 96 * 96 * 3  # 906 MB unpacked, and the .gz beside it while unpacking
    assert capsys.readouterr().err == (
        f"pcam download: warning: {tmp_path / 'dest'}: downloading and unpacking needs about "
        "1.81 GB, found 1.00 GB free; free some space, or the run "
        "may stop when the disk fills (nothing half-written is left, and the same command "
        "resumes or starts again)\n"
    )
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2 * valid_bytes))
    download(tmp_path / "dest2", ["valid"], base_url=server.url, table=server.table)
    assert capsys.readouterr().err == ""
