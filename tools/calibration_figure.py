"""Draw the README's reliability diagrams before and after temperature scaling, on real patches.

Usage: ``python tools/calibration_figure.py [--data DIR] [--out DIR] [--epochs 40] [--seed 0]``
(defaults: the real PCam sample where the tests look for it, ``docs/``). About a minute on the
reference 2-core CPU.

The small CNN of ``pcam train --arch small`` is trained on the sample's train split for
``--epochs`` epochs with no early stopping and no best-epoch pick, so that it overfits and becomes
overconfident (the case temperature scaling is for, and what large fine-tuned networks do). The
sample has no test split: the temperature is fitted on the even patches of valid
(:func:`pcam.evaluation.temperature.fit_temperature`) and scored on the odd ones, which it never
saw. Writes ``calibration_real_sample.png`` (the held-out patches before and after, with the ECE
and NLL of each) and prints the figures of both halves.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Train, fit the temperature on half of valid, draw the other half before and after."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("PCAM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=shared / "pcam-sample")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras

    from pcam.data import make_dataset
    from pcam.evaluation.calibration import expected_calibration_error
    from pcam.evaluation.plots import plot_reliability_pair
    from pcam.evaluation.temperature import fit_temperature, nll, split_log_odds
    from pcam.model.architectures import build_model
    from pcam.model.temperature import sigmoid

    model = build_model("small", seed=args.seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    train = make_dataset(args.data, "train", batch_size=64, shuffle=True, seed=args.seed)
    model.fit(train, epochs=args.epochs, verbose=0)
    labels, log_odds = split_log_odds(model, args.data, "valid")
    halves = {"fit": (labels[0::2], log_odds[0::2]), "held out": (labels[1::2], log_odds[1::2])}
    temperature = fit_temperature(*halves["fit"]).temperature
    figures = {}
    for name, (part_labels, part_log_odds) in halves.items():
        figures[name] = {
            stage: (
                nll(part_labels, part_log_odds, t),
                expected_calibration_error(part_labels, sigmoid(part_log_odds / t)),
            )
            for stage, t in (("before", 1.0), ("after", temperature))
        }
        before, after = figures[name]["before"], figures[name]["after"]
        print(
            f"{name:>9} ({part_labels.size} patches): NLL {before[0]:.3f} -> {after[0]:.3f}, "
            f"ECE {before[1]:.3f} -> {after[1]:.3f}"
        )
    print(f"temperature {temperature:.3f} ({args.epochs} epochs, seed {args.seed})")
    args.out.mkdir(parents=True, exist_ok=True)
    held_labels, held_log_odds = halves["held out"]
    (nll_before, ece_before), (nll_after, ece_after) = (
        figures["held out"]["before"],
        figures["held out"]["after"],
    )
    path = plot_reliability_pair(
        held_labels,
        sigmoid(held_log_odds),
        sigmoid(held_log_odds / temperature),
        (
            f"held-out valid, before: ECE {ece_before:.3f}, NLL {nll_before:.3f}",
            f"after (T = {temperature:.2f}): ECE {ece_after:.3f}, NLL {nll_after:.3f}",
        ),
        args.out / "calibration_real_sample.png",
    )
    print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
