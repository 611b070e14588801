"""End-to-end speed of the app pipeline against the naive loop, on the same clip, in one process.

    python -m bench [--clip 720p|demo|otb-david|PATH] [--max-frames N] [--profile auto|cpu|gpu|default|cpu-before]
                    [--versus PROFILE [--rounds N]] [--no-naive]
                    [--streams N] [--gallery DIR] [--config YAML] [--json PATH] [--readme]

Pipeline: the real app (``stream.app.build_app(...).run()``) with the chosen profile, writing the
annotated mp4, events and snapshots into a temporary folder (no display). ``--streams N`` feeds the
clip as N parallel streams (cross-stream batching).

Naive baseline: stock facenet-pytorch ``MTCNN.detect`` on every full frame (min face 20), then align
(``crop_faces``), embed and match every face, one frame after another; same embedder and gallery
as the pipeline. Both sides process the first ``--max-frames`` frames of the clip.

Clips (``--clip``; every frame of it unless ``--max-frames``):

- ``720p`` (default): facenet-pytorch's examples/video.mp4 (1080p25, 105 frames of a crowded
  arcade, nobody known) resized to 1280x720 at run time: the speed figure.
- ``demo``: the built-in demo clip (960x540, 150 frames) with its gallery: names kept?
- ``otb-david``: OTB David (471 JPEG frames, 320x240) with "david" enrolled from 5 frames of
  0300-0330 (as tests/test_otb_david.py): names kept?
- any video file or image folder (``--gallery`` for names).

A/B: ``--versus PROFILE`` also runs the pipeline with another profile on the same clip, in the same
process, alternating the two ``--rounds`` times (the machine's load drifts; compare within a run):
``versus`` holds both medians, their ``fps_ratio``, the process CPU seconds of each side and their
``cpu_ratio`` (less sensitive to other jobs' load than frames/s), and every round with the 1-minute
load average before it. ``cpu-before`` is the cpu profile and tracker before issue 12. ``--no-naive`` skips the
naive loop.

``identities_kept`` says whether the pipeline named every person the naive loop named.
Prints one JSON object (keys ``pipeline_fps``, ``naive_fps``, ``speedup`` among others) and saves it
as bench/results/pipeline-<date>-<machine>-<profile>-<clip>[-x<streams>].json; ``--readme`` rewrites
README.md's performance table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import yaml

from stream.config import AppConfig
from stream.faces.embedder import Embedder
from stream.faces.models import FaceDetector, ModelOverrides, Models, build_models
from stream.types import FaceDetections

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ADAFACE_SHARED_DATA", REPO.parent / "shared" / "data"))
SOURCE_1080P = SHARED / "facenet-pytorch/examples/video.mp4"
DAVID_FRAMES = SHARED / "otb-david/demo/David/img"
DAVID_ENROLL = ("0300", "0308", "0315", "0322", "0330")  # as tests/test_otb_david.py
NAMED_CLIPS = ("720p", "demo", "otb-david")
PROFILE_CHOICES = ["auto", "default", "cpu", "gpu", "cpu-before"]
RESULTS = REPO / "bench/results"
README = REPO / "README.md"
PERF_START, PERF_END = "<!-- perf:start -->", "<!-- perf:end -->"
MODEL_OVERRIDES = ModelOverrides()


# ---------------------------------------------------------------- measuring helpers


class PeakRss:
    """Samples the process RSS every ``period_s`` in a thread; ``peak_mb`` after ``stop``."""

    def __init__(self, period_s: float = 0.05) -> None:
        self._proc = psutil.Process()
        self._period = period_s
        self._stop = threading.Event()
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


@dataclass
class StageClock:
    """Seconds and items counted by a wrapped stage function (one thread calls each)."""

    seconds: float = 0.0
    calls: int = 0
    items: int = 0

    def reset(self) -> None:
        self.seconds, self.calls, self.items = 0.0, 0, 0

    def wrap(self, fn: Callable[..., Any], count: Callable[[Any], int]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            self.items += count(out)
            return out

        return timed


class TimedDetector:
    """A ``FaceDetector`` that counts the time and faces of the detector it wraps (full detections
    into ``clock``, re-finding known faces between them into ``refine_clock``)."""

    def __init__(self, inner: FaceDetector, clock: StageClock, refine_clock: StageClock | None = None) -> None:
        self._inner = inner
        self._detect = clock.wrap(inner.detect, _faces_in_batch)
        self._refine = (refine_clock or StageClock()).wrap(inner.refine, _faces_in_batch)

    @property
    def batch_fallbacks(self) -> int:
        return self._inner.batch_fallbacks

    def detect(self, frames: Sequence[np.ndarray]) -> list[FaceDetections]:
        out: list[FaceDetections] = self._detect(frames)
        return out

    def detect_one(self, image: np.ndarray) -> FaceDetections:
        return self._inner.detect_one(image)

    def refine(self, frames: Sequence[np.ndarray], known: Sequence[FaceDetections]) -> list[FaceDetections]:
        out: list[FaceDetections] = self._refine(frames, known)
        return out


class TimedEmbedder:
    """An ``Embedder`` that counts the time and crops of the embedder it wraps."""

    def __init__(self, inner: Embedder, clock: StageClock) -> None:
        self.crop_size, self.crop_kind, self.model_id = inner.crop_size, inner.crop_kind, inner.model_id
        self._embed = clock.wrap(inner.embed, _rows)

    def embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out: tuple[np.ndarray, np.ndarray] = self._embed(crops)
        return out


@dataclass
class Clocks:
    detect: StageClock = field(default_factory=StageClock)
    refine: StageClock = field(default_factory=StageClock)
    embed: StageClock = field(default_factory=StageClock)


def timed_models(config: AppConfig, clocks: Clocks) -> Models:
    """The app's detector and embedder, wrapped to count their time into ``clocks``."""
    models = build_models(config, MODEL_OVERRIDES)
    return Models(
        TimedDetector(models.detector, clocks.detect, clocks.refine),
        TimedEmbedder(models.embedder, clocks.embed),
        models.batch_size,
        models.still_detector,
    )


