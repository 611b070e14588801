"""Build and run the stream app: streams → one detector, one embedder → outputs, and a summary."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stream.closing import close_quietly
from stream.config import DEMO_STREAM, AppConfig, OutputsConfig, StreamConfig
from stream.errors import UserError
from stream.faces.models import ModelOverrides, Models, build_models
from stream.identity.bestshot import BestShotSettings
from stream.identity.gallery import Gallery, enroll
from stream.identity.library import Library, gallery_matcher
from stream.identity.matcher import Matcher
from stream.identity.slot import GallerySlot
from stream.identity.strangers import StrangerBook, StrangerSettings
from stream.identity.thresholds import threshold_from_config
from stream.identity.voting import TrackVoter, VotingSettings
from stream.integrations.hub import build_integrations
from stream.integrations.zones import ZoneSet, ZoneTagger
from stream.logs import mask_secrets
from stream.outputs.events import EventJournal
from stream.outputs.live_view import LiveView
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


def live_demo(config: AppConfig) -> AppConfig:
    """``config`` with the built-in demo clip as one looping 25 fps live stream named ``demo`` (an FFmpeg
    ``lavfi:`` graph, real-time like a camera) and the demo gallery: what ``run.py serve`` shows when no
    stream is configured."""
    from stream.demo import prepare_demo

    clip, gallery = prepare_demo(config.outputs.dir / ".demo")
    if not re.fullmatch(r"[\w./ +-]+", str(clip)):
        raise UserError(f"{clip}: the demo clip's path has characters an FFmpeg graph cannot take; set outputs.dir")
    url = f"lavfi:movie={clip}:loop=0,setpts=N/(25*TB),realtime"
    log.info("no streams configured: serving the built-in demo clip as a looping live camera (%s)", clip)
    return config.model_copy(
        update={
            "streams": (StreamConfig(name=DEMO_STREAM, url=url, mode="live"),),
            "gallery": config.gallery.model_copy(update={"dir": gallery}),
        }
    )


def _check_unique(streams: tuple[StreamConfig, ...]) -> None:
    names = [s.name for s in streams]
    if len(set(names)) != len(names):
        raise UserError(f"--source: two sources share a name ({', '.join(names)}); rename a file")


def build_matcher(models: Models, config: AppConfig, gallery_dir: Path) -> Matcher:
    """The gallery's matcher (no negative examples: see ``build_library``); its threshold scales with the
    gallery size (``stream.identity.thresholds``)."""
    rec, model_id = config.recognition, models.embedder.model_id
    if not gallery_dir.is_dir():
        log.warning("gallery %s not found: every face will be unknown", gallery_dir)
        return gallery_matcher(Gallery(model_id, (), ()), rec)
    gallery = enroll(gallery_dir, models.for_stills(), use_cache=config.gallery.cache, progress=False)
    if not gallery.people:
        log.warning("gallery %s has nobody enrolled: every face will be unknown", gallery_dir)
    else:
        log.info("gallery: %d people (%s)", len(gallery.people), ", ".join(gallery.names))
        log.info("%s", threshold_from_config(model_id, rec, len(gallery.people)).describe())
    return gallery_matcher(gallery, rec)


def build_library(
    config: AppConfig, gallery_dir: Path, models: Models | Callable[[], Models], model_id: str
) -> Library:
    """The run's library (``stream.identity.library``): the gallery folder, the review of stored faces
    and negative examples, through its own connection to the configured store (none when it is off).
    ``models``: what it enrols with after the start (the pipeline's own belong to their threads)."""
    url = configured_store_url(config) if config.outputs.events_sqlite else None
    store = (lambda: open_store(url)) if url is not None else None
    return Library(gallery_dir, config, models=models, model_id=model_id, store=store)


def build_recogniser(
    models: Models,
    config: AppConfig,
    matcher: Matcher,
    *,
    worker: EmbedWorker | None = None,
    observer: LatencyObserver | None = None,
    stop: threading.Event | None = None,
    gallery: GallerySlot | None = None,
    zones: dict[str, ZoneSet] | None = None,
) -> Recogniser:
    """``gallery``: where the library publishes new matchers (None: the matcher stays)."""
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
        gallery=gallery,
        zones=ZoneTagger(zones),
    )


def stream_zones(streams: Sequence[StreamConfig]) -> dict[str, ZoneSet]:
    """Each stream's zones (``streams[].zones``), for the streams that have some."""
    return {s.name: ZoneSet.from_config(s.zones) for s in streams if s.zones}


