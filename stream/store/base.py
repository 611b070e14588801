"""``Store``: the event store the pipeline writes to and the CLI reads from, over one backend connection.

Writing (one owner: the pipeline's output thread; never use one store from two threads at once):
``begin_run``, ``add_events``, ``add_track``, ``add_face``, ``end_run``, ``flush``, ``close``. Rows wait
in memory and are written in one short transaction once ``commit_every`` rows are pending or
``commit_interval_s`` has passed since the last write, checked on each call (there is no timer
thread), and by ``flush``. No transaction stays open between calls.

Outages: when a write fails because the backend is unavailable (PostgreSQL down or unreachable,
SQLite locked longer than its busy timeout, disk full), the rows stay in a bounded in-memory buffer
(``max_buffer_rows``; beyond it the oldest rows are dropped and counted) and later calls retry with a
capped exponential back-off (``retry_initial_s`` doubling to ``retry_max_s``): a call between retries
returns at once, and a retry waits at most the backend's connect timeout (PostgreSQL: 2 s per address;
every operation on an open connection is bounded by ``op_timeout_s``). When the backend is back the
buffer is written in order, at most ``drain_budget_s`` of work per call so the caller never stalls on a
long backlog; ``close`` gives it ``close_timeout_s``. The run rows (``begin_run``/``end_run``) are never
dropped. ``counters()`` reports pending, buffered, dropped, reconnects, failures and written rows.

Errors: ``StoreError`` (a ``UserError``: one line naming the store by its masked URL) for problems a
retry cannot fix; ``StoreUnavailableError`` when the backend cannot be reached — raised by
``open_store`` and by reads, absorbed by writes as above.

Reading: ``events``, ``event``, ``tracks``, ``runs``, ``face``, ``faces_like`` (cosine search over the
stored template embeddings of one model, read in chunks with numpy), ``face_crop``, ``face_models``.
Retention: ``purge``.

Passwords: records mask URL passwords when built; the store also replaces its own password, wherever it
appears in a text value, with ``***`` before writing, and never puts it in a message or log line.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from stream.errors import UserError
from stream.store import schema
from stream.store.records import (
    EventQuery,
    EventRecord,
    EventRow,
    FaceHit,
    FaceRecord,
    FaceRow,
    PurgeCounts,
    Record,
    RunEnd,
    RunRecord,
    RunRow,
    StoreCounters,
    TrackRecord,
    TrackRow,
    to_ms,
)
from stream.store.schema import Dialect, Statement

__all__ = ["Connection", "Store", "StoreError", "StoreSettings", "StoreUnavailableError"]

log = logging.getLogger(__name__)

SCAN_CHUNK = 4096  # faces read per chunk by faces_like


class StoreError(UserError):
    """The event store cannot be used (bad URL, not an event database, newer schema, failed write);
    one line that names the store by its masked URL."""


class StoreUnavailableError(StoreError):
    """The backend cannot be reached now (refused, timed out, locked, disk full); a later retry may work."""


@dataclass(frozen=True)
class StoreSettings:
    """Batching, buffering and time bounds of a ``Store`` (see the module notes)."""

    commit_every: int = 50
    commit_interval_s: float = 0.5
    max_batch_rows: int = 1000
    max_buffer_rows: int = 50_000
    drain_budget_s: float = 0.5
    close_timeout_s: float = 10.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    connect_timeout_s: float = 2.0
    op_timeout_s: float = 5.0
    busy_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("commit_every", "max_batch_rows", "max_buffer_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StoreSettings.{name}: must be an int >= 1, got {value!r}")
        for name in (
            "commit_interval_s",
            "drain_budget_s",
            "close_timeout_s",
            "retry_initial_s",
            "retry_max_s",
            "connect_timeout_s",
            "op_timeout_s",
            "busy_timeout_s",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ValueError(f"StoreSettings.{name}: must be a finite number >= 0, got {value!r}")
        for name in ("connect_timeout_s", "op_timeout_s", "busy_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"StoreSettings.{name}: must be > 0, got {getattr(self, name)!r}")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(
                f"StoreSettings.retry_max_s: must be >= retry_initial_s ({self.retry_initial_s}), got {self.retry_max_s}"
            )


class Connection(Protocol):
    """One open connection of a backend (``sqlite.py``, ``postgres.py``): the only code that talks to a
    database driver. Driver errors leave it as ``StoreUnavailableError`` (transient) or ``StoreError``."""

    dialect: Dialect
    migrated_at: float | None
    """When a schema-1 database was migrated (Unix s), else None."""

    @property
    def broken(self) -> bool:
        """The connection is lost and a new one is needed."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def scan(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of a query in chunks of up to ``size``."""
        ...

    def run(self, statements: Sequence[Statement]) -> list[int]:
        """Run the statements in one transaction (all or nothing); the rows each one changed."""
        ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...


