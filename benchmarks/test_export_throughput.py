"""Inference images/s of an exported model in its own runtime against Keras, on the CPU.

For each architecture (the small CNN, ResNet50; random weights: the speed does not depend on
them) and batch size (1 and 64), in one run, the same batch of seeded ``uint8`` noise through

- **keras** (the baseline of every ratio): the saved ``.keras`` model loaded with
  :func:`pcam.model.load_model` and read with :func:`pcam.model.inference.tumour_probabilities`,
  what ``pcam predict`` does for a ``.keras`` model;
- **keras-predict_on_batch**: the raw ``model.predict_on_batch`` of the same model, without the
  head's reading (the model has no calibration file, so the two should be within noise);
- **savedmodel**, **onnxruntime**, **litert**: the model exported by
  :func:`pcam.serve.export.export_model` and opened by :func:`pcam.serve.artifacts.open_artifact`,
  read with ``Artifact.probabilities``: the serving path of ``pcam predict`` and ``pcam app``
  (``tf.saved_model``, ONNX Runtime and the LiteRT interpreter, each with the threading pcam opens
  it with: the LiteRT interpreter gets no thread count, so it uses one core).

Each model is exported once per run (the first case that needs it pays; ResNet50's three exports
take about 90 s on a 2-core CPU). Before a runtime is timed, its probabilities on the benchmark
batch must equal Keras' within :data:`TOLERANCE`: a benchmark of a broken model is worthless.

A round is :data:`CALLS` calls on the same batch; a figure is the images of the best round over
its seconds. The Keras case of each architecture and batch size comes first and is timed alone.
Every other case alternates its rounds with Keras rounds (Keras' as the untimed ``setup`` of each
round, timed here, as :mod:`benchmarks.test_train_throughput` pairs its rounds): its ratio is its
images/s over those of the Keras rounds paired with it, so both sides saw the same state of a
machine shared with other work, and any subset runs alone (``-k onnxruntime``). The summary gives
the paired Keras figure and the cores each side kept busy (process CPU seconds over wall seconds,
runtime/keras): a core taken by other work shows there. Figures are reported, never asserted.

Smoke run (``PCAM_BENCH_QUICK``, the default under CI): the small CNN only, every runtime at both
batch sizes, 3 rounds instead of 7: about 45 s on a 2-core CPU, most of it importing TensorFlow
and exporting. ResNet50 is skipped there: its three exports alone take about 90 s, over the smoke
run's budget.

The ONNX and LiteRT cases skip cleanly (``pytest.importorskip``) where the ``export`` extra
(``tf2onnx``, ``onnx``, ``onnxruntime``, ``ai_edge_litert``) is not installed; Keras and the
SavedModel still run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.conftest import QUICK, record

if TYPE_CHECKING:
    from pcam.config import Architecture
    from pcam.serve.artifacts import Artifact, Format

SECTION = "pcam export runtime benchmarks (CPU, tumour probabilities)"
ARCHITECTURES: tuple[Architecture, ...] = ("small", "resnet50")
BATCHES = (1, 64)
KERAS = "keras"
RUNTIMES = (KERAS, "keras-predict_on_batch", "savedmodel", "onnxruntime", "litert")
"""Keras first: its own row opens each architecture and batch size (ratios use paired rounds)."""
FORMATS: dict[str, Format] = {"savedmodel": "savedmodel", "onnxruntime": "onnx", "litert": "litert"}
OUTPUTS = {"savedmodel": "savedmodel", "onnx": "model.onnx", "litert": "model.tflite"}
NEEDS: dict[str, tuple[str, ...]] = {
    "savedmodel": (),
    "onnx": ("tf2onnx", "onnx", "onnxruntime"),
    "litert": ("ai_edge_litert",),
}
"""The modules each format's export and runtime import (the ``export`` extra)."""
TOLERANCE = 1e-5
"""The largest difference from Keras' probabilities on the benchmark batch a runtime may have."""
ROUNDS = 3 if QUICK else 7
WARM_UP_ROUNDS = 1
CALLS: dict[tuple[str, int], int] = {
    ("small", 1): 64,
    ("small", 64): 4,
    ("resnet50", 1): 16,
    ("resnet50", 64): 1,
}
"""Calls per round of each architecture and batch size: the same for every runtime, so that
pytest-benchmark's table compares rounds of the same work (about 0.2 to 1 s on a 2-core CPU)."""


@dataclass(frozen=True)
class Case:
    """One benchmarked combination; its id reads ``small-b64-onnxruntime``."""

    architecture: Architecture
    batch: int
    runtime: str

    @property
    def id(self) -> str:
        return f"{self.architecture}-b{self.batch}-{self.runtime}"

    @property
    def label(self) -> str:
        return f"{self.architecture} b{self.batch} {self.runtime}"


CASES = [
    Case(architecture, batch, runtime)
    for architecture in ARCHITECTURES
    for batch in BATCHES
    for runtime in RUNTIMES
]


@dataclass
class Models:
    """Each architecture saved, loaded in Keras and exported once per run, on first use."""

    root: Path
    keras: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[tuple[str, str], Artifact] = field(default_factory=dict)

    def model_path(self, architecture: Architecture) -> Path:
        return self.root / architecture / "model.keras"

    def keras_model(self, architecture: Architecture) -> Any:
        if architecture not in self.keras:
            from pcam.model import build_model, load_model

            path = self.model_path(architecture)
            path.parent.mkdir(parents=True, exist_ok=True)
            build_model(architecture, weights=None, seed=0).save(path)
            self.keras[architecture] = load_model(path)
        return self.keras[architecture]

    def artifact(self, architecture: Architecture, format: Format) -> Artifact:
        for module in NEEDS[format]:
            pytest.importorskip(module, reason=f"the {format} export needs {module}")
        key = (architecture, format)
        if key not in self.artifacts:
            from pcam.serve.artifacts import open_artifact
            from pcam.serve.export import export_model

            self.keras_model(architecture)  # saved first
            out = self.root / architecture / OUTPUTS[format]
            export_model(self.model_path(architecture), format, out)
            self.artifacts[key] = open_artifact(out)
        return self.artifacts[key]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(tmp_path_factory.mktemp("pcam-export-bench"))


@pytest.fixture(scope="module")
def patches() -> npt.NDArray[np.uint8]:
    return np.random.default_rng(0).integers(0, 256, (max(BATCHES), 96, 96, 3), dtype=np.uint8)


@dataclass
class Rounds:
    """Wall and process CPU seconds of each round of one side (warm-up rounds first)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def timed(self, run: Callable[[], object], calls: int) -> Callable[[], None]:
        """``calls`` calls of ``run``, timed as one more round."""

        def round_() -> None:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                run()
            self.cpu.append(time.process_time() - cpu)
            self.wall.append(time.perf_counter() - wall)

        return round_

    def measured(self) -> tuple[list[float], list[float]]:
        """Wall and CPU seconds of the rounds after the warm-up (all under --benchmark-disable)."""
        if len(self.wall) <= WARM_UP_ROUNDS:
            return self.wall, self.cpu
        return self.wall[WARM_UP_ROUNDS:], self.cpu[WARM_UP_ROUNDS:]

    def rate(self, images: int) -> float:
        """Images/s of the best measured round of ``images`` images."""
        return images / min(self.measured()[0])

    def median(self) -> float:
        return statistics.median(self.measured()[0])

    def cores(self) -> float:
        """Process CPU seconds over wall seconds of the measured rounds."""
        wall, cpu = self.measured()
        return sum(cpu) / sum(wall)


def _runners(
    case: Case, models: Models, batch: npt.NDArray[np.uint8]
) -> tuple[Callable[[], object], Callable[[], object], str]:
    """Keras' call, ``case``'s call and the name of its runtime, after the parity check."""
    import keras

    from pcam.model.heads import head_of
    from pcam.model.inference import tumour_probabilities

    model = models.keras_model(case.architecture)
    baseline = partial(tumour_probabilities, model, batch)
    if case.runtime == KERAS:
        return baseline, baseline, f"Keras {keras.__version__}"
    expected = tumour_probabilities(model, batch)
    run: Callable[[], object]
    if case.runtime == "keras-predict_on_batch":
        actual = head_of(model).tumour_probabilities(model.predict_on_batch(batch))
        run, runtime = partial(model.predict_on_batch, batch), f"Keras {keras.__version__}"
    else:
        artifact = models.artifact(case.architecture, FORMATS[case.runtime])
        actual = artifact.probabilities(batch)
        run, runtime = partial(artifact.probabilities, batch), artifact.runtime
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64).reshape(-1),
        expected,
        rtol=0,
        atol=TOLERANCE,
        err_msg=f"{case.label}: probabilities differ from Keras' on the benchmark batch",
    )
    return baseline, run, runtime


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_inference(
    benchmark: Any, models: Models, patches: npt.NDArray[np.uint8], case: Case
) -> None:
    """Images/s of one runtime at one batch size, and its ratio to Keras' in paired rounds."""
    if QUICK and case.architecture == "resnet50":
        pytest.skip(
            "smoke run (PCAM_BENCH_QUICK, the default under CI): no ResNet50, whose three "
            "exports alone take about 90 s"
        )
    benchmark.group = f"inference {case.architecture} b{case.batch}"
    batch = np.ascontiguousarray(patches[: case.batch])
    baseline, run, runtime = _runners(case, models, batch)
    calls = CALLS[case.architecture, case.batch]
    images = calls * case.batch
    measured = Rounds()
    if case.runtime == KERAS:
        benchmark.pedantic(measured.timed(run, calls), rounds=ROUNDS, warmup_rounds=WARM_UP_ROUNDS)
        keras_side = measured
    else:
        keras_side = Rounds()
        benchmark.pedantic(
            measured.timed(run, calls),
            setup=keras_side.timed(baseline, calls),
            rounds=ROUNDS,
            warmup_rounds=WARM_UP_ROUNDS,
        )
    rate, keras_rate = measured.rate(images), keras_side.rate(images)
    ratio = rate / keras_rate
    benchmark.extra_info.update(
        images_per_s=round(rate, 1),
        ratio_to_keras=round(ratio, 3),
        keras_images_per_s=round(keras_rate, 1),
        ratio_of_medians=round(keras_side.median() / measured.median(), 3),
        runtime=runtime,
        cores=round(measured.cores(), 2),
        keras_cores=round(keras_side.cores(), 2),
        batch_size=case.batch,
        images_per_round=images,
    )
    record(
        case.label,
        section=SECTION,
        images_per_s=rate,
        ratio=ratio,
        baseline=KERAS,
        keras_paired=f"{keras_rate:,.0f}/s",
        cores=f"{measured.cores():.1f}/{keras_side.cores():.1f}",
        runtime=runtime,
    )
