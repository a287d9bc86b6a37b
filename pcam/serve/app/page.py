"""The Streamlit page of ``pcam app``, built on :mod:`pcam.serve.app.logic`.

Streamlit runs the script again on every interaction; what is slow is cached across runs and
sessions: the model (:func:`classifier`) and each layer's Grad-CAM function (:func:`explainer`)
as resources, keyed by the model path, its modification time and size (a retrained model is
loaded again) and the layer; the predictions and maps of a batch as data, keyed by a digest of
its pixels; each upload's decoded patch by :func:`pcam.serve.app.logic.decode_upload`, keyed by a
digest of its bytes. Moving the opacity slider or the threshold only blends and relabels.
Upload names are escaped (:func:`pcam.serve.app.logic.markdown_text`) wherever Markdown shows them.

The page always says it is for research use only (:data:`NOTICE`). The *Grad-CAM maps* switch
(on by default) turns the maps off: the page then builds no explainer and computes no map, and
shows each patch with its label, probability and confidence bar only. Decoded uploads travel as
:class:`Decoded` (name, patch and note together), so a failed decode cannot shift the names.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import streamlit as st

from pcam.errors import PCamError
from pcam.serve.app import logic

MAX_DETAILS: Final = 50
"""Patches shown one by one (image, overlay, label); the table always has them all."""

_DISPLAY_WIDTH: Final = 192

NOTICE: Final = (
    "**Research use only, not for diagnosis.** This tool is not a medical device: its labels, "
    "probabilities and maps must not be used to diagnose, treat or screen anyone."
)
"""Shown at the top of every page, whatever else the page shows."""


class Decoded(NamedTuple):
    """An upload ready to classify: its name, its 96x96 patch and how it was fitted (if it was)."""

    name: str
    patch: npt.NDArray[np.uint8]
    note: str | None


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def classifier(path: str, stamp: tuple[int, ...]) -> logic.Classifier:
    """The loaded model, once per version (``stamp``: :attr:`logic.ModelSource.stamp`)."""
    return logic.load_classifier(path, calibration=bool(stamp[2]))


@st.cache_resource(show_spinner="Preparing Grad-CAM...", max_entries=16)
def explainer(path: str, stamp: tuple[int, ...], layer: str) -> Any:
    """The Grad-CAM function of the model at ``layer``, built once."""
    return logic.make_explainer(classifier(path, stamp), layer)


@st.cache_data(show_spinner="Classifying...", max_entries=32)
def predictions(
    path: str, stamp: tuple[int, ...], key: str, _patches: npt.NDArray[np.uint8]
) -> logic.Predictions:
    """The predictions of a batch (``key``: digest of its pixels), timed when first computed."""
    return logic.predict(classifier(path, stamp), _patches)


@st.cache_data(show_spinner="Computing Grad-CAM maps...", max_entries=32)
def maps(
    path: str, stamp: tuple[int, ...], layer: str, key: str, _patches: npt.NDArray[np.uint8]
) -> logic.Maps:
    """The Grad-CAM maps of both classes for a batch at ``layer``."""
    return logic.gradcam_maps(explainer(path, stamp, layer), classifier(path, stamp), _patches)


@st.cache_data(show_spinner=False)
def samples() -> list[tuple[str, bytes]]:
    """The synthetic sample patches, as ``(name, PNG bytes)``: generated once."""
    return logic.sample_uploads()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The script's own arguments (after ``--`` on the ``streamlit run`` line)."""
    parser = argparse.ArgumentParser(prog="pcam app", add_help=False)
    parser.add_argument("--model", default=None)
    parser.add_argument("--no-calibration", action="store_true")
    args, _ = parser.parse_known_args(list(argv))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Draw the page: model, settings, uploads, batch table, one row per patch."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    st.set_page_config(page_title="PCam patch classifier", layout="wide")
    st.title("PCam patch classifier")
    st.info(NOTICE)
    try:
        source = logic.find_model(args.model, calibration=not args.no_calibration)
    except PCamError as error:
        st.error(f"No model to use: {error}")
        st.markdown(
            "Train the demo model (synthetic data, about a minute and a half on a CPU) in the "
            "directory the app was started from, then reload this page:\n\n"
            "```bash\npcam demo\n```\n\n"
            "or start the app with a model of your own:\n\n"
            "```bash\npcam app --model RUN_DIR/model.keras\n```"
        )
        return
    try:
        model = classifier(str(source.path), source.stamp)
    except PCamError as error:
        st.error(f"Cannot use this model: {error}")
        return
    if source.demo:
        st.warning(
            "Demo model: trained by `pcam demo` on **synthetic** patches, not on real tissue. "
            "Its answers on real H&E patches mean nothing; start the app with "
            "`pcam app --model RUN_DIR/model.keras` for a model trained on PCam."
        )
    st.caption(
        f"Model `{source.path}` ({logic.model_size(model)}). Patches are 96x96 RGB; "
        "the label is tumour when the probability is at or above the threshold. "
        f"Probabilities: {logic.markdown_text(model.probabilities)}."
    )
    settings = _sidebar(model)

    uploads = st.file_uploader(
        "Patches (96x96 PNG, JPEG or TIFF; several at once)",
        accept_multiple_files=True,
        key="uploads",
        max_upload_size=logic.MAX_UPLOAD_MB,
    )
    items = [(f.file_id, f.name, f.getvalue()) for f in uploads or []]
    if settings["samples"]:
        items += [(f"sample-{name}", name, data) for name, data in samples()]
    if not items:
        st.info("Upload patches, or turn on *Try sample patches* in the sidebar.")
        return
    ready = _decode_all(items)
    if not ready:
        st.info("Nothing to classify yet.")
        return
    _results(source, model, ready, settings)


