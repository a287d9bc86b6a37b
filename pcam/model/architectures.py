"""The classifier: a ResNet50 (or a small CNN) backbone with a one-unit sigmoid head.

The model takes raw ``uint8 [B, 96, 96, 3]`` patches everywhere (training, evaluation, Grad-CAM,
the app): preprocessing is its first layer, the right one for the backbone (caffe-style for
ResNet50, as its ImageNet weights expect; ``[-1, 1]`` for the small CNN). The graph is flat, one
functional model with no nested sub-model, so every backbone layer can be looked up by name.
Layers this package adds are named ``pcam_*``; every other layer belongs to the backbone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras

from pcam.config import ARCHITECTURES, SMALL_WIDTH, Architecture
from pcam.errors import InvalidArgumentError, MissingFileError, UnreadableFileError, first_line
from pcam.layout import IMAGE_SHAPE
from pcam.model.weights import imagenet_weights_path

OWN_PREFIX = "pcam_"
"""Name prefix of the layers this package adds around a backbone."""

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
"""ImageNet channel means, in BGR order, that Keras' ResNet50 weights were trained with."""


@keras.saving.register_keras_serializable(package="pcam")
class CaffePreprocess(keras.layers.Layer):  # type: ignore[misc]
    """RGB ``[0, 255]`` to caffe-style input: BGR channel order minus the ImageNet means.

    The same arithmetic as ``keras.applications.resnet50.preprocess_input``, as a layer that
    saves and loads with the model.
    """

    def call(self, inputs: Any) -> Any:
        """Reverse the channels and subtract the means."""
        bgr = keras.ops.flip(keras.ops.cast(inputs, "float32"), axis=-1)
        return bgr - keras.ops.convert_to_tensor(CAFFE_BGR_MEAN, dtype="float32")


def build_model(
    architecture: Architecture = "resnet50",
    *,
    weights: str | os.PathLike[str] | None = None,
    freeze_backbone: bool = False,
    dropout: float = 0.2,
    mixed_precision: bool = False,
    seed: int = 0,
    colour_augment: str | None = None,
    width: int = SMALL_WIDTH,
) -> keras.Model:
    """Build the uncompiled classifier: ``uint8 [B, 96, 96, 3]`` to tumour probability ``[B, 1]``.

    ``weights`` is ``None`` (random), ``"imagenet"`` (ResNet50 only; downloaded on first use,
    see :func:`pcam.model.weights.imagenet_weights_path`) or the path of a local weights file for
    the backbone (the ResNet50 "notop" weights, or any weights saved from a backbone of the same
    architecture).
    ``freeze_backbone`` makes the backbone untrainable (the first phase of fine-tuning; see
    :func:`set_backbone_trainable` for the second). ``mixed_precision`` builds every layer with
    Keras' ``mixed_float16`` policy (float16 compute, float32 variables; the sigmoid head stays
    float32), which pays on a GPU; compiling such a model adds loss scaling by itself.
    ``colour_augment`` (one of :data:`pcam.config.COLOUR_AUGMENTS`) puts the colour augmentation
    in the model, right after its input (:class:`pcam.stain.layers.ColourAugmentation`, seeded by
    ``seed``): it runs in the train step, on the model's device, and is the identity at
    inference. ``None`` (the default) leaves colours to the loader. ``width`` is the number of
    filters of the small CNN's first block (doubled at each of the next three); ResNet50 has
    its own.
    """
    if architecture not in ARCHITECTURES:
        raise InvalidArgumentError(
            "architecture", f"one of {', '.join(ARCHITECTURES)}", architecture
        )
    if not 0.0 <= dropout < 1.0:
        raise InvalidArgumentError("dropout", "a rate in [0, 1)", dropout)
    if not isinstance(width, int) or width < 1:
        raise InvalidArgumentError("width", "an integer >= 1", width)
    weights_arg = resolve_weights(architecture, weights)
    keras.utils.set_random_seed(seed)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    try:
        model = _build(architecture, weights_arg, dropout, seed, colour_augment, width)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    set_backbone_trainable(model, not freeze_backbone)
    return model


