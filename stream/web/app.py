"""The web app (FastAPI): pages, live MJPEG views, server-sent events and the REST API.

``create_app(deps)`` builds it from ``WebDeps``: the pipeline's ``LiveView`` (read-only), an
``EventReader``, the snapshots folder, the identify service and the metrics renderer. Nothing here
touches a pipeline stage: the app only reads the view, the stored events and the metrics registry.

Routes (``/docs`` lists the API with its parameters; ``/openapi.json`` is the schema):

- pages: ``/`` dashboard, ``/events`` search, ``/people`` (the gallery), ``/unknowns`` (unnamed faces),
  ``/login``, ``/logout``, ``/docs``;
- ``/streams/{name}/live.mjpeg`` (newest frame, at most ``web.live_fps``; a slow client gets fewer
  frames), ``/streams/{name}/latest.jpg``;
- ``/api/health`` (public), ``/api/streams``, ``/api/events``, ``/api/events/stream`` (SSE),
  ``/api/events/{id}``, ``/api/events/{id}/snapshot``, ``/api/snapshots/{name}``, ``/api/identify``,
  ``/api/token``, ``/metrics``; ``/snapshots/{name}`` (a snapshot by file name: the links of alerts);
- the library (``stream.web.library``): ``/api/people`` (people, photos, uploads, delete, rename),
  ``/api/unknowns`` (groups of unnamed faces: name, ignore, merge, remove a face), ``/api/faces/{id}/crop.jpg``,
  ``/api/events/{id}/not-this-person``. Its calls run in worker threads of their own (they may enrol).

Security (``Guard``, a plain ASGI middleware in front of everything): with a password every route but
the login page, ``/static`` and ``/api/health`` needs a session (HttpOnly SameSite=Strict cookie, or
``Authorization: Bearer`` token from ``POST /api/token``): pages redirect to the login page, the rest
answer 401. A state-changing request (POST...) whose Origin/Referer is another site is refused (403),
and one authenticated by the cookie must carry a same-origin Origin or Referer. Bound to loopback
without a password, the Host header must name loopback (no DNS rebinding). Bodies are capped (413 before the app reads past
the cap). Errors are JSON ``{"error": "..."}``; bad input is a 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stream.commands.events import parse_time as parse_cli_time
from stream.errors import UserError
from stream.identity.photos import NotFound, Upload
from stream.logs import mask_secrets
from stream.outputs.live_view import LiveView
from stream.types import iso_utc
from stream.web.auth import LoginThrottle, PasswordCheck, Sessions, same_origin
from stream.web.events import (
    EVENT_KINDS,
    UNKNOWN,
    EventFilter,
    EventReader,
    event_json,
    parse_time,
    snapshot_file,
    snapshot_name,
)
from stream.web.identify import IdentifyService, UploadError, UploadLimits, check_image, check_size
from stream.web.library import LibraryApi, LibraryRunner, check_file_part, check_person_part, error_status, image_type

__all__ = ["COOKIE", "WebDeps", "WebSettings", "create_app"]

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
COOKIE = "adaface_session"
PUBLIC_PATHS = frozenset({"/login", "/api/health", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_NO_EVENTS = "events are not stored in this app (outputs.events_sqlite is off)"
_BROKEN_STORE = "the event store cannot be read right now"
_NO_LIBRARY = "the library (people and unknown faces) is not available in this app"
MAX_ID = 2**63 - 1  # ids are 64-bit in the store
SMALL_BODY = 64 * 1024  # every request body but an upload
MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around the file
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
)


@dataclass(frozen=True)
class WebSettings:
    """``password``: None serves without login (loopback only: see ``auth.check_exposure``).
    ``loopback_only_hosts``: refuse Host headers that do not name loopback (set when bound to loopback
    without a password: a page of another site whose name resolves to 127.0.0.1 gets nothing)."""

    password: PasswordCheck | None = None
    session_ttl_s: float = 12 * 3600.0
    loopback_only_hosts: bool = False
    frame_poll_s: float = 0.02
    event_poll_s: float = 0.2
    keepalive_s: float = 15.0
    events_backlog: int = 20
    latest_wait_s: float = 2.0
    page_size: int = 50
    uploads: UploadLimits = field(default_factory=UploadLimits)
    max_photos: int = 20  # photos in one upload to /api/people/{name}/photos

    @property
    def photos_body_limit(self) -> int:
        """The largest request body of a photo upload: 10 photos of the largest size (and the multipart)."""
        return 10 * self.uploads.max_bytes + MULTIPART_SLACK


@dataclass(frozen=True)
class WebDeps:
    """What the web app reads; all thread-safe for readers. ``library``: the app's library (people, unknown
    faces; ``stream.identity.library.Library``), or None; ``people``: the known names (for the pages'
    suggestions), or a function giving them now."""

    view: LiveView
    events: EventReader | None = None
    snapshots: Path | None = None
    identify: IdentifyService | None = None
    metrics: Callable[[], bytes] | None = None
    people: Sequence[str] | Callable[[], Sequence[str]] = ()
    library: LibraryApi | None = None
    settings: WebSettings = field(default_factory=WebSettings)
    closing: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)


# ---------------------------------------------------------------- response models (for /docs)


class Health(BaseModel):
    status: str
    uptime_s: float
    streams: int
    streams_up: int


class StreamInfo(BaseModel):
    name: str
    live: bool
    state: str
    fps: float
    frames: int
    frames_in: int
    dropped: int
    reconnects: int
    decode_errors: int
    last_frame_at: str | None
    last_frame_age_s: float | None
    reason: str | None
    viewers: int
    live_url: str
    latest_url: str


class EventsPage(BaseModel):
    model_config = ConfigDict(extra="allow")

    events: list[dict[str, Any]]
    limit: int
    offset: int
    next_offset: int | None


class Face(BaseModel):
    box: list[float]
    person: str | None
    score: float | None
    margin: float


class Token(BaseModel):
    token: str
    token_type: str
    expires: str


class ErrorBody(BaseModel):
    error: str


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit:,} bytes")
        self.limit = limit


# ---------------------------------------------------------------- the app


def create_app(deps: WebDeps) -> FastAPI:
    settings = deps.settings
    sessions = Sessions(settings.session_ttl_s)
    throttle = LoginThrottle()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app = FastAPI(
        title="AdaFace Stream",
        summary="Live face recognition: streams, events, identify.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    _error_handlers(app)

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.update(password=settings.password is not None, path=request.url.path)
        return templates.TemplateResponse(request, name, context, status_code=status)

    # ------------------------------------------------------------ login

    @app.get("/login", include_in_schema=False, response_model=None)
    def login_page(request: Request, next: str = "/") -> Response:
        if settings.password is None:
            return RedirectResponse(_safe_next(next), status_code=303)
        return page(request, "login.html", next=_safe_next(next), error=None)

    @app.post("/login", include_in_schema=False, response_model=None)
    async def login(
        request: Request, password: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
    ) -> Response:
        target = _safe_next(next)
        if settings.password is None:
            return RedirectResponse(target, status_code=303)
        ok, error = await _check_password(settings.password, throttle, _client(request), password)
        if not ok:
            return page(request, "login.html", status=429 if "many" in error else 401, next=target, error=error)
        session = sessions.issue()
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            session.token,
            max_age=int(settings.session_ttl_s),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> RedirectResponse:
        sessions.revoke(request.cookies.get(COOKIE))
        response = RedirectResponse("/login" if settings.password else "/", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.post(
        "/api/token",
        tags=["auth"],
        response_model=Token,
        responses={401: {"model": ErrorBody}, 429: {"model": ErrorBody}},
    )
    async def token(request: Request, password: Annotated[str, Form()]) -> Any:
        """Trade the password (form field ``password``) for a bearer token (``Authorization: Bearer <token>``)."""
        if settings.password is None:
            return JSONResponse({"error": "no password is set: the API needs no token"}, status_code=404)
        ok, error = await _check_password(settings.password, throttle, _client(request), password)
        if not ok:
            return JSONResponse({"error": error}, status_code=429 if "many" in error else 401)
        session = sessions.issue()
        return Token(token=session.token, token_type="bearer", expires=iso_utc(session.expires) or "")

    # ------------------------------------------------------------ pages

    @app.get("/", include_in_schema=False)
    def dashboard(request: Request) -> HTMLResponse:
        return page(request, "dashboard.html", streams=deps.view.statuses())

    @app.get("/events", include_in_schema=False)
    def events_page(
        request: Request,
        person: str = "",
        stream: str = "",
        since: str = "",
        until: str = "",
        kind: str = "",
        offset: int = 0,
    ) -> HTMLResponse:
        form = {"person": person, "stream": stream, "since": since, "until": until, "kind": kind}
        error, status, rows, more = None, 200, [], False
        offset = max(offset, 0)
        try:
            query = _filter(person, stream, since, until, [kind] if kind else [], settings.page_size + 1, offset)
        except ValueError as exc:
            error, status = str(exc), 400
        else:
            found = _read_events(deps.events, query)
            if found is None:
                error, status = (_NO_EVENTS if deps.events is None else _BROKEN_STORE), 503
            else:
                more, rows = len(found) > settings.page_size, [event_json(e) for e in found[: settings.page_size]]
        link = {k: v for k, v in form.items() if v}
        return page(
            request,
            "events.html",
            status=status,
            form=form,
            error=error,
            rows=rows,
            kinds=EVENT_KINDS,
            streams=deps.view.streams(),
            people=_names(deps.people),
            unknown=UNKNOWN,
            library=deps.library is not None,
            newer=None if offset == 0 else "?" + urlencode({**link, "offset": max(0, offset - settings.page_size)}),
            older="?" + urlencode({**link, "offset": offset + settings.page_size}) if more else None,
            offset=offset,
        )

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        return page(request, "docs.html", operations=_operations(app.openapi()))

    # ------------------------------------------------------------ live views

    @app.get(
        "/streams/{name}/live.mjpeg",
        tags=["streams"],
        response_class=StreamingResponse,
        responses={200: {"content": {"multipart/x-mixed-replace": {}}}, 404: {"model": ErrorBody}},
    )
    async def live_mjpeg(name: str) -> StreamingResponse:
        """The stream's newest annotated frames as MJPEG (multipart/x-mixed-replace), at most ``web.live_fps``
        a second; a client that reads slowly gets fewer frames, never old ones."""
        _known_stream(deps.view, name)
        return StreamingResponse(
            _mjpeg(deps, name),
            media_type="multipart/x-mixed-replace; boundary=frame",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/streams/{name}/latest.jpg",
        tags=["streams"],
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )
    async def latest_jpeg(name: str) -> Response:
        """The stream's newest annotated frame as one JPEG (waits up to 2 s for one)."""
        _known_stream(deps.view, name)
        deps.view.request_frame(name)
        deadline = time.monotonic() + settings.latest_wait_s
        while True:
            encoded = await run_in_threadpool(deps.view.jpeg, name)
            if encoded is not None:
                return Response(encoded[1], media_type="image/jpeg", headers={"Cache-Control": "no-store"})
            if time.monotonic() > deadline or deps.closing.is_set():
                return JSONResponse({"error": f"stream {name}: no frame yet"}, status_code=503)
            await asyncio.sleep(settings.frame_poll_s * 5)

    # ------------------------------------------------------------ API

    @app.get("/api/health", tags=["status"], response_model=Health)
    def health() -> Health:
        """Liveness (no login needed): the web app answers; how many streams are up."""
        statuses = deps.view.statuses()
        return Health(
            status="ok",
            uptime_s=round(time.time() - deps.started, 1),
            streams=len(statuses),
            streams_up=sum(s.state == "up" for s in statuses),
        )

    @app.get("/api/streams", tags=["streams"], response_model=list[StreamInfo])
    def streams() -> list[StreamInfo]:
        """Every stream's status: up/down/ended, frames/s over the last 5 s, frames, drops, reconnects."""
        out = []
        for s in deps.view.statuses():
            data = s.to_dict()
            data["last_frame_at"] = iso_utc(s.last_frame_at)
            q = quote(s.name)
            out.append(StreamInfo(**data, live_url=f"/streams/{q}/live.mjpeg", latest_url=f"/streams/{q}/latest.jpg"))
        return out

    @app.get(
        "/api/events",
        tags=["events"],
        response_model=EventsPage,
        responses={400: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )
    def events(
        person: Annotated[str | None, Query(description="a person, or 'unknown' for events without one")] = None,
        stream: Annotated[str | None, Query(description="a stream name")] = None,
        since: Annotated[
            str | None, Query(description="from this time on (ISO 8601, UTC if no offset; or Unix s)")
        ] = None,
        until: Annotated[str | None, Query(description="before this time (ISO 8601 or Unix s)")] = None,
        kind: Annotated[
            list[str] | None, Query(description="event kinds (repeat, or comma-separated): any of them")
        ] = None,
        limit: Annotated[int, Query(description="at most this many (1-1000)")] = 100,
        offset: Annotated[int, Query(description="skip this many (paging)")] = 0,
    ) -> Any:
        """Stored events, newest first, filtered and paged."""
        try:
            query = _filter(person or "", stream or "", since or "", until or "", kind or [], limit, offset)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        found = _read_events(deps.events, query)
        if found is None:
            return JSONResponse({"error": _NO_EVENTS if deps.events is None else _BROKEN_STORE}, status_code=503)
        rows = [event_json(e) for e in found]
        return EventsPage(
            events=rows,
            limit=query.limit,
            offset=query.offset,
            next_offset=query.offset + len(rows) if len(rows) == query.limit else None,
        )

    @app.get("/api/events/stream", tags=["events"], response_class=StreamingResponse)
    async def event_stream(request: Request) -> StreamingResponse:
        """Live events as server-sent events (``text/event-stream``): each ``data`` is an event's JSON
        with its ``seq`` as the SSE id (a reconnecting client resumes after ``Last-Event-ID``); starts with
        the last few events. A client that falls behind loses the oldest and gets an ``event: lost``."""
        last = request.headers.get("last-event-id", "")
        after = int(last) if last.isdigit() else None
        return StreamingResponse(
            _sse(deps, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/events/{event_id}", tags=["events"], responses={404: {"model": ErrorBody}})
    def event(event_id: int) -> Any:
        """One stored event."""
        found = _read_event(deps.events, event_id)
        if found is None:
            return JSONResponse({"error": f"event {event_id}: not found"}, status_code=404)
        return event_json(found)

    @app.get(
        "/api/events/{event_id}/snapshot",
        tags=["events"],
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorBody}},
    )
    def event_snapshot(event_id: int) -> Response:
        """The best-shot JPEG of an identity event."""
        found = _read_event(deps.events, event_id)
        name = snapshot_name(found.snapshot) if found is not None else None
        path = snapshot_file(deps.snapshots, name) if name is not None else None
        if path is None:
            return JSONResponse({"error": f"event {event_id}: no snapshot"}, status_code=404)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=5"})

    @app.get(
        "/api/snapshots/{name}",
        tags=["events"],
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorBody}},
    )
    def snapshot(name: str) -> Response:
        """A snapshot by file name (as in the live event feed's ``snapshot_url``)."""
        path = snapshot_file(deps.snapshots, name)
        if path is None:
            return JSONResponse({"error": "snapshot not found"}, status_code=404)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=5"})

    @app.post(
        "/api/identify",
        tags=["identify"],
        response_model=list[Face],
        responses={
            400: {"model": ErrorBody},
            413: {"model": ErrorBody},
            415: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
    )
    async def identify(file: Annotated[UploadFile, File(description="an image (JPEG, PNG, WebP, BMP, ...)")]) -> Any:
        """Name every face of an uploaded image against the gallery: the list ``run.py identify --json``
        prints (box, person or null, score, margin), with the models already loaded."""
        service = deps.identify
        if service is None:
            return JSONResponse({"error": "identify is not available in this app"}, status_code=503)
        try:
            if file.size is not None:
                service.check_size(file.size)
            data = await file.read(service.limits.max_bytes + 1)
            faces = await run_in_threadpool(service.identify, data)
        except UploadError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        finally:
            await file.close()
        return JSONResponse(_clean(faces))

    @app.get("/metrics", tags=["status"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics: the same registry as ``--metrics-port``."""
        if deps.metrics is None:
            return JSONResponse({"error": "no metrics in this app"}, status_code=404)
        return Response(deps.metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get(
        "/snapshots/{name}",
        tags=["events"],
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorBody}},
    )
    def snapshot_link(name: str) -> Response:
        """A snapshot by file name, for links in alerts (``<web base URL>/snapshots/<file name>``); with a
        password a browser is sent to the login page first, a tool sends its bearer token."""
        path = snapshot_file(deps.snapshots, name)
        if path is None:
            return JSONResponse({"error": "snapshot not found"}, status_code=404)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=5"})

    _library_routes(app, deps, page)

    limits = deps.identify.limits.max_bytes + MULTIPART_SLACK if deps.identify else SMALL_BODY
    body_limits = ((r"/api/identify", limits), (r"/api/people/.+/photos", settings.photos_body_limit))
    app.add_middleware(Guard, settings=settings, sessions=sessions, body_limits=body_limits)
    return app


# ---------------------------------------------------------------- the library


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the person's new name")


class NameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    person: str = Field(description="a new or existing person's name")


class MergeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    other: int = Field(alias="with", ge=0, le=MAX_ID, description="the other group's id")


GroupId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="a group's id (GET /api/unknowns)")]
FaceId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="a stored face's id")]
EventId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="an identity event's id")]
_LIBRARY_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 404, 409, 503)}


def _library_routes(app: FastAPI, deps: WebDeps, page: Callable[..., HTMLResponse]) -> None:
    """The library's routes and pages (``stream.web.library``); every call runs in a worker thread."""
    settings = deps.settings
    run = LibraryRunner()

    async def call(work: Callable[[LibraryApi], Any]) -> tuple[Any, JSONResponse | None]:
        """``work(library)`` in a worker thread: (its result, None), or (None, the error's response)."""
        library = deps.library
        if library is None:
            return None, JSONResponse({"error": _NO_LIBRARY}, status_code=503)
        try:
            return await run(work, library), None
        except Exception as exc:
            status = error_status(exc)
            if status is None:
                raise
            message = _library_message(exc)
            if status >= 500:
                log.warning("library: %s", message)
            return None, JSONResponse({"error": message}, status_code=status)

    async def answer(work: Callable[[LibraryApi], Any]) -> Response:
        """``call``, answered with the result's ``to_dict()`` (null for None)."""
        result, error = await call(work)
        if error is not None:
            return error
        return JSONResponse(_clean(None if result is None else result.to_dict()))

    # ------------------------------------------------------------ people

    @app.get("/api/people", tags=["library"], responses=_LIBRARY_ERRORS)
    async def people() -> Response:
        """Everybody in the gallery: ``{model_id, threshold, version, people}``, each person with every photo
        (``used``, or ``rejected`` with the reason: no face, two faces, too small, blurry, outlier...),
        its face size, blur and detection score, and the template's quality. Hand edits of the folder
        are picked up first."""
        return await answer(_synced_people)

    @app.get("/api/people/{name}", tags=["library"], responses=_LIBRARY_ERRORS)
    async def person(name: str) -> Response:
        """One person (as in ``GET /api/people``)."""
        return await answer(lambda lib: lib.person(check_person_part(name)))

    @app.get(
        "/api/people/{name}/photos/{file:path}",
        tags=["library"],
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, **_LIBRARY_ERRORS},
    )
    async def photo(name: str, file: str) -> Response:
        """A photo of a person (one of the files listed for them; nothing else of the server)."""

        def locate(lib: LibraryApi) -> tuple[Path, str]:
            path = lib.photo_path(check_person_part(name), check_file_part(file))
            kind, real = image_type(path), path.resolve()
            if kind is None or not real.is_relative_to(lib.gallery_dir.resolve()) or not real.is_file():
                raise NotFound(f"no photo {file[:80]!r} of {name[:64]!r}")
            return real, kind

        found, error = await call(locate)
        if error is not None:
            return error
        path, kind = found
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "private, max-age=5"})

    @app.post(
        "/api/people/{name:path}/photos",  # a name with / is a clear 400, not a route that is not there
        tags=["library"],
        responses={**_LIBRARY_ERRORS, 413: {"model": ErrorBody}, 415: {"model": ErrorBody}},
    )
    async def add_photos(
        name: str,
        files: Annotated[list[UploadFile], File(description="photos (JPEG, PNG, WebP or BMP); repeat the field")],
    ) -> Response:
        """Add photos to a person (made when new): all or nothing. Each photo is checked (an image, within
        ``web.max_upload_mb`` and ``web.max_upload_pixels``; at most 20 at once), stored under a name made
        from its original's letters and digits, and enrolled; the answer is the person with each photo's
        status. Running streams use the new templates from their next vote."""
        try:
            if len(files) > settings.max_photos:
                raise UploadError(400, f"files: {len(files)} photos at once; at most {settings.max_photos}")
            uploads = []
            for index, upload in enumerate(files, 1):
                label = _upload_label(upload.filename, index)
                if upload.size is not None:
                    check_size(upload.size, settings.uploads, label)
                data = await upload.read(settings.uploads.max_bytes + 1)
                check_image(data, settings.uploads, label)
                uploads.append(Upload(upload.filename or "", data))
        except UploadError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        finally:
            for upload in files:
                await upload.close()
        return await answer(lambda lib: lib.add_photos(check_person_part(name), uploads))

    @app.delete("/api/people/{name}/photos/{file:path}", tags=["library"], responses=_LIBRARY_ERRORS)
    async def delete_photo(name: str, file: str) -> Response:
        """Delete one photo of a person; the person as now enrolled."""
        return await answer(lambda lib: lib.delete_photo(check_person_part(name), check_file_part(file)))

    @app.delete("/api/people/{name}", tags=["library"], responses=_LIBRARY_ERRORS)
    async def delete_person(name: str) -> Response:
        """Delete a person: their folder and impostor examples (their past events keep the name)."""
        return await answer(lambda lib: lib.delete_person(check_person_part(name)))

    @app.post("/api/people/{name}/rename", tags=["library"], responses=_LIBRARY_ERRORS)
    async def rename_person(name: str, body: RenameBody) -> Response:
        """Rename a person (JSON ``{"name": NEW}``): the folder, and their faces, tracks, events and impostor
        examples in the store."""
        return await answer(lambda lib: lib.rename_person(check_person_part(name), body.name))

    # ------------------------------------------------------------ unknowns

    @app.get("/api/unknowns", tags=["library"], responses=_LIBRARY_ERRORS)
    async def unknowns(
        since: Annotated[
            str | None,
            Query(description="only groups seen from then on: ISO 8601 (UTC if no offset), Unix s, or an age (7d, 2h)"),
        ] = None,
    ) -> Response:
        """The unnamed stored faces grouped by person, most recently seen first: each group's id, count, first
        and last seen, streams, and its best crops (those that pass the enrolment gates) with size and blur."""
        try:
            start = _since(since)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return await answer(lambda lib: lib.unknowns(start))

    @app.get("/api/unknowns/{group_id}", tags=["library"], responses=_LIBRARY_ERRORS)
    async def group(group_id: GroupId) -> Response:
        """One group of unnamed faces."""
        return await answer(lambda lib: lib.group(group_id))

    @app.get(
        "/api/faces/{face_id}/crop.jpg",
        tags=["library"],
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, **_LIBRARY_ERRORS},
    )
    async def face_crop(face_id: FaceId) -> Response:
        """A stored face's crop (JPEG)."""
        data, error = await call(lambda lib: lib.face_crop(face_id))
        if error is not None:
            return error
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.post("/api/unknowns/{group_id}/name", tags=["library"], responses=_LIBRARY_ERRORS)
    async def name_group(group_id: GroupId, body: NameBody) -> Response:
        """Name a group (JSON ``{"person": NAME}``, a new or existing person): its faces, tracks and events are
        relabelled, its best crops join the gallery and are enrolled."""
        return await answer(lambda lib: lib.name_group(group_id, body.person))

    @app.post("/api/unknowns/{group_id}/ignore", tags=["library"], responses=_LIBRARY_ERRORS)
    async def ignore_group(group_id: GroupId) -> Response:
        """Ignore a group: never offered again; its templates count against everybody."""
        return await answer(lambda lib: lib.ignore_group(group_id))

    @app.post("/api/unknowns/{group_id}/merge", tags=["library"], responses=_LIBRARY_ERRORS)
    async def merge_groups(group_id: GroupId, body: MergeBody) -> Response:
        """Merge two groups (JSON ``{"with": OTHER_ID}``); the merged group (its id is the smaller)."""
        return await answer(lambda lib: lib.merge_groups(group_id, body.other))

    @app.delete("/api/unknowns/{group_id}/faces/{face_id}", tags=["library"], responses=_LIBRARY_ERRORS)
    async def remove_face(group_id: GroupId, face_id: FaceId) -> Response:
        """Take a face out of its group (it stands alone); the rest of the group, or null when none is left."""
        return await answer(lambda lib: lib.remove_face(group_id, face_id))

    @app.post("/api/events/{event_id}/not-this-person", tags=["library"], responses=_LIBRARY_ERRORS)
    async def not_this_person(event_id: EventId) -> Response:
        """The identity event named the wrong person: the track's face becomes an impostor example of that
        person and the track is relabelled unknown. 409 while the track is still on screen (its face is
        stored when it ends)."""
        return await answer(lambda lib: lib.not_this_person(event_id))

    # ------------------------------------------------------------ pages

    async def library_page(
        request: Request, name: str, work: Callable[[LibraryApi], Any], **context: Any
    ) -> HTMLResponse:
        found, error = await call(work)
        status, message = 200, None
        if error is not None:
            status, message = error.status_code, json.loads(bytes(error.body))["error"]
        return page(request, name, status=status, error=message, data=found, **context)

    @app.get("/people", include_in_schema=False)
    async def people_page(request: Request) -> HTMLResponse:
        return await library_page(
            request,
            "people.html",
            lambda lib: _synced_people(lib).to_dict(),
            max_photos=settings.max_photos,
            max_mb=settings.uploads.max_bytes / 1_000_000,
        )

    @app.get("/unknowns", include_in_schema=False)
    async def unknowns_page(request: Request, since: str = "") -> HTMLResponse:
        try:
            start = _since(since)
        except ValueError as exc:
            return page(request, "unknowns.html", status=400, error=str(exc), data=None, since=since)

        def work(lib: LibraryApi) -> dict[str, Any]:
            names = [p["name"] for p in lib.people().to_dict()["people"]]
            return {**lib.unknowns(start).to_dict(), "names": names}

        return await library_page(request, "unknowns.html", work, since=since)


