"""Annotated video output: H.264 (libx264, yuv420p) through PyAV, the one module that writes video.

One ``write`` call encodes exactly one frame with ``pts`` = number of frames written before it, in a
``1/fps`` time base, so a file written from a file source has one output frame per input frame at
the same frame rate. Fractional rates are kept as fractions (29.97 → 30000/1001).

Odd sizes: yuv420p needs even width and height, so an odd-sized frame is *padded* by one pixel on
the right and/or bottom (edge pixels repeated), never resized: pixel coordinates (boxes in events,
MOT files) stay valid on the video. ``output_size`` says what the file holds.

libx264 quirk absorbed here: its threaded lookahead makes the output depend on timing, so it is
turned off (``_REPEATABLE``); a file gives the same video on every run.

PyAV quirk absorbed here: ``av.open(..., "w")`` does not touch the file until the first packet is
muxed, so the constructor starts the container itself; an unwritable path then fails at
construction. Every failure is an ``OutputError`` naming the path. Not thread-safe: one owner
(the pipeline's output thread) calls ``write`` and ``close``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from stream.closing import close_quietly
from stream.outputs import OutputError, make_parent

__all__ = ["VideoSettings", "VideoWriter"]

log = logging.getLogger(__name__)

# Same frames, same bytes. With its defaults (threaded lookahead), libx264 fed these frames gave
# different files run to run (3 variants in 8 encodes of the demo clip); without the lookahead
# thread it gave one file in 24 encodes, at the same speed. Frame threads stay on.
_REPEATABLE = "sliced-threads=0:lookahead-threads=1:sync-lookahead=0"


@dataclass(frozen=True)
class VideoSettings:
    """libx264 options: ``crf`` quality (0-51, lower is better), ``preset`` speed/size trade-off,
    ``keyframe_interval_s`` seconds between keyframes (None: libx264's default)."""

    crf: int = 23
    preset: str = "veryfast"
    keyframe_interval_s: float | None = None


class VideoWriter:
    """Write BGR frames of one fixed size to an H.264 file (mp4, mkv, ... chosen by the suffix)."""

    def __init__(
        self,
        path: Path | str,
        fps: float | Fraction,
        width: int,
        height: int,
        settings: VideoSettings = VideoSettings(),
    ) -> None:
        if not fps > 0:
            raise ValueError(f"VideoWriter.fps: must be > 0, got {fps}")
        if width <= 0 or height <= 0:
            raise ValueError(f"VideoWriter size: must be positive, got {width}x{height}")
        self.path = Path(path)
        self.width = int(width)
        self.height = int(height)
        self.output_size = (self.width + self.width % 2, self.height + self.height % 2)
        self.rate = Fraction(fps).limit_denominator(1001)
        self.frames_written = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._open(settings)

    def _open(self, settings: VideoSettings) -> None:
        make_parent(self.path, "video output")
        try:
            self._container = av.open(str(self.path), mode="w")
            stream = self._container.add_stream("libx264", rate=self.rate)
            stream.width, stream.height = self.output_size
            stream.pix_fmt = "yuv420p"
            stream.time_base = 1 / self.rate
            stream.codec_context.time_base = 1 / self.rate
            stream.options = {"crf": str(settings.crf), "preset": settings.preset, "x264-params": _REPEATABLE}
            if settings.keyframe_interval_s is not None:
                stream.gop_size = max(1, round(settings.keyframe_interval_s * float(self.rate)))
            self._stream = stream
            self._container.start_encoding()
        except (OSError, ValueError, av.FFmpegError) as exc:
            self._abandon()
            raise OutputError(f"cannot open video output {self.path}: {_reason(exc)}") from exc

    def write(self, image_bgr: np.ndarray) -> None:
        """Encode one HxWx3 uint8 BGR frame of the size given at construction."""
        if self._container is None or self._stream is None:
            raise OutputError(f"video output {self.path} is closed")
        # OpenCV's BGR → I420 (BT.601, limited range, as swscale's default) is ~2.5x faster than
        # VideoFrame.from_ndarray(bgr24).reformat("yuv420p"), and the planes are what libx264 takes.
        yuv = np.asarray(cv2.cvtColor(self._even(self._check(image_bgr)), cv2.COLOR_BGR2YUV_I420), np.uint8)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self.frames_written
        frame.time_base = self._stream.codec_context.time_base
        try:
            self._container.mux(self._stream.encode(frame))
        except (OSError, av.FFmpegError) as exc:
            raise OutputError(f"cannot write video output {self.path}: {_reason(exc)}") from exc
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and close the file; safe to call twice. The container is always closed."""
        container, stream = self._container, self._stream
        if container is None or stream is None:
            return
        self._container = self._stream = None
        try:
            container.mux(stream.encode(None))
        except (OSError, av.FFmpegError) as exc:
            close_quietly(container, f"video output {self.path}")
            raise OutputError(f"cannot finish video output {self.path}: {_reason(exc)}") from exc
        try:
            container.close()
        except (OSError, av.FFmpegError) as exc:
            raise OutputError(f"cannot finish video output {self.path}: {_reason(exc)}") from exc

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        try:  # an error is already on its way out: do not replace it with a close error
            self.close()
        except OutputError as close_exc:
            log.warning("%s", close_exc)

    def _check(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = image.shape if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"VideoWriter.write: expected HxWx3 uint8 BGR image, got {got}")
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"VideoWriter.write: expected a {self.width}x{self.height} frame, got {image.shape[1]}x{image.shape[0]}"
            )
        return image

    def _even(self, image: np.ndarray) -> np.ndarray:
        pad_w, pad_h = self.output_size[0] - self.width, self.output_size[1] - self.height
        if pad_w == 0 and pad_h == 0:
            return np.ascontiguousarray(image)
        return cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)

    def _abandon(self) -> None:
        close_quietly(self._container, f"video output {self.path}")
        self._container = self._stream = None


def _reason(exc: BaseException) -> str:
    """The OS/FFmpeg reason without PyAV's repeated file name."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
