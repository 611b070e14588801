"""Hand-offs between stage threads: every wait has a timeout and checks one stop event.

- ``Channel``: a bounded FIFO; ``put`` blocks (files never drop) until there is room or stop is set.
- ``LatestSlot``: a one-frame mailbox for live sources; a new item replaces an unread one and the
  replaced item is counted as dropped ("drop at the door").
"""

from __future__ import annotations

import queue
import threading
from typing import Generic, TypeVar, overload

T = TypeVar("T")

POLL_S = 0.05


class Stopped(Exception):
    """The pipeline's stop event was set while waiting."""


class Channel(Generic[T]):
    def __init__(self, capacity: int, name: str) -> None:
        self.name = name
        self._queue: queue.Queue[T] = queue.Queue(maxsize=capacity)

    def put(self, item: T, stop: threading.Event) -> None:
        """Block until there is room; raise ``Stopped`` if the pipeline stops first."""
        while not stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue
        raise Stopped(self.name)

    @overload
    def get(self, stop: threading.Event) -> T: ...
    @overload
    def get(self, stop: threading.Event, timeout: float) -> T | None: ...

    def get(self, stop: threading.Event, timeout: float | None = None) -> T | None:
        """The next item, or None after ``timeout`` seconds; raise ``Stopped`` when stop is set."""
        waited = 0.0
        while not stop.is_set():
            try:
                return self._queue.get(timeout=POLL_S)
            except queue.Empty:
                waited += POLL_S
                if timeout is not None and waited >= timeout:
                    return None
        raise Stopped(self.name)

    def get_nowait(self) -> T | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def depth(self) -> int:
        return self._queue.qsize()


class LatestSlot(Generic[T]):
    """Holds only the newest item; overwritten items are counted in ``dropped``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._item: T | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._lock:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._ready.notify()

    def close(self) -> None:
        """No more items will come; a waiting ``get`` returns what is left, then None."""
        with self._lock:
            self._closed = True
            self._ready.notify_all()

    def get(self, stop: threading.Event, timeout: float | None = None) -> T | None:
        waited = 0.0
        with self._lock:
            while self._item is None and not self._closed:
                if stop.is_set():
                    raise Stopped(self.name)
                self._ready.wait(POLL_S)
                waited += POLL_S
                if timeout is not None and waited >= timeout:
                    return None
            item, self._item = self._item, None
            return item

    def get_nowait(self) -> T | None:
        with self._lock:
            item, self._item = self._item, None
            return item

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed and self._item is None

    def depth(self) -> int:
        with self._lock:
            return int(self._item is not None)
