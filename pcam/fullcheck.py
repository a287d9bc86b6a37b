"""The full training check: train on PCam with the project's recipe, evaluate, enforce a floor.

One function, :func:`full_check`, runs the whole path a release must survive: the train split
streamed, shuffled and augmented into ResNet50 with ImageNet weights, the best model by
validation loss calibrated on the valid split (a temperature and the operating-point thresholds,
:mod:`pcam.evaluation.temperature`) and then evaluated on the test split (averaged over the 8
symmetries of the square),
a Grad-CAM grid of test patches, and a verdict against accuracy and AUC floors. ``pcam
fullcheck`` and ``tox -e gpu`` run it on full PCam on a GPU; the test suite runs the same code on
the real PCam sample with a tiny budget and a low floor.

Everything lands in one output directory: ``run/`` (model, its calibration file, logs, backup
while training),
``report/`` (metrics.json and plots), ``explain/`` (Grad-CAM grid), ``robustness/``,
``fullcheck.json`` (the recipe, the figures, the floors and the verdict, the data files'
checksums, the model's parameter count, timings and software), written last but one, and
``MODEL_CARD.md`` (:mod:`pcam.evaluation.card`), written from all of them last. A killed check
resumes: an interrupted run goes on from its backup, a finished run is evaluated without training
again.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pcam.config import (
    DEFAULT_MIN_ACCURACY,
    DEFAULT_MIN_AUC,
    UNFREEZE_FROM,
    FullCheckConfig,
)
from pcam.data.split import open_split
from pcam.errors import NoGPUError, OutputExistsError
from pcam.evaluation.card import (
    CARD_FILE,
    check_card_destination,
    is_card_file,
    record_data,
    write_card,
)
from pcam.outputs import claim_directory, write_json_atomically

__all__ = [
    "DEFAULT_MIN_ACCURACY",
    "DEFAULT_MIN_AUC",
    "FULL_CHECK",
    "SUMMARY_FILE",
    "UNFREEZE_FROM",
    "FullCheckConfig",
    "FullCheckResult",
    "floor_failures",
    "full_check",
]

FULL_CHECK = "full check"
"""The kind of output folder ``pcam fullcheck`` writes (see :mod:`pcam.outputs`)."""

SUMMARY_FILE = "fullcheck.json"


@dataclass
class FullCheckResult:
    """What a full training check measured and whether it met its floors."""

    metrics: dict[str, Any]
    """The evaluation report (``report/metrics.json``)."""
    failures: list[str] = field(default_factory=list)
    """One line per floor that was not met (empty: passed)."""
    summary_path: Path | None = None
    """Where ``fullcheck.json`` was written."""
    card_path: Path | None = None
    """Where ``MODEL_CARD.md`` was written (next to ``fullcheck.json``)."""

    @property
    def passed(self) -> bool:
        """Whether every floor was met."""
        return not self.failures


def floor_failures(
    metrics: dict[str, Any], *, min_accuracy: float, min_auc: float, split: str = "test"
) -> list[str]:
    """One line per floor ``metrics`` does not meet (accuracy and ROC AUC), empty when all are."""
    failures = []
    floors = (("accuracy", "accuracy", min_accuracy), ("roc_auc", "AUC", min_auc))
    for name, label, floor in floors:
        value = float(metrics[name])
        if not value >= floor:  # a NaN fails too
            failures.append(
                f"{label} on {split} is {value:.4f}, below the floor {floor:.4f}: the recipe "
                "or the package regressed (or the budget is too small for this floor)"
            )
    return failures


Progress = Callable[[str, int], Callable[[int], None]] | None
"""``progress(label, total)``, which may return an ``update(done)`` callback (or ``None``)."""


def full_check(
    config: FullCheckConfig,
    *,
    say: Callable[[str], None] = print,
    progress: Progress = None,
    verbose: int | str = 2,
) -> FullCheckResult:
    """Train, evaluate and explain as ``config`` says; write ``fullcheck.json``; return the result.

    Inputs are checked before any work: the settings, the GPU when ``require_gpu``, the three
    splits, and the output directory (and the model card's place in it). The data files are
    checksummed first (:func:`pcam.evaluation.card.record_data`). ``say`` receives one line per
    step; ``progress(label, total)`` may return an ``update(done)`` callback for the long
    predictions. ``MODEL_CARD.md`` is written from the check's records last.
    """
    out = _checked_output(config)
    run = out / "run"
    eval_size = len(open_split(config.data, config.eval_split))
    step = time.perf_counter()
    say(f"checksumming the data files in {config.data}")
    data = record_data(config.data, ("train", "valid", config.eval_split))
    checksum_seconds = time.perf_counter() - step
    started = time.perf_counter()
    history = _train_or_resume(config, run, say=say, verbose=verbose)
    timings = {"train_seconds": time.perf_counter() - started}
    step = time.perf_counter()
    calibration = _calibrate(config, run / "model.keras", say, progress)
    timings["calibrate_seconds"] = time.perf_counter() - step
    step = time.perf_counter()
    metrics = _evaluate(config, eval_size, run / "model.keras", out / "report", say, progress)
    timings["evaluate_seconds"] = time.perf_counter() - step
    step = time.perf_counter()
    n = min(config.explain_patches, eval_size)
    _explain(config, n, run / "model.keras", out / "explain", say, progress)
    timings["explain_seconds"] = time.perf_counter() - step
    step = time.perf_counter()
    robustness = (
        _robustness(config, eval_size, run / "model.keras", out / "robustness", say, progress)
        if config.robustness
        else None
    )
    timings["robustness_seconds"] = time.perf_counter() - step
    timings["data_checksum_seconds"] = checksum_seconds
    timings["total_seconds"] = time.perf_counter() - started
    failures = floor_failures(
        metrics,
        min_accuracy=config.min_accuracy,
        min_auc=config.min_auc,
        split=config.eval_split,
    )
    summary = {
        "passed": not failures,
        "failures": failures,
        "floors": {"accuracy": config.min_accuracy, "auc": config.min_auc},
        "figures": {
            "accuracy": metrics["accuracy"],
            "auc": metrics["roc_auc"],
            "nll": metrics.get("nll"),
            "split": config.eval_split,
            "tta": config.tta,
        },
        "calibration": _calibration_summary(calibration, metrics, config.eval_split),
        "robustness": None if robustness is None else _robustness_summary(robustness),
        "config": asdict(config),
        "epochs_trained_this_session": len(history.get("loss", [])),
        "timings": timings,
        "machine": _machine(),
        "data": data,
        "model": _model_record(run / "model.keras"),
    }
    write_json_atomically(out / SUMMARY_FILE, summary)
    card = write_card(run, fullcheck=out, out=out / CARD_FILE, overwrite=True)
    say(f"model card: {card}")
    return FullCheckResult(
        metrics=metrics, failures=failures, summary_path=out / SUMMARY_FILE, card_path=card
    )


def _checked_output(config: FullCheckConfig) -> Path:
    """Check the settings, the GPU, the splits and the output folder; returns the folder.

    A finished check's summary is removed (with ``overwrite``) or refused, before any work; so
    is the model card pcam wrote of an earlier check, and a ``MODEL_CARD.md`` pcam did not write
    is refused.
    """
    from pcam.model.train import gpu_present

    config.check()
    if config.require_gpu and not gpu_present():
        raise NoGPUError()
    for split in {"train", "valid", config.eval_split}:
        open_split(config.data, split)
    out = Path(config.out)
    summary_path = out / SUMMARY_FILE
    claim_directory(out, FULL_CHECK)  # a folder holding anyone else's files is refused
    if summary_path.exists() and not config.overwrite:
        raise OutputExistsError(out)
    if summary_path.exists():
        summary_path.unlink()
    card = check_card_destination(out / CARD_FILE, overwrite=True)
    if is_card_file(card):  # an earlier check's: it would describe files about to be replaced
        card.unlink()
    return out


def _model_record(model_path: Path) -> dict[str, Any]:
    """The model of ``fullcheck.json``: its file, size and parameter count (weights only)."""
    from pcam.model.architectures import load_model

    model = load_model(model_path, calibration=False)
    return {
        "file": model_path.name,
        "bytes": model_path.stat().st_size,
        "parameters": int(model.count_params()),
    }


def _evaluate(
    config: FullCheckConfig,
    eval_size: int,
    model_path: Path,
    report_dir: Path,
    say: Callable[[str], None],
    progress: Progress,
) -> dict[str, Any]:
    """Evaluate the best model on the evaluation split (with TTA as configured)."""
    from pcam.evaluation.evaluate import evaluate

    views = " x8 symmetries" if config.tta else ""
    say(f"evaluating the best model on {eval_size:,} {config.eval_split} patches{views}")
    update = progress(f"predicting {config.eval_split}", eval_size) if progress else None
    metrics: dict[str, Any] = evaluate(
        model_path,
        config.data,
        config.eval_split,
        report_dir,
        tta=config.tta,
        overwrite=True,
        progress=update,
    )
    return metrics


def _calibrate(
    config: FullCheckConfig, model_path: Path, say: Callable[[str], None], progress: Progress
) -> dict[str, Any]:
    """Fit the temperature and the operating-point thresholds on valid, beside the model."""
    from pcam.evaluation.temperature import calibrate

    size = len(open_split(config.data, "valid"))
    say(f"calibrating the best model on {size:,} valid patches (temperature scaling)")
    update = progress("predicting valid", size) if progress else None
    return calibrate(model_path, config.data, "valid", overwrite=True, progress=update)


def _calibration_summary(
    record: dict[str, Any], metrics: dict[str, Any], split: str
) -> dict[str, Any]:
    """The calibration figures of ``fullcheck.json``: the fit on valid, and the scored split."""
    scored = metrics["calibration"]
    return {
        "temperature": record["temperature"],
        "file": record["file"],
        "valid_before": record["before"],
        "valid_after": record["after"],
        split: {
            "nll": metrics["nll"],
            "ece": scored["ece"],
            "ece_equal_mass": scored["ece_equal_mass"],
            "brier": scored["brier"],
        },
        "operating_points": metrics["operating_points"],
    }


def _explain(
    config: FullCheckConfig,
    n: int,
    model_path: Path,
    explain_dir: Path,
    say: Callable[[str], None],
    progress: Progress,
) -> None:
    """Draw the Grad-CAM grid of ``n`` patches of the evaluation split."""
    from pcam.explain.explanation import explain

    say(f"explaining {n} {config.eval_split} patches with Grad-CAM")
    update = progress("explaining", n) if progress else None
    explain(
        model_path,
        config.data,
        explain_dir,
        split=config.eval_split,
        n=n,
        seed=config.seed,
        overwrite=True,
        progress=update,
    )


def _robustness(
    config: FullCheckConfig,
    eval_size: int,
    model_path: Path,
    out: Path,
    say: Callable[[str], None],
    progress: Progress,
) -> dict[str, Any]:
    """The stain-shift robustness suite on the evaluation split (``robustness/``)."""
    from pcam.evaluation.robustness import SHIFTS, robustness
    from pcam.explain.gradcam import GradCAM

    passes = 1 + len(SHIFTS)
    say(
        f"scoring {eval_size:,} {config.eval_split} patches under {len(SHIFTS)} stain and "
        "scanner shifts (robustness)"
    )
    update = progress("robustness", passes * eval_size) if progress else None
    report: dict[str, Any] = robustness(
        model_path,
        config.data,
        config.eval_split,
        out,
        cam_maker=GradCAM,
        seed=config.seed,
        overwrite=True,
        progress=update,
    )
    return report


def _robustness_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The robustness figures of ``fullcheck.json``: per shift, the figures and their drops."""
    keys = ("accuracy", "roc_auc", "drop_accuracy", "drop_auc", "cam_correlation")
    rows = {row["name"]: {key: row.get(key) for key in keys} for row in report["results"]}
    hed_strong = [row for name, row in rows.items() if name.startswith("hed-strong")]
    drops = [row["drop_auc"] for row in hed_strong if row["drop_auc"] is not None]
    return {
        "split": report["split"],
        "patches": report["patches"],
        "shifts": rows,
        "worst_drop_auc": max(
            (row["drop_auc"] for row in rows.values() if row["drop_auc"] is not None),
            default=None,
        ),
        "mean_drop_auc_hed_strong": sum(drops) / len(drops) if drops else None,
    }


def _train_or_resume(
    config: FullCheckConfig, run: Path, *, say: Callable[[str], None], verbose: int | str
) -> dict[str, list[float]]:
    """Train into ``run`` (resuming an interrupted run); skip a run that finished earlier.

    A two-phase check trains ``run-head/`` beside ``run`` first, and ``run`` from its model.
    """
    from pcam.model.train import TrainConfig

    recipe = TrainConfig(
        data=config.data,
        out=str(run),
        epochs=config.epochs,
        batch_size=config.batch_size,
        model=config.model,
        weights=config.weights,
        lr=config.lr,
        lr_schedule="cosine",
        max_train_samples=config.max_train_samples,
        seed=config.seed,
        colour_augment=config.colour_augment,
        augment_on=config.augment_on,
        patience=config.patience,
        overwrite=config.overwrite,
    )
    if not config.two_phase:
        return _train_phase(recipe, config, say=say, verbose=verbose, phase="")
    head_run = run.parent / "run-head"
    head = replace(
        recipe,
        out=str(head_run),
        epochs=config.head_epochs,
        lr=config.head_lr,
        freeze_backbone=True,
    )
    first = _train_phase(head, config, say=say, verbose=verbose, phase="phase 1 (head only): ")
    unfreeze_from = config.unfreeze_from or UNFREEZE_FROM[config.model]
    tuned = replace(
        recipe, weights=None, init=str(head_run / "model.keras"), unfreeze_from=unfreeze_from
    )
    second = _train_phase(
        tuned, config, say=say, verbose=verbose, phase=f"phase 2 (from {unfreeze_from} on): "
    )
    return {key: first.get(key, []) + second.get(key, []) for key in {*first, *second}}


def _train_phase(
    recipe: Any,
    config: FullCheckConfig,
    *,
    say: Callable[[str], None],
    verbose: int | str,
    phase: str,
) -> dict[str, list[float]]:
    """Train one run of the check (or skip it when it finished earlier)."""
    from pcam.model.train import run_is_finished, train

    run = Path(recipe.out)
    if run_is_finished(run) and not config.overwrite:
        say(f"{phase}training finished earlier in {run}: using its model")
        return {}
    budget = f"{config.max_train_samples:,} patches" if config.max_train_samples else "all patches"
    start = f"weights of {recipe.init}" if recipe.init else f"weights: {recipe.weights or 'random'}"
    say(
        f"{phase}training {config.model} ({start}) for up to {recipe.epochs} epochs of "
        f"{budget}, batch {config.batch_size}, peak lr {recipe.lr:g}"
    )
    history: dict[str, list[float]] = train(recipe, verbose=verbose)
    return history


def _machine() -> dict[str, Any]:
    """The software and devices the check ran on (for the record in ``fullcheck.json``)."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(str(details.get("device_name", gpu.name)))
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpus": names,
        "cpu_count": os.cpu_count(),
    }
