"""Build and run the stream app: streams → one detector, one embedder → outputs, and a summary."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.closing import close_quietly
from stream.config import AppConfig, OutputsConfig, StreamConfig
from stream.errors import UserError
from stream.faces.models import ModelOverrides, Models, build_models
from stream.identity.ann import IndexSettings
from stream.identity.bestshot import BestShotSettings
from stream.identity.gallery import enroll
from stream.identity.matcher import Matcher
from stream.identity.strangers import StrangerBook, StrangerSettings
from stream.identity.thresholds import threshold_from_config
from stream.identity.voting import TrackVoter, VotingSettings
from stream.logs import mask_secrets
from stream.outputs.events import EventJournal
from stream.outputs.summary import RunSummary
from stream.outputs.video import VideoSettings
from stream.pipeline.embedding import EmbedWorker, LatencyObserver
from stream.pipeline.graph import Pipeline, PipelineSettings
from stream.pipeline.recognise import Recogniser
from stream.pipeline.recording import EventRecorder
from stream.pipeline.writers import OutputPaths, OutputWriters, summarise
from stream.sources import FrameSource, open_source
from stream.store import Store
from stream.store.records import RunRecord
from stream.store.retention import Retention
from stream.store.urls import configured_store_url, open_store

log = logging.getLogger(__name__)

DEMO_STREAM = "demo"


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices of `run.py [run]` (None: take config.yaml's)."""

    sources: tuple[str, ...] = ()
    gallery: Path | None = None
    output: Path | None = None
    events: Path | None = None
    summary: Path | None = None
    tracks_out: Path | None = None
    display: bool = False
    max_frames: int | None = None
    metrics_port: int | None = None
    progress: bool | None = None  # a frames progress bar (None: for files, when stderr is a terminal)


def stream_from_arg(text: str, index: int) -> StreamConfig:
    """`--source` value → a stream: a webcam index, a URL (scheme://, lavfi:) or a path."""
    if text.isdigit():
        return StreamConfig(name=f"cam{text}", webcam=int(text))
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text) or text.startswith("lavfi:"):
        return StreamConfig(name=f"stream{index}", url=text)
    if text.startswith("/dev/video"):
        return StreamConfig(name=Path(text).name, webcam=text)
    path = Path(text)
    if not path.exists():
        raise UserError(f"--source {text}: no such file or folder")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem or path.name) or f"stream{index}"
    return StreamConfig(name=name, path=path.resolve())


def plan_streams(config: AppConfig, options: RunOptions) -> tuple[tuple[StreamConfig, ...], Path | None]:
    """The streams to run and the gallery to use; no streams anywhere → the built-in demo."""
    if options.sources:
        streams = tuple(stream_from_arg(text, i) for i, text in enumerate(options.sources))
        _check_unique(streams)
        return streams, options.gallery
    if config.streams:
        return config.streams, options.gallery
    from stream.demo import prepare_demo

    clip, gallery = prepare_demo(config.outputs.dir / ".demo")
    log.info("no streams configured: running the built-in demo (%s)", clip)
    return (StreamConfig(name=DEMO_STREAM, path=clip, mode="file"),), options.gallery or gallery


def _check_unique(streams: tuple[StreamConfig, ...]) -> None:
    names = [s.name for s in streams]
    if len(set(names)) != len(names):
        raise UserError(f"--source: two sources share a name ({', '.join(names)}); rename a file")


def build_matcher(models: Models, config: AppConfig, gallery_dir: Path) -> Matcher:
    """The gallery's matcher; its threshold scales with the gallery size (``stream.identity.thresholds``)."""
    rec, model_id = config.recognition, models.embedder.model_id
    if not gallery_dir.is_dir():
        log.warning("gallery %s not found: every face will be unknown", gallery_dir)
        return _empty_matcher(threshold_from_config(model_id, rec, 1).threshold, rec.min_margin)
    gallery = enroll(gallery_dir, models, use_cache=config.gallery.cache, progress=False)
    if not gallery.people:
        log.warning("gallery %s has nobody enrolled: every face will be unknown", gallery_dir)
        return _empty_matcher(threshold_from_config(model_id, rec, 1).threshold, rec.min_margin)
    log.info("gallery: %d people (%s)", len(gallery.people), ", ".join(gallery.names))
    choice = threshold_from_config(model_id, rec, len(gallery.people))
    log.info("%s", choice.describe())
    matcher = Matcher.from_gallery(gallery, choice.threshold, rec.min_margin, index=IndexSettings.from_recognition(rec))
    log.info("%s", matcher.describe_search())
    return matcher


def _empty_matcher(threshold: float, min_margin: float) -> Matcher:
    return Matcher((), np.zeros((0, 512), np.float32), threshold, min_margin)


def build_recogniser(
    models: Models,
    config: AppConfig,
    matcher: Matcher,
    *,
    worker: EmbedWorker | None = None,
    observer: LatencyObserver | None = None,
    stop: threading.Event | None = None,
) -> Recogniser:
    rec = config.recognition
    voting = VotingSettings.from_recognition(
        rec, top_k=rec.keep_top_k, norm_floor=rec.norm_floor, switch_votes=rec.switch_votes
    )
    strangers = StrangerBook(StrangerSettings(matcher.threshold, min_embeddings=rec.min_votes))
    return Recogniser(
        models.embedder,
        TrackVoter(matcher, voting, strangers if rec.stranger_ids else None),
        config.tracking.tracker_settings(),
        BestShotSettings.from_recognition(rec),
        config.detection.min_face_px,
        embed_limit=rec.batch_size,
        worker=worker,
        observer=observer,
        stop=stop,
    )