def _faces_in_batch(out: list[Any]) -> int:
    return sum(len(d) for d in out)


def _rows(out: tuple[np.ndarray, np.ndarray]) -> int:
    return len(out[0])


def _percentiles_ms(latencies_s: list[float]) -> tuple[float | None, float | None]:
    if not latencies_s:
        return None, None
    p50, p95 = np.percentile(np.asarray(latencies_s), [50, 95]) * 1000.0
    return round(float(p50), 1), round(float(p95), 1)


def _cuda_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak_mb() -> float | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


# ---------------------------------------------------------------- inputs


def make_720p_clip(folder: Path, source: Path = SOURCE_1080P, max_frames: int | None = None) -> Path:
    """``source`` resized to 1280x720 H.264 (libx264, same frame rate) as ``folder``/clip720p.mp4."""
    import av

    if not source.is_file():
        raise SystemExit(f"error: {source} not found: pass --clip PATH")
    out_path = folder / "clip720p.mp4"
    with av.open(str(source)) as src, av.open(str(out_path), "w") as dst:
        in_stream = src.streams.video[0]
        rate = in_stream.average_rate or 25
        out_stream = dst.add_stream("libx264", rate=rate)
        out_stream.width, out_stream.height, out_stream.pix_fmt = 1280, 720, "yuv420p"
        out_stream.options = {"crf": "18", "preset": "veryfast"}
        for n, frame in enumerate(src.decode(in_stream)):
            if max_frames is not None and n >= max_frames:
                break
            small = frame.reformat(width=1280, height=720, format="yuv420p")
            small.pts, small.time_base = n, 1 / Fraction(rate)
            dst.mux(out_stream.encode(small))
        dst.mux(out_stream.encode(None))
    return out_path


def stream_copies(clip: Path, count: int, folder: Path) -> tuple[str, ...]:
    """``count`` differently named links to ``clip`` (stream names come from file names)."""
    if count == 1:
        return (str(clip),)
    links = []
    for i in range(count):
        link = folder / f"s{i:02d}{clip.suffix}"
        link.symlink_to(clip.resolve(), target_is_directory=clip.is_dir())
        links.append(str(link))
    return tuple(links)


@dataclass(frozen=True)
class Clip:
    path: Path
    name: str
    gallery: Path | None
    description: str


