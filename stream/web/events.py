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

import json
import math
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any, Protocol
from urllib.parse import quote

from stream.types import EventKind, iso_utc

__all__ = [
    "EVENT_KINDS",
    "UNKNOWN",
    "EventFilter",
    "EventItem",
    "EventLike",
    "EventReader",
    "SqliteEventReader",
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


class SqliteEventReader:
    """Reads the events table of a SQLite database (see the module notes); a missing file reads empty."""

    def __init__(self, path: Path, timeout_s: float = 2.0) -> None:
        self.path = Path(path)
        self._timeout = timeout_s

    def events(self, query: EventFilter) -> list[EventItem]:
        db = self._open()
        if db is None:
            return []
        try:
            v2 = _has_column(db, "time")
            if v2 is None:
                return []
            where, params = _where(query, v2)
            order = "time DESC, id DESC" if v2 else "ts DESC, id DESC"
            sql = f"SELECT {_V2 if v2 else _V1} FROM events{where} ORDER BY {order} LIMIT ? OFFSET ?"
            rows = db.execute(sql, (*params, query.limit, query.offset)).fetchall()
            return [_row_v2(r) if v2 else _row_v1(r) for r in rows]
        finally:
            db.close()

    def event(self, event_id: int) -> EventItem | None:
        db = self._open()
        if db is None:
            return None
        try:
            v2 = _has_column(db, "time")
            if v2 is None:
                return None
            row = db.execute(f"SELECT {_V2 if v2 else _V1} FROM events WHERE id = ?", (int(event_id),)).fetchone()
            return None if row is None else _row_v2(row) if v2 else _row_v1(row)
        finally:
            db.close()

    def _open(self) -> sqlite3.Connection | None:
        if not self.path.is_file():
            return None
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=self._timeout, check_same_thread=False)
        db.execute("PRAGMA query_only = ON")
        return db


_V1 = "id, ts, stream, kind, track_id, person, score, extra_json"
_V2 = "id, time, pts_s, run_id, stream, kind, epoch, track_id, person, score, stranger, snapshot, extra_json"


def _has_column(db: sqlite3.Connection, column: str) -> bool | None:
    """Whether ``events`` has ``column``; None when there is no events table yet."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    return None if not columns else column in columns


def _where(q: EventFilter, v2: bool) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if q.stream is not None:
        clauses.append("stream = ?")
        params.append(q.stream)
    if q.person == UNKNOWN:
        clauses.append("person IS NULL")
    elif q.person is not None:
        clauses.append("person = ?")
        params.append(q.person)
    if q.kinds:
        clauses.append(f"kind IN ({', '.join('?' for _ in q.kinds)})")
        params += q.kinds
    column = "time" if v2 else "ts"
    for op, bound in ((">=", q.since), ("<", q.until)):
        if bound is not None:
            clauses.append(f"{column} {op} ?")
            params.append(_iso(bound) if v2 else bound)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _iso(t: float) -> str:
    """Schema 2's time text (``YYYY-MM-DDTHH:MM:SS.mmmZ``: text order is time order)."""
    return iso_utc(round(t * 1000) / 1000) or ""


def _extra(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _row_v1(r: Sequence[Any]) -> EventItem:
    extra = _extra(r[7])
    fields = {k: extra.pop(k, None) for k in ("pts_s", "run_id", "epoch", "stranger", "snapshot")}
    return EventItem(
        id=int(r[0]),
        time=_float(r[1]),
        stream=str(r[2]),
        kind=str(r[3]),
        track_id=_int(r[4]),
        person=_str(r[5]),
        score=_float(r[6]),
        pts_s=_float(fields["pts_s"]),
        run_id=_str(fields["run_id"]),
        epoch=_int(fields["epoch"]),
        stranger=_str(fields["stranger"]),
        snapshot=_str(fields["snapshot"]),
        extra=extra,
    )


def _row_v2(r: Sequence[Any]) -> EventItem:
    return EventItem(
        id=int(r[0]),
        time=_parse_iso(r[1]),
        pts_s=_float(r[2]),
        run_id=_str(r[3]),
        stream=str(r[4]),
        kind=str(r[5]),
        epoch=_int(r[6]),
        track_id=_int(r[7]),
        person=_str(r[8]),
        score=_float(r[9]),
        stranger=_str(r[10]),
        snapshot=_str(r[11]),
        extra=_extra(r[12]),
    )


def _parse_iso(value: Any) -> float | None:
    if not isinstance(value, str):
        return _float(value)
    try:
        return parse_time(value, "time")
    except ValueError:
        return None
