"""MTCNN face detection: the one adapter around facenet-pytorch's MTCNN.

Nothing else in the app imports ``facenet_pytorch``'s MTCNN; the quirks stay here:

- ``MTCNN.detect`` packs its results into ``dtype=object`` arrays whose shape depends on the
  content (``(B,)`` when frames differ in face count, ``(B, N, 4)`` when they agree) and
  gives ``(None, [None])`` for a frame without faces. ``forward`` with ``keep_all=False``
  crashes on batches where only some frames have faces (upstream issues #206, #224).
  This adapter calls the lower-level ``detect_face`` function on the whole batch, splits
  the result per frame itself and returns fixed-shape float32 ``FaceDetections``.
- ``detect_face`` raises when the frame's short side is smaller than the minimum face size
  (its scale pyramid is empty); such frames get empty detections without calling it.
- Its RNet/ONet stages crop candidates with hand-written index maths that can, for a box
  lying wholly outside the frame, hand ``torch.cat`` an empty or mismatched list. If a batch
  raises, the batch is retried frame by frame (logged); a frame that fails on its own raises
  ``FaceDetectionError`` naming it.

- Where a candidate box sticks out of the image, facenet-pytorch clips the crop and stretches
  it to 24/48 px instead of zero-padding it as the original MTCNN does, so faces cut by the
  frame edge score low and are lost (stock: 4 of the 7 faces in deepface's
  selfie-many-people.jpg). ``DetectorSettings.edge_pad`` surrounds the detection copy with a
  black border (default 5 % of its shorter side) so those crops are zero-padded inside it;
  coordinates are shifted back. It costs about as much as the extra pixels.

Coordinates: boxes ``(x1, y1, x2, y2)`` and landmarks ``(x, y)`` are float32 full-frame pixels.
Boxes are **not clipped**: a face cut by the frame edge gets a box that extends past it, as
MTCNN regressed it (clipping would distort the box's size and centre, which trackers and
aligners rely on). Boxes with non-positive width or height, and rows with non-finite values,
are dropped. Faces are ordered by score, best first.

Refinement: ``MtcnnDetector.refine(frames, known)`` re-finds faces already known (e.g. from the
previous frame of a video) with R-Net and O-Net only (``FastMtcnn.refine``, whatever the backend):
no image pyramid, no new faces, a few milliseconds for a few faces. The video pipeline uses it on
the frames between full detections (``detection.refine_between``), so the tracker gets a measured
box and landmarks on every frame while the full search for new faces runs every few frames.

Minimum face size: ``DetectorSettings.min_face_px`` is in full-frame pixels. When frames are
detected on a copy scaled by ``s`` (``detect_width``), MTCNN gets
``max(12, round(min_face_px * s))``: 12 px is PNet's window, and a smaller value would make MTCNN
*upsample* the copy, undoing the point of downscaling. The effective full-frame minimum is
therefore ``max(min_face_px, 12 / s)``: with ``detect_width=640`` on 1920 px frames that is 36 px.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import torch

from stream.types import FaceDetections

if TYPE_CHECKING:
    from stream.faces.fast_mtcnn import FastMtcnn

__all__ = ["DetectorSettings", "FaceDetectionError", "MtcnnDetector", "detector_min_face_px"]

_LOG = logging.getLogger(__name__)

PNET_WINDOW_PX = 12
"""PNet's input window: MTCNN's smallest face size without upsampling the image."""

_WARMUP_SIZE_PX = 96
_MAX_EDGE_PAD = 0.5
_BOX_COLUMNS = 5  # x1, y1, x2, y2, score
_BACKENDS = ("stock", "fast")


class FaceDetectionError(RuntimeError):
    """facenet-pytorch's MTCNN failed on a single frame."""


