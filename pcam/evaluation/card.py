"""Model cards: ``MODEL_CARD.md`` written from what a run and its evaluations recorded.

:func:`gather_card_sources` reads the JSON files a run directory and its companions hold: the
run's ``config.json``, ``best.json`` and pcam's marker (``pcam train``), the calibration file
beside the model (``pcam calibrate``), a report's ``metrics.json`` (``pcam evaluate``), an
explanation's ``explain.json`` (``pcam explain``), a ``robustness.json`` (``pcam robustness``) and
a full check's ``fullcheck.json`` (``pcam fullcheck``, whose own folders are the defaults of the
others). :func:`build_card` turns them into Markdown: model, intended use and limitations,
training data, recipe and config, metrics with their intervals, calibration, Grad-CAM quality,
robustness, the full check, and the sources with their SHA-256. Nothing in a card is typed by
hand: every figure is a value of one of those files, formatted (4 decimals for rates and scores)
in a table cell, and :attr:`Card.figures` lists each one with its file, key path and the cell it
is in, so a reader (or a test) can check it. A section whose source is absent says ``not
recorded`` and gives the command that records it; it never shows a figure.

:func:`write_card` writes the card atomically; it replaces an existing file only with
``overwrite``, and only when that file is a card pcam wrote (its first line is
:data:`CARD_MARKER`). :func:`record_data` is the data block ``pcam fullcheck`` records (file
sizes and checksums), since ``pcam train`` records only the data folder. No TensorFlow here:
a card is JSON in, Markdown out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pcam import layout
from pcam.data.download import PCAM_FILES
from pcam.data.split import open_split
from pcam.errors import (
    ExpectedFoundError,
    MissingFileError,
    OutputExistsError,
    UnreadableFileError,
    UnsafeOutputError,
    first_line,
)
from pcam.model.temperature import file_digest, read_calibration
from pcam.outputs import MARKER, atomic_path, check_writable, make_folder, read_marker
from pcam.testing.synthetic import SYNTHETIC

CARD_FILE = "MODEL_CARD.md"
"""The card's file name: in the run folder, or next to ``fullcheck.json``."""

CARD_MARKER = "<!-- pcam model card: written by pcam card, which replaces only such files -->"
"""The first line of every card pcam writes: what ``--overwrite`` may replace."""

FULLCHECK_FILE = "fullcheck.json"
"""The summary of a full check (:data:`pcam.fullcheck.SUMMARY_FILE`)."""

DROP_NOTED = 0.01
"""A drop of accuracy or ROC AUC under a shift above this is named among the limitations."""

NOT_RECORDED = "not recorded"

SPECS = (".4f", "+.4f", ".0f", ",d", "g", "plain", "yesno")
"""How a figure is shown: a format spec of a number, ``plain`` (text, ``none``, ``true``, lists
joined by commas, numbers as ``g``) or ``yesno`` (a boolean)."""

Key = tuple[str | int, ...]
_MISSING: Any = object()


class OtherModelError(ExpectedFoundError, ValueError):
    """A record given for the card that was written for another model file than the run's."""

    def __init__(self, path: Path, model: Path, recorded: str) -> None:
        super().__init__(
            path,
            f"a record of the run's model {model}",
            f"a record of {recorded}",
            "pass the folder written for this run's model",
        )


@dataclass(frozen=True)
class Figure:
    """One figure of a card: where it comes from, how it is shown, and the cell it is in."""

    file: Path
    """The JSON file it was read from."""
    key: Key
    """Its key path in that file (``("ci95", "accuracy", 0)``)."""
    value: Any
    """The value read."""
    spec: str
    """How it is formatted (one of :data:`SPECS`)."""
    text: str
    """The value as the card shows it."""
    section: str = ""
    """The heading of the table that holds it."""
    row: str = ""
    """The first cell of its row."""
    column: str = ""
    """The header of its column."""

    @property
    def where(self) -> str:
        """``file: key.path[0]``, for messages."""
        return f"{self.file}: {_label(self.key)}"


@dataclass(frozen=True)
class Source:
    """One JSON file a card reads: its role, path, content, SHA-256 and the command writing it."""

    role: str
    path: Path
    record: dict[str, Any]
    sha256: str
    writer: str

    def get(self, *key: str | int) -> Any:
        """The value at ``key`` (``None`` when absent)."""
        value = self._lookup(key)
        return None if value is _MISSING else value

    def has(self, *key: str | int) -> bool:
        """Whether the record holds ``key`` (its value may be ``null``)."""
        return self._lookup(key) is not _MISSING

    def _lookup(self, key: Key) -> Any:
        """The value at ``key``, or :data:`_MISSING` when the path does not exist."""
        value: Any = self.record
        for part in key:
            in_list = isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value)
            in_dict = isinstance(part, str) and isinstance(value, dict) and part in value
            if not (in_list or in_dict):
                return _MISSING
            value = value[part]
        return value

    def figure(self, *key: str | int, spec: str = ".4f") -> Figure | None:
        """The figure at ``key`` formatted by ``spec``; ``None`` when not recorded.

        A missing key, or ``null`` for a number, is not recorded; a value of the wrong type is a
        one-line :class:`~pcam.errors.UnreadableFileError`.
        """
        value = self._lookup(key)
        if value is _MISSING or (value is None and spec != "plain"):
            return None
        try:
            text = format_value(value, spec)
        except (TypeError, ValueError):
            raise UnreadableFileError(
                self.path,
                f"a {'yes/no' if spec == 'yesno' else 'number'} at {_label(key)}",
                repr(value)[:60],
                f"write it again with {self.writer}",
            ) from None
        return Figure(self.path, key, value, spec, text)


@dataclass(frozen=True)
class CardSources:
    """What a card is written from: the run, its model, and the JSON sources found by role.

    Roles: ``config``, ``best``, ``run marker``, ``calibration``, ``metrics``, ``explain``,
    ``robustness``, ``fullcheck``, ``data marker``. ``places`` are the folders of the report,
    explanation, robustness and full check (given or suggested): the commands for absent ones.
    """

    run_dir: Path
    model_path: Path
    model_sha256: str
    sources: dict[str, Source]
    places: dict[str, Path]

    def get(self, role: str) -> Source | None:
        """The source of ``role``, or ``None`` when it was not recorded."""
        return self.sources.get(role)


