"""Evaluate a saved model on a PCam split: predictions, ``metrics.json`` and plots.

The report directory is built under a temporary name next to its destination and renamed when
complete, so a failed or interrupted evaluation never leaves a half-written report behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pcam.data.split import open_split
from pcam.evaluation.metrics import CLASS_NAMES, classification_report
from pcam.model.heads import DEFAULT_THRESHOLD
from pcam.model.inference import tumour_probabilities
from pcam.outputs import refuse_existing_directory, staged_directory

REPORT = "report"
"""The kind of output folder ``pcam evaluate`` writes (see :mod:`pcam.outputs`)."""


def score_split(
    root: str | os.PathLike[str],
    split: str,
    score: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float64]],
    *,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Labels and ``score(images)`` of every patch of a split, in file order, batch by batch.

    ``progress`` is called with the number of patches done after each batch. A signal stops the
    loop between two batches (:func:`pcam.stopping.deferring`), never inside the model's call.
    """
    from pcam.data.stream import make_dataset
    from pcam.stopping import deferring, raise_if_stopped

    dataset = make_dataset(root, split, batch_size=batch_size, shuffle=False)
    labels, scores = [], []
    done = 0
    with deferring():
        for images, batch_labels in dataset.as_numpy_iterator():
            labels.append(batch_labels.astype(np.int64))
            scores.append(score(images))
            raise_if_stopped()
            done += batch_labels.size
            if progress is not None:
                progress(done)
    return np.concatenate(labels), np.concatenate(scores)


