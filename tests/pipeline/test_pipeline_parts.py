"""Pipeline plumbing without models: channels, inboxes, the batcher's order and determinism."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stream.pipeline.batcher import Batcher, FaceMemory, detect_batch
from stream.pipeline.channels import Channel, LatestSlot, Stopped
from stream.pipeline.graph import _segments
from stream.pipeline.inbox import FileInbox, LiveInbox
from stream.pipeline.messages import Detected, EndOfStream
from stream.types import FaceDetections, Frame
from tests.fakes import RecordingDetect


def _frame(stream: str, index: int, size: int = 8) -> Frame:
    return Frame(stream, index, 0, index / 25, 0.0, np.zeros((size, size, 3), np.uint8))


def test_channel_put_blocks_until_stop_and_get_times_out() -> None:
    stop = threading.Event()
    channel: Channel[int] = Channel(1, "c")
    channel.put(1, stop)
    assert channel.get(stop) == 1
    assert channel.get(stop, timeout=0.1) is None
    channel.put(2, stop)
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(Stopped):
        channel.put(3, stop)  # full: waits until stop


def test_latest_slot_keeps_the_newest_and_counts_drops() -> None:
    slot: LatestSlot[int] = LatestSlot("s")
    for i in range(5):
        slot.put(i)
    assert slot.get(threading.Event()) == 4 and slot.dropped == 4
    slot.close()
    assert slot.get(threading.Event()) is None and slot.closed


def test_live_inbox_ends_once_after_close() -> None:
    inbox = LiveInbox("cam")
    stop = threading.Event()
    inbox.offer(_frame("cam", 0), stop)
    inbox.offer(_frame("cam", 1), stop)
    inbox.close(stop)
    assert inbox.take().index == 1 and inbox.dropped == 1
    assert inbox.take() == EndOfStream("cam")
    assert inbox.take() is None


def _filled(stream: str, count: int) -> FileInbox:
    inbox = FileInbox(stream, capacity=count + 1)
    stop = threading.Event()
    for i in range(count):
        inbox.offer(_frame(stream, i), stop)
    inbox.close(stop)
    return inbox


def test_file_batches_are_full_round_robin_and_keep_each_stream_in_order() -> None:
    batcher = Batcher([_filled("a", 5), _filled("b", 3)], max_batch=4, max_wait_ms=0, every_n=1)
    stop = threading.Event()
    batches = []
    while not batcher.finished:
        batches.append(batcher.collect(stop))
    flat = [item for batch in batches for item in batch]
    frames = [item for item in flat if isinstance(item, Frame)]
    assert [f.stream_id for f in frames[:4]] == ["a", "b", "a", "b"]
    for stream in ("a", "b"):
        assert [f.index for f in frames if f.stream_id == stream] == list(range(5 if stream == "a" else 3))
    assert [item for item in flat if isinstance(item, EndOfStream)] == [EndOfStream("b"), EndOfStream("a")]
    assert all(sum(isinstance(i, Frame) for i in batch) <= 4 for batch in batches)


def test_detect_batch_skips_frames_and_groups_sizes() -> None:
    detect = RecordingDetect()
    calls = detect.calls
    batch = [_frame("a", 0), _frame("a", 1), _frame("b", 0, size=16), EndOfStream("a")]
    out = detect_batch(batch, detect, lambda f: f.index % 2 == 0)
    assert sorted(len(c) for c in calls) == [1, 1]  # one call per frame size, frame 1 skipped
    assert isinstance(out[1], Detected) and out[1].detections is None
    assert out[3] == EndOfStream("a")


def test_segments_split_at_end_markers() -> None:
    d = [Detected(_frame("a", i), None) for i in range(3)]
    parts = _segments([d[0], d[1], EndOfStream("a"), d[2]])
    assert parts == [[d[0], d[1]], EndOfStream("a"), [d[2]]]


class FakeRefiner:
    """detect: one face at (frame index, 0); refine: every known face moved by +1 px; records calls."""

    def __init__(self) -> None:
        self.refine_calls: list[list[tuple[str, int, int]]] = []  # (stream, index, known faces) per call

    def detect(self, images: list[np.ndarray]) -> list[FaceDetections]:
        return [_faces([[0.0, 0.0, 4.0, 4.0]]) for _ in images]

    def refine(self, images: list[np.ndarray], known: list[FaceDetections]) -> list[FaceDetections]:
        self.refine_calls.append(
            [(str(im.shape), int(np.asarray(im)[0, 0, 0]), len(k)) for im, k in zip(images, known, strict=True)]
        )
        return [_faces(k.boxes + 1.0) for k in known]


def _faces(boxes: list[list[float]] | np.ndarray) -> FaceDetections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return FaceDetections(boxes, np.full(n, 0.99, np.float32), np.zeros((n, 5, 2), np.float32))


def _marked(stream: str, index: int, size: int = 8, epoch: int = 0) -> Frame:
    image = np.zeros((size, size, 3), np.uint8)
    image[0, 0, 0] = index
    return Frame(stream, index, epoch, index / 25, 0.0, image)


def test_frames_between_full_detections_get_the_known_faces_refined_in_order() -> None:
    fake, memory = FakeRefiner(), FaceMemory()
    every_3 = lambda f: f.index % 3 == 0  # noqa: E731
    out = []
    for start in range(0, 7, 2):  # batches of two frames of one stream, as the batcher makes them
        batch = [_marked("a", i) for i in range(start, min(start + 2, 7))]
        out += detect_batch(batch, fake.detect, every_3, fake.refine, memory)
    boxes = [d.detections.boxes[:, 0].tolist() for d in out]
    assert boxes == [[0.0], [1.0], [2.0], [0.0], [1.0], [2.0], [0.0]]  # each refines its predecessor
    assert all(len(call) == 1 for call in fake.refine_calls)  # one stream: one frame per call, in order


def test_refining_skips_without_memory_and_batches_distinct_streams() -> None:
    fake = FakeRefiner()
    batch = [_marked("a", 0), _marked("b", 0), _marked("a", 1), _marked("b", 1), _marked("c", 1)]
    out = detect_batch(batch, fake.detect, lambda f: f.index == 0)
    assert [d.detections is None for d in out] == [False, False, True, True, True]  # no refine: predict only
    memory = FaceMemory()
    out = detect_batch(batch, fake.detect, lambda f: f.index == 0, fake.refine, memory)
    assert len(fake.refine_calls) == 1 and len(fake.refine_calls[0]) == 2  # a1 and b1 in one call
    assert [len(d.detections) for d in out] == [1, 1, 1, 1, 0]  # c never had a full detection: nothing known


def test_face_memory_forgets_at_the_end_and_on_a_new_epoch_and_keeps_lost_faces() -> None:
    memory = FaceMemory()
    memory.remember(_marked("a", 0), _faces([[0, 0, 10, 10], [50, 50, 60, 60]]), full=True)
    memory.remember(_marked("a", 1), _faces([[1, 1, 11, 11]]), full=False)  # the second face was lost
    known = memory.known(_marked("a", 2))
    assert known.boxes.tolist() == [[1, 1, 11, 11], [50, 50, 60, 60]]  # the lost one is looked for again
    assert len(memory.known(_marked("a", 2, epoch=1))) == 0  # a reconnect starts afresh
    memory.forget("a")
    assert len(memory.known(_marked("a", 2))) == 0
    fake = FakeRefiner()
    memory.remember(_marked("b", 0), _faces([[0, 0, 4, 4]]), full=True)
    detect_batch([EndOfStream("b"), _marked("b", 1)], fake.detect, lambda f: False, fake.refine, memory)
    assert fake.refine_calls == []  # forgotten at its end marker