@dataclass(frozen=True)
class Card:
    """A rendered card and every figure in it."""

    text: str
    figures: list[Figure]


def format_value(value: Any, spec: str) -> str:
    """``value`` as a card shows it under ``spec`` (see :data:`SPECS`).

    Raises ``ValueError`` or ``TypeError`` for a value the spec does not fit.
    """
    if spec == "plain":
        return _plain(value)
    if spec == "yesno":
        if not isinstance(value, bool):
            raise TypeError(value)
        return "yes" if value else "no"
    if spec not in SPECS or isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    if spec == ",d":
        if not isinstance(value, int):
            raise TypeError(value)
        return f"{value:,}"
    return format(float(value), spec)


def _plain(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, list):
        return ", ".join(_plain(item) for item in value) if value else "none"
    raise TypeError(value)


# -- reading the sources ---------------------------------------------------------------------------


def file_checksums(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(sha256, md5)`` of a file in hex, in one pass (MD5: the PCam release's checksums)."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
            md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


_HINTS = {
    "pcam train": "pass the folder that pcam train --out wrote",
    "pcam evaluate": "pass the folder that pcam evaluate --out wrote",
    "pcam explain": "pass the folder that pcam explain --out wrote",
    "pcam robustness": "pass the folder that pcam robustness --out wrote",
    "pcam fullcheck": "pass the --out folder of a finished pcam fullcheck (the same command "
    "resumes an unfinished one)",
}


def read_source(
    role: str, path: Path, writer: str, signature: Sequence[str], *, required: bool
) -> Source | None:
    """The JSON object at ``path`` as a :class:`Source`; ``None`` when absent and not required.

    A missing required file, a file that is not JSON, and a JSON value that is not an object
    with the keys of ``signature`` are one-line errors naming the file and ``writer``.
    """
    hint = _HINTS.get(writer, f"write it again with {writer}")
    expected = f"the {path.name} that {writer} writes"
    if not path.is_file():
        if not required:
            return None
        found = "a folder" if path.is_dir() else "no such file"
        raise MissingFileError(path, expected, hint, found=found)
    data = path.read_bytes()
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, ValueError) as error:
        found = f"a file that is not JSON ({first_line(error, 100)})"
        raise UnreadableFileError(path, expected, found, hint) from None
    if not isinstance(record, dict):
        raise UnreadableFileError(path, expected, f"a JSON {type(record).__name__}", hint)
    missing = [key for key in signature if key not in record]
    if missing:
        raise UnreadableFileError(path, expected, f"a JSON object without {missing[0]!r}", hint)
    return Source(role, path, record, hashlib.sha256(data).hexdigest(), writer)


def gather_card_sources(
    run_dir: str | os.PathLike[str],
    report_dir: str | os.PathLike[str] | None = None,
    fullcheck_dir: str | os.PathLike[str] | None = None,
    *,
    explain_dir: str | os.PathLike[str] | None = None,
    robustness_dir: str | os.PathLike[str] | None = None,
) -> CardSources:
    """Read every source of the card of the run in ``run_dir``; one-line errors for bad ones.

    The run must hold ``config.json`` and ``model.keras``; its calibration file is read (and
    checked against the model) when present. With ``fullcheck_dir`` its ``fullcheck.json`` is
    read and its ``report/``, ``explain/`` and ``robustness/`` are the defaults of the folders
    not given. A folder given explicitly must hold its JSON file; a report, explanation or
    robustness folder recorded for another model file than the run's is refused.
    """
    run = Path(run_dir)
    if not run.is_dir():
        found = "a file, not a folder" if run.exists() else "no such folder"
        raise MissingFileError(
            run, "a run folder written by pcam train", _HINTS["pcam train"], found=found
        )
    sources: dict[str, Source] = {}
    _add(
        sources, read_source("config", run / "config.json", "pcam train", ("model",), required=True)
    )
    model_path = run / "model.keras"
    if not model_path.is_file():
        raise MissingFileError(
            model_path,
            "the run's trained model",
            "finish the run first (the same pcam train command resumes it)",
        )
    _add(sources, read_source("best", run / "best.json", "pcam train", (), required=False))
    _add(sources, _marker_source("run marker", run, "pcam train"))
    calibration = read_calibration(model_path)  # checked against the model, as evaluate does
    if calibration.path is not None:
        digest = file_digest(calibration.path)
        sources["calibration"] = Source(
            "calibration", calibration.path, calibration.record, digest, "pcam calibrate"
        )
    given = {"report": report_dir, "explain": explain_dir, "robustness": robustness_dir}
    places = _read_companions(sources, run, given, fullcheck_dir, model_path)
    data = sources["config"].get("data")
    if isinstance(data, str) and data:
        _add(sources, _marker_source("data marker", Path(data), "pcam"))
    return CardSources(run, model_path, file_digest(model_path), sources, places)


_COMPANIONS = {
    "report": ("metrics", "metrics.json", "pcam evaluate", ("accuracy", "per_class", "n")),
    "explain": ("explain", "explain.json", "pcam explain", ("method", "metrics")),
    "robustness": ("robustness", "robustness.json", "pcam robustness", ("results",)),
}


def _read_companions(
    sources: dict[str, Source],
    run: Path,
    given: dict[str, str | os.PathLike[str] | None],
    fullcheck_dir: str | os.PathLike[str] | None,
    model_path: Path,
) -> dict[str, Path]:
    """Read the report, explanation, robustness and full check; returns their folders."""
    places = {name: run.parent / name for name in _COMPANIONS}
    places["fullcheck"] = run.parent
    defaults: dict[str, Path] = {}
    if fullcheck_dir is not None:
        check = Path(fullcheck_dir)
        places["fullcheck"] = check
        summary = read_source(
            "fullcheck", check / FULLCHECK_FILE, "pcam fullcheck", ("passed",), required=True
        )
        _add(sources, summary)
        defaults = {name: check / name for name in _COMPANIONS}
        if summary is not None and summary.get("robustness") is None:
            defaults.pop("robustness")  # checked with --no-robustness: an old folder is stale
    for name, (role, file_name, writer, signature) in _COMPANIONS.items():
        explicit = given[name]
        folder = Path(explicit) if explicit is not None else defaults.get(name)
        if folder is None:
            continue
        places[name] = folder
        source = read_source(
            role, folder / file_name, writer, signature, required=explicit is not None
        )
        if source is not None:
            _check_model(source, model_path)
            sources[role] = source
    return places


def _add(sources: dict[str, Source], source: Source | None) -> None:
    if source is not None:
        sources[source.role] = source


def _marker_source(role: str, folder: Path, writer: str) -> Source | None:
    """The marker pcam left in ``folder`` as a source; ``None`` without a readable one."""
    record = read_marker(folder)
    if record is None:
        return None
    path = folder / MARKER
    return Source(role, path, record, file_digest(path), writer)


def _check_model(source: Source, model_path: Path) -> None:
    """Refuse a record whose ``model`` is an existing file other than ``model_path``."""
    recorded = source.get("model")
    if not isinstance(recorded, str) or not recorded:
        return
    path = Path(recorded)
    if path.is_file() and not path.samefile(model_path):
        raise OtherModelError(source.path, model_path, recorded)


# -- the data record of a full check ---------------------------------------------------------------


def record_data(root: str | os.PathLike[str], splits: Iterable[str]) -> dict[str, Any]:
    """The data block of ``fullcheck.json``: splits with their patches, files with their checksums.

    Every file of each split (images, labels, and the mask and meta CSV when present) with its
    size, SHA-256, MD5 and whether it is the file of the official PCam release (its MD5 is the
    release's, :data:`pcam.data.download.PCAM_FILES`); ``kind`` is the kind of pcam's marker of
    the folder (``synthetic data`` for ``pcam synth``'s files), else ``None``. Reads every byte.
    """
    folder = Path(root)
    official = {entry.name: entry.md5 or entry.served_md5 for entry in PCAM_FILES}
    marker = read_marker(folder)
    split_rows: dict[str, Any] = {}
    files: list[dict[str, Any]] = []
    for split in dict.fromkeys(splits):
        handle = open_split(folder, split)
        split_rows[split] = {"patches": len(handle), "positive_fraction": handle.positive_fraction}
        candidates = [layout.h5_path(folder, split, kind) for kind in ("x", "y", "mask")]
        candidates.append(layout.meta_path(folder, split))
        for path in (candidate for candidate in candidates if candidate.is_file()):
            sha256, md5 = file_checksums(path)
            files.append(
                {
                    "name": path.name,
                    "split": split,
                    "bytes": path.stat().st_size,
                    "sha256": sha256,
                    "md5": md5,
                    "official": official.get(path.name) == md5,
                }
            )
    return {
        "folder": str(folder),
        "kind": None if marker is None else marker["kind"],
        "splits": split_rows,
        "files": files,
    }


# -- Markdown --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """A table cell: its text and the figures in it."""

    text: str
    figures: tuple[Figure, ...] = ()


def cell(template: str, *figures: Figure | None) -> Cell:
    """``template`` filled with the figures' texts; ``not recorded`` when one is missing."""
    present = [figure for figure in figures if figure is not None]
    if len(present) != len(figures):
        return Cell(NOT_RECORDED)
    return Cell(template.format(*(figure.text for figure in present)), tuple(present))


def interval(value: Figure | None, low: Figure | None, high: Figure | None) -> Cell:
    """``0.9123 (95% CI 0.9001-0.9240)``, or the value alone without an interval."""
    if low is None or high is None:
        return cell("{}", value)
    return cell("{} (95% CI {}-{})", value, low, high)


class Markdown:
    """The card being written: lines, and the figures placed in its tables so far."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.figures: list[Figure] = []
        self.section = ""

    def heading(self, level: int, title: str) -> None:
        """A heading; the section of the tables after it."""
        self.section = title
        self.lines += [f"{'#' * level} {title}", ""]

    def paragraph(self, text: str) -> None:
        """A paragraph."""
        self.lines += [text, ""]

    def bullets(self, items: Iterable[str]) -> None:
        """A bulleted list."""
        self.lines += [f"- {item}" for item in items]
        self.lines.append("")

    def table(self, header: Sequence[str], rows: Iterable[Sequence[str | Cell]]) -> None:
        """A table whose first column labels its rows; records where each figure is."""
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" for _ in header) + "|")
        for label, *cells in rows:
            row = label.text if isinstance(label, Cell) else label
            texts = [_escape(row)]
            for column, entry in zip(header[1:], cells, strict=True):
                shown = entry if isinstance(entry, Cell) else Cell(entry)
                texts.append(_escape(shown.text))
                self.figures += [
                    replace(figure, section=self.section, row=row, column=column)
                    for figure in shown.figures
                ]
            self.lines.append("| " + " | ".join(texts) + " |")
        self.lines.append("")

    def text(self) -> str:
        """The Markdown, ending in one newline."""
        return "\n".join(self.lines).rstrip("\n") + "\n"


def _escape(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(path: Path | str) -> str:
    return f"`{path}`"


def _quoted(path: Path | str) -> str:
    return shlex.quote(str(path))


# -- the card --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """The sources, and where the card goes (paths in it are shown relative to its folder)."""

    sources: CardSources
    card_dir: Path | None

    def path(self, path: Path) -> str:
        """``path`` relative to the card's folder when it has one, else as given."""
        if self.card_dir is None:
            return str(path)
        return os.path.relpath(Path(path).resolve(), self.card_dir.resolve())

    def command(self, name: str) -> str:
        """The command that records what ``name`` needs, with this run's paths."""
        model = _quoted(self.sources.model_path)
        data = self.sources.sources["config"].get("data")
        data_dir = _quoted(data) if isinstance(data, str) and data else "DATA_DIR"
        places = self.sources.places
        if name == "calibrate":
            return f"pcam calibrate --model {model} --data {data_dir}"
        folder = {"evaluate": "report", "explain": "explain", "robustness": "robustness"}[name]
        return (
            f"pcam {name} --model {model} --data {data_dir} --split test "
            f"--out {_quoted(places[folder])}"
        )


def build_card(sources: CardSources, *, card_dir: str | os.PathLike[str] | None = None) -> Card:
    """The card of ``sources`` and every figure in it.

    ``card_dir`` is the folder the card will be written to: the paths of the sources are then
    shown relative to it.
    """
    context = _Context(sources, None if card_dir is None else Path(card_dir))
    markdown = Markdown()
    markdown.lines += [CARD_MARKER, ""]
    markdown.heading(1, "Model card: PCam tumour classifier")
    markdown.paragraph(
        f"The model trained in {_code(context.path(sources.run_dir))}, described by `pcam card` "
        "from the files the run and its evaluations recorded (listed with their SHA-256 under "
        "Sources): nothing here is typed by hand. Every figure is a value of one of those JSON "
        "files, rates and scores rounded to 4 decimals; where a record is absent, the section "
        "says so and gives the command that records it."
    )
    for section in (
        _model_section,
        _use_section,
        _data_section,
        _config_section,
        _metrics_section,
        _calibration_section,
        _gradcam_section,
        _robustness_section,
        _fullcheck_section,
        _sources_section,
    ):
        section(markdown, context)
    return Card(markdown.text(), markdown.figures)


def render_card(sources: CardSources, *, card_dir: str | os.PathLike[str] | None = None) -> str:
    """The Markdown of the card of ``sources`` (see :func:`build_card`)."""
    return build_card(sources, card_dir=card_dir).text


def card_figures(sources: CardSources) -> list[Figure]:
    """Every figure of the card of ``sources``: its file, key path, text and cell."""
    return build_card(sources).figures


def _or(source: Source | None, key: Key, spec: str, absent: str = NOT_RECORDED) -> Cell:
    """The figure at ``key`` of ``source``, or ``absent`` when there is none."""
    figure = None if source is None else source.figure(*key, spec=spec)
    return Cell(absent) if figure is None else cell("{}", figure)


def _model_section(markdown: Markdown, context: _Context) -> None:
    sources = context.sources
    config = sources.sources["config"]
    best, marker = sources.get("best"), sources.get("run marker")
    rows: list[tuple[str, Cell]] = [
        ("Architecture", _or(config, ("model",), "plain")),
        ("Backbone weights at the start (none: random)", _or(config, ("weights",), "plain")),
    ]
    if config.get("model") == "small":
        rows.append(("Filters of the first block (small CNN)", _or(config, ("width",), ",d")))
    if config.get("init") is not None:
        rows.append(("Started from the weights of", _or(config, ("init",), "plain")))
    if config.get("unfreeze_from") is not None:
        rows.append(("Backbone trained from layer", _or(config, ("unfreeze_from",), "plain")))
    rows += [
        ("Backbone frozen", _or(config, ("freeze_backbone",), "yesno")),
        (
            "Parameters",
            _or(
                sources.get("fullcheck"),
                ("model", "parameters"),
                ",d",
                "not recorded (pcam fullcheck records it)",
            ),
        ),
        ("Best epoch (lowest validation loss)", _or(best, ("epoch",), ",d")),
        ("Validation loss at the best epoch", _or(best, ("val_loss",), ".4f")),
        ("Written by pcam", _or(marker, ("pcam_version",), "plain")),
    ]
    side, centre = layout.PATCH_SIZE, layout.CENTRE_STOP - layout.CENTRE_START
    markdown.heading(2, "Model")
    markdown.table(("Field", "Value"), rows)
    markdown.bullets(
        [
            f"Input: RGB patches as stored, uint8 `[B, {side}, {side}, 3]`; the backbone's "
            "preprocessing is a layer inside the model.",
            "Output: one sigmoid unit after global average pooling and dropout, kept in float32: "
            f"the probability that the centre {centre}x{centre} px region holds tumour.",
            f"Model file: {_code(context.path(sources.model_path))} (its SHA-256 under Sources).",
        ]
    )


def _use_section(markdown: Markdown, context: _Context) -> None:
    side, centre = layout.PATCH_SIZE, layout.CENTRE_STOP - layout.CENTRE_START
    items = [
        "**Research use only.** Not a medical device: not for clinical diagnosis, screening or "
        "any decision about a patient, and not validated for any of them.",
        "Intended use: research on the PatchCamelyon (PCam) benchmark: whether the centre "
        f"{centre}x{centre} px region of a {side}x{side} px H&E patch of a lymph-node section "
        "holds metastatic tumour, and the study of the model's Grad-CAM explanations.",
        _data_limitation(context),
        "Patch level only: the model sees one patch at a time, without the slide around it; its "
        "outputs are not a slide- or patient-level diagnosis.",
        _shift_limitation(context),
        _probability_limitation(context),
        "Grad-CAM maps show where the model's tumour evidence lies at one layer; they are not "
        "segmentations of the tumour (Grad-CAM quality says how well they locate it).",
    ]
    metrics = context.sources.get("metrics")
    if metrics is not None and metrics.get("split") == "valid":
        items.append(
            "The metrics are measured on the valid split, which also chose the best epoch (the "
            "lowest validation loss): they are slightly optimistic."
        )
    markdown.heading(2, "Intended use and limitations")
    markdown.bullets(items)


def _data_kind(sources: CardSources) -> tuple[Source | None, Key]:
    """Where the kind of the data folder is recorded: the full check, else the data marker."""
    summary = sources.get("fullcheck")
    if summary is not None and summary.get("data") is not None:
        return summary, ("data", "kind")
    return sources.get("data marker"), ("kind",)


def _data_limitation(context: _Context) -> str:
    source, key = _data_kind(context.sources)
    if source is not None and source.get(*key) == SYNTHETIC:
        return (
            "**Trained on synthetic data** (pcam's generator of H&E-like patches, not tissue): "
            "its figures say nothing about real patches."
        )
    summary = context.sources.get("fullcheck")
    files = summary.get("data", "files") if summary is not None else None
    origin = (
        "the official PCam release (every file's checksum matches it: see Training data)"
        if isinstance(files, list) and files and all(f.get("official") is True for f in files)
        else "the PCam files of the data folder under Training data (not checked against the "
        "official release)"
    )
    return (
        f"Trained on {origin}. PCam's patches are cut from the Camelyon16 whole-slide images of "
        "sentinel lymph-node sections from two Dutch hospitals, at one resolution; other "
        "tissues, stains, scanners, magnifications and hospitals are outside what the model was "
        "trained and measured on."
    )


def _shift_limitation(context: _Context) -> str:
    robustness = context.sources.get("robustness")
    if robustness is None:
        return (
            "Sensitivity to stain and scanner colour shifts was not measured (`"
            f"{context.command('robustness')}` measures it); H&E colours differ between labs "
            "and scanners, so expect lower figures on slides from elsewhere."
        )
    noted = [
        str(row.get("name"))
        for row in robustness.get("results") or []
        if isinstance(row, dict)
        and any(
            isinstance(row.get(key), int | float) and row[key] > DROP_NOTED
            for key in ("drop_accuracy", "drop_auc")
        )
    ]
    if not noted:
        return (
            "Under the fixed stain and scanner shifts of `pcam robustness` neither accuracy nor "
            f"ROC AUC fell by more than {DROP_NOTED} (see Robustness); differences between real "
            "labs and scanners can be larger."
        )
    return (
        "Sensitive to stain and scanner colour shifts: accuracy or ROC AUC falls by more than "
        f"{DROP_NOTED} under {', '.join(f'`{name}`' for name in noted)} (see Robustness); expect "
        "lower figures on slides stained or scanned elsewhere."
    )


def _probability_limitation(context: _Context) -> str:
    metrics = context.sources.get("metrics")
    calibrated = (
        metrics.get("probabilities", "calibrated")
        if metrics is not None
        else context.sources.get("calibration") is not None
    )
    if calibrated is True:
        return (
            "The probabilities are calibrated by temperature scaling on a held-out split (see "
            "Calibration); the decision threshold is under Metrics."
        )
    return (
        "The probabilities are not calibrated (`pcam calibrate` fits a temperature): read them "
        "as scores, not as frequencies."
    )


def _data_section(markdown: Markdown, context: _Context) -> None:
    sources = context.sources
    config = sources.sources["config"]
    kind_source, kind_key = _data_kind(sources)
    markdown.heading(2, "Training data")
    markdown.table(
        ("Field", "Value"),
        [
            ("Data folder", _or(config, ("data",), "plain")),
            ("Kind of folder (pcam's marker)", _or(kind_source, kind_key, "plain")),
            (
                "Patches per epoch (none: the whole train split)",
                _or(config, ("max_train_samples",), "plain"),
            ),
            (
                "Colour augmentation (after the D4 symmetries)",
                _or(config, ("colour_augment",), "plain"),
            ),
        ],
    )
    summary = sources.get("fullcheck")
    data = summary.get("data") if summary is not None else None
    if summary is None or not isinstance(data, dict):
        markdown.paragraph(
            "Checksums: not recorded. `pcam train` records the data folder, not its files' "
            "checksums; `pcam fullcheck` records them in fullcheck.json, and `sha256sum` on the "
            "folder's files gives those of the files there now."
        )
        return
    markdown.heading(3, "Splits")
    markdown.table(
        ("Split", "Patches", "Tumour fraction"),
        [
            (
                split,
                _or(summary, ("data", "splits", split, "patches"), ",d"),
                _or(summary, ("data", "splits", split, "positive_fraction"), ".4f"),
            )
            for split in data.get("splits") or {}
        ],
    )
    markdown.heading(3, "Files")
    markdown.table(
        ("File", "Split", "Bytes", "SHA-256", "Official PCam file"),
        [
            (
                str(entry.get("name")),
                _or(summary, ("data", "files", index, "split"), "plain"),
                _or(summary, ("data", "files", index, "bytes"), ",d"),
                _or(summary, ("data", "files", index, "sha256"), "plain"),
                _or(summary, ("data", "files", index, "official"), "yesno"),
            )
            for index, entry in enumerate(data.get("files") or [])
            if isinstance(entry, dict)
        ],
    )


def _leaves(value: Any, key: Key = ()) -> list[Key]:
    """The key paths of the scalar values (and lists of scalars) under ``value``, in order."""
    if isinstance(value, dict):
        return [leaf for name, item in value.items() for leaf in _leaves(item, (*key, name))]
    if isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, (*key, index))]
    return [key]


