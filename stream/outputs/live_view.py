"""The live view: what readers (the web app) may see of a running pipeline, read-only.

The output thread publishes into a ``LiveView``; any other thread reads from it. Per stream it holds
the newest annotated frame (a read-only image and a sequence number), the stream's status (up/down,
frames/s over the last seconds, drops, reconnects, last frame time), and for the whole run a bounded
ring of recent events and one bounded queue per event subscriber.

Publishing never waits on a reader: every call takes one short lock (no I/O, no encoding, no
allocation beyond a small dict per event), and a frame is only handed over while someone watches
that stream (``watch``, or a single-frame request within ``demand_s``) and at most ``max_fps`` times
a second per stream; otherwise ``wants_frame`` is False and the output thread does not even build
the annotated image for it. JPEG encoding happens in the reader's thread (``jpeg``), once per frame
whatever the number of viewers. A subscriber that does not keep up loses its oldest events; each
loss is counted (``Subscription.lost``, ``LiveView.events_lost``).

Owner: the output thread writes (``wants_frame``, ``publish_frame``, ``frame_done``, ``publish_events``,
``stream_ended``); readers call the rest. On a cluster's head the streams run on workers, each with
a view of its own, and one poller thread writes what they show into the head's view instead
(``publish_jpeg``, ``publish_status``, ``publish_event_items``: ``stream.cluster.live``). One lock
guards the state; a second, per stream, only makes concurrent ``jpeg`` calls encode a frame once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from stream.types import Event, EventKind

__all__ = ["LiveFrame", "LiveView", "StreamCounts", "StreamStatus", "Subscription"]

StreamState = Literal["starting", "up", "down", "ended"]


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """The newest annotated frame of a stream: ``seq`` counts published frames from 1."""

    stream: str
    seq: int
    image: np.ndarray  # HxWx3 uint8 BGR, read-only
    captured_at: float | None  # Unix s (the frame's wall-clock time), if known


@dataclass(frozen=True, slots=True)
class StreamCounts:
    """Counters the output thread reads from the pipeline and reports with each frame."""

    frames_in: int = 0
    dropped: int = 0
    reconnects: int = 0
    decode_errors: int = 0


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """One stream as a reader sees it."""

    name: str
    live: bool
    state: StreamState
    fps: float  # frames processed per second over the last ``fps_window_s``
    frames: int  # frames processed
    frames_in: int
    dropped: int
    reconnects: int
    decode_errors: int
    last_frame_at: float | None  # Unix s of the last processed frame's capture
    last_frame_age_s: float | None  # seconds since the output thread finished it
    reason: str | None  # why it is down
    viewers: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "live": self.live,
            "state": self.state,
            "fps": self.fps,
            "frames": self.frames,
            "frames_in": self.frames_in,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "decode_errors": self.decode_errors,
            "last_frame_at": self.last_frame_at,
            "last_frame_age_s": self.last_frame_age_s,
            "reason": self.reason,
            "viewers": self.viewers,
        }


class Subscription:
    """A reader's queue of events (dicts with a ``seq``); bounded: when full, the oldest is lost and counted."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.lost = 0  # written under the view's lock

    def _offer(self, item: dict[str, Any]) -> None:
        if len(self._items) == self._items.maxlen:
            self.lost += 1
        self._items.append(item)


@dataclass
class _Stream:
    live: bool
    state: StreamState = "starting"
    reason: str | None = None
    frame: LiveFrame | None = None
    seq: int = 0
    next_due: float = -1e18  # monotonic: when the next frame may be published
    watchers: int = 0
    demand_until: float = -1e18  # monotonic
    frames: int = 0
    counts: StreamCounts = field(default_factory=StreamCounts)
    done_times: deque[float] = field(default_factory=lambda: deque(maxlen=600))  # monotonic, last frames
    last_frame_at: float | None = None
    jpeg: tuple[int, bytes] | None = None  # (seq, bytes) of the last encoded frame
    encode_lock: threading.Lock = field(default_factory=threading.Lock)
    remote: StreamStatus | None = None  # published by ``publish_status`` (a stream run elsewhere)


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)  # the image of a frame published as JPEG
_NO_IMAGE.flags.writeable = False


