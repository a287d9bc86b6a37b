"""Resuming a killed run where it stopped, with nothing about the run's future changed.

Keras' ``BackupAndRestore`` saves the weights, the optimizer and the number of finished epochs.
That resumes training, but not *the same* training: two pieces of state live outside the weights
file and start afresh.

- The random draws of layers such as ``Dropout`` come from Keras seed generators whose counters
  are not saved with the weights, so a resumed run draws the first epoch's dropout masks again.
- ``EarlyStopping`` forgets its best loss and its count of epochs without improvement.

:class:`ResumableBackup` saves both beside the Keras backup, tagged with the epoch they belong to,
and restores them when the run resumes. The loader's position is the third piece; the trainer
reads it with :func:`finished_epochs` before it builds the stream (see :mod:`pcam.model.train`).

The backup also survives a full disk or a kill while it is written. Keras writes
``latest.weights.h5`` and its epoch record in place, so a failure halfway leaves a truncated file
that no later run can load. Here each file is written under a temporary name and renamed over
the old one, the epoch record last, so the previous epoch's backup stays whole until the new one
is complete. A backup damaged some other way is found by :func:`discard_unusable_backup` before
the run resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pcam.errors import PCamError, first_line
from pcam.outputs import atomic_path, naming, write_json_atomically

METADATA_FILE = "training_metadata.json"
"""The file in which Keras' ``BackupAndRestore`` records the number of finished epochs."""

STATE_FILE = "pcam_state.json"
"""Our own record, beside it: seed-generator counters and early-stopping state."""


def finished_epochs(backup_dir: str | os.PathLike[str]) -> int:
    """The epochs an interrupted run finished, from its backup (0 when there is no backup)."""
    record = Path(backup_dir) / METADATA_FILE
    if not record.is_file():
        return 0
    return int(json.loads(record.read_text())["epoch"])


class BackupMismatchError(PCamError, ValueError):
    """A readable backup that does not load into the model being trained."""

    def __init__(self, backup: Path, error: Exception) -> None:
        reason = first_line(error)
        super().__init__(
            f"{backup}: expected a backup of this run's model, found one that does not load "
            f"({reason}); pass --overwrite to start the run afresh, or use another --out"
        )


WEIGHTS_FILE = "latest.weights.h5"
"""The file in which Keras' ``BackupAndRestore`` keeps the weights and the optimizer state."""


def discard_unusable_backup(backup_dir: str | os.PathLike[str]) -> str | None:
    """Remove a backup that cannot be resumed from; returns why, or ``None`` when it is usable.

    A backup is usable when its epoch record is a JSON object with an ``epoch``, and its weights
    file is an HDF5 file whose every dataset reads (a truncated file fails here, not halfway
    through loading). An unusable backup is pcam's own file, and nothing can be made of it: it is
    removed, and the run starts again from its first epoch.
    """
    backup = Path(backup_dir)
    if not backup.is_dir():
        return None
    problem = _backup_problem(backup)
    if problem is None:
        return None
    shutil.rmtree(backup, ignore_errors=True)
    return (
        f"{backup}: expected a complete training backup, found {problem}; it was removed and "
        "training starts again from epoch 1"
    )


def _backup_problem(backup: Path) -> str | None:
    """What makes ``backup`` unusable, or ``None``."""
    import h5py

    record, weights = backup / METADATA_FILE, backup / WEIGHTS_FILE
    if not record.exists() and not weights.exists():
        return None  # made, then killed before the first epoch ended: nothing to resume
    try:
        epoch = json.loads(record.read_text())["epoch"]
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(epoch)
    except (OSError, ValueError, KeyError, TypeError):
        return f"an unreadable {METADATA_FILE}"
    datasets: list[h5py.Dataset] = []
    try:
        with h5py.File(weights, "r") as handle:
            handle.visititems(
                lambda name, item: datasets.append(item) if isinstance(item, h5py.Dataset) else None
            )
            for dataset in datasets:
                dataset[()]
    except (OSError, ValueError, KeyError, RuntimeError):
        return f"an unreadable (truncated?) {WEIGHTS_FILE}"
    if not datasets:
        return f"a {WEIGHTS_FILE} without weights"
    return None


def seed_generators(model: keras.Model) -> list[Any]:
    """Every Keras seed generator of ``model``'s layers, in a stable order (layer by layer)."""
    found: list[Any] = []
    for layer in model._flatten_layers(include_self=False):
        found.extend(getattr(layer, "_seed_generators", []))
    return found


class ResumableBackup(keras.callbacks.BackupAndRestore):  # type: ignore[misc]
    """``BackupAndRestore`` that also restores the seed generators and early stopping.

    Place it after the ``EarlyStopping`` callback in the list: that one resets its state when
    training begins, and this one must restore the state after it.
    """

    def __init__(
        self, backup_dir: str, *, early_stopping: keras.callbacks.EarlyStopping | None = None
    ) -> None:
        super().__init__(backup_dir, delete_checkpoint=True)
        self.early_stopping = early_stopping
        self._state_path = Path(backup_dir) / STATE_FILE

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Restore the weights and the epoch (Keras), then the state Keras leaves out."""
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError) as error:
            raise BackupMismatchError(Path(self.backup_dir), error) from None
        epoch = finished_epochs(self.backup_dir)
        if epoch == 0 or not self._state_path.is_file():
            return
        state = json.loads(self._state_path.read_text())
        generators = seed_generators(self.model)
        if state["epoch"] != epoch or len(state["seed_states"]) != len(generators):
            warnings.warn(
                f"{self._state_path} belongs to epoch {state['epoch']}, not to the backup's "
                f"epoch {epoch}: the resumed run's random draws differ from an uninterrupted run",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        for generator, value in zip(generators, state["seed_states"], strict=True):
            generator.state.assign(np.asarray(value, dtype=generator.state.dtype))
        if self.early_stopping is not None and state["early_stopping"] is not None:
            saved = state["early_stopping"]
            self.early_stopping.wait = int(saved["wait"])
            self.early_stopping.best = saved["best"]
            self.early_stopping.best_epoch = int(saved["best_epoch"])

    def _save_model(self) -> None:
        """Keras' backup, written so that a failure halfway leaves the previous one whole.

        The weights go to a temporary file renamed over :data:`WEIGHTS_FILE`; then our state
        (seed counters, early stopping) and last the epoch record, each renamed into place. On
        any failure the temporary file is removed.
        """
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        weights = backup / WEIGHTS_FILE
        with atomic_path(weights, suffix=".weights.h5") as temporary, naming(weights):
            self.model.save_weights(filepath=str(temporary), overwrite=True)
        write_json_atomically(self._state_path, self._state(self._current_epoch))
        write_json_atomically(
            backup / METADATA_FILE,
            {"epoch": self._current_epoch, "batch": self._last_batch_seen},
        )

    def _state(self, epoch: int) -> dict[str, Any]:
        """Our record for the backup of ``epoch`` finished epochs."""
        stopping = self.early_stopping
        return {
            "epoch": epoch,
            "seed_states": [
                np.asarray(g.state.numpy()).tolist() for g in seed_generators(self.model)
            ],
            "early_stopping": None
            if stopping is None
            else {
                "wait": stopping.wait,
                "best": None if stopping.best is None else float(stopping.best),
                "best_epoch": stopping.best_epoch,
            },
        }
