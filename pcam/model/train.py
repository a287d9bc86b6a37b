"""Training: the streaming loader, a ``tf.distribute`` strategy, and callbacks that survive a crash.

A run directory holds everything: ``config.json`` (the settings), ``model.keras`` (the best model
by validation loss, replaced atomically), ``backup/`` (Keras ``BackupAndRestore``: a killed run
started again with the same command resumes from its last finished epoch), ``training_log.csv``
and ``tensorboard/``. In a multi-worker run the chief writes these; worker ``i`` keeps its own
config, backup and logs in ``worker-i/`` (never the model), so workers sharing a disk never
write the same file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras

from pcam.config import LR_SCHEDULES, STRATEGIES, TrainConfig
from pcam.data.split import open_split
from pcam.errors import InvalidArgumentError, OutputExistsError
from pcam.model.architectures import (
    backbone_layers,
    build_model,
    resolve_weights,
    set_backbone_trainable,
)
from pcam.model.backup import (
    METADATA_FILE,
    ResumableBackup,
    discard_unusable_backup,
    finished_epochs,
)
from pcam.model.multiworker import prepare_multiworker_fit
from pcam.outputs import (
    MARKER,
    atomic_path,
    check_writable,
    claim_directory,
    make_folder,
    naming,
    warn_if_low_space,
    write_json_atomically,
)

__all__ = [  # TrainConfig and its choices live in pcam.config; importable from here too
    "LR_SCHEDULES",
    "RUN",
    "RUN_FILES",
    "RUN_FOLDERS",
    "STRATEGIES",
    "AtomicBestModel",
    "TrainConfig",
    "augment_placement",
    "deterministic_ops",
    "gpu_present",
    "learning_rate",
    "make_strategy",
    "read_start_weights",
    "remove_leftovers",
    "remove_unstarted_run",
    "run_is_finished",
    "set_start_weights",
    "train",
    "trim_log",
]


def make_strategy(name: str) -> Any:
    """The ``tf.distribute`` strategy for ``name`` (see :data:`STRATEGIES`).

    ``multiworker`` reads the cluster from the ``TF_CONFIG`` environment variable and must be
    created before TensorFlow runs anything else in the process.
    """
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def gpu_present() -> bool:
    """Whether TensorFlow sees a GPU (mixed precision and XLA are switched on by default there)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def train(config: TrainConfig, *, verbose: int | str = "auto") -> dict[str, list[float]]:
    """Train (or resume) the run described by ``config``; returns the Keras history.

    Every strategy gets its data the same way, through ``distribute_datasets_from_function``:
    each worker streams its own shard of the train split (disjoint, see
    :func:`pcam.data.order.epoch_order`) in per-replica batches, so the global batch is
    ``config.batch_size`` whatever the number of devices. Each worker validates on the whole
    valid split (metrics are means, so they are the same as on one device).
    """
    config.check()
    with deterministic_ops(config.deterministic, config.seed):
        return _train(config, verbose=verbose)


@contextmanager
def deterministic_ops(enabled: bool, seed: int) -> Iterator[None]:
    """Within the block, make TensorFlow's results a function of ``seed`` alone (if ``enabled``).

    Seeds Python, NumPy and TensorFlow (``keras.utils.set_random_seed``) and switches on
    TensorFlow's op determinism, which picks deterministic kernels (or raises for an op that has
    none) and makes ``tf.data`` keep its order. The rest is the project's own: the loader is a
    pure function of ``(seed, epoch, step)``, and a resumed run restores the loader's position,
    the optimizer, the dropout seed counters and early stopping (:mod:`pcam.model.backup`). The
    previous op-determinism setting comes back after the block, since it is global to the process.
    """
    if not enabled:
        yield
        return
    from tensorflow.python.framework import config as tf_config

    was_enabled = tf_config.is_op_determinism_enabled()
    keras.utils.set_random_seed(seed)
    tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled:
            tf_config.disable_op_determinism()


