"""Evaluation figures as PNG files: ROC, confusion matrix, per class, reliability, training.

Figures are made with Matplotlib's object API (no pyplot, no global state, no display needed).
Each function writes one file and returns its path.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skm

from pcam.evaluation.calibration import DEFAULT_BINS, reliability_bins
from pcam.evaluation.metrics import CLASS_NAMES


def plot_roc(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, report: dict[str, Any], path: Path
) -> Path:
    """The ROC curve with its AUC (and 95% interval) in the legend."""
    false_positive, true_positive, _ = skm.roc_curve(labels, probabilities)
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    auc = report["roc_auc"]
    interval = report["ci95"].get("roc_auc")
    label = f"AUC {auc:.3f}" + (
        f" (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else ""
    )
    axes.plot(false_positive, true_positive, color="tab:purple", label=label)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"ROC curve, {report['n']:,} patches",
    )
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_reliability(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, report: dict[str, Any], path: Path
) -> Path:
    """The reliability diagram: observed tumour fraction against mean probability per bin.

    Above, each non-empty equal-width bin is a point labelled with its patch count, on the
    diagonal of perfect calibration, with both ECEs and the Brier score in the title; below, the
    histogram of the probabilities over the same bins.
    """
    calibration = report["calibration"]
    figure = Figure(figsize=(5, 6.5))
    diagram, histogram = figure.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    title = (
        f"ECE {calibration['ece']:.3f} (equal-mass {calibration['ece_equal_mass']:.3f}), "
        f"Brier {calibration['brier']:.3f}"
    )
    _draw_reliability(diagram, histogram, labels, probabilities, calibration["bins"], title)
    return _save(figure, path)


def plot_reliability_pair(
    labels: npt.ArrayLike,
    before: npt.ArrayLike,
    after: npt.ArrayLike,
    titles: tuple[str, str],
    path: Path,
    *,
    bins: int = DEFAULT_BINS,
) -> Path:
    """Two reliability diagrams side by side: the same patches before and after calibration."""
    figure = Figure(figsize=(9.5, 6.5))
    axes = figure.subplots(2, 2, height_ratios=[3, 1], sharex=True)
    for column, (probabilities, title) in enumerate(zip((before, after), titles, strict=True)):
        _draw_reliability(axes[0, column], axes[1, column], labels, probabilities, bins, title)
    return _save(figure, path)


def _draw_reliability(
    diagram: Any,
    histogram: Any,
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    bins: int,
    title: str,
) -> None:
    """One reliability diagram (points with counts on the diagonal) over its histogram."""
    binned = reliability_bins(labels, probabilities, bins=bins)
    filled = binned.counts > 0
    diagram.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    mean, observed = binned.mean_probability[filled], binned.observed_frequency[filled]
    diagram.plot(mean, observed, marker="o", color="tab:purple", label="model")
    for x, y, count in zip(mean, observed, binned.counts[filled], strict=True):
        diagram.annotate(
            f"{count:,}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7
        )
    diagram.set(ylabel="observed tumour fraction", xlim=(0, 1), ylim=(0, 1.01), title=title)
    diagram.legend(loc="upper left")
    histogram.hist(
        np.asarray(probabilities, dtype=np.float64).reshape(-1),
        bins=binned.edges,
        color="tab:purple",
    )
    histogram.set(xlabel="predicted tumour probability", ylabel="patches")


def plot_confusion_matrix(report: dict[str, Any], path: Path) -> Path:
    """The confusion matrix with counts and row percentages in each cell."""
    matrix = np.array(report["confusion_matrix"]["matrix"])
    rows = matrix.sum(axis=1, keepdims=True).clip(min=1)
    figure = Figure(figsize=(4.5, 4))
    axes = figure.subplots()
    axes.imshow(matrix / rows, cmap="Purples", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(matrix):
        share = count / rows[row, 0]
        axes.text(
            col,
            row,
            f"{count:,}\n{share:.1%}",
            ha="center",
            va="center",
            color="white" if share > 0.5 else "black",
        )
    axes.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=CLASS_NAMES,
        yticklabels=CLASS_NAMES,
        xlabel="predicted",
        ylabel="true",
        title=f"threshold {report['threshold']:.2f}, accuracy {report['accuracy']:.3f}",
    )
    return _save(figure, path)


def plot_per_class(report: dict[str, Any], path: Path) -> Path:
    """Precision, recall and F1 of each class as grouped bars."""
    scores = ("precision", "recall", "f1")
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    width = 0.25
    for offset, score in enumerate(scores):
        values = [report["per_class"][name][score] for name in CLASS_NAMES]
        bars = axes.bar(np.arange(2) + (offset - 1) * width, values, width, label=score)
        axes.bar_label(bars, fmt="%.2f", fontsize=8)
    axes.set(
        xticks=[0, 1],
        xticklabels=CLASS_NAMES,
        ylim=(0, 1.1),
        ylabel="score",
        title="per-class scores",
    )
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_training_curves(log_path: Path, path: Path) -> Path | None:
    """Loss and accuracy per epoch from a Keras CSV log (``None`` if it holds no epochs)."""
    with log_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure = Figure(figsize=(10, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            column = prefix + metric
            if column in rows[0]:
                axes.plot(
                    epochs,
                    [float(row[column]) for row in rows],
                    style,
                    marker="o",
                    label="validation" if prefix else "training",
                )
        axes.set(xlabel="epoch", ylabel=metric, title=metric)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
