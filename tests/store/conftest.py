"""Store fixtures: a fresh store URL per test on each backend (SQLite file; PostgreSQL database on the
session's real server, marked slow since it starts a server), and record factories."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from scripts.pg_server import PgServer
from stream.store import EventRecord, FaceRecord, RunRecord, Store, TrackRecord, open_store

T0 = 1_796_092_710.44  # 2026-12-01T02:38:30.440Z: a fixed "now" for synthetic data
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "events.db")
    server: PgServer = request.getfixturevalue("pg_server")
    server.thaw()
    server.start()  # a no-op unless an earlier test left it stopped
    return server.create_database()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as s:
        yield s


def run_record(started: float = T0, run_id: str | None = None) -> RunRecord:
    return RunRecord(run_id or str(uuid.uuid4()), started, host="test-host", config_summary="profile: cpu")


def event(run: RunRecord | str, t: float, kind: str = "track_started", **fields: object) -> EventRecord:
    run_id = run if isinstance(run, str) else run.run_id
    values: dict[str, object] = {"pts_s": round(t - T0, 3), "stream": "front", "epoch": 0, "track_id": 1}
    values.update(fields)
    return EventRecord(run_id=run_id, time=t, kind=kind, **values)  # type: ignore[arg-type]


def unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def jpeg(seed: int, size: int = 32) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def face(
    run: RunRecord, track_id: int, vector: np.ndarray, t: float, model_id: str = "test-model", **fields: object
) -> FaceRecord:
    values: dict[str, object] = {"stream": "front", "epoch": 0, "person": None, "stranger": None}
    values.update(fields)
    return FaceRecord(
        run_id=run.run_id,
        track_id=track_id,
        first_time=t,
        last_time=t + 2.0,
        model_id=model_id,
        norm=20.0 + track_id,
        embedding=unit(vector),
        crop_jpeg=jpeg(track_id),
        **values,  # type: ignore[arg-type]
    )


def track(run: RunRecord, track_id: int, t: float, **fields: object) -> TrackRecord:
    values: dict[str, object] = {"stream": "front", "epoch": 0, "first_pts": t - T0, "last_pts": t - T0 + 2.0}
    values.update(fields)
    return TrackRecord(run_id=run.run_id, track_id=track_id, first_time=t, last_time=t + 2.0, **values)  # type: ignore[arg-type]