def _synced_people(library: LibraryApi) -> Any:
    """The people, after picking up hand edits of the folder (a store that cannot be read is no reason
    not to show them)."""
    try:
        library.sync()
    except UserError as exc:
        log.warning("library: cannot check for changes: %s", exc)
    return library.people()


def _since(text: str | None) -> float | None:
    """``since`` of the unknowns: ISO 8601 (UTC if no offset) or Unix seconds as ``/api/events`` takes them,
    or what ``run.py unknowns --since`` takes besides (``7d``, ``2h``, ``today``, ``yesterday``)."""
    if text is None or not text.strip():
        return None
    try:
        return parse_time(text, "since")
    except ValueError as exc:
        try:
            return parse_cli_time(text, time.time(), option="since")
        except UserError:
            raise ValueError(f"{exc}; or an age (30m, 2h, 7d), today, yesterday") from None


def _library_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, UserError):
        return f"cannot change the gallery: {exc.strerror or exc}"
    return " ".join(str(exc).split())


def _upload_label(name: str | None, index: int) -> str:
    text = "".join(c if c.isprintable() else "?" for c in (name or ""))[:80]
    return repr(text) if text else f"file {index}"


def _names(people: Sequence[str] | Callable[[], Sequence[str]]) -> tuple[str, ...]:
    try:
        return tuple(people() if callable(people) else people)
    except Exception as exc:
        log.warning("cannot list the people: %s", exc)
        return ()


