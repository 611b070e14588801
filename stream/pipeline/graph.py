"""Stage threads and their wiring: sources → batcher+detector → recogniser (→ embed) → outputs.

One source thread per stream; one detection thread (the batcher); one recognition thread that owns
the trackers, best-shot mailboxes and votes; with live streams, one embed thread that embeds the
best-shot crops off the frame path (files: the recognition thread embeds synchronously); one output
thread that owns every writer and the event sink. Every wait has a timeout and checks one stop
event; a stage error sets the stop event and is re-raised by ``Pipeline.run`` after all threads are
joined. Stage timings (detect, track, embed, output) go to an optional ``LatencyObserver``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from stream.errors import PipelineError, UserError
from stream.faces.models import FaceDetector
from stream.pipeline.batcher import Batcher, FaceMemory, detect_batch
from stream.pipeline.channels import Channel, Stopped
from stream.pipeline.embedding import EmbedWorker, LatencyObserver
from stream.pipeline.inbox import FileInbox, Inbox, LiveInbox
from stream.pipeline.messages import Annotated, Detected, EndOfStream, TrackFace
from stream.pipeline.recognise import Recogniser
from stream.sources import FrameSource, SourceStatus
from stream.types import Event, EventKind, Frame

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 4.0  # Ctrl-C promises finished outputs within 5 s: the joins get 4, exit needs the rest


@dataclass
class StreamCounters:
    """Per-stream counts, each written by one thread only (others read them: ints are atomic)."""

    frames_in: int = 0  # source thread
    reconnects: int = 0  # source thread
    decode_errors: int = 0  # source thread: corrupt packets/frames the source skipped
    frames_out: int = 0  # output thread
    ended: bool = False  # output thread: the stream's end marker went through every output


@dataclass
class Counters:
    streams: dict[str, StreamCounters] = field(default_factory=dict)
    embeddings: int = 0  # recognition thread
    detector_fallbacks: int = 0  # detection thread: batches retried frame by frame
    started_at: float = field(default_factory=time.monotonic)


class StageThread(threading.Thread):
    """A pipeline stage's thread (daemon): see ``stage_threads_alive``."""


def stage_threads_alive() -> list[str]:
    """Names of stage threads still running, e.g. a detector call that outlived the stop budget.

    The process should then end with ``os._exit``: interpreter teardown under a thread that is inside
    torch's C++ code can abort the process ("terminate called without an active exception").
    """
    return [t.name for t in threading.enumerate() if isinstance(t, StageThread) and t.is_alive()]


class OutputStage(Protocol):
    """What the output thread drives (``stream.pipeline.writers.OutputWriters``; tests pass fakes).

    Called from the output thread only; ``close`` is called once, last, even after an error.
    """

    def frame(self, item: Annotated) -> None: ...
    def events(self, events: Sequence[Event]) -> None: ...
    def faces(self, faces: Sequence[TrackFace]) -> None: ...
    def end_stream(self, stream_id: str) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class PipelineSettings:
    max_batch: int = 8
    max_wait_ms: float = 20.0
    every_n_frames: int = 1
    max_frames: int | None = None
    refine_between: bool = False  # re-find known faces on the frames between full detections


