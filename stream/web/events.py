"""What the web app reads of the stored events, and the snapshot files it may serve.

``EventReader`` is the small protocol the routes use: ``events(EventFilter)`` (newest first, paged) and
``event(id)``. ``EventFilter`` has the fields of ``stream.store.EventQuery`` and ``EventLike`` the
attributes of ``stream.store.EventRow``, so the event store fits through a few-line adapter.
``SqliteEventReader`` reads an events database directly, read-only, with a connection per call (so any
web thread may call it): today's schema (``stream/outputs/events.py``: ``events(id, ts, stream, kind,
track_id, person, score, extra_json)``) and the store's schema 2 (``time`` as ISO text, one column per
event field).

Snapshots are served only by name, checked (``snapshot_file``): a plain ``*.jpg`` file name, no path
separators, no leading dot, that resolves to a file directly inside the snapshots folder. An event's
stored snapshot path is reduced to its file name and checked the same way, so neither a URL nor a
database row can reach another file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any, Protocol

from stream.store import EventQuery
from stream.store.urls import open_store
from stream.types import EventKind, iso_utc

__all__ = [
    "EVENT_KINDS",
    "UNKNOWN",
    "EventFilter",
    "EventItem",
    "EventLike",
    "EventReader",
    "StoreEventReader",
    "event_json",
    "parse_time",
    "snapshot_file",
    "snapshot_name",
]

UNKNOWN = "unknown"
"""``EventFilter.person`` value that selects events without a person (as ``stream.store.UNKNOWN``)."""
EVENT_KINDS = tuple(kind.value for kind in EventKind)
MAX_LIMIT = 1000
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.jpg$")


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to read: every given filter must hold (``person="unknown"``: no person; ``kinds``:
    any of them; ``since`` <= time < ``until``, Unix s); newest first, ``limit`` from ``offset``."""

    stream: str | None = None
    person: str | None = None
    kinds: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit: must be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.offset < 0:
            raise ValueError(f"offset: must be >= 0, got {self.offset}")
        bad = [k for k in self.kinds if k not in EVENT_KINDS]
        if bad:
            raise ValueError(f"kind: {bad[0]!r} is not one of {', '.join(EVENT_KINDS)}")


class EventLike(Protocol):
    """A stored event (``stream.store.EventRow`` fits)."""

    @property
    def id(self) -> int: ...
    @property
    def time(self) -> float | None: ...
    @property
    def pts_s(self) -> float | None: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def stream(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def epoch(self) -> int | None: ...
    @property
    def track_id(self) -> int | None: ...
    @property
    def person(self) -> str | None: ...
    @property
    def score(self) -> float | None: ...
    @property
    def stranger(self) -> str | None: ...
    @property
    def snapshot(self) -> str | None: ...
    @property
    def extra(self) -> Mapping[str, Any]: ...


class EventReader(Protocol):
    def events(self, query: EventFilter) -> Sequence[EventLike]: ...
    def event(self, event_id: int) -> EventLike | None: ...


@dataclass(frozen=True, slots=True)
class EventItem:
    """``EventLike`` as read by ``SqliteEventReader`` (and made by tests)."""

    id: int
    time: float | None
    stream: str
    kind: str
    pts_s: float | None = None
    run_id: str | None = None
    epoch: int | None = None
    track_id: int | None = None
    person: str | None = None
    score: float | None = None
    stranger: str | None = None
    snapshot: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class StoreEventReader:
    """Reads through the event store (``stream.store``: SQLite or PostgreSQL) with a connection of its
    own per call, so any web thread may call it and the pipeline's writing connection is never shared."""

    def __init__(self, url: str) -> None:
        self._url = url

    def events(self, query: EventFilter) -> Sequence[EventLike]:
        with open_store(self._url, create=False) as store:
            return store.events(
                EventQuery(
                    stream=query.stream,
                    person=query.person,
                    kinds=query.kinds,
                    since=query.since,
                    until=query.until,
                    limit=query.limit,
                    offset=query.offset,
                )
            )

    def event(self, event_id: int) -> EventLike | None:
        with open_store(self._url, create=False) as store:
            return store.event(event_id)


def event_json(event: EventLike) -> dict[str, Any]:
    """The API's JSON of an event: the journal line's fields with its ``id``; the snapshot as a URL
    (``snapshot_url``), never a server path."""
    out: dict[str, Any] = {
        "id": event.id,
        "time": iso_utc(event.time),
        "pts_s": event.pts_s,
        "run_id": event.run_id,
        "stream": event.stream,
        "kind": event.kind,
        "epoch": event.epoch,
        "track_id": event.track_id,
        "person": event.person,
        "score": _finite(event.score),
        "stranger": event.stranger,
    }
    for key, value in event.extra.items():
        out.setdefault(key, value)
    out.pop("snapshot", None)
    name = snapshot_name(event.snapshot)
    out["snapshot_url"] = None if name is None else f"/api/events/{event.id}/snapshot"
    return out


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


# ---------------------------------------------------------------- snapshots


def snapshot_name(stored: str | None) -> str | None:
    """The checked file name of a stored snapshot path (or a bare name), or None."""
    if not stored or "\x00" in stored:
        return None
    name = PurePath(stored.replace("\\", "/")).name
    return name if _SNAPSHOT_NAME.fullmatch(name) else None


def snapshot_file(folder: Path | None, name: str) -> Path | None:
    """The snapshot ``name`` inside ``folder``, or None: ``name`` must be a plain ``*.jpg`` file name
    (no separators, no leading dot) and resolve to a regular file directly inside ``folder``."""
    if folder is None or not _SNAPSHOT_NAME.fullmatch(name):
        return None
    root = folder.resolve()
    path = (root / name).resolve()
    if path.parent != root or not path.is_file():
        return None
    return path


# ---------------------------------------------------------------- parameters


def parse_time(text: str, name: str) -> float:
    """Unix seconds from ISO 8601 (``2026-12-01T08:00``, seconds, fraction and ``Z``/offset optional; no
    offset means UTC) or a number of Unix seconds. ``ValueError`` naming ``name`` otherwise."""
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(number) and 0 <= number < 253402300800:
            return number
        raise ValueError(f"{name}: Unix seconds out of range, got {text!r}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{name}: expected ISO 8601 time (2026-12-01T08:00:00Z) or Unix seconds, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# ---------------------------------------------------------------- SQLite
