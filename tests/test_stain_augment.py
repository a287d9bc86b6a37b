"""HED stain augmentation, the colour stage of training, and its two placements (loader, device)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

tf = pytest.importorskip("tensorflow")

from pcam.config import DEFAULT_COLOUR_AUGMENT, TrainConfig  # noqa: E402
from pcam.errors import InvalidArgumentError  # noqa: E402
from pcam.stain import hed  # noqa: E402
from pcam.stain.augment import augment_colours  # noqa: E402

BATCHES = arrays(
    np.uint8,
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.just(3)),
)


from tests.test_hed import _tissue  # noqa: E402


def test_an_unknown_colour_augmentation_is_one_line(synthetic_root: Path) -> None:
    from pcam.data.stream import make_dataset

    with pytest.raises(InvalidArgumentError, match=r"colour_augment: expected one of hed-light"):
        augment_colours(_tissue(count=1), tf.constant([0, 0]), "hed")
    with pytest.raises(InvalidArgumentError, match="colour_augment"):
        make_dataset(synthetic_root, "valid", batch_size=8, augment=True, colour_augment="HED")
    with pytest.raises(InvalidArgumentError, match="colour_augment"):
        TrainConfig(data=".", out="run", colour_augment="strong").check()
    with pytest.raises(InvalidArgumentError, match="augment_on: expected one of device, loader"):
        TrainConfig(data=".", out="run", augment_on="gpu").check()


def _stream(root: Path, seed: int, kind: str) -> list[npt.NDArray[np.uint8]]:
    from pcam.data.stream import make_dataset

    dataset = make_dataset(
        root,
        "valid",
        batch_size=128,
        shuffle=True,
        seed=seed,
        augment=True,
        colour_augment=kind,
    )
    return [images for images, _ in dataset.as_numpy_iterator()]


def test_the_loader_draws_the_stain_jitter_from_the_seed_and_the_batch_position(
    synthetic_root: Path,
) -> None:
    """Batch ``k`` of a stream seeded ``s`` gets the HED jitter of seed ``fold_in([s, k], 1)``."""

    def reference(images: Any, seed: Any) -> Any:
        folded = tf.random.experimental.stateless_fold_in(seed, 1)
        return hed.jitter_stains(images, folded, hed.HED_PRESETS["hed-light"])

    compiled = tf.function(reference, jit_compile=True)  # the pipeline's draws are XLA's
    for seed in (3, 4):
        plain = _stream(synthetic_root, seed, "none")
        stained = _stream(synthetic_root, seed, "hed-light")
        for position, (before, after) in enumerate(zip(plain, stained, strict=True)):
            expected = compiled(tf.constant(before), tf.constant([seed, position], tf.int64))
            difference = np.abs(after.astype(np.int64) - expected.numpy())
            assert difference.max() <= 1, (seed, position)
            assert np.mean(difference == 0) > 0.99, (seed, position)


def test_the_default_stream_uses_the_default_colour_augmentation(synthetic_root: Path) -> None:
    from pcam.data.stream import make_dataset

    assert TrainConfig(data=".", out="run").colour_augment == DEFAULT_COLOUR_AUGMENT
    dataset = make_dataset(synthetic_root, "valid", batch_size=128, shuffle=True, augment=True)
    default = [images for images, _ in dataset.as_numpy_iterator()]
    named = _stream(synthetic_root, 0, DEFAULT_COLOUR_AUGMENT)
    for first, second in zip(default, named, strict=True):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(default[0], _stream(synthetic_root, 0, "rgb")[0])


# --- the layer inside the model (--augment-on device) ---


def test_the_layer_is_the_identity_at_inference_and_augments_in_training() -> None:
    from pcam.stain.layers import ColourAugmentation

    images = _tissue(count=4)
    layer = ColourAugmentation("hed-strong", seed=1)
    np.testing.assert_array_equal(layer(images).numpy(), images)
    np.testing.assert_array_equal(layer(images, training=False).numpy(), images)
    first = layer(images, training=True).numpy()
    second = layer(images, training=True).numpy()
    assert first.dtype == np.uint8
    assert not np.array_equal(first, images)
    assert not np.array_equal(first, second)  # the seed generator moves on
    again = ColourAugmentation("hed-strong", seed=1)(images, training=True).numpy()
    np.testing.assert_array_equal(again, first)  # same seed, same draws
    other = ColourAugmentation("hed-strong", seed=2)(images, training=True).numpy()
    assert not np.array_equal(other, first)
    none = ColourAugmentation("none", seed=1)(images, training=True).numpy()
    np.testing.assert_array_equal(none, images)


def test_a_model_with_the_layer_predicts_as_without_and_saves(tmp_path: Path) -> None:
    from pcam.model.architectures import build_model, load_model
    from pcam.model.backup import seed_generators

    images = _tissue(count=4, seed=3)
    images = np.pad(images, ((0, 0), (40, 40), (40, 40), (0, 0)), constant_values=200)
    plain = build_model("small", seed=5)
    augmented = build_model("small", seed=5, colour_augment="hed-strong")
    assert "pcam_colour_augment" in [layer.name for layer in augmented.layers]
    assert "pcam_colour_augment" not in [layer.name for layer in plain.layers]
    assert augmented.get_layer("pcam_colour_augment").output.dtype == "uint8"
    assert len(seed_generators(augmented)) == len(seed_generators(plain)) + 1  # in the backup
    augmented.set_weights(plain.get_weights())  # the layer holds no weights
    np.testing.assert_array_equal(
        augmented.predict(images, verbose=0), plain.predict(images, verbose=0)
    )
    augmented.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    layer = loaded.get_layer("pcam_colour_augment")
    assert (layer.kind, layer.seed) == ("hed-strong", 5)
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), plain.predict(images, verbose=0)
    )


def _mean_shifts(augmented: npt.NDArray[np.uint8], original: npt.NDArray[np.uint8]) -> Any:
    """Per-patch, per-channel change of the mean colour: ``[patches, 3]``."""
    return (augmented.astype(np.float64) - original).mean(axis=(1, 2))


@pytest.mark.parametrize("kind", ["hed-light", "rgb+hed-strong"])
def test_both_placements_draw_from_the_same_distribution(synthetic_root: Path, kind: str) -> None:
    """A fixed batch augmented 20 times by the loader and by the layer: two-sample KS tests on
    the per-channel colour changes accept (p > 0.01); against another preset they reject."""
    from scipy.stats import ks_2samp

    from pcam.data.split import open_split
    from pcam.stain.layers import ColourAugmentation

    batch = open_split(synthetic_root, "valid").read_images(slice(0, 64))
    loader_step = tf.function(
        lambda images, seed, k: augment_colours(images, seed, k), jit_compile=True
    )

    def by_loader(kind: str) -> Any:
        return np.concatenate(
            [
                _mean_shifts(loader_step(batch, tf.constant([9, k], tf.int64), kind).numpy(), batch)
                for k in range(20)
            ]
        )

    layer = ColourAugmentation(kind, seed=11)
    by_device = np.concatenate(
        [_mean_shifts(layer(batch, training=True).numpy(), batch) for _ in range(20)]
    )
    same = by_loader(kind)
    other = by_loader("hed-light" if kind != "hed-light" else "hed-strong")
    for channel in range(3):
        assert ks_2samp(same[:, channel], by_device[:, channel]).pvalue > 0.01, channel
    assert min(ks_2samp(other[:, c], by_device[:, c]).pvalue for c in range(3)) < 1e-6


def test_the_placement_defaults_to_the_device_where_a_gpu_is() -> None:
    from pcam.model.train import augment_placement

    config = TrainConfig(data=".", out="run")
    assert augment_placement(config, gpu=True) == "device"
    assert augment_placement(config, gpu=False) == "loader"
    for placement in ("device", "loader"):
        chosen = TrainConfig(data=".", out="run", augment_on=placement)
        assert augment_placement(chosen, gpu=True) == placement
        assert augment_placement(chosen, gpu=False) == placement


@pytest.mark.parametrize("placement", ["device", "loader"])
def test_training_puts_the_colour_stage_where_asked(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, placement: str
) -> None:
    import pcam.data.stream
    from pcam.model.architectures import load_model
    from pcam.model.train import train

    kinds: list[str] = []
    make_dataset = pcam.data.stream.make_dataset

    def spy(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("augment"):
            kinds.append(kwargs["colour_augment"])
        return make_dataset(*args, **kwargs)

    monkeypatch.setattr(pcam.data.stream, "make_dataset", spy)
    config = TrainConfig(
        data=str(synthetic_root),
        out=str(tmp_path / "run"),
        model="small",
        epochs=1,
        max_train_samples=128,
        colour_augment="hed-strong",
        augment_on=placement,
    )
    train(config, verbose=0)
    model = load_model(tmp_path / "run" / "model.keras")
    names = [layer.name for layer in model.layers]
    if placement == "device":
        assert kinds == ["none"]
        assert model.get_layer("pcam_colour_augment").kind == "hed-strong"
    else:
        assert kinds == ["hed-strong"]
        assert "pcam_colour_augment" not in names


class _Crash(Exception):
    """Stands for a crash in the middle of an epoch."""


@pytest.mark.slow
def test_a_device_placed_run_resumes_bit_identical(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layer's seed generator is in the backup: a resumed run draws the same colours."""
    import keras

    from pcam.model.train import train
    from tests.conftest import deterministic_config

    def config(run: Path) -> TrainConfig:
        return deterministic_config(synthetic_root, run, augment_on="device", epochs=3)

    whole = tmp_path / "whole"
    train(config(whole), verbose=0)
    batch_end = keras.callbacks.CSVLogger.on_train_batch_end
    seen = {"batches": 0}

    def crash_in_epoch_two(self: Any, batch: int, logs: Any = None) -> None:
        seen["batches"] += 1
        if seen["batches"] == 8 + 3:
            raise _Crash
        batch_end(self, batch, logs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(keras.callbacks.CSVLogger, "on_train_batch_end", crash_in_epoch_two)
    with pytest.raises(_Crash):
        train(config(resumed), verbose=0)
    monkeypatch.undo()
    train(config(resumed), verbose=0)
    expected = (whole / "training_log.csv").read_bytes()
    assert (resumed / "training_log.csv").read_bytes() == expected
    loader = tmp_path / "loader"
    train(deterministic_config(synthetic_root, loader, augment_on="loader", epochs=3), verbose=0)
    assert (loader / "training_log.csv").read_bytes() != expected  # other draws, other run
