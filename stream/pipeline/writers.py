"""The output stage: owns every writer (videos, MOT files, display, metrics) and the run's record
(events, tracks, faces and snapshots, through ``EventRecorder``: the journal and the event store).

Runs in the output thread only. ``close`` always finishes what was opened, so Ctrl-C leaves a
playable mp4, flushed events and the run ended in the store.

With ``integrations`` every recorded event is also handed to ``stream.integrations.hub.Integrations``
(MQTT, alert rules), which only queues: the alerts it fires are recorded here as ``alert`` events and
then handed back for delivery. ``start`` starts its threads; ``close`` gives them a bounded time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from tqdm import tqdm

from stream.closing import close_quietly
from stream.integrations.hub import Integrations
from stream.integrations.zones import ZoneSet
from stream.outputs.live_view import LiveView, StreamCounts
from stream.outputs.metrics import Metrics, MetricsServer
from stream.outputs.mot import MotWriter
from stream.outputs.overlay import TrackView, ZoneOutline, draw_overlay
from stream.outputs.privacy import blur_faces
from stream.outputs.summary import RunSummary, latency_percentiles_ms
from stream.outputs.video import VideoSettings, VideoWriter
from stream.pipeline.messages import Annotated, TrackFace, TrackLabel
from stream.pipeline.recording import EventRecorder, Recorded
from stream.store.records import RunRecord
from stream.types import Event

if TYPE_CHECKING:
    from stream.pipeline.graph import Counters, Pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputPaths:
    """Where each output goes (None: not written); planned by the app from config and options."""

    videos: dict[str, Path | None]
    mot: dict[str, Path | None]
    jsonl: Path | None
    snapshots: Path | None
    summary: Path | None


@dataclass(frozen=True)
class _Seen:
    frames_in: int = 0
    dropped: int = 0
    reconnects: int = 0
    decode_errors: int = 0


@dataclass
class _StreamOut:
    video: VideoWriter | None = None
    mot: MotWriter | None = None
    latencies: list[float] = field(default_factory=list)
    resized: bool = False  # a frame of another size than the video's was letterboxed (warned once)


class OutputWriters:
    def __init__(
        self,
        paths: OutputPaths,
        fps: dict[str, float],
        display: bool = False,
        metrics_port: int | None = None,
        progress: bool = False,
        video: VideoSettings | None = None,
        recorder: EventRecorder | None = None,
        blur_unknown: bool = False,
        view: LiveView | None = None,
        integrations: Integrations | None = None,
        zones: dict[str, ZoneSet] | None = None,
    ) -> None:
        """``recorder``: where events, tracks and faces go (default: a new run recorded nowhere);
        ``view``: publish the annotated frames (only while watched), the streams' status and the events
        into it (for the web app); ``integrations``: MQTT and alert rules (None: off); ``zones``: drawn
        on each stream's frames."""
        self.recorder = recorder or EventRecorder(RunRecord.new())
        self._view = view
        self._integrations = integrations
        self._zones: dict[str, tuple[ZoneOutline, ...]] = {
            stream: tuple((z.name, z.points) for z in zone_set.zones) for stream, zone_set in (zones or {}).items()
        }
        self._paths = paths
        self._blur_unknown = blur_unknown
        self._video = video or VideoSettings()
        self._fps = fps
        self._display = display and _has_display()
        if display and not self._display:
            log.warning("--display ignored: no display found (DISPLAY/WAYLAND_DISPLAY unset)")
        self._streams: dict[str, _StreamOut] = {}
        self.metrics = Metrics()
        self._server: MetricsServer | None = self.metrics.serve(metrics_port) if metrics_port else None
        self._pipeline: Pipeline | None = None
        self._progress = tqdm(unit="frame", desc="processed", disable=not progress, leave=False)
        self._seen: dict[str, _Seen] = {}  # per stream: the counts already reported as metrics
        self._fallbacks_seen = 0

    def start(self) -> None:
        """Start the integrations' threads (MQTT link, webhook sender); before the pipeline runs."""
        if self._integrations is not None:
            self._integrations.start()

    def watch(self, pipeline: Pipeline) -> None:
        """Report this pipeline's counters and queue depths as metrics (read from the output thread)."""
        self._pipeline = pipeline

    # ------------------------------------------------------------ OutputStage

    def frame(self, item: Annotated) -> None:
        started = time.perf_counter()
        frame = item.frame
        out = self._stream(frame.stream_id)
        unnamed = {label.snapshot.track_id for label in item.labels if label.person is None}
        for key, crop in item.snapshots:  # before the events: identity events name their snapshot
            if self._blur_unknown and key.track_id in unnamed:
                continue  # privacy: no picture of an unknown face
            self.recorder.snapshot(key, crop)
        self.events(item.events)
        self.faces(item.faces)
        viewed = self._view is not None and self._view.wants_frame(frame.stream_id)
        if self._paths.videos.get(frame.stream_id) is not None or self._display or viewed:
            zones = self._zones.get(frame.stream_id, ())
            image = annotated_image(item, blur_unknown=self._blur_unknown, zones=zones)
            self._write_video(frame.stream_id, out, image)
            self._show(frame.stream_id, image)
            if viewed and self._view is not None:
                self._view.publish_frame(frame.stream_id, image, frame.wall_time)
        mot_path = self._paths.mot.get(frame.stream_id)
        if mot_path is not None:
            out.mot = out.mot or MotWriter(mot_path)
            out.mot.write(frame.index, frame.epoch, [label.snapshot for label in item.labels])
        latency = time.monotonic() - frame.captured_at
        out.latencies.append(latency)
        self.metrics.frames_processed(frame.stream_id)
        self.metrics.observe_latency("output", time.perf_counter() - started)
        self.metrics.observe_latency("frame_to_output", latency)
        self._sync_metrics(frame.stream_id)
        self._sync_store_metrics()
        self._sync_integration_metrics()
        self.recorder.tick()
        if self._view is not None:
            seen = self._seen.get(frame.stream_id, _Seen())
            counts = StreamCounts(seen.frames_in, seen.dropped, seen.reconnects, seen.decode_errors)
            self._view.frame_done(frame.stream_id, counts, frame.wall_time)
        self._progress.update(1)

    def events(self, events: Sequence[Event]) -> None:
        recorded = self.recorder.events(events)
        self._publish(recorded)
        if self._integrations is None or not events:
            return
        fired = self._integrations.events([(r.event, r.record) for r in recorded])
        if fired:
            alerts = self.recorder.events([f.alert.event for f in fired])
            self._publish(alerts)
            self._integrations.deliver(fired, [r.record for r in alerts])

    def _publish(self, recorded: Sequence[Recorded]) -> None:
        if self._view is not None:
            self._view.publish_events([(r.event, None if r.snapshot is None else r.snapshot.name) for r in recorded])

    def faces(self, faces: Sequence[TrackFace]) -> None:
        self.recorder.faces(faces)

    def end_stream(self, stream_id: str) -> None:
        if self._view is not None:
            self._view.stream_ended(stream_id)
        out = self._streams.get(stream_id)
        if out is not None:  # one stream's broken output must not stop closing the others
            close_quietly(out.video, f"video of {stream_id}", level=logging.ERROR)
            close_quietly(out.mot, f"MOT file of {stream_id}", level=logging.ERROR)
            out.video = out.mot = None

    def close(self) -> None:
        self._progress.close()
        for stream_id in list(self._streams):
            self.end_stream(stream_id)
        try:
            self.recorder.close(time.time())
        finally:
            self._sync_store_metrics()
            if self._integrations is not None:  # bounded: CLOSE_BUDGET_S
                close_quietly(self._integrations, "integrations", level=logging.ERROR)
                self._sync_integration_metrics()
        if self._server is not None:
            self._server.shutdown()
        if self._display:
            cv2.destroyAllWindows()

    # ------------------------------------------------------------ helpers

    def latencies(self, stream_id: str) -> list[float]:
        return self._streams.get(stream_id, _StreamOut()).latencies

    def _sync_metrics(self, stream_id: str) -> None:
        """Counters owned by other threads are read (ints: atomic) and reported as deltas."""
        if self._pipeline is None:
            return
        c = self._pipeline.counters.streams[stream_id]
        now = _Seen(c.frames_in, self._pipeline.dropped().get(stream_id, 0), c.reconnects, c.decode_errors)
        before = self._seen.get(stream_id, _Seen())
        self.metrics.frames_in(stream_id, now.frames_in - before.frames_in)
        self.metrics.frames_dropped(stream_id, now.dropped - before.dropped)
        self.metrics.decode_errors(stream_id, now.decode_errors - before.decode_errors)
        for _ in range(now.reconnects - before.reconnects):
            self.metrics.reconnect(stream_id)
        self._seen[stream_id] = now
        fallbacks = self._pipeline.counters.detector_fallbacks
        self.metrics.detector_fallbacks(fallbacks - self._fallbacks_seen)
        self._fallbacks_seen = fallbacks
        for queue, depth in self._pipeline.queue_depths().items():
            self.metrics.set_queue_depth(queue, depth)

    def _sync_store_metrics(self) -> None:
        counters = self.recorder.store_counters()
        if counters is not None:
            self.metrics.store(counters)

    def _sync_integration_metrics(self) -> None:
        if self._integrations is not None:
            self.metrics.integrations(self._integrations.counters())

    def integration_counts(self) -> dict[str, int]:
        """The integrations' counts for the run summary (empty: none configured)."""
        return {} if self._integrations is None else self._integrations.counters().summary()

    def _stream(self, stream_id: str) -> _StreamOut:
        return self._streams.setdefault(stream_id, _StreamOut())

    def _write_video(self, stream_id: str, out: _StreamOut, image: Any) -> None:
        path = self._paths.videos.get(stream_id)
        if path is None:
            return
        if out.video is None:
            fps, (height, width) = self._fps.get(stream_id) or 25.0, image.shape[:2]
            out.video = VideoWriter(path, fps, width, height, self._video)
        size = (out.video.width, out.video.height)
        if (image.shape[1], image.shape[0]) != size:
            # The stream changed resolution mid-way (a camera reconfigured, a folder of mixed images):
            # one file keeps its first size, later frames are letterboxed into it (scaled to fit,
            # aspect kept, black bars). Events and MOT boxes stay in the frames' own pixels.
            if not out.resized:
                log.warning(
                    "%s: frame size changed from %dx%d to %dx%d: letterboxing into the video's first size",
                    stream_id,
                    size[0],
                    size[1],
                    image.shape[1],
                    image.shape[0],
                )
                out.resized = True
            image = _letterbox(image, *size)
        out.video.write(image)

    def _show(self, stream_id: str, image: Any) -> None:
        if self._display:
            cv2.imshow(stream_id, image)
            cv2.waitKey(1)


