"""outputs.blur_unknown in the pipeline: the recogniser hands over tentative tracks, and the annotated
image mosaics every face not named (unknown, lost, tentative) before drawing the overlay."""

from __future__ import annotations

import cv2
import numpy as np

from stream.identity.bestshot import BestShotSettings
from stream.identity.matcher import Matcher
from stream.identity.voting import TrackVoter
from stream.outputs.overlay import TrackView, draw_overlay
from stream.outputs.privacy import BLUR_MARGIN
from stream.pipeline.messages import Annotated, Detected, TrackLabel
from stream.pipeline.recognise import Recogniser
from stream.pipeline.writers import annotated_image
from stream.types import FaceDetections, Frame
from trackers import TrackerSettings, TrackSnapshot, TrackState

H, W = 360, 640


def _textured() -> np.ndarray:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    image.flags.writeable = False
    return image


def _frame(image: np.ndarray, index: int = 0, fps: float = 25.0) -> Frame:
    return Frame("cam", index, 0, index / fps, 0.0, image)


def _snap(
    track_id: int, box: tuple[float, float, float, float], state: TrackState = TrackState.CONFIRMED
) -> TrackSnapshot:
    return TrackSnapshot(track_id, state, np.array(box, np.float32), 0.99, 0, 5, 5, 0.0)


def _detail(patch: np.ndarray) -> float:
    grey = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _region(box: tuple[float, float, float, float]) -> tuple[slice, slice]:
    x1, y1, x2, y2 = box
    dx, dy = BLUR_MARGIN * (x2 - x1), BLUR_MARGIN * (y2 - y1)
    return (
        slice(max(0, int(np.floor(y1 - dy))), min(H, int(np.ceil(y2 + dy)))),
        slice(max(0, int(np.floor(x1 - dx))), min(W, int(np.ceil(x2 + dx)))),
    )


NAMED = (40.0, 60.0, 120.0, 160.0)
UNKNOWN = (250.0, 60.0, 330.0, 160.0)
LOST = (420.0, 200.0, 490.0, 290.0)  # a lost unknown track: its box is the Kalman prediction
TENTATIVE = (540.0, 40.0, 600.0, 120.0)


def _annotated() -> Annotated:
    labels = (
        TrackLabel(_snap(1, NAMED), "alice", 0.71, 0.8),
        TrackLabel(_snap(2, UNKNOWN), None, None, 0.6),
        TrackLabel(_snap(3, LOST, TrackState.LOST), None, None, None),
    )
    return Annotated(_frame(_textured()), labels, (), (), tentative=(_snap(-1, TENTATIVE, TrackState.TENTATIVE),))


def test_without_blur_the_annotated_image_is_the_plain_overlay() -> None:
    item = _annotated()
    views = [
        TrackView(
            label.snapshot.track_id,
            label.snapshot.box,
            label.person,
            label.score,
            label.quality,
            label.snapshot.state.value,
        )
        for label in item.labels
    ]
    expected = draw_overlay(item.frame.image, views, stream_label="cam")
    np.testing.assert_array_equal(annotated_image(item), expected)
    np.testing.assert_array_equal(annotated_image(item, blur_unknown=False), expected)


def test_blur_hides_unknown_lost_and_tentative_faces_and_leaves_the_named_one() -> None:
    item = _annotated()
    plain = annotated_image(item)
    blurred = annotated_image(item, blur_unknown=True)
    assert not item.frame.image.flags.writeable  # the frame was only read
    hidden = np.zeros((H, W), bool)
    for box in (UNKNOWN, LOST, TENTATIVE):
        hidden[_region(box)] = True
        x1, y1, x2, y2 = (round(v) for v in box)
        inner = (slice(y1 + 6, y2 - 6), slice(x1 + 6, x2 - 6))  # inside the drawn box outline
        assert _detail(blurred[inner]) < _detail(item.frame.image[inner]) / 500
    # Outside the hidden regions the image is exactly the plain overlay: the named face, its box and
    # label, and the labels of the unknown tracks drawn on top of the mosaic ("#2 unknown").
    np.testing.assert_array_equal(blurred[~hidden], plain[~hidden])
    x1, y1, x2, y2 = (round(v) for v in NAMED)
    np.testing.assert_array_equal(blurred[y1:y2, x1:x2], plain[y1:y2, x1:x2])
    # The overlay is drawn after the mosaic: the unknown box outline is still there.
    ux1, uy1, _, uy2 = (round(v) for v in UNKNOWN)
    np.testing.assert_array_equal(blurred[uy1 + 10 : uy2 - 10, ux1], plain[uy1 + 10 : uy2 - 10, ux1])


class _ConstantEmbedder:
    """Every crop gives the same unit vector (never the gallery's person)."""

    crop_size, crop_kind, model_id = 112, "template", "facenet:test"

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.zeros((len(crops), 8), np.float32)
        vectors[:, 0] = 1.0
        return vectors, np.full(len(crops), 20.0, np.float32)


def _detections(*boxes: tuple[float, float, float, float]) -> FaceDetections:
    rows = np.array(boxes, np.float32).reshape(-1, 4)
    landmarks = []
    for x1, y1, x2, y2 in rows:
        w, h = x2 - x1, y2 - y1
        points = [(0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8)]
        landmarks.append([(x1 + fx * w, y1 + fy * h) for fx, fy in points])
    return FaceDetections(rows, np.full(len(rows), 0.99, np.float32), np.array(landmarks, np.float32).reshape(-1, 5, 2))


def test_the_recogniser_hands_over_tentative_tracks_apart_from_the_labels() -> None:
    template = np.zeros((1, 8), np.float32)
    template[0, 1] = 1.0
    voter = TrackVoter(Matcher(["alice"], template, threshold=0.3, min_margin=0.0))
    recogniser = Recogniser(_ConstantEmbedder(), voter, TrackerSettings(), BestShotSettings(), min_face_px=20)
    image = _textured()
    first, second = (100.0, 100.0, 180.0, 200.0), (400.0, 100.0, 480.0, 200.0)
    out = []
    for index in range(12):  # 25 fps: the first face is confirmed at 0.2 s (frame 5); the second appears at frame 6
        boxes = (first,) if index < 6 else (first, second)
        out += recogniser.process([Detected(_frame(image, index), _detections(*boxes))])
    for item in out[:5]:
        assert item.labels == () and len(item.tentative) == 1
        np.testing.assert_allclose(item.tentative[0].box, first, atol=1.0)
        assert item.tentative[0].state is TrackState.TENTATIVE
    confirmed_first = out[5]
    assert [label.snapshot.track_id for label in confirmed_first.labels] == [1] and confirmed_first.tentative == ()
    for item in out[6:11]:  # the second face: tentative, not labelled, while the first is
        assert [label.person for label in item.labels] == [None]
        assert len(item.tentative) == 1
        np.testing.assert_allclose(item.tentative[0].box, second, atol=1.0)
    assert len(out[11].labels) == 2 and out[11].tentative == ()
