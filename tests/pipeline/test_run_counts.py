"""What a run skipped or retried reaches the summary and the metrics: corrupt frames a source
skipped, and detection batches retried frame by frame. Fake models, so no network is built."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stream.app import RunOptions, build_app
from stream.config import parse_config
from stream.faces.models import Models
from tests.fakes import NoEmbedder, NoFaceDetector


def test_skipped_images_and_detector_retries_are_in_the_summary_and_metrics(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((48, 64, 3), 20 * i, np.uint8))
    (folder / "05.png").write_bytes(b"not a png")  # a corrupt frame of this image sequence
    (folder / "09.png").write_bytes(b"")
    text = f"profile: default\ndetection:\n  max_batch: 2\noutputs:\n  dir: {tmp_path / 'rec'}\n"
    config = parse_config(text).resolve_paths(tmp_path)
    options = RunOptions(sources=(str(folder),), gallery=tmp_path / "nobody")
    detector = NoFaceDetector(fallback_every=3)
    app = build_app(config, options, models=Models(detector, NoEmbedder(), 8))
    summary = app.run()

    assert summary.frames_in == summary.frames_processed == 10
    assert summary.decode_errors == summary.per_stream["frames"].decode_errors == 2
    assert detector.calls >= 3 and summary.detector_fallbacks == detector.calls // 3
    metrics = app.writers.metrics.render().decode()
    assert 'decode_errors_total{stream="frames"} 2.0' in metrics
    assert f"detector_fallbacks_total {float(detector.calls // 3)}" in metrics
    table = summary.table()
    assert (
        f"corrupt packets/frames skipped: 2; detection batches retried frame by frame: {detector.calls // 3}" in table
    )