def _label(key: Key) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in key).lstrip(".")


def _config_table(markdown: Markdown, source: Source, key: Key) -> None:
    block = source.get(*key)
    leaves = _leaves(block) if isinstance(block, dict) else []
    markdown.table(
        ("Setting", "Value"),
        [(_label(leaf), _or(source, (*key, *leaf), "plain")) for leaf in leaves],
    )


def _config_section(markdown: Markdown, context: _Context) -> None:
    config = context.sources.sources["config"]
    markdown.heading(2, "Recipe and config")
    markdown.paragraph(
        "Every setting as the run recorded it; `pcam train --help` (and `pcam fullcheck "
        "--help`) say what each means."
    )
    markdown.heading(3, "Training run: config.json")
    _config_table(markdown, config, ())
    summary = context.sources.get("fullcheck")
    if summary is not None and isinstance(summary.get("config"), dict):
        markdown.heading(3, "Full check: fullcheck.json")
        _config_table(markdown, summary, ("config",))


def _not_recorded(markdown: Markdown, context: _Context, command: str, flag: str) -> None:
    markdown.paragraph(
        f"Not recorded: run `{context.command(command)}` and pass its folder to `pcam card` as "
        f"`{flag}`."
    )


def _metrics_section(markdown: Markdown, context: _Context) -> None:
    markdown.heading(2, "Metrics")
    metrics = context.sources.get("metrics")
    if metrics is None:
        _not_recorded(markdown, context, "evaluate", "--report")
        return
    markdown.paragraph(
        "Patch-level figures on one split (`pcam evaluate`), with 95% percentile bootstrap "
        "intervals where recorded. Precision, recall and F1 are per class at the decision "
        "threshold; the tumour row's recall is the sensitivity, the normal row's the specificity."
    )
    markdown.heading(3, "Evaluation")
    rows: list[tuple[str, Cell]] = [
        ("Split", _or(metrics, ("split",), "plain")),
        ("Patches", _or(metrics, ("n",), ",d")),
        ("Tumour fraction", _or(metrics, ("positive_fraction",), ".4f")),
        ("Test-time augmentation (8 symmetries)", _or(metrics, ("tta",), "yesno")),
        ("Decision threshold (tumour at or above)", _or(metrics, ("threshold",), "g")),
        ("Calibrated probabilities", _or(metrics, ("probabilities", "calibrated"), "yesno")),
        ("Bootstrap resamples", _or(metrics, ("ci95", "rounds"), ",d")),
        (
            "Operating-point thresholds",
            _or(metrics, ("operating_points", "thresholds_from"), "plain"),
        ),
        ("Model evaluated", _or(metrics, ("model",), "plain")),
        ("Data", _or(metrics, ("data",), "plain")),
    ]
    if metrics.get("stain_normalisation") is not None:
        rows.append(
            ("Stain normalisation", _or(metrics, ("stain_normalisation", "method"), "plain"))
        )
    markdown.table(("Setting", "Value"), rows)
    markdown.heading(3, "Summary")
    markdown.table(
        ("Metric", "Value"),
        [
            ("Accuracy", _with_interval(metrics, ("accuracy",), ("ci95", "accuracy"))),
            ("ROC AUC", _with_interval(metrics, ("roc_auc",), ("ci95", "roc_auc"))),
            (
                "PR AUC (average precision)",
                _with_interval(
                    metrics, ("operating_points", "pr_auc"), ("operating_points", "pr_auc_ci95")
                ),
            ),
            ("Negative log-likelihood", _or(metrics, ("nll",), ".4f")),
        ],
    )
    _per_class_tables(markdown, metrics)
    _operating_points_table(markdown, metrics)


