"""Evaluation metrics agree with scikit-learn and with hand computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm

from pcam.errors import InvalidArgumentError
from pcam.metrics import classification_report

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
    if len(set(labels.tolist())) == 2:
        assert report["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    else:
        assert report["roc_auc"] is None
    matrix = np.array(report["confusion_matrix"]["matrix"])
    assert matrix.sum() == labels.size


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
        ([0, 1], [0.1, float("nan")], {}, "probabilities: expected finite values in"),
        ([0, 1], [0.1, 0.2], {"threshold": 1.0}, "threshold: expected a value in"),
    ],
)
def test_bad_input(
    labels: list[int], scores: list[float], kwargs: dict[str, float], pattern: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern):
        classification_report(labels, scores, **kwargs)  # type: ignore[arg-type]
