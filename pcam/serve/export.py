"""``pcam export``: a model as a SavedModel, ONNX or LiteRT artifact, checked in its own runtime.

Every artifact takes raw ``uint8 [B, 96, 96, 3]`` patches (input ``patches``) and returns
``tumour_probability [B]``: ``sigmoid(log-odds / T)`` at the temperature of the model's
calibration file (:mod:`pcam.model.temperature`), or the model's own probability (``T = 1``)
when it has none. The export goes through Keras 3's own ``model.export`` for ONNX (tf2onnx) and
LiteRT, and through its ``ExportArchive`` for the SavedModel, which gets a second signature,
``explain``: ``tumour_logit [B]`` (the raw log-odds), ``tumour_probability [B]`` and ``gradcam
[B, h, w]``, the Grad-CAM map of the tumour class at the default layer
(:class:`pcam.explain.gradcam.GradCAM`), so a server can explain without Keras.

Two workarounds, both small: the model is exported as a float32 copy (a ``mixed_float16``
model's float16 multiplications are not LiteRT built-in operations, and a CPU runtime gains
nothing from them), and the probability is computed by a layer of its own from the features
entering the head, so the temperature is part of the artifact.

Before an artifact is put in place it is opened in its own runtime (:mod:`pcam.serve.artifacts`)
and must give the Keras model's probabilities on :data:`PARITY_PATCHES` patches within
:data:`PARITY_TOLERANCE`; the figures go into the export record.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

import pcam
from pcam.errors import (
    InvalidArgumentError,
    OutputExistsError,
    PCamError,
    UnsafeOutputError,
    first_line,
)
from pcam.explain.gradcam import GradCAM
from pcam.model.architectures import load_model
from pcam.model.heads import Head, head_of
from pcam.model.inference import tumour_probabilities
from pcam.model.temperature import calibration_of, file_digest
from pcam.outputs import (
    atomic_path,
    check_writable,
    refuse_existing_directory,
    staged_directory,
    write_json_atomically,
)
from pcam.serve.artifacts import (
    EXPLAIN_ENDPOINT,
    FILE_SUFFIXES,
    FORMATS,
    INPUT_NAME,
    INPUT_SHAPE,
    OUTPUT_NAME,
    RECORD_KIND,
    RECORD_NAME,
    SERVING_ENDPOINT,
    Format,
    open_artifact,
    read_record,
    record_path,
)

PARITY_PATCHES = 64
"""How many patches (seeded noise) an export is checked on, at batch 64 and batch 1."""
PARITY_TOLERANCE = 1e-5
"""The largest difference from the Keras model's probabilities an export may have."""
MIXED_PRECISION_TOLERANCE = 5e-3
"""The tolerance for a ``mixed_float16`` model, exported in float32 (float16 rounding)."""
EXPORT_KIND = "export"


