"""The script ``pcam app`` runs: ``streamlit run streamlit_app.py -- [--model PATH]``.

Everything lives in :mod:`pcam.app.page` (the page) and :mod:`pcam.app.logic` (the work).
"""

from pcam.app.page import main

main()
