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
from pcam.explain.gradcam import METHODS, GradCAM, spatial_layers, upsample  # noqa: E402
from pcam.model.architectures import build_model  # noqa: E402
from tests.test_heads import expected_tumour_probability  # noqa: E402


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
        ({"layer": "pcam_pool"}, "layer: expected a spatial layer .*256.*, found 'pcam_pool'"),
        ({"method": "scorecam"}, "method: expected one of gradcam, gradcam\\+\\+, layercam"),
    ],
)
def test_bad_construction_is_one_clear_line(
    small: Any, kwargs: dict[str, Any], pattern: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern) as caught:
        GradCAM(small, **kwargs)
    assert "\n" not in str(caught.value)


def _refused_head(units: int, activation: str | None, after: Any) -> Any:
    """A small model whose last layers are ``Dense(units, activation)`` and ``after``, if any."""
    inputs = keras.Input((96, 96, 3), dtype="uint8")
    x = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dense(units, activation=activation)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, after(x) if after is not None else x)


@pytest.mark.parametrize(
    ("units", "activation", "after", "found"),
    [
        (2, "sigmoid", None, "a sigmoid Dense layer .* with 2 units"),
        (1, "softmax", None, "a softmax Dense layer .* with 1 units"),
        (3, None, None, "a linear Dense layer .* with 3 units"),
        (1, "relu", None, "a Dense layer .* with activation 'relu'"),
        (1, "sigmoid", keras.layers.Activation("sigmoid"), "with activation 'sigmoid' followed"),
        (1, None, keras.layers.Activation("relu"), "with activation 'relu'"),
        (2, None, keras.layers.Activation("sigmoid"), "a sigmoid Dense layer .* with 2 units"),
        (1, None, keras.layers.Dropout(0.5), "a last layer .* of type Dropout"),
    ],
)
def test_a_model_without_a_supported_binary_head_is_refused_in_one_line(
    units: int, activation: str | None, after: Any, found: str
) -> None:
    from pcam.model.heads import SUPPORTED_HEADS

    with pytest.raises(InvalidArgumentError, match=found) as caught:
        GradCAM(_refused_head(units, activation, after))
    message = str(caught.value)
    assert message.startswith(f"model: expected {SUPPORTED_HEADS}, found ")
    assert "\n" not in message


def test_the_docstring_names_exactly_the_supported_heads() -> None:
    """The module docstring lists the heads :mod:`pcam.model.heads` accepts, and no other form."""
    import pcam.explain.gradcam

    doc = " ".join((pcam.explain.gradcam.__doc__ or "").split())
    for form in (
        "``Dense(1, sigmoid)``",
        '``Dense(1)`` + ``Activation("sigmoid")``',
        "``Dense(1)`` logits",
        "``Dense(2, softmax)``",
        '``Dense(2)`` + ``Activation("softmax")`` or ``Softmax()``',
        "``Dense(2)`` logits",
    ):
        assert form in doc, form
    assert "Any other last layer is refused" in doc


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


def _score_vector(model: Any, class_index: int) -> npt.NDArray[np.float64]:
    """d(class score) / d(pooled features) ``[C]``: the head's column for the class.

    One logit ``z`` scores tumour as ``z`` and normal as ``-z``; two logits score class ``c``
    as ``z_c``.
    """
    kernel = np.asarray(model.get_layer("head").kernel, np.float64)  # [C, units]
    if kernel.shape[1] == 1:
        return (1.0 if class_index == 1 else -1.0) * kernel[:, 0]
    return kernel[:, class_index]


