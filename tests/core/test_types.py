"""Stage types: shape and dtype validation naming the field, immutability, empty values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stream.types import (
    Embedding,
    Event,
    EventKind,
    FaceCrop,
    FaceDetections,
    Frame,
    Identity,
    Match,
    TrackKey,
    TrackSnapshot,
    TrackState,
)


def _frame(image: np.ndarray) -> Frame:
    return Frame(stream_id="cam", index=0, epoch=0, pts_s=0.0, captured_at=0.0, image=image)


def _dets(n: int = 2) -> FaceDetections:
    return FaceDetections(
        boxes=np.arange(n * 4, dtype=np.float32).reshape(n, 4),
        scores=np.full(n, 0.9, np.float32),
        landmarks=np.zeros((n, 5, 2), np.float32),
    )


def test_frame_image_is_read_only_and_frame_frozen() -> None:
    frame = _frame(np.zeros((4, 6, 3), np.uint8))
    assert (frame.height, frame.width) == (4, 6)
    with pytest.raises(ValueError, match="read-only"):
        frame.image[0, 0, 0] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.index = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("image", "error", "text"),
    [
        (np.zeros((4, 6, 3), np.float32), TypeError, "Frame.image: expected dtype uint8, got float32"),
        (np.zeros((4, 6), np.uint8), ValueError, r"Frame.image: expected 3-d array"),
        (np.zeros((4, 6, 4), np.uint8), ValueError, r"Frame.image: expected shape \(\*, \*, 3\), got \(4, 6, 4\)"),
        (np.zeros((0, 6, 3), np.uint8), ValueError, "Frame.image: empty image"),
        ([[1, 2, 3]], TypeError, "Frame.image: expected numpy.ndarray, got list"),
    ],
)
def test_frame_rejects_bad_images(image: object, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        _frame(image)  # type: ignore[arg-type]


def test_frame_rejects_negative_index() -> None:
    with pytest.raises(ValueError, match="Frame.index"):
        Frame("cam", -1, 0, 0.0, 0.0, np.zeros((2, 2, 3), np.uint8))


def test_detections_empty_is_zero_length_arrays() -> None:
    empty = FaceDetections.empty()
    assert len(empty) == 0
    assert empty.boxes.shape == (0, 4) and empty.scores.shape == (0,) and empty.landmarks.shape == (0, 5, 2)
    assert empty.boxes.dtype == np.float32


def test_detections_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match=r"FaceDetections.scores: axis 0 has length 3, other fields have n=2"):
        FaceDetections(np.zeros((2, 4), np.float32), np.zeros(3, np.float32), np.zeros((2, 5, 2), np.float32))


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("boxes", np.zeros((2, 4), np.float64), "FaceDetections.boxes: expected dtype float32, got float64"),
        ("boxes", np.zeros((2, 5), np.float32), r"FaceDetections.boxes: expected shape \(n, 4\)"),
        ("landmarks", np.zeros((2, 4, 2), np.float32), r"FaceDetections.landmarks: expected shape \(n, 5, 2\)"),
        ("scores", np.array([0.5, np.nan], np.float32), "FaceDetections.scores: contains NaN"),
    ],
)
def test_detections_name_the_bad_field(field: str, value: np.ndarray, text: str) -> None:
    good = _dets(2)
    with pytest.raises((TypeError, ValueError), match=text):
        dataclasses.replace(good, **{field: value})


def test_detections_select_and_read_only() -> None:
    dets = _dets(3)
    picked = dets.select(np.array([True, False, True]))
    assert len(picked) == 2
    np.testing.assert_array_equal(picked.boxes[1], dets.boxes[2])
    with pytest.raises(ValueError, match="read-only"):
        dets.scores[0] = 0.0


def test_track_snapshot_checks_box() -> None:
    snap = TrackSnapshot(1, TrackState.CONFIRMED, np.zeros(4, np.float32), 0.9, -1, 3, 2, 0.1)
    assert not snap.matched
    with pytest.raises(TypeError, match="TrackSnapshot.box: expected dtype float32"):
        TrackSnapshot(1, TrackState.CONFIRMED, np.zeros(4), 0.9, 0, 3, 2, 0.1)
    with pytest.raises(TypeError, match="TrackSnapshot.state"):
        TrackSnapshot(1, "confirmed", np.zeros(4, np.float32), 0.9, 0, 3, 2, 0.1)  # type: ignore[arg-type]


def test_face_crop_and_embedding() -> None:
    crop = FaceCrop(TrackKey("cam", 0, 7), 12, np.zeros((112, 112, 3), np.uint8), 0.8, {"clipped"})
    assert crop.flags == frozenset({"clipped"}) and str(crop.track) == "cam:7"
    with pytest.raises(TypeError, match="FaceCrop.crop"):
        FaceCrop(TrackKey("cam", 0, 7), 12, np.zeros((112, 112, 3), np.float32), 0.8)
    vec = np.zeros(512, np.float32)
    vec[0] = 1.0
    emb = Embedding(vec, 23.5, "adaface:ir_101:abc")
    assert emb.vector.flags.writeable is False
    with pytest.raises(ValueError, match="Embedding.vector: must be unit-norm"):
        Embedding(vec * 2, 23.5, "m")
    with pytest.raises(ValueError, match="Embedding.norm"):
        Embedding(vec, float("nan"), "m")


def test_match_identity_event() -> None:
    match = Match((("ann", 0.7), ("bob", 0.4)), 0.3)
    assert match.best == ("ann", 0.7)
    with pytest.raises(ValueError, match="Match.candidates: must be sorted"):
        Match((("ann", 0.4), ("bob", 0.7)), 0.3)
    assert Identity(None, 0.0, 0).known is False
    event = Event.of_track(1.5, EventKind.IDENTITY_ASSIGNED, TrackKey("cam", 2, 7), "ann", 0.7, (("votes", 3),))
    assert event.stream == "cam" and event.track_id == 7
    assert event.to_dict() == {
        "time": None,
        "pts_s": 1.5,
        "stream": "cam",
        "kind": "identity_assigned",
        "epoch": 2,
        "track_id": 7,
        "person": "ann",
        "score": 0.7,
        "votes": 3,
    }
    up = Event(2.0, "cam", EventKind.STREAM_UP, extra=(("epoch", 3), ("reason", "reconnected")))
    assert up.to_dict()["epoch"] == 3 and up.track_id is None
    with pytest.raises(TypeError, match="Event.kind"):
        Event(1.5, "cam", "identity_assigned")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a track of stream 'other'"):
        Event(1.5, "other", EventKind.TRACK_STARTED, TrackKey("cam", 0, 1))
    with pytest.raises(ValueError, match="epoch must not be set in extra"):
        Event.of_track(1.5, EventKind.TRACK_STARTED, TrackKey("cam", 0, 1), extra=(("epoch", 4),))
    assert [str(TrackKey("cam", 0, 7)), str(TrackKey("cam", 2, 7))] == ["cam:7", "cam#2:7"]
