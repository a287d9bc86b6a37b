"""``pcam app`` under hostile use (issue 12): decoding once, size limits, names, the address.

- an upload is decoded once per content, name and fit, whatever the reruns (slider moves) and
  sessions; a fit choice decodes once more, and the size check before it decodes nothing;
- an upload over the size limit or with too many pixels is one line, undecoded;
- names are escaped wherever the page's Markdown shows them, and the CSV download neutralises
  cells a spreadsheet would run;
- ``pcam app`` gives Streamlit the upload limit, and warns in one line for an address other
  machines can reach.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("streamlit")
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from pcam.cli import main
from pcam.data.patch_io import FitMode
from pcam.serve.app import SCRIPT, logic
from pcam.testing import generate
from tests.test_hostile_images import palette_png

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny PCam-shaped model (it has spatial layers: the page draws Grad-CAM)."""
    import keras

    from pcam.testing.models import tiny_model

    path = tmp_path_factory.mktemp("hardening-model") / "model.keras"
    compiled = tiny_model(seed=0)
    keras.Model(compiled.inputs, compiled.outputs).save(path)
    return path


@pytest.fixture(scope="module")
def patches() -> npt.NDArray[np.uint8]:
    """Four synthetic patches."""
    return generate(4, seed=9).images


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """``(name, fit)`` of every call the app makes to ``decode_patch``, from an empty cache."""
    calls: list[tuple[str, str]] = []
    from pcam.data.patch_io import decode_patch as real

    def spy(data: bytes, *, fit: FitMode = "error", name: str | None = None) -> Any:
        calls.append((str(name), fit))
        return real(data, fit=fit, name=name)

    logic.clear_upload_cache()
    monkeypatch.setattr(logic, "decode_patch", spy)
    yield calls
    logic.clear_upload_cache()


@pytest.fixture
def pixel_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image whose pixels Pillow decodes from a file or upload."""
    from PIL import ImageFile

    sizes: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        pending = bool(self.tile)
        result = real(self)
        if pending:
            sizes.append(self.size)
        return result

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


@pytest.fixture
def media(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Every file the page hands to the browser (images, the CSV), by file id."""
    stored: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(
        self: MemoryMediaFileStorage,
        path_or_data: str | bytes,
        mimetype: str,
        kind: Any,
        filename: str | None = None,
    ) -> str:
        file_id = original(self, path_or_data, mimetype, kind, filename)
        stored[file_id] = self.get_file(file_id).content
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    return stored


def _png(image: npt.ArrayLike) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def _start(monkeypatch: pytest.MonkeyPatch, model_path: Path) -> AppTest:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--model", str(model_path)])
    app = AppTest.from_file(str(SCRIPT), default_timeout=TIMEOUT).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _upload(app: AppTest, files: Sequence[tuple[str, bytes]]) -> AppTest:
    app.file_uploader(key="uploads").set_value([(n, d, "image/png") for n, d in files]).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _texts(elements: Any) -> list[str]:
    return [str(element.value) for element in elements]


# -- decoding once -----------------------------------------------------------------------------


def test_an_upload_is_decoded_once_per_content_name_and_fit(
    patches: npt.NDArray[np.uint8],
    decodes: list[tuple[str, str]],
    pixel_loads: list[tuple[int, int]],
) -> None:
    good = _png(patches[0])
    first = logic.decode_upload("a.png", good)
    assert logic.decode_upload("a.png", good) is first  # remembered
    assert decodes == [("a.png", "error")]
    assert first.patch is not None
    assert not first.patch.flags.writeable  # shared: nobody may change it
    other = logic.decode_upload("a.png", _png(patches[1]))  # same name, new content: decoded
    assert other.patch is not None
    np.testing.assert_array_equal(other.patch, patches[1])
    assert decodes == [("a.png", "error")] * 2
    assert pixel_loads == [(96, 96)] * 2

    large = np.zeros((110, 130, 3), dtype=np.uint8)
    large[7:103, 17:113] = patches[2]
    data = _png(large)
    waiting = logic.decode_upload("large.png", data)
    assert waiting.needs_fit
    assert pixel_loads == [(96, 96)] * 2  # the wrong size is seen in the header: no decode
    cropped = logic.decode_upload("large.png", data, "crop")
    assert cropped.patch is not None
    np.testing.assert_array_equal(cropped.patch, patches[2])
    assert logic.decode_upload("large.png", data, "crop") is cropped
    assert logic.decode_upload("large.png", data) is waiting
    assert decodes[2:] == [("large.png", "error"), ("large.png", "crop")]  # one decode each
    assert pixel_loads == [(96, 96), (96, 96), (130, 110)]


