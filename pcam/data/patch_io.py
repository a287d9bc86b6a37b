"""Decode image files and uploads into 96x96 RGB patches, fitting other sizes on request.

PCam models take 96x96 8-bit RGB patches. :func:`decode_patch` reads one image (a path, or the
bytes of an upload) with Pillow and returns such a patch; :func:`fit_patch` does the fitting on
an array. An image of another size is refused unless a fit is asked for:

- ``fit="error"`` (the default): a one-line error naming the image and its size, saying to
  centre-crop or resize it (``--fit crop`` / ``--fit resize`` on the command line);
- ``fit="crop"``: the centre 96x96 region (both sides must be at least 96); PCam labels a patch
  by its centre 32x32 region, so a crop keeps the part that matters at its own scale;
- ``fit="resize"``: the whole image resized to 96x96 with Pillow's bilinear filter, which
  widens its support when shrinking (antialiased); the aspect ratio is not kept.

Every problem is a :class:`pcam.errors.PCamError` subclass with a one-line message: a missing
path, a file Pillow cannot read, several frames, a mode other than RGB, RGBA or palette (grey
and 16-bit images are refused rather than guessed at), the wrong size, or too many pixels.

Hostile or huge images cost little. The size, mode and frame count are read from the header
(Pillow opens files lazily) and every check is made before any pixel is decoded:

- an image of more than :data:`MAX_PIXELS` pixels (4096x4096) is refused whatever the fit,
  undecoded (:class:`ImageTooLargeError`); so is one over Pillow's own decompression-bomb limit,
  and Pillow's ``DecompressionBombWarning`` is never shown (the limit here is far below it);
- under ``fit="error"`` an image that is not 96x96 is refused from its header alone;
- ``fit="crop"`` crops before converting to RGB, so only 96x96 pixels are converted;
- ``fit="resize"`` decodes a JPEG of at least 192x192 at 1/2, 1/4 or 1/8 scale (Pillow's
  ``draft``, never below 96x96), and shrinks an image of 576 (6 x 96) or more on a side first
  by an integer factor (Pillow's ``reduce``, through ``reducing_gap=`` :data:`REDUCING_GAP`),
  then resamples bilinearly to 96x96. The result differs from a full decode and one bilinear
  resize by a few grey levels at most (the tests bound it); smaller images get exactly that
  one resize.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from pcam import layout
from pcam.errors import (
    InvalidArgumentError,
    LayoutError,
    MissingFileError,
    PCamError,
    UnreadableFileError,
    first_line,
)

if TYPE_CHECKING:
    from PIL.ImageFile import ImageFile

FitMode = Literal["error", "crop", "resize"]
"""What to do with an image that is not 96x96: refuse it, centre-crop it, or resize it."""

FIT_MODES: Final[tuple[str, ...]] = get_args(FitMode)
"""The values of :data:`FitMode`, in the order shown to users."""

IMAGE_SUFFIXES: Final = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""The endings of the image files a folder contributes (case-insensitive)."""

SIDE: Final = layout.PATCH_SIZE
"""Side of a patch in pixels (96)."""

MODES: Final = ("RGB", "RGBA", "P")
"""Pillow image modes accepted (RGBA and palette images are converted to RGB)."""

EXPECTED: Final = f"a {SIDE}x{SIDE} RGB patch (PNG, JPEG or TIFF)"
"""What every image error says was expected."""

_MAX_SIDE: Final = 4096

MAX_PIXELS: Final = _MAX_SIDE * _MAX_SIDE
"""Most pixels (width x height) an image may have to be decoded at all: 16,777,216 (4096x4096).

A PCam patch is 96x96; the crop and resize fits are for patches cut or exported at a slightly
different size or magnification, or for a tile to be shrunk. 4096x4096 is some 1,800 patches'
area and still only 48 MiB as 8-bit RGB, so every plausible input passes; beyond it an image is
not a patch, and decoding it only costs memory: Pillow's own limit (a warning at 89,478,485
pixels, an error at twice that) would let one file take 1.5 GB. Refused from the header.
"""

REDUCING_GAP: Final = 3.0
"""Pillow's ``reducing_gap`` for ``fit="resize"``: first shrink by the integer factor that leaves
the image at least 3 times 96 on a side, then resample; Pillow documents 3.0 and above as
indistinguishable from a plain resize in most cases."""

FIT_HINT: Final = (
    f"PCam models take {SIDE}x{SIDE} patches: pass --fit crop (the centre {SIDE}x{SIDE}) "
    "or --fit resize"
)
"""The advice given for an image of the wrong size under ``fit="error"``."""


class PatchSizeError(LayoutError):
    """An image that is not 96x96 (under ``fit="error"``) or too small to centre-crop."""

    def __init__(self, where: str | Path, width: int, height: int, hint: str) -> None:
        self.width = width
        self.height = height
        Exception.__init__(
            self, f"{where}: expected {EXPECTED}, found a {width}x{height} image; {hint}"
        )


