"""``pcam card``: MODEL_CARD.md from what a run recorded, every figure traced to its JSON.

The sources are written by the package's own writers (the run's config, the calibration file,
the evaluation report, the robustness folder, the data record of a full check) on cheap made-up
predictions, without TensorFlow; the explanation's ``explain.json`` holds the metrics of
:func:`pcam.explain.cam_quality.cam_report`. The slow test at the end runs a real (tiny) full
check, which writes its card itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pcam.cli import main
from pcam.config import FullCheckConfig, TrainConfig
from pcam.evaluation.card import (
    CARD_FILE,
    CARD_MARKER,
    FULLCHECK_FILE,
    Card,
    Figure,
    build_card,
    check_card_destination,
    gather_card_sources,
    is_card_file,
    record_data,
    render_card,
    write_card,
)

# -- the sources -----------------------------------------------------------------------------------


def _figures_of(labels: Any, probabilities: Any, nll: float) -> dict[str, float]:
    """A calibration file's block: NLL, both ECEs, Brier and ROC AUC (as pcam calibrate writes)."""
    from sklearn import metrics as skm

    from pcam.evaluation.calibration import calibration_report

    report = calibration_report(labels, probabilities)
    return {
        "nll": nll,
        "ece": report["ece"],
        "ece_equal_mass": report["ece_equal_mass"],
        "brier": report["brier"],
        "roc_auc": float(skm.roc_auc_score(labels, probabilities)),
    }


def _write_run(run: Path, data: Path) -> Path:
    """A run folder as pcam train leaves it (the model a stand-in); returns the model path."""
    from pcam.outputs import claim_directory, write_json_atomically

    claim_directory(run, "run")  # pcam.model.train.RUN, without importing Keras
    config = TrainConfig(
        data=str(data), out=str(run), model="small", epochs=3, batch_size=64, max_train_samples=512
    )
    write_json_atomically(run / "config.json", asdict(config))
    write_json_atomically(run / "best.json", {"epoch": 3, "val_loss": 0.3141592})
    model = run / "model.keras"
    model.write_bytes(b"a stand-in for a trained model: pcam card never loads it")
    return model


def _write_calibration(model: Path, data: Path, labels: Any, log_odds: Any) -> None:
    from pcam.evaluation.operating import choose_thresholds
    from pcam.evaluation.temperature import TEMPERATURE_BOUNDS, fit_temperature
    from pcam.model.temperature import sigmoid, write_calibration

    fit = fit_temperature(labels, log_odds)
    details = {
        "fitted_on": {
            "data": str(data),
            "split": "valid",
            "patches": int(labels.size),
            "tumour_fraction": float(labels.mean()),
        },
        "bounds": list(TEMPERATURE_BOUNDS),
        "before": _figures_of(labels, sigmoid(log_odds), fit.nll_before),
        "after": _figures_of(labels, sigmoid(log_odds / fit.temperature), fit.nll_after),
    }
    write_calibration(
        model,
        fit.temperature,
        thresholds=choose_thresholds(labels, log_odds),
        details=details,
        overwrite=False,
    )


def _write_explanation(folder: Path, model: Path, data: Path) -> None:
    """``explain.json`` as pcam explain writes it, with cam_report's metrics of made-up maps."""
    from pcam.explain.cam_quality import cam_report
    from pcam.outputs import staged_directory
    from pcam.testing import generate

    batch = generate(6, seed=4, positive_fraction=1.0)
    rng = np.random.default_rng(1)
    maps = batch.masks.astype(np.float32) + rng.uniform(0, 0.3, batch.masks.shape).astype(
        np.float32
    )

    def predict(images: Any) -> Any:
        return images.astype(np.float64).mean(axis=(1, 2, 3)) / 255.0

    # random maps at the patch's size: a coarser grid is upsampled by TensorFlow
    metrics = cam_report(predict, batch.images, maps, batch.masks, steps=8)
    metrics["names"] = [f"train_{index:06d}" for index in range(6)]
    report = {
        "model": str(model),
        "inputs": {"data": str(data), "split": "train", "indices": list(range(6))},
        "layer": ["block3_pool"],
        "layer_size": [6, 6],
        "method": "gradcam",
        "class_index": 1,
        "class_name": "tumour",
        "seed": 0,
        "threshold": 0.5,
        "patches": [],
        "metrics": metrics,
    }
    with staged_directory(folder, "explanation") as staging:
        (staging / "explain.json").write_text(json.dumps(report, indent=2) + "\n")


def _write_robustness(folder: Path, model: Path, data: Path, labels: Any, scores: Any) -> None:
    from pcam.evaluation.robustness import UNSHIFTED, shift_metrics, write_robustness

    baseline = shift_metrics(labels, scores)
    results = [
        {
            "name": UNSHIFTED,
            "kind": "none",
            "parameters": {},
            **baseline,
            "drop_accuracy": 0.0,
            "drop_auc": 0.0,
            "cam_correlation": None,
            "cam_correlation_min": None,
        }
    ]
    for name, kind, shifted, correlation in (
        ("hed-strong-h+", "hed", np.sqrt(scores), 0.61),  # called tumour far more often
        ("gamma-0.8", "rgb", scores, 0.97),  # unchanged
    ):
        row = shift_metrics(labels, shifted)
        results.append(
            {
                "name": name,
                "kind": kind,
                "parameters": {},
                **row,
                "drop_accuracy": baseline["accuracy"] - row["accuracy"],
                "drop_auc": baseline["roc_auc"] - row["roc_auc"],
                "cam_correlation": correlation,
                "cam_correlation_min": correlation - 0.2,
            }
        )
    report = {
        "model": str(model),
        "data": str(data),
        "split": "test",
        "patches": int(labels.size),
        "positive_fraction": float(labels.mean()),
        "tta": False,
        "seed": 0,
        "threshold": 0.5,
        "probabilities": {"calibrated": True, "note": "calibrated probabilities"},
        "cam": {"method": "gradcam", "layer": ["block4_pool"], "class": "tumour", "patches": 8},
        "results": results,
    }
    write_robustness(report, folder)


def _write_summary(check: Path, data: Path, metrics: dict[str, Any], robustness: Path) -> None:
    """``fullcheck.json`` as pcam fullcheck writes it (the data block from record_data)."""
    from pcam.outputs import write_json_atomically

    rows = {
        row["name"]: {key: row[key] for key in ("accuracy", "roc_auc", "drop_auc")}
        for row in json.loads((robustness / "robustness.json").read_text())["results"]
    }
    summary = {
        "passed": False,
        "failures": ["AUC on test is 0.8000, below the floor 0.9650: the recipe regressed"],
        "floors": {"accuracy": 0.9, "auc": 0.965},
        "figures": {"accuracy": metrics["accuracy"], "auc": metrics["roc_auc"], "split": "test"},
        "robustness": {
            "shifts": rows,
            "worst_drop_auc": max(row["drop_auc"] for row in rows.values()),
            "mean_drop_auc_hed_strong": rows["hed-strong-h+"]["drop_auc"],
        },
        "config": asdict(FullCheckConfig(data=str(data), out=str(check))),
        "epochs_trained_this_session": 3,
        "timings": {"train_seconds": 1234.5, "total_seconds": 2345.6},
        "machine": {
            "python": "3.12.1",
            "tensorflow": "2.18.0",
            "keras": "3.8.0",
            "gpus": [],
            "cpu_count": 2,
        },
        "data": record_data(data, ["train", "valid"]),
        "model": {"file": "model.keras", "bytes": 57, "parameters": 391_233},
    }
    write_json_atomically(check / FULLCHECK_FILE, summary)


def _write_check(check: Path, data: Path) -> Path:
    """A full check's folder: run/, report/, explain/, robustness/ and fullcheck.json."""
    from pcam.evaluation.evaluate import write_report
    from pcam.model.temperature import read_calibration
    from pcam.outputs import claim_directory

    claim_directory(check, "full check")
    model = _write_run(check / "run", data)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600)
    log_odds = (2 * labels - 1) * 1.2 + rng.normal(0.0, 1.5, labels.size)
    _write_calibration(model, data, labels[:300], log_odds[:300])
    calibration = read_calibration(model)
    test_labels, scores = labels[300:], calibration.probabilities(log_odds[300:])
    metrics = write_report(
        check / "report",
        test_labels,
        scores,
        bootstrap_rounds=50,
        extra={
            "model": str(model),
            "data": str(data),
            "split": "test",
            "tta": False,
            "probabilities": calibration.as_json(),
        },
        operating_thresholds={
            key: calibration.probability_threshold(value)
            for key, value in calibration.thresholds.items()
        },
        thresholds_from=f"chosen on the valid split of {data}",
    )
    _write_explanation(check / "explain", model, data)
    _write_robustness(check / "robustness", model, data, test_labels, scores)
    _write_summary(check, data, metrics, check / "robustness")
    return check


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic PCam files: train (64 patches, with mask) and valid (32)."""
    from pcam.testing import write_split

    root = tmp_path_factory.mktemp("card-data")
    write_split(root, "train", 64, seed=0, with_mask=True)
    write_split(root, "valid", 32, seed=1)
    return root


@pytest.fixture(scope="module")
def check_dir(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full check's folder, every source of a card in it (written once)."""
    return _write_check(tmp_path_factory.mktemp("card") / "check", tiny_data)


def _copy(check_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the check whose records name the copy's model, not the original's."""
    copy = Path(shutil.copytree(check_dir, tmp_path / "check"))
    for name in ("report/metrics.json", "explain/explain.json", "robustness/robustness.json"):
        path = copy / name
        record = json.loads(path.read_text())
        record["model"] = str(copy / "run" / "model.keras")
        path.write_text(json.dumps(record, indent=2) + "\n")
    return copy


def _edit(path: Path, change: Any) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record, indent=2) + "\n")


def _full_card(check: Path) -> Card:
    return build_card(gather_card_sources(check / "run", fullcheck_dir=check), card_dir=check)


# -- reading a card back ---------------------------------------------------------------------------


def _split_row(line: str) -> list[str]:
    inner = line.strip()[1:-1]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def _tables(text: str) -> dict[tuple[str, str, str], str]:
    """Every table cell of a card by (heading above it, first cell of its row, column header)."""
    cells: dict[tuple[str, str, str], str] = {}
    section, lines, index = "", text.splitlines(), 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        if not line.startswith("|"):
            index += 1
            continue
        header = _split_row(line)
        assert set(lines[index + 1].replace("|", "")) == {"-"}, lines[index + 1]
        index += 2
        while index < len(lines) and lines[index].startswith("|"):
            row = _split_row(lines[index])
            assert len(row) == len(header), lines[index]
            for column, text_ in zip(header[1:], row[1:], strict=True):
                key = (section, row[0], column)
                assert key not in cells, f"two cells at {key}"
                cells[key] = text_
            index += 1
    return cells


def _sections(text: str) -> dict[str, str]:
    """The text under each ``## `` heading, by heading."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _at(path: Path, key: tuple[str | int, ...]) -> Any:
    value: Any = json.loads(path.read_text())
    for part in key:
        value = value[part]
    return value


def _shown(value: Any, spec: str) -> str:
    """How the card must show ``value``: the rules of the card, written out again here."""
    if spec == "plain":
        if isinstance(value, list):
            return ", ".join(_shown(item, "plain") for item in value) or "none"
        if value is None or isinstance(value, bool):
            return {None: "none", True: "true", False: "false"}[value]
        return f"{value:g}" if isinstance(value, float) else str(value)
    if spec == "yesno":
        return {True: "yes", False: "no"}[value]
    if spec == ",d":
        assert type(value) is int, value
        return f"{value:,}"
    assert spec in (".4f", "+.4f", ".0f", "g"), spec
    assert type(value) in (int, float), value
    return format(float(value), spec)


def _contains(cell: str, text: str) -> bool:
    """Whether ``text`` is in ``cell`` as a whole figure (not the start of a longer number)."""
    return re.search(rf"(?<![\d.]){re.escape(text)}(?!\d|\.\d)", cell) is not None


def _check_every_figure(card: Card) -> int:
    """Each figure is its JSON value, shown by its rule, in its cell; no number is unaccounted."""
    cells = _tables(card.text)
    by_cell: dict[tuple[str, str, str], list[Figure]] = {}
    for figure in card.figures:
        value = _at(figure.file, figure.key)
        assert value == figure.value or (value != value and figure.value != figure.value)
        text = _shown(value, figure.spec)
        assert text == figure.text, figure.where
        where = (figure.section, figure.row, figure.column)
        assert where in cells, f"{figure.where}: no cell {where}"
        assert _contains(cells[where], text), f"{figure.where}: {text!r} not in {cells[where]!r}"
        by_cell.setdefault(where, []).append(figure)
    for where, text in cells.items():
        if where[0] == "Sources":
            continue
        for figure in sorted(by_cell.get(where, []), key=lambda f: -len(f.text)):
            text = text.replace(figure.text, "", 1)
        text = text.replace("(95% CI ", "(")  # the label of an interval
        assert not re.search(r"\d", text), f"{where}: a number that is no figure: {cells[where]!r}"
    return len(card.figures)


# -- every figure is its JSON value ----------------------------------------------------------------


def test_every_figure_in_the_card_equals_the_value_in_its_json(check_dir: Path) -> None:
    card = _full_card(check_dir)
    assert _check_every_figure(card) > 150
    files = {figure.file.name for figure in card.figures}
    assert files >= {
        "config.json",
        "best.json",
        ".pcam-output.json",
        "model.calibration.json",
        "metrics.json",
        "explain.json",
        "robustness.json",
        FULLCHECK_FILE,
    }
    metrics = json.loads((check_dir / "report" / "metrics.json").read_text())
    cells = _tables(card.text)
    low, high = metrics["ci95"]["accuracy"]
    assert cells[("Summary", "Accuracy", "Value")] == (
        f"{metrics['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f})"
    )


def test_the_sources_are_listed_with_their_sha256(check_dir: Path) -> None:
    text = _full_card(check_dir).text
    rows = [
        (file.strip("`"), digest)
        for (section, _, column), file in _tables(text).items()
        if section == "Sources" and column == "File"
        for (s2, r2, c2), digest in _tables(text).items()
        if (s2, c2) == ("Sources", "SHA-256") and r2 == _row_of(text, file)
    ]
    assert len(rows) == 10  # nine JSON files and the model
    for file, digest in rows:
        assert hashlib.sha256((check_dir / file).read_bytes()).hexdigest() == digest, file


def _row_of(text: str, file: str) -> str:
    [row] = [r for (s, r, c), v in _tables(text).items() if (s, c, v) == ("Sources", "File", file)]
    return row


def test_one_changed_value_changes_the_card_in_that_place_only(
    check_dir: Path, tmp_path: Path
) -> None:
    check = _copy(check_dir, tmp_path)
    metrics = check / "report" / "metrics.json"

    def set_accuracy(value: float) -> list[str]:
        _edit(metrics, lambda record: record.update(accuracy=value))
        return _full_card(check).text.splitlines()

    before, after = set_accuracy(0.8123), set_accuracy(0.8124)
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert len(changed) == 2, changed  # the accuracy, and the report's SHA-256 under Sources
    (old, new), (old_source, new_source) = changed
    assert old.startswith("| Accuracy | 0.8123 (95% CI ")
    assert new == old.replace("0.8123", "0.8124", 1)
    assert "metrics.json" in old_source
    assert hashlib.sha256(metrics.read_bytes()).hexdigest() in new_source


def test_precision_recall_and_the_confusion_matrix_are_labelled_right(
    check_dir: Path, tmp_path: Path
) -> None:
    """Different values everywhere: a swapped column or row would show."""
    check = _copy(check_dir, tmp_path)

    def asymmetric(record: dict[str, Any]) -> None:
        record["per_class"]["normal"].update(precision=0.1111, recall=0.2222, f1=0.3333)
        record["per_class"]["tumour"].update(precision=0.4444, recall=0.5555, f1=0.6666)
        record["confusion_matrix"]["matrix"] = [[11, 22], [33, 44]]

    _edit(check / "report" / "metrics.json", asymmetric)
    card = _full_card(check)
    cells = _tables(card.text)
    expected = {
        ("normal", "Precision"): "0.1111",
        ("normal", "Recall"): "0.2222",
        ("normal", "F1"): "0.3333",
        ("tumour", "Precision"): "0.4444",
        ("tumour", "Recall"): "0.5555",
        ("tumour", "F1"): "0.6666",
    }
    for (row, column), text in expected.items():
        assert cells[("Per class", row, column)] == text, (row, column)
    matrix = {
        ("true normal", "predicted normal"): "11",
        ("true normal", "predicted tumour"): "22",
        ("true tumour", "predicted normal"): "33",
        ("true tumour", "predicted tumour"): "44",
    }
    for (row, column), text in matrix.items():
        assert cells[("Confusion matrix", row, column)] == text, (row, column)
    _check_every_figure(card)


# -- what a card says ----------------------------------------------------------------------------


def test_the_card_says_research_use_only_and_names_the_shift_that_hurts(check_dir: Path) -> None:
    text = _full_card(check_dir).text
    assert text.startswith(CARD_MARKER + "\n")
    use = _sections(text)["Intended use and limitations"]
    assert "**Research use only.**" in use
    assert "not for clinical diagnosis" in use
    assert "lymph-node" in use
    assert "**Trained on synthetic data**" in use  # synthetic_root's marker says so
    assert "`hed-strong-h+`" in use  # its AUC dropped
    assert "`gamma-0.8`" not in use  # unchanged
    expected = [
        "Model",
        "Intended use and limitations",
        "Training data",
        "Recipe and config",
        "Metrics",
        "Calibration",
        "Grad-CAM quality",
        "Robustness",
        "Full training check",
        "Sources",
    ]
    assert list(_sections(text)) == expected
    assert "not recorded" not in text.lower().replace("not recorded (pcam fullcheck", "")


def test_absent_records_say_not_recorded_with_the_command_and_show_no_figure(
    check_dir: Path, tmp_path: Path
) -> None:
    check = _copy(check_dir, tmp_path)
    run = check / "run"
    (run / "model.calibration.json").unlink()
    card = build_card(gather_card_sources(run))
    sections = _sections(card.text)
    assert "**Research use only.**" in sections["Intended use and limitations"]
    model, data = run / "model.keras", json.loads((run / "config.json").read_text())["data"]
    commands = {
        "Metrics": f"`pcam evaluate --model {model} --data {data} --split test --out "
        f"{check / 'report'}` and pass its folder to `pcam card` as `--report`",
        "Grad-CAM quality": f"`pcam explain --model {model} --data {data} --split test --out "
        f"{check / 'explain'}`",
        "Robustness": f"`pcam robustness --model {model} --data {data} --split test --out "
        f"{check / 'robustness'}`",
        "Calibration": f"`pcam calibrate --model {model} --data {data}`",
    }
    for name, command in commands.items():
        assert sections[name].strip().startswith(("Not recorded: run `", "Temperature: not")), name
        assert command in sections[name], (name, sections[name])
    assert "Not part of a full check" in sections["Full training check"]
    assert "Checksums: not recorded" in sections["Training data"]
    absent = {*commands, "Full training check"}
    assert not [f for f in card.figures if f.section in absent]
    assert not [key for key in _tables(card.text) if key[0] in absent]
    for name in absent - {"Full training check"}:  # no figure, in a table or not
        words = sections[name].replace(str(check), "CHECK").replace(str(data), "DATA")
        assert not re.search(r"\d", words), (name, words)
    assert _tables(card.text)[("Model", "Parameters", "Value")].startswith("not recorded")
    _check_every_figure(card)


def test_a_report_from_another_model_is_refused(check_dir: Path, tmp_path: Path) -> None:
    check = _copy(check_dir, tmp_path)
    other = tmp_path / "other" / "model.keras"
    other.parent.mkdir()
    other.write_bytes(b"another model")
    _edit(check / "report" / "metrics.json", lambda record: record.update(model=str(other)))
    with pytest.raises(ValueError, match="expected a record of the run's model"):
        gather_card_sources(check / "run", check / "report")


def test_record_data_gives_each_files_checksums(tiny_data: Path) -> None:
    record = record_data(tiny_data, ["valid", "train", "valid"])
    assert record["kind"] == "synthetic data"
    assert list(record["splits"]) == ["valid", "train"]
    assert record["splits"]["valid"]["patches"] == 32
    names = [entry["name"] for entry in record["files"]]
    assert "camelyonpatch_level_2_split_train_mask.h5" in names
    assert len(names) == 7  # x, y and meta of each split, and the train mask
    for entry in record["files"]:
        data = (tiny_data / entry["name"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["md5"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
        assert entry["bytes"] == len(data)
        assert entry["official"] is False


def _outline(text: str) -> list[str]:
    """The headings and table headers of a card, in order."""
    lines = text.splitlines()
    return [
        line
        for index, line in enumerate(lines)
        if line.startswith("#")
        or (line.startswith("|") and index + 1 < len(lines) and lines[index + 1].startswith("|--"))
    ]


def test_the_example_card_in_docs_has_the_outline_of_a_card_written_now(check_dir: Path) -> None:
    """docs/MODEL_CARD.example.md (a real full check's card) has not drifted from the code."""
    example = Path(__file__).resolve().parent.parent / "docs" / "MODEL_CARD.example.md"
    text = example.read_text()
    assert text.startswith(CARD_MARKER + "\n")
    assert _outline(text) == _outline(_full_card(check_dir).text)


# -- writing ---------------------------------------------------------------------------------------


def test_write_card_refuses_a_file_pcam_did_not_write(tmp_path: Path) -> None:
    from pcam.errors import OutputExistsError, UnsafeOutputError

    mine = tmp_path / CARD_FILE
    mine.write_text("# my own notes\n")
    with pytest.raises(OutputExistsError):
        check_card_destination(mine, overwrite=False)
    with pytest.raises(UnsafeOutputError):
        check_card_destination(mine, overwrite=True)
    assert not is_card_file(mine)
    mine.write_text(CARD_MARKER + "\n# a card\n")
    assert is_card_file(mine)
    assert check_card_destination(mine, overwrite=True) == mine
    with pytest.raises(UnsafeOutputError):
        check_card_destination(tmp_path, overwrite=True)


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    assert err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("pcam card: error: "), err
    return err


def test_cli_writes_the_card_in_the_run_folder_or_to_out(
    check_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check = _copy(check_dir, tmp_path)
    run = check / "run"
    argv = ["card", str(run), "--report", str(check / "report")]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"model card: {run / CARD_FILE}\n"
    written = (run / CARD_FILE).read_text()
    assert written == render_card(gather_card_sources(run, check / "report"), card_dir=run)
    assert "`../report/metrics.json`" in written  # sources relative to the card

    # a second run refuses, then --overwrite replaces pcam's own card
    assert main(argv) == 1
    _one_line_error(capsys.readouterr().err)
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()

    out = tmp_path / "cards" / "mine.md"
    assert main(["card", str(run), "--fullcheck", str(check), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"model card: {out}\n"
    assert _sections(out.read_text())["Full training check"].count("|") > 10

    assert main(["card", str(run), "--fullcheck", str(check)]) == 0
    assert capsys.readouterr().out == f"model card: {check / CARD_FILE}\n"


def test_cli_never_replaces_a_users_file(
    check_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check = _copy(check_dir, tmp_path)
    mine = check / "run" / CARD_FILE
    mine.write_text("# my own model card\n")
    for extra in ([], ["--overwrite"]):
        assert main(["card", str(check / "run"), *extra]) == 1
        err = _one_line_error(capsys.readouterr().err)
        assert str(mine) in err
    assert "pcam never deletes files it did not write" in err
    assert mine.read_text() == "# my own model card\n"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no run", "expected a run folder written by pcam train, found no such folder"),
        ("no config", "config.json: expected the config.json that pcam train writes, found no"),
        ("no model", "model.keras: expected the run's trained model, found no such file"),
        (
            "bad config",
            "config.json: expected the config.json that pcam train writes, found a "
            "file that is not JSON",
        ),
        ("config list", "found a JSON list"),
        (
            "bad metrics",
            "metrics.json: expected the metrics.json that pcam evaluate writes, "
            "found a file that is not JSON",
        ),
        (
            "no metrics",
            "metrics.json: expected the metrics.json that pcam evaluate writes, found no such file",
        ),
        ("text accuracy", "metrics.json: expected a number at accuracy, found 'high'; write it"),
        ("bad calibration", "model.calibration.json: expected a pcam calibration file"),
        (
            "no fullcheck",
            "fullcheck.json: expected the fullcheck.json that pcam fullcheck "
            "writes, found no such file",
        ),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(
    damage: str,
    message: str,
    check_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    check = _copy(check_dir, tmp_path)
    run = check / "run"
    argv = ["card", str(run), "--report", str(check / "report")]
    if damage == "no run":
        argv[1] = str(tmp_path / "missing")
    elif damage == "no config":
        (run / "config.json").unlink()
    elif damage == "no model":
        (run / "model.keras").unlink()
    elif damage == "bad config":
        (run / "config.json").write_text('{"model": "small",')
    elif damage == "config list":
        (run / "config.json").write_text("[]")
    elif damage == "bad metrics":
        (check / "report" / "metrics.json").write_text("{nan")
    elif damage == "no metrics":
        (check / "report" / "metrics.json").unlink()
    elif damage == "text accuracy":
        _edit(check / "report" / "metrics.json", lambda record: record.update(accuracy="high"))
    elif damage == "bad calibration":
        (run / "model.calibration.json").write_text("{}")
    else:
        shutil.move(check / FULLCHECK_FILE, tmp_path / "moved.json")
        argv = ["card", str(run), "--fullcheck", str(check)]
    assert main(argv) == 1
    err = _one_line_error(capsys.readouterr().err)
    assert message in err, err
    assert not (run / CARD_FILE).exists()
    assert not (check / CARD_FILE).exists()
    assert not list(run.glob(".*partial*"))


def test_card_does_not_import_tensorflow(check_dir: Path, tmp_path: Path) -> None:
    check = _copy(check_dir, tmp_path)
    script = (
        "import sys\nfrom pcam.cli import main\n"
        f"code = main(['card', {str(check / 'run')!r}, '--fullcheck', {str(check)!r}])\n"
        "print(code, 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 False", result.stdout
    assert (check / CARD_FILE).is_file()


# -- the full check writes its card ----------------------------------------------------------------


@pytest.mark.slow
def test_fullcheck_writes_its_model_card_next_to_fullcheck_json(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """A tiny full check on synthetic data: its card describes it, every figure traced."""
    pytest.importorskip("tensorflow")
    from pcam.fullcheck import SUMMARY_FILE, full_check

    out = tmp_path / "check"
    config = FullCheckConfig(
        data=str(synthetic_root),
        out=str(out),
        model="small",
        weights=None,
        epochs=1,
        batch_size=64,
        lr=1e-3,
        max_train_samples=128,
        eval_split="valid",
        tta=False,
        min_accuracy=0.0,
        min_auc=0.0,
        explain_patches=4,
    )
    result = full_check(config, say=lambda line: None, verbose=0)
    assert SUMMARY_FILE == FULLCHECK_FILE
    assert result.card_path == out / CARD_FILE
    text = (out / CARD_FILE).read_text()
    assert text == render_card(gather_card_sources(out / "run", fullcheck_dir=out), card_dir=out)
    card = build_card(gather_card_sources(out / "run", fullcheck_dir=out))
    assert _check_every_figure(card) > 150
    sections = _sections(text)
    for name in ("Metrics", "Calibration", "Grad-CAM quality", "Robustness", "Training data"):
        assert "not recorded" not in sections[name].lower(), name
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["model"]["parameters"] > 0
    assert {entry["split"] for entry in summary["data"]["files"]} == {"train", "valid"}
    assert "**Research use only.**" in text
    # a pcam card run by hand on the same folder writes the same card
    assert write_card(out / "run", fullcheck=out, overwrite=True) == out / CARD_FILE
    assert (out / CARD_FILE).read_text() == text


@pytest.mark.slow
def test_fullcheck_refuses_a_model_card_pcam_did_not_write_before_any_work(
    tiny_data: Path, tmp_path: Path
) -> None:
    from pcam.errors import UnsafeOutputError
    from pcam.fullcheck import full_check
    from pcam.outputs import MARKER, claim_directory

    out = tmp_path / "check"
    claim_directory(out, "full check")
    (out / CARD_FILE).write_text("# my notes on this check\n")
    config = FullCheckConfig(
        data=str(tiny_data), out=str(out), model="small", weights=None, eval_split="valid"
    )
    with pytest.raises(UnsafeOutputError, match="a file pcam did not write"):
        full_check(config, say=lambda line: None)
    assert sorted(entry.name for entry in out.iterdir()) == sorted([MARKER, CARD_FILE])
    assert (out / CARD_FILE).read_text() == "# my notes on this check\n"
