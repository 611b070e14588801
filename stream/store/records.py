"""Typed records of the event store: what the pipeline writes and what queries give back.

Written (validated when built; a bad value raises ``ValueError``/``TypeError`` naming the field):

- ``RunRecord``: one per run (``run_id`` a UUID, start time, host, a config summary).
- ``EventRecord``: one event; the same fields as a line of the JSONL journal (``to_dict``).
- ``TrackRecord``: a track's time span and final identity (upserted: first/last only widen).
- ``FaceRecord``: a finished track's face: template embedding (unit float32, model id, norm), best crop
  (JPEG bytes), the face's size in the frame and the crop's sharpness, and time span, named or not.
- ``NegativeRecord``: a negative example for matching ("not this person", or an ignored group).

Read: ``EventRow``, ``TrackRow``, ``FaceRow``, ``FaceHit`` (a search result), ``RunRow``, ``NegativeRow``,
with their database ids; ``EventQuery`` selects events; ``PurgeCounts``, ``RelabelCounts`` and
``StoreCounters`` report.

Times: ``time``, ``first_time``, ``started``... are Unix seconds (UTC), rounded to the millisecond when
a record is built (the store keeps milliseconds, so a record and its row compare equal). ``iso_utc``
gives their text form, ``2026-12-01T08:00:01.234Z``. ``pts_s`` is stream time (seconds since the
stream's first frame, per epoch). Rows migrated from a schema-1 database may lack ``time`` or
``run_id`` (``None``).

Every text field (and every string inside ``extra``) has URL passwords masked (``mask_secrets``).
"""

from __future__ import annotations

import enum
import math
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import time as _wall_clock
from types import MappingProxyType
from typing import Any

import numpy as np

from stream.logs import mask_secrets
from stream.types import Event, EventKind

__all__ = [
    "LABEL_SOURCES",
    "NEGATIVE_KINDS",
    "UNKNOWN",
    "EventQuery",
    "EventRecord",
    "EventRow",
    "FaceHit",
    "FaceRecord",
    "FaceRow",
    "NegativeRecord",
    "NegativeRow",
    "PurgeCounts",
    "Record",
    "RelabelCounts",
    "RunEnd",
    "RunRecord",
    "RunRow",
    "StoreCounters",
    "TrackRecord",
    "TrackRow",
    "iso_utc",
    "parse_iso_utc",
    "to_ms",
]

UNKNOWN = "unknown"
"""``EventQuery.person`` value that selects events without a person (``person IS NULL``)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIME = 253402300799.999  # 9999-12-31T23:59:59.999Z: ISO text keeps four year digits
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
EVENT_FIELDS = (
    "time",
    "pts_s",
    "run_id",
    "stream",
    "kind",
    "epoch",
    "track_id",
    "person",
    "score",
    "stranger",
    "snapshot",
)
"""The fields of an event, in the order of a JSONL line and of the ``events`` table."""
_RESERVED = frozenset({*EVENT_FIELDS, "id", "ts"})
JPEG_MAGIC = b"\xff\xd8"


# ---------------------------------------------------------------- times


def to_ms(t: float) -> float:
    """``t`` rounded to the millisecond (what the store keeps)."""
    return round(t * 1000) / 1000


def iso_utc(t: float) -> str:
    """Unix seconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (fixed width, so text order is time order)."""
    ms = round(t * 1000)
    return (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_iso_utc(text: str) -> float:
    """The inverse of ``iso_utc`` (exactly that format)."""
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return round((moment - _EPOCH) / timedelta(milliseconds=1)) / 1000


# ---------------------------------------------------------------- field checks


def _fail(name: str, message: str) -> ValueError:
    return ValueError(f"{name}: {message}")


def _time(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name}: expected Unix seconds (float), got {value!r}")
    t = float(value)
    if not (math.isfinite(t) and 0.0 <= t <= _MAX_TIME):
        raise _fail(name, f"must be finite Unix seconds between 1970 and 9999, got {value!r}")
    return to_ms(t)


def _opt_time(name: str, value: Any) -> float | None:
    return None if value is None else _time(name, value)


def _opt_float(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name}: expected a number or None, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise _fail(name, f"must be finite, got {value!r}")
    return v


def _score(name: str, value: Any) -> float | None:
    """A score: a non-finite one is stored as None (as the JSONL journal writes it)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name}: expected a number or None, got {value!r}")
    v = float(value)
    return v if math.isfinite(v) else None


