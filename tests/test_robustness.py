"""``pcam robustness``: the colour shifts, the report, its folder, the command, and what it shows.

The key test (slow) trains the small CNN twice on synthetic PCam, with and without HED stain
augmentation, and checks that the augmented one loses less ROC AUC under the strong HED shifts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tensorflow")

from pcam.cli import main
from pcam.data import open_split
from pcam.errors import InvalidArgumentError, OutputExistsError, UnsafeOutputError
from pcam.evaluation.metrics import classification_report
from pcam.evaluation.robustness import (
    CSV_COLUMNS,
    ROBUSTNESS,
    SHIFTS,
    StainShift,
    apply_shift,
    cam_indices,
    format_robustness,
    map_correlations,
    robustness_report,
    write_robustness,
)
from pcam.outputs import MARKER, read_marker

PNG = b"\x89PNG\r\n\x1a\n"
HED_SHIFTS = [shift for shift in SHIFTS if shift.kind == "hed"]
IDENTITY_HED = StainShift("identity-hed", "hed")  # test-only: changes nothing
IDENTITY_RGB = StainShift("identity-rgb", "rgb")
STRONG_H = next(shift for shift in SHIFTS if shift.name == "hed-strong-h+")
STRONG_E = next(shift for shift in SHIFTS if shift.name == "hed-strong-e+")
BATCH = 32


def _shift(name: str) -> StainShift:
    return next(shift for shift in SHIFTS if shift.name == name)


@pytest.fixture(scope="module")
def tissue() -> npt.NDArray[np.uint8]:
    """Eight synthetic H&E patches (tissue, nuclei, some glass)."""
    from pcam.testing import generate

    return generate(8, seed=3).images


def _concentrations(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Mean H, E, DAB concentrations over the pixels that hold stain."""
    from pcam.stain.hed import stain_concentrations

    values = stain_concentrations(images).numpy().reshape(-1, 3)
    return np.asarray(values.mean(axis=0), dtype=np.float64)


# -- the shifts ------------------------------------------------------------------------------------


def test_the_shift_table_is_the_specified_one() -> None:
    names = [shift.name for shift in SHIFTS]
    assert names == [
        "hed-weak-h+",
        "hed-weak-e+",
        "hed-medium-h+",
        "hed-medium-e+",
        "hed-strong-h+",
        "hed-strong-e+",
        "scanner-warm",
        "scanner-cool",
        "gamma-0.8",
        "contrast-0.8",
    ]
    assert _shift("hed-weak-h+").parameters() == {
        "scales": [1.1, 0.9, 1.0],
        "shifts": [0.05, -0.05, 0.0],
    }
    assert _shift("hed-medium-e+").parameters() == {
        "scales": [0.8, 1.2, 1.0],
        "shifts": [-0.1, 0.1, 0.0],
    }
    assert STRONG_H.parameters() == {"scales": [1.35, 0.65, 1.0], "shifts": [0.2, -0.2, 0.0]}
    assert _shift("scanner-warm").parameters() == {
        "gains": [1.08, 1.0, 0.9],
        "gamma": 1.0,
        "contrast": 1.0,
    }
    assert _shift("scanner-cool").gains == (0.92, 1.0, 1.08)
    assert _shift("gamma-0.8").gamma == 0.8
    assert _shift("contrast-0.8").contrast == 0.8


@pytest.mark.parametrize("identity", [IDENTITY_HED, IDENTITY_RGB], ids=lambda s: s.name)
def test_identity_parameters_give_back_the_input_exactly(
    identity: StainShift, tissue: npt.NDArray[np.uint8]
) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(4, 96, 96, 3), dtype=np.uint8)
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None, None], (1, 256, 1, 3))
    for images in (tissue, noise, np.ascontiguousarray(ramp)):
        assert np.array_equal(apply_shift(identity, images), images)


