"""Pure association helpers: IoU and centre distance between box sets, gated Hungarian matching.

Boxes are ``x1, y1, x2, y2``. Nothing here returns NaN: a box with zero or negative width or
height, or with a NaN/inf coordinate, has IoU 0 with everything (itself included) and an infinite
centre distance.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

# Cost given to pairs the gate rejects: finite (the solver needs finite numbers) and larger
# than any real cost (1 - IoU <= 1), so the solver uses as few rejected pairs as it can.
_REJECTED_COST = 1e6


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), as (N, M) float64 in [0, 1]."""
    a = _as_boxes("a", a)
    b = _as_boxes("b", b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a_ok, b_ok = _valid(a), _valid(b)
    a = np.where(a_ok[:, None], a, 0.0)
    b = np.where(b_ok[:, None], b, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):  # astronomically large boxes: NaN is mapped to 0
        width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
        height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
        inter = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
        union = _area(a)[:, None] + _area(b)[None, :] - inter
        good = a_ok[:, None] & b_ok[None, :] & (union > 0) & (inter > 0)
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=good)
    return np.clip(np.nan_to_num(iou, nan=0.0, posinf=0.0), 0.0, 1.0)


def associate(iou: np.ndarray, gate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match rows (tracks) to columns (detections) maximising total IoU, keeping pairs with IoU >= gate.

    Args:
        iou: (T, D) similarity in [0, 1]; NaN counts as 0 and values are clipped to [0, 1].
        gate: least IoU for a pair to be kept, in (0, 1]. A pair with IoU 0 is never kept.

    Returns:
        ``matches`` (K, 2) int64 of ``(track_row, det_col)`` sorted by row, and the unmatched
        track rows and detection columns as sorted int64 arrays.
    """
    if not 0.0 < gate <= 1.0:
        raise ValueError(f"gate: must be in (0, 1], got {gate!r}")
    iou = np.asarray(iou, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"iou: expected a 2-d array, got shape {iou.shape}")
    n_tracks, n_dets = iou.shape
    matches = np.empty((0, 2), dtype=np.int64)
    if n_tracks and n_dets:
        iou = np.clip(np.nan_to_num(iou, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        allowed = (iou >= gate) & (iou > 0)
        cost = np.where(allowed, 1.0 - iou, _REJECTED_COST)
        rows, cols = linear_sum_assignment(cost)
        keep = allowed[rows, cols]
        matches = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    unmatched_tracks = np.setdiff1d(np.arange(n_tracks), matches[:, 0]).astype(np.int64)
    unmatched_dets = np.setdiff1d(np.arange(n_dets), matches[:, 1]).astype(np.int64)
    return matches, unmatched_tracks, unmatched_dets


def centre_distance_matrix(tracks: np.ndarray, dets: np.ndarray, max_scale_change: float = 1.5) -> np.ndarray:
    """Distance between box centres in units of the track box's size, as (N, M) float64 >= 0.

    The size of a box is ``sqrt(w * h)``. Pairs whose sizes differ by more than a factor
    ``max_scale_change`` (either way), and pairs with an invalid box, get ``inf``. Unlike IoU this
    stays informative for small boxes that moved by more than their own width between two
    detections: a 20 px face that moved 12 px has IoU 0.25 with its old box but distance 0.6.
    """
    if not max_scale_change >= 1.0:
        raise ValueError(f"max_scale_change: must be >= 1, got {max_scale_change!r}")
    a = _as_boxes("tracks", tracks)
    b = _as_boxes("dets", dets)
    out = np.full((len(a), len(b)), np.inf)
    if len(a) == 0 or len(b) == 0:
        return out
    a_ok, b_ok = _valid(a), _valid(b)
    a = np.where(a_ok[:, None], a, 1.0)
    b = np.where(b_ok[:, None], b, 1.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        size_a = np.sqrt(_area(a))
        size_b = np.sqrt(_area(b))
        centre_a = (a[:, :2] + a[:, 2:]) / 2
        centre_b = (b[:, :2] + b[:, 2:]) / 2
        dist = np.hypot(centre_a[:, None, 0] - centre_b[None, :, 0], centre_a[:, None, 1] - centre_b[None, :, 1])
        scaled = dist / size_a[:, None]
        ratio = size_b[None, :] / size_a[:, None]
        good = (
            a_ok[:, None]
            & b_ok[None, :]
            & np.isfinite(scaled)
            & (ratio <= max_scale_change)
            & (ratio >= 1.0 / max_scale_change)
        )
    out[good] = scaled[good]
    return out


def associate_by_cost(cost: np.ndarray, gate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match rows (tracks) to columns (detections) minimising total cost, keeping pairs with cost <= gate.

    Args:
        cost: (T, D) non-negative costs; NaN and inf never match.
        gate: largest cost for a pair to be kept, > 0.

    Returns:
        As ``associate``: ``matches`` (K, 2) of ``(track_row, det_col)`` sorted by row, and the
        unmatched track rows and detection columns.
    """
    if not gate > 0.0 or not np.isfinite(gate):
        raise ValueError(f"gate: must be a finite number > 0, got {gate!r}")
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost: expected a 2-d array, got shape {cost.shape}")
    n_tracks, n_dets = cost.shape
    matches = np.empty((0, 2), dtype=np.int64)
    if n_tracks and n_dets:
        allowed = np.isfinite(cost) & (cost <= gate)
        solver_cost = np.where(allowed, np.clip(np.nan_to_num(cost, nan=0.0, posinf=0.0), 0.0, None), _REJECTED_COST)
        rows, cols = linear_sum_assignment(solver_cost)
        keep = allowed[rows, cols]
        matches = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    unmatched_tracks = np.setdiff1d(np.arange(n_tracks), matches[:, 0]).astype(np.int64)
    unmatched_dets = np.setdiff1d(np.arange(n_dets), matches[:, 1]).astype(np.int64)
    return matches, unmatched_tracks, unmatched_dets


def valid_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N,) bool: finite coordinates and positive width and height."""
    return _valid(_as_boxes("boxes", boxes))


def _as_boxes(field: str, boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{field}: expected shape (N, 4), got {boxes.shape}")
    return boxes


def _valid(boxes: np.ndarray) -> np.ndarray:
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        return finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None)
