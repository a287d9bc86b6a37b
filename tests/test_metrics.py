"""Evaluation metrics agree with scikit-learn and with hand computation."""

from __future__ import annotations

import json
import math
import warnings
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm

from pcam.errors import InvalidArgumentError
from pcam.evaluation.metrics import classification_report

LABELS = np.array([0, 0, 0, 1, 1, 1, 1, 0])
SCORES = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.8, 0.7, 0.3])
# predicted at 0.5:  0    1    0    1    0    1    1    0  -> tn=3 fp=1 fn=1 tp=3


def test_a_hand_built_case() -> None:
    report = classification_report(LABELS, SCORES, bootstrap_rounds=0)
    assert report["n"] == 8
    assert report["accuracy"] == pytest.approx(6 / 8)
    assert report["confusion_matrix"]["matrix"] == [[3, 1], [1, 3]]
    tumour = report["per_class"]["tumour"]
    assert tumour == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    # AUC by hand: pairs (positive, negative) ranked correctly, out of 16
    positives, negatives = SCORES[LABELS == 1], SCORES[LABELS == 0]
    correct_pairs = sum(p > n for p in positives for n in negatives)
    assert report["roc_auc"] == pytest.approx(correct_pairs / 16)
    nll = -np.mean(LABELS * np.log(SCORES) + (1 - LABELS) * np.log(1 - SCORES))
    assert report["nll"] == pytest.approx(nll)
    json.dumps(report)  # JSON-ready


@given(
    data=st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=2, max_size=200),
    threshold=st.floats(0.05, 0.95),
)
def test_matches_scikit_learn(data: list[tuple[int, float]], threshold: float) -> None:
    labels = np.array([d[0] for d in data])
    scores = np.array([d[1] for d in data])
    report = classification_report(labels, scores, threshold=threshold, bootstrap_rounds=0)
    predicted = (scores >= threshold).astype(int)
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    for average in ("macro", "weighted"):
        expected = skm.f1_score(labels, predicted, average=average, labels=[0, 1], zero_division=0)
        assert report[f"{average}_avg"]["f1"] == pytest.approx(expected)
        # precision and recall each, not only F1 (which is symmetric in the two)
        for metric, function in (("precision", skm.precision_score), ("recall", skm.recall_score)):
            expected = function(labels, predicted, average=average, labels=[0, 1], zero_division=0)
            assert report[f"{average}_avg"][metric] == pytest.approx(expected)
    for label, name in enumerate(("normal", "tumour")):
        per_class = report["per_class"][name]
        assert per_class["precision"] == pytest.approx(
            skm.precision_score(labels, predicted, pos_label=label, zero_division=0)
        )
        assert per_class["recall"] == pytest.approx(
            skm.recall_score(labels, predicted, pos_label=label, zero_division=0)
        )
        assert per_class["support"] == int((labels == label).sum())
    if len(set(labels.tolist())) == 2:
        assert report["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    else:
        assert report["roc_auc"] is None
    matrix = np.array(report["confusion_matrix"]["matrix"])
    assert matrix.sum() == labels.size
    # rows are the true class, columns the predicted one
    assert matrix.tolist() == [
        [int(((labels == t) & (predicted == p)).sum()) for p in (0, 1)] for t in (0, 1)
    ]
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    nll = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    assert report["nll"] == pytest.approx(nll, rel=1e-9, abs=1e-12)


# An asymmetric case: 6 normal and 4 tumour patches, one tumour exactly at the threshold.
#   normal: 0.05 0.2 0.3 0.35 0.45 -> tn = 5;   0.7 -> fp = 1
#   tumour: 0.1 0.4 -> fn = 2;   0.5 (at the threshold: tumour) 0.95 -> tp = 2
ASYM_LABELS = np.array([0, 1, 0, 0, 1, 0, 1, 0, 0, 1])
ASYM_SCORES = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.45, 0.7, 0.95])


def _approx_fraction(value: Fraction) -> Any:
    return pytest.approx(float(value), rel=1e-12)


