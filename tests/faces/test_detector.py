"""MTCNN adapter: settings validation, real-image detections, batches with face-less frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.faces.detector import (
    DetectorSettings,
    FaceDetectionError,
    MtcnnDetector,
    detector_min_face_px,
)
from stream.types import FaceDetections
from tests.conftest import shared_file
from tests.fakes import AlwaysFailingDetectFace, BatchFailingDetectFace
from trackers import associate, iou_matrix

FACE_IMAGES = {
    "angelina_jolie": "facenet-pytorch/data/test_images/angelina_jolie/1.jpg",
    "kate_siegel": "facenet-pytorch/data/test_images/kate_siegel/1.jpg",
    "paul_rudd": "facenet-pytorch/data/test_images/paul_rudd/1.jpg",
}
NO_FACE_IMAGE = "insightface/cpp-package/inspireface/test_res/data/bulk/view.jpg"
GROUP_IMAGE = "deepface/tests/unit/dataset/selfie-many-people.jpg"
CONFIDENT = 0.95


@pytest.fixture(scope="module")
def detector() -> MtcnnDetector:
    return MtcnnDetector(DetectorSettings())


def read_bgr(root: Path, relative: str, width: int | None = None) -> np.ndarray:
    image = cv2.imread(str(shared_file(root, relative)), cv2.IMREAD_COLOR)
    assert image is not None, relative
    if width is not None:
        height = round(image.shape[0] * width / image.shape[1])
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image


def assert_empty(dets: FaceDetections) -> None:
    assert len(dets) == 0
    assert dets.boxes.shape == (0, 4) and dets.boxes.dtype == np.float32
    assert dets.scores.shape == (0,) and dets.scores.dtype == np.float32
    assert dets.landmarks.shape == (0, 5, 2) and dets.landmarks.dtype == np.float32


def assert_same(got: FaceDetections, want: FaceDetections, tol_px: float) -> None:
    assert len(got) == len(want)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=tol_px)
    np.testing.assert_allclose(got.landmarks, want.landmarks, atol=tol_px)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-3)


# --- settings (no model) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("min_face_px", 8, ValueError),
        ("min_face_px", 20.0, TypeError),
        ("thresholds", (0.6, 0.7), ValueError),
        ("thresholds", (0.6, 1.5, 0.7), ValueError),
        ("thresholds", "0.6", TypeError),
        ("factor", 1.0, ValueError),
        ("factor", 0.0, ValueError),
        ("detect_width", 0, ValueError),
        ("detect_width", True, TypeError),
        ("edge_pad", 0.9, ValueError),
        ("edge_pad", -0.1, ValueError),
        ("device", "not-a-device", ValueError),
        ("device", "", ValueError),
        ("warmup", "yes", TypeError),
    ],
)
def test_settings_errors_name_the_field(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=f"DetectorSettings.{field}"):
        DetectorSettings(**{field: value})


def test_settings_defaults_and_normalised_thresholds() -> None:
    settings = DetectorSettings(thresholds=[0.5, 0.6, 0.7])  # type: ignore[arg-type]
    assert settings.thresholds == (0.5, 0.6, 0.7)
    assert DetectorSettings().min_face_px == 20
    assert DetectorSettings().detect_width is None


@pytest.mark.parametrize(
    ("min_face_px", "scale", "expected"),
    [(20, 1.0, 20), (40, 0.5, 20), (20, 0.5, 12), (20, 1 / 3, 12), (100, 1 / 3, 33)],
)
def test_detector_min_face_is_scaled_with_a_floor_of_pnet_window(min_face_px: int, scale: float, expected: int) -> None:
    assert detector_min_face_px(min_face_px, scale) == expected


# --- input checks -----------------------------------------------------------------------------


@pytest.mark.slow
def test_empty_batch_returns_empty_list(detector: MtcnnDetector) -> None:
    assert detector.detect([]) == []


@pytest.mark.slow
def test_frames_of_different_sizes_are_rejected(detector: MtcnnDetector) -> None:
    with pytest.raises(ValueError, match=r"frames\[1\]"):
        detector.detect([np.zeros((40, 60, 3), np.uint8), np.zeros((40, 61, 3), np.uint8)])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (np.zeros((40, 60), np.uint8), ValueError),
        (np.zeros((40, 60, 4), np.uint8), ValueError),
        (np.zeros((40, 60, 3), np.float32), TypeError),
    ],
)
def test_bad_frames_are_rejected(detector: MtcnnDetector, frame: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"frames\[0\]"):
        detector.detect_one(frame)


@pytest.mark.slow
def test_frame_smaller_than_min_face_gives_empty(detector: MtcnnDetector) -> None:
    # facenet-pytorch's detect_face raises on such frames (empty scale pyramid).
    assert_empty(detector.detect_one(np.full((10, 10, 3), 128, np.uint8)))


# --- real images ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FACE_IMAGES))
def test_single_face_with_plausible_landmarks(detector: MtcnnDetector, shared_data: Path, name: str) -> None:
    image = read_bgr(shared_data, FACE_IMAGES[name])
    dets = detector.detect_one(image)
    # Full-size angelina_jolie also gives two small, low-score hits on her lace dress.
    confident = dets.select(dets.scores >= CONFIDENT)
    assert len(confident) == 1, dets.scores
    assert dets.scores[0] == dets.scores.max()  # best first
    (x1, y1, x2, y2), points = confident.boxes[0], confident.landmarks[0]
    assert x2 - x1 > 100 and y2 - y1 > 100
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert (points[:, 0] > x1).all() and (points[:, 0] < x2).all()
    assert (points[:, 1] > y1).all() and (points[:, 1] < y2).all()


@pytest.mark.slow
def test_no_face_image_gives_empty_arrays(detector: MtcnnDetector, shared_data: Path) -> None:
    assert_empty(detector.detect_one(read_bgr(shared_data, NO_FACE_IMAGE)))


@pytest.mark.slow
def test_group_selfie_finds_at_least_five_faces(detector: MtcnnDetector, shared_data: Path) -> None:
    dets = detector.detect_one(read_bgr(shared_data, GROUP_IMAGE))
    assert len(dets) >= 5
    assert (dets.scores >= CONFIDENT).all()
    assert (np.diff(dets.scores) <= 0).all()
    assert (dets.boxes[:, 2] > dets.boxes[:, 0]).all() and (dets.boxes[:, 3] > dets.boxes[:, 1]).all()


@pytest.mark.slow
def test_edge_pad_recovers_edge_faces_and_keeps_coordinates(detector: MtcnnDetector, shared_data: Path) -> None:
    image = read_bgr(shared_data, GROUP_IMAGE)
    stock = MtcnnDetector(DetectorSettings(edge_pad=0.0, warmup=False)).detect_one(image)
    padded = detector.detect_one(image)
    assert len(padded) > len(stock)
    # Boxes are not clipped: a face cut by the left edge has x1 < 0.
    assert (padded.boxes[:, 0] < 0).any()
    # Every stock face is found again. Faces inside the frame move by MTCNN's usual jitter (the
    # pyramid's grid shifts with the image size); faces cut by the edge move more, as their
    # crops are no longer stretched.
    height, width = image.shape[:2]
    for box, points in zip(stock.boxes, stock.landmarks, strict=True):
        inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
        eye_error = np.abs(padded.landmarks[:, :2] - points[:2]).max(axis=(1, 2)).min()
        assert eye_error < (6.0 if inside else 20.0)


@pytest.mark.slow
def test_batch_with_face_less_frames_matches_single_frames(detector: MtcnnDetector, shared_data: Path) -> None:
    batch = _mixed_batch(shared_data)
    singles = [detector.detect_one(frame) for frame in batch]
    assert [len(d) > 0 for d in singles] == [False, True, False, True]
    results = detector.detect(batch)
    assert len(results) == len(batch)
    for got, want in zip(results, singles, strict=True):
        assert_same(got, want, tol_px=1.0)
    assert_empty(results[0])
    assert_empty(results[2])


@pytest.mark.slow
def test_batch_failure_inside_facenet_falls_back_per_frame(detector: MtcnnDetector, shared_data: Path) -> None:
    batch = _mixed_batch(shared_data)
    want = [detector.detect_one(frame) for frame in batch]
    flaky = MtcnnDetector(detector.settings, detect_face=BatchFailingDetectFace())
    before = flaky.batch_fallbacks
    for got, expected in zip(flaky.detect(batch), want, strict=True):
        assert_same(got, expected, tol_px=1.0)
    assert flaky.batch_fallbacks == before + 1


@pytest.mark.slow
def test_single_frame_failure_inside_facenet_names_the_frame() -> None:
    detector = MtcnnDetector(DetectorSettings(warmup=False), detect_face=AlwaysFailingDetectFace())
    frames = [np.zeros((64, 64, 3), np.uint8)] * 2
    with pytest.raises(FaceDetectionError, match="frame 0 of a batch of 2"):
        detector.detect(frames)


@pytest.mark.slow
def test_detect_width_maps_back_to_full_frame(detector: MtcnnDetector, shared_data: Path) -> None:
    image = read_bgr(shared_data, GROUP_IMAGE)
    height, width = image.shape[:2]
    upscaled = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_CUBIC)
    # min_face_px doubles with the frame, so MTCNN sees the same pyramid as for the original.
    settings = DetectorSettings(min_face_px=2 * detector.settings.min_face_px, detect_width=width, warmup=False)
    got = MtcnnDetector(settings).detect_one(upscaled)
    want = detector.detect_one(image)
    assert len(got) == len(want) >= 5
    order = [int(np.argmin(np.abs(got.boxes - 2 * box).sum(axis=1))) for box in want.boxes]
    # Within 3 px of the original's pixels: the detection copy is a resampled image.
    np.testing.assert_allclose(got.boxes[order], 2 * want.boxes, atol=6.0)
    np.testing.assert_allclose(got.landmarks[order], 2 * want.landmarks, atol=6.0)


@pytest.mark.slow
def test_detect_width_never_upscales(detector: MtcnnDetector, shared_data: Path) -> None:
    image = read_bgr(shared_data, GROUP_IMAGE)
    wide = MtcnnDetector(DetectorSettings(detect_width=4 * image.shape[1], warmup=False))
    assert_same(wide.detect_one(image), detector.detect_one(image), tol_px=1e-3)


def _mixed_batch(root: Path) -> list[np.ndarray]:
    """[blank, face, noise, other face], all the size of kate_siegel scaled to 480 px wide."""
    face = read_bgr(root, FACE_IMAGES["kate_siegel"], width=480)
    height, width = face.shape[:2]
    other = cv2.resize(read_bgr(root, FACE_IMAGES["paul_rudd"]), (width, height), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(0).integers(0, 256, face.shape, dtype=np.uint8)
    return [np.zeros_like(face), face, noise, other]


# --- refine: re-finding known faces without P-Net -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["stock", "fast"])
def test_refine_finds_known_faces_where_they_moved_and_nothing_new(shared_data: Path, backend: str) -> None:
    """A group photo shifted by 6 % of a face: refining last position's boxes finds the moved faces
    (close to a full detection of the shifted image); faces not given are not found."""
    image = read_bgr(shared_data, GROUP_IMAGE)
    detector = MtcnnDetector(DetectorSettings(backend=backend, detect_width=480, warmup=False))
    before = detector.detect_one(image)
    assert len(before) >= 5
    shift = int(0.06 * float(np.median(before.boxes[:, 2] - before.boxes[:, 0])))
    moved = np.ascontiguousarray(np.roll(image, (shift, shift), axis=(0, 1)))
    full = detector.detect_one(moved)
    (refined,) = detector.refine([moved], [before])
    pairs, _, _ = associate(iou_matrix(full.boxes, refined.boxes), 0.6)
    assert len(pairs) >= len(before) - 1  # every known face found again, at its new place
    (some,) = detector.refine([moved], [before.select([0, 1])])
    assert len(some) == 2  # no new faces
    (none,) = detector.refine([moved], [FaceDetections.empty()])
    assert_empty(none)
    assert detector.refine([], []) == []
    with pytest.raises(ValueError, match="known"):
        detector.refine([moved], [])
