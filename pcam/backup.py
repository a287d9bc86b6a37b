"""Resuming a killed run where it stopped, with nothing about the run's future changed.

Keras' ``BackupAndRestore`` saves the weights, the optimizer and the number of finished epochs.
That resumes training, but not *the same* training: two pieces of state live outside the weights
file and start afresh.

- The random draws of layers such as ``Dropout`` come from Keras seed generators whose counters
  are not saved with the weights, so a resumed run draws the first epoch's dropout masks again.
- ``EarlyStopping`` forgets its best loss and its count of epochs without improvement.

:class:`ResumableBackup` saves both beside the Keras backup, tagged with the epoch they belong to,
and restores them when the run resumes. The loader's position is the third piece; the trainer
reads it with :func:`finished_epochs` before it builds the stream (see :mod:`pcam.train`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pcam.outputs import write_json_atomically

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
        super().on_train_begin(logs)
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

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Save the Keras backup, then our state for the same epoch (atomically)."""
        super().on_epoch_end(epoch, logs)
        stopping = self.early_stopping
        state = {
            "epoch": epoch + 1,
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
        write_json_atomically(self._state_path, state)
