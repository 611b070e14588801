"""Verification statistics on genuine/impostor cosine scores (pure numpy/scipy).

Used to choose and check the shipped thresholds (``run.py calibrate``) and by the accuracy tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


@dataclass(frozen=True)
class VerificationStats:
    genuine: int
    impostor: int
    auc: float
    eer: float
    eer_threshold: float
    best_accuracy: float
    best_threshold: float


def _split(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same, bool)
    if scores.shape != same.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be equal-length 1-d arrays, got {scores.shape} and {same.shape}")
    genuine, impostor = scores[same], scores[~same]
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError(f"need genuine and impostor pairs, got {genuine.size} and {impostor.size}")
    return genuine, impostor


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half)."""
    genuine, impostor = _split(scores, same)
    ranks = rankdata(np.concatenate([genuine, impostor]))
    u = ranks[: genuine.size].sum() - genuine.size * (genuine.size + 1) / 2
    return float(u / (genuine.size * impostor.size))


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of pairs decided right by ``score >= threshold``."""
    return float(np.mean((np.asarray(scores) >= threshold) == np.asarray(same, bool)))


def rates_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-accept rate, false-reject rate) at ``threshold``."""
    genuine, impostor = _split(scores, same)
    return float(np.mean(impostor >= threshold)), float(np.mean(genuine < threshold))


def threshold_at_far(scores: np.ndarray, same: np.ndarray, target_far: float) -> float:
    """The lowest threshold whose false-accept rate is <= ``target_far``."""
    _, impostor = _split(scores, same)
    ordered = np.sort(impostor)[::-1]
    allowed = int(np.floor(target_far * impostor.size))  # impostors that may pass
    if allowed >= impostor.size:
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.inf))


def verification_stats(scores: np.ndarray, same: np.ndarray) -> VerificationStats:
    genuine, impostor = _split(scores, same)
    candidates = np.unique(np.concatenate([genuine, impostor, [np.inf]]))
    far = np.array([np.mean(impostor >= t) for t in candidates])
    frr = np.array([np.mean(genuine < t) for t in candidates])
    acc = np.array([accuracy_at(scores, same, t) for t in candidates])
    e = int(np.argmin(np.abs(far - frr)))
    b = int(np.argmax(acc))
    return VerificationStats(
        genuine=int(genuine.size),
        impostor=int(impostor.size),
        auc=roc_auc(scores, same),
        eer=float((far[e] + frr[e]) / 2),
        eer_threshold=float(candidates[e]),
        best_accuracy=float(acc[b]),
        best_threshold=float(candidates[b]),
    )
