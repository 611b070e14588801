"""The detector and embedder a command or the app needs, built from the config and a few overrides.

``FaceDetector`` is what the rest of the app may use of a detector (``MtcnnDetector`` is the one we
build; tests pass fakes). ``ModelOverrides`` carries the command-line choices that win over
config.yaml's ``recognition`` and ``detection`` sections; the CLI fills it from its options.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from stream.config import AppConfig, DetectionConfig
from stream.errors import UserError
from stream.faces.embedder import Embedder, ModelUnavailableError, resolve_device
from stream.types import FaceDetections

if TYPE_CHECKING:
    from stream.faces.detector import DetectorSettings

__all__ = [
    "ADAFACE_DOWNLOAD_HINT",
    "FaceDetector",
    "ModelChoice",
    "ModelOverrides",
    "Models",
    "build_detector",
    "build_embedder",
    "build_models",
    "choose_model",
    "detector_settings",
    "largest_face_crop",
    "model_choice",
]

log = logging.getLogger(__name__)

ADAFACE_DOWNLOAD_HINT = (
    "gdown --id 1dswnavflETcnAuplZj1IOKKP0eM8ITgT -O checkpoints/adaface_ir101_webface12m.ckpt "
    "(IR-101 WebFace12M; see checkpoints/README.md)"
)


class FaceDetector(Protocol):
    """Faces in BGR frames (HxWx3 uint8), as full-frame ``FaceDetections``."""

    @property
    def batch_fallbacks(self) -> int:
        """Detection batches that failed and were retried frame by frame so far."""
        ...

    def detect(self, frames: Sequence[np.ndarray]) -> list[FaceDetections]:
        """One ``FaceDetections`` per frame; the frames share one size."""
        ...

    def detect_one(self, image: np.ndarray) -> FaceDetections: ...

    def refine(self, frames: Sequence[np.ndarray], known: Sequence[FaceDetections]) -> list[FaceDetections]:
        """The faces ``known`` (one ``FaceDetections`` per frame) re-found near where they were; no new
        faces. Called only with ``detection.refine_between``."""
        ...


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


@dataclass(frozen=True)
class ModelOverrides:
    """Choices that win over the config (None: take the config's)."""

    model: Literal["auto", "adaface", "facenet"] | None = None
    arch: str | None = None
    checkpoint: Path | None = None
    device: str | None = None
    batch_size: int | None = None
    strict: bool = False  # a missing AdaFace checkpoint is an error instead of the FaceNet fallback


@dataclass(frozen=True)
class Models:
    """The detector and embedder of a run. ``still_detector`` (None: ``detector``) is the one for
    still images, e.g. gallery photos, when the video detector runs with faster settings."""

    detector: FaceDetector
    embedder: Embedder
    batch_size: int
    still_detector: FaceDetector | None = None

    def for_stills(self) -> Models:
        """These models with the still-image detector as ``detector``."""
        if self.still_detector is None:
            return self
        return Models(self.still_detector, self.embedder, self.batch_size)


def model_choice(config: AppConfig, overrides: ModelOverrides | None = None) -> ModelChoice:
    rec, overrides = config.recognition, overrides or ModelOverrides()
    checkpoint = overrides.checkpoint if overrides.checkpoint is not None else rec.checkpoint
    model = overrides.model or ("adaface" if overrides.checkpoint is not None else rec.model)
    return choose_model(model, overrides.arch or rec.arch, checkpoint, strict=overrides.strict)


def build_models(config: AppConfig, overrides: ModelOverrides | None = None, *, stills: bool = False) -> Models:
    """The embedder and detector(s) of ``config``.

    For video (``stills=False``) ``detector`` follows ``config.detection`` (profile presets included)
    and, when that differs, ``still_detector`` follows ``config.still_detection()`` (for gallery
    photos). With ``stills=True`` (embed, verify, enroll, identify, calibrate) ``detector`` is the
    still-image one: full-quality detection whatever the profile.
    """
    rec, overrides = config.recognition, overrides or ModelOverrides()
    if overrides.batch_size is not None and overrides.batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1, got {overrides.batch_size}")
    batch_size = overrides.batch_size or rec.batch_size
    embedder = build_embedder(
        model_choice(config, overrides),
        rec.checkpoints_dir,
        device=overrides.device or rec.device,
        precision=rec.precision,
        batch_size=batch_size,
        allow_unsafe_pickle=rec.allow_unsafe_checkpoint,
    )
    still = detector_settings(config.still_detection(), overrides.device)
    if stills:
        return Models(build_detector(still), embedder, batch_size)
    video = detector_settings(config.detection, overrides.device)
    detector = build_detector(video)
    return Models(detector, embedder, batch_size, None if still == video else build_detector(still))


def detector_settings(det: DetectionConfig, device: str | None = None) -> DetectorSettings:
    """The MTCNN settings of a ``detection`` section (``device`` overrides its device)."""
    from stream.faces.detector import DetectorSettings  # loads torch

    return DetectorSettings(
        refine_thresholds=det.refine_thresholds,
        min_face_px=det.min_face_px,
        thresholds=det.thresholds,
        factor=det.pyramid_factor,
        detect_width=det.detect_width,
        edge_pad=det.edge_pad,
        backend=det.backend,
        device=resolve_device(device or det.device),
    )


def build_detector(settings: DetectorSettings) -> FaceDetector:
    from stream.faces.detector import MtcnnDetector  # loads torch

    return MtcnnDetector(settings)


def largest_face_crop(models: Models, path: Path) -> np.ndarray | None:
    """The embedder's crop of the largest face in an image file, or None when it has no face.

    An unreadable file is a ``UserError`` naming it.
    """
    from stream.faces.images import ImageReadError, read_bgr
    from stream.faces.still import crop_faces, largest_face

    try:
        image = read_bgr(path)
    except ImageReadError as exc:
        raise UserError(str(exc)) from None
    detections = models.detector.detect_one(image)
    k = largest_face(detections)
    return None if k is None else crop_faces(image, detections.select([k]), models.embedder).crops[0]
