"""A schema-1 database, as main's ``stream/outputs/events.py`` ``EventSink`` wrote it, is migrated in place
by the store: every row kept (same event ids), stream times to ``pts_s``, Unix times to ``time``."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stream.logs import mask_secrets
from stream.store import SCHEMA_VERSION, EventQuery, StoreError, open_store
from stream.types import EventKind
from tests.store.conftest import T0, event, run_record

DATA = Path(__file__).parent / "data"
UP = 1_796_092_710.44  # a stream_up's Unix time, as the example


@dataclass(frozen=True)
class V1Event:
    """One row as main's EventSink wrote it (schema 1): ``ts`` is stream time for frame events and
    Unix time for stream events; the epoch (and a stranger label) sat in ``extra_json``."""

    ts: float
    stream: str
    kind: EventKind
    track_id: int | None = None
    person: str | None = None
    score: float | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    stranger: str | None = None


# Schema 1, as stream/outputs/events.py created it before the store (kept here verbatim so the test
# does not depend on today's writers).
V1_SCHEMA = (
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


def v1_write(path: Path, events: list[V1Event], tracks: list[tuple[Any, ...]] = ()) -> None:  # type: ignore[assignment]
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        for statement in V1_SCHEMA:
            db.execute(statement)
        for e in events:
            extra = dict(e.extra)
            if e.track_id is not None:
                extra["epoch"] = 0
            if e.stranger is not None:
                extra["stranger"] = e.stranger
            extra["reason"] = mask_secrets(extra["reason"]) if "reason" in extra else None
            extra = {k: v for k, v in extra.items() if v is not None}
            db.execute(
                "INSERT INTO events (ts, stream, kind, track_id, person, score, extra_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (e.ts, e.stream, e.kind.value, e.track_id, e.person, e.score, json.dumps(extra)),
            )
        for row in tracks:
            db.execute("INSERT INTO tracks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
    finally:
        db.close()


def write_v1(path: Path) -> list[V1Event]:
    """The issue's example: the demo run, a live run's stream_up, then the second run's track."""
    events = [
        V1Event(0.2, "demo", EventKind.TRACK_STARTED, 1),
        V1Event(0.28, "demo", EventKind.IDENTITY_ASSIGNED, 1, "Eileen", 0.71, (("votes", 3),)),
        V1Event(2.4, "demo", EventKind.TRACK_ENDED, 1, "Eileen", 0.69),
        V1Event(UP, "cam", EventKind.STREAM_UP, extra=(("epoch", 0), ("reason", "connected"))),
        V1Event(0.48, "cam", EventKind.TRACK_STARTED, 1),
        V1Event(0.9, "cam", EventKind.STRANGER_ASSIGNED, 1, stranger="unknown-1"),
        V1Event(1.7, "cam", EventKind.TRACK_ENDED, 1, None, 0.2, stranger="unknown-1"),
        V1Event(UP + 5, "cam", EventKind.STREAM_DOWN, extra=(("epoch", 0), ("reason", "timeout: rtsp://u:pw@h/x"))),
    ]
    snapshot = str(path.parent / "snapshots" / "demo_e0_t1.jpg")
    tracks = [("demo", 0, 1, 0.2, 2.4, "Eileen", 0.69, snapshot), ("cam", 0, 1, 0.48, 1.7, None, 0.2, None)]
    v1_write(path, events, tracks)
    return events


def test_a_schema_1_database_is_migrated_in_place_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    written = write_v1(path)
    with sqlite3.connect(path) as db:
        v1_ids = [r[0] for r in db.execute("SELECT id FROM events ORDER BY id")]
        assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= {"events", "tracks"}

    with open_store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        rows = store.events(EventQuery(newest_first=False, limit=1000))
        assert sorted(r.id for r in rows) == v1_ids and len(rows) == len(written)
        by_id = {r.id: r for r in rows}
        for event_id, e in zip(v1_ids, written, strict=True):
            row = by_id[event_id]
            assert (row.stream, row.kind, row.person, row.run_id) == (e.stream, e.kind.value, e.person, None)
            assert row.score == e.score and row.track_id == e.track_id and row.stranger == e.stranger
            if e.kind in (EventKind.STREAM_UP, EventKind.STREAM_DOWN):  # ts was Unix time
                assert (row.time, row.pts_s, row.epoch) == (round(e.ts, 3), None, 0)
            else:  # ts was stream time; the wall-clock time was never stored
                assert (row.time, row.pts_s, row.epoch) == (None, e.ts, 0)
        assert by_id[v1_ids[1]].extra == {"votes": 3}
        assert by_id[v1_ids[3]].to_dict()["time"] == "2026-12-01T02:38:30.440Z"
        assert by_id[v1_ids[7]].extra == {"reason": "timeout: rtsp://u:***@h/x"}
        # newest first: the two stream events (they have a time), then the rest (no time: oldest), by id
        timeless = sorted((i for i in v1_ids if i not in (v1_ids[3], v1_ids[7])), reverse=True)
        assert [r.id for r in store.events()] == [v1_ids[7], v1_ids[3], *timeless]

        demo, cam = sorted(store.tracks(), key=lambda t: t.stream != "demo")
        assert (demo.first_pts, demo.last_pts, demo.person, demo.score) == (0.2, 2.4, "Eileen", 0.69)
        assert demo.snapshot == str(tmp_path / "snapshots" / "demo_e0_t1.jpg")
        assert (demo.first_time, demo.last_time, demo.run_id) == (None, None, None)
        assert (cam.first_pts, cam.last_pts, cam.person, cam.epoch, cam.track_id) == (0.48, 1.7, None, 0, 1)

        # the migrated store takes new rows next to the old ones
        run = run_record()
        store.begin_run(run)
        store.add_events([event(run, T0 + 60)])
        store.flush()
        assert store.events(EventQuery(limit=1))[0].run_id == run.run_id
        assert max(r.id for r in store.events()) > max(v1_ids)

    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"schema_version", "runs", "events", "tracks", "faces", "negatives", "sqlite_sequence"}
        ((version, note),) = db.execute("SELECT version, note FROM schema_version").fetchall()
        assert (version, note) == (2, "migrated from schema 1 (8 events, 2 tracks)")
        extra = json.loads(db.execute("SELECT extra_json FROM events WHERE kind = 'stream_up'").fetchone()[0])
        assert extra == {"reason": "connected"}  # the epoch moved to its column
    with open_store(path) as again:  # a second open changes nothing
        assert len(again.events(EventQuery(limit=1000))) == len(written) + 1