class ImageTooLargeError(LayoutError):
    """An image with more than :data:`MAX_PIXELS` pixels: refused from its header, whatever the fit.

    ``width`` and ``height`` are ``None`` when Pillow refused to open the image at all (over its
    decompression-bomb limit).
    """

    def __init__(
        self,
        where: str | Path,
        pixels: int | None,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.width: int | None = size[0] if size is not None else None
        self.height: int | None = size[1] if size is not None else None
        if size is not None and pixels is not None:
            found = f"a {size[0]}x{size[1]} image ({pixels:,} pixels)"
        elif pixels is not None:
            found = f"an image of {pixels:,} pixels"
        else:
            found = "an image over Pillow's decompression-bomb limit"
        Exception.__init__(
            self,
            f"{where}: expected {EXPECTED}, or at most {_MAX_SIDE}x{_MAX_SIDE} "
            f"({MAX_PIXELS:,}) pixels to crop or resize, found {found}; cut out the "
            f"{SIDE}x{SIDE} patch, or a region around it, first",
        )


def decode_patch(
    data: bytes | str | os.PathLike[str],
    *,
    fit: FitMode = "error",
    name: str | None = None,
    hint: str | None = None,
) -> tuple[npt.NDArray[np.uint8], str | None]:
    """Decode one image (bytes of an upload, or a path) into a 96x96 uint8 RGB patch.

    Returns ``(patch, note)``: ``note`` says what was done to fit the image (for example
    ``"centre-cropped from 120x100"``), or is ``None`` when it was 96x96 already. ``name`` is
    how errors refer to the image (default: the path, or ``"upload"`` for bytes). Raises a
    :class:`pcam.errors.PCamError` subclass with a one-line message for a missing path, a
    corrupt or non-image input, several frames, an unsupported mode, or a wrong size under
    ``fit="error"``, or more than :data:`MAX_PIXELS` pixels; every one of these is found from
    the image's header, before its pixels are decoded. ``hint`` replaces the advice given for
    a wrong size under ``fit="error"``.
    """
    return _decode(data, fit=fit, name=name, hint=FIT_HINT if hint is None else hint)


def fit_patch(
    image: npt.NDArray[np.uint8], fit: FitMode
) -> tuple[npt.NDArray[np.uint8], str | None]:
    """Centre-crop or resize an RGB uint8 ``[H, W, 3]`` array to 96x96 (or raise under 'error').

    Returns ``(patch, note)`` as :func:`decode_patch` does; a 96x96 image is returned as it is
    whatever ``fit`` is.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InvalidArgumentError(
            "image", "a uint8 RGB array [H, W, 3]", f"{array.dtype} {list(array.shape)}"
        )
    return _fit(array, fit, "image", FIT_HINT)


def image_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files named or held (by name order) in the folders named, in the given order."""
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(
                p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not found:
                raise MissingFileError(
                    entry,
                    "96x96 patches as PNG, JPEG or TIFF files",
                    "put patches in it or name the image files",
                    found=f"no {', '.join(IMAGE_SUFFIXES)} files in this folder",
                )
            files.extend(found)
        elif entry.exists():
            files.append(entry)
        else:
            raise MissingFileError(
                entry, "a 96x96 patch (PNG, JPEG or TIFF) or a folder of them", "check the path"
            )
    return files


# -- internals -------------------------------------------------------------------------------------


_OPEN_LOCK: Final = threading.Lock()
"""Held while an image header is read: warning filters are process-wide, not per thread."""

_BOMB_PIXELS: Final = re.compile(r"\((\d+) pixels\)")
"""The pixel count in Pillow's decompression-bomb message ("Image size (N pixels) exceeds ...")."""


def _decode(
    data: bytes | str | os.PathLike[str],
    *,
    fit: FitMode,
    name: str | None,
    hint: str,
) -> tuple[npt.NDArray[np.uint8], str | None]:
    """:func:`decode_patch` with the advice for a wrong size under ``fit="error"`` as ``hint``."""
    from PIL import UnidentifiedImageError

    _check_fit(fit)
    source: io.BytesIO | Path
    if isinstance(data, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(data))
        where: str | Path = name if name is not None else "upload"
    else:
        source = Path(data)
        where = name if name is not None else source
        if not source.is_file():
            found = "a folder" if source.is_dir() else "no such file"
            raise MissingFileError(Path(where), EXPECTED, "check the path", found=found)
    try:
        image, frames = _open(source, where)
        with image:
            width, height = image.size
            if frames != 1:
                raise LayoutError(
                    Path(where), EXPECTED, f"{frames} frames", "save one patch per file"
                )
            if image.mode not in MODES:
                raise LayoutError(
                    Path(where), EXPECTED, f"image mode {image.mode}", "save it as 8-bit RGB"
                )
            refusal = _size_error(where, width, height, fit, hint)
            if refusal is not None:
                raise refusal
            return _read(image, fit)
    except PCamError:
        raise
    except UnidentifiedImageError:
        raise _unreadable(where, "not an image format Pillow knows") from None
    except Exception as error:  # Pillow raises many kinds for a damaged or foreign file
        raise _unreadable(where, first_line(error)) from None


def _open(source: io.BytesIO | Path, where: str | Path) -> tuple[ImageFile, int]:
    """The image opened lazily (``PIL.Image.open``: its header only) and its number of frames.

    Refuses an image of more than :data:`MAX_PIXELS` pixels with :class:`ImageTooLargeError`,
    and turns Pillow's decompression-bomb checks into the same refusal: its error becomes the
    one-line message and its warning is silenced (any image it warns about is far over
    :data:`MAX_PIXELS`, so it is refused here anyway).
    """
    from PIL import Image

    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError as error:
            found = _BOMB_PIXELS.search(str(error))
            raise ImageTooLargeError(where, int(found.group(1)) if found else None) from None
        try:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageTooLargeError(where, width * height, (width, height))
            frames = int(getattr(image, "n_frames", 1))  # a GIF or TIFF reads its frame headers
        except BaseException:
            image.close()
            raise
    return image, frames


def _read(image: ImageFile, fit: FitMode) -> tuple[npt.NDArray[np.uint8], str | None]:
    """Decode an opened image whose size, mode and frames passed, fitting it as ``fit`` says.

    A 96x96 image is decoded as it is; a crop converts only the centre 96x96 pixels to RGB; a
    resize decodes a JPEG at reduced scale (``draft``) and shrinks with ``reducing_gap``.
    """
    from PIL import Image

    width, height = image.size
    if (width, height) == (SIDE, SIDE):
        return np.asarray(image.convert("RGB"), dtype=np.uint8), None
    if fit == "crop":
        top, left = (height - SIDE) // 2, (width - SIDE) // 2
        region = image.crop((left, top, left + SIDE, top + SIDE)).convert("RGB")
        return np.asarray(region, dtype=np.uint8), f"centre-cropped from {width}x{height}"
    box: tuple[float, float, float, float] | None = None  # the whole image
    if image.format == "JPEG":
        drafted = image.draft("RGB", (SIDE, SIDE))  # DCT scaling: 1/2, 1/4 or 1/8, >= 96x96
        if drafted is not None:
            box = drafted[1]  # the original image in the drafted pixels
    resized = image.convert("RGB").resize(
        (SIDE, SIDE), Image.Resampling.BILINEAR, box=box, reducing_gap=REDUCING_GAP
    )
    return np.asarray(resized, dtype=np.uint8), f"resized from {width}x{height}"


def _size_error(
    where: str | Path, width: int, height: int, fit: FitMode, hint: str
) -> PatchSizeError | None:
    """The refusal of a ``width`` x ``height`` image under ``fit``, or ``None`` if it fits."""
    if (width, height) == (SIDE, SIDE) or fit == "resize":
        return None
    if fit == "error":
        return PatchSizeError(where, width, height, hint)
    if height < SIDE or width < SIDE:
        return PatchSizeError(
            where,
            width,
            height,
            f"--fit crop needs both sides >= {SIDE}: pass --fit resize to scale it instead",
        )
    return None


def _fit(
    image: npt.NDArray[np.uint8], fit: FitMode, where: str | Path, hint: str
) -> tuple[npt.NDArray[np.uint8], str | None]:
    """Fit an RGB array to 96x96 (see :func:`fit_patch`); ``where`` names it in errors."""
    _check_fit(fit)
    height, width = int(image.shape[0]), int(image.shape[1])
    if (height, width) == (SIDE, SIDE):
        return image, None
    refusal = _size_error(where, width, height, fit, hint)
    if refusal is not None:
        raise refusal
    if fit == "crop":
        top, left = (height - SIDE) // 2, (width - SIDE) // 2
        crop = np.ascontiguousarray(image[top : top + SIDE, left : left + SIDE])
        return crop, f"centre-cropped from {width}x{height}"
    from PIL import Image

    resized = Image.fromarray(image).resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8), f"resized from {width}x{height}"


def _check_fit(fit: str) -> None:
    if fit not in FIT_MODES:
        raise InvalidArgumentError("fit", f"one of {', '.join(FIT_MODES)}", fit)


def _unreadable(where: str | Path, why: str) -> UnreadableFileError:
    return UnreadableFileError(
        Path(where),
        EXPECTED,
        f"a file Pillow cannot read as an image ({why})",
        "replace the file or leave it out",
    )