@dataclass(frozen=True)
class DetectorSettings:
    """How MTCNN runs.

    min_face_px: smallest face side to find, in full-frame pixels (>= 12, PNet's window).
    thresholds: P-, R- and O-Net score thresholds, each in (0, 1).
    factor: scale pyramid step, in (0, 1); larger is slower and finds more sizes.
    detect_width: detect on a copy downscaled to this width (aspect kept; frames narrower
        than this are used as they are); ``None`` detects at full size.
    edge_pad: black border added around the detection copy, as a fraction of its shorter
        side, in [0, 0.5]; 0 is stock facenet-pytorch. See the module docstring.
    device: torch device string, e.g. "cpu" or "cuda:0".
    backend: "stock" calls facenet-pytorch's ``detect_face``; "fast" runs the same networks
        through ``stream.faces.fast_mtcnn.FastMtcnn`` (batched candidate crops, same results
        to float rounding; see that module).
    warmup: run a dummy batch at construction so the first real frame is not slow.
    refine_thresholds: R- and O-Net score thresholds of ``MtcnnDetector.refine``, each in (0, 1);
        lower than a full detection's, since the candidates are faces already found.
    """

    min_face_px: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    detect_width: int | None = None
    edge_pad: float = 0.05
    device: str = "cpu"
    warmup: bool = True
    backend: Literal["stock", "fast"] = "stock"
    refine_thresholds: tuple[float, float] = (0.6, 0.6)

    def __post_init__(self) -> None:
        _check_int("min_face_px", self.min_face_px, PNET_WINDOW_PX)
        object.__setattr__(self, "thresholds", _checked_thresholds(self.thresholds))
        object.__setattr__(self, "refine_thresholds", _checked_pair(self.refine_thresholds))
        _check_open_unit("factor", self.factor)
        if self.detect_width is not None:
            _check_int("detect_width", self.detect_width, PNET_WINDOW_PX)
        _check_edge_pad(self.edge_pad)
        _check_device(self.device)
        if not isinstance(self.warmup, bool):
            raise TypeError(f"DetectorSettings.warmup: expected bool, got {self.warmup!r}")
        if self.backend not in _BACKENDS:
            raise ValueError(f"DetectorSettings.backend: expected one of {_BACKENDS}, got {self.backend!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"DetectorSettings.{name}: expected int, got {value!r}")
    if value < minimum:
        raise ValueError(f"DetectorSettings.{name}: must be >= {minimum}, got {value}")


def _check_open_unit(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"DetectorSettings.{name}: expected a number, got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"DetectorSettings.{name}: must be in (0, 1), got {value}")


def _check_edge_pad(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"DetectorSettings.edge_pad: expected a number, got {value!r}")
    if not 0.0 <= float(value) <= _MAX_EDGE_PAD:
        raise ValueError(f"DetectorSettings.edge_pad: must be in [0, {_MAX_EDGE_PAD}], got {value}")


def _checked_thresholds(value: object) -> tuple[float, float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"DetectorSettings.thresholds: expected 3 numbers (P, R, O), got {value!r}")
    if len(value) != 3:
        raise ValueError(f"DetectorSettings.thresholds: expected 3 numbers (P, R, O), got {value!r}")
    for item in value:
        _check_open_unit("thresholds", item)
    return (float(value[0]), float(value[1]), float(value[2]))


def _checked_pair(value: object) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"DetectorSettings.refine_thresholds: expected 2 numbers (R, O), got {value!r}")
    for item in value:
        _check_open_unit("refine_thresholds", item)
    return (float(value[0]), float(value[1]))


def _check_device(value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"DetectorSettings.device: expected a torch device string, got {value!r}")
    if not value:
        raise ValueError(f"DetectorSettings.device: expected a torch device string, got {value!r}")
    try:
        torch.device(value)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"DetectorSettings.device: {exc}") from exc


def detector_min_face_px(min_face_px: int, scale: float) -> int:
    """MTCNN's ``min_face_size`` on a copy scaled by ``scale`` (see the module docstring)."""
    return max(PNET_WINDOW_PX, round(min_face_px * scale))


DetectFaceFn = Callable[..., tuple[Any, Any]]


