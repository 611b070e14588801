"""The detection batcher: fill a batch round-robin across streams, run MTCNN once per frame size.

A batch closes when it holds ``max_batch`` frames, or — when any stream is live — ``max_wait_ms``
after its first frame. With only files it waits for a full batch (or the streams' ends), so the
same file always gives the same batches and therefore the same results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from stream.pipeline.channels import Stopped
from stream.pipeline.inbox import Inbox
from stream.pipeline.messages import Detected, EndOfStream
from stream.types import FaceDetections, Frame

IDLE_WAIT_S = 0.002

DetectFn = Callable[[Sequence[np.ndarray]], list[FaceDetections]]  # equal-size BGR images → faces


class Batcher:
    def __init__(self, inboxes: Sequence[Inbox], max_batch: int, max_wait_ms: float, every_n: int) -> None:
        self._inboxes = list(inboxes)
        self._open = {inbox.stream_id for inbox in inboxes}
        self._max_batch = max_batch
        self._deadline_s = max_wait_ms / 1000.0 if any(i.live for i in inboxes) else None
        self._every_n = every_n
        self._turn = 0

    @property
    def finished(self) -> bool:
        return not self._open

    def collect(self, stop: threading.Event) -> list[Frame | EndOfStream]:
        """The next batch (frames and end markers, each stream in order); waits as described above."""
        batch: list[Frame | EndOfStream] = []
        frames = 0
        started: float | None = None
        while frames < self._max_batch and self._open:
            if stop.is_set():
                raise Stopped("batcher")
            item = self._next_item()
            if item is None:
                if started is not None and self._deadline_s is not None and time.monotonic() - started >= self._deadline_s:
                    break
                if not frames and batch:
                    break  # only end markers so far: pass them on
                time.sleep(IDLE_WAIT_S)
                continue
            batch.append(item)
            if isinstance(item, EndOfStream):
                self._open.discard(item.stream_id)
            else:
                frames += 1
                started = started or time.monotonic()
        return batch

    def _next_item(self) -> Frame | EndOfStream | None:
        """One item from the next stream (round robin) that has one."""
        count = len(self._inboxes)
        for step in range(count):
            inbox = self._inboxes[(self._turn + step) % count]
            if inbox.stream_id not in self._open:
                continue
            item = inbox.take()
            if item is not None:
                self._turn = (self._turn + step + 1) % count
                return item
        return None

    def needs_detection(self, frame: Frame) -> bool:
        return frame.index % self._every_n == 0


def detect_batch(
    batch: Sequence[Frame | EndOfStream], detect: DetectFn, needs_detection: Callable[[Frame], bool]
) -> list[Detected | EndOfStream]:
    """Detect faces in the frames that need it, one detector call per frame size; keep the order."""
    frames = [item for item in batch if isinstance(item, Frame) and needs_detection(item)]
    found: dict[int, FaceDetections] = {}
    by_size: dict[tuple[int, ...], list[Frame]] = {}
    for frame in frames:
        by_size.setdefault(frame.image.shape, []).append(frame)
    for group in by_size.values():
        for frame, dets in zip(group, detect([f.image for f in group]), strict=True):
            found[id(frame)] = dets
    return [item if isinstance(item, EndOfStream) else Detected(item, found.get(id(item))) for item in batch]
