"""Metrics against hand-computed cases and independent sklearn / closed-form computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from cdfv.eval.metrics import (
    Roc, best_threshold, bootstrap_intervals, eer, kfold_accuracy, paired_differences, point_metrics, resolution_note, roc, summarize, tar_at_far,
)

GENUINE = [0.9, 0.8, 0.7, 0.4]
IMPOSTOR = [0.6, 0.5, 0.3, 0.2, 0.1]


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([True] * len(GENUINE) + [False] * len(IMPOSTOR))
    return labels, np.array(GENUINE + IMPOSTOR)


def test_hand_computed_metrics() -> None:
    labels, scores = hand_case()
    curve = roc(labels, scores)
    # accepted = score >= t: 0.7 accepts 3 genuine, no impostor; 0.4 accepts all genuine and 2 impostors
    assert tar_at_far(curve, 0.0) == 0.75
    assert tar_at_far(curve, 0.1) == 0.75
    assert tar_at_far(curve, 0.4) == 1.0
    # FRR - FAR is 0.05 at (FAR 0.2, FRR 0.25) and -0.15 at (FAR 0.4, FRR 0.25): meet at FAR 0.25
    assert eer(curve) == pytest.approx(0.25)
    # 18 of the 20 genuine/impostor orderings are right
    assert point_metrics(labels, scores)["auc"] == pytest.approx(0.9)
    assert point_metrics(labels, scores)["tar_at_far_1e-3"] == 0.75


def test_eer_exact_point() -> None:
    curve = Roc(np.array([0.0, 0.1, 0.3, 1.0]), np.array([0.0, 0.5, 0.7, 1.0]), np.array([np.inf, 3, 2, 1]))
    assert eer(curve) == pytest.approx(0.3)  # FRR = 0.3 = FAR at the third point


def test_roc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both"):
        roc(np.ones(3, bool), np.array([0.1, 0.2, 0.3]))


def synthetic(seed: int, n: int = 3000, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(0.55, 0.15, n), rng.normal(0.1, 0.12, n)])
    if ties:
        scores = np.round(scores, 2)
    return np.r_[np.ones(n, bool), np.zeros(n, bool)], scores


@pytest.mark.parametrize("seed, ties", [(0, False), (1, True), (2, True)])
def test_against_independent_computations(seed: int, ties: bool) -> None:
    labels, scores = synthetic(seed, ties=ties)
    metrics = point_metrics(labels, scores)
    genuine, impostor = scores[labels], np.sort(scores[~labels])[::-1]
    for target, name in ((1e-3, "tar_at_far_1e-3"), (1e-2, "tar_at_far_1e-2")):
        k = math.floor(target * len(impostor) + 1e-9)
        assert metrics[name] == pytest.approx(np.mean(genuine > impostor[k]))  # the (k+1)-th highest impostor
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, scores))
    far, tar, _ = roc_curve(labels, scores)  # sklearn's reduced ROC: dropped points are collinear
    assert metrics["eer"] == pytest.approx(eer(Roc(far, tar, np.zeros_like(far))))


def test_kfold_accuracy_hand_case() -> None:
    scores = np.array([0.9, 0.6, 0.5, 0.1, 0.8, 0.3, 0.4, 0.2])
    labels = np.array([True, True, False, False, True, True, False, False])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # fold 1 alone: thresholds 0.25 and 0.6 both give 3/4; the lower wins
    assert best_threshold(labels[4:], scores[4:]) == pytest.approx(0.25)
    assert best_threshold(labels[:4], scores[:4]) == pytest.approx(0.55)
    mean, std = kfold_accuracy(labels, scores, folds)
    assert (mean, std) == (pytest.approx(0.75), pytest.approx(0.0))
    assert all(math.isnan(v) for v in kfold_accuracy(labels, scores, np.full(8, -1)))


def test_bootstrap_intervals() -> None:
    labels, scores = synthetic(3)
    intervals = bootstrap_intervals(labels, scores, replicates=200, seed=1)
    metrics = point_metrics(labels, scores)
    for name, (lo, hi) in intervals.items():
        assert lo <= metrics[name] <= hi, name
    width = {k: hi - lo for k, (lo, hi) in intervals.items()}
    assert width["tar_at_far_1e-3"] > width["tar_at_far_1e-2"] > width["auc"]
    assert intervals == bootstrap_intervals(labels, scores, replicates=200, seed=1)
    separated = np.r_[np.linspace(0.6, 0.9, 50), np.linspace(0.0, 0.3, 50)]
    perfect = bootstrap_intervals(np.r_[np.ones(50, bool), np.zeros(50, bool)], separated, replicates=50)
    assert perfect["tar_at_far_1e-3"] == (1.0, 1.0) and perfect["eer"] == (0.0, 0.0)


def test_summarize_reports_support() -> None:
    labels, scores = synthetic(4)
    folds = np.r_[np.arange(3000) // 300, np.arange(3000) // 300]
    result = summarize(labels, scores, folds, replicates=20)
    assert result["tar_at_far_1e-3_impostors_above"] == 3 and result["tar_at_far_1e-2_impostors_above"] == 30
    assert result["genuine_pairs"] == result["impostor_pairs"] == 3000
    assert 0.9 < result["accuracy"] < 1.0
    assert result["tar_at_far_1e-3_lo"] <= result["tar_at_far_1e-3"] <= result["tar_at_far_1e-3_hi"]
    assert result["tar_at_far_1e-3_note"] == result["tar_at_far_1e-2_note"] == ""  # View 2: 3,000 impostors resolve both


def test_a_far_is_resolved_from_1_over_t_impostors() -> None:
    assert resolution_note(1e-3, 1000) == resolution_note(1e-2, 100) == ""
    assert resolution_note(1e-3, 999) == "FAR 1e-3 not resolved: 999 impostors, needs 1000"
    assert resolution_note(1e-2, 20) == "FAR 1e-2 not resolved: 20 impostors, needs 100"
    labels = np.array([True] * 20 + [False] * 20)  # 20 impostors: TAR@FAR=1e-3 is the TAR at FAR 0
    result = summarize(labels, np.r_[np.linspace(0.6, 1, 20), np.linspace(-1, 0.5, 20)], np.full(40, -1), replicates=0)
    assert result["tar_at_far_1e-3"] == 1.0 and result["tar_at_far_1e-3_note"] == "FAR 1e-3 not resolved: 20 impostors, needs 1000"


def test_paired_differences_resample_the_same_pairs_for_both_scorers() -> None:
    rng = np.random.default_rng(1)
    labels = np.array([1] * 200 + [0] * 300)
    weak = rng.normal(size=500) + labels * 1.0
    strong = weak + labels * 1.5  # the same scores, genuine ones raised: better on every replicate's pairs
    same = paired_differences(labels, weak, weak.copy(), replicates=50)
    assert all(np.array_equal(v, np.zeros(50)) for v in same.values())
    better = paired_differences(labels, weak, strong, replicates=50)
    assert better["auc"].shape == (50,) and (better["auc"] > 0).all() and (better["eer"] < 0).all()
    point = point_metrics(labels, strong)["auc"] - point_metrics(labels, weak)["auc"]
    assert abs(better["auc"].mean() - point) < 0.01
    again = paired_differences(labels, weak, strong, replicates=50)
    assert np.array_equal(again["auc"], better["auc"])  # seeded