class MtcnnDetector:
    """Batched MTCNN on equal-size BGR frames, returning one ``FaceDetections`` per frame.

    Construction loads the bundled P/R/O-Net weights (nothing is downloaded) and, when
    ``settings.warmup``, runs every network once. Not for concurrent use from several threads.

    ``detect_face`` replaces facenet-pytorch's ``detect_face`` (same signature) for the "stock"
    backend; tests pass one that fails on purpose. ``None`` uses facenet-pytorch's.
    """

    def __init__(self, settings: DetectorSettings | None = None, *, detect_face: DetectFaceFn | None = None) -> None:
        self.settings = settings if settings is not None else DetectorSettings()
        self._device = torch.device(self.settings.device)
        mtcnn, stock_detect_face = _build_mtcnn(self.settings, self._device)
        self._detect_face = detect_face if detect_face is not None else stock_detect_face
        self._nets: tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module] = (mtcnn.pnet, mtcnn.rnet, mtcnn.onet)
        self._fast = _build_fast(self.settings, self._device, self._nets) if self.settings.backend == "fast" else None
        self._fast_for_refine_only = False
        self.batch_fallbacks = 0
        """How many batches failed inside facenet-pytorch and were retried frame by frame."""
        if self.settings.warmup:
            self._warm_up()

    def detect(self, frames: Sequence[np.ndarray]) -> list[FaceDetections]:
        """Detect faces in equal-size HxWx3 uint8 BGR frames, all in one MTCNN call."""
        if len(frames) == 0:
            return []
        height, width = _check_frames(frames)
        layout = _plan_layout(height, width, self.settings)
        min_face = detector_min_face_px(self.settings.min_face_px, layout.scale)
        if min(layout.padded_size) < min_face:  # MTCNN's scale pyramid would be empty
            return [FaceDetections.empty() for _ in frames]
        batch = _detect_batch(frames, layout)
        raw = self._run_batch(batch, min_face)
        return [_to_detections(boxes, points, layout) for boxes, points in raw]

    def detect_one(self, image: np.ndarray) -> FaceDetections:
        """Detect faces in one HxWx3 uint8 BGR image."""
        return self.detect([image])[0]

    def refine(self, frames: Sequence[np.ndarray], known: Sequence[FaceDetections]) -> list[FaceDetections]:
        """Re-find, in equal-size BGR frames, the faces ``known`` (one ``FaceDetections`` per frame, in
        full-frame pixels, e.g. the faces of each frame's predecessor) near where they were; no new
        faces. One ``FaceDetections`` per frame, as ``detect`` gives."""
        if len(frames) != len(known):
            raise ValueError(f"known: expected {len(frames)} FaceDetections to match frames, got {len(known)}")
        if len(frames) == 0:
            return []
        height, width = _check_frames(frames)
        if all(len(k) == 0 for k in known):
            return [FaceDetections.empty() for _ in frames]
        layout = _plan_layout(height, width, self.settings)
        batch = _detect_batch(frames, layout)
        boxes = [layout.to_copy(k.boxes.reshape(-1, 2, 2)).reshape(-1, 4) for k in known]
        faces = self._refiner().refine(torch.from_numpy(batch), boxes, self.settings.refine_thresholds)
        return [_to_detections(np.column_stack([f.boxes, f.scores]), f.landmarks, layout) for f in faces]

    def _refiner(self) -> FastMtcnn:
        if self._fast is None:  # the stock backend: the same networks, batched crops
            self._fast = _build_fast(self.settings, self._device, self._nets)
            self._fast_for_refine_only = True
        return self._fast

    def _run_batch(self, batch: np.ndarray, min_face: int) -> list[tuple[Any, Any]]:
        try:
            return self._call_detect_face(batch, min_face)
        except (RuntimeError, IndexError, ValueError) as exc:
            if len(batch) == 1:
                raise FaceDetectionError(f"MTCNN failed on a {batch.shape[1:3]} frame: {exc}") from exc
            self.batch_fallbacks += 1
            _LOG.warning("MTCNN failed on a batch of %d frames (%s); retrying frame by frame", len(batch), exc)
            return [self._run_single(batch, index, min_face) for index in range(len(batch))]

    def _run_single(self, batch: np.ndarray, index: int, min_face: int) -> tuple[Any, Any]:
        try:
            return self._call_detect_face(batch[index : index + 1], min_face)[0]
        except (RuntimeError, IndexError, ValueError) as exc:
            raise FaceDetectionError(f"MTCNN failed on frame {index} of a batch of {len(batch)}: {exc}") from exc

    def _call_detect_face(self, batch: np.ndarray, min_face: int) -> list[tuple[Any, Any]]:
        images = torch.from_numpy(batch)  # shares memory; detect_face moves it to the device
        if self._fast is not None and not self._fast_for_refine_only:
            faces = self._fast.detect(images, min_face)
            return [(np.column_stack([f.boxes, f.scores]), f.landmarks) for f in faces]
        pnet, rnet, onet = self._nets
        s = self.settings
        with torch.inference_mode():
            boxes, points = self._detect_face(
                images, min_face, pnet, rnet, onet, list(s.thresholds), s.factor, self._device
            )
        return list(zip(boxes, points, strict=True))

    def _warm_up(self) -> None:
        """Run P-, R- and O-Net once each (a blank image alone never reaches R/O-Net)."""
        blank = np.zeros((1, _WARMUP_SIZE_PX, _WARMUP_SIZE_PX, 3), np.uint8)
        self._call_detect_face(blank, PNET_WINDOW_PX)
        _, rnet, onet = self._nets
        with torch.inference_mode():
            rnet(torch.zeros(2, 3, 24, 24, device=self._device))
            onet(torch.zeros(2, 3, 48, 48, device=self._device))


def _build_mtcnn(settings: DetectorSettings, device: torch.device) -> tuple[Any, DetectFaceFn]:
    # Imported here, not at module import: facenet_pytorch pulls in torchvision and requests.
    from facenet_pytorch.models.mtcnn import MTCNN
    from facenet_pytorch.models.utils.detect_face import detect_face

    mtcnn = MTCNN(
        min_face_size=settings.min_face_px,  # full-size value; detect() passes the scaled one
        thresholds=list(settings.thresholds),
        factor=settings.factor,
        post_process=False,
        select_largest=False,
        keep_all=True,
        device=device,
    )
    return mtcnn.eval(), detect_face


