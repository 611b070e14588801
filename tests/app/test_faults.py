"""Reliability: stream faults, nothing lost, clean shutdown, and the soak (memory/threads).

RTSP tests run the real GStreamer server (scripts/rtsp_server.py, system Python) on 127.0.0.1 in
its own process group and skip with the apt-get line when it is unavailable. The app runs in this
process (``build_app`` + a thread running ``App.run``; stopped with ``app.pipeline.stop.set()``)
unless a test needs real signals (SIGTERM, kill -9), which run ``run.py`` as a subprocess.

Decisions documented here:
- A live stream never ends by itself: it reconnects forever (backoff 0.5 s doubling to 8 s) and
  ``--max-frames`` only ends it after N *frames*, which a refused URL never delivers. So a run that
  mixes a file with a dead camera ends when it is stopped (Ctrl-C, SIGTERM, or ``pipeline.stop``
  in-process); the file stream is finished (all frames, its video closed) independently before.
- A resolution change mid-stream: detection batches group frames by shape (never mixed); the
  annotated video keeps its first size and letterboxes later frames into it
  (``OutputWriters._write_video``); events keep the frames' own pixel coordinates.
- SIGTERM is handled like Ctrl-C (outputs finished, threads joined) and exits with 143
  (128 + SIGTERM) so a supervisor can tell it from an interrupt (130).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from stream.app import App, RunOptions, build_app
from stream.config import AppConfig, parse_config
from stream.faces.models import ModelOverrides, Models, build_models
from stream.store import EventQuery, open_store
from tests.conftest import REPO, SYSTEM_PYTHON, app_config_text, unix_time
from tests.fakes import CountingDetector, CountingEmbedder

pytestmark = pytest.mark.slow  # RTSP server, run.py subprocesses, the soak and the real pipeline

SERVER = REPO / "scripts" / "rtsp_server.py"


# ---------------------------------------------------------------- helpers


def _config(tmp_path: Path) -> AppConfig:
    return parse_config(app_config_text(tmp_path)).resolve_paths(tmp_path)


def _build(tmp_path: Path, models: Models | None = None, **options: Any) -> App:
    return build_app(_config(tmp_path), RunOptions(**options), ModelOverrides(device="cpu"), models=models)


class Running:
    """An app running in a thread; ``stop()`` sets the pipeline's stop event and joins."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.summary = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-app", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.summary = self.app.run()
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout: float = 15.0) -> float:
        started = time.monotonic()
        self.app.pipeline.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the app did not stop"
        if self.error is not None:
            raise self.error
        return time.monotonic() - started


@contextmanager
def _running(app: App) -> Iterator[Running]:
    run = Running(app)
    try:
        yield run
    finally:
        if run.thread.is_alive():
            app.pipeline.stop.set()
            run.thread.join(15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(port: int) -> tuple[subprocess.Popen, float]:
    """The endless test pattern (--loop) on ``port``; returns it and the wall time it was ready."""
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(SERVER), "--port", str(port), "--loop", "--size", "320x240", "--fps", "15"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, time.time()


def _kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGCONT)  # a frozen server must be able to die
        os.killpg(proc.pid, sig)
    proc.wait(timeout=10)


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


