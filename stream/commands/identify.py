"""`run.py identify IMAGE`: who is each face of a still image, against the enrolled gallery?

Every detected face gets its box, the best gallery person (or unknown), the cosine score and
the margin over the runner-up; the decision rule is ``stream.identity.matcher``'s.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.errors import UserError
from stream.faces.images import ImageReadError, read_bgr
from stream.faces.models import Models
from stream.faces.still import crop_faces, embed_stack
from stream.identity.ann import IndexSettings
from stream.identity.matcher import GalleryLike, Matcher
from stream.identity.thresholds import DEFAULT_TARGET_FAR, choose_threshold, table_for
from stream.types import Identity, Match

if TYPE_CHECKING:
    from stream.identity.gallery import Gallery

JSON_KEYS = ("box", "person", "score", "margin")

log = logging.getLogger(__name__)


def load_gallery(models: Models, gallery_dir: Path, use_cache: bool = True) -> Gallery:
    """Enroll ``gallery_dir`` (cached per model); UserError when nobody could be enrolled."""
    from stream.identity.gallery import enroll

    gallery = enroll(gallery_dir, models, use_cache=use_cache)
    if not gallery.names:
        raise UserError(f"{gallery_dir}: nobody enrolled (run.py enroll shows why)")
    return gallery


def run_identify(
    models: Models,
    gallery: Path | GalleryLike,
    image_path: Path,
    threshold: float | None,
    min_margin: float,
    per_image: bool = False,
    use_cache: bool = True,
    target_far: float = DEFAULT_TARGET_FAR,
    score_table: Path | None = None,
    index: IndexSettings | None = None,
) -> list[dict[str, Any]]:
    """One dict per face (detector order) with exactly the keys of ``JSON_KEYS``.

    ``gallery`` is a gallery folder (enrolled here) or an enrolled gallery. ``threshold`` None
    means the model's score table (``score_table``, else the shipped one) at per-pair FAR
    ``target_far / G`` for a gallery of G people, or the fixed default of a model without a
    table (``stream.identity.thresholds``). ``per_image`` matches against every enrolled image
    (a person's best) instead of the fused templates. ``index``: the gallery search
    (``recognition.index`` and its settings; None: the defaults).
    """
    image = _read(image_path)  # before enrolling: a wrong path fails at once
    if isinstance(gallery, Path):
        gallery = load_gallery(models, gallery, use_cache)
    identifier = StillIdentifier(
        models,
        gallery,
        threshold,
        min_margin,
        per_image=per_image,
        target_far=target_far,
        score_table=score_table,
        index=index,
    )
    return identifier(image)


class StillIdentifier:
    """``run.py identify`` with the models and the gallery loaded once: ``identifier(image)`` names every
    face of a BGR image (the dicts of ``run_identify``). The web app keeps one for ``POST /api/identify``.

    Not for concurrent calls (the detector is not thread-safe): the caller serialises them.
    """

    def __init__(
        self,
        models: Models,
        gallery: GalleryLike,
        threshold: float | None,
        min_margin: float,
        *,
        per_image: bool = False,
        target_far: float = DEFAULT_TARGET_FAR,
        score_table: Path | None = None,
        index: IndexSettings | None = None,
    ) -> None:
        _check_model(gallery, models.embedder.model_id)
        model_id = models.embedder.model_id
        choice = choose_threshold(
            model_id,
            gallery_size=len(gallery.names),
            target_far=target_far,
            match_threshold=threshold,
            table=None if threshold is not None else table_for(model_id, score_table),
        )
        log.info("%s", choice.describe())
        self.models = models
        self.names = tuple(gallery.names)
        self._matcher = Matcher.from_gallery(
            gallery, choice.threshold, min_margin, top_k=2, per_image=per_image, index=index
        )
        log.info("%s", self._matcher.describe_search())

    def __call__(self, image: np.ndarray) -> list[dict[str, Any]]:
        faces = crop_faces(image, self.models.detector.detect_one(image), self.models.embedder)
        if len(faces.detections) == 0:
            return []
        vectors, _ = embed_stack(self.models.embedder, list(faces.crops))
        return [
            _face_dict(box, match, self._matcher.decide(match))
            for box, match in zip(faces.detections.boxes, self._matcher.match(vectors), strict=True)
        ]


def _check_model(gallery: GalleryLike, model_id: str) -> None:
    if gallery.model_id != model_id:
        raise UserError(f"gallery was enrolled with {gallery.model_id}, but the current model is {model_id}")


def _read(path: Path) -> np.ndarray:
    try:
        return read_bgr(path)
    except ImageReadError as exc:
        raise UserError(str(exc)) from None


def _face_dict(box: np.ndarray, match: Match, identity: Identity) -> dict[str, Any]:
    best = match.best
    return {
        "box": [round(float(v), 2) for v in box],
        "person": identity.person,
        "score": round(best[1], 6) if best is not None else None,
        "margin": round(match.margin, 6),
    }


def format_identities(faces: list[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return json.dumps(faces)
    if not faces:
        return "no faces found"
    return "\n".join(_face_line(i, face) for i, face in enumerate(faces, 1))


def _face_line(number: int, face: dict[str, Any]) -> str:
    box = ", ".join(f"{v:.0f}" for v in face["box"])
    who = face["person"] or "unknown"
    score = "none" if face["score"] is None else f"{face['score']:.3f}"
    return f"face {number} [{box}]: {who} (score {score}, margin {face['margin']:.3f})"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("identify", help="name every face of an image against the gallery (or unknown)")
    p.add_argument("image", type=Path, help="image to identify")
    p.add_argument(
        "--gallery", type=Path, default=None, help="folder of <person>/<images> (default: config gallery.dir)"
    )
    p.add_argument("--per-image", action="store_true", help="match every enrolled image, not the fused templates")
    p.add_argument("--json", action="store_true", help="print a JSON list of {box, person, score, margin}")
    return p
