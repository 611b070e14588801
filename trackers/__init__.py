"""A small, pure multi-object tracker library (numpy, scipy, filterpy only).

It never imports the application package ``stream``. Use ``Tracker(TrackerSettings(...))`` and call
``update(boxes, scores, t)`` once per frame; see ``trackers.tracker`` for the track life cycle.
"""

from trackers.arrays import check_array, check_finite
from trackers.association import associate, associate_by_cost, centre_distance_matrix, iou_matrix, valid_boxes
from trackers.kalman import BoxKalmanFilter
from trackers.tracker import Tracker, TrackerSettings
from trackers.types import TrackSnapshot, TrackState

__all__ = [
    "BoxKalmanFilter",
    "TrackSnapshot",
    "TrackState",
    "Tracker",
    "TrackerSettings",
    "associate",
    "associate_by_cost",
    "centre_distance_matrix",
    "check_array",
    "check_finite",
    "iou_matrix",
    "valid_boxes",
]
