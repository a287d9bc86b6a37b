"""Operating points (pcam.evaluation.operating): sensitivity at specificity, and the reverse."""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from pcam.errors import InvalidArgumentError
from pcam.evaluation.operating import (
    LEVELS,
    average_precision,
    choose_threshold,
    choose_thresholds,
    operating_points,
    rates_at_threshold,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)
from tests.profiles import examples

# A hand-built case: 4 tumour (T) and 5 normal (N) patches, with a tie at 0.5 across classes.
#   score  0.9  0.8  0.7  0.6  0.5  0.5  0.3  0.2  0.1
#   label   T    N    T    T    N    T    N    N    N
# The curve, one point per distinct threshold t (scores >= t called tumour):
#   t       none  0.9   0.8   0.7   0.6   0.5   0.3   0.2   0.1
#   tp/fp   0/0   1/0   1/1   2/1   3/1   4/2   4/3   4/4   4/5
#   sens    0     .25   .25   .5    .75   1     1     1     1
#   spec    1     1     .8    .8    .8    .6    .4    .2    0
HAND_LABELS = np.array([1, 0, 1, 1, 0, 1, 0, 0, 0])
HAND_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.3, 0.2, 0.1])
SPEC: Final = "specificity"
SENS: Final = "sensitivity"


def shuffled(seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The hand-built case in another order (the tie at 0.5 then comes either way round)."""
    order = np.random.default_rng(seed).permutation(HAND_LABELS.size)
    return HAND_LABELS[order], HAND_SCORES[order]


def curve_points(labels: Any, scores: Any) -> list[tuple[Fraction, Fraction]]:
    """Exact (sensitivity, specificity) at every threshold, by brute force: the test oracle."""
    truth = np.asarray(labels).reshape(-1)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    positives, negatives = int((truth == 1).sum()), int((truth == 0).sum())
    points = []
    for threshold in [np.inf, *np.unique(values)]:
        called = values >= threshold
        hits = int((called & (truth == 1)).sum())
        correct_normals = int((~called & (truth == 0)).sum())
        points.append((Fraction(hits, positives), Fraction(correct_normals, negatives)))
    return points


def exact_level(level: float) -> Fraction:
    """The decimal a level stands for: 0.95 means 95 in 100, not the float nearest to it."""
    return Fraction(str(level))


def best_sensitivity(labels: Any, scores: Any, level: float) -> Fraction:
    return max(se for se, sp in curve_points(labels, scores) if sp >= exact_level(level))


def best_specificity(labels: Any, scores: Any, level: float) -> Fraction:
    return max(sp for se, sp in curve_points(labels, scores) if se >= exact_level(level))


# --- hand-built cases -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hand_built_sensitivity_at_specificity(seed: int) -> None:
    labels, scores = shuffled(seed)
    # spec >= 0.8 holds up to t=0.6 (3 of 4 tumours); with `>` instead of `>=` only t=0.9 would
    assert sensitivity_at_specificity(labels, scores, 0.8) == 0.75
    # spec >= 0.9: only t=0.9 (one tumour)
    assert sensitivity_at_specificity(labels, scores, 0.9) == 0.25
    # spec >= 0.5: up to t=0.5 (spec 0.6), all four tumours
    assert sensitivity_at_specificity(labels, scores, 0.5) == 1.0
    # spec >= 0.61: t=0.5 falls short by one normal; t=0.6 gives 0.75
    assert sensitivity_at_specificity(labels, scores, 0.61) == 0.75


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hand_built_specificity_at_sensitivity(seed: int) -> None:
    labels, scores = shuffled(seed)
    # sens >= 0.75 first at t=0.6 (spec 0.8); with `>` it would be t=0.5 (spec 0.6)
    assert specificity_at_sensitivity(labels, scores, 0.75) == 0.8
    # sens >= 0.8 needs the fourth tumour, tied at 0.5 with a normal: both are called (spec 0.6);
    # reading the tie at its first patch (tumour first) would give 0.8
    assert specificity_at_sensitivity(labels, scores, 0.8) == 0.6
    # sens >= 0.25: t=0.9 already, nothing normal called
    assert specificity_at_sensitivity(labels, scores, 0.25) == 1.0
    # sens >= 0.3: t=0.7 (2 of 4), one normal called
    assert specificity_at_sensitivity(labels, scores, 0.3) == 0.8


def test_the_two_directions_are_not_interchangeable() -> None:
    # at level 0.8: 0.75 tumours found at specificity 0.8, but specificity 0.6 at sensitivity 0.8
    assert sensitivity_at_specificity(HAND_LABELS, HAND_SCORES, 0.8) == 0.75
    assert specificity_at_sensitivity(HAND_LABELS, HAND_SCORES, 0.8) == 0.6
    # with the classes swapped (normal as positive, scores negated) the roles swap:
    swapped = (1 - HAND_LABELS, -HAND_SCORES)
    # normal-sensitivity >= 0.8 needs 4 of 5 normals: t=-0.5 calls -0.1..-0.5 (4 normals, and the
    # tied tumour), so 3 of 4 tumours stay "normal": 0.75
    assert specificity_at_sensitivity(*swapped, 0.8) == 0.75
    assert sensitivity_at_specificity(*swapped, 0.8) == 0.6


def test_a_level_is_reached_exactly_at_its_fraction() -> None:
    # 10 normals: specificity 0.1 means exactly one normal called normal. In floats 1 - 9/10 is
    # 0.09999999999999998 < 0.1, but (10 - 9) / 10 == 0.1: the level is reached.
    labels = [0] * 10 + [1, 1]
    scores = [1.0] * 9 + [0.0, 2.0, 0.5]
    # t=2: sens 1/2, spec 1; t=1: sens 1/2, spec 1/10; t=0.5: sens 2/2, spec 1/10; t=0: spec 0
    assert sensitivity_at_specificity(labels, scores, 0.1) == 1.0
    assert sensitivity_at_specificity(labels, scores, 0.11) == 0.5


def test_the_rates_at_a_threshold_call_equal_scores_tumour() -> None:
    # at t=0.5 exactly: 0.9 0.8 0.7 0.6 0.5 0.5 called -> tp 4, fp 2; with `>` it would be 3, 1
    assert rates_at_threshold(HAND_LABELS, HAND_SCORES, 0.5) == (1.0, 0.6)
    assert rates_at_threshold(HAND_LABELS, HAND_SCORES, 0.65) == (0.5, 0.8)
    assert rates_at_threshold(HAND_LABELS, HAND_SCORES, 0.95) == (0.0, 1.0)
    assert rates_at_threshold(HAND_LABELS, HAND_SCORES, -3.0) == (1.0, 0.0)
    assert rates_at_threshold(HAND_LABELS, HAND_SCORES, np.inf) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("fix", "level", "threshold", "rates"),
    [
        # spec >= 0.8: best point t=0.6 (3 tumours, 1 normal); between 0.6 (tumour) and 0.5
        (SPEC, 0.8, 0.55, (0.75, 0.8)),
        # spec >= 0.9: t=0.9, between 0.9 and 0.8
        (SPEC, 0.9, 0.85, (0.25, 1.0)),
        # spec >= 0.3: sens 1 at t=0.5 and t=0.3; t=0.5 has fewer false positives -> (0.5+0.3)/2
        (SPEC, 0.3, 0.4, (1.0, 0.6)),
        # sens >= 0.75: t=0.6 (spec 0.8)
        (SENS, 0.75, 0.55, (0.75, 0.8)),
        # sens >= 0.8: t=0.5, the whole tie called, between 0.5 and 0.3
        (SENS, 0.8, 0.4, (1.0, 0.6)),
        # sens >= 0.5: first reached at t=0.7 (spec 0.8), but t=0.6 has the same spec and one more
        # tumour -> between 0.6 and 0.5 (a threshold of 0.65 would miss that tumour)
        (SENS, 0.5, 0.55, (0.75, 0.8)),
        # sens >= 0.25: t=0.9, no normal called
        (SENS, 0.25, 0.85, (0.25, 1.0)),
    ],
)
def test_hand_built_thresholds(
    fix: Any, level: float, threshold: float, rates: tuple[float, float]
) -> None:
    for seed in range(4):
        labels, scores = shuffled(seed)
        chosen = choose_threshold(labels, scores, fix=fix, level=level)
        assert type(chosen) is float
        assert chosen == pytest.approx(threshold, abs=1e-15)
        assert rates_at_threshold(labels, scores, chosen) == rates


def test_a_threshold_calling_everything_tumour_is_the_lowest_score() -> None:
    labels = [0, 1, 1]
    scores = [3.0, 2.0, -1.5]
    # sens >= 0.9 needs both tumours, so everything is called: the lowest score exactly
    chosen = choose_threshold(labels, scores, fix=SENS, level=0.9)
    assert chosen == -1.5
    assert rates_at_threshold(labels, scores, chosen) == (1.0, 0.0)


def test_a_threshold_calling_nothing_tumour_is_just_above_the_highest_score() -> None:
    labels = [0, 1, 0]
    scores = [3.0, 2.0, 1.0]
    # spec >= 0.9 allows no normal called, and the top patch is normal: nothing is called
    chosen = choose_threshold(labels, scores, fix=SPEC, level=0.9)
    assert chosen == np.nextafter(3.0, np.inf)
    assert type(chosen) is float
    assert rates_at_threshold(labels, scores, chosen) == (0.0, 1.0)


def test_a_threshold_between_neighbouring_floats_is_the_higher_one() -> None:
    low = 1.0
    high = float(np.nextafter(1.0, np.inf))  # no float lies strictly between them
    chosen = choose_threshold([0, 1], [low, high], fix=SPEC, level=0.9)
    assert chosen == high
    assert rates_at_threshold([0, 1], [low, high], chosen) == (1.0, 1.0)


def test_a_threshold_between_huge_scores_does_not_overflow() -> None:
    chosen = choose_threshold([0, 1], [-1.5e308, 1.7e308], fix=SPEC, level=0.9)
    assert chosen == pytest.approx(0.1e308)
    assert np.isfinite(chosen)


def test_logits_are_scores_too() -> None:
    logits = np.array([4.0, 1.0, -0.5, -2.0, -7.0])
    labels = np.array([1, 0, 1, 0, 0])
    # t=4: 1/2, spec 1; t=1: spec 2/3; t=-0.5: sens 1, spec 2/3
    assert sensitivity_at_specificity(labels, logits, 0.9) == 0.5
    assert sensitivity_at_specificity(labels, logits, 0.6) == 1.0
    assert choose_threshold(labels, logits, fix=SPEC, level=0.6) == -1.25


def test_hand_built_average_precision() -> None:
    # recall steps of 1/4 at t=0.9 (precision 1/1), 0.7 (2/3), 0.6 (3/4) and 0.5 (4/6, the tie
    # counted whole; taking the tumour first would give 4/5)
    expected = (1 + 2 / 3 + 3 / 4 + 4 / 6) / 4
    assert average_precision(HAND_LABELS, HAND_SCORES) == pytest.approx(expected)
    block = operating_points(HAND_LABELS, HAND_SCORES, bootstrap_rounds=0)
    assert block["pr_auc"] == pytest.approx(expected)
    assert expected == pytest.approx(37 / 48)


def test_the_hand_built_block() -> None:
    chosen = {"sensitivity_at_specificity_0.80": 0.65, "specificity_at_sensitivity_0.50": 0.5}
    block = operating_points(
        HAND_LABELS, HAND_SCORES, levels=(0.5, 0.8), thresholds=chosen, bootstrap_rounds=0
    )
    assert block == {
        "pr_auc": pytest.approx(37 / 48),
        "pr_auc_ci95": None,
        "points": [
            {
                "fix": "specificity",
                "level": 0.5,
                "key": "sensitivity_at_specificity_0.50",
                "value": 1.0,
                "ci95": None,
                "threshold": None,
            },
            {
                "fix": "specificity",
                "level": 0.8,
                "key": "sensitivity_at_specificity_0.80",
                "value": 0.75,
                "ci95": None,
                # 0.65 on these data: 0.9, 0.8, 0.7 called -> 2 of 4 tumours, 4 of 5 normals
                "threshold": {"value": 0.65, "sensitivity": 0.5, "specificity": 0.8},
            },
            {
                "fix": "sensitivity",
                "level": 0.5,
                "key": "specificity_at_sensitivity_0.50",
                "value": 0.8,
                "ci95": None,
                # 0.5: everything down to the tie called -> 4 of 4 tumours, 3 of 5 normals
                "threshold": {"value": 0.5, "sensitivity": 1.0, "specificity": 0.6},
            },
            {
                "fix": "sensitivity",
                "level": 0.8,
                "key": "specificity_at_sensitivity_0.80",
                "value": 0.6,
                "ci95": None,
                "threshold": None,
            },
        ],
    }


def test_the_default_block_has_six_points_in_order() -> None:
    labels, scores = separable_enough(400, seed=3)
    block = operating_points(labels, scores, bootstrap_rounds=0)
    assert LEVELS == (0.90, 0.95, 0.98)
    assert [(p["fix"], p["level"], p["key"]) for p in block["points"]] == [
        ("specificity", 0.9, "sensitivity_at_specificity_0.90"),
        ("specificity", 0.95, "sensitivity_at_specificity_0.95"),
        ("specificity", 0.98, "sensitivity_at_specificity_0.98"),
        ("sensitivity", 0.9, "specificity_at_sensitivity_0.90"),
        ("sensitivity", 0.95, "specificity_at_sensitivity_0.95"),
        ("sensitivity", 0.98, "specificity_at_sensitivity_0.98"),
    ]
    for point in block["points"]:
        function = (
            sensitivity_at_specificity if point["fix"] == SPEC else specificity_at_sensitivity
        )
        assert point["value"] == function(labels, scores, point["level"])
        assert point["threshold"] is None


def test_each_level_reports_its_own_point() -> None:
    # 100 normals, 100 tumours: levels 0.90 / 0.95 / 0.98 allow 10 / 5 / 2 false positives (or
    # missed tumours) exactly, and the six values differ, so a shifted level cannot pass
    labels, scores = separable_enough(200, seed=11, positives=100)
    block = operating_points(labels, scores, bootstrap_rounds=0)
    values = [point["value"] for point in block["points"]]
    expected = [float(best_sensitivity(labels, scores, level)) for level in LEVELS] + [
        float(best_specificity(labels, scores, level)) for level in LEVELS
    ]
    assert values == expected
    assert len(set(values[:3])) == 3
    assert len(set(values[3:])) == 3


def test_levels_with_more_decimals_keep_them_in_the_key() -> None:
    labels, scores = separable_enough(100, seed=1)
    block = operating_points(labels, scores, levels=[0.975, 0.5], bootstrap_rounds=0)
    keys = [point["key"] for point in block["points"]]
    assert keys == [
        "sensitivity_at_specificity_0.975",
        "sensitivity_at_specificity_0.50",
        "specificity_at_sensitivity_0.975",
        "specificity_at_sensitivity_0.50",
    ]
    assert set(choose_thresholds(labels, scores, levels=[0.975, 0.5])) == set(keys)


def test_column_arrays_give_the_same_points_as_flat_ones() -> None:
    labels, scores = separable_enough(300, seed=5)
    flat = operating_points(labels, scores, bootstrap_rounds=20)
    column = operating_points(labels[:, None], scores[:, None], bootstrap_rounds=20)
    assert column == flat


# --- agreement with scikit-learn ------------------------------------------------------------


def separable_enough(
    n: int, *, seed: int, positives: int | None = None, decimals: int | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """``n`` patches with logit-like scores, tumours higher on average, optionally rounded."""
    rng = np.random.default_rng(seed)
    if positives is None:
        labels = rng.integers(0, 2, size=n)
        labels[:2] = (0, 1)
    else:
        labels = np.zeros(n, dtype=np.int64)
        labels[rng.choice(n, size=positives, replace=False)] = 1
    scores = rng.normal(size=n) + 1.5 * labels
    if decimals is not None:
        scores = np.round(scores, decimals)
    return labels.astype(np.int64), scores


def sklearn_points(labels: Any, scores: Any, level: float) -> tuple[float, float]:
    """Sensitivity at specificity and specificity at sensitivity from ``roc_curve``."""
    fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    specificity = 1 - fpr
    return float(tpr[specificity >= level].max()), float(specificity[tpr >= level].max())


@pytest.mark.parametrize("decimals", [None, 2, 1, 0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_points_agree_with_scikit_learns_roc_curve(decimals: int | None, seed: int) -> None:
    labels, scores = separable_enough(1500, seed=seed, decimals=decimals)
    if decimals is not None:
        assert np.unique(scores).size < 1500  # many ties
    levels = (*LEVELS, 0.5, 0.8, 0.99)
    block = operating_points(labels, scores, levels=levels, bootstrap_rounds=0)
    values = {point["key"]: point["value"] for point in block["points"]}
    for level in levels:
        at_specificity, at_sensitivity = sklearn_points(labels, scores, level)
        shown = f"{level:.2f}"
        # sensitivities are the same division as roc_curve's; specificities are (N - fp) / N
        # rather than 1 - fp / N, which may differ in the last bit
        assert values[f"sensitivity_at_specificity_{shown}"] == at_specificity
        assert values[f"specificity_at_sensitivity_{shown}"] == pytest.approx(
            at_sensitivity, rel=1e-12
        )
        assert sensitivity_at_specificity(labels, scores, level) == at_specificity
        assert specificity_at_sensitivity(labels, scores, level) == pytest.approx(
            at_sensitivity, rel=1e-12
        )


@pytest.mark.parametrize("decimals", [None, 2, 1, 0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_pr_auc_agrees_with_scikit_learn(decimals: int | None, seed: int) -> None:
    labels, scores = separable_enough(1500, seed=seed, decimals=decimals)
    expected = skm.average_precision_score(labels, scores)
    assert average_precision(labels, scores) == expected
    # operating_points computes it from its own curve (that of the bootstrap)
    block = operating_points(labels, scores, bootstrap_rounds=0)
    assert block["pr_auc"] == pytest.approx(expected, rel=1e-12)


@st.composite
def scored_patches(
    draw: st.DrawFn, max_size: int = 40
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Labels holding both classes, and scores with many ties, few, or any finite floats."""
    size = draw(st.integers(2, max_size))
    labels = draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))
    labels[:2] = [0, 1]
    kind = draw(st.sampled_from(["coarse", "rounded", "floats"]))
    values: st.SearchStrategy[float]
    if kind == "coarse":
        values = st.integers(-3, 3).map(float)
    elif kind == "rounded":
        values = st.integers(-300, 300).map(lambda v: v / 100)
    else:
        values = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)
    scores = draw(st.lists(values, min_size=size, max_size=size))
    order = draw(st.permutations(range(size)))
    return np.array(labels)[order].astype(np.int64), np.array(scores, dtype=np.float64)


