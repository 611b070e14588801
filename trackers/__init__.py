"""A small, pure multi-object tracker library (numpy, scipy, filterpy only).

It never imports the application package ``stream``.
"""

from trackers.types import TrackSnapshot, TrackState

__all__ = ["TrackSnapshot", "TrackState"]
