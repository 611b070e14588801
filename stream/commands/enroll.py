"""`run.py enroll`: build the gallery's templates and report what was used and what was rejected.

Prints a table per person (photos used, rejected, template quality) and every rejected file with
its reason; ``--json`` prints the same as one machine-readable object. Exit code 2 (UserError) when
the gallery folder is missing or nobody could be enrolled.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from stream.errors import UserError
from stream.faces.models import Models
from stream.identity.gallery import Gallery, Rejection, enroll
from stream.identity.quality import EnrollGates

log = logging.getLogger(__name__)

_EXAMPLES_IN_ERROR = 3


def run_enroll(
    models: Models,
    gallery_dir: Path,
    as_json: bool,
    use_cache: bool = True,
    gates: EnrollGates = EnrollGates(),  # noqa: B008 - frozen, so a shared default is safe
) -> tuple[str, int]:
    """(text to print, exit code 0); raises UserError when nobody could be enrolled."""
    gallery = enroll(gallery_dir, models, gates, use_cache=use_cache, progress=True)
    if not gallery.people:
        raise UserError(_nobody_message(gallery_dir, gallery.rejections))
    report = _report(gallery)
    text = json.dumps(report, indent=2) if as_json else "\n".join(_table(gallery_dir, report))
    return text, 0


def _nobody_message(gallery_dir: Path, rejections: tuple[Rejection, ...]) -> str:
    if not rejections:
        return f"{gallery_dir}: no person folders with photos (put photos in {gallery_dir}/<person>/)"
    for r in rejections:
        log.warning("rejected %s: %s", r.file, r.reason)
    examples = "; ".join(f"{r.file}: {r.reason}" for r in rejections[:_EXAMPLES_IN_ERROR])
    more = f"; … ({len(rejections)} rejected in all)" if len(rejections) > _EXAMPLES_IN_ERROR else ""
    return f"{gallery_dir}: no person could be enrolled ({examples}{more})"


def _report(gallery: Gallery) -> dict[str, Any]:
    """The JSON object: every person folder, enrolled or not, with its rejected files."""
    names = sorted(set(gallery.names) | {r.person for r in gallery.rejections})
    people = []
    for name in names:
        entry = gallery.person(name)
        people.append(
            {
                "person": name,
                "used": len(entry.images) if entry is not None else 0,
                "rejected": [{"file": r.file, "reason": r.reason} for r in gallery.rejections if r.person == name],
                "quality": round(entry.quality, 4) if entry is not None else None,
            }
        )
    return {"model_id": gallery.model_id, "people": people, "rejections_total": len(gallery.rejections)}


def _table(gallery_dir: Path, report: dict[str, Any]) -> list[str]:
    people = report["people"]
    width = max([len("person"), *(len(p["person"]) for p in people)])
    lines = [
        f"gallery {gallery_dir} [{report['model_id']}]",
        f"{'person':<{width}}  {'used':>4}  {'rejected':>8}  {'quality':>7}",
    ]
    for p in people:
        quality = f"{p['quality']:.2f}" if p["quality"] is not None else "-"
        lines.append(f"{p['person']:<{width}}  {p['used']:>4}  {len(p['rejected']):>8}  {quality:>7}")
    enrolled = sum(1 for p in people if p["used"])
    lines.append(f"{enrolled} of {len(people)} people enrolled; {report['rejections_total']} rejected")
    rejected = [r for p in people for r in p["rejected"]]
    if rejected:
        lines.append("rejected:")
        lines += [f"  {r['file']}: {r['reason']}" for r in rejected]
    return lines


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("enroll", help="build the gallery templates from <gallery>/<person>/ photos and report")
    p.add_argument("--gallery", type=Path, default=None, help="gallery folder (default: config gallery.dir)")
    p.add_argument("--json", action="store_true", help="print JSON: model_id, people, rejections_total")
    return p
