"""Build the detector and embedder a command needs from the config and command-line overrides."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.config import AppConfig
from stream.errors import UserError
from stream.faces.embedder import Embedder, ModelChoice, build_embedder, choose_model, resolve_device


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that embeds faces (they override config.yaml)."""
    group = parser.add_argument_group("model (overrides config.yaml's recognition section)")
    group.add_argument("--model", choices=["auto", "adaface", "facenet"], default=None)
    group.add_argument("--arch", choices=["ir_18", "ir_34", "ir_50", "ir_101", "ir_se_50"], default=None)
    group.add_argument("--checkpoint", type=Path, default=None, help="AdaFace checkpoint (.ckpt or state dict)")
    group.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    group.add_argument("--batch-size", type=int, default=None, help="crops per embedding batch")
    group.add_argument("--strict-model", action="store_true", help="fail (exit 2) instead of falling back to FaceNet")


@dataclass(frozen=True)
class Models:
    detector: object  # stream.faces.detector.MtcnnDetector (imported lazily: it loads torch)
    embedder: Embedder
    batch_size: int


def model_choice(config: AppConfig, args: argparse.Namespace) -> ModelChoice:
    rec = config.recognition
    checkpoint = args.checkpoint if args.checkpoint is not None else rec.checkpoint
    model = args.model or ("adaface" if args.checkpoint is not None else rec.model)
    return choose_model(model, args.arch or rec.arch, checkpoint, strict=args.strict_model)


def build_models(config: AppConfig, args: argparse.Namespace) -> Models:
    from stream.faces.detector import DetectorSettings, MtcnnDetector

    rec, det = config.recognition, config.detection
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1, got {args.batch_size}")
    batch_size = args.batch_size or rec.batch_size
    embedder = build_embedder(
        model_choice(config, args),
        rec.checkpoints_dir,
        device=args.device or rec.device,
        precision=rec.precision,
        batch_size=batch_size,
        allow_unsafe_pickle=rec.allow_unsafe_checkpoint,
    )
    detector = MtcnnDetector(
        DetectorSettings(
            min_face_px=det.min_face_px,
            thresholds=det.thresholds,
            factor=det.pyramid_factor,
            detect_width=det.detect_width,
            edge_pad=det.edge_pad,
            backend=det.backend,
            device=resolve_device(args.device or det.device),
        )
    )
    return Models(detector, embedder, batch_size)


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
