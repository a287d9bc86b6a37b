"""How well class activation maps locate tumour: pointing game, energy, deletion and insertion.

Every metric takes maps at the patch size (``[B, H, W]``, non-negative, as
:meth:`pcam.explain.gradcam.GradCAM.heatmaps` returns them with ``size=(96, 96)``) and, for the mask
metrics, tumour masks of the same shape (the synthetic writer's masks, or the PCam train mask).

- **Pointing game**: does the map's maximum fall inside the mask? Ties (a plateau of equal
  maxima, common in upsampled coarse maps) count as the share of the tied pixels inside the
  mask, the expected hit of a random tie-break; an all-zero map ties everywhere, so it scores
  the mask's area, which is chance.
- **Energy inside**: the fraction of the map's mass inside the mask (a map with no mass counts
  as uniform: the mask's area).
- **Deletion / insertion** (Petsiuk et al. 2018): the class probability as the most salient
  pixels are removed from the patch (deletion: a good map makes it fall fast, low area under
  the curve) or restored onto a removed patch (insertion: a good map makes it rise fast, high
  area). Ties in the map are broken in a seeded random order.

Patches whose mask is empty have no ground truth: their pointing-game and energy scores are NaN
and :func:`cam_report` counts them separately. :func:`random_maps` is the baseline every
metric is compared with.

Removed pixels are replaced by a strongly blurred copy of the patch by default (Gaussian,
sigma 8 px): that wipes out the nuclei (2-5 px) that carry the evidence while keeping the
colour and layout of the tissue, and adds no sharp edges that would be evidence of their own.
``baseline="mean"`` fills them with the patch's mean colour instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pcam.errors import InvalidArgumentError

Baseline = Literal["blur", "mean"]
BASELINES: tuple[Baseline, ...] = ("blur", "mean")
BLUR_SIGMA = 8.0
"""Standard deviation (pixels) of the Gaussian blur that replaces removed pixels."""

PredictFn = Callable[[npt.NDArray[np.uint8]], Any]
"""``uint8 images [N, H, W, 3]`` to tumour probabilities ``[N]`` (or ``[N, 1]``)."""

_TIE = 1e-6  # map values this close to the maximum are tied with it


@dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves of a batch of patches."""

    fractions: npt.NDArray[np.float64]
    """``[steps + 1]`` fraction of the pixels removed (deletion) or restored (insertion)."""
    deletion: npt.NDArray[np.float64]
    """``[B, steps + 1]`` probability of the class as the most salient pixels are removed."""
    insertion: npt.NDArray[np.float64]
    """``[B, steps + 1]`` probability of the class as the most salient pixels are restored."""

    @property
    def deletion_auc(self) -> npt.NDArray[np.float64]:
        """``[B]`` area under each deletion curve (lower is better)."""
        return _area(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> npt.NDArray[np.float64]:
        """``[B]`` area under each insertion curve (higher is better)."""
        return _area(self.fractions, self.insertion)


def pointing_game(maps: npt.ArrayLike, masks: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per patch ``[B]``: 1.0 when the map's maximum is inside the mask, 0.0 when outside.

    With tied maxima the score is the share of them inside the mask; patches with an empty
    mask score NaN (no ground truth).
    """
    values, inside = _maps_and_masks(maps, masks)
    flat = values.reshape(values.shape[0], -1)
    tied = flat >= flat.max(axis=1, keepdims=True) - _TIE
    flat_mask = inside.reshape(inside.shape[0], -1)
    hits = (tied & flat_mask).sum(axis=1) / tied.sum(axis=1)
    return np.where(flat_mask.any(axis=1), hits, np.nan)


def energy_inside(maps: npt.ArrayLike, masks: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per patch ``[B]``: the fraction of the map's mass inside the mask (NaN: empty mask).

    A map with no mass counts as uniform, so it scores the mask's area fraction.
    """
    values, inside = _maps_and_masks(maps, masks)
    flat = values.reshape(values.shape[0], -1).astype(np.float64)
    flat_mask = inside.reshape(inside.shape[0], -1)
    total = flat.sum(axis=1)
    share = (flat * flat_mask).sum(axis=1) / np.where(total > 0, total, 1.0)
    energy = np.where(total > 0, share, flat_mask.mean(axis=1))
    return np.where(flat_mask.any(axis=1), energy, np.nan)


def deletion_insertion(
    predict_fn: PredictFn,
    images: npt.ArrayLike,
    maps: npt.ArrayLike,
    *,
    steps: int = 16,
    baseline: Baseline = "blur",
    class_index: int = 1,
    batch_size: int = 512,
    seed: int = 0,
) -> Curves:
    """Deletion and insertion curves of ``steps + 1`` points, most salient pixels first.

    ``predict_fn`` gets uint8 patches and returns the tumour probability; the curves follow the
    probability of ``class_index`` (``1 - p`` for class 0). Every step of every patch is
    predicted in batches of about ``batch_size`` patches (a few calls for a grid of 16).
    """
    batch = _check_images(images)
    values = _check_maps(maps, "maps")
    if values.shape != batch.shape[:3]:
        raise InvalidArgumentError(
            "maps",
            f"one map per image at the patch size, shape {batch.shape[:3]} "
            "(upsample them with pcam.explain.gradcam.upsample)",
            f"shape {values.shape}",
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidArgumentError("steps", "an integer >= 1", steps)
    if baseline not in BASELINES:
        raise InvalidArgumentError("baseline", f"one of {', '.join(BASELINES)}", baseline)
    if class_index not in (0, 1):
        raise InvalidArgumentError("class_index", "0 (normal) or 1 (tumour)", class_index)
    count, height, width = values.shape
    pixels = height * width
    fractions = np.linspace(0.0, 1.0, steps + 1)
    kept = np.rint(fractions * pixels).astype(np.int64)
    ranks = _salience_ranks(values, seed)
    removed = baseline_images(batch, baseline)
    per_call = max(1, batch_size // (2 * (steps + 1)))
    deletion = np.empty((count, steps + 1))
    insertion = np.empty((count, steps + 1))
    for start in range(0, count, per_call):
        stop = min(start + per_call, count)
        # [patches, steps + 1, H, W]: is the pixel among the k most salient at this step?
        top = ranks[start:stop, None] < kept[None, :, None, None]
        original = batch[start:stop, None]
        blank = removed[start:stop, None]
        deleted = np.where(top[..., None], blank, original)
        inserted = np.where(top[..., None], original, blank)
        stack = np.concatenate([deleted, inserted]).reshape(-1, height, width, 3)
        probabilities = np.asarray(predict_fn(stack), dtype=np.float64).reshape(-1)
        if probabilities.size != stack.shape[0]:
            raise InvalidArgumentError(
                "predict_fn", f"{stack.shape[0]} probabilities", f"{probabilities.size}"
            )
        scores = probabilities if class_index == 1 else 1.0 - probabilities
        scores = scores.reshape(2, stop - start, steps + 1)
        deletion[start:stop], insertion[start:stop] = scores[0], scores[1]
    return Curves(fractions=fractions, deletion=deletion, insertion=insertion)


def baseline_images(images: npt.ArrayLike, baseline: Baseline = "blur") -> npt.NDArray[np.uint8]:
    """What removed pixels become: a Gaussian blur (sigma 8 px) or the patch's mean colour."""
    batch = _check_images(images)
    if baseline == "mean":
        mean = batch.mean(axis=(1, 2), keepdims=True)
        return np.broadcast_to(np.rint(mean), batch.shape).astype(np.uint8)
    rows = _blur_matrix(batch.shape[1], BLUR_SIGMA)
    cols = _blur_matrix(batch.shape[2], BLUR_SIGMA)
    blurred = np.einsum("ij,bjkc,lk->bilc", rows, batch.astype(np.float32), cols, optimize=True)
    result: npt.NDArray[np.uint8] = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
    return result


def random_maps(
    shape: tuple[int, int, int], seed: int, *, grid: tuple[int, int] | None = None
) -> npt.NDArray[np.float32]:
    """Random maps ``[B, H, W]`` in ``[0, 1]``, each with maximum 1: the baseline of the metrics.

    With ``grid`` the random values are drawn at that coarse resolution and upsampled
    bilinearly, like a CAM of a layer of that size, so the baseline is as smooth as the maps it
    is compared with. The same ``shape``, ``seed`` and ``grid`` give the same maps.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise InvalidArgumentError("shape", "(patches, height, width), each >= 1", shape)
    rng = np.random.default_rng(seed)
    count, height, width = (int(side) for side in shape)
    coarse = grid if grid is not None else (height, width)
    values = rng.random((count, *coarse), dtype=np.float32)
    if tuple(coarse) != (height, width):
        from pcam.explain.gradcam import upsample  # TensorFlow only when a grid is upsampled

        values = upsample(values, (height, width))
    peak = values.reshape(count, -1).max(axis=1).reshape(count, 1, 1)
    result: npt.NDArray[np.float32] = (values / np.maximum(peak, 1e-12)).astype(np.float32)
    return result


def cam_report(
    predict_fn: PredictFn,
    images: npt.ArrayLike,
    maps: npt.ArrayLike,
    masks: npt.ArrayLike | None = None,
    *,
    class_index: int = 1,
    steps: int = 16,
    baseline: Baseline = "blur",
    random_grid: tuple[int, int] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric for the maps and for random maps on the same patches, as a JSON-able dict.

    Without ``masks`` only deletion and insertion are computed. ``random_grid`` is the native
    resolution of the CAM (its layer's map size), so the random baseline is as coarse. The dict
    holds the means (``cam`` and ``random``), the mean curves and per-patch values (NaN, for a
    patch without a mask, becomes ``None``).
    """
    batch = _check_images(images)
    values = _check_maps(maps, "maps")
    count, height, width = values.shape
    noise = random_maps((count, height, width), seed, grid=random_grid)
    report: dict[str, Any] = {
        "patches": int(values.shape[0]),
        "class_index": class_index,
        "steps": steps,
        "removed_pixels": f"gaussian blur, sigma {BLUR_SIGMA:g} px"
        if baseline == "blur"
        else "mean colour",
        "random_grid": list(random_grid) if random_grid is not None else list(values.shape[1:]),
        "seed": seed,
    }
    per_patch: dict[str, dict[str, list[float | None]]] = {"cam": {}, "random": {}}
    summary: dict[str, dict[str, Any]] = {"cam": {}, "random": {}}
    inside = None if masks is None else _check_masks(masks, values.shape)
    if inside is not None:
        area = inside.reshape(count, -1).mean(axis=1)
        report["with_mask"] = int((area > 0).sum())
        report["without_mask"] = int((area == 0).sum())
        report["mask_area"] = _mean(np.where(area > 0, area, np.nan))
    for name, candidate in (("cam", values), ("random", noise)):
        if inside is not None:
            for metric, function in (
                ("pointing_game", pointing_game),
                ("energy_inside", energy_inside),
            ):
                scores = function(candidate, inside)
                per_patch[name][metric] = _jsonable(scores)
                summary[name][metric] = _mean(scores)
        curves = deletion_insertion(
            predict_fn,
            batch,
            candidate,
            steps=steps,
            baseline=baseline,
            class_index=class_index,
            seed=seed,
        )
        for metric, aucs in (
            ("deletion_auc", curves.deletion_auc),
            ("insertion_auc", curves.insertion_auc),
        ):
            per_patch[name][metric] = _jsonable(aucs)
            summary[name][metric] = _mean(aucs)
        summary[name]["deletion_curve"] = _jsonable(curves.deletion.mean(axis=0))
        summary[name]["insertion_curve"] = _jsonable(curves.insertion.mean(axis=0))
        report["fractions"] = _jsonable(curves.fractions)
    report.update(summary)
    report["per_patch"] = per_patch
    return report


# -- helpers ---------------------------------------------------------------------------------------


def _check_maps(maps: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    values = np.asarray(maps)
    if values.ndim != 3 or values.shape[0] < 1 or not np.issubdtype(values.dtype, np.number):
        raise InvalidArgumentError(
            name, "numeric maps [B >= 1, H, W]", f"{values.dtype} array of shape {values.shape}"
        )
    values = values.astype(np.float64)
    not_finite = int((~np.isfinite(values)).sum())
    negative = int((values < 0).sum())
    if not_finite or negative:
        raise InvalidArgumentError(
            name,
            "finite, non-negative map values (such as Grad-CAM's [0, 1])",
            f"{not_finite} values NaN or infinite and {negative} negative",
        )
    return values


def _check_masks(masks: npt.ArrayLike, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    inside = np.asarray(masks)
    if inside.ndim == 4 and inside.shape[-1] == 1:  # the PCam mask file's [n, 96, 96, 1]
        inside = inside[..., 0]
    if inside.shape != shape:
        raise InvalidArgumentError(
            "masks",
            f"one mask per map, shape {shape} (upsample the maps to the patch size first)",
            f"shape {inside.shape}",
        )
    if inside.dtype != np.bool_:
        raise InvalidArgumentError("masks", "boolean masks (True: tumour)", inside.dtype)
    return inside


def _maps_and_masks(
    maps: npt.ArrayLike, masks: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    values = _check_maps(maps, "maps")
    return values, _check_masks(masks, values.shape)


def _check_images(images: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    batch = np.asarray(images)
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.shape[0] < 1:
        raise InvalidArgumentError("images", "RGB patches [B >= 1, H, W, 3]", f"{batch.shape}")
    if batch.dtype != np.uint8:
        raise InvalidArgumentError("images", "uint8 patches (raw 0-255 pixels)", batch.dtype)
    return batch


def _salience_ranks(values: npt.NDArray[np.float64], seed: int) -> npt.NDArray[np.int64]:
    """``[B, H, W]`` rank of each pixel, 0 for the most salient; ties in a seeded random order."""
    count = values.shape[0]
    flat = values.reshape(count, -1)
    tie_break = np.random.default_rng(seed).random(flat.shape)
    order = np.lexsort((tie_break, -flat), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :].repeat(count, 0), axis=-1)
    return ranks.reshape(values.shape)


def _blur_matrix(size: int, sigma: float) -> npt.NDArray[np.float32]:
    """``[size, size]`` matrix of a 1-D Gaussian blur with mirrored borders."""
    radius = math.ceil(3 * sigma)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    source = np.arange(size)[:, None] + taps[None, :]
    period = source % (2 * size)
    source = np.where(period < size, period, 2 * size - 1 - period)  # mirror at both edges
    matrix = np.zeros((size, size), dtype=np.float64)
    np.add.at(
        matrix, (np.repeat(np.arange(size), taps.size), source.ravel()), np.tile(weights, size)
    )
    return matrix.astype(np.float32)


def _area(
    fractions: npt.NDArray[np.float64], curves: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Trapezoidal area under each curve ``[B, steps + 1]`` over ``fractions``."""
    heights = (curves[:, 1:] + curves[:, :-1]) / 2.0
    result: npt.NDArray[np.float64] = (heights * np.diff(fractions)[None, :]).sum(axis=1)
    return result


def _mean(values: npt.NDArray[np.float64]) -> float | None:
    """Mean over the finite values, ``None`` when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _jsonable(values: npt.NDArray[np.float64]) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, np.float64).tolist()]