def _build(
    architecture: Architecture,
    weights: str | None,
    dropout: float,
    seed: int,
    colour_augment: str | None,
    width: int,
) -> keras.Model:
    """The classifier's graph, built under the current Keras dtype policy."""
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name=f"{OWN_PREFIX}patch")
    patches = inputs
    if colour_augment is not None:
        from pcam.stain.layers import ColourAugmentation

        patches = ColourAugmentation(colour_augment, seed=seed, name=f"{OWN_PREFIX}colour_augment")(
            inputs
        )
    if architecture == "resnet50":
        ready = CaffePreprocess(name=f"{OWN_PREFIX}caffe_preprocess")(patches)
        backbone = keras.applications.ResNet50(
            include_top=False, weights=weights, input_tensor=ready
        )
        features = backbone.output
    else:
        ready = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=f"{OWN_PREFIX}scale")(patches)
        features = _small_backbone(ready, width)
        if weights is not None:
            keras.Model(inputs, features).load_weights(weights)
    pooled = keras.layers.GlobalAveragePooling2D(name=f"{OWN_PREFIX}pool")(features)
    dropped = keras.layers.Dropout(dropout, seed=seed, name=f"{OWN_PREFIX}dropout")(pooled)
    probability = keras.layers.Dense(
        1, activation="sigmoid", dtype="float32", name=f"{OWN_PREFIX}tumour"
    )(dropped)
    return keras.Model(inputs, probability, name=f"pcam_{architecture}")


