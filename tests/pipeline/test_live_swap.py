"""A changed gallery reaches a running recogniser without a restart: the recogniser, driven frame by
frame, takes the matcher the library published at its next batch, and the track on screen is named
(then renamed) at its next vote."""

from __future__ import annotations

import numpy as np

from stream.identity.bestshot import BestShotSettings
from stream.identity.matcher import Matcher
from stream.identity.slot import GallerySlot
from stream.identity.voting import TrackVoter, VotingSettings
from stream.pipeline.messages import Annotated, Detected
from stream.pipeline.recognise import Recogniser
from stream.types import EventKind, FaceDetections, Frame
from trackers import TrackerSettings

DIM = 8
ALICE, BOB = np.eye(DIM, dtype=np.float32)[:2]


class AliceEmbedder:
    """Every crop is Alice."""

    crop_size, crop_kind, model_id = 112, "template", "facenet:test"

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(ALICE[None, :], len(crops), axis=0), np.full(len(crops), 20.0, np.float32)


def _frame(i: int) -> Detected:
    x = 50.0 + i
    box = np.array([[x, 40, x + 60, 110]], np.float32)
    points = np.array([[15, 25], [45, 25], [30, 42], [18, 56], [42, 56]], np.float32)[None] + np.array([x, 40])
    faces = FaceDetections(box, np.array([0.99], np.float32), points.astype(np.float32))
    return Detected(Frame("cam", i, 0, i / 25, 0.0, np.full((240, 320, 3), 90, np.uint8)), faces)


def _matcher(*people: tuple[str, np.ndarray]) -> Matcher:
    return Matcher([p for p, _ in people], np.stack([v for _, v in people]), threshold=0.5, min_margin=0.05)


def _run(recogniser: Recogniser, frames: range) -> list[Annotated]:
    return [out for i in frames for out in recogniser.process([_frame(i)])]


def test_the_recogniser_takes_a_published_matcher_at_its_next_batch() -> None:
    slot = GallerySlot(_matcher(("bob", BOB)))
    recogniser = Recogniser(
        AliceEmbedder(),
        TrackVoter(slot.matcher, VotingSettings(min_votes=2)),
        TrackerSettings(min_confirm_s=0.0, min_hits=1),
        BestShotSettings(max_attempts=100, min_gain=0.0),
        min_face_px=20,
        gallery=slot,
    )
    before = _run(recogniser, range(10))
    assert before[-1].labels and before[-1].labels[0].person is None  # alice is not in the gallery yet
    assert not [e for a in before for e in a.events if e.kind is EventKind.IDENTITY_ASSIGNED]

    slot.publish(_matcher(("bob", BOB), ("alice", ALICE)))  # the library enrolled her
    after = _run(recogniser, range(10, 14))
    named = [(a.frame.index, e) for a in after for e in a.events if e.kind is EventKind.IDENTITY_ASSIGNED]
    track_id = before[-1].labels[0].snapshot.track_id
    assert [(e.person, e.track_id) for _, e in named] == [("alice", track_id)]  # the same track, on screen
    assert named[0][0] <= 11, "named at the first vote after the swap"
    assert after[-1].labels[0].person == "alice"

    slot.publish(_matcher(("bob", BOB), ("alice cooper", ALICE)))  # renamed in the library
    renamed = [e for a in _run(recogniser, range(14, 17)) for e in a.events if e.kind is EventKind.IDENTITY_CHANGED]
    assert [(e.person, dict(e.extra)["previous"], dict(e.extra)["reason"]) for e in renamed] == [
        ("alice cooper", "alice", "gallery")
    ]


def test_a_library_change_reaches_a_track_on_screen(tmp_path) -> None:
    """The same through the library: photos uploaded, then a rename, while a face is on screen."""
    from stream.config import AppConfig
    from stream.faces.models import Models
    from stream.identity.library import Library
    from stream.identity.photos import Upload
    from tests.fakes import LevelEmbedder, OneFaceDetector
    from tests.identity.test_library import VECTORS, photo

    embedder = LevelEmbedder(VECTORS)
    (tmp_path / "gallery" / "bob").mkdir(parents=True)
    (tmp_path / "gallery" / "bob" / "b.png").write_bytes(photo(150))
    library = Library(tmp_path / "gallery", AppConfig(), models=Models(OneFaceDetector(), embedder, 8))
    recogniser = Recogniser(
        embedder,
        TrackVoter(library.load(), VotingSettings(min_votes=2)),
        TrackerSettings(min_confirm_s=0.0, min_hits=1),
        BestShotSettings(max_attempts=100, min_gain=0.0),
        min_face_px=20,
        gallery=library.slot,
    )
    noise = np.random.default_rng(0).integers(-20, 21, (240, 320, 3))
    image = np.clip(100 + noise, 0, 255).astype(np.uint8)  # alice's grey level

    def run(frames: range) -> list:
        out = []
        for i in frames:
            item = _frame(i)
            out += recogniser.process([Detected(Frame("cam", i, 0, i / 25, 0.0, image), item.detections)])
        return [e for a in out for e in a.events if e.kind in (EventKind.IDENTITY_ASSIGNED, EventKind.IDENTITY_CHANGED)]

    assert run(range(8)) == []
    library.add_photos("alice", [Upload("alice.png", photo(100))])
    assert [(e.kind, e.person) for e in run(range(8, 11))] == [(EventKind.IDENTITY_ASSIGNED, "alice")]
    library.rename_person("alice", "alice cooper")
    assert [(e.kind, e.person) for e in run(range(11, 14))] == [(EventKind.IDENTITY_CHANGED, "alice cooper")]
