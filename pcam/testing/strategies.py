"""Hypothesis strategies for PCam data, shared by the tests.

Usable by anyone testing code that consumes PCam files. Every parameter is keyword-only. Image
content is drawn from a seed rather than byte by byte (a patch is 27,648 bytes), so examples stay
cheap to generate and shrink well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st

from pcam import layout
from pcam.data.reader import StreamOptions


@dataclass(frozen=True)
class SplitSpec:
    """A small split to write: size, content seed and storage layout."""

    n: int
    """Number of patches."""
    seed: int
    """Seed of the random content."""
    storage: str
    """``contiguous`` (the real layout), ``chunked`` or ``gzip``."""

    def arrays(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """Random images and labels for this spec (see :func:`random_arrays`)."""
        return random_arrays(self.n, seed=self.seed)


def random_arrays(n: int, *, seed: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """``n`` random uint8 patches and 0/1 labels; the first pixel of each encodes its index.

    So a test can tell which patch it is looking at after any reordering.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *layout.IMAGE_SHAPE), dtype=np.uint8)
    index = np.arange(n)
    images[:, 0, 0, 0] = index % 256
    images[:, 0, 0, 1] = (index // 256) % 256
    images[:, 0, 0, 2] = index // 65536
    labels = rng.integers(0, 2, size=n, dtype=np.uint8)
    return images, labels


def split_sizes(*, min_size: int = 1, max_size: int = 300) -> st.SearchStrategy[int]:
    """Numbers of patches in a split, biased towards edge cases (1, block and batch borders)."""
    edges = [v for v in (1, 2, 127, 128, 129, 255, 256, 257) if min_size <= v <= max_size]
    return (
        st.one_of(st.sampled_from(edges), st.integers(min_size, max_size))
        if edges
        else (st.integers(min_size, max_size))
    )


def split_specs(
    *,
    min_size: int = 1,
    max_size: int = 300,
    storages: tuple[str, ...] = ("contiguous", "chunked", "gzip"),
) -> st.SearchStrategy[SplitSpec]:
    """Small splits to write with :func:`write_spec`, in any of the given storage layouts."""
    return st.builds(
        SplitSpec,
        n=split_sizes(min_size=min_size, max_size=max_size),
        seed=st.integers(0, 2**16),
        storage=st.sampled_from(storages),
    )


def write_spec(
    root: Any, split: str, spec: SplitSpec
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Write ``spec`` as PCam files under ``root`` (replacing any); returns the arrays written."""
    from pcam.testing.synthetic import write_arrays

    images, labels = spec.arrays()
    write_arrays(
        root,
        split,
        images,
        labels,
        overwrite=True,
        chunked=spec.storage != "contiguous",
        compression="gzip" if spec.storage == "gzip" else None,
    )
    return images, labels


def pcam_arrays(
    *, min_size: int = 1, max_size: int = 64
) -> st.SearchStrategy[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]]:
    """In-memory PCam arrays: ``(images uint8 [n, 96, 96, 3], labels uint8 [n])``."""
    return st.builds(
        random_arrays,
        split_sizes(min_size=min_size, max_size=max_size),
        seed=st.integers(0, 2**16),
    )


def stream_options(
    *,
    max_batch_size: int = 64,
    max_shards: int = 4,
    augment: bool | None = None,
) -> st.SearchStrategy[StreamOptions]:
    """Loader settings: batch size, shuffle, seed, shards, remainder, block and window sizes.

    ``augment=None`` draws it; ``True`` or ``False`` fixes it.
    """

    @st.composite
    def build(draw: st.DrawFn) -> StreamOptions:
        num_shards = draw(st.integers(1, max_shards))
        return StreamOptions(
            batch_size=draw(st.integers(1, max_batch_size)),
            shuffle=draw(st.booleans()),
            seed=draw(st.integers(0, 2**16)),
            augment=draw(st.booleans()) if augment is None else augment,
            num_shards=num_shards,
            shard_index=draw(st.integers(0, num_shards - 1)),
            drop_remainder=draw(st.booleans()),
            block_size=draw(st.sampled_from([1, 3, 16, 128])),
            window_size=draw(st.sampled_from([1, 8, 64, 2048])),
        )

    return build()