def test_an_asymmetric_hand_built_case() -> None:
    """Every figure differs from its mirror image, so a swap of any two of them is seen."""
    report = classification_report(ASYM_LABELS, ASYM_SCORES, bootstrap_rounds=0)
    assert report["confusion_matrix"]["matrix"] == [[5, 1], [2, 2]]  # rows: true class
    assert report["n"] == 10
    assert report["positive_fraction"] == pytest.approx(0.4)
    assert report["accuracy"] == pytest.approx(0.7)
    normal, tumour = report["per_class"]["normal"], report["per_class"]["tumour"]
    # normal: 5 of the 7 predicted normal are normal; 5 of the 6 normal are found
    assert normal["precision"] == _approx_fraction(Fraction(5, 7))
    assert normal["recall"] == _approx_fraction(Fraction(5, 6))
    assert normal["f1"] == _approx_fraction(Fraction(10, 13))
    assert normal["support"] == 6
    # tumour: 2 of the 3 predicted tumour are tumour; 2 of the 4 tumours are found
    assert tumour["precision"] == _approx_fraction(Fraction(2, 3))
    assert tumour["recall"] == _approx_fraction(Fraction(1, 2))
    assert tumour["f1"] == _approx_fraction(Fraction(4, 7))
    assert tumour["support"] == 4
    # macro: the plain mean of the classes; weighted: by support (6 and 4)
    assert report["macro_avg"] == {
        "precision": _approx_fraction((Fraction(5, 7) + Fraction(2, 3)) / 2),
        "recall": _approx_fraction((Fraction(5, 6) + Fraction(1, 2)) / 2),
        "f1": _approx_fraction((Fraction(10, 13) + Fraction(4, 7)) / 2),
    }
    assert report["weighted_avg"] == {
        "precision": _approx_fraction((6 * Fraction(5, 7) + 4 * Fraction(2, 3)) / 10),
        "recall": _approx_fraction((6 * Fraction(5, 6) + 4 * Fraction(1, 2)) / 10),
        "f1": _approx_fraction((6 * Fraction(10, 13) + 4 * Fraction(4, 7)) / 10),
    }
    # AUC: 16 of the 24 (tumour, normal) pairs are ranked correctly, no ties
    assert report["roc_auc"] == _approx_fraction(Fraction(16, 24))
    nll = -np.mean(ASYM_LABELS * np.log(ASYM_SCORES) + (1 - ASYM_LABELS) * np.log(1 - ASYM_SCORES))
    assert report["nll"] == pytest.approx(nll, rel=1e-12)


@pytest.mark.parametrize("threshold", [0.25, 0.5, 0.7])
def test_a_probability_exactly_at_the_threshold_is_tumour(threshold: float) -> None:
    just_below = math.nextafter(threshold, 0.0)
    report = classification_report(
        [0, 1], [just_below, threshold], threshold=threshold, bootstrap_rounds=0
    )
    assert report["threshold"] == threshold
    assert report["confusion_matrix"]["matrix"] == [[1, 0], [0, 1]]
    assert report["accuracy"] == 1.0


