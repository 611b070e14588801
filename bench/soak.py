"""Soak test: run the app on an endless looped clip and watch memory and threads.

    python -m bench.soak --minutes 30            # the release check
    python -m bench.soak --minutes 2 --json out.json   # the CI variant

The source is the built-in demo clip looped forever by FFmpeg as a live stream
(``lavfi:movie=CLIP:loop=0,setpts=N/(25*TB),realtime`` — a 25 fps "camera" that replays the
clip, so tracks start, get named and end over and over). Every output is on (annotated video,
events JSONL + SQLite, snapshots) in a temporary folder that is deleted afterwards.

The app runs in this process (``build_app`` + a thread running ``App.run``); the main thread
samples this process's RSS (psutil) and Python thread count every ``--interval`` seconds and
prints one JSON object: the series, ``rss_growth_mb`` = RSS(end) − RSS(after 20 % of the run,
the warm-up: models loaded, allocator pools, encoder buffers), and the thread counts after warm-up.
Each RSS(t) is the median of the samples in a window of 20 % of the run (RSS(end): the last 20 %,
RSS(warm): 20–40 %), sampled every second: one sample swings ±30 MB with the tensors in flight at
that instant (a CI run once failed on 3-sample windows: 13 MB of pure noise).

RSS is what the OS charges the process, read before each sample's glibc ``malloc_trim(0)``. The
trim keeps the warm-up short: untrimmed, glibc's per-thread arenas grow for about a minute on a CPU
run (MTCNN's tensors change shape every frame) before RSS goes flat, which a 2-minute run cannot
tell from a leak. A leak raises RSS with or without the trim. The RSS right after the trim is
reported too (``rss_trimmed_mb``, ``rss_trimmed_growth_mb``); it is no leak signal: it creeps up
toward RSS as the arenas fragment (+11 MB in 2 minutes while RSS fell 3 MB).

Exit status: 0 when growth ≤ the bound and the thread count after warm-up is flat (max − min ≤ 0),
1 otherwise. The bound is 50 MB per 30 minutes scaled by the duration, but never below 10 MB
(allocator noise on a short run is a few MB): ``max(10, 50 · minutes / 30)`` MB — 10 MB for the
2-minute CI run, 50 MB for 30 minutes. ``--max-growth-mb`` overrides it.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
WARMUP_FRACTION = 0.2
WINDOW_FRACTION = 0.2  # RSS at a time = the median of the samples in 20 % of the run from there
BOUND_MB_PER_30_MIN = 50.0
MIN_BOUND_MB = 10.0


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)`` (a no-op elsewhere): hand freed heap pages back to the OS."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0) and None


def growth_bound_mb(minutes: float) -> float:
    return max(MIN_BOUND_MB, BOUND_MB_PER_30_MIN * minutes / 30.0)


def _config(workdir: Path, config_path: Path | None):
    from stream.cli import read_config

    config = read_config(config_path if config_path is not None else (REPO / "config.yaml"))
    outputs = config.outputs.model_copy(update={"dir": workdir / "rec"})
    return config.model_copy(update={"outputs": outputs, "streams": ()})


def _model_args(device: str) -> argparse.Namespace:
    return argparse.Namespace(
        model=None, arch=None, checkpoint=None, device=device, batch_size=None, strict_model=False
    )


def soak(minutes: float, interval_s: float, config_path: Path | None = None, device: str = "cpu") -> dict:
    from stream.app import RunOptions, build_app
    from stream.demo import prepare_demo

    proc = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(tmp)
        clip, gallery = prepare_demo(REPO / "recordings" / ".demo")
        url = f"lavfi:movie={clip}:loop=0,setpts=N/(25*TB),realtime"
        config = _config(workdir, config_path)
        options = RunOptions(sources=(url,), gallery=gallery, output=workdir / "soak.mp4")
        app = build_app(config, options, _model_args(device))
        result: dict = {}

        def run() -> None:
            try:
                result["summary"] = json.loads(app.run().to_json())
            except BaseException as exc:  # reported, and fails the soak
                result["error"] = f"{type(exc).__name__}: {exc}"

        runner = threading.Thread(target=run, name="soak-app", daemon=True)
        started = time.monotonic()
        runner.start()
        samples: list[dict] = []
        trim = _malloc_trim()
        duration = minutes * 60.0
        while True:
            elapsed = time.monotonic() - started
            raw = proc.memory_info().rss
            trim()
            samples.append(
                {
                    "t_s": round(elapsed, 1),
                    "rss_mb": round(raw / 2**20, 1),
                    "rss_trimmed_mb": round(proc.memory_info().rss / 2**20, 1),
                    "threads": threading.active_count(),
                    "frames_out": sum(c.frames_out for c in app.pipeline.counters.streams.values()),
                }
            )
            if elapsed >= duration or not runner.is_alive():
                break
            time.sleep(min(interval_s, max(0.0, duration - elapsed)))
        app.pipeline.stop.set()
        runner.join(timeout=15)
        threads_left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    return _report(minutes, samples, result, threads_left, runner.is_alive())


def _window_median(samples: list[dict], key: str, start: float, end: float) -> float:
    """The median of ``key`` over samples with start ≤ t ≤ end (the nearest sample if none)."""
    inside = [s[key] for s in samples if start <= s["t_s"] <= end]
    if not inside:
        inside = [min(samples, key=lambda s: abs(s["t_s"] - start))[key]]
    return float(statistics.median(inside))


def _report(minutes: float, samples: list[dict], result: dict, threads_left: list[str], hung: bool) -> dict:
    total = samples[-1]["t_s"]
    warm_t = WARMUP_FRACTION * total
    after = [s for s in samples if s["t_s"] >= warm_t]

    def growth(key: str) -> tuple[float, float, float]:
        warm = _window_median(samples, key, warm_t, warm_t + WINDOW_FRACTION * total)
        end = _window_median(samples, key, total - WINDOW_FRACTION * total, total)
        return round(warm, 1), round(end, 1), round(end - warm, 1)

    warm, end, grown = growth("rss_mb")
    threads = [s["threads"] for s in after]
    return {
        "minutes": minutes,
        "samples": samples,
        "rss_warm_mb": warm,
        "rss_end_mb": end,
        "rss_peak_mb": max(s["rss_mb"] for s in samples),
        "rss_growth_mb": grown,
        "rss_trimmed_growth_mb": growth("rss_trimmed_mb")[2],
        "growth_bound_mb": growth_bound_mb(minutes),
        "threads_min": min(threads),
        "threads_max": max(threads),
        "threads_left_after_stop": threads_left,
        "frames_out": samples[-1]["frames_out"],
        "summary": result.get("summary"),
        "error": result.get("error") or ("app did not stop within 15 s" if hung else None),
    }


def passed(report: dict, max_growth_mb: float | None = None) -> bool:
    bound = report["growth_bound_mb"] if max_growth_mb is None else max_growth_mb
    return (
        report["error"] is None
        and report["rss_growth_mb"] <= bound
        and report["threads_max"] == report["threads_min"]
        and report["frames_out"] > 0
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="run length (default 30)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--config", type=Path, default=None, help="config file (default: the repo's config.yaml)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--max-growth-mb", type=float, default=None, help="override the scaled growth bound")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if not args.minutes > 0 or not args.interval > 0:
        parser.error("--minutes and --interval must be > 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    report = soak(args.minutes, args.interval, args.config, args.device)
    ok = passed(report, args.max_growth_mb)
    report["passed"] = ok
    text = json.dumps(report, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
