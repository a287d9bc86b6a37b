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


@pytest.mark.slow  # builds ResNet50: over 10 s
def test_resnet50_defaults_to_its_last_3x3_block() -> None:
    model = build_model("resnet50", seed=0)
    cam = GradCAM(model)
    assert cam.layer_names == ("conv5_block3_out",)
    maps = cam.heatmaps(_patches(2, seed=7))
    assert maps.shape == (2, 3, 3)
    fine = GradCAM(model, "conv4_block6_out", method="layercam").heatmaps(_patches(2, seed=7))
    assert fine.shape == (2, 6, 6)


@pytest.mark.slow  # builds ResNet50: over 20 s
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


# -- exact oracles on a tiny model, saturated logits, batch independence ---------------------------

ORACLE_SHAPE = (5, 7, 3)  # not square: height and width cannot be swapped unseen
ORACLE_CHANNELS = 6


def _relu_head_model(bias: float, seed: int = 0) -> Any:
    """``features`` (a linear 1x1 conv), ReLU, global average pooling, ``Dense(1, sigmoid)``.

    The gradient of the logit with respect to a feature is ``w_k / (H W)`` where the feature is
    positive and 0 elsewhere, so it depends on the image; ``bias`` moves the logit (to saturate
    the sigmoid) without changing any gradient.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(ORACLE_SHAPE, dtype="float32")
    features = keras.layers.Conv2D(ORACLE_CHANNELS, 1, use_bias=False, name="features")(inputs)
    x = keras.layers.ReLU()(features)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="head")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.random.default_rng(seed).normal(size=(ORACLE_CHANNELS, 1)).astype(np.float32)
    model.get_layer("head").set_weights([kernel, np.array([bias], np.float32)])
    return model


def _oracle(model: Any, images: npt.NDArray[np.float32], method: str, sign: float) -> Any:
    """The map of ``method`` in float64 NumPy, from the weights and the analytic gradient."""
    kernel = np.asarray(model.get_layer("features").kernel, np.float64)[0, 0]  # [3, C]
    head = np.asarray(model.get_layer("head").kernel, np.float64)[:, 0]  # [C]
    features = images.astype(np.float64) @ kernel  # [B, H, W, C]
    height, width = features.shape[1:3]
    gradients = sign * head / (height * width) * (features > 0)  # d(sign * logit) / dA
    if method == "gradcam":
        weights = gradients.mean(axis=(1, 2))  # [B, C]
        raw = np.einsum("bhwc,bc->bhw", features, weights)
    elif method == "layercam":
        raw = (np.maximum(gradients, 0) * features).sum(axis=-1)
    else:  # gradcam++ (Chattopadhyay et al. 2018, eq. 19, with exp(score))
        total = features.sum(axis=(1, 2), keepdims=True)
        denominator = 2 * gradients**2 + total * gradients**3
        safe = np.where(denominator != 0, denominator, 1.0)
        alpha = np.where(denominator != 0, gradients**2 / safe, 0.0)
        weights = (alpha * np.maximum(gradients, 0)).sum(axis=(1, 2))
        raw = np.einsum("bhwc,bc->bhw", features, weights)
    return _normalised(np.maximum(raw, 0.0))


def _oracle_images(count: int, seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).normal(size=(count, *ORACLE_SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def oracle_cams() -> dict[tuple[float, str], tuple[Any, GradCAM]]:
    """``(bias, method) -> (model, GradCAM)`` for a moderate and two saturated logits."""
    cams: dict[tuple[float, str], tuple[Any, GradCAM]] = {}
    for bias in (0.0, 40.0, -40.0):
        model = _relu_head_model(bias)
        for method in METHODS:
            cams[(bias, method)] = (model, GradCAM(model, "features", method=method))
    return cams


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bias", [0.0, 40.0, -40.0])
@pytest.mark.parametrize("class_index", [1, 0])
def test_every_method_equals_its_numpy_oracle_even_when_saturated(
    oracle_cams: dict[tuple[float, str], tuple[Any, GradCAM]],
    method: str,
    bias: float,
    class_index: int,
) -> None:
    """At a logit of +-40 the sigmoid is 1.0 or 4e-18 in float32: its gradient vanishes.

    Differentiating the probability instead of the logit would give all-zero (or unscaled)
    maps there; the normalisation hides that factor p (1 - p) only while it does not underflow.
    """
    model, cam = oracle_cams[(bias, method)]
    images = _oracle_images(4, seed=1)
    maps, probabilities = cam.explain(images, class_index)
    sign = 1.0 if class_index == 1 else -1.0
    expected = _oracle(model, images, method, sign)
    assert maps.shape == (4, *ORACLE_SHAPE[:2])
    assert maps.dtype == probabilities.dtype == np.float32
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    assert np.all(maps.max(axis=(1, 2)) == pytest.approx(1.0))  # real maps, not all zero
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0)[:, 0], rtol=1e-5)
    if bias == 40.0:
        assert np.all(probabilities == 1.0)  # saturated in float32
    if bias == -40.0:
        assert np.all(probabilities < 1e-17)


@pytest.mark.parametrize("method", METHODS)
def test_each_patch_of_a_batch_has_its_own_gradient_weights(
    oracle_cams: dict[tuple[float, str], tuple[Any, GradCAM]], method: str
) -> None:
    """Two opposite patches (features of opposite signs) and one at another scale, together.

    Their gradient weights differ (each one's positive features), so averaging gradients over
    the batch, or normalising by the batch's maximum, changes every map.
    """
    model, cam = oracle_cams[(40.0, method)]
    image = _oracle_images(1, seed=2)[0]
    batch = np.stack([image, -image, 5.0 * _oracle_images(1, seed=3)[0]])
    together = cam.heatmaps(batch)
    alone = np.concatenate([cam.heatmaps(patch[None]) for patch in batch])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_allclose(together, _oracle(model, batch, method, 1.0), atol=1e-5)
    assert not np.allclose(together[0], together[1], atol=0.1)  # really different maps


def test_upsampled_maps_are_bilinear_and_in_the_unit_range(
    oracle_cams: dict[tuple[float, str], tuple[Any, GradCAM]],
) -> None:
    _, cam = oracle_cams[(0.0, "gradcam")]
    images = _oracle_images(2, seed=4)
    coarse = cam.heatmaps(images)
    fine = cam.heatmaps(images, size=(10, 21))
    assert fine.shape == (2, 10, 21)
    assert fine.dtype == np.float32
    # doubling the height and tripling the width: bilinear with half-pixel centres
    expected = _bilinear(coarse, (10, 21))
    np.testing.assert_allclose(fine, expected, atol=1e-5)
    np.testing.assert_allclose(upsample(coarse, (10, 21)), expected, atol=1e-5)


def _bilinear(maps: npt.NDArray[np.float32], size: tuple[int, int]) -> Any:
    """Bilinear resampling with half-pixel centres (TensorFlow's and Pillow's), in NumPy."""

    def axis_weights(source: int, target: int) -> npt.NDArray[np.float64]:
        centres = (np.arange(target) + 0.5) * source / target - 0.5
        centres = np.clip(centres, 0, source - 1)
        low = np.floor(centres).astype(int)
        high = np.minimum(low + 1, source - 1)
        matrix = np.zeros((target, source))
        matrix[np.arange(target), low] += 1 - (centres - low)
        matrix[np.arange(target), high] += centres - low
        return matrix

    rows = axis_weights(maps.shape[1], size[0])
    cols = axis_weights(maps.shape[2], size[1])
    return np.clip(np.einsum("ij,bjk,lk->bil", rows, maps.astype(np.float64), cols), 0, 1)


def test_upsample_clips_to_the_unit_range() -> None:
    maps = np.array([[[-1.0, 0.5], [2.0, 1.0]]], dtype=np.float32)
    resized = upsample(maps, (2, 2))  # same size: bilinear changes nothing but the clip
    np.testing.assert_array_equal(resized, [[[0.0, 0.5], [1.0, 1.0]]])
    assert resized.dtype == np.float32
