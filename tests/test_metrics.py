"""Metrics against scikit-learn and hand-computed values."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from fakelite.eval.metrics import best_threshold, binary_metrics, equal_error_rate, mean_metrics


def test_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    m = binary_metrics(y, s)
    assert m["acc"] == pytest.approx(accuracy_score(y, s >= 0.5))
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["real_acc"] == pytest.approx(np.mean(s[y == 0] < 0.5))
    assert m["fake_acc"] == pytest.approx(np.mean(s[y == 1] >= 0.5))
    assert m["n"] == 200


def test_hand_values():
    y = [0, 0, 1, 1]
    s = [0.1, 0.6, 0.4, 0.9]
    m = binary_metrics(y, s)
    assert m["acc"] == 0.5 and m["real_acc"] == 0.5 and m["fake_acc"] == 0.5
    assert m["auc"] == 0.75
    assert equal_error_rate(np.array(y), np.array(s)) == pytest.approx(0.5)


def test_perfect_separation_eer_zero():
    assert equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(0.0)


def test_single_class_undefined():
    m = binary_metrics([1, 1], [0.7, 0.2])
    assert m["auc"] is None and m["ap"] is None and m["real_acc"] is None and m["fake_acc"] == 0.5


def test_mean_ignores_undefined_and_sums_counts():
    a = {"acc": 1.0, "real_acc": 1.0, "fake_acc": 1.0, "ap": 1.0, "auc": 1.0, "eer": 0.0, "n": 4, "skipped": 1}
    b = {"acc": 0.5, "real_acc": None, "fake_acc": 0.5, "ap": None, "auc": None, "eer": None, "n": 2, "skipped": 0}
    m = mean_metrics([a, b])
    assert m["acc"] == 0.75 and m["auc"] == 1.0 and m["n"] == 6 and m["skipped"] == 1


def test_best_threshold_fixes_shifted_scores():
    # well-ranked but shifted scores: Acc at 0.5 is poor, at the chosen threshold it is perfect
    y = np.array([0] * 50 + [1] * 50)
    s = np.concatenate([np.linspace(0.70, 0.80, 50), np.linspace(0.85, 0.95, 50)])
    assert binary_metrics(y, s)["acc"] == 0.5
    t = best_threshold(y, s)
    assert 0.80 < t < 0.85
    assert binary_metrics(y, s, t)["acc"] == 1.0
