"""The events reader on both schemas (today's events.db and the event store's schema 2), time parsing,
and the snapshot name checks."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from stream.web.events import (
    EventFilter,
    EventItem,
    SqliteEventReader,
    event_json,
    parse_time,
    snapshot_file,
    snapshot_name,
)
from tests.web.conftest import T0, write_events


def test_schema_1_database(tmp_path: Path) -> None:
    write_events(tmp_path / "events.db", tmp_path / "snapshots")
    reader = SqliteEventReader(tmp_path / "events.db")
    rows = reader.events(EventFilter(person="alice"))
    assert [r.kind for r in rows] == ["track_ended", "identity_assigned"]
    named = rows[1]
    assert named.time == T0 + 120 and named.pts_s == 2.0 and named.epoch == 0 and named.track_id == 1
    assert named.snapshot is not None and named.snapshot.endswith("cam_e0_t1.jpg")
    assert named.run_id == "6f1c1a52-8a77-4c3e-9b3f-111111111111"
    assert named.extra == {}
    stranger = reader.events(EventFilter(kinds=("stranger_assigned",)))[0]
    assert stranger.stranger == "unknown-1" and stranger.person is None
    up = reader.events(EventFilter(kinds=("stream_up",)))[0]
    assert up.epoch == 0 and up.extra == {"reason": "connected"} and up.track_id is None
    assert reader.event(named.id) == named and reader.event(12345) is None


def _schema_2(path: Path) -> None:
    """The store's schema 2 events table (stream/store/schema.py): time as ISO text, one column per field."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT, pts_s REAL, run_id TEXT, "
        "stream TEXT NOT NULL, kind TEXT NOT NULL, epoch INTEGER, track_id INTEGER, person TEXT, score REAL, "
        "stranger TEXT, snapshot TEXT, extra_json TEXT NOT NULL DEFAULT '{}')"
    )
    rows = [
        ("2025-12-01T08:00:00.000Z", None, None, "cam", "stream_up", 0, None, None, None, None, None, {"reason": "ok"}),
        (
            "2025-12-01T08:01:00.000Z",
            1.5,
            "r",
            "cam",
            "identity_assigned",
            0,
            3,
            "alice",
            0.8,
            None,
            "s/cam_e0_t3.jpg",
            {"votes": 2},
        ),
        ("2025-12-01T08:02:00.500Z", 2.5, "r", "cam", "stranger_assigned", 0, 4, None, 0.1, "unknown-1", None, {}),
        (None, None, None, "cam", "track_started", 0, 9, None, None, None, None, {}),  # migrated from schema 1
    ]
    db.executemany(
        "INSERT INTO events (time, pts_s, run_id, stream, kind, epoch, track_id, person, score, stranger, snapshot, "
        "extra_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*r[:-1], json.dumps(r[-1])) for r in rows],
    )
    db.commit()
    db.close()


def test_schema_2_database(tmp_path: Path) -> None:
    _schema_2(tmp_path / "events.db")
    reader = SqliteEventReader(tmp_path / "events.db")
    rows = reader.events(EventFilter())
    assert [r.kind for r in rows][:3] == ["stranger_assigned", "identity_assigned", "stream_up"]
    assert rows[0].time == T0 + 120.5 and rows[0].stranger == "unknown-1"
    assert rows[1].extra == {"votes": 2} and rows[1].snapshot == "s/cam_e0_t3.jpg"
    assert [r.kind for r in reader.events(EventFilter(since=T0 + 30, until=T0 + 120.5))] == ["identity_assigned"]
    assert [
        r.track_id for r in reader.events(EventFilter(person="unknown", kinds=("stranger_assigned", "track_started")))
    ] == [4, 9]
    assert event_json(rows[1])["snapshot_url"] == f"/api/events/{rows[1].id}/snapshot"


def test_no_database_yet_reads_empty(tmp_path: Path) -> None:
    reader = SqliteEventReader(tmp_path / "missing.db")
    assert reader.events(EventFilter()) == [] and reader.event(1) is None
    sqlite3.connect(tmp_path / "empty.db").close()
    assert SqliteEventReader(tmp_path / "empty.db").events(EventFilter()) == []


def test_the_reader_never_writes(tmp_path: Path) -> None:
    write_events(tmp_path / "events.db", tmp_path / "snapshots")
    before = (tmp_path / "events.db").read_bytes()
    SqliteEventReader(tmp_path / "events.db").events(EventFilter(person="x'; DROP TABLE events; --"))
    assert (tmp_path / "events.db").read_bytes() == before


def test_filter_checks() -> None:
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"kinds": ("nope",)}):
        with pytest.raises(ValueError):
            EventFilter(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-12-01T08:00:00Z", T0),
        ("2025-12-01T08:00", T0),
        ("2025-12-01 08:00:00.250", T0 + 0.25),
        ("2025-12-01T09:00:00+01:00", T0),
        (str(T0), T0),
        ("0", 0.0),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text, "since") == pytest.approx(expected)


@pytest.mark.parametrize("text", ["soon", "2025-13-01", "-5", "inf", "nan", "1e20"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="^until: "):
        parse_time(text, "until")


def test_snapshot_names(tmp_path: Path) -> None:
    folder = tmp_path / "snaps"
    folder.mkdir()
    (folder / "cam_e0_t1.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "outside.jpg").write_bytes(b"\xff\xd8")
    assert snapshot_file(folder, "cam_e0_t1.jpg") == (folder / "cam_e0_t1.jpg").resolve()
    for name in (
        "../outside.jpg",
        str(tmp_path / "outside.jpg"),
        "/etc/passwd",
        ".cam.jpg",
        "cam_e0_t1.JPG",
        "x/../cam_e0_t1.jpg",
        "missing.jpg",
        "",
        "..",
    ):
        assert snapshot_file(folder, name) is None, name
    assert snapshot_file(None, "cam_e0_t1.jpg") is None
    assert snapshot_name("/abs/path/cam_e0_t1.jpg") == "cam_e0_t1.jpg"
    assert snapshot_name("..\\..\\x.jpg") == "x.jpg"
    assert snapshot_name("/etc/passwd") is None and snapshot_name(None) is None and snapshot_name("a\x00.jpg") is None
    event = EventItem(1, T0, "cam", "identity_assigned", snapshot="/etc/shadow")
    assert event_json(event)["snapshot_url"] is None
