"""Shared test helpers: the synthetic PCam writer, hypothesis strategies and a tiny model.

Used by the tests, the benchmarks, the notebooks and ``pcam demo`` alike, so there is one way to
make test data. ``strategies`` needs hypothesis and ``models`` needs Keras; import them directly.
"""

from __future__ import annotations

from pcam.testing.synthetic import SyntheticBatch, generate, write_arrays, write_split

__all__ = ["SyntheticBatch", "generate", "write_arrays", "write_split"]
