"""Explain a saved model's predictions with class activation maps: grid, overlays, metrics.

:func:`explain` takes patches from a PCam split (``n`` of them, sampled by seed, half tumour
where the split allows) or from image files (PNG, JPEG or TIFF, 96x96 RGB), computes their
maps (Grad-CAM and friends, see :mod:`pcam.explain.gradcam`) upsampled to the patch, and writes:

- ``grid.png``: patch, heatmap and overlay of every patch, titled with the predicted tumour
  probability and the true label when known;
- ``overlays/<name>.png``: each overlay at the patch's own 96x96 size;
- ``explain.json``: per patch the probability, the label predicted at ``threshold`` and the
  true label, the layer, method and threshold, and the metrics of
  :func:`pcam.explain.cam_quality.cam_report` with their random baseline.

The maps explain the tumour class by default (``class_index=1``): the question a pathologist
asks of a heatmap is where the tumour evidence lies, and the tumour masks are the ground truth
only for that class. Metrics are computed on the patches whose true label is the explained
class (all patches when labels are unknown); the pointing game and the energy need the split's
tumour mask (the train split, when its mask file is present).

Every input is checked before the model is loaded, and the output directory is built under a
temporary name next to its destination and renamed when complete, so a failure leaves nothing
behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pcam import layout
from pcam.data.patch_io import decode_patch, image_files
from pcam.data.split import open_split
from pcam.errors import InvalidArgumentError
from pcam.evaluation.metrics import CLASS_NAMES
from pcam.model.heads import DEFAULT_THRESHOLD
from pcam.outputs import refuse_existing_directory, staged_directory

if TYPE_CHECKING:
    from pcam.explain.gradcam import Method

EXPLANATION = "explanation"
"""The kind of output folder ``pcam explain`` writes (see :mod:`pcam.outputs`)."""

CAM_BATCH = 64
"""Patches per Grad-CAM call."""

_PATCH_SIDE = layout.PATCH_SIZE


@dataclass(frozen=True)
class Patches:
    """Patches to explain, with what is known about them."""

    images: npt.NDArray[np.uint8]
    """``[n, 96, 96, 3]`` RGB."""
    names: list[str]
    """One unique name per patch (used for the overlay files)."""
    labels: npt.NDArray[np.int64] | None
    """``[n]`` true labels, when known."""
    masks: npt.NDArray[np.bool_] | None
    """``[n, 96, 96]`` tumour masks, when the split has them."""
    source: dict[str, Any]
    """Where the patches came from (data directory, split and indices, or file paths)."""


def sample_indices(labels: npt.ArrayLike, n: int, seed: int) -> npt.NDArray[np.int64]:
    """``min(n, len(labels))`` sorted indices, half of them tumour where possible, by ``seed``.

    The tumour half rounds up; when one class is short, the other fills the sample.
    """
    values = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    positives = rng.permutation(np.flatnonzero(values == 1))
    negatives = rng.permutation(np.flatnonzero(values != 1))
    count = min(n, values.size)
    tumour = min(positives.size, max(count - negatives.size, (count + 1) // 2))
    chosen = np.concatenate([positives[:tumour], negatives[: count - tumour]])
    return np.sort(chosen).astype(np.int64)


def split_patches(
    data_dir: str | os.PathLike[str], split: str, n: int, *, seed: int = 0
) -> Patches:
    """``n`` patches of a PCam split (see :func:`sample_indices`), with masks when present."""
    handle = open_split(data_dir, split)
    indices = sample_indices(handle.labels, n, seed)
    masks = handle.read_mask(indices)[..., 0] if handle.has_mask else None
    return Patches(
        images=handle.read_images(indices),
        names=[f"{split}_{int(index):06d}" for index in indices],
        labels=handle.labels[indices].astype(np.int64),
        masks=masks,
        source={"data": str(data_dir), "split": split, "indices": indices.tolist()},
    )


def image_patches(paths: Sequence[str | os.PathLike[str]], n: int | None = None) -> Patches:
    """Patches read from image files and folders of them (the first ``n``, in the given order).

    A folder contributes its PNG, JPEG and TIFF files (by name, not recursively); a file named
    directly is read whatever its ending.
    """
    files = image_files(paths)
    if not files:
        raise InvalidArgumentError("inputs", "at least one image file or folder", "none")
    files = files[:n] if n is not None else files
    return Patches(
        images=np.stack([read_patch_file(path) for path in files]),
        names=_unique_names(files),
        labels=None,
        masks=None,
        source={"files": [str(path) for path in files]},
    )


def read_patch_file(path: str | os.PathLike[str]) -> npt.NDArray[np.uint8]:
    """One 96x96 8-bit RGB patch from an image file (RGBA and palette images are converted).

    The decoding is :func:`pcam.data.patch_io.decode_patch`'s, refusing other sizes.
    """
    patch, _ = decode_patch(
        path,
        fit="error",
        hint=f"PCam models take {_PATCH_SIDE}x{_PATCH_SIDE} patches: crop or resize it",
    )
    return patch


def explain(
    model_path: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    n: int = 16,
    layer: str | Sequence[str] | None = None,
    method: str = "gradcam",
    class_index: int = 1,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    overwrite: bool = False,
    calibration: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Explain ``n`` patches and write ``grid.png``, ``overlays/`` and ``explain.json``.

    With ``split``, ``inputs`` is a PCam data directory and ``n`` patches of the split are
    sampled with ``seed``; without, ``inputs`` are image files or folders (the first ``n``).
    ``layer`` and ``method`` are those of :class:`pcam.explain.gradcam.GradCAM` (``None``: its
    default layer). A patch is predicted tumour when its probability is at or above ``threshold``.
    ``progress`` is called with the number of patches mapped. The probabilities are calibrated
    when the model has a calibration file, unless ``calibration`` is false (the maps are the
    same either way). Returns the JSON report.
    """
    destination = Path(out_dir)
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    refuse_existing_directory(
        destination, overwrite=overwrite, kind=EXPLANATION, inputs=[model_path, *paths]
    )
    checked_method = _check_settings(n, class_index, threshold, method)
    if split is not None:
        if len(paths) != 1:
            raise InvalidArgumentError(
                "inputs", f"one PCam data directory to take {split!r} patches from", paths
            )
        patches = split_patches(paths[0], split, n, seed=seed)
    else:
        patches = image_patches(paths, n)

    from pcam.explain.gradcam import GradCAM, spatial_layers
    from pcam.model.architectures import load_model
    from pcam.model.inference import tumour_probabilities
    from pcam.model.temperature import calibration_of

    model = load_model(model_path, calibration=calibration)
    cam = GradCAM(model, layer, method=checked_method)
    maps, probabilities = _maps(cam, patches.images, class_index, progress)
    sizes = dict(spatial_layers(model))
    grid = max((sizes[name] for name in cam.layer_names), key=lambda size: size[0] * size[1])

    def predict(images: npt.NDArray[np.uint8]) -> Any:
        return tumour_probabilities(model, images)

    report: dict[str, Any] = {
        "model": str(model_path),
        "inputs": patches.source,
        "layer": list(cam.layer_names),
        "layer_size": list(grid),
        "method": method,
        "class_index": class_index,
        "class_name": CLASS_NAMES[class_index],
        "seed": seed,
        "threshold": threshold,
        "probabilities": calibration_of(model).as_json(),
        "patches": _patch_rows(patches, probabilities, threshold),
        "metrics": _metrics(predict, patches, maps, class_index, grid, seed),
    }
    _write(destination, patches, maps, probabilities, report)
    return report


