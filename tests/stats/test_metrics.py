"""Classification metrics and their confidence intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, roc_auc_score

from radpath.stats.bootstrap import bootstrap_weights, weighted_roc
from radpath.stats.estimate import Estimate, wilson_interval
from radpath.stats.metrics import (
    AUC,
    BalancedAccuracy,
    ConfusionMatrix,
    QuadraticKappa,
    auc_with_ci,
    balanced_accuracy_with_ci,
    choose_threshold,
    confusion,
    quadratic_weighted_kappa,
    sensitivity_specificity_at,
)


def _data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, y + rng.normal(0.0, 1.0, n)


def test_auc_value_matches_sklearn_and_interval_brackets_it():
    y, s = _data()
    estimate = auc_with_ci(y, s, n_boot=300)
    assert estimate.value == pytest.approx(roc_auc_score(y, s))
    assert estimate.ci_low < estimate.value < estimate.ci_high
    assert estimate.n == 200


def test_auc_single_class_gives_nan_with_n():
    estimate = auc_with_ci(np.ones(5, dtype=int), np.arange(5.0))
    assert np.isnan(estimate.value) and estimate.n == 5


@pytest.mark.parametrize(("y", "s", "match"), [
    ([0, 1, 2], [0.1, 0.2, 0.3], r"0/1 labels only; found \[2\]"),
    ([0, 1, 1], [0.1, np.nan, 0.3], "non-finite"),
    ([0, 1, 1], [0.1, 0.3], "2 values but the labels have 3"),
])
def test_auc_rejects_bad_input(y, s, match):
    with pytest.raises(ValueError, match=match):
        auc_with_ci(y, s)


def test_weighted_roc_auc_matches_sklearn_sample_weight():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60), 1)  # ties
    w = rng.integers(0, 4, size=(3, 60)).astype(float)
    fpr, tpr = weighted_roc(s, y, w)
    aucs = (np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2).sum(axis=1)
    for row, auc in zip(w, aucs, strict=True):
        assert auc == pytest.approx(roc_auc_score(y, s, sample_weight=row))


def test_patient_bootstrap_takes_whole_patients_stratified_by_patient_label():
    y = np.array([0, 1, 0, 0, 0, 1, 1])
    groups = np.array(["a", "a", "b", "b", "c", "d", "d"])  # a, d positive; b, c negative
    weights = np.concatenate(list(bootstrap_weights(y, groups, 50, np.random.default_rng(0))))
    assert weights.shape == (50, 7)
    np.testing.assert_array_equal(weights[:, 0], weights[:, 1])  # patient a together
    np.testing.assert_array_equal(weights[:, 2], weights[:, 3])
    assert (weights[:, 0] + weights[:, 5] == 2).all()  # two positive patients drawn
    assert (weights[:, 2] + weights[:, 4] == 2).all()


def test_patient_level_interval_is_wider_for_duplicated_rows():
    """Four copies of each patient's image add no information: the patient bootstrap
    keeps the interval of the single-image data, the row bootstrap shrinks it."""
    y, s = _data(80)
    y4, s4, groups = np.repeat(y, 4), np.repeat(s, 4), np.repeat(np.arange(80), 4)
    single = auc_with_ci(y, s, n_boot=400)
    by_row = auc_with_ci(y4, s4, n_boot=400)
    by_patient = auc_with_ci(y4, s4, groups=groups, n_boot=400)
    assert by_patient.n == 80 and by_row.n == 320
    assert by_patient.value == pytest.approx(single.value)
    width = lambda e: e.ci_high - e.ci_low  # noqa: E731
    assert width(by_patient) == pytest.approx(width(single), rel=0.25)
    assert width(by_row) < 0.7 * width(by_patient)


def test_auc_class_accumulates_like_the_function():
    y, s = _data()
    groups = np.arange(200) // 2
    metric = AUC(n_boot=200)
    for part in np.array_split(np.arange(200), 4):
        metric.update(y[part], s[part], groups[part])
    assert metric.compute() == auc_with_ci(y, s, groups=groups, n_boot=200)
    with pytest.raises(ValueError, match="groups"):
        metric.update(y, s)
    metric.reset()
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()


def test_wilson_interval_known_value():
    # 8/10: Wilson 95% interval is [0.4902, 0.9433].
    estimate = wilson_interval(8, 10)
    assert estimate.value == 0.8
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 5).ci_low == 0.0
    with pytest.raises(ValueError, match="successes=6, n=5"):
        wilson_interval(6, 5)


def test_sensitivity_specificity_at_threshold():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.5, 0.2, 0.6, 0.3, 0.1, 0.0, 0.5])
    sensitivity, specificity = sensitivity_specificity_at(y, s, 0.5)
    assert (sensitivity.value, sensitivity.n) == (0.75, 4)
    assert (specificity.value, specificity.n) == (0.6, 5)  # 0.5 >= 0.5 is positive
    assert sensitivity.ci_low < 0.75 < sensitivity.ci_high


def test_choose_threshold_rules():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # Youden: t=0.7 gives sens 0.75, spec 1.0 (J=0.75); t=0.4 gives 1.0, 0.75 (J=0.75):
    # the higher threshold wins the tie.
    assert choose_threshold(y, s) == 0.7
    assert choose_threshold(y, s, rule="sensitivity", target=1.0) == 0.4
    assert choose_threshold(y, s, rule="sensitivity", target=0.5) == 0.8
    with pytest.raises(ValueError, match="'best'"):
        choose_threshold(y, s, rule="best")
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(np.zeros(3), [0.1, 0.2, 0.3])


def test_balanced_accuracy_matches_sklearn():
    y, s = _data()
    estimate = balanced_accuracy_with_ci(y, s, 0.5, n_boot=300)
    assert estimate.value == pytest.approx(balanced_accuracy_score(y, s >= 0.5))
    assert estimate.ci_low < estimate.value < estimate.ci_high
    hard = (s >= 0.5).astype(int)
    assert balanced_accuracy_with_ci(y, hard).value == pytest.approx(estimate.value)
    metric = BalancedAccuracy(0.5, n_boot=300)
    metric.update(y[:50], s[:50])
    metric.update(y[50:], s[50:])
    assert metric.compute() == estimate


@pytest.mark.parametrize("num_classes", [None, 5])
def test_quadratic_kappa_matches_sklearn(num_classes):
    rng = np.random.default_rng(2)
    t = rng.choice([0, 1, 3, 4], 150)  # class 2 never seen
    p = np.clip(t + rng.integers(-1, 2, 150), 0, 4)
    p[p == 2] = 3
    estimate = quadratic_weighted_kappa(t, p, num_classes, n_boot=300)
    labels = None if num_classes is None else list(range(num_classes))
    expected = cohen_kappa_score(t, p, weights="quadratic", labels=labels)
    assert estimate.value == pytest.approx(expected)
    assert estimate.ci_low < estimate.value < estimate.ci_high
    metric = QuadraticKappa(num_classes, n_boot=300)
    metric.update(t, p)
    assert metric.compute() == estimate


def test_quadratic_kappa_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"labels \[3\] lie outside 0..2"):
        quadratic_weighted_kappa([0, 1, 3], [0, 1, 2], num_classes=3)
    with pytest.raises(ValueError, match=r"integer class indices; found \[0.5\]"):
        quadratic_weighted_kappa([0, 0.5], [0, 1])
    with pytest.raises(ValueError, match="2 labels but y_pred has 3"):
        quadratic_weighted_kappa([0, 1], [0, 1, 1])


def test_confusion_counts_and_errors():
    matrix = confusion(["b", "m", "m", "n"], ["b", "b", "m", "m"], ["n", "b", "m"])
    np.testing.assert_array_equal(matrix, [[0, 0, 1], [0, 1, 0], [0, 1, 1]])
    with pytest.raises(ValueError, match=r"values \['x'\] are not among labels"):
        confusion(["x"], ["n"], ["n", "b"])
    metric = ConfusionMatrix([0, 1])
    assert metric.compute().sum() == 0
    metric.update([0, 1], [1, 1])
    metric.update([1], [0])
    np.testing.assert_array_equal(metric.compute(), [[0, 1], [1, 1]])


def test_estimate_prints_interval():
    assert str(Estimate(0.8, 0.7, 0.9, 10)) == "0.800 [0.700, 0.900] (n=10)"


def test_bootstrap_interval_covers_the_true_auc_about_95_percent_of_the_time():
    from math import erf, sqrt

    from radpath.stats.metrics import auc_with_ci

    separation = 1.0
    true_auc = 0.5 * (1 + erf(separation / sqrt(2) / sqrt(2)))  # binormal: Phi(d / sqrt 2)
    rng = np.random.default_rng(2024)
    trials, covered = 300, 0
    for trial in range(trials):
        y = np.r_[np.ones(40, int), np.zeros(60, int)]
        scores = np.r_[rng.normal(separation, 1, 40), rng.normal(0, 1, 60)]
        estimate = auc_with_ci(y, scores, n_boot=400, seed=trial)
        covered += estimate.ci_low <= true_auc <= estimate.ci_high
    assert 0.89 <= covered / trials <= 0.99
