"""The web app's costs: identify latency through the API vs the CLI, and what live viewers cost the pipeline.

    python -m bench.web                        # 4 rounds of 15 s phases, cpu profile, 25 fps camera
    python -m bench.web --camera-fps 100       # a camera faster than the pipeline: frames/s = its capacity

One process runs the app as ``run.py serve`` does on the demo (the clip as a looping 25 fps live camera,
its gallery, the annotated video written) with the web app on a free loopback port, then:

1. ``POST /api/identify`` of a 640-px photo (deepface's img1.jpg from ../shared/data, one face, resized;
   the demo gallery's photo when the shared data is absent), ``--identify-calls`` times in a row over
   HTTP while the pipeline runs; then, with the pipeline stopped, ``run.py identify PHOTO --json`` as a
   subprocess (what a tool did before: a new process each time) and ``python -c "import torch"``.
2. Phases of ``--phase-seconds`` each, alternating within the same run: no viewer, ``--viewers``
   MJPEG clients reading ``/streams/demo/live.mjpeg`` as fast as they can, and as many stalled clients
   (connected, never reading), in that order and then backwards (ABBA). Per phase: frames/s processed by the pipeline (the output thread's
   count), frames dropped at the door, the process's CPU seconds per processed frame, frames the view
   published and what the viewers received. The viewer cost is 1 - (frames/s with viewers / without),
   averaged over the rounds.

Wall-clock figures on a shared machine (the 1-minute load average is recorded per phase): compare the
phases of one run, not across days. JSON to stdout and ``bench/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARED_PHOTO = REPO.parent / "shared" / "data" / "deepface" / "tests" / "unit" / "dataset" / "img1.jpg"
STREAM = "demo"


class Viewer(threading.Thread):
    """An MJPEG client: reads as fast as it can (``stalled``: connects and never reads)."""

    def __init__(self, port: int, stop: threading.Event, stalled: bool = False) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.stalled = port, stop, stalled
        self.bytes = 0
        self.frames = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", f"/streams/{STREAM}/live.mjpeg")
            response = conn.getresponse()
            if self.stalled:
                self.stop.wait()
                return
            while not self.stop.is_set():
                chunk = response.read1(65536)
                if not chunk:
                    break
                self.bytes += len(chunk)
                self.frames += chunk.count(b"--frame\r\n")
        except OSError:
            pass
        finally:
            conn.close()


def _photo(workdir: Path, gallery: Path) -> Path:
    import cv2

    from stream.faces.images import read_bgr

    source = SHARED_PHOTO if SHARED_PHOTO.is_file() else sorted(gallery.rglob("*.png"))[0]
    image = read_bgr(source)
    scale = 640 / image.shape[1]
    resized = cv2.resize(image, (640, round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    path = workdir / "photo640.jpg"
    cv2.imwrite(str(path), resized, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def _post_identify(port: int, photo: Path) -> tuple[float, Any]:
    boundary = "bench-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    body = head.encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.request("POST", "/api/identify", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    response = conn.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"identify answered {response.status}: {data[:200]!r}")
    return elapsed, json.loads(data)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process's threads, by group: web (uvicorn's thread and
    the worker threads that encode JPEGs and run the sync routes), output, detect, recognise, ..."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        name = thread.name
        group = "web" if name == "web" or name.startswith("AnyIO worker") else name.split(":")[0]
        out[group] = out.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _phase(name: str, seconds: float, app: Any, view: Any, start: Callable[[], list[Viewer]]) -> dict[str, Any]:
    counters = app.pipeline.counters.streams[STREAM]
    stop_viewers = threading.Event()
    viewers = start()
    for v in viewers:
        v.stop = stop_viewers
        v.start()
    time.sleep(1.0)  # connections open, the tap is on
    frames0, dropped0 = counters.frames_out, app.pipeline.dropped()[STREAM]
    published0, cpu0, t0 = view.frames_published, time.process_time(), time.perf_counter()
    threads0 = _thread_cpu()
    bytes0 = sum(v.bytes for v in viewers)
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    frames = counters.frames_out - frames0
    threads = {k: round((v - threads0.get(k, 0.0)) / elapsed, 3) for k, v in _thread_cpu().items()}
    result = {
        "phase": name,
        "seconds": round(elapsed, 1),
        "fps": round(frames / elapsed, 2),
        "dropped_per_s": round((app.pipeline.dropped()[STREAM] - dropped0) / elapsed, 2),
        "cpu_ms_per_frame": round((time.process_time() - cpu0) * 1000 / max(frames, 1), 2),
        "published_fps": round((view.frames_published - published0) / elapsed, 2),
        "viewers": len(viewers),
        "viewer_mbit_s": round((sum(v.bytes for v in viewers) - bytes0) * 8 / elapsed / 1e6, 2),
        "cpu_s_per_s": {k: v for k, v in sorted(threads.items()) if v > 0},
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    stop_viewers.set()
    for v in viewers:
        v.join(5)
    time.sleep(1.0)  # the server notices the closed connections; the tap closes
    print(json.dumps(result), flush=True)
    return result


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import torch

    from stream.app import RunOptions, build_app, live_demo
    from stream.config import WebConfig, parse_config
    from stream.faces.models import ModelOverrides
    from stream.outputs.live_view import LiveView
    from stream.web.app import create_app
    from stream.web.serve import web_deps
    from stream.web.server import WebServer, bind

    torch.set_num_threads(1)
    text = f"profile: {args.profile}\noutputs:\n  dir: {workdir / 'rec'}\n"
    config = live_demo(parse_config(text).resolve_paths(REPO))
    if args.camera_fps != 25:  # a faster camera than the pipeline can take: its frames/s is its capacity
        stream = config.streams[0]
        url = (stream.url or "").replace("setpts=N/(25*TB)", f"setpts=N/({args.camera_fps:g}*TB)")
        config = config.model_copy(update={"streams": (stream.model_copy(update={"url": url}),)})
    overrides = ModelOverrides(device="cpu")
    web = WebConfig()
    view = LiveView(max_fps=web.live_fps)
    sock = bind("127.0.0.1", 0)
    app = build_app(config, RunOptions(), overrides, view=view)
    started = time.perf_counter()
    deps = web_deps(config, app, view, web, None, overrides, None)
    web_parts_s = time.perf_counter() - started
    server = WebServer(create_app(deps), sock, deps.closing)
    server.start()
    photo = _photo(workdir, config.gallery.dir)
    report: dict[str, Any] = {"web_parts_build_s": round(web_parts_s, 2)}

    def control() -> None:
        try:
            time.sleep(args.warmup)
            calls = [_post_identify(server.port, photo) for _ in range(args.identify_calls)]
            times = sorted(t for t, _ in calls)
            report["identify_api"] = {
                "calls": len(times),
                "ms_p50": round(statistics.median(times) * 1000, 1),
                "ms_max": round(times[-1] * 1000, 1),
                "ms_min": round(times[0] * 1000, 1),
                "faces": calls[-1][1],
                "pipeline_running": True,
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
            print(json.dumps(report["identify_api"]), flush=True)
            reading = lambda: [Viewer(server.port, threading.Event()) for _ in range(args.viewers)]  # noqa: E731
            stalled = lambda: [Viewer(server.port, threading.Event(), True) for _ in range(args.viewers)]  # noqa: E731
            kinds = {"none": list, "reading": reading, "stalled": stalled}
            phases = []
            for round_ in range(args.rounds):
                # ABBA: odd rounds run the phases backwards, so a drift of the machine's load over the run
                # (other work starting or ending) weighs on every kind of phase alike.
                order = ("none", "reading", "stalled") if round_ % 2 == 0 else ("stalled", "reading", "none")
                phases += [_phase(name, args.phase_seconds, app, view, kinds[name]) for name in order]
            report["phases"] = phases
        finally:
            app.pipeline.stop.set()

    controller = threading.Thread(target=control, name="bench-control")
    controller.start()
    try:
        app.run()
    finally:
        controller.join()
        server.stop()
    phases = report.get("phases", [])

    def mean(name: str, key: str) -> float:
        values = [p[key] for p in phases if p["phase"] == name]
        return statistics.fmean(values) if values else float("nan")

    base = mean("none", "fps")
    by_round = [{p["phase"]: p["fps"] for p in phases[i : i + 3]} for i in range(0, len(phases), 3)]
    paired = [r["reading"] / r["none"] for r in by_round if r.get("none") and "reading" in r]

    def web_cpu(name: str) -> float:
        values = [p["cpu_s_per_s"].get("web", 0.0) for p in phases if p["phase"] == name]
        return statistics.fmean(values) if values else float("nan")

    def total_cpu(name: str) -> float:
        values = [sum(p["cpu_s_per_s"].values()) for p in phases if p["phase"] == name]
        return statistics.fmean(values) if values else float("nan")

    report["viewer_cost"] = {
        "ratio_reading_per_round": [round(r, 4) for r in paired],
        "ratio_reading_median": round(statistics.median(paired), 4) if paired else None,
        "web_cpu_s_per_s_reading": round(web_cpu("reading"), 3),
        "web_cpu_s_per_s_none": round(web_cpu("none"), 3),
        "process_cpu_s_per_s_none": round(total_cpu("none"), 3),
        "web_share_of_process_cpu_reading": round(web_cpu("reading") / total_cpu("reading"), 4),
        "fps_none": round(base, 2),
        "fps_reading": round(mean("reading", "fps"), 2),
        "fps_stalled": round(mean("stalled", "fps"), 2),
        "ratio_reading": round(mean("reading", "fps") / base, 4),
        "ratio_stalled": round(mean("stalled", "fps") / base, 4),
        "cost_reading": round(1 - mean("reading", "fps") / base, 4),
        "cpu_ms_per_frame_none": round(mean("none", "cpu_ms_per_frame"), 2),
        "cpu_ms_per_frame_reading": round(mean("reading", "cpu_ms_per_frame"), 2),
    }
    report["identify_cli"] = _cli(photo, config.gallery.dir, workdir, args.profile, args.cli_runs)
    return report


def _cli(photo: Path, gallery: Path, workdir: Path, profile: str, runs: int) -> dict[str, Any]:
    """``run.py identify --json`` as a tool ran it before the API: a new process per photo."""
    cfg = workdir / "cli.yaml"
    cfg.write_text(f"profile: {profile}\noutputs:\n  dir: {workdir / 'rec'}\n")
    times, out = [], ""
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "run.py",
                "identify",
                str(photo),
                "--gallery",
                str(gallery),
                "--json",
                "--config",
                str(cfg),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(time.perf_counter() - started)
        out = done.stdout
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    torch_s = time.perf_counter() - started
    return {
        "runs": len(times),
        "s_min": round(min(times), 2),
        "s_max": round(max(times), 2),
        "import_torch_s": round(torch_s, 2),
        "faces": json.loads(out),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase-seconds", type=float, default=15.0, help="seconds per phase (default 15)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of none/reading/stalled phases (default 4)")
    parser.add_argument("--viewers", type=int, default=3, help="MJPEG clients in a viewer phase (default 3)")
    parser.add_argument("--identify-calls", type=int, default=10, help="POST /api/identify calls (default 10)")
    parser.add_argument("--cli-runs", type=int, default=2, help="run.py identify processes (default 2)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring (default 10)")
    parser.add_argument("--profile", default="cpu", help="config profile (default cpu)")
    parser.add_argument(
        "--camera-fps",
        type=float,
        default=25.0,
        help="the demo camera's frame rate (default 25; 100 saturates the cpu profile)",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="web-bench-") as tmp:
        result = run(args, Path(tmp))
    report = {
        "date": dt.date.today().isoformat(),
        "profile": args.profile,
        "phase_seconds": args.phase_seconds,
        "camera_fps": args.camera_fps,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        **result,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"web-{report['date']}-cpu{os.cpu_count()}-{args.profile}-{args.camera_fps:g}fps.json"
        path.write_text(text + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