def _with_interval(source: Source, key: Key, bounds: Key) -> Cell:
    return interval(
        source.figure(*key),
        source.figure(*bounds, 0),
        source.figure(*bounds, 1),
    )


def _per_class_tables(markdown: Markdown, metrics: Source) -> None:
    classes = metrics.get("per_class")
    names = [str(name) for name in classes] if isinstance(classes, dict) else []
    keys: list[tuple[str, Key, Key]] = [
        (name, ("per_class", name), ("per_class", name, "support")) for name in names
    ]
    keys += [
        ("macro average", ("macro_avg",), ("n",)),
        ("weighted average", ("weighted_avg",), ("n",)),
    ]
    markdown.heading(3, "Per class")
    markdown.table(
        ("Class", "Precision", "Recall", "F1", "Support"),
        [
            (
                name,
                _or(metrics, (*key, "precision"), ".4f"),
                _or(metrics, (*key, "recall"), ".4f"),
                _or(metrics, (*key, "f1"), ".4f"),
                _or(metrics, support, ",d"),
            )
            for name, key, support in keys
        ],
    )
    labels = metrics.get("confusion_matrix", "labels")
    if not isinstance(labels, list):
        return
    markdown.heading(3, "Confusion matrix")
    markdown.table(
        ("Patches", *(f"predicted {label}" for label in labels)),
        [
            (
                f"true {true}",
                *(
                    _or(metrics, ("confusion_matrix", "matrix", row, column), ",d")
                    for column in range(len(labels))
                ),
            )
            for row, true in enumerate(labels)
        ],
    )


