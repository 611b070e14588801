"""Event sink: one JSON line per event and the same events (plus a per-track table) in SQLite.

Either output may be ``None``. URL passwords in any string value are masked with ``mask_secrets``
before anything is written.

SQLite: WAL journal, ``busy_timeout`` 5 s, ``synchronous=NORMAL`` (a committed batch survives the
process being killed, even ``kill -9``; only an OS crash or power cut can lose the last batches).
Several sinks (processes or threads, each with its own ``EventSink``) can write one database: each
batch is one short ``BEGIN IMMEDIATE`` transaction and the others wait for it (up to the busy timeout).

Commit policy: ``write``/``track_update`` queue rows in memory (and lines in the JSONL file's
buffer); they are written in one short transaction (and the JSONL file flushed) once
``commit_every`` rows (default 50) are pending or ``commit_interval_s`` (default 0.5 s) has passed
since the last commit — checked on each call, there is no timer thread. No transaction stays open
between calls, so an idle sink never blocks another writer. ``flush()`` commits now; the owning
stage should call it when its queue is idle, and ``close()`` commits and closes. Whatever
``flush()`` returned from is on disk for the next process to read; rows not yet flushed are lost
if the process is killed.

Tables:
  events(id, ts, stream, kind, track_id, person, score, extra_json)   (the epoch is in extra_json)
  tracks(stream, epoch, track_id, first_ts, last_ts, person, score, snapshot_path)
         primary key (stream, epoch, track_id): track ids restart with every epoch (reconnect).

One owner: the pipeline's output thread. The connection is opened with ``check_same_thread=False`` only so the
sink can be built on the main thread and handed over; never use one sink from two threads at once.
"""

from __future__ import annotations

import enum
import json
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from stream.logs import mask_secrets
from stream.outputs import OutputError, make_parent
from stream.types import Event, TrackKey

__all__ = ["EventSink"]

BUSY_TIMEOUT_S = 5.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        stream TEXT NOT NULL,
        kind TEXT NOT NULL,
        track_id INTEGER,
        person TEXT,
        score REAL,
        extra_json TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX IF NOT EXISTS events_stream_ts ON events (stream, ts)",
    """CREATE TABLE IF NOT EXISTS tracks (
        stream TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        track_id INTEGER NOT NULL,
        first_ts REAL NOT NULL,
        last_ts REAL NOT NULL,
        person TEXT,
        score REAL,
        snapshot_path TEXT,
        PRIMARY KEY (stream, epoch, track_id)
    )""",
)

