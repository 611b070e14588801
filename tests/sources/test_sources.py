"""Frame sources: files, image folders, lavfi/webcam and RTSP (a real GStreamer server).

Fixtures are generated with PyAV in tmp folders. RTSP tests start scripts/rtsp_server.py with
the system Python in its own process group and always kill it in ``finally``; they skip when
the Debian packages (python3-gi, gir1.2-gst-rtsp-server-1.0, GStreamer plugins) are missing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from stream.config import StreamConfig
from stream.sources import (
    Backoff,
    FrameSource,
    ImageFolderSource,
    LiveSource,
    LiveTarget,
    SourceError,
    SourceStats,
    SourceStatus,
    VideoFileSource,
    open_source,
)
from stream.sources.base import pts_or_fallback
from tests.conftest import REPO, SYSTEM_PYTHON
from tests.fakes import Collector

SERVER = REPO / "scripts" / "rtsp_server.py"
W, H = 160, 120


# ---------------------------------------------------------------- fixture media


def square_image(i: int, noise: bool = False) -> np.ndarray:
    """A white 20x20 square moving 4 px right per frame (optionally on noise, for big frames)."""
    if noise:
        img = np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)
    else:
        img = np.zeros((H, W, 3), np.uint8)
    x = 4 * i % (W - 20)
    img[50:70, x : x + 20] = 255
    return img


def write_video(
    path: Path,
    n: int,
    codec: str = "libx264",
    fps: int = 30,
    noise: bool = False,
    faststart: bool = False,
    pix_fmt: str = "yuv420p",
) -> Path:
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        if codec == "libx264":
            # baseline, no B-frames, a keyframe every second: what an RTSP camera sends
            stream.options = {"profile": "baseline", "g": str(fps), "bf": "0", "preset": "ultrafast"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(square_image(i, noise), format="bgr24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def square_x(image: np.ndarray) -> int:
    """Column of the moving square's left edge (brightest columns in its rows)."""
    band = image[55:65].astype(np.float32).mean(axis=(0, 2))
    return int(np.argmax(band > 128))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def clip(media: Path) -> Path:
    return write_video(media / "clip.mp4", 30)


@pytest.fixture(scope="module")
def rtsp_clip(media: Path) -> Path:
    """10 s of baseline H.264 (the RTSP server plays it in real time, per client)."""
    return write_video(media / "rtsp.mp4", 300)


# ---------------------------------------------------------------- consumer helpers


def run_file(source: FrameSource, collector: Collector | None = None) -> tuple[SourceStats, Collector]:
    collector = collector or Collector()
    stats = source.run(collector, threading.Event())
    return stats, collector