def annotated_image(item: Annotated, *, blur_unknown: bool = False, zones: Sequence[ZoneOutline] = ()) -> np.ndarray:
    """The image every view of a frame shows (video file, window): a new copy with the overlay (and the
    stream's ``zones`` outlined).

    With ``blur_unknown`` every face not named (unknown confirmed and lost tracks, whose boxes follow
    the Kalman prediction between detections, and tentative tracks not yet shown) is mosaicked
    first (``stream.outputs.privacy``), then the boxes and labels are drawn on top.
    """
    image = item.frame.image
    if blur_unknown:
        boxes = [label.snapshot.box for label in item.labels if label.person is None]
        image = blur_faces(image, boxes + [snap.box for snap in item.tentative])
    views = [_view(label) for label in item.labels]
    return draw_overlay(image, views, stream_label=item.frame.stream_id, zones=zones)


def _view(label: TrackLabel) -> TrackView:
    snap = label.snapshot
    return TrackView(snap.track_id, snap.box, label.person, label.score, label.quality, snap.state.value, label.stranger)


def _letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` scaled to fit ``width``x``height`` (aspect kept), centred on black."""
    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[y : y + h, x : x + w] = cv2.resize(image, (w, h), interpolation=interpolation)
    return canvas


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def summarise(counters: Counters, pipeline: Pipeline, writers: OutputWriters) -> RunSummary:
    record = writers.recorder
    elapsed = max(time.monotonic() - counters.started_at, 1e-9)
    dropped = pipeline.dropped()
    per_stream = {}
    for name, c in counters.streams.items():
        p50, p95 = latency_percentiles_ms(writers.latencies(name))
        per_stream[name] = RunSummary(
            frames_in=c.frames_in,
            frames_processed=c.frames_out,
            frames_dropped=dropped.get(name, 0),
            fps=round(c.frames_out / elapsed, 2),
            tracks=sum(1 for key in record.tracks if key.stream_id == name),
            identities={key: v for key, v in record.identities.items() if key.stream_id == name},
            reconnects=c.reconnects,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            decode_errors=c.decode_errors,
            strangers=len(record.strangers.get(name, ())),
        )
    all_latencies = [x for name in counters.streams for x in writers.latencies(name)]
    p50, p95 = latency_percentiles_ms(all_latencies)
    return RunSummary(
        frames_in=sum(s.frames_in for s in per_stream.values()),
        frames_processed=sum(s.frames_processed for s in per_stream.values()),
        frames_dropped=sum(s.frames_dropped for s in per_stream.values()),
        fps=round(sum(c.frames_out for c in counters.streams.values()) / elapsed, 2),
        tracks=len(record.tracks),
        identities=dict(record.identities),
        reconnects=sum(s.reconnects for s in per_stream.values()),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        per_stream=per_stream,
        decode_errors=sum(s.decode_errors for s in per_stream.values()),
        detector_fallbacks=counters.detector_fallbacks,
        strangers=len(set().union(*record.strangers.values())),
        integrations=writers.integration_counts(),
    )