def resolve_clip(clip: str | None, gallery: Path | None, folder: Path, max_frames: int | None) -> Clip:
    """The clip to run (a named one, made or linked in ``folder``, or a path) and its gallery."""
    name = clip or "720p"
    if name == "720p":
        limit = None if max_frames is None else max_frames + 1
        path = make_720p_clip(folder, max_frames=limit)
        return Clip(path, "video.mp4@720p", gallery, f"{SOURCE_1080P} (resized to 1280x720)")
    if name == "demo":
        from stream.demo import prepare_demo

        path, demo_gallery = prepare_demo(REPO / "recordings" / ".demo")
        return Clip(path, "demo", gallery or demo_gallery, f"{path} (built-in demo)")
    if name == "otb-david":
        if not DAVID_FRAMES.is_dir():
            raise SystemExit(f"error: {DAVID_FRAMES} not found: pass --clip PATH")
        if gallery is None:
            gallery = folder / "david-gallery"
            (gallery / "david").mkdir(parents=True)
            for stem in DAVID_ENROLL:
                (gallery / "david" / f"{stem}.jpg").symlink_to(DAVID_FRAMES / f"{stem}.jpg")
        return Clip(DAVID_FRAMES, "otb-david", gallery, f"{DAVID_FRAMES} (david enrolled from 5 frames)")
    path = Path(name)
    if not path.exists():
        raise SystemExit(f"error: --clip {name}: no such file or folder (or one of {', '.join(NAMED_CLIPS)})")
    return Clip(path, path.name, gallery, str(path))


def bench_config(profile: str, base: Path | None, out_dir: Path) -> Any:
    """The config the bench runs: ``base`` (or built-in defaults) with ``profile`` and a temp output dir.

    ``cpu-before`` is the cpu profile and tracker before issue 12 (``bench.baseline.BEFORE_CPU``)
    under the keys ``base`` sets."""
    from bench.baseline import BEFORE_CPU
    from stream.config import parse_config

    data: dict[str, Any] = {}
    root = Path.cwd()
    if base is not None:
        data = yaml.safe_load(base.read_text()) or {}
        root = base.resolve().parent
    if profile == "cpu-before":
        before = yaml.safe_load(BEFORE_CPU)
        for section, values in before.items():
            data[section] = {**values, **data.get(section, {})} if isinstance(values, dict) else values
        profile = before["profile"]
    data["profile"] = profile
    data["streams"] = []
    outputs = data.setdefault("outputs", {})
    outputs.update(dir=str(out_dir), display=False)
    return parse_config(yaml.safe_dump(data), source=f"bench profile {profile}").resolve_paths(root)


def set_threads(count: int) -> int:
    """As ``run.py`` does: 0 means half the cores, at least 1."""
    threads = count or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    return threads


# ---------------------------------------------------------------- the two sides


def run_pipeline(config: Any, sources: tuple[str, ...], gallery: Path | None, max_frames: int | None) -> dict[str, Any]:
    from stream.app import RunOptions, build_app

    threads = set_threads(config.runtime.torch_threads)
    clocks = Clocks()
    options = RunOptions(sources=sources, gallery=gallery, max_frames=max_frames)
    app = build_app(config, options, models=timed_models(config, clocks))
    clocks.embed.reset()  # forget gallery enrollment (the wrapper keeps this object)
    _cuda_reset()
    with PeakRss() as rss:
        start, cpu_start = time.perf_counter(), time.process_time()
        summary = app.run()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    det = config.detection
    return {
        "fps": _rate(summary.frames_processed, wall),
        "frames": summary.frames_processed,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_frame": round(1000 * cpu / summary.frames_processed, 1) if summary.frames_processed else None,
        "detections": clocks.detect.items,
        "detections_per_s": _rate(clocks.detect.items, wall),
        "detector_calls": clocks.detect.calls,
        "refine_calls": clocks.refine.calls,
        "embeddings": clocks.embed.items,
        "embeddings_per_s": _rate(clocks.embed.items, wall),
        "stage_s": {
            "detect": round(clocks.detect.seconds, 2),
            "refine": round(clocks.refine.seconds, 2),
            "embed": round(clocks.embed.seconds, 2),
        },
        "latency_p50_ms": summary.latency_p50_ms and round(summary.latency_p50_ms, 1),
        "latency_p95_ms": summary.latency_p95_ms and round(summary.latency_p95_ms, 1),
        "tracks": summary.tracks,
        "identities": sorted({v for v in summary.identities.values() if v}),
        "rss_peak_mb": rss.peak_mb,
        "cuda_peak_mb": _cuda_peak_mb(),
        "torch_threads": threads,
        "settings": {
            "detect_width": det.detect_width,
            "every_n_frames": det.every_n_frames,
            "refine_between": det.refine_between,
            "min_face_px": det.min_face_px,
            "max_batch": det.max_batch,
            "precision": config.recognition.precision,
            "embed_batch": config.recognition.batch_size,
        },
    }


