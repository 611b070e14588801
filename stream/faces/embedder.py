"""One embedder interface for both model families (``stream.faces.models`` chooses and builds them).

An embedder says how it wants its input cropped (``crop_kind`` "template": 5-point alignment
to the AdaFace/ArcFace template; "box": facenet-pytorch's box crop with margin), embeds
batches of BGR crops into unit vectors plus the pre-normalisation norm, and names itself with
a ``model_id`` (family, arch, weights hash) that caches key on.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from stream.faces.align import box_crop, warp_to_template

CropKind = Literal["template", "box"]

# Fixed cosine thresholds of model families without a score table. AdaFace: the maintainer's 0.3
# (issue #161, CVLFace's default); no checkpoint can be calibrated here. FaceNet has a score table
# instead (stream/identity/score_tables/, README "Thresholds"): its default is the threshold at
# per-pair FAR 1e-3 there (stream.identity.thresholds.default_threshold).
DEFAULT_THRESHOLDS = {"adaface": 0.3}


class ModelUnavailableError(Exception):
    """The requested model cannot be built; the message is one line saying why and what to do."""


class Embedder(Protocol):
    crop_size: int
    crop_kind: CropKind
    model_id: str

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, 3) uint8 BGR crops → ((N, D) float32 unit vectors, (N,) float32 norms)."""
        ...


def family_of(model_id: str) -> str:
    return model_id.split(":", 1)[0]


def crop_for(embedder: Embedder, image_bgr: np.ndarray, box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The crop this embedder takes, cut from the full-resolution image."""
    if embedder.crop_kind == "template":
        return warp_to_template(image_bgr, landmarks, size=embedder.crop_size)
    return box_crop(image_bgr, box, size=embedder.crop_size)


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when a GPU is present, else 'cpu'."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
