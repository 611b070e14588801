"""run.py annotate: a folder of videos, one output folder per file, failures reported, resumable."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import av
import numpy as np
import pytest

from stream.cli import main
from stream.commands.annotate import (
    EVENTS,
    SUMMARY,
    TRACKS,
    VIDEO,
    FileJob,
    WorkerStartError,
    find_videos,
    is_complete,
    run_annotate,
    run_jobs,
    with_cluster,
)
from stream.config import AppConfig, ClusterConfig
from stream.outputs.video import VideoWriter
from tests.conftest import app_config_text, shared_file
from tests.fakes import AnnotateWithoutModels, ScriptedAnnotate

GIFS = (
    "intel-sample-videos/preview/head-pose-face-detection-female.gif",  # 23 frames, one face
    "intel-sample-videos/preview/people-detection.gif",  # 23 frames, nearly empty room
)


def _clip(path: Path, frames: int = 6) -> Path:
    """A tiny H.264 clip (64x48, grey levels rising)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, 10, 64, 48) as writer:
        for i in range(frames):
            writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    return path


def _frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _folder(root: Path) -> Path:
    """Two good clips (one in a subfolder), garbage named .mp4, a truncated mp4, a text file."""
    videos = root / "in"
    _clip(videos / "a.mp4")
    _clip(videos / "sub" / "b.mkv", frames=4)
    (videos / "garbage.mp4").write_bytes(os.urandom(4000))
    good = _clip(root / "whole.mp4", frames=8).read_bytes()
    (videos / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (videos / "notes.txt").write_text("not a video")
    return videos


def _config(tmp_path: Path) -> AppConfig:
    return AppConfig().resolve_paths(tmp_path)


# ------------------------------------------------------------------ discovery


def test_find_videos_by_extension_leaving_out_hidden_files_and_the_output(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for name in ("a.MP4", "b.gif", "c.webm", "sub/d.mov", ".hidden.mp4", ".cache/e.mp4", "out/f.mp4", "notes.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    videos, others = find_videos(root, recursive=False)
    assert [p.name for p in videos] == ["a.MP4", "b.gif", "c.webm"] and others == 1
    videos, others = find_videos(root, recursive=True, exclude=root / "out")
    assert [p.relative_to(root).as_posix() for p in videos] == ["a.MP4", "b.gif", "c.webm", "sub/d.mov"]
    assert others == 1


def test_missing_or_empty_input_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["annotate", "--input-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --input-dir {tmp_path / 'nope'}: not a folder"
    (tmp_path / "empty").mkdir()
    assert main(["annotate", "--input-dir", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out")]) == 2
    assert "no video files (add --recursive for subfolders)" in capsys.readouterr().err
    args = ["annotate", "--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--jobs", "0"]
    assert main(args) == 2 and "--jobs: must be >= 1, got 0" in capsys.readouterr().err


def test_cluster_option_sets_the_address_and_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--cluster`` turns the cluster on (or overrides its address), keeping the other cluster keys;
    a bad address is a user error before anything runs (the cluster tests are in test_annotate_cluster)."""
    config = AppConfig(cluster={"annotate_cpus": 2.0}).resolve_paths(tmp_path)
    assert with_cluster(config, None) is config
    cluster = with_cluster(config, "10.0.0.5:6379").cluster
    assert cluster is not None and (cluster.address, cluster.annotate_cpus) == ("10.0.0.5:6379", 2.0)
    assert with_cluster(_config(tmp_path), "ray://head:10001").cluster == ClusterConfig(address="ray://head:10001")
    source = _clip(tmp_path / "in" / "a.mp4")
    args = ["annotate", "--input-dir", str(source.parent), "--output-dir", str(tmp_path / "out"), "--cluster", "no port"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == "error: --cluster: must be auto, ray://host:port or host:port, got 'no port'"


# ------------------------------------------------------------------ one process, no models


def test_good_files_annotated_bad_ones_reported_then_resumed(tmp_path: Path) -> None:
    """The real per-file job (app pipeline, PyAV, H.264, journal, MOT, summary) with a detector that
    finds no face, in this process: good files complete, corrupt ones fail with their reason, and a
    second run redoes only what is not complete."""
    videos, out = _folder(tmp_path), tmp_path / "out"
    report = run_annotate(_config(tmp_path), videos, out, recursive=True, jobs=0, worker=AnnotateWithoutModels)
    status = {report.rel(r.source): r for r in report.results}
    assert {k: r.status for k, r in status.items()} == {
        "a.mp4": "done",
        "sub/b.mkv": "done",
        "garbage.mp4": "failed",
        "truncated.mp4": "failed",
    }
    assert report.ignored == 1 and report.frames == 10
    assert "cannot open as video" in status["garbage.mp4"].reason
    assert status["truncated.mp4"].reason.endswith("truncated.mp4: no video stream in the file")
    for rel, frames in (("a.mp4", 6), ("sub/b.mkv", 4)):
        folder = out / rel
        assert _frames(folder / VIDEO) == frames
        assert (folder / EVENTS).exists() and (folder / TRACKS).exists()
        summary = json.loads((folder / SUMMARY).read_text())
        assert summary["frames"] == frames and summary["source_stamp"]["size"] == (videos / rel).stat().st_size
        assert summary["outputs"] == {"video": VIDEO, "events": EVENTS, "tracks": TRACKS}
        assert summary["run"]["frames_processed"] == frames
    assert not (out / "garbage.mp4" / SUMMARY).exists()
    assert (out / "events.db").exists()  # one store for the batch
    lines = report.lines()
    assert lines[0].startswith("annotate: 4 video files: 2 done, 0 skipped (already complete), 2 failed; 10 frames")
    assert any(line.startswith("  failed garbage.mp4: ") for line in lines)

    stamp = (out / "a.mp4" / SUMMARY).stat().st_mtime_ns
    again = run_annotate(_config(tmp_path), videos, out, recursive=True, jobs=0, worker=AnnotateWithoutModels)
    assert sorted((again.rel(r.source), r.status) for r in again.results) == [
        ("a.mp4", "skipped"),
        ("garbage.mp4", "failed"),
        ("sub/b.mkv", "skipped"),
        ("truncated.mp4", "failed"),
    ]
    assert (out / "a.mp4" / SUMMARY).stat().st_mtime_ns == stamp

    _clip(videos / "a.mp4", frames=3)  # a changed source is done again
    (videos / "garbage.mp4").unlink()
    (videos / "truncated.mp4").unlink()
    third = run_annotate(_config(tmp_path), videos, out, recursive=True, jobs=0, worker=AnnotateWithoutModels)
    assert sorted((third.rel(r.source), r.status, r.frames) for r in third.results) == [
        ("a.mp4", "done", 3),
        ("sub/b.mkv", "skipped", 0),
    ]
    assert _frames(out / "a.mp4" / VIDEO) == 3

    forced = run_annotate(_config(tmp_path), videos, out, recursive=True, jobs=0, worker=AnnotateWithoutModels, force=True)
    assert [r.status for r in forced.results] == ["done", "done"]


def test_incomplete_outputs_are_redone(tmp_path: Path) -> None:
    source = _clip(tmp_path / "in" / "a.mp4")
    job = FileJob(source, tmp_path / "out" / "a.mp4")
    assert not is_complete(job)
    report = run_annotate(_config(tmp_path), source.parent, tmp_path / "out", jobs=0, worker=AnnotateWithoutModels)
    assert [r.status for r in report.results] == ["done"] and is_complete(job)
    (job.out_dir / TRACKS).unlink()  # an output gone: not complete
    assert not is_complete(job)
    (job.out_dir / SUMMARY).write_text("{not json")
    assert not is_complete(job)


def test_nothing_to_do_starts_no_worker(tmp_path: Path) -> None:
    source = _clip(tmp_path / "in" / "a.mp4")
    run_annotate(_config(tmp_path), source.parent, tmp_path / "out", jobs=0, worker=AnnotateWithoutModels)
    report = run_annotate(_config(tmp_path), source.parent, tmp_path / "out", jobs=2, worker=lambda cfg: ScriptedAnnotate(refuse="boom"))
    assert [r.status for r in report.results] == ["skipped"] and report.count("failed") == 0


# ------------------------------------------------------------------ worker processes


@pytest.mark.slow  # spawns Python worker processes (a few seconds on a busy 2-core machine)
def test_worker_pool_replaces_a_dead_worker_and_fails_only_its_file(tmp_path: Path) -> None:
    jobs = [FileJob(tmp_path / name, tmp_path / "out" / name) for name in ("a.mp4", "crash.mp4", "fail.mp4", "b.mp4", "c.mp4")]
    results = run_jobs(jobs, ScriptedAnnotate(), processes=2)
    by_name = {r.source.name: r for r in results}
    assert sorted(by_name) == ["a.mp4", "b.mp4", "c.mp4", "crash.mp4", "fail.mp4"]
    assert [by_name[n].status for n in ("a.mp4", "b.mp4", "c.mp4")] == ["done"] * 3
    assert by_name["fail.mp4"].reason == "scripted failure"
    assert by_name["crash.mp4"].status == "failed"
    assert by_name["crash.mp4"].reason == "worker process died (exit code 3) while annotating this file"
    with pytest.raises(WorkerStartError, match="worker could not start: no models here") as caught:
        run_jobs(jobs, ScriptedAnnotate(refuse="no models here"), processes=2)
    assert caught.value.user


@pytest.mark.slow  # two spawned workers running the real pipeline (no models)
def test_two_worker_processes_annotate_a_folder(tmp_path: Path) -> None:
    videos, out = _folder(tmp_path), tmp_path / "out"
    report = run_annotate(_config(tmp_path), videos, out, recursive=True, jobs=2, worker=AnnotateWithoutModels)
    assert sorted((report.rel(r.source), r.status) for r in report.results) == [
        ("a.mp4", "done"),
        ("garbage.mp4", "failed"),
        ("sub/b.mkv", "done"),
        ("truncated.mp4", "failed"),
    ]
    assert _frames(out / "a.mp4" / VIDEO) == 6 and _frames(out / "sub" / "b.mkv" / VIDEO) == 4


# ------------------------------------------------------------------ the command, real models


@pytest.mark.slow  # real MTCNN + FaceNet in two worker processes
def test_annotate_shared_videos_with_a_corrupt_one(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Acceptance: every good file annotated, the corrupt one reported, exit 1; a second run skips the
    finished files; without the bad file it exits 0 at once."""
    videos = tmp_path / "videos"
    (videos / "more").mkdir(parents=True)
    (videos / "female.gif").symlink_to(shared_file(shared_data, GIFS[0]))
    (videos / "more" / "room.gif").symlink_to(shared_file(shared_data, GIFS[1]))
    clip = shared_file(shared_data, "facenet-pytorch/examples/video.mp4").read_bytes()
    (videos / "broken.mp4").write_bytes(clip[: len(clip) // 3])  # cut: no moov atom
    cfg = tmp_path / "config.yaml"
    cfg.write_text(app_config_text(tmp_path) + f"gallery:\n  dir: {tmp_path / 'gallery'}\n")
    out = tmp_path / "out"
    args = ["annotate", "--config", str(cfg), "--input-dir", str(videos), "--output-dir", str(out), "--recursive", "--jobs", "2"]

    assert main(args) == 1
    text = capsys.readouterr().out
    assert "3 video files: 2 done, 0 skipped (already complete), 1 failed; 46 frames" in text
    assert "  failed broken.mp4: " in text and "cannot open as video" in text
    for rel in ("female.gif", "more/room.gif"):
        assert _frames(out / rel / VIDEO) == 23
        assert json.loads((out / rel / SUMMARY).read_text())["frames"] == 23
        assert (out / rel / EVENTS).exists() and (out / rel / TRACKS).exists()
    events = [json.loads(line) for line in (out / "female.gif" / EVENTS).read_text().splitlines()]
    assert any(e["kind"] == "track_started" for e in events) and {e["stream"] for e in events} == {"female.gif"}

    assert main(args) == 1  # the broken file is tried again; the good ones are not
    assert "3 video files: 0 done, 2 skipped (already complete), 1 failed" in capsys.readouterr().out

    (videos / "broken.mp4").unlink()
    started = time.perf_counter()
    assert main(args) == 0
    assert "2 video files: 0 done, 2 skipped (already complete), 0 failed" in capsys.readouterr().out
    assert time.perf_counter() - started < 5  # nothing to do: no worker, no model loaded
