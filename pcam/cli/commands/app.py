"""``pcam app [--model M]``: serve the Streamlit web app on this machine."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
from typing import Any

from pcam.cli import options
from pcam.errors import MissingFileError


def add(commands: Any) -> argparse.ArgumentParser:
    """Declare ``pcam app`` and its options."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "app",
        help="the web app: upload patches, see labels, probabilities and Grad-CAM overlays",
        description="Serve the Streamlit web app: upload 96x96 patches (or try synthetic "
        "samples), get the label, the tumour probability and the inference time of each, a "
        "Grad-CAM overlay (layer and opacity to choose) and a batch table to download as CSV. "
        "Without --model it uses the demo model that pcam demo trained in ./pcam-demo (on "
        "synthetic data). With --stain-normalise every patch is stain-normalised (Macenko) to "
        "the reference before the model sees it. Needs the app extra: pip install 'pcam[app]'.",
    )
    options.add_saved_model(
        parser,
        required=False,
        help="a saved model (.keras), or one exported by pcam export (a SavedModel folder or a "
        ".onnx / .tflite file: probabilities without Keras, no Grad-CAM) (default: "
        "./pcam-demo/run/model.keras from pcam demo)",
    )
    options.add_no_calibration(parser)
    options.add_stain_normalise(parser)
    parser.add_argument(
        "--port", type=options.port, default=8501, help="port to serve on (default: 8501)"
    )
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to serve on (default: 127.0.0.1, this machine only)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``streamlit run`` on the app's script in a child process; its status is ours.

    SIGTERM is passed on to the child, so stopping ``pcam app`` stops the server too (Ctrl-C
    reaches both from the terminal). An ``--address`` that is not a loopback address gets a
    one-line warning on stderr first.
    """
    if importlib.util.find_spec("streamlit") is None:
        print(
            "pcam app: error: the web app needs Streamlit, which is not installed; install it "
            "with pip install 'pcam[app]' (Streamlit 1.67 needs Python 3.11 or newer)",
            file=sys.stderr,
        )
        return options.EXIT_ERROR
    from pcam.serve.app import streamlit_command, streamlit_environment
    from pcam.serve.app.logic import MAX_UPLOAD_MB, address_warning
    from pcam.serve.artifacts import is_artifact

    if args.model is not None and not (args.model.is_file() or is_artifact(args.model)):
        # a bad file's content is reported in the page itself
        raise MissingFileError(
            args.model,
            "a saved pcam model (.keras)",
            "train one with pcam train or pcam demo, or check the path",
            found="a folder" if args.model.is_dir() else "no such file",
        )
    normaliser = options.stain_normaliser(args)  # a bad reference: one line, no server
    warning = address_warning(args.address)
    if warning is not None:
        print(warning, file=sys.stderr)
    command = streamlit_command(
        args.address,
        args.port,
        max_upload_mb=MAX_UPLOAD_MB,
        model=args.model,
        calibration=not args.no_calibration,
    )
    extra = streamlit_environment(normaliser)  # the stain reference, handed to the page
    if extra:
        child = subprocess.Popen(command, env={**os.environ, **extra})
    else:
        child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.wait()  # the terminal sent the child SIGINT too: let Streamlit shut down
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
