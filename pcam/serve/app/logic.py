"""What the web app does, as plain functions without Streamlit, so tests can call them directly.

- :func:`find_model` picks the model: ``--model PATH``, else the demo model ``pcam demo`` wrote
  under the working directory (:data:`DEMO_MODEL`), else a one-line error saying what to run.
- :func:`load_classifier` loads it once (the page caches the result), checks that it takes
  ``[B, 96, 96, 3]`` patches and gives ``[B, 1]`` probabilities, and warms it up so that the
  first timed prediction does not pay for tracing.
- :func:`decode_upload` turns an upload into a patch, a request to choose how to fit an image
  that is not 96x96 (centre-crop or resize: never done silently), or a one-line error. An
  upload over :data:`MAX_UPLOAD_MB` is refused unread; the rest are decoded once per content
  (their SHA-256), name and fit, and remembered (the last :data:`UPLOAD_CACHE_ENTRIES`, for
  every session of the server), so a rerun (a slider move) and a fit choice decode nothing
  again; an image too large or of the wrong size is refused from its header
  (:mod:`pcam.data.patch_io`).
- :func:`predict` classifies all the patches in batches of up to :data:`BATCH_SIZE` (one model
  call for a usual upload) and times the model calls; the time per patch it reports is the
  batch's time divided by its number of patches, and is labelled so. With a stain reference
  (``pcam app --stain-normalise``, handed over in :data:`pcam.serve.app.STAIN_REFERENCE_ENV`)
  the patches are stain-normalised before the model, and Grad-CAM, sees them (not timed).
- :func:`gradcam_maps`, :func:`select_maps` and :func:`overlays` give the Grad-CAM overlays;
  :func:`make_rows` and :func:`rows_to_csv` the batch table and its CSV, whose text cells are
  neutralised as ``pcam predict``'s are (:func:`pcam.serve.predict.csv_text`).
- :func:`markdown_text` escapes an upload's name before the page puts it into Markdown;
  :func:`address_warning` is the warning ``pcam app`` prints for an address other machines can
  reach.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import os
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt

from pcam import layout
from pcam.data.patch_io import EXPECTED, FitMode, PatchSizeError, decode_patch
from pcam.errors import (
    InvalidArgumentError,
    MissingFileError,
    PCamError,
    UnreadableFileError,
    first_line,
)
from pcam.model import heads
from pcam.serve.predict import csv_text

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pcam.stain.macenko import StainNormaliser

DEMO_MODEL: Final = Path("pcam-demo") / "run" / "model.keras"
"""Where ``pcam demo`` (default ``--out``) leaves its model, relative to the working directory."""

PREFERRED_LAYER: Final = "block3_pool"
"""Grad-CAM layer offered first when the model has it (the small CNN's 6x6 map; see README)."""

DEFAULT_THRESHOLD: Final = heads.DEFAULT_THRESHOLD
"""Probability at or above which a patch is labelled tumour, unless the user moves it."""

BATCH_SIZE: Final = 64
"""Patches per model call: a usual upload is one call."""

MAX_UPLOAD_MB: Final = 4
"""Largest upload, in megabytes of 2**20 bytes (Streamlit's unit): ``pcam app`` passes it to
Streamlit as ``--server.maxUploadSize`` (its default is 200), the page to its file uploader, and
:func:`decode_upload` refuses anything larger. A 96x96 patch is at most 28 KB in any format
(27,648 bytes of RGB); 4 MB leaves room for a larger tile to crop or resize (a 2048x2048
JPEG, a 1024x1024 PNG of noise) and keeps a few uploads far from the server's memory limits."""

MAX_UPLOAD_BYTES: Final = MAX_UPLOAD_MB * 1024 * 1024
""":data:`MAX_UPLOAD_MB` in bytes."""

UPLOAD_CACHE_ENTRIES: Final = 256
"""Decoded uploads remembered (each a 96x96 patch, 27 KB, or a one-line error): 7 MB at most."""

CSV_COLUMNS: Final = ("file", "probability", "label", "inference_ms", "note")
"""Columns of the batch table and of its CSV."""

FIT_LABELS: Final[dict[str, str]] = {
    "crop": "centre-crop to 96x96",
    "resize": "resize to 96x96",
}
"""How the two ways of fitting an image are offered to the user."""

Target = Literal["predicted", "tumour", "normal"]
TARGETS: Final[dict[str, str]] = {
    "predicted": "the predicted label",
    "tumour": "tumour",
    "normal": "normal",
}
"""The class whose evidence an overlay shows, and how it is named to the user."""

_SIDE: Final = layout.PATCH_SIZE
_MODEL_EXPECTED: Final = "a pcam classifier (.keras): uint8 [B, 96, 96, 3] in, [B, 1] out"
_MODEL_HINT: Final = "pass a model trained by pcam train or pcam demo"


# -- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """The model file the app uses; ``demo`` when it is the one ``pcam demo`` trained."""

    path: Path
    demo: bool
    calibration: bool = True
    """Whether the model's calibration file (when present) sets the probabilities."""

    @property
    def stamp(self) -> tuple[int, ...]:
        """What the loaded model depends on, for the page's caches: a change reloads it.

        ``(mtime_ns, size)`` of the model file, 1 or 0 for :attr:`calibration`, then
        ``(mtime_ns, size)`` of its calibration file (zeros when absent or not used).
        """
        from pcam.model.temperature import calibration_path

        sidecar = _file_stamp(calibration_path(self.path)) if self.calibration else (0, 0)
        return (*_file_stamp(self.path), int(self.calibration), *sidecar)


def _file_stamp(path: Path) -> tuple[int, int]:
    """``(mtime_ns, size)`` of a file, ``(0, 0)`` when absent."""
    try:
        info = path.stat()
    except OSError:
        return (0, 0)
    return (info.st_mtime_ns, info.st_size)


def find_model(
    model: str | os.PathLike[str] | None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    calibration: bool = True,
) -> ModelSource:
    """The model to use: ``model`` when given, else the demo model under ``cwd`` if present.

    ``calibration`` is false when the model's calibration file is to be ignored.

    Raises :class:`pcam.errors.MissingFileError` (one line: what to run) when neither is there.
    Whether ``model`` is a loadable file is :func:`load_classifier`'s business.
    """
    if model is not None and str(model) != "":
        return ModelSource(Path(model).expanduser(), demo=False, calibration=calibration)
    demo = Path(cwd if cwd is not None else Path.cwd()) / DEMO_MODEL
    if demo.is_file():
        return ModelSource(demo, demo=True, calibration=calibration)
    raise MissingFileError(
        demo,
        "a model: the demo model pcam demo trains, or one passed with --model",
        "run pcam demo here first (about a minute and a half on a CPU), or start the app with "
        "pcam app --model RUN_DIR/model.keras",
    )


@dataclass(eq=False)
class Classifier:
    """A loaded, checked and warmed-up model, with its Grad-CAM candidate layers."""

    path: Path
    model: Any
    layers: tuple[tuple[str, tuple[int, int]], ...]
    """``(name, (height, width))`` of every spatial layer, in order (Grad-CAM candidates)."""
    parameters: int
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Held around every model call: app sessions share one model and run in threads."""
    normaliser: StainNormaliser | None = None
    """Stain normalisation applied to the patches before the model sees them (or none)."""

    @property
    def probabilities(self) -> str:
        """Which probabilities the model gives (calibrated or not, and why), and of what patches.

        With a :attr:`normaliser`, its description follows: the patches were stain-normalised.
        """
        from pcam.serve.predict import describe_probabilities

        described = describe_probabilities(self.model)
        if self.normaliser is None:
            return described
        return f"{described}; {self.normaliser.describe()}"

    def prepare(self, patches: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """The patches as the model sees them: stain-normalised when there is a normaliser."""
        return patches if self.normaliser is None else self.normaliser(patches)

    @property
    def default_layer(self) -> str | None:
        """:data:`PREFERRED_LAYER` when the model has it, else the last spatial layer."""
        names = [name for name, _ in self.layers]
        if PREFERRED_LAYER in names:
            return PREFERRED_LAYER
        return names[-1] if names else None


def stain_normaliser_from_environment(
    environ: Mapping[str, str] | None = None,
) -> StainNormaliser | None:
    """The stain normaliser ``pcam app --stain-normalise`` handed the page, or ``None``.

    Read from :data:`pcam.serve.app.STAIN_REFERENCE_ENV` (``environ`` defaults to
    ``os.environ``); a value that is not a reference pcam wrote is a one-line
    :class:`pcam.errors.PCamError`. The normaliser does not warn (a server has no one to tell).
    """
    import json

    from pcam.serve.app import STAIN_REFERENCE_ENV
    from pcam.stain.macenko import StainNormaliser

    text = (os.environ if environ is None else environ).get(STAIN_REFERENCE_ENV)
    if not text:
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgumentError(
            STAIN_REFERENCE_ENV, "the JSON of a stain reference", f"invalid JSON ({error})"
        ) from None
    return StainNormaliser.from_dict(values, where=STAIN_REFERENCE_ENV, warn=False)


def load_classifier(
    path: str | os.PathLike[str],
    *,
    calibration: bool = True,
    normaliser: StainNormaliser | Literal["environment"] | None = "environment",
) -> Classifier:
    """Load a saved model and check it is a PCam classifier; one-line errors for bad files.

    With ``calibration`` the model's calibration file, when present, sets its probabilities
    (:func:`pcam.model.architectures.load_model`); a file that does not match is one line too.
    ``normaliser`` stain-normalises the patches before the model sees them; by default it is
    the one ``pcam app --stain-normalise`` handed over (:func:`stain_normaliser_from_environment`).
    """
    if isinstance(normaliser, str):  # "environment"
        normaliser = stain_normaliser_from_environment()
    from pcam.serve.artifacts import is_artifact

    if is_artifact(Path(path)):
        return _load_exported(Path(path), calibration=calibration, normaliser=normaliser)
    from pcam.explain.gradcam import spatial_layers
    from pcam.model.architectures import load_model
    from pcam.model.inference import tumour_probabilities

    model_path = Path(path)
    # one-line errors; input, output, head and calibration file checked
    model = load_model(model_path, calibration=calibration)
    try:
        # trace the predict function for a batch of one and of several, as predict() calls it
        for size in (1, 2):
            tumour_probabilities(model, np.zeros((size, *layout.IMAGE_SHAPE), dtype=np.uint8))
        inputs = {layer.name for layer in model.layers if type(layer).__name__ == "InputLayer"}
        # the input layer holds uint8 pixels, which have no gradient: not a Grad-CAM candidate
        layers = tuple(item for item in spatial_layers(model) if item[0] not in inputs)
        parameters = int(model.count_params())
    except Exception as error:  # a model that loads but cannot run, whatever Keras raises
        raise UnreadableFileError(
            model_path,
            _MODEL_EXPECTED,
            f"a model that fails on a patch ({first_line(error)})",
            _MODEL_HINT,
        ) from None
    return Classifier(
        path=model_path, model=model, layers=layers, parameters=parameters, normaliser=normaliser
    )


def _load_exported(
    path: Path, *, calibration: bool, normaliser: StainNormaliser | None
) -> Classifier:
    """An exported model (SavedModel, ONNX, LiteRT) in its runtime: probabilities, no Grad-CAM."""
    from pcam.serve.predict import load_for_serving

    artifact = load_for_serving(path, calibration=calibration)
    for size in (1, 2):  # the runtime's first calls, and a wrong model, before any upload
        artifact.probabilities(np.zeros((size, *layout.IMAGE_SHAPE), dtype=np.uint8))
    return Classifier(path=path, model=artifact, layers=(), parameters=0, normaliser=normaliser)


def model_size(classifier: Classifier) -> str:
    """``"N parameters"``, or for an exported model, which runtime runs it."""
    runtime = getattr(classifier.model, "runtime", None)
    if runtime is not None:
        return f"an exported {classifier.model.format} model, run by {runtime}"
    return f"{classifier.parameters:,} parameters"


def no_gradcam_reason(classifier: Classifier) -> str:
    """Why a model has no Grad-CAM layer to offer (exported, or no spatial layer)."""
    if getattr(classifier.model, "runtime", None) is not None:
        return (
            "an exported model serves probabilities only (start the app with the .keras model "
            "for maps; a SavedModel's explain signature gives the tumour map to servers)"
        )
    return "it has no spatial layer"


# -- uploads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """One decoded upload: a patch, or an image waiting for a fit choice, or an error.

    ``size`` is ``(width, height)`` of an image that is not 96x96 (whether or not it has been
    fitted yet); ``note`` says how it was fitted; ``error`` is a one-line message.
    """

    name: str
    patch: npt.NDArray[np.uint8] | None = None
    note: str | None = None
    error: str | None = None
    size: tuple[int, int] | None = None

    @property
    def needs_fit(self) -> bool:
        """An image that is not 96x96 and has not been fitted (no choice made yet)."""
        return self.patch is None and self.error is None and self.size is not None


def fit_choices(width: int, height: int) -> tuple[FitMode, ...]:
    """The ways an image of this size can be fitted: centre-crop needs both sides >= 96."""
    return ("crop", "resize") if min(width, height) >= _SIDE else ("resize",)


def decode_upload(name: str, data: bytes, fit: FitMode | None = None) -> Upload:
    """Decode an upload with :func:`pcam.data.patch_io.decode_patch`; never raises.

    A 96x96 image becomes a patch. An image of another size needs ``fit`` (``"crop"`` or
    ``"resize"``): without it the result only carries its size (:attr:`Upload.needs_fit`).
    A file that is not a readable RGB image, or is larger than :data:`MAX_UPLOAD_MB`, gives
    :attr:`Upload.error`, one line. The result is remembered by the SHA-256 of ``data``, the
    name and the fit (the last :data:`UPLOAD_CACHE_ENTRIES`), so the same upload is decoded
    once however often the page runs; its patch is read-only.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        return Upload(
            name,
            error=f"{name}: expected {EXPECTED} of at most {MAX_UPLOAD_MB} MB "
            f"({MAX_UPLOAD_BYTES:,} bytes), found {len(data):,} bytes; cut out the 96x96 patch "
            "and upload that",
        )
    return _decode_remembered(hashlib.sha256(data).hexdigest(), name, data, fit)


def clear_upload_cache() -> None:
    """Forget every decoded upload (the next :func:`decode_upload` of each decodes again)."""
    with _UPLOADS_LOCK:
        _UPLOADS.clear()


_UPLOADS: Final[OrderedDict[tuple[str, str, str], Upload]] = OrderedDict()
"""Decoded uploads by (SHA-256 of the bytes, name, fit), least recently used first."""

_UPLOADS_LOCK: Final = threading.Lock()
"""Held around every use of :data:`_UPLOADS`: sessions run in threads."""


def _decode_remembered(digest: str, name: str, data: bytes, fit: FitMode | None) -> Upload:
    """The upload decoded under ``fit``, from :data:`_UPLOADS` when it was decoded before."""
    key = (digest, name, fit or "error")
    with _UPLOADS_LOCK:
        if key in _UPLOADS:
            _UPLOADS.move_to_end(key)
            return _UPLOADS[key]
    upload = _decode_upload(digest, name, data, fit)
    if upload.patch is not None:
        upload.patch.flags.writeable = False  # shared by every rerun and session
    with _UPLOADS_LOCK:
        _UPLOADS[key] = upload
        while len(_UPLOADS) > UPLOAD_CACHE_ENTRIES:
            _UPLOADS.popitem(last=False)
    return upload


def _decode_upload(digest: str, name: str, data: bytes, fit: FitMode | None) -> Upload:
    """:func:`decode_upload` without the size limit and the cache (``digest``: of ``data``)."""
    if fit is not None and fit != "error":
        # the size, from the first decode (remembered); a refusal or a 96x96 patch stands
        first = _decode_remembered(digest, name, data, None)
        if not first.needs_fit or first.size is None:
            return first
        return _fit_upload(name, data, fit, first.size)
    try:
        patch, note = decode_patch(data, fit="error", name=name)
        return Upload(name, patch=patch, note=note)
    except PatchSizeError as error:
        size = (error.width, error.height)
    except PCamError as error:
        return Upload(name, error=first_line(error))
    except Exception as error:  # decode_patch should raise PCamError only; never a traceback
        return Upload(name, error=f"{name}: could not read it as an image ({first_line(error)})")
    return Upload(name, size=size)


def _fit_upload(name: str, data: bytes, fit: FitMode, size: tuple[int, int]) -> Upload:
    """An upload of ``size`` (not 96x96) fitted as ``fit`` says, or the one-line refusal."""
    if fit not in fit_choices(*size):
        return Upload(
            name,
            size=size,
            error=f"{name}: a {size[0]}x{size[1]} image is smaller than 96x96 on one side, so it "
            "cannot be centre-cropped; resize it instead",
        )
    try:
        patch, note = decode_patch(data, fit=fit, name=name)
    except PCamError as error:
        return Upload(name, size=size, error=first_line(error))
    return Upload(name, patch=patch, note=note, size=size)


def sample_uploads(n: int = 4, *, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` synthetic H&E-like patches from :mod:`pcam.testing`, as PNG uploads, half tumour.

    The name says the true label (by the PCam rule: tumour in the centre 32x32 region).
    """
    from PIL import Image

    from pcam.testing import generate

    batch = generate(n, seed=seed)
    samples = []
    for index, (image, label) in enumerate(zip(batch.images, batch.labels, strict=True)):
        buffer = io.BytesIO()
        Image.fromarray(image, mode="RGB").save(buffer, format="PNG")
        kind = "tumour" if int(label) == 1 else "normal"
        samples.append((f"synthetic-{index + 1}-{kind}.png", buffer.getvalue()))
    return samples


def patches_key(patches: npt.NDArray[np.uint8]) -> str:
    """A digest of every pixel of a batch: the cache key of its predictions and maps."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(repr(patches.shape).encode())
    digest.update(np.ascontiguousarray(patches).tobytes())
    return digest.hexdigest()


# -- prediction and Grad-CAM -------------------------------------------------------------------


@dataclass(frozen=True)
class Predictions:
    """Tumour probabilities ``[n]`` and the model time for the whole batch, in seconds."""

    probabilities: npt.NDArray[np.float32]
    seconds: float
    calls: int
    """Model calls made (one per :data:`BATCH_SIZE` patches)."""

    @property
    def ms_per_patch(self) -> float:
        """The batch's model time divided by its number of patches (a batch average)."""
        return 1000.0 * self.seconds / max(1, len(self.probabilities))


def predict(classifier: Classifier, patches: npt.ArrayLike) -> Predictions:
    """Classify patches ``uint8 [n, 96, 96, 3]`` in as few model calls as possible, timed.

    The probabilities are :func:`pcam.model.inference.tumour_probabilities`'s, of the patches
    as :meth:`Classifier.prepare` gives them (stain-normalised first, untimed, if asked for).
    """
    from pcam.serve.predict import serving_probabilities

    batch = classifier.prepare(_check_patches(patches))
    parts = []
    with classifier.lock:
        started = time.perf_counter()
        for start in range(0, len(batch), BATCH_SIZE):
            chunk = batch[start : start + BATCH_SIZE]
            parts.append(serving_probabilities(classifier.model, chunk).astype(np.float32))
        seconds = time.perf_counter() - started
    probabilities = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return Predictions(probabilities, seconds, calls=len(parts))


def make_explainer(classifier: Classifier, layer: str) -> Any:
    """A :class:`pcam.explain.gradcam.GradCAM` of the tumour logit at ``layer`` (build once, cache).

    Raises a one-line :class:`pcam.errors.PCamError` for a model Grad-CAM cannot explain.
    """
    from pcam.explain.gradcam import GradCAM

    with classifier.lock:
        try:
            explainer = GradCAM(classifier.model, layer)
            # compile its tf.function now (once per batch signature), not on the first upload
            explainer.explain(np.zeros((1, *layout.IMAGE_SHAPE), dtype=np.uint8))
        except PCamError:
            raise
        except Exception as error:  # whatever TensorFlow raises for a graph it cannot take apart
            raise InvalidArgumentError(
                "layer", "a layer Grad-CAM can explain", f"{layer} ({first_line(error)})"
            ) from None
    return explainer


@dataclass(frozen=True)
class Maps:
    """Grad-CAM maps ``float32 [n, 96, 96]`` in ``[0, 1]``, for each class."""

    tumour: npt.NDArray[np.float32]
    normal: npt.NDArray[np.float32]


def gradcam_maps(explainer: Any, classifier: Classifier, patches: npt.ArrayLike) -> Maps:
    """The maps of both classes for every patch (as the model sees it), upsampled to 96x96."""
    batch = classifier.prepare(_check_patches(patches))
    by_class: dict[int, list[npt.NDArray[np.float32]]] = {0: [], 1: []}
    with classifier.lock:
        for start in range(0, len(batch), BATCH_SIZE):
            chunk = batch[start : start + BATCH_SIZE]
            for class_index, found in by_class.items():
                maps, _ = explainer.explain(chunk, class_index, size=(_SIDE, _SIDE))
                found.append(maps)
    empty = np.zeros((0, _SIDE, _SIDE), dtype=np.float32)
    return Maps(
        tumour=np.concatenate(by_class[1]) if by_class[1] else empty,
        normal=np.concatenate(by_class[0]) if by_class[0] else empty,
    )


def select_maps(
    maps: Maps, probabilities: npt.ArrayLike, threshold: float, target: Target
) -> npt.NDArray[np.float32]:
    """Each patch's map of ``target``: tumour, normal, or the label predicted at ``threshold``."""
    if target == "tumour":
        return maps.tumour
    if target == "normal":
        return maps.normal
    if target != "predicted":
        raise InvalidArgumentError("target", f"one of {', '.join(TARGETS)}", target)
    tumour = np.asarray(probabilities, dtype=np.float32).reshape(-1) >= threshold
    chosen: npt.NDArray[np.float32] = np.where(tumour[:, None, None], maps.tumour, maps.normal)
    return chosen


def overlays(
    patches: npt.ArrayLike, maps: npt.ArrayLike, opacity: float
) -> list[npt.NDArray[np.uint8]]:
    """Each patch blended with its coloured map (jet): ``(1 - opacity) * patch + opacity * map``."""
    from pcam.explain.plots import overlay

    batch = _check_patches(patches)
    heat = np.asarray(maps, dtype=np.float32)
    if heat.shape != batch.shape[:3]:
        raise InvalidArgumentError(
            "maps", f"one 96x96 map per patch, shape {batch.shape[:3]}", f"shape {heat.shape}"
        )
    return [
        overlay(image, heatmap, alpha=opacity) for image, heatmap in zip(batch, heat, strict=True)
    ]


# -- the batch table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the batch table."""

    file: str
    probability: float
    label: str
    inference_ms: float
    note: str


def label_of(probability: float, threshold: float = DEFAULT_THRESHOLD) -> str:
    """``"tumour"`` at or above the threshold, else ``"normal"``."""
    return "tumour" if probability >= threshold else "normal"


def format_probability(probability: float) -> str:
    """A probability as the app shows it (three decimals)."""
    return f"{probability:.3f}"


def bar_percent(probability: float) -> int:
    """The length of a patch's confidence bar, in percent: its probability, rounded, 0 to 100.

    A probability that is not a number (a model that gives NaN) gives an empty bar.
    """
    if not np.isfinite(probability):
        return 0
    return min(100, max(0, round(100.0 * probability)))


def make_rows(
    names: Sequence[str],
    predictions: Predictions,
    notes: Sequence[str | None],
    threshold: float = DEFAULT_THRESHOLD,
) -> list[Row]:
    """The batch table: one row per patch, in upload order."""
    probabilities = [float(p) for p in predictions.probabilities]
    if not len(names) == len(probabilities) == len(notes):
        raise InvalidArgumentError(
            "names, notes",
            f"one per prediction ({len(probabilities)})",
            f"{len(names)} names, {len(notes)} notes",
        )
    return [
        Row(
            file=name,
            probability=probability,
            label=label_of(probability, threshold),
            inference_ms=predictions.ms_per_patch,
            note=note or "",
        )
        for name, probability, note in zip(names, probabilities, notes, strict=True)
    ]


def table_columns(rows: Sequence[Row]) -> dict[str, list[Any]]:
    """The rows as columns (what ``st.dataframe`` takes), in :data:`CSV_COLUMNS` order."""
    return {column: [getattr(row, column) for row in rows] for column in CSV_COLUMNS}


def rows_to_csv(rows: Sequence[Row]) -> str:
    """The batch table as CSV text: a header, then probabilities to 6 decimals, ms to 3.

    Text cells (file, label, note) go through :func:`pcam.serve.predict.csv_text`, as in
    ``pcam predict``'s CSV: an upload named ``=cmd|calc.png`` is written ``'=cmd|calc.png``.
    A row with a carriage return in a cell has every cell quoted (Python's writer would leave
    it bare, and readers would split the row there).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        cells = [
            csv_text(row.file),
            f"{row.probability:.6f}",
            csv_text(row.label),
            f"{row.inference_ms:.3f}",
            csv_text(row.note),
        ]
        (quoted if any("\r" in cell for cell in cells) else writer).writerow(cells)
    return buffer.getvalue()


# -- names in the page, and the address --------------------------------------------------------

MARKDOWN_SPECIAL: Final = frozenset("\\`*_{}[]<>#|~$&")
"""Characters escaped with a backslash wherever an upload's name goes into Markdown: emphasis,
code, links and images, HTML, headings, tables, strikethrough, LaTeX (``$``), entities."""


def markdown_text(text: str) -> str:
    r"""``text`` (an upload's name) escaped to show as itself in Streamlit Markdown, on one line.

    Every character of :data:`MARKDOWN_SPECIAL` gets a backslash (``a_b*.png`` becomes
    ``a\_b\*.png``), and so do the starts of a list item or a rule (a leading ``-`` or ``+``,
    or the ``.`` or ``)`` after up to 9 leading digits and before a space), so the name cannot
    format the page, link anywhere or start a block. Control characters (a newline, say) are
    shown as escapes (``\n``, ``\x1b``) rather than break the line. Emoji short codes
    (``:smile:``) are left as they are. Other names, such as ``patch-0.png`` or
    ``2024.01 a.png``, are returned unchanged.
    """
    shown = []
    for character in text:
        if unicodedata.category(character) == "Cc":
            shown.append(repr(character)[1:-1])
        elif character in MARKDOWN_SPECIAL:
            shown.append("\\" + character)
        else:
            shown.append(character)
    escaped = "".join(shown)
    if escaped[:1] in ("-", "+"):
        return "\\" + escaped
    digits = len(escaped) - len(escaped.lstrip("0123456789"))
    marker, after = escaped[digits : digits + 1], escaped[digits + 1 : digits + 2]
    if 1 <= digits <= 9 and marker in (".", ")") and after in ("", " ", "\t"):
        return escaped[:digits] + "\\" + escaped[digits:]
    return escaped


def is_loopback(address: str) -> bool:
    """Whether ``address`` serves this machine only: ``localhost``, 127.0.0.0/8 or ``::1``."""
    host = address.strip().removeprefix("[").removesuffix("]")
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # a host name: it may resolve to anything
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def address_warning(address: str) -> str | None:
    """The one-line warning ``pcam app`` prints for an ``--address`` other machines can reach.

    ``None`` for a loopback address (:func:`is_loopback`).
    """
    if is_loopback(address):
        return None
    shown = address if address.strip() else repr(address)
    return (
        f"pcam app: warning: --address {shown} is not a loopback address, so other machines "
        "that reach it can use the app (no login; their uploads are decoded on this machine); "
        "pass --address 127.0.0.1 to keep it to this machine"
    )


def _check_patches(patches: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    batch = np.asarray(patches)
    if batch.ndim != 4 or batch.shape[1:] != layout.IMAGE_SHAPE or batch.dtype != np.uint8:
        raise InvalidArgumentError(
            "patches", "uint8 [n, 96, 96, 3]", f"{batch.dtype} {list(batch.shape)}"
        )
    return batch
