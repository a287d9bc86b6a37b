"""``pcam train --data DIR --out RUN_DIR``: train (or resume) the classifier.

Every option is a field of :class:`pcam.config.TrainConfig`, with that field's default and
docstring. ``--model`` (the architecture) is the deprecated spelling of ``--arch``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pcam.cli import options
from pcam.config import (
    ARCHITECTURES,
    AUGMENT_PLACEMENTS,
    COLOUR_AUGMENTS,
    LR_SCHEDULES,
    STRATEGIES,
    TrainConfig,
)


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam train`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "train",
        help="train the classifier on a PCam directory (resumes a killed run)",
        description="Train on the train split (shuffled, augmented) and validate on the valid "
        "split. RUN_DIR gets config.json, model.keras (best by validation loss), a backup that "
        "lets the same command resume a killed run, training_log.csv and tensorboard/.",
    )
    add_training_options(parser, TrainConfig)
    _add(parser, "label_smoothing")
    _add(parser, "width")
    for name in ("freeze_backbone", "init", "unfreeze_from", "lr_schedule", "strategy"):
        _add(parser, name)
    for name in ("mixed_precision", "xla", "deterministic", "overwrite"):
        _add(parser, name)
    return parser


def add_training_options(
    parser: argparse.ArgumentParser, config: type, *, data_required: bool = True
) -> None:
    """The options ``pcam train`` and ``pcam fullcheck`` share, from ``config``'s fields."""
    options.add_config_option(
        parser, config, "data", type=Path, required=data_required, metavar="DIR", show_default=False
    )
    options.add_config_option(
        parser, config, "out", type=Path, required=True, metavar="DIR", show_default=False
    )
    options.add_config_option(parser, config, "model", "--arch", choices=ARCHITECTURES)
    options.add_deprecated_option(parser, "--model", "--arch", dest="model", choices=ARCHITECTURES)
    options.add_config_option(parser, config, "weights", type=options.weights, metavar="WEIGHTS")
    options.add_config_option(parser, config, "epochs", type=options.count)
    options.add_config_option(parser, config, "batch_size", type=options.count)
    options.add_config_option(parser, config, "lr", type=options.fraction)
    options.add_config_option(parser, config, "patience", type=options.count)
    options.add_config_option(parser, config, "max_train_samples", type=options.count)
    options.add_config_option(parser, config, "seed", type=options.seed)
    options.add_config_option(parser, config, "colour_augment", choices=COLOUR_AUGMENTS)
    options.add_config_option(parser, config, "augment_on", choices=AUGMENT_PLACEMENTS)


_TYPES: dict[str, dict[str, Any]] = {
    "init": {"type": Path, "metavar": "MODEL"},
    "unfreeze_from": {"metavar": "LAYER"},
    "lr_schedule": {"choices": LR_SCHEDULES},
    "label_smoothing": {"type": options.unit, "metavar": "S"},
    "width": {"type": options.count, "metavar": "FILTERS"},
    "strategy": {"choices": STRATEGIES},
}


def _add(parser: argparse.ArgumentParser, name: str) -> None:
    options.add_config_option(parser, TrainConfig, name, **_TYPES.get(name, {}))


def run(args: argparse.Namespace) -> int:
    """Train, then print the best epoch's figures and where the model is."""
    from pcam.model.train import train

    config = options.config_from_args(TrainConfig, args)
    history = train(config, verbose=options.keras_verbosity())
    best = min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)
    print(
        f"best validation loss {history['val_loss'][best]:.4f} (accuracy "
        f"{history['val_accuracy'][best]:.4f}, AUC {history['val_auc'][best]:.4f}) in this "
        f"session's epoch {best + 1}; model: {args.out / 'model.keras'}"
    )
    return options.EXIT_OK
