"""Live sources: RTSP/RTMP/HTTP URLs, webcams (v4l2) and ``lavfi:`` graphs, with reconnects.

A live source emits frames as fast as they arrive; the consumer's ``emit`` must not block
(it keeps the latest frame and counts drops). A session is one connection:

    open ─► frames ... ─► end-of-stream / error / read timeout / stall ─► "down"
      ▲                                                                     │
      └──────────── stop.wait(backoff: 0.5 s doubling to 8 s) ◄─────────────┘

- End-of-stream on a live input is a disconnect (a killed RTSP server just ends the stream).
- A frozen server is caught by PyAV's read timeout (``av.open(timeout=(open_s, read_s))`` plus
  the RTSP socket ``timeout`` option): ``ExitError`` after ~2 × read_s. A stream that sends
  packets but decodes no frame for ``stall_s`` is a stall (the watchdog runs per packet).
- Each session that delivered frames is one epoch: epoch 0, then +1 per reconnect. The first
  frame of a session is preceded by ``SourceStatus("up")``; a session that ends after frames
  (or the very first failure) emits ``SourceStatus("down")``. Up and down alternate.
- The backoff resets after a successful frame; every wait is ``stop.wait(delay)``.
- ``stop`` is checked between packets, so a flowing stream stops within one frame; a stalled
  read stops within the read timeout.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from stream.closing import close_quietly
from stream.logs import mask_secrets
from stream.sources import _av
from stream.sources.base import Emit, FrameSource, SourceError, SourceStats, SourceStatus, pts_or_fallback
from stream.types import Frame

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 3.0
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 8.0
STALL_S = 10.0
ANALYZE_DURATION_US = "100000"  # 0.1 s of probing: first RTSP frame in ~0.1 s
FALLBACK_FPS = 30.0  # only for pts of frames that have none and no declared rate
LAVFI_PREFIX = "lavfi:"


@dataclass(frozen=True)
class LiveTarget:
    """What to hand to ``av.open``: the target, its demuxer format and options; ``label`` is masked."""

    target: str
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    label: str = ""

    @classmethod
    def for_url(cls, url: str, read_timeout_s: float = READ_TIMEOUT_S) -> LiveTarget:
        """rtsp(s)/rtmp(s)/http(s)/... URL, or ``lavfi:GRAPH`` (an FFmpeg filter graph, e.g. a looping file)."""
        if url.startswith(LAVFI_PREFIX):
            graph = url[len(LAVFI_PREFIX) :]
            if not graph:
                raise SourceError("lavfi: source needs a filter graph after 'lavfi:'")
            return cls(graph, "lavfi", {}, mask_secrets(url))
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if not scheme:
            raise SourceError(f"{mask_secrets(url)}: not a URL (expected rtsp://, rtmp://, http://, ...)")
        micros = str(int(read_timeout_s * 1_000_000))
        options = {"analyzeduration": ANALYZE_DURATION_US}
        if scheme in ("rtsp", "rtsps"):
            # 'timeout' is the RTSP socket I/O timeout in µs; TCP avoids UDP's silent packet loss/hangs.
            options.update(rtsp_transport="tcp", timeout=micros)
        else:
            # Not 'timeout': for rtmp it means "listen for a connection" (turns the client into a server).
            options["rw_timeout"] = micros
        return cls(url, None, options, mask_secrets(url))

    @classmethod
    def for_webcam(cls, device: int | str) -> LiveTarget:
        """A camera index (0 → /dev/video0) or a device path, through v4l2 (Linux) or avfoundation (macOS)."""
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        if sys.platform == "darwin":
            return cls(str(device), "avfoundation", {}, f"webcam {device}")
        if isinstance(device, int):
            if device < 0:
                raise SourceError(f"webcam index must be >= 0, got {device}")
            device = f"/dev/video{device}"
        if not re.fullmatch(r"/dev/[\w./-]+", device):
            raise SourceError(f"webcam {device!r}: expected an index (0) or a device path (/dev/video0)")
        return cls(device, "v4l2", {}, device)


class Backoff:
    """Capped exponential delays: initial, 2×, 4×, ... up to ``cap``; ``reset`` after success."""

    def __init__(self, initial_s: float = BACKOFF_INITIAL_S, cap_s: float = BACKOFF_MAX_S) -> None:
        if not 0 < initial_s <= cap_s:
            raise ValueError(f"backoff: need 0 < initial ({initial_s}) <= cap ({cap_s})")
        self._initial = initial_s
        self._cap = cap_s
        self._next = initial_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2.0, self._cap)
        return delay

    def reset(self) -> None:
        self._next = self._initial


class LiveSource(FrameSource):
    """A live input that reconnects forever (until ``stop``), emitting frames and up/down statuses."""

    def __init__(
        self,
        stream_id: str,
        target: LiveTarget,
        *,
        fps: float | None = None,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        stall_s: float = STALL_S,
    ) -> None:
        if fps is not None and not fps > 0:
            raise SourceError(f"{stream_id}: fps must be > 0, got {fps}")
        Backoff(backoff_initial_s, backoff_max_s)  # validate now, fail at construction
        self._stream_id = stream_id
        self._target = target
        self._fps = fps
        self._timeout = (open_timeout_s, read_timeout_s)
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._stall_s = stall_s

    @classmethod
    def from_url(cls, stream_id: str, url: str, **kwargs: Any) -> LiveSource:
        read_s = kwargs.get("read_timeout_s", READ_TIMEOUT_S)
        return cls(stream_id, LiveTarget.for_url(url, read_s), **kwargs)

    @classmethod
    def from_webcam(cls, stream_id: str, device: int | str, **kwargs: Any) -> LiveSource:
        return cls(stream_id, LiveTarget.for_webcam(device), **kwargs)

    @property
    def stream_id(self) -> str:
        return self._stream_id

    @property
    def is_live(self) -> bool:
        return True

    @property
    def nominal_fps(self) -> float | None:
        """The fps given at construction (a live stream's real rate is only known once connected)."""
        return self._fps

    @property
    def target(self) -> LiveTarget:
        return self._target

    def run(self, emit: Emit, stop: threading.Event) -> SourceStats:
        return _LiveRun(self, emit, stop).loop()


class _Stalled(Exception):
    pass


class _Stopped(Exception):
    """The stop event is set or the consumer's emit returned False."""


class _LiveRun:
    """The state of one ``LiveSource.run`` call; owned by the source's thread only."""

    def __init__(self, source: LiveSource, emit: Emit, stop: threading.Event) -> None:
        self.src = source
        self.name = source.stream_id
        self.label = source.target.label
        self.emit = emit
        self.stop = stop
        self.backoff = Backoff(*source._backoff)
        self.epoch = 0
        self.state = "unknown"  # -> "up" / "down"
        self.frames = 0
        self.errors = 0
        self.attempts = 0
        self.epochs = 0
        self.failures_while_down = 0

    def loop(self) -> SourceStats:
        try:
            while not self.stop.is_set():
                self.attempts += 1
                reason = self.session()
                delay = self.backoff.next()
                self.went_down(reason, delay)
                if self.stop.wait(delay):
                    break
        except _Stopped:
            pass
        log.info("%s: live source stopped (%d frames, %d epochs)", self.name, self.frames, self.epochs)
        return SourceStats(
            frames_read=self.frames,
            decode_errors_skipped=self.errors,
            reconnects=max(self.attempts - 1, 0),
            epochs=self.epochs,
        )

    # ------------------------------------------------------------------ one connection

    def session(self) -> str:
        """Connect and emit frames until the connection ends; return why it ended (masked)."""
        src = self.src
        self.check_stop()
        try:
            container = _av.open_input(
                src.target.target, format=src.target.format, options=src.target.options, timeout=src._timeout
            )
        except (_av.FFmpegError, OSError) as exc:
            return f"cannot connect: {_av.describe(exc)}"
        try:
            self.check_stop()
            stream = _av.video_stream(container)
            if stream is None:
                return "no video stream"
            return self.read_frames(container, stream)
        except _Stalled as exc:
            return str(exc)
        except _av.TimeoutExit:
            return f"read timed out (no data within the {src._timeout[1]:g} s read timeout)"
        except (_av.FFmpegError, OSError) as exc:
            return f"read failed: {_av.describe(exc)}"
        finally:
            close_quietly(container, f"input of {self.src.stream_id}")

    def read_frames(self, container: Any, stream: Any) -> str:
        fps = self.src.nominal_fps or _av.stream_fps(stream) or FALLBACK_FPS
        session_frames = 0
        last_pts: float | None = None
        last_progress = time.monotonic()

        def watchdog() -> None:
            self.check_stop()
            if time.monotonic() - last_progress > self.src._stall_s:
                raise _Stalled(f"stalled (no decodable frame for {self.src._stall_s:g} s)")

        def skip(exc: Exception) -> None:
            self.errors += 1
            self.src._count_decode_error()
            log.debug("%s: skipped corrupt data (%s)", self.name, _av.describe(exc))

        frames = _av.decode_frames(container, stream, skip, demux_retries=0, on_packet=watchdog)
        try:
            for av_frame in frames:
                try:
                    image = _av.to_bgr(av_frame)
                except (_av.FFmpegError, ValueError) as exc:
                    skip(exc)
                    continue
                if session_frames == 0:
                    self.came_up()
                pts = pts_or_fallback(_av.frame_time(av_frame), self.frames, fps, last_pts)
                frame = Frame(self.name, self.frames, self.epoch, pts, time.monotonic(), image, time.time())
                self.frames += 1
                session_frames += 1
                last_pts = pts
                last_progress = time.monotonic()
                self.send(frame)
                self.check_stop()
        finally:
            frames.close()
            if session_frames:
                self.epoch += 1  # the next session, if any, is a new epoch
        return "end of stream (the server closed it)"

    # ------------------------------------------------------------------ transitions

    def came_up(self) -> None:
        self.backoff.reset()
        self.state = "up"
        self.epochs += 1
        self.failures_while_down = 0
        log.info("%s: stream up (%s), epoch %d", self.name, self.label, self.epoch)
        self.send(SourceStatus(self.name, "up", self.epoch, f"connected to {self.label}", time.time()))

    def went_down(self, reason: str, delay: float) -> None:
        reason = mask_secrets(reason)
        if self.state == "down":
            self.failures_while_down += 1
            log.warning(
                "%s: still down after %d attempts (%s): %s; retrying in %g s",
                self.name,
                self.failures_while_down + 1,
                self.label,
                reason,
                delay,
            )
            return
        # The epoch that ended: after an up session read_frames already moved to the next one.
        ended = self.epoch - 1 if self.state == "up" else self.epoch
        self.state = "down"
        log.warning("%s: stream down (%s): %s; reconnecting in %g s", self.name, self.label, reason, delay)
        self.send(SourceStatus(self.name, "down", ended, reason, time.time()))

    def send(self, item: Frame | SourceStatus) -> None:
        if not self.emit(item):
            raise _Stopped

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise _Stopped
