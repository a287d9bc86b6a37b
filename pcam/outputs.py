"""Outputs written whole or not at all: directories, and single JSON files.

A command that writes a directory of results (a report, explanations) fills a hidden staging
directory beside it and renames it into place only when everything is written; on any error the
staging directory is removed and an existing destination is left as it was. A JSON record is
written to a hidden temporary file beside it and renamed over it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pcam.errors import OutputExistsError, OutputPathError


def refuse_existing_directory(destination: Path, *, overwrite: bool) -> None:
    """Raise unless ``destination`` is new or an empty directory, or ``overwrite`` is set."""
    if destination.exists() and not destination.is_dir():
        raise OutputPathError(destination, "a file")
    if destination.is_dir() and any(destination.iterdir()) and not overwrite:
        raise OutputExistsError(destination)


@contextmanager
def staged_directory(destination: Path) -> Iterator[Path]:
    """Yield a staging directory that replaces ``destination`` once the block succeeds."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputPathError(destination.parent, "a file in the way") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; results are for reading
    try:
        yield staging
        if destination.exists():
            shutil.rmtree(destination)
        staging.replace(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json_atomically(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` through a temporary file renamed over it."""
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    temporary.replace(path)