# ---------------------------------------------------------------- streaming


async def _mjpeg(deps: WebDeps, name: str) -> AsyncIterator[bytes]:
    view, poll = deps.view, deps.settings.frame_poll_s
    with view.watch(name):
        last = 0
        while not deps.closing.is_set():
            frame = view.latest(name)
            if frame is None or frame.seq == last:
                await asyncio.sleep(poll)
                continue
            encoded = await run_in_threadpool(view.jpeg, name)
            if encoded is None:
                await asyncio.sleep(poll)
                continue
            last, data = encoded
            yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data) + data + b"\r\n"


async def _sse(deps: WebDeps, after: int | None) -> AsyncIterator[str]:
    view, settings = deps.view, deps.settings
    sub = view.subscribe(after_seq=after, backlog=settings.events_backlog)
    try:
        yield "retry: 2000\n\n"
        reported, quiet_since = 0, time.monotonic()
        while not deps.closing.is_set():
            items, lost = view.take(sub)
            for item in items:
                yield f"id: {item['seq']}\ndata: {json.dumps(_live_event(item), allow_nan=False)}\n\n"
            if lost != reported:
                yield f"event: lost\ndata: {json.dumps({'lost': lost})}\n\n"
                reported = lost
            if items:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > settings.keepalive_s:
                yield ": keepalive\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(settings.event_poll_s)
    finally:
        view.unsubscribe(sub)


