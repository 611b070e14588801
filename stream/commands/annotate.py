"""`run.py annotate --input-dir DIR --output-dir OUT`: annotate every video of a folder, in parallel, resumably.

**Which files.** Video files by extension (``VIDEO_SUFFIXES``: mp4, m4v, mov, mkv, webm, avi, gif,
mpg, mpeg, ts, flv, wmv; any case), in DIR or, with ``--recursive``, its subfolders; hidden files and
folders and everything under OUT are left out; other files are counted as ignored.

**Outputs.** Each video gets a folder of its own that keeps its path relative to DIR:
``OUT/<relative path>/`` (e.g. ``OUT/day1/cam2.mp4/``) holding ``annotated.mp4`` (the video with
boxes and names, unless ``outputs.annotated_video`` is false), ``events.jsonl`` (the event journal,
unless ``outputs.events_jsonl`` is false), ``tracks.txt`` (MOT Challenge tracks), ``snapshots/``
(unless ``outputs.snapshots`` is false) and ``summary.json``, written last by an atomic rename:
its presence means the file is complete. The event store is one database for the whole batch,
``OUT/events.db`` (every file a run; several processes write it, SQLite WAL), or
``outputs.events_db`` when config.yaml sets one; ``outputs.events_sqlite: false`` turns it off.

**Resume.** A file is skipped when its ``summary.json`` exists, names outputs that all exist and
records the source's current size and modification time (ns): a changed source is annotated again,
and so is a file whose run failed or was cut short (no summary). A file being redone first loses
its old summary, journal, tracks and snapshots. ``--force`` redoes every file. Changing config.yaml
does not by itself redo finished files (use ``--force``); a redone file adds a new run to the store.

**Workers.** ``--jobs N`` processes (default: CPU cores // torch threads per process, at least 1),
started with ``spawn`` (safe with torch and CUDA). Each builds the detector, the embedder and the
gallery matcher once and then takes files from a shared queue; each file is one app run in file
mode (``stream.app.build_app``), so it gives the same events as ``run.py --source FILE``. A worker
that dies (a crash in a native decoder, out of memory) fails only the file it held and is replaced.

**Ending.** A summary lists the files done, skipped (already complete) and failed, each failure with
its one-line reason, and the frames and frames/s of the files done. Exit code 0 when no file failed,
1 when any did, 2 for a user error (no such input folder, no video in it, a bad config).

**Cluster.** With ``--cluster ADDRESS`` (or config.yaml's ``cluster``) the workers are actors on
that Ray cluster instead (``annotate_ray``, imported only then), ``cluster.annotate_cpus`` CPUs each,
with the same semantics; they write the outputs themselves, so the folders must be on a filesystem
every node sees at the same paths.

``annotate_file(path, out_dir, config)`` is the whole per-file job as a plain function returning a
``FileResult``, for other schedulers (a cluster's tasks) as well as for the workers here.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from tqdm import tqdm

from stream.commands.annotate_jobs import (
    FileFunction,
    FileJob,
    FileResult,
    Status,
    WorkerStartError,
    failure_reason,
    start_failure,
)
from stream.config import AppConfig, ClusterConfig, StreamConfig
from stream.errors import UserError
from stream.faces.models import ModelOverrides
from stream.logs import setup_logging

if TYPE_CHECKING:
    from stream.faces.models import Models
    from stream.identity.matcher import Matcher

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"})
VIDEO, EVENTS, TRACKS, SUMMARY, SNAPSHOTS = "annotated.mp4", "events.jsonl", "tracks.txt", "summary.json", "snapshots"
STORE = "events.db"
STOP_WAIT_S = 5.0  # on Ctrl-C, how long workers may take to finish their files' outputs

@dataclass(frozen=True)
class BatchPlan:
    """The videos to annotate, those already complete, and how many other files were ignored."""

    todo: tuple[FileJob, ...]
    skipped: tuple[FileResult, ...]
    ignored: int


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "annotate",
        help="annotate every video of a folder (video, events, tracks per file), in parallel, resumable",
        description="Annotate every video of a folder; files already complete are skipped. Exit 1 when any file failed.",
    )
    p.add_argument("--input-dir", type=Path, required=True, help="folder of videos")
    p.add_argument("--output-dir", type=Path, required=True, help="one folder per video is made here")
    p.add_argument("--recursive", action="store_true", help="also videos in subfolders (relative paths kept)")
    p.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: CPU cores // torch threads); with a cluster, worker actors"
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        default=None,
        help="annotate on this Ray cluster (auto, host:port or ray://host:port; sets cluster.address); "
        "the folders must be at the same paths on every node",
    )
    p.add_argument("--gallery", type=Path, default=None, help="gallery folder (default: config gallery.dir)")
    p.add_argument("--force", action="store_true", help="annotate every file again, complete or not")
    return p


# ---------------------------------------------------------------- planning


def find_videos(input_dir: Path, recursive: bool, exclude: Path | None = None) -> tuple[list[Path], int]:
    """Video files under ``input_dir`` (sorted) and the count of other files; hidden entries and
    anything under ``exclude`` (the output folder) are left out."""
    if not input_dir.is_dir():
        raise UserError(f"--input-dir {input_dir}: not a folder")
    skip = exclude.resolve() if exclude is not None else None
    videos, others = [], 0
    paths = input_dir.rglob("*") if recursive else input_dir.iterdir()
    for path in sorted(paths):
        rel = path.relative_to(input_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        if path.suffix.lower() in VIDEO_SUFFIXES:
            videos.append(path)
        else:
            others += 1
    return videos, others


def source_stamp(path: Path) -> dict[str, int]:
    """What a finished file's summary records of its source, to notice a changed source."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_complete(job: FileJob) -> bool:
    """The file's summary exists, its outputs exist, and its source is unchanged since."""
    try:
        record = json.loads((job.out_dir / SUMMARY).read_text(encoding="utf-8"))
        stamp = source_stamp(job.source)
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("source_stamp") != stamp:
        return False
    outputs = record.get("outputs", {})
    return isinstance(outputs, dict) and all((job.out_dir / str(name)).exists() for name in outputs.values())


def plan_batch(input_dir: Path, output_dir: Path, recursive: bool, force: bool = False) -> BatchPlan:
    """Every video's job, split into those to do and those already complete (``force``: none is)."""
    videos, ignored = find_videos(input_dir, recursive, exclude=output_dir)
    if not videos:
        where = "" if recursive else " (add --recursive for subfolders)"
        raise UserError(f"--input-dir {input_dir}: no video files{where}; looked for {', '.join(sorted(VIDEO_SUFFIXES))}")
    todo, skipped = [], []
    for path in videos:
        job = FileJob(path.absolute(), output_dir.absolute() / path.relative_to(input_dir))
        if not force and is_complete(job):
            skipped.append(FileResult(job.source, job.out_dir, "skipped"))
        else:
            todo.append(job)
    return BatchPlan(tuple(todo), tuple(skipped), ignored)


def with_cluster(config: AppConfig, address: str | None) -> AppConfig:
    """``config`` with ``--cluster ADDRESS`` applied: it sets ``cluster.address``, turning the cluster on."""
    if address is None:
        return config
    base = config.cluster.model_dump() if config.cluster is not None else {}
    try:
        cluster = ClusterConfig.model_validate({**base, "address": address})
    except ValidationError as exc:
        raise UserError(f"--cluster: {str(exc.errors()[0]['msg']).removeprefix('Value error, ')}") from None
    return config.model_copy(update={"cluster": cluster})


def batch_config(config: AppConfig, output_dir: Path, gallery: Path | None = None) -> AppConfig:
    """The config every file of the batch runs with: one event store for the batch (OUT/events.db
    unless ``outputs.events_db`` is set), no window, and ``gallery`` when given."""
    outputs = config.outputs.model_copy(
        update={"events_db": config.outputs.events_db or str(output_dir.resolve() / STORE), "display": False}
    )
    update: dict[str, Any] = {"outputs": outputs}
    if gallery is not None:
        update["gallery"] = config.gallery.model_copy(update={"dir": gallery.resolve()})
    return config.model_copy(update=update)


# ---------------------------------------------------------------- one file


def stream_name(path: Path) -> str:
    """The file's stream name in events and the store: its name, other characters as '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.name) or "video"


def annotate_file(
    path: Path,
    out_dir: Path,
    config: AppConfig,
    *,
    models: Models | None = None,
    matcher: Matcher | None = None,
    overrides: ModelOverrides | None = None,
) -> FileResult:
    """Annotate one video into ``out_dir`` (see the module docstring); never raises for a bad file.

    ``models`` and ``matcher``: built once and reused across files (None: built for this file from
    ``config`` and ``overrides``). The event store is ``config``'s (``batch_config`` points it at the
    batch's). The summary is written last, atomically, only when the run succeeded with frames.
    """
    from stream.app import RunOptions, build_app

    source = Path(path).absolute()
    started = time.perf_counter()
    try:
        stamp = source_stamp(source)
        _clear(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stream = StreamConfig(name=stream_name(source), path=source, mode="file")
        outputs = config.outputs.model_copy(update={"dir": out_dir, "display": False})
        cfg = config.model_copy(update={"streams": (stream,), "outputs": outputs})
        video = out_dir / VIDEO if cfg.outputs.annotated_video else None
        events = out_dir / EVENTS if cfg.outputs.events_jsonl else None
        options = RunOptions(output=video, events=events, tracks_out=out_dir / TRACKS, progress=False)
        summary = build_app(cfg, options, overrides, models=models, matcher=matcher).run()
    except Exception as exc:
        return FileResult(source, out_dir, "failed", seconds=time.perf_counter() - started, reason=failure_reason(exc))
    seconds = time.perf_counter() - started
    frames = summary.frames_processed
    if frames == 0:
        return FileResult(source, out_dir, "failed", seconds=seconds, reason="no video frame could be decoded")
    written = {"video": video, "events": events, "tracks": out_dir / TRACKS}
    record = {
        "source": str(source),
        "source_stamp": stamp,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "frames": frames,
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds > 0 else None,
        "outputs": {key: p.name for key, p in written.items() if p is not None},
        "run": summary.to_dict(),
    }
    try:
        _write_atomic(out_dir / SUMMARY, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        return FileResult(source, out_dir, "failed", frames, seconds, f"cannot write {SUMMARY}: {exc}")
    return FileResult(source, out_dir, "done", frames, seconds, decode_errors=summary.decode_errors)


def _clear(out_dir: Path) -> None:
    """Remove what an earlier attempt left (the summary first: the folder is no longer complete)."""
    for name in (SUMMARY, EVENTS, TRACKS, VIDEO):
        (out_dir / name).unlink(missing_ok=True)
    if (out_dir / SNAPSHOTS).is_dir():
        shutil.rmtree(out_dir / SNAPSHOTS)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------- workers


@dataclass(frozen=True)
class ModelWorker:
    """Starts a worker: logging, torch threads, models and the gallery matcher, once per process;
    returns the per-file function. Picklable, so it travels to ``spawn``-ed processes."""

    config: AppConfig
    overrides: ModelOverrides = field(default_factory=ModelOverrides)
    torch_threads: int = 1

    def __call__(self) -> FileFunction:
        import torch

        from stream.app import build_matcher
        from stream.faces.models import build_models

        level = self.config.runtime.log_level
        setup_logging("WARNING" if level == "INFO" else level)  # per-file INFO lines would bury the bar
        torch.set_num_threads(self.torch_threads)
        models = build_models(self.config, self.overrides)
        matcher = build_matcher(models, self.config, self.config.gallery.dir)
        return partial(annotate_job, config=self.config, models=models, matcher=matcher)


def annotate_job(job: FileJob, *, config: AppConfig, models: Models, matcher: Matcher) -> FileResult:
    """``annotate_file`` for a planned job, with a worker's models and matcher."""
    return annotate_file(job.source, job.out_dir, config, models=models, matcher=matcher)


def default_jobs(torch_threads: int) -> int:
    """CPU cores // torch threads per process (0: auto, half the cores), at least 1."""
    cores = os.cpu_count() or 1
    return max(1, cores // (torch_threads or max(1, cores // 2)))


def _worker_main(start: Callable[[], FileFunction], conn: Connection) -> None:
    """A worker process: start once, then annotate the jobs the parent sends until it sends None.
    Every message is written to the pipe before the next step, so a worker that dies later loses
    nothing it already reported."""
    try:
        annotate = start()
    except Exception as exc:
        conn.send(("fatal", start_failure(exc)))
        return
    except KeyboardInterrupt:
        return
    try:
        conn.send(("ready", None))
        while (job := conn.recv()) is not None:
            conn.send(("done", annotate(job)))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return  # Ctrl-C reached the whole process group, or the parent is gone


def run_jobs(
    jobs: Sequence[FileJob],
    start: Callable[[], FileFunction],
    processes: int,
    on_result: Callable[[FileResult], None] = lambda r: None,
) -> list[FileResult]:
    """Annotate ``jobs`` with ``processes`` spawned workers (0: in this process, one after another),
    each started once with ``start()``; results in completion order. A worker that dies fails the
    file it held and is replaced; a worker that cannot start raises ``WorkerStartError``."""
    if processes == 0:
        annotate = start()
        results = []
        for job in jobs:
            results.append(annotate(job))
            on_result(results[-1])
        return results
    return _Pool(jobs, start, processes, on_result).run()


@dataclass
class _Worker:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    job: FileJob | None = None  # the file it is on


class _Pool:
    """Spawned workers, one pipe each; the parent hands out one file at a time to an idle worker, so
    it always knows which file a worker holds, and waits on the pipes and the processes' sentinels."""

    def __init__(
        self, jobs: Sequence[FileJob], start: Callable[[], FileFunction], processes: int, on_result: Callable[[FileResult], None]
    ) -> None:
        self.queue = list(reversed(jobs))  # pop() takes the next
        self.total = len(jobs)
        self.start = start
        self.processes = max(1, min(processes, len(jobs)))
        self.on_result = on_result
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []
        self.results: list[FileResult] = []
        self.deaths = 0

    def run(self) -> list[FileResult]:
        try:
            for _ in range(self.processes):
                self._spawn()
            while len(self.results) < self.total:
                ready = wait([w.conn for w in self.workers] + [w.process.sentinel for w in self.workers], timeout=1.0)
                for worker in list(self.workers):
                    if worker.conn in ready:
                        self._receive(worker)
                    elif worker.process.sentinel in ready:
                        self._buried(worker)
        finally:
            self._stop(STOP_WAIT_S)
        return self.results

    def _spawn(self) -> None:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_worker_main, args=(self.start, child), daemon=True)
        process.start()
        child.close()
        self.workers.append(_Worker(process, parent))

    def _receive(self, worker: _Worker) -> None:
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):  # the worker closed its end: it died; the sentinel tells when
            worker.process.join(1.0)
            self._buried(worker)
            return
        if kind == "fatal":
            message, user = payload
            raise WorkerStartError(f"worker could not start: {message}", user)
        if kind == "done":
            worker.job = None
            self._report(payload)
        self._next(worker)

    def _next(self, worker: _Worker) -> None:
        job = self.queue.pop() if self.queue else None  # None: no more files, the worker ends
        try:
            worker.conn.send(job)
        except OSError:  # it has just died: the file waits for another worker; the sentinel buries it
            if job is not None:
                self.queue.append(job)
            job = None
        worker.job = job

    def _report(self, result: FileResult) -> None:
        self.results.append(result)
        self.on_result(result)

    def _buried(self, worker: _Worker) -> None:
        """A worker process ended: fail the file it held; start another while files are waiting."""
        if worker not in self.workers:
            return
        self.workers.remove(worker)
        worker.conn.close()
        worker.process.join(5.0)  # its pipe may close a moment before the process is reaped: then read its code
        if worker.job is None and worker.process.exitcode == 0:
            return  # done, after its None
        self.deaths += 1
        code = worker.process.exitcode
        if worker.job is not None:
            why = f"worker process died (exit code {code}) while annotating this file"
            self._report(FileResult(worker.job.source, worker.job.out_dir, "failed", reason=why))
        if self.deaths > self.total + self.processes:
            raise WorkerStartError(f"worker processes keep dying (last exit code {code})", False)
        if self.queue and len(self.workers) < self.processes:
            self._spawn()

    def _stop(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(1.0)
            worker.conn.close()


# ---------------------------------------------------------------- the command


@dataclass
class BatchReport:
    """The batch's outcome, for the closing summary and the exit code."""

    input_dir: Path
    output_dir: Path
    results: list[FileResult] = field(default_factory=list)
    ignored: int = 0
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.results if r.status == "done")

    def lines(self) -> list[str]:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"annotate: {len(self.results)} video files: {self.count('done')} done, {self.count('skipped')} skipped "
            f"(already complete), {self.count('failed')} failed; {self.frames} frames in {self.seconds:.1f} s "
            f"({fps:.1f} frames/s); {self.ignored} other files ignored",
        ]
        for r in sorted(self.results, key=lambda r: r.source):
            if r.status == "failed":
                out.append(f"  failed {self.rel(r.source)}: {r.reason}")
            elif r.decode_errors:
                out.append(f"  done {self.rel(r.source)} with {r.decode_errors} corrupt packets/frames skipped")
        out.append(f"outputs: {self.output_dir}/<file>/ ({VIDEO}, {EVENTS}, {TRACKS}, {SUMMARY})")
        return out

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.input_dir.resolve()).as_posix()
        except ValueError:
            return str(path)


