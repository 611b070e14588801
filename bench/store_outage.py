"""Event store under outages: a long live run into PostgreSQL with the server restarted mid-run.

    python -m bench.store_outage                   # 10 minutes, 2 restarts (issue 13's acceptance run)
    python -m bench.store_outage --minutes 2 --restarts 1 --down-s 5

The demo clip looped as a 25 fps live camera (``lavfi:...realtime``) runs through the real app with
every output on, writing to a PostgreSQL store (Debian's server, started here in a temporary folder on
a free loopback port: ``scripts/pg_server.py``). At evenly spaced moments the server is stopped for
``--down-s`` seconds and started again. After the run, every event of the JSONL journal must be in
the database (count, and kind/stream/track/person/run/time of each, in order), and the tracks and
faces written. JSON to stdout and ``bench/results/``; exit status 1 when anything is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def run(minutes: float, restarts: int, down_s: float) -> dict[str, Any]:
    from scripts.pg_server import PgServer, find_pg_bin
    from stream.app import RunOptions, build_app
    from stream.config import parse_config
    from stream.demo import prepare_demo
    from stream.faces.models import ModelOverrides

    bin_dir, why = find_pg_bin()
    if bin_dir is None:
        raise SystemExit(why)
    clip, gallery = prepare_demo(REPO / "recordings" / ".demo")
    server = PgServer(bin_dir, durable=True)
    server.start()
    try:
        url = server.create_database("soak")
        with tempfile.TemporaryDirectory(prefix="store-outage-") as tmp:
            work = Path(tmp)
            text = (
                f"profile: cpu\nrecognition:\n  checkpoints_dir: {REPO / 'checkpoints'}\n"
                f"outputs:\n  dir: {work / 'rec'}\n  events_db: {url}\n  annotated_video: false\n"
            )
            config = parse_config(text).resolve_paths(work)
            live = f"lavfi:movie={clip}:loop=0,setpts=N/(25*TB),realtime"
            app = build_app(config, RunOptions(sources=(live,), gallery=gallery), ModelOverrides(device="cpu"))
            thread = threading.Thread(target=app.run, name="app", daemon=True)
            started = time.monotonic()
            thread.start()
            outages = []
            for k in range(restarts):
                _sleep_until(started + (k + 1) * minutes * 60 / (restarts + 1))
                server.stop()
                down_at = time.time()
                time.sleep(down_s)
                server.start()
                outages.append({"down_at": round(down_at, 3), "down_s": round(time.time() - down_at, 1)})
            _sleep_until(started + minutes * 60)
            app.pipeline.stop.set()
            thread.join(120)
            counters = app.writers.recorder.store_counters()
            journal = [json.loads(line) for line in (work / "rec" / "events.jsonl").read_text().splitlines()]
            return _compare(url, journal, outages, counters, minutes)
    finally:
        server.close()


def _compare(url: str, journal: list[dict], outages: list[dict], counters: Any, minutes: float) -> dict[str, Any]:
    from stream.store import EventQuery, open_store
    from stream.store.records import parse_iso_utc

    with open_store(url, create=False) as store:
        stored = sorted(store.events(EventQuery(limit=1_000_000)), key=lambda e: e.id)
        tracks, faces = store.tracks(), store.faces()
    mismatches = [
        i
        for i, (row, line) in enumerate(zip(stored, journal, strict=False))
        if (row.kind, row.stream, row.track_id, row.person, row.run_id)
        != (line["kind"], line["stream"], line["track_id"], line["person"], line["run_id"])
        or row.time is None
        or abs(row.time - parse_iso_utc(line["time"])) > 0.002
    ]
    ended = sum(1 for line in journal if line["kind"] == "track_ended")
    return {
        "date": dt.date.today().isoformat(),
        "minutes": minutes,
        "outages": outages,
        "journal_events": len(journal),
        "stored_events": len(stored),
        "content_mismatches": len(mismatches),
        "tracks_ended": ended,
        "tracks_stored": len(tracks),
        "faces_stored": len(faces),
        "store": None if counters is None else dataclasses.asdict(counters),
        "all_there": len(stored) == len(journal) and not mismatches and len(tracks) == ended,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _sleep_until(moment: float) -> None:
    while (left := moment - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    parser.add_argument("--restarts", type=int, default=2, help="server restarts during the run (default 2)")
    parser.add_argument("--down-s", type=float, default=10.0, help="seconds the server stays down (default 10)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    report = run(args.minutes, args.restarts, args.down_s)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"store-outage-{report['date']}-cpu{os.cpu_count()}-{args.minutes:g}min.json"
        path.write_text(text + "\n")
        print(f"wrote {path}")
    return 0 if report["all_there"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
