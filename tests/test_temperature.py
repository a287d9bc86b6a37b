"""Temperature scaling: the fit, the calibration file beside the model, and who reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from pcam.errors import (
    InvalidArgumentError,
    OutputExistsError,
    UnreadableFileError,
    UnsafeOutputError,
)
from pcam.evaluation.temperature import (
    TEMPERATURE_BOUNDS,
    fit_temperature,
    format_calibration,
    nll,
)
from pcam.model.temperature import (
    FORMAT,
    UNCALIBRATED,
    VERSION,
    Calibration,
    attach,
    calibration_of,
    calibration_path,
    check_calibration_destination,
    file_digest,
    is_calibration_file,
    read_calibration,
    sigmoid,
    write_calibration,
)
from tests.profiles import examples


def _drawn(seed: int, n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true log-odds ``z``, and a model's log-odds ``scale * z``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    labels = (rng.random(n) < sigmoid(z)).astype(np.int64)
    return labels, scale * z


# -- the fit -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("scale", "expected"), [(3.0, 3.0), (0.5, 0.5), (1.0, 1.0)])
def test_the_fit_recovers_the_temperature_that_undoes_a_scale(
    seed: int, scale: float, expected: float
) -> None:
    """Overconfident log-odds (3z) need T = 3, underconfident ones (z/2) T = 0.5: not 1/T."""
    labels, log_odds = _drawn(seed, 40_000, scale)
    fit = fit_temperature(labels, log_odds)
    assert fit.temperature == pytest.approx(expected, rel=0.04)
    assert fit.nll_after <= fit.nll_before
    if scale != 1.0:
        assert fit.nll_after < fit.nll_before - 0.01


def test_the_fit_reaches_the_minimum_of_the_nll() -> None:
    labels, log_odds = _drawn(5, 5_000, 2.2)
    fit = fit_temperature(labels, log_odds)
    for nearby in (fit.temperature * 0.99, fit.temperature * 1.01):
        assert nll(labels, log_odds, nearby) > fit.nll_after
    assert nll(labels, log_odds, fit.temperature) == fit.nll_after
    assert nll(labels, log_odds) == fit.nll_before


@settings(max_examples=examples(60), deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(2, 400),
    scale=st.floats(0.01, 30.0),
    shift=st.floats(-3.0, 3.0),
)
def test_the_fit_never_raises_the_nll_and_never_changes_the_ranking(
    seed: int, n: int, scale: float, shift: float
) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]  # both classes
    log_odds = np.round(scale * (rng.normal(size=n) + shift * labels), 3)
    fit = fit_temperature(labels, log_odds)
    low, high = TEMPERATURE_BOUNDS
    assert low <= fit.temperature <= high
    assert fit.nll_after <= fit.nll_before
    assert fit.nll_before == nll(labels, log_odds)
    after = Calibration(fit.temperature, Path("x")).probabilities(log_odds)
    order = np.argsort(log_odds, kind="stable")
    assert np.all(np.diff(after[order]) >= 0)  # the ranking is the log-odds' ranking
    if np.unique(after).size == np.unique(log_odds).size:  # no probability saturated to a tie
        assert skm.roc_auc_score(labels, after) == skm.roc_auc_score(labels, log_odds)


def test_the_auc_is_unchanged_exactly_where_no_probability_saturates() -> None:
    labels, log_odds = _drawn(3, 5_000, 2.5)
    fit = fit_temperature(labels, log_odds)
    assert fit.temperature == pytest.approx(2.5, rel=0.08)
    before = Calibration(1.0).probabilities(log_odds)
    after = Calibration(fit.temperature, Path("x")).probabilities(log_odds)
    assert skm.roc_auc_score(labels, after) == skm.roc_auc_score(labels, before)


def test_saturated_probabilities_tie_and_calibration_unties_them() -> None:
    """A very confident model's probabilities round to 1.0 together: T > 1 restores the order.

    Log-odds 40 (normal) and 45 (tumour) are both 1.0 in float64: a tie that costs half of one
    of the four (tumour, normal) pairs. The log-odds rank 3 pairs of 4 right (0.75; tumour 2 is
    below normal 40), the saturated probabilities 2.5 (0.625). At T = 10 they are 0.98 and 0.99:
    the log-odds' order, and its AUC.
    """
    labels = np.array([0, 1, 0, 1])
    log_odds = np.array([40.0, 45.0, -3.0, 2.0])
    raw = Calibration(1.0).probabilities(log_odds)
    assert raw[0] == raw[1] == 1.0
    assert skm.roc_auc_score(labels, raw) == 0.625
    calibrated = Calibration(10.0, Path("x")).probabilities(log_odds)
    assert skm.roc_auc_score(labels, calibrated) == skm.roc_auc_score(labels, log_odds) == 0.75


def test_the_nll_is_the_reports_clipped_log_loss() -> None:
    labels = np.array([1, 0, 1, 0, 1])
    log_odds = np.array([2.0, -1.0, -0.5, 40.0, 3.0])  # 40: a confident mistake, clipped
    expected = skm.log_loss(labels, np.clip(sigmoid(log_odds / 2.0), 1e-7, 1 - 1e-7))
    assert nll(labels, log_odds, 2.0) == pytest.approx(expected, rel=1e-12)
    # clipped at both ends: a tumour at log-odds -40 costs -log(1e-7), not 40
    assert nll([1], [-40.0]) == pytest.approx(-np.log(1e-7), rel=1e-9)
    assert nll([0], [40.0]) == pytest.approx(-np.log(1e-7), rel=1e-6)
    # by hand for one patch: label 1 at log-odds 2 and T = 2 -> -log(sigmoid(1))
    assert nll([1], [2.0], 2.0) == pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-12)
    assert nll([0], [2.0], 2.0) == pytest.approx(np.log1p(np.exp(1.0)), rel=1e-12)


def test_perfectly_separated_log_odds_are_sharpened_to_the_bound() -> None:
    """Nothing limits the fit but its bounds when every patch is right: T goes to the low end."""
    fit = fit_temperature([0, 0, 1, 1], [-1.0, -0.5, 0.5, 1.0])
    assert fit.temperature == pytest.approx(TEMPERATURE_BOUNDS[0], rel=1e-3)
    wrong = fit_temperature([1, 1, 0, 0], [-1.0, -0.5, 0.5, 1.0])  # every patch wrong
    assert wrong.temperature == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-3)


@pytest.mark.parametrize(
    ("labels", "log_odds", "message"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "labels: expected both normal (0) and tumour (1) patches"),
        ([0, 0], [0.1, 0.2], "found '2 patches of class 0 only'"),
        (
            [0, 1],
            [0.1, float("nan")],
            "log_odds: expected finite values, found '1 not finite, first nan at index 1'",
        ),
        ([0, 1], [0.1, float("inf")], "log_odds: expected finite values"),
        ([0, 1, 1], [0.1, 0.2], "log_odds: expected one per label (3), found '2 values'"),
        ([0, 2], [0.1, 0.2], "labels: expected values 0 or 1, found [2.0]"),
        ([], [], "labels: expected at least one label, found 'none'"),
    ],
)
def test_bad_input_to_the_fit_is_one_line(labels: Any, log_odds: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        fit_temperature(labels, log_odds)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("bounds", [(1.5, 3.0), (0.0, 3.0), (0.5, 0.9), (-1.0, 2.0)])
def test_bounds_that_exclude_one_are_refused(bounds: tuple[float, float]) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        fit_temperature([0, 1], [0.0, 1.0], bounds=bounds)
    assert str(caught.value) == f"bounds: expected 0 < low <= 1 <= high, found {bounds!r}"


@pytest.mark.parametrize("bounds", [(1.0, 3.0), (0.5, 1.0), (1.0, 1.0)])
def test_bounds_may_end_at_one(bounds: tuple[float, float]) -> None:
    labels, log_odds = _drawn(2, 2_000, 2.0)  # wants T = 2: the bound nearest to it wins
    fit = fit_temperature(labels, log_odds, bounds=bounds)
    assert fit.temperature == pytest.approx(min(bounds[1], 2.0), rel=0.1)


def test_log_odds_that_carry_no_information_keep_the_model_as_it_is() -> None:
    """Equal log-odds give the same NLL at every T: the fit keeps T = 1, not some bound."""
    fit = fit_temperature([0, 1, 0, 1], [0.0, 0.0, 0.0, 0.0])
    assert fit.temperature == 1.0
    assert fit.nll_after == fit.nll_before == pytest.approx(np.log(2.0))


@pytest.mark.parametrize("target", [0.052, 0.73, 1.37, 19.3])
def test_the_fit_is_refined_between_the_grid_points(target: float) -> None:
    """The search ends at the NLL's minimum to 1e-4, also next to either bound."""
    import warnings

    labels, log_odds = _drawn(4, 4_000, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns of an option it does not know
        fit = fit_temperature(labels, log_odds)
    assert fit.temperature not in (TEMPERATURE_BOUNDS[0], TEMPERATURE_BOUNDS[1], 1.0)
    for nearby in (fit.temperature * (1 - 1e-4), fit.temperature * (1 + 1e-4)):
        assert nll(labels, log_odds, nearby) >= fit.nll_after


def test_one_patch_of_one_class_is_one_line() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        fit_temperature([1], [0.3])
    assert str(caught.value) == (
        "labels: expected both normal (0) and tumour (1) patches to fit a temperature on, "
        "found '1 patches of class 1 only'"
    )


def test_the_nll_names_the_log_odds_in_its_errors() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^log_odds: expected finite values"):
        nll([0, 1], [0.0, float("nan")])


# -- the calibration file ------------------------------------------------------------------------


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A stand-in model file (the file's bytes are all the calibration file checks)."""
    path = tmp_path / "run" / "model.keras"
    path.parent.mkdir()
    path.write_bytes(b"weights " * 100)
    return path


def _write(model_file: Path, temperature: float = 2.5, **changes: Any) -> Path:
    return write_calibration(
        model_file,
        temperature,
        thresholds=changes.pop("thresholds", {"sensitivity_at_specificity_0.95": 1.25}),
        details=changes.pop("details", {"fitted_on": {"split": "valid", "data": "D"}}),
        overwrite=changes.pop("overwrite", False),
    )


def test_the_file_sits_beside_the_model_and_reads_back(model_file: Path) -> None:
    path = _write(model_file)
    assert path == model_file.parent / "model.calibration.json"
    assert calibration_path(model_file) == path
    record = json.loads(path.read_text())
    assert record["format"] == FORMAT
    assert record["version"] == VERSION
    assert record["model"] == {"file": "model.keras", "sha256": file_digest(model_file)}
    assert record["thresholds"]["sensitivity_at_specificity_0.95"] == {
        "log_odds": 1.25,
        "probability": pytest.approx(float(sigmoid(1.25 / 2.5))),
    }
    calibration = read_calibration(model_file)
    assert calibration.calibrated
    assert calibration.path == path
    assert calibration.temperature == 2.5
    assert calibration.thresholds == {"sensitivity_at_specificity_0.95": 1.25}
    assert calibration.probability_threshold(1.25) == pytest.approx(float(sigmoid(0.5)))
    assert calibration.probabilities([5.0, -2.5]) == pytest.approx(sigmoid([2.0, -1.0]))
    note = calibration.describe()
    assert note.startswith("calibrated probabilities (temperature 2.5, fitted on valid, from ")
    assert calibration.as_json() == {
        "calibrated": True,
        "temperature": 2.5,
        "file": str(path),
        "fitted_on": {"split": "valid", "data": "D"},
        "note": note,
    }


def test_no_file_is_uncalibrated_and_says_what_to_run(model_file: Path) -> None:
    calibration = read_calibration(model_file)
    assert not calibration.calibrated
    assert calibration.temperature == 1.0
    assert calibration.describe() == (
        "uncalibrated probabilities (no model.calibration.json beside the model; "
        "run pcam calibrate)"
    )
    assert UNCALIBRATED.as_json()["calibrated"] is False
    assert UNCALIBRATED.probabilities([0.0, 2.0]) == pytest.approx(sigmoid([0.0, 2.0]))


def test_a_file_fitted_to_another_model_is_one_line(model_file: Path) -> None:
    _write(model_file)
    model_file.write_bytes(b"retrained " * 100)  # pcam train --overwrite, say
    with pytest.raises(UnreadableFileError) as caught:
        read_calibration(model_file)
    old, new = file_digest_of(b"weights " * 100), file_digest(model_file)
    assert str(caught.value) == (
        f"{calibration_path(model_file)}: expected the calibration of model.keras (SHA-256 "
        f"{new[:12]}...), found one fitted to another model file (SHA-256 {old[:12]}...); "
        "run pcam calibrate again with --overwrite, or pass --no-calibration"
    )


def file_digest_of(content: bytes) -> str:
    import hashlib

    return hashlib.sha256(content).hexdigest()


def test_a_model_entry_that_is_not_a_record_is_another_model(model_file: Path) -> None:
    path = _write(model_file)
    record = json.loads(path.read_text())
    record["model"] = "model.keras"
    path.write_text(json.dumps(record))
    with pytest.raises(
        UnreadableFileError, match=r"found one fitted to another model file \(SHA-256 None"
    ):
        read_calibration(model_file)


def test_a_file_without_thresholds_has_none(model_file: Path) -> None:
    path = _write(model_file, 0.5)  # a sharpening temperature (below 1) is as valid as any
    record = json.loads(path.read_text())
    del record["thresholds"]
    path.write_text(json.dumps(record))
    calibration = read_calibration(model_file)
    assert calibration.temperature == 0.5
    assert calibration.thresholds == {}
    assert calibration.describe().startswith(
        "calibrated probabilities (temperature 0.5, fitted on valid"
    )
    assert Calibration(2.0, Path("x")).describe() == (
        "calibrated probabilities (temperature 2, fitted on ?, from x)"
    )
    assert UNCALIBRATED.as_json()["file"] is None
    assert record["method"] == "temperature scaling of the tumour log-odds: p = sigmoid(z / T)"


def test_only_a_json_record_of_the_format_is_a_calibration_file(tmp_path: Path) -> None:
    assert not is_calibration_file(tmp_path)  # a folder cannot be read
    assert not is_calibration_file(tmp_path / "absent.json")
    (tmp_path / "list.json").write_text(f'["{FORMAT}"]')
    assert not is_calibration_file(tmp_path / "list.json")
    (tmp_path / "ok.json").write_text(f'{{"format": "{FORMAT}"}}')
    assert is_calibration_file(tmp_path / "ok.json")


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ("{not json", "found a file that is not JSON"),
        ('{"format": "other"}', "found a file without the calibration format field"),
        ('["pcam-calibration"]', "found a file without the calibration format field"),
        (f'{{"format": "{FORMAT}", "version": 2}}', "found version 2"),
        (f'{{"format": "{FORMAT}", "version": 1, "temperature": 0}}', "found temperature 0"),
        (f'{{"format": "{FORMAT}", "version": 1, "temperature": -2}}', "found temperature -2"),
        (f'{{"format": "{FORMAT}", "version": 1, "temperature": NaN}}', "found temperature nan"),
        (f'{{"format": "{FORMAT}", "version": 1, "temperature": true}}', "found temperature True"),
        (f'{{"format": "{FORMAT}", "version": 1, "temperature": "2"}}', "found temperature '2'"),
        (
            f'{{"format": "{FORMAT}", "version": 1, "temperature": 2, "thresholds": [1]}}',
            "found thresholds [1]",
        ),
        (
            f'{{"format": "{FORMAT}", "version": 1, "temperature": 2, '
            '"thresholds": {"k": {"log_odds": "1"}}}',
            "found threshold 'k' without a log_odds number",
        ),
        (
            f'{{"format": "{FORMAT}", "version": 1, "temperature": 2, '
            '"thresholds": {"k": {"log_odds": Infinity}}}',
            "found threshold 'k' of inf",
        ),
        (
            f'{{"format": "{FORMAT}", "version": 1, "temperature": 2, "thresholds": {{"k": 1.5}}}}',
            "found threshold 'k' without a log_odds number",
        ),
    ],
)
def test_a_damaged_calibration_file_is_one_line(model_file: Path, content: str, found: str) -> None:
    calibration_path(model_file).write_text(content)
    with pytest.raises(UnreadableFileError) as caught:
        read_calibration(model_file)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"{calibration_path(model_file)}: expected a pcam calibration file ({FORMAT} version 1) "
        "written by pcam calibrate, found "
    )
    assert found in message
    assert message.endswith("; run pcam calibrate again with --overwrite, or pass --no-calibration")


def test_an_existing_file_is_replaced_only_with_overwrite_and_only_when_pcams(
    model_file: Path,
) -> None:
    _write(model_file, 2.0)
    with pytest.raises(OutputExistsError) as exists:
        _write(model_file, 3.0)
    assert str(exists.value).startswith(f"{calibration_path(model_file)}: expected a new")
    assert read_calibration(model_file).temperature == 2.0
    _write(model_file, 3.0, overwrite=True)
    assert read_calibration(model_file).temperature == 3.0
    path = calibration_path(model_file)
    path.write_text('{"mine": true}')  # the user's own file of that name
    with pytest.raises(UnsafeOutputError) as unsafe:
        _write(model_file, 4.0, overwrite=True)
    assert str(unsafe.value).startswith(
        f"{path}: expected a calibration file that pcam wrote, found a file pcam did not write; "
    )
    assert path.read_text() == '{"mine": true}'


def test_a_folder_in_the_files_place_is_refused(model_file: Path) -> None:
    calibration_path(model_file).mkdir()
    with pytest.raises(UnsafeOutputError) as caught:
        check_calibration_destination(model_file, overwrite=True)
    assert str(caught.value).startswith(
        f"{calibration_path(model_file)}: expected a calibration file to write, found a folder; "
    )


def test_a_temperature_that_is_not_positive_is_never_written(model_file: Path) -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(UnreadableFileError) as caught:
            _write(model_file, bad)
        assert str(caught.value) == (
            f"{calibration_path(model_file)}: expected a pcam calibration file ({FORMAT} version "
            f"1) written by pcam calibrate, found temperature {bad!r}; fit again"
        )
    assert not calibration_path(model_file).exists()


def test_the_printed_table_shows_both_rows() -> None:
    figures = {"nll": 0.5, "ece": 0.1, "ece_equal_mass": 0.12, "brier": 0.2, "roc_auc": 0.9}
    record = {
        "temperature": 1.75,
        "fitted_on": {"split": "valid", "patches": 2048, "tumour_fraction": 0.25},
        "before": figures,
        "after": {**figures, "nll": 0.4, "ece": 0.02},
    }
    lines = format_calibration(record).splitlines()
    assert lines[0] == "temperature 1.7500, fitted on valid (2,048 patches, 25.0% tumour)"
    assert lines[1] == " " * 14 + "      NLL      ECE  ECE (mass)    Brier  ROC AUC"
    assert lines[2].split() == ["before", "0.5000", "0.1000", "0.1200", "0.2000", "0.9000"]
    assert lines[3].split() == ["after", "0.4000", "0.0200", "0.1200", "0.2000", "0.9000"]


def test_a_calibration_is_attached_to_one_model_object_only() -> None:
    class Model:
        """A stand-in: any object a loader returns."""

    first, second = Model(), Model()
    fitted = Calibration(3.0, Path("m.calibration.json"))
    attach(first, fitted)
    assert calibration_of(first) is fitted
    assert calibration_of(second) is UNCALIBRATED
    attach(first, UNCALIBRATED)
    assert calibration_of(first) is UNCALIBRATED


def test_checked_scores_are_flat_int64_labels_and_float64_scores() -> None:
    from pcam.evaluation.predictions import check_scores

    truth, values = check_scores(np.array([[0], [1]], dtype=np.uint8), [[3], [-4]])
    assert truth.dtype == np.int64
    assert values.dtype == np.float64
    assert truth.tolist() == [0, 1]
    assert values.tolist() == [3.0, -4.0]


def test_the_sigmoid_works_in_float64_whatever_comes_in() -> None:
    """In float32 sigmoid(20) rounds to 1.0; float64 keeps 1 - 2e-9."""
    log_odds = np.array([20.0, -20.0], dtype=np.float32)
    for result in (sigmoid(log_odds), Calibration(1.0).probabilities(log_odds)):
        assert result.dtype == np.float64
        assert 0.0 < result[1] < result[0] < 1.0
        assert result[0] == pytest.approx(1.0 - np.exp(-20.0), abs=1e-15)
    # divided by T in float64 too: float32 division would round 20 / 3 at the 7th digit
    calibrated = Calibration(3.0, Path("x")).probabilities(log_odds)
    assert np.array_equal(calibrated, sigmoid(log_odds.astype(np.float64) / 3.0))
    assert not np.array_equal(calibrated, sigmoid(log_odds / np.float32(3.0)))


def test_a_file_that_is_not_json_names_the_parsers_complaint(model_file: Path) -> None:
    calibration_path(model_file).write_text("{not json")
    with pytest.raises(UnreadableFileError) as caught:
        read_calibration(model_file)
    assert "found a file that is not JSON (Expecting property name enclosed in double quotes: " in (
        str(caught.value)
    )
