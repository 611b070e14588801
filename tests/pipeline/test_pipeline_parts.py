"""Pipeline plumbing without models: channels, inboxes, the batcher's order and determinism."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stream.pipeline.batcher import Batcher, detect_batch
from stream.pipeline.channels import Channel, LatestSlot, Stopped
from stream.pipeline.graph import _segments
from stream.pipeline.inbox import FileInbox, LiveInbox
from stream.pipeline.messages import Detected, EndOfStream
from stream.types import Frame
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
