"""`run.py unknowns`, `name`, `not-this`, `rematch`: the library's review of stored faces from the shell.

- ``unknowns [--since TIME] [--json] [--crops DIR]``: the unnamed faces grouped by person, newest first:
  id, faces, first and last seen, streams, and each group's best crops (those that pass the enrolment
  gates) written to ``<outputs.dir>/unknowns/<face_id>.jpg`` with their size and blur.
- ``name GROUP PERSON``: name a group (a new or existing person): its faces, tracks and events are
  relabelled and its best gated crops go into ``<gallery>/<PERSON>/``.
- ``not-this EVENT``: the identity event named the wrong person (ids from ``run.py events``): the
  track's template becomes an impostor example of that person and the track is relabelled unknown.
- ``rematch [--since TIME] [--dry-run] [--json]``: decide every stored face again with the current
  gallery (no video needed) and report (and, without ``--dry-run``, relabel) what changed.

They all work on the configured gallery and store (``--gallery``, ``--db`` to choose others) through
``stream.identity.library.Library``; models are built only when a change needs enrolling.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from stream.commands.events import TIME_HELP, format_table
from stream.config import AppConfig
from stream.errors import UserError
from stream.faces.models import Models
from stream.identity.library import Correction, Library, Naming, RematchReport, UnknownsView
from stream.store import iso_utc, open_store

__all__ = [
    "add_parsers",
    "format_correction",
    "format_naming",
    "format_rematch",
    "format_unknowns",
    "review_library",
    "write_crops",
]


def review_library(config: AppConfig, models: Callable[[], Models], gallery: Path | None, db: str | None) -> Library:
    """The library of a command: the configured gallery and store (or those given); the store must exist."""
    from stream.store import configured_store_url

    url = db or configured_store_url(config)
    return Library(
        gallery or config.gallery.dir,
        config,
        models=models,
        store=lambda: open_store(url, create=False),
    )


def write_crops(library: Library, view: UnknownsView, folder: Path) -> dict[int, Path]:
    """Write every shown crop to ``<folder>/<face_id>.jpg``; face id → path."""
    paths = {}
    for group in view.groups:
        for crop in group.crops:
            path = folder / f"{crop.face_id}.jpg"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path.write_bytes(library.face_crop(crop.face_id))
            except OSError as exc:
                raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
            paths[crop.face_id] = path
    return paths


def format_unknowns(view: UnknownsView, crops: dict[int, Path], as_json: bool) -> str:
    if as_json:
        data = view.to_dict()
        for group in data["groups"]:
            for crop in group["crops"]:
                path = crops.get(crop["face_id"])
                crop["path"] = None if path is None else str(path)
        return json.dumps(data, ensure_ascii=False)
    notes = []
    if view.hidden:
        notes.append(f"{view.hidden} faces like an ignored group not shown")
    if view.limited:
        notes.append(f"only the newest {view.faces + view.hidden} unnamed faces were grouped")
    groups = f"{len(view.groups)} group{'' if len(view.groups) == 1 else 's'}"
    head = f"{groups} of unknown faces [{view.model_id}, threshold {view.threshold:.3f}]"
    lines = [head + (f" ({'; '.join(notes)})" if notes else "")]
    if not view.groups:
        return lines[0]
    header = ("group", "faces", "first seen (UTC)", "last seen (UTC)", "streams", "offered")
    rows = [
        (str(g.id), str(g.count), iso_utc(g.first_seen), iso_utc(g.last_seen), _streams(g.streams), str(g.offered))
        for g in view.groups
    ]
    lines.append(format_table(header, rows, right=("group", "faces", "offered")))
    for group in view.groups:
        if group.crops:
            lines.append(f"group {group.id}:")
        for crop in group.crops:
            where = crops.get(crop.face_id)
            lines.append(
                f"  {where or crop.face_id}  {crop.face_px or 0:.0f} px  blur {crop.blur or 0:.0f}  "
                f"quality {crop.quality:.2f}"
            )
    return "\n".join(lines)


def _streams(streams: tuple[str, ...], shown: int = 3) -> str:
    more = len(streams) - shown
    return ",".join(streams[:shown]) + (f" +{more}" if more > 0 else "")


def format_naming(naming: Naming, as_json: bool) -> str:
    if as_json:
        return json.dumps(naming.to_dict(), ensure_ascii=False)
    used = sum(p.status == "used" for p in naming.photos)
    lines = [
        f"group {naming.group} is {naming.person.name}: {naming.faces} faces, {naming.relabelled.tracks} tracks and "
        f"{naming.relabelled.events} events relabelled; {len(naming.photos)} crops added to the gallery, {used} used"
    ]
    lines += [f"  {p.file}: {p.reason}" for p in naming.photos if p.status != "used"]
    if not naming.photos:
        lines.append("  (no crop passed the enrolment gates: add photos of them to make them known)")
    return "\n".join(lines)


def format_correction(correction: Correction, as_json: bool) -> str:
    if as_json:
        return json.dumps(correction.to_dict(), ensure_ascii=False)
    c = correction
    return (
        f"event {c.event_id}: track {c.stream}:{c.epoch}:{c.track_id} is not {c.person}; its face {c.face_id} is kept "
        f"as an impostor example ({c.relabelled.events} events relabelled unknown)"
    )


def format_rematch(report: RematchReport, as_json: bool) -> str:
    if as_json:
        return json.dumps(report.to_dict(), ensure_ascii=False)
    verb = "relabelled" if report.applied else "would change (dry run)"
    lines = [
        f"{report.checked} stored faces checked against the gallery [{report.model_id}]: {len(report.changes)} "
        f"{verb}; {report.kept_user_labels} named by a person left as they are"
    ]
    if report.changes:
        header = ("face", "last seen (UTC)", "stream", "track", "before", "after", "score")
        rows = [
            (
                str(c.face_id),
                iso_utc(c.last_time),
                c.stream,
                f"{c.epoch}:{c.track_id}",
                c.before or "-",
                c.after or "-",
                f"{c.score:.3f}",
            )
            for c in report.changes
        ]
        lines.append(format_table(header, rows, right=("face", "score")))
    return "\n".join(lines)


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, argparse.ArgumentParser]:
    """The four subcommands' parsers (the caller adds --config, the model options and the handlers)."""
    parsers = {
        "unknowns": sub.add_parser("unknowns", help="list the unnamed stored faces grouped by person"),
        "name": sub.add_parser("name", help="name a group of unknown faces (it joins the gallery)"),
        "not-this": sub.add_parser("not-this", help="an identity event named the wrong person: correct it"),
        "rematch": sub.add_parser("rematch", help="decide every stored face again with the current gallery"),
    }
    p = parsers["unknowns"]
    p.add_argument("--since", default=None, metavar="TIME", help=f"only groups seen from this time on: {TIME_HELP}")
    p.add_argument("--crops", type=Path, default=None, help="write the crops here (default: <outputs.dir>/unknowns)")
    p = parsers["name"]
    p.add_argument("group", type=int, help="the group's id (run.py unknowns)")
    p.add_argument("person", help="a new or existing person's name")
    parsers["not-this"].add_argument("event", type=int, help="the identity event's id (run.py events)")
    p = parsers["rematch"]
    p.add_argument("--since", default=None, metavar="TIME", help=f"only faces seen from this time on: {TIME_HELP}")
    p.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    for p in parsers.values():
        p.add_argument("--gallery", type=Path, default=None, help="gallery folder (default: config gallery.dir)")
        p.add_argument(
            "--db",
            default=None,
            metavar="URL",
            help="event store: a SQLite file, sqlite:///path or postgresql://... (default: the configured store)",
        )
        p.add_argument("--json", action="store_true", help="print JSON (the REST shape)")
    return parsers