def _train(config: TrainConfig, *, verbose: int | str) -> dict[str, list[float]]:
    """The body of :func:`train`, with ``config`` already checked."""
    run = Path(config.out)
    train_split = open_split(config.data, "train")
    open_split(config.data, "valid")
    weights = resolve_weights(config.model, config.weights)  # a failed download writes nothing
    start = read_start_weights(config.init, run) if config.init is not None else None
    strategy = make_strategy(config.strategy)  # first: multi-worker collectives need it so
    replicas = int(strategy.num_replicas_in_sync)
    if config.batch_size % replicas:
        raise InvalidArgumentError(
            "batch_size", f"a multiple of the {replicas} replicas in sync", config.batch_size
        )
    worker = _worker_index(strategy)
    # workers other than the chief keep their backup and logs apart (a shared disk stays sane)
    logs = run if worker == 0 else run / f"worker-{worker}"
    created = not run.exists()
    _prepare_run_directory(run, logs, overwrite=config.overwrite, chief=worker == 0)
    try:
        return _fit(config, strategy, run, logs, worker, weights, start, len(train_split), verbose)
    except BaseException:
        if worker == 0:  # a run that failed before its first epoch ended leaves nothing
            remove_unstarted_run(run, created=created)
        raise


def _fit(
    config: TrainConfig,
    strategy: Any,
    run: Path,
    logs: Path,
    worker: int,
    weights: str | None,
    start: dict[str, list[Any]] | None,
    train_size: int,
    verbose: int | str,
) -> dict[str, list[float]]:
    """Build the model and the streams in a prepared run directory, and train (or resume).

    ``start`` holds the weights of :attr:`TrainConfig.init` by layer name (or ``None``); a
    resumed run then goes on from its backup, which replaces them.
    """
    write_json_atomically(logs / "config.json", asdict(config))
    samples = min(config.max_train_samples or train_size, train_size)
    steps = max(1, math.ceil(samples / config.batch_size))
    # a resumed run's stream goes on after the batches its finished epochs consumed
    resumed_epochs = finished_epochs(logs / "backup")
    resumed_steps = resumed_epochs * steps
    trim_log(logs / "training_log.csv", resumed_epochs)
    gpu = gpu_present()
    on_device = augment_placement(config, gpu=gpu) == "device"
    train_data, valid_data = _distributed_datasets(strategy, config, resumed_steps, on_device)
    mixed = gpu if config.mixed_precision is None else config.mixed_precision
    jit = gpu if config.xla is None else config.xla
    with strategy.scope():
        model = build_model(
            config.model,  # type: ignore[arg-type]
            weights=weights,
            freeze_backbone=config.freeze_backbone,
            mixed_precision=mixed,
            seed=config.seed,
            colour_augment=config.colour_augment if on_device else None,
            width=config.width,
        )
        if start is not None:
            set_start_weights(model, start, config)
        if config.unfreeze_from is not None:
            _check_backbone_layer(model, config)
            set_backbone_trainable(model, True, from_layer=config.unfreeze_from)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate(config, steps)),
            loss=keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy", keras.metrics.AUC(name="auc")],
            jit_compile=jit,
        )
    if config.strategy == "multiworker":
        prepare_multiworker_fit(model, strategy)
    # float32 weights in the model file and, with Adam's two moments, three times in the backup,
    # each written beside the old one before the rename; plus room for the logs
    needed = int(model.count_params()) * 4 * 6 + 50 * 2**20
    warn_if_low_space(logs, needed, "the model, its backup and the logs", command="pcam train")
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience)
    callbacks = [
        AtomicBestModel(run / "model.keras", chief=worker == 0),
        keras.callbacks.CSVLogger(str(logs / "training_log.csv"), append=True),
        early_stopping,
        keras.callbacks.TensorBoard(str(logs / "tensorboard"), write_graph=False),
        # last: it restores early stopping's state after that callback resets it
        ResumableBackup(str(logs / "backup"), early_stopping=early_stopping),
    ]
    history = model.fit(
        train_data,
        validation_data=valid_data,
        epochs=config.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def read_start_weights(init: str | os.PathLike[str], run: Path) -> dict[str, list[Any]]:
    """The weights of the saved model ``init`` by layer name (one-line errors for a bad file).

    ``init`` must lie outside the run directory, whose ``model.keras`` the run replaces.
    """
    from pcam.model.architectures import load_model

    path = Path(init)
    if path.resolve().is_relative_to(run.resolve()):
        raise InvalidArgumentError(
            "init",
            "a model outside the run folder (the run writes its own model.keras there)",
            str(path),
        )
    model = load_model(path)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def set_start_weights(model: keras.Model, start: dict[str, list[Any]], config: TrainConfig) -> None:
    """Give every layer of ``model`` the weights of the layer of the same name in ``start``.

    Raises a one-line :class:`InvalidArgumentError` unless the two models have the same layers
    with weights, of the same shapes (the init model is of another architecture, say).
    """
    expected = f"a pcam {config.model} model (the architecture of --model)"
    own = {layer.name: layer for layer in model.layers if layer.weights}
    if sorted(own) != sorted(start):
        missing = sorted(set(own) ^ set(start))
        raise InvalidArgumentError(
            "init", expected, f"{config.init}, whose layers differ (e.g. {missing[0]!r})"
        )
    for name, layer in own.items():
        shapes = [tuple(w.shape) for w in layer.get_weights()]
        if shapes != [tuple(w.shape) for w in start[name]]:
            raise InvalidArgumentError(
                "init", expected, f"{config.init}, whose layer {name!r} has other shapes"
            )
        layer.set_weights(start[name])


def _check_backbone_layer(model: keras.Model, config: TrainConfig) -> None:
    """Raise a one-line error unless ``config.unfreeze_from`` names a layer of the backbone."""
    import difflib

    names = [layer.name for layer in backbone_layers(model)]
    if config.unfreeze_from in names:
        return
    close = difflib.get_close_matches(str(config.unfreeze_from), names, n=3, cutoff=0.5)
    examples = ", ".join(repr(name) for name in close or names[-1:])
    raise InvalidArgumentError(
        "unfreeze_from",
        f"the name of a layer of the {config.model} backbone, such as {examples}",
        config.unfreeze_from,
    )


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> Any:
    """The optimizer's learning rate: ``config.lr``, decayed by a cosine over the whole run.

    The schedule counts optimizer steps, which ``BackupAndRestore`` restores, so a resumed run
    goes on from where its learning rate was.
    """
    if config.lr_schedule == "constant":
        return config.lr
    return keras.optimizers.schedules.CosineDecay(
        config.lr, decay_steps=config.epochs * steps_per_epoch, alpha=0.01
    )


def augment_placement(config: TrainConfig, *, gpu: bool) -> str:
    """Where the run's colour augmentation runs: ``device`` or ``loader``.

    ``config.augment_on`` when set; by default ``device`` on a host with a GPU (its CPU cores
    then only read) and ``loader`` elsewhere.
    """
    if config.augment_on is not None:
        return config.augment_on
    return "device" if gpu else "loader"


def _distributed_datasets(
    strategy: Any, config: TrainConfig, resumed_steps: int = 0, colour_on_device: bool = False
) -> tuple[Any, Any]:
    """The train and valid datasets, distributed over the strategy's workers and replicas.

    ``resumed_steps`` training steps were already taken (a resumed run): each input pipeline
    starts after the batches they consumed, one per replica it feeds per step. With
    ``colour_on_device`` the loader does the D4 symmetries only (the model does the colours).
    """
    from pcam.data.stream import make_dataset

    several = strategy.num_replicas_in_sync > 1

    def train_pipeline(context: Any) -> Any:
        replicas_fed = context.num_replicas_in_sync // context.num_input_pipelines
        return make_dataset(
            config.data,
            "train",
            batch_size=context.get_per_replica_batch_size(config.batch_size),
            shuffle=True,
            seed=config.seed,
            augment=True,
            repeat=True,
            num_shards=context.num_input_pipelines,
            shard_index=context.input_pipeline_id,
            drop_remainder=several,
            start_batch=resumed_steps * replicas_fed,
            colour_augment="none" if colour_on_device else config.colour_augment,
        )

    def valid_pipeline(context: Any) -> Any:
        return make_dataset(
            config.data,
            "valid",
            batch_size=context.get_per_replica_batch_size(config.batch_size),
            shuffle=False,
        )

    return (
        strategy.distribute_datasets_from_function(train_pipeline),
        strategy.distribute_datasets_from_function(valid_pipeline),
    )


RUN = "run"
"""The kind of output folder ``pcam train`` writes (see :mod:`pcam.outputs`)."""

RUN_FILES = ("config.json", "model.keras", "best.json", "training_log.csv")
RUN_FOLDERS = ("backup", "tensorboard")


def run_is_finished(run: str | os.PathLike[str]) -> bool:
    """Whether ``run`` holds a finished run: a model and no backup of an interrupted one."""
    run = Path(run)
    return (run / "model.keras").exists() and not (run / "backup").exists()


def _prepare_run_directory(run: Path, logs: Path, *, overwrite: bool, chief: bool) -> None:
    """Claim the run directory; refuse a finished run unless ``overwrite`` (then clear it).

    The chief claims ``run`` as pcam's (:func:`pcam.outputs.claim_directory`): a new or empty
    folder, or one an earlier ``pcam train`` wrote; a folder holding anyone else's files is
    refused, since a run would mix its files with them. A directory whose ``logs`` folder (the
    run directory itself on the chief) holds ``backup/`` is an interrupted run: training resumes
    there, unless ``overwrite``. One with a model but no backup is finished: training again would
    mix two runs' logs and models, so it needs ``overwrite``. ``overwrite`` removes only the
    files and folders a run writes (:data:`RUN_FILES`, :data:`RUN_FOLDERS`, ``worker-*``).
    """
    if chief:
        claim_directory(run, RUN, tolerated=lambda name: name.startswith("worker-"))
        remove_leftovers(run)
    else:
        check_writable(logs)
    unusable = discard_unusable_backup(logs / "backup")
    if unusable:  # its logs and model belong to epochs that will be trained again
        warnings.warn(unusable, RuntimeWarning, stacklevel=3)
        _clear(logs, [])
    interrupted = (logs / "backup").exists()
    finished = (run / "model.keras").exists() and not interrupted
    if finished and not overwrite:
        raise OutputExistsError(run)
    if overwrite and (finished or interrupted):
        _clear(run, list(run.glob("worker-*")))
    # made now, not at the first epoch's end: a run that stops before then (with a best model
    # saved, say) is interrupted, not finished, and the same command resumes it
    make_folder(logs / "backup")


def _clear(folder: Path, more: list[Path]) -> None:
    """Remove the files and folders a run writes (and ``more`` folders) from ``folder``."""
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    for path in [*(folder / name for name in RUN_FOLDERS), *more]:
        shutil.rmtree(path, ignore_errors=True)


def trim_log(log: Path, epochs: int) -> None:
    """Keep only the header and the rows of the first ``epochs`` epochs of a Keras CSV log.

    A run stopped after the log got an epoch's row but before that epoch's backup was complete
    (a full disk, a kill) trains the epoch again when it resumes; without this, the log would
    hold the epoch twice.
    """
    if not log.is_file():
        return
    lines = log.read_bytes().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if _epoch_of(line) < epochs]
    if kept != lines:
        with atomic_path(log) as temporary:
            temporary.write_bytes(b"".join(kept))