_INSERT_EVENT = (
    "INSERT INTO events (ts, stream, kind, track_id, person, score, extra_json) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# first/last seen only widen; person, score and the snapshot follow the latest update (a snapshot
# path of None keeps the one already stored).
_UPSERT_TRACK = """
INSERT INTO tracks (stream, epoch, track_id, first_ts, last_ts, person, score, snapshot_path)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (stream, epoch, track_id) DO UPDATE SET
    first_ts = min(tracks.first_ts, excluded.first_ts),
    last_ts = max(tracks.last_ts, excluded.last_ts),
    person = excluded.person,
    score = excluded.score,
    snapshot_path = coalesce(excluded.snapshot_path, tracks.snapshot_path)
"""


class EventSink:
    """Append events to a JSONL file and/or a SQLite database (see the module notes)."""

    def __init__(
        self,
        jsonl_path: Path | None,
        sqlite_path: Path | None,
        *,
        commit_every: int = 50,
        commit_interval_s: float = 0.5,
    ) -> None:
        if commit_every < 1:
            raise ValueError(f"EventSink.commit_every: must be >= 1, got {commit_every}")
        self.jsonl_path = None if jsonl_path is None else Path(jsonl_path)
        self.sqlite_path = None if sqlite_path is None else Path(sqlite_path)
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self._jsonl: IO[str] | None = None
        self._db: sqlite3.Connection | None = None
        self._rows: list[tuple[str, tuple[Any, ...]]] = []  # SQL batch waiting for a commit
        self._pending = 0  # events and track updates since the last commit
        self._closed = False
        self._last_commit = time.monotonic()
        try:
            self._jsonl = self._open_jsonl()
            self._db = self._open_db()
        except BaseException:
            self._release()
            raise

    # ---- opening -------------------------------------------------------------------------------

    def _open_jsonl(self) -> IO[str] | None:
        if self.jsonl_path is None:
            return None
        make_parent(self.jsonl_path, "event log")
        try:
            return self.jsonl_path.open("a", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot open event log {self.jsonl_path}: {exc.strerror or exc}") from exc

    def _open_db(self) -> sqlite3.Connection | None:
        if self.sqlite_path is None:
            return None
        make_parent(self.sqlite_path, "event database")
        db = None
        try:
            db = sqlite3.connect(
                self.sqlite_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _retry_while_locked(lambda: _prepare(db), BUSY_TIMEOUT_S)
            return db
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise OutputError(f"cannot open event database {self.sqlite_path}: {exc}") from exc

    # ---- writing -------------------------------------------------------------------------------

    def write(self, event: Event, *, run_id: str | None = None, snapshot: Path | None = None) -> None:
        """Record one event (committed with its batch: see the module notes), with the run id and,
        for an identity event, the snapshot path; the event must have its wall-clock ``time``."""
        self._check_open()
        if event.time is None:
            raise ValueError(f"EventSink.write: event without a wall-clock time: {event}")
        row = event.to_dict()
        if run_id is not None:
            row["run_id"] = run_id
        if snapshot is not None:
            row["snapshot"] = str(snapshot)
        row = _masked(row)
        if self._jsonl is not None:
            self._append_line(row)
        if self._db is not None:
            extra = {k: v for k, v in row.items() if k not in _EVENT_COLUMNS}
            values = (
                event.time,
                row["stream"],
                row["kind"],
                row["track_id"],
                row["person"],
                _finite_or_none(row["score"]),
                _dumps(extra),
            )
            self._rows.append((_INSERT_EVENT, values))
        self._pending += 1
        self._maybe_commit()

    def track_update(
        self,
        track: TrackKey,
        first_ts: float,
        last_ts: float,
        person: str | None,
        score: float | None,
        snapshot_path: Path | str | None,
    ) -> None:
        """Insert or update the ``tracks`` row of ``track``; no-op without SQLite."""
        self._check_open()
        if self._db is None:
            return
        values = (
            mask_secrets(track.stream_id),
            int(track.epoch),
            int(track.track_id),
            float(first_ts),
            float(last_ts),
            None if person is None else mask_secrets(person),
            _finite_or_none(score),
            None if snapshot_path is None else mask_secrets(str(snapshot_path)),
        )
        self._rows.append((_UPSERT_TRACK, values))
        self._pending += 1
        self._maybe_commit()

    def flush(self) -> None:
        """Commit pending rows and flush the JSONL file to the OS."""
        if self._jsonl is not None:
            try:
                self._jsonl.flush()
            except OSError as exc:
                raise OutputError(f"cannot write event log {self.jsonl_path}: {exc.strerror or exc}") from exc
        if self._db is not None and self._rows:
            self._commit(self._db)
        self._pending = 0
        self._last_commit = time.monotonic()

    def close(self) -> None:
        """Commit, flush and close both outputs; safe to call twice. Files are closed even on error."""
        try:
            if self._jsonl is not None or self._db is not None:
                self.flush()
        finally:
            self._release()

    def __enter__(self) -> EventSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- helpers -------------------------------------------------------------------------------

    def _append_line(self, row: dict[str, Any]) -> None:
        assert self._jsonl is not None
        try:
            self._jsonl.write(_dumps(row) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write event log {self.jsonl_path}: {exc.strerror or exc}") from exc

    def _maybe_commit(self) -> None:
        due = time.monotonic() - self._last_commit >= self.commit_interval_s
        if self._pending >= self.commit_every or due:
            self.flush()

    def _commit(self, db: sqlite3.Connection) -> None:
        """Write the pending rows in one transaction; on failure they stay pending."""
        try:
            _retry_while_locked(lambda: _write_batch(db, self._rows), BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise OutputError(f"cannot write event database {self.sqlite_path}: {exc}") from exc
        self._rows.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise OutputError(f"event sink ({self.jsonl_path or ''} {self.sqlite_path or ''}) is closed")

    def _release(self) -> None:
        self._closed = True
        jsonl, db = self._jsonl, self._db
        self._jsonl = self._db = None
        try:
            if jsonl is not None:
                jsonl.close()
        finally:
            if db is not None:
                db.close()


def _prepare(db: sqlite3.Connection) -> None:
    """WAL journal and the tables; idempotent."""
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL is needed")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute("COMMIT")
    finally:
        if db.in_transaction:
            db.rollback()


def _retry_while_locked(step: Callable[[], None], timeout_s: float) -> None:
    """Run ``step``, retrying on "database is locked" until ``timeout_s``.

    SQLite does not call the busy handler when two connections race to switch a new database to
    WAL, so two sinks opening one fresh database at once can see SQLITE_BUSY immediately.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _write_batch(db: sqlite3.Connection, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for sql, values in rows:
            db.execute(sql, values)
        db.execute("COMMIT")
    finally:
        if db.in_transaction:
            db.rollback()


_EVENT_COLUMNS = frozenset({"time", "stream", "kind", "track_id", "person", "score"})


def _masked(value: Any) -> Any:
    """``value`` with URL passwords masked in every string, at any depth; other values as JSON-ready."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {str(k): _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(v) for v in value]
    if isinstance(value, np.ndarray):
        return _masked(value.tolist())
    if isinstance(value, np.generic):
        return _masked(value.item())
    if isinstance(value, enum.Enum):
        return _masked(value.value)
    if isinstance(value, Path):
        return mask_secrets(str(value))
    if isinstance(value, float):
        return _finite_or_none(value)
    return value


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, default=lambda o: mask_secrets(str(o)))
