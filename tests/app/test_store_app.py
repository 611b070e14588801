"""The app and its event store end to end: PostgreSQL shared by two runs, an outage mid-run, an
unreachable server at start, and `run.py search` finding the demo person's stored face."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from scripts.pg_server import PgServer, free_port
from stream.app import RunOptions, build_app
from stream.cli import main
from stream.config import parse_config
from stream.faces.models import ModelOverrides
from stream.store import EventQuery, open_store
from tests.conftest import REPO, app_config_text, unix_time

pytestmark = pytest.mark.slow


def _config_text(tmp_path: Path, db: str | None = None, extra: str = "") -> str:
    text = "profile: cpu\n" + app_config_text(tmp_path) + extra
    return text.replace("outputs:\n", f"outputs:\n  events_db: {db}\n", 1) if db else text


def test_unreachable_postgresql_is_one_line_naming_the_masked_url(tmp_path: Path, capsys) -> None:
    port = free_port()  # nothing listens there
    cfg = tmp_path / "c.yaml"
    cfg.write_text(_config_text(tmp_path, f"postgresql://app:s3cret-pw@127.0.0.1:{port}/events"))
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.zeros((48, 64, 3), np.uint8))
    started = time.monotonic()
    code = main(["run", "--config", str(cfg), "--source", str(frames)])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 30
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"postgresql://app:***@127.0.0.1:{port}/events" in lines[0], err
    assert "s3cret-pw" not in err and "Traceback" not in err


def test_two_runs_write_one_postgresql_store_at_once(pg_server: PgServer, demo, tmp_path: Path) -> None:
    clip, gallery = demo
    url = pg_server.create_database("two")
    procs = []
    for name in ("left", "right"):
        folder = tmp_path / name
        folder.mkdir()
        cfg = folder / "c.yaml"
        cfg.write_text(_config_text(folder, url))
        args = [sys.executable, "run.py", "--config", str(cfg), "--source", str(clip), "--gallery", str(gallery)]
        cmd = [*args, "--max-frames", "60"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    with open_store(url, create=False) as store:
        runs = store.runs()
        events = store.events(EventQuery(limit=10_000))
    assert len(runs) == 2 and all(r.ended is not None for r in runs)
    for run in runs:  # each run's events are all there: the same as its journal
        folder = next(f for f in (tmp_path / "left", tmp_path / "right") if _journal_run(f) == run.run_id)
        journal = _journal(folder)
        stored = sorted((e for e in events if e.run_id == run.run_id), key=lambda e: e.id)
        assert [(e.kind, e.track_id, e.person) for e in stored] == [
            (j["kind"], j["track_id"], j["person"]) for j in journal
        ]


def test_postgresql_stopped_mid_run_loses_nothing(pg_server: PgServer, demo, tmp_path: Path) -> None:
    """A live run writes to PostgreSQL; the server stops for a few seconds and comes back: every event
    of the journal is in the store afterwards (count and content), and the outage was counted."""
    clip, gallery = demo
    url = pg_server.create_database("outage")
    config = parse_config(_config_text(tmp_path, url)).resolve_paths(tmp_path)
    live = f"lavfi:movie={clip}:loop=0,setpts=N/(25*TB),realtime"
    app = build_app(config, RunOptions(sources=(live,), gallery=gallery), ModelOverrides(device="cpu"))
    summary: dict = {}
    thread = threading.Thread(target=lambda: summary.setdefault("s", app.run()), daemon=True)
    thread.start()
    try:
        assert _wait(lambda: len(_journal(tmp_path)) >= 3, 120), "no events before the outage"
        pg_server.stop()
        down_at = len(_journal(tmp_path))
        assert _wait(lambda: len(_journal(tmp_path)) >= down_at + 3, 120), "no events during the outage"
        pg_server.start()
        assert _wait(lambda: app.writers.recorder.store_counters().reconnects >= 1, 120), "store never came back"
        time.sleep(3.0)
    finally:
        app.pipeline.stop.set()
        thread.join(60)
        if not pg_server.running:
            pg_server.start()
    counters = app.writers.recorder.store_counters()
    assert counters is not None and counters.buffered > 0 and counters.dropped == 0
    journal = _journal(tmp_path)
    with open_store(url, create=False) as store:
        stored = sorted(store.events(EventQuery(limit=100_000)), key=lambda e: e.id)
    assert len(stored) == len(journal) > down_at
    for row, line in zip(stored, journal, strict=True):
        assert (row.kind, row.stream, row.track_id, row.person, row.run_id) == (
            line["kind"],
            line["stream"],
            line["track_id"],
            line["person"],
            line["run_id"],
        )
        assert row.time is not None and abs(row.time - unix_time(line)) < 0.002


def test_search_finds_the_demo_persons_stored_face_first(demo, tmp_path: Path, capsys) -> None:
    """The demo run remembers its faces; a gallery photo of Eileen Collins finds hers first."""
    clip, gallery = demo
    cfg = tmp_path / "c.yaml"
    cfg.write_text(_config_text(tmp_path))
    assert main(["run", "--config", str(cfg), "--source", str(clip), "--gallery", str(gallery)]) == 0
    capsys.readouterr()
    photo = sorted((gallery / "eileen_collins").glob("*.png"))[0]
    assert main(["search", str(photo), "--config", str(cfg), "--top", "3", "--json"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert hits and hits[0]["person"] == "eileen_collins", hits
    assert Path(hits[0]["crop"]).is_file()
    if len(hits) > 1:
        assert hits[0]["score"] > hits[1]["score"]


def _journal(folder: Path) -> list[dict]:
    path = folder / "rec" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _journal_run(folder: Path) -> str | None:
    lines = _journal(folder)
    return lines[0]["run_id"] if lines else None


def _wait(condition, timeout_s: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False