def run_naive(config: Any, clip: Path, gallery: Path | None, max_frames: int | None) -> dict[str, Any]:
    """Stock MTCNN.detect on every full frame, align + embed + match every face, sequentially."""
    from facenet_pytorch import MTCNN

    from stream.app import build_matcher
    from stream.config import StreamConfig
    from stream.faces.embedder import resolve_device
    from stream.faces.still import crop_faces
    from stream.sources import open_source

    threads = set_threads(config.runtime.torch_threads)
    models = build_models(config, MODEL_OVERRIDES)
    matcher = build_matcher(models, config, gallery or config.gallery.dir)
    mtcnn = MTCNN(device=resolve_device(config.detection.device))
    source = open_source(StreamConfig(name="naive", path=clip.resolve(), mode="file"))
    clocks, latencies, names = Clocks(), [], set[str]()
    detect = clocks.detect.wrap(lambda rgb: _stock_detect(mtcnn, rgb), len)
    embed = clocks.embed.wrap(models.embedder.embed, _rows)
    warm = [False]

    def frame_done(frame: Any) -> bool:
        if not warm[0]:  # warm-up on the first frame, untimed (the pipeline warms up at build)
            _stock_detect(mtcnn, np.ascontiguousarray(frame.image[..., ::-1]))
            warm[0] = True
        start = time.perf_counter()
        faces = detect(np.ascontiguousarray(frame.image[..., ::-1]))
        if len(faces):
            vectors, _ = embed(crop_faces(frame.image, faces, models.embedder).crops)
            names.update(ident.person for _, ident in matcher.identify(vectors) if ident.person)
        latencies.append(time.perf_counter() - start)
        return max_frames is None or len(latencies) < max_frames

    def emit(item: Any) -> bool:
        return frame_done(item) if hasattr(item, "image") else True

    _cuda_reset()
    with PeakRss() as rss:
        source.run(emit, threading.Event())
    wall = sum(latencies)
    p50, p95 = _percentiles_ms(latencies)
    return {
        "fps": _rate(len(latencies), wall),
        "frames": len(latencies),
        "wall_s": round(wall, 2),
        "detections": clocks.detect.items,
        "detections_per_s": _rate(clocks.detect.items, wall),
        "embeddings": clocks.embed.items,
        "embeddings_per_s": _rate(clocks.embed.items, wall),
        "stage_s": {"detect": round(clocks.detect.seconds, 2), "embed": round(clocks.embed.seconds, 2)},
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "identities": sorted(names),
        "rss_peak_mb": rss.peak_mb,
        "cuda_peak_mb": _cuda_peak_mb(),
        "torch_threads": threads,
    }


def _stock_detect(mtcnn: Any, rgb: np.ndarray) -> Any:

    boxes, probs, points = mtcnn.detect(rgb, landmarks=True)
    if boxes is None:
        return FaceDetections.empty()
    return FaceDetections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(probs, np.float32).reshape(-1),
        np.asarray(points, np.float32).reshape(-1, 5, 2),
    )


# ---------------------------------------------------------------- reporting


def machine_info() -> dict[str, Any]:
    import av
    import facenet_pytorch

    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "facenet_pytorch": getattr(facenet_pytorch, "__version__", "2.6.0"),
        "av": av.__version__,
        "numpy": np.__version__,
    }


