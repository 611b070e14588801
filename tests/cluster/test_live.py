"""The head's view of streams on cluster workers: ``ViewPoller`` against fake worker handles (each a real
``LiveView`` behind ``latest``/``view_status`` as the worker actor answers them), no Ray, a fake clock;
and the CLI's ``--web`` with ``--cluster`` up to reaching Ray."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from stream.cli import EXIT_USAGE, main
from stream.cluster.live import ViewPoller, ViewReport, latest_frame, view_report
from stream.outputs.live_view import LiveView, StreamCounts
from stream.types import Event, EventKind, TrackKey
from stream.web.app import WebDeps, create_app

T0 = 1_764_576_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Method:
    """``handle.method.remote(*args)`` as Ray's: here the call runs at once and its result (or the
    exception it raised) is the "ref" that ``gather`` hands back."""

    def __init__(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> None:
        self.fn, self.calls = fn, calls

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)
        try:
            return self.fn(*args)
        except Exception as exc:
            return exc


class FakeWorker:
    """A worker actor's ``latest``/``view_status`` over its own view; ``dead``: every call fails."""

    def __init__(self, group: str, streams: dict[str, bool], clock: Clock) -> None:
        self.group, self.streams, self.clock = group, streams, clock
        self.dead = False
        self.restart()
        self.frame_calls: list[tuple[Any, ...]] = []
        self.status_calls: list[tuple[Any, ...]] = []
        self.latest = _Method(self._latest, self.frame_calls)
        self.view_status = _Method(self._status, self.status_calls)

    def restart(self) -> None:
        self.view = LiveView(self.streams, max_fps=100.0, clock=self.clock)
        self.instance = f"{self.group}-{id(self.view)}"

    def _latest(self, stream: str, after: int) -> Any:
        if self.dead:
            raise ConnectionError("actor died")
        return latest_frame(self.view, stream, after)

    def _status(self, after: int) -> ViewReport:
        if self.dead:
            raise ConnectionError("actor died")
        return view_report(self.view, self.group, self.instance, after)

    def output(self, stream: str, value: int) -> None:
        """One frame through the worker's output thread (published only while the head asks for it)."""
        image = np.full((24, 32, 3), value, np.uint8)
        if self.view.wants_frame(stream):
            self.view.publish_frame(stream, image, T0 + value)
        self.view.frame_done(stream, StreamCounts(frames_in=value, dropped=2, reconnects=1), T0 + value)


def gather(refs: list[Any], timeout_s: float) -> list[Any]:
    return list(refs)


def setup(fps: float = 10.0) -> tuple[Clock, LiveView, FakeWorker, FakeWorker, ViewPoller]:
    clock = Clock()
    w0 = FakeWorker("w0", {"cam_a": True, "cam_b": False}, clock)
    w1 = FakeWorker("w1", {"cam_c": False}, clock)
    head = LiveView(max_fps=fps, clock=clock)
    workers = [("w0", w0.streams, w0), ("w1", w1.streams, w1)]
    return clock, head, w0, w1, ViewPoller(head, workers, gather, fps=fps, clock=clock)


