"""Logging: every line through the app's handler has URL passwords masked."""

from __future__ import annotations

import io
import logging

import pytest

from stream.logs import mask_secrets, setup_logging


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("rtsp://user:secret@host:554/a", "rtsp://user:***@host:554/a"),
        ("open rtsp://admin:p@ss@10.0.0.1/s failed", "open rtsp://admin:***@10.0.0.1/s failed"),
        ("rtmp://u:x@h and http://v:y@k/p", "rtmp://u:***@h and http://v:***@k/p"),
        ("rtsp://host/no-credentials", "rtsp://host/no-credentials"),
        ("rtsp://useronly@host/a", "rtsp://useronly@host/a"),
        ("plain text: a:b@c", "plain text: a:b@c"),
    ],
)
def test_mask_secrets(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


@pytest.fixture
def captured() -> io.StringIO:
    buffer = io.StringIO()
    setup_logging("DEBUG", stream=buffer)
    yield buffer
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "adaface-stream"]:
        root.removeHandler(handler)


def test_log_lines_are_masked_in_message_args_and_tracebacks(captured: io.StringIO) -> None:
    log = logging.getLogger("stream.test")
    log.info("connecting to %s", "rtsp://cam:topsecret@127.0.0.1:8554/cam")
    log.warning("plain rtsp://a:hidden2@h/x")
    try:
        raise ConnectionError("cannot open rtsp://cam:topsecret3@h/cam")
    except ConnectionError:
        log.exception("stream failed")
    text = captured.getvalue()
    assert "topsecret" not in text and "hidden2" not in text
    assert text.count("***@") >= 3  # the traceback repeats the raising source line
    assert "ConnectionError" in text


def test_setup_twice_keeps_one_handler(captured: io.StringIO) -> None:
    setup_logging("INFO", stream=captured)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "adaface-stream"]
    assert len(ours) == 1