Connector = Callable[[], Connection]


class Store:
    """The event store (see the module notes). Build it with ``stream.store.open_store``."""

    def __init__(
        self,
        connect: Connector,
        url: str,
        *,
        secret: str | None = None,
        settings: StoreSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``connect`` opens a connection (raising ``StoreUnavailableError``/``StoreError``); it is
        called now, so an unreachable store fails here, and again after an outage. ``url``: the
        store's masked URL (for messages). ``secret``: the password to scrub from stored text."""
        self.url = url
        self.settings = settings or StoreSettings()
        self._connect = connect
        self._secret = secret if secret and len(secret) >= 3 else None
        self._clock = clock
        self._conn: Connection | None = connect()
        self.backend = self._conn.dialect.name
        self._migrated_at = self._conn.migrated_at
        self._runs: list[RunRecord | RunEnd] = []  # never dropped; written before the buffer
        self._pending: deque[EventRecord | TrackRecord | FaceRecord] = deque()
        self._last_write = clock()
        self._up = True
        self._retry_at = 0.0
        self._retry_delay = self.settings.retry_initial_s
        self._down_since = 0.0
        self._drop_warned = False
        self._closed = False
        self._buffered = self._dropped = self._reconnects = self._failures = self._written = 0

    # ---------------------------------------------------------------- writing

    def begin_run(self, run: RunRecord) -> None:
        """Record a run (written first, never dropped); then write its events, tracks and faces."""
        self._check_open()
        self._runs.append(run)
        self._write(self.settings.drain_budget_s)

    def end_run(self, run_id: str, ended: float) -> None:
        self._check_open()
        self._runs.append(RunEnd(run_id, ended))
        self._maybe_write()

    def add_events(self, events: Iterable[EventRecord]) -> None:
        """Queue events (written with their batch: see the module notes)."""
        self._check_open()
        for event in events:
            self._queue(event)
        self._maybe_write()

    def add_track(self, track: TrackRecord) -> None:
        self._check_open()
        self._queue(track)
        self._maybe_write()

    def add_face(self, face: FaceRecord) -> None:
        self._check_open()
        self._queue(face)
        self._maybe_write()

    def flush(self, budget_s: float | None = None) -> bool:
        """Write what is pending now (at most ``budget_s``, default ``drain_budget_s``, of batches; while
        the store is down, only when a retry is due). True when nothing is left pending."""
        self._check_open()
        return self._write(self.settings.drain_budget_s if budget_s is None else budget_s)

    def close(self) -> None:
        """Write what is pending (up to ``close_timeout_s``; one retry even if the back-off is not over),
        count what could not be written as dropped, and close. Safe to call twice."""
        if self._closed:
            return
        try:
            if self._runs or self._pending:
                self._retry_at = 0.0
                self._write(self.settings.close_timeout_s)
            left = len(self._runs) + len(self._pending)
            if left:
                self._dropped += left
                log.warning(
                    "event store %s: %d rows could not be written before closing (%s)",
                    self.url,
                    left,
                    "the store is unavailable" if not self._up else "time is up",
                )
        finally:
            self._closed = True
            self._runs.clear()
            self._pending.clear()
            self._disconnect()

    def counters(self) -> StoreCounters:
        return StoreCounters(
            pending=len(self._runs) + len(self._pending),
            buffered=self._buffered,
            dropped=self._dropped,
            reconnects=self._reconnects,
            failures=self._failures,
            written=self._written,
            up=self._up,
        )

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- reading

    def schema_version(self) -> int:
        return self._reader().schema_version()

    def events(self, query: EventQuery | None = None) -> list[EventRow]:
        """Events matching ``query`` (default: the newest 100), in its order."""
        conn = self._reader()
        sql, params = schema.events_sql(conn.dialect, query or EventQuery())
        return [schema.event_row(conn.dialect, r) for r in conn.query(sql, params)]

    def event(self, event_id: int) -> EventRow | None:
        conn = self._reader()
        rows = conn.query(conn.dialect.sql(schema.EVENT_SELECT + " WHERE id = ?"), (int(event_id),))
        return schema.event_row(conn.dialect, rows[0]) if rows else None

    def tracks(self, run_id: str | None = None, stream: str | None = None) -> list[TrackRow]:
        """Tracks (of one run and/or stream), by id."""
        conn = self._reader()
        where, params = _filters(run_id=run_id, stream=stream)
        rows = conn.query(conn.dialect.sql(schema.TRACK_SELECT + where + " ORDER BY id"), params)
        return [schema.track_row(conn.dialect, r) for r in rows]

    def runs(self) -> list[RunRow]:
        """Every run, oldest first."""
        conn = self._reader()
        rows = conn.query("SELECT run_id, started, ended, host, config_summary FROM runs ORDER BY started, run_id")
        return [schema.run_row(conn.dialect, r) for r in rows]

    def face(self, face_id: int) -> FaceRow | None:
        conn = self._reader()
        rows = conn.query(conn.dialect.sql(schema.FACE_SELECT + " WHERE id = ?"), (int(face_id),))
        return schema.face_row(conn.dialect, rows[0]) if rows else None

    def faces(self, run_id: str | None = None) -> list[FaceRow]:
        """Stored faces (of one run), by id."""
        conn = self._reader()
        where, params = _filters(run_id=run_id)
        rows = conn.query(conn.dialect.sql(schema.FACE_SELECT + where + " ORDER BY id"), params)
        return [schema.face_row(conn.dialect, r) for r in rows]

    def face_models(self) -> dict[str, int]:
        """Stored faces per embedder model id."""
        rows = self._reader().query("SELECT model_id, count(*) FROM faces GROUP BY model_id ORDER BY model_id")
        return {str(m): int(n) for m, n in rows}

    def face_crop(self, face_id: int) -> bytes | None:
        """The stored crop (JPEG bytes) of a face, or None when there is no such face."""
        conn = self._reader()
        rows = conn.query(conn.dialect.sql("SELECT crop_jpeg FROM faces WHERE id = ?"), (int(face_id),))
        return bytes(rows[0][0]) if rows else None

    def faces_like(
        self,
        vector: np.ndarray,
        model_id: str,
        top: int = 5,
        since: float | None = None,
        until: float | None = None,
    ) -> list[FaceHit]:
        """The ``top`` stored faces of ``model_id`` most like ``vector`` (cosine, best first; ties by id),
        optionally only faces seen at or after ``since`` / before ``until`` (Unix s)."""
        if top < 1:
            raise ValueError(f"faces_like.top: must be >= 1, got {top}")
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        length = float(np.linalg.norm(query))
        if not (math.isfinite(length) and length > 0):
            raise ValueError("faces_like.vector: must be a finite non-zero vector")
        query = query / length
        conn = self._reader()
        d = conn.dialect
        sql = "SELECT id, embedding FROM faces WHERE model_id = ? AND dim = ?"
        params: list[Any] = [model_id, int(query.shape[0])]
        if since is not None:
            sql += " AND last_time >= ?"
            params.append(d.time_to_db(to_ms(since)))
        if until is not None:
            sql += " AND first_time < ?"
            params.append(d.time_to_db(to_ms(until)))
        best = _TopK(top)
        for chunk in conn.scan(d.sql(sql), params, SCAN_CHUNK):
            ids = np.fromiter((int(r[0]) for r in chunk), dtype=np.int64, count=len(chunk))
            matrix = np.frombuffer(b"".join(bytes(r[1]) for r in chunk), dtype="<f4").reshape(len(chunk), -1)
            best.offer(ids, matrix.astype(np.float32) @ query)
        scores = best.result()
        if not scores:
            return []
        marks = ", ".join("?" for _ in scores)
        rows = conn.query(d.sql(f"SELECT {schema.FACE_META} FROM faces WHERE id IN ({marks})"), list(scores))
        by_id = {int(r[0]): r for r in rows}
        return [schema.face_hit(d, by_id[i], s) for i, s in scores.items() if i in by_id]

    # ---------------------------------------------------------------- retention

    def purge(self, older_than: float) -> PurgeCounts:
        """Delete events, tracks and faces older than ``older_than`` (Unix s: events by time, tracks and
        faces by their last time) in one transaction, then runs that started before it and have no rows
        left. Rows migrated from schema 1 without a time go once the migration itself is older.
        Raises ``StoreUnavailableError`` when the backend cannot be reached."""
        conn = self._reader()
        legacy = self._migrated_at is not None and self._migrated_at < older_than
        counts = conn.run(schema.purge_statements(conn.dialect, to_ms(older_than), legacy))
        events, tracks, faces = counts[0], counts[1], counts[2]
        if legacy:
            events, tracks = events + counts[3], tracks + counts[4]
        return PurgeCounts(events=events, tracks=tracks, faces=faces, runs=counts[-1])

    # ---------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"event store {self.url} is closed")

    def _queue(self, record: EventRecord | TrackRecord | FaceRecord) -> None:
        if len(self._pending) >= self.settings.max_buffer_rows:
            self._pending.popleft()
            self._dropped += 1
            if not self._drop_warned:
                self._drop_warned = True
                log.warning(
                    "event store %s: buffer full (%d rows): dropping the oldest (see the dropped count)",
                    self.url,
                    self.settings.max_buffer_rows,
                )
        self._pending.append(record)
        if not self._up:
            self._buffered += 1

    def _maybe_write(self) -> None:
        due = self._clock() - self._last_write >= self.settings.commit_interval_s
        if len(self._runs) + len(self._pending) >= self.settings.commit_every or due:
            self._write(self.settings.drain_budget_s)

    def _write(self, budget_s: float) -> bool:
        """Write pending rows in batches until done or ``budget_s`` is spent; False if rows remain."""
        now = self._clock()
        self._last_write = now
        if not (self._runs or self._pending):
            return True
        conn = self._usable(now)
        if conn is None:
            return False
        deadline = now + budget_s
        while self._runs or self._pending:
            n = min(len(self._pending), self.settings.max_batch_rows)
            batch: list[Record] = [*self._runs, *(self._pending[i] for i in range(n))]
            try:
                conn.run(schema.write_statements(conn.dialect, batch, self._scrub))
            except StoreUnavailableError as exc:
                self._went_down(exc, conn)
                return False
            self._runs.clear()
            for _ in range(n):
                self._pending.popleft()
            self._written += len(batch)
            self._last_write = self._clock()
            if self._last_write >= deadline:
                break
        return not (self._runs or self._pending)

    def _usable(self, now: float) -> Connection | None:
        """The open connection, or a new one when a retry is due (None while down)."""
        if self._up and self._conn is not None and not self._conn.broken:
            return self._conn
        if now < self._retry_at:
            return None
        if self._conn is not None and not self._conn.broken:
            conn = self._conn  # SQLite: same connection, the lock may be gone now
        else:
            self._disconnect()
            try:
                conn = self._conn = self._connect()
            except StoreUnavailableError as exc:
                self._went_down(exc, None)
                return None
        if not self._up:
            self._came_back()
        return conn

    def _went_down(self, exc: StoreUnavailableError, conn: Connection | None) -> None:
        now = self._clock()
        self._failures += 1
        if self._up:
            self._up = False
            self._down_since = now
            self._retry_delay = self.settings.retry_initial_s
            self._buffered += len(self._pending) + len(self._runs)
            log.warning("%s; keeping up to %d rows in memory and retrying", exc, self.settings.max_buffer_rows)
        else:
            self._retry_delay = min(self._retry_delay * 2, self.settings.retry_max_s)
            log.debug("%s; next retry in %.1f s", exc, self._retry_delay)
        self._retry_at = now + self._retry_delay
        if conn is not None and conn.broken:
            self._disconnect()

    def _came_back(self) -> None:
        self._up = True
        self._drop_warned = False
        self._retry_delay = self.settings.retry_initial_s
        self._reconnects += 1
        log.warning(
            "event store %s is back after %.1f s: writing %d pending rows",
            self.url,
            self._clock() - self._down_since,
            len(self._pending) + len(self._runs),
        )

    def _reader(self) -> Connection:
        """A connection for a read or a purge: the open one, or one new attempt (not waiting for the
        write back-off); raises ``StoreUnavailableError`` when the store cannot be reached."""
        self._check_open()
        if self._conn is not None and not self._conn.broken:
            return self._conn
        self._disconnect()
        self._conn = self._connect()
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except StoreError as exc:
                log.debug("closing %s: %s", self.url, exc)

    def _scrub(self, text: str | None) -> str | None:
        if text is None or self._secret is None:
            return text
        return text.replace(self._secret, "***")


def _filters(**columns: Any) -> tuple[str, list[Any]]:
    given = {k: v for k, v in columns.items() if v is not None}
    if not given:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k in given), list(given.values())


class _TopK:
    """The ``k`` best (id, score) seen over several chunks (ties: lower id first)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.ids = np.zeros(0, np.int64)
        self.scores = np.zeros(0, np.float32)

    def offer(self, ids: np.ndarray, scores: np.ndarray) -> None:
        ids = np.concatenate([self.ids, ids])
        scores = np.concatenate([self.scores, scores.astype(np.float32)])
        order = np.lexsort((ids, -scores))[: self.k]
        self.ids, self.scores = ids[order], scores[order]

    def result(self) -> dict[int, float]:
        return {int(i): float(np.clip(s, -1.0, 1.0)) for i, s in zip(self.ids, self.scores, strict=True)}
