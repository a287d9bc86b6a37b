"""The project's own errors, back out of a ``tf.data`` pipeline (no TensorFlow import here).

A :class:`pcam.errors.PCamError` raised inside ``tf.numpy_function`` reaches the caller as a
TensorFlow ``OpError`` (``UnknownError``, ``InvalidArgumentError``) whose message holds the whole
Python traceback. :func:`unwrap_pipeline_error` gives back the one-line error: the original object
when this process raised it (the pipeline functions hand it to :func:`remember_pipeline_error`),
else one with the message of the ``pcam.errors.<Name>: <message>`` line of the traceback.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import OrderedDict

from pcam.errors import PCamError

KEEP = 16
"""How many recent pipeline errors are remembered (the oldest are forgotten first)."""

_lock = threading.Lock()
_recent: OrderedDict[str, PCamError] = OrderedDict()

_ERROR_LINE = re.compile(r"^pcam\.errors\.\w+: (.+)$", re.MULTILINE)
"""The last line of a Python traceback of a PCamError, as TensorFlow copies it."""


def remember_pipeline_error(error: PCamError) -> None:
    """Remember ``error``, about to be raised inside a ``tf.data`` pipeline (thread-safe)."""
    with _lock:
        _recent[str(error)] = error
        _recent.move_to_end(str(error))
        while len(_recent) > KEEP:
            _recent.popitem(last=False)


def unwrap_pipeline_error(error: BaseException) -> PCamError | None:
    """The project's one-line error behind ``error``, or ``None`` when there is none.

    ``error`` itself when it is a :class:`~pcam.errors.PCamError`. For a TensorFlow ``OpError``
    raised out of a pipeline: the PCamError remembered by :func:`remember_pipeline_error` whose
    message it contains, else a plain :class:`~pcam.errors.PCamError` with the message of the
    ``pcam.errors.<Name>: <message>`` line the traceback in it quotes (the last one). ``None``
    for every other error, TensorFlow's own included, and when TensorFlow was never imported.
    """
    if isinstance(error, PCamError):
        return error
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(error, tf.errors.OpError):
        return None
    text = str(error.message)
    with _lock:
        remembered = list(reversed(_recent.items()))
    for message, original in remembered:
        if message in text:
            return original
    matches = _ERROR_LINE.findall(text)
    if not matches:
        return None
    return PCamError(matches[-1])
