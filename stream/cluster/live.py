"""The head's web app showing streams that run on cluster workers.

Each worker's pipeline publishes into a ``LiveView`` of its own (as ``run --web`` does in one
process); the worker actor answers ``latest`` (the newest JPEG of a stream, when newer than the one the
head has) and ``view_status`` (each stream's status and the events since a cursor) from its other
threads. On the head one ``ViewPoller`` thread asks every worker, with a bound on every wait, and
publishes what comes back into the head's own ``LiveView``, which the unchanged web app serves.

- Frames: every ``1 / web.live_fps`` s, only for the streams somebody watches on the head
  (``LiveView.wants_frame``); asking makes the worker's view publish frames of that stream for
  ``demand_s`` (its output thread annotates frames only while someone asks).
- Status and events: every ``status_s``. A worker whose process was started again (another
  ``instance``) is read from its first event again.
- A worker that does not answer within ``timeout_s`` (dead, restarting, busy) shows its streams as
  down (before its first answer: still starting), and is left alone for ``backoff_s``, doubled with
  each round in a row without an answer up to ``MAX_BACKOFF_S`` (calls to it never pile up; the
  others' frames wait for it, up to ``timeout_s``, only that often).

Nothing here imports Ray: the poller gets the actor handles (``handle.latest.remote(...)``) and a
``gather`` (``stream.cluster.ray_adapter.gather``: results, or the exception of each call). Owner: the
poller's thread owns the ``_Feed`` records; the views lock themselves.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.outputs.live_view import LiveView, StreamStatus

__all__ = ["RemoteFrame", "ViewPoller", "ViewReport", "latest_frame", "view_report", "worker_feeds"]

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0  # the longest the poller waits for the workers' answers, each round
STATUS_S = 1.0  # how often the status and events are read
BACKOFF_S = 3.0  # a worker that did not answer is asked again after this, twice as long each time more
MAX_BACKOFF_S = 30.0
EVENTS_PER_REPORT = 500  # at most this many events per status call (the oldest beyond are skipped)

Gather = Callable[[list[Any], float], list[Any]]


@dataclass(frozen=True, slots=True)
class RemoteFrame:
    """The newest annotated frame of a stream on a worker, JPEG-encoded there; ``seq`` is the worker
    view's (it starts again from 1 when the worker's process does)."""

    stream: str
    seq: int
    jpeg: bytes
    captured_at: float | None


@dataclass(frozen=True, slots=True)
class ViewReport:
    """A worker's view as the head reads it: each stream's status and the events after the cursor the
    head sent (``events``: dicts with the worker view's ``seq``). ``instance``: changes when the
    worker's process does (its view, and its numbering, start again)."""

    group: str
    instance: str
    statuses: tuple[StreamStatus, ...]
    events: tuple[dict[str, Any], ...]


def latest_frame(view: LiveView, stream: str, after_seq: int) -> RemoteFrame | None:
    """On the worker: the newest frame of ``stream`` unless it is ``after_seq`` (what the head has); asks
    the view for frames of it for the next ``demand_s`` either way. None: unknown stream, no frame yet,
    or nothing newer."""
    if not view.has_stream(stream):
        return None
    view.request_frame(stream)
    encoded = view.jpeg(stream)
    if encoded is None or encoded[0] == after_seq:
        return None
    frame = view.latest(stream)
    return RemoteFrame(stream, encoded[0], encoded[1], None if frame is None else frame.captured_at)


def view_report(view: LiveView, group: str, instance: str, after_event: int) -> ViewReport:
    """On the worker: every stream's status and the events after ``after_event`` (plain, picklable data)."""
    events = view.recent_events(after_event, limit=EVENTS_PER_REPORT)
    return ViewReport(group, instance, tuple(view.statuses()), tuple(events))


@dataclass
class _Feed:
    """What the head knows of one worker: the newest frame seq per stream, the last event read, and
    until when it is left alone after it did not answer."""

    name: str
    streams: tuple[str, ...]
    handle: Any
    frames: dict[str, int] = field(default_factory=dict)
    instance: str | None = None
    after_event: int = 0
    quiet_until: float = -1e18  # monotonic
    failures: int = 0  # rounds in a row without an answer
    answered: bool = False  # once: before, the actor is still being placed or started
    down: bool = False


class ViewPoller:
    """See the module notes. ``workers``: (group name, its streams (name → live), actor handle) each;
    their streams are registered in ``view``."""

    def __init__(
        self,
        view: LiveView,
        workers: Sequence[tuple[str, Mapping[str, bool], Any]],
        gather: Gather,
        *,
        fps: float,
        timeout_s: float = TIMEOUT_S,
        status_s: float = STATUS_S,
        backoff_s: float = BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"ViewPoller.fps: must be > 0, got {fps}")
        self.view = view
        self.feeds = [_Feed(name, tuple(streams), handle) for name, streams, handle in workers]
        self.gather = gather
        self.interval_s = 1.0 / fps
        self.timeout_s = timeout_s
        self.status_s = status_s
        self.backoff_s = backoff_s
        self.clock = clock
        self.frames_fetched = 0
        self._next_status = -1e18
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for _, streams, _ in workers:
            for stream, live in streams.items():
                view.register(stream, live)

    # ------------------------------------------------------------ one round (the poller's thread)

    def poll_once(self) -> None:
        """Fetch the watched streams' newest frames; every ``status_s`` the statuses and events too."""
        self.poll_frames()
        if self.clock() >= self._next_status:
            self._next_status = self.clock() + self.status_s
            self.poll_status()

    def poll_frames(self) -> None:
        asks = [
            (feed, stream) for feed in self._answering() for stream in feed.streams if self.view.wants_frame(stream)
        ]
        refs = [feed.handle.latest.remote(stream, feed.frames.get(stream, 0)) for feed, stream in asks]
        failed: dict[int, _Feed] = {}
        for (feed, stream), got in zip(asks, self._gather(refs), strict=True):
            if isinstance(got, BaseException):
                failed[id(feed)] = feed
                self._failed(feed, got)
            elif isinstance(got, RemoteFrame) and id(feed) not in failed:
                feed.frames[stream] = got.seq
                self.view.publish_jpeg(stream, got.jpeg, got.captured_at)
                self.frames_fetched += 1

    def poll_status(self) -> None:
        feeds = self._answering()
        refs = [feed.handle.view_status.remote(feed.after_event) for feed in feeds]
        for feed, got in zip(feeds, self._gather(refs), strict=True):
            if isinstance(got, BaseException):
                self._failed(feed, got)
            elif isinstance(got, ViewReport):
                self._report(feed, got)

    def final_status(self) -> None:
        """One last status round (the runs ended: the streams show ``ended``), every worker asked."""
        for feed in self.feeds:
            feed.quiet_until = -1e18
        self.poll_status()

    def _answering(self) -> list[_Feed]:
        now = self.clock()
        return [feed for feed in self.feeds if now >= feed.quiet_until]

    def _gather(self, refs: list[Any]) -> list[Any]:
        if not refs:
            return []
        try:
            return self.gather(refs, self.timeout_s)
        except Exception as exc:  # the gather itself failed (Ray gone): every call failed
            return [exc] * len(refs)

    def _report(self, feed: _Feed, report: ViewReport) -> None:
        if report.instance != feed.instance:
            if feed.instance is not None:
                log.info("web: worker %s started again: its view is read from its start", feed.name)
            feed.instance, feed.after_event, feed.frames = report.instance, 0, {}  # numbering restarts
        mine = set(feed.streams)
        for status in report.statuses:
            if status.name in mine:
                self.view.publish_status(status)
        fresh = [e for e in report.events if int(e.get("seq", 0)) > feed.after_event]
        if fresh:
            self.view.publish_event_items(fresh)
            feed.after_event = int(fresh[-1]["seq"])
        if feed.down:
            log.info("web: worker %s answers again", feed.name)
        feed.down, feed.answered, feed.failures = False, True, 0

    def _failed(self, feed: _Feed, exc: BaseException) -> None:
        now = self.clock()
        if now < feed.quiet_until:  # another call of this round: counted already
            return
        feed.failures += 1
        feed.quiet_until = now + min(MAX_BACKOFF_S, self.backoff_s * 2 ** (feed.failures - 1))
        why = type(exc).__name__
        if not feed.answered:  # still starting (its streams show as starting)
            log.debug("web: worker %s does not answer yet (%s)", feed.name, why)
            return
        if feed.down:
            return
        feed.down = True
        log.warning("web: worker %s does not answer (%s): its streams show as down", feed.name, why)
        for stream in feed.streams:
            self.view.publish_status(_down(self.view, stream, f"worker {feed.name} does not answer ({why})"))

    # ------------------------------------------------------------ the thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="web-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self.clock()
            try:
                self.poll_once()
            except Exception:  # a bug here must not end the web app's view of the streams
                log.exception("web: polling the workers failed")
            self._stop.wait(max(0.0, self.interval_s - (self.clock() - started)))

    def stop(self, *, final: bool = False) -> None:
        """Stop the thread (waits for its round: at most ``timeout_s`` and a little); ``final``: then
        read every worker's status once more."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s * 2 + 1.0)
        if final:
            self.final_status()


def _down(view: LiveView, stream: str, reason: str) -> StreamStatus:
    """``stream``'s last known status, down for ``reason`` (no frames/s: nothing comes through)."""
    last = view.status(stream)
    if last is None:
        return StreamStatus(stream, False, "down", 0.0, 0, 0, 0, 0, 0, None, None, reason, 0)
    return dataclasses.replace(last, state="down", fps=0.0, reason=reason)


def worker_feeds(placed: Sequence[Any]) -> list[tuple[str, dict[str, bool], Any]]:
    """(group name, its streams (name → live), actor handle) of each placed worker (``ClusterRun.placed``)."""
    return [(p.group.name, {s.name: s.effective_mode == "live" for s in p.group.streams}, p.actor) for p in placed]
