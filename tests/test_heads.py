"""Every head form pcam reads, through every command that reads a model's outputs.

The expected probabilities are written out here per form from the Keras model's raw outputs,
independently of :mod:`pcam.model.heads`.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

keras = pytest.importorskip("keras")
from PIL import Image  # noqa: E402

from pcam.cli import main  # noqa: E402
from pcam.errors import InvalidArgumentError  # noqa: E402
from pcam.model.heads import SUPPORTED_HEADS, Head, head_of, unsupported_head  # noqa: E402
from pcam.testing import write_split  # noqa: E402
from pcam.testing.models import HEAD_FORMS, tiny_model  # noqa: E402


def expected_tumour_probability(head: str, outputs: Any) -> npt.NDArray[np.float64]:
    """Class 1's probability from a head form's raw outputs, written out per form."""
    values = np.asarray(outputs, np.float64)
    if head in ("dense_sigmoid", "activation_sigmoid", "mixed_activation_sigmoid"):
        return values[:, 0]
    if head == "logit":
        return 1.0 / (1.0 + np.exp(-values[:, 0]))
    if head in ("softmax", "softmax_layer"):
        return values[:, 1]
    exps = np.exp(values - values.max(axis=1, keepdims=True))  # two logits
    result: npt.NDArray[np.float64] = exps[:, 1] / exps.sum(axis=1)
    return result


class _Dense:
    def __init__(self, units: int) -> None:
        self.units = units


@pytest.mark.parametrize(
    ("activation", "units", "outputs", "expected"),
    [
        ("sigmoid", 1, [[0.2], [0.9]], [0.2, 0.9]),
        ("softmax", 2, [[0.7, 0.3], [0.1, 0.9]], [0.3, 0.9]),  # column 1, not 0
        ("linear", 1, [[0.0], [2.0], [-800.0], [800.0]], [0.5, 0.8807970779778823, 0.0, 1.0]),
        ("linear", 2, [[1.0, 3.0], [2.0, -1.0]], [0.8807970779778823, 0.04742587317756678]),
    ],
)
def test_tumour_probabilities_read_each_head_form(
    activation: Any, units: int, outputs: list[list[float]], expected: list[float]
) -> None:
    with np.errstate(over="raise", invalid="raise"):  # no overflow on large logits
        got = Head(_Dense(units), activation, separate=False).tumour_probabilities(outputs)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-300)
    assert got.dtype == np.float64


@pytest.mark.parametrize(
    ("units", "outputs", "expected"),
    [
        (1, [[12.0], [-12.0]], [0.9999938558253978, 6.144174602214718e-06]),
        (2, [[0.0, 12.0], [3.0, -9.0]], [0.9999938558253978, 6.144174602214718e-06]),
    ],
)
def test_float16_logits_are_read_in_float64(
    units: int, outputs: list[list[float]], expected: list[float]
) -> None:
    """A mixed-precision model outputs float16 logits: a logit of 12 is 0.99999386, not 1.0.

    (Computed in float16 the sigmoid is 1.0: float16 has nothing between 1 - 2**-11 and 1.)
    """
    head = Head(_Dense(units), "linear", separate=False)
    got = head.tumour_probabilities(np.asarray(outputs, np.float16))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[0] < 1.0


def test_float32_probabilities_keep_their_float32_values() -> None:
    """A sigmoid or softmax head's float32 output is widened exactly, column 1 for softmax."""
    outputs = np.asarray([[0.2], [0.7]], np.float32)
    got = Head(_Dense(1), "sigmoid", separate=True).tumour_probabilities(outputs)
    assert got.dtype == np.float64
    assert got.tolist() == [float(np.float32(0.2)), float(np.float32(0.7))]
    both = np.asarray([[0.9, 0.1], [0.4, 0.6]], np.float32)
    got = Head(_Dense(2), "softmax", separate=False).tumour_probabilities(both)
    assert got.dtype == np.float64
    assert got.tolist() == [float(np.float32(0.1)), float(np.float32(0.6))]


class _Weights:
    """A dense layer's kernel and bias, as a head reads them."""

    def __init__(self, kernel: Any, bias: Any, use_bias: bool = True) -> None:
        self.kernel = np.asarray(kernel, np.float32)
        self.bias = np.asarray(bias, np.float32)
        self.use_bias = use_bias
        self.units = self.kernel.shape[1]