def _live_event(item: Mapping[str, Any]) -> dict[str, Any]:
    out = _clean({k: v for k, v in item.items() if k != "snapshot"})
    name = snapshot_name(item.get("snapshot"))
    out["snapshot_url"] = None if name is None else f"/api/snapshots/{quote(name)}"
    return out


def _clean(value: Any) -> Any:
    """JSON-ready with URL passwords masked and non-finite floats as null."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


# ---------------------------------------------------------------- helpers


def _known_stream(view: LiveView, name: str) -> None:
    if not view.has_stream(name):
        raise StarletteHTTPException(404, f"stream {name[:64]!r}: no such stream")


def _filter(person: str, stream: str, since: str, until: str, kinds: list[str], limit: int, offset: int) -> EventFilter:
    wanted = tuple(k.strip() for text in kinds for k in text.split(",") if k.strip())
    return EventFilter(
        stream=stream.strip() or None,
        person=person.strip() or None,
        kinds=wanted,
        since=parse_time(since, "since") if since.strip() else None,
        until=parse_time(until, "until") if until.strip() else None,
        limit=limit,
        offset=offset,
    )


def _read_events(reader: EventReader | None, query: EventFilter) -> list[Any] | None:
    """The events, or None when they cannot be read (no store: events are not kept; a broken database)."""
    if reader is None:
        return None
    try:
        return list(reader.events(query))
    except Exception as exc:
        log.warning("cannot read events: %s", exc)
        return None


def _read_event(reader: EventReader | None, event_id: int) -> Any:
    if reader is None:
        return None
    try:
        return reader.event(event_id)
    except Exception as exc:
        log.warning("cannot read event %d: %s", event_id, exc)
        return None


async def _check_password(
    check: PasswordCheck, throttle: LoginThrottle, client: str, password: str
) -> tuple[bool, str]:
    if throttle.blocked(client):
        return False, "too many wrong passwords: wait a minute"
    if await run_in_threadpool(check.verify, password):  # argon2: tens of ms, off the event loop
        throttle.succeeded(client)
        return True, ""
    throttle.failed(client)
    log.info("login refused for %s (wrong password)", client)
    return False, "wrong password"


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _safe_next(target: str) -> str:
    """A local path to go back to after login (never another site)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    return target