LEVEL_CHOICES = st.sampled_from([0.05, 0.1, 0.25, 0.5, 0.6, 0.75, 0.8, 0.9, 0.95, 0.98, 0.99])


@settings(max_examples=examples(60))
@given(data=scored_patches(), level=LEVEL_CHOICES)
def test_the_points_are_the_exact_best_points(
    data: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]], level: float
) -> None:
    labels, scores = data
    assert sensitivity_at_specificity(labels, scores, level) == float(
        best_sensitivity(labels, scores, level)
    )
    assert specificity_at_sensitivity(labels, scores, level) == float(
        best_specificity(labels, scores, level)
    )


@settings(max_examples=examples(60))
@given(data=scored_patches(), level=st.sampled_from([*LEVELS, 0.5, 0.8, 0.99]))
def test_the_points_agree_with_roc_curve_on_any_data(
    data: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]], level: float
) -> None:
    labels, scores = data
    at_specificity, at_sensitivity = sklearn_points(labels, scores, level)
    assert sensitivity_at_specificity(labels, scores, level) == at_specificity
    assert specificity_at_sensitivity(labels, scores, level) == pytest.approx(
        at_sensitivity, rel=1e-12
    )
    block = operating_points(labels, scores, bootstrap_rounds=0)
    assert block["pr_auc"] == pytest.approx(skm.average_precision_score(labels, scores), rel=1e-12)


