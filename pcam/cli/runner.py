"""Running a command: one line for every failure, Ctrl-C and SIGTERM alike, one-line warnings.

:func:`main` parses the arguments (:func:`pcam.cli.parser.build_parser`) and runs the command's
``run(args)``. The project's own errors, the operating system's (a read-only folder, a full
disk, a path through a file) and the input pipeline's become one line on stderr and exit 1;
Ctrl-C exits 130 and SIGTERM (what ``timeout``, systemd, Docker and Slurm send) 143, both after
unwinding, so nothing is left half-written. A signal raises its exception wherever the program
is, and inside TensorFlow's Python code that exception sometimes comes out as another one (a
``SystemError`` from a half-built list, say): whatever unwinds after a signal arrived is that
signal's exit, never a traceback.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from pcam.cli.options import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    resolve_deprecated_positionals,
)
from pcam.errors import PCamError
from pcam.stopping import Terminated, deferred, received


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status.

    ``--help``, ``--version`` and bad arguments exit through argparse (``SystemExit``), with
    status 0, 0 and 2. Every failure is one line on stderr, no traceback.
    """
    from pcam.cli.parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_deprecated_positionals(args, args.usage_error)
    received.clear()
    previous_handlers = _handle_signals()
    previous_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning(args.command)
    try:
        result: int = args.run(args)
        return result
    except PCamError as error:
        return _fail(args.command, str(error))
    except Terminated:
        return _stopped(args.command, signal.SIGTERM)
    except KeyboardInterrupt:
        return _stopped(args.command, signal.SIGINT)
    except Exception as error:
        if received:  # the signal's exception, turned into another on its way out
            return _stopped(args.command, received[-1])
        if isinstance(error, OSError):
            return _fail(args.command, describe_os_error(error))
        ours = _pipeline_error(error)
        if ours is None:
            raise
        return _fail(args.command, str(ours))
    finally:
        warnings.formatwarning = previous_format
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def run() -> int:
    """The ``pcam`` command: :func:`main`, with TensorFlow's C++ start-up log filtered out.

    See :mod:`pcam.cli.quiet`; ``PCAM_TF_LOG=1`` shows that log.
    """
    from pcam.cli.quiet import filter_tensorflow_log

    filter_tensorflow_log()
    return main()


def _stopped(command: str, signum: int) -> int:
    """The line and exit status of a run stopped by ``signum``: Ctrl-C (130) or SIGTERM (143)."""
    if signum == signal.SIGTERM:
        print(f"pcam {command}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    print(f"pcam {command}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def _fail(command: str, message: str) -> int:
    print(f"pcam {command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _handle_signals() -> dict[int, Any]:
    """SIGTERM raises :class:`Terminated`, Ctrl-C ``KeyboardInterrupt``; returns the old handlers.

    Each signal is noted in :data:`pcam.stopping.received` first; inside a polling loop
    (:func:`pcam.stopping.deferring`) it is only noted, and the loop raises it. Only the main
    thread of the main interpreter may set handlers; elsewhere (a test runner's worker thread)
    the defaults stay. A SIGINT that someone chose to ignore stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def terminate(signum: int, frame: object) -> None:
        received.append(signum)
        if not deferred():  # a polling loop raises it itself, between two batches
            raise Terminated

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        if not deferred():
            raise KeyboardInterrupt

    previous: dict[int, Any] = {signal.SIGTERM: signal.signal(signal.SIGTERM, terminate)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    return previous


def _one_line_warning(command: str) -> Callable[..., str]:
    """A ``warnings.formatwarning`` that prints ``pcam COMMAND: warning: MESSAGE`` only."""

    def format_warning(message: Warning | str, *args: object, **kwargs: object) -> str:
        first = str(message).splitlines()[0] if str(message) else ""
        return f"pcam {command}: warning: {first}\n"

    return format_warning


OS_HINTS = {
    errno.EACCES: "check the folder's permissions, or choose another path",
    errno.EPERM: "check the folder's permissions, or choose another path",
    errno.EROFS: "the file system is read-only: choose a path on a writable one",
    errno.ENOSPC: "free some space and run the same command again (it starts or resumes cleanly)",
    errno.EDQUOT: "free some space and run the same command again (it starts or resumes cleanly)",
    errno.EFBIG: "the file grew past the size limit (ulimit -f, or the file system's): raise it "
    "or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "a folder is where a file should be: choose another path",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) and run again",
}
"""What to do about each operating-system error, by ``errno``."""


def describe_os_error(error: OSError) -> str:
    """One line for an operating-system error: where, what happened, and what to do."""
    where = error.filename if error.filename is not None else ""
    if error.filename2 is not None:
        where = f"{where} -> {error.filename2}"
    reason = error.strerror or (str(error).splitlines() or [type(error).__name__])[0]
    hint = OS_HINTS.get(error.errno or -1, "check the path and the disk, then run again")
    prefix = f"{where}: " if where else ""
    return f"{prefix}expected a path to read or write, found the system error {reason!r}; {hint}"


def _pipeline_error(error: Exception) -> PCamError | None:
    """The project's own error that a TensorFlow input pipeline wrapped, if ``error`` is one."""
    from pcam.data.pipeline_errors import unwrap_pipeline_error  # imports no TensorFlow

    return unwrap_pipeline_error(error)