@pytest.mark.parametrize("shift", SHIFTS, ids=lambda s: s.name)
def test_every_shift_changes_a_tissue_patch(
    shift: StainShift, tissue: npt.NDArray[np.uint8]
) -> None:
    shifted = apply_shift(shift, tissue)
    assert shifted.dtype == np.uint8
    assert shifted.shape == tissue.shape
    assert np.abs(shifted.astype(np.int64) - tissue).mean() > 1.0


@pytest.mark.parametrize("shift", HED_SHIFTS, ids=lambda s: s.name)
def test_hed_shifts_keep_white_glass_white(
    shift: StainShift, tissue: npt.NDArray[np.uint8]
) -> None:
    images = tissue.copy()
    images[:, :20] = 255  # a band of glass at the top of every patch
    shifted = apply_shift(shift, images)
    assert np.all(shifted[:, :20] == 255)
    assert not np.array_equal(shifted[:, 20:], images[:, 20:])


@pytest.mark.parametrize("shift", SHIFTS, ids=lambda s: s.name)
def test_shifts_are_deterministic_and_each_patch_alone_decides(
    shift: StainShift, tissue: npt.NDArray[np.uint8]
) -> None:
    once = apply_shift(shift, tissue)
    assert np.array_equal(apply_shift(shift, tissue), once)
    one_by_one = np.concatenate([shift.apply(tissue[i : i + 1]) for i in range(len(tissue))])
    assert np.array_equal(one_by_one, once)


@pytest.mark.parametrize("strength", ["weak", "medium", "strong"])
def test_h_plus_adds_haematoxylin_and_e_plus_adds_eosin(
    strength: str, tissue: npt.NDArray[np.uint8]
) -> None:
    before = _concentrations(tissue)
    more_h = _concentrations(apply_shift(_shift(f"hed-{strength}-h+"), tissue)) - before
    more_e = _concentrations(apply_shift(_shift(f"hed-{strength}-e+"), tissue)) - before
    assert more_h[0] > 0.02
    assert more_h[1] < -0.02
    assert more_e[0] < -0.02
    assert more_e[1] > 0.02


@pytest.mark.parametrize("direction", ["h+", "e+"])
def test_strong_moves_more_than_medium_more_than_weak(
    direction: str, tissue: npt.NDArray[np.uint8]
) -> None:
    before = _concentrations(tissue)
    moved = []
    for strength in ("weak", "medium", "strong"):
        shifted = apply_shift(_shift(f"hed-{strength}-{direction}"), tissue)
        pixels = np.abs(shifted.astype(np.int64) - tissue).mean()
        stains = np.abs(_concentrations(shifted) - before)[:2].sum()
        moved.append((pixels, stains))
    assert moved[0][0] < moved[1][0] < moved[2][0]
    assert moved[0][1] < moved[1][1] < moved[2][1]


