"""`run.py search IMAGE`: the stored faces most like the largest face in IMAGE ("have we seen them before?").

The face is detected, cropped and embedded exactly as ``verify`` and ``identify`` do, then compared
(cosine) with the stored template embeddings of the same model (``Store.faces_like``); faces stored by
another model are not comparable and are left out. Each hit's stored crop is written to
``<crops>/<face_id>.jpg`` (default ``<outputs.dir>/search/``) so it can be looked at.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stream.commands.events import TIME_HELP, format_table
from stream.errors import UserError
from stream.faces.models import Models, largest_face_crop
from stream.faces.still import embed_stack
from stream.store import FaceHit, Store, iso_utc

__all__ = ["SearchHit", "add_parser", "format_hits", "run_search"]


@dataclass(frozen=True)
class SearchHit:
    rank: int
    hit: FaceHit
    crop: Path | None  # where its crop was written

    def to_dict(self) -> dict[str, object]:
        return {"rank": self.rank, **self.hit.to_dict(), "crop": None if self.crop is None else str(self.crop)}


def run_search(
    models: Models,
    store: Store,
    image: Path,
    top: int = 5,
    since: float | None = None,
    until: float | None = None,
    crops_dir: Path | None = None,
) -> list[SearchHit]:
    """The ``top`` stored faces most like the largest face of ``image``, best first.

    ``UserError`` when the image has no face, or when the store holds faces but none of this model.
    """
    if top < 1:
        raise UserError(f"--top: must be >= 1, got {top}")
    crop = largest_face_crop(models, image)
    if crop is None:
        raise UserError(f"{image}: no face found")
    vectors, _ = embed_stack(models.embedder, [crop])
    model_id = models.embedder.model_id
    hits = store.faces_like(vectors[0], model_id, top=top, since=since, until=until)
    if not hits:
        stored = store.face_models()
        if stored and model_id not in stored:
            have = ", ".join(f"{m} ({n})" for m, n in stored.items())
            raise UserError(f"no stored faces of model {model_id}; the store has faces of: {have} (use --model)")
        return []
    return [SearchHit(rank, hit, _write_crop(store, hit, crops_dir)) for rank, hit in enumerate(hits, 1)]


def _write_crop(store: Store, hit: FaceHit, folder: Path | None) -> Path | None:
    if folder is None:
        return None
    data = store.face_crop(hit.face_id)
    if data is None:
        return None
    path = folder / f"{hit.face_id}.jpg"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def format_hits(hits: Sequence[SearchHit], as_json: bool) -> str:
    if as_json:
        return "\n".join(json.dumps(h.to_dict(), ensure_ascii=False) for h in hits)
    if not hits:
        return "no stored faces match"
    header = ("rank", "score", "first seen (UTC)", "last seen (UTC)", "stream", "person", "crop")
    rows = [
        (
            str(h.rank),
            f"{h.hit.score:.3f}",
            iso_utc(h.hit.first_time),
            iso_utc(h.hit.last_time),
            h.hit.stream,
            h.hit.person or (f"({h.hit.stranger})" if h.hit.stranger else "-"),
            "-" if h.crop is None else str(h.crop),
        )
        for h in hits
    ]
    return format_table(header, rows, right=("rank", "score"))


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("search", help="find the stored faces most like the face in an image")
    p.add_argument("image", type=Path, help="image with a face (the largest one is used)")
    p.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="event store: a SQLite file, sqlite:///path or postgresql://... (default: the configured store)",
    )
    p.add_argument("--top", type=int, default=5, help="how many faces (default 5)")
    p.add_argument("--since", default=None, metavar="TIME", help=f"only faces seen from this time on: {TIME_HELP}")
    p.add_argument("--until", default=None, metavar="TIME", help="only faces seen before this time")
    p.add_argument(
        "--crops", type=Path, default=None, help="write the hits' crops here (default: <outputs.dir>/search)"
    )
    p.add_argument("--json", action="store_true", help="JSON lines: rank, score, times, stream, person, crop path")
    return p