def _oracle(model: Any, images: npt.NDArray[np.float32], method: str, class_index: int) -> Any:
    """The map of ``method`` in float64 NumPy, from the weights and the analytic gradient."""
    kernel = np.asarray(model.get_layer("features").kernel, np.float64)[0, 0]  # [3, C]
    head = _score_vector(model, class_index)  # [C]
    features = images.astype(np.float64) @ kernel  # [B, H, W, C]
    height, width = features.shape[1:3]
    gradients = head / (height * width) * (features > 0)  # d(class score) / dA
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
    expected = _oracle(model, images, method, class_index)
    assert maps.shape == (4, *ORACLE_SHAPE[:2])
    assert maps.dtype == probabilities.dtype == np.float32
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    assert np.all(maps.max(axis=(1, 2)) == pytest.approx(1.0))  # real maps, not all zero
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0)[:, 0], rtol=1e-5)
    if bias == 40.0:
        assert np.all(probabilities == 1.0)  # saturated in float32
    if bias == -40.0:
        assert np.all(probabilities < 1e-17)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_a_class_index_taken_from_a_label_array_is_a_class_index(
    oracle_cams: dict[tuple[float, str], tuple[Any, GradCAM]], dtype: Any
) -> None:
    """A label taken from PCam's uint8 label array (or an int64 one) selects its class.

    The same class as the Python int, through the same compiled function.
    """
    model, cam = oracle_cams[(0.0, "gradcam")]
    images = _oracle_images(3, seed=6)
    for label in np.array([1, 0], dtype):
        maps, probabilities = cam.explain(images, label)
        np.testing.assert_allclose(maps, _oracle(model, images, "gradcam", int(label)), atol=1e-5)
        np.testing.assert_array_equal(maps, cam.heatmaps(images, int(label)))
        np.testing.assert_allclose(probabilities, model.predict(images, verbose=0)[:, 0], rtol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
@pytest.mark.parametrize("scale", [1e-12, 1e-30, 1e6])
def test_a_map_is_normalised_by_its_own_peak_however_small(
    oracle_cams: dict[tuple[float, str], tuple[Any, GradCAM]], method: str, scale: float
) -> None:
    """Scaling the features by ``s > 0`` scales these maps by ``s``: normalised, they agree.

    (Grad-CAM++'s weights depend on the features' sum, so it is left out.)
    """
    _, cam = oracle_cams[(0.0, method)]
    images = _oracle_images(3, seed=5)
    scaled = cam.heatmaps((images * scale).astype(np.float32))
    np.testing.assert_allclose(scaled, cam.heatmaps(images), atol=1e-5)
    assert np.all(scaled.max(axis=(1, 2)) == pytest.approx(1.0))


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
    np.testing.assert_allclose(together, _oracle(model, batch, method, 1), atol=1e-5)
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


# -- every supported head against the same oracle ----------------------------------------------

ONE_UNIT = ("dense_sigmoid", "activation_sigmoid", "mixed_activation_sigmoid", "logit")
TWO_UNITS = ("softmax", "softmax_layer", "two_logits")


def _head_layers(head: str, x: Any, units_bias: float) -> tuple[Any, Any]:
    """``(dense layer, model output)`` of ``head`` on ``x``; ``units_bias`` saturates it.

    One unit gets the bias ``units_bias``; two units get ``-units_bias / 2`` and
    ``units_bias / 2``, so the tumour logit leads by ``units_bias`` in both forms.
    """
    mixed = head.startswith("mixed_")
    units = 2 if head in TWO_UNITS else 1
    activation = {"dense_sigmoid": "sigmoid", "softmax": "softmax"}.get(head)
    dense = keras.layers.Dense(
        units, activation=activation, name="head", dtype="mixed_float16" if mixed else "float32"
    )
    z = dense(x)
    if head.endswith("activation_sigmoid"):
        output = keras.layers.Activation("sigmoid", dtype="float32")(z)
    elif head == "softmax_layer":
        output = keras.layers.Softmax()(z)
    else:
        output = z
    return dense, output


def _set_head(dense: Any, channels: int, units_bias: float, seed: int) -> None:
    kernel = np.random.default_rng(seed).normal(size=(channels, dense.units)).astype(np.float32)
    bias = [units_bias] if dense.units == 1 else [-units_bias / 2, units_bias / 2]
    dense.set_weights([kernel, np.asarray(bias, np.float32)])


def _oracle_head_model(head: str, units_bias: float, seed: int = 0) -> Any:
    """The oracle's features (linear 1x1 conv, ReLU, global average pooling) and ``head``."""
    keras.utils.set_random_seed(seed)
    dtype = "mixed_float16" if head.startswith("mixed_") else "float32"
    inputs = keras.Input(ORACLE_SHAPE, dtype="float32")
    x = keras.layers.Conv2D(ORACLE_CHANNELS, 1, use_bias=False, name="features", dtype=dtype)(
        inputs
    )
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype)(keras.layers.ReLU(dtype=dtype)(x))
    x = keras.layers.Dropout(0.5, dtype=dtype)(x)  # inference: the identity
    dense, output = _head_layers(head, x, units_bias)
    model = keras.Model(inputs, output)
    _set_head(dense, ORACLE_CHANNELS, units_bias, seed)
    return model


@pytest.fixture(scope="module")
def head_cams() -> dict[tuple[str, float], tuple[Any, dict[str, GradCAM]]]:
    """``(head, bias) -> (model, {method: GradCAM})`` for every head, moderate and saturated."""
    cams: dict[tuple[str, float], tuple[Any, dict[str, GradCAM]]] = {}
    for head in (*ONE_UNIT, *TWO_UNITS):
        for bias in (0.0, 40.0, -40.0):
            model = _oracle_head_model(head, bias)
            cams[(head, bias)] = (
                model,
                {m: GradCAM(model, "features", method=m) for m in METHODS},
            )
    return cams