def _build_fast(settings: DetectorSettings, device: torch.device, nets: tuple[Any, Any, Any]) -> FastMtcnn:
    from stream.faces.fast_mtcnn import FastMtcnn  # imported lazily, as facenet_pytorch is

    return FastMtcnn(settings.min_face_px, settings.thresholds, settings.factor, device, nets=nets)


def _check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    first = frames[0]
    for index, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            raise TypeError(f"frames[{index}]: expected a uint8 numpy array, got {_describe(frame)}")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"frames[{index}]: expected an HxWx3 image, got shape {frame.shape}")
        if frame.shape != first.shape:
            raise ValueError(f"frames[{index}]: shape {frame.shape} differs from frames[0] {first.shape}")
    return int(first.shape[0]), int(first.shape[1])


def _describe(value: object) -> str:
    dtype = getattr(value, "dtype", None)
    return f"{type(value).__name__} of dtype {dtype}" if dtype is not None else type(value).__name__


@dataclass(frozen=True)
class _Layout:
    """Where a full frame sits in the image MTCNN sees: scaled to (height, width), then
    surrounded by a black border of ``pad`` pixels."""

    full_size: tuple[int, int]
    size: tuple[int, int]
    pad: int

    @property
    def scale(self) -> float:
        """Detection-copy pixels per full-frame pixel (<= 1)."""
        return self.size[1] / self.full_size[1]

    @property
    def padded_size(self) -> tuple[int, int]:
        return self.size[0] + 2 * self.pad, self.size[1] + 2 * self.pad

    def to_full(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) x, y points from the MTCNN image back to full-frame pixels."""
        per_axis = np.array([self.full_size[1] / self.size[1], self.full_size[0] / self.size[0]], np.float32)
        return (xy - np.float32(self.pad)) * per_axis

    def to_copy(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) full-frame x, y points into the MTCNN image (the inverse of ``to_full``)."""
        per_axis = np.array([self.size[1] / self.full_size[1], self.size[0] / self.full_size[0]], np.float32)
        return np.asarray(xy, np.float32) * per_axis + np.float32(self.pad)


def _plan_layout(height: int, width: int, settings: DetectorSettings) -> _Layout:
    size = _detect_size(height, width, settings.detect_width)
    pad = round(settings.edge_pad * min(size))
    return _Layout(full_size=(height, width), size=size, pad=pad)


def _detect_size(height: int, width: int, detect_width: int | None) -> tuple[int, int]:
    """(height, width) of the copy MTCNN sees: only ever a downscale, aspect kept."""
    if detect_width is None or detect_width >= width:
        return height, width
    return max(1, round(height * detect_width / width)), detect_width


def _detect_batch(frames: Sequence[np.ndarray], layout: _Layout) -> np.ndarray:
    """One (B, h + 2 pad, w + 2 pad, 3) RGB uint8 array: each frame copied (or resized) once."""
    (height, width), pad = layout.size, layout.pad
    padded_h, padded_w = layout.padded_size
    allocate = np.zeros if pad else np.empty
    batch = allocate((len(frames), padded_h, padded_w, 3), np.uint8)
    inner = batch[:, pad : pad + height, pad : pad + width]
    for index, frame in enumerate(frames):
        inner[index] = _resized(frame, layout.size)
    rows = batch.reshape(-1, padded_w, 3)  # one tall image: a single in-place channel swap
    cv2.cvtColor(rows, cv2.COLOR_BGR2RGB, dst=rows)
    return batch


def _resized(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frame.shape[:2] == size:
        return frame
    return cv2.resize(np.ascontiguousarray(frame), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _to_detections(raw_boxes: Any, raw_points: Any, layout: _Layout) -> FaceDetections:
    """One frame's ``detect_face`` output (boxes N x 5 with score, points N x 5 x 2) → full frame."""
    boxes = np.asarray(raw_boxes, dtype=np.float32).reshape(-1, _BOX_COLUMNS)
    points = np.asarray(raw_points, dtype=np.float32).reshape(-1, 5, 2)
    keep = _valid_rows(boxes, points)
    order = np.argsort(-boxes[keep, 4], kind="stable")
    boxes, points = boxes[keep][order], points[keep][order]
    return FaceDetections(
        boxes=np.ascontiguousarray(layout.to_full(boxes[:, :4].reshape(-1, 2, 2)).reshape(-1, 4)),
        scores=np.ascontiguousarray(boxes[:, 4]),
        landmarks=np.ascontiguousarray(layout.to_full(points)),
    )


def _valid_rows(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(points).all(axis=(1, 2))
    with np.errstate(invalid="ignore"):
        positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return finite & positive
