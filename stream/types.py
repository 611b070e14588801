"""Frozen, shape-checked data that flows between pipeline stages.

Frame → FaceDetections → (trackers.TrackSnapshot) → FaceCrop → Embedding → Match →
Identity → Event. Arrays are stored as read-only views; "no faces" is a (0, …) array,
never ``None``. A wrong shape or dtype raises at construction, naming the field.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trackers import TrackSnapshot, TrackState, check_array, check_finite

__all__ = [
    "Embedding",
    "Event",
    "EventKind",
    "FaceCrop",
    "FaceDetections",
    "Frame",
    "Identity",
    "Match",
    "TrackKey",
    "TrackSnapshot",
    "TrackState",
]


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame: HxWx3 uint8 BGR, read-only."""

    stream_id: str
    index: int
    epoch: int
    pts_s: float
    captured_at: float
    image: np.ndarray

    def __post_init__(self) -> None:
        _set(self, "image", check_array("Frame.image", self.image, np.uint8, (None, None, 3)))
        _require(self.image.shape[0] > 0 and self.image.shape[1] > 0, f"Frame.image: empty image {self.image.shape}")
        _require(self.index >= 0, f"Frame.index: must be >= 0, got {self.index}")
        _require(self.epoch >= 0, f"Frame.epoch: must be >= 0, got {self.epoch}")
        _require(math.isfinite(self.pts_s), f"Frame.pts_s: must be finite, got {self.pts_s}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, slots=True)
class FaceDetections:
    """Faces found in one frame, as parallel float32 arrays in full-frame pixels.

    boxes (N, 4) x1, y1, x2, y2; scores (N,); landmarks (N, 5, 2) in the order
    left eye, right eye, nose, left mouth corner, right mouth corner (as seen in the image).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        sizes: dict[str, int] = {}
        for name, shape in (("boxes", ("n", 4)), ("scores", ("n",)), ("landmarks", ("n", 5, 2))):
            arr = check_array(f"FaceDetections.{name}", getattr(self, name), np.float32, shape, sizes)
            check_finite(f"FaceDetections.{name}", arr)
            _set(self, name, arr)

    @classmethod
    def empty(cls) -> FaceDetections:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[FaceDetections]) -> FaceDetections:
        """The faces of every part, in order (duplicates kept)."""
        if not parts:
            return cls.empty()
        return cls(
            boxes=np.concatenate([p.boxes for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            landmarks=np.concatenate([p.landmarks for p in parts]),
        )

    def select(self, index: np.ndarray | slice | list[int]) -> FaceDetections:
        """Return the subset picked by an index array, boolean mask or slice."""
        return FaceDetections(
            boxes=np.ascontiguousarray(self.boxes[index]),
            scores=np.ascontiguousarray(self.scores[index]),
            landmarks=np.ascontiguousarray(self.landmarks[index]),
        )


@dataclass(frozen=True, slots=True, order=True)
class TrackKey:
    """A track's identity across the whole app: tracks restart per stream and epoch."""

    stream_id: str
    epoch: int
    track_id: int

    def __str__(self) -> str:
        """``stream:id``, with ``#epoch`` after a reconnect (``stream#2:id``): summaries' label."""
        return f"{self.stream_id}:{self.track_id}" if self.epoch == 0 else f"{self.stream_id}#{self.epoch}:{self.track_id}"


@dataclass(frozen=True, slots=True)
class FaceCrop:
    """An aligned face crop (HxWx3 uint8, BGR like Frame) cut from a full-resolution frame."""

    track: TrackKey
    frame_index: int
    crop: np.ndarray
    quality: float
    flags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _set(self, "crop", check_array("FaceCrop.crop", self.crop, np.uint8, (None, None, 3)))
        _require(math.isfinite(self.quality), f"FaceCrop.quality: must be finite, got {self.quality}")
        _set(self, "flags", frozenset(self.flags))


@dataclass(frozen=True, slots=True)
class Embedding:
    """A unit-norm feature vector with its pre-normalisation norm (AdaFace's quality)."""

    vector: np.ndarray
    norm: float
    model_id: str

    def __post_init__(self) -> None:
        vec = check_array("Embedding.vector", self.vector, np.float32, (None,))
        check_finite("Embedding.vector", vec)
        _require(vec.shape[0] > 0, "Embedding.vector: empty vector")
        length = float(np.linalg.norm(vec))
        _require(abs(length - 1.0) < 1e-3, f"Embedding.vector: must be unit-norm, has norm {length:.6f}")
        _require(
            math.isfinite(self.norm) and self.norm >= 0, f"Embedding.norm: must be finite and >= 0, got {self.norm}"
        )
        _require(bool(self.model_id), "Embedding.model_id: must not be empty")
        _set(self, "vector", vec)


@dataclass(frozen=True, slots=True)
class Match:
    """Top-k gallery candidates for one embedding, best first, and the best-to-second margin."""

    candidates: tuple[tuple[str, float], ...]
    margin: float

    def __post_init__(self) -> None:
        _set(self, "candidates", tuple((str(p), float(s)) for p, s in self.candidates))
        scores = [s for _, s in self.candidates]
        _require(scores == sorted(scores, reverse=True), "Match.candidates: must be sorted best first")
        _require(
            math.isfinite(self.margin) and self.margin >= 0, f"Match.margin: must be finite and >= 0, got {self.margin}"
        )

    @property
    def best(self) -> tuple[str, float] | None:
        return self.candidates[0] if self.candidates else None


@dataclass(frozen=True, slots=True)
class Identity:
    """The current decision for a track: a person, or ``None`` for unknown."""

    person: str | None
    confidence: float
    votes: int

    def __post_init__(self) -> None:
        _require(math.isfinite(self.confidence), f"Identity.confidence: must be finite, got {self.confidence}")
        _require(self.votes >= 0, f"Identity.votes: must be >= 0, got {self.votes}")

    @property
    def known(self) -> bool:
        return self.person is not None


class EventKind(enum.Enum):
    TRACK_STARTED = "track_started"
    IDENTITY_ASSIGNED = "identity_assigned"
    IDENTITY_CHANGED = "identity_changed"
    TRACK_ENDED = "track_ended"
    STREAM_DOWN = "stream_down"
    STREAM_UP = "stream_up"


_EVENT_FIELDS = frozenset({"ts", "stream", "kind", "epoch", "track_id", "person", "score"})


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth recording; serialises to one JSON line.

    Track events carry the track's ``TrackKey`` (its stream is the event's stream); stream events
    (``stream_up``/``stream_down``) carry none, and say their epoch and reason in ``extra``.
    ``extra`` holds the rest (``votes``, ``previous``, ...), never a name of the fields above.
    """

    ts: float
    stream: str
    kind: EventKind
    track: TrackKey | None = None
    person: str | None = None
    score: float | None = None
    extra: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EventKind):
            raise TypeError(f"Event.kind: expected EventKind, got {self.kind!r}")
        if self.track is not None and not isinstance(self.track, TrackKey):
            raise TypeError(f"Event.track: expected TrackKey or None, got {self.track!r}")
        _require(math.isfinite(self.ts), f"Event.ts: must be finite, got {self.ts}")
        _require(
            self.track is None or self.track.stream_id == self.stream,
            f"Event.track: {self.track} is not a track of stream {self.stream!r}",
        )
        extra = tuple(sorted(dict(self.extra).items()))
        clash = sorted(_EVENT_FIELDS.intersection(k for k, _ in extra) - ({"epoch"} if self.track is None else set()))
        _require(not clash, f"Event.extra: {', '.join(clash)} must not be set in extra")
        _set(self, "extra", extra)

    @classmethod
    def of_track(
        cls,
        ts: float,
        kind: EventKind,
        track: TrackKey,
        person: str | None = None,
        score: float | None = None,
        extra: tuple[tuple[str, Any], ...] = (),
    ) -> Event:
        """An event about one track (its stream is the track's)."""
        return cls(ts, track.stream_id, kind, track, person, score, extra)

    @property
    def track_id(self) -> int | None:
        return None if self.track is None else self.track.track_id

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.ts, "stream": self.stream, "kind": self.kind.value}
        if self.track is not None:
            out["epoch"] = self.track.epoch
        out.update(track_id=self.track_id, person=self.person, score=self.score)
        out.update(dict(self.extra))
        return out
