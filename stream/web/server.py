"""uvicorn in a thread of the app process: bind first (a clear error), serve, stop within a budget.

``bind(host, port)`` takes the socket first, so a port in use is a ``UserError`` before anything heavy
is built; ``WebServer(app, sock)``, then ``start`` runs ``uvicorn.Server`` in the ``web`` thread (its own asyncio loop;
uvicorn installs no signal handlers outside the main thread, so Ctrl-C/SIGTERM stay the CLI's);
``stop`` sets ``closing`` (live streams end at their next poll), asks uvicorn to exit and joins the
thread within ``timeout_s`` (open connections get ``GRACE_S``, then are cancelled).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from stream.errors import UserError

__all__ = ["WebServer", "bind"]

log = logging.getLogger(__name__)

GRACE_S = 1
MAX_CONNECTIONS = 64  # more at once get 503 (a browser tab holds 2 + one per stream shown)


class WebServer:
    def __init__(self, app: Any, sock: socket.socket, closing: threading.Event | None = None) -> None:
        self.closing = closing or threading.Event()
        self._sock = sock
        address = sock.getsockname()
        self.host, self.port = str(address[0]), int(address[1])
        config = uvicorn.Config(
            app,
            log_config=None,  # keep the app's logging (and its secret masking)
            access_log=False,
            lifespan="off",
            proxy_headers=True,  # X-Forwarded-Proto/For from a TLS proxy on this machine (127.0.0.1) only
            server_header=False,
            timeout_graceful_shutdown=GRACE_S,
            limit_concurrency=MAX_CONNECTIONS,
            ws="none",
            log_level="warning",  # uvicorn's start/stop lines; the app logs the address itself
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout_s: float = 10.0) -> None:
        """Serve in the ``web`` thread; return once it accepts connections (``UserError`` if it fails)."""
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise UserError(f"the web app could not start on {self.url}")
            time.sleep(0.02)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # SystemExit from a failed startup included
            log.error("web app stopped: %s", exc)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 4.0) -> None:
        """End live streams, stop accepting, close connections, join the thread (at most ``timeout_s``)."""
        self.closing.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(1.0)
            if self._thread.is_alive():
                log.warning("web thread still running after %.0f s", timeout_s)
        with contextlib.suppress(OSError):
            self._sock.close()


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one); ``UserError`` naming the address if it cannot."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"web.host {host}: cannot resolve ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise UserError(f"web app: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock
