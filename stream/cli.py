"""Command-line interface: parse arguments, load config, dispatch, map errors to exit codes.

Exit codes: 0 success, 1 runtime failure, 2 user error (bad config, bad input), 130 interrupted
(Ctrl-C / SIGINT), 143 terminated (SIGTERM). SIGTERM takes the same path as Ctrl-C: the pipeline
stops, outputs (video, events, summary) are finished and every stage thread is joined.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stream.config import AppConfig, ConfigError, WebConfig, load_config, reference_rows, to_masked_yaml
from stream.errors import PipelineError, UserError
from stream.faces.embedder import ModelUnavailableError
from stream.logs import mask_secrets, setup_logging

if TYPE_CHECKING:
    from stream.app import RunOptions
    from stream.faces.models import Models
    from stream.identity.library import Library
    from stream.outputs.summary import RunSummary

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
DEFAULT_CONFIG = Path("config.yaml")

log = logging.getLogger(__name__)


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="AdaFace Stream: recognise faces in live and recorded video.",
        epilog="Without a subcommand, 'run' is assumed. Exit codes: 0 ok, 1 failure, 2 user error, 130 interrupted, 143 terminated (SIGTERM).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_serve(sub)
    _add_config(sub)
    for name in ("embed", "verify", "enroll", "identify", "calibrate", "annotate"):
        _add_model_command(sub, name)
    _add_events(sub)
    _add_model_command(sub, "search")
    _add_review(sub)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: ./{DEFAULT_CONFIG}, built-in defaults if absent)",
    )


def _add_run(sub: argparse._SubParsersAction) -> None:
    from stream.commands.models import add_model_options

    p = sub.add_parser("run", help="recognise faces in the configured streams (none: the built-in demo)")
    _config_option(p)
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="SRC",
        help="file, image folder, URL (rtsp://, lavfi:...) or webcam index; repeat for several",
    )
    p.add_argument("--gallery", type=Path, default=None, help="gallery folder (default: config gallery.dir)")
    p.add_argument("--output", type=Path, default=None, help="annotated video (a folder with several sources)")
    p.add_argument("--events", type=Path, default=None, help="events JSON-lines file")
    p.add_argument("--summary", type=Path, default=None, help="write the run summary JSON here")
    p.add_argument("--tracks-out", type=Path, default=None, help="per-frame tracks, MOT Challenge text format")
    p.add_argument("--display", action="store_true", help="show a window (only when a display exists)")
    p.add_argument("--max-frames", type=int, default=None, help="stop each stream after N frames")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on 127.0.0.1:P")
    p.add_argument(
        "--web", default=None, metavar="HOST:PORT", help="also serve the web app (pages and API) during the run"
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run the streams as worker actors on a Ray cluster: auto, host:port or ray://host:10001 "
        "(overrides cluster.address; needs a PostgreSQL outputs.events_db)",
    )
    add_model_options(p)
    p.set_defaults(handler=cmd_run)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from stream.commands.models import add_model_options

    p = sub.add_parser(
        "serve",
        help="run the configured streams (none: the demo as a live camera) with the web app until stopped",
        description="Run every configured stream (none: the built-in demo clip as a looping live camera) and "
        "serve the web app: live views, events, the REST API (/docs). Stops on Ctrl-C or SIGTERM.",
    )
    _config_option(p)
    p.add_argument(
        "--web", default=None, metavar="HOST:PORT", help="address of the web app (default: config web.host, web.port)"
    )
    p.add_argument("--gallery", type=Path, default=None, help="gallery folder (default: config gallery.dir)")
    p.add_argument("--metrics-port", type=int, default=None, help="also serve Prometheus metrics on 127.0.0.1:P")
    p.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run the streams as worker actors on a Ray cluster: auto, host:port or ray://host:10001 "
        "(overrides cluster.address; needs a PostgreSQL outputs.events_db)",
    )
    add_model_options(p)
    p.set_defaults(handler=cmd_serve)


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the effective config (secrets masked) or the first error")
    _config_option(p)
    p.add_argument("--reference", action="store_true", help="print the config reference table (Markdown)")
    p.set_defaults(handler=cmd_config)


def _add_events(sub: argparse._SubParsersAction) -> None:
    from stream.commands.events import add_parser

    p = add_parser(sub)
    _config_option(p)
    p.set_defaults(handler=cmd_events)


def _add_review(sub: argparse._SubParsersAction) -> None:
    """unknowns, name, not-this, rematch: the library's review of stored faces."""
    from stream.commands.models import add_model_options
    from stream.commands.review import add_parsers

    for name, p in add_parsers(sub).items():
        _config_option(p)
        add_model_options(p)
        p.set_defaults(handler=_REVIEW[name])