class LiveView:
    """See the module notes. ``streams``: name → live (True) or file (False); more with ``register``."""

    def __init__(
        self,
        streams: Mapping[str, bool] | None = None,
        *,
        max_fps: float = 10.0,
        recent_events: int = 200,
        subscriber_capacity: int = 256,
        demand_s: float = 5.0,
        fps_window_s: float = 5.0,
        jpeg_quality: int = 80,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_fps <= 0:
            raise ValueError(f"LiveView.max_fps: must be > 0, got {max_fps}")
        self._lock = threading.Lock()
        self._streams = {name: _Stream(live) for name, live in (streams or {}).items()}
        self._min_interval = 1.0 / max_fps
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent_events)
        self._subscribers: list[Subscription] = []
        self._capacity = subscriber_capacity
        self._event_seq = 0
        self._demand_s = demand_s
        self._fps_window_s = fps_window_s
        self._quality = jpeg_quality
        self._clock = clock
        self.events_lost = 0
        self.frames_published = 0

    def register(self, stream: str, live: bool) -> None:
        """Add a stream (the app does, for each of its streams, before the pipeline starts)."""
        with self._lock:
            self._streams.setdefault(stream, _Stream(live))

    # ------------------------------------------------------------ publishing (output thread)

    def wants_frame(self, stream: str) -> bool:
        """Whether a frame of ``stream`` published now would be seen (watched, and not too soon)."""
        s = self._streams.get(stream)
        if s is None:
            return False
        now = self._clock()
        watched = s.watchers > 0 or now < s.demand_until
        return watched and now >= s.next_due - 1e-6

    def publish_frame(self, stream: str, image: np.ndarray, captured_at: float | None) -> None:
        """Make ``image`` (an annotated frame nobody will change again) the newest of ``stream``."""
        s = self._streams.get(stream)
        if s is None:
            return
        image.flags.writeable = False
        with self._lock:
            s.seq += 1
            s.frame = LiveFrame(stream, s.seq, image, captured_at)
            self._scheduled(s)

    def publish_jpeg(self, stream: str, data: bytes, captured_at: float | None) -> None:
        """Make ``data`` (a frame encoded elsewhere: a cluster worker's) the newest of ``stream``; its
        ``LiveFrame.image`` is empty (readers take ``jpeg``, which returns ``data`` as it is)."""
        s = self._streams.get(stream)
        if s is None:
            return
        with self._lock:
            s.seq += 1
            s.frame = LiveFrame(stream, s.seq, _NO_IMAGE, captured_at)
            s.jpeg = (s.seq, data)
            self._scheduled(s)

    def _scheduled(self, s: _Stream) -> None:
        """After a frame of ``s`` was published (under the lock): when the next one is due."""
        now = self._clock()
        # A schedule, not a gap since the last: 25 frames/s in give 10 out, not 8.3 (every third frame);
        # after a pause it restarts from now (no burst).
        due = s.next_due + self._min_interval
        s.next_due = due if due >= now else now + self._min_interval
        self.frames_published += 1

    def frame_done(self, stream: str, counts: StreamCounts, captured_at: float | None) -> None:
        """One frame of ``stream`` went through the outputs; ``counts`` are the pipeline's counters."""
        s = self._streams.get(stream)
        if s is None:
            return
        with self._lock:
            s.frames += 1
            s.counts = counts
            s.done_times.append(self._clock())
            s.last_frame_at = captured_at if captured_at is not None else s.last_frame_at
            if s.state == "starting":
                s.state = "up"

    def publish_events(self, events: Sequence[tuple[Event, str | None]]) -> None:
        """Events (each with its snapshot's file name, or None) as they are written; stream_up/down
        events also set the stream's state."""
        if not events:
            return
        with self._lock:
            for event, snapshot in events:
                item = event.to_dict()
                item["snapshot"] = snapshot
                self._append_event(item)
                s = self._streams.get(event.stream)
                if s is not None and event.kind in (EventKind.STREAM_UP, EventKind.STREAM_DOWN):
                    up = event.kind is EventKind.STREAM_UP
                    s.state = "up" if up else "down"
                    reason = dict(event.extra).get("reason")
                    s.reason = None if up or reason is None else str(reason)

    def publish_event_items(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Events as another view's readers got them (``recent_events`` of a cluster worker's view),
        numbered again in this view; stream states come with ``publish_status``."""
        if not items:
            return
        with self._lock:
            for item in items:
                self._append_event(dict(item))

    def _append_event(self, item: dict[str, Any]) -> None:
        """Number ``item`` and hand it to the recent ring and every subscriber (under the lock)."""
        self._event_seq += 1
        item["seq"] = self._event_seq
        self._recent.append(item)
        for sub in self._subscribers:
            before = sub.lost
            sub._offer(item)
            self.events_lost += sub.lost - before

    def publish_status(self, status: StreamStatus) -> None:
        """The status of a stream that runs elsewhere (a cluster worker), as that worker's view said it:
        from now on ``status`` returns it (with this view's viewers) instead of counting here."""
        s = self._streams.get(status.name)
        if s is not None:
            with self._lock:
                s.remote = status

    def stream_ended(self, stream: str) -> None:
        s = self._streams.get(stream)
        if s is not None:
            with self._lock:
                s.state = "ended"

    # ------------------------------------------------------------ reading (any other thread)

    def streams(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._streams)

    def has_stream(self, stream: str) -> bool:
        return stream in self._streams

    @contextmanager
    def watch(self, stream: str) -> Iterator[None]:
        """While inside, frames of ``stream`` are published (a live viewer); KeyError for an unknown stream."""
        s = self._streams[stream]
        with self._lock:
            s.watchers += 1
        try:
            yield
        finally:
            with self._lock:
                s.watchers -= 1

    def request_frame(self, stream: str) -> None:
        """Ask for frames of ``stream`` for the next ``demand_s`` (a single-frame reader); KeyError if unknown."""
        s = self._streams[stream]
        with self._lock:
            s.demand_until = self._clock() + self._demand_s

    def latest(self, stream: str) -> LiveFrame | None:
        s = self._streams.get(stream)
        if s is None:
            return None
        with self._lock:
            return s.frame

    def jpeg(self, stream: str) -> tuple[int, bytes] | None:
        """(seq, JPEG bytes) of the newest frame of ``stream``, encoded once per frame (in the caller's
        thread), or None before the first frame."""
        s = self._streams.get(stream)
        if s is None:
            return None
        with s.encode_lock:
            with self._lock:
                frame, cached = s.frame, s.jpeg
            if frame is None:
                return None
            if cached is not None and cached[0] == frame.seq:
                return cached
            ok, buffer = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
            if not ok:
                return None
            encoded = (frame.seq, buffer.tobytes())
            with self._lock:
                s.jpeg = encoded
            return encoded

    def status(self, stream: str) -> StreamStatus | None:
        s = self._streams.get(stream)
        if s is None:
            return None
        now = self._clock()
        with self._lock:
            if s.remote is not None:
                return dataclasses.replace(s.remote, viewers=s.watchers)
            times = [t for t in s.done_times if now - t <= self._fps_window_s]
            last_done = s.done_times[-1] if s.done_times else None
            return StreamStatus(
                name=stream,
                live=s.live,
                state=s.state,
                fps=_rate(times),
                frames=s.frames,
                frames_in=s.counts.frames_in,
                dropped=s.counts.dropped,
                reconnects=s.counts.reconnects,
                decode_errors=s.counts.decode_errors,
                last_frame_at=s.last_frame_at,
                last_frame_age_s=None if last_done is None else round(now - last_done, 3),
                reason=s.reason,
                viewers=s.watchers,
            )

    def statuses(self) -> list[StreamStatus]:
        return [status for name in self.streams() if (status := self.status(name)) is not None]

    def recent_events(self, after_seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Recent events with ``seq`` > ``after_seq``, oldest first (at most the last ``limit``)."""
        with self._lock:
            items = [item for item in self._recent if item["seq"] > after_seq]
        return items if limit is None else items[-limit:] if limit > 0 else []

    def subscribe(self, after_seq: int | None = None, backlog: int = 0) -> Subscription:
        """A new subscriber. Its queue starts with the recent events after ``after_seq`` (a reconnecting
        reader's last seen), or without it with the last ``backlog`` recent events."""
        sub = Subscription(self._capacity)
        with self._lock:
            if after_seq is not None:
                start = [item for item in self._recent if item["seq"] > after_seq]
            else:
                start = list(self._recent)[-backlog:] if backlog > 0 else []
            for item in start:
                sub._offer(item)
            self._subscribers.append(sub)
        return sub

    def take(self, sub: Subscription) -> tuple[list[dict[str, Any]], int]:
        """Everything queued for ``sub`` (oldest first) and its loss count so far."""
        with self._lock:
            items = list(sub._items)
            sub._items.clear()
            return items, sub.lost

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def _rate(times: list[float]) -> float:
    """Events per second from their sorted monotonic times."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return round((len(times) - 1) / (times[-1] - times[0]), 2)