@pytest.mark.parametrize(
    ("dense", "expected"),
    [
        # one unit: x @ [2, -1] + 0.5
        (_Weights([[2.0], [-1.0]], [0.5]), [2.0 * 1 - 1.0 * 3 + 0.5, 2.0 * -2 - 1.0 * 0.5 + 0.5]),
        # no bias: the bias is ignored even when the layer holds one
        (_Weights([[2.0], [-1.0]], [0.5], use_bias=False), [-1.0, -4.5]),
        # two units: tumour's logit (column 1) minus normal's (column 0)
        (
            _Weights([[1.0, 3.0], [0.0, -2.0]], [0.25, -0.75]),
            [(3 - 6 - 0.75) - (1 + 0.25), (-6 - 1 - 0.75) - (-2 + 0.25)],
        ),
    ],
)
def test_log_odds_are_the_dense_layers_logits_in_float64(dense: Any, expected: Any) -> None:
    features = np.asarray([[1.0, 3.0], [-2.0, 0.5]], np.float16)  # a mixed-precision layer's
    for activation in ("sigmoid", "softmax", "linear"):
        got = Head(dense, activation, separate=False).log_odds_from_features(features)
        assert got.dtype == np.float64
        assert got.tolist() == expected


def test_log_odds_stay_exact_where_a_float32_sigmoid_saturates() -> None:
    dense = _Weights([[30.0]], [0.0])
    got = Head(dense, "sigmoid", separate=False).log_odds_from_features([[1.0], [-1.0]])
    assert got.tolist() == [30.0, -30.0]


@pytest.mark.parametrize(
    ("head", "described", "separate"),
    [
        ("dense_sigmoid", "Dense(1, sigmoid)", False),
        ("activation_sigmoid", "Dense(1) + Activation('sigmoid')", True),
        ("mixed_activation_sigmoid", "Dense(1) + Activation('sigmoid')", True),
        ("logit", "Dense(1) logits", False),
        ("softmax", "Dense(2, softmax)", False),
        ("softmax_layer", "Dense(2) + Activation('softmax')", True),
        ("two_logits", "Dense(2) logits", False),
    ],
)
def test_head_of_finds_the_dense_layer_of_each_form(
    head: Any, described: str, separate: bool
) -> None:
    model = tiny_model(seed=0, head=head)
    found = head_of(model)
    assert found.dense is model.get_layer("tumour")
    assert found.describe() == described
    assert found.separate is separate


def _dense_then(after: Any, units: int = 2) -> Any:
    """A small functional model: features, ``Dense(units)`` named ``tumour``, then ``after``."""
    inputs = keras.Input((4,))
    return keras.Model(inputs, after(keras.layers.Dense(units, name="tumour")(inputs)))


@pytest.mark.parametrize("axis", [-1, (-1,), [-1], 1, (1,), [1]])
def test_a_softmax_layer_over_the_class_axis_is_a_head_however_the_axis_is_spelt(
    axis: Any,
) -> None:
    """On ``[B, 2]`` logits, axis 1 is the last axis, as an int, a tuple or a list."""
    model = _dense_then(keras.layers.Softmax(axis=axis, name="probabilities"))
    found = head_of(model)
    assert found.dense is model.get_layer("tumour")
    assert (found.activation, found.separate) == ("softmax", True)
    assert unsupported_head(model) is None


@pytest.mark.parametrize("axis", [0, -2, (0,), [0]])
def test_a_softmax_layer_over_the_batch_is_not_a_head(axis: Any) -> None:
    """A softmax across the patches of a batch is no class probability: refused, by name."""
    model = _dense_then(keras.layers.Softmax(axis=axis, name="probabilities"))
    assert unsupported_head(model) == "a last layer 'probabilities' of type Softmax"


def test_a_two_layer_sequential_model_is_a_head() -> None:
    """The smallest model with a separate activation: ``Dense(1)`` and its sigmoid, alone."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(1, name="tumour"),
            keras.layers.Activation("sigmoid"),
        ]
    )
    assert len(model.layers) == 2
    found = head_of(model)
    assert found.dense is model.get_layer("tumour")
    assert found.describe() == "Dense(1) + Activation('sigmoid')"


@pytest.mark.parametrize(
    ("model", "found"),
    [
        (object(), "a model without layers"),
        (keras.Sequential(name="empty"), "a model without layers"),
    ],
    ids=["not-a-model", "empty"],
)
def test_something_without_layers_is_refused_in_one_line(model: Any, found: str) -> None:
    assert unsupported_head(model) == found
    with pytest.raises(InvalidArgumentError) as caught:
        head_of(model)
    assert str(caught.value) == f"model: expected {SUPPORTED_HEADS}, found {found!r}"


def test_an_activation_after_a_pooling_layer_is_refused() -> None:
    """A fully convolutional classifier (Conv2D(1), pooling, sigmoid) has no Dense logits."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(1, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Activation("sigmoid", name="probability")(x))
    assert unsupported_head(model) == (
        "a last layer 'probability' (sigmoid) that does not follow a Dense layer"
    )


