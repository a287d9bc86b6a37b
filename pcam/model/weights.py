"""Fetching and caching the ImageNet weights of the ResNet50 backbone.

The file is the one Keras' own ``ResNet50(include_top=False, weights="imagenet")`` downloads (same
URL, name and MD5 hash), fetched with ``keras.utils.get_file`` into the same cache
(``~/.keras/models``), so either one finds the other's copy. Every failure is a one-line
:class:`~pcam.errors.DownloadError`, and a failed or corrupt download leaves no file under the
cache name.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import keras

from pcam.errors import DownloadError

RESNET50_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
"""Name of the ResNet50 "notop" ImageNet weights file (a legacy Keras ``.h5`` weights file)."""

RESNET50_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + RESNET50_NOTOP_FILE
)
"""Where Keras downloads it from (``keras/src/applications/resnet.py``, ``BASE_WEIGHTS_PATH``)."""

RESNET50_NOTOP_MD5 = "4d473c1dd8becc155b73f8504c6f6626"
"""Its MD5 hash (``WEIGHTS_HASHES["resnet50"][1]`` in the same Keras module)."""

URL_VARIABLE = "PCAM_IMAGENET_WEIGHTS_URL"
"""Environment variable that replaces :data:`RESNET50_NOTOP_URL` (a mirror)."""

HASH_VARIABLE = "PCAM_IMAGENET_WEIGHTS_HASH"
"""Environment variable that replaces :data:`RESNET50_NOTOP_MD5` (an MD5 or SHA-256 hex digest)."""


def imagenet_weights_path(
    *,
    url: str | None = None,
    file_hash: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The local path of the ResNet50 "notop" ImageNet weights, downloaded on first use.

    ``url`` defaults to ``$PCAM_IMAGENET_WEIGHTS_URL`` if set, else Keras' own URL
    (:data:`RESNET50_NOTOP_URL`); ``file_hash`` to ``$PCAM_IMAGENET_WEIGHTS_HASH`` if set, else
    Keras' MD5 (:data:`RESNET50_NOTOP_MD5`). A 64-character hash is taken as SHA-256, any other
    as MD5. The file is cached as ``CACHE/models/`` :data:`RESNET50_NOTOP_FILE`, where ``CACHE`` is
    ``cache_dir``, else ``$KERAS_HOME``, else ``~/.keras``. A cached file is used only if its hash
    matches; otherwise it is downloaded again (with Keras' progress bar on stdout).

    Raises :class:`~pcam.errors.DownloadError` (one line) when the server cannot be reached,
    answers with an HTTP error, or sends a file with another hash; no file is then left in the
    cache.
    """
    url = url or os.environ.get(URL_VARIABLE) or RESNET50_NOTOP_URL
    file_hash = file_hash or os.environ.get(HASH_VARIABLE) or RESNET50_NOTOP_MD5
    cache = Path(cache_dir or os.environ.get("KERAS_HOME") or "~/.keras").expanduser()
    directory = cache / "models"
    target = directory / RESNET50_NOTOP_FILE
    try:
        # An absolute cache_subdir is used as it is, so the file lands exactly at ``target``
        # (a relative one may be moved to /tmp/.keras when cache_dir is not writable).
        fetched = keras.utils.get_file(
            RESNET50_NOTOP_FILE,
            url,
            file_hash=file_hash,
            cache_subdir=str(directory.absolute()),
        )
    except Exception as error:  # get_file wraps HTTP and URL errors in a bare Exception
        # get_file removes a partial download itself but keeps one whose hash is wrong.
        kept_bad_file = target.is_file()
        target.unlink(missing_ok=True)
        raise _download_error(error, url, file_hash, kept_bad_file) from None
    return Path(fetched)


def _download_error(
    error: Exception, url: str, file_hash: str, kept_bad_file: bool
) -> DownloadError:
    """The one-line error for a failed ``get_file``, from the exception it raised."""
    algorithm = "sha256" if len(file_hash) == 64 else "md5"
    expected = f"the ResNet50 ImageNet weights ({RESNET50_NOTOP_FILE}, {algorithm} {file_hash})"
    hint = f"download {url} yourself and pass --weights PATH, or set {URL_VARIABLE} to a mirror"
    cause = error if isinstance(error, urllib.error.URLError) else error.__context__
    if isinstance(cause, urllib.error.HTTPError):
        cause.close()  # the error holds the server's open response
        found = f"HTTP {cause.code} ({_one_line(cause.reason)})"
    elif isinstance(cause, urllib.error.URLError):
        reason = cause.reason
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        found = f"a failed download ({_one_line(text)})"
    elif isinstance(error, ValueError) and kept_bad_file:
        found = f"a file with another {algorithm} hash (a corrupt, truncated or different file)"
    elif isinstance(error, OSError):
        found = f"a cache it cannot write to ({_one_line(error)})"
        hint = f"set KERAS_HOME to a writable directory, or {hint}"
    else:
        found = f"an error ({_one_line(error)})"
    return DownloadError(url, expected, found, hint)


def _one_line(value: object) -> str:
    """``str(value)`` with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(value).split()) or type(value).__name__
