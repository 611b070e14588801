"""``run.py serve`` and ``run.py --web HOST:PORT``: the stream app with the web app beside it.

Order: the exposure rule and the password hash, then the socket (a bad address or a port in use fails
before any model loads), then the app (sources, models, gallery, pipeline) with a ``LiveView`` the
output thread publishes into, then the web app's own parts (the API's detector, the identify service,
the events reader; the app's library), then uvicorn in the ``web`` thread, then the pipeline in the main thread. ``serve``
keeps the web app up after the streams end (files), until Ctrl-C/SIGTERM; ``--web`` stops it with the
run. Either way the web server is stopped in ``finally``.

Threads and owners: the pipeline's threads own what ``docs/architecture.md`` §3.1 says; the web
thread (uvicorn's loop) and its worker threads own the sessions, the login throttle, the API's
detector (behind the identify service's lock) and their own read-only SQLite connections; they read
the ``LiveView`` and the metrics registry (both thread-safe) and share the embedder's weights, whose
``embed`` keeps no state (torch inference mode), so it is never locked against the pipeline. The
library (``App.library``) is called from the web's worker threads under its own lock; it enrols with
models of its own and hands new matchers to the pipeline through its ``GallerySlot``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.app import App, RunOptions, build_app, live_demo
from stream.commands.identify import StillIdentifier
from stream.config import AppConfig, WebConfig, is_loopback
from stream.errors import UserError
from stream.faces.models import FaceDetector, ModelOverrides, Models, build_detector, detector_settings
from stream.identity.library import Library
from stream.identity.matcher import GalleryLike
from stream.outputs.live_view import LiveView
from stream.outputs.summary import RunSummary
from stream.store.urls import configured_store_url
from stream.web.app import WebDeps, WebSettings, create_app
from stream.web.auth import PasswordCheck, check_exposure
from stream.web.events import StoreEventReader
from stream.web.identify import Identifier, IdentifyService, UploadLimits
from stream.web.server import WebServer, bind

__all__ = [
    "LibraryIdentifier",
    "check_web",
    "cluster_web_deps",
    "parse_web_address",
    "run_cluster_with_web",
    "run_with_web",
    "web_config",
    "web_deps",
]

log = logging.getLogger(__name__)


def parse_web_address(text: str, option: str = "--web") -> tuple[str | None, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` → (host or None, port)."""
    match = re.fullmatch(
        r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})|(?P<only>\d{1,5})", text.strip()
    )
    if match is None or int(match["port"] or match["only"]) > 65535:
        raise UserError(f"{option}: expected HOST:PORT (127.0.0.1:8080, [::1]:8080) or PORT, got {text!r}")
    host = match["v6"] or match["host"] or None
    return host, int(match["port"] or match["only"])


def web_config(config: AppConfig, address: str | None) -> WebConfig:
    """The config's ``web`` section with ``--web HOST:PORT`` applied (validated like the file)."""
    if address is None:
        return config.web
    host, port = parse_web_address(address)
    data = config.web.model_dump()
    data.update(port=port, **({"host": host} if host else {}))
    try:
        return WebConfig.model_validate(data)
    except ValueError as exc:
        raise UserError(f"--web {address}: {str(exc).splitlines()[-1].strip()}") from None


def check_web(web: WebConfig, option: str = "web.host") -> None:
    """The exposure rule, before anything is built (one ``error:`` line and exit 2 when broken)."""
    check_exposure(web.host, web.password is not None, option)


@dataclass(frozen=True)
class _NoGallery:
    """An empty gallery for the identify API when nobody is enrolled: every face is unknown."""

    model_id: str
    names: tuple[str, ...] = ()
    people: tuple[()] = ()

    @property
    def templates(self) -> np.ndarray:
        return np.zeros((0, 512), np.float32)


