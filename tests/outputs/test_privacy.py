"""Privacy mosaic (``stream.outputs.privacy.blur_faces``): pure checks on synthetic images, and a slow
check with real faces that MTCNN finds nothing inside a blurred box and the unblurred face unchanged."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.outputs.privacy import BLUR_MARGIN, blur_faces
from tests.conftest import shared_file

H, W = 360, 640


def _textured(seed: int = 0) -> np.ndarray:
    """A frame full of fine detail: noise on a checkerboard of 6-px squares."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    board = (((yy // 6) + (xx // 6)) % 2 * 160 + 40).astype(np.uint8)
    image = np.repeat(board[..., None], 3, axis=2).astype(np.int16) + rng.integers(-30, 31, (H, W, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _detail(patch: np.ndarray) -> float:
    """Variance of the Laplacian of a grey patch: high for edges and texture, ~0 for smooth areas."""
    grey = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _enlarged(box: tuple[float, float, float, float], margin: float = BLUR_MARGIN) -> tuple[slice, slice]:
    """The rows and columns ``blur_faces`` may change for ``box`` (enlarged, clipped, rounded out)."""
    x1, y1, x2, y2 = box
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    rows = slice(max(0, int(np.floor(y1 - dy))), min(H, int(np.ceil(y2 + dy))))
    cols = slice(max(0, int(np.floor(x1 - dx))), min(W, int(np.ceil(x2 + dx))))
    return rows, cols


def test_a_box_loses_its_detail_and_nothing_outside_changes() -> None:
    image = _textured()
    boxes = [(100.0, 80.0, 180.0, 180.0), (400.5, 150.2, 470.7, 240.9)]
    out = blur_faces(image, np.array(boxes, np.float32))
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = np.zeros((H, W), bool)
    for box in boxes:
        rows, cols = _enlarged(box)
        changed[rows, cols] = True
        x1, y1, x2, y2 = (round(v) for v in box)
        before, after = _detail(image[y1:y2, x1:x2]), _detail(out[y1:y2, x1:x2])
        assert before > 1000 and after < before / 500, (before, after)
        # The mosaic is smooth: neighbouring pixels inside the box differ by a grey level or two.
        assert np.abs(np.diff(out[y1:y2, x1:x2].astype(np.int16), axis=1)).max() <= 6
    np.testing.assert_array_equal(out[~changed], image[~changed])


def test_no_boxes_gives_an_identical_copy_and_the_input_is_never_written() -> None:
    image = _textured()
    image.flags.writeable = False  # frames are read-only: blurring must copy
    before = image.copy()
    for boxes in ([], np.zeros((0, 4), np.float32)):
        out = blur_faces(image, boxes)
        assert out is not image and not np.shares_memory(out, image)
        np.testing.assert_array_equal(out, image)
    out = blur_faces(image, [np.array([10, 10, 200, 200], np.float32)])
    np.testing.assert_array_equal(image, before)
    assert out.flags.writeable


def test_boxes_partly_or_wholly_outside_the_frame() -> None:
    image = _textured()
    partly = (-60.0, -40.0, 40.0, 90.0)  # top-left corner
    edge = (W - 20.0, 100.0, W + 80.0, 230.0)  # a sliver at the right edge of a 100-px face
    # Wholly outside even after the margin (0.4 of 80 px = 32 px): nothing to do.
    outside = [(W + 40.0, 0.0, W + 120.0, 80.0), (-200.0, -200.0, -100.0, -50.0), (10.0, H + 40.0, 60.0, H + 120.0)]
    reversed_box = (300.0, 200.0, 240.0, 120.0)  # x2 < x1, y2 < y1: taken as the same box sorted
    out = blur_faces(image, np.array([partly, edge, *outside, reversed_box], np.float32))
    assert out.shape == image.shape
    assert _detail(out[0:90, 0:40]) < _detail(image[0:90, 0:40]) / 500
    # The sliver is as coarse as the whole face would be, not 4 cells across 20 px.
    assert _detail(out[100:230, W - 20 : W]) < _detail(image[100:230, W - 20 : W]) / 500
    assert _detail(out[120:200, 240:300]) < _detail(image[120:200, 240:300]) / 500
    changed = np.zeros((H, W), bool)
    for box in (partly, edge, (240.0, 120.0, 300.0, 200.0)):
        changed[_enlarged(box)] = True
    np.testing.assert_array_equal(out[~changed], image[~changed])
    only_outside = blur_faces(image, np.array(outside, np.float32))
    np.testing.assert_array_equal(only_outside, image)


def test_degenerate_huge_and_overlapping_boxes() -> None:
    image = _textured()
    np.testing.assert_array_equal(blur_faces(image, [np.array([50, 50, 50, 90], np.float32)], margin=0.0), image)
    whole = blur_faces(image, [np.array([-1e6, -1e6, 1e6, 1e6], np.float64)])  # cost stays bounded
    assert _detail(whole) < 1.0
    overlapping = blur_faces(image, np.array([(100, 100, 200, 220), (150, 140, 260, 260)], np.float32))
    assert _detail(overlapping[140:220, 150:200]) < _detail(image[140:220, 150:200]) / 500


def test_bad_arguments_name_the_field() -> None:
    image = _textured()
    with pytest.raises(ValueError, match=r"blur_faces.boxes\[1\]"):
        blur_faces(image, [np.zeros(4), np.array([0, 0, np.nan, 5])])
    with pytest.raises(ValueError, match=r"blur_faces.boxes\[0\]: expected shape \(4,\)"):
        blur_faces(image, [np.zeros(5)])
    with pytest.raises(TypeError, match="blur_faces.image_bgr"):
        blur_faces(image.astype(np.float32), [])
    with pytest.raises(ValueError, match="blur_faces.margin"):
        blur_faces(image, [], margin=-0.1)
    with pytest.raises(ValueError, match="blur_faces.blocks"):
        blur_faces(image, [], blocks=0)


# ------------------------------------------------------------------ real faces, real MTCNN


def _centre_inside(box: np.ndarray, region: np.ndarray) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return bool(region[0] <= cx <= region[2] and region[1] <= cy <= region[3])


@pytest.mark.slow
@pytest.mark.parametrize(
    "relative",
    [
        "facenet-pytorch/data/multiface.jpg",
        "deepface/tests/unit/dataset/couple.jpg",
        "face_recognition/examples/two_people.jpg",
    ],
)
def test_mtcnn_finds_no_face_in_a_blurred_box_and_the_named_face_unchanged(shared_data: Path, relative: str) -> None:
    from stream.faces.detector import MtcnnDetector
    from stream.faces.images import read_bgr

    image = read_bgr(shared_file(shared_data, relative))
    detector = MtcnnDetector()
    faces = detector.detect_one(image)
    assert len(faces) >= 2
    named = int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0]))  # the largest face stays visible
    unknown = [box for i, box in enumerate(faces.boxes) if i != named]
    out = blur_faces(image, unknown)
    found = detector.detect_one(out)
    inside = [
        (box, score)
        for box, score in zip(found.boxes, found.scores, strict=True)
        if any(_centre_inside(box, region) for region in unknown)
    ]
    assert not inside, f"MTCNN found a face inside a blurred box: {inside}"
    # The named face is untouched: its pixels, and MTCNN's box and landmarks for it (to 1% of its
    # width: the other faces' mosaics change the image MTCNN's pyramid and NMS see a little).
    x1, y1, x2, y2 = (int(v) for v in faces.boxes[named])
    np.testing.assert_array_equal(out[y1:y2, x1:x2], image[y1:y2, x1:x2])
    tolerance = 0.01 * float(faces.boxes[named, 2] - faces.boxes[named, 0])
    same = np.abs(found.boxes - faces.boxes[named]).max(axis=1)
    assert same.size and same.min() < tolerance, (same, tolerance)
    np.testing.assert_allclose(found.landmarks[int(np.argmin(same))], faces.landmarks[named], atol=tolerance)
