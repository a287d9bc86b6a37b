"""``pcam fullcheck --data DIR --out DIR``: train, evaluate, explain, fail below the floors.

Every option is a field of :class:`pcam.config.FullCheckConfig`, with that field's default and
docstring. The positional ``DATA_DIR`` and ``--model`` (the architecture) are the deprecated
spellings of ``--data`` and ``--arch``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from pcam import layout
from pcam.cli import options
from pcam.cli.commands.train import add_training_options
from pcam.config import FullCheckConfig


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam fullcheck`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "fullcheck",
        help="the full training check: train, evaluate on test, fail below the floors",
        description="Train the classifier on --data DIR with the project's recipe for full PCam "
        "(ResNet50, ImageNet weights, end-to-end fine-tuning, augmented stream), evaluate the "
        "best model on the test split with 8-symmetry averaging, draw a Grad-CAM grid, and "
        "exit 1 when accuracy or AUC is below its floor. OUT gets run/, report/, explain/ and "
        "fullcheck.json; a killed check resumes where it stopped. Meant for a GPU: about an "
        "hour on one (see README).",
    )
    add_training_options(parser, FullCheckConfig, data_required=False)
    options.add_deprecated_positional(parser, "DATA_DIR", "--data")
    config = FullCheckConfig
    options.add_config_option(parser, config, "eval_split", choices=layout.SPLITS)
    options.add_config_option(parser, config, "tta")
    options.add_config_option(parser, config, "robustness")
    options.add_config_option(parser, config, "min_accuracy", type=options.unit)
    options.add_config_option(parser, config, "min_auc", type=options.unit)
    options.add_config_option(parser, config, "two_phase")
    options.add_config_option(parser, config, "head_epochs", type=options.count)
    options.add_config_option(parser, config, "head_lr", type=options.fraction)
    options.add_config_option(parser, config, "unfreeze_from", metavar="LAYER")
    options.add_config_option(parser, config, "require_gpu")
    options.add_config_option(parser, config, "overwrite")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the check with progress bars; print the table and the verdict (exit 1 below a floor)."""
    from pcam.evaluation.evaluate import format_table
    from pcam.fullcheck import full_check

    if args.unfreeze_from is not None and not args.two_phase:
        args.usage_error("--unfreeze-from goes with --two-phase")
    config = options.config_from_args(FullCheckConfig, args)
    with ExitStack() as bars:

        def progress(label: str, total: int) -> Callable[[int], None]:
            return bars.enter_context(options.progress_bar(total, label))

        result = full_check(config, progress=progress, verbose=options.keras_verbosity())
    print(format_table(result.metrics))
    print(f"run, report, Grad-CAM grid, fullcheck.json and MODEL_CARD.md: {args.out}")
    if result.passed:
        accuracy, auc = result.metrics["accuracy"], result.metrics["roc_auc"]
        print(
            f"full training check passed: accuracy {accuracy:.4f} >= {config.min_accuracy:.4f}, "
            f"AUC {auc:.4f} >= {config.min_auc:.4f}"
        )
        return options.EXIT_OK
    for failure in result.failures:
        print(f"pcam fullcheck: failed: {failure}", file=sys.stderr)
    return options.EXIT_ERROR