def _small_backbone(x: Any, width: int = SMALL_WIDTH) -> Any:
    """Four conv blocks (``width`` to ``8 * width`` filters): 96 px to a 3x3 map, like ResNet50.

    The first convolution has stride 2 and a 4x4 kernel, so its "same" padding is one pixel on
    every side (a 3x3 kernel would pad the bottom and right only, and Grad-CAM maps would lean
    there); inputs are scaled to ``[-1, 1]``, so that padding is mid-grey, not black. Every
    block ends in a 2x2 max-pool. Batch-norm momentum is 0.9 (not Keras' 0.99) so its
    statistics settle within a short CPU run.
    """
    for index, filters in enumerate((width, 2 * width, 4 * width, 8 * width), start=1):
        x = keras.layers.Conv2D(
            filters,
            4 if index == 1 else 3,
            strides=2 if index == 1 else 1,
            padding="same",
            use_bias=False,
            name=f"block{index}_conv",
        )(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{index}_bn")(x)
        x = keras.layers.ReLU(name=f"block{index}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{index}_pool")(x)
    return x


def resolve_weights(architecture: str, weights: str | os.PathLike[str] | None) -> str | None:
    """The local weights file for ``weights`` (or ``None``), checked against the architecture.

    ``"imagenet"`` becomes the path of the cached ResNet50 ImageNet weights, downloaded first if
    need be (see :func:`pcam.model.weights.imagenet_weights_path`).
    """
    if weights is None:
        return None
    if str(weights) == "imagenet":
        if architecture != "resnet50":
            raise InvalidArgumentError(
                "weights", "None or a local weights file for the small model", "imagenet"
            )
        return str(imagenet_weights_path())
    path = Path(weights)
    if not path.is_file():
        raise MissingFileError(
            path,
            "a backbone weights file (.h5 or .weights.h5)",
            "pass weights=None, 'imagenet', or the path of a downloaded weights file",
        )
    return str(path)


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The backbone's layers: every layer that is not an input and not named ``pcam_*``."""
    return [
        layer
        for layer in model.layers
        if not layer.name.startswith(OWN_PREFIX) and not isinstance(layer, keras.layers.InputLayer)
    ]


def set_backbone_trainable(
    model: keras.Model, trainable: bool, *, from_layer: str | None = None
) -> None:
    """Freeze or unfreeze the backbone (the head always stays trainable).

    With ``from_layer``, only the backbone layers from that one on are unfrozen (the top blocks,
    for the second phase of fine-tuning). Batch-normalisation layers stay frozen whenever part of
    the backbone is, so their ImageNet statistics are not disturbed by small batches.
    """
    layers = backbone_layers(model)
    names = [layer.name for layer in layers]
    if from_layer is not None and from_layer not in names:
        raise InvalidArgumentError(
            "from_layer", f"a backbone layer name such as {names[-1]!r}", from_layer
        )
    start = names.index(from_layer) if from_layer is not None else 0
    partial = trainable and start > 0
    for position, layer in enumerate(layers):
        unfrozen = trainable and position >= start
        if partial and isinstance(layer, keras.layers.BatchNormalization):
            unfrozen = False
        layer.trainable = unfrozen
    for layer in model.layers:
        if layer.name.startswith(OWN_PREFIX):
            layer.trainable = True


def load_model(path: str | os.PathLike[str], *, calibration: bool = True) -> keras.Model:
    """Load a model saved by this package (``.keras``), with a one-line error for a bad file.

    With ``calibration`` (the default) the model's calibration file, when there is one beside it,
    is read, checked against the model file and attached to the model
    (:func:`pcam.model.temperature.calibration_of`), so its probabilities are calibrated
    wherever they are read; without, the model gives its own, uncalibrated probabilities.
    """
    import pcam.stain.layers  # noqa: F401  (registers the colour-augmentation layer for loading)
    from pcam.model.temperature import Calibration, attach, read_calibration

    model_path = Path(path)
    if not model_path.is_file():
        raise MissingFileError(
            model_path,
            "a saved pcam model (.keras)",
            "train one with pcam train, or check the path",
        )
    if model_path.suffix.lower() not in (".keras", ".h5"):
        raise UnreadableFileError(
            model_path,
            "a saved pcam model (.keras)",
            f"a file ending in {model_path.suffix or 'no suffix'!r}",
            "pass the model.keras of a pcam train run",
        )
    try:
        model = keras.models.load_model(model_path)
    except Exception as error:  # Keras raises many kinds for a damaged or foreign file
        text = first_line(error, limit=160)
        raise UnreadableFileError(
            model_path,
            "a saved pcam model (.keras)",
            f"a file Keras cannot load ({text})",
            "train the model again or restore the file",
        ) from None
    if not isinstance(model, keras.Model):
        raise UnreadableFileError(
            model_path,
            "a saved pcam model (.keras)",
            f"a {type(model).__name__}",
            "save the whole model",
        )
    _check_classifier(model, model_path)
    if calibration:
        attach(model, read_calibration(model_path))
    else:
        attach(model, Calibration(reason="calibration turned off"))
    return model


def _check_classifier(model: keras.Model, path: Path) -> None:
    """Raise unless ``model`` maps ``[B, 96, 96, 3]`` to ``[B, 1]`` or ``[B, 2]`` by a known head.

    The heads are those of :mod:`pcam.model.heads`, whose outputs pcam knows how to read.
    """
    from pcam.model.heads import SUPPORTED_HEADS, unsupported_head

    try:
        inputs = [tuple(tensor.shape) for tensor in model.inputs]
        outputs = [tuple(tensor.shape) for tensor in model.outputs]
    except (AttributeError, TypeError, ValueError):  # a model never built has no inputs
        inputs, outputs = [], []
    if not (_fits(inputs, IMAGE_SHAPE) and (_fits(outputs, (1,)) or _fits(outputs, (2,)))):
        raise UnreadableFileError(
            path,
            "a saved pcam model (.keras) taking [B, 96, 96, 3] patches to [B, 1] or [B, 2] "
            "class scores",
            f"a Keras model with input {_show(inputs)} and output {_show(outputs)}",
            "pass the model.keras of a pcam train run",
        )
    found = unsupported_head(model)
    if found is not None:
        raise UnreadableFileError(
            path, SUPPORTED_HEADS, found, "pcam reads the probability or logits of these heads"
        )


def _fits(shapes: list[tuple[Any, ...]], expected: tuple[int, ...]) -> bool:
    """One tensor whose shape after the batch axis is ``expected`` (``None`` matches any)."""
    return (
        len(shapes) == 1
        and len(shapes[0]) == 1 + len(expected)
        and all(size in (None, want) for size, want in zip(shapes[0][1:], expected, strict=True))
    )


def _show(shapes: list[tuple[Any, ...]]) -> str:
    """``[B, 96, 96, 3]``-style shapes, comma-separated, or ``none``."""
    shown = ["[" + ", ".join("B" if s is None else str(s) for s in shape) + "]" for shape in shapes]
    return ", ".join(shown) or "none"