@dataclass
class App:
    """A built, not yet started, run: the pipeline, the output stage that owns the writers, the models
    (for still-image tools beside it: the web app) and the library (people, unknowns: what a web page
    changes while the streams run)."""

    pipeline: Pipeline
    writers: OutputWriters
    summary_path: Path | None
    models: Models | None = None
    library: Library | None = None

    @property
    def gallery(self) -> Gallery | None:
        """The library's enrolled gallery now, when anybody is in it."""
        gallery = None if self.library is None else self.library.gallery
        return gallery if gallery is not None and gallery.people else None

    def run(self) -> RunSummary:
        """Run every stream to its end (or Ctrl-C / a stage error); the summary is written either way."""
        try:
            self.writers.start()
            self.pipeline.run()
        finally:
            if self.library is not None:
                self.library.close()
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
    view: LiveView | None = None,
    matcher: Matcher | None = None,
    open_stream: Callable[[StreamConfig], FrameSource] = open_source,
) -> App:
    """Open the sources and the event store, build (or take) the models and the gallery, wire the
    pipeline and outputs.

    ``embed_off_path``: embed in a thread of its own (None: when any stream is live; the benchmark
    compares both). ``view``: the output stage publishes frames, status and events into it.
    ``matcher``: the gallery's matcher, built once for many runs (``run.py annotate``'s workers; the
    library then publishes no other: None enrols the gallery now). ``open_stream``: a stream's source
    (a restarted cluster worker wraps it: ``stream.cluster.resume``)."""
    streams, gallery_override = plan_streams(config, options)
    if view is not None:
        for spec in streams:
            view.register(spec.name, spec.effective_mode == "live")
    paths = output_paths(config.outputs, streams, options)
    opened = _Opened(streams, [open_stream(spec) for spec in streams], paths, gallery_override, view)
    opened.store = open_store(configured_store_url(config)) if config.outputs.events_sqlite else None  # fails fast
    try:
        built = models or build_models(config, overrides or ModelOverrides())
        own: Models | Callable[[], Models] = (
            models.for_stills()
            if models
            else (lambda: build_models(config, overrides or ModelOverrides(), stills=True))
        )
        return _wire(config, options, opened, built, embed_off_path, own, matcher)
    except BaseException:
        close_quietly(opened.store, "event store", level=logging.WARNING)
        raise


@dataclass
class _Opened:
    """What ``build_app`` opened before building the models (closed again if building fails)."""

    streams: tuple[StreamConfig, ...]
    sources: list[FrameSource]
    paths: OutputPaths
    gallery_override: Path | None
    view: LiveView | None
    store: Store | None = None


def _wire(
    config: AppConfig,
    options: RunOptions,
    opened: _Opened,
    models: Models,
    embed_off_path: bool | None,
    library_models: Models | Callable[[], Models],
    matcher: Matcher | None = None,
) -> App:
    """``library_models``: what the library enrols later changes with (models of its own, built on the
    first change: the pipeline's belong to its threads; models passed in by tests are shared).
    ``matcher``: prebuilt (the library is not loaded and publishes none: a batch of files)."""
    gallery_dir = opened.gallery_override or config.gallery.dir
    library = build_library(config, gallery_dir, library_models, models.embedder.model_id)
    prebuilt = matcher is not None  # (an empty matcher is falsy: test for None)
    if matcher is None:
        matcher = library.load(models.for_stills())  # the pipeline's models (still detector), before its threads start
        log.info("%s", matcher.describe_search())
    streams, paths = opened.streams, opened.paths
    fps = {source.stream_id: source.nominal_fps or 25.0 for source in opened.sources}
    integrations = build_integrations(config, [s.name for s in streams], matcher.names)  # nothing connects yet
    zones = stream_zones(streams)
    files_only = all(s.effective_mode == "file" for s in streams)
    progress = files_only and sys.stderr.isatty() if options.progress is None else options.progress
    writers = OutputWriters(
        paths,
        fps,
        display=options.display,
        metrics_port=options.metrics_port,
        progress=progress,
        video=VideoSettings(config.outputs.video_crf, config.outputs.video_preset),
        recorder=build_recorder(config, paths, opened.store, models.embedder.model_id),
        blur_unknown=config.outputs.blur_unknown,
        view=opened.view,
        integrations=integrations,
        zones=zones,
    )
    det = config.detection
    live = {s.name for s in streams if s.effective_mode == "live"}
    # Live streams: embed off the frame path (frames never wait for embeddings). Files only: embed
    # synchronously in the recognition thread, so a file gives the same events on every run.
    off_path = bool(live) if embed_off_path is None else embed_off_path
    worker = EmbedWorker(models.embedder, writers.metrics) if off_path else None
    stop = threading.Event()
    recogniser = build_recogniser(
        models,
        config,
        matcher,
        worker=worker,
        observer=writers.metrics,
        stop=stop,
        gallery=None if prebuilt else library.slot,
        zones=zones,
    )
    pipeline = Pipeline(
        opened.sources,
        models.detector,
        recogniser,
        writers,
        PipelineSettings(det.max_batch, det.max_wait_ms, det.every_n_frames, options.max_frames, det.refine_between),
        stop=stop,
        live=live,
        embed_worker=worker,
        observer=writers.metrics,
    )
    writers.watch(pipeline)
    return App(pipeline, writers, options.summary, models, library)


def run_app(config: AppConfig, options: RunOptions, overrides: ModelOverrides | None = None) -> RunSummary:
    """Build and run; return the summary."""
    return build_app(config, options, overrides or ModelOverrides()).run()
