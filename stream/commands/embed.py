"""`run.py embed`: every face of every image → aligned crops, embeddings.npy, faces.csv.

The seed repo's job, done for all faces (not only the first), with a progress bar and a
summary; unreadable files are skipped with a reason, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from stream.errors import UserError
from stream.faces.images import ImageReadError, list_images, read_bgr
from stream.faces.models import Models
from stream.faces.still import FaceCrops, crop_faces

log = logging.getLogger(__name__)

CSV_COLUMNS = ("image", "face_index", "x1", "y1", "x2", "y2", "det_score", "norm", "aligned_path")


@dataclass
class EmbedSummary:
    images: int = 0
    faces: int = 0
    without_faces: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def lines(self) -> list[str]:
        out = [
            f"images read: {self.images}, faces embedded: {self.faces}, "
            f"images without faces: {len(self.without_faces)}, files skipped: {len(self.skipped)}"
        ]
        out += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        return out


@dataclass(frozen=True)
class _Row:
    image: str
    index: int
    box: np.ndarray
    score: float
    aligned_path: str


def run_embed(models: Models, input_dir: Path, output_dir: Path, recursive: bool) -> EmbedSummary:
    if not input_dir.is_dir():
        raise UserError(f"--input-dir {input_dir}: not a folder")
    images, others = list_images(input_dir, recursive)
    summary = EmbedSummary(skipped=[(_rel(p, input_dir), "not an image file name") for p in others])
    aligned_dir = _prepare_output(output_dir)
    rows: list[_Row] = []
    vectors: list[np.ndarray] = []
    norms: list[np.ndarray] = []
    pending_rows: list[_Row] = []
    pending_crops: list[np.ndarray] = []

    def flush() -> None:
        if pending_crops:
            v, n = models.embedder.embed(np.stack(pending_crops))
            vectors.append(v)
            norms.append(n)
            rows.extend(pending_rows)
            pending_rows.clear()
            pending_crops.clear()

    for path, faces in tqdm(_faces_per_image(models, images, summary), total=len(images), unit="img"):
        name = _rel(path, input_dir)
        for k in range(len(faces.detections)):
            aligned_path = aligned_dir / f"{_stem(name)}_{k}.png"
            cv2.imwrite(str(aligned_path), faces.aligned[k])
            pending_rows.append(_row(name, k, faces, aligned_path.relative_to(output_dir).as_posix()))
            pending_crops.append(faces.crops[k])
        if len(pending_crops) >= models.batch_size:
            flush()
    flush()
    dim = vectors[0].shape[1] if vectors else 512
    _write_outputs(output_dir, rows, vectors, norms, dim)
    summary.faces = len(rows)
    return summary


def _faces_per_image(models: Models, images: list[Path], summary: EmbedSummary) -> Iterator[tuple[Path, FaceCrops]]:
    for path in images:
        try:
            image = read_bgr(path)
        except ImageReadError as exc:
            summary.skipped.append((path.name, str(exc).split(": ", 1)[-1]))
            log.warning("%s", exc)
            continue
        summary.images += 1
        detections = models.detector.detect_one(image)
        if len(detections) == 0:
            summary.without_faces.append(path.name)
        yield path, crop_faces(image, detections, models.embedder)


def _row(name: str, k: int, faces: FaceCrops, aligned_path: str) -> _Row:
    return _Row(name, k, faces.detections.boxes[k], float(faces.detections.scores[k]), aligned_path)


def _prepare_output(output_dir: Path) -> Path:
    aligned = output_dir / "aligned"
    try:
        aligned.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--output-dir {output_dir}: cannot create ({exc.strerror})") from None
    return aligned


def _write_outputs(out: Path, rows: list[_Row], vectors: list[np.ndarray], norms: list[np.ndarray], dim: int) -> None:
    matrix = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    norm_values = np.concatenate(norms) if norms else np.zeros((0,), np.float32)
    np.save(out / "embeddings.npy", matrix)
    with (out / "faces.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row, norm in zip(rows, norm_values, strict=True):
            x1, y1, x2, y2 = (f"{v:.2f}" for v in row.box)
            writer.writerow([row.image, row.index, x1, y1, x2, y2, f"{row.score:.5f}", f"{norm:.4f}", row.aligned_path])


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _stem(relative_name: str) -> str:
    """A flat, unique file stem for an image path relative to the input folder."""
    return Path(relative_name).with_suffix("").as_posix().replace("/", "__")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("embed", help="embed every face of every image in a folder (aligned crops, npy, csv)")
    p.add_argument("--input-dir", type=Path, required=True, help="folder of images")
    p.add_argument("--output-dir", type=Path, default=Path("results"), help="where outputs go (default: ./results)")
    p.add_argument("--recursive", action="store_true", help="include sub-folders")
    return p
