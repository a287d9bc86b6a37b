"""Calibration figures (pcam.evaluation.calibration): ECE, Brier score and reliability bins."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve

from pcam.errors import InvalidArgumentError
from pcam.evaluation.calibration import (
    DEFAULT_BINS,
    calibration_report,
    expected_calibration_error,
    reliability_bins,
)


def test_hand_built_bins_give_the_exact_ece() -> None:
    # bin [0.0, 0.5): 0.1 and 0.3 (mean 0.2), no tumour -> gap 0.2, weight 2/5
    # bin [0.5, 1.0]: 0.6, 0.8, 1.0 (mean 0.8), one tumour in three -> gap 0.8 - 1/3, weight 3/5
    labels = [0, 0, 1, 0, 0]
    probabilities = [0.1, 0.3, 0.6, 0.8, 1.0]
    binned = reliability_bins(labels, probabilities, bins=2)
    assert binned.edges.tolist() == [0.0, 0.5, 1.0]
    assert binned.counts.tolist() == [2, 3]
    assert binned.mean_probability == pytest.approx([0.2, 0.8])
    assert binned.observed_frequency == pytest.approx([0.0, 1 / 3])
    expected = 2 / 5 * 0.2 + 3 / 5 * (0.8 - 1 / 3)
    assert expected_calibration_error(labels, probabilities, bins=2) == pytest.approx(expected)


def test_an_underconfident_model_has_a_gap_as_large_as_an_overconfident_one() -> None:
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    under = [0.6] * 4 + [0.4] * 4  # right every time, but unsure
    over = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]  # sure every time, right half the time
    assert expected_calibration_error(labels, under) == pytest.approx(0.4)
    assert expected_calibration_error(labels, over) == pytest.approx(0.5)


def test_labels_and_probabilities_are_not_interchangeable() -> None:
    """The ECE of (labels, p) differs from that of (p rounded, labels): the order matters."""
    labels = np.array([1, 0, 0, 0])
    probabilities = np.array([0.9, 0.9, 0.2, 0.2])
    # [0.8, 1]: mean 0.9, observed 0.5; [0, 0.2]: mean 0.2, observed 0 -> (0.4 + 0.2) / 2
    assert expected_calibration_error(labels, probabilities, bins=5) == pytest.approx(0.3)
    swapped = expected_calibration_error((probabilities > 0.5).astype(int), labels * 1.0, bins=5)
    assert swapped == pytest.approx(0.25)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_bins_agree_with_scikit_learns_calibration_curve(strategy: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    probabilities = rng.beta(0.7, 0.7, size=997)
    labels = (rng.random(997) < probabilities**1.5).astype(int)
    binned = reliability_bins(labels, probabilities, bins=10, strategy=strategy)  # type: ignore[arg-type]
    observed, predicted = calibration_curve(labels, probabilities, n_bins=10, strategy=strategy)
    filled = binned.counts > 0
    np.testing.assert_allclose(binned.observed_frequency[filled], observed, rtol=1e-12)
    np.testing.assert_allclose(binned.mean_probability[filled], predicted, rtol=1e-12)
    assert binned.counts.sum() == 997
    assert np.isnan(binned.mean_probability[~filled]).all()


def test_equal_mass_bins_hold_equal_shares() -> None:
    probabilities = np.linspace(0.0, 1.0, 300, endpoint=False) ** 3  # crowded near 0
    labels = np.zeros(300, dtype=int)
    uniform = reliability_bins(labels, probabilities, bins=15)
    quantile = reliability_bins(labels, probabilities, bins=15, strategy="quantile")
    assert uniform.counts.max() > 100  # the first width holds most patches
    assert set(quantile.counts.tolist()) <= {19, 20, 21}


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(4000, 8000))
def test_calibrated_predictions_have_an_ece_near_zero(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    probabilities = rng.random(n)
    labels = (rng.random(n) < probabilities).astype(int)  # tumour with exactly probability p
    assert expected_calibration_error(labels, probabilities) < 0.05
    assert expected_calibration_error(labels, probabilities, strategy="quantile") < 0.05


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2000, 6000))
def test_overconfident_predictions_have_a_large_ece(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.random(n)
    labels = (rng.random(n) < truth).astype(int)
    overconfident = np.clip(0.5 + 3.0 * (truth - 0.5), 0.0, 1.0)  # pushed towards 0 and 1
    assert expected_calibration_error(labels, overconfident) > 0.1
    assert expected_calibration_error(labels, overconfident, strategy="quantile") > 0.1


def test_the_report_has_both_eces_the_brier_score_and_the_bins() -> None:
    labels = [0, 0, 1, 0, 0]
    probabilities = [0.1, 0.3, 0.6, 0.8, 1.0]
    report = calibration_report(labels, probabilities, bins=2)
    assert report == {
        "bins": 2,
        "ece": pytest.approx(2 / 5 * 0.2 + 3 / 5 * (0.8 - 1 / 3)),
        "ece_equal_mass": pytest.approx(
            expected_calibration_error(labels, probabilities, bins=2, strategy="quantile")
        ),
        "brier": pytest.approx((0.01 + 0.09 + 0.16 + 0.64 + 1.0) / 5),
    }
    assert calibration_report(labels, probabilities)["bins"] == DEFAULT_BINS == 15


@pytest.mark.parametrize(
    ("labels", "probabilities", "bins", "message"),
    [
        ([], [], 15, "labels: expected at least one label"),
        ([0, 1], [0.5], 15, "probabilities: expected one per label (2)"),
        ([0, 2], [0.5, 0.5], 15, "labels: expected values 0 or 1, found [2.0]"),
        (
            [0, 1],
            [0.5, float("nan")],
            15,
            "probabilities: expected finite values, found '1 not finite, first nan at index 1'",
        ),
        ([0, 1], [0.5, 1.5], 15, "probabilities: expected finite values in [0, 1]"),
        ([0, 1], [0.5, 0.5], 0, "bins: expected a whole number >= 1, found 0"),
    ],
)
def test_bad_input_is_one_line(
    labels: list[int], probabilities: list[float], bins: int, message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        expected_calibration_error(labels, probabilities, bins=bins)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_a_bin_of_one_patch_counts() -> None:
    # [0, 0.5): 0.1 and 0.2, no tumour -> gap 0.15, weight 2/3; [0.5, 1]: 0.95 alone, tumour
    # -> gap 0.05, weight 1/3
    ece = expected_calibration_error([1, 0, 0], [0.95, 0.1, 0.2], bins=2)
    assert ece == pytest.approx(0.15 * 2 / 3 + 0.05 / 3)


def test_equal_mass_bins_differ_from_equal_width_ones_exactly() -> None:
    labels = [0, 0, 1, 0, 1, 1]
    probabilities = [0.1, 0.2, 0.3, 0.4, 0.9, 0.95]
    # equal width [0, 0.5), [0.5, 1]: gaps 0 (mean 0.25, observed 0.25) and 0.075 (2 of 6)
    uniform = expected_calibration_error(labels, probabilities, bins=2)
    assert uniform == pytest.approx(0.025)
    # equal mass, split at the median 0.35: gaps |0.2 - 1/3| and |0.75 - 2/3|, 3 patches each
    quantile = expected_calibration_error(labels, probabilities, bins=2, strategy="quantile")
    assert quantile == pytest.approx((abs(0.2 - 1 / 3) + abs(0.75 - 2 / 3)) / 2)
    report = calibration_report(labels, probabilities, bins=2)
    assert (report["ece"], report["ece_equal_mass"]) == (
        pytest.approx(uniform),
        pytest.approx(quantile),
    )


def test_one_bin_compares_the_mean_probability_with_the_tumour_fraction() -> None:
    assert expected_calibration_error([1, 0, 0, 0], [0.9, 0.5, 0.3, 0.1], bins=1) == (
        pytest.approx(0.45 - 0.25)
    )


def test_column_arrays_give_the_same_bins_as_flat_ones() -> None:
    labels = np.array([0, 0, 1, 0, 1, 1])
    probabilities = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.95])
    flat = reliability_bins(labels, probabilities, bins=4)
    column = reliability_bins(labels[:, None], probabilities[:, None], bins=4)
    np.testing.assert_array_equal(column.counts, flat.counts)
    np.testing.assert_array_equal(column.mean_probability, flat.mean_probability)
    assert column.counts.dtype == np.int64


def test_empty_bins_raise_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        binned = reliability_bins([0, 1], [0.05, 0.97], bins=10)
    assert binned.counts.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert np.isnan(binned.observed_frequency[1:9]).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: calibration_report([], []), "labels: expected at least one label, found 'none'"),
        (
            lambda: calibration_report([0, 1], [0.5]),
            "probabilities: expected one per label (2), found '1 values'",
        ),
        (
            lambda: calibration_report([0, 1], [0.5, 1.5]),
            "probabilities: expected finite values in [0, 1], found 'range 0.5..1.5'",
        ),
        (
            lambda: calibration_report(range(2, 9), [0.5] * 7),
            "labels: expected values 0 or 1, found [2.0, 3.0, 4.0, 5.0, 6.0]",
        ),
        (
            lambda: calibration_report([0, 1], [0.5, 0.5], bins=True),
            "bins: expected a whole number >= 1, found True",
        ),
        (
            lambda: reliability_bins([0, 1], [0.5, 0.5], strategy="both"),  # type: ignore[arg-type]
            "strategy: expected uniform or quantile, found 'both'",
        ),
    ],
)
def test_each_bad_input_has_its_own_exact_line(call: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        call()
    assert str(error.value) == message