def _wait_for(predicate: Callable[[], object], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def _frames_in(app: App, stream: str = "stream0") -> int:
    return app.pipeline.counters.streams[stream].frames_in


def _extra_threads(before: set[threading.Thread], timeout: float = 5.0) -> list[str]:
    """Threads started since ``before`` still alive after up to ``timeout`` s (tqdm's monitor ignored:
    a process-wide singleton that tqdm itself owns)."""

    def extra() -> list[str]:
        return [t.name for t in threading.enumerate() if t not in before and t.name != "tqdm_monitor"]

    _wait_for(lambda: not extra(), timeout)
    return extra()


def _decoded_frames(path: Path) -> list[tuple[int, int]]:
    with av.open(str(path)) as container:
        return [(f.width, f.height) for f in container.decode(video=0)]


def _write_clip(path: Path, n: int, size: tuple[int, int] = (320, 240), fps: int = 25) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}
        for i in range(n):
            img = np.full((size[1], size[0], 3), 40, np.uint8)
            cv2.circle(img, (20 + 5 * i % (size[0] - 40), size[1] // 2), 15, (255, 255, 255), -1)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        out.mux(stream.encode(None))
    return path


# ---------------------------------------------------------------- 1. stream faults


@pytest.mark.serial
def test_rtsp_server_killed_and_restarted_5_times(
    rtsp_server_available: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(a) Each restart is back up (a new stream_up); after every session the backoff starts again at
    0.5 s, so recovery takes the first retries, not the 8 s cap; ≥5 reconnects; no threads left."""
    caplog.set_level(logging.INFO, logger="stream.sources.live")
    port = _free_port()
    events_path = tmp_path / "events.jsonl"
    before = set(threading.enumerate())
    server, _ = _start_server(port)
    recoveries: list[float] = []
    try:
        app = _build(tmp_path, sources=(f"rtsp://127.0.0.1:{port}/cam",), events=events_path)
        with _running(app) as run:
            assert _wait_for(lambda: _frames_in(app) >= 10, 60), "no frames from the RTSP server"
            for cycle in range(5):
                downs = len(_of(_events(events_path), "stream_down"))
                ups = len(_of(_events(events_path), "stream_up"))
                _kill(server)
                assert _wait_for(lambda n=downs: len(_of(_events(events_path), "stream_down")) > n, 10), (
                    f"cycle {cycle}: no stream_down after the kill"
                )
                server, ready_at = _start_server(port)
                assert _wait_for(lambda n=ups: len(_of(_events(events_path), "stream_up")) > n, 10), (
                    f"cycle {cycle}: no stream_up after the restart"
                )
                up = _of(_events(events_path), "stream_up")[-1]
                recoveries.append(unix_time(up) - ready_at)
                frames = _frames_in(app)
                assert _wait_for(lambda n=frames: _frames_in(app) >= n + 5, 10), f"cycle {cycle}: no frames after up"
            took = run.stop()
    finally:
        _kill(server)
    summary = run.summary
    events = _events(events_path)
    ups, downs = _of(events, "stream_up"), _of(events, "stream_down")
    left = _extra_threads(before)
    print(
        f"\nrecovery after restart (s): {[round(r, 2) for r in recoveries]}; reconnects {summary.reconnects}; "
        f"stream_up {len(ups)}, stream_down {len(downs)}; stop took {took:.2f} s; threads left {left}"
    )
    messages = [r.getMessage() for r in caplog.records if r.name == "stream.sources.live"]
    down_delays = [float(m.rsplit(" in ", 1)[1].split()[0]) for m in messages if "stream down" in m]
    assert len(down_delays) >= 5 and set(down_delays) == {0.5}, down_delays  # backoff reset by every up
    assert summary.reconnects >= 5
    assert len(ups) >= 6 and len(downs) >= 5
    assert [e["epoch"] for e in ups] == sorted({e["epoch"] for e in ups}), "epochs must rise by one per session"
    assert not left, f"threads left behind: {left}"


@pytest.mark.serial
def test_rtsp_server_frozen_then_resumed(rtsp_server_available: None, tmp_path: Path) -> None:
    """(b) SIGSTOP: a stream_down within 10 s (read timeout); SIGCONT: back up."""
    port = _free_port()
    events_path = tmp_path / "events.jsonl"
    server, _ = _start_server(port)
    try:
        app = _build(tmp_path, sources=(f"rtsp://127.0.0.1:{port}/cam",), events=events_path)
        with _running(app) as run:
            assert _wait_for(lambda: _frames_in(app) >= 10, 60), "no frames from the RTSP server"
            os.killpg(server.pid, signal.SIGSTOP)
            frozen_at = time.time()
            assert _wait_for(lambda: _of(_events(events_path), "stream_down"), 12), "no stream_down while frozen"
            down = _of(_events(events_path), "stream_down")[0]
            os.killpg(server.pid, signal.SIGCONT)
            resumed_at = time.time()
            assert _wait_for(lambda: len(_of(_events(events_path), "stream_up")) >= 2, 20), "no recovery"
            up = _of(_events(events_path), "stream_up")[-1]
            frames = _frames_in(app)
            assert _wait_for(lambda: _frames_in(app) > frames, 10), "no frames after recovery"
            run.stop()
    finally:
        _kill(server)
    detected, recovered = unix_time(down) - frozen_at, unix_time(up) - resumed_at
    print(f"\nfrozen → stream_down in {detected:.1f} s ({down['reason']}); resumed → stream_up in {recovered:.1f} s")
    assert detected <= 10.0
    assert run.summary.reconnects >= 1


@pytest.mark.serial
def test_refused_url_keeps_retrying_while_a_file_completes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """(c) A refused live URL beside a file: the file gives every frame; the live one retries with
    growing backoff (logged) until the run is stopped — a live stream never ends on its own."""
    clip = _write_clip(tmp_path / "clip.mp4", 40)
    dead = f"rtsp://127.0.0.1:{_free_port()}/cam"  # nothing listens: connection refused
    caplog.set_level(logging.INFO, logger="stream.sources.live")
    events_path = tmp_path / "events.jsonl"
    app = _build(tmp_path, sources=(str(clip), dead), events=events_path, output=tmp_path / "out")
    with _running(app) as run:
        assert _wait_for(lambda: app.pipeline.counters.streams["clip"].ended, 120), "the file did not finish"

        def retries() -> list[str]:
            return [r.getMessage() for r in caplog.records if "still down" in r.getMessage()]

        assert _wait_for(lambda: len(retries()) >= 3, 20), "the refused stream is not retrying"
        took = run.stop()
    counters = app.pipeline.counters.streams
    messages = [r.getMessage() for r in caplog.records if r.name == "stream.sources.live"]
    delays = [float(m.rsplit(" in ", 1)[1].split()[0]) for m in messages if "stream1" in m and " in " in m]
    print(f"\nfile: {counters['clip'].frames_out}/40 frames; refused stream backoff delays {delays}; stop {took:.2f} s")
    assert counters["clip"].frames_in == counters["clip"].frames_out == 40
    assert len(_decoded_frames(tmp_path / "out" / "clip.mp4")) == 40
    assert counters["stream1"].frames_in == 0
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0], delays
    assert any("Connection refused" in m or "cannot connect" in m for m in messages)
    assert [e["stream"] for e in _of(_events(events_path), "stream_down")] == ["stream1"]
    assert took < 5.0


def test_resolution_change_mid_stream(tmp_path: Path) -> None:
    """(d) An image folder whose second half is another size: every frame processed, one video of
    the first size (later frames letterboxed), no detector batch mixes sizes."""
    folder = tmp_path / "frames"
    folder.mkdir()
    sizes = [(320, 240)] * 12 + [(480, 200)] * 12
    for i, (w, h) in enumerate(sizes):
        img = np.full((h, w, 3), 60, np.uint8)
        cv2.rectangle(img, (10 + 3 * i, 20), (60 + 3 * i, 80), (255, 255, 255), -1)
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    models = build_models(_config(tmp_path), ModelOverrides(device="cpu"))
    spy = CountingDetector(models.detector)
    models = Models(spy, models.embedder, models.batch_size)
    app = _build(tmp_path, models, sources=(str(folder),), output=tmp_path / "out.mp4", events=tmp_path / "e.jsonl")
    summary = app.run()
    shapes_per_call = spy.shapes_per_call
    frames = _decoded_frames(tmp_path / "out.mp4")
    print(f"\n{summary.frames_processed}/24 frames; detector calls {len(shapes_per_call)}; video sizes {set(frames)}")
    assert summary.frames_in == summary.frames_processed == 24
    assert len(frames) == 24 and set(frames) == {(320, 240)}
    assert all(len(shapes) == 1 for shapes in shapes_per_call), shapes_per_call
    assert {next(iter(s)) for s in shapes_per_call} == {(240, 320, 3), (200, 480, 3)}


# ---------------------------------------------------------------- 3. nothing lost


def test_file_mode_loses_no_frame_with_slow_stages(demo: tuple[Path, Path], tmp_path: Path) -> None:
    clip, gallery = demo
    video = tmp_path / "out.mp4"
    models = build_models(_config(tmp_path), ModelOverrides(device="cpu"))
    detector, embedder = CountingDetector(models.detector, delay_s=0.1), CountingEmbedder(models.embedder, delay_s=0.2)
    app = _build(
        tmp_path, Models(detector, embedder, models.batch_size), sources=(str(clip),), gallery=gallery, output=video,
        max_frames=40,
    )  # fmt: skip
    summary = app.run()
    calls = {"detect": len(detector.shapes_per_call), "embed": embedder.calls}
    print(f"\n{summary.frames_in} in, {summary.frames_processed} out, {summary.frames_dropped} dropped; calls {calls}")
    assert summary.frames_in == summary.frames_processed == 40
    assert summary.frames_dropped == 0
    assert len(_decoded_frames(video)) == 40
    assert calls["detect"] > 0 and calls["embed"] > 0


def test_events_survive_kill_9(demo: tuple[Path, Path], tmp_path: Path) -> None:
    """kill -9 mid-run: events.db opens, passes integrity_check, keeps every row committed before
    the kill, and its events are a prefix of events.jsonl (the JSONL is flushed before each commit)."""
    clip, gallery = demo
    cfg = tmp_path / "c.yaml"
    cfg.write_text(app_config_text(tmp_path))
    db, jsonl = tmp_path / "rec" / "events.db", tmp_path / "rec" / "events.jsonl"
    url = f"lavfi:movie={clip}:loop=0,setpts=N/(25*TB),realtime"  # endless
    cmd = [sys.executable, "run.py", "--config", str(cfg), "--source", url, "--gallery", str(gallery)]
    app = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def rows() -> int:
        if not db.exists():
            return 0
        with contextlib.closing(sqlite3.connect(db, timeout=5)) as con:
            try:
                return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    try:
        assert _wait_for(lambda: rows() >= 4, 120, step=0.5), "no events committed"
        before = rows()
        app.send_signal(signal.SIGKILL)
        app.wait(timeout=10)
    finally:
        if app.poll() is None:
            app.kill()
    with contextlib.closing(sqlite3.connect(db)) as con:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    with open_store(db, create=False) as store:
        stored = [(row.time, row.kind) for row in store.events(EventQuery(newest_first=False, limit=100_000))]
    lines = _events(jsonl)
    print(f"\nrows before kill {before}, after {len(stored)}; jsonl lines {len(lines)}; integrity {integrity}")
    assert integrity == "ok"
    assert len(stored) >= before
    journal = [(unix_time(e), e["kind"]) for e in lines[: len(stored)]]
    assert journal == stored  # both keep milliseconds


# ---------------------------------------------------------------- 4. clean shutdown


@pytest.mark.serial
def test_sigterm_finishes_outputs_within_5_s(demo: tuple[Path, Path], tmp_path: Path) -> None:
    clip, gallery = demo
    cfg = tmp_path / "c.yaml"
    cfg.write_text(app_config_text(tmp_path))
    video, events, summary = tmp_path / "out.mp4", tmp_path / "events.jsonl", tmp_path / "summary.json"
    cmd = [sys.executable, "run.py", "--config", str(cfg), "--source", str(clip), "--gallery", str(gallery)]
    cmd += ["--output", str(video), "--events", str(events), "--summary", str(summary)]
    app = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(lambda: video.exists() and video.stat().st_size > 0, 90, step=0.2), "no output started"
        time.sleep(2.0)
        app.send_signal(signal.SIGTERM)
        started = time.monotonic()
        out, _ = app.communicate(timeout=15)
        took = time.monotonic() - started
    finally:
        if app.poll() is None:
            app.kill()
    print(f"\nSIGTERM → exit {app.returncode} in {took:.2f} s")
    assert app.returncode == 143, out
    assert took < 5.0, f"took {took:.1f} s"
    assert "Traceback" not in out and "threads still running" not in out, out
    assert "terminated" in out
    assert len(_decoded_frames(video)) > 0
    for line in events.read_text().splitlines():
        json.loads(line)
    assert json.loads(summary.read_text())["frames_processed"] > 0


# ---------------------------------------------------------------- soak


def test_soak_2_minutes_memory_and_threads_flat(tmp_path: Path) -> None:
    """CI soak: 1 minute of warm-up, then 2 minutes of the looped demo clip: heap growth < 10 MB
    (RSS reported), thread count flat (bench/soak.py says why the heap is judged)."""
    report_path = tmp_path / "soak.json"
    cmd = [sys.executable, "-m", "bench.soak", "--minutes", "2", "--interval", "1", "--json", str(report_path)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    report = json.loads(report_path.read_text())
    print(
        f"\nsoak: {report['judged']} growth {report['growth_mb']} MB (bound {report['growth_bound_mb']} MB); "
        f"heap {report['heap_growth_mb']} MB, RSS {report['rss_growth_mb']} MB to {report['rss_end_mb']} MB; "
        f"threads {report['threads_min']}..{report['threads_max']}; {report['frames_out']} frames out"
    )
    assert report["error"] is None, report["error"]
    assert report["growth_mb"] <= report["growth_bound_mb"] == 10.0
    assert report["threads_min"] == report["threads_max"]
    assert report["frames_out"] > 0
    assert done.returncode == 0, done.stderr[-2000:]