def test_the_cache_is_bounded_and_forgets_the_oldest(
    patches: npt.NDArray[np.uint8], decodes: list[tuple[str, str]]
) -> None:
    data = _png(patches[0])
    names = [f"p{i}.png" for i in range(logic.UPLOAD_CACHE_ENTRIES + 1)]
    for name in names:
        logic.decode_upload(name, data)
    assert len(decodes) == len(names)
    logic.decode_upload(names[-1], data)  # the newest is still there
    assert len(decodes) == len(names)
    logic.decode_upload(names[0], data)  # the oldest was forgotten: decoded again
    assert decodes[-1] == ("p0.png", "error")
    assert len(decodes) == len(names) + 1


# -- size limits -------------------------------------------------------------------------------


def test_an_upload_over_the_limit_is_refused_unread(decodes: list[tuple[str, str]]) -> None:
    assert logic.MAX_UPLOAD_MB == 4
    assert logic.MAX_UPLOAD_BYTES == 4 * 1024 * 1024
    over = b"\x89PNG" + bytes(logic.MAX_UPLOAD_BYTES - 3)
    refused = logic.decode_upload("big.png", over)
    assert refused.error == (
        "big.png: expected a 96x96 RGB patch (PNG, JPEG or TIFF) of at most 4 MB "
        "(4,194,304 bytes), found 4,194,305 bytes; cut out the 96x96 patch and upload that"
    )
    assert refused.patch is None
    assert decodes == []
    at_limit = logic.decode_upload("limit.png", over[:-1])  # the limit itself is read
    assert decodes == [("limit.png", "error")]
    assert at_limit.error is not None
    assert "Pillow cannot read" in at_limit.error


def test_an_upload_with_too_many_pixels_is_one_line_not_a_fit_choice(
    decodes: list[tuple[str, str]], pixel_loads: list[tuple[int, int]]
) -> None:
    upload = logic.decode_upload("huge.png", palette_png(12000, 12000))
    assert not upload.needs_fit
    assert upload.error is not None
    assert upload.error.startswith("huge.png: expected a 96x96 RGB patch")
    assert "found a 12000x12000 image (144,000,000 pixels)" in upload.error
    assert "\n" not in upload.error
    assert logic.decode_upload("huge.png", palette_png(12000, 12000), "resize") is upload
    assert pixel_loads == []


# -- names in Markdown and the CSV -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("patch-0.png", "patch-0.png"),
        ("2024.01 a.png", "2024.01 a.png"),
        ("a_b*.png", "a\\_b\\*.png"),
        ("**bold**.png", "\\*\\*bold\\*\\*.png"),
        ("[x](https://e.org).png", "\\[x\\](https://e.org).png"),
        ("![i](https://e.org/i.png)", "!\\[i\\](https://e.org/i.png)"),
        ("<img src=x onerror=alert(1)>.png", "\\<img src=x onerror=alert(1)\\>.png"),
        ("`code`.png", "\\`code\\`.png"),
        ("# title.png", "\\# title.png"),
        ("- item.png", "\\- item.png"),
        ("+x.png", "\\+x.png"),
        ("1. one.png", "1\\. one.png"),
        ("12) twelve.png", "12\\) twelve.png"),
        ("$x^2$.png", "\\$x^2\\$.png"),
        ("~~gone~~|t.png", "\\~\\~gone\\~\\~\\|t.png"),
        ("a\\b&amp;.png", "a\\\\b\\&amp;.png"),
        ("two\nlines\x1b.png", "two\\nlines\\x1b.png"),
    ],
)
def test_markdown_text_escapes_what_markdown_would_format(name: str, shown: str) -> None:
    assert logic.markdown_text(name) == shown


def test_the_csv_download_neutralises_formulas() -> None:
    predictions = logic.Predictions(np.array([0.9, 0.1, 0.4], np.float32), 0.003, calls=1)
    rows = logic.make_rows(
        ["=cmd|calc.png", "plain.png", "\rcr.png"], predictions, [None, "-1 note", None]
    )
    text = logic.rows_to_csv(rows)
    assert text.splitlines()[1:3] == [
        "'=cmd|calc.png,0.900000,tumour,1.000,",
        "plain.png,0.100000,normal,1.000,'-1 note",
    ]
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert [row[0] for row in parsed] == ["file", "'=cmd|calc.png", "plain.png", "'\rcr.png"]
    assert parsed[3] == ["'\rcr.png", "0.400000", "normal", "1.000", ""]  # one record


