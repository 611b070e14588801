"""``GallerySlot``: the matcher the running streams use, swapped atomically when the library changes.

One writer publishes (``stream.identity.library.Library``, from whatever thread changed the gallery:
a web request, a command) and one reader takes (the recognition thread, at the start of each batch).
A ``Matcher`` is immutable, so handing one over is a reference swap under a lock; the recognition
thread never waits on an enrolment, only on that swap. ``version`` counts publications (0: the
matcher the slot was made with), so a reader or a web page can tell that something changed.
"""

from __future__ import annotations

import threading

from stream.identity.matcher import Matcher

__all__ = ["GallerySlot"]


class GallerySlot:
    """The current matcher and its version (see the module notes). Thread-safe."""

    def __init__(self, matcher: Matcher) -> None:
        self._lock = threading.Lock()
        self._matcher = matcher
        self._version = 0

    @property
    def matcher(self) -> Matcher:
        with self._lock:
            return self._matcher

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def current(self) -> tuple[Matcher, int]:
        """The matcher and its version, read together."""
        with self._lock:
            return self._matcher, self._version

    def publish(self, matcher: Matcher) -> int:
        """Make ``matcher`` the one every stream uses from its next batch; the new version."""
        if not isinstance(matcher, Matcher):
            raise TypeError(f"GallerySlot.publish: expected a Matcher, got {type(matcher).__name__}")
        with self._lock:
            self._matcher = matcher
            self._version += 1
            return self._version