class _Subclassed(keras.Model):  # type: ignore[misc,name-defined]
    """``Dense(1)`` then a sigmoid in ``call``: the layers have no graph to read the wiring from."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.tumour = keras.layers.Dense(1, name="tumour")
        self.probability = keras.layers.Activation("sigmoid", name="probability")

    def call(self, images: Any) -> Any:
        return self.probability(self.tumour(self.pool(images)))


def test_a_subclassed_model_whose_wiring_cannot_be_read_is_refused() -> None:
    """Its last two layers look like a head, but nothing says the Dense feeds the sigmoid."""
    model = _Subclassed()
    model(np.zeros((1, 8, 8, 3), np.float32))
    assert [layer.name for layer in model.layers][-2:] == ["tumour", "probability"]
    assert unsupported_head(model) == (
        "a last layer 'probability' (sigmoid) that does not follow a Dense layer"
    )


def test_an_activation_without_a_name_is_refused_as_unknown() -> None:
    """A ``functools.partial`` has no ``__name__``: the activation is 'unknown', not a crash."""
    leaky = functools.partial(keras.activations.leaky_relu, negative_slope=0.1)
    model = _dense_then(keras.layers.Activation(leaky, name="leaky"), units=1)
    assert unsupported_head(model) == "a Dense layer 'tumour' with activation 'unknown'"


def test_an_unsupported_head_is_one_line_naming_the_supported_ones() -> None:
    model = tiny_model(seed=0)
    outputs = keras.layers.Dense(1, activation="tanh", name="odd")(model.layers[-2].output)
    with pytest.raises(InvalidArgumentError) as caught:
        head_of(keras.Model(model.inputs, outputs))
    assert str(caught.value) == (
        f"model: expected {SUPPORTED_HEADS}, found \"a Dense layer 'odd' with activation 'tanh'\""
    )


# -- the commands ----------------------------------------------------------------------------------


def _spread(model: Any, images: npt.NDArray[np.uint8]) -> Any:
    """Set the head so the tumour logits of ``images`` run from -3 to 3 (a swap would show).

    With two units the normal logit is 0 and the tumour logit takes that range.
    """
    dense = model.get_layer("tumour")
    features = keras.Model(model.inputs[0], dense.input).predict(images, verbose=0)
    direction = np.random.default_rng(0).normal(size=features.shape[1])
    scores = features @ direction
    scale = 6.0 / np.ptp(scores)
    kernel = np.zeros((features.shape[1], dense.units), np.float32)
    kernel[:, -1] = direction * scale
    bias = np.zeros(dense.units, np.float32)
    bias[-1] = -3.0 - scores.min() * scale
    dense.set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def patch_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, npt.NDArray[np.uint8]]:
    """Four PNG patches, of different brightness."""
    folder = tmp_path_factory.mktemp("head-patches")
    rng = np.random.default_rng(5)
    images = np.stack(
        [np.clip(rng.normal(60 * k + 40, 30, (96, 96, 3)), 0, 255) for k in range(4)]
    ).astype(np.uint8)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"p{index}.png")
    return folder, images


@pytest.fixture(scope="module")
def saved_models(
    tmp_path_factory: pytest.TempPathFactory, patch_folder: tuple[Path, npt.NDArray[np.uint8]]
) -> dict[str, Path]:
    """One saved tiny model per head form, spread on the patches, without an optimizer."""
    root = tmp_path_factory.mktemp("heads")
    paths: dict[str, Path] = {}
    for head in HEAD_FORMS:
        model = _spread(tiny_model(seed=1, head=head), patch_folder[1])
        paths[head] = root / f"{head}.keras"
        keras.Model(model.inputs, model.outputs).save(paths[head])
    return paths


def _expected(path: Path, head: str, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    raw = keras.models.load_model(path).predict(images, verbose=0)
    return expected_tumour_probability(head, raw)


@pytest.mark.parametrize("head", HEAD_FORMS)
def test_predict_writes_the_tumour_probability_of_every_head(
    saved_models: dict[str, Path],
    patch_folder: tuple[Path, npt.NDArray[np.uint8]],
    tmp_path: Path,
    head: str,
) -> None:
    folder, images = patch_folder
    out = tmp_path / "predictions.csv"
    assert (
        main(["predict", "--model", str(saved_models[head]), str(folder), "--out", str(out)]) == 0
    )
    with out.open(newline="") as stream:
        rows = sorted(csv.DictReader(stream), key=lambda row: row["source"])
    got = np.array([float(row["probability"]) for row in rows])
    expected = _expected(saved_models[head], head, images)
    # spread: a wrong column or a raw logit would show
    assert expected.min() < 0.1
    assert expected.max() > 0.9
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert [row["label"] for row in rows] == ["tumour" if p >= 0.5 else "normal" for p in expected]


@pytest.mark.parametrize(
    "head",  # one head in the fast tier, which then runs pcam explain end to end
    [HEAD_FORMS[0], *(pytest.param(head, marks=pytest.mark.slow) for head in HEAD_FORMS[1:])],
)
def test_explain_and_the_app_read_every_head(
    saved_models: dict[str, Path],
    patch_folder: tuple[Path, npt.NDArray[np.uint8]],
    tmp_path: Path,
    head: str,
) -> None:
    from pcam.serve.app import logic

    folder, images = patch_folder
    expected = _expected(saved_models[head], head, images)
    out = tmp_path / "explained"
    argv = ["explain", "--model", str(saved_models[head]), str(folder), "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "explain.json").read_text())
    got = [patch["probability"] for patch in sorted(report["patches"], key=lambda p: p["name"])]
    np.testing.assert_allclose(got, expected, atol=2e-3 if "mixed" in head else 1e-5)

    classifier = logic.load_classifier(saved_models[head])
    shown = logic.predict(classifier, images).probabilities
    np.testing.assert_allclose(shown, expected, atol=2e-6)
    maps = logic.gradcam_maps(
        logic.make_explainer(classifier, classifier.default_layer or ""), classifier, images
    )
    assert maps.tumour.shape[0] == len(images)


@pytest.mark.parametrize("head", ["logit", "softmax", "two_logits"])
def test_evaluate_scores_the_tumour_probability_of_every_head(
    saved_models: dict[str, Path], tmp_path: Path, head: str
) -> None:
    from pcam.data import open_split
    from pcam.evaluation.evaluate import predict_split
    from pcam.model.architectures import load_model

    write_split(tmp_path, "test", 12, seed=4)
    labels, probabilities = predict_split(load_model(saved_models[head]), tmp_path, "test")
    split = open_split(tmp_path, "test")
    images = split.read_images(slice(None))
    assert labels.tolist() == split.labels.tolist()
    split.close()
    np.testing.assert_allclose(
        probabilities, _expected(saved_models[head], head, images), atol=2e-6
    )


def test_a_saved_model_with_another_head_is_refused_in_one_line(
    patch_folder: tuple[Path, npt.NDArray[np.uint8]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = tiny_model(seed=0)
    odd = keras.layers.Dense(1, activation="relu", name="odd")(model.layers[-2].output)
    path = tmp_path / "odd.keras"
    keras.Model(model.inputs, odd).save(path)
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--model", str(path), str(patch_folder[0]), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"expected {SUPPORTED_HEADS}, found a Dense layer 'odd' with activation 'relu'" in err
    assert not out.exists()