def _count(name: str, value: Any, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name}: expected an int >= 0, got {value!r}")
    if value < 0:
        raise _fail(name, f"must be >= 0, got {value}")
    return int(value)


def _text(name: str, value: Any, optional: bool = True) -> str | None:
    if value is None:
        if optional:
            return None
        raise TypeError(f"{name}: expected a non-empty string, got None")
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a string, got {value!r}")
    if not optional and not value:
        raise _fail(name, "must not be empty")
    return mask_secrets(value)


def _run_id(name: str, value: Any) -> str:
    if not isinstance(value, str | uuid.UUID):
        raise TypeError(f"{name}: expected a UUID string, got {value!r}")
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise _fail(name, f"must be a UUID, got {value!r}") from None


def _kind(name: str, value: Any) -> str:
    if isinstance(value, EventKind):
        return value.value
    if not isinstance(value, str) or not _KIND.match(value):
        raise _fail(name, f"expected an EventKind or a lower_snake_case name, got {value!r}")
    return value


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON data (dict/list/str/int/float/bool/None), URL passwords masked in
    every string, non-finite floats as None."""
    if isinstance(value, str):
        return mask_secrets(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {mask_secrets(str(k)): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        return json_ready(value.item())
    if isinstance(value, enum.Enum):
        return json_ready(value.value)
    return mask_secrets(str(value))


def _extra(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a mapping, got {value!r}")
    clean = json_ready(value)
    clash = sorted(_RESERVED.intersection(clean))
    if clash:
        raise _fail(name, f"{', '.join(clash)} must not be set in extra")
    return MappingProxyType(clean)


def _frozen_vector(name: str, value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.ndim != 1 or value.shape[0] < 1 or not np.issubdtype(value.dtype, np.floating):
        raise _fail(name, f"expected a (D,) float vector, got {value.dtype} {value.shape}")
    vector = np.array(value, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(vector)):
        raise _fail(name, "must be finite")
    length = float(np.linalg.norm(vector.astype(np.float64)))
    if abs(length - 1.0) > 1e-3:
        raise _fail(name, f"must be a unit vector, has norm {length:.4f}")
    vector.flags.writeable = False
    return vector


# ---------------------------------------------------------------- written records


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of the app: ``run_id`` names it on every event, track and face it writes."""

    run_id: str
    started: float
    host: str | None = None
    config_summary: str | None = None

    def __post_init__(self) -> None:
        _set(self, "run_id", _run_id("RunRecord.run_id", self.run_id))
        _set(self, "started", _time("RunRecord.started", self.started))
        _set(self, "host", _text("RunRecord.host", self.host))
        _set(self, "config_summary", _text("RunRecord.config_summary", self.config_summary))

    @classmethod
    def new(cls, config_summary: str | None = None, started: float | None = None, host: str | None = None) -> RunRecord:
        """A fresh run: a random UUID, now (or ``started``), this machine's host name (or ``host``)."""
        return cls(
            str(uuid.uuid4()),
            _time_now() if started is None else started,
            socket.gethostname() if host is None else host,
            config_summary,
        )


def _time_now() -> float:
    return _wall_clock()


