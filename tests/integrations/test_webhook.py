"""Webhook delivery with a recording poster: signatures, retries with back-off, give-ups, bounds, close."""

from __future__ import annotations

import itertools
import time

import pytest

from stream.integrations.webhook import SIGNATURE_HEADER, Delivery, WebhookSender, sign, verify_signature
from tests.fakes import RecordingPoster

SECRET = "0123456789abcdef-secret"


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _sender(poster: RecordingPoster, **kw: object) -> WebhookSender:
    sender = WebhookSender(post=poster, first_backoff_s=0.05, max_backoff_s=0.2, **kw)  # type: ignore[arg-type]
    sender.start()
    return sender


def test_signature_round_trip() -> None:
    body = b'{"kind":"alert"}'
    header = sign(SECRET, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, body, header)
    assert not verify_signature(SECRET, body + b" ", header)
    assert not verify_signature("another-secret-of-16+", body, header)
    assert not verify_signature(SECRET, body, None)


def test_a_delivery_is_signed_and_delivered_once() -> None:
    poster = RecordingPoster(200)
    sender = _sender(poster)
    sender.send(Delivery("r", "http://hook/x", b'{"a":1}', SECRET, delivery_id="d-1"))
    assert _wait(lambda: sender.counters().delivered == 1)
    sender.close(time.monotonic() + 1)
    ((url, body, headers, _),) = poster.calls
    assert url == "http://hook/x" and body == b'{"a":1}'
    assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
    assert headers["X-AdaFace-Delivery"] == "d-1" and headers["Content-Type"] == "application/json"
    unsigned = Delivery("r", "http://hook/x", b"{}")
    assert SIGNATURE_HEADER not in unsigned.headers()


def test_failures_are_retried_with_growing_waits_then_delivered() -> None:
    poster = RecordingPoster(500, ConnectionRefusedError("refused"), 503, 429, 200)
    sender = _sender(poster)
    sender.send(Delivery("r", "http://hook/x", b"{}", SECRET, retries=5, delivery_id="same"))
    assert _wait(lambda: sender.counters().delivered == 1)
    sender.close(time.monotonic() + 1)
    counters = sender.counters()
    assert (counters.delivered, counters.retries, counters.failed, counters.dropped) == (1, 4, 0, 0)
    times = [c[3] for c in poster.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert [round(g, 2) >= w for g, w in zip(gaps, (0.05, 0.1, 0.2, 0.2), strict=True)] == [True] * 4
    assert {c[2]["X-AdaFace-Delivery"] for c in poster.calls} == {"same"}  # receivers can drop repeats


def test_out_of_retries_or_a_4xx_gives_up() -> None:
    poster = RecordingPoster(500)
    sender = _sender(poster)
    sender.send(Delivery("down", "http://hook/x", b"{}", retries=2))
    assert _wait(lambda: sender.counters().failed == 1)
    assert len(poster.calls) == 3
    refusing = RecordingPoster(403)
    sender2 = _sender(refusing)
    sender2.send(Delivery("auth", "http://hook/y", b"{}", retries=5))
    assert _wait(lambda: sender2.counters().failed == 1)
    assert len(refusing.calls) == 1  # not worth retrying
    sender.close(time.monotonic() + 1)
    sender2.close(time.monotonic() + 1)


def test_a_retrying_endpoint_does_not_hold_up_another() -> None:
    answers: dict[str, RecordingPoster] = {"http://down/": RecordingPoster(500), "http://up/": RecordingPoster(200)}
    calls: list[str] = []

    def post(url: str, body: bytes, headers: object, timeout_s: float) -> int:
        calls.append(url)
        return answers[url](url, body, headers, timeout_s)

    sender = WebhookSender(post=post, first_backoff_s=0.3, max_backoff_s=0.3)
    sender.start()
    sender.send(Delivery("a", "http://down/", b"{}", retries=3))
    sender.send(Delivery("b", "http://up/", b"{}"))
    assert _wait(lambda: sender.counters().delivered == 1, 1.0)
    assert calls[:2] == ["http://down/", "http://up/"]  # b went out while a waited for its retry
    sender.close(time.monotonic() + 0.1)


def test_send_never_waits_and_a_full_outbox_drops_the_oldest() -> None:
    poster = RecordingPoster(200, delay_s=1.0)
    sender = _sender(poster, capacity=3)
    started = time.monotonic()
    for i in range(10):
        sender.send(Delivery("r", "http://hook/", str(i).encode()))
    assert time.monotonic() - started < 5.0  # sending inline would take 10 x 1 s
    assert sender.counters().dropped >= 6
    sender.close(time.monotonic() + 6)
    delivered = [c[1] for c in poster.calls]
    assert delivered[-1] == b"9" and len(delivered) <= 4


def test_close_is_bounded_and_counts_what_is_left() -> None:
    poster = RecordingPoster(500)
    sender = WebhookSender(post=poster, first_backoff_s=10.0)
    sender.start()
    sender.send(Delivery("r", "http://hook/", b"{}", retries=5))
    assert _wait(lambda: len(poster.calls) == 1)
    started = time.monotonic()
    sender.close(time.monotonic() + 0.3)
    assert time.monotonic() - started < 5.0  # the retry waits 10 s: close does not
    assert sender.counters().dropped == 1 and sender.counters().pending == 0


@pytest.mark.parametrize("error", [TimeoutError("timed out"), OSError("no route")])
def test_network_errors_count_as_retryable(error: BaseException) -> None:
    poster = RecordingPoster(error, 204)
    sender = _sender(poster)
    sender.send(Delivery("r", "http://hook/", b"{}", retries=1))
    assert _wait(lambda: sender.counters().delivered == 1)
    sender.close(time.monotonic() + 1)
    assert sender.counters().retries == 1
