"""Frames carry wall-clock time: a file's creation_time (else the run start) plus pts; live: capture time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np

from stream.sources import ImageFolderSource, LiveSource, VideoFileSource
from stream.types import Frame, iso_utc

CREATED = "2026-11-30T08:15:00.000000Z"
CREATED_UNIX = 1796026500.0


def _clip(path: Path, frames: int, creation_time: str | None) -> Path:
    with av.open(str(path), mode="w") as container:
        if creation_time is not None:
            container.metadata["creation_time"] = creation_time
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), 10 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))
    return path


def _frames(source: object, limit: int | None = None) -> list[Frame]:
    got: list[Frame] = []

    def emit(item: object) -> bool:
        if isinstance(item, Frame):
            got.append(item)
        return limit is None or len(got) < limit

    source.run(emit, threading.Event())  # type: ignore[attr-defined]
    return got


def test_a_file_with_creation_time_counts_from_it(tmp_path: Path) -> None:
    frames = _frames(VideoFileSource("cam", _clip(tmp_path / "c.mp4", 5, CREATED)))
    assert len(frames) == 5
    assert [f.wall_time for f in frames] == [CREATED_UNIX + f.pts_s for f in frames]
    assert iso_utc(frames[1].wall_time) == "2026-11-30T08:15:00.100Z"


def test_a_file_without_counts_from_the_run_start(tmp_path: Path) -> None:
    before = time.time()
    frames = _frames(VideoFileSource("cam", _clip(tmp_path / "c.mp4", 3, None)))
    after = time.time()
    for frame in frames:
        assert frame.wall_time is not None
        assert before <= frame.wall_time - frame.pts_s <= after


def test_an_image_sequence_counts_from_the_run_start(tmp_path: Path) -> None:
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    before = time.time()
    frames = _frames(ImageFolderSource("seq", tmp_path, fps=5.0))
    assert [round(f.wall_time - before, 1) for f in frames if f.wall_time] == [0.0, 0.2, 0.4]


def test_a_live_source_stamps_the_capture_time() -> None:
    source = LiveSource.from_url("cam", "lavfi:testsrc=size=64x48:rate=25")
    before = time.time()
    frames = _frames(source, limit=5)
    after = time.time()
    assert len(frames) == 5
    assert all(f.wall_time is not None and before <= f.wall_time <= after for f in frames)
    assert [f.wall_time for f in frames] == sorted(f.wall_time for f in frames if f.wall_time is not None)
