"""The main job on built-in synthetic data (``pcam demo``): data, stream check, training, report.

:func:`run_demo` writes a synthetic PCam dataset, checks its files, streams one shuffled epoch
and matches every patch to the file (:func:`check_stream_permutation`), trains the small model
on the streamed, augmented train split, evaluates it on the test split it never saw and explains
16 train patches with Grad-CAM against their tumour masks. Every step says what it does through
``say``; long steps report through ``progress``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from pcam import layout
from pcam.data.split import PCamSplit, find_splits, open_split
from pcam.data.summary import split_summary
from pcam.errors import PCamError
from pcam.testing.synthetic import ProgressBar, write_splits

DEMO = "demo"
"""The kind of output folder ``pcam demo`` writes (see :mod:`pcam.outputs`)."""

EXPLAIN_LAYER = "block3_pool"
"""Where the demo explains the small model: 6x6. Each cell of its last map (3x3) sees the whole
patch, and Grad-CAM there points at the tumour no better than chance; at 6x6 it finds it."""


class StreamCheckError(PCamError, RuntimeError):
    """The streamed epoch is not the split reordered (a loader bug): what went wrong, first."""


def run_demo(
    out: Path,
    *,
    n: int = 2048,
    epochs: int = 4,
    batch_size: int = 64,
    seed: int = 0,
    say: Callable[[str], None] = print,
    progress: ProgressBar | None = None,
    verbose: int | str = 2,
) -> dict[str, Any]:
    """Run the six steps in ``out`` (new, empty, or an earlier demo's); returns the report.

    Raises :class:`StreamCheckError` when the stream check fails, before any training.
    """
    from pcam.outputs import claim_directory

    claim_directory(out, DEMO)  # a folder holding anyone else's files is refused
    data_dir, run_dir, report_dir = out / "data", out / "run", out / "report"
    say(f"1/6 writing synthetic PCam data to {data_dir}")
    write_splits(
        data_dir, layout.SPLITS, n, seed=seed, with_mask=True, overwrite=True, progress=progress
    )
    say("2/6 checking the files")
    splits = find_splits(data_dir, None)
    say(split_summary(splits))
    say("3/6 streaming one shuffled epoch of train and matching every patch to the file")
    problem = check_stream_permutation(splits[0], data_dir, batch_size, seed, progress)
    if problem:
        raise StreamCheckError(problem)
    say(f"    all {len(splits[0]):,} patches arrived once, in a new order, with their labels")
    say(
        f"4/6 training the small model for {epochs} epochs (shuffled, augmented stream; "
        "deterministic)"
    )
    history, seconds = _train(data_dir, run_dir, epochs, batch_size, seed, verbose)
    say(
        f"    {len(history['loss'])} epochs in {seconds:.0f} s; validation accuracy "
        f"{history['val_accuracy'][-1]:.3f}, AUC {history['val_auc'][-1]:.3f}"
    )
    report = _evaluate(data_dir, run_dir, report_dir, say, progress)
    _explain(data_dir, run_dir, out / "explain", seed, say, progress)
    return report


def check_stream_permutation(
    split: PCamSplit,
    data_dir: Path,
    batch_size: int,
    seed: int,
    progress: ProgressBar | None = None,
) -> str:
    """Stream one shuffled epoch and check it is the split, reordered, labels attached.

    Returns a description of the first problem found (a patch not in the file, one twice, a
    wrong label, a missing one), or an empty string.
    """
    from pcam.data.stream import make_dataset

    label_of = {}
    for start in range(0, len(split), 1024):
        images = split.read_images(slice(start, start + 1024))
        for offset, image in enumerate(images):
            label_of[_key(image)] = int(split.labels[start + offset])
    dataset = make_dataset(data_dir, split.split, batch_size=batch_size, shuffle=True, seed=seed)
    seen: set[bytes] = set()
    position = 0
    with _bar(progress, len(split), "checking the stream") as update:
        for images, labels in dataset.as_numpy_iterator():
            for image, label in zip(images, labels, strict=True):
                key = _key(image)
                if key not in label_of:
                    return f"streamed patch {position} is not a patch of the file"
                if key in seen:
                    return f"streamed patch {position} arrived twice"
                if label_of[key] != int(label):
                    return f"streamed patch {position} carries the wrong label"
                seen.add(key)
                position += 1
            if update is not None:
                update(position)
    if len(seen) != len(label_of):
        return f"the epoch held {len(seen)} distinct patches, the file {len(label_of)}"
    return ""


def _bar(
    progress: ProgressBar | None, total: int, label: str
) -> AbstractContextManager[Callable[[int], None] | None]:
    """``progress``'s bar for a step, or a block that yields ``None`` without one."""
    return progress(total, label) if progress else nullcontext(None)


def _key(image: Any) -> bytes:
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def _train(
    data_dir: Path, run_dir: Path, epochs: int, batch_size: int, seed: int, verbose: int | str
) -> tuple[dict[str, list[float]], float]:
    """Train the small model, deterministically; returns the history and the seconds taken."""
    from pcam.model.train import TrainConfig, train

    started = time.perf_counter()
    config = TrainConfig(
        data=str(data_dir),
        out=str(run_dir),
        model="small",
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        patience=epochs,
        overwrite=True,
        deterministic=True,
    )
    history = train(config, verbose=verbose)
    return history, time.perf_counter() - started


def _evaluate(
    data_dir: Path,
    run_dir: Path,
    report_dir: Path,
    say: Callable[[str], None],
    progress: ProgressBar | None,
) -> dict[str, Any]:
    from pcam.evaluation.evaluate import evaluate, format_table

    test_split = open_split(data_dir, "test")
    say(f"5/6 evaluating on the {len(test_split):,} test patches the model never saw")
    with _bar(progress, len(test_split), "predicting test") as update:
        report = evaluate(
            run_dir / "model.keras", data_dir, "test", report_dir, overwrite=True, progress=update
        )
    say(format_table(report))
    return report


def _explain(
    data_dir: Path,
    run_dir: Path,
    explain_dir: Path,
    seed: int,
    say: Callable[[str], None],
    progress: ProgressBar | None,
) -> None:
    from pcam.explain.explanation import explain, format_summary

    say("6/6 explaining 16 train patches with Grad-CAM, against their tumour masks")
    with _bar(progress, 16, "explaining") as update:
        explained = explain(
            run_dir / "model.keras",
            data_dir,
            explain_dir,
            split="train",
            n=16,
            layer=EXPLAIN_LAYER,
            seed=seed,
            overwrite=True,
            progress=update,
        )
    say(format_summary(explained))
