"""How many events/s one PostgreSQL store takes from several app processes writing at once.

    python -m bench.store_writers [--writers 1,2,4,8] [--events 20000] [--json PATH]

Starts Debian's PostgreSQL (fsync on, as in production) in a temporary folder on a loopback port
(``scripts.pg_server``), then for each writer count N starts N processes that open the store with
the app's settings (``stream.store.open_store``, 50 rows a transaction) and write ``--events`` track
events each, all released at the same moment. Reports the total events/s (all rows of all writers over
the wall time from the release to the last writer's close), per writer, and the machine's load.
The capacity model in docs/scaling.md uses these figures. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

WRITER = textwrap.dedent(
    """
    import sys, time
    from stream.store import EventRecord, RunRecord, open_store
    url, run_id, n, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with open_store(url) as store:
        store.begin_run(RunRecord(run_id, time.time(), host="bench"))
        store.flush()
        time.sleep(max(0.0, start_at - time.time()))
        for i in range(n):
            store.add_events([EventRecord(run_id, time.time(), i * 0.04, "cam", "track_started", 0, i)])
        store.end_run(run_id, time.time())
    print(time.time())
    """
)


def measure(url: str, writers: int, events: int) -> dict[str, Any]:
    start_at = time.time() + 3.0 + 0.5 * writers  # every writer connected and waiting before the release
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(uuid.uuid4()), str(events), str(start_at)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(writers)
    ]
    ends = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"a writer failed: {err.strip().splitlines()[-1:]}")
        ends.append(float(out.strip().splitlines()[-1]))
    wall = max(ends) - start_at
    total = writers * events
    return {
        "writers": writers,
        "events": total,
        "wall_s": round(wall, 2),
        "events_per_s": round(total / wall),
        "per_writer_events_per_s": round(events / wall),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_writers", description=__doc__.split("\n")[0])
    parser.add_argument("--writers", default="1,2,4,8", help="writer process counts, comma-separated")
    parser.add_argument("--events", type=int, default=20_000, help="events each writer writes")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    from scripts.pg_server import PgServer, find_pg_bin

    bin_dir, why = find_pg_bin()
    if bin_dir is None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    server = PgServer(bin_dir, durable=True)
    server.start()
    try:
        rows = []
        for n in (int(x) for x in args.writers.split(",")):
            url = server.create_database(f"writers{n}")
            rows.append(measure(url, n, args.events))
            print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        server.close()
    result = {
        "date": dt.date.today().isoformat(),
        "backend": "postgresql (Debian, fsync on, loopback)",
        "batching": "50 rows a transaction (the app's default)",
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "rows": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
