"""Golden snapshots: the exact figures of a deterministic run, compared on every ``tox``.

The floors elsewhere catch a model that no longer learns; these catch a change that moves the
numbers at all: a learning rate, a dropout rate, a decay floor, a seed that stops mattering, a
swapped pair of metrics. The run is :func:`tests.conftest.deterministic_config` (the small CNN,
4 epochs of 8 steps, seed 0, ``deterministic=True``) on the session's synthetic split, and the
snapshots live in ``tests/test_snapshots/`` (``pytest-regressions`` files).

A failure here means the outputs of a deterministic run moved. If the change was meant (a new
default, a new model), re-record with ``python -m tox -e regen`` and review the diff of the
snapshot files in the pull request; if it was not, it is a regression.

Tolerances (see :data:`TRAINED` and :data:`STREAMED`) are tight: the runs are bit-identical on one
machine, so the tolerances only absorb what differs between the machines and Python versions
of the CI matrix (a different kernel path, measured with oneDNN switched off; see README).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("pytest_regressions")

from pytest_regressions.data_regression import DataRegressionFixture
from pytest_regressions.num_regression import NumericRegressionFixture

from pcam.testing.snapshot import platform_fingerprint
from tests.conftest import deterministic_config
from tests.snapshot_platform import PLATFORM_FILE, same_platform

pytestmark = pytest.mark.slow

# Tolerances, (same platform, other platform). On the platform that recorded them the runs are
# bit-identical, so the first is exact up to the float64 text of the files. Elsewhere the second
# absorbs another kernel path: measured with oneDNN switched off (see README), the 4-epoch run's
# figures move by at most 4e-4 relative (training log), 8e-4 absolute (probabilities) and 1e-3
# (Grad-CAM maps), while a default moved by 10% (learning rate, dropout) moves the training
# log by 3e-2 to 8e-2 relative, 15 times the cross-platform tolerance at least.
TRAINED = ({"rtol": 1e-6, "atol": 1e-8}, {"rtol": 2e-3, "atol": 1e-5})
"""Training log and report figures (relative)."""
PROBABILITIES = ({"rtol": 1e-6, "atol": 1e-8}, {"rtol": 0.0, "atol": 3e-3})
"""Predicted probabilities (absolute)."""
CAM = ({"rtol": 1e-6, "atol": 1e-7}, {"rtol": 0.0, "atol": 5e-3})
"""Grad-CAM maps, each normalised to [0, 1] (absolute)."""
STREAMED = ({"rtol": 0.0, "atol": 1e-9}, {"rtol": 0.0, "atol": 2e-2})
"""Per-patch channel means of colour-jittered uint8 patches: exact, or a few pixels rounded
the other way by another CPU's compiled colour map (a changed seed moves them by units)."""
REPORT = ({"rtol": 1e-6, "atol": 1e-8}, {"rtol": 0.0, "atol": 1e-2})
"""Report figures: rates move by 1/512 per validation patch that crosses the threshold."""
COUNTS = ({"rtol": 0.0, "atol": 0.0}, {"rtol": 0.0, "atol": 3.0})
"""Confusion-matrix counts: exact, or a few patches near the threshold on another platform."""


@pytest.fixture(scope="module", autouse=True)
def _record_platform_on_regen(request: pytest.FixtureRequest) -> None:
    """``--force-regen`` records the platform of the new snapshots beside them."""
    if request.config.getoption("force_regen"):
        PLATFORM_FILE.parent.mkdir(exist_ok=True)
        PLATFORM_FILE.write_text(json.dumps(platform_fingerprint(), indent=2) + "\n")


def tolerance(pair: tuple[dict[str, float], dict[str, float]]) -> dict[str, float]:
    """The tolerance of ``pair`` that applies on this platform."""
    return pair[0] if same_platform() else pair[1]


FIXED_PATCHES_SEED = 5
"""Seed of the synthetic patches whose predictions and maps are pinned."""


