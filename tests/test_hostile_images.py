"""Huge and hostile images cost a header read, not a decode (:mod:`pcam.data.patch_io`, issue 12).

A 12000x12000 paletted PNG is 18 KB on disk and 144 MB once decoded (432 MB as RGB): every fit
refuses it from its header, without one pixel decoded and without Pillow's
``DecompressionBombWarning``. Decoding is watched by a spy on ``ImageFile.load`` (every lazy
image Pillow opens decodes through it) and, in a subprocess, by the peak resident memory.
Large images within the limit are still fitted, with ``draft``/``reduce`` when resizing, close to
a plain full decode.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageFile

from pcam.data.patch_io import (
    MAX_PIXELS,
    ImageTooLargeError,
    PatchSizeError,
    decode_patch,
)
from pcam.explain.explanation import read_patch_file

COLOUR = (200, 30, 90)
"""The one colour of the generated palette images."""

TOO_LARGE = (
    "expected a 96x96 RGB patch (PNG, JPEG or TIFF), or at most 4096x4096 (16,777,216) pixels "
    "to crop or resize, found {found}; cut out the 96x96 patch, or a region around it, first"
)


def palette_png(width: int, height: int) -> bytes:
    """A solid-colour 1-bit paletted PNG (Pillow mode ``P``), written row by row: a few KB.

    Written by hand so that making a 12000x12000 image never holds it in memory.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)  # 1 bit, palette
    row = b"\x00" * (1 + (width + 7) // 8)  # filter 0, every pixel palette entry 0
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"PLTE", bytes(COLOUR) + bytes(3)),
            chunk(b"IDAT", pixels),
            chunk(b"IEND", b""),
        ]
    )


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12000x12000 paletted PNG: over Pillow's warning limit, under its error limit."""
    path = tmp_path_factory.mktemp("hostile") / "huge.png"
    path.write_bytes(palette_png(12000, 12000))
    return path


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image Pillow decodes from a file from now on (``ImageFile.load``).

    A call that finds nothing left to decode (the image was loaded already) is not counted.
    """
    sizes: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        pending = bool(self.tile)  # tiles left to decode; loading again is a no-op
        result = real(self)
        if pending:
            sizes.append(self.size)
        return result

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


@pytest.fixture
def no_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised in the test, recorded (each one shown, none filtered) to be checked."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _png(pixels: npt.ArrayLike, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels)).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def test_the_hand_made_png_is_what_pillow_reads(tmp_path: Path) -> None:
    with Image.open(io.BytesIO(palette_png(300, 200))) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "P", (300, 200))
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels == COLOUR).all()
    assert len(palette_png(12000, 12000)) < 40_000


@pytest.mark.parametrize("fit", ["error", "crop", "resize"])
def test_a_huge_image_is_refused_from_its_header_under_every_fit(
    fit: Any,
    huge: Path,
    decodes: list[tuple[int, int]],
    no_warnings: list[warnings.WarningMessage],
) -> None:
    found = "a 12000x12000 image (144,000,000 pixels)"
    with pytest.raises(ImageTooLargeError) as refused:
        decode_patch(huge, fit=fit)
    assert str(refused.value) == f"{huge}: " + TOO_LARGE.format(found=found)
    assert (refused.value.width, refused.value.height) == (12000, 12000)
    with pytest.raises(ImageTooLargeError) as refused:
        decode_patch(huge.read_bytes(), fit=fit, name="upload.png")
    assert str(refused.value) == "upload.png: " + TOO_LARGE.format(found=found)
    assert decodes == []  # not one pixel decoded
    assert [str(w.message) for w in no_warnings] == []  # no DecompressionBombWarning


def test_over_pillows_own_limit_is_the_same_one_line(
    tmp_path: Path,
    decodes: list[tuple[int, int]],
    no_warnings: list[warnings.WarningMessage],
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(palette_png(20000, 20000))  # Pillow raises DecompressionBombError
    with pytest.raises(ImageTooLargeError) as refused:
        decode_patch(path, fit="resize")
    assert str(refused.value) == f"{path}: " + TOO_LARGE.format(
        found="an image of 400,000,000 pixels"
    )
    assert decodes == []
    assert no_warnings == []


def test_the_limit_is_exact_one_row_over_is_refused(
    decodes: list[tuple[int, int]], no_warnings: list[warnings.WarningMessage]
) -> None:
    with pytest.raises(ImageTooLargeError, match=r"found a 4096x4097 image \(16,781,312 pixels\)"):
        decode_patch(palette_png(4096, 4097), fit="resize")
    assert decodes == []
    patch, note = decode_patch(palette_png(4096, 4096), fit="resize")  # the limit itself: fitted
    assert MAX_PIXELS == 4096 * 4096
    assert note == "resized from 4096x4096"
    assert (patch == COLOUR).all()
    assert decodes == [(4096, 4096)]
    assert no_warnings == []


def test_under_fit_error_a_wrong_size_is_refused_without_decoding(
    decodes: list[tuple[int, int]],
) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    with pytest.raises(PatchSizeError, match=r"^wide\.png: .*found a 200x150 image; PCam models"):
        decode_patch(_png(pixels), name="wide.png")
    assert decodes == []
    patch, _ = decode_patch(_png(pixels), fit="crop")  # the spy sees a decode when there is one
    np.testing.assert_array_equal(patch, pixels[27:123, 52:148])
    assert decodes == [(200, 150)]
    with pytest.raises(PatchSizeError, match="found a 50x150 image; --fit crop needs both sides"):
        decode_patch(_png(pixels[:, :50]), fit="crop")  # also from the header
    assert decodes == [(200, 150)]


def test_explain_reads_image_files_through_the_same_checks(
    huge: Path, decodes: list[tuple[int, int]], no_warnings: list[warnings.WarningMessage]
) -> None:
    with pytest.raises(ImageTooLargeError, match="found a 12000x12000 image"):
        read_patch_file(huge)
    assert decodes == []
    assert no_warnings == []


def test_peak_memory_stays_small_and_stderr_empty_in_a_fresh_process(huge: Path) -> None:
    script = textwrap.dedent(
        f"""
        import resource
        from pcam.data.patch_io import ImageTooLargeError, decode_patch
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for fit in ("error", "crop", "resize"):
            try:
                decode_patch({str(huge)!r}, fit=fit)
            except ImageTooLargeError:
                pass
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no DecompressionBombWarning, no traceback
    grown_kib = int(done.stdout)
    assert grown_kib < 20 * 1024  # a full decode is 144 MB (palette) and 432 MB (RGB)