def _sidebar(model: logic.Classifier) -> dict[str, Any]:
    sidebar = st.sidebar
    sidebar.header("Settings")
    threshold = sidebar.slider(
        "Tumour threshold",
        min_value=0.01,
        max_value=0.99,
        value=logic.DEFAULT_THRESHOLD,
        step=0.01,
        key="threshold",
        help="A patch is labelled tumour when its probability is at or above this.",
    )
    gradcam = sidebar.toggle(
        "Grad-CAM maps",
        value=True,
        key="gradcam",
        help="Off: no Grad-CAM map is computed (quicker for a large upload); each patch is "
        "shown with its label, probability and confidence bar only.",
    )
    layer = None
    if model.layers:
        names = [name for name, _ in model.layers]
        sizes = dict(model.layers)
        layer = sidebar.selectbox(
            "Grad-CAM layer",
            names,
            index=names.index(model.default_layer) if model.default_layer in names else 0,
            format_func=lambda name: f"{name} ({sizes[name][0]}x{sizes[name][1]})",
            key="layer",
            disabled=not gradcam,
            help="Later layers see more context but give coarser maps. On the small CNN, "
            "block3_pool (6x6) localises; at its last 3x3 map every cell sees the whole patch.",
        )
    target = sidebar.selectbox(
        "Grad-CAM of",
        list(logic.TARGETS),
        format_func=logic.TARGETS.__getitem__,
        key="target",
        disabled=not gradcam,
    )
    opacity = sidebar.slider(
        "Overlay opacity",
        min_value=0.0,
        max_value=1.0,
        value=0.5,
        step=0.05,
        key="opacity",
        disabled=not gradcam,
    )
    samples = sidebar.toggle(
        "Try sample patches",
        key="samples",
        help="Four synthetic H&E-like patches from pcam.testing (the name gives the true label).",
    )
    return {
        "threshold": float(threshold),
        "gradcam": bool(gradcam),
        "layer": layer,
        "target": target,
        "opacity": float(opacity),
        "samples": bool(samples),
    }


def _decode_all(items: Sequence[tuple[str, str, bytes]]) -> list[Decoded]:
    """Decode every upload; show errors and fit choices; return those ready to classify.

    Each result carries its own name and patch, so an upload that fails (an error, or no patch
    for any other reason) is left out whole and cannot shift the names of the others. Decoding
    is remembered by :func:`pcam.serve.app.logic.decode_upload`, so a rerun decodes nothing again.
    Names are escaped (:func:`pcam.serve.app.logic.markdown_text`) wherever Markdown shows them.
    """
    ready = []
    for file_id, name, data in items:
        upload = logic.decode_upload(name, data)
        shown = logic.markdown_text(name)
        if upload.needs_fit and upload.size is not None:
            width, height = upload.size
            choices = logic.fit_choices(width, height)
            st.warning(
                f"**{shown}** is {width}x{height} pixels, not 96x96. Choose how to fit it: "
                "centre-crop keeps the centre (where PCam's label is decided) at its scale; "
                "resize keeps the whole image at another scale."
                + ("" if "crop" in choices else " It is too small to crop.")
            )
            fit = st.radio(
                f"Fit {shown}",
                choices,
                index=None,
                format_func=logic.FIT_LABELS.__getitem__,
                horizontal=True,
                key=f"fit-{file_id}",
            )
            if fit is None:
                st.caption(f"{shown} is left out until you choose.")
                continue
            upload = logic.decode_upload(name, data, fit)
        if upload.error is not None or upload.patch is None:
            error = upload.error or f"{name}: could not be decoded (no patch and no reason given)"
            st.error(logic.markdown_text(error))  # one line, the name in it escaped
            continue
        ready.append(Decoded(upload.name, upload.patch, upload.note))
    return ready