def machine_tag(info: dict[str, Any]) -> str:
    """Short machine name for file names: gpu model or cpu<cores>."""
    if info["gpu"]:
        return "".join(ch for ch in info["gpu"].split()[-1].lower() if ch.isalnum()) or "gpu"
    return f"cpu{info['cpu_count']}"


def save(result: dict[str, Any], explicit: Path | None) -> Path:
    clip = "".join(ch if ch.isalnum() else "-" for ch in result["clip_name"])
    streams = "" if result["streams"] == 1 else f"-x{result['streams']}"
    versus = f"-vs-{result['versus']['profile']}" if "versus" in result else ""
    name = (
        f"pipeline-{result['date']}-{machine_tag(result['machine'])}-{result['profile']}-{clip}{streams}{versus}.json"
    )
    path = RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    path.write_text(text)
    if explicit is not None:
        explicit.parent.mkdir(parents=True, exist_ok=True)
        explicit.write_text(text)
    return path


def ab_summary(profile: str, other: str, rounds: list[dict[str, Any]], other_run: dict[str, Any]) -> dict[str, Any]:
    """Median frames/s of each side over the alternated rounds, their ratio, every round."""
    mine = [r["fps"] for r in rounds if r["profile"] == profile]
    theirs = [r["fps"] for r in rounds if r["profile"] == other]
    median, other_median = float(np.median(mine)), float(np.median(theirs))
    cpu = float(np.median([r["cpu_s"] for r in rounds if r["profile"] == profile]))
    other_cpu = float(np.median([r["cpu_s"] for r in rounds if r["profile"] == other]))
    return {
        "profile": other,
        "fps_median": round(other_median, 2),
        "this_fps_median": round(median, 2),
        "fps_ratio": round(median / other_median, 3) if other_median else None,
        "cpu_s_median": round(other_cpu, 2),
        "this_cpu_s_median": round(cpu, 2),
        "cpu_ratio": round(cpu / other_cpu, 3) if other_cpu else None,
        "rounds": rounds,
        "pipeline": other_run,
    }


