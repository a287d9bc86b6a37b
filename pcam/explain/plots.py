"""Heatmap figures: colour overlays of CAMs on patches, and a grid of patches with their maps.

Figures use Matplotlib's object API (no pyplot, no global state, no display needed), like
:mod:`pcam.evaluation.plots`; single overlays are written pixel for pixel with Pillow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from PIL import Image

from pcam.errors import InvalidArgumentError
from pcam.evaluation.metrics import CLASS_NAMES
from pcam.model.heads import DEFAULT_THRESHOLD

PANELS = ("patch", "heatmap (each scaled to its own maximum)", "overlay")
"""The three panels shown for each patch, left to right."""


def overlay(
    image: npt.ArrayLike, heatmap: npt.ArrayLike, *, alpha: float = 0.5, cmap: str = "jet"
) -> npt.NDArray[np.uint8]:
    """The patch blended with its coloured map: ``(1 - alpha) * image + alpha * cmap(map)``.

    ``image`` is ``uint8 [H, W, 3]``, ``heatmap`` a map ``[H, W]`` in ``[0, 1]`` at the same
    size (upsample it first); returns ``uint8 [H, W, 3]``.
    """
    patch = _check_image(image)
    values = _check_heatmap(heatmap, patch.shape[:2])
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgumentError("alpha", "a number in [0, 1]", alpha)
    colours = _colormap(cmap)(values)[..., :3] * 255.0
    blended = (1.0 - alpha) * patch.astype(np.float64) + alpha * colours
    result: npt.NDArray[np.uint8] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return result


def save_overlay(
    path: Path,
    image: npt.ArrayLike,
    heatmap: npt.ArrayLike,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> Path:
    """Write the overlay of one patch as an RGB PNG at the patch's own size; returns ``path``."""
    Image.fromarray(overlay(image, heatmap, alpha=alpha, cmap=cmap), mode="RGB").save(
        path, format="PNG"
    )
    return path


def save_grid(
    path: Path,
    images: npt.ArrayLike,
    maps: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    *,
    names: Sequence[str] | None = None,
    masks: npt.ArrayLike | None = None,
    title: str = "",
    alpha: float = 0.5,
    cmap: str = "jet",
    per_row: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> Path:
    """Write a grid of patch / heatmap / overlay panels, a title over each patch's three.

    Each title gives the patch's name, its predicted tumour probability and, when ``labels``
    is given, its true label (green when the prediction at ``threshold`` is right, red when
    wrong).
    ``masks`` outline the true tumour on the patch panel. ``per_row`` patches share a row
    (default: 1 for up to 4 patches, else 2, else 3 from 33 patches on).
    """
    batch = np.asarray(images)
    if batch.ndim != 4 or batch.shape[0] < 1:
        raise InvalidArgumentError("images", "patches [B >= 1, H, W, 3]", f"shape {batch.shape}")
    count = batch.shape[0]
    values = np.asarray(maps)
    scores = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    truth = None if labels is None else np.asarray(labels).reshape(-1)
    outlines = None if masks is None else np.asarray(masks, dtype=bool).reshape(batch.shape[:3])
    shown = list(names) if names is not None else [f"#{i}" for i in range(count)]
    for name, size in (
        ("maps", values.shape[0]),
        ("probabilities", scores.size),
        ("labels", count if truth is None else truth.size),
        ("names", len(shown)),
    ):
        if size != count:
            raise InvalidArgumentError(name, f"one per patch ({count})", size)
    columns = per_row or (1 if count <= 4 else 2 if count <= 32 else 3)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(3 * columns * 1.55, rows * 1.8 + 0.5), layout="constrained")
    grid = figure.subplots(rows, 3 * columns, squeeze=False)
    heat: Any = None
    for position, axes in enumerate(grid.reshape(-1, 3)):
        for panel in axes:
            panel.set_axis_off()
        if position >= count:
            continue
        patch = _check_image(batch[position])
        heatmap = _check_heatmap(values[position], patch.shape[:2])
        axes[0].imshow(patch)
        if outlines is not None and outlines[position].any():
            axes[0].contour(outlines[position], levels=[0.5], colors="white", linewidths=0.8)
        heat = axes[1].imshow(heatmap, cmap=cmap, vmin=0.0, vmax=1.0)
        axes[2].imshow(overlay(patch, heatmap, alpha=alpha, cmap=cmap))
        label = None if truth is None else int(truth[position])
        text, colour = _patch_title(shown[position], float(scores[position]), label, threshold)
        axes[1].set_title(text, fontsize=8, color=colour)
    if heat is not None:
        figure.colorbar(heat, ax=grid, orientation="horizontal", fraction=0.02, aspect=60)
    columns_text = " / ".join(PANELS)
    figure.suptitle(f"{title}\ncolumns: {columns_text}" if title else columns_text, fontsize=10)
    figure.savefig(path, dpi=100)
    return path


def _patch_title(
    name: str, probability: float, label: int | None, threshold: float = DEFAULT_THRESHOLD
) -> tuple[str, str]:
    """Two lines over a patch and their colour (black: no label; green/red: right/wrong)."""
    short = name if len(name) <= 28 else name[:12] + "..." + name[-13:]
    text = f"{short}\np(tumour) {probability:.2f}"
    if label is None:
        return text, "black"
    predicted = int(probability >= threshold)
    return f"{text}, true {CLASS_NAMES[label]}", "tab:green" if predicted == label else "tab:red"


def _colormap(name: str) -> Any:
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise InvalidArgumentError(
            "cmap", "a Matplotlib colormap name such as 'jet' or 'viridis'", name
        ) from None


def _check_image(image: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    patch = np.asarray(image)
    if patch.ndim != 3 or patch.shape[-1] != 3:
        raise InvalidArgumentError("image", "an RGB patch [H, W, 3]", f"shape {patch.shape}")
    if patch.dtype != np.uint8:
        raise InvalidArgumentError("image", "uint8 pixels (0-255)", patch.dtype)
    return patch


def _check_heatmap(heatmap: npt.ArrayLike, size: tuple[int, ...]) -> npt.NDArray[np.float64]:
    values = np.asarray(heatmap, dtype=np.float64)
    if values.shape != size:
        raise InvalidArgumentError(
            "heatmap",
            f"a map of the patch's size {size} (upsample it with pcam.explain.gradcam.upsample)",
            f"shape {values.shape}",
        )
    if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
        raise InvalidArgumentError("heatmap", "values in [0, 1]", "values outside it")
    return values