class Running:
    """A source running in its own thread, as the pipeline runs it."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.collector = Collector()
        self.stop = threading.Event()
        self.stats: SourceStats | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=f"source-{source.stream_id}", daemon=True)

    def _main(self) -> None:
        try:
            self.stats = self.source.run(self.collector, self.stop)
        except BaseException as exc:
            self.error = exc

    def stop_and_join(self, timeout: float) -> float:
        """Set stop, join; return how long it took (asserts it ended)."""
        start = time.monotonic()
        self.stop.set()
        self.thread.join(timeout)
        took = time.monotonic() - start
        assert not self.thread.is_alive(), f"source did not stop within {timeout} s"
        assert self.error is None, f"source raised {self.error!r}"
        return took


@contextlib.contextmanager
def running(source: FrameSource) -> Iterator[Running]:
    run = Running(source)
    run.thread.start()
    try:
        yield run
    finally:
        run.stop.set()
        run.thread.join(10)


def frames_in(c: Collector, n: int, epoch: int | None = None) -> bool:
    return sum(1 for f in c.frames if epoch is None or f.epoch == epoch) >= n


def has_status(kind: str, epoch: int | None = None) -> Callable[[Collector], bool]:
    return lambda c: any(s.kind == kind and (epoch is None or s.epoch == epoch) for s in c.statuses)


# ---------------------------------------------------------------- pure parts


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(0.5, 8.0)
    assert [b.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next() == 0.5
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)


def test_pts_fallback_is_finite_and_non_decreasing() -> None:
    assert pts_or_fallback(1.25, 7, 30.0, None) == 1.25
    assert pts_or_fallback(None, 15, 30.0, None) == pytest.approx(0.5)
    assert pts_or_fallback(None, 16, 30.0, 0.5) == pytest.approx(0.5 + 1 / 30)
    assert pts_or_fallback(0.1, 16, 30.0, 0.5) == pytest.approx(0.5 + 1 / 30)  # backwards → continue
    assert pts_or_fallback(float("nan"), 3, 10.0, None) == pytest.approx(0.3)


def test_live_targets_use_the_options_that_avoid_hangs_and_mask_secrets() -> None:
    rtsp = LiveTarget.for_url("rtsp://admin:hunter2@10.0.0.5:554/stream1", read_timeout_s=3.0)
    assert rtsp.options["rtsp_transport"] == "tcp"
    assert rtsp.options["timeout"] == "3000000"
    assert "analyzeduration" in rtsp.options
    assert "hunter2" not in rtsp.label and "admin:***@" in rtsp.label
    rtmp = LiveTarget.for_url("rtmp://host/live/key")
    assert "timeout" not in rtmp.options  # for rtmp 'timeout' would make FFmpeg listen as a server
    assert rtmp.options["rw_timeout"] == "3000000"
    lavfi = LiveTarget.for_url("lavfi:testsrc=size=64x48:rate=5")
    assert (lavfi.target, lavfi.format) == ("testsrc=size=64x48:rate=5", "lavfi")
    cam = LiveTarget.for_webcam(2)
    assert (cam.target, cam.format) == ("/dev/video2", "v4l2")
    assert LiveTarget.for_webcam("/dev/video1").target == "/dev/video1"
    with pytest.raises(SourceError):
        LiveTarget.for_url("not a url")


# ---------------------------------------------------------------- files


def test_video_file_yields_every_frame_in_order(clip: Path) -> None:
    source = VideoFileSource("cam", clip)
    assert not source.is_live
    assert source.nominal_fps == pytest.approx(30.0)
    stats, c = run_file(source)
    frames = c.frames
    assert [f.index for f in frames] == list(range(30))
    assert all(f.epoch == 0 and f.stream_id == "cam" for f in frames)
    pts = [f.pts_s for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert pts[1] - pts[0] == pytest.approx(1 / 30, abs=1e-3)
    assert frames[0].image.shape == (H, W, 3) and not frames[0].image.flags.writeable
    assert [square_x(f.image) for f in frames[:10]] == pytest.approx([4 * i for i in range(10)], abs=2)
    assert c.statuses == []
    assert stats == SourceStats(frames_read=30, decode_errors_skipped=0, reconnects=0, epochs=1)


@pytest.mark.parametrize(
    ("suffix", "codec", "pix_fmt"),
    [("mkv", "libx264", "yuv420p"), ("mov", "libx264", "yuv420p"), ("avi", "mpeg4", "yuv420p"), ("gif", "gif", "rgb8")],
)
def test_other_containers_and_gif(tmp_path: Path, suffix: str, codec: str, pix_fmt: str) -> None:
    path = write_video(tmp_path / f"clip.{suffix}", 12, codec=codec, fps=10, pix_fmt=pix_fmt)
    stats, c = run_file(VideoFileSource("cam", path))
    assert stats.frames_read == 12 and [f.index for f in c.frames] == list(range(12))
    assert all(b.pts_s > a.pts_s for a, b in itertools.pairwise(c.frames))


def test_truncated_mp4_yields_the_frames_before_the_cut(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.mp4", 30, noise=True, faststart=True)
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    start = time.monotonic()
    stats, c = run_file(VideoFileSource("cam", cut))
    assert time.monotonic() - start < 10
    assert 5 <= stats.frames_read < 30
    assert [f.index for f in c.frames] == list(range(stats.frames_read))
    assert stats.decode_errors_skipped >= 0


def test_corrupt_bytes_mid_file_are_skipped_not_fatal(tmp_path: Path) -> None:
    path = write_video(tmp_path / "bad.mp4", 30, noise=True, faststart=True)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    stats, c = run_file(VideoFileSource("cam", path))
    assert stats.frames_read >= 20
    assert [f.index for f in c.frames] == list(range(stats.frames_read))


def test_truncated_mp4_without_its_index_cannot_be_opened(tmp_path: Path, clip: Path) -> None:
    cut = tmp_path / "no_moov.mp4"
    data = clip.read_bytes()  # moov at the end (no faststart): the first half has no index
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="no_moov.mp4"):
        VideoFileSource("cam", cut)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [("zero.mp4", b"", "empty"), ("notes.mp4", b"this is not a video\n" * 10, "not a video")],
)
def test_unreadable_files_raise_one_line_errors_naming_the_file(
    tmp_path: Path, name: str, content: bytes, words: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError) as info:
        VideoFileSource("cam", path)
    message = str(info.value)
    assert name in message and words in message and "\n" not in message


def test_missing_file_and_folder_raise_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        open_source(StreamConfig(name="a", path=tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="no images"):
        ImageFolderSource("a", tmp_path)


def test_file_source_stops_when_emit_refuses_or_stop_is_set(clip: Path) -> None:
    source = VideoFileSource("cam", clip)
    stats, c = run_file(source, Collector(stop_after_frames=5))
    assert stats.frames_read == 5 and len(c.frames) == 5
    stop = threading.Event()
    stop.set()
    assert source.run(Collector(), stop).frames_read == 0


def test_image_folder_in_natural_order_skips_non_images(tmp_path: Path) -> None:
    import cv2

    for i in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), square_image(i))
    (tmp_path / "readme.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"not really a jpeg")
    source = open_source(StreamConfig(name="imgs", path=tmp_path), image_fps=10.0)
    assert isinstance(source, ImageFolderSource) and not source.is_live
    assert [p.name for p in source.image_paths] == ["broken.jpg", "img1.png", "img2.png", "img10.png"]
    stats, c = run_file(source)
    assert stats.frames_read == 3 and stats.files_skipped == 2
    assert [f.index for f in c.frames] == [0, 1, 2]
    assert [f.pts_s for f in c.frames] == pytest.approx([0.0, 0.1, 0.2])
    assert [square_x(f.image) for f in c.frames] == [4, 8, 40]


def test_open_source_picks_the_class(tmp_path: Path, clip: Path) -> None:
    assert isinstance(open_source(StreamConfig(name="f", path=clip)), VideoFileSource)
    live = open_source(StreamConfig(name="r", url="rtsp://u:p@127.0.0.1:9/cam"))  # no connection yet
    assert isinstance(live, LiveSource) and live.is_live
    cam = open_source(StreamConfig(name="w", webcam=0))
    assert isinstance(cam, LiveSource) and cam.target.target == "/dev/video0" and cam.target.format == "v4l2"
    graph = open_source(StreamConfig(name="l", url=f"lavfi:movie={clip}"))
    assert isinstance(graph, LiveSource) and graph.target.format == "lavfi"


# ---------------------------------------------------------------- live without a server


def lavfi_url(clip: Path) -> str:
    return f"lavfi:movie={clip}:loop=0,setpts=N/(30*TB),realtime"


def test_lavfi_live_source_runs_in_real_time_and_stops_fast(clip: Path) -> None:
    source = LiveSource.from_url("sim", lavfi_url(clip))
    with running(source) as run:
        assert run.collector.wait_for(lambda c: frames_in(c, 10), timeout=30.0), "no frames"
        time.sleep(1.0)
        took = run.stop_and_join(timeout=30.0)
    frames, statuses = run.collector.frames, run.collector.statuses
    assert took < 5.0  # shutdown bound (generous): stop is checked between frames
    assert statuses[0].kind == "up" and statuses[0].epoch == 0
    assert isinstance(run.collector.items[0], SourceStatus)
    assert 15 <= len(frames) <= 150  # ~1.3 s at 30 fps, loosely
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.epoch == 0 for f in frames)
    assert run.stats is not None and run.stats.frames_read == len(frames) and run.stats.epochs == 1


@pytest.mark.slow
def test_stall_watchdog_reconnects_a_stream_that_stops_delivering_frames() -> None:
    # one frame per second, but the watchdog allows only 0.3 s between frames: every gap is a stall
    source = LiveSource.from_url(
        "slow", "lavfi:testsrc=size=64x48:rate=1,realtime", stall_s=0.3, backoff_initial_s=0.1, backoff_max_s=0.2
    )
    with running(source) as run:
        assert run.collector.wait_for(has_status("up", 1), timeout=30.0), "stall not followed by a reconnect"
        run.stop_and_join(timeout=30.0)
    kinds = [(s.kind, s.epoch) for s in run.collector.statuses]
    assert kinds[:3] == [("up", 0), ("down", 0), ("up", 1)]
    assert "stalled" in run.collector.statuses[1].reason
    assert [f.epoch for f in run.collector.frames][:2] == [0, 1]


def test_missing_webcam_keeps_retrying_without_frames() -> None:
    source = LiveSource.from_webcam("cam", "/dev/video99", backoff_initial_s=0.1, backoff_max_s=0.4)
    with running(source) as run:
        assert run.collector.wait_for(has_status("down"), timeout=30.0)
        time.sleep(1.0)
        took = run.stop_and_join(timeout=30.0)
    assert took < 5.0  # shutdown bound (generous): the backoff wait is stop.wait()
    assert run.collector.frames == []
    assert [s.kind for s in run.collector.statuses] == ["down"]
    assert run.stats is not None and run.stats.reconnects >= 2


# ---------------------------------------------------------------- RTSP (GStreamer server)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RtspServer:
    """scripts/rtsp_server.py in its own process group; ``kill`` is SIGKILL to the whole group."""

    def __init__(self, port: int, args: list[str]) -> None:
        self.port = port
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self, timeout: float = 10.0) -> None:
        cmd = [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        seen = b""
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            seen += line
            if line.strip() == b"ready":
                return
        self.kill()
        raise AssertionError(f"RTSP server did not become ready: {seen.decode(errors='replace')!r}")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


@contextlib.contextmanager
def rtsp_server(args: list[str], port: int | None = None) -> Iterator[RtspServer]:
    server = RtspServer(port or free_port(), args)
    try:
        server.start()
        yield server
    finally:
        server.kill()


def fast_live(url: str, **kwargs: float) -> LiveSource:
    return LiveSource.from_url("rtsp", url, backoff_initial_s=0.25, backoff_max_s=1.0, **kwargs)


@pytest.mark.slow
@pytest.mark.usefixtures("rtsp_server_available")
def test_rtsp_frames_then_kill_restart_reconnects_with_a_new_epoch(rtsp_clip: Path) -> None:
    port = free_port()
    server = RtspServer(port, ["--file", str(rtsp_clip)])
    try:
        server.start()
        with running(fast_live(server.url)) as run:
            c = run.collector
            assert c.wait_for(lambda c: frames_in(c, 15), timeout=10.0), "no RTSP frames"
            assert c.statuses[0].kind == "up" and c.statuses[0].epoch == 0
            assert c.frames[0].image.shape == (H, W, 3)

            server.kill()
            assert c.wait_for(has_status("down", 0), timeout=10.0), "server kill not seen as down"
            before = len(c.frames)

            server.start()
            assert c.wait_for(has_status("up", 1), timeout=15.0), "no reconnect after restart"
            assert c.wait_for(lambda c: frames_in(c, 10, epoch=1), timeout=10.0)
            took = run.stop_and_join(timeout=30.0)
        frames = c.frames
        assert [s.kind for s in c.statuses][:3] == ["up", "down", "up"]
        assert [f.index for f in frames] == list(range(len(frames)))  # index keeps counting across epochs
        assert {f.epoch for f in frames[:before]} == {0} and frames[-1].epoch == 1
        epoch1 = [f.pts_s for f in frames if f.epoch == 1]
        assert all(b >= a for a, b in itertools.pairwise(epoch1))
        assert took < 5.0  # shutdown bound (generous)
        assert run.stats is not None and run.stats.epochs == 2 and run.stats.reconnects >= 1
    finally:
        server.kill()


@pytest.mark.slow
@pytest.mark.usefixtures("rtsp_server_available")
def test_rtsp_frozen_server_is_detected_without_hanging(rtsp_clip: Path) -> None:
    server = RtspServer(free_port(), ["--file", str(rtsp_clip)])
    try:
        server.start()
        with running(fast_live(server.url)) as run:
            c = run.collector
            assert c.wait_for(lambda c: frames_in(c, 10), timeout=10.0), "no RTSP frames"
            server.signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            assert c.wait_for(has_status("down"), timeout=12.0), "SIGSTOPped server not detected"
            detected_after = time.monotonic() - frozen_at
            run.stop_and_join(timeout=8.0)  # may be mid-connect to the frozen server: open timeout bounds it
        assert detected_after < 10.5
        down = c.statuses[-1]
        assert down.kind == "down" and ("timed out" in down.reason or "stalled" in down.reason)
    finally:
        server.signal(signal.SIGCONT)
        server.kill()


@pytest.mark.slow
@pytest.mark.usefixtures("rtsp_server_available")
def test_refused_url_keeps_retrying_and_stops_promptly(caplog: pytest.LogCaptureFixture) -> None:
    url = f"rtsp://viewer:s3cret@127.0.0.1:{free_port()}/cam"
    source = fast_live(url)
    with caplog.at_level("WARNING", logger="stream.sources"), running(source) as run:
        assert run.collector.wait_for(has_status("down"), timeout=30.0)
        time.sleep(1.5)
        took = run.stop_and_join(timeout=30.0)
    assert run.collector.frames == []
    [down] = run.collector.statuses
    assert "refused" in down.reason.lower() and "s3cret" not in down.reason
    assert run.stats is not None and run.stats.reconnects >= 2 and run.stats.epochs == 0
    assert took < 5.0  # shutdown bound (generous): the backoff wait is stop.wait()
    assert "s3cret" not in caplog.text and "still down" in caplog.text


@pytest.mark.slow
@pytest.mark.usefixtures("rtsp_server_available")
def test_rtsp_loop_server_serves_an_endless_pattern() -> None:
    with rtsp_server(["--loop", "--size", "160x120"]) as server, running(fast_live(server.url)) as run:
        assert run.collector.wait_for(lambda c: frames_in(c, 20), timeout=30.0), "no frames from --loop"
        took = run.stop_and_join(timeout=30.0)
    assert took < 5.0  # shutdown bound (generous)
    assert run.collector.frames[0].image.shape == (120, 160, 3)
