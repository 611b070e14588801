"""Outputs: overlay, H.264 writer, event sink (JSONL + SQLite), snapshots, MOT, summary, metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.outputs import OutputError
from stream.outputs.events import EventJournal
from stream.outputs.metrics import Metrics
from stream.outputs.mot import MotWriter
from stream.outputs.overlay import COLOR_LOST, COLOR_NAMED, COLOR_UNKNOWN, TrackView, draw_overlay
from stream.outputs.snapshots import save_snapshot, snapshot_path
from stream.outputs.summary import RunSummary, latency_percentiles_ms
from stream.outputs.video import VideoSettings, VideoWriter
from stream.pipeline.messages import TrackFace
from stream.pipeline.recording import EventRecorder
from stream.store import EventQuery, open_store
from stream.store.records import EventRecord, RunRecord
from stream.types import Event, EventKind, TrackKey
from tests.conftest import REPO
from trackers import TrackSnapshot, TrackState

SECRET_URL = "rtsp://admin:hunter2@10.0.0.5/cam"


def _view(track_id=1, box=(40, 30, 120, 110), person="alice", score=0.62, quality=0.8, state="confirmed"):
    return TrackView(track_id, np.array(box, np.float32), person, score, quality, state)


def _unwritable_paths(tmp_path: Path, name: str) -> list[Path]:
    """Paths no one can create, root included: under a regular file, and under /proc."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    return [blocker / "sub" / name, Path("/proc/no-such-folder") / name]


def _run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---- overlay ------------------------------------------------------------------------------------


def test_overlay_draws_on_a_copy_of_a_read_only_frame():
    image = np.full((240, 320, 3), 30, np.uint8)
    image.flags.writeable = False
    before = image.copy()
    out = draw_overlay(image, [_view(), _view(2, person=None, score=None)], stream_label=SECRET_URL, fps=29.7)
    assert out is not image and not np.shares_memory(out, image)
    assert out.shape == image.shape and out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(image, before)
    assert (out != image).any()


def test_overlay_colours_follow_identity_and_state():
    def edge_colour(view: TrackView) -> tuple[int, ...]:
        out = draw_overlay(np.zeros((240, 320, 3), np.uint8), [view])
        return tuple(int(c) for c in out[70, 40])  # middle of the left edge of box (40, 30, 120, 110)

    assert edge_colour(_view(person="alice")) == COLOR_NAMED
    assert edge_colour(_view(person=None, score=None)) == COLOR_UNKNOWN
    assert edge_colour(_view(state="lost")) == COLOR_LOST
    assert len({COLOR_NAMED, COLOR_UNKNOWN, COLOR_LOST}) == 3
    assert _view(7, person="bob", score=0.6234).label == "#7 bob 0.62"
    assert _view(7, person="bob", score=None).label == "#7 bob"
    assert _view(7, person=None, score=0.3).label == "#7 unknown"


def test_overlay_quality_cue_changes_with_quality():
    frame = np.zeros((240, 320, 3), np.uint8)
    low = draw_overlay(frame, [_view(quality=0.1)])
    high = draw_overlay(frame, [_view(quality=0.9)])
    none = draw_overlay(frame, [_view(quality=None)])
    assert (low != high).any() and (none != high).any()


@pytest.mark.parametrize("size", [(240, 320), (9, 7), (1, 1)])
def test_overlay_survives_boxes_outside_the_frame(size):
    h, w = size
    boxes = [
        (-50, -40, 30, 20),  # top-left, partly out
        (w - 5, h - 5, w + 80, h + 90),  # bottom-right, partly out
        (-500, -500, -10, -10),  # wholly out
        (w + 10, 0, w + 50, 10),
        (-1e6, -1e6, 1e6, 1e6),  # huge
        (100, 100, 20, 20),  # inverted
        (5, 5, 5, 5),  # zero area
    ]
    views = [
        _view(i, b, quality=q) for i, (b, q) in enumerate(zip(boxes, [0, 1, 1.5, -0.2, 0.5, None, 0.3], strict=True))
    ]
    views.append(_view(99, (0, 0, w, 8), person="a-very-long-name-that-does-not-fit-anywhere", score=0.99))
    out = draw_overlay(np.zeros((h, w, 3), np.uint8), views, stream_label="cam", fps=12.0)
    assert out.shape == (h, w, 3)


