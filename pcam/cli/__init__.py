"""The ``pcam`` command line: data, training, evaluation, explanations, demo and full check.

The commands are ``synth``, ``check``, ``download``, ``train``, ``calibrate``, ``evaluate``,
``robustness``, ``explain``, ``export``, ``predict``, ``app``, ``demo``, ``fullcheck`` and
``card``, one module each in :mod:`pcam.cli.commands`
(argument parsing and calls, nothing else); :mod:`pcam.cli.options` declares the shared options
once and builds the training options from :mod:`pcam.config`; :mod:`pcam.cli.runner` runs a
command and turns every failure into one line. Commands that need no model never import
TensorFlow, so ``--help``, ``--version``, ``check`` and ``synth`` answer at once.
"""

from __future__ import annotations

from pcam.cli.options import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from pcam.cli.parser import build_parser
from pcam.cli.runner import OS_HINTS, describe_os_error, main, run
from pcam.stopping import Terminated

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "OS_HINTS",
    "Terminated",
    "build_parser",
    "describe_os_error",
    "main",
    "run",
]
