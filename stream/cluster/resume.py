"""A stream run again by a restarted cluster worker: the same source in a new epoch, announced.

When a worker actor's process dies, Ray starts it again and the head asks it to run its streams
again. For a file that means from the beginning: the journal and the store already hold what the
dead worker recorded (epoch ``n - 1``), the new run records epoch ``n``; track keys (stream, epoch, id)
never collide. A live stream simply continues from now. Either way the stream's first items are a
``stream_down`` of the epoch that died with the process (at the restart: the dead process could not
record it) and a ``stream_up`` of the new one, both naming the restart.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from stream.sources import FrameSource, SourceStatus
from stream.sources.base import Emit, SourceStats
from stream.types import Frame

__all__ = ["ResumedSource"]


class ResumedSource(FrameSource):
    """``inner`` with every frame in ``epoch``, after ``stream_down`` of ``epoch - 1`` and ``stream_up``
    of ``epoch`` (``epoch`` >= 1)."""

    def __init__(self, inner: FrameSource, epoch: int, reason: str) -> None:
        if epoch < 1:
            raise ValueError(f"ResumedSource.epoch: a resumed stream's epoch is >= 1, got {epoch}")
        self.inner = inner
        self.epoch = epoch
        self.reason = reason

    @property
    def stream_id(self) -> str:
        return self.inner.stream_id

    @property
    def is_live(self) -> bool:
        return self.inner.is_live

    @property
    def nominal_fps(self) -> float | None:
        return self.inner.nominal_fps

    @property
    def decode_errors(self) -> int:
        return self.inner.decode_errors

    def run(self, emit: Emit, stop: threading.Event) -> SourceStats:
        now = time.time()
        down = SourceStatus(self.stream_id, "down", self.epoch - 1, f"{self.reason}: its process died", now)
        if not (emit(down) and emit(SourceStatus(self.stream_id, "up", self.epoch, self.reason, now))):
            return SourceStats()

        def in_epoch(item: Frame | SourceStatus) -> bool:
            return emit(dataclasses.replace(item, epoch=item.epoch + self.epoch))

        return self.inner.run(in_epoch, stop)
