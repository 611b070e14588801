"""py-motmetrics summary for tests and benchmarks (not part of the ``trackers`` library).

A "frame" is a mapping ``{object_id: (x1, y1, x2, y2)}``; pass one per frame, for ground truth and
for the tracker's hypotheses (e.g. ``{s.track_id: s.box for s in snaps if s.state is CONFIRMED}``).
Objects pair when their IoU is at least 0.5 (motmetrics distance ``1 - IoU <= 0.5``).

numpy 2 compat: motmetrics 1.4.0 ``distances.iou_matrix`` calls ``np.asfarray``, which numpy 2
removed. ``_numpy_asfarray_shim`` puts an equivalent back on the numpy module only for the duration of
that call and removes it afterwards (nothing else in motmetrics 1.4.0 uses removed numpy names).
Note that motmetrics boxes are ``x, y, w, h``, so this module converts from ``x1, y1, x2, y2``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import motmetrics as mm
import numpy as np

BoxFrame = Mapping[int, Sequence[float] | np.ndarray]

METRICS = (
    "num_frames",
    "mota",
    "motp",
    "idf1",
    "num_switches",
    "num_fragmentations",
    "num_false_positives",
    "num_misses",
    "precision",
    "recall",
)


def mot_summary(
    gt_frames: Sequence[BoxFrame], hyp_frames: Sequence[BoxFrame], max_iou: float = 0.5
) -> dict[str, float]:
    """CLEAR-MOT and ID metrics of ``hyp_frames`` against ``gt_frames`` (same length), as plain floats."""
    if len(gt_frames) != len(hyp_frames):
        raise ValueError(f"hyp_frames: expected {len(gt_frames)} frames to match gt_frames, got {len(hyp_frames)}")
    acc = mm.MOTAccumulator(auto_id=True)
    for gt, hyp in zip(gt_frames, hyp_frames, strict=True):
        gt_ids, gt_boxes = _split(gt)
        hyp_ids, hyp_boxes = _split(hyp)
        acc.update(gt_ids, hyp_ids, _distances(gt_boxes, hyp_boxes, max_iou))
    table = mm.metrics.create().compute(acc, metrics=list(METRICS), name="run")
    return {name: float(table[name].iloc[0]) for name in METRICS}


def _split(frame: BoxFrame) -> tuple[list[int], np.ndarray]:
    ids = sorted(frame)
    boxes = np.array([np.asarray(frame[i], dtype=np.float64) for i in ids]).reshape(-1, 4)
    return ids, boxes


def _distances(gt_boxes: np.ndarray, hyp_boxes: np.ndarray, max_iou: float) -> np.ndarray:
    if len(gt_boxes) == 0 or len(hyp_boxes) == 0:
        return np.empty((len(gt_boxes), len(hyp_boxes)))
    with _numpy_asfarray_shim():
        return mm.distances.iou_matrix(_xywh(gt_boxes), _xywh(hyp_boxes), max_iou=max_iou)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


@contextlib.contextmanager
def _numpy_asfarray_shim() -> Iterator[None]:
    """Provide ``np.asfarray`` (removed in numpy 2) while motmetrics runs, then remove it again."""
    if hasattr(np, "asfarray"):  # numpy 1.x: nothing to do
        yield
        return
    np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del np.asfarray  # type: ignore[attr-defined]