def _check_settings(n: int, class_index: int, threshold: float, method: str) -> Method:
    """One-line errors for settings out of range, before any patch is read; the method."""
    from pcam.explain.gradcam import METHODS

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidArgumentError("n", "a number of patches >= 1", n)
    if class_index not in (0, 1):
        raise InvalidArgumentError("class_index", "0 (normal) or 1 (tumour)", class_index)
    if not 0.0 <= threshold <= 1.0:
        raise InvalidArgumentError("threshold", "a probability in [0, 1]", threshold)
    if method not in METHODS:
        raise InvalidArgumentError("method", f"one of {', '.join(METHODS)}", method)
    return method


def _patch_rows(
    patches: Patches, probabilities: npt.NDArray[np.float32], threshold: float
) -> list[dict[str, Any]]:
    """``explain.json``'s row of each patch: name, probability, predicted and true label."""
    return [
        {
            "name": name,
            "probability": float(probability),
            "predicted": int(probability >= threshold),
            "label": None if patches.labels is None else int(patches.labels[position]),
        }
        for position, (name, probability) in enumerate(
            zip(patches.names, probabilities.tolist(), strict=True)
        )
    ]


def format_summary(report: dict[str, Any]) -> str:
    """What was explained, and a table of the metrics of the maps against random maps."""
    inputs = report["inputs"]
    where = f"{inputs['split']} split" if "split" in inputs else "image files"
    height, width = report["layer_size"]
    lines = [
        f"{_count(len(report['patches']), 'patch')} of the {where} explained by "
        f"{report['method']} at {', '.join(report['layer'])} ({height}x{width})"
    ]
    if "probabilities" in report:  # explanations written before calibration existed have none
        lines.append(f"probabilities: {report['probabilities']['note']}")
    metrics = report["metrics"]
    if metrics is None:
        lines.append(f"no {report['class_name']} patches to measure the maps on")
        return "\n".join(lines)
    cam, noise = metrics["cam"], metrics["random"]
    labelled = all(patch["label"] is not None for patch in report["patches"])
    measured = _count(metrics["patches"], f"{report['class_name']} patch" if labelled else "patch")
    rows: list[tuple[str, Any, Any, str]] = [(f"metric ({measured})", "  maps", "random", "")]
    if cam.get("pointing_game") is not None:
        pointing_note = "share of maxima inside the tumour mask"
        if metrics["without_mask"]:
            pointing_note += f" ({metrics['with_mask']} with a mask)"
        rows.append(("pointing game", cam["pointing_game"], noise["pointing_game"], pointing_note))
        area = f"mask area {metrics['mask_area']:.2f}"
        rows.append(("energy inside the mask", cam["energy_inside"], noise["energy_inside"], area))
    rows.append(("deletion AUC", cam["deletion_auc"], noise["deletion_auc"], "lower is better"))
    rows.append(("insertion AUC", cam["insertion_auc"], noise["insertion_auc"], "higher is better"))
    width = max(len(row[0]) for row in rows)
    for name, ours, theirs, note in rows:
        values = [v if isinstance(v, str) else f"{v:6.2f}" for v in (ours, theirs)]
        lines.append(f"{name:<{width}}  {values[0]}  {values[1]}  {note}".rstrip())
    return "\n".join(lines)


