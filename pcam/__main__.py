"""``python -m pcam`` runs the command line."""

from pcam.cli import main

raise SystemExit(main())
