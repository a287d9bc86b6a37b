"""Stain-shift robustness: a model's scores and Grad-CAM maps under systematic colour changes.

A lab that stains a little darker, or a scanner with another colour balance, changes every patch
it produces in the same way. :data:`SHIFTS` is a fixed set of such changes: six in HED optical
density (:func:`pcam.stain.hed.shift_stains`; three strengths, each towards more haematoxylin and
less eosin, ``h+``, and the reverse, ``e+``) and four scanner-like RGB changes (a warm and a cool
cast, a gamma, a contrast reduction). Every shift is deterministic: the same parameters for every
patch, no randomness.

:func:`robustness_report` scores a split once unshifted and once per shift (each batch shifted
before :func:`pcam.model.inference.tumour_probabilities`, so calibrated when the model carries a
calibration file) and reports accuracy, ROC AUC and F1 at the default threshold, with the drops
from the unshifted figures. Given a class activation map maker (``GradCAM(model)`` of
:mod:`pcam.explain.gradcam`; this module sits below :mod:`pcam.explain` and so takes it as an
argument), it also measures how stable the explanations are: the Pearson correlation, per patch,
between the map of a patch and the map of its shifted copy, averaged over a seeded sample of
patches. :func:`write_robustness` writes the report folder like ``pcam evaluate``'s: staged under
a hidden name, renamed into place when complete, marked as pcam's ``robustness`` output.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from pcam.data.split import PCamSplit, open_split
from pcam.errors import InvalidArgumentError
from pcam.evaluation.evaluate import score_split
from pcam.evaluation.metrics import classification_report
from pcam.model.heads import DEFAULT_THRESHOLD
from pcam.model.inference import tumour_probabilities
from pcam.outputs import refuse_existing_directory, staged_directory

ROBUSTNESS = "robustness"
"""The kind of output folder ``pcam robustness`` writes (see :mod:`pcam.outputs`)."""

FILES = ("robustness.json", "robustness.csv", "robustness.png")
"""What the folder holds (besides pcam's marker)."""

UNSHIFTED = "unshifted"
"""The name of the reference row: the split as it is."""

CONSTANT_MAP_TOLERANCE = 1e-6
"""A map whose values span at most this much is constant (its correlation is undefined)."""

CONSTANT_MAPS_RULE = (
    "Pearson correlation of each patch's map with its shifted copy's; a constant map has none: "
    "1 when both maps are constant (neither points anywhere), 0 when only one is"
)

CSV_COLUMNS = (
    "name",
    "kind",
    "accuracy",
    "roc_auc",
    "drop_accuracy",
    "drop_auc",
    "cam_correlation",
    "cam_correlation_min",
    "f1",
    "predicted_tumour",
)
"""The columns of ``robustness.csv``, one row per shift after the unshifted one."""

Triple = tuple[float, float, float]
_ONES: Triple = (1.0, 1.0, 1.0)
_ZEROS: Triple = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class StainShift:
    """One systematic colour change, the same for every patch.

    ``kind`` ``hed``: each stain's concentration ``c`` (haematoxylin, eosin, DAB) becomes
    ``scales * c + shifts`` in optical density (:func:`pcam.stain.hed.shift_stains`; glass stays
    white). ``kind`` ``rgb``: each channel is multiplied by ``gains`` (clipped to 0-255, as a
    sensor saturates), then ``255 * (x / 255) ** gamma``, then pulled towards each patch's mean
    of that channel, ``mean + contrast * (x - mean)``. The defaults change nothing.
    """

    name: str
    kind: Literal["hed", "rgb"]
    scales: Triple = _ONES
    """HED: the factor of each stain's concentration."""
    shifts: Triple = _ZEROS
    """HED: the optical density added to each stain (scaled by how much stain a pixel holds)."""
    gains: Triple = _ONES
    """RGB: the factor of each channel (R, G, B)."""
    gamma: float = 1.0
    """RGB: the exponent of the intensities (below 1 brightens the mid-tones)."""
    contrast: float = 1.0
    """RGB: the factor of each channel's spread around the patch's mean."""

    def __post_init__(self) -> None:
        if self.kind not in ("hed", "rgb"):
            raise InvalidArgumentError("kind", "'hed' or 'rgb'", self.kind)
        if not self.name or self.name == UNSHIFTED:
            raise InvalidArgumentError("name", f"a name other than {UNSHIFTED!r}", self.name)
        if len(self.scales) != 3 or len(self.gains) != 3 or len(self.shifts) != 3:
            raise InvalidArgumentError(self.name, "three scales, shifts and gains", self)
        positive = (*self.scales, *self.gains, self.gamma)
        if not all(np.isfinite(v) and v > 0 for v in positive) or not self.contrast >= 0:
            raise InvalidArgumentError(
                self.name, "positive scales, gains and gamma and a contrast >= 0", positive
            )
        if self.kind == "hed":
            foreign = (self.gains, self.gamma, self.contrast) != (_ONES, 1.0, 1.0)
        else:
            foreign = (self.scales, self.shifts) != (_ONES, _ZEROS)
        if foreign:
            raise InvalidArgumentError(self.name, f"only the {self.kind} parameters set", self)

    def parameters(self) -> dict[str, Any]:
        """The parameters of its kind, JSON-ready: what the report records."""
        if self.kind == "hed":
            return {"scales": list(self.scales), "shifts": list(self.shifts)}
        return {"gains": list(self.gains), "gamma": self.gamma, "contrast": self.contrast}

    def apply(self, images: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """The patches ``uint8 [B, H, W, 3]`` under this shift (see :func:`apply_shift`)."""
        return apply_shift(self, images)


HED_STRENGTHS: dict[str, tuple[float, float]] = {
    "weak": (0.1, 0.05),
    "medium": (0.2, 0.1),
    "strong": (0.35, 0.2),
}
"""``(a, b)`` of each HED strength: scales ``1 +- a`` and OD shifts ``+- b`` of H and E."""


def hed_shift(strength: str, direction: Literal["h+", "e+"]) -> StainShift:
    """The HED shift ``hed-STRENGTH-DIRECTION`` of :data:`SHIFTS`.

    ``h+`` (more haematoxylin, less eosin): scales ``(1 + a, 1 - a, 1)``, shifts ``(b, -b, 0)``;
    ``e+`` the reverse, with ``(a, b)`` from :data:`HED_STRENGTHS`.
    """
    if strength not in HED_STRENGTHS or direction not in ("h+", "e+"):
        raise InvalidArgumentError(
            "hed shift", f"one of {', '.join(HED_STRENGTHS)} and h+ or e+", (strength, direction)
        )
    a, b = HED_STRENGTHS[strength]
    sign = 1.0 if direction == "h+" else -1.0
    return StainShift(
        f"hed-{strength}-{direction}",
        "hed",
        scales=(1.0 + sign * a, 1.0 - sign * a, 1.0),
        shifts=(sign * b, -sign * b, 0.0),
    )


SHIFTS: tuple[StainShift, ...] = (
    *(hed_shift(strength, direction) for strength in HED_STRENGTHS for direction in ("h+", "e+")),
    StainShift("scanner-warm", "rgb", gains=(1.08, 1.0, 0.9)),
    StainShift("scanner-cool", "rgb", gains=(0.92, 1.0, 1.08)),
    StainShift("gamma-0.8", "rgb", gamma=0.8),
    StainShift("contrast-0.8", "rgb", contrast=0.8),
)
"""The shifts ``pcam robustness`` applies, in the order it reports them."""


class ActivationMaps(Protocol):
    """What the Grad-CAM check needs of a map maker: :class:`pcam.explain.gradcam.GradCAM`."""

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The layers the maps are taken at."""
        ...

    @property
    def method(self) -> str:
        """The map method (``gradcam``, ...)."""
        ...

    def heatmaps(self, images: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Maps ``[B, h, w]`` of the tumour class for ``uint8 [B, 96, 96, 3]`` patches."""
        ...


# -- the shifts ------------------------------------------------------------------------------------


def apply_shift(shift: StainShift, images: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """``shift`` applied to each patch of ``uint8 [B, H, W, 3]``; returns ``uint8 [B, H, W, 3]``.

    Deterministic, and each patch's result depends on that patch alone (a batch gives what its
    patches give one by one). The default parameters give back the input exactly.
    """
    batch = np.asarray(images)
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise InvalidArgumentError(
            "images", "uint8 patches [B, H, W, 3]", f"{batch.dtype} {batch.shape}"
        )
    if shift.kind == "hed":
        return _shift_hed(batch, shift.scales, shift.shifts)
    return _shift_rgb(batch, shift.gains, shift.gamma, shift.contrast)


def _shift_hed(
    images: npt.NDArray[np.uint8], scales: Triple, shifts: Triple
) -> npt.NDArray[np.uint8]:
    from pcam.stain.hed import shift_stains

    moved = shift_stains(
        images, np.asarray(scales, dtype=np.float32), np.asarray(shifts, dtype=np.float32)
    )
    return np.asarray(moved.numpy(), dtype=np.uint8)


def _shift_rgb(
    images: npt.NDArray[np.uint8], gains: Triple, gamma: float, contrast: float
) -> npt.NDArray[np.uint8]:
    pixels = np.clip(images.astype(np.float32) * np.asarray(gains, np.float32), 0.0, 255.0)
    pixels = np.float32(255.0) * np.power(pixels / np.float32(255.0), np.float32(gamma))
    mean = pixels.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)
    pixels = mean + np.float32(contrast) * (pixels - mean)
    shifted: npt.NDArray[np.uint8] = np.clip(np.floor(pixels + 0.5), 0.0, 255.0).astype(np.uint8)
    return shifted


# -- the report ------------------------------------------------------------------------------------


def robustness_report(
    model: Any,
    root: str | os.PathLike[str],
    split: str,
    *,
    shifts: Sequence[StainShift] = SHIFTS,
    batch_size: int = 256,
    tta: bool = False,
    cam_patches: int = 32,
    seed: int = 0,
    cam: ActivationMaps | None = None,
    model_path: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score ``split`` unshifted and under each of ``shifts``; returns the JSON-ready report.

    One pass over the split per shift (``1 + len(shifts)`` in all); ``progress`` is called with
    the patches done over all passes. Each row of ``results`` (the unshifted one first) holds
    ``accuracy``, ``roc_auc`` (``None`` on a one-class split) and the tumour class's ``f1`` at
    the default threshold, ``predicted_tumour`` (the fraction called tumour), and
    ``drop_accuracy`` and ``drop_auc``: unshifted minus shifted, so a positive drop is a loss.
    With ``cam`` (e.g. ``GradCAM(model)``) and ``cam_patches`` > 0, ``cam_patches`` patches
    drawn with ``seed`` are mapped unshifted and shifted, and each row gets ``cam_correlation``
    (the mean over the patches of :func:`map_correlations`) and ``cam_correlation_min``;
    otherwise those are ``None``. ``model_path`` is recorded as the report's ``model``.
    """
    from pcam.model.temperature import calibration_of

    _check_settings(shifts, batch_size, cam_patches, seed)
    handle = open_split(root, split)
    labels, scored = _score_passes(
        model, root, split, shifts, len(handle), batch_size, tta, progress
    )
    cam_block, correlations = _cam_check(cam, handle, shifts, cam_patches, seed, batch_size)
    baseline = shift_metrics(labels, scored[0])
    results = [_row(UNSHIFTED, "none", {}, baseline, baseline, None)]
    for shift, probabilities in zip(shifts, scored[1:], strict=True):
        results.append(
            _row(
                shift.name,
                shift.kind,
                shift.parameters(),
                shift_metrics(labels, probabilities),
                baseline,
                correlations.get(shift.name),
            )
        )
    return {
        "model": None if model_path is None else str(model_path),
        "data": str(root),
        "split": split,
        "patches": len(handle),
        "positive_fraction": float(labels.mean()) if labels.size else None,
        "tta": tta,
        "seed": seed,
        "threshold": DEFAULT_THRESHOLD,
        "probabilities": calibration_of(model).as_json(),
        "cam": cam_block,
        "results": results,
    }


def _check_settings(
    shifts: Sequence[StainShift], batch_size: int, cam_patches: int, seed: int
) -> None:
    names = [shift.name for shift in shifts]
    if len(set(names)) != len(names):
        raise InvalidArgumentError("shifts", "shifts with distinct names", names)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError("batch_size", "an integer >= 1", batch_size)
    if not isinstance(cam_patches, int) or cam_patches < 0:
        raise InvalidArgumentError("cam_patches", "an integer >= 0", cam_patches)
    if not isinstance(seed, int) or seed < 0:
        raise InvalidArgumentError("seed", "an integer >= 0", seed)


def _score_passes(
    model: Any,
    root: str | os.PathLike[str],
    split: str,
    shifts: Sequence[StainShift],
    total: int,
    batch_size: int,
    tta: bool,
    progress: Callable[[int], None] | None,
) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[np.float64]]]:
    """The labels, and the probabilities of the unshifted pass then of each shift's pass."""
    scored = []
    labels = np.empty(0, dtype=np.int64)
    for index, shift in enumerate((None, *shifts)):
        labels, probabilities = score_split(
            root,
            split,
            _scorer(model, shift, tta),
            batch_size=batch_size,
            progress=_offset(progress, index * total),
        )
        scored.append(probabilities)
    return labels, scored


def _scorer(
    model: Any, shift: StainShift | None, tta: bool
) -> Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float64]]:
    def score(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
        shifted = images if shift is None else apply_shift(shift, images)
        return tumour_probabilities(model, shifted, tta=tta)

    return score


def _offset(
    progress: Callable[[int], None] | None, done_before: int
) -> Callable[[int], None] | None:
    if progress is None:
        return None
    report = progress
    return lambda done: report(done_before + done)


def shift_metrics(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> dict[str, Any]:
    """Accuracy, ROC AUC, tumour F1 and the fraction called tumour, at the default threshold.

    The figures are :func:`pcam.evaluation.metrics.classification_report`'s (so the unshifted
    row is ``pcam evaluate``'s); ``roc_auc`` is ``None`` when the labels hold one class.
    """
    report = classification_report(labels, probabilities, bootstrap_rounds=0)
    called = np.asarray(probabilities, dtype=np.float64) >= report["threshold"]
    return {
        "accuracy": report["accuracy"],
        "roc_auc": report["roc_auc"],
        "f1": report["per_class"]["tumour"]["f1"],
        "predicted_tumour": float(called.mean()) if called.size else 0.0,
    }


def _row(
    name: str,
    kind: str,
    parameters: dict[str, Any],
    metrics: dict[str, Any],
    baseline: dict[str, Any],
    cam: tuple[float, float] | None,
) -> dict[str, Any]:
    auc, reference_auc = metrics["roc_auc"], baseline["roc_auc"]
    return {
        "name": name,
        "kind": kind,
        "parameters": parameters,
        **metrics,
        "drop_accuracy": baseline["accuracy"] - metrics["accuracy"],
        "drop_auc": None if auc is None or reference_auc is None else reference_auc - auc,
        "cam_correlation": None if cam is None else cam[0],
        "cam_correlation_min": None if cam is None else cam[1],
    }


# -- Grad-CAM stability ----------------------------------------------------------------------------


def cam_indices(total: int, count: int, seed: int) -> npt.NDArray[np.int64]:
    """``min(count, total)`` distinct patch indices of a split drawn with ``seed``, sorted."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(total, size=min(count, total), replace=False)
    return np.sort(chosen).astype(np.int64)


def map_correlations(reference: npt.ArrayLike, other: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The Pearson correlation ``[B]`` of each pair of maps ``[B, h, w]`` (see below for flats).

    A map whose values span at most :data:`CONSTANT_MAP_TOLERANCE` has no correlation with
    anything: a pair of such maps counts 1 (both say the same: nowhere, or everywhere), a pair
    with one of them 0 (one points somewhere, the other does not).
    """
    first = np.asarray(reference, dtype=np.float64)
    second = np.asarray(other, dtype=np.float64)
    if first.shape != second.shape or first.ndim < 2:
        raise InvalidArgumentError("maps", "two batches of maps of one shape", second.shape)
    first, second = first.reshape(len(first), -1), second.reshape(len(second), -1)
    flat_first = np.ptp(first, axis=1) <= CONSTANT_MAP_TOLERANCE
    flat_second = np.ptp(second, axis=1) <= CONSTANT_MAP_TOLERANCE
    first = first - first.mean(axis=1, keepdims=True)
    second = second - second.mean(axis=1, keepdims=True)
    spread = np.sqrt((first**2).sum(axis=1) * (second**2).sum(axis=1))
    varying = ~(flat_first | flat_second) & (spread > 0)
    pearson = (first * second).sum(axis=1) / np.where(varying, spread, 1.0)
    result = np.where(varying, np.clip(pearson, -1.0, 1.0), 0.0)
    result[flat_first & flat_second] = 1.0
    return result


def _cam_check(
    cam: ActivationMaps | None,
    handle: PCamSplit,
    shifts: Sequence[StainShift],
    count: int,
    seed: int,
    batch_size: int,
) -> tuple[dict[str, Any] | None, dict[str, tuple[float, float]]]:
    """The ``cam`` block of the report and ``(mean, min)`` correlation by shift name."""
    if cam is None or count == 0 or len(handle) == 0:
        return None, {}
    indices = cam_indices(len(handle), count, seed)
    images = handle.read_images(indices)
    reference = _maps(cam, None, images, batch_size)
    found = {}
    for shift in shifts:
        correlations = map_correlations(reference, _maps(cam, shift, images, batch_size))
        found[shift.name] = (float(correlations.mean()), float(correlations.min()))
    block = {
        "method": cam.method,
        "layer": list(cam.layer_names),
        "class": "tumour",
        "map_size": list(reference.shape[1:]),
        "patches": int(indices.size),
        "indices": indices.tolist(),
        "correlation": CONSTANT_MAPS_RULE,
    }
    return block, found


def _maps(
    cam: ActivationMaps,
    shift: StainShift | None,
    images: npt.NDArray[np.uint8],
    batch_size: int,
) -> npt.NDArray[np.float32]:
    """The maps of ``images`` (shifted by ``shift``, when given), ``batch_size`` at a time."""
    maps = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        maps.append(cam.heatmaps(batch if shift is None else apply_shift(shift, batch)))
    return np.concatenate(maps)


# -- the report folder -----------------------------------------------------------------------------


def write_robustness(
    report: dict[str, Any], out: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``robustness.json``, ``robustness.csv`` and ``robustness.png`` into the folder ``out``.

    The folder is built under a hidden name beside ``out`` and renamed into place when complete.
    An existing non-empty ``out`` is replaced only with ``overwrite``, and only when it is a
    robustness folder pcam wrote holding none of the report's inputs (its ``model`` and ``data``;
    see :func:`pcam.outputs.refuse_unsafe_replacement`). Returns ``out`` as a path.
    """
    from pcam.evaluation.robustness_plots import plot_robustness

    destination = Path(out)
    inputs = [report[key] for key in ("model", "data") if report.get(key)]
    refuse_existing_directory(destination, overwrite=overwrite, kind=ROBUSTNESS, inputs=inputs)
    with staged_directory(destination, ROBUSTNESS) as staging:
        text = json.dumps(report, indent=2, allow_nan=False)
        (staging / "robustness.json").write_text(text + "\n")
        write_csv(report, staging / "robustness.csv")
        plot_robustness(report, staging / "robustness.png")
    return destination


def write_csv(report: dict[str, Any], path: Path) -> Path:
    """The rows of the report as CSV (:data:`CSV_COLUMNS`; empty cells for ``None``)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in report["results"]:
            writer.writerow(["" if row[key] is None else row[key] for key in CSV_COLUMNS])
    return path


def robustness(
    model_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    split: str,
    out_dir: str | os.PathLike[str],
    *,
    cam_maker: Callable[[Any], ActivationMaps] | None = None,
    batch_size: int = 256,
    tta: bool = False,
    cam_patches: int = 32,
    seed: int = 0,
    overwrite: bool = False,
    calibration: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Load a model, score a split under :data:`SHIFTS` and write the folder; inputs first.

    The folder is checked before the model loads (new, empty, or with ``overwrite`` a
    robustness folder pcam wrote, away from the model and the data, and writable), then the
    split. ``cam_maker`` makes the map maker from the loaded model (``pcam robustness`` passes
    :class:`pcam.explain.gradcam.GradCAM`: its default layer, tumour class); without it there
    is no Grad-CAM check. With ``calibration`` the model's calibration file, when present, sets
    the probabilities. Returns the report.
    """
    from pcam.model.architectures import load_model

    destination = Path(out_dir)
    refuse_existing_directory(
        destination, overwrite=overwrite, kind=ROBUSTNESS, inputs=(model_path, data_dir)
    )
    _check_settings(SHIFTS, batch_size, cam_patches, seed)
    open_split(data_dir, split)  # a bad data directory fails before the model is loaded
    model = load_model(model_path, calibration=calibration)
    cam = cam_maker(model) if cam_maker is not None and cam_patches > 0 else None
    report = robustness_report(
        model,
        data_dir,
        split,
        batch_size=batch_size,
        tta=tta,
        cam_patches=cam_patches,
        seed=seed,
        cam=cam,
        model_path=model_path,
        progress=progress,
    )
    write_robustness(report, destination, overwrite=overwrite)
    return report


# -- the terminal table ----------------------------------------------------------------------------


def format_robustness(report: dict[str, Any]) -> str:
    """The report as a plain-text table: one row per shift, the unshifted one first."""
    header = (
        f"{'shift':<16}{'kind':<6}{'accuracy':>9}{'drop':>9}{'ROC AUC':>9}{'drop':>9}"
        f"{'F1':>8}{'tumour':>8}{'CAM r':>8}{'CAM min':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in report["results"]:
        lines.append(
            f"{row['name']:<16}{row['kind']:<6}{_shown(row['accuracy'], 9)}"
            f"{_shown(row['drop_accuracy'], 9, signed=True)}{_shown(row['roc_auc'], 9)}"
            f"{_shown(row['drop_auc'], 9, signed=True)}{_shown(row['f1'], 8)}"
            f"{_shown(row['predicted_tumour'], 8)}{_shown(row['cam_correlation'], 8)}"
            f"{_shown(row['cam_correlation_min'], 9)}"
        )
    lines.append("")
    lines.append(
        f"{report['patches']:,} patches of {report['split']}"
        + (", x8 TTA" if report["tta"] else "")
        + f"; drop = unshifted minus shifted; threshold {report['threshold']}; "
        "tumour = fraction called tumour"
    )
    cam = report.get("cam")
    if cam is None:
        lines.append("Grad-CAM check: not run")
    else:
        lines.append(
            f"CAM r: mean Pearson correlation of the {cam['method']} maps ({cam['class']} class, "
            f"{', '.join(cam['layer'])}) of {cam['patches']} patches (seed {report['seed']}) "
            "with their shifted copies'; CAM min: the lowest patch"
        )
    lines.append(f"Probabilities: {report['probabilities']['note']}")
    return "\n".join(lines)


def _shown(value: float | None, width: int, *, signed: bool = False) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>+{width}.4f}" if signed else f"{value:>{width}.4f}"
