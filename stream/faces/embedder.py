"""One embedder interface for both model families, and the choice between them.

An embedder says how it wants its input cropped (``crop_kind`` "template": 5-point alignment
to the AdaFace/ArcFace template; "box": facenet-pytorch's box crop with margin), embeds
batches of BGR crops into unit vectors plus the pre-normalisation norm, and names itself with
a ``model_id`` (family, arch, weights hash) that caches key on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from stream.faces.align import box_crop, warp_to_template

log = logging.getLogger(__name__)

CropKind = Literal["template", "box"]

# Cosine thresholds per model family. AdaFace: the maintainer's 0.3 (issue #161, CVLFace's
# default). FaceNet: the equal-error threshold (0.418) of the 580 labelled deepface pairs
# (../shared/data/deepface: AUC 0.99996); README "Thresholds" says how to recalibrate.
DEFAULT_THRESHOLDS = {"adaface": 0.3, "facenet": 0.42}

ADAFACE_DOWNLOAD_HINT = (
    "gdown --id 1dswnavflETcnAuplZj1IOKKP0eM8ITgT -O checkpoints/adaface_ir101_webface12m.ckpt "
    "(IR-101 WebFace12M; see checkpoints/README.md)"
)


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


def default_threshold(model_id: str) -> float:
    return DEFAULT_THRESHOLDS[family_of(model_id)]


def crop_for(embedder: Embedder, image_bgr: np.ndarray, box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The crop this embedder takes, cut from the full-resolution image."""
    if embedder.crop_kind == "template":
        return warp_to_template(image_bgr, landmarks, size=embedder.crop_size)
    return box_crop(image_bgr, box, size=embedder.crop_size)


@dataclass(frozen=True)
class ModelChoice:
    """What to build: the family, and for AdaFace the arch and checkpoint."""

    family: Literal["adaface", "facenet"]
    arch: str = "ir_101"
    checkpoint: Path | None = None


def choose_model(
    model: Literal["auto", "adaface", "facenet"], arch: str, checkpoint: Path, strict: bool = False
) -> ModelChoice:
    """AdaFace when its checkpoint exists; else FaceNet with one warning (or an error when strict).

    ``model="adaface"`` is an explicit request, so a missing checkpoint is an error as with ``strict``.
    """
    if model == "facenet":
        return ModelChoice("facenet")
    if checkpoint.is_file():
        return ModelChoice("adaface", arch, checkpoint)
    if strict or model == "adaface":
        raise ModelUnavailableError(f"AdaFace checkpoint {checkpoint} not found; get one with: {ADAFACE_DOWNLOAD_HINT}")
    log.warning(
        "AdaFace checkpoint %s not found: using the offline FaceNet (CASIA-WebFace). For AdaFace: %s",
        checkpoint,
        ADAFACE_DOWNLOAD_HINT,
    )
    return ModelChoice("facenet")


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when a GPU is present, else 'cpu'."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_embedder(
    choice: ModelChoice,
    checkpoints_dir: Path,
    device: str = "auto",
    precision: Literal["fp32", "fp16", "bf16"] = "fp32",
    batch_size: int = 32,
    allow_unsafe_pickle: bool = False,
) -> Embedder:
    """Construct the chosen embedder; checkpoint problems raise ``ModelUnavailableError``."""
    from stream.faces.checkpoints import CheckpointError
    from stream.faces.facenet_convert import FaceNetWeightsError

    device = resolve_device(device)
    try:
        if choice.family == "facenet":
            from stream.faces.facenet import FaceNetEmbedder

            return FaceNetEmbedder(checkpoints_dir, device=device, batch_size=batch_size)
        from stream.faces.adaface import AdaFaceEmbedder

        assert choice.checkpoint is not None
        return AdaFaceEmbedder(
            choice.arch,
            choice.checkpoint,
            device=device,
            precision=precision if device.startswith("cuda") else "fp32",
            batch_size=batch_size,
            allow_unsafe_pickle=allow_unsafe_pickle,
        )
    except (CheckpointError, FaceNetWeightsError) as exc:
        raise ModelUnavailableError(str(exc)) from None