def predict_split(
    model: Any,
    root: str | os.PathLike[str],
    split: str,
    *,
    batch_size: int = 256,
    tta: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Labels and predicted tumour probabilities for every patch of a split, in file order.

    With ``tta`` each patch is predicted under all 8 symmetries of the square and the
    probabilities are averaged (test-time augmentation; 8 times the work).
    """
    return score_split(
        root,
        split,
        lambda images: tumour_probabilities(model, images, tta=tta),
        batch_size=batch_size,
        progress=progress,
    )


def write_report(
    out_dir: str | os.PathLike[str],
    labels: npt.NDArray[np.int64],
    probabilities: npt.NDArray[np.float64],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    bootstrap_rounds: int = 1000,
    run_log: Path | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
    operating_thresholds: dict[str, float] | None = None,
    thresholds_from: str | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json`` and the PNG plots into ``out_dir``; returns the metrics.

    ``run_log`` is a Keras CSV log whose training curves are plotted when present; ``extra`` is
    merged into the JSON (model path, split, options). ``overwrite`` replaces only a report pcam
    wrote that holds none of ``inputs`` (see :func:`pcam.outputs.refuse_unsafe_replacement`).
    ``operating_thresholds`` are probability thresholds chosen on another split (never this
    one, unless it is the split they were chosen on), keyed as
    :func:`pcam.evaluation.operating.operating_points` keys them; ``thresholds_from`` says where
    they were chosen.
    """
    from pcam.evaluation import plots

    destination = Path(out_dir)
    refuse_existing_directory(destination, overwrite=overwrite, kind=REPORT, inputs=inputs)
    report = classification_report(
        labels,
        probabilities,
        threshold=threshold,
        bootstrap_rounds=bootstrap_rounds,
        operating_thresholds=operating_thresholds,
    )
    if report["operating_points"] is not None:
        report["operating_points"]["thresholds_from"] = (
            thresholds_from if operating_thresholds else None
        )
    report.update(extra or {})
    with staged_directory(destination, REPORT) as staging:
        if report["roc_auc"] is not None:
            plots.plot_roc(labels, probabilities, report, staging / "roc.png")
        plots.plot_confusion_matrix(report, staging / "confusion_matrix.png")
        plots.plot_per_class(report, staging / "per_class.png")
        plots.plot_reliability(labels, probabilities, report, staging / "reliability.png")
        if run_log is not None and run_log.is_file():
            plots.plot_training_curves(run_log, staging / "training_curves.png")
        (staging / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a table: the seed notebook's (scikit-learn's) rows, AUC, NLL, calibration."""
    lines = [f"{'':>12}  {'precision':>9}  {'recall':>6}  {'f1-score':>8}  {'support':>7}", ""]
    for name in CLASS_NAMES:
        scores = report["per_class"][name]
        lines.append(
            f"{name:>12}  {scores['precision']:9.4f}  {scores['recall']:6.4f}  "
            f"{scores['f1']:8.4f}  {scores['support']:7d}"
        )
    lines.append("")
    lines.append(f"{'accuracy':>12}  {'':9}  {'':6}  {report['accuracy']:8.4f}  {report['n']:7d}")
    for average in ("macro_avg", "weighted_avg"):
        scores = report[average]
        lines.append(
            f"{average.replace('_', ' '):>12}  {scores['precision']:9.4f}  "
            f"{scores['recall']:6.4f}  {scores['f1']:8.4f}  {report['n']:7d}"
        )
    lines.append("")
    auc = report["roc_auc"]
    if auc is None:
        lines.append("ROC AUC: undefined (one class only)")
    else:
        interval = report["ci95"].get("roc_auc")
        suffix = f" (95% CI {interval[0]:.4f}-{interval[1]:.4f})" if interval else ""
        lines.append(f"ROC AUC: {auc:.4f}{suffix}")
    lines.append(f"NLL: {report['nll']:.4f}")
    calibration = report.get("calibration")
    if calibration is not None:  # reports written before calibration was measured have none
        lines.append(
            f"ECE ({calibration['bins']} bins): {calibration['ece']:.4f} equal-width, "
            f"{calibration['ece_equal_mass']:.4f} equal-mass; Brier: {calibration['brier']:.4f}"
        )
    probabilities = report.get("probabilities")
    if probabilities is not None:
        lines.append(f"Probabilities: {probabilities['note']}")
    if report.get("operating_points") is not None:
        lines.extend(["", *format_operating_points(report["operating_points"])])
    return "\n".join(lines)


def format_operating_points(block: dict[str, Any]) -> list[str]:
    """PR AUC and the operating points as table rows, with the thresholds' results when given."""
    interval = block.get("pr_auc_ci95")
    suffix = f" (95% CI {interval[0]:.4f}-{interval[1]:.4f})" if interval else ""
    lines = [f"PR AUC (average precision): {block['pr_auc']:.4f}{suffix}"]
    lines.append(
        f"{'operating point':<32}{'value':>8}{'95% CI':>16}"
        f"{'threshold':>11}{'sens.':>8}{'spec.':>8}"
    )
    for point in block["points"]:
        other = "sensitivity" if point["fix"] == "specificity" else "specificity"
        name = f"{other} at {point['level']:.0%} {point['fix']}"
        ci = point.get("ci95")
        shown_ci = f"{ci[0]:.4f}-{ci[1]:.4f}" if ci else "-"
        at = point.get("threshold")
        shown_at = (
            f"{at['value']:11.4g}{at['sensitivity']:8.4f}{at['specificity']:8.4f}"
            if at
            else f"{'-':>11}{'-':>8}{'-':>8}"
        )
        lines.append(f"{name:<32}{point['value']:8.4f}{shown_ci:>16}{shown_at}")
    source = block.get("thresholds_from")
    lines.append(
        f"thresholds {source}"
        if source
        else "thresholds: none (pcam calibrate chooses them on valid)"
    )
    return lines


def evaluate(
    model_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    split: str,
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 256,
    tta: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    bootstrap_rounds: int = 1000,
    overwrite: bool = False,
    calibration: bool = True,
    progress: Callable[[int], None] | None = None,
    normalise: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
) -> dict[str, Any]:
    """Load a model, predict a split and write the report; every input is checked first.

    The report folder is checked before the model loads: it must be new, empty or (with
    ``overwrite``) a report pcam wrote, away from the model and the data, and writable.
    With ``calibration`` the model's calibration file, when present, sets the probabilities and
    the operating-point thresholds (chosen on the split it was fitted on); the report's
    ``probabilities`` block says which were used. ``normalise`` changes every batch of
    patches before the model sees them (a :class:`pcam.stain.macenko.StainNormaliser`, say);
    the report then records it under ``stain_normalisation`` (a normaliser's reference, and
    the patches it passed through unchanged), a key left out without it.
    """
    from pcam.model.architectures import load_model
    from pcam.model.temperature import calibration_of
    from pcam.stain.macenko import StainNormaliser

    destination = Path(out_dir)
    inputs = (model_path, data_dir)
    refuse_existing_directory(destination, overwrite=overwrite, kind=REPORT, inputs=inputs)
    open_split(data_dir, split)  # a bad data directory fails before the model is loaded
    model = load_model(model_path, calibration=calibration)

    def score(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
        shown = images if normalise is None else normalise(images)
        return tumour_probabilities(model, shown, tta=tta)

    before = normalise.unchanged if isinstance(normalise, StainNormaliser) else None
    labels, probabilities = score_split(
        data_dir, split, score, batch_size=batch_size, progress=progress
    )
    run_log = Path(model_path).parent / "training_log.csv"
    used = calibration_of(model)
    extra: dict[str, Any] = {
        "model": str(model_path),
        "data": str(data_dir),
        "split": split,
        "tta": tta,
        "probabilities": used.as_json(),
    }
    if isinstance(normalise, StainNormaliser) and before is not None:
        unchanged = normalise.unchanged.count - before.count
        extra["stain_normalisation"] = {**normalise.to_dict(), "patches_unchanged": unchanged}
    elif normalise is not None:
        extra["stain_normalisation"] = {"method": "custom", "description": repr(normalise)}
    return write_report(
        destination,
        labels,
        probabilities,
        threshold=threshold,
        bootstrap_rounds=bootstrap_rounds,
        run_log=run_log,
        extra=extra,
        overwrite=overwrite,
        inputs=inputs,
        operating_thresholds={
            key: used.probability_threshold(value) for key, value in used.thresholds.items()
        },
        thresholds_from=_thresholds_source(used.record, used.path, tta=tta),
    )


def _thresholds_source(record: dict[str, Any], path: Path | None, *, tta: bool) -> str | None:
    """Where the operating-point thresholds come from, for the report; ``None`` without them."""
    if path is None or not record.get("thresholds"):
        return None
    fitted = record.get("fitted_on", {})
    source = f"chosen on the {fitted.get('split', '?')} split of {fitted.get('data', '?')} ({path})"
    # pcam calibrate scores one view per patch; averaged views are less extreme
    return source + (", without TTA: this split was scored with TTA" if tta else "")
