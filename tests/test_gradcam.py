"""Grad-CAM values, not just shapes: numeric oracles, symmetry, precision, sign, nesting, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

keras = pytest.importorskip("keras")

from pcam.data.d4 import NUM_SYMMETRIES, apply_one  # noqa: E402
from pcam.errors import InvalidArgumentError  # noqa: E402
from pcam.gradcam import METHODS, GradCAM, spatial_layers, upsample  # noqa: E402
from pcam.model import build_model  # noqa: E402


def _patches(count: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (count, 96, 96, 3), dtype=np.uint8)


def _normalised(maps: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, maps / np.where(peak > 0, peak, 1), 0.0)


def _pointwise_model(seed: int = 0) -> Any:
    """A D4-equivariant classifier: 1x1 convolutions, 4x4 average pooling, GAP, dense head.

    Every layer before the global pooling acts on each pixel alike (or on an aligned 4x4 grid),
    so rotating or flipping the input rotates or flips every feature map the same way.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((96, 96, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 1, activation="relu", use_bias=False, name="pixels")(x)
    x = keras.layers.AveragePooling2D(4, name="cells")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", use_bias=False, name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def small() -> Any:
    return build_model("small", seed=1)


@pytest.fixture(scope="module")
def small_cam(small: Any) -> GradCAM:
    return GradCAM(small)


def _class_activation_map(model: Any, layer: str, images: Any, sign: float) -> Any:
    """The classic CAM of a GAP + dense head: ReLU of the head-weighted sum of feature maps."""
    features = keras.Model(model.inputs[0], model.get_layer(layer).output).predict(
        images, verbose=0
    )
    weights = np.asarray(model.layers[-1].kernel)[:, 0]
    return _normalised(np.maximum(sign * features @ weights, 0.0))


@pytest.mark.parametrize("class_index", [1, 0])
def test_gradcam_equals_the_class_activation_map_for_a_gap_head(
    small: Any, small_cam: GradCAM, class_index: int
) -> None:
    """With global average pooling before a dense head, Grad-CAM is CAM up to a positive scale."""
    images = _patches(6, seed=1)
    assert small_cam.layer_names == ("block4_pool",)
    expected = _class_activation_map(small, "block4_pool", images, 1.0 if class_index else -1.0)
    got = small_cam.heatmaps(images, class_index)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_negative_class_uses_minus_the_logit(small: Any, small_cam: GradCAM) -> None:
    """Class 0's map is built from minus the logit: where one class has evidence, not the other."""
    images = _patches(6, seed=2)
    tumour, normal = small_cam.heatmaps(images, 1), small_cam.heatmaps(images, 0)
    assert not np.any((tumour > 1e-6) & (normal > 1e-6))
    assert np.all((tumour > 0) | (normal > 0) | (_raw_zero(small, images)))


def _raw_zero(model: Any, images: Any) -> Any:
    features = keras.Model(model.inputs[0], model.get_layer("block4_pool").output).predict(
        images, verbose=0
    )
    return np.isclose(features @ np.asarray(model.layers[-1].kernel)[:, 0], 0.0, atol=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_one_by_one(small: Any, method: str) -> None:
    cam = GradCAM(small, "block3_relu", method=method)  # type: ignore[arg-type]
    images = _patches(5, seed=3)
    batched, probabilities = cam.explain(images)
    one_by_one = np.concatenate([cam.heatmaps(images[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_allclose(probabilities, small.predict(images, verbose=0)[:, 0], atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("code", range(NUM_SYMMETRIES))
def test_a_symmetry_of_the_input_moves_the_map_alike(method: str, code: int) -> None:
    model = _pointwise_model()
    cam = GradCAM(model, "features", method=method)  # type: ignore[arg-type]
    images = _patches(3, seed=4)
    maps = cam.heatmaps(images)
    moved = cam.heatmaps(np.ascontiguousarray(apply_one(images, code)))
    expected = apply_one(maps, code, channels_last=False)
    np.testing.assert_allclose(moved, expected, atol=1e-5)
    assert maps.max() == pytest.approx(1.0)  # a real map, not an all-zero one


def test_float16_and_float32_agree(small: Any) -> None:
    mixed = build_model("small", mixed_precision=True, seed=1)
    mixed.set_weights(small.get_weights())
    images = _patches(6, seed=5)
    full = GradCAM(small, "block3_relu").heatmaps(images)
    half = GradCAM(mixed, "block3_relu").heatmaps(images)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, full, atol=0.05)


def test_an_all_zero_map_is_zero_not_nan() -> None:
    model = _pointwise_model()
    black = np.zeros((2, 96, 96, 3), dtype=np.uint8)  # no bias anywhere: all features are 0
    for method in METHODS:
        maps = GradCAM(model, "features", method=method).heatmaps(black)
        assert np.all(np.isfinite(maps))
        assert np.all(maps == 0)


@given(
    seed=st.integers(0, 2**16),
    count=st.integers(1, 4),
    layer=st.sampled_from(["block1_conv", "block2_relu", "block3_pool", "block4_bn"]),
    method=st.sampled_from(METHODS),
    class_index=st.sampled_from([0, 1]),
)
def test_maps_are_finite_in_unit_range_with_the_layer_shape(
    small: Any, seed: int, count: int, layer: str, method: str, class_index: int
) -> None:
    cam = _cached_cam(small, layer, method)
    maps = cam.heatmaps(_patches(count, seed), class_index)
    height, width = dict(spatial_layers(small))[layer]
    assert maps.shape == (count, height, width)
    assert maps.dtype == np.float32
    assert np.all(np.isfinite(maps))
    assert maps.min() >= 0.0
    assert maps.max() <= 1.0
    assert np.all((maps.max(axis=(1, 2)) == 0) | np.isclose(maps.max(axis=(1, 2)), 1.0))
    big = cam.heatmaps(_patches(count, seed), class_index, size=(96, 96))
    assert big.shape == (count, 96, 96)
    assert 0.0 <= big.min() <= big.max() <= 1.0


_CAMS: dict[tuple[int, str, str], GradCAM] = {}


def _cached_cam(model: Any, layer: str, method: str) -> GradCAM:
    key = (id(model), layer, method)
    if key not in _CAMS:
        _CAMS[key] = GradCAM(model, layer, method=method)  # type: ignore[arg-type]
    return _CAMS[key]


def test_several_layers_are_fused_at_patch_size(small: Any) -> None:
    images = _patches(3, seed=6)
    fused = GradCAM(small, ["block2_relu", "block4_pool"], method="layercam").heatmaps(images)
    parts = [
        upsample(GradCAM(small, name, method="layercam").heatmaps(images), (96, 96))
        for name in ("block2_relu", "block4_pool")
    ]
    assert fused.shape == (3, 96, 96)
    np.testing.assert_allclose(fused, np.maximum(*parts), atol=1e-5)


def test_resnet50_defaults_to_its_last_3x3_block() -> None:
    model = build_model("resnet50", seed=0)
    cam = GradCAM(model)
    assert cam.layer_names == ("conv5_block3_out",)
    maps = cam.heatmaps(_patches(2, seed=7))
    assert maps.shape == (2, 3, 3)
    fine = GradCAM(model, "conv4_block6_out", method="layercam").heatmaps(_patches(2, seed=7))
    assert fine.shape == (2, 6, 6)


def test_a_nested_backbone_works_without_graph_disconnected() -> None:
    """A keras.applications model used as one layer, the classic transfer-learning pattern."""
    keras.utils.set_random_seed(0)
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(96, 96, 3))
    inputs = keras.Input((96, 96, 3))
    x = backbone(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    cam = GradCAM(model)
    assert cam.layer_names == ("conv5_block3_out",)
    images = _patches(3, seed=8).astype("float32")
    features = backbone.predict(images, verbose=0)
    expected = _normalised(np.maximum(features @ np.asarray(model.layers[-1].kernel)[:, 0], 0))
    np.testing.assert_allclose(cam.heatmaps(images), expected, atol=1e-4)
    assert GradCAM(model, "conv4_block6_out").heatmaps(images).shape == (3, 6, 6)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"layer": "block9_conv"}, "layer: expected the name of one of the model's .* 'block"),
        ({"layer": "pcam_pool"}, "layer: expected a spatial layer .*128.*, found 'pcam_pool'"),
        ({"method": "scorecam"}, "method: expected one of gradcam, gradcam\\+\\+, layercam"),
    ],
)
def test_bad_construction_is_one_clear_line(
    small: Any, kwargs: dict[str, Any], pattern: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern) as caught:
        GradCAM(small, **kwargs)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("units", "activation", "pattern"),
    [
        (2, "softmax", "model: expected a classifier ending in a Dense layer with a sigmoid"),
        (2, "sigmoid", "model: expected a one-unit .binary. head, found '2 units'"),
    ],
)
def test_a_model_without_a_binary_dense_head_is_refused(
    units: int, activation: str, pattern: str
) -> None:
    inputs = keras.Input((96, 96, 3), dtype="uint8")
    x = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    head = keras.layers.Dense(units, activation=activation)
    outputs = head(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(InvalidArgumentError, match=pattern):
        GradCAM(keras.Model(inputs, outputs))


@pytest.mark.parametrize(
    ("images", "class_index", "pattern"),
    [
        (np.zeros((2, 64, 64, 3), np.uint8), 1, "images: expected patches of shape"),
        (np.zeros((2, 96, 96, 3), np.float32), 1, "images: expected uint8 patches"),
        (np.zeros((2, 96, 96, 3), np.uint8), 2, "class_index: expected 0 .normal. or 1"),
    ],
)
def test_bad_images_are_one_clear_line(
    small_cam: GradCAM, images: Any, class_index: int, pattern: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern):
        small_cam.heatmaps(images, class_index)


def test_a_single_patch_is_a_batch_of_one(small_cam: GradCAM) -> None:
    image = _patches(1, seed=9)[0]
    np.testing.assert_array_equal(small_cam.heatmaps(image), small_cam.heatmaps(image[None]))