# --- chosen thresholds ----------------------------------------------------------------------


@settings(max_examples=examples(60))
@given(data=scored_patches(), level=LEVEL_CHOICES, fix=st.sampled_from([SPEC, SENS]))
def test_a_chosen_threshold_reaches_its_point(
    data: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]], level: float, fix: Any
) -> None:
    labels, scores = data
    chosen = choose_threshold(labels, scores, fix=fix, level=level)
    assert type(chosen) is float
    sensitivity, specificity = rates_at_threshold(labels, scores, chosen)
    if fix == SPEC:
        assert specificity >= level
        assert sensitivity == sensitivity_at_specificity(labels, scores, level)
    else:
        assert sensitivity >= level
        assert specificity == specificity_at_sensitivity(labels, scores, level)
    # of the thresholds as good on the other rate, none is better on the fixed one: no false
    # positives (or missed tumours) are added for nothing
    reached_se, reached_sp = exact_rates(labels, scores, chosen)
    for se, sp in curve_points(labels, scores):
        if fix == SPEC and se == reached_se:
            assert sp <= reached_sp
        if fix == SENS and sp == reached_sp:
            assert se <= reached_se


def exact_rates(labels: Any, scores: Any, threshold: float) -> tuple[Fraction, Fraction]:
    called = np.asarray(scores) >= threshold
    truth = np.asarray(labels)
    return (
        Fraction(int((called & (truth == 1)).sum()), int((truth == 1).sum())),
        Fraction(int((~called & (truth == 0)).sum()), int((truth == 0).sum())),
    )


