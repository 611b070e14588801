"""What every frame source emits and returns, and the contract its thread relies on.

A source's thread calls ``run(emit, stop)``. The source calls ``emit`` with each decoded
``Frame`` and, for live sources, a ``SourceStatus`` whenever the stream goes down or comes
(back) up. ``emit`` returns False when the consumer wants the source to stop.

Backpressure is the consumer's job, by source kind:

- files (``is_live`` False) never drop: ``emit`` may block (a bounded put with a timeout
  loop that also watches ``stop``), so every frame arrives in order;
- live sources (``is_live`` True) emit as fast as frames arrive and must never be slowed
  down: the consumer's ``emit`` for a live source must not block (a latest-frame slot that
  counts what it overwrites), otherwise the network buffers fill and latency grows.
"""

from __future__ import annotations

import abc
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from stream.errors import UserError
from stream.types import Frame

__all__ = [
    "Emit",
    "FrameSource",
    "SourceError",
    "SourceStats",
    "SourceStatus",
    "StatusKind",
    "pts_or_fallback",
]

StatusKind = Literal["down", "up"]


class SourceError(UserError):
    """A source that cannot be opened at all (or a read that cannot go on); the message names it."""


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A live stream went down or came (back) up.

    ``epoch`` is the epoch that ended ("down") or the one that starts with the next frame
    ("up"). ``reason`` is one line with credentials masked. ``at`` is wall-clock time
    (``time.time()``), ready for an Event's ``ts``.
    """

    stream_id: str
    kind: StatusKind
    epoch: int
    reason: str
    at: float

    def __post_init__(self) -> None:
        if self.kind not in ("down", "up"):
            raise ValueError(f"SourceStatus.kind: must be 'down' or 'up', got {self.kind!r}")
        if self.epoch < 0:
            raise ValueError(f"SourceStatus.epoch: must be >= 0, got {self.epoch}")
        if not math.isfinite(self.at):
            raise ValueError(f"SourceStatus.at: must be finite, got {self.at}")


@dataclass(frozen=True, slots=True)
class SourceStats:
    """What one ``run`` did.

    frames_read: frames emitted (all epochs). decode_errors_skipped: corrupt packets/frames
    skipped. reconnects: connection attempts after the first (successful or not).
    epochs: epochs that delivered at least one frame. files_skipped: image-folder entries
    that were not readable images.
    """

    frames_read: int = 0
    decode_errors_skipped: int = 0
    reconnects: int = 0
    epochs: int = 0
    files_skipped: int = 0


Emit = Callable[[Frame | SourceStatus], bool]


class FrameSource(abc.ABC):
    """One video input. Construction validates (and fails loudly); ``run`` does the reading."""

    _decode_errors = 0

    @property
    def decode_errors(self) -> int:
        """Corrupt packets/frames skipped so far, over every ``run`` (written by the reading thread)."""
        return self._decode_errors

    def _count_decode_error(self) -> None:
        self._decode_errors += 1

    @property
    @abc.abstractmethod
    def stream_id(self) -> str: ...

    @property
    @abc.abstractmethod
    def is_live(self) -> bool:
        """True for cameras and URLs: real-time, EOF means disconnect, the consumer may drop."""

    @property
    @abc.abstractmethod
    def nominal_fps(self) -> float | None:
        """The declared frame rate, or None when unknown."""

    @abc.abstractmethod
    def run(self, emit: Emit, stop: threading.Event) -> SourceStats:
        """Read until the end (files), ``stop`` is set, or ``emit`` returns False.

        Releases every resource before returning; never waits without a timeout.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.stream_id!r})"


def pts_or_fallback(time_s: float | None, index: int, fps: float, last_pts: float | None) -> float:
    """A finite, non-decreasing presentation time in seconds.

    Uses the decoder's time when there is one, else ``index / fps``; a time that goes
    backwards (or is missing mid-stream) continues from ``last_pts`` by one frame period, so
    tracker time steps within an epoch are never negative.
    """
    period = 1.0 / fps
    if time_s is not None and math.isfinite(time_s):
        pts = float(time_s)
    elif last_pts is not None:
        pts = last_pts + period
    else:
        pts = index * period
    if last_pts is not None and pts < last_pts:
        pts = last_pts + period
    return pts