def _training_log(run: Path) -> dict[str, np.ndarray]:
    with (run / "training_log.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


def _fixed_patches(count: int) -> np.ndarray:
    from pcam.testing import generate

    images: np.ndarray = generate(count, seed=FIXED_PATCHES_SEED).images
    return images


def test_training_log_of_a_deterministic_run(
    deterministic_run: Path, num_regression: NumericRegressionFixture
) -> None:
    log = _training_log(deterministic_run)
    assert log["epoch"].tolist() == [0, 1, 2, 3]
    num_regression.check(log, default_tolerance=tolerance(TRAINED))


def test_predictions_on_fixed_patches(
    deterministic_run: Path, num_regression: NumericRegressionFixture
) -> None:
    from pcam.model.architectures import load_model

    model = load_model(deterministic_run / "model.keras")
    probabilities = model.predict(_fixed_patches(64), verbose=0)[:, 0].astype(np.float64)
    assert 0.05 < probabilities.mean() < 0.95  # not a collapsed model
    num_regression.check({"probability": probabilities}, default_tolerance=tolerance(PROBABILITIES))


def test_gradcam_maps_of_fixed_patches_for_every_method(
    deterministic_run: Path, num_regression: NumericRegressionFixture
) -> None:
    """8 patches, classes 0 and 1, the three methods: one column of 8 x 3 x 3 values each."""
    from pcam.explain.gradcam import METHODS, GradCAM
    from pcam.model.architectures import load_model

    model = load_model(deterministic_run / "model.keras")
    patches = _fixed_patches(8)
    maps: dict[str, np.ndarray] = {}
    for method in METHODS:
        for class_index in (0, 1):
            cam = GradCAM(model, method=method)
            found, _ = cam.explain(patches, class_index=class_index)
            maps[f"{method}_class{class_index}"] = np.asarray(found, dtype=np.float64)
    assert maps["gradcam_class1"].shape == (8, 3, 3)
    assert not np.array_equal(maps["gradcam_class0"], maps["gradcam_class1"])
    num_regression.check(
        {key.replace("+", "p"): value.ravel() for key, value in maps.items()},
        default_tolerance=tolerance(CAM),
    )


def _first_batches(root: Path, *, seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from pcam.data.stream import make_dataset

    dataset = make_dataset(
        root, "train", batch_size=128, shuffle=True, seed=seed, augment=True, repeat=True
    )
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_first_batches_of_a_shuffled_augmented_stream(
    synthetic_root: Path,
    data_regression: DataRegressionFixture,
    num_regression: NumericRegressionFixture,
) -> None:
    """The order and the symmetries exactly (NumPy), the colour jitter by per-patch means."""
    from pcam.data import open_split
    from pcam.data.reader import EpochReader, StreamOptions

    reader = EpochReader(
        open_split(synthetic_root, "train"),
        StreamOptions(batch_size=128, shuffle=True, seed=0, augment=True),
    )
    exact = {
        f"epoch{epoch}_step{step}": hashlib.sha256(
            b"".join(
                np.ascontiguousarray(part).tobytes() for part in reader.read_batch(epoch, step)
            )
        ).hexdigest()
        for epoch, step in ((0, 0), (0, 1), (0, 11), (1, 0))
    }
    data_regression.check(exact, basename="test_first_batches_of_a_stream_before_colour")

    batches = _first_batches(synthetic_root, seed=0, count=3)
    columns: dict[str, np.ndarray] = {}
    for index, (images, labels) in enumerate(batches):
        means = images.reshape(len(images), -1, 3).mean(axis=1)
        for channel, name in enumerate("RGB"):
            columns[f"batch{index}_mean_{name}"] = means[:, channel]
        columns[f"batch{index}_label"] = labels
    labels_exact = {key: tolerance(COUNTS) for key in columns if key.endswith("label")}
    num_regression.check(columns, default_tolerance=tolerance(STREAMED), tolerances=labels_exact)


def test_evaluation_report_figures(
    deterministic_run: Path,
    synthetic_root: Path,
    tmp_path: Path,
    num_regression: NumericRegressionFixture,
    data_regression: DataRegressionFixture,
) -> None:
    from pcam.evaluation.evaluate import evaluate

    report = evaluate(
        deterministic_run / "model.keras",
        synthetic_root,
        "valid",
        tmp_path / "report",
        bootstrap_rounds=200,
    )
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(report))
    leaves = _leaves(written)
    schema = {path: type(leaf).__name__ for path, leaf in leaves}
    data_regression.check(schema, basename="test_evaluation_report_schema")
    figures = {
        path: float(leaf)
        for path, leaf in leaves
        if isinstance(leaf, int | float) and not isinstance(leaf, bool)
    }
    counts = [key for key in figures if key.startswith("confusion_matrix")]
    assert len(counts) == 4
    num_regression.check(
        {key: np.array([value]) for key, value in figures.items()},
        default_tolerance=tolerance(REPORT),
        tolerances={key: tolerance(COUNTS) for key in counts},
    )


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf of a nested JSON value with its path (``a.b.0``), in order."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return [(prefix, value)]
    return [
        leaf
        for key, item in items
        for leaf in _leaves(item, f"{prefix}.{key}" if prefix else f"{key}")
    ]


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("learning rate +10%", {"lr": 1.1e-3}),
        ("dropout +10%", {"dropout": 0.22}),
    ],
)
def test_the_snapshot_fails_for_a_default_moved_by_ten_percent(
    synthetic_root: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    num_regression: NumericRegressionFixture,
    name: str,
    change: dict[str, float],
) -> None:
    """The training-log snapshot, compared with a run whose one default moved by 10%."""
    import pcam.model.architectures
    from pcam.model.train import train

    if "dropout" in change:  # a default of build_model, moved where the trainer finds it
        defaults = {**(pcam.model.architectures.build_model.__kwdefaults__ or {}), **change}
        monkeypatch.setattr(pcam.model.architectures.build_model, "__kwdefaults__", defaults)
        config = deterministic_config(synthetic_root, tmp_path / "run")
    else:
        config = deterministic_config(synthetic_root, tmp_path / "run", **change)
    train(config, verbose=0)
    snapshot = Path(request.path).with_suffix("") / "test_training_log_of_a_deterministic_run.csv"
    if not snapshot.is_file():
        pytest.skip(f"no snapshot yet at {snapshot}; record it with --force-regen")
    if request.config.getoption("force_regen"):
        pytest.skip("re-recording: this test compares with the recorded snapshot")
    copy = tmp_path / snapshot.name  # the same check, against a copy of the recorded file
    copy.write_bytes(snapshot.read_bytes())
    with pytest.raises(
        (AssertionError, pytest.fail.Exception), match="Values are not sufficiently"
    ):
        num_regression.check(
            _training_log(tmp_path / "run"), fullpath=copy, default_tolerance=TRAINED[1]
        )
    assert copy.read_bytes() == snapshot.read_bytes()
