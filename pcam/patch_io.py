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
and 16-bit images are refused rather than guessed at), or the wrong size.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from pcam import layout
from pcam.errors import (
    InvalidArgumentError,
    LayoutError,
    MissingFileError,
    PCamError,
    UnreadableFileError,
)

FitMode = Literal["error", "crop", "resize"]
"""What to do with an image that is not 96x96: refuse it, centre-crop it, or resize it."""

FIT_MODES: Final[tuple[str, ...]] = get_args(FitMode)
"""The values of :data:`FitMode`, in the order shown to users."""

SIDE: Final = layout.PATCH_SIZE
"""Side of a patch in pixels (96)."""

MODES: Final = ("RGB", "RGBA", "P")
"""Pillow image modes accepted (RGBA and palette images are converted to RGB)."""

EXPECTED: Final = f"a {SIDE}x{SIDE} RGB patch (PNG, JPEG or TIFF)"
"""What every image error says was expected."""

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


def decode_patch(
    data: bytes | str | os.PathLike[str],
    *,
    fit: FitMode = "error",
    name: str | None = None,
) -> tuple[npt.NDArray[np.uint8], str | None]:
    """Decode one image (bytes of an upload, or a path) into a 96x96 uint8 RGB patch.

    Returns ``(patch, note)``: ``note`` says what was done to fit the image (for example
    ``"centre-cropped from 120x100"``), or is ``None`` when it was 96x96 already. ``name`` is
    how errors refer to the image (default: the path, or ``"upload"`` for bytes). Raises a
    :class:`pcam.errors.PCamError` subclass with a one-line message for a missing path, a
    corrupt or non-image input, several frames, an unsupported mode, or a wrong size under
    ``fit="error"``.
    """
    return _decode(data, fit=fit, name=name, hint=FIT_HINT)


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


# -- internals -------------------------------------------------------------------------------------


def _decode(
    data: bytes | str | os.PathLike[str],
    *,
    fit: FitMode,
    name: str | None,
    hint: str,
) -> tuple[npt.NDArray[np.uint8], str | None]:
    """:func:`decode_patch` with the advice for a wrong size under ``fit="error"`` as ``hint``."""
    from PIL import Image, UnidentifiedImageError

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
        with Image.open(source) as image:
            image.load()
            frames = int(getattr(image, "n_frames", 1))
            if frames != 1:
                raise LayoutError(
                    Path(where), EXPECTED, f"{frames} frames", "save one patch per file"
                )
            if image.mode not in MODES:
                raise LayoutError(
                    Path(where), EXPECTED, f"image mode {image.mode}", "save it as 8-bit RGB"
                )
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except PCamError:
        raise
    except UnidentifiedImageError:
        raise _unreadable(where, "not an image format Pillow knows") from None
    except Exception as error:  # Pillow raises many kinds for a damaged or foreign file
        raise _unreadable(where, _first_line(error)) from None
    return _fit(pixels, fit, where, hint)


def _fit(
    image: npt.NDArray[np.uint8], fit: FitMode, where: str | Path, hint: str
) -> tuple[npt.NDArray[np.uint8], str | None]:
    """Fit an RGB array to 96x96 (see :func:`fit_patch`); ``where`` names it in errors."""
    _check_fit(fit)
    height, width = int(image.shape[0]), int(image.shape[1])
    if (height, width) == (SIDE, SIDE):
        return image, None
    if fit == "error":
        raise PatchSizeError(where, width, height, hint)
    if fit == "crop":
        if height < SIDE or width < SIDE:
            raise PatchSizeError(
                where,
                width,
                height,
                f"--fit crop needs both sides >= {SIDE}: pass --fit resize to scale it instead",
            )
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


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
