"""Ctrl-C while the output stage is closing: the pipeline waits for it (within the join budget).

CPython 3.11's ``Thread.join`` marks a thread that is still running as stopped when a KeyboardInterrupt
lands inside the join (threading's bpo-45274 handling); the joins after it then return at once and the
process could end while the outputs (video, events, MQTT, webhooks) are still being closed."""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from stream.identity.bestshot import BestShotSettings
from stream.identity.matcher import Matcher
from stream.identity.voting import TrackVoter
from stream.pipeline.graph import Pipeline, PipelineSettings
from stream.pipeline.messages import Annotated, TrackFace
from stream.pipeline.recognise import Recogniser
from stream.sources import FrameSource
from stream.sources.base import Emit, SourceStats
from stream.types import Event, Frame
from tests.fakes import NoEmbedder, NoFaceDetector
from trackers import TrackerSettings


class _Camera(FrameSource):
    """A live source of grey frames every 20 ms until stopped."""

    stream_id, is_live, nominal_fps = "cam", True, 50.0

    def run(self, emit: Emit, stop: threading.Event) -> SourceStats:
        image = np.full((48, 64, 3), 90, np.uint8)
        index = 0
        while not stop.is_set() and emit(Frame("cam", index, 0, index / 50, time.monotonic(), image)):
            index += 1
            stop.wait(0.02)
        return SourceStats(frames_read=index)


class _SlowClose:
    """An output stage whose close takes a second (a video to finish, messages to flush)."""

    def __init__(self) -> None:
        self.frames = 0
        self.closed = False

    def frame(self, item: Annotated) -> None:
        self.frames += 1

    def events(self, events: Sequence[Event]) -> None:
        pass

    def faces(self, faces: Sequence[TrackFace]) -> None:
        pass

    def end_stream(self, stream_id: str) -> None:
        pass

    def close(self) -> None:
        time.sleep(1.0)
        self.closed = True


def test_ctrl_c_waits_for_the_output_stage_to_close() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("needs the main thread (KeyboardInterrupt)")
    voter = TrackVoter(Matcher((), np.zeros((0, 8), np.float32), 0.5, 0.0))
    recogniser = Recogniser(NoEmbedder(), voter, TrackerSettings(), BestShotSettings(), min_face_px=20)
    output = _SlowClose()
    pipeline = Pipeline([_Camera()], NoFaceDetector(), recogniser, output, PipelineSettings(max_batch=1))
    timer = threading.Timer(0.6, _thread.interrupt_main)  # Ctrl-C while the main thread waits on the output
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pipeline.run()
    timer.join()
    assert output.frames > 0
    assert output.closed, "run() returned before the output stage had closed"
    assert time.monotonic() - started < 0.6 + 4.0 + 5.0  # bounded by the join timeout, not forever
