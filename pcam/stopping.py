"""Stop requests: the signals a command received, for long loops to honour.

The command line (:mod:`pcam.cli.runner`) turns SIGTERM into :class:`Terminated` and Ctrl-C into
``KeyboardInterrupt``, raised wherever the program is. Inside a library's callback that
exception can be swallowed (TensorFlow calls back into Python from C++ and may clear it), and
the work would go on as if nothing had been asked. So each signal is also noted here, and the
loops that take long (a batch at a time) call :func:`raise_if_stopped`.
"""

from __future__ import annotations

import signal

received: list[int] = []
"""The signals (SIGINT, SIGTERM) received during the current command, in order."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds (and cleans up) as for Ctrl-C."""


def raise_if_stopped() -> None:
    """Raise the exception of the last signal received, if any: ``Terminated`` or Ctrl-C's."""
    if not received:
        return
    if received[-1] == signal.SIGTERM:
        raise Terminated
    raise KeyboardInterrupt
