"""The ``pcam`` command line: data, training, evaluation, explanations, demo and full check.

The commands are ``synth``, ``check``, ``download``, ``train``, ``evaluate``, ``explain``,
``predict``, ``app``, ``demo`` and ``fullcheck``. Commands that need no model never import
TensorFlow, so ``--help``, ``--version``, ``check`` and ``synth`` answer at once. Bad input
gives one line on stderr and a non-zero exit, no traceback.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pcam
from pcam import layout
from pcam.data.split import PCamSplit, open_split
from pcam.errors import MissingFileError, PCamError
from pcam.report import split_summary

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line that points to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _count(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text!r}")
    return value


def _seed(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}")
    return value


def _fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), found {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full ``pcam`` argument parser."""
    parser = _Parser(
        prog="pcam",
        description="Stream, train on and explain PatchCamelyon (PCam) histopathology patches.",
    )
    parser.add_argument("--version", action="version", version=f"pcam {pcam.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    synth = commands.add_parser(
        "synth",
        help="write a synthetic PCam dataset in the real file layout",
        description="Write synthetic H&E-like patches as PCam files (real layout, real names). "
        "Labels follow the PCam rule: tumour in the centre 32x32 region.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="directory to write to")
    synth.add_argument(
        "--splits",
        nargs="+",
        choices=layout.SPLITS,
        default=list(layout.SPLITS),
        metavar="SPLIT",
        help="splits to write (default: train valid test)",
    )
    synth.add_argument(
        "--n",
        type=_count,
        default=1024,
        help="patches per split; valid and test get a quarter (default: 1024)",
    )
    synth.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    synth.add_argument(
        "--with-mask", action="store_true", help="also write the train tumour mask file"
    )
    synth.add_argument(
        "--chunked",
        action="store_true",
        help="chunked storage instead of the real contiguous layout",
    )
    synth.add_argument(
        "--compression",
        choices=("gzip", "lzf"),
        default=None,
        help="compress the images (implies chunked)",
    )
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace PCam files that pcam synth wrote here before (never others)",
    )
    synth.set_defaults(run=_run_synth)

    check = commands.add_parser(
        "check",
        help="validate PCam files and print a summary",
        description="Validate the PCam files in DATA_DIR (names, keys, shapes, dtypes, lengths, "
        "labels) and print one row per split. With --deep, also read every patch back and "
        "name the first one that cannot be read (a damaged chunk of a compressed file).",
    )
    check.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="directory of PCam files")
    check.add_argument(
        "--split",
        choices=layout.SPLITS,
        default=None,
        help="check only this split (default: every split present)",
    )
    check.add_argument(
        "--deep",
        action="store_true",
        help="also read back every patch, label and mask (every chunk of a compressed file), "
        "with a progress bar, and name the first unreadable one",
    )
    check.set_defaults(run=_run_check)

    train = commands.add_parser(
        "train",
        help="train the classifier on a PCam directory (resumes a killed run)",
        description="Train on the train split (shuffled, augmented) and validate on the valid "
        "split. RUN_DIR gets config.json, model.keras (best by validation loss), a backup that "
        "lets the same command resume a killed run, training_log.csv and tensorboard/.",
    )
    train.add_argument("--data", type=Path, required=True, help="directory of PCam files")
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--epochs", type=_count, default=10, help="epochs (default: 10)")
    train.add_argument("--batch-size", type=_count, default=64, help="batch size (default: 64)")
    train.add_argument(
        "--model",
        choices=("resnet50", "small"),
        default="resnet50",
        help="architecture (default: resnet50; small trains fast on a CPU)",
    )
    train.add_argument(
        "--weights",
        type=_weights,
        default=None,
        help="backbone weights: imagenet, a local weights file, or none (default: none)",
    )
    train.add_argument(
        "--freeze-backbone", action="store_true", help="train the head only (phase 1)"
    )
    train.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="MODEL",
        help="start from the weights of a saved pcam model of the same architecture, e.g. a "
        "phase-1 RUN/model.keras (phase 2 of fine-tuning)",
    )
    train.add_argument(
        "--unfreeze-from",
        default=None,
        metavar="LAYER",
        help="train the backbone only from LAYER on, batch norm kept frozen (e.g. "
        "conv5_block1_1_conv: ResNet50's last stage; default: the whole backbone)",
    )
    train.add_argument(
        "--lr", type=_fraction, default=1e-3, help="peak learning rate (default: 1e-3)"
    )
    train.add_argument(
        "--lr-schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="cosine: decay to 1%% of --lr over the epochs (default); constant: keep --lr",
    )
    train.add_argument(
        "--max-train-samples",
        type=_count,
        default=None,
        help="patches per epoch (default: the whole train split)",
    )
    train.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    train.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multiworker"),
        default="default",
        help="tf.distribute strategy (default: default)",
    )
    train.add_argument(
        "--patience", type=_count, default=5, help="early-stopping patience in epochs (default: 5)"
    )
    train.add_argument(
        "--mixed-precision",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="float16 compute with float32 variables (default: on where a GPU is present)",
    )
    train.add_argument(
        "--xla",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the train step with XLA (default: on where a GPU is present)",
    )
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="bit-identical runs for the same seed on the same machine: seeded, deterministic "
        "ops (slower on a GPU; see README)",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a run folder pcam wrote, finished or interrupted (without it a "
        "finished run is refused and an interrupted one resumes); only the run's own files go",
    )
    train.set_defaults(run=_run_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a saved model on a split: metrics.json and plots",
        description="Predict every patch of a split with a saved model and write metrics.json "
        "(accuracy, per-class precision/recall/F1, ROC AUC, NLL, confusion matrix, 95% "
        "bootstrap intervals) and PNG plots to the report directory.",
    )
    evaluate.add_argument("--model", type=Path, required=True, help="a saved model (.keras)")
    evaluate.add_argument("--data", type=Path, required=True, help="directory of PCam files")
    evaluate.add_argument(
        "--split", choices=layout.SPLITS, default="test", help="split to evaluate (default: test)"
    )
    evaluate.add_argument("--out", type=Path, required=True, help="report directory to write")
    evaluate.add_argument(
        "--batch-size", type=_count, default=256, help="batch size (default: 256)"
    )
    evaluate.add_argument(
        "--tta", action="store_true", help="average predictions over the 8 symmetries of the square"
    )
    evaluate.add_argument(
        "--threshold",
        type=_fraction,
        default=0.5,
        help="probability at or above which a patch is tumour (default: 0.5)",
    )
    evaluate.add_argument(
        "--bootstrap",
        type=_seed,
        default=1000,
        help="bootstrap resamples for the 95%% intervals (default: 1000)",
    )
    evaluate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a report pcam wrote (never another folder)",
    )
    evaluate.set_defaults(run=_run_evaluate)

    explain = commands.add_parser(
        "explain",
        help="class activation maps of a saved model: grid, overlays and localisation metrics",
        description="Compute Grad-CAM (or Grad-CAM++, LayerCAM) heatmaps of the tumour class for "
        "N patches of a split (--data DIR --split S; half tumour, sampled by --seed) or for "
        "96x96 RGB patch images (PNG, JPEG, TIFF, or folders of them). OUT gets grid.png "
        "(patch, heatmap, overlay, probability and label), overlays/ and explain.json (with "
        "the pointing game and energy inside the tumour mask where the split has one, and "
        "deletion/insertion curves, each against random maps).",
    )
    explain.add_argument(
        "images",
        metavar="IMAGE",
        type=Path,
        nargs="*",
        help="patch images or folders of them (instead of --data)",
    )
    explain.add_argument("--model", type=Path, required=True, help="a saved model (.keras)")
    explain.add_argument("--data", type=Path, default=None, help="directory of PCam files")
    explain.add_argument(
        "--split",
        choices=layout.SPLITS,
        default=None,
        help="split to take patches from, with --data (default: valid; train has the masks)",
    )
    explain.add_argument("--out", type=Path, required=True, help="output directory to write")
    explain.add_argument("--n", type=_count, default=16, help="patches to explain (default: 16)")
    explain.add_argument(
        "--layer",
        action="append",
        default=None,
        metavar="NAME",
        help="layer to explain at; repeat to fuse several (default: the last spatial layer)",
    )
    explain.add_argument(
        "--method",
        choices=("gradcam", "gradcam++", "layercam"),
        default="gradcam",
        help="map method (default: gradcam)",
    )
    explain.add_argument("--seed", type=_seed, default=0, help="sampling seed (default: 0)")
    explain.add_argument(
        "--threshold",
        type=_fraction,
        default=0.5,
        help="probability at or above which a patch is predicted tumour, in the grid's "
        "colours and explain.json (default: 0.5)",
    )
    explain.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an explanation pcam wrote (never another folder)",
    )
    explain.set_defaults(run=_run_explain, usage_error=explain.error)

    predict = commands.add_parser(
        "predict",
        help="tumour probabilities of patch images or PCam files with a saved model, as CSV",
        description="Predict the tumour probability of every patch: 96x96 RGB images (PNG, "
        "JPEG, TIFF, or folders of them, by name) and PCam image files (*_x.h5, every row, "
        "streamed in batches), in any mix. OUT gets one CSV row per patch, in input order: "
        "source, index (the row of an h5 file; empty for an image), probability, label "
        "(tumour when probability >= --threshold, else normal). The CSV appears only when "
        "complete.",
    )
    predict.add_argument(
        "inputs",
        metavar="INPUT",
        type=Path,
        nargs="+",
        help="patch images, folders of them, or PCam *_x.h5 files",
    )
    predict.add_argument("--model", type=Path, required=True, help="a saved model (.keras)")
    predict.add_argument(
        "--out",
        type=Path,
        default=Path("predictions.csv"),
        help="CSV file to write, or - for standard output (default: predictions.csv)",
    )
    predict.add_argument(
        "--tta", action="store_true", help="average predictions over the 8 symmetries of the square"
    )
    predict.add_argument(
        "--threshold",
        type=_fraction,
        default=0.5,
        help="probability at or above which a patch is tumour (default: 0.5)",
    )
    predict.add_argument("--batch-size", type=_count, default=256, help="batch size (default: 256)")
    predict.add_argument(
        "--fit",
        choices=("error", "crop", "resize"),
        default="error",
        help="images that are not 96x96: error (refuse, the default), crop (the centre 96x96; "
        "both sides >= 96) or resize (bilinear, antialiased, aspect ratio not kept)",
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a CSV pcam predict wrote (never another file)",
    )
    predict.set_defaults(run=_run_predict)

    app = commands.add_parser(
        "app",
        help="the web app: upload patches, see labels, probabilities and Grad-CAM overlays",
        description="Serve the Streamlit web app: upload 96x96 patches (or try synthetic "
        "samples), get the label, the tumour probability and the inference time of each, a "
        "Grad-CAM overlay (layer and opacity to choose) and a batch table to download as CSV. "
        "Without --model it uses the demo model that pcam demo trained in ./pcam-demo (on "
        "synthetic data). Needs the app extra: pip install 'pcam[app]'.",
    )
    app.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a saved model (.keras) (default: ./pcam-demo/run/model.keras from pcam demo)",
    )
    app.add_argument("--port", type=_port, default=8501, help="port to serve on (default: 8501)")
    app.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to serve on (default: 127.0.0.1, this machine only)",
    )
    app.set_defaults(run=_run_app)

    demo = commands.add_parser(
        "demo",
        help="the main job on built-in synthetic data: data, training, evaluation, report",
        description="Write a synthetic PCam dataset (train, valid, test), check it, stream one "
        "shuffled epoch and match every patch to the file, train the small model on the "
        "streamed, augmented train split, evaluate it on the test split it never saw, and "
        "explain 16 train patches with Grad-CAM against their tumour masks: OUT/run holds the "
        "model and logs, OUT/report the metrics and plots, OUT/explain the Grad-CAM grid.",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("pcam-demo"),
        help="working directory (default: ./pcam-demo): new, empty, or an earlier demo's, whose "
        "data/, run/, report/ and explain/ are replaced",
    )
    demo.add_argument("--n", type=_count, default=2048, help="train patches (default: 2048)")
    demo.add_argument("--epochs", type=_count, default=4, help="training epochs (default: 4)")
    demo.add_argument("--batch-size", type=_count, default=64, help="batch size (default: 64)")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    demo.set_defaults(run=_run_demo)

    full = commands.add_parser(
        "fullcheck",
        help="the full training check: train, evaluate on test, fail below the floors",
        description="Train the classifier on DATA_DIR with the project's recipe for full PCam "
        "(ResNet50, ImageNet weights, end-to-end fine-tuning, augmented stream), evaluate the "
        "best model on the test split with 8-symmetry averaging, draw a Grad-CAM grid, and "
        "exit 1 when accuracy or AUC is below its floor. OUT gets run/, report/, explain/ and "
        "fullcheck.json; a killed check resumes where it stopped. Meant for a GPU: about an "
        "hour on one (see README).",
    )
    full.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="directory of PCam files")
    full.add_argument("--out", type=Path, required=True, help="output directory")
    full.add_argument(
        "--model", choices=("resnet50", "small"), default="resnet50", help="(default: resnet50)"
    )
    full.add_argument(
        "--weights",
        type=_weights,
        default="imagenet",
        help="backbone weights: imagenet, a local weights file, or none (default: imagenet)",
    )
    full.add_argument("--epochs", type=_count, default=10, help="epochs (default: 10)")
    full.add_argument("--batch-size", type=_count, default=128, help="batch size (default: 128)")
    full.add_argument(
        "--lr", type=_fraction, default=1e-4, help="peak learning rate (default: 1e-4)"
    )
    full.add_argument(
        "--patience", type=_count, default=3, help="early-stopping patience (default: 3)"
    )
    full.add_argument(
        "--max-train-samples",
        type=_count,
        default=None,
        help="patches per epoch (default: the whole train split)",
    )
    full.add_argument(
        "--eval-split",
        choices=layout.SPLITS,
        default="test",
        help="split the floors apply to (default: test)",
    )
    full.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="average test predictions over the 8 symmetries of the square (default: on)",
    )
    full.add_argument(
        "--min-accuracy",
        type=_unit,
        default=0.90,
        help="accuracy floor on the evaluation split (default: 0.90)",
    )
    full.add_argument("--min-auc", type=_unit, default=0.965, help="ROC AUC floor (default: 0.965)")
    full.add_argument(
        "--two-phase",
        action="store_true",
        help="fine-tune in two phases: the head alone on a frozen backbone (run-head/), then "
        "the top of the backbone and the head from that model (run/)",
    )
    full.add_argument(
        "--head-epochs", type=_count, default=2, help="epochs of phase 1 (default: 2)"
    )
    full.add_argument(
        "--head-lr",
        type=_fraction,
        default=1e-3,
        help="peak learning rate of phase 1 (default: 1e-3)",
    )
    full.add_argument(
        "--unfreeze-from",
        default=None,
        metavar="LAYER",
        help="first backbone layer phase 2 trains, batch norm kept frozen (default: "
        "conv5_block1_1_conv for resnet50, block4_conv for small)",
    )
    full.add_argument("--require-gpu", action="store_true", help="refuse to start without a GPU")
    full.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    full.add_argument(
        "--overwrite", action="store_true", help="start afresh where a finished check is"
    )
    full.set_defaults(run=_run_fullcheck, usage_error=full.error)

    fetch = commands.add_parser(
        "download",
        help="download the PCam files from Zenodo, verified and unpacked (resumes)",
        description="Download the PCam files of the chosen splits from Zenodo record 2546921 "
        "(or the mirror in $PCAM_DOWNLOAD_URL), resume partial downloads, check the md5 of "
        "each .gz and of each unpacked file, and unpack into DEST. A file appears under its "
        "final name only once it verified.",
    )
    fetch.add_argument("dest", metavar="DEST", type=Path, help="directory to download into")
    fetch.add_argument(
        "--splits",
        nargs="+",
        choices=layout.SPLITS,
        default=list(layout.SPLITS),
        metavar="SPLIT",
        help="splits to download (default: train valid test)",
    )
    fetch.add_argument(
        "--overwrite", action="store_true", help="download again files already present"
    )
    fetch.add_argument("--keep-gz", action="store_true", help="keep the verified .gz files")
    fetch.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        help="seconds to wait for the server on each connect or read (default: 60)",
    )
    fetch.set_defaults(run=_run_download)
    return parser


