"""Webhook delivery: signed JSON POSTs on a thread of their own, with retries and a bounded outbox.

``WebhookSender.send(delivery)`` (the output thread) only queues; the ``webhook`` thread POSTs. Each
request carries ``Content-Type: application/json``, ``X-AdaFace-Event: alert``, ``X-AdaFace-Delivery``
(a UUID, the same on every retry: receivers can drop repeats) and, when the rule has a secret,
``X-AdaFace-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``; ``verify_signature``
is the receiving side's check.

A 2xx answer is delivered. A refused connection, a timeout (``timeout_s`` per attempt), 5xx, 408 or
429 is retried after 0.5 s, 1 s, 2 s, ... (capped at ``MAX_BACKOFF_S``), up to ``retries`` more times;
another answer (4xx, a redirect) gives up at once. Retries never hold up other deliveries: the
thread always takes the delivery that is due first. Every failed attempt is counted; the log says when
an endpoint starts failing, then once a minute while it goes on, and when it delivers again (the
endpoint shown as ``scheme://host:port/***``); at most ``capacity`` deliveries wait, beyond which the oldest
is dropped and counted. ``close(deadline)`` lets the thread deliver what is due until ``deadline`` and
counts the rest as dropped.

``post`` is injectable (tests); the default uses urllib and follows no redirect.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import itertools
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.config import endpoint_label
from stream.integrations.counters import WebhookCounters

__all__ = [
    "MAX_BACKOFF_S",
    "SIGNATURE_HEADER",
    "Delivery",
    "Poster",
    "WebhookCounters",
    "WebhookSender",
    "http_post",
    "sign",
    "verify_signature",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-AdaFace-Signature"
DELIVERY_HEADER = "X-AdaFace-Delivery"
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
_RETRY_STATUS = frozenset({408, 429})
_COMPLAIN_EVERY_S = 60.0
_JOIN_GRACE_S = 0.2

Poster = Callable[[str, bytes, Mapping[str, str], float], int]
"""(url, body, headers, timeout_s) → HTTP status; raises ``OSError`` (refused, timeout, DNS...)."""


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=<hex HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (constant-time compare)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One POST to make: ``rule`` (for logs), endpoint, body, optional secret and the retry budget."""

    rule: str
    url: str
    body: bytes
    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 5.0
    retries: int = 5
    delivery_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "adaface-stream",
            "X-AdaFace-Event": "alert",
            DELIVERY_HEADER: self.delivery_id,
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, self.body)
        return headers


@dataclass(slots=True)
class _Pending:
    delivery: Delivery
    order: int
    attempt: int = 0
    due: float = 0.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx answer comes back as an HTTPError: not delivered, not retried


