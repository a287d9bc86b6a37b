"""``pcam export MODEL --format savedmodel|onnx|litert --out PATH``: a model for serving."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pcam.cli import options

FORMAT_CHOICES = ("savedmodel", "onnx", "litert")


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam export`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "export",
        help="export a saved model as a SavedModel, ONNX or LiteRT artifact (runs without Keras)",
        description="Write MODEL as an artifact for a serving runtime: a TensorFlow SavedModel "
        "(a folder; TF Serving), an ONNX file (.onnx; ONNX Runtime) or a LiteRT flatbuffer "
        "(.tflite; edge devices). Each takes raw uint8 patches [B, 96, 96, 3] as 'patches' and "
        "returns 'tumour_probability' [B], calibrated when the model has a calibration file "
        "(pcam calibrate; --no-calibration to export the model's own). A SavedModel has a second "
        "signature, 'explain', with 'tumour_logit' and the Grad-CAM map 'gradcam' of the tumour "
        "class at the default layer. Before it is put in place, the artifact is run in its own "
        "runtime on 64 patches and must match the Keras model within 1e-5 (5e-3 for a "
        "mixed-precision model, exported in float32). The export record (format, calibration, "
        "parity) goes to pcam_export.json inside a SavedModel, or OUT.pcam.json beside a file. "
        "pcam predict and pcam app serve a SavedModel folder or an .onnx file as --model. Needs "
        "the export extra: pip install 'pcam[export]'.",
    )
    parser.add_argument("model", metavar="MODEL", type=Path, help="a saved model (.keras)")
    parser.add_argument(
        "--format",
        choices=FORMAT_CHOICES,
        required=True,
        help="savedmodel (a folder), onnx (a .onnx file) or litert (a .tflite file)",
    )
    options.add_out(
        parser, "the SavedModel folder, or the .onnx / .tflite file, to write", metavar="PATH"
    )
    options.add_no_calibration(parser)
    options.add_overwrite(parser, "replace an earlier export pcam wrote (never another file)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Export, check in the artifact's own runtime, print one summary line."""
    from pcam.serve.export import check_destination, export_model

    check_destination(args.out, args.format, overwrite=args.overwrite, inputs=[args.model])
    result = export_model(
        args.model,
        args.format,
        args.out,
        overwrite=args.overwrite,
        calibration=not args.no_calibration,
    )
    print(result.line())
    return options.EXIT_OK
