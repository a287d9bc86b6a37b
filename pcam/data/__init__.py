"""The PCam data layer: validated split handles and streaming ``tf.data`` pipelines.

Its modules: :mod:`~pcam.data.download` (the files, hash-checked), :mod:`~pcam.data.split`
(opening and checking a split), :mod:`~pcam.data.verify` (the deep check),
:mod:`~pcam.data.summary` (the ``pcam check`` table), :mod:`~pcam.data.patch_io` (image files
and uploads to patches), and the loader: :mod:`~pcam.data.order`, :mod:`~pcam.data.reader`,
:mod:`~pcam.data.d4`, :mod:`~pcam.data.colour`, :mod:`~pcam.data.stream` and
:mod:`~pcam.data.pipeline_errors`.

``open_split`` needs only h5py and NumPy. ``make_dataset`` needs TensorFlow, which is imported on
first use, so commands that only inspect files start at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pcam.data.split import PCamSplit, open_split

if TYPE_CHECKING:
    from pcam.data.stream import make_dataset

__all__ = ["PCamSplit", "make_dataset", "open_split"]


def __getattr__(name: str) -> Any:
    if name == "make_dataset":
        from pcam.data.stream import make_dataset

        return make_dataset
    raise AttributeError(f"module 'pcam.data' has no attribute {name!r}")