_OPENER = urllib.request.build_opener(_NoRedirect)


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    """POST with urllib (no redirects); the HTTP status. Network failures raise ``OSError``."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(65536)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class WebhookSender:
    """See the module notes. ``start`` once; ``send`` from the output thread; ``close`` once."""

    def __init__(
        self,
        *,
        capacity: int = 1000,
        post: Poster = http_post,
        clock: Callable[[], float] = time.monotonic,
        first_backoff_s: float = FIRST_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        """``post``: the HTTP call; ``first_backoff_s``/``max_backoff_s``: the waits between attempts."""
        self._capacity = capacity
        self._first_backoff_s = first_backoff_s
        self._post = post
        self._clock = clock
        self._max_backoff_s = max_backoff_s
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._order = itertools.count()
        self._stop = False
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._delivered = self._retries = self._failed = 0  # the webhook thread's
        self._failing: dict[str, float] = {}  # the webhook thread's: endpoint → when it was last warned of
        self._dropped = 0  # the output thread's (send), then close's

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
            self._thread.start()

    def send(self, delivery: Delivery) -> None:
        """Queue a delivery; never waits. A full outbox drops its oldest delivery."""
        with self._cond:
            if len(self._pending) >= self._capacity:
                oldest = min(self._pending, key=lambda p: p.order)
                self._pending.remove(oldest)
                self._dropped += 1
                log.warning("webhook %s: outbox full, dropped the oldest delivery", oldest.delivery.rule)
            self._pending.append(_Pending(delivery, next(self._order), due=self._clock()))
            self._cond.notify()

    def counters(self) -> WebhookCounters:
        with self._cond:
            pending = len(self._pending)
        return WebhookCounters(self._delivered, self._retries, self._failed, self._dropped, pending)

    def stop(self, deadline: float) -> None:
        """Ask the thread to deliver what is due until ``deadline`` (monotonic), then end."""
        with self._cond:
            self._stop = True
            self._deadline = deadline
            self._cond.notify()

    def close(self, deadline: float) -> None:
        """``stop``, wait for the thread (until ``deadline`` and a little), count what is left as dropped."""
        self.stop(deadline)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + _JOIN_GRACE_S)
        with self._cond:
            left = len(self._pending)
            self._pending.clear()
            self._dropped += left
        if left:
            log.warning("webhook: %d alert deliveries dropped at exit (endpoint down or slow)", left)

    # ---- the webhook thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            self._attempt(item)

    def _next(self) -> _Pending | None:
        """The delivery due first, once due; None when stopping and nothing more can go out in time."""
        with self._cond:
            while True:
                now = self._clock()
                if self._stop and (now >= self._deadline or not self._pending):
                    return None
                due = min(self._pending, key=lambda p: (p.due, p.order), default=None)
                if due is not None and due.due <= now:
                    self._pending.remove(due)
                    return due
                if self._stop and due is not None and due.due >= self._deadline:
                    return None
                wait = 0.5 if due is None else min(0.5, due.due - now)
                self._cond.wait(max(0.001, wait))

    def _attempt(self, item: _Pending) -> None:
        d = item.delivery
        where = f"webhook {d.rule} → {endpoint_label(d.url)}"
        try:
            status = self._post(d.url, d.body, d.headers(), d.timeout_s)
        except (OSError, http.client.HTTPException, ValueError) as exc:  # refused, timeout, DNS, cut short
            status, why = None, _reason(exc)
        except Exception as exc:  # a bug in a poster must not end the thread: count it, go on
            log.exception("%s: delivery failed", where)
            status, why = None, _reason(exc)
        else:
            why = f"HTTP {status}"
        if status is not None and 200 <= status < 300:
            self._delivered += 1
            if self._failing.pop(where, None) is not None or item.attempt:
                log.info("%s: delivered (attempt %d)", where, item.attempt + 1)
            return
        retry = status is None or status >= 500 or status in _RETRY_STATUS
        if retry and item.attempt < d.retries:
            delay = min(self._max_backoff_s, self._first_backoff_s * 2**item.attempt)
            self._retries += 1
            self._complain(where, f"{why} (attempt {item.attempt + 1} of {d.retries + 1}); retrying in {delay:.1f} s")
            with self._cond:
                item.attempt += 1
                item.due = self._clock() + delay
                self._pending.append(item)
            return
        self._failed += 1
        self._complain(where, f"{why} (attempt {item.attempt + 1} of {d.retries + 1}); giving up")

    def _complain(self, where: str, what: str) -> None:
        """A warning when an endpoint starts failing and then once a minute while it goes on (the rest
        at debug level): a dead endpoint must not flood the log; the counters have every failure."""
        now = self._clock()
        last = self._failing.get(where)
        if last is None or now - last >= _COMPLAIN_EVERY_S:
            self._failing[where] = now
            log.warning("%s: %s", where, what)
        else:
            log.debug("%s: %s", where, what)


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "reason", None)  # urllib.error.URLError wraps the socket error
    text = str(inner if inner is not None else exc) or type(exc).__name__
    return text.splitlines()[0]
