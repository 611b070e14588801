"""Live streams embed off the frame path: frames leave the recogniser while the embedder is busy, the
identity arrives on a later frame, and embeddings of tracks that ended meanwhile are dropped."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from stream.identity.bestshot import BestShotSettings
from stream.identity.matcher import Matcher
from stream.identity.voting import TrackVoter, VotingSettings
from stream.pipeline.channels import Stopped
from stream.pipeline.embedding import EmbedWorker
from stream.pipeline.messages import Annotated, Detected
from stream.pipeline.recognise import Recogniser
from stream.types import EventKind, FaceDetections, Frame
from trackers import TrackerSettings

DIM = 8
ALICE = np.eye(DIM, dtype=np.float32)[0]


class GatedEmbedder:
    """Embeds every crop as alice, but only after ``gate`` opens (a slow embedder under control)."""

    crop_size, crop_kind, model_id = 112, "template", "facenet:test"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        assert self.gate.wait(30), "the test never opened the gate"
        return np.repeat(ALICE[None, :], len(crops), axis=0), np.full(len(crops), 20.0, np.float32)


def _face(x: float) -> FaceDetections:
    box = np.array([[x, 40, x + 60, 110]], np.float32)
    eyes_nose_mouth = np.array([[15, 25], [45, 25], [30, 42], [18, 56], [42, 56]], np.float32)
    points = eyes_nose_mouth[None] + np.array([x, 40], np.float32)
    return FaceDetections(box, np.array([0.99], np.float32), points)


def _frames(stream: str, start: int, count: int, face: bool = True) -> list[Detected]:
    image = np.full((240, 320, 3), 90, np.uint8)
    return [
        Detected(
            Frame(stream, i, 0, i / 25, 0.0, image), _face(50 + i) if face else FaceDetections.empty()
        )
        for i in range(start, start + count)
    ]


def _recogniser(embedder: Any, **kwargs: Any) -> Recogniser:
    """A recogniser of one enrolled person (alice) that names a track at its first vote."""
    matcher = Matcher(("alice",), ALICE[None, :], threshold=0.5, min_margin=0.05)
    return Recogniser(
        embedder,
        TrackVoter(matcher, VotingSettings(min_votes=1)),
        TrackerSettings(min_confirm_s=0.0, min_hits=1, max_age_s=0.2),
        BestShotSettings(),
        min_face_px=20,
        **kwargs,
    )


@pytest.fixture
def running() -> Iterator[tuple[Recogniser, GatedEmbedder, threading.Event]]:
    embedder, stop = GatedEmbedder(), threading.Event()
    worker = EmbedWorker(embedder)
    recogniser = _recogniser(embedder, worker=worker, stop=stop)

    def run() -> None:
        with contextlib.suppress(Stopped):
            worker.run(stop)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield recogniser, embedder, stop
    stop.set()
    embedder.gate.set()
    thread.join(10)


def _kinds(out: list[Annotated]) -> list[EventKind]:
    return [e.kind for item in out for e in item.events]


def _wait_for_result(recogniser: Recogniser, stream: str, start: int) -> list[Annotated]:
    """Feed one frame at a time until the identity arrives (the worker thread needs a moment)."""
    out: list[Annotated] = []
    for index in range(start, start + 500):
        out += recogniser.process(_frames(stream, index, 1))
        if EventKind.IDENTITY_ASSIGNED in _kinds(out):
            return out
        threading.Event().wait(0.01)
    raise AssertionError("the identity never arrived")


def test_frames_go_on_while_the_embedder_is_busy_and_the_name_follows(running) -> None:
    recogniser, embedder, _ = running
    out = recogniser.process(_frames("cam", 0, 4))
    assert len(out) == 4 and EventKind.TRACK_STARTED in _kinds(out)
    assert _wait_until(lambda: embedder.calls == 1)  # the worker holds the first batch...
    out = recogniser.process(_frames("cam", 4, 4))  # ...and frames still come straight out
    assert len(out) == 4 and EventKind.IDENTITY_ASSIGNED not in _kinds(out)
    assert all(label.person is None for item in out for label in item.labels)
    embedder.gate.set()
    out = _wait_for_result(recogniser, "cam", 8)
    named = [e for item in out for e in item.events if e.kind is EventKind.IDENTITY_ASSIGNED]
    assert [(e.person, e.track_id) for e in named] == [("alice", 1)]
    assert out[-1].labels[0].person == "alice"  # the frame that carries the event shows the name
    assert recogniser.embeddings >= 1


def test_an_embedding_of_a_track_that_ended_meanwhile_is_dropped(running) -> None:
    recogniser, embedder, _ = running
    recogniser.process(_frames("cam", 0, 4))
    assert _wait_until(lambda: embedder.calls == 1)
    ended = recogniser.process(_frames("cam", 4, 12, face=False))  # 0.48 s without a face > max_age_s
    assert EventKind.TRACK_ENDED in _kinds(ended)
    embedder.gate.set()
    later: list[Annotated] = []
    index = 16

    def collected() -> bool:
        nonlocal index
        later.extend(recogniser.process(_frames("cam", index, 1, face=False)))
        index += 1
        return recogniser.embeddings >= 1

    assert _wait_until(collected), "the embedding never came back"
    assert EventKind.IDENTITY_ASSIGNED not in _kinds(later)  # it came back for an ended track: dropped


def test_events_of_a_stream_with_no_frame_in_the_batch_wait_for_its_next_frame(running) -> None:
    recogniser, embedder, _ = running
    recogniser.process(_frames("a", 0, 4))
    assert _wait_until(lambda: embedder.calls == 1)
    embedder.gate.set()
    assert _wait_until(lambda: not _collect_pending(recogniser, "b"))
    out = recogniser.process(_frames("a", 4, 1))
    assert [e.kind for e in out[0].events] == [EventKind.IDENTITY_ASSIGNED]


def _collect_pending(recogniser: Recogniser, other: str) -> bool:
    """Process a frame of another stream; True while stream a's identity has not been voted yet."""
    recogniser.process(_frames(other, 0, 1, face=False))
    return not any(e.kind is EventKind.IDENTITY_ASSIGNED for e in recogniser.pending("a"))


def _wait_until(condition, timeout_s: float = 30.0) -> bool:
    deadline = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return True
        deadline.wait(0.01)
    return False


class InstantEmbedder:
    crop_size, crop_kind, model_id = 112, "template", "facenet:test"

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(ALICE[None, :], len(crops), axis=0), np.full(len(crops), 20.0, np.float32)


def test_a_track_face_goes_out_with_the_frame_that_ends_the_track() -> None:
    """A batch of several frames of one stream where the track ends mid-batch: its face travels with
    the frame that carries its ``track_ended`` (the output stores the face only after that event)."""
    embedder = InstantEmbedder()
    recogniser = _recogniser(embedder)
    recogniser.process(_frames("cam", 0, 4))
    out = recogniser.process(_frames("cam", 4, 12, face=False))  # the track ends at a later frame
    ends = [i for i, item in enumerate(out) if EventKind.TRACK_ENDED in [e.kind for e in item.events]]
    with_faces = [i for i, item in enumerate(out) if item.faces]
    assert ends and ends[0] > 0, "the track should end after the batch's first frame"
    assert with_faces == ends
    assert [f.track.track_id for f in out[ends[0]].faces] == [1] and out[ends[0]].faces[0].person == "alice"
