"""The figure of ``pcam robustness``: scores and Grad-CAM stability per colour shift.

Made with Matplotlib's object API (no pyplot, no global state, no display needed), like
:mod:`pcam.evaluation.plots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

_SCORES = (("roc_auc", "ROC AUC", "tab:purple"), ("accuracy", "accuracy", "tab:orange"))


def plot_robustness(report: dict[str, Any], path: Path) -> Path:
    """The figure of a robustness report (see :func:`pcam.evaluation.robustness.write_robustness`).

    Above, ROC AUC and accuracy per shift as bars with the unshifted levels as dashed lines;
    below, the mean Grad-CAM correlation per shift (bars) and its lowest patch (markers).
    """
    unshifted, *shifted = report["results"]
    names = [row["name"] for row in shifted]
    figure = Figure(figsize=(max(7.0, 0.75 * len(names) + 2.5), 7.5))
    scores, cams = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    positions = np.arange(len(names))
    _draw_scores(scores, positions, shifted, unshifted)
    _draw_cams(cams, positions, shifted)
    cams.set_xticks(positions, names, rotation=35, ha="right")
    scores.set_title(
        f"{report['patches']:,} patches of {report['split']} under colour shifts"
        + (" (x8 TTA)" if report["tta"] else "")
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [np.nan if row[key] is None else float(row[key]) for row in rows]


def _draw_scores(
    axes: Any, positions: Any, shifted: list[dict[str, Any]], unshifted: dict[str, Any]
) -> None:
    width = 0.38
    for offset, (key, label, colour) in enumerate(_SCORES):
        bars = axes.bar(
            positions + (offset - 0.5) * width,
            _values(shifted, key),
            width,
            label=label,
            color=colour,
        )
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
        if unshifted[key] is not None:
            axes.axhline(
                unshifted[key],
                color=colour,
                linestyle="--",
                linewidth=1.2,
                zorder=3,  # over the bars
                label=f"unshifted {label} {unshifted[key]:.3f}",
            )
    axes.set(ylim=(0, 1.25), ylabel="ROC AUC; accuracy at threshold 0.5")
    axes.legend(loc="upper center", fontsize=8, ncols=4)


def _draw_cams(axes: Any, positions: Any, shifted: list[dict[str, Any]]) -> None:
    means = _values(shifted, "cam_correlation")
    if all(np.isnan(means)) or not means:
        axes.text(0.5, 0.5, "no Grad-CAM check", ha="center", va="center", transform=axes.transAxes)
        axes.set(ylim=(0, 1.3), ylabel="Grad-CAM correlation")
        return
    lowest = _values(shifted, "cam_correlation_min")
    bars = axes.bar(positions, means, 0.6, color="tab:green", label="mean over patches")
    axes.bar_label(bars, fmt="%.3f", label_type="center", fontsize=7, color="white")
    axes.plot(positions, lowest, "v", color="black", label="lowest patch")
    axes.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    bottom = min(0.0, float(np.nanmin(lowest))) - 0.05
    axes.set(ylim=(bottom, 1.3), ylabel="Grad-CAM correlation\n(unshifted vs shifted)")
    axes.legend(loc="upper center", fontsize=8, ncols=2)