def _operating_points_table(markdown: Markdown, metrics: Source) -> None:
    points = metrics.get("operating_points", "points")
    if not isinstance(points, list) or not points:
        return
    rows = []
    for index, point in enumerate(points):
        if not isinstance(point, dict):
            continue
        key: Key = ("operating_points", "points", index)
        fix = str(point.get("fix"))
        other = "sensitivity" if fix == "specificity" else "specificity"
        level = point.get("level")
        shown = f"{level:.0%}" if isinstance(level, int | float) else str(level)
        rows.append(
            (
                f"{other} at {shown} {fix}",
                _with_interval(metrics, (*key, "value"), (*key, "ci95")),
                _or(metrics, (*key, "threshold", "value"), "g", "-"),
                _or(metrics, (*key, "threshold", "sensitivity"), ".4f", "-"),
                _or(metrics, (*key, "threshold", "specificity"), ".4f", "-"),
            )
        )
    markdown.heading(3, "Operating points")
    markdown.paragraph(
        "The best sensitivity at a fixed specificity and the reverse, on this split; with "
        "thresholds chosen on another split (pcam calibrate), what they give here."
    )
    markdown.table(
        (
            "Operating point",
            "Value",
            "Threshold (probability)",
            "Sensitivity at the threshold",
            "Specificity at the threshold",
        ),
        rows,
    )


