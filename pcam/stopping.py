"""Stop requests: the signals a command received, for long loops to honour.

The command line (:mod:`pcam.cli.runner`) turns SIGTERM into :class:`Terminated` and Ctrl-C into
``KeyboardInterrupt``, raised wherever the program is. Inside a library's callback that
exception can be swallowed (TensorFlow calls back into Python from C++ and may clear it), and
the work would go on as if nothing had been asked; or TensorFlow prints it as a traceback on its
way out. So each signal is also noted here, and the loops that take long (a batch at a time)
run inside :func:`deferring` and call :func:`raise_if_stopped` between batches: there a signal
is only noted, and its exception is raised by the loop itself, never inside a library's call.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

received: list[int] = []
"""The signals (SIGINT, SIGTERM) received during the current command, in order."""

_deferrals = 0


def deferred() -> bool:
    """Whether a polling loop is running (:func:`deferring`): a signal is then only noted."""
    return _deferrals > 0


@contextmanager
def deferring() -> Iterator[None]:
    """A block whose loop calls :func:`raise_if_stopped` after each step; signals wait for it.

    The command line's signal handlers note a signal and raise nothing while a block is open;
    the loop raises it at its next check, and the block's end checks once more (a signal during
    the last step). A block left by an exception leaves that exception as it is.
    """
    global _deferrals
    _deferrals += 1
    try:
        yield
    finally:
        _deferrals -= 1
    raise_if_stopped()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds (and cleans up) as for Ctrl-C."""


def raise_if_stopped() -> None:
    """Raise the exception of the last signal received, if any: ``Terminated`` or Ctrl-C's."""
    if not received:
        return
    if received[-1] == signal.SIGTERM:
        raise Terminated
    raise KeyboardInterrupt