def readme_table(results: list[dict[str, Any]]) -> str:
    head = (
        "| machine | date | load 1m | profile | clip | streams | frames/s | naive frames/s | speedup | names (naive) | "
        "p95 ms | faces/s detected | peak RSS MB | A/B: other profile's frames/s (ratio) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for r in results:
        m, p = r["machine"], r["pipeline"]
        where = f"{m['gpu']} + {m['cpu_count']} CPU" if m["gpu"] else f"{m['cpu']} ({m['cpu_count']} cores)"
        ab = r.get("versus")
        versus = f"{ab['profile']}: {ab['fps_median']} ({ab['fps_ratio']}x)" if ab else "-"
        speedup = f"{r['speedup']}x" if r["speedup"] else "-"
        rows.append(
            f"| {where} | {r['date']} | {m.get('load_avg_1m', '-')} | {r['profile']} | {r['clip_name']} | "
            f"{r['streams']} | {r['pipeline_fps']} | {r['naive_fps'] or '-'} | {speedup} | {_names(r)} | "
            f"{p['latency_p95_ms']} | {p['detections_per_s']} | {p['rss_peak_mb']} | {versus} |"
        )
    note = (
        "Made by `python -m bench --readme` (JSON in bench/results/); naive = stock MTCNN.detect on every "
        "full frame + align/embed every face, same frames, same process. The machine is shared: frames/s "
        "follow the load (1-minute load average before the run); compare within a row (speedup, A/B ratio "
        "from `--versus`, alternated in the same process), not across rows."
    )
    return "\n".join([head, *rows, "", note])


def _names(r: dict[str, Any]) -> str:
    """The people the pipeline named, then (in brackets) those the naive loop named."""
    pipeline, naive = r["pipeline"]["identities"], r["naive"]["identities"]
    return f"{', '.join(pipeline) or '-'} ({', '.join(naive) or '-'})"


def update_readme(latest: dict[str, Any]) -> None:
    """Rewrite the README's perf section: one row per (machine, profile, clip, streams), newest wins."""
    text = README.read_text()
    if PERF_START not in text or PERF_END not in text:
        raise SystemExit(f"error: README.md has no {PERF_START} … {PERF_END} section")
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for path in sorted(RESULTS.glob("pipeline-*.json")):
        r = json.loads(path.read_text())
        rows[_row_key(r)] = r
    rows[_row_key(latest)] = latest
    table = readme_table(sorted(rows.values(), key=lambda r: (r["date"], r["profile"])))
    start, end = text.index(PERF_START) + len(PERF_START), text.index(PERF_END)
    README.write_text(text[:start] + "\n" + table + "\n" + text[end:])


def _row_key(r: dict[str, Any]) -> tuple[str, ...]:
    m = r["machine"]
    return (machine_tag(m), str(m.get("cpu")), str(m.get("gpu")), r["profile"], r["clip_name"], str(r["streams"]))


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=None, help="720p (default), demo, otb-david, or a video file or image folder")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per side (default: the whole clip)")
    parser.add_argument(
        "--profile",
        choices=PROFILE_CHOICES,
        default=None,
        help="default: auto (gpu on CUDA else cpu); cpu-before: the cpu profile before issue 12",
    )
    parser.add_argument(
        "--versus", choices=PROFILE_CHOICES, default=None, help="also run the pipeline with this profile (A/B)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --versus: alternate A and B this many times")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop (naive_fps: null)")
    parser.add_argument("--streams", type=int, default=1, help="pipeline: the clip as N parallel streams")
    parser.add_argument("--gallery", type=Path, default=None, help="gallery folder (default: config gallery.dir)")
    parser.add_argument("--config", type=Path, default=None, help="base config YAML (default: built-in defaults)")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's performance table")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if (args.max_frames is not None and args.max_frames < 1) or args.streams < 1 or args.rounds < 1:
        parser.error("--max-frames, --streams and --rounds must be >= 1")
    if args.profile in (None, "auto"):
        args.profile = "gpu" if torch.cuda.is_available() else "cpu"
    if args.versus == "auto":
        args.versus = "gpu" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: list[str] | None = None) -> int:
    from stream.logs import setup_logging

    args = parse_args(argv)
    setup_logging("WARNING")
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        clip = resolve_clip(args.clip, args.gallery, tmp, args.max_frames)
        sources = stream_copies(clip.path, args.streams, tmp)
        info = machine_info()
        pipe_cfg = bench_config(args.profile, args.config, tmp / "out")
        versus_cfg = bench_config(args.versus, args.config, tmp / "versus") if args.versus else None
        rounds: list[dict[str, Any]] = []
        pipeline = versus = None
        for _ in range(args.rounds if versus_cfg is not None else 1):
            for name, config in ((args.profile, pipe_cfg), (args.versus, versus_cfg)):
                if config is None:
                    continue
                load = round(os.getloadavg()[0], 2)
                side = run_pipeline(config, sources, clip.gallery, args.max_frames)
                rounds.append(
                    {"profile": name, "fps": side["fps"], "cpu_s": side["cpu_s"], "load_avg_1m_before": load}
                )
                if config is pipe_cfg:
                    pipeline = pipeline or side
                else:
                    versus = versus or side
        assert pipeline is not None
        naive: dict[str, Any] = {"fps": None, "identities": [], "skipped": True}
        if not args.no_naive:
            naive_cfg = bench_config("default", args.config, tmp / "naive")
            naive = run_naive(naive_cfg, clip.path, clip.gallery, args.max_frames)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "pipeline_fps": pipeline["fps"],
        "naive_fps": naive["fps"],
        "speedup": round(pipeline["fps"] / naive["fps"], 2) if naive["fps"] else None,
        "identities_kept": set(naive["identities"]) <= set(pipeline["identities"]),
        "date": dt.date.today().isoformat(),
        "profile": args.profile,
        "clip_name": clip.name,
        "clip": clip.description,
        "streams": args.streams,
        "max_frames": args.max_frames,
        "frames_per_stream": pipeline["frames"] // args.streams,
        "pipeline": pipeline,
        "naive": naive,
        "machine": info,
    }
    if versus is not None:
        result["versus"] = ab_summary(args.profile, args.versus, rounds, versus)
    print(json.dumps(result, indent=2))
    if not args.no_save:
        print(f"saved {save(result, args.json)}")
    elif args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.readme:
        update_readme(result)
        print(f"updated {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