def _operations(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The OpenAPI operations, flattened for the docs page."""
    out = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            params = [
                {
                    "name": p.get("name"),
                    "where": p.get("in"),
                    "required": p.get("required", False),
                    "description": p.get("description", ""),
                }
                for p in op.get("parameters", [])
            ]
            if "requestBody" in op:
                content = op["requestBody"].get("content", {})
                params.append({"name": "body", "where": ", ".join(content), "required": True, "description": ""})
            out.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "params": params,
                    "responses": sorted(op.get("responses", {})),
                    "tag": (op.get("tags") or [""])[0],
                }
            )
    return out


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
        message = str(first.get("msg", "invalid request"))
        return JSONResponse({"error": f"{where}: {message}" if where else message}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"error": f"request body over the limit of {exc.limit:,} bytes"}, status_code=413)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("web: %s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return JSONResponse({"error": "internal error"}, status_code=500)


# ---------------------------------------------------------------- the guard


class Guard:
    """ASGI middleware: Host check, login, CSRF (Origin) check, body caps and security headers."""

    def __init__(
        self, app: ASGIApp, settings: WebSettings, sessions: Sessions, body_limits: Sequence[tuple[str, int]]
    ) -> None:
        """``body_limits``: (path pattern, matched whole; its largest body); any other path: ``SMALL_BODY``."""
        self.app = app
        self.settings = settings
        self.sessions = sessions
        self.body_limits = [(re.compile(pattern), limit) for pattern, limit in body_limits]

    def body_limit(self, path: str) -> int:
        return next((limit for pattern, limit in self.body_limits if pattern.fullmatch(path)), SMALL_BODY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path, method = scope.get("path", "/"), scope.get("method", "GET")
        secured = _with_headers(send, api=path.startswith("/api/") or path == "/metrics")
        refusal = self._refusal(scope, headers, path, method)
        if refusal is not None:
            await refusal(scope, receive, secured)
            return
        limit = self.body_limit(path)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _json(413, f"request body over the limit of {limit:,} bytes")(scope, receive, secured)
            return
        state = _Body()
        too_large = _json(413, f"request body over the limit of {limit:,} bytes")

        async def capped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state.seen += len(message.get("body", b""))
                if state.seen > limit:
                    state.over = True
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            if state.over:  # the app answered a body cut short (FastAPI: 400 "error parsing the body"): 413
                if message["type"] == "http.response.start" and not state.started:
                    state.started = True
                    await too_large(scope, receive, secured)
                return
            state.started = state.started or message["type"] == "http.response.start"
            await secured(message)

        try:
            await self.app(scope, capped, tracked)
        except BodyTooLarge:
            if not state.started:
                state.started = True
                await too_large(scope, receive, secured)

    def _refusal(self, scope: Scope, headers: Mapping[str, str], path: str, method: str) -> ASGIApp | None:
        if self.settings.loopback_only_hosts and not _loopback_host(headers.get("host", "")):
            return _json(421, "this server answers only to localhost / 127.0.0.1")
        bearer = _bearer(headers.get("authorization", ""))
        cookie = _cookie(headers.get("cookie", ""), COOKIE)
        by_bearer = bearer is not None and self.sessions.valid(bearer)
        by_cookie = cookie is not None and self.sessions.valid(cookie)
        if method in UNSAFE_METHODS and not by_bearer:
            origin = same_origin(headers.get("origin"), headers.get("referer"), headers.get("host"))
            if origin is False or (origin is None and by_cookie and self.settings.password is not None):
                return _json(403, "cross-site request refused (Origin does not match this server)")
        if self.settings.password is None or by_bearer or by_cookie:
            return None
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or (path == "/api/token" and method == "POST"):
            return None
        if path.startswith(("/api/", "/streams/", "/metrics", "/openapi.json")):
            return _json(401, "login needed: a session cookie or Authorization: Bearer <token> (POST /api/token)",
                         {"www-authenticate": 'Bearer realm="adaface-stream"'})  # fmt: skip
        target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
        return _redirect("/login?" + urlencode({"next": _safe_next(target)}))


@dataclass
class _Body:
    """One request's body as the guard saw it."""

    seen: int = 0
    over: bool = False
    started: bool = False


def _with_headers(send: Send, api: bool) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            names = {k.lower() for k, _ in headers}
            headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            if api and b"cache-control" not in names:
                headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def _json(status: int, error: str, extra: Mapping[str, str] | None = None) -> ASGIApp:
    return JSONResponse({"error": error}, status_code=status, headers=dict(extra or {}))


def _redirect(location: str) -> ASGIApp:
    return RedirectResponse(location, status_code=303)


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value or None
    return None


def _loopback_host(host: str) -> bool:
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in LOOPBACK_NAMES