def _shape(value: Any) -> Any:
    """The key structure of a nested dict, with the type of every leaf."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__


SCORES_SCHEMA = {"precision": "float", "recall": "float", "f1": "float"}


@pytest.mark.parametrize("rounds", [0, 20])
def test_the_schema_of_metrics_json_is_pinned(rounds: int) -> None:
    """``metrics.json`` is read by people and scripts: its keys and nesting do not drift."""
    report = classification_report(ASYM_LABELS, ASYM_SCORES, bootstrap_rounds=rounds)
    interval = "list" if rounds else "NoneType"
    assert _shape(report) == {
        "n": "int",
        "threshold": "float",
        "positive_fraction": "float",
        "accuracy": "float",
        "per_class": {
            "normal": {**SCORES_SCHEMA, "support": "int"},
            "tumour": {**SCORES_SCHEMA, "support": "int"},
        },
        "macro_avg": SCORES_SCHEMA,
        "weighted_avg": SCORES_SCHEMA,
        "roc_auc": "float",
        "nll": "float",
        "confusion_matrix": {"labels": "list", "rows_are": "str", "matrix": "list"},
        "calibration": {"bins": "int", "ece": "float", "ece_equal_mass": "float", "brier": "float"},
        "ci95": {"rounds": "int", "accuracy": interval, "roc_auc": interval},
        "operating_points": {"pr_auc": "float", "pr_auc_ci95": interval, "points": "list"},
    }
    assert [point["key"] for point in report["operating_points"]["points"]] == [
        f"{rate}_at_{fixed}_{level}"
        for rate, fixed in (("sensitivity", "specificity"), ("specificity", "sensitivity"))
        for level in ("0.90", "0.95", "0.98")
    ]
    assert list(report) == list(_shape(report))  # the order people read in the file
    assert report["confusion_matrix"]["labels"] == ["normal", "tumour"]
    assert report["confusion_matrix"]["rows_are"] == "true class"
    assert report["ci95"]["rounds"] == rounds
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_the_defaults_are_1000_rounds_and_seed_0() -> None:
    labels = np.ones(30, dtype=np.int64)  # one class: no AUC, so 1000 rounds are quick
    scores = np.linspace(0.0, 1.0, 30)
    default = classification_report(labels, scores)
    assert default["threshold"] == 0.5
    assert default["ci95"]["rounds"] == 1000
    assert default == classification_report(
        labels, scores, threshold=0.5, bootstrap_rounds=1000, seed=0
    )
    assert default != classification_report(labels, scores, bootstrap_rounds=1000, seed=1)


def test_a_class_never_predicted_scores_zero_without_a_warning() -> None:
    """``zero_division=0``: an undefined precision (or recall) is 0.0, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        everything_tumour = classification_report([0, 0, 1], [0.6, 0.7, 0.9], bootstrap_rounds=0)
        only_tumours = classification_report([1, 1], [0.2, 0.9], bootstrap_rounds=0)
    normal = everything_tumour["per_class"]["normal"]
    assert normal == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert everything_tumour["per_class"]["tumour"]["precision"] == pytest.approx(1 / 3)
    assert everything_tumour["confusion_matrix"]["matrix"] == [[0, 2], [0, 1]]
    # no normal patch at all: its recall is undefined (0.0), the weighted average ignores it
    assert only_tumours["per_class"]["normal"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    assert only_tumours["weighted_avg"]["recall"] == 0.5
    assert only_tumours["macro_avg"]["recall"] == 0.25


def test_one_patch_of_one_class() -> None:
    report = classification_report([1], [0.9], bootstrap_rounds=0)
    assert report["weighted_avg"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert report["macro_avg"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert report["roc_auc"] is None


def test_a_single_class_split_keeps_a_two_by_two_confusion_matrix() -> None:
    report = classification_report([0, 0, 0], [0.1, 0.2, 0.3], bootstrap_rounds=10)
    assert report["confusion_matrix"]["matrix"] == [[3, 0], [0, 0]]
    assert report["roc_auc"] is None
    assert report["ci95"]["roc_auc"] is None
    assert report["ci95"]["accuracy"] == [1.0, 1.0]


def test_nll_clips_confident_mistakes_at_1e_minus_7() -> None:
    """A certain, wrong prediction costs -log(1e-7) = 16.1 nats, not infinity."""
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.0, 1.0, 0.8, 0.3])
    report = classification_report(labels, scores, bootstrap_rounds=0)
    expected = (2 * -math.log(1e-7) - math.log(0.8) - math.log(0.7)) / 4
    assert report["nll"] == pytest.approx(expected, rel=1e-9)
    right = classification_report([1, 0], [1.0, 0.0], bootstrap_rounds=0)
    assert right["nll"] == pytest.approx(-math.log(1 - 1e-7), rel=1e-6)


def test_keras_and_pcam_file_shapes_and_float32_are_accepted() -> None:
    """Labels as in the PCam file ``[N, 1, 1, 1]``, probabilities as Keras gives them."""
    flat = classification_report(ASYM_LABELS, ASYM_SCORES, bootstrap_rounds=20)
    shaped = classification_report(
        ASYM_LABELS.reshape(-1, 1, 1, 1).astype(np.uint8),
        ASYM_SCORES.reshape(-1, 1),
        bootstrap_rounds=20,
    )
    assert shaped == flat
    # float32 in, float64 inside: a saturated wrong score still costs -log(1e-7)
    single = classification_report([0, 1], np.array([1.0, 0.75], np.float32), bootstrap_rounds=0)
    assert single["nll"] == pytest.approx((-math.log(1e-7) - math.log(0.75)) / 2, rel=1e-9)


def test_bootstrap_intervals_are_the_2_5_and_97_5_percentiles_of_the_resamples() -> None:
    """An independent loop over the same resamples (``default_rng(seed)``, n of n)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000)  # many patches: the percentiles are not on a coarse grid
    scores = np.clip(labels * 0.3 + rng.random(1000) * 0.7, 0, 1)
    report = classification_report(labels, scores, bootstrap_rounds=300, seed=5)
    predicted = scores >= 0.5
    resampler = np.random.default_rng(5)
    accuracies, aucs = [], []
    for _ in range(300):
        sample = resampler.integers(0, 1000, size=1000)
        accuracies.append(float(np.mean(labels[sample] == predicted[sample])))
        if len(set(labels[sample].tolist())) == 2:
            aucs.append(skm.roc_auc_score(labels[sample], scores[sample]))
    assert report["ci95"]["rounds"] == 300
    assert report["ci95"]["accuracy"] == pytest.approx(np.percentile(accuracies, [2.5, 97.5]))
    assert report["ci95"]["roc_auc"] == pytest.approx(np.percentile(aucs, [2.5, 97.5]))


def _binomial_quantile(n: int, p: float, q: float) -> int:
    """The smallest k with P(X <= k) >= q for X ~ Binomial(n, p)."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q:
            return k
    return n


def test_the_accuracy_interval_covers_95_percent_not_90() -> None:
    """With one class (no AUC) the resampled accuracy is exactly Binomial(n, accuracy) / n.

    A 95% interval ends at its 2.5% and 97.5% quantiles (304 and 335 of 400 here); a 90% one
    would end 3 and 2 patches inside.
    """
    labels = np.ones(400, dtype=np.int64)
    scores = np.r_[np.full(320, 0.9), np.full(80, 0.1)]  # accuracy 0.8
    low, high = classification_report(labels, scores, bootstrap_rounds=4000, seed=0)["ci95"][
        "accuracy"
    ]
    expected_low = _binomial_quantile(400, 0.8, 0.025) / 400
    expected_high = _binomial_quantile(400, 0.8, 0.975) / 400
    assert low == pytest.approx(expected_low, abs=1 / 400)
    assert high == pytest.approx(expected_high, abs=1 / 400)
    assert _binomial_quantile(400, 0.8, 0.05) / 400 - expected_low > 2 / 400  # 90% is seen


def test_bootstrap_intervals_hold_the_estimate_and_repeat_for_a_seed() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(labels * 0.3 + rng.random(400) * 0.7, 0, 1)
    first = classification_report(labels, scores, bootstrap_rounds=200, seed=1)
    again = classification_report(labels, scores, bootstrap_rounds=200, seed=1)
    assert first["ci95"] == again["ci95"]
    low, high = first["ci95"]["accuracy"]
    assert low <= first["accuracy"] <= high
    low, high = first["ci95"]["roc_auc"]
    assert low <= first["roc_auc"] <= high
    assert high - low < 0.2


@pytest.mark.parametrize(
    ("labels", "scores", "kwargs", "pattern"),
    [
        ([], [], {}, "labels: expected at least one label"),
        ([0, 1], [0.5], {}, "probabilities: expected one per label"),
        ([0, 2], [0.1, 0.2], {}, "labels: expected values 0 or 1"),
        ([0, 1], [0.1, 1.2], {}, "probabilities: expected finite values in"),
        ([0, 1], [0.1, float("nan")], {}, "probabilities: expected finite values, found '1 not"),
        ([0, 1], [0.1, 0.2], {"threshold": 1.0}, "threshold: expected a value in"),
        ([0, 1], [0.1, 0.2], {"threshold": 0.0}, "threshold: expected a value in"),
        ([0, 1], [0.1, 0.2], {"bootstrap_rounds": -1}, "bootstrap_rounds: expected an integer"),
    ],
)
def test_bad_input(
    labels: list[int], scores: list[float], kwargs: dict[str, float], pattern: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern):
        classification_report(labels, scores, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("labels", "scores", "kwargs", "message"),
    [
        ([], [], {}, "labels: expected at least one label, found 'none'"),
        ([0, 1], [0.5], {}, "probabilities: expected one per label (2), found '1 values'"),
        (
            [0, 2, 1, 9, -1, 7, 5, 3],
            [0.1] * 8,
            {},
            "labels: expected values 0 or 1, found [-1.0, 2.0, 3.0, 5.0, 7.0]",
        ),
        (
            [0, 1],
            [0.1, 1.25],
            {},
            "probabilities: expected finite values in [0, 1], found 'range 0.1..1.25'",
        ),
        (
            [0, 1],
            [0.1, 0.2],
            {"threshold": 0.0},
            "threshold: expected a value in (0, 1), found 0.0",
        ),
        (
            [0, 1],
            [0.1, 0.2],
            {"bootstrap_rounds": -1},
            "bootstrap_rounds: expected an integer >= 0, found -1",
        ),
    ],
)
def test_bad_input_messages_in_full(
    labels: list[int], scores: list[float], kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        classification_report(labels, scores, **kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_the_report_carries_the_calibration_of_the_same_predictions() -> None:
    from pcam.evaluation.calibration import calibration_report
    from pcam.evaluation.evaluate import format_table

    labels = np.array([0, 0, 1, 0, 0, 1, 1, 1])
    probabilities = np.array([0.1, 0.3, 0.6, 0.8, 1.0, 0.95, 0.45, 0.7])
    report = classification_report(labels, probabilities, bootstrap_rounds=0)
    assert report["calibration"] == calibration_report(labels, probabilities)
    table = format_table(report).splitlines()
    calibration = report["calibration"]
    [index] = [i for i, line in enumerate(table) if line.startswith("ECE")]
    assert table[index] == (
        f"ECE (15 bins): {calibration['ece']:.4f} equal-width, "
        f"{calibration['ece_equal_mass']:.4f} equal-mass; Brier: {calibration['brier']:.4f}"
    )
    assert table[index - 1].startswith("NLL: ")
    del report["calibration"]  # a report written before calibration was measured
    assert not any(line.startswith("ECE") for line in format_table(report).splitlines())
