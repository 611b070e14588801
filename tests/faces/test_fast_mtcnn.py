"""FastMtcnn (batched MTCNN) against stock facenet-pytorch ``detect_face`` on real images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from stream.faces.detector import DetectorSettings, MtcnnDetector
from stream.faces.fast_mtcnn import FastMtcnn, MtcnnFaces, _area_crops, _summed_area_table
from stream.types import FaceDetections
from tests.conftest import shared_file

MIN_FACE = 20
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
STILLS = (
    "deepface/tests/unit/dataset/img2.jpg",
    "deepface/tests/unit/dataset/selfie-many-people.jpg",
    "insightface/python-package/insightface/data/images/t1.jpg",
    *(f"adaface/face_alignment/mtcnn_pytorch/images/office{i}.jpg" for i in range(1, 6)),
)
VIDEO = "facenet-pytorch/examples/video.mp4"
VIDEO_SIZE = (1280, 720)
VIDEO_FRAMES = 8
VIDEO_STEP = 6
MATCH_IOU = 0.9
MIN_MATCHED = 0.98
MAX_EXTRA = 0.02
MAX_LANDMARK_PX = 1.5


@pytest.fixture(scope="module")
def stock_mtcnn() -> torch.nn.Module:
    from facenet_pytorch.models.mtcnn import MTCNN

    return MTCNN(min_face_size=MIN_FACE, thresholds=list(THRESHOLDS), factor=FACTOR, keep_all=True).eval()


@pytest.fixture(scope="module")
def fast(stock_mtcnn: torch.nn.Module) -> FastMtcnn:
    nets = (stock_mtcnn.pnet, stock_mtcnn.rnet, stock_mtcnn.onet)
    return FastMtcnn(MIN_FACE, THRESHOLDS, FACTOR, "cpu", nets=nets)


def stock_detect(mtcnn: torch.nn.Module, batch: np.ndarray) -> list[MtcnnFaces]:
    from facenet_pytorch.models.utils.detect_face import detect_face

    with torch.inference_mode():
        boxes, points = detect_face(
            torch.from_numpy(batch), MIN_FACE, mtcnn.pnet, mtcnn.rnet, mtcnn.onet, list(THRESHOLDS), FACTOR, "cpu"
        )
    out = []
    for frame_boxes, frame_points in zip(boxes, points, strict=True):
        rows = np.asarray(frame_boxes, np.float32).reshape(-1, 5)
        out.append(MtcnnFaces(rows[:, :4], rows[:, 4], np.asarray(frame_points, np.float32).reshape(-1, 5, 2)))
    return out


def read_rgb(root: Path, relative: str) -> np.ndarray:
    image = cv2.imread(str(shared_file(root, relative)), cv2.IMREAD_COLOR)
    assert image is not None, relative
    return np.ascontiguousarray(image[:, :, ::-1])


def video_frames(root: Path) -> np.ndarray:
    import av

    frames = []
    with av.open(str(shared_file(root, VIDEO))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % VIDEO_STEP == 0:
                rgb = frame.to_ndarray(format="rgb24")
                frames.append(cv2.resize(rgb, VIDEO_SIZE, interpolation=cv2.INTER_AREA))
            if len(frames) == VIDEO_FRAMES:
                break
    assert len(frames) == VIDEO_FRAMES
    return np.stack(frames)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


@dataclass
class Parity:
    stock: int = 0
    fast: int = 0
    matched: int = 0
    landmark_errors: list[float] = field(default_factory=list)

    def add(self, want: MtcnnFaces, got: MtcnnFaces) -> None:
        self.stock += len(want.boxes)
        self.fast += len(got.boxes)
        if len(want.boxes) == 0 or len(got.boxes) == 0:
            return
        overlaps = iou(want.boxes, got.boxes)
        used: set[int] = set()
        for row in np.argsort(-want.scores):  # greedy one-to-one matching, best stock face first
            col = int(np.argmax(np.where(np.isin(np.arange(len(got.boxes)), list(used)), -1, overlaps[row])))
            if overlaps[row, col] >= MATCH_IOU:
                used.add(col)
                self.matched += 1
                self.landmark_errors.append(float(np.abs(want.landmarks[row] - got.landmarks[col]).max()))

    def check(self, label: str) -> None:
        extra = self.fast - self.matched
        errors = np.asarray(self.landmark_errors or [0.0])
        print(
            f"\n{label}: stock {self.stock}, fast {self.fast}, matched {self.matched} "
            f"({self.matched / max(self.stock, 1):.1%}), extra {extra} ({extra / max(self.stock, 1):.1%}), "
            f"landmark error max {errors.max():.2e} px, mean {errors.mean():.2e} px"
        )
        assert self.stock > 0
        assert self.matched >= MIN_MATCHED * self.stock
        assert extra <= MAX_EXTRA * self.stock
        assert errors.max() <= MAX_LANDMARK_PX


# --- parity with stock ------------------------------------------------------------------------


@pytest.mark.slow
def test_parity_on_still_images(shared_data: Path, stock_mtcnn: torch.nn.Module, fast: FastMtcnn) -> None:
    parity = Parity()
    for relative in STILLS:
        image = read_rgb(shared_data, relative)[None]
        parity.add(stock_detect(stock_mtcnn, image)[0], fast.detect(image)[0])
    parity.check("stills")


@pytest.mark.slow
def test_parity_on_a_720p_video_batch(shared_data: Path, stock_mtcnn: torch.nn.Module, fast: FastMtcnn) -> None:
    frames = video_frames(shared_data)
    parity = Parity()
    for want, got in zip(stock_detect(stock_mtcnn, frames), fast.detect(frames), strict=True):
        parity.add(want, got)
    parity.check(f"video batch of {len(frames)} at {VIDEO_SIZE}")


def test_crops_equal_stock_area_resize() -> None:
    """Stock's crop: integer box (truncated, clipped to >= 1 / <= size), then area resize."""
    rng = np.random.default_rng(0)
    height, width = 37, 53
    batch = torch.from_numpy(rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8))
    corners = rng.uniform(-15, 60, (64, 2))
    sides = rng.uniform(1, 70, (64, 1))
    boxes = torch.from_numpy(np.hstack([corners, corners + sides]).astype(np.float32))
    image_ids = torch.from_numpy(rng.integers(0, 2, 64))
    images = batch.permute(0, 3, 1, 2).float()
    for size in (24, 48):
        crops, valid = _area_crops(_summed_area_table(batch), image_ids, boxes, size, height, width)
        assert valid.any() and not valid.all()
        for k in np.flatnonzero(valid.numpy()):
            x1, y1, x2, y2 = (int(v) for v in boxes[k].trunc())
            x, y, ex, ey = max(x1, 1), max(y1, 1), min(x2, width), min(y2, height)
            want = F.interpolate(images[image_ids[k], None, :, y - 1 : ey, x - 1 : ex], size=(size, size), mode="area")
            torch.testing.assert_close(crops[k : k + 1], want, atol=1e-4, rtol=0)


