"""The web app under TestClient: a LiveView with one stream, events written through the event store into
a SQLite database, snapshot files, and a fake identifier (no models)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from stream.outputs.live_view import LiveView
from stream.outputs.metrics import Metrics
from stream.store import open_store
from stream.store.records import EventRecord, RunRecord
from stream.types import Event, EventKind, TrackKey
from stream.web.app import WebDeps, WebSettings, create_app
from stream.web.auth import PasswordCheck
from stream.web.events import StoreEventReader
from stream.web.identify import IdentifyService, UploadLimits
from tests.fakes import RecordingIdentifier

PASSWORD = "correct horse battery staple"
T0 = 1_764_576_000.0  # 2025-12-01T08:00:00Z
BASE = "http://127.0.0.1:8080"
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # real argon2id, fast for tests


@dataclass
class Site:
    root: Path
    view: LiveView
    deps: WebDeps
    identifier: RecordingIdentifier
    metrics: Metrics

    def client(self, **settings: object) -> TestClient:
        deps = replace(self.deps, settings=replace(self.deps.settings, **settings)) if settings else self.deps
        return TestClient(create_app(deps), base_url=BASE)


def write_events(db: Path, snapshots: Path) -> None:
    """Events of two streams over 10 minutes: alice named on cam (with a snapshot), an unknown, bob on door;
    one row whose stored snapshot points outside the snapshots folder."""
    snapshots.mkdir(parents=True, exist_ok=True)
    alice = snapshots / "cam_e0_t1.jpg"
    cv2.imwrite(str(alice), np.full((40, 32, 3), 120, np.uint8))
    cam1, cam2, door = TrackKey("cam", 0, 1), TrackKey("cam", 0, 2), TrackKey("door", 0, 1)
    rows: list[tuple[Event, Path | None]] = [
        (Event.of_stream(T0, "cam", EventKind.STREAM_UP, 0, "connected"), None),
        (Event.of_track(1.0, EventKind.TRACK_STARTED, cam1).at(T0 + 60), None),
        (Event.of_track(2.0, EventKind.IDENTITY_ASSIGNED, cam1, "alice", 0.81).at(T0 + 120), alice),
        (Event.of_track(3.0, EventKind.TRACK_STARTED, cam2).at(T0 + 180), None),
        (Event.of_track(4.0, EventKind.STRANGER_ASSIGNED, cam2, None, 0.2, stranger="unknown-1").at(T0 + 240), None),
        (Event.of_track(5.0, EventKind.IDENTITY_ASSIGNED, door, "bob", 0.7).at(T0 + 300), Path("/etc/hosts.jpg")),
        (Event.of_track(6.0, EventKind.TRACK_ENDED, cam1, "alice", 0.81).at(T0 + 360), None),
        (Event.of_track(7.0, EventKind.IDENTITY_CHANGED, door, "bob", 0.72).at(T0 + 420), Path("../../secret.jpg")),
    ]
    run = RunRecord("6f1c1a52-8a77-4c3e-9b3f-111111111111", T0)
    with open_store(db) as store:
        store.begin_run(run)
        for event, snapshot in rows:
            assert event.time is not None
            record = EventRecord.from_event(event, run_id=run.run_id, time=event.time, pts_s=event.pts_s, snapshot=snapshot)
            store.add_events([record])


@pytest.fixture
def site(tmp_path: Path) -> Site:
    rec = tmp_path / "rec"
    write_events(rec / "events.db", rec / "snapshots")
    (rec / "secret.jpg").write_bytes(b"\xff\xd8 not for the web")  # beside the snapshots folder, not in it
    view = LiveView({"cam": True, "door": False})
    view.publish_frame("cam", np.full((90, 160, 3), 60, np.uint8), T0)
    identifier = RecordingIdentifier()
    metrics = Metrics()
    metrics.frames_processed("cam", 3)
    deps = WebDeps(
        view=view,
        events=StoreEventReader(str(rec / "events.db")),
        snapshots=rec / "snapshots",
        identify=IdentifyService(identifier, UploadLimits(max_bytes=200_000, max_pixels=1_000_000)),
        metrics=metrics.render,
        people=("alice", "bob"),
        settings=WebSettings(frame_poll_s=0.01, event_poll_s=0.02, latest_wait_s=0.3),
    )
    return Site(rec, view, deps, identifier, metrics)


@pytest.fixture
def client(site: Site) -> Iterator[TestClient]:
    with site.client() as c:
        yield c


@pytest.fixture
def secured(site: Site) -> Iterator[TestClient]:
    """The same site with a password (and the loopback Host check)."""
    check = PasswordCheck.from_secret(PASSWORD, CHEAP_HASHER)
    with site.client(password=check, loopback_only_hosts=True) as c:
        yield c


def jpeg_bytes(width: int = 64, height: int = 48) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 100, np.uint8))
    assert ok
    return buf.tobytes()


def png_bytes(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))
    assert ok
    return buf.tobytes()


Login = Callable[[TestClient], None]


def login(client: TestClient, password: str = PASSWORD) -> None:
    r = client.post(
        "/login", data={"password": password, "next": "/"}, headers={"Origin": BASE}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
