"""Frozen, shape-checked data that flows between pipeline stages.

Frame → FaceDetections → (trackers.TrackSnapshot) → FaceCrop → Embedding → Match →
Identity → Event. Arrays are stored as read-only views; "no faces" is a (0, …) array,
never ``None``. A wrong shape or dtype raises at construction, naming the field.
"""

from __future__ import annotations

import datetime
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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
    "iso_utc",
]


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame: HxWx3 uint8 BGR, read-only.

    ``pts_s``: stream time (s, from the epoch's start); ``captured_at``: ``time.monotonic()`` when the
    source read it (for latency); ``wall_time``: when it was seen, Unix seconds (UTC) — the capture
    time for live sources, the file's creation time (or the run start) plus pts for files; None when
    a test or tool made the frame without one (the output stage then uses its run start plus pts).
    """

    stream_id: str
    index: int
    epoch: int
    pts_s: float
    captured_at: float
    image: np.ndarray
    wall_time: float | None = None

    def __post_init__(self) -> None:
        _set(self, "image", check_array("Frame.image", self.image, np.uint8, (None, None, 3)))
        _require(self.image.shape[0] > 0 and self.image.shape[1] > 0, f"Frame.image: empty image {self.image.shape}")
        _require(self.index >= 0, f"Frame.index: must be >= 0, got {self.index}")
        _require(self.epoch >= 0, f"Frame.epoch: must be >= 0, got {self.epoch}")
        _require(math.isfinite(self.pts_s), f"Frame.pts_s: must be finite, got {self.pts_s}")
        _require(
            self.wall_time is None or math.isfinite(self.wall_time), f"Frame.wall_time: must be finite, got {self.wall_time}"
        )

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
    """Top-k gallery candidates for one embedding, best first, and the best-to-second margin.

    ``veto``: the highest cosine of the embedding to a negative example that counts against the best
    candidate (an impostor example of that person, or an ignored face); None when there is none. The
    best candidate can be named only when its score beats it (``Matcher.decide``).
    """

    candidates: tuple[tuple[str, float], ...]
    margin: float
    veto: float | None = None

    def __post_init__(self) -> None:
        _set(self, "candidates", tuple((str(p), float(s)) for p, s in self.candidates))
        scores = [s for _, s in self.candidates]
        _require(scores == sorted(scores, reverse=True), "Match.candidates: must be sorted best first")
        _require(
            math.isfinite(self.margin) and self.margin >= 0, f"Match.margin: must be finite and >= 0, got {self.margin}"
        )
        if self.veto is not None:
            _set(self, "veto", float(self.veto))
            _require(math.isfinite(self.veto), f"Match.veto: must be finite or None, got {self.veto}")

    @property
    def best(self) -> tuple[str, float] | None:
        return self.candidates[0] if self.candidates else None


@dataclass(frozen=True, slots=True)
class Identity:
    """The current decision for a track: a person, or ``None`` for unknown (then maybe the run's
    stranger label, ``unknown-N``, when the track looks like an earlier unknown track or got a new one)."""

    person: str | None
    confidence: float
    votes: int
    stranger: str | None = None

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
    STRANGER_ASSIGNED = "stranger_assigned"
    STREAM_DOWN = "stream_down"
    STREAM_UP = "stream_up"
    ZONE_ENTERED = "zone_entered"
    ZONE_LEFT = "zone_left"
    ALERT = "alert"


_EVENT_FIELDS = frozenset(
    {"time", "pts_s", "stream", "kind", "epoch", "track_id", "person", "score", "stranger", "zones"}
)


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth recording; serialises to one JSON line.

    ``pts_s`` is the stream time of the frame it happened on (None for stream events); ``time`` is
    wall-clock Unix seconds (UTC): the frame's ``wall_time``, stamped by the recognition stage (the
    pure core leaves it None), or when the source went up/down. Track events carry the track's
    ``TrackKey`` (its stream is the event's stream); stream events (``stream_up``/``stream_down``)
    carry none, and say their epoch and reason in ``extra``. ``stranger`` is the run's label
    (``unknown-N``) of an unknown person, on ``stranger_assigned`` and on the ``track_ended`` of a
    track that stayed unknown (``to_dict`` has the key only then). ``zones``: the configured zones of
    the stream that the track's box centre was in (``streams[].zones``; ``to_dict`` has the key only
    when there are some); ``zone_entered``/``zone_left`` name their zone in ``extra``; an ``alert``
    names its rule and the kind of the event that fired it. ``extra`` holds the rest (``votes``,
    ``previous``, ...), never a name of the fields above.
    """

    pts_s: float | None
    stream: str
    kind: EventKind
    track: TrackKey | None = None
    person: str | None = None
    score: float | None = None
    extra: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    stranger: str | None = None
    time: float | None = None
    zones: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EventKind):
            raise TypeError(f"Event.kind: expected EventKind, got {self.kind!r}")
        if self.track is not None and not isinstance(self.track, TrackKey):
            raise TypeError(f"Event.track: expected TrackKey or None, got {self.track!r}")
        for name in ("pts_s", "time"):
            value = getattr(self, name)
            _require(value is None or math.isfinite(value), f"Event.{name}: must be finite, got {value}")
        _require(
            self.track is None or self.track.stream_id == self.stream,
            f"Event.track: {self.track} is not a track of stream {self.stream!r}",
        )
        extra = tuple(sorted(dict(self.extra).items()))
        clash = sorted(_EVENT_FIELDS.intersection(k for k, _ in extra) - ({"epoch"} if self.track is None else set()))
        _require(not clash, f"Event.extra: {', '.join(clash)} must not be set in extra")
        _set(self, "extra", extra)
        _set(self, "zones", tuple(self.zones))
        _require(all(isinstance(z, str) and z for z in self.zones), f"Event.zones: names expected, got {self.zones!r}")

    @classmethod
    def of_track(
        cls,
        pts_s: float,
        kind: EventKind,
        track: TrackKey,
        person: str | None = None,
        score: float | None = None,
        extra: tuple[tuple[str, Any], ...] = (),
        stranger: str | None = None,
    ) -> Event:
        """An event about one track (its stream is the track's), at stream time ``pts_s``."""
        return cls(pts_s, track.stream_id, kind, track, person, score, extra, stranger)

    @classmethod
    def of_stream(cls, time: float, stream: str, kind: EventKind, epoch: int, reason: str) -> Event:
        """A source went down or (back) up, at wall-clock ``time``."""
        return cls(None, stream, kind, extra=(("epoch", epoch), ("reason", reason)), time=time)

    @property
    def track_id(self) -> int | None:
        return None if self.track is None else self.track.track_id

    def at(self, time: float) -> Event:
        """This event with its wall-clock ``time`` set (unless it has one)."""
        return self if self.time is not None else replace(self, time=time)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``time`` as UTC ISO 8601 with milliseconds (``2026-12-01T08:00:00.123Z``)."""
        out: dict[str, Any] = {"time": iso_utc(self.time), "pts_s": self.pts_s, "stream": self.stream}
        out["kind"] = self.kind.value
        if self.track is not None:
            out["epoch"] = self.track.epoch
        out.update(track_id=self.track_id, person=self.person, score=self.score)
        if self.stranger is not None:
            out["stranger"] = self.stranger
        if self.zones:
            out["zones"] = list(self.zones)
        out.update(dict(self.extra))
        return out


def iso_utc(unix_s: float | None) -> str | None:
    """Unix seconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds); None stays None."""
    if unix_s is None:
        return None
    moment = datetime.datetime.fromtimestamp(unix_s, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
