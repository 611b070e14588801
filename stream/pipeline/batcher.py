"""The detection batcher: fill a batch round-robin across streams, run MTCNN once per frame size.

A batch closes when it holds ``max_batch`` frames, or — when any stream is live — ``max_wait_ms``
after its first frame. With only files it waits for a full batch (or the streams' ends), so the
same file always gives the same batches and therefore the same results.

Frames between full detections (``every_n_frames > 1``) carry ``detections=None`` (the tracker only
predicts), or, with a ``FaceMemory`` (``detection.refine_between``), the faces of the stream's
previous frame and of its last full detection re-found by ``refine``: a measured box and landmarks
on every frame for every known face, while new faces are looked for on the full detections only.
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
from trackers import iou_matrix

IDLE_WAIT_S = 0.002
_SAME_FACE_IOU = 0.3  # a face of the last full detection overlapping a remembered one this much is that one

DetectFn = Callable[[Sequence[np.ndarray]], list[FaceDetections]]  # equal-size BGR images → faces
RefineFn = Callable[[Sequence[np.ndarray], Sequence[FaceDetections]], list[FaceDetections]]  # + known faces


class FaceMemory:
    """Per stream (and epoch): the faces of its previous frame and of its last full detection, the
    candidates ``refine`` re-finds on the next frame that is not fully detected. Owned by the detect
    thread."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, FaceDetections, FaceDetections]] = {}  # stream -> epoch, last, full

    def known(self, frame: Frame) -> FaceDetections:
        """The previous frame's faces, and those of the last full detection that none of them
        overlaps (IoU >= 0.3): faces lost since, to look for once more."""
        entry = self._last.get(frame.stream_id)
        if entry is None or entry[0] != frame.epoch:
            return FaceDetections.empty()
        _, last, full = entry
        if len(last) == 0 or len(full) == 0:
            return full if len(last) == 0 else last
        lost = iou_matrix(full.boxes, last.boxes).max(axis=1) < _SAME_FACE_IOU
        return FaceDetections.concat([last, full.select(lost)])

    def remember(self, frame: Frame, faces: FaceDetections, full: bool) -> None:
        entry = self._last.get(frame.stream_id)
        previous_full = entry[2] if entry is not None and entry[0] == frame.epoch else FaceDetections.empty()
        self._last[frame.stream_id] = (frame.epoch, faces, faces if full else previous_full)

    def forget(self, stream_id: str) -> None:
        self._last.pop(stream_id, None)


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
    batch: Sequence[Frame | EndOfStream],
    detect: DetectFn,
    needs_detection: Callable[[Frame], bool],
    refine: RefineFn | None = None,
    memory: FaceMemory | None = None,
) -> list[Detected | EndOfStream]:
    """Detect faces in the frames that need it, one detector call per frame size; keep the order.

    With ``refine`` and ``memory`` the other frames get the stream's known faces re-found, in stream
    order (each frame's candidates come from its predecessor): one ``refine`` call per run of frames
    of distinct streams and one size."""
    frames = [item for item in batch if isinstance(item, Frame) and needs_detection(item)]
    found: dict[int, FaceDetections] = {}
    by_size: dict[tuple[int, ...], list[Frame]] = {}
    for frame in frames:
        by_size.setdefault(frame.image.shape, []).append(frame)
    for group in by_size.values():
        for frame, dets in zip(group, detect([f.image for f in group]), strict=True):
            found[id(frame)] = dets
    if refine is not None and memory is not None:
        _refine_between(batch, found, refine, memory)
    return [item if isinstance(item, EndOfStream) else Detected(item, found.get(id(item))) for item in batch]


def _refine_between(
    batch: Sequence[Frame | EndOfStream], found: dict[int, FaceDetections], refine: RefineFn, memory: FaceMemory
) -> None:
    """Fill ``found`` for the frames without a full detection, in order; update ``memory``."""
    pending: list[Frame] = []

    def flush() -> None:
        if not pending:
            return
        known = [memory.known(frame) for frame in pending]
        asked = [i for i, faces in enumerate(known) if len(faces)]  # nothing known: nothing to re-find
        refined = refine([pending[i].image for i in asked], [known[i] for i in asked]) if asked else []
        results = dict(zip(asked, refined, strict=True))
        for i, frame in enumerate(pending):
            faces = results.get(i, FaceDetections.empty())
            found[id(frame)] = faces
            memory.remember(frame, faces, full=False)
        pending.clear()

    for item in batch:
        if isinstance(item, EndOfStream):
            flush()
            memory.forget(item.stream_id)
            continue
        streams = {f.stream_id for f in pending}
        if item.stream_id in streams or (pending and pending[0].image.shape != item.image.shape):
            flush()
        if id(item) in found:
            memory.remember(item, found[id(item)], full=True)
        else:
            pending.append(item)
    flush()
