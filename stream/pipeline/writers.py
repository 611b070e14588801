"""The output stage: owns every writer (videos, MOT files, events, snapshots, display, metrics).

Runs in the output thread only. ``close`` always finishes what was opened, so Ctrl-C leaves a
playable mp4 and flushed events.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from stream.config import OutputsConfig, StreamConfig
from stream.outputs.events import EventSink
from stream.outputs.metrics import Metrics, MetricsServer
from stream.outputs.mot import MotWriter
from stream.outputs.overlay import TrackView, draw_overlay
from stream.outputs.snapshots import save_snapshot
from stream.outputs.summary import RunSummary, latency_percentiles_ms
from stream.outputs.video import VideoSettings, VideoWriter
from stream.pipeline.messages import Annotated
from stream.types import Event, EventKind

if TYPE_CHECKING:
    from stream.app import RunOptions
    from stream.pipeline.graph import Counters, Pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputPaths:
    videos: dict[str, Path | None]
    mot: dict[str, Path | None]
    jsonl: Path | None
    sqlite: Path | None
    snapshots: Path | None
    summary: Path | None

    @classmethod
    def for_streams(cls, cfg: OutputsConfig, streams: Sequence[StreamConfig], options: RunOptions) -> OutputPaths:
        names = [s.name for s in streams]
        single = len(names) == 1
        if options.output is not None:
            videos = {n: options.output if single else options.output / f"{n}.mp4" for n in names}
        else:
            videos = {n: (cfg.dir / f"{n}.mp4" if cfg.annotated_video else None) for n in names}
        tracks = options.tracks_out
        mot = {
            n: None if tracks is None else (tracks if single else tracks.with_name(f"{tracks.stem}_{n}{tracks.suffix}"))
            for n in names
        }
        jsonl = options.events or (cfg.dir / "events.jsonl" if cfg.events_jsonl else None)
        return cls(
            videos=videos,
            mot=mot,
            jsonl=jsonl,
            sqlite=cfg.dir / "events.db" if cfg.events_sqlite else None,
            snapshots=cfg.dir / "snapshots" if cfg.snapshots else None,
            summary=options.summary,
        )


@dataclass
class _StreamOut:
    video: VideoWriter | None = None
    mot: MotWriter | None = None
    latencies: list[float] = field(default_factory=list)
    first_ts: dict[str, float] = field(default_factory=dict)
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
    ) -> None:
        self._paths = paths
        self._video = video or VideoSettings()
        self._fps = fps
        self._display = display and _has_display()
        if display and not self._display:
            log.warning("--display ignored: no display found (DISPLAY/WAYLAND_DISPLAY unset)")
        self._streams: dict[str, _StreamOut] = {}
        self._sink = EventSink(paths.jsonl, paths.sqlite) if paths.jsonl or paths.sqlite else None
        self.metrics = Metrics()
        self._server: MetricsServer | None = self.metrics.serve(metrics_port) if metrics_port else None
        self.identities: dict[str, str | None] = {}
        self.tracks: set[str] = set()
        self.events_written = 0
        self._snapshot_paths: dict[str, Path] = {}
        self._pipeline: Pipeline | None = None
        self._progress = tqdm(unit="frame", desc="processed", disable=not progress, leave=False)
        self._seen: dict[str, tuple[int, int, int]] = {}  # stream -> (frames_in, dropped, reconnects) reported

    def watch(self, pipeline: Pipeline) -> None:
        """Report this pipeline's counters and queue depths as metrics (read from the output thread)."""
        self._pipeline = pipeline

    # ------------------------------------------------------------ OutputStage

    def frame(self, item: Annotated) -> None:
        frame = item.frame
        out = self._stream(frame.stream_id)
        self.events(item.events)
        for track_id, crop in item.snapshots:
            self._snapshot(frame.stream_id, frame.epoch, track_id, crop)
        views = [_view(label) for label in item.labels]
        for label in item.labels:
            key = _track_key(frame.stream_id, frame.epoch, label.snapshot.track_id)
            out.first_ts.setdefault(key, frame.pts_s)
            self.tracks.add(key)
        if self._paths.videos.get(frame.stream_id) is not None or self._display:
            image = draw_overlay(frame.image, views, stream_label=frame.stream_id)
            self._write_video(frame.stream_id, out, image)
            self._show(frame.stream_id, image)
        if self._paths.mot.get(frame.stream_id) is not None:
            out.mot = out.mot or MotWriter(self._paths.mot[frame.stream_id])
            out.mot.write(frame.index, [label.snapshot for label in item.labels])
        latency = time.monotonic() - frame.captured_at
        out.latencies.append(latency)
        self.metrics.frames_processed(frame.stream_id)
        self.metrics.observe_latency("frame_to_output", latency)
        self._sync_metrics(frame.stream_id)
        self._progress.update(1)

    def events(self, events: Sequence[Event]) -> None:
        for event in events:
            epoch = int(dict(event.extra).get("epoch", 0))
            key = _track_key(event.stream, epoch, event.track_id)
            if event.kind in (EventKind.IDENTITY_ASSIGNED, EventKind.IDENTITY_CHANGED):
                self.identities[key] = event.person
            if event.kind is EventKind.TRACK_ENDED:
                self.identities.setdefault(key, event.person)
            if self._sink is not None:
                self._sink.write(event)
                if event.kind is EventKind.TRACK_ENDED and event.track_id is not None:
                    first = self._streams.get(event.stream, _StreamOut()).first_ts.get(event.track_id, event.ts)
                    snapshot = self._snapshot_paths.get(key)
                    self._sink.track_update(
                        event.stream, event.track_id, first, event.ts, event.person, event.score, snapshot
                    )
            self.events_written += 1
        if events and self._sink is not None:
            self._sink.flush()

    def end_stream(self, stream_id: str) -> None:
        out = self._streams.get(stream_id)
        if out is not None:
            _close_quietly(out.video)
            _close_quietly(out.mot)
            out.video = out.mot = None

    def close(self) -> None:
        self._progress.close()
        for stream_id in list(self._streams):
            self.end_stream(stream_id)
        if self._sink is not None:
            self._sink.close()
        if self._server is not None:
            self._server.shutdown()
        if self._display:
            import cv2

            cv2.destroyAllWindows()

    # ------------------------------------------------------------ helpers

    def latencies(self, stream_id: str) -> list[float]:
        return self._streams.get(stream_id, _StreamOut()).latencies

    def _sync_metrics(self, stream_id: str) -> None:
        """Counters owned by other threads are read (ints: atomic) and reported as deltas."""
        if self._pipeline is None:
            return
        c = self._pipeline.counters.streams[stream_id]
        now = (c.frames_in, self._pipeline.dropped().get(stream_id, 0), c.reconnects)
        before = self._seen.get(stream_id, (0, 0, 0))
        self.metrics.frames_in(stream_id, now[0] - before[0])
        self.metrics.frames_dropped(stream_id, now[1] - before[1])
        for _ in range(now[2] - before[2]):
            self.metrics.reconnect(stream_id)
        self._seen[stream_id] = now
        for queue, depth in self._pipeline.queue_depths().items():
            self.metrics.set_queue_depth(queue, depth)

    def _stream(self, stream_id: str) -> _StreamOut:
        return self._streams.setdefault(stream_id, _StreamOut())

    def _write_video(self, stream_id: str, out: _StreamOut, image: Any) -> None:
        path = self._paths.videos.get(stream_id)
        if path is None:
            return
        if out.video is None:
            fps, (height, width) = self._fps.get(stream_id) or 25.0, image.shape[:2]
            out.video = VideoWriter(path, fps, width, height, self._video.crf, self._video.preset)
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

    def _snapshot(self, stream_id: str, epoch: int, track_id: int, crop: Any) -> None:
        if self._paths.snapshots is None:
            return
        self._snapshot_paths[_track_key(stream_id, epoch, track_id)] = save_snapshot(
            self._paths.snapshots, stream_id, track_id, epoch, crop
        )

    def _show(self, stream_id: str, image: Any) -> None:
        if self._display:
            import cv2

            cv2.imshow(stream_id, image)
            cv2.waitKey(1)


