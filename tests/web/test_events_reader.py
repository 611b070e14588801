"""The events reader (through the event store, old databases included), time parsing, and the snapshot
name checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stream.store import StoreError
from stream.web.events import (
    EventFilter,
    EventItem,
    StoreEventReader,
    event_json,
    parse_time,
    snapshot_file,
    snapshot_name,
)
from tests.conftest import REPO
from tests.web.conftest import T0, write_events


def test_the_reader_reads_through_the_event_store(tmp_path: Path) -> None:
    write_events(tmp_path / "events.db", tmp_path / "snapshots")
    reader = StoreEventReader(str(tmp_path / "events.db"))
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
    assert [r.kind for r in reader.events(EventFilter(since=T0 + 30, until=T0 + 120.5))] == [
        "identity_assigned",
        "track_started",
    ]
    assert event_json(named)["snapshot_url"] == f"/api/events/{named.id}/snapshot"


def test_a_database_written_by_an_older_version_is_read_without_changing_it(tmp_path: Path) -> None:
    """Schema 1 (main at aad0a22, kept as a SQL dump by the store tests): read through a migrated copy."""
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as db:
        db.executescript((REPO / "tests/store/data/main-aad0a22-events.sql").read_text())
    before = path.read_bytes()
    rows = StoreEventReader(str(path)).events(EventFilter(person="eileen_collins"))
    assert {r.kind for r in rows} == {"identity_assigned", "track_ended"} and all(r.person for r in rows)
    assert path.read_bytes() == before


def test_no_database_yet_is_an_error_the_routes_turn_into_503(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        StoreEventReader(str(tmp_path / "missing.db")).events(EventFilter())
    assert not (tmp_path / "missing.db").exists()


def test_the_reader_never_writes(tmp_path: Path) -> None:
    write_events(tmp_path / "events.db", tmp_path / "snapshots")
    before = (tmp_path / "events.db").read_bytes()
    StoreEventReader(str(tmp_path / "events.db")).events(EventFilter(person="x'; DROP TABLE events; --"))
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
