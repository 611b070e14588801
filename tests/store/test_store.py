"""The store against real backends (each test runs on SQLite and on a real PostgreSQL server): schema,
round trips of every record, queries, face search, purge, batching, passwords, two writer processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from stream.store import (
    SCHEMA_VERSION,
    UNKNOWN,
    EventQuery,
    RunRecord,
    Store,
    StoreError,
    StoreSettings,
    open_store,
    parse_store_url,
)
from stream.store.schema import TABLES
from tests.conftest import REPO
from tests.store.conftest import T0, event, face, run_record, track, unit


def raw_query(url: str, sql: str) -> list[tuple[object, ...]]:
    """Read with the driver directly (not through the store)."""
    target = parse_store_url(url)
    if target.backend == "sqlite":
        with sqlite3.connect(str(target.path)) as db:
            return db.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def columns(url: str, table: str) -> list[tuple[str, bool]]:
    """(name, nullable) of a table's columns, in order."""
    if parse_store_url(url).backend == "sqlite":
        rows = raw_query(url, f"PRAGMA table_info({table})")
        return [(str(r[1]), not r[3] and not r[5]) for r in rows]
    rows = raw_query(
        url,
        "SELECT column_name, is_nullable FROM information_schema.columns"
        f" WHERE table_schema = current_schema() AND table_name = '{table}' ORDER BY ordinal_position",
    )
    return [(str(r[0]), r[1] == "YES") for r in rows]


# ---------------------------------------------------------------- schema


def test_new_store_has_the_schema_and_its_version(store: Store, store_url: str) -> None:
    assert store.schema_version() == SCHEMA_VERSION == 2
    for table in TABLES:
        expected = [(c.name, c.null and c.type != "id") for c in table.columns]
        assert columns(store_url, table.name) == expected, table.name
    assert raw_query(store_url, "SELECT version, note FROM schema_version") == [(2, "created")]
    if store.backend == "sqlite":
        assert raw_query(store_url, "PRAGMA journal_mode") == [("wal",)]


def test_reopening_keeps_the_data_and_a_reader_needs_an_existing_store(store_url: str, tmp_path: Path) -> None:
    run = run_record()
    with open_store(store_url) as s:
        s.begin_run(run)
        s.add_events([event(run, T0)])
    with open_store(store_url, create=False) as s:
        assert [e.run_id for e in s.events()] == [run.run_id]
        assert raw_query(store_url, "SELECT count(*) FROM schema_version") == [(1,)]
    if parse_store_url(store_url).backend == "sqlite":
        with pytest.raises(StoreError, match=r"no event database at .*missing\.db"):
            open_store(tmp_path / "missing.db", create=False)


def test_a_newer_schema_or_a_foreign_database_is_refused(store_url: str) -> None:
    with open_store(store_url) as s:
        s.begin_run(run_record())
    _execute(
        store_url,
        "INSERT INTO schema_version (version, applied, note) VALUES (3, '2030-01-01T00:00:00.000Z', 'future')"
        if parse_store_url(store_url).backend == "sqlite"
        else "INSERT INTO schema_version (version, applied, note) VALUES (3, now(), 'future')",
    )
    with pytest.raises(StoreError, match="has schema 3; this version of the app reads up to 2"):
        open_store(store_url)


def test_a_file_with_other_tables_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(StoreError, match=r"other\.db is not an event database \(it has tables photos\)"):
        open_store(path)
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match=r"junk\.db"):
        open_store(tmp_path / "junk.db")


def _execute(url: str, sql: str) -> None:
    target = parse_store_url(url)
    if target.backend == "sqlite":
        with sqlite3.connect(str(target.path)) as db:
            db.execute(sql)
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


# ---------------------------------------------------------------- round trips