def _calibration_section(markdown: Markdown, context: _Context) -> None:
    markdown.heading(2, "Calibration")
    calibration = context.sources.get("calibration")
    metrics = context.sources.get("metrics")
    if calibration is None:
        again = " --overwrite" if metrics is not None else ""
        markdown.paragraph(
            f"Temperature: not recorded: run `{context.command('calibrate')}`, then "
            f"`{context.command('evaluate')}{again}` so that the report uses it."
        )
        if metrics is None:
            return
    settings: list[tuple[str, Cell]] = []
    figures: list[tuple[str, Source, Key]] = []
    if calibration is not None:
        fitted = calibration.get("fitted_on", "split")
        settings += [
            ("Method", _or(calibration, ("method",), "plain")),
            ("Temperature", _or(calibration, ("temperature",), ".4f")),
            ("Fitted on split", _or(calibration, ("fitted_on", "split"), "plain")),
            ("Patches fitted on", _or(calibration, ("fitted_on", "patches"), ",d")),
            ("Tumour fraction there", _or(calibration, ("fitted_on", "tumour_fraction"), ".4f")),
        ]
        figures += [
            (f"{fitted}, before (temperature 1)", calibration, ("before",)),
            (f"{fitted}, after", calibration, ("after",)),
        ]
    if metrics is not None:
        settings.append(("ECE bins (equal width)", _or(metrics, ("calibration", "bins"), ",d")))
        figures.append((f"{metrics.get('split')}, as evaluated", metrics, ()))
    markdown.table(("Setting", "Value"), settings)
    markdown.paragraph(
        "ECE: expected calibration error (equal-mass: over quantile bins); Brier: mean squared "
        "error of the probabilities; lower is better for both and for the NLL. Temperature "
        "scaling changes no ranking: the ROC AUC stays the same."
    )
    markdown.table(
        ("Probabilities", "NLL", "ECE", "ECE (equal mass)", "Brier", "ROC AUC"),
        [(label, *_calibration_cells(source, key)) for label, source, key in figures],
    )


