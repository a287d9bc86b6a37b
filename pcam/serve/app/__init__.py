"""The web app (``pcam app``): classify uploaded patches and show their Grad-CAM overlays.

- :mod:`pcam.serve.app.logic`: everything testable, as plain functions without Streamlit
  (finding and loading the model, decoding uploads, batch prediction with timing, Grad-CAM maps and
  overlays, the batch table and its CSV);
- :mod:`pcam.serve.app.page`: the Streamlit page built on them, with the cached resources;
- ``streamlit_app.py``: the script ``streamlit run`` executes (:data:`SCRIPT`), two lines.

Importing this package is cheap: it imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pcam.stain.macenko import StainNormaliser

SCRIPT: Final = Path(__file__).with_name("streamlit_app.py")
"""The Streamlit script of the app, for ``streamlit run SCRIPT -- [--model PATH]``."""

STAIN_REFERENCE_ENV: Final = "PCAM_APP_STAIN_REFERENCE"
"""The environment variable through which ``pcam app --stain-normalise`` hands the page its
stain reference: the JSON of :meth:`pcam.stain.macenko.StainNormaliser.to_dict`, fitted or read
once by the command (so a bad reference fails there, in one line, before the server starts)."""

__all__ = ["SCRIPT", "STAIN_REFERENCE_ENV", "streamlit_command", "streamlit_environment"]


def streamlit_command(
    address: str,
    port: int,
    *,
    max_upload_mb: int,
    model: Path | None = None,
    calibration: bool = True,
) -> list[str]:
    """The ``python -m streamlit run`` command that serves the app on ``address:port``.

    Headless, without file watching or usage statistics, uploads limited to ``max_upload_mb``
    (:data:`pcam.serve.app.logic.MAX_UPLOAD_MB`); ``model`` (made absolute) is passed to the page,
    and ``--no-calibration`` when ``calibration`` is false.
    """
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SCRIPT),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--server.maxUploadSize",
        str(max_upload_mb),
        "--",
    ]
    if model is not None:
        command += ["--model", str(model.resolve())]
    if not calibration:
        command.append("--no-calibration")
    return command


def streamlit_environment(normaliser: StainNormaliser | None) -> dict[str, str]:
    """The variables to add to the server's environment: the stain reference, if any.

    :func:`pcam.serve.app.logic.load_classifier` reads it back (:data:`STAIN_REFERENCE_ENV`).
    """
    if normaliser is None:
        return {}
    return {STAIN_REFERENCE_ENV: json.dumps(normaliser.to_dict())}
