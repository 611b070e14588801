"""Frame sources (PyAV is the only video decoder; nothing outside this package imports it).

``open_source(spec)`` picks the class from a ``StreamConfig``:

- ``path`` to a folder → ``ImageFolderSource`` (images, ``image_fps`` apart);
- ``path`` to a file → ``VideoFileSource``; ``path`` to a device (/dev/video0) → webcam;
- ``url`` → ``LiveSource`` (reconnects), or ``VideoFileSource`` when ``mode: file``
  (a finite remote file: every frame, EOF ends it); ``lavfi:GRAPH`` is a live FFmpeg graph;
- ``webcam`` → ``LiveSource`` on /dev/videoN (v4l2).

See ``base`` for the run/emit contract (live emit must not block; files never drop).
"""

from __future__ import annotations

import stat
from pathlib import Path

from stream.config import StreamConfig
from stream.sources.base import Emit, FrameSource, SourceError, SourceStats, SourceStatus, StatusKind
from stream.sources.files import ImageFolderSource, VideoFileSource
from stream.sources.live import Backoff, LiveSource, LiveTarget

__all__ = [
    "Backoff",
    "Emit",
    "FrameSource",
    "ImageFolderSource",
    "LiveSource",
    "LiveTarget",
    "SourceError",
    "SourceStats",
    "SourceStatus",
    "StatusKind",
    "VideoFileSource",
    "open_source",
]


def open_source(spec: StreamConfig, image_fps: float = 30.0) -> FrameSource:
    """The source for one configured stream; raises ``SourceError`` (naming it) if it cannot be used."""
    if spec.webcam is not None:
        return LiveSource.from_webcam(spec.name, spec.webcam)
    if spec.url is not None:
        if spec.effective_mode == "file" and not spec.url.startswith("lavfi:"):
            return VideoFileSource(spec.name, spec.url, options=LiveTarget.for_url(spec.url).options)
        return LiveSource.from_url(spec.name, spec.url)
    assert spec.path is not None  # StreamConfig guarantees exactly one of url, path, webcam
    return _open_path(spec.name, Path(spec.path), image_fps)


def _open_path(name: str, path: Path, image_fps: float) -> FrameSource:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceError(f"{path}: not found") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        return ImageFolderSource(name, path, fps=image_fps)
    if stat.S_ISCHR(mode):
        return LiveSource.from_webcam(name, str(path))
    return VideoFileSource(name, path)