class Pipeline:
    def __init__(
        self,
        sources: Sequence[FrameSource],
        detector: FaceDetector,
        recogniser: Recogniser,
        output: OutputStage,
        settings: PipelineSettings,
        stop: threading.Event | None = None,
        live: set[str] | None = None,
        *,
        embed_worker: EmbedWorker | None = None,
        observer: LatencyObserver | None = None,
    ) -> None:
        """``live`` names the streams that drop at the door (default: the sources that say is_live).
        ``embed_worker``: run its thread (the recogniser hands it crops); ``observer``: stage timings."""
        self._sources = list(sources)
        self._detector = detector
        self._embed_worker = embed_worker
        self._observer = observer
        self._recogniser = recogniser
        self._output = output
        self._settings = settings
        self.stop = stop or threading.Event()
        self.counters = Counters({s.stream_id: StreamCounters() for s in sources})
        live = {s.stream_id for s in sources if s.is_live} if live is None else live
        self._inboxes: list[Inbox] = [
            LiveInbox(s.stream_id) if s.stream_id in live else FileInbox(s.stream_id) for s in sources
        ]
        # Live streams: no read-ahead between stages, so a frame waits behind at most one batch.
        self._detected: Channel[list[Detected | EndOfStream]] = Channel(1 if live else 4, "detected")
        self._annotated: Channel[Annotated | EndOfStream] = Channel(32, "annotated")
        self._status: Channel[Event] = Channel(256, "status")
        self._errors: list[tuple[str, BaseException]] = []
        self._errors_lock = threading.Lock()
        self._output_done = threading.Event()  # set by the output thread when it has closed the outputs

    # ------------------------------------------------------------ running

    def run(self) -> Counters:
        """Run until every stream ends (or stop is set); raise the first stage error."""
        threads = [
            self._thread(f"source:{s.stream_id}", self._source_loop, s, inbox)
            for s, inbox in zip(self._sources, self._inboxes, strict=True)
        ]
        threads += [self._thread("detect", self._detect_loop), self._thread("recognise", self._recognise_loop)]
        if self._embed_worker is not None:
            threads.append(self._thread("embed", self._embed_worker.run, self.stop))
        threads.append(self._thread("output", self._output_loop))  # last: _wait and _join rely on it
        try:
            for thread in threads:
                thread.start()
            self._wait(threads)
        except KeyboardInterrupt:
            log.warning("interrupted: finishing outputs")
            self.stop.set()
            self._join(threads, JOIN_TIMEOUT_S)
            raise
        if self._errors:
            stage, error = self._errors[0]
            raise PipelineError(stage, error) from error
        return self.counters

    def _thread(self, name: str, target: Callable[..., None], *args: object) -> threading.Thread:
        return StageThread(target=self._guard, args=(name, target, *args), name=name, daemon=True)

    def _guard(self, name: str, target: Callable[..., None], *args: object) -> None:
        try:
            target(*args)
        except Stopped:
            pass
        except BaseException as error:  # surfaced by run()
            user_mistake = isinstance(error, UserError)  # one line, no traceback
            log.error("%s stage failed: %s", name, error, exc_info=not user_mistake)
            with self._errors_lock:
                self._errors.append((name, error))
            self.stop.set()

    def _wait(self, threads: list[threading.Thread]) -> None:
        # Not output.join(): on CPython 3.11 a Ctrl-C that lands inside Thread.join marks the still running
        # thread as stopped (threading's bpo-45274 handling), so the joins after it return at once and the
        # process could end while the output thread is still closing the outputs.
        while not self._output_done.wait(0.2):
            if not threads[-1].is_alive():  # it never got to its loop (cannot happen; never wait forever)
                break
        self.stop.set()  # outputs done (or failed): release every other stage
        self._join(threads, JOIN_TIMEOUT_S)

    @staticmethod
    def _join(threads: list[threading.Thread], timeout: float) -> None:
        """Join within ``timeout`` in all, the output thread first: it finishes the files."""
        deadline = time.monotonic() + timeout
        for thread in [threads[-1], *threads[:-1]]:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("threads still running after %.0f s: %s", timeout, ", ".join(alive))

    # ------------------------------------------------------------ stages

    def _source_loop(self, source: FrameSource, inbox: Inbox) -> None:
        counters = self.counters.streams[source.stream_id]
        limit = self._settings.max_frames

        def emit(item: Frame | SourceStatus) -> bool:
            if isinstance(item, SourceStatus):
                self._status.put(_status_event(item), self.stop)
                counters.reconnects += item.kind == "up" and item.epoch > 0
                return not self.stop.is_set()
            counters.frames_in += 1
            counters.decode_errors = source.decode_errors
            inbox.offer(item, self.stop)
            return not self.stop.is_set() and (limit is None or counters.frames_in < limit)

        try:
            source.run(emit, self.stop)
        finally:
            counters.decode_errors = source.decode_errors
            if not self.stop.is_set():
                inbox.close(self.stop)

    def _detect_loop(self) -> None:
        s = self._settings
        batcher = Batcher(self._inboxes, s.max_batch, s.max_wait_ms, s.every_n_frames)
        refine = self._detector.refine if s.refine_between and s.every_n_frames > 1 else None
        memory = FaceMemory() if refine is not None else None
        while not batcher.finished:
            batch = batcher.collect(self.stop)
            if batch:
                started = time.perf_counter()
                detected = detect_batch(batch, self._detector.detect, batcher.needs_detection, refine, memory)
                self._observe("detect", time.perf_counter() - started)  # what each frame of the batch waits
                self.counters.detector_fallbacks = self._detector.batch_fallbacks
                self._detected.put(detected, self.stop)

    def _recognise_loop(self) -> None:
        open_streams = len(self._sources)
        while open_streams:
            batch = self._detected.get(self.stop)
            for segment in _segments(batch):
                if isinstance(segment, EndOfStream):
                    self._end_stream(segment)
                    open_streams -= 1
                else:
                    for item in self._recogniser.process(segment):
                        self._annotated.put(item, self.stop)
            self.counters.embeddings = self._recogniser.embeddings

    def _end_stream(self, marker: EndOfStream) -> None:
        events, faces = self._recogniser.end_stream(marker.stream_id)
        self._annotated.put(EndOfStream(marker.stream_id, tuple(events), tuple(faces)), self.stop)

    def _output_loop(self) -> None:
        open_streams = {s.stream_id for s in self._sources}
        try:
            while open_streams:
                self._drain_status()
                item = self._annotated.get(self.stop, timeout=0.1)
                if item is None:
                    continue
                if isinstance(item, EndOfStream):
                    self._drain_status()
                    self._output.events(item.events)
                    self._output.faces(item.faces)
                    self._output.end_stream(item.stream_id)
                    open_streams.discard(item.stream_id)
                    self.counters.streams[item.stream_id].ended = True
                else:
                    self._output.frame(item)
                    self.counters.streams[item.frame.stream_id].frames_out += 1
            self._drain_status()
        finally:
            try:
                self._output.close()
            finally:
                self._output_done.set()

    def _drain_status(self) -> None:
        events = []
        while (event := self._status.get_nowait()) is not None:
            events.append(event)
        if events:
            self._output.events(events)

    def _observe(self, stage: str, seconds: float) -> None:
        if self._observer is not None:
            self._observer.observe_latency(stage, seconds)

    def dropped(self) -> dict[str, int]:
        return {inbox.stream_id: inbox.dropped for inbox in self._inboxes}

    def queue_depths(self) -> dict[str, int]:
        depths = {f"inbox:{i.stream_id}": i.depth() for i in self._inboxes}
        depths.update(detected=self._detected.depth(), annotated=self._annotated.depth())
        return depths


def _segments(batch: list[Detected | EndOfStream]) -> list[list[Detected] | EndOfStream]:
    """Split a batch into runs of frames and the end markers between them, in order."""
    out: list[list[Detected] | EndOfStream] = []
    run: list[Detected] = []
    for item in batch:
        if isinstance(item, EndOfStream):
            if run:
                out.append(run)
                run = []
            out.append(item)
        else:
            run.append(item)
    if run:
        out.append(run)
    return out


def _status_event(status: SourceStatus) -> Event:
    kind = EventKind.STREAM_UP if status.kind == "up" else EventKind.STREAM_DOWN
    return Event.of_stream(status.at, status.stream_id, kind, status.epoch, status.reason)
