"""The stream app end to end: demo, file mode, two streams, image sequences (real PyAV, MTCNN, FaceNet)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pytest

from stream.cli import main
from stream.store import open_store
from tests.conftest import app_config_text, shared_file, unix_time

VIDEO = "facenet-pytorch/examples/video.mp4"


def _frames(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate)
        return sum(1 for _ in container.decode(video=0)), rate


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _config(tmp_path: Path) -> Path:
    """A config writing into tmp_path (checkpoints shared with the repo: FaceNet is converted once)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(app_config_text(tmp_path) + f"gallery:\n  dir: {tmp_path / 'gallery'}\n")
    return cfg


@pytest.mark.slow
def test_demo_names_the_demo_identity(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    summary = tmp_path / "summary.json"
    assert main(["--config", str(cfg), "--summary", str(summary)]) == 0
    out = tmp_path / "rec" / "demo.mp4"
    assert _frames(out) == (150, 25.0)
    events = _events(tmp_path / "rec" / "events.jsonl")
    assert any(e["kind"] == "identity_assigned" and e["person"] == "eileen_collins" for e in events)
    assert all({"time", "pts_s", "run_id", "stream", "kind", "track_id", "person", "score"} <= set(e) for e in events)
    assert len({e["run_id"] for e in events}) == 1
    report = json.loads(summary.read_text())
    assert report["frames_in"] == report["frames_processed"] == 150 and report["frames_dropped"] == 0
    assert "eileen_collins" in report["identities"].values()
    assert list((tmp_path / "rec" / "snapshots").glob("*.jpg"))
    _check_track_rows(tmp_path / "rec" / "events.db", events)


def _same_run_apart(events: list[dict]) -> list[dict]:
    """Events without what belongs to the run (its id, and wall-clock times: this clip has no
    creation_time, so its times count from the run start): the rest must repeat exactly."""
    return [{k: v for k, v in e.items() if k not in ("run_id", "time")} for e in events]


def _check_track_rows(db_path: Path, events: list[dict]) -> None:
    """One tracks row per track event key, from its track_started to its track_ended time."""
    with open_store(db_path, create=False) as store:
        rows = [(t.stream, t.epoch, t.track_id, t.first_time, t.last_time, t.person) for t in store.tracks()]
    spans = {}
    for e in events:
        if e["kind"] in ("track_started", "track_ended"):
            spans.setdefault((e["stream"], e["epoch"], e["track_id"]), {})[e["kind"]] = e
    assert rows and len(rows) == len(spans)
    for stream, epoch, track_id, first_ts, last_ts, person in rows:
        span = spans[(stream, epoch, track_id)]
        started, ended = unix_time(span["track_started"]), unix_time(span["track_ended"])
        assert abs(first_ts - started) < 0.001 and abs(last_ts - ended) < 0.001 and started < ended
        assert person == span["track_ended"]["person"]


@pytest.mark.slow
def test_file_mode_keeps_every_frame_and_is_deterministic(shared_data: Path, tmp_path: Path) -> None:
    clip = shared_file(shared_data, VIDEO)
    runs = []
    for run in ("a", "b"):
        out = tmp_path / run
        args = ["run", "--config", str(_config(tmp_path)), "--source", str(clip), "--output", str(out / "v.mp4")]
        args += ["--events", str(out / "events.jsonl"), "--tracks-out", str(out / "tracks.txt")]
        assert main(args) == 0
        assert _frames(out / "v.mp4") == _frames(clip)
        runs.append(out)
    first, second = (_events(r / "events.jsonl") for r in runs)
    assert first and _same_run_apart(first) == _same_run_apart(second)
    assert {e["run_id"] for e in first}.isdisjoint(e["run_id"] for e in second)  # one id per run
    lines = (runs[0] / "tracks.txt").read_text().splitlines()
    assert lines and all(len(line.split(",")) == 10 for line in lines)
    assert min(int(line.split(",")[0]) for line in lines) >= 1


@pytest.mark.slow
def test_two_files_as_two_streams(tmp_path: Path) -> None:
    from stream.demo import prepare_demo

    clip, gallery = prepare_demo(tmp_path / "demo")
    for name in ("left", "right"):
        shutil.copy(clip, tmp_path / f"{name}.mp4")
    summary = tmp_path / "summary.json"
    args = ["run", "--config", str(_config(tmp_path)), "--gallery", str(gallery), "--max-frames", "40"]
    args += ["--source", str(tmp_path / "left.mp4"), "--source", str(tmp_path / "right.mp4")]
    args += ["--output", str(tmp_path / "out"), "--summary", str(summary)]
    assert main(args) == 0
    for name in ("left", "right"):
        assert _frames(tmp_path / "out" / f"{name}.mp4")[0] == 40
    report = json.loads(summary.read_text())
    assert set(report["per_stream"]) == {"left", "right"}
    assert all(s["frames_processed"] == 40 for s in report["per_stream"].values())
    assert sorted(set(report["identities"].values()) - {None}) == ["eileen_collins"]


@pytest.mark.slow
def test_otb_david_image_sequence_is_named(shared_data: Path, tmp_path: Path) -> None:
    frames = shared_file(shared_data, "otb-david/demo/David/img")
    gallery = tmp_path / "gallery" / "david"
    gallery.mkdir(parents=True)
    for n in (300, 305, 310, 315, 320):
        shutil.copy(frames / f"{n:04d}.jpg", gallery / f"{n}.jpg")
    args = ["run", "--config", str(_config(tmp_path)), "--source", str(frames), "--max-frames", "120"]
    args += ["--output", str(tmp_path / "david.mp4"), "--events", str(tmp_path / "events.jsonl")]
    assert main(args) == 0
    assert _frames(tmp_path / "david.mp4")[0] == 120
    named = [e for e in _events(tmp_path / "events.jsonl") if e["kind"] == "identity_assigned"]
    assert named and {e["person"] for e in named} == {"david"}


def test_bad_source_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert main(["run", "--config", str(_config(tmp_path)), "--source", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "empty.mp4" in err[-1]
    assert main(["run", "--config", str(_config(tmp_path)), "--source", str(tmp_path / "missing.mp4")]) == 2


@pytest.mark.slow
def test_stage_error_stops_the_pipeline_with_one_line(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = shared_file(shared_data, "otb-david/demo/David/img")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = ["run", "--config", str(_config(tmp_path)), "--source", str(frames), "--max-frames", "20"]
    args += ["--output", str(blocker / "out.mp4")]  # the output thread fails on its first frame
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and "out.mp4" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
