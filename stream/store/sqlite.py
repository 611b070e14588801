"""SQLite backend (the default): one file, WAL journal, ``synchronous=NORMAL``, a busy timeout.

Several processes may write one file: each batch is one short ``BEGIN IMMEDIATE`` transaction and the
others wait for it up to ``busy_timeout_s``; waiting longer (and a full disk, an I/O error) is
``StoreUnavailableError``, so the store keeps the rows and retries. A committed batch survives the
process being killed; only an OS crash or power cut can lose the last batches.

Opening prepares the schema in one ``BEGIN IMMEDIATE`` transaction: a new file gets schema 2; a schema-1
file (written by ``stream/outputs/events.py``: tables ``events(id, ts, stream, kind, track_id, person,
score, extra_json)`` and ``tracks(stream, epoch, track_id, first_ts, last_ts, person, score,
snapshot_path)``, no ``schema_version``) is migrated in place, keeping every row and event id:

- ``stream_up``/``stream_down`` events: ``ts`` (Unix time) → ``time``; ``pts_s`` NULL.
- other events: ``ts`` (stream time) → ``pts_s``; ``time`` NULL (the wall-clock time was never stored).
- ``extra_json``'s ``epoch`` and ``stranger`` → their columns; the rest stays in ``extra_json``.
- tracks: ``first_ts``/``last_ts`` → ``first_pts``/``last_pts``, ``snapshot_path`` → ``snapshot``; no time.
- ``run_id`` is NULL on every migrated row (runs had no id).

A schema-1 writer still running on the file fails after the migration (its table is gone): stop old
versions of the app first. A reader (``create=False``: ``run.py events``, ``search``) never changes a
schema-1 file: it reads a migrated temporary copy, deleted at close. A file that holds other tables, or
a newer schema, is refused.

The connection is opened with ``check_same_thread=False`` only so it can be built on one thread and
used on another; never use it from two threads at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stream.store.base import StoreError, StoreUnavailableError
from stream.store.records import iso_utc, parse_iso_utc
from stream.store.schema import (
    SCHEMA_VERSION,
    SQLITE,
    TABLE,
    Statement,
    completion_statements,
    create_statements,
    version_row,
)

__all__ = ["SqliteConnection"]

_V1_EVENTS = ("id", "ts", "stream", "kind", "track_id", "person", "score", "extra_json")
_V1_TRACKS = ("stream", "epoch", "track_id", "first_ts", "last_ts", "person", "score", "snapshot_path")
_V1_TABLES = ({"events", "tracks"}, {"events"})
_STREAM_KINDS = ("stream_up", "stream_down")
_MIGRATE_CHUNK = 5000
_TRANSIENT = ("locked", "busy", "full", "disk i/o", "unable to open")


class SqliteConnection:
    """A connection to one SQLite event database (see the module notes)."""

    dialect = SQLITE

    def __init__(
        self, path: Path, *, create: bool = True, busy_timeout_s: float = 2.0, label: str | None = None
    ) -> None:
        self.path = Path(path)
        self.label = label or str(self.path)
        self.busy_timeout_s = busy_timeout_s
        self.migrated_at: float | None = None
        self._create = create
        self._copy: Path | None = None  # a reader's migrated copy of a schema-1 file
        if not create and not self.path.is_file():
            raise StoreError(f"no event database at {self.label}")
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder of event database {self.label}: {exc.strerror or exc}"
                ) from None
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if not create and _tables(self._db) in _V1_TABLES:
                self._db = self._copy_of(self._db)
            _retry_while_locked(self._prepare, busy_timeout_s)
        except BaseException as exc:
            with contextlib.suppress(StoreError):
                self.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from None
            raise

    # ---------------------------------------------------------------- Connection

    @property
    def broken(self) -> bool:
        return False

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def scan(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        try:
            cursor = self._db.execute(sql, tuple(params))
            while chunk := cursor.fetchmany(size):
                yield chunk
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def run(self, statements: Sequence[Statement]) -> list[int]:
        counts: list[int] = []

        def step() -> None:
            counts.clear()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    counts.append(max(self._db.executemany(sql, rows).rowcount, 0))
                self._db.execute("COMMIT")
            finally:
                if self._db.in_transaction:
                    self._db.rollback()

        try:
            step()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return counts

    def schema_version(self) -> int:
        return int(self.query("SELECT max(version) FROM schema_version")[0][0])

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            if self._copy is not None:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(OSError):
                        os.unlink(f"{self._copy}{suffix}")

    def _copy_of(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """A temporary copy of ``db`` (closed), for a reader to migrate without touching the file."""
        fd, name = tempfile.mkstemp(prefix="adaface-events-v1-", suffix=".db")
        os.close(fd)
        self._copy = Path(name)
        copy = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        try:
            db.backup(copy)
        finally:
            db.close()
        return copy

    # ---------------------------------------------------------------- schema

    def _prepare(self) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"event database {self.label}: journal_mode is {mode}, WAL is needed")
        db.execute("PRAGMA synchronous = NORMAL")
        if "schema_version" not in _tables(db):  # opening an existing store takes no write lock
            self._create_or_migrate()
        self._check_version()
        if self._create and completion_statements(SQLITE, _columns(db)):
            self._complete()
        row = db.execute("SELECT applied FROM schema_version WHERE note LIKE 'migrated from schema 1%'").fetchone()
        self.migrated_at = None if row is None else parse_iso_utc(row[0])

    def _create_or_migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            tables = _tables(db)  # again, under the lock: another process may have just done it
            if "schema_version" in tables:
                pass
            elif tables in _V1_TABLES:
                self._migrate_v1(tables)
            elif tables:
                raise StoreError(f"{self.label} is not an event database (it has tables {', '.join(sorted(tables))})")
            else:
                for statement in create_statements(SQLITE):
                    db.execute(statement)
                sql, rows = version_row(SQLITE, time.time(), "created")
                db.executemany(sql, rows)
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.rollback()

    def _complete(self) -> None:
        """Add what a schema-2 file made before schema 2 was final lacks (``completion_statements``)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in completion_statements(SQLITE, _columns(db)):  # again, under the lock
                db.execute(statement)
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.rollback()

    def _check_version(self) -> None:
        version = self._db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if version is None or version > SCHEMA_VERSION:
            raise StoreError(
                f"event database {self.label} has schema {version}; this version of the app reads up to {SCHEMA_VERSION}"
            )

    def _migrate_v1(self, tables: set[str]) -> None:
        """Schema 1 → 2 inside the caller's transaction (see the module notes)."""
        db = self._db
        self._require_columns("events", _V1_EVENTS)
        if "tracks" in tables:
            self._require_columns("tracks", _V1_TRACKS)
        db.execute("ALTER TABLE events RENAME TO events_v1")
        db.execute("DROP INDEX IF EXISTS events_stream_ts")
        if "tracks" in tables:
            db.execute("ALTER TABLE tracks RENAME TO tracks_v1")
        for statement in create_statements(SQLITE):
            db.execute(statement)
        events = db.execute(f"SELECT {', '.join(_V1_EVENTS)} FROM events_v1 ORDER BY id")
        insert = (
            "INSERT INTO events (id, time, pts_s, run_id, stream, kind, epoch, track_id, person, score, stranger,"
            " snapshot, extra_json) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        counts = [0, 0]
        while chunk := events.fetchmany(_MIGRATE_CHUNK):
            db.executemany(insert, [_v1_event(r) for r in chunk])
            counts[0] += len(chunk)
        if "tracks" in tables:
            tracks = db.execute(f"SELECT {', '.join(_V1_TRACKS)} FROM tracks_v1 ORDER BY rowid")
            columns = TABLE["tracks"].column_names[1:]
            insert = f"INSERT INTO tracks ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
            while chunk := tracks.fetchmany(_MIGRATE_CHUNK):
                db.executemany(insert, [_v1_track(r) for r in chunk])
                counts[1] += len(chunk)
            db.execute("DROP TABLE tracks_v1")
        db.execute("DROP TABLE events_v1")
        sql, rows = version_row(SQLITE, time.time(), f"migrated from schema 1 ({counts[0]} events, {counts[1]} tracks)")
        db.executemany(sql, rows)

    def _require_columns(self, table: str, expected: tuple[str, ...]) -> None:
        have = tuple(r[1] for r in self._db.execute(f"PRAGMA table_info({table})"))
        if have != expected:
            raise StoreError(
                f"{self.label}: table {table} has columns ({', '.join(have)}), not those of an event database"
                f" ({', '.join(expected)})"
            )

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        transient = isinstance(exc, sqlite3.OperationalError) and any(t in text.lower() for t in _TRANSIENT)
        cls = StoreUnavailableError if transient else StoreError
        return cls(f"event database {self.label}: {text}")


def _columns(db: sqlite3.Connection) -> dict[str, set[str]]:
    return {t: {r[1] for r in db.execute(f"PRAGMA table_info({t})")} for t in _tables(db)}


def _tables(db: sqlite3.Connection) -> set[str]:
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return names - {"sqlite_sequence"}


def _v1_event(row: tuple[Any, ...]) -> tuple[Any, ...]:
    event_id, ts, stream, kind, track_id, person, score, extra_json = row
    try:
        extra = json.loads(extra_json or "{}")
    except ValueError:
        extra = {"extra_json": extra_json}
    if not isinstance(extra, dict):
        extra = {"value": extra}
    epoch = extra.pop("epoch", None)
    stranger = extra.pop("stranger", None)
    snapshot = extra.pop("snapshot", None)
    is_stream = kind in _STREAM_KINDS
    return (
        event_id,
        iso_utc(ts) if is_stream and ts is not None else None,
        None if is_stream else ts,
        stream,
        kind,
        epoch if isinstance(epoch, int) else None,
        track_id,
        person,
        score,
        stranger if isinstance(stranger, str) else None,
        snapshot if isinstance(snapshot, str) else None,
        json.dumps(extra, ensure_ascii=False, sort_keys=True),
    )


def _v1_track(row: tuple[Any, ...]) -> tuple[Any, ...]:
    stream, epoch, track_id, first_ts, last_ts, person, score, snapshot_path = row
    # run_id, stream, epoch, track_id, first_time, last_time, first_pts, last_pts, person, score, stranger, snapshot
    return (None, stream, epoch, track_id, None, None, first_ts, last_ts, person, score, None, snapshot_path)


def _retry_while_locked(step: Callable[[], None], timeout_s: float) -> None:
    """Run ``step``, retrying on "database is locked" until ``timeout_s``: SQLite does not call the busy
    handler when two connections race to switch a new database to WAL."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if not ("locked" in text or "busy" in text) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