def run_with_web(
    config: AppConfig,
    options: RunOptions,
    overrides: ModelOverrides,
    web: WebConfig,
    *,
    keep_serving: bool,
    models: Models | None = None,
    api_detector: FaceDetector | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run the streams with the web app (see the module notes); ``serve`` with no stream shows the demo
    as a live camera. ``models``/``api_detector``: given instead of built (tests, benchmarks)."""
    if keep_serving and not options.sources and not config.streams:
        config = live_demo(config)

    def start(view: LiveView, password: PasswordCheck | None) -> tuple[WebDeps, Callable[[], RunSummary]]:
        app = build_app(config, options, overrides, models=models, view=view)
        return web_deps(config, app, view, web, password, overrides, api_detector), app.run

    return _serve(web, start, keep_serving=keep_serving, on_ready=on_ready)


def _serve(
    web: WebConfig,
    start: Callable[[LiveView, PasswordCheck | None], tuple[WebDeps, Callable[[], RunSummary]]],
    *,
    keep_serving: bool,
    on_ready: Callable[[str], None] | None,
) -> RunSummary:
    """The web app around a run: bind first (the exposure rule is checked before anything is built),
    ``start`` builds the run and its web parts, the server starts, the run runs; with ``keep_serving``
    the pages stay up after the run until Ctrl-C / SIGTERM."""
    check_web(web)
    password = PasswordCheck.from_secret(web.password.get_secret_value()) if web.password else None
    sock = bind(web.host, web.port)
    server: WebServer | None = None
    try:
        deps, run = start(LiveView(max_fps=web.live_fps), password)
        server = WebServer(create_app(deps), sock, deps.closing)
        server.start()  # from here on the server owns (and closes) the socket
        log.info("web app: %s (%s)", server.url, "login required" if password else "no login: loopback only")
        if on_ready is not None:
            on_ready(server.url)
        summary = run()
        while keep_serving and server.alive:  # files ended: keep the pages up until Ctrl-C / SIGTERM
            time.sleep(0.2)
        return summary
    finally:
        if server is not None:
            server.stop()
        else:
            sock.close()


def web_deps(
    config: AppConfig,
    app: App,
    view: LiveView,
    web: WebConfig,
    password: PasswordCheck | None,
    overrides: ModelOverrides,
    api_detector: FaceDetector | None,
) -> WebDeps:
    outputs, rec = config.outputs, config.recognition
    limits = UploadLimits(max_bytes=round(web.max_upload_mb * 1_000_000), max_pixels=web.max_upload_pixels)
    identify = None
    if app.models is not None:
        started = time.perf_counter()
        # a still image: full-quality detection whatever the profile (as run.py identify)
        device = overrides.device if overrides is not None else None
        detector = api_detector or build_detector(detector_settings(config.still_detection(), device))
        log.debug("the API's own detector built in %.2f s", time.perf_counter() - started)
        api_models = Models(detector, app.models.embedder, app.models.batch_size)
        model_id = app.models.embedder.model_id

        def still(gallery: GalleryLike | None) -> StillIdentifier:
            return StillIdentifier(
                api_models,
                gallery if gallery is not None and gallery.names else _NoGallery(model_id),
                rec.match_threshold,
                rec.min_margin,
                target_far=rec.target_far,
                score_table=rec.score_table,
            )

        identifier: Identifier = still(app.gallery) if app.library is None else LibraryIdentifier(app.library, still)
        identify = IdentifyService(identifier, limits)
    return WebDeps(
        view=view,
        events=StoreEventReader(configured_store_url(config)) if outputs.events_sqlite else None,
        snapshots=outputs.dir / "snapshots" if outputs.snapshots else None,
        identify=identify,
        metrics=app.writers.metrics.render,
        people=_people(app),
        library=app.library,
        settings=WebSettings(
            password=password,
            session_ttl_s=web.session_hours * 3600.0,
            loopback_only_hosts=password is None and is_loopback(web.host),  # no login: no DNS rebinding either
            uploads=limits,
        ),
    )


def run_cluster_with_web(
    config: AppConfig,
    options: RunOptions,
    overrides: ModelOverrides,
    web: WebConfig,
    *,
    keep_serving: bool,
    models: Callable[[], Models] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> RunSummary:
    """``serve --cluster`` / ``run --web --cluster``: the streams run on Ray worker actors
    (``stream.cluster.head.run_on_cluster``); the web app runs here, on the head, and shows them
    through a ``LiveView`` that a poller fills from the workers' own views (``stream.cluster.live``).
    Same order and exposure rule as ``run_with_web``: the socket is bound before Ray is even
    reached. ``models``: made in each worker (tests pass fakes)."""
    from stream.cluster import ray_adapter
    from stream.cluster.head import ClusterRun, run_on_cluster
    from stream.cluster.live import ViewPoller, worker_feeds

    def start(view: LiveView, password: PasswordCheck | None) -> tuple[WebDeps, Callable[[], RunSummary]]:
        @contextlib.contextmanager
        def polled(run: ClusterRun) -> Iterator[None]:
            poller = ViewPoller(view, worker_feeds(run.placed), ray_adapter.gather, fps=web.live_fps)
            poller.start()
            ended = False
            try:
                yield
                ended = True
            finally:
                poller.stop(final=ended)  # the runs ended: read each stream's last status (``ended``)

        def run() -> RunSummary:
            return run_on_cluster(config, options, overrides, models=models, watch=polled)

        return cluster_web_deps(config, view, web, password), run

    return _serve(web, start, keep_serving=keep_serving, on_ready=on_ready)


def cluster_web_deps(config: AppConfig, view: LiveView, web: WebConfig, password: PasswordCheck | None) -> WebDeps:
    """The head's web app: the streams from ``view``, the events from the shared store; no models here
    (no ``/api/identify``), no library and no metrics (those are the workers')."""
    outputs = config.outputs
    limits = UploadLimits(max_bytes=round(web.max_upload_mb * 1_000_000), max_pixels=web.max_upload_pixels)
    return WebDeps(
        view=view,
        events=StoreEventReader(configured_store_url(config)) if outputs.events_sqlite else None,
        snapshots=outputs.dir / "snapshots" if outputs.snapshots else None,
        settings=WebSettings(
            password=password,
            session_ttl_s=web.session_hours * 3600.0,
            loopback_only_hosts=password is None and is_loopback(web.host),
            uploads=limits,
        ),
    )


class LibraryIdentifier:
    """``POST /api/identify`` against the library's gallery as it is now: the ``StillIdentifier`` is made
    again from the library's enrolled gallery whenever the library published a new matcher (an upload,
    a rename, a named group), so the API knows whom the streams know. Called under the identify
    service's lock; reads the version from the library's slot (its own lock)."""

    def __init__(self, library: Library, build: Callable[[GalleryLike | None], StillIdentifier]) -> None:
        self._library = library
        self._slot = library.slot
        self._build = build
        self._version: int | None = None
        self._identifier: StillIdentifier | None = None

    def __call__(self, image: np.ndarray) -> list[dict[str, Any]]:
        version = self._slot.version
        if self._identifier is None or version != self._version:
            self._identifier = self._build(self._library.gallery)
            self._version = version
        return self._identifier(image)


def _people(app: App) -> Callable[[], Sequence[str]] | tuple[str, ...]:
    """The names the streams know now: read from the library's slot (its own lock only, so a page never
    waits for an enrolment in progress)."""
    if app.library is None:
        return app.gallery.names if app.gallery is not None else ()
    slot = app.library.slot
    return lambda: slot.matcher.names