def _calibration_cells(source: Source, key: Key) -> list[Cell]:
    """NLL, ECE, equal-mass ECE, Brier and ROC AUC of a calibration file's block or a report."""
    if key:  # a block of the calibration file: every figure in it
        names: list[Key] = [(*key, name) for name in ("nll", "ece", "ece_equal_mass", "brier")]
        names.append((*key, "roc_auc"))
    else:  # a report: its calibration block, NLL and AUC
        names = [("nll",), *(("calibration", name) for name in ("ece", "ece_equal_mass", "brier"))]
        names.append(("roc_auc",))
    return [_or(source, name, ".4f") for name in names]


_CAM_METRICS = (
    ("pointing_game", "Pointing game", "higher"),
    ("energy_inside", "Energy inside the tumour mask", "higher"),
    ("deletion_auc", "Deletion AUC", "lower"),
    ("insertion_auc", "Insertion AUC", "higher"),
)


def _gradcam_section(markdown: Markdown, context: _Context) -> None:
    markdown.heading(2, "Grad-CAM quality")
    explain = context.sources.get("explain")
    if explain is None:
        _not_recorded(markdown, context, "explain", "--explain")
        return
    markdown.paragraph(
        "How well the class activation maps locate tumour (`pcam explain`), against random maps "
        "as coarse as the layer's: the pointing game (the share of map maxima inside the tumour "
        "mask) and the energy inside the mask need the split's tumour masks; deletion and "
        "insertion are the areas under the tumour probability as the most salient pixels are "
        "removed from the patch or restored to it."
    )
    settings: list[tuple[str, Cell]] = [
        ("Method", _or(explain, ("method",), "plain")),
        ("Layer", _or(explain, ("layer",), "plain")),
        (
            "Map size at the layer",
            cell(
                "{}x{}",
                explain.figure("layer_size", 0, spec=",d"),
                explain.figure("layer_size", 1, spec=",d"),
            ),
        ),
        ("Explained class", _or(explain, ("class_name",), "plain")),
        ("Patches from split", _or(explain, ("inputs", "split"), "plain")),
        ("Seed", _or(explain, ("seed",), ",d")),
        ("Patches measured (of the explained class)", _or(explain, ("metrics", "patches"), ",d")),
        ("Removed pixels become", _or(explain, ("metrics", "removed_pixels"), "plain")),
        ("Deletion and insertion steps", _or(explain, ("metrics", "steps"), ",d")),
    ]
    if explain.has("metrics", "with_mask"):  # the split has tumour masks
        settings += [
            ("Patches with a tumour mask", _or(explain, ("metrics", "with_mask"), ",d")),
            ("Mean mask area (share of the patch)", _or(explain, ("metrics", "mask_area"), ".4f")),
        ]
    markdown.table(("Setting", "Value"), settings)
    if explain.get("metrics") is None:
        markdown.paragraph("No patches of the explained class to measure the maps on.")
        return
    rows: list[tuple[str, str | Cell, str | Cell, str]] = []
    for name, label, better in _CAM_METRICS:
        if not explain.has("metrics", "cam", name) and name in ("pointing_game", "energy_inside"):
            rows.append((label, "not measured: no tumour masks", "-", better))
            continue
        rows.append(
            (
                label,
                _or(explain, ("metrics", "cam", name), ".4f"),
                _or(explain, ("metrics", "random", name), ".4f"),
                better,
            )
        )
    markdown.table(("Metric", "Grad-CAM", "Random maps", "Better"), rows)


def _robustness_section(markdown: Markdown, context: _Context) -> None:
    markdown.heading(2, "Robustness")
    robustness = context.sources.get("robustness")
    if robustness is None:
        _not_recorded(markdown, context, "robustness", "--robustness")
        return
    markdown.paragraph(
        "The split scored again under fixed stain (HED) and scanner (RGB) colour shifts (`pcam "
        "robustness`). A drop is the unshifted figure minus the shifted one: positive is a "
        "loss. Called tumour: the share of patches called tumour. CAM r: the mean Pearson "
        "correlation of each patch's Grad-CAM map with its shifted copy's."
    )
    markdown.table(
        ("Setting", "Value"),
        [
            ("Split", _or(robustness, ("split",), "plain")),
            ("Patches", _or(robustness, ("patches",), ",d")),
            ("Test-time augmentation (8 symmetries)", _or(robustness, ("tta",), "yesno")),
            ("Decision threshold", _or(robustness, ("threshold",), "g")),
            ("Calibrated probabilities", _or(robustness, ("probabilities", "calibrated"), "yesno")),
            ("Grad-CAM patches", _or(robustness, ("cam", "patches"), ",d", "not run")),
            ("Seed", _or(robustness, ("seed",), ",d")),
        ],
    )
    rows = []
    for index, row in enumerate(robustness.get("results") or []):
        if not isinstance(row, dict):
            continue
        key: Key = ("results", index)
        rows.append(
            (
                str(row.get("name")),
                _or(robustness, (*key, "kind"), "plain"),
                _or(robustness, (*key, "accuracy"), ".4f"),
                _or(robustness, (*key, "drop_accuracy"), "+.4f", "-"),
                _or(robustness, (*key, "roc_auc"), ".4f", "-"),
                _or(robustness, (*key, "drop_auc"), "+.4f", "-"),
                _or(robustness, (*key, "f1"), ".4f"),
                _or(robustness, (*key, "predicted_tumour"), ".4f"),
                _or(robustness, (*key, "cam_correlation"), ".4f", "-"),
            )
        )
    header = ("Shift", "Kind", "Accuracy", "Accuracy drop", "ROC AUC", "AUC drop", "Tumour F1")
    markdown.table((*header, "Called tumour", "CAM r"), rows)
    summary = context.sources.get("fullcheck")
    if summary is not None and isinstance(summary.get("robustness"), dict):
        markdown.table(
            ("Full check summary", "Value"),
            [
                ("Worst AUC drop", _or(summary, ("robustness", "worst_drop_auc"), "+.4f")),
                (
                    "Mean AUC drop under the strong HED shifts",
                    _or(summary, ("robustness", "mean_drop_auc_hed_strong"), "+.4f"),
                ),
            ],
        )


