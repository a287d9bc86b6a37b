"""ImageNet weights: fetched with Keras' get_file from a loopback HTTP server, cached, verified."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pcam.cli import main  # noqa: E402
from pcam.errors import DownloadError  # noqa: E402
from pcam.model.architectures import build_model  # noqa: E402
from pcam.model.weights import (  # noqa: E402
    HASH_VARIABLE,
    RESNET50_NOTOP_FILE,
    RESNET50_NOTOP_MD5,
    RESNET50_NOTOP_URL,
    URL_VARIABLE,
    imagenet_weights_path,
)
from pcam.testing import write_split  # noqa: E402

WRONG_MD5 = "0" * 32


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the server's directory and records every GET path (quietly)."""

    def do_GET(self) -> None:
        cast("WeightsServer", self.server).requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WeightsServer(http.server.ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 (a free port) serving the files of one directory."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(directory)))

    def url(self, name: str) -> str:
        """The URL of ``name`` on this server."""
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, str]:
    """Keras' own ResNet50 notop (random weights), its legacy .h5 file and that file's SHA-256.

    Keras 3's ``save_weights`` only writes ``.weights.h5`` files, while the cache name ends in
    plain ``.h5``, which ``load_weights`` reads as a legacy HDF5 file (the format of the real
    ImageNet file). ``save`` to ``.h5`` writes that legacy format (the weights under
    ``model_weights``, which the legacy loader looks in).
    """
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(96, 96, 3))
    served = tmp_path_factory.mktemp("served")
    backbone.save(served / RESNET50_NOTOP_FILE)
    sha256 = hashlib.sha256((served / RESNET50_NOTOP_FILE).read_bytes()).hexdigest()
    return backbone, served, sha256


@pytest.fixture
def server(reference: tuple[Any, Path, str]) -> Iterator[WeightsServer]:
    running = WeightsServer(reference[1])
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join()


@pytest.fixture
def dead_url() -> str:
    """A URL on a loopback port that was bound and closed: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{RESNET50_NOTOP_FILE}"


@pytest.fixture(autouse=True)
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test here reads or writes the real ~/.keras, or follows a proxy to 127.0.0.1."""
    home = tmp_path / "keras-home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(URL_VARIABLE, raising=False)
    monkeypatch.delenv(HASH_VARIABLE, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    return home


def test_defaults_are_the_url_and_hash_keras_itself_uses() -> None:
    from keras.src.applications import resnet

    assert resnet.BASE_WEIGHTS_PATH + RESNET50_NOTOP_FILE == RESNET50_NOTOP_URL
    assert resnet.WEIGHTS_HASHES["resnet50"][1] == RESNET50_NOTOP_MD5


@pytest.mark.slow
def test_imagenet_build_downloads_once_and_matches_the_keras_backbone(
    reference: tuple[Any, Path, str],
    server: WeightsServer,
    keras_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backbone, _, sha256 = reference
    monkeypatch.setenv(URL_VARIABLE, server.url(RESNET50_NOTOP_FILE))
    monkeypatch.setenv(HASH_VARIABLE, sha256)
    model = build_model("resnet50", weights="imagenet")
    cached = keras_home / "models" / RESNET50_NOTOP_FILE
    assert cached.is_file()
    assert server.requests == [f"/{RESNET50_NOTOP_FILE}"]

    features = keras.Model(model.input, model.get_layer("conv5_block3_out").output)
    patches = np.random.default_rng(4).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    expected = backbone.predict(
        keras.applications.resnet50.preprocess_input(patches.astype("float32")), verbose=0
    )
    np.testing.assert_allclose(features.predict(patches, verbose=0), expected, atol=1e-4)

    # the second fetch (what the next build_model does) verifies the cached copy, asks no server
    assert imagenet_weights_path() == cached
    assert server.requests == [f"/{RESNET50_NOTOP_FILE}"]


def test_a_corrupt_cached_file_is_downloaded_again(
    reference: tuple[Any, Path, str], server: WeightsServer, tmp_path: Path
) -> None:
    cached = tmp_path / "cache" / "models" / RESNET50_NOTOP_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    path = imagenet_weights_path(
        url=server.url(RESNET50_NOTOP_FILE), file_hash=reference[2], cache_dir=tmp_path / "cache"
    )
    assert path == cached
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == reference[2]
    assert len(server.requests) == 1


def _one_line_error(**kwargs: Any) -> str:
    with pytest.raises(DownloadError) as caught:
        imagenet_weights_path(**kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert "pass --weights PATH, or set PCAM_IMAGENET_WEIGHTS_URL to a mirror" in message
    return message


def test_a_hash_mismatch_is_one_line_and_leaves_no_file(
    server: WeightsServer, keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.url(RESNET50_NOTOP_FILE)
    monkeypatch.setenv(URL_VARIABLE, url)
    monkeypatch.setenv(HASH_VARIABLE, WRONG_MD5)
    message = _one_line_error()
    assert message.startswith(f"{url}: expected the ResNet50 ImageNet weights")
    assert f"md5 {WRONG_MD5}" in message
    assert "found a file with another md5 hash" in message
    assert server.requests == [f"/{RESNET50_NOTOP_FILE}"]  # it was downloaded, then rejected
    assert not (keras_home / "models" / RESNET50_NOTOP_FILE).exists()


def test_http_404_is_one_line_naming_the_status(server: WeightsServer, tmp_path: Path) -> None:
    message = _one_line_error(url=server.url("missing.h5"), cache_dir=tmp_path / "cache")
    assert "found HTTP 404 (File not found)" in message
    assert not (tmp_path / "cache" / "models" / RESNET50_NOTOP_FILE).exists()


def test_a_server_that_is_down_is_one_line(dead_url: str, tmp_path: Path) -> None:
    message = _one_line_error(url=dead_url, cache_dir=tmp_path / "cache")
    assert message.startswith(dead_url)
    assert "found a failed download (Connection refused)" in message
    assert not (tmp_path / "cache" / "models" / RESNET50_NOTOP_FILE).exists()


def test_train_with_imagenet_and_no_server_exits_1_with_one_line(
    dead_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    write_split(data, "train", 32, seed=0)
    write_split(data, "valid", 16, seed=1)
    monkeypatch.setenv(URL_VARIABLE, dead_url)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--weights", "imagenet"]
    assert main([*args, "--epochs", "1", "--batch-size", "8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pcam train: error: {dead_url}: expected the ResNet50 ImageNet weights")
    assert "Connection refused" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # the weights are fetched before anything is written
