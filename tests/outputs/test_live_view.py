"""LiveView: the newest frame wins, frames only while watched and at most max_fps, a slow subscriber
loses its oldest events (counted) while the publisher never waits; the output stage publishes into it."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from stream.outputs.live_view import LiveView, StreamCounts
from stream.pipeline.messages import Annotated, TrackLabel
from stream.pipeline.writers import OutputPaths, OutputWriters
from stream.types import Event, EventKind, Frame, TrackKey
from trackers import TrackSnapshot, TrackState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _image(value: int) -> np.ndarray:
    return np.full((48, 64, 3), value, np.uint8)


def _event(stream: str = "cam", track_id: int = 1, kind: EventKind = EventKind.TRACK_STARTED) -> Event:
    return Event.of_track(0.5, kind, TrackKey(stream, 0, track_id)).at(1_700_000_000.0)


def test_frames_are_published_only_while_watched_and_at_most_max_fps() -> None:
    clock = Clock()
    view = LiveView({"cam": True}, max_fps=10.0, clock=clock)
    assert not view.wants_frame("cam")  # nobody watches: the output thread does no work for the view
    with view.watch("cam"):
        assert view.wants_frame("cam")
        view.publish_frame("cam", _image(1), 1.0)
        clock.now += 0.05
        assert not view.wants_frame("cam")  # 20 frames/s offered, 10 taken
        clock.now += 0.05
        assert view.wants_frame("cam")
    assert not view.wants_frame("cam")
    assert not view.wants_frame("nope")


def test_a_single_frame_request_opens_the_tap_for_a_while() -> None:
    clock = Clock()
    view = LiveView({"cam": False}, demand_s=5.0, clock=clock)
    view.request_frame("cam")
    assert view.wants_frame("cam")
    clock.now += 5.1
    assert not view.wants_frame("cam")
    with pytest.raises(KeyError):
        view.request_frame("../etc")


def test_latest_frame_wins_and_is_encoded_once_per_frame() -> None:
    view = LiveView({"cam": True})
    assert view.latest("cam") is None and view.jpeg("cam") is None
    view.publish_frame("cam", _image(10), 1.0)
    view.publish_frame("cam", _image(200), 2.0)
    frame = view.latest("cam")
    assert frame is not None and frame.seq == 2 and frame.captured_at == 2.0
    assert not frame.image.flags.writeable
    first = view.jpeg("cam")
    assert first is not None and first[0] == 2
    assert view.jpeg("cam") is first  # cached: three viewers cost one encode
    decoded = cv2.imdecode(np.frombuffer(first[1], np.uint8), cv2.IMREAD_COLOR)
    assert abs(int(decoded.mean()) - 200) <= 2
    view.publish_frame("cam", _image(30), 3.0)
    newer = view.jpeg("cam")
    assert newer is not None and newer[0] == 3


def test_status_counts_fps_and_state() -> None:
    clock = Clock()
    view = LiveView({"cam": True}, fps_window_s=5.0, clock=clock)
    status = view.status("cam")
    assert status is not None and status.state == "starting" and status.fps == 0.0
    for i in range(26):
        view.frame_done("cam", StreamCounts(frames_in=i + 3, dropped=2, reconnects=1), 1_700_000_000.0 + i)
        clock.now += 0.04
    status = view.status("cam")
    assert status is not None
    assert status.state == "up" and status.frames == 26 and status.frames_in == 28
    assert status.dropped == 2 and status.reconnects == 1
    assert status.fps == pytest.approx(25.0, rel=0.01)
    assert status.last_frame_at == 1_700_000_025.0
    down = Event.of_stream(1_700_000_030.0, "cam", EventKind.STREAM_DOWN, 0, "read timeout")
    view.publish_events([(down, None)])
    status = view.status("cam")
    assert status is not None and status.state == "down" and status.reason == "read timeout"
    clock.now += 10
    status = view.status("cam")
    assert status is not None and status.fps == 0.0  # nothing in the last 5 s
    view.publish_events([(Event.of_stream(1_700_000_040.0, "cam", EventKind.STREAM_UP, 1, "reconnected"), None)])
    status = view.status("cam")
    assert status is not None and status.state == "up" and status.reason is None
    view.stream_ended("cam")
    assert view.status("cam").state == "ended"  # type: ignore[union-attr]


def test_a_slow_subscriber_loses_the_oldest_events_and_the_loss_is_counted() -> None:
    view = LiveView({"cam": True}, subscriber_capacity=4, recent_events=10)
    slow, fast = view.subscribe(), view.subscribe()
    for i in range(1, 11):
        view.publish_events([(_event(track_id=i), f"cam_e0_t{i}.jpg" if i % 2 else None)])
        if i % 2 == 0:
            view.take(fast)  # keeps up
    items, lost = view.take(slow)
    assert [item["track_id"] for item in items] == [7, 8, 9, 10]
    assert lost == 6 and view.events_lost == 6
    assert items[0]["snapshot"] == "cam_e0_t7.jpg" and items[1]["snapshot"] is None
    assert [item["seq"] for item in items] == [7, 8, 9, 10]
    assert view.take(fast)[1] == 0
    view.unsubscribe(slow)
    view.unsubscribe(fast)
    assert view.subscribers == 0


def test_a_new_subscriber_starts_with_the_backlog_or_after_its_last_seen_event() -> None:
    view = LiveView({"cam": True}, recent_events=5)
    for i in range(1, 9):
        view.publish_events([(_event(track_id=i), None)])
    assert [e["seq"] for e in view.take(view.subscribe(backlog=3))[0]] == [6, 7, 8]
    assert [e["seq"] for e in view.take(view.subscribe(after_seq=6))[0]] == [7, 8]
    assert view.take(view.subscribe())[0] == []
    assert [e["seq"] for e in view.recent_events(after_seq=5, limit=2)] == [7, 8]


def test_the_publisher_never_waits_for_readers() -> None:
    """A reader that never takes its events, and one that holds the encode lock, slow nothing down."""
    view = LiveView({"cam": True}, subscriber_capacity=8)
    view.subscribe()  # never read
    view.publish_frame("cam", np.zeros((720, 1280, 3), np.uint8), 0.0)
    stop = threading.Event()

    def busy_reader() -> None:
        while not stop.is_set():
            view.jpeg("cam")
            view.statuses()

    reader = threading.Thread(target=busy_reader)
    reader.start()
    try:
        started = time.perf_counter()
        for i in range(2000):
            view.publish_events([(_event(track_id=i), None)])
            view.frame_done("cam", StreamCounts(i), float(i))
            view.publish_frame("cam", _image(i % 255), float(i))
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        reader.join()
    assert view.events_lost == 2000 - 8
    assert elapsed < 5.0  # generous on a shared machine; typically a few ms per thousand calls


# ---------------------------------------------------------------- the output stage publishes


def _annotated(index: int, events: tuple[Event, ...] = ()) -> Annotated:
    frame = Frame("cam", index, 0, index / 25, time.monotonic(), _image(90), wall_time=1_700_000_000.0 + index / 25)
    snap = TrackSnapshot(1, TrackState.CONFIRMED, np.array([10, 10, 30, 40], np.float32), 0.99, 0, 5, 5, 0.0)
    return Annotated(frame, (TrackLabel(snap, "alice", 0.7, 0.5),), events)


def _writers(view: LiveView) -> OutputWriters:
    paths = OutputPaths(videos={"cam": None}, mot={"cam": None}, jsonl=None, snapshots=None, summary=None)
    return OutputWriters(paths, {"cam": 25.0}, view=view)


def test_output_writers_publish_frames_only_while_watched_status_and_events() -> None:
    clock = Clock()
    view = LiveView({"cam": True}, max_fps=10.0, clock=clock)
    writers = _writers(view)
    try:
        writers.frame(_annotated(0, (_event(), _event(kind=EventKind.IDENTITY_ASSIGNED))))
        assert view.latest("cam") is None  # nobody watched: no annotated image was made for the view
        with view.watch("cam"):
            for i in range(1, 5):
                writers.frame(_annotated(i))
                clock.now += 0.05
        frame = view.latest("cam")
        assert frame is not None and frame.seq == 2  # 4 frames at 20/s, 10/s published
        assert frame.image.shape == (48, 64, 3) and not np.array_equal(frame.image, _image(90))  # the overlay
        status = view.status("cam")
        assert status is not None and status.frames == 5 and status.state == "up"
        events, _ = view.take(view.subscribe(backlog=10))
        assert [e["kind"] for e in events] == ["track_started", "identity_assigned"]
        writers.end_stream("cam")
        assert view.status("cam").state == "ended"  # type: ignore[union-attr]
    finally:
        writers.close()