@dataclass
class App:
    """A built, not yet started, run: the pipeline and the output stage that owns the writers."""

    pipeline: Pipeline
    writers: OutputWriters
    summary_path: Path | None

    def run(self) -> RunSummary:
        """Run every stream to its end (or Ctrl-C / a stage error); the summary is written either way."""
        try:
            self.pipeline.run()
        finally:
            summary = summarise(self.pipeline.counters, self.pipeline, self.writers)
            if self.summary_path is not None:
                self.summary_path.parent.mkdir(parents=True, exist_ok=True)
                self.summary_path.write_text(summary.to_json() + "\n")
        return summary


def output_paths(cfg: OutputsConfig, streams: Sequence[StreamConfig], options: RunOptions) -> OutputPaths:
    """Where each output of this run goes: the command-line paths, else config.yaml's outputs."""
    names = [s.name for s in streams]
    single = len(names) == 1
    if options.output is not None:
        videos: dict[str, Path | None] = {n: options.output if single else options.output / f"{n}.mp4" for n in names}
    else:
        videos = {n: (cfg.dir / f"{n}.mp4" if cfg.annotated_video else None) for n in names}
    tracks = options.tracks_out
    mot = {
        n: None if tracks is None else (tracks if single else tracks.with_name(f"{tracks.stem}_{n}{tracks.suffix}"))
        for n in names
    }
    return OutputPaths(
        videos=videos,
        mot=mot,
        jsonl=options.events or (cfg.dir / "events.jsonl" if cfg.events_jsonl else None),
        snapshots=cfg.dir / "snapshots" if cfg.snapshots else None,
        summary=options.summary,
    )


def build_recorder(config: AppConfig, paths: OutputPaths, store: Store | None, model_id: str) -> EventRecorder:
    """The run's record: the journal, the store (already open), snapshots and retention."""
    days = config.outputs.retention_days
    snapshot_dirs = [paths.snapshots] if paths.snapshots is not None else []
    retention = Retention(store, days, snapshot_dirs=snapshot_dirs) if days is not None else None
    summary = f"model {model_id}; profile {config.profile}; streams {', '.join(s.name for s in config.streams) or '-'}"
    return EventRecorder(
        RunRecord.new(config_summary=mask_secrets(summary)),
        journal=EventJournal(paths.jsonl) if paths.jsonl is not None else None,
        store=store,
        snapshots=paths.snapshots,
        retention=retention,
    )


def build_app(
    config: AppConfig,
    options: RunOptions,
    overrides: ModelOverrides | None = None,
    *,
    models: Models | None = None,
    embed_off_path: bool | None = None,
    matcher: Matcher | None = None,
) -> App:
    """Open the sources, build (or take) the models and the gallery, wire the pipeline and outputs.

    ``embed_off_path``: embed in a thread of its own (None: when any stream is live; the benchmark
    compares both). ``matcher``: the gallery's matcher, built once for many runs (None: enrol the
    gallery now, ``build_matcher``)."""
    streams, gallery_override = plan_streams(config, options)
    paths = output_paths(config.outputs, streams, options)
    sources = [open_source(spec) for spec in streams]
    store = open_store(configured_store_url(config)) if config.outputs.events_sqlite else None  # fails fast
    try:
        return _build(
            config, options, overrides, models, matcher, embed_off_path, streams, gallery_override, paths, sources, store
        )
    except BaseException:
        close_quietly(store, "event store", level=logging.WARNING)
        raise


def _build(
    config: AppConfig,
    options: RunOptions,
    overrides: ModelOverrides | None,
    models: Models | None,
    matcher: Matcher | None,
    embed_off_path: bool | None,
    streams: tuple[StreamConfig, ...],
    gallery_override: Path | None,
    paths: OutputPaths,
    sources: list[FrameSource],
    store: Store | None,
) -> App:
    models = models or build_models(config, overrides or ModelOverrides())
    if matcher is None:  # (an empty matcher is falsy: test for None)
        matcher = build_matcher(models, config, gallery_override or config.gallery.dir)
    fps = {source.stream_id: source.nominal_fps or 25.0 for source in sources}
    files_only = all(s.effective_mode == "file" for s in streams)
    progress = files_only and sys.stderr.isatty() if options.progress is None else options.progress
    video = VideoSettings(config.outputs.video_crf, config.outputs.video_preset)
    writers = OutputWriters(
        paths,
        fps,
        display=options.display,
        metrics_port=options.metrics_port,
        progress=progress,
        video=video,
        recorder=build_recorder(config, paths, store, models.embedder.model_id),
        blur_unknown=config.outputs.blur_unknown,
    )
    det = config.detection
    live = {s.name for s in streams if s.effective_mode == "live"}
    # Live streams: embed off the frame path (frames never wait for embeddings). Files only: embed
    # synchronously in the recognition thread, so a file gives the same events on every run.
    off_path = bool(live) if embed_off_path is None else embed_off_path
    worker = EmbedWorker(models.embedder, writers.metrics) if off_path else None
    stop = threading.Event()
    recogniser = build_recogniser(models, config, matcher, worker=worker, observer=writers.metrics, stop=stop)
    pipeline = Pipeline(
        sources,
        models.detector,
        recogniser,
        writers,
        PipelineSettings(det.max_batch, det.max_wait_ms, det.every_n_frames, options.max_frames),
        stop=stop,
        live=live,
        embed_worker=worker,
        observer=writers.metrics,
    )
    writers.watch(pipeline)
    return App(pipeline, writers, options.summary)


def run_app(config: AppConfig, options: RunOptions, overrides: ModelOverrides | None = None) -> RunSummary:
    """Build and run; return the summary."""
    return build_app(config, options, overrides or ModelOverrides()).run()
