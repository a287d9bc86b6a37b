"""The script ``pcam app`` runs: ``streamlit run streamlit_app.py -- [--model PATH]``.

Everything lives in :mod:`pcam.serve.app.page` (the page) and :mod:`pcam.serve.app.logic`
(the work).
"""

from pcam.serve.app.page import main

main()