def _add_model_command(sub: argparse._SubParsersAction, name: str) -> None:
    """A subcommand that needs the detector and embedder: its module's parser plus shared options."""
    import importlib

    from stream.commands.models import add_model_options

    p = importlib.import_module(f"stream.commands.{name}").add_parser(sub)
    _config_option(p)
    add_model_options(p)
    p.set_defaults(handler=_HANDLERS[name])


def read_config(path: Path | None) -> AppConfig:
    """The explicit file, else ./config.yaml if present, else the built-in defaults."""
    if path is None:
        if not DEFAULT_CONFIG.exists():
            return AppConfig().resolve_paths(Path.cwd())
        path = DEFAULT_CONFIG
    return load_config(path)


def cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(reference_markdown())
        return EXIT_OK
    print(to_masked_yaml(read_config(args.config)), end="")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from stream.app import RunOptions, run_app
    from stream.commands.models import model_overrides

    config = with_cluster(read_config(args.config), args.cluster)
    web = _web_config(config, args.web) if args.web is not None else None
    setup_logging(config.runtime.log_level)
    log_profile(config, stills=False)
    _set_torch_threads(config.runtime.torch_threads)
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames: must be >= 1, got {args.max_frames}")
    options = RunOptions(
        sources=tuple(args.source),
        gallery=args.gallery,
        output=args.output,
        events=args.events,
        summary=args.summary,
        tracks_out=args.tracks_out,
        display=args.display or config.outputs.display,
        max_frames=args.max_frames,
        metrics_port=args.metrics_port or config.runtime.metrics_port,
    )
    if config.cluster is not None:
        summary = _run_on_cluster(config, options, args, web, keep_serving=False)
    elif web is not None:
        from stream.web.serve import run_with_web

        summary = run_with_web(config, options, model_overrides(args), web, keep_serving=False)
    else:
        summary = run_app(config, options, model_overrides(args))
    print(summary.table())
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from stream.app import RunOptions
    from stream.commands.models import model_overrides
    from stream.web.serve import run_with_web

    config = with_cluster(read_config(args.config), args.cluster)
    web = _web_config(config, args.web)
    setup_logging(config.runtime.log_level)
    options = RunOptions(gallery=args.gallery, metrics_port=args.metrics_port or config.runtime.metrics_port)
    if config.cluster is not None:
        summary = _run_on_cluster(config, options, args, web, keep_serving=True)
        print(summary.table())
        return EXIT_OK
    _set_torch_threads(config.runtime.torch_threads)
    summary = run_with_web(config, options, model_overrides(args), web, keep_serving=True)
    print(summary.table())
    return EXIT_OK


def with_cluster(config: AppConfig, address: str | None) -> AppConfig:
    """``config`` with ``--cluster ADDRESS`` applied: the cluster section on (its other keys kept or
    defaulted) at that address. No ``--cluster`` and no ``cluster:``: unchanged (one process)."""
    if address is None:
        return config
    from stream.config import ClusterConfig

    try:
        cluster = (config.cluster or ClusterConfig()).model_copy(update={"address": address})
        cluster = ClusterConfig.model_validate(cluster.model_dump())
    except ValueError as exc:
        raise UserError(f"--cluster {address}: must be auto, ray://host:port or host:port") from exc
    return config.model_copy(update={"cluster": cluster})


def _run_on_cluster(
    config: AppConfig, options: RunOptions, args: argparse.Namespace, web: WebConfig | None, *, keep_serving: bool
) -> RunSummary:
    """The streams as Ray worker actors (``stream.cluster``); with ``web``, the web app on this head
    showing them (``serve`` keeps it up after the runs ended)."""
    from stream.cluster.head import run_on_cluster
    from stream.commands.models import model_overrides

    if web is not None:
        from stream.web.serve import run_cluster_with_web

        return run_cluster_with_web(config, options, model_overrides(args), web, keep_serving=keep_serving)
    return run_on_cluster(config, options, model_overrides(args))


def _web_config(config: AppConfig, address: str | None) -> WebConfig:
    """The web section with ``--web`` applied, the exposure rule checked before anything heavy loads."""
    from stream.web.serve import check_web, web_config

    web = web_config(config, address)
    check_web(web, "--web" if address is not None else "web.host")
    return web


def _models(args: argparse.Namespace) -> tuple[AppConfig, Models]:
    config = read_config(args.config)
    setup_logging(config.runtime.log_level)
    return config, _build_models(config, args)


