"""`run.py verify A B`: are the largest faces of two images the same person?"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stream.errors import UserError
from stream.faces.models import Models, largest_face_crop
from stream.faces.still import cosine, embed_stack
from stream.identity.thresholds import DEFAULT_TARGET_FAR, choose_threshold, table_for


@dataclass(frozen=True)
class Verdict:
    cosine: float
    threshold: float
    same: bool
    model_id: str


def run_verify(
    models: Models,
    a: Path,
    b: Path,
    threshold: float | None,
    target_far: float = DEFAULT_TARGET_FAR,
    score_table: Path | None = None,
) -> Verdict:
    """``threshold`` None: the model's score table at per-pair FAR ``target_far`` (one comparison,
    a gallery of one), or its fixed default without a table."""
    crops = [_largest_face_crop(models, path) for path in (a, b)]
    vectors, _ = embed_stack(models.embedder, crops)
    model_id = models.embedder.model_id
    table = None if threshold is not None else table_for(model_id, score_table)
    chosen = choose_threshold(
        model_id, gallery_size=1, target_far=target_far, match_threshold=threshold, table=table
    ).threshold
    score = cosine(vectors[0], vectors[1])
    return Verdict(round(score, 6), chosen, score >= chosen, models.embedder.model_id)


def _largest_face_crop(models: Models, path: Path) -> np.ndarray:
    crop = largest_face_crop(models, path)
    if crop is None:
        raise UserError(f"{path}: no face found")
    return crop


def format_verdict(verdict: Verdict, as_json: bool) -> str:
    if as_json:
        return json.dumps(asdict(verdict))
    word = "same person" if verdict.same else "different people"
    return f"cosine {verdict.cosine:.4f} (threshold {verdict.threshold:.3f}): {word}  [{verdict.model_id}]"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("verify", help="compare the largest faces of two images (cosine, same/different)")
    p.add_argument("a", type=Path, help="first image")
    p.add_argument("b", type=Path, help="second image")
    p.add_argument("--json", action="store_true", help="print JSON: cosine, threshold, same, model_id")
    return p