@pytest.mark.parametrize("head", [*ONE_UNIT, *TWO_UNITS])
@pytest.mark.parametrize("bias", [0.0, 40.0, -40.0])
@pytest.mark.parametrize("class_index", [1, 0])
@pytest.mark.parametrize("method", METHODS)
def test_every_head_form_equals_the_oracle_for_both_classes_even_when_saturated(
    head_cams: dict[tuple[str, float], tuple[Any, dict[str, GradCAM]]],
    head: str,
    bias: float,
    class_index: int,
    method: str,
) -> None:
    """One logit scores tumour as ``z`` and normal as ``-z``; two logits score ``c`` as ``z_c``.

    The probability returned is the tumour probability however the head outputs it: the
    output itself, the sigmoid of a logit, or column 1 of a softmax.
    """
    model, cams = head_cams[(head, bias)]
    images = _oracle_images(4, seed=11)
    maps, probabilities = cams[method].explain(images, class_index)
    mixed = head.startswith("mixed_")
    expected = _oracle(model, images, method, class_index)
    np.testing.assert_allclose(maps, expected, atol=2e-2 if mixed else 1e-5)
    assert np.all(maps.max(axis=(1, 2)) == pytest.approx(1.0))  # real maps, not all zero
    wanted = expected_tumour_probability(head, model.predict(images, verbose=0))
    if mixed:
        np.testing.assert_allclose(probabilities, wanted, atol=2e-3)
    else:
        np.testing.assert_allclose(probabilities, wanted, rtol=1e-5, atol=1e-30)
    if bias == 40.0:
        assert np.all(probabilities == 1.0)  # saturated in float32
    if bias == -40.0:
        assert np.all(probabilities < 1e-16)


def test_two_logits_do_not_score_the_classes_as_opposites(
    head_cams: dict[tuple[str, float], tuple[Any, dict[str, GradCAM]]],
) -> None:
    """With two logits, normal's map is ``z_0``'s, not ``-z_1``'s (a different head column)."""
    model, cams = head_cams[("two_logits", 0.0)]
    images = _oracle_images(4, seed=12)
    normal = cams["gradcam"].heatmaps(images, 0)
    kernel = np.asarray(model.get_layer("head").kernel, np.float64)
    as_opposite = _oracle(_ScoreOf(model, -kernel[:, 1:2]), images, "gradcam", 1)
    assert not np.allclose(normal, as_opposite, atol=0.05)


class _ScoreOf:
    """A stand-in model for :func:`_oracle` whose head kernel is replaced by ``kernel``."""

    def __init__(self, model: Any, kernel: npt.NDArray[np.float64]) -> None:
        self.model, self.kernel = model, kernel

    def get_layer(self, name: str) -> Any:
        if name == "head":
            return type("Head", (), {"kernel": self.kernel})()
        return self.model.get_layer(name)


@pytest.fixture(scope="module")
def mobilenet() -> Any:
    """A small ``keras.applications`` backbone (random weights), to be nested as one layer."""
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNet(
        include_top=False, weights=None, input_shape=(96, 96, 3), alpha=0.25
    )


@pytest.mark.parametrize("head", [*ONE_UNIT, *TWO_UNITS])
@pytest.mark.slow
def test_every_head_form_after_a_nested_keras_applications_backbone(
    mobilenet: Any, head: str
) -> None:
    """Grad-CAM of a GAP head is CAM: the head column for the class on the backbone's output."""
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.GlobalAveragePooling2D()(mobilenet(inputs))
    dense, output = _head_layers(head, keras.layers.Dropout(0.3)(x), 40.0)
    model = keras.Model(inputs, output)
    channels = int(mobilenet.output.shape[-1])
    _set_head(dense, channels, 40.0, seed=3)
    cam = GradCAM(model)
    assert cam.layer_names == (mobilenet.layers[-1].name,)
    images = _patches(3, seed=13).astype("float32")
    features = mobilenet.predict(images, verbose=0).astype(np.float64)
    outputs = model.predict(images, verbose=0)
    for class_index in (1, 0):
        maps, probabilities = cam.explain(images, class_index)
        expected = _normalised(np.maximum(features @ _score_vector(model, class_index), 0.0))
        np.testing.assert_allclose(maps, expected, atol=2e-2 if "mixed" in head else 1e-4)
        np.testing.assert_allclose(
            probabilities, expected_tumour_probability(head, outputs), atol=2e-3
        )


def test_a_calibrated_model_reports_sigmoid_of_the_logit_over_t_and_the_same_maps() -> None:
    """T = 4 divides the logit (a product would sharpen instead); the maps stay the raw logit's."""
    from pathlib import Path

    from pcam.model.temperature import UNCALIBRATED, Calibration, attach

    model = build_model("small", seed=3)
    images = _patches(4, seed=5)
    attach(model, UNCALIBRATED)
    raw_maps, raw = GradCAM(model).explain(images)
    logits = np.log(raw.astype(np.float64)) - np.log1p(-raw.astype(np.float64))
    attach(model, Calibration(4.0, Path("model.calibration.json")))
    try:
        maps, calibrated = GradCAM(model).explain(images)
    finally:
        attach(model, UNCALIBRATED)
    np.testing.assert_array_equal(maps, raw_maps)
    np.testing.assert_allclose(calibrated, 1.0 / (1.0 + np.exp(-logits / 4.0)), atol=1e-5)
    assert np.all(np.abs(calibrated - 0.5) <= np.abs(raw - 0.5) + 1e-7)  # softer, never sharper