def run_annotate(
    config: AppConfig,
    input_dir: Path,
    output_dir: Path,
    *,
    recursive: bool = False,
    jobs: int | None = None,
    force: bool = False,
    gallery: Path | None = None,
    overrides: ModelOverrides | None = None,
    worker: Callable[[AppConfig], Callable[[], FileFunction]] | None = None,
    progress: bool | None = None,
) -> BatchReport:
    """Plan, skip what is complete, annotate the rest with ``jobs`` workers; the report.

    ``worker``: given the batch's config, what starts a worker and returns its per-file function
    (default: a ``ModelWorker``; tests pass their own). ``jobs`` 0 runs in this process. With
    ``config.cluster`` the files go to worker actors on that Ray cluster (``annotate_ray``; ``jobs``:
    how many actors, default what the cluster's CPUs hold)."""
    if jobs is not None and jobs < 0:
        raise UserError(f"--jobs: must be >= 1, got {jobs}")  # (0, for tests: in this process)
    if jobs == 0 and config.cluster is not None:
        raise UserError("--jobs: must be >= 1 with a cluster, got 0")
    plan = plan_batch(input_dir, output_dir, recursive, force)
    config = batch_config(config, output_dir, gallery)
    processes = default_jobs(config.runtime.torch_threads) if jobs is None else jobs
    if worker is None:
        cores = os.cpu_count() or 1
        threads = config.runtime.torch_threads or max(1, cores // max(1, processes))
        if config.cluster is not None:  # a worker actor uses the CPUs Ray reserved for it
            threads = config.runtime.torch_threads or max(1, int(config.cluster.annotate_cpus))
        start: Callable[[], FileFunction] = ModelWorker(config, overrides or ModelOverrides(), threads)
    else:
        start = worker(config)
    report = BatchReport(input_dir, output_dir, list(plan.skipped), plan.ignored)
    if plan.skipped:
        log.info("%d of %d video files already complete: skipped", len(plan.skipped), len(plan.skipped) + len(plan.todo))
    output_dir.mkdir(parents=True, exist_ok=True)
    show = progress if progress is not None else os.isatty(2)
    frames = failed = 0
    started = time.perf_counter()
    with tqdm(total=len(plan.todo), unit="file", desc="annotate", disable=not show or not plan.todo) as bar:

        def done(result: FileResult) -> None:
            nonlocal frames, failed
            frames += result.frames
            failed += result.status == "failed"
            bar.update(1)
            bar.set_postfix(frames=frames, fps=f"{frames / max(1e-9, time.perf_counter() - started):.1f}", failed=failed)
            if result.status == "failed" and show:
                bar.write(f"failed {report.rel(result.source)}: {result.reason}")

        if plan.todo and config.cluster is not None:
            from stream.commands.annotate_ray import run_ray_jobs  # the only import of ray for annotate

            report.results += run_ray_jobs(plan.todo, start, config.cluster, jobs, done)
        elif plan.todo:
            report.results += run_jobs(plan.todo, start, min(processes, len(plan.todo)), done)
    report.seconds = time.perf_counter() - started
    return report