@settings(max_examples=examples(60))
@given(data=scored_patches(), level=LEVEL_CHOICES, fix=st.sampled_from([SPEC, SENS]))
def test_a_chosen_threshold_lies_midway_between_scores(
    data: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]], level: float, fix: Any
) -> None:
    labels, scores = data
    chosen = choose_threshold(labels, scores, fix=fix, level=level)
    called, not_called = scores[scores >= chosen], scores[scores < chosen]
    if not_called.size == 0:
        assert chosen == scores.min()
    elif called.size == 0:
        assert chosen == np.nextafter(scores.max(), np.inf)
    else:
        lower, upper = float(not_called.max()), float(called.min())
        assert lower < chosen <= upper
        if chosen == upper:  # only when no float lies strictly between the two
            assert np.nextafter(lower, np.inf) == upper
        scale = max(abs(lower), abs(upper))
        assert chosen == pytest.approx(lower / 2 + upper / 2, rel=1e-12, abs=1e-12 * scale)
        # robust: moving it a little either way, or rounding it, changes nothing
        for moved in (chosen * (1 + 1e-9), chosen * (1 - 1e-9), float(np.float32(chosen))):
            if lower < moved < upper:
                assert rates_at_threshold(labels, scores, moved) == rates_at_threshold(
                    labels, scores, chosen
                )


