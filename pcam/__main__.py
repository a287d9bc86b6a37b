"""``python -m pcam`` runs the command line."""

from pcam.cli import run

raise SystemExit(run())
