"""Quality gates for enrollment photos: which face of a still image to enroll, or why none.

Pure functions on detections, aligned crops and embeddings; no I/O, no torch. Bad gallery photos
poison every later match (docs/peers.md §2 items 1, 2, 4: tiny or blurry training crops gave confident
false matches for any blurry face), so a photo is enrolled only when its subject is unambiguous,
large, confidently detected and sharp, and its embedding agrees with the person's other photos.

The face an image would enroll is always its largest. Gates, in the order they are checked:

1. "no face": the detector found nothing.
2. "two faces of similar size": the second-largest box has at least ``ambiguous_ratio`` of the
   largest box's area, so it is unclear whose photo it is.
3. "face too small (NN px)": the shorter side of the box is under ``min_face_px``.
4. "low detection score (0.xx)": the detector's score is under ``min_det_score``.
5. "too blurry (score X)": the variance of the Laplacian of the grey 112x112 aligned crop is
   under ``min_blur``.

Then, per person with at least ``outlier_min_images`` accepted photos, photos whose cosine to the
fused template of the person's *other* photos is under the outlier threshold are removed, worst
first, one at a time (see ``find_outliers``).

Measurements behind the defaults (offline FaceNet + MTCNN with the default config, photos from
../shared/data):

- Blur, Laplacian variance on the aligned crop. 78 sharp gallery photos (deepface img*, the
  face_recognition kNN train set, insightface RD/d1-d5): min 514. 20 more sharp photos
  (obama-240p … 1080p, facenet-pytorch and AdaFace test images, insightface pose/*): 360 and up, except
  a soft, low-contrast profile shot (pose/right_face.png) at 156. insightface's motion-blurred sample
  bulk/blur.jpg: 130. The 78 photos blurred whole with ``cv2.GaussianBlur`` sigma 4: median 65, and
  every copy whose face is under 300 px scores <= 130 except one (513); faces over 500 px hardly
  change at crop scale (sigma 4 on a 700 px face is ~0.6 px of the 112 px crop) and keep 200-1600.
  Blurred at crop scale instead (sigma 1.5 px of the 112 px crop): <= 115. ``min_blur = 150``
  rejects the real blurred sample and heavy blur while keeping every sharp photo measured.
- Detection score: the 98 sharp photos score >= 0.992; ``min_det_score = 0.95`` only drops doubtful
  detections.
- Two faces: obama_and_biden.jpg 0.88, two_people.jpg 0.95, kit_with_rose.jpg 0.73; single-subject
  photos with people in the background 0.56 at most (deepface img62), mostly < 0.25.
- Outliers: leave-one-out cosines of 60 photos of 11 people (deepface clusters A-F, J-M, insightface
  RD): FaceNet min 0.643, 5th percentile 0.70; a photo of someone else against a person's template:
  max 0.500, 95th percentile 0.243. The default (``outlier_cos=None``) is the model family's match
  threshold for a gallery of one (``stream.identity.thresholds.default_threshold``: FaceNet's score
  table at per-pair FAR 1e-3, AdaFace's fixed 0.3): a photo
  that would not even match its own person is not enrolled. Cosine scales differ between models,
  so one fixed number would be too strict for one family or too loose for the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from stream.errors import UserError
from stream.faces.still import box_areas
from stream.identity.templates import fuse
from stream.identity.thresholds import default_threshold
from stream.types import FaceDetections

__all__ = [
    "EnrollGates",
    "FaceMeasure",
    "blur_score",
    "find_outliers",
    "gate_image",
    "judge",
    "leave_one_out_cosines",
    "measure_face",
    "outlier_threshold",
]

FALLBACK_OUTLIER_COS = 0.3
"""Outlier threshold for a model family without a shipped match threshold."""


@dataclass(frozen=True, slots=True)
class EnrollGates:
    """Thresholds a gallery photo must pass (see the module docstring for the measurements).

    min_face_px: shorter side of the face box, in image pixels.
    min_det_score: detector score of the face, in [0, 1].
    min_blur: variance of the Laplacian of the grey 112x112 aligned crop.
    ambiguous_ratio: second-largest / largest face area at or above which the photo is ambiguous.
    outlier_cos: cosine to the person's other photos below which a photo is an outlier;
        ``None`` uses the model family's match threshold.
    outlier_min_images: the outlier check runs only while a person has at least this many photos.
    """

    min_face_px: int = 40
    min_det_score: float = 0.95
    min_blur: float = 150.0
    ambiguous_ratio: float = 0.6
    outlier_cos: float | None = None
    outlier_min_images: int = 3

    def __post_init__(self) -> None:
        _check_range("min_face_px", self.min_face_px, 1, 100_000)
        _check_range("min_det_score", self.min_det_score, 0.0, 1.0)
        _check_range("min_blur", self.min_blur, 0.0, math.inf)
        _check_range("ambiguous_ratio", self.ambiguous_ratio, 0.0, 1.0)
        if self.outlier_cos is not None:
            _check_range("outlier_cos", self.outlier_cos, -1.0, 1.0)
        _check_range("outlier_min_images", self.outlier_min_images, 3, 1_000_000)


def _check_range(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"EnrollGates.{name}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"EnrollGates.{name}: must be in [{low}, {high}], got {value}")


@dataclass(frozen=True, slots=True)
class FaceMeasure:
    """What the gates look at for the face an image would enroll (its largest)."""

    index: int  # which detection
    faces: int  # how many faces the image has
    side_px: float  # shorter side of the face box, image pixels
    det_score: float
    blur: float  # blur_score of its aligned crop
    second_ratio: float  # second-largest face area / largest (0 with one face)


def blur_score(aligned_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop: high for sharp detail, low for blur."""
    crop = np.asarray(aligned_bgr)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3 or 0 in crop.shape:
        raise ValueError(f"blur_score: expected an HxWx3 uint8 BGR crop, got {crop.dtype} {crop.shape}")
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def measure_face(detections: FaceDetections, aligned_crops: np.ndarray) -> FaceMeasure | None:
    """Measure the largest face; ``None`` when there is no face. One aligned crop per detection."""
    if len(aligned_crops) != len(detections):
        raise ValueError(f"measure_face: {len(aligned_crops)} aligned crops for {len(detections)} faces")
    if len(detections) == 0:
        return None
    areas = box_areas(detections.boxes).astype(np.float64)
    order = np.argsort(-areas, kind="stable")
    index = int(order[0])
    box = detections.boxes[index]
    second = float(areas[order[1]] / areas[index]) if len(order) > 1 and areas[index] > 0 else 0.0
    return FaceMeasure(
        index=index,
        faces=len(detections),
        side_px=float(min(box[2] - box[0], box[3] - box[1])),
        det_score=float(detections.scores[index]),
        blur=blur_score(aligned_crops[index]),
        second_ratio=second,
    )