# --- empty input, shapes, errors ---------------------------------------------------------------


def assert_empty(faces: MtcnnFaces) -> None:
    assert faces.boxes.shape == (0, 4) and faces.boxes.dtype == np.float32
    assert faces.scores.shape == (0,) and faces.scores.dtype == np.float32
    assert faces.landmarks.shape == (0, 5, 2) and faces.landmarks.dtype == np.float32


@pytest.mark.slow
def test_no_faces_and_empty_batches(fast: FastMtcnn) -> None:
    assert fast.detect(np.zeros((0, 64, 64, 3), np.uint8)) == []
    assert fast.detect([]) == []
    blank = fast.detect(np.full((3, 120, 160, 3), 90, np.uint8))
    assert len(blank) == 3
    for faces in blank:
        assert_empty(faces)
    tiny = fast.detect(np.zeros((2, 10, 10, 3), np.uint8))  # smaller than min face: stock raises
    assert len(tiny) == 2
    assert_empty(tiny[0])


@pytest.mark.slow
def test_output_shapes_on_a_face(shared_data: Path, fast: FastMtcnn) -> None:
    image = read_rgb(shared_data, STILLS[0])
    single = fast.detect(image)  # (H, W, 3) is a batch of one
    assert len(single) == 1 and len(single[0].boxes) >= 1
    faces = single[0]
    count = len(faces.boxes)
    assert faces.boxes.shape == (count, 4) and faces.scores.shape == (count,)
    assert faces.landmarks.shape == (count, 5, 2)
    assert all(a.dtype == np.float32 for a in faces)
    assert (np.diff(faces.scores) <= 0).all()  # best first


@pytest.mark.slow
def test_mixed_sizes_and_bad_input_are_rejected(fast: FastMtcnn) -> None:
    with pytest.raises(ValueError, match=r"images\[1\]"):
        fast.detect([np.zeros((40, 60, 3), np.uint8), np.zeros((40, 61, 3), np.uint8)])
    with pytest.raises(TypeError, match="uint8"):
        fast.detect(np.zeros((1, 40, 60, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        fast.detect(np.zeros((1, 40, 60, 4), np.uint8))
    with pytest.raises(ValueError, match="half"):
        FastMtcnn(device="cpu", half=True)


# --- adapter ----------------------------------------------------------------------------------


def test_backend_setting_is_validated() -> None:
    assert DetectorSettings().backend == "stock"
    with pytest.raises(ValueError, match="DetectorSettings.backend"):
        DetectorSettings(backend="turbo")  # type: ignore[arg-type]


@pytest.mark.slow
def test_adapter_fast_backend_matches_stock(shared_data: Path) -> None:
    group = cv2.imread(str(shared_file(shared_data, STILLS[1])), cv2.IMREAD_COLOR)
    blank = np.zeros_like(group)
    stock = MtcnnDetector(DetectorSettings(warmup=False))
    fast = MtcnnDetector(DetectorSettings(backend="fast"))
    with pytest.raises(ValueError, match=r"frames\[1\]"):
        fast.detect([group, group[:, :-1]])
    assert fast.detect([]) == []
    want = stock.detect([group, blank])
    got = fast.detect([group, blank])  # only some frames have faces
    assert len(got) == 2 and all(isinstance(d, FaceDetections) for d in got)
    assert len(got[1]) == 0 and got[1].boxes.shape == (0, 4) and got[1].landmarks.shape == (0, 5, 2)
    assert len(got[0]) == len(want[0]) > 0
    np.testing.assert_allclose(got[0].boxes, want[0].boxes, atol=0.5)
    np.testing.assert_allclose(got[0].landmarks, want[0].landmarks, atol=0.5)
    np.testing.assert_allclose(got[0].scores, want[0].scores, atol=1e-3)
