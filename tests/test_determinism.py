"""What a deterministic, resumable run rests on: the stream's position, the shards, the backup.

The end-to-end checks (two runs bit-identical, a killed run resumed bit-identical) are in
``test_train.py``; these pin the pieces, each in a way that fails for the bug it guards against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import tensorflow as tf

from pcam.data.order import epoch_order
from pcam.data.stream import make_dataset
from pcam.errors import InvalidArgumentError


def _batches(dataset: tf.data.Dataset, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.slow
def test_a_repeating_stream_started_at_a_batch_goes_on_exactly_from_there(
    synthetic_root: Path, augment: bool
) -> None:
    """Steps 9 to 13 of the stream (across the epoch boundary after 8) from a fresh start."""
    common: dict[str, Any] = {
        "batch_size": 192,
        "shuffle": True,
        "seed": 3,
        "augment": augment,
        "repeat": True,
    }
    whole = _batches(make_dataset(synthetic_root, "train", **common), 13)
    resumed = _batches(make_dataset(synthetic_root, "train", start_batch=9, **common), 4)
    assert len(resumed) == 4
    for (x, y), (x_ref, y_ref) in zip(resumed, whole[9:], strict=True):
        assert np.array_equal(x, x_ref)
        assert np.array_equal(y, y_ref)
    # the stream does not simply replay itself: the resumed batches are not the first ones
    assert not np.array_equal(resumed[0][0], whole[0][0])


def test_a_one_epoch_stream_started_after_whole_epochs_is_that_epoch(
    synthetic_root: Path,
) -> None:
    """``start_batch`` = 2 epochs of 8 batches: the first pass is epoch 2's permutation."""
    dataset = make_dataset(
        synthetic_root, "train", batch_size=192, shuffle=True, seed=4, start_batch=16
    )
    labels = np.concatenate([y for _, y in _batches(dataset, 8)])
    from pcam.data import open_split

    split = open_split(synthetic_root, "train")
    for epoch, expected_match in ((2, True), (0, False)):
        order = epoch_order(len(split), shuffle=True, seed=4, epoch=epoch, window_size=2112)
        matches = np.array_equal(labels, split.labels[order].astype(np.int32))
        assert matches is expected_match, epoch


@pytest.mark.parametrize(
    ("repeat", "start_batch", "expected"),
    [
        (True, -1, "an integer >= 0"),
        (False, 5, "a multiple of the 8 batches of an epoch"),
    ],
)
def test_a_bad_start_batch_is_refused(
    synthetic_root: Path, repeat: bool, start_batch: int, expected: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=expected):
        make_dataset(
            synthetic_root,
            "train",
            batch_size=192,
            shuffle=True,
            repeat=repeat,
            start_batch=start_batch,
        )