def _fullcheck_section(markdown: Markdown, context: _Context) -> None:
    markdown.heading(2, "Full training check")
    summary = context.sources.get("fullcheck")
    if summary is None:
        markdown.paragraph(
            "Not part of a full check: `pcam fullcheck --data DIR --out DIR` trains, calibrates, "
            "evaluates, explains and scores robustness in one folder and records the floors, "
            "timings, software and data checksums; `pcam card DIR/run --fullcheck DIR` then "
            "describes it."
        )
        return
    rows: list[tuple[str, Cell]] = [
        ("Passed", _or(summary, ("passed",), "yesno")),
        ("Accuracy floor", _or(summary, ("floors", "accuracy"), ".4f")),
        ("ROC AUC floor", _or(summary, ("floors", "auc"), ".4f")),
        ("Accuracy", _or(summary, ("figures", "accuracy"), ".4f")),
        ("ROC AUC", _or(summary, ("figures", "auc"), ".4f")),
        ("Split", _or(summary, ("figures", "split"), "plain")),
        (
            "Epochs trained in the last session",
            _or(summary, ("epochs_trained_this_session",), ",d"),
        ),
    ]
    rows += [
        (f"Failure {index + 1}", _or(summary, ("failures", index), "plain"))
        for index in range(len(summary.get("failures") or []))
    ]
    markdown.table(("Verdict", "Value"), rows)
    timings = summary.get("timings")
    if isinstance(timings, dict):
        markdown.heading(3, "Timings")
        markdown.table(
            ("Step", "Time"),
            [
                (name.removesuffix("_seconds").replace("_", " "), _seconds(summary, name))
                for name in timings
            ],
        )
    markdown.heading(3, "Software and hardware")
    markdown.table(
        ("Component", "Value"),
        [
            ("Python", _or(summary, ("machine", "python"), "plain")),
            ("TensorFlow", _or(summary, ("machine", "tensorflow"), "plain")),
            ("Keras", _or(summary, ("machine", "keras"), "plain")),
            ("GPUs", _or(summary, ("machine", "gpus"), "plain")),
            ("CPU cores", _or(summary, ("machine", "cpu_count"), ",d")),
        ],
    )


def _seconds(summary: Source, name: str) -> Cell:
    return cell("{} s", summary.figure("timings", name, spec=".0f"))


_ROLES = {
    "config": "training config (pcam train)",
    "best": "best epoch (pcam train)",
    "run marker": "run folder marker (pcam train)",
    "calibration": "calibration file (pcam calibrate)",
    "metrics": "evaluation report (pcam evaluate)",
    "explain": "explanation (pcam explain)",
    "robustness": "robustness report (pcam robustness)",
    "fullcheck": "full check summary (pcam fullcheck)",
    "data marker": "data folder marker (pcam)",
}


def _sources_section(markdown: Markdown, context: _Context) -> None:
    sources = context.sources
    markdown.heading(2, "Sources")
    markdown.paragraph(
        "The files this card was written from, with their SHA-256 as read: `sha256sum FILE` "
        "shows whether one has changed since."
    )
    rows = [
        (
            _ROLES[role],
            _code(context.path(sources.sources[role].path)),
            sources.sources[role].sha256,
        )
        for role in _ROLES
        if role in sources.sources
    ]
    rows.append(
        ("model (pcam train)", _code(context.path(sources.model_path)), sources.model_sha256)
    )
    markdown.table(("Source", "File", "SHA-256"), rows)


# -- writing ---------------------------------------------------------------------------------------


def is_card_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file whose first line is :data:`CARD_MARKER`."""
    candidate = Path(path)
    if candidate.is_symlink() or not candidate.is_file():
        return False
    try:
        with candidate.open("rb") as handle:
            first = handle.readline(len(CARD_MARKER) + 2)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == CARD_MARKER.encode()


def check_card_destination(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """The card file to write, after checking it may be written.

    A new file may always be written (where its folder is writable); an existing one only with
    ``overwrite``, and only when it is a card pcam wrote.
    """
    destination = Path(path)
    if destination.is_dir():
        raise UnsafeOutputError(destination, "a model card file to write", "a folder")
    if destination.exists() or destination.is_symlink():
        if not overwrite:
            raise OutputExistsError(destination)
        if not is_card_file(destination):
            raise UnsafeOutputError(
                destination, "a model card that pcam wrote", "a file pcam did not write"
            )
    check_writable(destination.parent)
    return destination


def write_card(
    run_dir: str | os.PathLike[str],
    *,
    report: str | os.PathLike[str] | None = None,
    fullcheck: str | os.PathLike[str] | None = None,
    explain: str | os.PathLike[str] | None = None,
    robustness: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the model card of the run in ``run_dir``; returns its path.

    ``out`` defaults to ``MODEL_CARD.md`` next to ``fullcheck.json`` with ``fullcheck``, else in
    the run folder. The destination is checked first (:func:`check_card_destination`), then every
    source is read (:func:`gather_card_sources`); the card is written only when all of that
    succeeded, to a temporary file renamed over the destination.
    """
    folder = Path(fullcheck) if fullcheck is not None else Path(run_dir)
    destination = check_card_destination(
        Path(out) if out is not None else folder / CARD_FILE, overwrite=overwrite
    )
    sources = gather_card_sources(
        run_dir, report, fullcheck, explain_dir=explain, robustness_dir=robustness
    )
    text = render_card(sources, card_dir=destination.parent)
    make_folder(destination.parent)
    with atomic_path(destination) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return destination
