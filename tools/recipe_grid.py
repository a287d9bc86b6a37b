"""Measure training recipes of the small CNN on the real PCam sample, as a grid.

The sample has 2,048 train and 512 valid patches. The valid patches are split once, stratified
by label and seeded (:data:`HOLDOUT_SEED`), into two halves: ``valid`` (256, which the run uses
to choose its best epoch, as ``pcam train`` does) and ``test`` (256, held back, scored once per
run). Every recipe trains on all 2,048 train patches with each seed; the table gives the mean
and the spread over seeds of the held-back accuracy and ROC AUC, and the training time.

    python tools/recipe_grid.py --out /tmp/recipe-grid --seeds 0 1 2 --recipes rgb hed-light

Results go to ``OUT/results.jsonl`` one line per finished run, so a killed grid resumes where it
stopped; ``OUT/grid.md`` is the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

HOLDOUT_SEED = 20261128
"""Seed of the split of the sample's valid patches into the choosing and the scoring halves."""

BEFORE = {"colour_augment": "rgb", "width": 16, "batch_size": 64, "patience": 5}
"""The recipe of ``pcam train --model small`` before the grid (0.836 / 0.908 in the issue)."""


def _recipe(**changes: Any) -> dict[str, Any]:
    return {**BEFORE, **changes}


RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "default-e10": {"epochs": 10},
    "default-e25": {"epochs": 25},
    "rgb": _recipe(),
    "none": _recipe(colour_augment="none"),
    "hed-light": _recipe(colour_augment="hed-light"),
    "hed-strong": _recipe(colour_augment="hed-strong"),
    "rgb+hed-light": _recipe(colour_augment="rgb+hed-light"),
    "hed-light-b32": _recipe(colour_augment="hed-light", batch_size=32),
    "hed-light-p15": _recipe(colour_augment="hed-light", patience=15),
    "hed-light-lr3e-3": _recipe(colour_augment="hed-light", lr=3e-3),
    "hed-light-b32-p15": _recipe(colour_augment="hed-light", batch_size=32, patience=15),
    "hed-light-w24-lr3e-3": _recipe(colour_augment="hed-light", width=24, lr=3e-3),
    "hed-light-w24-p15": _recipe(colour_augment="hed-light", width=24, patience=15),
    "hed-light-w32": _recipe(colour_augment="hed-light", width=32),
    "hed-light-w32-lr3e-3": _recipe(colour_augment="hed-light", width=32, lr=3e-3),
    "hed-light-w32-p15": _recipe(colour_augment="hed-light", width=32, patience=15),
    "hed-strong-w32-p15": _recipe(colour_augment="hed-strong", width=32, patience=15),
    "rgb-w32-p15": _recipe(width=32, patience=15),
    "none-w32-p15": _recipe(colour_augment="none", width=32, patience=15),
    "hed-light-w32-p15-ls0.1": _recipe(
        colour_augment="hed-light", width=32, patience=15, label_smoothing=0.1
    ),
    "hed-light-w48-p15": _recipe(colour_augment="hed-light", width=48, patience=15),
    "hed-light-w24-b32-p15": _recipe(
        colour_augment="hed-light", width=24, batch_size=32, patience=15
    ),
    "hed-light-w32-b32-p15": _recipe(
        colour_augment="hed-light", width=32, batch_size=32, patience=15
    ),
    "hed-strong-w32-b32-p15": _recipe(
        colour_augment="hed-strong", width=32, batch_size=32, patience=15
    ),
    "rgb-w32-b32-p15": _recipe(width=32, batch_size=32, patience=15),
    "none-w32-b32-p15": _recipe(colour_augment="none", width=32, batch_size=32, patience=15),
}
"""Each recipe: the :class:`pcam.config.TrainConfig` fields it sets on top of ``--model small
--epochs 15`` (``default``: none, the defaults the grid chose)."""


