"""Using a trained model on patches people bring: ``pcam predict`` and the web app.

Images become patches through :mod:`pcam.data.patch_io`, the same decoding for both.

- :mod:`pcam.serve.predict`: tumour probabilities of files, folders and h5 splits, as CSV;
- :mod:`pcam.serve.app`: the Streamlit page of ``pcam app`` and its testable logic.
"""