@pytest.mark.slow
def test_the_page_escapes_names_and_decodes_nothing_on_a_rerun(
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    patches: npt.NDArray[np.uint8],
    decodes: list[tuple[str, str]],
    media: dict[str, bytes],
) -> None:
    large = np.zeros((100, 120, 3), dtype=np.uint8)
    large[2:98, 12:108] = patches[1]
    files = [
        ("=cmd|calc_[x](https://e.org).png", _png(patches[0])),
        ("# big <b>.png", _png(large)),
        ("**junk**.png", b"not an image"),
    ]
    app = _upload(_start(monkeypatch, model_path), files)
    [warning] = _texts(app.warning)
    assert warning.startswith("**\\# big \\<b\\>.png** is 120x100 pixels, not 96x96.")
    [error] = _texts(app.error)
    assert error.startswith("\\*\\*junk\\*\\*.png: expected a 96x96 RGB patch")
    assert "\n" not in error
    assert any(
        text.startswith("**=cmd\\|calc\\_\\[x\\](https://e.org).png**  \n")
        for text in _texts(app.markdown)
    )
    assert app.radio[0].label == "Fit \\# big \\<b\\>.png"
    assert "\\# big \\<b\\>.png is left out until you choose." in _texts(app.caption)
    table = app.dataframe[0].value
    assert list(table["file"]) == ["=cmd|calc_[x](https://e.org).png"]  # the table shows it as is
    served = media[Path(app.download_button[0].proto.url).stem].decode()
    assert served.splitlines()[1].startswith("'=cmd|calc_[x](https://e.org).png,")
    assert sorted(decodes) == sorted(
        [(name, "error") for name, _ in files]
    )  # each upload decoded once

    app.slider(key="threshold").set_value(0.2).run()  # reruns decode nothing again
    app.slider(key="opacity").set_value(0.9).run()
    assert len(decodes) == 3
    app.radio[0].set_value("crop").run()  # the choice decodes that one upload once more
    assert decodes[3:] == [("# big <b>.png", "crop")]
    assert list(app.dataframe[0].value["note"]) == ["", "centre-cropped from 120x100"]
    app.slider(key="threshold").set_value(0.7).run()
    assert len(decodes) == 4
    assert not app.exception


def test_the_page_limits_the_uploader_and_refuses_a_big_upload_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    patches: npt.NDArray[np.uint8],
    decodes: list[tuple[str, str]],
) -> None:
    app = _start(monkeypatch, model_path)
    assert app.file_uploader(key="uploads").proto.max_upload_size_mb == logic.MAX_UPLOAD_MB
    big = b"\x89PNG" + bytes(logic.MAX_UPLOAD_BYTES)
    _upload(app, [("big.png", big), ("ok.png", _png(patches[0]))])
    [error] = _texts(app.error)
    assert error == (
        "big.png: expected a 96x96 RGB patch (PNG, JPEG or TIFF) of at most 4 MB "
        "(4,194,304 bytes), found 4,194,308 bytes; cut out the 96x96 patch and upload that"
    )
    assert list(app.dataframe[0].value["file"]) == ["ok.png"]
    assert decodes == [("ok.png", "error")]


# -- the command -------------------------------------------------------------------------------


def _run_app(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[list[str], str, str]:
    """``pcam app *argv`` with a stand-in for the Streamlit process.

    Returns the command, what was on stderr when the process started, and stderr after it.
    """
    started: list[tuple[list[str], str]] = []

    class Child:
        def __init__(self, command: list[str]) -> None:
            started.append((command, capsys.readouterr().err))

        def wait(self) -> int:
            return 0

        def send_signal(self, signum: int) -> None:
            raise AssertionError("no signal expected")

    monkeypatch.setattr(subprocess, "Popen", Child)
    assert main(["app", *argv]) == 0
    [(command, before)] = started
    return command, before, capsys.readouterr().err


def _settings(command: list[str]) -> dict[str, str]:
    options = command[5 : command.index("--")]
    return dict(zip(options[::2], options[1::2], strict=True))


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.20", "::", "", "example.org"])
def test_a_non_loopback_address_gets_one_warning_line_before_the_server_starts(
    address: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    command, before, after = _run_app(monkeypatch, capsys, "--address", address)
    shown = address if address else "''"
    assert before == (
        f"pcam app: warning: --address {shown} is not a loopback address, so other machines "
        "that reach it can use the app (no login; their uploads are decoded on this machine); "
        "pass --address 127.0.0.1 to keep it to this machine\n"
    )
    assert after == ""
    assert _settings(command)["--server.address"] == address


@pytest.mark.parametrize("address", ["127.0.0.1", "127.4.5.6", "::1", "[::1]", "localhost"])
def test_a_loopback_address_starts_silently_with_the_upload_limit(
    address: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    command, before, after = _run_app(monkeypatch, capsys, "--address", address)
    assert (before, after) == ("", "")
    settings = _settings(command)
    assert settings["--server.maxUploadSize"] == "4"
    assert settings["--server.address"] == address
