"""The ``pcam`` argument parser: the top level and one sub-parser per command module."""

from __future__ import annotations

import argparse

import pcam
from pcam.cli.options import CommandParser


def build_parser() -> argparse.ArgumentParser:
    """The full ``pcam`` argument parser (each command's ``run`` and ``usage_error`` set)."""
    from pcam.cli.commands import COMMANDS

    parser = CommandParser(
        prog="pcam",
        description="Stream, train on and explain PatchCamelyon (PCam) histopathology patches.",
    )
    parser.add_argument("--version", action="version", version=f"pcam {pcam.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    commands.required = True
    for command in COMMANDS:
        sub = command.add(commands)
        sub.set_defaults(run=command.run, usage_error=sub.error)
    return parser
