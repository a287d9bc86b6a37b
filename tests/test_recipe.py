"""The training recipe's settings: colour augmentation, its placement, width, label smoothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pcam.cli import main
from pcam.config import (
    DEFAULT_COLOUR_AUGMENT,
    SMALL_WIDTH,
    FullCheckConfig,
    TrainConfig,
)
from pcam.errors import InvalidArgumentError


def _captured_config(
    monkeypatch: pytest.MonkeyPatch, root: Path, out: Path, flags: list[str]
) -> Any:
    import pcam.model.train

    seen: list[Any] = []

    def fake_train(config: Any, *, verbose: Any = "auto") -> dict[str, list[float]]:
        seen.append(config)
        return {"val_loss": [0.5], "val_accuracy": [0.9], "val_auc": [0.95]}

    monkeypatch.setattr(pcam.model.train, "train", fake_train)
    assert main(["train", "--data", str(root), "--out", str(out), *flags]) == 0
    return seen[0]


def test_the_train_flags_reach_the_config(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = [
        "--colour-augment",
        "rgb+hed-strong",
        "--augment-on",
        "device",
        "--width",
        "24",
        "--label-smoothing",
        "0.1",
    ]
    config = _captured_config(monkeypatch, synthetic_root, tmp_path / "run", flags)
    assert config.colour_augment == "rgb+hed-strong"
    assert config.augment_on == "device"
    assert config.width == 24
    assert config.label_smoothing == 0.1


def test_the_defaults_are_the_recipe(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grid's winner on the real sample (README, "Training recipe"), value by value."""
    assert DEFAULT_COLOUR_AUGMENT == "hed-light"
    assert SMALL_WIDTH == 32
    config = _captured_config(monkeypatch, synthetic_root, tmp_path / "run", [])
    assert config.batch_size == 32
    assert config.patience == 10
    assert config.lr == 1e-3
    assert config.lr_schedule == "cosine"
    assert config.colour_augment == DEFAULT_COLOUR_AUGMENT
    assert config.augment_on is None
    assert config.width == SMALL_WIDTH
    assert config.label_smoothing == 0.0
    check = FullCheckConfig(data=".", out="out")
    assert check.colour_augment == DEFAULT_COLOUR_AUGMENT
    assert check.augment_on is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--colour-augment", "hed"], "invalid choice"),
        (["--augment-on", "gpu"], "invalid choice"),
        (["--width", "0"], "--width"),
        (["--label-smoothing", "1.5"], "--label-smoothing"),
    ],
)
def test_bad_recipe_flags_are_one_line(
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(synthetic_root), "--out", str(run), *flags])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert message in error[0]
    assert not run.exists()


def test_the_config_refuses_a_smoothing_of_one_and_a_width_of_zero() -> None:
    with pytest.raises(
        InvalidArgumentError, match=r"label_smoothing: expected a number in \[0, 1\)"
    ):
        TrainConfig(data=".", out="run", label_smoothing=1.0).check()
    with pytest.raises(InvalidArgumentError, match="width: expected an integer >= 1"):
        TrainConfig(data=".", out="run", width=0).check()


@pytest.mark.parametrize(("width", "params"), [(8, 25_121), (16, 98_625), (32, 390_785)])
def test_the_width_sets_the_small_cnn_filters(width: int, params: int) -> None:
    from pcam.model.architectures import build_model

    model = build_model("small", width=width)
    filters = [model.get_layer(f"block{i}_conv").filters for i in range(1, 5)]
    assert filters == [width, 2 * width, 4 * width, 8 * width]
    assert model.count_params() == params


def test_the_small_cnn_defaults_to_the_recipe_width() -> None:
    from pcam.model.architectures import build_model

    assert build_model("small").get_layer("block1_conv").filters == SMALL_WIDTH


def test_training_compiles_the_loss_with_the_label_smoothing(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    from pcam.model.train import train

    losses: list[Any] = []
    compile_model = keras.Model.compile

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        losses.append(kwargs["loss"])
        return compile_model(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "compile", spy)
    config = TrainConfig(
        data=str(synthetic_root),
        out=str(tmp_path / "run"),
        model="small",
        epochs=1,
        max_train_samples=64,
        label_smoothing=0.2,
        width=8,
    )
    train(config, verbose=0)
    assert len(losses) == 1
    assert isinstance(losses[0], keras.losses.BinaryCrossentropy)
    assert losses[0].label_smoothing == 0.2
    from pcam.model.architectures import load_model

    model = load_model(tmp_path / "run" / "model.keras")
    assert model.get_layer("block1_conv").filters == 8
