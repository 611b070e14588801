"""Finite sources: video files (PyAV) and folders of images. They never drop a frame.

Construction probes the input (and raises ``SourceError`` naming the file if it cannot be
read at all); ``run`` opens it again and emits every frame in order, blocking in ``emit``
as long as the consumer needs.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.faces.images import ImageReadError, is_image_name, read_bgr
from stream.logs import mask_secrets
from stream.sources import _av
from stream.sources.base import Emit, FrameSource, SourceError, SourceStats, pts_or_fallback
from stream.types import Frame

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0
OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 10.0
DEMUX_RETRIES = 50  # consecutive corrupt-container errors skipped before the file is given up


@dataclass
class _Counts:
    frames: int = 0
    errors: int = 0
    skipped_files: int = 0

    def stats(self) -> SourceStats:
        return SourceStats(
            frames_read=self.frames,
            decode_errors_skipped=self.errors,
            epochs=1 if self.frames else 0,
            files_skipped=self.skipped_files,
        )


class VideoFileSource(FrameSource):
    """A video file (mp4, mkv, avi, mov, webm, GIF, ...) decoded with PyAV, video stream 0.

    ``target`` is a path, or a URL read as a finite file (``mode: file``). Corrupt packets
    are skipped and counted; the rest of the file is still decoded.
    """

    def __init__(
        self,
        stream_id: str,
        target: str | Path,
        *,
        options: Mapping[str, str] | None = None,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._stream_id = stream_id
        self._target = str(target)
        self._name = mask_secrets(self._target)
        self._options = dict(options or {})
        self._timeout = (open_timeout_s, read_timeout_s)
        self._fps = self._probe()

    @property
    def stream_id(self) -> str:
        return self._stream_id

    @property
    def is_live(self) -> bool:
        return False

    @property
    def nominal_fps(self) -> float | None:
        return self._fps

    def run(self, emit: Emit, stop: threading.Event) -> SourceStats:
        counts = _Counts()
        if stop.is_set():
            return counts.stats()
        container = self._open()
        try:
            stream = _av.video_stream(container)
            base = _av.creation_time(container)
            self._decode_all(container, stream, emit, stop, counts, time.time() if base is None else base)
        finally:
            container.close()
        if counts.errors:
            log.warning(
                "%s: %s: %d corrupt packet(s)/frame(s) skipped, %d frames read",
                self._stream_id,
                self._name,
                counts.errors,
                counts.frames,
            )
        return counts.stats()

    # ------------------------------------------------------------------ steps

    def _decode_all(
        self, container: Any, stream: Any, emit: Emit, stop: threading.Event, counts: _Counts, base: float
    ) -> None:
        """Emit every decodable frame; ``base``: the wall-clock time (Unix s) of pts 0."""
        fps = self._fps or DEFAULT_FPS
        last_pts: float | None = None

        def skip(exc: Exception) -> None:
            counts.errors += 1
            self._count_decode_error()
            log.debug("%s: %s: skipped corrupt data (%s)", self._stream_id, self._name, _av.describe(exc))

        frames = _av.decode_frames(container, stream, skip, demux_retries=DEMUX_RETRIES)
        try:
            for av_frame in frames:
                if stop.is_set():
                    return
                try:
                    image = _av.to_bgr(av_frame)
                except (_av.FFmpegError, ValueError) as exc:
                    skip(exc)
                    continue
                pts = pts_or_fallback(_av.frame_time(av_frame), counts.frames, fps, last_pts)
                frame = Frame(self._stream_id, counts.frames, 0, pts, time.monotonic(), image, base + pts)
                counts.frames += 1
                last_pts = pts
                if not emit(frame):
                    return
        except _av.FFmpegError as exc:
            raise SourceError(f"{self._name}: read failed after {counts.frames} frames ({_av.describe(exc)})") from None
        finally:
            frames.close()

    def _open(self) -> Any:
        path = Path(self._target)
        if "://" not in self._target:
            if not path.exists():
                raise SourceError(f"{self._name}: file not found")
            if path.is_dir():
                raise SourceError(f"{self._name}: is a folder, not a video file")
            if path.stat().st_size == 0:
                raise SourceError(f"{self._name}: empty file (0 bytes), not a video")
        try:
            container = _av.open_input(self._target, options=self._options, timeout=self._timeout)
        except (_av.FFmpegError, OSError) as exc:
            raise SourceError(f"{self._name}: cannot open as video ({_reason(exc)})") from None
        if _av.video_stream(container) is None:
            container.close()
            raise SourceError(f"{self._name}: no video stream in the file")
        return container

    def _probe(self) -> float | None:
        """Open, check that at least one frame decodes, return the declared fps; always closes."""
        container = self._open()
        try:
            stream = _av.video_stream(container)
            fps = _av.stream_fps(stream)
            codec = _av.codec_name(stream)
            errors: list[Exception] = []
            frames = _av.decode_frames(container, stream, errors.append, demux_retries=DEMUX_RETRIES)
            try:
                if next(frames, None) is not None:
                    return fps
            except _av.FFmpegError as exc:
                errors.append(exc)
            finally:
                frames.close()
            why = _av.describe(errors[-1]) if errors else "no frames"
            raise SourceError(f"{self._name}: cannot decode video (codec {codec}: {why})")
        finally:
            container.close()


def _reason(exc: BaseException) -> str:
    """Why PyAV could not open a file, in words a user can act on."""
    text = _av.describe(exc)
    if isinstance(exc, _av.InvalidData):
        return f"not a video, truncated, or an unsupported format: {text}"
    return text


class ImageFolderSource(FrameSource):
    """A folder of images (jpg, jpeg, png, bmp, webp) in natural name order, ``fps`` apart.

    Files that are not images (by extension or content) are skipped with a warning and
    counted in ``files_skipped``; image files that cannot be read also count as decode errors.
    """

    def __init__(self, stream_id: str, folder: str | Path, fps: float = DEFAULT_FPS) -> None:
        if not fps > 0:
            raise SourceError(f"{stream_id}: image fps must be > 0, got {fps}")
        self._stream_id = stream_id
        self._folder = Path(folder)
        self._fps = float(fps)
        if not self._folder.is_dir():
            raise SourceError(f"{self._folder}: not a folder")
        entries = sorted((p for p in self._folder.iterdir() if p.is_file()), key=_natural_key)
        self._images = [p for p in entries if is_image_name(p)]
        self._others = [p for p in entries if not is_image_name(p) and not p.name.startswith(".")]
        if not self._images:
            raise SourceError(f"{self._folder}: no images (jpg, jpeg, png, bmp, webp) in the folder")

    @property
    def stream_id(self) -> str:
        return self._stream_id

    @property
    def is_live(self) -> bool:
        return False

    @property
    def nominal_fps(self) -> float | None:
        return self._fps

    @property
    def image_paths(self) -> tuple[Path, ...]:
        return tuple(self._images)

    def run(self, emit: Emit, stop: threading.Event) -> SourceStats:
        counts = _Counts(skipped_files=len(self._others))
        base = time.time()  # an image sequence has no creation time: the run start is its time 0
        for other in self._others:
            log.warning("%s: skipping %s: not an image file", self._stream_id, other)
        for path in self._images:
            if stop.is_set():
                break
            try:
                image = read_bgr(path)
            except ImageReadError as exc:  # a corrupt frame of this "video"
                counts.skipped_files += 1
                self._count_decode_error()
                log.warning("%s: skipping %s", self._stream_id, exc)
                continue
            pts = counts.frames / self._fps
            frame = Frame(self._stream_id, counts.frames, 0, pts, time.monotonic(), image, base + pts)
            counts.frames += 1
            if not emit(frame):
                break
        return counts.stats()


def _natural_key(path: Path) -> tuple[Any, ...]:
    """'frame2.jpg' before 'frame10.jpg'."""
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)