def _build_models(config: AppConfig, args: argparse.Namespace) -> Models:
    from stream.commands.models import model_overrides
    from stream.faces.models import build_models

    log_profile(config, stills=True)
    _set_torch_threads(config.runtime.torch_threads)
    return build_models(config, model_overrides(args), stills=True)


def log_profile(config: AppConfig, stills: bool) -> None:
    """The first log lines of a command: the profile in use and why, and how it detects faces."""
    log.info("profile: %s", config.profile_note)
    det = config.still_detection() if stills else config.detection
    width = "full size" if det.detect_width is None else f"{det.detect_width} px wide"
    how = f"min face {det.min_face_px} px, on a copy {width}, pyramid factor {det.pyramid_factor}"
    if stills:
        log.info("still images: full-quality detection whatever the profile (%s)", how)
    else:
        every = "every frame" if det.every_n_frames == 1 else f"every {det.every_n_frames} frames"
        between = "known faces re-found" if det.refine_between else "the tracker predicts"
        between = "" if det.every_n_frames == 1 else f", {between} in between"
        log.info("video: full detection %s (%s)%s; gallery photos at full quality", every, how, between)


def _set_torch_threads(count: int) -> None:
    """0 means half the cores: the pipeline runs several torch stages at once, and on a busy
    2-core machine 2 intra-op threads made MTCNN 10-20x slower than 1 (measured)."""
    import torch

    torch.set_num_threads(count or max(1, (os.cpu_count() or 2) // 2))


def cmd_embed(args: argparse.Namespace) -> int:
    from stream.commands.embed import run_embed

    _, models = _models(args)
    summary = run_embed(models, args.input_dir, args.output_dir, args.recursive)
    print("\n".join(summary.lines()))
    print(f"wrote {args.output_dir}/embeddings.npy, faces.csv, aligned/ [{models.embedder.model_id}]")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from stream.commands.verify import format_verdict, run_verify

    config, models = _models(args)
    rec = config.recognition
    verdict = run_verify(models, args.a, args.b, rec.match_threshold, rec.target_far, rec.score_table)
    print(format_verdict(verdict, args.json))
    return EXIT_OK


def cmd_enroll(args: argparse.Namespace) -> int:
    from stream.commands.enroll import run_enroll

    config, models = _models(args)
    text, code = run_enroll(models, args.gallery or config.gallery.dir, args.json, use_cache=config.gallery.cache)
    print(text)
    return code


def cmd_identify(args: argparse.Namespace) -> int:
    from stream.commands.identify import format_identities, run_identify
    from stream.identity.ann import IndexSettings

    config, models = _models(args)
    rec = config.recognition
    faces = run_identify(
        models,
        args.gallery or config.gallery.dir,
        args.image,
        rec.match_threshold,
        rec.min_margin,
        per_image=args.per_image,
        use_cache=config.gallery.cache,
        target_far=rec.target_far,
        score_table=rec.score_table,
        index=IndexSettings.from_recognition(rec),
    )
    print(format_identities(faces, args.json))
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from stream.commands.calibrate import run_calibrate

    config, models = _models(args)
    text, result = run_calibrate(
        models,
        pairs_csv=args.pairs,
        gallery=args.gallery,
        target_far=args.target_far,
        plot_path=args.plot,
        current_threshold=config.recognition.match_threshold,
        use_cache=config.gallery.cache,
        identities_csv=args.identities,
        root=args.root,
        table_path=args.write_table,
    )
    print(json.dumps(result) if args.json else text)
    return EXIT_OK


def cmd_annotate(args: argparse.Namespace) -> int:
    from stream.commands.annotate import WorkerStartError, run_annotate, with_cluster
    from stream.commands.models import model_overrides

    config = with_cluster(read_config(args.config), args.cluster)
    setup_logging(config.runtime.log_level)
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs: must be >= 1, got {args.jobs}")
    try:
        report = run_annotate(
            config,
            args.input_dir,
            args.output_dir,
            recursive=args.recursive,
            jobs=args.jobs,
            force=args.force,
            gallery=args.gallery,
            overrides=model_overrides(args),
        )
    except WorkerStartError as exc:
        if exc.user:
            raise UserError(str(exc)) from None
        print(f"error: {mask_secrets(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    print("\n".join(report.lines()))
    return EXIT_FAILURE if report.count("failed") else EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    import time

    from stream.commands.events import event_query, format_events, run_events
    from stream.store import configured_store_url, open_store

    config = read_config(args.config)
    setup_logging(config.runtime.log_level)
    query = event_query(args, time.time())
    with open_store(args.db or configured_store_url(config), create=False) as store:
        rows = run_events(store, query)
    text = format_events(rows, args.json)
    if text:
        print(text)
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    import time

    from stream.commands.events import parse_time
    from stream.commands.search import format_hits, run_search
    from stream.store import configured_store_url, open_store

    config = read_config(args.config)
    setup_logging(config.runtime.log_level)
    now = time.time()
    since = None if args.since is None else parse_time(args.since, now, option="--since")
    until = None if args.until is None else parse_time(args.until, now, option="--until")
    if not args.image.is_file():
        raise UserError(f"{args.image}: no such image file")
    with open_store(args.db or configured_store_url(config), create=False) as store:
        models = _build_models(config, args)
        crops = args.crops or config.outputs.dir / "search"
        hits = run_search(models, store, args.image, args.top, since, until, crops)
    text = format_hits(hits, args.json)
    if text:
        print(text)
    return EXIT_OK


def _review_library(args: argparse.Namespace) -> Library:
    from stream.commands.review import review_library

    config = read_config(args.config)
    setup_logging(config.runtime.log_level)
    return review_library(config, lambda: _build_models(config, args), args.gallery, args.db)


def _since(args: argparse.Namespace) -> float | None:
    import time

    from stream.commands.events import parse_time

    return None if args.since is None else parse_time(args.since, time.time(), option="--since")


def cmd_unknowns(args: argparse.Namespace) -> int:
    from stream.commands.review import format_unknowns, write_crops

    since = _since(args)
    library = _review_library(args)
    try:
        view = library.unknowns(since)
        crops = write_crops(library, view, args.crops or read_config(args.config).outputs.dir / "unknowns")
    finally:
        library.close()
    print(format_unknowns(view, crops, args.json))
    return EXIT_OK


def cmd_name(args: argparse.Namespace) -> int:
    from stream.commands.review import format_naming

    library = _review_library(args)
    try:
        naming = library.name_group(args.group, args.person)
    finally:
        library.close()
    print(format_naming(naming, args.json))
    return EXIT_OK


def cmd_not_this(args: argparse.Namespace) -> int:
    from stream.commands.review import format_correction

    library = _review_library(args)
    try:
        correction = library.not_this_person(args.event)
    finally:
        library.close()
    print(format_correction(correction, args.json))
    return EXIT_OK


def cmd_rematch(args: argparse.Namespace) -> int:
    from stream.commands.review import format_rematch

    since = _since(args)
    library = _review_library(args)
    try:
        report = library.rematch(since, apply=not args.dry_run)
    finally:
        library.close()
    print(format_rematch(report, args.json))
    return EXIT_OK


_REVIEW: dict[str, Command] = {
    "unknowns": cmd_unknowns,
    "name": cmd_name,
    "not-this": cmd_not_this,
    "rematch": cmd_rematch,
}


_HANDLERS: dict[str, Command] = {
    "embed": cmd_embed,
    "verify": cmd_verify,
    "enroll": cmd_enroll,
    "identify": cmd_identify,
    "calibrate": cmd_calibrate,
    "search": cmd_search,
    "annotate": cmd_annotate,
}


def reference_markdown() -> str:
    lines = ["| key | default | description |", "|---|---|---|"]
    lines += [f"| `{key}` | `{default}` | {desc} |" for key, default, desc in reference_rows()]
    return "\n".join(lines)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: handled exactly like Ctrl-C, but exits with 143."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While inside, SIGTERM raises ``Terminated`` in the main thread (once; a repeat is ignored
    while shutting down). Outside the main thread (signals cannot be set there) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: object) -> None:
        nonlocal fired
        if fired:
            return  # already finishing outputs; SIGKILL remains for a hard stop
        fired = True
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    args = parser.parse_args(argv)
    with _sigterm_as_interrupt():
        return _dispatch(args)


def leave(code: int) -> int:
    """``code``, or, when a pipeline stage thread is still running (stuck in a long native call after
    the stop budget), end the process now with ``code``: tearing the interpreter down under a thread
    inside torch's C++ code can abort it. For the process entry point only (it never returns then)."""
    graph = sys.modules.get("stream.pipeline.graph")
    stuck = graph.stage_threads_alive() if graph is not None else []
    if stuck:
        log.warning("ending now: stage threads still busy (%s)", ", ".join(stuck))
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except (ConfigError, UserError, ModelUnavailableError) as exc:
        print(f"error: {mask_secrets(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except PipelineError as exc:
        user_mistake = isinstance(exc.__cause__, UserError)
        print(f"error: {mask_secrets(str(exc.__cause__) if user_mistake else str(exc))}", file=sys.stderr)
        return EXIT_USAGE if user_mistake else EXIT_FAILURE
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
