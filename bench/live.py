"""Live latency: frame-to-output latency of live sources, embedding on the frame path vs off it.

    python -m bench.live                      # 60 s per run, the demo clip as a 25 fps camera
    python -m bench.live --seconds 30 --profile cpu --streams 1 2

The source is the built-in demo clip looped by FFmpeg as a live camera
(``lavfi:movie=CLIP:loop=0,setpts=N/(25*TB),realtime``) with the demo gallery (eileen_collins).
Each configuration runs the real app in this process, one after the other on the same machine:

- ``sync``: the recognition thread embeds the best-shot crops itself (what files do), so the frames
  of a batch wait for the embeddings;
- ``off_path``: the live default, crops go to the embed thread and frames go on at once.

Per run: frames in / processed / dropped per stream and frames/s processed, frame-to-output latency
p50/p95/max (capture to written, per frame), the names given, and the per-stage latency p50/p95
(detect, track, embed, output) read from the app's Prometheus histograms the way
``histogram_quantile`` does (linear within a bucket, so they are as coarse as the buckets). The
machine's load average is recorded: these are wall-clock figures on a shared machine, so compare
runs of one invocation, not across days. JSON to stdout and ``bench/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
STAGES = ("detect", "track", "embed", "output", "frame_to_output")


def run_once(profile: str, streams: int, seconds: float, off_path: bool, workdir: Path) -> dict[str, Any]:
    import numpy as np

    from stream.app import RunOptions, build_app
    from stream.config import parse_config
    from stream.demo import prepare_demo
    from stream.faces.models import ModelOverrides

    clip, gallery = prepare_demo(REPO / "recordings" / ".demo")
    url = f"lavfi:movie={clip}:loop=0,setpts=N/(25*TB),realtime"
    text = f"profile: {profile}\noutputs:\n  dir: {workdir / 'rec'}\n"
    config = parse_config(text).resolve_paths(REPO)
    options = RunOptions(
        sources=(url,) * streams,
        gallery=gallery,
        output=workdir / ("out.mp4" if streams == 1 else "out"),
        max_frames=round(seconds * 25),
    )
    app = build_app(config, options, ModelOverrides(device="cpu"), embed_off_path=off_path)
    started = time.perf_counter()
    summary = app.run()
    wall = time.perf_counter() - started
    names = sorted({p for p in summary.identities.values() if p})
    per_stream = {}
    for name, s in summary.per_stream.items():
        lat = np.array(app.writers.latencies(name)) * 1000.0
        per_stream[name] = {
            "frames_in": s.frames_in,
            "processed": s.frames_processed,
            "dropped": s.frames_dropped,
            "fps_processed": round(s.frames_processed / wall, 2),
            "latency_ms": _percentiles(lat),
        }
    return {
        "embedding": "off_path" if off_path else "sync",
        "streams": streams,
        "wall_s": round(wall, 1),
        "names": names,
        "per_stream": per_stream,
        "stage_ms": _stage_quantiles(app.writers.metrics.registry),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _percentiles(values: Any) -> dict[str, float | None]:
    import numpy as np

    if len(values) == 0:
        return {"p50": None, "p95": None, "max": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "max": round(float(values.max()), 1)}


def _stage_quantiles(registry: Any) -> dict[str, dict[str, float | None]]:
    """p50/p95 per stage from the ``stage_latency_seconds`` histogram buckets (ms)."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    for metric in registry.collect():
        if metric.name != "stage_latency_seconds":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                buckets.setdefault(sample.labels["stage"], []).append((float(sample.labels["le"]), sample.value))
    return {
        stage: {q: _quantile(sorted(buckets[stage]), p) for q, p in (("p50", 0.5), ("p95", 0.95))}
        for stage in STAGES
        if stage in buckets
    }


def _quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    total = cumulative[-1][1]
    if total == 0:
        return None
    rank = q * total
    low_bound, low_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return round(low_bound * 1000.0, 1)
            share = (rank - low_count) / max(count - low_count, 1e-9)
            return round((low_bound + (bound - low_bound) * share) * 1000.0, 1)
        low_bound, low_count = bound, count
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="camera seconds per run (default 60)")
    parser.add_argument("--profile", default="cpu", help="config profile (default cpu)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2], help="stream counts to run (default 1 2)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    runs = []
    with tempfile.TemporaryDirectory(prefix="live-") as tmp:
        for streams in args.streams:
            for off_path in (False, True):
                workdir = Path(tmp) / f"{streams}-{off_path}"
                runs.append(run_once(args.profile, streams, args.seconds, off_path, workdir))
                print(json.dumps(runs[-1]), flush=True)
    report = {
        "date": dt.date.today().isoformat(),
        "profile": args.profile,
        "seconds_per_run": args.seconds,
        "cpu_count": os.cpu_count(),
        "runs": runs,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        streams = "-".join(str(s) for s in args.streams)
        path = RESULTS / f"live-{report['date']}-cpu{os.cpu_count()}-{args.profile}-streams{streams}.json"
        path.write_text(text + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
