"""Verification statistics on genuine/impostor cosine scores (pure numpy/scipy).

Used to choose and check the shipped thresholds (``run.py calibrate``) and by the accuracy tests.

**What N impostor pairs can measure.** A FAR ``f`` is measurable when ``f * N`` false accepts are
expected to be at least ``MEASURABLE_FALSE_ACCEPTS`` (3): with fewer, the count is 0, 1 or 2 by
chance and the threshold there is set by one or two scores. ``far_interval`` gives the exact
(Clopper–Pearson) 95 % interval of a measured FAR ``k / N``; with ``k = 0`` its upper end is
``1 - 0.025^(1/N)`` (about 3.7 / N), the "rule of three" in two-sided form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, rankdata

MEASURABLE_FALSE_ACCEPTS = 3.0  # a FAR f is measurable on N impostor pairs when f * N >= this


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
    return threshold_at_far_of(impostor, target_far)


def threshold_at_far_of(impostor: np.ndarray, target_far: float) -> float:
    """The lowest threshold that at most ``floor(target_far * N)`` of the N impostor scores reach."""
    impostor = np.asarray(impostor, np.float64)
    if impostor.ndim != 1 or impostor.size == 0:
        raise ValueError(f"impostor: need a non-empty 1-d array, got shape {impostor.shape}")
    ordered = np.sort(impostor)[::-1]
    allowed = int(np.floor(target_far * impostor.size))  # impostors that may pass
    if allowed >= impostor.size:
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.inf))


def verification_stats(scores: np.ndarray, same: np.ndarray) -> VerificationStats:
    """AUC, equal-error point and best-accuracy point over every distinct score as a threshold.

    Vectorised with sorted scores and ``searchsorted`` (O(n log n)), so gallery calibration with
    10⁵–10⁶ pairs stays fast.
    """
    genuine, impostor = _split(scores, same)
    candidates = np.unique(np.concatenate([genuine, impostor, [np.inf]]))
    far, frr = _rate_curves(genuine, impostor, candidates)
    acc = (genuine.size * (1 - frr) + impostor.size * (1 - far)) / (genuine.size + impostor.size)
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


def _rate_curves(genuine: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, FRR) at each threshold for the rule ``score >= threshold``."""
    below_impostor = np.searchsorted(np.sort(impostor), thresholds, side="left")
    below_genuine = np.searchsorted(np.sort(genuine), thresholds, side="left")
    return 1.0 - below_impostor / impostor.size, below_genuine / genuine.size


@dataclass(frozen=True)
class OperatingPoint:
    """How the rule ``score >= threshold`` does on labelled pairs."""

    threshold: float
    accuracy: float
    far: float
    frr: float


def operating_point(scores: np.ndarray, same: np.ndarray, threshold: float) -> OperatingPoint:
    far, frr = rates_at(scores, same, threshold)
    return OperatingPoint(float(threshold), accuracy_at(scores, same, threshold), far, frr)


@dataclass(frozen=True)
class Calibration:
    """What `calibrate` reports: the curve summary and two operating points."""

    stats: VerificationStats
    target_far: float
    at_target: OperatingPoint  # the lowest threshold whose FAR <= target_far
    at_current: OperatingPoint | None  # the threshold in use now (config or model default), if any

    @property
    def far_resolved(self) -> bool:
        """Enough impostor pairs to measure ``target_far`` (``far_measurable``)."""
        return far_measurable(self.target_far, self.stats.impostor)

    @property
    def false_accepts(self) -> int:
        """Impostor pairs at or above the chosen threshold."""
        return round(self.at_target.far * self.stats.impostor)

    @property
    def far_ci(self) -> tuple[float, float]:
        """95 % Clopper–Pearson interval of the FAR measured at the chosen threshold."""
        return far_interval(self.false_accepts, self.stats.impostor)


def calibrate(scores: np.ndarray, same: np.ndarray, target_far: float, current_threshold: float | None) -> Calibration:
    if not 0.0 < target_far < 1.0:
        raise ValueError(f"target_far: must be in (0, 1), got {target_far}")
    chosen = threshold_at_far(scores, same, target_far)
    return Calibration(
        stats=verification_stats(scores, same),
        target_far=float(target_far),
        at_target=operating_point(scores, same, chosen),
        at_current=None if current_threshold is None else operating_point(scores, same, current_threshold),
    )


def far_measurable(far: float, impostors: int) -> bool:
    """Whether ``impostors`` pairs expect at least ``MEASURABLE_FALSE_ACCEPTS`` false accepts at ``far``."""
    return far * impostors >= MEASURABLE_FALSE_ACCEPTS * (1 - 1e-9)


def far_interval(false_accepts: int, impostors: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a false-accept rate ``false_accepts / impostors``."""
    if impostors < 1 or not 0 <= false_accepts <= impostors:
        raise ValueError(f"false_accepts: need 0 <= k <= n and n >= 1, got k={false_accepts}, n={impostors}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    k, n = false_accepts, impostors
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def gallery_pair_scores(
    blocks: list[np.ndarray], max_impostor: int = 2_000_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, same) of unit vectors grouped per person: every within-person pair is genuine,
    every between-person pair impostor; past ``max_impostor`` impostor pairs a seeded random
    sample of that many (drawn with replacement) stands in for them."""
    genuine = [_upper(b @ b.T) for b in blocks if len(b) > 1]
    vectors = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros((0, 1), np.float32)
    owner = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
    counts = np.array([len(b) for b in blocks], np.int64)
    total = (counts.sum() ** 2 - (counts**2).sum()) // 2
    impostor = _all_impostors(vectors, owner) if total <= max_impostor else _sampled(vectors, owner, max_impostor, seed)
    scores = np.concatenate(genuine + [impostor]) if genuine else impostor
    same = np.zeros(scores.size, bool)
    same[: scores.size - impostor.size] = True
    return scores.astype(np.float64), same


def _upper(gram: np.ndarray) -> np.ndarray:
    return gram[np.triu_indices(gram.shape[0], k=1)]


def _all_impostors(vectors: np.ndarray, owner: np.ndarray, rows: int = 2048) -> np.ndarray:
    parts = []
    for start in range(0, len(vectors), rows):
        gram = vectors[start : start + rows] @ vectors.T
        i = np.arange(start, start + gram.shape[0])[:, None]
        keep = (np.arange(len(vectors))[None, :] > i) & (owner[None, :] != owner[i])
        parts.append(gram[keep])
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _sampled(vectors: np.ndarray, owner: np.ndarray, count: int, seed: int, chunk: int = 65536) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts, have = [], 0
    while have < count:
        i, j = rng.integers(0, len(vectors), (2, chunk))
        keep = owner[i] != owner[j]
        parts.append(np.einsum("ij,ij->i", vectors[i[keep]], vectors[j[keep]]))
        have += int(keep.sum())
    return np.concatenate(parts)[:count]