def holdout_split(sample: Path, data: Path) -> None:
    """Write ``data``: the sample's train split, and its valid split cut into valid and test."""
    from pcam import layout

    data.mkdir(parents=True, exist_ok=True)
    kinds: tuple[Literal["x", "y"], ...] = ("x", "y")
    for kind in kinds:
        target = layout.h5_path(data, "train", kind)
        if not target.exists():
            os.symlink(layout.h5_path(sample, "train", kind).resolve(), target)
    with h5py.File(layout.h5_path(sample, "valid", "y"), "r") as handle:
        labels = np.asarray(handle["y"][:]).reshape(-1)
    rng = np.random.default_rng(HOLDOUT_SEED)
    halves: dict[str, list[int]] = {"valid": [], "test": []}
    for label in (0, 1):
        chosen = rng.permutation(np.flatnonzero(labels == label))
        halves["valid"].extend(chosen[: chosen.size // 2].tolist())
        halves["test"].extend(chosen[chosen.size // 2 :].tolist())
    for split, indices in halves.items():
        order = np.sort(np.asarray(indices))
        for kind in kinds:
            with h5py.File(layout.h5_path(sample, "valid", kind), "r") as source:
                values = np.asarray(source[kind][:])[order]
            target = layout.h5_path(data, split, kind)
            if not target.exists():
                with h5py.File(target, "w") as handle:
                    handle.create_dataset(kind, data=values)


def run_recipe(data: Path, runs: Path, name: str, seed: int) -> dict[str, Any]:
    """Train one recipe with one seed and score its best model on the held-back half."""
    from pcam.config import TrainConfig
    from pcam.evaluation.evaluate import predict_split
    from pcam.evaluation.metrics import classification_report
    from pcam.model.architectures import load_model
    from pcam.model.train import train

    config = TrainConfig(
        data=str(data), out=str(runs / f"{name}-seed{seed}"), model="small", epochs=15, seed=seed
    )
    config = replace(config, overwrite=True, **RECIPES[name])
    started = time.perf_counter()
    history = train(config, verbose=0)
    seconds = time.perf_counter() - started
    model = load_model(Path(config.out) / "model.keras", calibration=False)
    labels, scores = predict_split(model, data, "test")
    report = classification_report(labels, scores)
    return {
        "recipe": name,
        "seed": seed,
        "accuracy": float(report["accuracy"]),
        "roc_auc": float(report["roc_auc"]),
        "epochs_run": len(history["val_loss"]),
        "train_seconds": round(seconds, 1),
        "config": RECIPES[name],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The grid as a Markdown table: mean (min-max) over seeds per recipe."""
    lines = [
        "| recipe | seeds | accuracy mean (min-max) | ROC AUC mean (min-max) | train s |",
        "|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(row["recipe"] for row in rows):
        mine = [row for row in rows if row["recipe"] == name]
        acc = np.array([row["accuracy"] for row in mine])
        auc = np.array([row["roc_auc"] for row in mine])
        secs = np.mean([row["train_seconds"] for row in mine])
        seeds = ",".join(str(row["seed"]) for row in mine)
        lines.append(
            f"| {name} | {seeds} | {acc.mean():.3f} ({acc.min():.3f}-{acc.max():.3f}) | "
            f"{auc.mean():.3f} ({auc.min():.3f}-{auc.max():.3f}) | {secs:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the grid (resuming a killed one) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_sample = Path(__file__).resolve().parents[1].parent / "shared/data/pcam-sample"
    parser.add_argument("--sample", type=Path, default=default_sample)
    parser.add_argument("--out", type=Path, default=Path("/tmp/recipe-grid"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = parser.parse_args(argv)
    if not (args.sample / "camelyonpatch_level_2_split_train_x.h5").is_file():
        print(f"recipe_grid: no real PCam sample in {args.sample}; pass --sample DIR")
        return 2
    data = args.out / "data"
    holdout_split(args.sample, data)
    results = args.out / "results.jsonl"
    done = (
        [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    )
    for name in args.recipes:
        for seed in args.seeds:
            if any(row["recipe"] == name and row["seed"] == seed for row in done):
                continue
            row = run_recipe(data, args.out / "runs", name, seed)
            done.append(row)
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    chosen = [row for row in done if row["recipe"] in args.recipes and row["seed"] in args.seeds]
    text = table(chosen)
    (args.out / "grid.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
