"""Who may use the web app: the password (kept only as an argon2 hash), sessions, login throttling,
the exposure rule and the same-origin check. Pure of FastAPI; the routes in ``stream.web.app`` use it.

- ``check_exposure``: any address but loopback needs a password (one ``UserError`` line otherwise).
- ``PasswordCheck``: an argon2id hash made from the configured secret at start (or the configured hash);
  the plain text is never stored here, logged or echoed.
- ``Sessions``: random 256-bit tokens (a cookie or a bearer token), kept as their SHA-256 with an expiry;
  owned by the web app, thread-safe.
- ``LoginThrottle``: after ``max_failures`` wrong passwords from one client within ``window_s``, that
  client is refused until the window passes (argon2 already makes each guess slow).
- ``same_origin``: whether a browser request's Origin (or Referer) names this server (CSRF check).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from stream.config import ARGON2_PREFIX, is_loopback
from stream.errors import UserError

__all__ = ["LoginThrottle", "PasswordCheck", "Sessions", "check_exposure", "same_origin"]


def check_exposure(host: str, has_password: bool, where: str = "web.host") -> None:
    """Refuse to serve on a non-loopback address without a password (``UserError``, one line)."""
    if not has_password and not is_loopback(host):
        raise UserError(
            f"{where} {host}: set web.password (e.g. `password: ${{WEB_PASSWORD}}` in the web: section and "
            "the WEB_PASSWORD environment variable) to serve on an address other than 127.0.0.1, or bind 127.0.0.1"
        )


class PasswordCheck:
    """Verifies passwords against one argon2 hash."""

    def __init__(self, password_hash: str, hasher: PasswordHasher | None = None) -> None:
        if not password_hash.startswith(ARGON2_PREFIX):
            raise ValueError("PasswordCheck: expected an argon2 hash")
        self._hash = password_hash
        self._hasher = hasher or PasswordHasher()

    @classmethod
    def from_secret(cls, secret: str, hasher: PasswordHasher | None = None) -> PasswordCheck:
        """From the configured value: an argon2 hash as is, anything else hashed now (the plain text is dropped)."""
        hasher = hasher or PasswordHasher()
        if secret.startswith(ARGON2_PREFIX):
            try:
                hasher.verify(secret, "")  # only to parse it: a malformed hash fails here, at start
            except VerifyMismatchError:
                pass
            except (InvalidHashError, VerificationError):
                raise UserError("web.password: looks like an argon2 hash but cannot be parsed") from None
            return cls(secret, hasher)
        return cls(hasher.hash(secret), hasher)

    def verify(self, password: str) -> bool:
        if not password:
            return False
        try:
            return bool(self._hasher.verify(self._hash, password))
        except (VerificationError, InvalidHashError):
            return False


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    expires: float  # Unix s


class Sessions:
    """Login sessions: tokens are 43-character URL-safe strings; only their SHA-256 is kept."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time, max_sessions: int = 10_000) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._max = max_sessions
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def issue(self) -> Session:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._expiry = {k: v for k, v in self._expiry.items() if v > now}
            while len(self._expiry) >= self._max:  # oldest first out
                self._expiry.pop(min(self._expiry, key=self._expiry.__getitem__))
            self._expiry[_digest(token)] = now + self._ttl
        return Session(token, now + self._ttl)

    def valid(self, token: str | None) -> bool:
        if not token or len(token) > 256:
            return False
        with self._lock:
            expires = self._expiry.get(_digest(token))
        return expires is not None and expires > self._clock()

    def revoke(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._expiry.pop(_digest(token), None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class LoginThrottle:
    """Counts wrong passwords per client; ``blocked`` once ``max_failures`` fall within ``window_s``."""

    def __init__(
        self, max_failures: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_failures
        self._window = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, client: str) -> bool:
        now = self._clock()
        with self._lock:
            times = self._failures.get(client)
            while times and now - times[0] > self._window:
                times.popleft()
            return bool(times) and len(times or ()) >= self._max

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # bounded memory under a spray of clients
                self._failures.clear()
            self._failures.setdefault(client, deque(maxlen=self._max)).append(self._clock())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool | None:
    """Whether the request came from one of this server's own pages: its Origin header (else the
    Referer's origin) names the host and port of the Host header. The scheme is not compared (behind a
    TLS proxy the page is https, the app plain http) and ports 80/443 count as no port. None when the
    request carries neither header (not a browser form or fetch)."""
    source = origin if origin and origin != "null" else None
    if source is None and referer:
        source = referer
    if source is None:
        return None if not origin else False  # "Origin: null" (sandboxed, file://): never ours
    parts = urlsplit(source)
    if not parts.scheme or not parts.netloc or host is None:
        return False
    return hmac.compare_digest(_host_port(parts.netloc), _host_port(host))


def _host_port(value: str) -> str:
    value = value.strip().lower().rsplit("@", 1)[-1]
    if value.startswith("["):  # [v6]:port
        name, _, port = value.partition("]")
        name, port = name + "]", port.removeprefix(":")
    else:
        name, _, port = value.partition(":")
    return name if port in ("", "80", "443") else f"{name}:{port}"
