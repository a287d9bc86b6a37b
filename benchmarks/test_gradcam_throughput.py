"""Grad-CAM maps/s on ResNet50: batched against the seed's per-image function and against one
forward+backward pass, all measured in the same run.

- **batched** (:class:`pcam.explain.gradcam.GradCAM`): built once, a batch of 32 patches per
  call, one compiled forward-backward pass, maps returned as NumPy.
- **per image, seed style**: what the seed did for every patch: build a Keras model from the
  input to ``[conv5_block3_out, output]``, run it eagerly under a gradient tape on one patch,
  pool the gradients and weight the feature maps. The baseline of the first ratio.
- **forward+backward**: the least any gradient-based CAM must compute, as one compiled function:
  the forward pass to the output and the gradient of the summed output back to
  ``conv5_block3_out``, for the same batch, without the map arithmetic or the copy to NumPy. The
  baseline of the second ratio.

Targets (the issue): batched >= 30x the per-image function and >= 0.8x the forward+backward
pass. The ratios are reported, not asserted (wall-clock figures never are in this project).
ResNet50 has random weights: the speed does not depend on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import record

SECTION = "pcam Grad-CAM benchmarks (ResNet50, 96 px)"
LAYER = "conv5_block3_out"
BATCH = 32
PER_IMAGE_PATCHES = 4
RATES: dict[str, float] = {}


@pytest.fixture(scope="module")
def resnet() -> Any:
    from pcam.model.architectures import build_model

    return build_model("resnet50", seed=0)


@pytest.fixture(scope="module")
def patches() -> Any:
    return np.random.default_rng(0).integers(0, 256, (BATCH, 96, 96, 3), dtype=np.uint8)


def _rate(benchmark: Any, maps: int) -> float:
    return maps / float(benchmark.stats.stats.min)


def test_forward_backward_pass(benchmark: Any, resnet: Any, patches: Any) -> None:
    """The baseline of the batched figure: one compiled forward and backward pass."""
    import keras
    import tensorflow as tf

    tapped = keras.Model(resnet.inputs[0], [resnet.get_layer(LAYER).output, resnet.output])

    @tf.function
    def forward_backward(images: Any) -> Any:
        with tf.GradientTape() as tape:
            features, output = tapped(images, training=False)
            total = tf.reduce_sum(output)
        return tape.gradient(total, features)

    batch = tf.constant(patches)
    benchmark.pedantic(lambda: forward_backward(batch).numpy(), rounds=5, warmup_rounds=1)
    RATES["forward_backward"] = _rate(benchmark, BATCH)
    benchmark.extra_info["maps_per_s"] = round(RATES["forward_backward"], 1)
    record(
        "forward+backward pass (compiled)",
        section=SECTION,
        maps_per_s=_fmt(RATES, "forward_backward"),
    )


def test_per_image_seed_function(benchmark: Any, resnet: Any, patches: Any) -> None:
    """The seed's way: a new Keras model and an eager tape for every patch."""
    import keras
    import tensorflow as tf

    def seed_gradcam(image: Any) -> Any:
        grad_model = keras.Model(resnet.input, [resnet.get_layer(LAYER).output, resnet.output])
        with tf.GradientTape() as tape:
            features, output = grad_model(image[np.newaxis])
            score = output[:, 0]
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(0, 1, 2))
        heatmap = tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1))
        return (heatmap / (tf.reduce_max(heatmap) + 1e-8)).numpy()

    def some_patches() -> None:
        for image in patches[:PER_IMAGE_PATCHES]:
            seed_gradcam(image)

    benchmark.pedantic(some_patches, rounds=2, warmup_rounds=1)
    RATES["per_image"] = _rate(benchmark, PER_IMAGE_PATCHES)
    benchmark.extra_info["maps_per_s"] = round(RATES["per_image"], 2)
    record("per-image function (seed style)", section=SECTION, maps_per_s=_fmt(RATES, "per_image"))


def test_batched_gradcam(benchmark: Any, resnet: Any, patches: Any) -> None:
    """``GradCAM.heatmaps`` on a batch of 32: the figure the targets are about."""
    from pcam.explain.gradcam import GradCAM

    cam = GradCAM(resnet, LAYER)
    benchmark.pedantic(lambda: cam.heatmaps(patches), rounds=5, warmup_rounds=1)
    rate = _rate(benchmark, BATCH)
    benchmark.extra_info["maps_per_s"] = round(rate, 1)
    for name, target in (("per_image", 30.0), ("forward_backward", 0.8)):
        if name in RATES:
            benchmark.extra_info[f"ratio_to_{name}"] = round(rate / RATES[name], 2)
            benchmark.extra_info[f"target_ratio_to_{name}"] = target
    record(
        "batched GradCAM (32 per call)",
        section=SECTION,
        maps_per_s=f"{rate:.1f}",
        x_per_image=_ratio(rate, "per_image"),
        x_forward_backward=_ratio(rate, "forward_backward"),
    )


def _ratio(rate: float, baseline: str) -> str:
    return f"{rate / RATES[baseline]:.2f}" if baseline in RATES else "not measured"


def _fmt(rates: dict[str, float], name: str) -> str:
    return f"{rates[name]:.2f}"
