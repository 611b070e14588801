"""The tracks table: one row per (stream, epoch, track id), spanning track_started → track_ended.

Reproduces the bug where every row had first_ts == last_ts (the end time) and where track 1 of
epoch 0 and track 1 of epoch 1 (after a reconnect) merged into one row.
"""

from __future__ import annotations

from pathlib import Path

from stream.pipeline.recording import EventRecorder
from stream.pipeline.writers import OutputPaths, OutputWriters
from stream.store import open_store
from stream.store.records import RunRecord
from stream.types import Event, EventKind, TrackKey


def _writers(tmp_path: Path) -> OutputWriters:
    paths = OutputPaths(videos={"cam": None}, mot={"cam": None}, jsonl=None, snapshots=None, summary=None)
    recorder = EventRecorder(RunRecord.new(started=0.0), store=open_store(tmp_path / "events.db"))
    return OutputWriters(paths, fps={"cam": 25.0}, recorder=recorder)


def _track_event(ts: float, kind: EventKind, epoch: int, track_id: int, person: str | None = None) -> Event:
    """An event at wall-clock ``ts`` (its stream time counts from the epoch's start at 10 s / 110 s)."""
    return Event.of_track(ts - (10.0 if epoch == 0 else 110.0), kind, TrackKey("cam", epoch, track_id), person, 0.9).at(ts)


def test_a_reconnect_gives_two_rows_each_from_start_to_end(tmp_path: Path) -> None:
    writers = _writers(tmp_path)
    writers.events(
        [
            _track_event(10.0, EventKind.TRACK_STARTED, 0, 1),
            _track_event(10.5, EventKind.IDENTITY_ASSIGNED, 0, 1, "alice"),
            _track_event(12.0, EventKind.TRACK_ENDED, 0, 1, "alice"),
            _track_event(110.0, EventKind.TRACK_STARTED, 1, 1),
            _track_event(112.0, EventKind.TRACK_ENDED, 1, 1),
        ]
    )
    writers.close()
    with open_store(tmp_path / "events.db", create=False) as store:
        rows = [(t.stream, t.epoch, t.track_id, t.first_time, t.last_time, t.person) for t in store.tracks()]
    assert sorted(rows) == [("cam", 0, 1, 10.0, 12.0, "alice"), ("cam", 1, 1, 110.0, 112.0, None)]