# -- steps -----------------------------------------------------------------------------------------


def _maps(
    cam: Any,
    images: npt.NDArray[np.uint8],
    class_index: int,
    progress: Callable[[int], None] | None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Maps at the patch size ``[n, 96, 96]`` and tumour probabilities ``[n]``, batch by batch."""
    from pcam.stopping import deferring, raise_if_stopped

    maps, probabilities = [], []
    with deferring():  # a signal stops the loop between two batches (pcam.stopping)
        for start in range(0, images.shape[0], CAM_BATCH):
            batch_maps, batch_probabilities = cam.explain(
                images[start : start + CAM_BATCH], class_index, size=images.shape[1:3]
            )
            raise_if_stopped()
            maps.append(batch_maps)
            probabilities.append(batch_probabilities)
            if progress is not None:
                progress(min(start + CAM_BATCH, images.shape[0]))
    return np.concatenate(maps), np.concatenate(probabilities)


def _metrics(
    predict: Callable[[npt.NDArray[np.uint8]], Any],
    patches: Patches,
    maps: npt.NDArray[np.float32],
    class_index: int,
    grid: tuple[int, int],
    seed: int,
) -> dict[str, Any] | None:
    """:func:`pcam.explain.cam_quality.cam_report` on the explained class's patches, or ``None``."""
    from pcam.explain.cam_quality import cam_report

    if patches.labels is None:
        chosen = np.arange(len(patches.names))
    else:
        chosen = np.flatnonzero(patches.labels == class_index)
    if chosen.size == 0:
        return None
    # the masks mark tumour: ground truth for the tumour class only
    masks = patches.masks[chosen] if patches.masks is not None and class_index == 1 else None
    metrics = cam_report(
        predict,
        patches.images[chosen],
        maps[chosen],
        masks,
        class_index=class_index,
        random_grid=grid,
        seed=seed,
    )
    metrics["names"] = [patches.names[i] for i in chosen.tolist()]
    return metrics


def _write(
    destination: Path,
    patches: Patches,
    maps: npt.NDArray[np.float32],
    probabilities: npt.NDArray[np.float32],
    report: dict[str, Any],
) -> None:
    """Build the output directory under a temporary name and rename it into place."""
    from pcam.explain import plots as explain_plots

    title = f"{report['method']} at {', '.join(report['layer'])}, {report['class_name']} class"
    if patches.masks is not None:
        title += " (white outline: true tumour)"
    with staged_directory(destination, EXPLANATION) as staging:
        explain_plots.save_grid(
            staging / "grid.png",
            patches.images,
            maps,
            probabilities,
            patches.labels,
            names=patches.names,
            masks=patches.masks,
            title=title,
            threshold=report["threshold"],
        )
        overlays = staging / "overlays"
        overlays.mkdir()
        for name, image, heatmap in zip(patches.names, patches.images, maps, strict=True):
            explain_plots.save_overlay(overlays / f"{name}.png", image, heatmap)
        (staging / "explain.json").write_text(json.dumps(report, indent=2) + "\n")


def _unique_names(files: Sequence[Path]) -> list[str]:
    """File stems made unique with ``-2``, ``-3`` ... (``a.png`` and ``a.tif``, say)."""
    names: list[str] = []
    taken: set[str] = set()
    for file in files:
        name, copy = file.stem, 1
        while name in taken:
            copy += 1
            name = f"{file.stem}-{copy}"
        taken.add(name)
        names.append(name)
    return names


def _count(number: int, noun: str) -> str:
    """``1 patch``, ``2 patches``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}es"
