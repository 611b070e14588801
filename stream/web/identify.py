"""``POST /api/identify`` behind the routes: check an upload, decode it, name its faces.

The identifier (``stream.commands.identify.StillIdentifier`` in the app; tests pass a function) is
called with the decoded BGR image and returns the list ``run.py identify --json`` prints. Calls are
serialised by a lock of this service alone (the pipeline never takes it): the identifier's detector is
the API's own, so a request never waits for, nor blocks, a pipeline thread. A request that cannot get
the lock within ``busy_timeout_s`` is answered 503.

Every bad upload is an ``UploadError`` with an HTTP status and a one-line message: empty (400), too
big (413), too many pixels (413), not an image (415).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.faces.images import ImageReadError, decode_bgr, image_size

__all__ = ["Identifier", "IdentifyService", "UploadError", "UploadLimits", "check_image", "check_size"]

Identifier = Callable[[np.ndarray], list[dict[str, Any]]]


class UploadError(Exception):
    """A bad upload: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_bytes: int = 10_000_000
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError(f"UploadLimits: limits must be >= 1, got {self.max_bytes}, {self.max_pixels}")


class IdentifyService:
    def __init__(self, identifier: Identifier, limits: UploadLimits, busy_timeout_s: float = 30.0) -> None:
        self._identifier = identifier
        self.limits = limits
        self._lock = threading.Lock()
        self._busy_timeout = busy_timeout_s
        self.calls = 0
        self.last_ms: float | None = None

    def check_size(self, size: int) -> None:
        check_size(size, self.limits)

    def decode(self, data: bytes, name: str = "file") -> np.ndarray:
        """The upload as a BGR image; ``UploadError`` for anything that is not an acceptable image."""
        check_image(data, self.limits, name)
        try:
            return decode_bgr(data, name, self.limits.max_pixels)
        except ImageReadError as exc:
            raise UploadError(415, f"{name}: cannot decode the image ({_reason(exc, name)})") from None

    def identify(self, data: bytes, name: str = "file") -> list[dict[str, Any]]:
        """Decode and name every face; runs in the caller's (a web worker's) thread."""
        image = self.decode(data, name)
        if not self._lock.acquire(timeout=self._busy_timeout):
            raise UploadError(503, "identify: busy with other requests, try again")
        try:
            started = time.perf_counter()
            faces = self._identifier(image)
            self.last_ms = (time.perf_counter() - started) * 1000.0
            self.calls += 1
            return faces
        finally:
            self._lock.release()


def check_size(size: int, limits: UploadLimits, name: str = "file") -> None:
    """``UploadError`` when an upload of ``size`` bytes is empty (400) or too big (413)."""
    if size == 0:
        raise UploadError(400, f"{name}: empty upload")
    if size > limits.max_bytes:
        raise UploadError(413, f"{name}: {size:,} bytes is over the limit of {limits.max_bytes:,} (web.max_upload_mb)")


def check_image(data: bytes, limits: UploadLimits, name: str = "file") -> tuple[int, int]:
    """(width, height) of an upload, read from its header without decoding the pixels; ``UploadError``
    when it is empty (400), too big in bytes or pixels (413) or not an image (415)."""
    check_size(len(data), limits, name)
    try:
        width, height = image_size(data, name)
    except ImageReadError:
        raise UploadError(415, f"{name}: not an image (JPEG, PNG, WebP, BMP, ...)") from None
    if width * height > limits.max_pixels:
        raise UploadError(
            413,
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{limits.max_pixels:,} (web.max_upload_pixels)",
        )
    return width, height


def _reason(exc: ImageReadError, name: str) -> str:
    return str(exc).removeprefix(f"{name}: ")