def test_every_record_type_round_trips(store: Store) -> None:
    run = run_record()
    store.begin_run(run)
    written = [
        event(run, T0, "track_started", pts_s=0.2, track_id=3),
        event(
            run,
            T0 + 0.08,
            "identity_assigned",
            pts_s=0.28,
            track_id=3,
            person="Alice",
            score=0.71,
            snapshot="recordings/snapshots/front_e0_t3.jpg",
            extra={"votes": 4, "margin": 0.12, "top": ["Alice", "Bob"]},
        ),
        event(run, T0 + 1.5, "stream_down", pts_s=None, epoch=0, track_id=None, extra={"reason": "timeout"}),
        event(run, T0 + 3.0, "stream_up", pts_s=None, epoch=1, track_id=None, extra={"reason": "reconnected"}),
        event(run, T0 + 4.0, "track_ended", pts_s=0.5, epoch=1, track_id=1, stranger="unknown-2", score=None),
    ]
    store.add_events(written)
    store.add_track(track(run, 3, T0, person=None, score=None, snapshot="a.jpg"))
    store.add_track(track(run, 3, T0 - 1.0, person="Alice", score=0.71, snapshot=None, first_pts=-0.5, last_pts=0.1))
    vector = unit(np.linspace(-1, 1, 512))
    stored_face = face(run, 3, vector, T0, person="Alice", score=0.71)
    store.add_face(stored_face)
    store.end_run(run.run_id, T0 + 10)
    assert store.flush()

    rows = store.events(EventQuery(newest_first=False))
    assert [r.record() for r in rows] == written
    assert rows[1].to_dict()["time"] == "2026-12-01T02:38:30.520Z" and rows[1].to_dict()["votes"] == 4
    assert store.event(rows[1].id) == rows[1] and store.event(10**9) is None

    (t,) = store.tracks(run.run_id)
    # the span widened over both writes; person/score follow the latest, the snapshot is kept
    assert (t.first_time, t.last_time, t.first_pts, t.last_pts) == (T0 - 1.0, T0 + 2.0, -0.5, 2.0)
    assert (t.person, t.score, t.snapshot, t.epoch, t.track_id) == ("Alice", 0.71, "a.jpg", 0, 3)

    (f,) = store.faces(run.run_id)
    assert np.array_equal(f.embedding, stored_face.embedding) and f.embedding.dtype == np.float32
    assert (f.person, f.model_id, f.norm, f.first_time, f.last_time) == ("Alice", "test-model", 23.0, T0, T0 + 2.0)
    assert store.face_crop(f.face_id) == stored_face.crop_jpeg and store.face_crop(10**9) is None
    assert store.face_models() == {"test-model": 1}

    (r,) = store.runs()
    assert (r.run_id, r.started, r.ended, r.host, r.config_summary) == (
        run.run_id,
        T0,
        T0 + 10,
        "test-host",
        "profile: cpu",
    )
    assert store.counters().written == len(written) + 5


# ---------------------------------------------------------------- queries


@pytest.fixture
def filled(store: Store) -> tuple[Store, list[RunRecord]]:
    """Two runs, two streams: 40 events one second apart, every 4th named Alice, every 5th Bob."""
    runs = [run_record(T0), run_record(T0 + 20)]
    for run in runs:
        store.begin_run(run)
    for i in range(40):
        person = "Alice" if i % 4 == 0 else "Bob" if i % 5 == 0 else None
        kind = "identity_assigned" if person else "track_started"
        store.add_events(
            [
                event(
                    runs[i // 20],
                    T0 + i,
                    kind,
                    stream="front" if i % 2 else "back",
                    person=person,
                    track_id=i,
                    extra={"i": i},
                )
            ]
        )
    store.flush()
    return store, runs


def _indices(store: Store, **query: object) -> list[int]:
    return [int(r.extra["i"]) for r in store.events(EventQuery(**query))]  # type: ignore[arg-type]


def test_queries_filter_by_person_stream_kind_time_and_run(filled: tuple[Store, list[RunRecord]]) -> None:
    store, runs = filled
    assert _indices(store, limit=3) == [39, 38, 37]  # newest first
    assert _indices(store, limit=3, newest_first=False) == [0, 1, 2]
    assert _indices(store, person="Alice", newest_first=False) == list(range(0, 40, 4))
    unknown = _indices(store, person=UNKNOWN, newest_first=False)
    assert unknown == [i for i in range(40) if i % 4 and i % 5] and 7 in unknown
    assert _indices(store, stream="front", person="Bob") == [35, 25, 15, 5]
    assert _indices(store, kinds=("identity_assigned",), since=T0 + 10, until=T0 + 20, newest_first=False) == [
        10,
        12,
        15,
        16,
    ]
    assert _indices(store, since=T0 + 38) == [39, 38]  # since inclusive
    assert _indices(store, until=T0 + 2) == [1, 0]  # until exclusive
    assert _indices(store, run_id=runs[1].run_id, limit=100) == list(range(39, 19, -1))
    assert _indices(store, kinds=("track_started", "identity_assigned"), limit=2) == [39, 38]
    assert _indices(store, stream="nowhere") == []


def test_queries_page_with_limit_and_offset(filled: tuple[Store, list[RunRecord]]) -> None:
    store, _ = filled
    pages = [_indices(store, limit=7, offset=o) for o in range(0, 42, 7)]
    assert [i for page in pages for i in page] == list(range(39, -1, -1))
    assert pages[-1] == [4, 3, 2, 1, 0] and _indices(store, limit=5, offset=40) == []


# ---------------------------------------------------------------- faces


def test_faces_like_returns_the_most_similar_first(store: Store) -> None:
    run = run_record()
    store.begin_run(run)
    rng = np.random.default_rng(7)
    base = rng.normal(size=(6, 128))
    for k in range(6):
        store.add_face(face(run, k, base[k], T0 + 100 * k, person=f"p{k}"))
    store.add_face(face(run, 50, base[2], T0, model_id="other-model"))
    store.add_face(face(run, 60, rng.normal(size=64), T0))  # same model id, other dimension: never compared
    store.flush()
    query = unit(base[2] + 0.3 * rng.normal(size=128))
    hits = store.faces_like(query, "test-model", top=3)
    assert hits[0].person == "p2" and hits[0].score > 0.9
    assert len(hits) == 3 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.model_id == "test-model" and h.track_id != 60 for h in hits)
    expected = sorted(range(6), key=lambda k: -float(unit(base[k]) @ query))[:3]
    assert [h.track_id for h in hits] == expected
    assert {h.person for h in store.faces_like(query, "test-model", top=10, since=T0 + 300)} == {"p3", "p4", "p5"}
    assert {h.person for h in store.faces_like(query, "test-model", top=10, until=T0 + 100)} == {"p0"}
    assert store.faces_like(query, "no-such-model") == []
    assert store.faces_like(query * 5, "test-model", top=1)[0].face_id == hits[0].face_id  # any length


