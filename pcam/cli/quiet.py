"""Keep TensorFlow's C++ start-up log off the terminal of the ``pcam`` command.

TensorFlow 2.21 writes lines such as ``I0000 00:00:... cudart_stub.cc:31] Could not find cuda
drivers`` and ``E0000 ... failed call to cuInit`` to the process's standard error before its
logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not stop them; on a CPU machine they read
as errors. :func:`filter_tensorflow_log` puts a pipe in place of file descriptor 2 and copies
everything through to the real standard error except those lines (and the
``WARNING: All log messages before absl::InitializeLog()`` banner and the continuation of the CPU
feature notice). pcam's own lines, progress bars and Python warnings pass unchanged, in order.

``PCAM_TF_LOG=1`` turns the filter off. It is installed by the command-line entry points only
(:func:`pcam.cli.run`), never on import, so a program or test that calls :func:`pcam.cli.main`
keeps its standard error as it was.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading
from typing import Final

LOG_SWITCH: Final = "PCAM_TF_LOG"
"""Set to ``1`` to see TensorFlow's C++ log again."""

NOISE: Final = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+(?:\.\d+)?\s+\d+ [^\s:]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: "
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$)"
)
"""A line of TensorFlow's C++ log (glog/absl format), its banner, a continuation line, or the
LiteRT interpreter's note on its CPU delegate."""


def is_noise(line: bytes) -> bool:
    """Whether ``line`` (without its newline) is a TensorFlow C++ log line to drop."""
    return NOISE.match(line) is not None


def filter_tensorflow_log() -> bool:
    """Filter TensorFlow's C++ log out of this process's standard error; returns if it did.

    Does nothing when ``PCAM_TF_LOG`` is set to anything but ``0`` or empty, or when standard
    error cannot be duplicated.
    """
    if os.environ.get(LOG_SWITCH, "0") not in ("", "0"):
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the lines logged after initialisation
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        return False
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, original), daemon=True)
    pump.start()
    atexit.register(_restore, original, pump)
    return True


def _pump(read_end: int, original: int) -> None:
    """Copy the pipe to the real standard error, line by line, without the noise.

    A partial line is held until its newline unless it is a progress bar's redraw (it holds a
    carriage return), which goes through at once.
    """
    pending = b""
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except OSError:
            break
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not is_noise(line))
        if b"\r" in pending:
            out, pending = out + pending, b""
        if out:
            _write_all(original, out)
    if pending and not is_noise(pending):
        _write_all(original, pending)
    os.close(read_end)


def _write_all(descriptor: int, data: bytes) -> None:
    """``os.write`` until every byte is written (or the other end is gone)."""
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(descriptor, data) :]


def _restore(original: int, pump: threading.Thread) -> None:
    """Put the real standard error back and let the pump copy what is left."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os.dup2(original, 2)  # closes this process's write end of the pipe: the pump sees the end
    pump.join(timeout=5)
