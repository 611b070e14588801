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

Reading: ``events``, ``event``, ``tracks``, ``runs``, ``face``, ``faces`` (filtered by run, model, time,
unnamed, ignored), ``faces_by_id``, ``track_faces``, ``faces_like`` (cosine search over the stored
template embeddings of one model, read in chunks with numpy), ``face_crop``, ``face_models``,
``negatives``. Retention: ``purge``.

Review (what people decide about stored faces, ``stream.identity.library``): ``relabel_faces``,
``rename_person``, ``ignore_faces``, ``unignore``, ``pin_faces``, ``detach_faces``, ``add_negatives``,
``delete_negatives``. Each is one transaction written at once (not batched, not buffered: an
unavailable store raises ``StoreUnavailableError``), so another process sees it as soon as it returns.

Passwords: records mask URL passwords when built; the store also replaces its own password, wherever it
appears in a text value, with ``***`` before writing, and never puts it in a message or log line.
"""

from __future__ import annotations

import json
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
    LABEL_SOURCES,
    EventQuery,
    EventRecord,
    EventRow,
    FaceHit,
    FaceRecord,
    FaceRow,
    NegativeRecord,
    NegativeRow,
    PurgeCounts,
    Record,
    RelabelCounts,
    RunEnd,
    RunRecord,
    RunRow,
    StoreCounters,
    TrackRecord,
    TrackRow,
    iso_utc,
    to_ms,
)
from stream.store.schema import Dialect, Statement

__all__ = ["Connection", "Store", "StoreError", "StoreSettings", "StoreUnavailableError"]

log = logging.getLogger(__name__)

SCAN_CHUNK = 4096  # faces read per chunk by faces_like
_ID_CHUNK = 500  # ids per IN (...) list
RELABELLED_KINDS = ("identity_assigned", "identity_changed", "stranger_assigned", "track_ended")
"""The events of a track that say who it was (``relabel_faces`` changes them)."""


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

    def faces(
        self,
        run_id: str | None = None,
        *,
        model_id: str | None = None,
        since: float | None = None,
        unnamed: bool = False,
        ignored: bool | None = None,
        newest: int | None = None,
    ) -> list[FaceRow]:
        """Stored faces, by id: of one run and/or model, seen at or after ``since`` (Unix s, by their
        last time), only those without a person (``unnamed``), ignored or not (``ignored`` True/False;
        None: both), and only the ``newest`` (by id) of those."""
        conn = self._reader()
        d = conn.dialect
        where, params = _filters(run_id=run_id, model_id=model_id)
        clauses = [where.removeprefix(" WHERE ")] if where else []
        if since is not None:
            clauses.append("last_time >= ?")
            params.append(d.time_to_db(to_ms(since)))
        if unnamed:
            clauses.append("person IS NULL")
        if ignored is not None:
            clauses.append("ignored IS NOT NULL" if ignored else "ignored IS NULL")
        sql = schema.FACE_SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "")
        if newest is not None:
            if newest < 1:
                raise ValueError(f"faces.newest: must be >= 1, got {newest}")
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT {int(newest)}) AS recent"
        rows = conn.query(d.sql(sql + " ORDER BY id"), params)
        return [schema.face_row(d, r) for r in rows]

    def faces_by_id(self, face_ids: Iterable[int]) -> list[FaceRow]:
        """The stored faces with these ids (those that exist), by id."""
        ids = sorted({int(i) for i in face_ids})
        conn = self._reader()
        out: list[FaceRow] = []
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = conn.query(conn.dialect.sql(f"{schema.FACE_SELECT} WHERE id IN ({marks}) ORDER BY id"), chunk)
            out += [schema.face_row(conn.dialect, r) for r in rows]
        return out

    def track_faces(self, run_id: str, stream: str, epoch: int, track_id: int) -> list[FaceRow]:
        """The stored face(s) of one track of a run (one per track, written when it ended)."""
        conn = self._reader()
        sql = schema.FACE_SELECT + " WHERE run_id = ? AND stream = ? AND epoch = ? AND track_id = ? ORDER BY id"
        rows = conn.query(conn.dialect.sql(sql), (run_id, stream, int(epoch), int(track_id)))
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

    # ---------------------------------------------------------------- review: written at once

    def relabel_faces(
        self,
        face_ids: Iterable[int],
        person: str | None,
        *,
        source: str,
        at: float,
        negatives: Sequence[NegativeRecord] = (),
    ) -> RelabelCounts:
        """Give these stored faces, their tracks and their tracks' identity events ``person`` (None:
        unknown), in one transaction. Only rows that still say what the face said are changed (an
        event of the track naming someone else stays as it is). Each changed event's ``extra`` records
        ``relabelled_from`` (the old person), ``relabelled_by`` (``source``: ``user``, ``rematch``) and
        ``relabelled_at`` (``at``, ISO UTC). ``negatives`` are stored in the same transaction. Raises
        ``StoreUnavailableError`` when the store is down."""
        if source not in LABEL_SOURCES:
            raise ValueError(f"relabel_faces.source: must be one of {', '.join(LABEL_SOURCES)}, got {source!r}")
        conn = self._reader()
        d = conn.dialect
        faces = [f for f in self.faces_by_id(face_ids) if f.person != person]
        if not faces:
            return RelabelCounts(negatives=self.add_negatives(negatives))
        new = self._scrub(person)
        stamp = {"relabelled_by": source, "relabelled_at": iso_utc(at)}
        track_where = "run_id = ? AND stream = ? AND epoch = ? AND track_id = ?"
        statements: list[Statement] = [
            (d.sql("UPDATE faces SET person = ?, label_source = ? WHERE id = ?"), [(new, source, f.face_id) for f in faces])
        ]
        for old in sorted({f.person for f in faces}, key=lambda p: (p is not None, p or "")):
            keys = [(f.run_id, f.stream, f.epoch, f.track_id) for f in faces if f.person == old]
            who, extra = ("person IS NULL", ()) if old is None else ("person = ?", (old,))
            statements.append(
                (d.sql(f"UPDATE tracks SET person = ? WHERE {track_where} AND {who}"), [(new, *k, *extra) for k in keys])
            )
            events = []
            for key in keys:
                for event_id, values in self._track_events(conn, key, old):
                    text = json.dumps({**values, **stamp, "relabelled_from": old}, ensure_ascii=False, sort_keys=True)
                    events.append((new, text, event_id))
            if events:
                statements.append((d.sql("UPDATE events SET person = ?, extra_json = {json} WHERE id = ?"), events))
        if negatives:
            statements.append(schema.negative_statement(d, negatives, self._scrub))
        counts = conn.run(statements)
        kinds = [sql.split()[1] if sql.startswith("UPDATE") else "negatives" for sql, _ in statements]
        total = {k: sum(c for c, kind in zip(counts, kinds, strict=True) if kind == k) for k in set(kinds)}
        return RelabelCounts(
            faces=total["faces"],
            tracks=total.get("tracks", 0),
            events=total.get("events", 0),
            negatives=total.get("negatives", 0),
        )

    @staticmethod
    def _track_events(
        conn: Connection, key: tuple[str, str, int, int], person: str | None
    ) -> list[tuple[int, dict[str, Any]]]:
        """(id, extra) of a track's identity events that say ``person``."""
        kinds = ", ".join(f"'{k}'" for k in RELABELLED_KINDS)
        who = "person IS NULL" if person is None else "person = ?"
        sql = (
            f"SELECT id, extra_json FROM events WHERE run_id = ? AND stream = ? AND epoch = ? AND track_id = ?"
            f" AND kind IN ({kinds}) AND {who} ORDER BY id"
        )
        params = (*key, person) if person is not None else key
        return [(int(r[0]), dict(schema.json_back(r[1]))) for r in conn.query(conn.dialect.sql(sql), params)]

    def rename_person(self, old: str, new: str) -> RelabelCounts:
        """Every stored face, track, event and negative example of ``old`` now says ``new`` (one transaction)."""
        conn = self._reader()
        d = conn.dialect
        name = self._scrub(new)
        counts = conn.run(
            [
                (d.sql(f"UPDATE {table} SET person = ? WHERE person = ?"), [(name, old)])
                for table in ("faces", "tracks", "events", "negatives")
            ]
        )
        return RelabelCounts(faces=counts[0], tracks=counts[1], events=counts[2], negatives=counts[3])

    def ignore_faces(self, face_ids: Iterable[int], group_id: int, examples: Sequence[NegativeRecord] = ()) -> int:
        """Put these faces in the ignored group ``group_id`` and store its negative examples, in one
        transaction; the faces changed."""
        ids = sorted({int(i) for i in face_ids})
        conn = self._reader()
        statements: list[Statement] = [
            (conn.dialect.sql("UPDATE faces SET ignored = ? WHERE id = ?"), [(int(group_id), i) for i in ids])
        ]
        if examples:
            statements.append(schema.negative_statement(conn.dialect, examples, self._scrub))
        return conn.run(statements)[0] if ids else 0

    def unignore(self, group_id: int) -> tuple[int, int]:
        """The ignored group's faces are not ignored any more and its examples are deleted (one
        transaction): (faces, examples) changed."""
        conn = self._reader()
        d = conn.dialect
        counts = conn.run(
            [
                (d.sql("UPDATE faces SET ignored = NULL WHERE ignored = ?"), [(int(group_id),)]),
                (d.sql("DELETE FROM negatives WHERE kind = 'ignored' AND group_id = ?"), [(int(group_id),)]),
            ]
        )
        return counts[0], counts[1]

    def pin_faces(self, face_ids: Iterable[int], pin: int | None) -> int:
        """Give these faces one pin (they are grouped together from now on; None: free), and put them
        back in the grouping if they were detached; rows changed."""
        return self._update_faces("pin = ?, detached = 0", (pin,), face_ids)

    def detach_faces(self, face_ids: Iterable[int], detached: bool = True) -> int:
        """Take these faces out of their groups (each is a group of its own), or put them back; rows changed."""
        return self._update_faces("detached = ?, pin = NULL", (int(detached),), face_ids)

    def _update_faces(self, assignments: str, values: tuple[Any, ...], face_ids: Iterable[int]) -> int:
        ids = sorted({int(i) for i in face_ids})
        if not ids:
            return 0
        conn = self._reader()
        sql = conn.dialect.sql(f"UPDATE faces SET {assignments} WHERE id = ?")
        return conn.run([(sql, [(*values, i) for i in ids])])[0]

    def add_negatives(self, records: Sequence[NegativeRecord]) -> int:
        """Store negative examples (one transaction); how many."""
        if not records:
            return 0
        conn = self._reader()
        return conn.run([schema.negative_statement(conn.dialect, records, self._scrub)])[0]

    def negatives(
        self,
        model_id: str | None = None,
        *,
        kind: str | None = None,
        person: str | None = None,
        group_id: int | None = None,
    ) -> list[NegativeRow]:
        """Negative examples (of one model, kind, person and/or ignored group), by id."""
        conn = self._reader()
        where, params = _filters(model_id=model_id, kind=kind, person=person, group_id=group_id)
        rows = conn.query(conn.dialect.sql(schema.NEGATIVE_SELECT + where + " ORDER BY id"), params)
        return [schema.negative_row(conn.dialect, r) for r in rows]

    def negatives_stamp(self, model_id: str) -> tuple[int, int]:
        """(count, largest id) of the negative examples of a model: changes whenever one is added or deleted."""
        rows = self._reader().query(
            self._reader().dialect.sql("SELECT count(*), max(id) FROM negatives WHERE model_id = ?"), (model_id,)
        )
        return int(rows[0][0]), int(rows[0][1] or 0)

    def delete_negatives(self, *, person: str | None = None, group_id: int | None = None) -> int:
        """Delete the negative examples of ``person`` or of the ignored group ``group_id``; how many."""
        if (person is None) == (group_id is None):
            raise ValueError("delete_negatives: give exactly one of person, group_id")
        conn = self._reader()
        where, params = _filters(person=person, group_id=group_id)
        return conn.run([(conn.dialect.sql("DELETE FROM negatives" + where), [tuple(params)])])[0]

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