@settings(max_examples=examples(60))
@given(data=scored_patches())
def test_chosen_thresholds_reach_every_target_on_their_split(
    data: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]],
) -> None:
    labels, scores = data
    chosen = choose_thresholds(labels, scores)
    block = operating_points(labels, scores, thresholds=chosen, bootstrap_rounds=0)
    assert [point["key"] for point in block["points"]] == list(chosen)
    for point in block["points"]:
        reached = point["threshold"]
        assert reached["value"] == chosen[point["key"]]
        if point["fix"] == SPEC:
            assert reached["specificity"] >= point["level"]
            assert reached["sensitivity"] == point["value"]
        else:
            assert reached["sensitivity"] >= point["level"]
            assert reached["specificity"] == point["value"]


def test_thresholds_chosen_on_one_split_are_reported_on_another() -> None:
    valid_labels, valid_scores = separable_enough(600, seed=20)
    test_labels, test_scores = separable_enough(700, seed=21)
    chosen = choose_thresholds(valid_labels, valid_scores)
    block = operating_points(test_labels, test_scores, thresholds=chosen, bootstrap_rounds=0)
    differs = 0
    for point in block["points"]:
        reached = point["threshold"]
        assert reached["value"] == chosen[point["key"]]
        rates = rates_at_threshold(test_labels, test_scores, chosen[point["key"]])
        assert (reached["sensitivity"], reached["specificity"]) == rates
        other = reached["sensitivity"] if point["fix"] == SPEC else reached["specificity"]
        differs += other != point["value"]
    assert differs > 0  # on another split the threshold does not reproduce the curve's point


def test_a_partial_mapping_of_thresholds_leaves_the_others_none() -> None:
    labels, scores = separable_enough(200, seed=2)
    block = operating_points(
        labels, scores, thresholds={"specificity_at_sensitivity_0.95": 0.0}, bootstrap_rounds=0
    )
    given_ones = [point["key"] for point in block["points"] if point["threshold"] is not None]
    assert given_ones == ["specificity_at_sensitivity_0.95"]
    assert block["points"][4]["threshold"]["value"] == 0.0


# --- invariance under a strictly increasing transform ----------------------------------------