def judge(measure: FaceMeasure | None, gates: EnrollGates) -> str | None:
    """The first gate the face fails, as a short reason, or ``None`` when it passes them all."""
    if measure is None:
        return "no face"
    if measure.second_ratio >= gates.ambiguous_ratio:
        return "two faces of similar size"
    if measure.side_px < gates.min_face_px:
        return f"face too small ({measure.side_px:.0f} px)"
    if measure.det_score < gates.min_det_score:
        return f"low detection score ({math.floor(measure.det_score * 100) / 100:.2f})"
    if measure.blur < blur_floor(gates.min_blur, measure.side_px):
        return f"too blurry (score {measure.blur:.0f})"
    return None


def blur_floor(min_blur: float, side_px: float) -> float:
    """The blur gate for a face of ``side_px``: ``min_blur`` for faces of 112 px and more.

    A smaller face is upscaled to the 112 px crop, which lowers the Laplacian variance about with
    the square of the scale even when the face is sharp (OTB David's 65-80 px faces scored 54-142
    sharp). So the floor shrinks with (side/112)^2.
    """
    return min_blur * min(1.0, side_px / 112.0) ** 2


def gate_image(
    detections: FaceDetections, aligned_crops: np.ndarray, gates: EnrollGates
) -> tuple[int | None, str | None]:
    """(index of the face to enroll, None) or (None, reason the image is rejected)."""
    measure = measure_face(detections, aligned_crops)
    reason = judge(measure, gates)
    if reason is not None or measure is None:
        return None, reason
    return measure.index, None


def outlier_threshold(gates: EnrollGates, model_id: str) -> float:
    """The outlier cosine: the explicit gate, else the model family's match threshold."""
    if gates.outlier_cos is not None:
        return float(gates.outlier_cos)
    try:
        return default_threshold(model_id)
    except UserError:  # a family with neither a table nor a fixed default
        return FALLBACK_OUTLIER_COS


def leave_one_out_cosines(vectors: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Cosine of each unit vector to the fused template of all the others (needs N >= 2)."""
    count = len(vectors)
    if count < 2:
        raise ValueError(f"leave_one_out_cosines: needs at least 2 vectors, got {count}")
    out = np.empty(count, np.float64)
    for i in range(count):
        others = np.arange(count) != i
        out[i] = float(np.dot(vectors[i].astype(np.float64), fuse(vectors[others], norms[others])))
    return out


def find_outliers(
    vectors: np.ndarray, norms: np.ndarray, threshold: float, min_images: int = 3
) -> list[tuple[int, float]]:
    """(row, cosine) of the outliers among one person's photos, in the order they were removed.

    While at least ``min_images`` photos remain, the photo with the lowest leave-one-out cosine is
    removed if that cosine is under ``threshold``. One at a time, so a wrong photo cannot drag a
    good one below the threshold through the template it spoils.
    """
    keep = list(range(len(vectors)))
    removed: list[tuple[int, float]] = []
    while len(keep) >= max(min_images, 2):
        scores = leave_one_out_cosines(vectors[keep], norms[keep])
        worst = int(np.argmin(scores))
        if scores[worst] >= threshold:
            break
        removed.append((keep.pop(worst), float(scores[worst])))
    return removed
