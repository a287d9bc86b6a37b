"""The web app (``pcam app``): classify uploaded patches and show their Grad-CAM overlays.

- :mod:`pcam.app.logic`: everything testable, as plain functions without Streamlit (finding and
  loading the model, decoding uploads, batch prediction with timing, Grad-CAM maps and
  overlays, the batch table and its CSV);
- :mod:`pcam.app.page`: the Streamlit page built on them, with the cached resources;
- ``streamlit_app.py``: the script ``streamlit run`` executes (:data:`SCRIPT`), two lines.

Importing this package is cheap: it imports neither Streamlit nor TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

SCRIPT: Final = Path(__file__).with_name("streamlit_app.py")
"""The Streamlit script of the app, for ``streamlit run SCRIPT -- [--model PATH]``."""

__all__ = ["SCRIPT"]