def sigmoid(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


def without_threshold_values(block: dict[str, Any]) -> dict[str, Any]:
    copied = json.loads(json.dumps(block))
    for point in copied["points"]:
        if point["threshold"] is not None:
            point["threshold"].pop("value")
    return dict(copied)


@st.composite
def logit_patches(draw: st.DrawFn) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    size = draw(st.integers(2, 60))
    labels = draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))
    labels[-2:] = [0, 1]
    logits = draw(st.lists(st.integers(-600, 600), min_size=size, max_size=size))
    return np.array(labels, dtype=np.int64), np.array(logits, dtype=np.float64) / 100


@settings(max_examples=examples(40))
@given(data=logit_patches(), seed=st.integers(0, 2**16))
@pytest.mark.parametrize(
    "transform",
    [sigmoid, lambda x: 3.0 * x - 2.0, np.exp],
    ids=["sigmoid", "affine", "exp"],
)
def test_every_figure_but_the_thresholds_is_unchanged_by_an_increasing_transform(
    transform: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]],
    data: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]],
    seed: int,
) -> None:
    labels, logits = data
    moved = transform(logits)
    assert np.unique(moved).size == np.unique(logits).size  # still strictly increasing
    before = operating_points(
        labels, logits, thresholds=choose_thresholds(labels, logits), bootstrap_rounds=30, seed=seed
    )
    after = operating_points(
        labels, moved, thresholds=choose_thresholds(labels, moved), bootstrap_rounds=30, seed=seed
    )
    assert without_threshold_values(after) == without_threshold_values(before)
    assert average_precision(labels, moved) == pytest.approx(average_precision(labels, logits))
    # the thresholds themselves follow the scores: the same patches fall on each side
    for point_before, point_after in zip(before["points"], after["points"], strict=True):
        t_before, t_after = point_before["threshold"]["value"], point_after["threshold"]["value"]
        assert np.array_equal(logits >= t_before, moved >= t_after)


# --- bootstrap ------------------------------------------------------------------------------


