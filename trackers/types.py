"""Public data types of the tracker library."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from trackers.arrays import check_array, check_finite


class TrackState(enum.Enum):
    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class TrackSnapshot:
    """One track as seen after one ``Tracker.update`` call.

    ``box`` is (4,) float32 x1, y1, x2, y2 in frame pixels (the filter's estimate);
    ``det_index`` is the index of the detection this track matched in that update,
    or -1 when it was only predicted. ``track_id`` is the public ID (1, 2, 3, ... per
    tracker, given when a track is first confirmed) or -1 for a tentative track.
    ``landmarks`` is the (5, 2) float32 payload of the matched detection (the ``extras``
    passed to ``Tracker.update``) when there was one in this update, else ``None``.
    """

    track_id: int
    state: TrackState
    box: np.ndarray
    score: float
    det_index: int
    age: int
    hits: int
    time_since_update_s: float
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        box = check_array("TrackSnapshot.box", self.box, np.float32, (4,))
        check_finite("TrackSnapshot.box", box)
        object.__setattr__(self, "box", box)
        if self.landmarks is not None:
            points = check_array("TrackSnapshot.landmarks", self.landmarks, np.float32, (5, 2))
            check_finite("TrackSnapshot.landmarks", points)
            object.__setattr__(self, "landmarks", points)
        if not isinstance(self.state, TrackState):
            raise TypeError(f"TrackSnapshot.state: expected TrackState, got {self.state!r}")
        if self.det_index < -1:
            raise ValueError(f"TrackSnapshot.det_index: must be >= -1, got {self.det_index}")

    @property
    def matched(self) -> bool:
        return self.det_index >= 0
