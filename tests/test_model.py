"""The classifier: flat graph, preprocessing inside, weights, save/load, freezing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

keras = pytest.importorskip("keras")

from pcam.errors import InvalidArgumentError, MissingFileError, UnreadableFileError  # noqa: E402
from pcam.model.architectures import (  # noqa: E402
    CaffePreprocess,
    backbone_layers,
    build_model,
    load_model,
    set_backbone_trainable,
)


def _patches(count: int = 3, seed: int = 0) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (count, 96, 96, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def resnet() -> Any:
    return build_model("resnet50", weights=None, seed=0)


def test_caffe_layer_equals_keras_preprocess_input() -> None:
    patches = _patches()
    expected = keras.applications.resnet50.preprocess_input(patches.astype("float32"))
    got = keras.ops.convert_to_numpy(CaffePreprocess()(patches))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_resnet50_is_flat_and_gives_a_3x3_map_on_96px(resnet: Any) -> None:
    assert not any(isinstance(layer, keras.Model) for layer in resnet.layers)
    assert resnet.input.dtype == "uint8"
    assert tuple(resnet.get_layer("conv5_block3_out").output.shape) == (None, 3, 3, 2048)
    assert tuple(resnet.get_layer("conv4_block6_out").output.shape) == (None, 6, 6, 1024)
    probabilities = resnet.predict(_patches(), verbose=0)
    assert probabilities.shape == (3, 1)
    assert np.all((probabilities >= 0) & (probabilities <= 1))


@pytest.mark.slow
def test_local_weights_and_preprocessing_match_the_keras_backbone(
    tmp_path: Path, resnet: Any
) -> None:
    """A known input gives the same features as preprocess_input + Keras' own ResNet50."""
    reference = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(96, 96, 3)
    )
    weights = tmp_path / "resnet50_notop.weights.h5"
    reference.save_weights(weights)
    ours = build_model("resnet50", weights=weights)
    features = keras.Model(ours.input, ours.get_layer("conv5_block3_out").output)
    patches = _patches(2, seed=1)
    expected = reference.predict(
        keras.applications.resnet50.preprocess_input(patches.astype("float32")), verbose=0
    )
    np.testing.assert_allclose(features.predict(patches, verbose=0), expected, atol=1e-4)
    # and the weights really came from the file: a random build differs
    random_features = keras.Model(resnet.input, resnet.get_layer("conv5_block3_out").output)
    assert not np.allclose(random_features.predict(patches, verbose=0), expected, atol=1e-2)


@pytest.mark.parametrize(
    "architecture", ["small", pytest.param("resnet50", marks=pytest.mark.slow)]
)
def test_save_and_load_give_identical_predictions_on_uint8(
    tmp_path: Path, architecture: str
) -> None:
    model = build_model(architecture, seed=3)  # type: ignore[arg-type]
    patches = _patches(4, seed=2)
    before = model.predict(patches, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    np.testing.assert_array_equal(load_model(path).predict(patches, verbose=0), before)


def test_small_model_is_built_by_the_same_code() -> None:
    model = build_model("small")
    assert [layer.name for layer in model.layers][-3:] == [
        "pcam_pool",
        "pcam_dropout",
        "pcam_tumour",
    ]
    assert model.output_shape == (None, 1)
    assert model.count_params() == 390_785  # 32 to 256 filters: the recipe's width


def test_freezing_and_unfreezing_the_top_blocks(resnet: Any) -> None:
    set_backbone_trainable(resnet, False)
    head = [w.name for w in resnet.trainable_weights]
    assert len(head) == 2  # the dense kernel and bias
    set_backbone_trainable(resnet, True, from_layer="conv5_block1_1_conv")
    trainable = {layer.name for layer in backbone_layers(resnet) if layer.trainable}
    assert "conv5_block3_3_conv" in trainable
    assert "conv4_block6_3_conv" not in trainable
    assert not any(name.endswith("_bn") for name in trainable)  # BN stays frozen
    set_backbone_trainable(resnet, True)
    assert all(layer.trainable for layer in backbone_layers(resnet))


def test_frozen_build(tmp_path: Path) -> None:
    model = build_model("small", freeze_backbone=True)
    assert not any(layer.trainable for layer in backbone_layers(model))
    assert len(model.trainable_weights) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"architecture": "vgg16"}, InvalidArgumentError, "architecture: expected one of"),
        ({"architecture": "small", "weights": "imagenet"}, InvalidArgumentError, "weights"),
        ({"weights": "/nonexistent/w.h5"}, MissingFileError, "expected a backbone weights file"),
        ({"dropout": 1.0}, InvalidArgumentError, "dropout: expected a rate"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        build_model(**kwargs)  # type: ignore[arg-type]


def test_unknown_layer_for_unfreezing(resnet: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="from_layer: expected a backbone layer"):
        set_backbone_trainable(resnet, True, from_layer="conv9_block1")


def test_load_model_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="expected a saved pcam model"):
        load_model(tmp_path / "missing.keras")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(UnreadableFileError, match="a file Keras cannot load") as caught:
        load_model(corrupt)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_mixed_precision_build_computes_in_float16_and_agrees_with_float32() -> None:
    mixed = build_model("small", mixed_precision=True, seed=4)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build
    assert mixed.get_layer("block2_conv").compute_dtype == "float16"
    assert mixed.get_layer("block2_conv").variable_dtype == "float32"
    assert mixed.get_layer("pcam_tumour").compute_dtype == "float32"
    full = build_model("small", seed=4)
    full.set_weights(mixed.get_weights())
    patches = _patches(8, seed=5)
    got = mixed.predict(patches, verbose=0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, full.predict(patches, verbose=0), atol=2e-2)
    mixed.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    labels = np.arange(8) % 2
    loss = mixed.train_on_batch(patches, labels)
    assert np.isfinite(loss)
