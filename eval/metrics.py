"""Verification metrics from cosine scores (thesis 5.8 / 5.9.2) and how sure we are of them.

A pair is accepted when score >= threshold, as sklearn.metrics.roc_curve counts it. The ROC is
sklearn's with every threshold kept (drop_intermediate=False): points (FAR_i, TAR_i) for the
thresholds +inf and each distinct score, FAR rising.

- TAR@FAR=t: the largest TAR among ROC points with FAR <= t. With n impostor pairs this is the
  share of genuine scores strictly above the (floor(t*n)+1)-th highest impostor score, so at
  t=1e-3 and 3,000 impostors the operating point is set by the 4th highest impostor score. Below
  1/t impostors (500 at t=1e-3, LFW View 1) FAR t is not resolved: the value is the TAR at FAR 0,
  and every report says so beside it (resolution_note).
- EER: FRR = 1 - TAR falls and FAR rises along the ROC; between the two consecutive points where
  FRR - FAR changes sign both are linear in the segment parameter, and the EER is their common
  value where they meet (linear interpolation). A point with FRR == FAR gives it exactly.
- AUC: trapezoidal area under the full ROC (sklearn.metrics.auc).
- 10-fold accuracy: for each fold, the threshold maximising accuracy on the other folds (midpoints
  between consecutive distinct scores and both ends) is applied to the held-out fold.
- Confidence intervals: percentile bootstrap resampling genuine and impostor scores separately
  (stratified, so each replicate keeps the protocol's class sizes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import auc, roc_curve

FAR_TARGETS = (1e-3, 1e-2)
POINT_METRICS = ("tar_at_far_1e-3", "tar_at_far_1e-2", "eer", "auc")


@dataclass(frozen=True)
class Roc:
    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray


def roc(labels: np.ndarray, scores: np.ndarray) -> Roc:
    """The full ROC; needs at least one genuine and one impostor score."""
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError("ROC needs both same-person and different-person pairs")
    far, tar, thresholds = roc_curve(labels, np.asarray(scores, dtype=np.float64), drop_intermediate=False)
    return Roc(far, tar, thresholds)


def tar_at_far(curve: Roc, target: float) -> float:
    """Largest TAR among ROC points with FAR <= target (see module docstring)."""
    ok = curve.far <= target + 1e-12
    return float(curve.tar[ok].max())


def eer(curve: Roc) -> float:
    """Equal error rate, interpolated linearly between the ROC points bracketing FRR == FAR."""
    diff = (1.0 - curve.tar) - curve.far  # FRR - FAR: >= 0 at the start, <= 0 at the end
    i = int(np.argmax(diff <= 0))  # first point where FAR has caught up with FRR
    if diff[i] == 0:
        return float(curve.far[i])
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(curve.far[i - 1] + t * (curve.far[i] - curve.far[i - 1]))


def point_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """TAR@FAR=1e-3, TAR@FAR=1e-2, EER and AUC of one set of scores."""
    curve = roc(labels, scores)
    return {
        "tar_at_far_1e-3": tar_at_far(curve, 1e-3),
        "tar_at_far_1e-2": tar_at_far(curve, 1e-2),
        "eer": eer(curve),
        "auc": float(auc(curve.far, curve.tar)),
    }


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (lowest such threshold on ties)."""
    distinct = np.unique(scores)
    candidates = np.concatenate([[distinct[0] - 1.0], (distinct[1:] + distinct[:-1]) / 2, [distinct[-1] + 1.0]])
    order = np.argsort(scores)
    sorted_labels = labels[order]
    sorted_scores = scores[order]
    # accepted = scores >= c: count genuine at or above and impostors below each candidate
    below = np.searchsorted(sorted_scores, candidates, side="left")
    genuine_below = np.concatenate([[0], np.cumsum(sorted_labels)])[below]
    correct = (labels.sum() - genuine_below) + (below - genuine_below)
    return float(candidates[int(np.argmax(correct))])


def kfold_accuracy(labels: np.ndarray, scores: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation over folds of the held-out accuracy (NaN without 2+ folds)."""
    fold_ids = np.unique(folds[folds >= 0])
    if len(fold_ids) < 2:
        return math.nan, math.nan
    accuracies = []
    for k in fold_ids:
        train = (folds != k) & (folds >= 0)
        threshold = best_threshold(labels[train], scores[train])
        test = folds == k
        accuracies.append(float(np.mean((scores[test] >= threshold) == labels[test])))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def bootstrap_intervals(
    labels: np.ndarray, scores: np.ndarray, replicates: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each point metric, genuine and impostor scores resampled
    separately with replacement."""
    rng = np.random.default_rng(seed)
    genuine, impostor = scores[labels], scores[~labels]
    replicate_labels = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    values: dict[str, list[float]] = {name: [] for name in POINT_METRICS}
    for _ in range(replicates):
        sample = np.concatenate([rng.choice(genuine, len(genuine)), rng.choice(impostor, len(impostor))])
        for name, value in point_metrics(replicate_labels, sample).items():
            values[name].append(value)
    tail = (1.0 - level) / 2 * 100
    return {name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for name, v in values.items()}


def paired_differences(
    labels: np.ndarray, first: np.ndarray, second: np.ndarray, replicates: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Each point metric's second - first over paired bootstrap replicates: genuine and impostor
    pairs resampled separately, the same pairs for both scorers, so two models scored on one pairs
    file are compared without the pairs' own sampling noise counted twice."""
    rng = np.random.default_rng(seed)
    genuine, impostor = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    differences: dict[str, list[float]] = {name: [] for name in POINT_METRICS}
    for _ in range(replicates):
        idx = np.concatenate([rng.choice(genuine, len(genuine)), rng.choice(impostor, len(impostor))])
        a, b = point_metrics(labels[idx], first[idx]), point_metrics(labels[idx], second[idx])
        for name in POINT_METRICS:
            differences[name].append(b[name] - a[name])
    return {name: np.array(v) for name, v in differences.items()}


def far_label(target: float) -> str:
    """1e-3, as the metric names write it."""
    return f"{target:.0e}".replace("e-0", "e-")


def resolution_note(target: float, impostors: int) -> str:
    """Why TAR@FAR=t says less than its name, or "": with n < 1/t impostor scores the smallest FAR
    above 0 is 1/n > t, so the value is the TAR at FAR 0 (set by the highest impostor score)."""
    needed = math.ceil(1 / target - 1e-9)
    return "" if impostors >= needed else f"FAR {far_label(target)} not resolved: {impostors} impostors, needs {needed}"


def summarize(
    labels: np.ndarray, scores: np.ndarray, folds: np.ndarray, replicates: int = 1000, seed: int = 0
) -> dict[str, float | int | str]:
    """Every metric of one run, flat, with its CI bounds as <metric>_lo / <metric>_hi, the number
    of impostor scores allowed above each TAR@FAR operating point and its resolution note."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    result: dict[str, float | int | str] = dict(point_metrics(labels, scores))
    if replicates > 0:
        for name, (lo, hi) in bootstrap_intervals(labels, scores, replicates, seed=seed).items():
            result[f"{name}_lo"], result[f"{name}_hi"] = lo, hi
    result["accuracy"], result["accuracy_std"] = kfold_accuracy(labels, scores, np.asarray(folds))
    impostors = int((~labels).sum())
    result["genuine_pairs"], result["impostor_pairs"] = int(labels.sum()), impostors
    for target, name in zip(FAR_TARGETS, POINT_METRICS):
        result[f"{name}_impostors_above"] = math.floor(target * impostors + 1e-9)
        result[f"{name}_note"] = resolution_note(target, impostors)
    return result