@dataclass(frozen=True, slots=True)
class RunEnd:
    """The end of a run (``Store.end_run``)."""

    run_id: str
    ended: float

    def __post_init__(self) -> None:
        _set(self, "run_id", _run_id("RunEnd.run_id", self.run_id))
        _set(self, "ended", _time("RunEnd.ended", self.ended))


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event as stored and journalled.

    ``time``: when it happened (Unix seconds, UTC: a live frame's capture wall-clock time, or a file's
    creation time plus pts). ``pts_s``: the stream time of the frame (None for stream up/down).
    ``epoch``: the source epoch (the track's, or the stream's for stream events). ``snapshot``: the
    best-shot file of identity events. ``extra``: the rest (``votes``, ``previous``, ``reason``...),
    never one of the field names.
    """

    run_id: str
    time: float
    pts_s: float | None
    stream: str
    kind: str
    epoch: int | None = None
    track_id: int | None = None
    person: str | None = None
    score: float | None = None
    stranger: str | None = None
    snapshot: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _set(self, "run_id", _run_id("EventRecord.run_id", self.run_id))
        _set(self, "time", _time("EventRecord.time", self.time))
        _set(self, "pts_s", _opt_float("EventRecord.pts_s", self.pts_s))
        _set(self, "stream", _text("EventRecord.stream", self.stream, optional=False))
        _set(self, "kind", _kind("EventRecord.kind", self.kind))
        _set(self, "epoch", _count("EventRecord.epoch", self.epoch, optional=True))
        _set(self, "track_id", _count("EventRecord.track_id", self.track_id, optional=True))
        _set(self, "person", _text("EventRecord.person", self.person))
        _set(self, "score", _score("EventRecord.score", self.score))
        _set(self, "stranger", _text("EventRecord.stranger", self.stranger))
        _set(self, "snapshot", _text("EventRecord.snapshot", self.snapshot))
        _set(self, "extra", _extra("EventRecord.extra", self.extra))

    @classmethod
    def from_event(
        cls,
        event: Event,
        *,
        run_id: str,
        time: float,
        pts_s: float | None,
        snapshot: str | Path | None = None,
    ) -> EventRecord:
        """The record of a pipeline ``Event``: the epoch comes from its track (or, for stream events,
        from ``extra["epoch"]``); ``time`` and ``pts_s`` are the caller's (``Event.ts`` is not used);
        the event's ``zones``, when it has some, go into ``extra`` as ``zones`` (a list)."""
        extra = dict(event.extra)
        epoch = event.track.epoch if event.track is not None else extra.pop("epoch", None)
        extra.pop("epoch", None)
        if event.zones:  # kept with the extras (``extra_json``): the journal line has them as "zones"
            extra["zones"] = list(event.zones)
        return cls(
            run_id=run_id,
            time=time,
            pts_s=pts_s,
            stream=event.stream,
            kind=event.kind.value,
            epoch=epoch,
            track_id=event.track_id,
            person=event.person,
            score=event.score,
            stranger=event.stranger,
            snapshot=None if snapshot is None else str(snapshot),
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSONL journal line: the fields in ``EVENT_FIELDS`` order (``time`` as ISO text), then ``extra``."""
        return _event_dict(self, iso_utc(self.time))


@dataclass(frozen=True, slots=True)
class TrackRecord:
    """A track's span and identity; writing it again for the same (run, stream, epoch, track) widens
    the span, takes the newer person/score/stranger and keeps the older snapshot if the new one is None."""

    run_id: str
    stream: str
    epoch: int
    track_id: int
    first_time: float
    last_time: float
    first_pts: float | None = None
    last_pts: float | None = None
    person: str | None = None
    score: float | None = None
    stranger: str | None = None
    snapshot: str | None = None

    def __post_init__(self) -> None:
        _set(self, "run_id", _run_id("TrackRecord.run_id", self.run_id))
        _set(self, "stream", _text("TrackRecord.stream", self.stream, optional=False))
        _set(self, "epoch", _count("TrackRecord.epoch", self.epoch))
        _set(self, "track_id", _count("TrackRecord.track_id", self.track_id))
        _set(self, "first_time", _time("TrackRecord.first_time", self.first_time))
        _set(self, "last_time", _time("TrackRecord.last_time", self.last_time))
        if self.last_time < self.first_time:
            raise _fail("TrackRecord.last_time", f"{self.last_time} is before first_time {self.first_time}")
        _set(self, "first_pts", _opt_float("TrackRecord.first_pts", self.first_pts))
        _set(self, "last_pts", _opt_float("TrackRecord.last_pts", self.last_pts))
        _set(self, "person", _text("TrackRecord.person", self.person))
        _set(self, "score", _score("TrackRecord.score", self.score))
        _set(self, "stranger", _text("TrackRecord.stranger", self.stranger))
        _set(self, "snapshot", _text("TrackRecord.snapshot", self.snapshot))


@dataclass(frozen=True, slots=True, eq=False)
class FaceRecord:
    """The face of a finished track: its norm-weighted template embedding and best crop.

    ``embedding``: (D,) unit vector, stored as float32 (a read-only copy is kept). ``norm``: the
    template's norm before normalisation (a quality cue). ``model_id``: the embedder that made it;
    search compares only faces of one model. ``crop_jpeg``: the best crop, JPEG bytes.
    """

    run_id: str
    stream: str
    epoch: int
    track_id: int
    first_time: float
    last_time: float
    model_id: str
    norm: float
    embedding: np.ndarray
    crop_jpeg: bytes
    person: str | None = None
    stranger: str | None = None
    score: float | None = None
    face_px: float | None = None
    blur: float | None = None

    def __post_init__(self) -> None:
        _set(self, "run_id", _run_id("FaceRecord.run_id", self.run_id))
        _set(self, "stream", _text("FaceRecord.stream", self.stream, optional=False))
        _set(self, "epoch", _count("FaceRecord.epoch", self.epoch))
        _set(self, "track_id", _count("FaceRecord.track_id", self.track_id))
        _set(self, "first_time", _time("FaceRecord.first_time", self.first_time))
        _set(self, "last_time", _time("FaceRecord.last_time", self.last_time))
        if self.last_time < self.first_time:
            raise _fail("FaceRecord.last_time", f"{self.last_time} is before first_time {self.first_time}")
        _set(self, "model_id", _text("FaceRecord.model_id", self.model_id, optional=False))
        norm = _opt_float("FaceRecord.norm", self.norm)
        if norm is None or norm < 0:
            raise _fail("FaceRecord.norm", f"must be a finite number >= 0, got {self.norm!r}")
        _set(self, "norm", norm)
        _set(self, "embedding", _frozen_vector("FaceRecord.embedding", self.embedding))
        if not isinstance(self.crop_jpeg, bytes | bytearray | memoryview):
            raise TypeError(f"FaceRecord.crop_jpeg: expected JPEG bytes, got {type(self.crop_jpeg).__name__}")
        crop = bytes(self.crop_jpeg)
        if not crop.startswith(JPEG_MAGIC):
            raise _fail("FaceRecord.crop_jpeg", "is not a JPEG (no FF D8 start marker)")
        _set(self, "crop_jpeg", crop)
        _set(self, "person", _text("FaceRecord.person", self.person))
        _set(self, "stranger", _text("FaceRecord.stranger", self.stranger))
        _set(self, "score", _score("FaceRecord.score", self.score))
        _set(self, "face_px", _opt_non_negative("FaceRecord.face_px", self.face_px))
        _set(self, "blur", _opt_non_negative("FaceRecord.blur", self.blur))


def _opt_non_negative(name: str, value: Any) -> float | None:
    number = _opt_float(name, value)
    if number is not None and number < 0:
        raise _fail(name, f"must be >= 0, got {value!r}")
    return number


NEGATIVE_KINDS = ("impostor", "ignored")
"""``impostor``: a face that is not ``person`` ("not this person"); ``ignored``: a face of an ignored
group of unknowns, which counts against everybody."""

LABEL_SOURCES = ("user", "rematch")
"""Who set a stored face's ``person`` after its run (``FaceRow.label_source``; None: the run itself)."""


@dataclass(frozen=True, slots=True, eq=False)
class NegativeRecord:
    """A negative example for matching: a face template that must not be named ``person`` (impostor),
    or that must not be named anyone (ignored). The template is copied from the stored face, so the
    example outlives the face (retention does not delete examples; deleting the person or un-ignoring
    the group does).

    ``face_id``: the stored face it was taken from (None when it came from elsewhere). ``group_id``:
    for ``ignored``, the id of the ignored group (faces marked with it in ``faces.ignored``).
    """

    kind: str
    person: str | None
    model_id: str
    norm: float
    embedding: np.ndarray
    created: float
    face_id: int | None = None
    group_id: int | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in NEGATIVE_KINDS:
            raise _fail("NegativeRecord.kind", f"must be one of {', '.join(NEGATIVE_KINDS)}, got {self.kind!r}")
        _set(self, "person", _text("NegativeRecord.person", self.person))
        if (self.kind == "impostor") != (self.person is not None):
            raise _fail("NegativeRecord.person", "an impostor example names its person; an ignored one names nobody")
        _set(self, "model_id", _text("NegativeRecord.model_id", self.model_id, optional=False))
        norm = _opt_non_negative("NegativeRecord.norm", self.norm)
        if norm is None:
            raise _fail("NegativeRecord.norm", "must be a finite number >= 0, got None")
        _set(self, "norm", norm)
        _set(self, "embedding", _frozen_vector("NegativeRecord.embedding", self.embedding))
        _set(self, "created", _time("NegativeRecord.created", self.created))
        _set(self, "face_id", _count("NegativeRecord.face_id", self.face_id, optional=True))
        _set(self, "group_id", _count("NegativeRecord.group_id", self.group_id, optional=True))
        _set(self, "note", _text("NegativeRecord.note", self.note))


Record = RunRecord | RunEnd | EventRecord | TrackRecord | FaceRecord
"""Anything ``Store`` writes through its batches (negative examples and relabelling are written at once)."""


# ---------------------------------------------------------------- rows read back


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    started: float
    ended: float | None
    host: str | None
    config_summary: str | None


@dataclass(frozen=True, slots=True)
class EventRow:
    """A stored event. ``time`` and ``run_id`` are None only on rows migrated from schema 1."""

    id: int
    time: float | None
    pts_s: float | None
    run_id: str | None
    stream: str
    kind: str
    epoch: int | None
    track_id: int | None
    person: str | None
    score: float | None
    stranger: str | None
    snapshot: str | None
    extra: Mapping[str, Any]

    @property
    def time_iso(self) -> str | None:
        return None if self.time is None else iso_utc(self.time)

    def to_dict(self) -> dict[str, Any]:
        """``{"id": ..., then the fields of a JSONL journal line}``."""
        return {"id": self.id, **_event_dict(self, self.time_iso)}

    def record(self) -> EventRecord:
        """The ``EventRecord`` this row holds (for rows with a run and a time)."""
        if self.run_id is None or self.time is None:
            raise ValueError(f"event {self.id}: a migrated schema-1 row has no run_id/time")
        return EventRecord(
            self.run_id,
            self.time,
            self.pts_s,
            self.stream,
            self.kind,
            self.epoch,
            self.track_id,
            self.person,
            self.score,
            self.stranger,
            self.snapshot,
            self.extra,
        )


def _event_dict(e: EventRecord | EventRow, time_text: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": time_text,
        "pts_s": e.pts_s,
        "run_id": e.run_id,
        "stream": e.stream,
        "kind": e.kind,
        "epoch": e.epoch,
        "track_id": e.track_id,
        "person": e.person,
        "score": e.score,
        "stranger": e.stranger,
        "snapshot": e.snapshot,
    }
    out.update(e.extra)
    return out


@dataclass(frozen=True, slots=True)
class TrackRow:
    id: int
    run_id: str | None
    stream: str
    epoch: int
    track_id: int
    first_time: float | None
    last_time: float | None
    first_pts: float | None
    last_pts: float | None
    person: str | None
    score: float | None
    stranger: str | None
    snapshot: str | None


@dataclass(frozen=True, slots=True, eq=False)
class FaceRow:
    """A stored face without its crop (``Store.face_crop`` reads that)."""

    face_id: int
    run_id: str
    stream: str
    epoch: int
    track_id: int
    first_time: float
    last_time: float
    person: str | None
    stranger: str | None
    score: float | None
    model_id: str
    norm: float
    embedding: np.ndarray
    face_px: float | None = None  # the face's short side in frame pixels where the crop was cut
    blur: float | None = None  # variance of the Laplacian of the crop (stream.identity.quality.blur_score)
    ignored: int | None = None  # the ignored group it belongs to (NegativeRecord.group_id)
    pin: int | None = None  # faces a person merged share a pin: they are always grouped together
    detached: bool = False  # a person took it out of its group: it is a group of its own
    label_source: str | None = None  # who set person after the run: None (the run), "user", "rematch"


@dataclass(frozen=True, slots=True, eq=False)
class NegativeRow:
    """A stored negative example (``NegativeRecord`` with its id)."""

    id: int
    kind: str
    person: str | None
    model_id: str
    norm: float
    embedding: np.ndarray
    created: float
    face_id: int | None
    group_id: int | None
    note: str | None


@dataclass(frozen=True, slots=True)
class RelabelCounts:
    """Rows a relabelling changed."""

    faces: int = 0
    tracks: int = 0
    events: int = 0
    negatives: int = 0

    def __add__(self, other: RelabelCounts) -> RelabelCounts:
        return RelabelCounts(
            self.faces + other.faces,
            self.tracks + other.tracks,
            self.events + other.events,
            self.negatives + other.negatives,
        )

    def to_dict(self) -> dict[str, int]:
        return {"faces": self.faces, "tracks": self.tracks, "events": self.events, "negatives": self.negatives}


@dataclass(frozen=True, slots=True)
class FaceHit:
    """One search result: a stored face and its cosine similarity to the query."""

    face_id: int
    score: float
    run_id: str
    stream: str
    epoch: int
    track_id: int
    first_time: float
    last_time: float
    person: str | None
    stranger: str | None
    model_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "face_id": self.face_id,
            "score": round(self.score, 6),
            "first_time": iso_utc(self.first_time),
            "last_time": iso_utc(self.last_time),
            "run_id": self.run_id,
            "stream": self.stream,
            "epoch": self.epoch,
            "track_id": self.track_id,
            "person": self.person,
            "stranger": self.stranger,
            "model_id": self.model_id,
        }