class TumourProbability(keras.layers.Layer):  # type: ignore[misc]
    """``sigmoid(log-odds / temperature)`` from the features ``[B, d]`` entering a pcam head.

    The log-odds are the head's one logit, or tumour's minus normal's for a two-unit head (the
    softmax's column 1 is the sigmoid of that difference), computed in float32 from a copy of
    the head's kernel and bias.
    """

    def __init__(
        self, kernel: npt.ArrayLike, bias: npt.ArrayLike, temperature: float, **kwargs: Any
    ) -> None:
        super().__init__(dtype="float32", **kwargs)
        kernel_array = np.asarray(kernel, dtype=np.float32)
        bias_array = np.asarray(bias, dtype=np.float32)
        self.kernel = self.add_weight(
            shape=kernel_array.shape,
            initializer=keras.initializers.Constant(kernel_array),
            trainable=False,
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=bias_array.shape,
            initializer=keras.initializers.Constant(bias_array),
            trainable=False,
            name="bias",
        )
        self.units = int(kernel_array.shape[-1])
        self.temperature = float(temperature)

    def call(self, features: Any) -> Any:
        """The calibrated tumour probability ``[B]``."""
        logits = keras.ops.matmul(keras.ops.cast(features, "float32"), self.kernel) + self.bias
        log_odds = logits[:, 0] if self.units == 1 else logits[:, 1] - logits[:, 0]
        return keras.ops.sigmoid(log_odds / self.temperature)


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` itself when it computes in float32; else a float32 copy with its weights."""
    if all(_policy_name(layer) in ("float32", None) for layer in _all_layers(model)):
        return model
    config = _float32_config(model.get_config())
    from pcam.stain.layers import ColourAugmentation

    copy = keras.Model.from_config(
        config, custom_objects={"ColourAugmentation": ColourAugmentation, **_custom(model)}
    )
    copy.set_weights(model.get_weights())
    return copy


def serving_model(model: keras.Model) -> keras.Model:
    """The model as exported: ``patches`` (uint8) to ``{"tumour_probability": [B]}``.

    Float32, at the temperature of the model's calibration (1 without one).
    """
    computing = float32_copy(model)
    head = head_of(computing)
    features = keras.Model(computing.inputs[0], head.dense.input, name="pcam_features")
    patches = keras.Input(shape=INPUT_SHAPE, dtype="uint8", name=INPUT_NAME)
    probability = TumourProbability(
        head.dense.kernel.numpy(),
        _bias(head),
        calibration_of(model).temperature,
        name=OUTPUT_NAME,
    )(features(patches))
    serving = keras.Model(patches, {OUTPUT_NAME: probability}, name=f"{model.name}_serving")
    serving(np.zeros((1, *INPUT_SHAPE), np.uint8), training=False)  # Keras exports called models
    return serving


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and its record (format, calibration, parity figures)."""

    path: Path
    record: dict[str, Any]

    def line(self) -> str:
        """The one summary line ``pcam export`` prints."""
        parity = self.record["parity"]
        return (
            f"exported {self.record['format']} to {self.path}: {OUTPUT_NAME} "
            f"({self.record['probabilities']['describe']}); parity with Keras on "
            f"{parity['patches']} patches in {parity['runtime']}: max |difference| "
            f"{parity['max_abs_difference']:.2e} (tolerance {parity['tolerance']:g})"
        )


def export_model(
    model_path: Path | str,
    format: Format,
    out: Path | str,
    *,
    overwrite: bool = False,
    calibration: bool = True,
) -> ExportResult:
    """Export the saved model at ``model_path`` as ``format`` to ``out``, checked, atomically.

    ``out`` is a new (or empty) folder for a SavedModel, a ``.onnx`` or ``.tflite`` file
    otherwise. ``overwrite`` replaces only an earlier export of pcam's. The model's calibration
    file is built in unless ``calibration`` is false.
    """
    if format not in FORMATS:
        raise InvalidArgumentError("format", f"one of {', '.join(FORMATS)}", format)
    source, destination = Path(model_path), Path(out)
    check_destination(destination, format, overwrite=overwrite, inputs=[source])
    model = load_model(source, calibration=calibration)
    serving = serving_model(model)
    record = _base_record(model, source, format)
    if format == "savedmodel":
        with staged_directory(destination, EXPORT_KIND) as staging:
            cam = _write_saved_model(model, serving, staging)
            record["signatures"] = _signature_record(cam)
            record["parity"] = _parity(model, staging, format)
            write_json_atomically(staging / RECORD_NAME, record)
    else:
        with atomic_path(destination, suffix=FILE_SUFFIXES[format]) as temporary:
            with _converter_needed(format), _quiet():
                serving.export(str(temporary), format=format, verbose=False)
                if format == "onnx":
                    _name_onnx_output(temporary)
            record["parity"] = _parity(model, temporary, format)
            record["sha256"] = file_digest(temporary)
        write_json_atomically(record_path(destination), record)
    return ExportResult(destination, record)


def check_destination(
    destination: Path, format: Format, *, overwrite: bool, inputs: list[Path]
) -> None:
    """Raise unless ``destination`` may receive a ``format`` export (before any work)."""
    if format == "savedmodel":
        if destination.suffix.lower() in (".onnx", ".tflite", ".keras"):
            raise InvalidArgumentError(
                "--out", "a folder for the SavedModel (no file suffix)", str(destination)
            )
        refuse_existing_directory(destination, overwrite=overwrite, kind=EXPORT_KIND, inputs=inputs)
        return
    suffix = FILE_SUFFIXES[format]
    if destination.suffix.lower() != suffix:
        raise InvalidArgumentError(
            "--out", f"a file ending in {suffix} for {format}", str(destination)
        )
    if destination.is_dir():
        raise UnsafeOutputError(destination, f"a {suffix} file", "a folder")
    if destination.exists():
        if not overwrite:
            raise OutputExistsError(destination)
        record = read_record(destination)
        if record is None or record.get("sha256") != file_digest(destination):
            raise UnsafeOutputError(
                destination,
                f"a {suffix} file pcam export wrote (recorded in {record_path(destination).name})",
                "a file pcam did not write, or one changed since",
            )
    check_writable(destination.parent)


def _write_saved_model(model: keras.Model, serving: keras.Model, folder: Path) -> GradCAM:
    """The SavedModel: ``serving_default`` (the probability) and ``explain`` (logit, Grad-CAM).

    Returns the Grad-CAM the ``explain`` signature runs.
    """
    cam = GradCAM(float32_copy(model))
    temperature = calibration_of(model).temperature
    spec = tf.TensorSpec((None, *INPUT_SHAPE), tf.uint8, name=INPUT_NAME)
    archive = keras.export.ExportArchive()
    archive.track(serving)
    archive.track(cam.model)

    def serve(patches: tf.Tensor) -> dict[str, tf.Tensor]:
        patches = tf.ensure_shape(patches, (None, *INPUT_SHAPE))  # refuse other sizes in-graph
        return {OUTPUT_NAME: serving(patches, training=False)[OUTPUT_NAME]}

    def explain(patches: tf.Tensor) -> dict[str, tf.Tensor]:
        patches = tf.ensure_shape(patches, (None, *INPUT_SHAPE))
        maps, logits = cam.maps_and_logits(patches, tf.constant(1, tf.int32))
        log_odds = logits[:, 0] if cam.head.units == 1 else logits[:, 1] - logits[:, 0]
        return {
            "tumour_logit": log_odds,
            OUTPUT_NAME: tf.sigmoid(log_odds / temperature),
            "gradcam": maps[0],
        }

    archive.add_endpoint(SERVING_ENDPOINT, serve, input_signature=[spec])
    archive.add_endpoint(EXPLAIN_ENDPOINT, explain, input_signature=[spec])
    with _quiet():
        archive.write_out(str(folder), verbose=False)
    return cam


def _parity(model: keras.Model, artifact: Path, format: Format) -> dict[str, Any]:
    """Open the artifact in its runtime; its probabilities must match Keras' (batch 64 and 1)."""
    images = np.random.default_rng(0).integers(
        0, 256, (PARITY_PATCHES, *INPUT_SHAPE), dtype=np.uint8
    )
    opened = open_artifact(artifact)
    expected = tumour_probabilities(model, images)
    batched = opened.probabilities(images)
    single = np.concatenate([opened.probabilities(images[i : i + 1]) for i in range(4)])
    difference = float(
        max(np.max(np.abs(batched - expected)), np.max(np.abs(single - expected[:4])))
    )
    tolerance = PARITY_TOLERANCE if not _mixed(model) else MIXED_PRECISION_TOLERANCE
    if not difference <= tolerance:
        raise ExportParityError(artifact, format, difference, tolerance)
    return {
        "patches": PARITY_PATCHES,
        "batch_sizes": [PARITY_PATCHES, 1],
        "max_abs_difference": difference,
        "tolerance": tolerance,
        "runtime": opened.runtime,
    }


class MissingConverterError(PCamError, ImportError):
    """The converter or runtime of an export format is not installed (the ``export`` extra)."""

    def __init__(self, format: Format, missing: str) -> None:
        super().__init__(
            f"{format} export: expected its converter and runtime installed, found {missing}; "
            "install pcam's export extra: pip install 'pcam[export]'"
        )


@contextlib.contextmanager
def _converter_needed(format: Format) -> Iterator[None]:
    """Turn a missing converter (tf2onnx, onnx) into one line naming the ``export`` extra."""
    try:
        yield
    except ImportError as error:
        raise MissingConverterError(format, first_line(error, limit=120)) from None


class ExportParityError(InvalidArgumentError):
    """An exported artifact's probabilities differ from the Keras model's beyond the tolerance."""

    def __init__(self, path: Path, format: Format, difference: float, tolerance: float) -> None:
        super().__init__(
            f"{format} export",
            f"the Keras model's probabilities within {tolerance:g}",
            f"a max difference of {difference:.3g} in {path.name}; nothing was written, please "
            "report it",
        )


def _base_record(model: keras.Model, source: Path, format: Format) -> dict[str, Any]:
    calibration = calibration_of(model)
    return {
        "kind": RECORD_KIND,
        "pcam_version": pcam.__version__,
        "format": format,
        "source_model": str(source),
        "source_sha256": file_digest(source),
        "model_name": model.name,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [None, *INPUT_SHAPE]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None]},
        "probabilities": {**calibration.as_json(), "describe": calibration.describe()},
        "mixed_precision": _mixed(model),
        "computes_in": "float32",
    }


def _signature_record(cam: GradCAM) -> dict[str, Any]:
    return {
        SERVING_ENDPOINT: {"inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME]},
        EXPLAIN_ENDPOINT: {
            "inputs": [INPUT_NAME],
            "outputs": ["tumour_logit", OUTPUT_NAME, "gradcam"],
            "gradcam_layer": cam.layer_names[0],
            "gradcam_method": cam.method,
            "gradcam_class": "tumour (1)",
        },
    }


def _name_onnx_output(path: Path) -> None:
    """Rename the ONNX graph's output (``Identity:0`` from tf2onnx) to ``tumour_probability``."""
    import onnx

    graph_model = onnx.load(str(path))
    old = graph_model.graph.output[0].name
    if old != OUTPUT_NAME:
        for node in graph_model.graph.node:
            node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
        graph_model.graph.output[0].name = OUTPUT_NAME
    onnx.save(graph_model, str(path))


def _mixed(model: keras.Model) -> bool:
    return any((_policy_name(layer) or "").startswith("mixed") for layer in _all_layers(model))


def _all_layers(model: keras.Model) -> Iterator[Any]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _policy_name(layer: Any) -> str | None:
    policy = getattr(layer, "dtype_policy", None)
    return None if policy is None else str(getattr(policy, "name", policy))


def _float32_config(node: Any) -> Any:
    """A model config with every mixed dtype policy replaced by float32."""
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy" and str(
            node.get("config", {}).get("name", "")
        ).startswith("mixed"):
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {key: _float32_config(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_float32_config(value) for value in node]
    return node


def _custom(model: keras.Model) -> dict[str, Any]:
    return {type(layer).__name__: type(layer) for layer in _all_layers(model)}


def _bias(head: Head) -> npt.NDArray[np.float32]:
    if head.dense.use_bias:
        return np.asarray(head.dense.bias.numpy(), dtype=np.float32)
    return np.zeros((head.units,), dtype=np.float32)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what the converters print on standard output (``Saved artifact at ...``)."""
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        warnings.catch_warnings(),
    ):
        # keras' tf2onnx patch probes numpy.object, which NumPy 2 answers with a FutureWarning
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield
