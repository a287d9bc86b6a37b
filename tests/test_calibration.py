"""Calibration figures (pcam.evaluation.calibration): ECE, Brier score and reliability bins."""

from __future__ import annotations

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
        ([0, 1], [0.5, float("nan")], 15, "probabilities: expected finite values in [0, 1]"),
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