# ---------------------------------------------------------------- queries and reports


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events ``Store.events`` returns.

    Every given filter must hold: ``stream``; ``person`` (``"unknown"``: events without a person);
    ``kinds`` (any of them); ``since`` <= time < ``until`` (Unix seconds; rows without a time never
    match a time filter); ``run_id``. Order: newest first (``time`` then id, descending; rows without a
    time count as oldest), or oldest first with ``newest_first=False``. Paged by ``limit``/``offset``.
    """

    stream: str | None = None
    person: str | None = None
    kinds: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    run_id: str | None = None
    limit: int = 100
    offset: int = 0
    newest_first: bool = True

    def __post_init__(self) -> None:
        _set(self, "stream", _text("EventQuery.stream", self.stream))
        _set(self, "person", _text("EventQuery.person", self.person))
        if isinstance(self.kinds, str | EventKind):
            raise TypeError("EventQuery.kinds: expected a tuple of kinds, got a single value")
        _set(self, "kinds", tuple(_kind("EventQuery.kinds", k) for k in self.kinds))
        _set(self, "since", _opt_time("EventQuery.since", self.since))
        _set(self, "until", _opt_time("EventQuery.until", self.until))
        if self.run_id is not None:
            _set(self, "run_id", _run_id("EventQuery.run_id", self.run_id))
        limit = _count("EventQuery.limit", self.limit)
        if not limit or limit > 1_000_000:
            raise _fail("EventQuery.limit", f"must be between 1 and 1000000, got {self.limit}")
        _count("EventQuery.offset", self.offset)


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """Rows (and snapshot files) deleted by one purge."""

    events: int = 0
    tracks: int = 0
    faces: int = 0
    runs: int = 0
    snapshot_files: int = 0

    @property
    def total(self) -> int:
        return self.events + self.tracks + self.faces + self.runs + self.snapshot_files


@dataclass(frozen=True, slots=True)
class StoreCounters:
    """What a ``Store`` has done so far (for metrics).

    ``pending``: rows in memory not yet written (a gauge). ``buffered``: rows that had to wait out an
    outage of the store. ``dropped``: rows lost (oldest dropped from a full buffer, or still unwritten at
    close). ``reconnects``: times the store came back after an outage. ``failures``: failed write or
    connect attempts. ``written``: rows committed. ``up``: the store took the last write.
    """

    pending: int = 0
    buffered: int = 0
    dropped: int = 0
    reconnects: int = 0
    failures: int = 0
    written: int = 0
    up: bool = True