def test_face_search_reads_in_chunks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stream.store.base.SCAN_CHUNK", 16)
    run = run_record()
    store.begin_run(run)
    vectors = np.random.default_rng(3).normal(size=(100, 32))
    for k in range(100):
        store.add_face(face(run, k, vectors[k], T0))
    store.flush()
    hits = store.faces_like(vectors[77], "test-model", top=4)
    assert hits[0].track_id == 77 and hits[0].score == pytest.approx(1.0, abs=1e-6)
    expected = np.argsort(-(np.stack([unit(v) for v in vectors]) @ unit(vectors[77])), kind="stable")[:4]
    assert [h.track_id for h in hits] == list(expected)


# ---------------------------------------------------------------- purge and batching


def test_purge_deletes_what_is_older_than_the_cutoff(store: Store) -> None:
    old, new = run_record(T0 - 100), run_record(T0 + 100)
    for run in (old, new):
        store.begin_run(run)
        store.add_events([event(run, run.started + k) for k in range(3)])
        store.add_track(track(run, 1, run.started))
        store.add_face(face(run, 1, np.ones(8), run.started))
    store.flush()
    counts = store.purge(T0)
    assert (counts.events, counts.tracks, counts.faces, counts.runs) == (3, 1, 1, 1)
    assert {e.run_id for e in store.events()} == {new.run_id} and [r.run_id for r in store.runs()] == [new.run_id]
    assert len(store.tracks()) == 1 and len(store.faces()) == 1
    assert store.purge(T0).total == 0


def test_a_run_with_rows_left_is_kept(store: Store) -> None:
    run = run_record(T0 - 100)
    store.begin_run(run)
    store.add_events([event(run, T0 + 5)])  # a long run: started before the cutoff, events after it
    store.flush()
    assert store.purge(T0).runs == 0 and [r.run_id for r in store.runs()] == [run.run_id]


def test_rows_wait_for_commit_every_or_the_interval(store_url: str) -> None:
    now = [0.0]
    settings = StoreSettings(commit_every=5, commit_interval_s=2.0)
    with open_store(store_url, settings=settings, clock=lambda: now[0]) as s, open_store(store_url) as reader:
        run = run_record()
        s.begin_run(run)  # written at once
        s.add_events([event(run, T0 + k) for k in range(4)])
        assert s.counters().pending == 4 and reader.events() == []
        s.add_events([event(run, T0 + 4)])
        assert s.counters().pending == 0 and len(reader.events()) == 5
        s.add_events([event(run, T0 + 5)])
        now[0] = 2.5
        assert s.counters().pending == 1
        s.add_events([event(run, T0 + 6)])  # the interval has passed: written
        assert len(reader.events()) == 7
        s.add_track(track(run, 1, T0))
        assert s.flush() and len(reader.tracks()) == 1