def _smooth_image(height: int, width: int) -> npt.NDArray[np.uint8]:
    """Tissue-like: slow colour waves plus noise (pure noise says nothing about a resize)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [
        128 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0),
        128 + 80 * np.sin((x + y) / 91.0),
        255 * x / width,
    ]
    noise = np.random.default_rng(1).normal(0, 20, (height, width, 3))
    return np.clip(np.stack(channels, axis=-1) + noise, 0, 255).astype(np.uint8)


def _plain_resize(data: bytes) -> npt.NDArray[np.int64]:
    """The full decode and one bilinear resize: what ``fit="resize"`` did before."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    return np.asarray(rgb.resize((96, 96), Image.Resampling.BILINEAR), dtype=np.int64)


def test_resize_decodes_a_large_jpeg_at_an_eighth_and_stays_close(
    decodes: list[tuple[int, int]],
) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_smooth_image(1500, 2000)).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    patch, note = decode_patch(data, fit="resize")
    assert note == "resized from 2000x1500"  # the size of the file, not of the draft
    assert decodes == [(250, 188)]  # DCT scaling by 8: ceil(2000 / 8) x ceil(1500 / 8)
    difference = np.abs(patch.astype(np.int64) - _plain_resize(data))
    # stated tolerance: at most 1 grey level on average and 8 anywhere (measured: 0.37, 4)
    assert difference.mean() <= 1.0
    assert difference.max() <= 8


def test_resize_reduces_a_large_png_first_and_stays_close(decodes: list[tuple[int, int]]) -> None:
    data = _png(_smooth_image(900, 1200))
    patch, note = decode_patch(data, fit="resize")
    assert note == "resized from 1200x900"
    assert decodes == [(1200, 900)]  # no draft for a PNG: decoded whole, then reduced
    difference = np.abs(patch.astype(np.int64) - _plain_resize(data))
    assert difference.mean() <= 1.0  # measured 0.19 on a 1200x1500 image, max 3
    assert difference.max() <= 8
    small = _png(_smooth_image(110, 131))  # under 576 a side: exactly the one plain resize
    np.testing.assert_array_equal(decode_patch(small, fit="resize")[0], _plain_resize(small))


def test_crop_of_a_palette_image_converts_only_the_centre_and_is_exact() -> None:
    rng = np.random.default_rng(2)
    indices = rng.integers(0, 256, (700, 900), dtype=np.uint8)
    palette = rng.integers(0, 256, 768, dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.tobytes())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    patch, note = decode_patch(buffer.getvalue(), fit="crop")
    assert note == "centre-cropped from 900x700"
    expected = palette.reshape(256, 3)[indices[302:398, 402:498]]
    np.testing.assert_array_equal(patch, expected)


# -- the command -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny PCam-shaped model, saved without an optimizer."""
    pytest.importorskip("tensorflow")
    import keras

    from pcam.testing.models import tiny_model

    path = tmp_path_factory.mktemp("hostile-model") / "model.keras"
    compiled = tiny_model(seed=0)
    keras.Model(compiled.inputs, compiled.outputs).save(path)
    return path


@pytest.mark.parametrize("fit", ["error", "resize"])
def test_pcam_predict_on_a_huge_image_is_one_line_and_exit_1(
    fit: str,
    huge: Path,
    model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    decodes: list[tuple[int, int]],
    no_warnings: list[warnings.WarningMessage],
) -> None:
    from pcam.cli import main

    out = tmp_path / "predictions.csv"
    argv = ["predict", "--model", str(model_path), str(huge), "--fit", fit, "--out", str(out)]
    assert main(argv) == 1
    printed, err = capsys.readouterr()
    found = "a 12000x12000 image (144,000,000 pixels)"
    assert err == f"pcam predict: error: {huge}: " + TOO_LARGE.format(found=found) + "\n"
    assert printed == ""
    assert decodes == []
    bombs = [w for w in no_warnings if issubclass(w.category, Image.DecompressionBombWarning)]
    assert bombs == []  # (loading the model may warn about other things)
    assert list(tmp_path.iterdir()) == []