def test_track_view_rejects_bad_boxes():
    with pytest.raises(ValueError, match="TrackView.box"):
        TrackView(1, np.array([0, 0, np.nan, 1], np.float32), None, None, None, "confirmed")
    with pytest.raises(TypeError, match="TrackView.box"):
        TrackView(1, np.array([0, 0, 1, 1], np.float64), None, None, None, "confirmed")


# ---- video --------------------------------------------------------------------------------------


def _read_back(path: Path) -> tuple[list[np.ndarray], av.VideoStream, Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return frames, stream, rate


@pytest.mark.parametrize(
    ("width", "height", "fps", "expected_rate"),
    [(64, 48, 25.0, Fraction(25)), (33, 21, 30000 / 1001, Fraction(30000, 1001))],
)
def test_video_writer_one_output_frame_per_input_frame(tmp_path, width, height, fps, expected_rate):
    path = tmp_path / "out" / "clip.mp4"
    n = 23
    with VideoWriter(path, fps, width, height) as writer:
        for i in range(n):
            writer.write(np.full((height, width, 3), 8 * i, np.uint8))
    assert writer.frames_written == n
    frames, stream, rate = _read_back(path)
    assert len(frames) == n
    assert rate == expected_rate
    assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
    assert (stream.width, stream.height) == (width + width % 2, height + height % 2) == writer.output_size
    means = [float(f[:height, :width].mean()) for f in frames]
    assert means == sorted(means) and means[-1] - means[0] > 100  # every frame, in order


def test_video_writer_colours_and_preset(tmp_path):
    """BGR in, the same colours back (BT.601 limited range, as FFmpeg reads it), any x264 preset."""
    bgr = np.zeros((64, 96, 3), np.uint8)
    bgr[:, :32] = (255, 0, 0)  # blue
    bgr[:, 32:64] = (0, 255, 0)  # green
    bgr[:, 64:] = (40, 80, 200)  # a skin-like red-orange
    sizes = {}
    for preset in ("ultrafast", "veryfast"):
        path = tmp_path / f"{preset}.mp4"
        with VideoWriter(path, 25, 96, 64, VideoSettings(crf=10, preset=preset)) as writer:
            for _ in range(5):
                writer.write(bgr)
        frames, _, _ = _read_back(path)
        assert len(frames) == 5
        for x0 in (0, 32, 64):
            got = frames[-1][16:48, x0 + 8 : x0 + 24].reshape(-1, 3).mean(axis=0)
            want = bgr[0, x0].astype(float)
            assert np.abs(got - want).max() < 6, (preset, x0, got, want)
        sizes[preset] = path.stat().st_size
    assert sizes["ultrafast"] != sizes["veryfast"]  # the preset reached the encoder


def test_video_writer_closes_on_error_and_rejects_wrong_sizes(tmp_path):
    path = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(path, 10, 32, 32) as writer:
        for _ in range(3):
            writer.write(np.zeros((32, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="32x32"):
            writer.write(np.zeros((16, 32, 3), np.uint8))
        raise RuntimeError("boom")
    assert len(_read_back(path)[0]) == 3
    writer.close()  # twice is fine
    with pytest.raises(OutputError, match="closed"):
        writer.write(np.zeros((32, 32, 3), np.uint8))


def test_video_writer_unwritable_path_names_it(tmp_path):
    for path in _unwritable_paths(tmp_path, "clip.mp4"):
        with pytest.raises(OutputError) as info:
            VideoWriter(path, 25, 64, 48)
        message = str(info.value)
        assert str(path) in message and "\n" not in message


def test_video_writer_write_error_names_the_path(tmp_path):
    """A file-size limit makes writes fail mid-stream (EFBIG), like a full disk."""
    path = tmp_path / "big.mp4"
    result = _run_python(f"""
        import resource, signal
        import numpy as np
        from stream.outputs import OutputError
        from stream.outputs.video import VideoWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
        rng = np.random.default_rng(0)
        writer = VideoWriter({str(path)!r}, 30, 128, 96)
        try:
            for _ in range(300):
                writer.write(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
            writer.close()
        except OutputError as exc:
            print("OutputError:", exc)
        finally:
            try:
                writer.close()
            except OutputError:
                pass
    """)
    assert result.returncode == 0, result.stderr
    assert f"OutputError: cannot write video output {path}" in result.stdout or (
        f"OutputError: cannot finish video output {path}" in result.stdout
    )


# ---- events: the journal and the recorder --------------------------------------------------------


def _event(i: int, stream: str = "cam1", epoch: int = 0, **extra) -> Event:
    kind = EventKind.IDENTITY_ASSIGNED if i % 2 else EventKind.TRACK_STARTED
    track = TrackKey(stream, epoch, i)
    event = Event.of_track(float(i), kind, track, person="alice", score=0.5, extra=tuple(extra.items()))
    return event.at(1000.0 + i)


RUN = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def _record(event: Event) -> EventRecord:
    assert event.time is not None
    return EventRecord.from_event(event, run_id=RUN, time=event.time, pts_s=event.pts_s)


def test_journal_writes_each_record_as_one_masked_line(tmp_path):
    path = tmp_path / "ev" / "events.jsonl"
    with EventJournal(path) as journal:
        journal.write(_record(_event(0)))
        journal.write(_record(_event(1, stream=SECRET_URL, source=SECRET_URL, nested={"urls": [SECRET_URL]}, epoch=2)))
        journal.write(_record(Event.of_stream(1002.0, "cam1", EventKind.STREAM_DOWN, 0, f"read failed: {SECRET_URL}")))
    text = path.read_text()
    assert "hunter2" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["kind"] for line in lines] == ["track_started", "identity_assigned", "stream_down"]
    for line in lines:
        assert {"time", "pts_s", "run_id", "stream", "kind", "epoch", "track_id", "person", "score"} <= line.keys()
    assert lines[0]["time"] == "1970-01-01T00:16:40.000Z" and lines[0]["pts_s"] == 0.0 and lines[0]["run_id"] == RUN
    assert lines[1]["stream"] == "rtsp://admin:***@10.0.0.5/cam" and lines[1]["epoch"] == 2
    assert lines[1]["nested"] == {"urls": ["rtsp://admin:***@10.0.0.5/cam"]}
    assert lines[2]["pts_s"] is None and lines[2]["track_id"] is None and lines[2]["epoch"] == 0


def test_journal_lines_flushed_survive_kill_9(tmp_path):
    path, k = tmp_path / "events.jsonl", 17
    result = _run_python(f"""
        import os, signal
        from pathlib import Path
        from stream.outputs.events import EventJournal
        from stream.store.records import EventRecord
        from stream.types import Event, EventKind, TrackKey
        journal = EventJournal(Path({str(path)!r}))
        for i in range({k}):
            event = Event.of_track(float(i), EventKind.TRACK_STARTED, TrackKey("cam", 0, i))
            journal.write(EventRecord.from_event(event, run_id={RUN!r}, time=1000.0 + i, pts_s=float(i)))
        journal.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert [json.loads(line)["track_id"] for line in path.read_text().splitlines()] == list(range(k))


def test_journal_unwritable_path_names_it(tmp_path):
    for path in _unwritable_paths(tmp_path, "events.jsonl"):
        with pytest.raises(OutputError) as info:
            EventJournal(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    journal = EventJournal(tmp_path / "ok.jsonl")
    journal.close()
    journal.close()
    with pytest.raises(OutputError, match="closed"):
        journal.write(_record(_event(0)))


def test_recorder_writes_journal_store_tracks_and_faces(tmp_path):
    """Events to the journal and the store (same fields), one track row per key from its start to its
    end, and the face of each ended track with its template and best crop."""
    store = open_store(tmp_path / "events.db")
    run = RunRecord(RUN, 999.0)
    journal = EventJournal(tmp_path / "events.jsonl")
    recorder = EventRecorder(run, journal=journal, store=store, snapshots=tmp_path / "snaps")
    key = TrackKey(SECRET_URL, 0, 1)
    crop = np.full((112, 112, 3), 120, np.uint8)
    recorder.snapshot(key, crop)
    started = Event.of_track(0.5, EventKind.TRACK_STARTED, key, None, 0.99).at(1000.5)
    named = Event.of_track(0.9, EventKind.IDENTITY_ASSIGNED, key, "alice", 0.7, (("votes", 2),)).at(1000.9)
    ended = Event.of_track(3.0, EventKind.TRACK_ENDED, key, "alice", 0.72).at(1003.0)
    recorder.events([started, named])
    recorder.events([ended])
    template = np.eye(8, dtype=np.float32)[2]
    recorder.faces([TrackFace(key, template, 21.5, "facenet:test", crop, "alice", None)])
    recorder.close(1010.0)

    reader = open_store(tmp_path / "events.db", create=False)
    try:
        rows = reader.events(EventQuery(newest_first=False))
        assert [(r.kind, r.time, r.pts_s, r.run_id) for r in rows] == [
            ("track_started", 1000.5, 0.5, RUN),
            ("identity_assigned", 1000.9, 0.9, RUN),
            ("track_ended", 1003.0, 3.0, RUN),
        ]
        assert rows[1].snapshot == str(snapshot_path(tmp_path / "snaps", key)) and "hunter2" not in rows[1].stream
        lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert [line["kind"] for line in lines] == [r.kind for r in rows]
        assert lines[1]["snapshot"] == rows[1].snapshot and lines[1]["votes"] == 2
        (track,) = reader.tracks()
        assert (track.first_time, track.last_time, track.first_pts, track.last_pts) == (1000.5, 1003.0, 0.5, 3.0)
        assert (track.person, track.run_id, track.snapshot) == ("alice", RUN, rows[1].snapshot)
        (face,) = reader.faces()
        assert (face.first_time, face.last_time, face.person, face.model_id) == (1000.5, 1003.0, "alice", "facenet:test")
        np.testing.assert_array_equal(face.embedding, template)
        assert reader.face_crop(face.face_id)[:2] == b"\xff\xd8"
        (stored_run,) = reader.runs()
        assert (stored_run.run_id, stored_run.ended) == (RUN, 1010.0)
    finally:
        reader.close()


# ---- snapshots ----------------------------------------------------------------------------------


def test_save_snapshot_writes_a_jpeg_and_replaces_it(tmp_path):
    crop = np.zeros((64, 48, 3), np.uint8)
    crop[:, :24] = (0, 0, 255)
    crop.flags.writeable = False
    path = save_snapshot(tmp_path / "snaps", TrackKey(SECRET_URL, 1, 3), crop)
    assert path.parent == tmp_path / "snaps" and path.suffix == ".jpg"
    assert "hunter2" not in path.name and "_e1_t3" in path.name
    again = save_snapshot(tmp_path / "snaps", TrackKey(SECRET_URL, 1, 3), np.full((64, 48, 3), 200, np.uint8))
    assert again == path
    image = cv2.imread(str(path))
    assert image.shape == (64, 48, 3) and abs(float(image.mean()) - 200) < 3
    assert [p.name for p in (tmp_path / "snaps").iterdir()] == [path.name]  # no temp files left


def test_save_snapshot_unwritable_folder_names_it(tmp_path):
    for folder in [p.parent for p in _unwritable_paths(tmp_path, "x")]:
        with pytest.raises(OutputError, match="cannot open snapshot") as info:
            save_snapshot(folder, TrackKey("cam", 0, 1), np.zeros((8, 8, 3), np.uint8))
        assert str(folder) in str(info.value)


# ---- MOT ----------------------------------------------------------------------------------------


def _snap(track_id: int, box, state=TrackState.CONFIRMED, score=0.9) -> TrackSnapshot:
    return TrackSnapshot(
        track_id=track_id,
        state=state,
        box=np.array(box, np.float32),
        score=score,
        det_index=0,
        age=1,
        hits=1,
        time_since_update_s=0.0,
    )


def test_mot_writer_lines(tmp_path):
    path = tmp_path / "mot" / "hyp.txt"
    with MotWriter(path) as mot:
        assert mot.write(0, 0, [_snap(2, (10, 20, 50, 80.5)), _snap(1, (0.125, 1, 2, 3), score=1.0)]) == 2
        assert (
            mot.write(1, 0, [_snap(-1, (0, 0, 1, 1), TrackState.TENTATIVE), _snap(3, (0, 0, 4, 4), TrackState.LOST)])
            == 0
        )
        mot.write(2, 0, [_snap(2, (11, 21, 51, 81))])
        mot.write(3, 1, [_snap(1, (5, 5, 9, 9))])  # a reconnect: track 1 of epoch 1 is another track
        with pytest.raises(ValueError, match="epoch went back"):
            mot.write(4, 0, [])
    assert path.read_text().splitlines() == [
        "1,1,0.12,1.00,1.88,2.00,1.00,-1,-1,-1",
        "1,2,10.00,20.00,40.00,60.50,0.90,-1,-1,-1",
        "3,2,11.00,21.00,40.00,60.00,0.90,-1,-1,-1",
        "4,3,5.00,5.00,4.00,4.00,0.90,-1,-1,-1",
    ]
    with pytest.raises(OutputError):
        MotWriter(_unwritable_paths(tmp_path, "hyp.txt")[0])


# ---- summary ------------------------------------------------------------------------------------


def test_run_summary_json_and_table():
    p50, p95 = latency_percentiles_ms([0.010, 0.020, 0.030, 0.040])
    cam = RunSummary(100, 98, 2, 29.5, 3, {TrackKey("cam1", 0, 1): "alice"}, 1, p50, p95, decode_errors=2)
    identities = {TrackKey("cam1", 0, 1): "alice", TrackKey("cam1", 0, 2): None, TrackKey("cam1", 1, 1): "bob"}
    total = RunSummary(
        100, 98, 2, 29.5, 3, identities, 1, p50, p95, per_stream={SECRET_URL: cam}, decode_errors=2, detector_fallbacks=1
    )
    data = json.loads(total.to_json())
    keys = {
        "frames_in",
        "frames_processed",
        "frames_dropped",
        "fps",
        "tracks",
        "identities",
        "reconnects",
        "latency_p50_ms",
        "latency_p95_ms",
        "per_stream",
        "decode_errors",
        "detector_fallbacks",
        "strangers",
    }
    assert set(data) == keys
    (stream_name,) = data["per_stream"]
    assert "hunter2" not in stream_name and set(data["per_stream"][stream_name]) == keys
    assert data["identities"] == {"cam1:1": "alice", "cam1:2": None, "cam1#1:1": "bob"}
    assert (data["decode_errors"], data["detector_fallbacks"]) == (2, 1)
    assert data["latency_p50_ms"] == pytest.approx(25.0)
    table = total.table()
    assert "total" in table and "hunter2" not in table and "cam1#1:1=bob" in table
    assert "corrupt packets/frames skipped: 2; detection batches retried frame by frame: 1" in table
    assert len({len(line) for line in table.splitlines()[:4]}) == 1  # fixed width rows
    assert latency_percentiles_ms([]) == (None, None)
    assert json.loads(RunSummary(0, 0, 0, 0.0, 0).to_json())["latency_p95_ms"] is None


# ---- metrics ------------------------------------------------------------------------------------


def test_metrics_served_over_http_and_shut_down():
    metrics = Metrics()
    metrics.frames_in(SECRET_URL, 5)
    metrics.frames_processed("cam1", 4)
    metrics.frames_dropped("cam1")
    metrics.reconnect("cam1")
    metrics.set_queue_depth("detect", 3)
    metrics.observe_latency("detect", 0.012)
    server = metrics.serve(0)
    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
    for name in (
        "frames_in_total",
        "frames_processed_total",
        "frames_dropped_total",
        "reconnects_total",
        "queue_depth",
        "stage_latency_seconds_bucket",
    ):
        assert name in body
    assert "hunter2" not in body and 'frames_in_total{stream="rtsp://admin:***@10.0.0.5/cam"} 5.0' in body
    assert 'queue_depth{queue="detect"} 3.0' in body
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)
    # each Metrics has its own registry: a second one starts from zero
    assert b"frames_in_total{" not in Metrics().render()