def test_rgb_shifts_do_what_their_names_say(tissue: npt.NDArray[np.uint8]) -> None:
    grey = np.full((1, 4, 4, 3), 128, dtype=np.uint8)
    assert apply_shift(_shift("scanner-warm"), grey)[0, 0, 0].tolist() == [138, 128, 115]
    assert apply_shift(_shift("scanner-cool"), grey)[0, 0, 0].tolist() == [118, 128, 138]
    # 255 * (128 / 255) ** 0.8 = 147.4: gamma below 1 brightens the mid-tones
    assert apply_shift(_shift("gamma-0.8"), grey)[0, 0, 0].tolist() == [147, 147, 147]
    flat = apply_shift(_shift("contrast-0.8"), tissue).astype(np.float64)
    spread = tissue.std(axis=(1, 2)) * 0.8
    assert np.allclose(flat.std(axis=(1, 2)), spread, atol=0.5)
    assert np.allclose(flat.mean(axis=(1, 2)), tissue.mean(axis=(1, 2)), atol=0.5)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"name": "x", "kind": "lab"}, r"kind: expected 'hed' or 'rgb'"),
        ({"name": "unshifted", "kind": "hed"}, r"name: expected a name other than"),
        ({"name": "x", "kind": "rgb", "gamma": 0.0}, r"x: expected positive scales"),
        ({"name": "x", "kind": "hed", "contrast": 0.5}, r"x: expected only the hed parameters"),
        ({"name": "x", "kind": "rgb", "shifts": (0.1, 0, 0)}, r"expected only the rgb parameters"),
    ],
)
def test_bad_shifts_are_refused_in_one_line(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        StainShift(**arguments)


def test_only_uint8_rgb_batches_are_shifted(tissue: npt.NDArray[np.uint8]) -> None:
    with pytest.raises(InvalidArgumentError, match=r"images: expected uint8 patches"):
        apply_shift(STRONG_H, tissue.astype(np.float32))
    with pytest.raises(InvalidArgumentError, match=r"images: expected uint8 patches"):
        apply_shift(STRONG_H, tissue[0])


# -- map correlations ------------------------------------------------------------------------------


def test_map_correlations_are_pearson_with_a_rule_for_constant_maps() -> None:
    rng = np.random.default_rng(1)
    first, second = rng.random((5, 6, 6)), rng.random((5, 6, 6))
    expected = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(first, second, strict=True)]
    assert np.allclose(map_correlations(first, second), expected, atol=1e-12)
    assert np.allclose(map_correlations(first, first), 1.0, atol=1e-12)
    assert np.allclose(map_correlations(first, 1.0 - first), -1.0, atol=1e-12)
    zeros, ones, varying = np.zeros((1, 3, 3)), np.ones((1, 3, 3)), first[:1, :3, :3]
    assert map_correlations(zeros, zeros).tolist() == [1.0]
    assert map_correlations(zeros, ones).tolist() == [1.0]  # neither points anywhere
    assert map_correlations(zeros, varying).tolist() == [0.0]
    assert map_correlations(varying, ones).tolist() == [0.0]


def test_cam_indices_are_seeded_distinct_and_sorted() -> None:
    chosen = cam_indices(100, 10, seed=0)
    assert chosen.tolist() == sorted(set(chosen.tolist()))
    assert chosen.size == 10
    assert np.array_equal(cam_indices(100, 10, seed=0), chosen)
    assert not np.array_equal(cam_indices(100, 10, seed=1), chosen)
    assert cam_indices(5, 10, seed=0).tolist() == [0, 1, 2, 3, 4]


# -- the report ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic data: 512 train patches, 96 valid ones (three batches of 32)."""
    from pcam.testing import write_split

    root = tmp_path_factory.mktemp("robustness-data")
    write_split(root, "train", 512, seed=0)
    write_split(root, "valid", 96, seed=5)
    return root


