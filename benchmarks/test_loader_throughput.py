"""Loader throughput and memory on a 0.9 GB split, against a raw h5py read in the same run.

Run with ``tox -e bench``. Each benchmark reports images/s and its ratio to the raw sequential
h5py read (the baseline) in ``extra_info`` and in the summary at the end. Wall-clock figures are
never asserted; the anonymous-memory bound is (it is a count of bytes, not a time).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from benchmarks.conftest import record
from pcam import layout
from pcam.config import DEFAULT_COLOUR_AUGMENT
from pcam.data.reader import EpochReader, StreamOptions
from pcam.data.split import open_split

BATCH = 256
BASELINE: dict[str, float] = {}


def _anonymous_memory_bytes() -> int:
    """``RssAnon`` of this process: heap memory, not page cache or mapped file pages."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("RssAnon not found in /proc/self/status")


def _report(benchmark: Any, name: str, patches: int, **extra: Any) -> float:
    seconds = float(benchmark.stats.stats.min)
    rate = patches / seconds
    benchmark.extra_info["images_per_s"] = round(rate)
    if "raw" in BASELINE:
        benchmark.extra_info["ratio_to_raw_read"] = round(rate / BASELINE["raw"], 3)
    benchmark.extra_info.update(extra)
    record(name, images_per_s=rate, **extra)
    return rate


def test_raw_h5py_sequential_read(benchmark: Any, big_split: Path) -> None:
    """The baseline: read the whole image dataset in order, a batch at a time, with h5py."""
    path = layout.h5_path(big_split, "train", "x")

    def read_all() -> int:
        count = 0
        with h5py.File(path, "r") as handle:
            images = handle["x"]
            for start in range(0, images.shape[0], BATCH):
                count += images[start : start + BATCH].shape[0]
        return count

    count = benchmark.pedantic(read_all, rounds=3, warmup_rounds=1)
    BASELINE["raw"] = _report(benchmark, "raw h5py sequential read", count)


def _epoch_through(dataset: Any) -> int:
    return sum(int(labels.shape[0]) for _, labels in dataset)


LOADER_COLOURS = [None, "none", DEFAULT_COLOUR_AUGMENT, "rgb"]
"""What the loader does after the shuffle: nothing (``None``, not augmented); D4 only, the colour
stage being in the model (``--augment-on device``); D4 and the default colour augmentation
(``--augment-on loader``); D4 and the RGB jitter (the colour stage before HED)."""


def _loader_label(colour: str | None) -> str:
    if colour is None:
        return "make_dataset shuffled"
    if colour == "none":
        return "make_dataset shuffled + D4 (augment-on device: colours in the model)"
    return f"make_dataset shuffled + D4 + {colour} (augment-on loader)"


@pytest.mark.parametrize("colour", LOADER_COLOURS, ids=lambda c: "plain" if c is None else c)
def test_loader_epoch(benchmark: Any, big_split: Path, colour: str | None) -> None:
    """One shuffled epoch through ``make_dataset``: the loader's CPU side of each placement."""
    from pcam.data import make_dataset

    dataset = make_dataset(
        big_split,
        "train",
        batch_size=BATCH,
        shuffle=True,
        seed=0,
        augment=colour is not None,
        colour_augment=colour or "none",
    )
    count = benchmark.pedantic(_epoch_through, args=(dataset,), rounds=3, warmup_rounds=1)
    target = {} if colour is None else {"target": ">= 50,000 augmented/s"}
    _report(benchmark, _loader_label(colour), count, **target)


def test_reader_d4_only(benchmark: Any, big_split: Path) -> None:
    """Where the D4 symmetries run: the NumPy reader alone, shuffled, with D4 (no TensorFlow)."""
    reader = EpochReader(
        open_split(big_split, "train"), StreamOptions(batch_size=BATCH, shuffle=True, augment=True)
    )
    epochs = iter(range(1000))

    def epoch() -> int:
        return sum(labels.size for _, labels in reader.batches(next(epochs)))

    count = benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)
    _report(benchmark, "reader shuffled + D4 (NumPy only)", count)


@pytest.mark.parametrize("kind", ["rgb", "hed-light", "rgb+hed-light"])
def test_colour_stage_step(benchmark: Any, kind: str) -> None:
    """The colour stage alone, XLA-compiled, on one core's worth of batches: the part of the
    loader-placed pipeline that TensorFlow runs (RGB jitter, HED stain jitter, or both)."""
    import tensorflow as tf

    from pcam.data.colour import unpack_pixels
    from pcam.stain.augment import augment_colours

    packed = tf.constant(
        np.random.default_rng(0).integers(0, 2**32, (BATCH, 96, 96), dtype=np.uint32)
    )
    seed = tf.constant([0, 1], tf.int64)
    step = tf.function(lambda p, s: augment_colours(unpack_pixels(p), s, kind), jit_compile=True)
    step(packed, seed).numpy()

    def run() -> int:
        for _ in range(20):
            step(packed, seed).numpy()
        return 20 * BATCH

    count = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    _report(benchmark, f"{kind} colour stage (XLA, one batch at a time)", count)


def test_anonymous_memory_stays_bounded_over_an_epoch(big_split: Path) -> None:
    """Peak growth of RssAnon over one shuffled, augmented epoch: constant memory, not the file."""
    from pcam.data import make_dataset

    dataset = make_dataset(big_split, "train", batch_size=BATCH, shuffle=True, seed=1, augment=True)
    next(iter(dataset))  # build the pipeline (and TensorFlow's own pools) before measuring
    gc.collect()
    before = _anonymous_memory_bytes()
    peak = before
    for _, labels in dataset:
        peak = max(peak, _anonymous_memory_bytes())
        del labels
    growth_mb = (peak - before) / 1e6
    file_mb = layout.h5_path(big_split, "train", "x").stat().st_size / 1e6
    record(
        "anonymous memory growth over one epoch",
        growth_mb=f"{growth_mb:.0f} MB",
        file=f"{file_mb:.0f} MB",
        bound="256 MB",
    )
    assert growth_mb <= 256, (
        f"RssAnon grew by {growth_mb:.0f} MB over one epoch of {file_mb:.0f} MB"
    )