def decoded(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_frames_are_fetched_only_for_watched_streams_and_only_when_newer() -> None:
    clock, head, w0, w1, poller = setup()
    assert head.streams() == ("cam_a", "cam_b", "cam_c")
    poller.poll_frames()
    assert w0.frame_calls == [] and w1.frame_calls == []  # nobody watches: nothing asked
    with head.watch("cam_a"):
        poller.poll_frames()  # asks w0 for cam_a: none yet, but now the worker's view publishes it
        assert w0.frame_calls == [("cam_a", 0)] and head.jpeg("cam_a") is None
        w0.output("cam_a", 70)
        w0.output("cam_b", 70)  # not asked for: not published there
        clock.now += 0.1
        poller.poll_frames()
        seq, jpeg = head.jpeg("cam_a") or (0, b"")
        assert seq == 1 and abs(int(decoded(jpeg).mean()) - 70) <= 2
        assert head.latest("cam_a") is not None and head.latest("cam_a").captured_at == T0 + 70  # type: ignore[union-attr]
        clock.now += 0.1
        poller.poll_frames()  # nothing newer on the worker: the head keeps its frame
        assert w0.frame_calls[-1] == ("cam_a", 1) and head.jpeg("cam_a") == (1, jpeg)
        w0.output("cam_a", 140)
        clock.now += 0.1
        poller.poll_frames()
        assert (head.jpeg("cam_a") or (0, b""))[0] == 2
    assert w0.view.latest("cam_b") is None and w1.frame_calls == [] and poller.frames_fetched == 2


def test_status_and_events_come_from_the_workers_once_each() -> None:
    clock, head, w0, w1, poller = setup()
    sub = head.subscribe()
    up = Event.of_stream(T0, "cam_a", EventKind.STREAM_UP, 0, "connected")
    started = Event.of_track(1.0, EventKind.TRACK_STARTED, TrackKey("cam_c", 0, 1)).at(T0 + 1)
    w0.view.publish_events([(up, None)])
    w1.view.publish_events([(started, "cam_c_e0_t1.jpg")])
    for value in (1, 2, 3):
        w0.output("cam_a", value)
        clock.now += 0.04
    poller.poll_status()
    a = head.status("cam_a")
    assert a is not None and (a.state, a.frames, a.frames_in, a.dropped, a.reconnects, a.live) == (
        "up",
        3,
        3,
        2,
        1,
        True,
    )
    assert a.fps == 25.0
    c = head.status("cam_c")
    assert c is not None and c.state == "starting" and not c.live
    items, lost = head.take(sub)
    assert [(i["kind"], i["stream"], i["seq"]) for i in items] == [
        ("stream_up", "cam_a", 1),
        ("track_started", "cam_c", 2),
    ]
    assert items[1]["snapshot"] == "cam_c_e0_t1.jpg" and lost == 0
    poller.poll_status()  # the same events are not published twice
    assert head.take(sub) == ([], 0)
    w0.view.stream_ended("cam_a")
    poller.poll_status()
    assert head.status("cam_a").state == "ended"  # type: ignore[union-attr]
    with head.watch("cam_a"):
        assert head.status("cam_a").viewers == 1  # type: ignore[union-attr]  # the head's viewers, not the worker's


def test_a_worker_that_does_not_answer_shows_its_streams_down_and_is_left_alone_for_a_while() -> None:
    clock, head, _, w1, poller = setup()
    w1.output("cam_c", 5)
    poller.poll_status()
    w1.dead = True
    clock.now += 1.0
    with head.watch("cam_a"), head.watch("cam_c"):
        poller.poll_once()
        c = head.status("cam_c")
        assert c is not None and c.state == "down" and "worker w1 does not answer (ConnectionError)" in (c.reason or "")
        assert c.frames == 1  # what it had done before
        assert head.status("cam_a").state != "down"  # type: ignore[union-attr]  # w0 answers
        calls = len(w1.frame_calls) + len(w1.status_calls)
        clock.now += 1.0
        poller.poll_once()  # within the back-off: w1 is not asked
        assert len(w1.frame_calls) + len(w1.status_calls) == calls
        w1.dead = False
        w1.restart()  # Ray started its process again: a new view, its numbering from 1
        w1.view.publish_events([(Event.of_stream(T0 + 9, "cam_c", EventKind.STREAM_UP, 1, "restarted"), None)])
        w1.output("cam_c", 9)
        clock.now += 3.0
        poller.poll_once()
    c = head.status("cam_c")
    assert c is not None and c.state == "up" and c.frames == 1 and c.reason is None
    assert [i["reason"] for i in head.recent_events() if i["stream"] == "cam_c"] == ["restarted"]


def test_a_gather_that_times_out_or_fails_marks_every_asked_worker_down() -> None:
    clock, head, w0, w1, _ = setup()

    def timed_out(refs: list[Any], timeout_s: float) -> list[Any]:
        return [TimeoutError(f"no answer within {timeout_s:g} s")] * len(refs)

    def broken(refs: list[Any], timeout_s: float) -> list[Any]:
        raise RuntimeError("Ray is not connected")

    for fake in (timed_out, broken):
        chosen = [gather]
        workers = [("w0", w0.streams, w0), ("w1", w1.streams, w1)]
        poller = ViewPoller(head, workers, lambda refs, t, chosen=chosen: chosen[0](refs, t), fps=10, clock=clock)
        poller.poll_status()  # before a worker's first answer, nothing is down: it is still starting
        chosen[0] = fake
        clock.now += 5.0
        poller.poll_status()
        assert {s.name: s.state for s in head.statuses()} == {"cam_a": "down", "cam_b": "down", "cam_c": "down"}


def test_a_worker_still_starting_is_not_down_and_silence_backs_off_longer_each_time() -> None:
    clock, head, w0, _, _ = setup()
    w0.dead = True
    poller = ViewPoller(head, [("w0", w0.streams, w0)], gather, fps=10, backoff_s=3.0, clock=clock)
    asked = []
    for _ in range(400):  # 40 s in rounds of 0.1 s
        before = len(w0.status_calls)
        poller.poll_once()
        if len(w0.status_calls) > before:
            asked.append(round(clock.now - 100.0, 1))
        clock.now += 0.1
    assert head.status("cam_a").state == "starting"  # type: ignore[union-attr]
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert len(gaps) == 3 and all(0 <= gap - want < 1.5 for gap, want in zip(gaps, (3, 6, 12), strict=True)), asked


def test_the_unchanged_web_app_serves_the_workers_streams_from_the_heads_view() -> None:
    _, head, _, w1, poller = setup()
    w1.view.request_frame("cam_c")
    w1.output("cam_c", 90)
    head.request_frame("cam_c")  # what GET latest.jpg does
    poller.poll_once()
    client = TestClient(create_app(WebDeps(view=head)), base_url="http://127.0.0.1:8080")
    streams = {s["name"]: s for s in client.get("/api/streams").json()}
    assert sorted(streams) == ["cam_a", "cam_b", "cam_c"]
    assert streams["cam_c"]["frames"] == 1 and streams["cam_c"]["state"] == "up"
    got = client.get("/streams/cam_c/latest.jpg")
    assert got.status_code == 200 and got.content[:2] == b"\xff\xd8"
    assert abs(int(decoded(got.content).mean()) - 90) <= 2


def test_the_poller_thread_stops_within_its_bound() -> None:
    _, head, w0, w1, _ = setup()
    poller = ViewPoller(head, [("w0", w0.streams, w0), ("w1", w1.streams, w1)], gather, fps=50)
    poller.start()
    poller.stop(final=True)
    assert poller._thread is not None and not poller._thread.is_alive()
    assert w0.status_calls and w1.status_calls


def _cluster_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "streams:\n  - name: a\n    url: rtsp://cam/x\n"
        f"outputs:\n  dir: {tmp_path / 'rec'}\n  events_db: postgresql://app:Secret1@127.0.0.1:9/events\n"
    )
    return cfg


def test_serve_cluster_keeps_the_exposure_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(_cluster_config(tmp_path))
    assert main(["serve", "--config", cfg, "--cluster", "127.0.0.1:1", "--web", "0.0.0.0:8080"]) == EXIT_USAGE
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "password" in errors[0], errors


def test_run_web_cluster_serves_the_web_app_on_the_head_before_reaching_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run --web HOST:PORT --cluster ADDR``: the web app listens (no "not serving it" warning any more),
    then an unreachable head is the usual one error line, and the port is free again."""
    from scripts.pg_server import free_port

    web, ray_port = free_port(), free_port()
    args = ["run", "--config", str(_cluster_config(tmp_path)), "--web", f"127.0.0.1:{web}"]
    assert main([*args, "--cluster", f"127.0.0.1:{ray_port}"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"web app: http://127.0.0.1:{web}/" in err and "not serving it" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: cluster 127.0.0.1:{ray_port}: cannot reach the Ray head")
    with socket.socket() as again:
        again.bind(("127.0.0.1", web))  # the server was stopped and its socket closed
