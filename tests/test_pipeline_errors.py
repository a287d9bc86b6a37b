"""Damaged chunks met mid-run by TensorFlow: the ``tf.data`` pipeline, predict, evaluate, train.

The error raised inside the pipeline comes out wrapped in TensorFlow's own error; these tests
check it unwraps to the one line naming the file and the first bad row. The damaged files and the
expected messages come from the helpers of ``tests/test_deep_check.py`` (which does not import
TensorFlow, so that the mutation tests of the reader can run it quickly).
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pcam.data import pipeline_errors
from pcam.data.pipeline_errors import unwrap_pipeline_error
from pcam.errors import DamagedDataError, PCamError
from pcam.testing import write_split
from tests.test_deep_check import (
    FIX_HINT,
    N,
    _call,
    _chunk_rows,
    _copy_split,
    _damaged,
    _flip_middle,
    _x,
    gzip_template,
)

__all__ = ["gzip_template"]  # the shared fixture (module scope: written once for this file too)


# -- helpers ---------------------------------------------------------------------------------------


def _pipeline_error(dataset: Any) -> Any:
    """Iterate ``dataset`` until it fails; return TensorFlow's error, the iterator freed.

    The error's traceback holds the iterator, and an iterator still alive when the interpreter
    exits can hang the exit, so the traceback is dropped (the message is all the tests need).
    """
    import tensorflow as tf

    iterator = iter(dataset)
    try:
        for _ in iterator:
            pass
    except tf.errors.OpError as error:
        caught = error.with_traceback(None)
    else:
        pytest.fail("the pipeline raised no error")
    del iterator
    gc.collect()
    return caught


def _saved_tiny_model(path: Path) -> Path:
    """An untrained tiny PCam-shaped model saved at ``path`` (skips without TensorFlow)."""
    pytest.importorskip("tensorflow")
    import keras

    from pcam.testing.models import tiny_model

    compiled = tiny_model(seed=0)
    keras.Model(compiled.inputs, compiled.outputs).save(path)
    return path


# -- mid-run failures: the tf.data pipeline and pcam predict ---------------------------------------


@pytest.mark.slow
def test_a_pipeline_error_unwraps_to_the_one_line_error(
    gzip_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tf = pytest.importorskip("tensorflow")
    from pcam.data.stream import make_dataset

    root = _copy_split(gzip_template, tmp_path)
    x = _x(root)
    rows = _chunk_rows(x, "x")
    first = _flip_middle(x, "x")
    expected = _damaged(x, "patches", first, first + rows - 1, "x")
    dataset = make_dataset(root, "valid", batch_size=64, shuffle=False)
    wrapped = _pipeline_error(dataset)
    assert isinstance(wrapped, tf.errors.OpError)
    assert not isinstance(wrapped, PCamError)
    assert expected in wrapped.message  # today: the one line, inside TensorFlow's error
    assert "Traceback" in wrapped.message
    unwrapped = unwrap_pipeline_error(wrapped)
    assert isinstance(unwrapped, DamagedDataError)  # the object raised in the pipeline
    assert str(unwrapped) == expected
    assert unwrapped.first_index == first
    # without the remembered object (another process raised it): rebuilt from the traceback text
    monkeypatch.setattr(pipeline_errors, "_recent", OrderedDict())
    rebuilt = unwrap_pipeline_error(wrapped)
    assert type(rebuilt) is PCamError
    assert str(rebuilt) == expected


def test_the_last_quoted_error_is_the_one_that_stopped_the_pipeline() -> None:
    tf = pytest.importorskip("tensorflow")
    message = (
        "Error in user-defined function: LayoutError: first\nTraceback (most recent call last):\n"
        "pcam.errors.LayoutError: first\n\nDuring handling of the above exception, another "
        "exception occurred:\n\npcam.errors.DamagedDataError: second; do this\n\n\t "
        "[[{{node PyFuncStateless}}]]"
    )
    unwrapped = unwrap_pipeline_error(tf.errors.UnknownError(None, None, message))
    assert type(unwrapped) is PCamError
    assert str(unwrapped) == "second; do this"


def test_errors_that_are_not_ours_do_not_unwrap() -> None:
    tf = pytest.importorskip("tensorflow")

    def divide(value: np.int64) -> np.int64:
        return np.int64(1 // int(value))  # the only element is 0: ZeroDivisionError

    pipeline = tf.data.Dataset.range(1).map(
        lambda value: tf.numpy_function(divide, [value], tf.int64)
    )
    failed = _pipeline_error(pipeline)
    assert "ZeroDivisionError" in failed.message
    assert unwrap_pipeline_error(failed) is None
    with pytest.raises(tf.errors.InvalidArgumentError) as reshaped:
        tf.reshape(tf.zeros([3]), [2])
    assert unwrap_pipeline_error(reshaped.value) is None
    assert unwrap_pipeline_error(ValueError("pcam.errors.LayoutError: not from tf")) is None
    ours = PCamError("already ours")
    assert unwrap_pipeline_error(ours) is ours


def test_predict_on_a_damaged_h5_file_is_one_line_exit_1(
    gzip_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path = _saved_tiny_model(tmp_path / "model.keras")
    root = _copy_split(gzip_template, tmp_path / "data")
    x = _x(root)
    rows = _chunk_rows(x, "x")
    first = _flip_middle(x, "x")
    out = tmp_path / "predictions.csv"
    # batches of 256 rows: the damaged chunk is met inside the second batch, not at its start
    assert first % 256 != 0
    assert _call(["predict", "--model", model_path, x, "--out", out]) == 1
    printed, err = capsys.readouterr()
    expected = _damaged(x, "patches", first, first + rows - 1, "x")
    assert (printed, err) == ("", f"pcam predict: error: {expected}\n")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model.keras"]


@pytest.mark.slow
def test_evaluate_on_a_damaged_h5_file_is_one_line_exit_1(
    gzip_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The damage is met inside the tf.data pipeline: TensorFlow's error, unwrapped to ours."""
    model_path = _saved_tiny_model(tmp_path / "model.keras")
    root = _copy_split(gzip_template, tmp_path / "data")
    x = _x(root)
    rows = _chunk_rows(x, "x")
    first = _flip_middle(x, "x")
    out = tmp_path / "report"
    argv: list[str | Path] = ["evaluate", "--model", model_path, "--data", root]
    assert _call([*argv, "--split", "valid", "--out", out, "--batch-size", "64"]) == 1
    _, err = capsys.readouterr()
    expected = _damaged(x, "patches", first, first + rows - 1, "x")
    assert err == f"pcam evaluate: error: {expected}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model.keras"]
    gc.collect()


@pytest.mark.slow
def test_train_on_a_damaged_h5_file_is_one_line_and_leaves_no_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tensorflow")
    root = tmp_path / "data"
    write_split(root, "train", N, seed=0, chunked=True, compression="gzip")
    write_split(root, "valid", 32, seed=1)
    x = _x(root, "train")
    rows = _chunk_rows(x, "x")
    first = _flip_middle(x, "x")
    run = tmp_path / "run"
    argv: list[str | Path] = ["train", "--data", root, "--out", run, "--arch", "small"]
    assert _call([*argv, "--epochs", "1", "--batch-size", "32"]) == 1
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("pcam train:")]
    # shuffled: the first bad index met depends on the order, the damaged chunk does not
    assert len(lines) == 1, err
    assert lines[0].startswith(
        f"pcam train: error: {x}: expected readable patches, found a damaged chunk at patches "
        f"{first}-{first + rows - 1} (first unreadable index "
    )
    assert lines[0].endswith(f"; {FIX_HINT}")
    assert "Traceback" not in err
    assert not run.exists()  # no epoch finished: nothing of the run is left
    gc.collect()