def _unit(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], found {text!r}")
    return value


def _weights(text: str) -> str | None:
    """An argparse type: ``none`` is no weights; anything else is passed on."""
    return None if text.lower() == "none" else text


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, found {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status.

    ``--help``, ``--version`` and bad arguments exit through argparse (``SystemExit``), with
    status 0, 0 and 2. Every failure is one line on stderr, no traceback: the project's own
    errors, the operating system's (a read-only folder, a full disk, a path through a file) and
    the input pipeline's. Ctrl-C and SIGTERM (what ``timeout``, systemd, Docker and Slurm send)
    stop a command the same way, leaving nothing half-written: exit 130 and 143.
    """
    args = build_parser().parse_args(argv)
    previous_handler = _terminate_like_interrupt()
    previous_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning(args.command)
    try:
        result: int = args.run(args)
        return result
    except PCamError as error:
        print(f"pcam {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except Terminated:
        print(f"pcam {args.command}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"pcam {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:
        print(f"pcam {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:
        ours = _pipeline_error(error)
        if ours is None:
            raise
        print(f"pcam {args.command}: error: {ours}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        warnings.formatwarning = previous_format
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def run() -> int:
    """The ``pcam`` command: :func:`main`, with TensorFlow's C++ start-up log filtered out.

    See :mod:`pcam.quiet`; ``PCAM_TF_LOG=1`` shows that log.
    """
    from pcam.quiet import filter_tensorflow_log

    filter_tensorflow_log()
    return main()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds (and cleans up) as for Ctrl-C."""


def _terminate_like_interrupt() -> Any:
    """Make SIGTERM raise :class:`Terminated`; returns the previous handler (``None`` if unset).

    Only the main thread of the main interpreter may set handlers; elsewhere (a test runner's
    worker thread) the default stays.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    return signal.signal(signal.SIGTERM, terminate)


def _one_line_warning(command: str) -> Callable[..., str]:
    """A ``warnings.formatwarning`` that prints ``pcam COMMAND: warning: MESSAGE`` only."""

    def format_warning(message: Warning | str, *args: object, **kwargs: object) -> str:
        first = str(message).splitlines()[0] if str(message) else ""
        return f"pcam {command}: warning: {first}\n"

    return format_warning


_OS_HINTS = {
    errno.EACCES: "check the folder's permissions, or choose another path",
    errno.EPERM: "check the folder's permissions, or choose another path",
    errno.EROFS: "the file system is read-only: choose a path on a writable one",
    errno.ENOSPC: "free some space and run the same command again (it starts or resumes cleanly)",
    errno.EDQUOT: "free some space and run the same command again (it starts or resumes cleanly)",
    errno.EFBIG: "the file grew past the size limit (ulimit -f, or the file system's): raise it "
    "or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "a folder is where a file should be: choose another path",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) and run again",
}


def describe_os_error(error: OSError) -> str:
    """One line for an operating-system error: where, what happened, and what to do."""
    where = error.filename if error.filename is not None else ""
    if error.filename2 is not None:
        where = f"{where} -> {error.filename2}"
    reason = error.strerror or (str(error).splitlines() or [type(error).__name__])[0]
    hint = _OS_HINTS.get(error.errno or -1, "check the path and the disk, then run again")
    prefix = f"{where}: " if where else ""
    return f"{prefix}expected a path to read or write, found the system error {reason!r}; {hint}"


def _pipeline_error(error: Exception) -> PCamError | None:
    """The project's own error that a TensorFlow input pipeline wrapped, if ``error`` is one."""
    from pcam.data.pipeline_errors import unwrap_pipeline_error  # imports no TensorFlow

    return unwrap_pipeline_error(error)


@contextmanager
def _progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr for the ``with`` block; yields ``update_to(done)``."""
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=description,
        unit="patch",
        unit_scale=True,
        leave=False,
        file=sys.stderr,
        disable=None,
    )

    def update_to(done: int) -> None:
        bar.update(done - bar.n)

    try:
        yield update_to
    finally:
        bar.close()


def _write_synthetic(
    out_dir: Path,
    splits: Sequence[str],
    n: int,
    *,
    seed: int,
    with_mask: bool,
    chunked: bool = False,
    compression: str | None = None,
    overwrite: bool,
) -> None:
    from pcam.testing.synthetic import refuse_existing, split_outputs, write_split

    if not overwrite:  # refuse before writing anything, not halfway through the splits
        for split in splits:
            refuse_existing(
                split_outputs(
                    out_dir, split, with_meta=True, with_mask=with_mask and split == "train"
                )
            )
    for offset, split in enumerate(splits):
        count = n if split == "train" else max(1, n // 4)
        with _progress(count, f"writing {split}") as update:
            write_split(
                out_dir,
                split,
                count,
                seed=seed + 1000 * offset,
                with_mask=with_mask and split == "train",
                chunked=chunked,
                compression=compression,
                overwrite=overwrite,
                progress=update,
            )


def _run_synth(args: argparse.Namespace) -> int:
    _write_synthetic(
        args.out_dir,
        args.splits,
        args.n,
        seed=args.seed,
        with_mask=args.with_mask,
        chunked=args.chunked,
        compression=args.compression,
        overwrite=args.overwrite,
    )
    print(split_summary([open_split(args.out_dir, split) for split in args.splits]))
    return EXIT_OK


def find_splits(data_dir: Path, split: str | None) -> list[PCamSplit]:
    """Open the named split, or every split whose image file is present in ``data_dir``."""
    if split is not None:
        return [open_split(data_dir, split)]
    if not data_dir.is_dir():
        open_split(data_dir, layout.SPLITS[0])  # raises the one-line error for a bad directory
    present = [s for s in layout.SPLITS if layout.h5_path(data_dir, s, "x").exists()]
    if not present:
        raise MissingFileError(
            data_dir / layout.h5_name("*", "x"),
            "PCam image files",
            "run pcam synth DIR or pcam download DIR first",
            found="none in this directory",
        )
    return [open_split(data_dir, s) for s in present]


def _run_check(args: argparse.Namespace) -> int:
    splits = find_splits(args.data_dir, args.split)
    if not args.deep:
        print(split_summary(splits))
        return EXIT_OK
    seconds = _read_back(splits)  # a damaged file raises before anything is printed
    print(split_summary(splits))
    patches = sum(len(split) for split in splits)
    print(
        f"deep check: every patch, label and mask read back ({patches:,} patches in "
        f"{seconds:.2f} s)"
    )
    return EXIT_OK


def _read_back(splits: Sequence[PCamSplit]) -> float:
    """Read every stored row of ``splits`` with a progress bar each; return the seconds taken."""
    from pcam.data.verify import verify_readable

    began = time.perf_counter()
    for split in splits:
        with _progress(len(split), f"reading {split.split}") as update:
            verify_readable(split, progress=update)
    return time.perf_counter() - began


def _run_train(args: argparse.Namespace) -> int:
    from pcam.train import TrainConfig, train

    config = TrainConfig(
        data=str(args.data),
        out=str(args.out),
        epochs=args.epochs,
        batch_size=args.batch_size,
        model=args.model,
        weights=args.weights,
        freeze_backbone=args.freeze_backbone,
        init=None if args.init is None else str(args.init),
        unfreeze_from=args.unfreeze_from,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        max_train_samples=args.max_train_samples,
        seed=args.seed,
        strategy=args.strategy,
        patience=args.patience,
        overwrite=args.overwrite,
        mixed_precision=args.mixed_precision,
        xla=args.xla,
        deterministic=args.deterministic,
    )
    history = train(config, verbose=2 if not sys.stdout.isatty() else "auto")
    best = min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)
    print(
        f"best validation loss {history['val_loss'][best]:.4f} (accuracy "
        f"{history['val_accuracy'][best]:.4f}, AUC {history['val_auc'][best]:.4f}) in this "
        f"session's epoch {best + 1}; model: {args.out / 'model.keras'}"
    )
    return EXIT_OK


def _run_evaluate(args: argparse.Namespace) -> int:
    from pcam.evaluate import evaluate, format_table

    split = open_split(args.data, args.split)
    work = len(split) * (8 if args.tta else 1)
    with _progress(
        len(split), f"predicting {args.split}" + (" (x8 TTA)" if args.tta else "")
    ) as update:
        report = evaluate(
            args.model,
            args.data,
            args.split,
            args.out,
            batch_size=args.batch_size,
            tta=args.tta,
            threshold=args.threshold,
            bootstrap_rounds=args.bootstrap,
            overwrite=args.overwrite,
            progress=update,
        )
    print(format_table(report))
    written = _listing(args.out)
    print(f"report: {args.out} ({written}); {work:,} predictions")
    return EXIT_OK


def _listing(folder: Path) -> str:
    """The names in ``folder`` a user looks for, comma-separated (hidden files left out)."""
    return ", ".join(sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")))


def _run_explain(args: argparse.Namespace) -> int:
    if (args.data is None) == (not args.images):
        found = "neither" if args.data is None else "both"
        args.usage_error(f"pass either --data DIR (with --split) or IMAGE paths; found {found}")
    if args.split is not None and args.data is None:
        args.usage_error("--split goes with --data DIR, not with IMAGE paths")
    from pcam.explain import explain, format_summary

    with _progress(args.n, "explaining") as update:
        report = explain(
            args.model,
            args.data if args.data is not None else args.images,
            args.out,
            split=(args.split or "valid") if args.data is not None else None,
            n=args.n,
            layer=args.layer,
            method=args.method,
            seed=args.seed,
            threshold=args.threshold,
            overwrite=args.overwrite,
            progress=update,
        )
    print(format_summary(report))
    print(f"grid, overlays and explain.json: {args.out}")
    return EXIT_OK


def _run_predict(args: argparse.Namespace) -> int:
    from pcam.predict import check_output, count_patches, predict, resolve_inputs

    to_stdout = str(args.out) == "-"
    if not to_stdout:
        # before the inputs and the model are read
        check_output(args.out, overwrite=args.overwrite, inputs=[args.model, *args.inputs])
    sources = resolve_inputs(args.inputs)
    with _progress(
        count_patches(sources), "predicting" + (" (x8 TTA)" if args.tta else "")
    ) as update:
        summary = predict(
            args.model,
            sources,
            sys.stdout if to_stdout else args.out,
            tta=args.tta,
            threshold=args.threshold,
            batch_size=args.batch_size,
            fit=args.fit,
            overwrite=args.overwrite,
            progress=update,
        )
    print(summary.line(), file=sys.stderr if to_stdout else sys.stdout)
    return EXIT_OK


def _port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [1, 65535], found {text!r}")
    return value


def _run_app(args: argparse.Namespace) -> int:
    """Run ``streamlit run`` on the app's script in a child process; its status is ours.

    SIGTERM is passed on to the child, so stopping ``pcam app`` stops the server too (Ctrl-C
    reaches both from the terminal). Uploads are limited to
    :data:`pcam.app.logic.MAX_UPLOAD_MB` (Streamlit's ``server.maxUploadSize``), and an
    ``--address`` that is not a loopback address gets a one-line warning on stderr first.
    """
    import importlib.util
    import signal
    import subprocess

    if importlib.util.find_spec("streamlit") is None:
        print(
            "pcam app: error: the web app needs Streamlit, which is not installed; install it "
            "with pip install 'pcam[app]' (Streamlit 1.67 needs Python 3.11 or newer)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    from pcam.app import SCRIPT
    from pcam.app.logic import MAX_UPLOAD_MB, address_warning

    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SCRIPT),
        "--server.address",
        args.address,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--server.maxUploadSize",
        str(MAX_UPLOAD_MB),
        "--",
    ]
    if args.model is not None:
        if not args.model.is_file():  # a bad file's content is reported in the page itself
            raise MissingFileError(
                args.model,
                "a saved pcam model (.keras)",
                "train one with pcam train or pcam demo, or check the path",
                found="a folder" if args.model.is_dir() else "no such file",
            )
        command += ["--model", str(args.model.resolve())]
    warning = address_warning(args.address)
    if warning is not None:
        print(warning, file=sys.stderr)
    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.wait()  # the terminal sent the child SIGINT too: let Streamlit shut down
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


DEMO = "demo"
"""The kind of output folder ``pcam demo`` writes (see :mod:`pcam.outputs`)."""


def _run_demo(args: argparse.Namespace) -> int:
    from pcam.outputs import claim_directory

    claim_directory(args.out, DEMO)  # a folder holding anyone else's files is refused
    data_dir, run_dir, report_dir = args.out / "data", args.out / "run", args.out / "report"
    print(f"1/6 writing synthetic PCam data to {data_dir}")
    _write_synthetic(
        data_dir, layout.SPLITS, args.n, seed=args.seed, with_mask=True, overwrite=True
    )
    print("2/6 checking the files")
    splits = find_splits(data_dir, None)
    print(split_summary(splits))
    train_split = splits[0]
    print("3/6 streaming one shuffled epoch of train and matching every patch to the file")
    problem = _check_permutation(train_split, data_dir, args.batch_size, args.seed)
    if problem:
        print(f"pcam demo: error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    print(f"    all {len(train_split):,} patches arrived once, in a new order, with their labels")
    print(
        f"4/6 training the small model for {args.epochs} epochs "
        "(shuffled, augmented stream; deterministic)"
    )
    from pcam.evaluate import evaluate, format_table
    from pcam.explain import explain, format_summary
    from pcam.train import TrainConfig, train

    started = time.perf_counter()
    history = train(
        TrainConfig(
            data=str(data_dir),
            out=str(run_dir),
            model="small",
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            patience=args.epochs,
            overwrite=True,
            deterministic=True,
        ),
        verbose=2 if not sys.stdout.isatty() else "auto",
    )
    seconds = time.perf_counter() - started
    print(
        f"    {len(history['loss'])} epochs in {seconds:.0f} s; validation accuracy "
        f"{history['val_accuracy'][-1]:.3f}, AUC {history['val_auc'][-1]:.3f}"
    )
    test_split = open_split(data_dir, "test")
    print(f"5/6 evaluating on the {len(test_split):,} test patches the model never saw")
    with _progress(len(test_split), "predicting test") as update:
        report = evaluate(
            run_dir / "model.keras", data_dir, "test", report_dir, overwrite=True, progress=update
        )
    print(format_table(report))
    explain_dir = args.out / "explain"
    print("6/6 explaining 16 train patches with Grad-CAM, against their tumour masks")
    with _progress(16, "explaining") as update:
        # block3_pool (6x6), not the default last layer: each cell of the small model's 3x3
        # map sees the whole patch, and Grad-CAM there does not localise (pointing game at
        # chance); at 6x6 it finds the tumour in most patches
        explained = explain(
            run_dir / "model.keras",
            data_dir,
            explain_dir,
            split="train",
            n=16,
            layer="block3_pool",
            seed=args.seed,
            overwrite=True,
            progress=update,
        )
    print(format_summary(explained))
    written = _listing(report_dir)
    print(f"model and logs: {run_dir}; report: {report_dir} ({written}); Grad-CAM: {explain_dir}")
    print(
        "This model learnt synthetic patches; on real PCam run pcam train --data DIR --out RUN, "
        "then pcam evaluate (see README)."
    )
    return EXIT_OK


def _check_permutation(split: PCamSplit, data_dir: Path, batch_size: int, seed: int) -> str:
    """Stream one shuffled epoch and check it is the split, reordered, labels attached.

    Returns a description of the first problem found, or an empty string.
    """
    from pcam.data.stream import make_dataset

    label_of = {}
    for start in range(0, len(split), 1024):
        images = split.read_images(slice(start, start + 1024))
        for offset, image in enumerate(images):
            label_of[hashlib.blake2b(image.tobytes(), digest_size=16).digest()] = int(
                split.labels[start + offset]
            )
    dataset = make_dataset(data_dir, split.split, batch_size=batch_size, shuffle=True, seed=seed)
    seen: set[bytes] = set()
    position = 0
    with _progress(len(split), "checking the stream") as update:
        for images, labels in dataset.as_numpy_iterator():
            for image, label in zip(images, labels, strict=True):
                key = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
                if key not in label_of:
                    return f"streamed patch {position} is not a patch of the file"
                if key in seen:
                    return f"streamed patch {position} arrived twice"
                if label_of[key] != int(label):
                    return f"streamed patch {position} carries the wrong label"
                seen.add(key)
                position += 1
            update(position)
    if len(seen) != len(label_of):
        return f"the epoch held {len(seen)} distinct patches, the file {len(label_of)}"
    return ""


def _run_fullcheck(args: argparse.Namespace) -> int:
    from pcam.evaluate import format_table
    from pcam.fullcheck import FullCheckConfig, full_check

    config = FullCheckConfig(
        data=str(args.data_dir),
        out=str(args.out),
        model=args.model,
        weights=args.weights,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        max_train_samples=args.max_train_samples,
        eval_split=args.eval_split,
        tta=args.tta,
        min_accuracy=args.min_accuracy,
        min_auc=args.min_auc,
        require_gpu=args.require_gpu,
        seed=args.seed,
        overwrite=args.overwrite,
        two_phase=args.two_phase,
        head_epochs=args.head_epochs,
        head_lr=args.head_lr,
        unfreeze_from=args.unfreeze_from,
    )
    if args.unfreeze_from is not None and not args.two_phase:
        args.usage_error("--unfreeze-from goes with --two-phase")
    with ExitStack() as bars:

        def progress(label: str, total: int) -> Callable[[int], None]:
            return bars.enter_context(_progress(total, label))

        result = full_check(
            config, progress=progress, verbose=2 if not sys.stdout.isatty() else "auto"
        )
    print(format_table(result.metrics))
    print(f"run, report, Grad-CAM grid and fullcheck.json: {args.out}")
    if result.passed:
        accuracy, auc = result.metrics["accuracy"], result.metrics["roc_auc"]
        print(
            f"full training check passed: accuracy {accuracy:.4f} >= {config.min_accuracy:.4f}, "
            f"AUC {auc:.4f} >= {config.min_auc:.4f}"
        )
        return EXIT_OK
    for failure in result.failures:
        print(f"pcam fullcheck: failed: {failure}", file=sys.stderr)
    return EXIT_ERROR


def _run_download(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pcam.download import download

    bars: dict[str, tqdm[NoReturn]] = {}

    def progress(what: str, done: int, total: int | None) -> None:
        bar = bars.get(what)
        if bar is None:
            for old in bars.values():
                old.close()
            bar = bars[what] = tqdm(
                total=total,
                desc=what,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=False,
                file=sys.stderr,
                disable=None,
            )
        bar.update(done - bar.n)

    try:
        results = download(
            args.dest,
            args.splits,
            progress=progress,
            overwrite=args.overwrite,
            keep_gz=args.keep_gz,
            timeout=args.timeout,
        )
    finally:
        for bar in bars.values():
            bar.close()
    for result in results:
        note = "already present, verified, skipped" if result.status == "present" else "verified"
        print(f"{result.path}: {note}")
    return EXIT_OK