def test_a_password_is_never_stored(store_url: str) -> None:
    """URL passwords are masked in every text field; the store's own password is scrubbed anywhere."""
    own = parse_store_url(store_url).password
    secret = "hunter2-sesame"
    with open_store(store_url) as s:
        run = RunRecord(
            str(uuid.uuid4()), T0, config_summary=f"events_db: {store_url}\nsource: rtsp://cam:{secret}@10.1.1.1/x"
        )
        s.begin_run(run)
        s.add_events(
            [
                event(
                    run,
                    T0,
                    stream=f"rtsp://cam:{secret}@10.1.1.1/x",
                    person="Alice",
                    extra={"url": f"http://u:{secret}@h/p", "own": f"pw={own}"},
                )
            ]
        )
        s.add_track(track(run, 1, T0, snapshot=f"/snapshots/{own}.jpg"))
        s.add_face(face(run, 1, np.ones(4), T0, stream=f"rtsp://cam:{secret}@10.1.1.1/x"))
        s.flush()
        assert "***" in s.runs()[0].config_summary  # type: ignore[operator]
    target = parse_store_url(store_url)
    if target.backend == "sqlite":
        assert target.path is not None
        text = b"".join(p.read_bytes() for p in target.path.parent.glob("events.db*")).decode("latin-1")
    else:
        from scripts.pg_server import dump_text

        text = dump_text(store_url)
        assert own and own not in text
    assert "rtsp://cam:***@10.1.1.1/x" in text and secret not in text


# ---------------------------------------------------------------- several processes

WRITER = textwrap.dedent(
    """
    import sys, time
    from stream.store import EventRecord, RunRecord, StoreSettings, TrackRecord, open_store
    url, run_id, n, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    time.sleep(max(0.0, start_at - time.time()))  # both open the fresh store at the same moment
    with open_store(url, settings=StoreSettings(commit_every=5)) as store:
        run = RunRecord(run_id, time.time(), host="writer")
        store.begin_run(run)
        for i in range(n):
            store.add_events([EventRecord(run_id, time.time(), i * 0.04, "cam", "track_started", 0, i)])
            time.sleep(0.002)  # a paced writer, like a live stream: the two runs' writes interleave
            if i % 10 == 0:
                store.add_track(TrackRecord(run_id, "cam", 0, i, time.time(), time.time()))
        store.end_run(run_id, time.time())
    print(store.counters().written)
    """
)


@pytest.mark.slow
def test_two_processes_write_one_store_at_once(store_url: str) -> None:
    """Two app processes open a fresh store (schema made once) and write at the same time."""
    runs = [str(uuid.uuid4()) for _ in range(2)]
    n, start_at = 500, time.time() + 4.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store_url, run_id, str(n), str(start_at)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run_id in runs
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert int(out) == n + n // 10 + 2
    with open_store(store_url, create=False) as s:
        assert {r.run_id for r in s.runs()} == set(runs)
        assert all(r.ended is not None for r in s.runs())
        ids = []
        for run_id in runs:
            rows = s.events(EventQuery(run_id=run_id, limit=10_000, newest_first=False))
            assert [r.track_id for r in rows] == list(range(n))
            assert len(s.tracks(run_id)) == n // 10
            ids.append(sorted(r.id for r in rows))
        assert ids[0][0] < ids[1][-1] and ids[1][0] < ids[0][-1], "the two writers did not overlap"
        assert s.schema_version() == 2
    assert raw_query(store_url, "SELECT count(*) FROM schema_version") == [(1,)]


def test_opening_an_existing_sqlite_store_takes_no_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with open_store(path) as s:
        s.begin_run(run_record())
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer is mid-transaction
        with open_store(path, create=False, settings=StoreSettings(busy_timeout_s=0.2)) as reader:
            assert len(reader.runs()) == 1
    finally:
        other.close()


def test_a_sqlite_lock_held_too_long_is_an_outage_not_an_error(tmp_path: Path) -> None:
    """Another process holding the write lock past the busy timeout: the rows wait and are written later."""
    path = tmp_path / "events.db"
    now = [0.0]
    settings = StoreSettings(commit_every=1, busy_timeout_s=0.2, retry_initial_s=1.0)
    store = open_store(path, settings=settings, clock=lambda: now[0])
    run = run_record()
    store.begin_run(run)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    store.add_events([event(run, T0)])
    assert time.monotonic() - started < 1.5
    c = store.counters()
    assert (c.up, c.pending, c.failures) == (False, 1, 1)
    other.execute("COMMIT")
    other.close()
    now[0] = 1.0
    assert store.flush() and store.counters().reconnects == 1
    store.close()
    with open_store(path) as s:
        assert len(s.events()) == 1
