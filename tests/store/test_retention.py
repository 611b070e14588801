"""Retention with an injected clock: at start and then hourly, events, tracks, faces and snapshot files
older than N days go and newer ones stay; an unavailable store is retried later and the run goes on."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from stream.store import EventQuery, PurgeCounts, Retention, Store, StoreUnavailableError, purge_files
from stream.store.retention import DAY_S
from tests.store.conftest import T0, event, face, run_record, track

NOW = T0 + 30 * DAY_S


def snapshot(folder: Path, name: str, age_days: float) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8jpeg")
    mtime = NOW - age_days * DAY_S
    os.utime(path, (mtime, mtime))
    return path


def fill(store: Store, ages_days: list[float]) -> None:
    """One run per age: 3 events, a track and a face that old (their times: NOW - age)."""
    for k, age in enumerate(ages_days):
        t = NOW - age * DAY_S
        run = run_record(t - 10)
        store.begin_run(run)
        store.add_events([event(run, t + j, extra={"age": age}) for j in range(3)])
        store.add_track(track(run, k, t))
        store.add_face(face(run, k, np.eye(8)[k % 8] + 0.1, t))
    store.flush()


def test_retention_purges_at_start_and_then_hourly(store: Store, tmp_path: Path) -> None:
    snaps = tmp_path / "snapshots"
    old_file, new_file = snapshot(snaps, "a_e0_t1.jpg", 8), snapshot(snaps, "b_e0_t2.jpg", 6.48)
    old_nested, notes = snapshot(snaps / "cam", "c.jpeg", 9), snapshot(snaps, "notes.txt", 100)
    fill(store, [10.0, 8.0, 6.5, 1.0])
    now = [NOW]
    retention = Retention(store, 7, snapshot_dirs=[snaps, tmp_path / "missing"], clock=lambda: now[0])

    first = retention.tick()  # the run's start
    assert first == PurgeCounts(events=6, tracks=2, faces=2, runs=2, snapshot_files=2)
    assert not old_file.exists() and not old_nested.exists() and new_file.exists() and notes.exists()
    ages = sorted({r.extra["age"] for r in store.events(EventQuery(limit=1000))})
    assert ages == [1.0, 6.5] and len(store.tracks()) == 2 and len(store.faces()) == 2 and len(store.runs()) == 2

    now[0] += 3599  # within the hour: nothing, and cheap
    assert retention.tick() is None
    now[0] += 1.0  # an hour after the first purge
    assert retention.tick() == PurgeCounts()  # nothing has aged past 7 days yet
    now[0] += 0.5 * DAY_S  # the 6.5-day-old rows are 7 days old now
    second = retention.tick()
    assert second is not None and (second.events, second.tracks, second.faces, second.snapshot_files) == (3, 1, 1, 1)
    assert not new_file.exists()
    assert [r.extra["age"] for r in store.events(EventQuery(limit=1000))] == [1.0] * 3
    assert retention.purges == 3 and retention.totals.events == 9


def test_a_clock_going_back_purges_at_the_next_tick(store: Store) -> None:
    now = [NOW]
    retention = Retention(store, 7, clock=lambda: now[0])
    assert retention.tick() is not None and retention.tick() is None
    now[0] -= 600
    assert retention.tick() is not None


class Unavailable:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def purge(self, older_than: float) -> PurgeCounts:
        self.calls.append(older_than)
        raise StoreUnavailableError("event store postgresql://app:***@db/events unreachable: refused")


def test_an_unavailable_store_is_retried_later_and_files_still_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = snapshot(tmp_path, "x.jpg", 30)
    store = Unavailable()
    now = [NOW]
    retention = Retention(store, 7, snapshot_dirs=[tmp_path], clock=lambda: now[0], retry_s=300)
    assert retention.tick() == PurgeCounts(snapshot_files=1) and not old.exists()
    assert store.calls == [NOW - 7 * DAY_S] and "retrying in 300 s" in caplog.text
    now[0] += 299
    assert retention.tick() is None
    now[0] += 1
    assert retention.tick() == PurgeCounts() and len(store.calls) == 2


def test_retention_checks_its_settings_and_purge_files_skips_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Retention.days"):
        Retention(None, 0)
    assert purge_files([tmp_path / "nope"], NOW) == 0
    assert Retention(None, 1, clock=lambda: NOW).tick() == PurgeCounts()
