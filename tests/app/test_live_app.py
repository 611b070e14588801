"""The stream app on live sources: RTSP reconnects, bounded latency under drops, Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import pytest

from stream.app import RunOptions, build_app
from stream.config import parse_config
from stream.faces.models import ModelOverrides
from tests.conftest import REPO, SYSTEM_PYTHON, app_config_text, shared_file

# RTSP server, run.py subprocesses and the real pipeline on live video; reconnect, latency and shutdown bounds
pytestmark = [pytest.mark.slow, pytest.mark.serial]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def rtsp_server(port: int, clip: Path) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(REPO / "scripts" / "rtsp_server.py"), "--port", str(port), "--file", str(clip)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_rtsp_app_reconnects_after_the_server_restarts(
    rtsp_server_available: None, demo: tuple[Path, Path], tmp_path: Path
) -> None:
    clip, gallery = demo
    port = _free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(app_config_text(tmp_path))
    events = tmp_path / "events.jsonl"
    summary = tmp_path / "summary.json"
    url = f"rtsp://viewer:hunter2@127.0.0.1:{port}/cam"
    cmd = [sys.executable, "run.py", "--config", str(cfg), "--source", url, "--gallery", str(gallery)]
    cmd += ["--events", str(events), "--summary", str(summary), "--max-frames", "220"]
    with rtsp_server(port, clip) as server:
        app = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert _wait_for(lambda: any(e["kind"] == "identity_assigned" for e in _events(events)), 60)
            _kill(server)
            assert _wait_for(lambda: any(e["kind"] == "stream_down" for e in _events(events)), 15)
            with rtsp_server(port, clip):
                out, _ = app.communicate(timeout=90)
        finally:
            if app.poll() is None:
                app.kill()
    assert app.returncode == 0, out
    got = _events(events)
    kinds = [(e["kind"], e.get("epoch")) for e in got if e["kind"] in ("stream_down", "stream_up")]
    assert ("stream_up", 0) in kinds and ("stream_down", 0) in kinds
    assert any(kind == "stream_up" and epoch >= 1 for kind, epoch in kinds)
    assert any(e["kind"] == "identity_assigned" and e.get("epoch", 0) >= 1 for e in got), "no events after reconnect"
    report = json.loads(summary.read_text())
    assert report["reconnects"] >= 1
    everything = out + events.read_text() + summary.read_text()
    assert "hunter2" not in everything


def test_live_latency_stays_flat_while_frames_are_dropped(demo: tuple[Path, Path], tmp_path: Path) -> None:
    clip, gallery = demo
    url = f"lavfi:movie={clip}:loop=0,setpts=N/(30*TB),realtime"
    config = parse_config(app_config_text(tmp_path)).resolve_paths(tmp_path)
    options = RunOptions(sources=(url,), gallery=gallery, max_frames=30 * 60)  # 60 s of a 30 fps camera
    app = build_app(config, options, ModelOverrides(device="cpu"))
    summary = app.run()
    latencies = np.array(app.writers.latencies("stream0"))
    assert summary.frames_dropped > 0, "processing kept up: the test needs a source faster than the pipeline"
    assert summary.frames_in == summary.frames_processed + summary.frames_dropped
    third = len(latencies) // 3
    early, late = np.percentile(latencies[:third], 95), np.percentile(latencies[-third:], 95)
    print(
        f"\nlatency p95 first third {early * 1000:.0f} ms, last third {late * 1000:.0f} ms; "
        f"{summary.frames_processed} processed, {summary.frames_dropped} dropped"
    )
    assert late <= 2 * early + 0.1, (early, late)


def test_ctrl_c_finishes_outputs_within_5_s(shared_data: Path, tmp_path: Path) -> None:
    clip = shared_file(shared_data, "facenet-pytorch/examples/video.mp4")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(app_config_text(tmp_path))
    video, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    cmd = [sys.executable, "run.py", "--config", str(cfg), "--source", str(clip), "--output", str(video)]
    cmd += ["--events", str(events)]
    app = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(lambda: video.exists() and video.stat().st_size > 0, 90), "no output started"
        time.sleep(2.0)
        app.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, _ = app.communicate(timeout=15)
        took = time.monotonic() - started
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == 130, out
    assert took < 5.0, f"took {took:.1f} s"
    assert "Traceback" not in out
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 0
    for line in events.read_text().splitlines():
        json.loads(line)