@pytest.fixture(scope="module")
def model_path(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model that has learned something (valid AUC about 0.99) in one short epoch.

    Not more: longer, it scores AUC 1.0 on the 96 valid patches whatever the shift, and the
    drop checks need AUCs that move.
    """
    from pcam.data import make_dataset
    from pcam.testing.models import tiny_model

    model = tiny_model(seed=2)
    model.fit(
        make_dataset(tiny_root, "train", batch_size=32, shuffle=True),
        epochs=1,
        verbose=0,
        shuffle=False,
    )
    path = tmp_path_factory.mktemp("robustness-model") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def model(model_path: Path) -> Any:
    from pcam.model.architectures import load_model

    return load_model(model_path)


@pytest.fixture(scope="module")
def cam(model: Any) -> Any:
    from pcam.explain.gradcam import GradCAM

    return GradCAM(model)


@pytest.fixture(scope="module")
def report(model: Any, model_path: Path, tiny_root: Path, cam: Any) -> dict[str, Any]:
    """The report on the tiny split under two real shifts, the CAM check on 8 patches."""
    return robustness_report(
        model,
        tiny_root,
        "valid",
        shifts=(STRONG_E, _shift("scanner-warm")),
        batch_size=BATCH,
        cam_patches=8,
        seed=0,
        cam=cam,
        model_path=model_path,
    )


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in report["results"]}


def test_the_unshifted_row_is_what_pcam_evaluate_reports(
    report: dict[str, Any], model_path: Path, tiny_root: Path, tmp_path: Path
) -> None:
    from pcam.evaluation.evaluate import evaluate

    evaluated = evaluate(
        model_path, tiny_root, "valid", tmp_path / "report", batch_size=BATCH, bootstrap_rounds=0
    )
    unshifted = report["results"][0]
    assert unshifted["name"] == "unshifted"
    assert unshifted["kind"] == "none"
    assert unshifted["accuracy"] == evaluated["accuracy"]
    assert unshifted["roc_auc"] == evaluated["roc_auc"]
    assert unshifted["f1"] == evaluated["per_class"]["tumour"]["f1"]
    assert unshifted["drop_accuracy"] == 0.0
    assert unshifted["drop_auc"] == 0.0
    assert unshifted["cam_correlation"] is None


def test_a_shift_row_is_the_metrics_of_the_shifted_patches(
    report: dict[str, Any], model: Any, tiny_root: Path
) -> None:
    from pcam.model.inference import tumour_probabilities

    handle = open_split(tiny_root, "valid")
    images, labels = handle.read_images(slice(None)), handle.labels.astype(np.int64)
    for shift in (STRONG_E, _shift("scanner-warm")):
        probabilities = np.concatenate(
            [
                tumour_probabilities(model, apply_shift(shift, images[start : start + BATCH]))
                for start in range(0, len(images), BATCH)
            ]
        )
        by_hand = classification_report(labels, probabilities, bootstrap_rounds=0)
        row = _rows(report)[shift.name]
        assert row["accuracy"] == by_hand["accuracy"]
        assert row["roc_auc"] == by_hand["roc_auc"]
        assert row["f1"] == by_hand["per_class"]["tumour"]["f1"]
        assert row["predicted_tumour"] == float((probabilities >= 0.5).mean())
        assert row["parameters"] == shift.parameters()


def test_drops_are_unshifted_minus_shifted(report: dict[str, Any]) -> None:
    unshifted, strong = _rows(report)["unshifted"], _rows(report)["hed-strong-e+"]
    assert strong["accuracy"] != unshifted["accuracy"]  # else the sign below proves nothing
    assert strong["roc_auc"] != unshifted["roc_auc"]
    for row in report["results"]:
        assert row["drop_accuracy"] == unshifted["accuracy"] - row["accuracy"]
        assert row["drop_auc"] == unshifted["roc_auc"] - row["roc_auc"]
    assert strong["drop_accuracy"] != strong["accuracy"] - unshifted["accuracy"]


def test_cam_correlation_is_one_for_an_identity_shift_and_lower_for_a_real_one(
    model: Any, tiny_root: Path, cam: Any
) -> None:
    found = robustness_report(
        model,
        tiny_root,
        "valid",
        shifts=(IDENTITY_HED, IDENTITY_RGB, STRONG_E),
        batch_size=BATCH,
        cam_patches=16,
        cam=cam,
    )
    rows = _rows(found)
    for name in ("identity-hed", "identity-rgb"):
        assert rows[name]["cam_correlation"] == pytest.approx(1.0, abs=1e-12)
        assert rows[name]["cam_correlation_min"] == pytest.approx(1.0, abs=1e-12)
        assert rows[name]["drop_accuracy"] == 0.0
    strong = rows["hed-strong-e+"]
    assert strong["cam_correlation"] < 0.99
    assert strong["cam_correlation_min"] <= strong["cam_correlation"]


def test_the_cam_check_in_small_batches_matches_one_batch(
    model: Any, tiny_root: Path, cam: Any
) -> None:
    found = [
        _rows(
            robustness_report(
                model,
                tiny_root,
                "valid",
                shifts=(STRONG_E,),
                batch_size=size,
                cam_patches=12,
                cam=cam,
            )
        )["hed-strong-e+"]
        for size in (5, 96)
    ]
    assert found[0]["cam_correlation"] == pytest.approx(found[1]["cam_correlation"], abs=1e-6)
    assert found[0]["cam_correlation_min"] == pytest.approx(
        found[1]["cam_correlation_min"], abs=1e-6
    )


def test_the_seed_chooses_the_cam_patches(
    report: dict[str, Any], model: Any, tiny_root: Path, cam: Any
) -> None:
    other = robustness_report(
        model,
        tiny_root,
        "valid",
        shifts=(STRONG_E,),
        batch_size=BATCH,
        cam_patches=8,
        seed=1,
        cam=cam,
    )
    first, second = report["cam"]["indices"], other["cam"]["indices"]
    assert first == cam_indices(96, 8, seed=0).tolist()
    assert second == cam_indices(96, 8, seed=1).tolist()
    assert first != second
    assert _rows(other)["hed-strong-e+"]["accuracy"] == _rows(report)["hed-strong-e+"]["accuracy"]


def test_the_report_describes_itself(report: dict[str, Any], model_path: Path) -> None:
    assert report["model"] == str(model_path)
    assert report["split"] == "valid"
    assert report["patches"] == 96
    assert report["tta"] is False
    assert report["seed"] == 0
    assert report["threshold"] == 0.5
    assert report["probabilities"]["calibrated"] is False
    assert report["cam"]["layer"] == ["pool2"]  # the tiny model's default Grad-CAM layer
    assert report["cam"]["method"] == "gradcam"
    assert report["cam"]["patches"] == 8
    assert "constant" in report["cam"]["correlation"]
    assert [row["kind"] for row in report["results"]] == ["none", "hed", "rgb"]


def test_progress_counts_patches_over_every_pass(model: Any, tiny_root: Path) -> None:
    seen: list[int] = []
    robustness_report(
        model,
        tiny_root,
        "valid",
        shifts=(STRONG_H, IDENTITY_RGB),
        batch_size=40,
        cam_patches=0,
        progress=seen.append,
    )
    assert seen == [40, 80, 96, 136, 176, 192, 232, 272, 288]


def test_without_cam_the_check_is_skipped_and_said_so(model: Any, tiny_root: Path) -> None:
    found = robustness_report(model, tiny_root, "valid", shifts=(STRONG_H,), batch_size=BATCH)
    assert found["cam"] is None
    assert _rows(found)["hed-strong-h+"]["cam_correlation"] is None
    assert "Grad-CAM check: not run" in format_robustness(found)


def test_bad_settings_are_refused_before_any_work(model: Any, tiny_root: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"shifts: expected shifts with distinct"):
        robustness_report(model, tiny_root, "valid", shifts=(STRONG_H, STRONG_H))
    with pytest.raises(InvalidArgumentError, match=r"cam_patches: expected an integer >= 0"):
        robustness_report(model, tiny_root, "valid", cam_patches=-1)


def test_the_table_shows_every_row(report: dict[str, Any]) -> None:
    text = format_robustness(report)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["shift", "kind", "accuracy"]
    for row in report["results"]:
        [line] = [line for line in lines if line.startswith(row["name"] + " ")]
        assert f"{row['accuracy']:.4f}" in line
        assert f"{row['roc_auc']:.4f}" in line
    assert "96 patches of valid" in text
    assert "pool2" in text


# -- the folder ------------------------------------------------------------------------------------


def test_the_files_hold_the_report(report: dict[str, Any], tmp_path: Path) -> None:
    from PIL import Image

    out = write_robustness(report, tmp_path / "robustness", overwrite=False)
    assert json.loads((out / "robustness.json").read_text()) == json.loads(json.dumps(report))
    with (out / "robustness.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [row["name"] for row in rows] == [row["name"] for row in report["results"]]
    for written, row in zip(rows, report["results"], strict=True):
        for column in CSV_COLUMNS[2:]:
            expected = row[column]
            assert written[column] == ("" if expected is None else repr(expected))
            if expected is not None:
                assert float(written[column]) == expected
    png = out / "robustness.png"
    assert png.read_bytes().startswith(PNG)
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert min(image.size) > 300
    marker = read_marker(out)
    assert marker is not None
    assert marker["kind"] == ROBUSTNESS
    assert marker["files"] == ["robustness.csv", "robustness.json", "robustness.png"]


def test_a_report_without_cam_still_draws(model: Any, tiny_root: Path, tmp_path: Path) -> None:
    found = robustness_report(model, tiny_root, "valid", shifts=SHIFTS[:2], batch_size=BATCH)
    out = write_robustness(found, tmp_path / "plain")
    assert (out / "robustness.png").read_bytes().startswith(PNG)


def test_overwrite_replaces_only_a_robustness_folder_pcam_wrote(
    report: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "robustness"
    write_robustness(report, out)
    with pytest.raises(OutputExistsError):
        write_robustness(report, out)
    changed = {**report, "seed": 7}
    write_robustness(changed, out, overwrite=True)
    assert json.loads((out / "robustness.json").read_text())["seed"] == 7

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UnsafeOutputError, match=r"without pcam's"):
        write_robustness(report, foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"

    (out / "extra.txt").write_text("added later")
    with pytest.raises(UnsafeOutputError, match=r"files pcam did not write \(extra.txt\)"):
        write_robustness(report, out, overwrite=True)

    other = tmp_path / "report"
    other.mkdir()
    (other / MARKER).write_text(json.dumps({"kind": "report", "files": []}))
    with pytest.raises(UnsafeOutputError, match=r"pcam's report folder"):
        write_robustness(report, other, overwrite=True)


def test_a_failure_leaves_nothing_half_written(
    report: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pcam.evaluation.robustness_plots as plots

    out = tmp_path / "robustness"
    write_robustness(report, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def broken(report: dict[str, Any], path: Path) -> Path:
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(plots, "plot_robustness", broken)
    with pytest.raises(OSError, match=r"No space left"):
        write_robustness({**report, "seed": 9}, out, overwrite=True)
    with pytest.raises(OSError, match=r"No space left"):
        write_robustness(report, tmp_path / "new")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["robustness"]


# -- the command -----------------------------------------------------------------------------------


def _run(argv: list[str | Path]) -> int:
    try:
        return main([str(arg) for arg in argv])
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1


def test_the_command_writes_the_folder_and_prints_the_table(
    model_path: Path, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "robustness"
    argv: list[str | Path] = ["robustness", "--model", model_path, "--data", tiny_root]
    argv += ["--split", "valid", "--out", out, "--batch-size", "48", "--cam-patches", "4"]
    assert _run([*argv, "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    for shift in SHIFTS:
        assert f"\n{shift.name} " in printed
    assert f"robustness: {out} (robustness.csv, robustness.json, robustness.png)" in printed
    saved = json.loads((out / "robustness.json").read_text())
    assert len(saved["results"]) == 1 + len(SHIFTS)
    assert saved["model"] == str(model_path)
    assert saved["cam"]["indices"] == cam_indices(96, 4, seed=3).tolist()
    assert _run(argv) == 1  # the folder exists now


def test_the_command_passes_every_option_on(
    tmp_path: Path, tiny_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pcam.evaluation.robustness
    from pcam.explain.gradcam import GradCAM

    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append((args, kwargs))
        raise SystemExit(0)

    monkeypatch.setattr(pcam.evaluation.robustness, "robustness", record)
    argv: list[str | Path] = ["robustness", "--model", "m.keras", "--data", tiny_root]
    argv += ["--split", "valid", "--out", tmp_path / "o", "--batch-size", "7", "--tta"]
    argv += ["--cam-patches", "0", "--seed", "5", "--overwrite", "--no-calibration"]
    assert _run(argv) == 0
    [(args, kwargs)] = seen
    assert args == (Path("m.keras"), tiny_root, "valid", tmp_path / "o")
    progress = kwargs.pop("progress")
    assert callable(progress)
    assert kwargs == {
        "cam_maker": GradCAM,
        "batch_size": 7,
        "tta": True,
        "cam_patches": 0,
        "seed": 5,
        "overwrite": True,
        "calibration": False,
    }


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("pcam robustness: error: ")
    return err


def test_the_command_fails_in_one_line(
    model_path: Path, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "robustness"
    common: list[str | Path] = ["robustness", "--split", "valid", "--out", out]
    assert _run([*common, "--model", tmp_path / "none.keras", "--data", tiny_root]) == 1
    assert "none.keras" in _one_line_error(capsys)
    assert _run([*common, "--model", model_path, "--data", tmp_path / "nowhere"]) == 1
    assert "nowhere" in _one_line_error(capsys)
    assert _run([*common, "--model", model_path, "--data", tiny_root, "--split", "test"]) == 1
    _one_line_error(capsys)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    argv: list[str | Path] = ["robustness", "--model", model_path, "--data", tiny_root]
    argv += ["--split", "valid"]
    assert _run([*argv, "--out", foreign, "--overwrite"]) == 1
    assert "without pcam's" in _one_line_error(capsys)
    assert _run([*argv, "--out", out, "--cam-patches", "-1"]) == 2
    assert not out.exists()


# -- what the report shows: HED augmentation buys robustness to stain shifts ----------------------

KEY_SEED = 0
KEY_EPOCHS = 8


def _strong_hed_auc_drop(root: Path, colour_augment: str) -> tuple[float, float]:
    """Unshifted AUC and mean AUC drop under hed-strong-h+ and hed-strong-e+ of a small CNN."""
    import keras

    from pcam.data import make_dataset
    from pcam.model.architectures import build_model

    model = build_model("small", seed=KEY_SEED)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    train = make_dataset(
        root,
        "train",
        batch_size=64,
        shuffle=True,
        seed=KEY_SEED,
        augment=True,
        colour_augment=colour_augment,
    )
    model.fit(train, epochs=KEY_EPOCHS, verbose=0, shuffle=False)
    strong = (STRONG_H, _shift("hed-strong-e+"))
    found = robustness_report(model, root, "valid", shifts=strong, cam_patches=0)
    rows = _rows(found)
    drops = [rows[shift.name]["drop_auc"] for shift in strong]
    return rows["unshifted"]["roc_auc"], float(np.mean(drops))


@pytest.mark.slow
def test_hed_augmentation_makes_the_model_lose_less_auc_under_strong_stain_shifts(
    synthetic_root: Path,
) -> None:
    """Same data, model, seed and epochs; only the colour augmentation differs.

    Measured on this data (1,536 train, 512 valid), 8 epochs, seeds 0-7: the mean AUC drop
    under the two strong HED shifts was 0.0003-0.0016 with ``hed-strong`` and 0.014-0.44
    with D4 only (seed 0: 0.0010 and 0.080), while both models score 0.998-1.000 unshifted.
    The asserted margins hold for every one of those seeds with room to spare.
    """
    augmented_auc, augmented_drop = _strong_hed_auc_drop(synthetic_root, "hed-strong")
    plain_auc, plain_drop = _strong_hed_auc_drop(synthetic_root, "none")
    assert augmented_auc > 0.99  # both learned the task: the comparison is fair
    assert plain_auc > 0.99
    assert augmented_drop < 0.005  # seen: at most 0.0016
    assert plain_drop - augmented_drop > 0.01  # seen: at least 0.013 (seed 1), 0.079 at seed 0
