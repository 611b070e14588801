"""Faces of still images: detect, crop for the embedder, embed in batches.

The pure steps used by `embed`, `verify`, `identify` and gallery enrollment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream.faces.align import warp_to_template
from stream.faces.embedder import Embedder, crop_for
from stream.types import FaceDetections


@dataclass(frozen=True)
class FaceCrops:
    """The faces of one image: detections, the embedder's crops and 112x112 aligned crops."""

    detections: FaceDetections
    crops: np.ndarray  # (N, S, S, 3) uint8 BGR, S = embedder.crop_size
    aligned: np.ndarray  # (N, 112, 112, 3) uint8 BGR, template-aligned (for saving/inspection)


def crop_faces(image_bgr: np.ndarray, detections: FaceDetections, embedder: Embedder) -> FaceCrops:
    size = embedder.crop_size
    crops = np.zeros((len(detections), size, size, 3), np.uint8)
    aligned = np.zeros((len(detections), 112, 112, 3), np.uint8)
    for i, (box, points) in enumerate(zip(detections.boxes, detections.landmarks, strict=True)):
        aligned[i] = warp_to_template(image_bgr, points)
        crops[i] = (
            aligned[i]
            if embedder.crop_kind == "template" and size == 112
            else crop_for(embedder, image_bgr, box, points)
        )
    return FaceCrops(detections, crops, aligned)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def largest_face(detections: FaceDetections) -> int | None:
    """Index of the largest box, or None when there is no face."""
    if len(detections) == 0:
        return None
    return int(np.argmax(box_areas(detections.boxes)))


def embed_stack(embedder: Embedder, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Embed a list of equal-size crops (the embedder batches internally)."""
    size = embedder.crop_size
    stack = np.stack(list(crops)) if len(crops) else np.zeros((0, size, size, 3), np.uint8)
    return embedder.embed(stack)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two unit vectors, clipped to [-1, 1]."""
    return float(np.clip(np.dot(a.astype(np.float64), b.astype(np.float64)), -1.0, 1.0))