def test_an_endless_stream_of_empty_epochs_is_refused(synthetic_root: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        make_dataset(
            synthetic_root, "train", batch_size=4096, shuffle=True, repeat=True, drop_remainder=True
        )


class _Context:
    """The parts of ``tf.distribute.InputContext`` the train pipeline reads."""

    def __init__(self, pipelines: int, pipeline: int, replicas: int) -> None:
        self.num_input_pipelines = pipelines
        self.input_pipeline_id = pipeline
        self.num_replicas_in_sync = replicas

    def get_per_replica_batch_size(self, global_batch_size: int) -> int:
        return global_batch_size // self.num_replicas_in_sync


class _RecordingStrategy:
    """Calls each dataset function once per input pipeline, as a multi-worker strategy does."""

    def __init__(self, pipelines: int, replicas: int) -> None:
        self.pipelines = pipelines
        self.num_replicas_in_sync = replicas

    def distribute_datasets_from_function(self, function: Any) -> list[Any]:
        return [
            function(_Context(self.pipelines, index, self.num_replicas_in_sync))
            for index in range(self.pipelines)
        ]


@pytest.mark.parametrize(("pipelines", "replicas"), [(2, 2), (3, 6)])
def test_workers_stream_disjoint_shards_that_cover_the_split_and_resume_in_place(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, pipelines: int, replicas: int
) -> None:
    """Each worker gets its own shard; a resumed run starts each after its consumed batches."""
    import pcam.data.stream
    from pcam.model.train import TrainConfig, _distributed_datasets

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        pcam.data.stream,
        "make_dataset",
        lambda root, split, **options: calls.append({"split": split, **options}),
    )
    config = TrainConfig(data=str(synthetic_root), out="unused", batch_size=96, seed=11)
    _distributed_datasets(_RecordingStrategy(pipelines, replicas), config, resumed_steps=5)
    train_calls = [call for call in calls if call["split"] == "train"]
    assert [call["shard_index"] for call in train_calls] == list(range(pipelines))
    seen: list[np.ndarray] = []
    for call in train_calls:
        assert call["num_shards"] == pipelines
        assert call["seed"] == 11
        assert call["shuffle"] is True
        assert call["augment"] is True
        assert call["batch_size"] == 96 // replicas
        assert call["start_batch"] == 5 * (replicas // pipelines)
        seen.append(
            epoch_order(
                1536,
                shuffle=True,
                seed=call["seed"],
                num_shards=call["num_shards"],
                shard_index=call["shard_index"],
            )
        )
    together = np.concatenate(seen)
    assert together.size == 1536
    assert np.array_equal(np.sort(together), np.arange(1536))  # disjoint, and all of the split
    valid_calls = [call for call in calls if call["split"] == "valid"]
    assert all(call["shuffle"] is False for call in valid_calls)
    assert all("num_shards" not in call for call in valid_calls)  # each worker: all of valid


def test_the_backup_restores_seed_generators_and_early_stopping(tmp_path: Path) -> None:
    """The state Keras leaves out of its backup, saved and brought back for the same epoch."""
    import keras

    from pcam.model.backup import ResumableBackup, finished_epochs, seed_generators

    def tiny() -> keras.Model:
        inputs = keras.Input((4,))
        hidden = keras.layers.Dropout(0.5, seed=3)(keras.layers.Dense(3)(inputs))
        model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dropout(0.5)(hidden)))
        model.compile("adam", "mse")
        return model

    x, y = np.ones((16, 4), np.float32), np.ones((16, 1), np.float32)
    backup = tmp_path / "backup"
    assert finished_epochs(backup) == 0
    model = tiny()
    stopping = keras.callbacks.EarlyStopping(monitor="loss", patience=50)
    saver = ResumableBackup(str(backup), early_stopping=stopping)
    saver.on_train_end = lambda logs=None: None  # keep the backup, as a killed run does
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[stopping, saver])
    states = [g.state.numpy().tolist() for g in seed_generators(model)]
    assert len(states) == 2
    assert states[0] != [3, 0]  # the counters moved during training
    assert finished_epochs(backup) == 3
    saved = json.loads((backup / "pcam_state.json").read_text())
    assert saved["epoch"] == 3
    assert saved["seed_states"] == states

    resumed = tiny()
    restored_stopping = keras.callbacks.EarlyStopping(monitor="loss", patience=50)
    restorer = ResumableBackup(str(backup), early_stopping=restored_stopping)
    restorer.set_model(resumed)
    restored_stopping.set_model(resumed)
    restored_stopping.on_train_begin()
    restorer.on_train_begin()
    assert [g.state.numpy().tolist() for g in seed_generators(resumed)] == states
    assert restored_stopping.best == pytest.approx(stopping.best)
    assert restored_stopping.wait == stopping.wait
    assert restored_stopping.best_epoch == stopping.best_epoch

    # a record of another epoch is not applied (a crash between the two writes): a warning
    (backup / "pcam_state.json").write_text(json.dumps({**saved, "epoch": 2}))
    fresh = tiny()
    late = ResumableBackup(str(backup))
    late.set_model(fresh)
    with pytest.warns(RuntimeWarning, match="belongs to epoch 2, not to the backup's epoch 3"):
        late.on_train_begin()
    assert seed_generators(fresh)[0].state.numpy().tolist() == [3, 0]
