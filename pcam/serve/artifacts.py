"""Exported models in their own runtimes, without Keras: what ``pcam predict`` and the app serve.

``pcam export`` (:mod:`pcam.serve.export`) writes a model as a TensorFlow SavedModel (a folder),
an ONNX file (``.onnx``) or a LiteRT flatbuffer (``.tflite``). Each takes raw ``uint8
[B, 96, 96, 3]`` patches as ``patches`` and returns ``tumour_probability [B]``: the calibrated
probability when the model had a calibration file at export, its own probability otherwise.
:func:`open_artifact` opens one in its runtime (``tf.saved_model.load``, ONNX Runtime, the LiteRT
interpreter); this module never imports Keras, so an ONNX model is served by ONNX Runtime alone.

The export record (``pcam_export.json`` in a SavedModel, ``NAME.pcam.json`` beside a file)
says what the artifact returns: calibrated or not, at which temperature, from which model. A
wrong dtype or shape gets the runtime's own error translated into one line
(:class:`ArtifactInputError`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pcam.data import d4
from pcam.errors import ExpectedFoundError, MissingFileError, UnreadableFileError, first_line

Format = Literal["savedmodel", "onnx", "litert"]
FORMATS: tuple[Format, ...] = ("savedmodel", "onnx", "litert")
"""The formats ``pcam export`` writes, in the order of ``--format``'s choices."""
FILE_SUFFIXES: dict[Format, str] = {"onnx": ".onnx", "litert": ".tflite"}
"""The file suffix of each single-file format (a SavedModel is a folder)."""
INPUT_NAME = "patches"
OUTPUT_NAME = "tumour_probability"
RECORD_NAME = "pcam_export.json"
"""The export record inside a SavedModel folder; beside a file it is ``NAME.pcam.json``."""
RECORD_KIND = "pcam-export"
SERVING_ENDPOINT = "serving_default"
EXPLAIN_ENDPOINT = "explain"
INPUT_SHAPE = (96, 96, 3)
EXPECTED_INPUT = "uint8 patches of shape [B, 96, 96, 3]"


class ArtifactInputError(ExpectedFoundError, ValueError):
    """An exported model's runtime refused the patches it was given (a wrong dtype or shape)."""

    def __init__(self, path: Path, found: str, runtime_error: str) -> None:
        super().__init__(
            path,
            EXPECTED_INPUT,
            f"{found} ({runtime_error})",
            "pass raw uint8 RGB patches, 96x96, in a batch",
        )


def record_path(artifact: Path) -> Path:
    """Where the export record of ``artifact`` is (inside a folder, beside a file)."""
    if artifact.is_dir():
        return artifact / RECORD_NAME
    return artifact.with_name(artifact.name + ".pcam.json")