def reference_intervals(
    labels: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    rounds: int,
    seed: int,
    levels: tuple[float, ...] = LEVELS,
) -> npt.NDArray[np.float64] | None:
    """The bootstrap as specified, with scikit-learn in every round (slow but plain)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(rounds):
        sample = rng.integers(0, labels.size, size=labels.size)
        truth, values = labels[sample], scores[sample]
        if truth.min() == truth.max():
            continue
        pairs = [sklearn_points(truth, values, level) for level in levels]
        rows.append(
            [pair[0] for pair in pairs]
            + [pair[1] for pair in pairs]
            + [skm.average_precision_score(truth, values)]
        )
    if not rows:
        return None
    return np.asarray(np.percentile(np.array(rows), [2.5, 97.5], axis=0), dtype=np.float64)


@pytest.mark.parametrize(
    ("size", "positives", "decimals", "seed"),
    [(300, 120, None, 0), (300, 120, 1, 1), (40, 2, None, 2), (25, 1, 1, 3)],
)
def test_the_intervals_are_those_of_the_specified_bootstrap(
    size: int, positives: int, decimals: int | None, seed: int
) -> None:
    labels, scores = separable_enough(size, seed=seed, positives=positives, decimals=decimals)
    expected = reference_intervals(labels, scores, 60, seed)
    block = operating_points(labels, scores, bootstrap_rounds=60, seed=seed)
    assert expected is not None
    assert block["pr_auc_ci95"] == pytest.approx(expected[:, -1].tolist(), rel=1e-12)
    for index, point in enumerate(block["points"]):
        assert point["ci95"] == pytest.approx(expected[:, index].tolist(), rel=1e-12)


def test_the_reference_case_does_leave_resamples_out() -> None:
    # one tumour in 25 patches: a resample misses it with probability (24/25)^25, about 36%
    labels, _ = separable_enough(25, seed=3, positives=1)
    rng = np.random.default_rng(3)
    one_class = sum(labels[rng.integers(0, 25, size=25)].max() == 0 for _ in range(60))
    assert 5 < one_class < 55


def test_no_interval_when_every_resample_holds_one_class() -> None:
    labels, scores = np.array([0, 1]), np.array([0.2, 0.7])
    skipped = [
        seed
        for seed in range(40)
        if np.unique(np.random.default_rng(seed).integers(0, 2, size=2)).size == 1
    ]
    kept = [seed for seed in range(40) if seed not in skipped]
    assert skipped
    assert kept
    block = operating_points(labels, scores, bootstrap_rounds=1, seed=skipped[0])
    assert block["pr_auc_ci95"] is None
    assert all(point["ci95"] is None for point in block["points"])
    block = operating_points(labels, scores, bootstrap_rounds=1, seed=kept[0])
    assert block["pr_auc_ci95"] == [1.0, 1.0]
    assert all(point["ci95"] is not None for point in block["points"])


def test_no_rounds_give_no_intervals() -> None:
    labels, scores = separable_enough(200, seed=4)
    block = operating_points(labels, scores, bootstrap_rounds=0)
    assert block["pr_auc_ci95"] is None
    assert all(point["ci95"] is None for point in block["points"])


def test_the_same_seed_gives_the_same_block_and_another_seed_another() -> None:
    labels, scores = separable_enough(500, seed=9)
    first = operating_points(labels, scores, bootstrap_rounds=200, seed=7)
    again = operating_points(labels, scores, bootstrap_rounds=200, seed=7)
    other = operating_points(labels, scores, bootstrap_rounds=200, seed=8)
    assert first == again
    assert other["pr_auc"] == first["pr_auc"]
    assert other["pr_auc_ci95"] != first["pr_auc_ci95"]
    assert [p["value"] for p in other["points"]] == [p["value"] for p in first["points"]]
    assert [p["ci95"] for p in other["points"]] != [p["ci95"] for p in first["points"]]


@settings(max_examples=examples(30))
@given(data=scored_patches(max_size=60), seed=st.integers(0, 2**16))
def test_intervals_are_ordered_within_zero_and_one_and_json_ready(
    data: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]], seed: int
) -> None:
    labels, scores = data
    block = operating_points(
        labels,
        scores,
        thresholds=choose_thresholds(labels, scores),
        bootstrap_rounds=25,
        seed=seed,
    )
    json.dumps(block, allow_nan=False)
    intervals = [point["ci95"] for point in block["points"]] + [block["pr_auc_ci95"]]
    for interval in intervals:
        if interval is not None:
            low, high = interval
            assert type(low) is float
            assert type(high) is float
            assert 0.0 <= low <= high <= 1.0
    assert 0.0 <= block["pr_auc"] <= 1.0
    for point in block["points"]:
        assert type(point["value"]) is float
        assert 0.0 <= point["value"] <= 1.0


def test_a_thousand_rounds_on_a_large_split_run() -> None:
    labels, scores = separable_enough(32_768, seed=0, decimals=3)
    block = operating_points(labels, scores, bootstrap_rounds=1000)
    for point in block["points"]:
        low, high = point["ci95"]
        assert low <= high
        assert high - low < 0.1  # 32,768 patches pin each point down
    low, high = block["pr_auc_ci95"]
    assert low <= high


# --- bad input ------------------------------------------------------------------------------

GOOD_LABELS = [0, 1, 0, 1]
GOOD_SCORES = [0.1, 0.9, -2.0, 3.0]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: sensitivity_at_specificity([0, 0, 0], [0.1, 0.2, 0.3], 0.9),
            "labels: expected both normal (0) and tumour (1) patches, as operating points need "
            "both, found 'only normal (0) patches (3)'",
        ),
        (
            lambda: operating_points([1, 1], [0.1, 0.2]),
            "labels: expected both normal (0) and tumour (1) patches, as operating points need "
            "both, found 'only tumour (1) patches (2)'",
        ),
        (
            lambda: average_precision([0, 1], [0.5, float("nan")]),
            "scores: expected finite values, found '1 not finite, first nan at index 1'",
        ),
        (
            lambda: choose_threshold([0, 1, 1], [np.inf, 0.5, -np.inf], fix=SPEC, level=0.9),
            "scores: expected finite values, found '2 not finite, first inf at index 0'",
        ),
        (
            lambda: rates_at_threshold([0, 1, 0], [0.5, 0.5], 0.5),
            "scores: expected one per label (3), found '2 values'",
        ),
        (
            lambda: choose_thresholds([], []),
            "labels: expected at least one label, found 'none'",
        ),
        (
            lambda: specificity_at_sensitivity([0, 2, 1], [0.1, 0.2, 0.3], 0.9),
            "labels: expected values 0 or 1, found [2.0]",
        ),
        (
            lambda: sensitivity_at_specificity(GOOD_LABELS, GOOD_SCORES, 1.0),
            "level: expected a number strictly between 0 and 1, found 1.0",
        ),
        (
            lambda: specificity_at_sensitivity(GOOD_LABELS, GOOD_SCORES, 0),
            "level: expected a number strictly between 0 and 1, found 0",
        ),
        (
            lambda: choose_threshold(GOOD_LABELS, GOOD_SCORES, fix=SENS, level=95),
            "level: expected a number strictly between 0 and 1, found 95",
        ),
        (
            lambda: choose_threshold(GOOD_LABELS, GOOD_SCORES, fix=SENS, level=True),
            "level: expected a number strictly between 0 and 1, found True",
        ),
        (
            lambda: choose_threshold(GOOD_LABELS, GOOD_SCORES, fix=SPEC, level=float("nan")),
            "level: expected a number strictly between 0 and 1, found nan",
        ),
        (
            lambda: choose_threshold(GOOD_LABELS, GOOD_SCORES, fix="both", level=0.9),  # type: ignore[arg-type]
            "fix: expected specificity or sensitivity, found 'both'",
        ),
        (
            lambda: operating_points(GOOD_LABELS, GOOD_SCORES, levels=(0.9, 1.0)),
            "levels: expected a number strictly between 0 and 1, found 1.0",
        ),
        (
            lambda: operating_points(GOOD_LABELS, GOOD_SCORES, levels=(-0.1,)),
            "levels: expected a number strictly between 0 and 1, found -0.1",
        ),
        (
            lambda: choose_thresholds(GOOD_LABELS, GOOD_SCORES, levels=(0.9, 0.9)),
            "levels: expected distinct values, found [0.9, 0.9]",
        ),
        (
            lambda: operating_points(GOOD_LABELS, GOOD_SCORES, levels="0.9"),  # type: ignore[arg-type]
            "levels: expected a sequence of numbers in (0, 1), found '0.9'",
        ),
        (
            lambda: operating_points(
                GOOD_LABELS, GOOD_SCORES, thresholds={"sensitivity_at_specificity_0.9": 0.5}
            ),
            "thresholds: expected keys among sensitivity_at_specificity_0.90, "
            "sensitivity_at_specificity_0.95, sensitivity_at_specificity_0.98, "
            "specificity_at_sensitivity_0.90, specificity_at_sensitivity_0.95, "
            "specificity_at_sensitivity_0.98, found ['sensitivity_at_specificity_0.9']",
        ),
        (
            lambda: operating_points(
                GOOD_LABELS,
                GOOD_SCORES,
                thresholds={"specificity_at_sensitivity_0.95": float("nan")},
            ),
            "thresholds['specificity_at_sensitivity_0.95']: expected a number on the scale of "
            "the scores, found nan",
        ),
        (
            lambda: rates_at_threshold(GOOD_LABELS, GOOD_SCORES, float("nan")),
            "threshold: expected a number on the scale of the scores, found nan",
        ),
        (
            lambda: operating_points(GOOD_LABELS, GOOD_SCORES, bootstrap_rounds=-1),
            "bootstrap_rounds: expected a whole number >= 0, found -1",
        ),
        (
            lambda: operating_points(GOOD_LABELS, GOOD_SCORES, bootstrap_rounds=2.5),  # type: ignore[arg-type]
            "bootstrap_rounds: expected a whole number >= 0, found 2.5",
        ),
    ],
)
def test_each_bad_input_is_one_exact_line(call: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        call()
    assert "\n" not in str(error.value)
    assert str(error.value) == message


@settings(max_examples=examples(30))
@given(
    size=st.integers(1, 30),
    label=st.integers(0, 1),
    level=st.floats(allow_nan=True).filter(lambda v: not 0 < v < 1) | LEVEL_CHOICES,
)
def test_one_class_or_a_level_outside_zero_one_is_refused_in_one_line(
    size: int, label: int, level: float
) -> None:
    scores = np.linspace(-1.0, 1.0, size)
    for call in (
        lambda: sensitivity_at_specificity([label] * size, scores, level),
        lambda: specificity_at_sensitivity([label] * size, scores, level),
        lambda: choose_threshold([label] * size, scores, fix=SPEC, level=level),
        lambda: operating_points([label] * size, scores, levels=(level,)),
    ):
        with pytest.raises(InvalidArgumentError) as error:
            call()
        assert "\n" not in str(error.value)
    if not 0 < level < 1:
        labels = [0, 1] * size
        with pytest.raises(InvalidArgumentError, match="strictly between 0 and 1") as error:
            choose_threshold(labels, np.tile(scores, 2), fix=SENS, level=level)
        assert "\n" not in str(error.value)


def test_a_nan_among_many_scores_is_named_with_its_index() -> None:
    scores = np.linspace(0.0, 1.0, 50)
    scores[[17, 30]] = np.nan
    labels = np.arange(50) % 2
    with pytest.raises(InvalidArgumentError) as error:
        operating_points(labels, scores)
    assert str(error.value) == (
        "scores: expected finite values, found '2 not finite, first nan at index 17'"
    )
    assert "\n" not in str(error.value)


def test_the_defaults_are_1000_rounds_and_seed_0() -> None:
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + labels
    default = operating_points(labels, scores)
    assert default == operating_points(labels, scores, bootstrap_rounds=1000, seed=0)
    assert default != operating_points(labels, scores, bootstrap_rounds=1000, seed=1)
    assert default != operating_points(labels, scores, bootstrap_rounds=1001, seed=0)


@pytest.mark.parametrize("bad", ["0.5", b"0.5", None, [0.5]])
def test_a_level_that_is_not_a_number_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        sensitivity_at_specificity([0, 1], [0.1, 0.9], bad)
    assert str(caught.value) == (
        f"level: expected a number strictly between 0 and 1, found {bad!r}"
    )


@pytest.mark.parametrize("bad", ["0.5", None, True])
def test_a_threshold_that_is_not_a_number_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        rates_at_threshold([0, 1], [0.1, 0.9], bad)
    assert str(caught.value) == (
        f"threshold: expected a number on the scale of the scores, found {bad!r}"
    )


def test_thresholds_that_are_not_a_mapping_are_one_exact_line() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        operating_points([0, 1], [0.1, 0.9], thresholds=[0.5], bootstrap_rounds=0)  # type: ignore[arg-type]
    assert str(caught.value) == (
        "thresholds: expected a mapping of point keys to thresholds, found [0.5]"
    )


def test_a_separable_split_calls_no_normal_patch_at_any_sensitivity() -> None:
    """No false alarm is needed for every tumour: the threshold sits in the gap (0.2, 0.8).

    At sensitivity >= 0.4, t = 0.85 (one tumour) has specificity 1 too; of the two, the one
    with more tumours found wins.
    """
    labels, scores = [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]
    for level in (0.4, 0.9):
        threshold = choose_threshold(labels, scores, fix="sensitivity", level=level)
        assert threshold == pytest.approx(0.5)
        assert rates_at_threshold(labels, scores, threshold) == (1.0, 1.0)
