"""Temperature scaling: the calibration file beside a model, and the probabilities it gives.

A classifier's tumour *log-odds* ``z`` is its logit (one-unit heads) or the difference of its two
logits (two-unit heads: column 1 of ``softmax(logits / T)`` is ``sigmoid((z1 - z0) / T)``).
Temperature scaling (Guo et al. 2017) reports ``sigmoid(z / T)`` instead of ``sigmoid(z)``, with
one ``T > 0`` fitted on a held-out split (:mod:`pcam.evaluation.temperature`). ``T`` is a
positive scale of the log-odds, so it changes no ranking (the ROC AUC stays exactly the same),
and Grad-CAM, which differentiates the logits themselves, is unaffected.

**Where the temperature lives: a sidecar file**, ``<model stem>.calibration.json`` beside the
model (``RUN/model.calibration.json`` for ``RUN/model.keras``), read by
:func:`pcam.model.architectures.load_model`, which attaches it to the loaded model
(:func:`calibration_of`). Not a layer in the model, because:

- ``pcam calibrate`` never rewrites the model file the user trained (a failed or interrupted
  calibration leaves the model as it was, and the uncalibrated model is always at hand);
- a layer after the head would change the head every reader of the package recognises
  (:mod:`pcam.model.heads`: six supported forms), and Grad-CAM differentiates the logits, before
  any temperature;
- the file records the SHA-256 of the model file it was fitted to, so a calibration that does
  not belong to the model (the model trained again, the file copied beside another model) is
  refused with one line instead of silently miscalibrating;
- the file also holds what was fitted on the same split: the operating-point thresholds.

Its cost: copying ``model.keras`` alone leaves the calibration behind. Every command says which
probabilities it used (calibrated, with the temperature and the file, or uncalibrated and why).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pcam.errors import OutputExistsError, UnreadableFileError, UnsafeOutputError, first_line
from pcam.outputs import check_writable, write_json_atomically

FORMAT = "pcam-calibration"
"""The ``format`` field of a calibration file."""

VERSION = 1
"""The ``version`` field of the calibration files this release writes and reads."""

SUFFIX = ".calibration.json"
"""A calibration file's name: the model file's stem plus this."""

_REFIT = "run pcam calibrate again with --overwrite, or pass --no-calibration"
_EXPECTED = f"a pcam calibration file ({FORMAT} version {VERSION}) written by pcam calibrate"


@dataclass(frozen=True)
class Calibration:
    """The temperature a model's probabilities use, where it came from, and what was fitted.

    ``temperature`` is 1.0 for an uncalibrated model; ``path`` is the calibration file read
    (``None`` when there was none); ``reason`` says why an uncalibrated model is so;
    ``thresholds`` maps operating-point keys (``sensitivity_at_specificity_0.95``, ...) to
    thresholds on the log-odds, chosen on the split of ``record["fitted_on"]``.
    """

    temperature: float = 1.0
    path: Path | None = None
    reason: str = "no calibration file"
    thresholds: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        """Whether a calibration file was read."""
        return self.path is not None

    def describe(self) -> str:
        """One phrase for the commands' output: which probabilities, and why."""
        if self.path is None:
            return f"uncalibrated probabilities ({self.reason})"
        fitted = self.record.get("fitted_on", {}).get("split", "?")
        return (
            f"calibrated probabilities (temperature {self.temperature:.4g}, fitted on {fitted}, "
            f"from {self.path})"
        )

    def as_json(self) -> dict[str, Any]:
        """The ``probabilities`` block of the reports: calibrated or not, temperature, file."""
        return {
            "calibrated": self.calibrated,
            "temperature": self.temperature,
            "file": None if self.path is None else str(self.path),
            "fitted_on": self.record.get("fitted_on"),
            "note": self.describe(),
        }

    def probabilities(self, log_odds: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Calibrated tumour probabilities ``sigmoid(z / T)`` of log-odds ``z`` (float64)."""
        return sigmoid(np.asarray(log_odds, dtype=np.float64) / self.temperature)

    def probability_threshold(self, log_odds_threshold: float) -> float:
        """The probability threshold equivalent to a log-odds threshold, at this temperature."""
        return float(sigmoid(np.float64(log_odds_threshold) / self.temperature))


UNCALIBRATED = Calibration()
"""The calibration of a model loaded without a calibration file."""

_ATTACHED: weakref.WeakKeyDictionary[Any, Calibration] = weakref.WeakKeyDictionary()


def attach(model: Any, calibration: Calibration) -> None:
    """Make ``calibration`` the one :func:`calibration_of` gives for ``model``."""
    _ATTACHED[model] = calibration


def calibration_of(model: Any) -> Calibration:
    """The calibration attached to ``model`` by the loader, else :data:`UNCALIBRATED`."""
    return _ATTACHED.get(model, UNCALIBRATED)


def sigmoid(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``1 / (1 + exp(-x))`` in float64, without overflow for large ``|x|``."""
    x = np.asarray(values, dtype=np.float64)
    result: npt.NDArray[np.float64] = np.exp(-np.logaddexp(0.0, -x))
    return result


def calibration_path(model_path: str | os.PathLike[str]) -> Path:
    """Where the calibration of the model file ``model_path`` lives (beside it)."""
    path = Path(model_path)
    return path.with_name(path.stem + SUFFIX)


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_calibration_file(path: Path) -> bool:
    """Whether ``path`` is a JSON object with this package's calibration ``format`` field."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == FORMAT


def read_calibration(model_path: str | os.PathLike[str]) -> Calibration:
    """The calibration file of ``model_path``, checked against it; uncalibrated when absent.

    A file that is not valid JSON, is not a calibration file of this version, holds a temperature
    that is not a positive finite number, or was fitted to another model file (its recorded
    SHA-256 differs) is an :class:`~pcam.errors.UnreadableFileError` of one line.
    """
    path = calibration_path(model_path)
    if not path.exists():
        return Calibration(reason=f"no {path.name} beside the model; run pcam calibrate")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _unreadable(path, f"a file that is not JSON ({first_line(error, 100)})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise _unreadable(path, "a file without the calibration format field")
    if record.get("version") != VERSION:
        raise _unreadable(path, f"version {record.get('version')!r}")
    temperature: Any = record.get("temperature")
    if not _positive_number(temperature):
        raise _unreadable(path, f"temperature {temperature!r}")
    thresholds = _thresholds(record.get("thresholds", {}), path)
    model_entry = record.get("model")
    recorded = model_entry.get("sha256") if isinstance(model_entry, dict) else None
    actual = file_digest(model_path)
    if recorded != actual:
        raise UnreadableFileError(
            path,
            f"the calibration of {Path(model_path).name} (SHA-256 {actual[:12]}...)",
            f"one fitted to another model file (SHA-256 {str(recorded)[:12]}...)",
            _REFIT,
        )
    return Calibration(float(temperature), path, "", thresholds, record)


def check_calibration_destination(model_path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """The calibration file to write for ``model_path``, after checking it may be written.

    A new file may always be written (where the folder is writable); an existing one only with
    ``overwrite``, and only when it is a calibration file pcam wrote.
    """
    path = calibration_path(model_path)
    if path.is_dir():
        raise UnsafeOutputError(path, "a calibration file to write", "a folder")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(path)
        if path.is_symlink() or not is_calibration_file(path):
            raise UnsafeOutputError(
                path, "a calibration file that pcam wrote", "a file pcam did not write"
            )
    check_writable(path.parent)
    return path


def write_calibration(
    model_path: str | os.PathLike[str],
    temperature: float,
    *,
    thresholds: dict[str, float],
    details: dict[str, Any],
    overwrite: bool,
) -> Path:
    """Write the calibration file of ``model_path`` atomically; returns its path.

    ``thresholds`` are operating-point thresholds on the log-odds; ``details`` (the split it was
    fitted on, the figures before and after) are stored as they are. The file records the model
    file's SHA-256, which :func:`read_calibration` checks.
    """
    if not _positive_number(temperature):
        raise UnreadableFileError(
            calibration_path(model_path), _EXPECTED, f"temperature {temperature!r}", "fit again"
        )
    path = check_calibration_destination(model_path, overwrite=overwrite)
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "method": "temperature scaling of the tumour log-odds: p = sigmoid(z / T)",
        "temperature": float(temperature),
        "model": {"file": Path(model_path).name, "sha256": file_digest(model_path)},
        **details,
        "thresholds": {
            key: {"log_odds": float(value), "probability": float(sigmoid(value / temperature))}
            for key, value in thresholds.items()
        },
    }
    write_json_atomically(path, record)
    return path


def _thresholds(value: Any, path: Path) -> dict[str, float]:
    if not isinstance(value, dict):
        raise _unreadable(path, f"thresholds {value!r}")
    found: dict[str, float] = {}
    for key, entry in value.items():
        log_odds = entry.get("log_odds") if isinstance(entry, dict) else None
        if isinstance(log_odds, bool) or not isinstance(log_odds, (int, float)):
            raise _unreadable(path, f"threshold {key!r} without a log_odds number")
        if not math.isfinite(log_odds):
            raise _unreadable(path, f"threshold {key!r} of {log_odds!r}")
        found[str(key)] = float(log_odds)
    return found


def _positive_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )


def _unreadable(path: Path, found: str) -> UnreadableFileError:
    return UnreadableFileError(
        path,
        _EXPECTED,
        found,
        "run pcam calibrate again with --overwrite, or pass --no-calibration",
    )
