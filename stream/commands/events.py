"""`run.py events`: the stored events, filtered by stream, person, time, kind or run, as a table or JSON lines.

Times on the command line (``--since``, ``--until``; also used by ``search``): ISO 8601
(``2026-12-01T08:00``, ``2026-12-01``; local time unless it ends in ``Z`` or ``+hh:mm``), ``now``,
``today``/``yesterday`` (local midnight), or an age (``90s``, ``30m``, ``2h``, ``7d``, ``2w``: that long
ago). Printed times are UTC, as stored.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo

from stream.errors import UserError
from stream.store import EventQuery, EventRow, Store
from stream.types import EventKind

__all__ = ["add_parser", "event_query", "format_events", "format_table", "parse_time", "run_events"]

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TIME_HELP = (
    "ISO 8601 (2026-12-01T08:00, local time unless it ends in Z or +hh:mm), today, yesterday, or an age (30m, 2h, 7d)"
)


def parse_time(text: str, now: float, tz: tzinfo | None = None, option: str = "time") -> float:
    """A command-line time → Unix seconds (see the module notes); ``tz`` is the local zone (default:
    the machine's). A ``UserError`` names ``option`` when ``text`` is none of the accepted forms."""
    value = text.strip()
    lowered = value.lower()
    local_now = datetime.fromtimestamp(now, tz) if tz is not None else datetime.fromtimestamp(now).astimezone()
    if lowered == "now":
        return now
    if lowered in ("today", "yesterday"):
        day = local_now.date() - timedelta(days=1 if lowered == "yesterday" else 0)
        midnight = datetime(day.year, day.month, day.day)
        return (midnight.replace(tzinfo=tz) if tz is not None else midnight.astimezone()).timestamp()
    age = _AGE.match(value)
    if age:
        return now - float(age[1]) * _UNIT_S[age[2].lower()]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option}: cannot read {text!r} as a time ({TIME_HELP})") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz) if tz is not None else moment.astimezone()
    return moment.timestamp()


def event_query(args: argparse.Namespace, now: float) -> EventQuery:
    """The ``EventQuery`` of the parsed ``events`` options."""
    if args.limit < 1:
        raise UserError(f"--limit: must be >= 1, got {args.limit}")
    if args.offset < 0:
        raise UserError(f"--offset: must be >= 0, got {args.offset}")
    since = None if args.since is None else parse_time(args.since, now, option="--since")
    until = None if args.until is None else parse_time(args.until, now, option="--until")
    try:
        return EventQuery(
            stream=args.stream,
            person=args.person,
            kinds=tuple(args.kind),
            since=since,
            until=until,
            run_id=args.run,
            limit=args.limit,
            offset=args.offset,
            newest_first=not args.oldest_first,
        )
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc).replace("EventQuery.", "--").replace("run_id", "run")) from None


def run_events(store: Store, query: EventQuery) -> list[EventRow]:
    return store.events(query)


def format_events(rows: Sequence[EventRow], as_json: bool) -> str:
    """JSON lines (the journal's fields plus ``id``), or a fixed-width table."""
    if as_json:
        return "\n".join(json.dumps(r.to_dict(), ensure_ascii=False) for r in rows)
    if not rows:
        return "no events"
    header = ("id", "time (UTC)", "pts_s", "stream", "kind", "track", "person", "score", "run")
    body = [
        (
            str(r.id),
            r.time_iso or "-",
            "-" if r.pts_s is None else f"{r.pts_s:.2f}",
            r.stream,
            r.kind,
            "-" if r.track_id is None else f"{r.epoch if r.epoch is not None else '?'}:{r.track_id}",
            r.person or (f"({r.stranger})" if r.stranger else "-"),
            "-" if r.score is None else f"{r.score:.3f}",
            (r.run_id or "-")[:8],
        )
        for r in rows
    ]
    return format_table(header, body, right=("id", "pts_s", "score"))


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[str] = ()) -> str:
    """Columns padded to their widest cell, two spaces apart; ``right`` columns right-aligned."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, header, strict=True)
        ).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("events", help="list stored events: who was seen where and when (newest first)")
    p.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="event store: a SQLite file, sqlite:///path or postgresql://user:password@host/db "
        "(default: the configured store, <outputs.dir>/events.db)",
    )
    p.add_argument("--stream", default=None, help="only this stream")
    p.add_argument("--person", default=None, metavar="NAME|unknown", help="only this person ('unknown': nobody named)")
    p.add_argument("--since", default=None, metavar="TIME", help=f"from this time on: {TIME_HELP}")
    p.add_argument("--until", default=None, metavar="TIME", help="before this time (same forms)")
    p.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        choices=[k.value for k in EventKind],
        help="only this kind (repeatable): " + ", ".join(k.value for k in EventKind),
    )
    p.add_argument("--run", default=None, metavar="RUN_ID", help="only events of this run")
    p.add_argument("--limit", type=int, default=50, help="at most N events (default 50)")
    p.add_argument("--offset", type=int, default=0, help="skip the first N (paging)")
    p.add_argument("--oldest-first", action="store_true", help="oldest first (default: newest first)")
    p.add_argument("--json", action="store_true", help="JSON lines: the journal's fields plus id")
    return p