def test_rows_without_a_time_go_once_the_migration_is_older_than_the_cutoff(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    write_v1(path)
    with open_store(path) as store:
        migrated = store._migrated_at
        assert migrated is not None
        kept = store.purge(UP - 1)  # cutoff before the migration: rows of unknown time stay
        assert (kept.events, kept.tracks) == (0, 0)
        gone = store.purge(migrated + 1)  # the migration (so every schema-1 row) is older than the cutoff
        assert (gone.events, gone.tracks) == (8, 2) and store.events() == [] and store.tracks() == []


def test_a_schema_1_lookalike_with_other_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, when_ TEXT)")
    with pytest.raises(StoreError, match=r"table events has columns \(id, when_\), not those of an event database"):
        open_store(path)
    with sqlite3.connect(path) as db:  # untouched
        assert [r[1] for r in db.execute("PRAGMA table_info(events)")] == ["id", "when_"]


def test_the_database_of_a_real_demo_and_live_run_is_migrated(tmp_path: Path) -> None:
    """The issue's case, for real: main (aad0a22) ran the demo and then a live run into one
    recordings/ folder (frame events in stream time, stream_up in Unix time); its events.db, kept as a
    SQL dump with that run's events.jsonl in tests/store/data/, is migrated by the store with every
    row kept, each the same as its journal line."""
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as db:
        db.executescript((DATA / "main-aad0a22-events.sql").read_text())
        v1_tracks = db.execute("SELECT stream, epoch, track_id, first_ts, last_ts, person FROM tracks").fetchall()
    journal = [json.loads(line) for line in (DATA / "main-aad0a22-events.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in journal]
    assert "stream_up" in kinds and "identity_assigned" in kinds and kinds.index("stream_up") > 0

    with open_store(path) as store:
        rows = store.events(EventQuery(newest_first=False, limit=10_000))
        assert len(rows) == len(journal) == 9
        for row, line in zip(sorted(rows, key=lambda r: r.id), journal, strict=True):
            assert (row.stream, row.kind, row.track_id, row.person) == (
                line["stream"],
                line["kind"],
                line["track_id"],
                line["person"],
            )
            assert row.stranger == line.get("stranger") and row.epoch == line.get("epoch")
            if line["kind"] == "stream_up":
                assert row.time == round(line["ts"], 3) and row.pts_s is None
            else:
                assert row.pts_s == line["ts"] and row.time is None
        tracks = {(t.stream, t.epoch, t.track_id, t.first_pts, t.last_pts, t.person) for t in store.tracks()}
        assert tracks == set(v1_tracks) and len(tracks) == 3


def test_a_reader_leaves_a_schema_1_file_as_it_is(tmp_path: Path) -> None:
    """``run.py events`` on an old events.db reads a migrated temporary copy: the old app keeps writing."""
    path = tmp_path / "events.db"
    written = write_v1(path)
    before = path.read_bytes()
    store = open_store(path, create=False)
    copy = store._conn._copy  # type: ignore[union-attr]
    assert copy is not None and copy != path and copy.exists()
    rows = store.events(EventQuery(limit=100))
    assert len(rows) == len(written) and rows[0].kind == "stream_down" and rows[0].time == round(UP + 5, 3)
    store.close()
    assert not copy.exists() and path.read_bytes() == before
    v1_write(path, [V1Event(UP + 9, "cam", EventKind.STREAM_UP, extra=(("epoch", 1),))])  # the old app writes on
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == len(written) + 1