def read_record(artifact: Path) -> dict[str, Any] | None:
    """The export record of ``artifact``, or ``None`` when it has none or an unreadable one."""
    try:
        record = json.loads(record_path(artifact).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("kind") == RECORD_KIND else None


def format_of(path: Path) -> Format | None:
    """The export format of ``path``: a folder with ``saved_model.pb``, ``.onnx``, ``.tflite``.

    ``None`` for anything else (a ``.keras`` model, say).
    """
    if path.is_dir():
        return "savedmodel" if (path / "saved_model.pb").is_file() else None
    suffix = path.suffix.lower()
    for name, expected in FILE_SUFFIXES.items():
        if suffix == expected:
            return name
    return None


def is_artifact(path: Path) -> bool:
    """Whether ``path`` names an exported model (SavedModel folder, ``.onnx`` or ``.tflite``)."""
    return format_of(Path(path)) is not None


@dataclass
class Artifact:
    """An exported model opened in its runtime: ``probabilities(images) -> [B]`` float64."""

    path: Path
    format: Format
    run: Callable[[npt.NDArray[Any]], npt.NDArray[Any]]
    runtime: str
    record: dict[str, Any] | None = field(default=None)

    @property
    def calibrated(self) -> bool:
        """Whether the artifact returns calibrated probabilities (its record says so)."""
        return bool(self.record and self.record.get("probabilities", {}).get("calibrated"))

    def describe(self) -> str:
        """What the probabilities are, for a summary line (as a ``.keras`` model's say)."""
        if self.record is None:
            return f"probabilities of an exported {self.format} model without a pcam export record"
        temperature = float(self.record.get("probabilities", {}).get("temperature", 1.0))
        if self.calibrated:
            return (
                f"calibrated probabilities (temperature {temperature:.4g}, built into the "
                f"exported {self.format} model)"
            )
        return f"uncalibrated probabilities (the exported {self.format} model's own)"

    def probabilities(
        self, images: npt.NDArray[Any], *, tta: bool = False
    ) -> npt.NDArray[np.float64]:
        """Tumour probabilities ``[B]`` of ``uint8 [B, 96, 96, 3]`` patches, from the runtime.

        With ``tta`` the 8 symmetries of the square are predicted and averaged (8 calls), as
        :func:`pcam.model.inference.tumour_probabilities` does.
        """
        views = [images]
        if tta:
            views = [d4.apply_one(images, code) for code in range(d4.NUM_SYMMETRIES)]
        scores = [self._run_checked(np.ascontiguousarray(view)) for view in views]
        mean: npt.NDArray[np.float64] = np.mean(np.asarray(scores, dtype=np.float64), axis=0)
        return mean

    def _run_checked(self, images: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        found = f"{np.asarray(images).dtype} of shape {list(np.shape(images))}"
        if np.ndim(images) != 4 or tuple(np.shape(images)[1:]) != INPUT_SHAPE:
            # SavedModel and LiteRT runtimes would run a fully convolutional model on any size
            raise ArtifactInputError(self.path, found, "the model was exported for 96x96 patches")
        try:
            result = self.run(images)
        except Exception as error:  # each runtime raises its own kinds for a bad input
            raise ArtifactInputError(self.path, found, first_line(error, limit=160)) from None
        return np.asarray(result, dtype=np.float64).reshape(-1)


def open_artifact(path: Path | str) -> Artifact:
    """Open an exported model in its own runtime, with one-line errors for a bad path or file."""
    location = Path(path)
    if not location.exists():
        raise MissingFileError(
            location,
            "an exported model (a SavedModel folder, .onnx or .tflite)",
            "export one with pcam export, or check the path",
        )
    kind = format_of(location)
    if kind is None:
        raise UnreadableFileError(
            location,
            "an exported model (a SavedModel folder, .onnx or .tflite)",
            "a folder without saved_model.pb" if location.is_dir() else "another kind of file",
            "export one with pcam export",
        )
    opener = {"savedmodel": _open_saved_model, "onnx": _open_onnx, "litert": _open_litert}[kind]
    try:
        run, runtime = opener(location)
    except ImportError as error:
        raise UnreadableFileError(
            location,
            f"a runtime for {kind} models",
            f"none installed ({first_line(error, limit=100)})",
            "install pcam's export extra: pip install 'pcam[export]'",
        ) from None
    except Exception as error:  # a damaged or foreign file: each runtime has its own errors
        raise UnreadableFileError(
            location,
            f"an exported {kind} model",
            f"one its runtime cannot load ({first_line(error, limit=160)})",
            "export the model again with pcam export",
        ) from None
    return Artifact(location, kind, run, runtime, read_record(location))


def _open_saved_model(path: Path) -> tuple[Callable[[npt.NDArray[Any]], Any], str]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures[SERVING_ENDPOINT]

    def run(images: npt.NDArray[Any]) -> Any:
        return serve(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()

    return run, f"tf.saved_model (TensorFlow {tf.__version__})"


def _open_onnx(path: Path) -> tuple[Callable[[npt.NDArray[Any]], Any], str]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_names = [output.name for output in session.get_outputs()]
    wanted = [OUTPUT_NAME] if OUTPUT_NAME in output_names else output_names[:1]

    def run(images: npt.NDArray[Any]) -> Any:
        return session.run(wanted, {input_name: images})[0]

    return run, f"ONNX Runtime {onnxruntime.__version__}"


def _open_litert(path: Path) -> tuple[Callable[[npt.NDArray[Any]], Any], str]:
    from ai_edge_litert import __version__ as litert_version
    from ai_edge_litert.interpreter import Interpreter

    # every core, as TensorFlow and ONNX Runtime use (the interpreter's default is one thread)
    interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
    runner = interpreter.get_signature_runner(SERVING_ENDPOINT)
    input_name = next(iter(runner.get_input_details()))
    output_names = list(runner.get_output_details())
    wanted = OUTPUT_NAME if OUTPUT_NAME in output_names else output_names[0]

    def run(images: npt.NDArray[Any]) -> Any:
        return runner(**{input_name: images})[wanted]

    return run, f"LiteRT {litert_version}"
