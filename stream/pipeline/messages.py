"""Typed messages passed between pipeline stages (frozen; frames are read-only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.types import Event, FaceDetections, Frame, TrackKey
from trackers import TrackSnapshot


@dataclass(frozen=True, slots=True)
class TrackFace:
    """What a track that ended leaves behind for the faces table: its fused template (unit float32),
    the mean feature norm behind it, the model, its best aligned crop (BGR), its final names, and the
    face's short side in full-frame pixels where that crop was cut (None without a crop)."""

    track: TrackKey
    template: np.ndarray
    norm: float
    model_id: str
    crop: np.ndarray | None
    person: str | None
    stranger: str | None
    face_px: float | None = None


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The stream's source has finished (or failed); no more frames follow for it."""

    stream_id: str
    events: tuple[Event, ...] = ()  # the stream's last events (its tracks ending)
    faces: tuple[TrackFace, ...] = ()  # the faces of those tracks


@dataclass(frozen=True, slots=True)
class Detected:
    """A frame and its faces; ``detections`` is None when detection was skipped for this frame."""

    frame: Frame
    detections: FaceDetections | None


@dataclass(frozen=True, slots=True)
class TrackLabel:
    """What the overlay shows for one track."""

    snapshot: TrackSnapshot
    person: str | None
    score: float | None
    quality: float | None
    stranger: str | None = None  # the run's unknown-N label of an unknown track, once it has one


@dataclass(frozen=True, slots=True)
class Annotated:
    """A processed frame: its tracks with labels, and the events it caused.

    ``labels`` covers confirmed and lost tracks; ``tentative`` holds the snapshots of tracks not yet
    confirmed, which get no label but whose faces ``outputs.blur_unknown`` hides too.
    """

    frame: Frame
    labels: tuple[TrackLabel, ...]
    events: tuple[Event, ...]
    snapshots: tuple[tuple[TrackKey, np.ndarray], ...] = ()  # (track, best crop): newly named or labelled unknown-N
    faces: tuple[TrackFace, ...] = ()  # of the tracks that ended on this frame
    tentative: tuple[TrackSnapshot, ...] = ()  # tracks not yet confirmed (not shown, but blurred when asked)