def _results(
    source: logic.ModelSource,
    model: logic.Classifier,
    ready: Sequence[Decoded],
    settings: dict[str, Any],
) -> None:
    patches = np.stack([item.patch for item in ready])
    key = logic.patches_key(patches)
    path, stamp = str(source.path), source.stamp
    found = predictions(path, stamp, key, patches)
    threshold = settings["threshold"]
    names, notes = [item.name for item in ready], [item.note for item in ready]
    rows = logic.make_rows(names, found, notes, threshold)
    _batch_table(rows, found, threshold)
    shown_overlays = _overlays(path, stamp, key, patches, found, settings)
    _patch_details(patches, rows, shown_overlays, settings)


def _batch_table(rows: Sequence[logic.Row], found: logic.Predictions, threshold: float) -> None:
    """The batch table, what its inference times mean, and its CSV download."""
    st.subheader(f"Batch: {len(rows)} patch{'es' if len(rows) != 1 else ''}")
    st.dataframe(
        logic.table_columns(rows),
        hide_index=True,
        column_config={
            "probability": st.column_config.NumberColumn("probability", format="%.3f"),
            "inference_ms": st.column_config.NumberColumn("inference ms", format="%.2f"),
        },
        key="table",
    )
    calls = f"{found.calls} model calls" if found.calls != 1 else "one model call"
    st.caption(
        f"Inference: {len(rows)} patches in {calls}, {1000 * found.seconds:.1f} ms of model time "
        f"on this machine; *inference ms* is that time divided by {len(rows)} (a batch "
        f"average, not a per-image measurement). Threshold {threshold:.2f}."
    )
    st.download_button(
        "Download the table (CSV)",
        data=logic.rows_to_csv(rows),
        file_name="pcam-predictions.csv",
        mime="text/csv",
        key="download",
        on_click="ignore",
    )


def _overlays(
    path: str,
    stamp: Any,
    key: str,
    patches: npt.NDArray[np.uint8],
    found: logic.Predictions,
    settings: dict[str, Any],
) -> list[npt.NDArray[np.uint8]] | None:
    """The Grad-CAM overlays to show, or ``None`` (switched off, or no map for this model)."""
    layer = settings["layer"]
    if not settings["gradcam"]:  # no explainer, no map: nothing of Grad-CAM is computed
        st.caption("Grad-CAM maps are off (sidebar): probabilities and labels only.")
        return None
    if layer is None:
        st.info(f"No Grad-CAM for this model: {logic.no_gradcam_reason(classifier(path, stamp))}.")
        return None
    try:
        both = maps(path, stamp, layer, key, patches)
    except PCamError as error:
        st.info(f"No Grad-CAM for this model: {error}")
        return None
    chosen = logic.select_maps(both, found.probabilities, settings["threshold"], settings["target"])
    shown: list[npt.NDArray[np.uint8]] = logic.overlays(patches, chosen, settings["opacity"])
    return shown


def _patch_details(
    patches: npt.NDArray[np.uint8],
    rows: Sequence[logic.Row],
    shown_overlays: list[npt.NDArray[np.uint8]] | None,
    settings: dict[str, Any],
) -> None:
    """One row per patch: the patch, its overlay when shown, its result and confidence bar."""
    st.subheader("Patches")
    target, layer = logic.TARGETS[settings["target"]], settings["layer"]
    for index, row in enumerate(rows[:MAX_DETAILS]):
        if shown_overlays is not None:
            image_column, overlay_column, text_column = st.columns([1, 1, 2])
        else:
            image_column, text_column = st.columns([1, 3])
        image_column.image(
            patches[index],
            caption="patch",
            width=_DISPLAY_WIDTH,
            output_format="PNG",
            alt=f"patch {row.file}",
        )
        if shown_overlays is not None:
            overlay_column.image(
                shown_overlays[index],
                caption=f"Grad-CAM of {target} at {layer}",
                width=_DISPLAY_WIDTH,
                output_format="PNG",
                alt=f"Grad-CAM overlay {row.file}",
            )
        text_column.markdown(
            f"**{logic.markdown_text(row.file)}**  \n"
            f"**{row.label}**, probability of tumour "
            f"{logic.format_probability(row.probability)}  \n"
            f"inference {row.inference_ms:.2f} ms (batch average)"
            + (f"  \n{row.note}" if row.note else "")
        )
        text_column.progress(  # the confidence bar: as long as the probability of tumour
            logic.bar_percent(row.probability),
            text=f"tumour probability {logic.format_probability(row.probability)}",
        )
    if len(rows) > MAX_DETAILS:
        st.caption(f"The first {MAX_DETAILS} patches are shown; the table has all {len(rows)}.")