def _track_key(stream: str, epoch: int, track_id: int | None) -> str:
    """A track's label in summaries: stream:id, with #epoch after a reconnect."""
    return f"{stream}:{track_id}" if epoch == 0 else f"{stream}#{epoch}:{track_id}"


def _view(label: Any) -> TrackView:
    snap = label.snapshot
    return TrackView(snap.track_id, snap.box, label.person, label.score, label.quality, snap.state.value)


def _close_quietly(writer: Any) -> None:
    if writer is None:
        return
    try:
        writer.close()
    except Exception as exc:  # one stream's broken output must not stop closing the others
        log.error("closing %s failed: %s", getattr(writer, "path", writer), exc)


def _letterbox(image: Any, width: int, height: int) -> Any:
    """``image`` scaled to fit ``width``x``height`` (aspect kept), centred on black."""
    import cv2
    import numpy as np

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
            tracks=sum(1 for t in writers.tracks if t.split(":")[0].split("#")[0] == name),
            identities={k: v for k, v in writers.identities.items() if k.split(":")[0].split("#")[0] == name},
            reconnects=c.reconnects,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
        )
    all_latencies = [x for name in counters.streams for x in writers.latencies(name)]
    p50, p95 = latency_percentiles_ms(all_latencies)
    return RunSummary(
        frames_in=sum(s.frames_in for s in per_stream.values()),
        frames_processed=sum(s.frames_processed for s in per_stream.values()),
        frames_dropped=sum(s.frames_dropped for s in per_stream.values()),
        fps=round(sum(c.frames_out for c in counters.streams.values()) / elapsed, 2),
        tracks=len(writers.tracks),
        identities=dict(writers.identities),
        reconnects=sum(s.reconnects for s in per_stream.values()),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        per_stream=per_stream,
    )