def _epoch_of(row: bytes) -> int:
    """The epoch number a CSV log row starts with (a row without one sorts after every epoch)."""
    first = row.split(b",", 1)[0].strip()
    return int(first) if first.isdigit() else 2**31


def remove_unstarted_run(run: Path, *, created: bool) -> None:
    """After a failure, remove what a run that never finished an epoch wrote into ``run``.

    A run with a model or a backup has something to resume from and is left alone. Otherwise the
    run's own files go, and ``run`` itself when this process made it and nothing else is in it.
    """
    if (run / "model.keras").exists() or (run / "backup" / METADATA_FILE).exists():
        return
    _clear(run, [])
    remove_leftovers(run)
    if created and sorted(entry.name for entry in run.iterdir()) == [MARKER]:
        (run / MARKER).unlink()
        run.rmdir()


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the temporary files a killed process left in ``folder`` and its ``backup/``.

    Those are the hidden ``.<name>.partial-<pid>...`` files of a process that no longer runs
    (files of live processes, such as other workers on this host, are left alone). Returns the
    files removed.
    """
    removed = []
    for candidate in [*folder.glob(".*.partial-*"), *(folder / "backup").glob(".*.partial-*")]:
        pid = candidate.name.partition(".partial-")[2].split(".")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (this process counts as dead: it just began)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_index(strategy: Any) -> int:
    """The index of the worker running this process: 0 (the chief) on one host."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0
    return int(resolver.task_id or 0)


class AtomicBestModel(keras.callbacks.Callback):  # type: ignore[misc]
    """Save the model with the lowest validation loss, atomically (temporary file, then rename).

    The best loss so far is kept in ``best.json`` beside the model, so a resumed run does not
    replace a better model saved before the crash.
    """

    def __init__(self, path: Path, *, chief: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.record = self.path.with_name("best.json")
        self.chief = chief
        self.best = math.inf

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Pick up the best loss of an earlier, interrupted run of the same directory."""
        if self.record.is_file() and self.path.is_file():
            self.best = float(json.loads(self.record.read_text())["val_loss"])

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Save when the validation loss improved."""
        loss = (logs or {}).get("val_loss")
        if loss is None or not loss < self.best:
            return
        self.best = float(loss)
        # every worker saves (saving may run collective ops); only the chief keeps the file
        saving = atomic_path(self.path, suffix=".keras", publish=self.chief)
        with saving as temporary, naming(self.path):
            self.model.save(temporary)  # a failed save (a full disk) leaves nothing
        if not self.chief:
            return
        write_json_atomically(self.record, {"epoch": epoch + 1, "val_loss": self.best})
