"""The PyAV adapter: opening containers, decoding video with bad packets skipped, BGR arrays.

Every PyAV quirk the sources rely on is absorbed here:

- ``av.open(..., timeout=(open_s, read_s))`` installs FFmpeg's interrupt callback; without it
  a server that accepts the connection but never answers (or is SIGSTOPped) hangs the read
  forever (PyAV #584, #1155, #1243). With it a stalled read raises ``av.error.ExitError``.
- ``container.demux()`` is a generator that ends after yielding flush packets; an exception
  inside it ends it, so a file reader that wants to carry on calls ``demux()`` again.
- ``packet.decode()`` raises ``InvalidDataError`` (and friends) on corrupt data: one bad
  packet, not the end of the stream.
- The first frame's ``time`` (pts) can be None on RTSP.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Generator, Mapping
from fractions import Fraction
from typing import Any

import av
import av.error
import numpy as np

from stream.logs import mask_secrets

log = logging.getLogger(__name__)

# A decode/demux problem worth skipping: corrupt data. ExitError (our read timeout fired) and
# EOF are never skipped.
SKIPPABLE = (av.error.InvalidDataError, av.error.PatchWelcomeError, av.error.BugError, av.error.UndefinedError)
FFmpegError = av.error.FFmpegError
TimeoutExit = av.error.ExitError
InvalidData = av.error.InvalidDataError


def open_input(
    target: str,
    *,
    format: str | None = None,
    options: Mapping[str, str] | None = None,
    timeout: tuple[float, float],
) -> Any:
    """``av.open`` for reading; raises whatever PyAV raises (callers turn it into their error)."""
    return av.open(target, mode="r", format=format, options=dict(options or {}), timeout=timeout)


def video_stream(container: Any) -> Any | None:
    streams = container.streams.video
    return streams[0] if streams else None


def stream_fps(stream: Any) -> float | None:
    """The stream's declared frame rate when it is plausible (0 < fps <= 1000), else None."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if isinstance(rate, Fraction | int | float) and rate:
            fps = float(rate)
            if 0.0 < fps <= 1000.0:
                return fps
    return None


def creation_time(container: Any) -> float | None:
    """The file's ``creation_time`` metadata (container, else first video stream) as Unix seconds,
    or None when absent or unparsable (FFmpeg writes ISO 8601, e.g. ``2024-05-01T10:00:00.000000Z``)."""
    streams = container.streams.video
    for metadata in (container.metadata, streams[0].metadata if streams else {}):
        text = str(metadata.get("creation_time") or "").strip()
        if not text:
            continue
        try:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            log.debug("unparsable creation_time %r", text)
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    return None


def codec_name(stream: Any) -> str:
    ctx = stream.codec_context
    return getattr(ctx, "name", None) or "unknown"


def decode_frames(
    container: Any,
    stream: Any,
    on_skip: Callable[[Exception], None],
    *,
    demux_retries: int = 0,
    on_packet: Callable[[], None] | None = None,
) -> Generator[Any, None, None]:
    """Yield decoded ``av.VideoFrame``s of ``stream``; corrupt packets are skipped via ``on_skip``.

    Every stream is demuxed (only ``stream`` is decoded) so that ``on_packet`` runs for each
    packet read, even when the video yields nothing: a stall watchdog can raise from it.
    ``demux_retries``: how many consecutive corrupt-container errors to skip before giving up
    (files: some; live: 0, a broken connection is a disconnect). Other errors propagate.
    The iterator ends at end-of-stream (for a live URL: the server went away).
    """
    consecutive = 0
    while True:
        try:
            for packet in container.demux():
                consecutive = 0
                if on_packet is not None:
                    on_packet()
                if packet.stream_index != stream.index:
                    continue
                try:
                    frames = packet.decode()
                except SKIPPABLE as exc:
                    on_skip(exc)
                    continue
                yield from frames
            return
        except SKIPPABLE as exc:
            if consecutive >= demux_retries:
                raise
            consecutive += 1
            on_skip(exc)


def to_bgr(frame: Any) -> np.ndarray:
    """HxWx3 uint8 BGR, contiguous (PyAV converts any pixel format through swscale)."""
    return np.ascontiguousarray(frame.to_ndarray(format="bgr24"))


def frame_time(frame: Any) -> float | None:
    """The frame's presentation time in seconds, or None when PyAV has none."""
    try:
        return frame.time
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def describe(exc: BaseException) -> str:
    """One line, credentials masked: 'Connection refused'."""
    if isinstance(exc, FFmpegError) and getattr(exc, "strerror", None):
        text = str(exc.strerror)  # e.g. "Connection refused", without the errno and the repeated URL
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
    return mask_secrets(text)
