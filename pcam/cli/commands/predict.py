"""``pcam predict --model M INPUT...``: tumour probabilities of patches as CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pcam.cli import options


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam predict`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "predict",
        help="tumour probabilities of patch images or PCam files with a saved model, as CSV",
        description="Predict the tumour probability of every patch: 96x96 RGB images (PNG, "
        "JPEG, TIFF, or folders of them, by name) and PCam image files (*_x.h5, every row, "
        "streamed in batches), in any mix. OUT gets one CSV row per patch, in input order: "
        "source, index (the row of an h5 file; empty for an image), probability, label "
        "(tumour when probability >= --threshold, else normal). The CSV appears only when "
        "complete. The probabilities are calibrated when the model has a calibration file "
        "(pcam calibrate), and the summary line says which were used. MODEL may be an exported "
        "model (pcam export), served by its runtime (ONNX Runtime, TensorFlow, LiteRT). With "
        "--stain-normalise "
        "every patch is stain-normalised (Macenko) to the reference before the model sees it.",
    )
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        type=Path,
        nargs="+",
        help="patch images, folders of them, or PCam *_x.h5 files",
    )
    options.add_saved_model(
        parser,
        help="a saved model (.keras), e.g. RUN_DIR/model.keras, or one exported by pcam export: "
        "a SavedModel folder or a .onnx / .tflite file, run in its own runtime without Keras",
    )
    options.add_out(
        parser,
        "CSV file to write, or - for standard output (default: predictions.csv)",
        required=False,
        default=Path("predictions.csv"),
        metavar="OUT",
    )
    options.add_tta(parser)
    options.add_threshold(parser)
    options.add_batch_size(parser, 256)
    parser.add_argument(
        "--fit",
        choices=("error", "crop", "resize"),
        default="error",
        help="images that are not 96x96: error (refuse, the default), crop (the centre 96x96; "
        "both sides >= 96) or resize (bilinear, antialiased, aspect ratio not kept)",
    )
    options.add_no_calibration(parser)
    options.add_stain_normalise(parser)
    options.add_overwrite(parser, "replace a CSV pcam predict wrote (never another file)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Check the output first, predict with a progress bar, print one summary line."""
    from pcam.serve.predict import check_output, count_patches, predict, resolve_inputs

    to_stdout = str(args.out) == "-"
    reference = [] if args.stain_normalise is None else [args.stain_normalise]
    if not to_stdout:
        # before the inputs and the model are read
        check_output(
            args.out, overwrite=args.overwrite, inputs=[args.model, *args.inputs, *reference]
        )
    sources = resolve_inputs(args.inputs)
    normaliser = options.stain_normaliser(args, fit=args.fit)  # before the model loads
    label = "predicting" + (" (x8 TTA)" if args.tta else "")
    with options.progress_bar(count_patches(sources), label) as update:
        summary = predict(
            args.model,
            sources,
            sys.stdout if to_stdout else args.out,
            tta=args.tta,
            threshold=args.threshold,
            batch_size=args.batch_size,
            fit=args.fit,
            overwrite=args.overwrite,
            calibration=not args.no_calibration,
            progress=update,
            normalise=normaliser,
        )
    print(summary.line(), file=sys.stderr if to_stdout else sys.stdout)
    options.warn_unchanged("pcam predict", normaliser)
    return options.EXIT_OK
