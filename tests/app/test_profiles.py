"""``profile: auto`` and full-quality stills (issue 12, item 2): the first log lines name the profile
and why, still-image commands detect with the built-in detection settings whatever the profile, and
the video detector follows the profile."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stream.cli import log_profile, main
from stream.config import STILL_DETECTION_KEYS, DetectionConfig, parse_config
from tests.conftest import REPO, shared_file

NO_CUDA = (False, "no CUDA device")
OFFICE = "adaface/face_alignment/mtcnn_pytorch/images"


def test_first_log_lines_name_the_profile_and_why(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config("", cuda=NO_CUDA)
    with caplog.at_level(logging.INFO, logger="stream.cli"):
        log_profile(config, stills=False)
        log_profile(config, stills=True)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "profile: cpu (auto: no CUDA device)"
    det = config.detection
    assert lines[1].startswith(
        f"video: full detection every {det.every_n_frames} frames (min face {det.min_face_px} px"
    )
    assert "known faces re-found in between" in lines[1]
    assert lines[2] == "profile: cpu (auto: no CUDA device)"
    assert lines[3].startswith("still images: full-quality detection whatever the profile (min face 20 px")


def _config(tmp_path: Path, profile: str) -> Path:
    cfg = tmp_path / f"{profile}.yaml"
    cfg.write_text(
        f"profile: {profile}\n"
        f"recognition:\n  checkpoints_dir: {REPO / 'checkpoints'}\n  checkpoint: {tmp_path / 'none.ckpt'}\n"
        f"  device: cpu\ndetection:\n  device: cpu\n"
    )
    return cfg


@pytest.mark.slow
def test_build_models_gives_stills_the_full_quality_detector(tmp_path: Path) -> None:
    from stream.faces.models import ModelOverrides, build_models

    full = DetectionConfig()
    config = parse_config(_config(tmp_path, "cpu").read_text())
    video = build_models(config, ModelOverrides())
    stills = build_models(config, ModelOverrides(), stills=True)
    cpu = config.detection
    assert video.detector.settings.min_face_px == cpu.min_face_px  # type: ignore[attr-defined]
    assert video.detector.settings.detect_width == cpu.detect_width  # type: ignore[attr-defined]
    for models in (video.for_stills(), stills):
        settings = models.detector.settings  # type: ignore[attr-defined]
        got = (settings.min_face_px, settings.thresholds, settings.factor, settings.detect_width, settings.edge_pad)
        want = (full.min_face_px, full.thresholds, full.pyramid_factor, full.detect_width, full.edge_pad)
        assert got == want
    assert len(STILL_DETECTION_KEYS) == len(want)
    default = build_models(parse_config(_config(tmp_path, "default").read_text()), ModelOverrides())
    assert default.still_detector is None and default.for_stills() is default  # one detector suffices


@pytest.mark.slow
def test_embed_finds_the_same_faces_with_every_profile(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run.py embed` on the office group stills: the cpu profile finds every face the default finds."""
    folder = tmp_path / "office"
    folder.mkdir()
    for n in (1, 3):
        (folder / f"office{n}.jpg").symlink_to(shared_file(shared_data, f"{OFFICE}/office{n}.jpg"))
    rows = {}
    for profile in ("default", "cpu"):
        out = tmp_path / f"emb-{profile}"
        code = main(
            ["embed", "--config", str(_config(tmp_path, profile)), "--input-dir", str(folder), "--output-dir", str(out)]
        )
        err = capsys.readouterr().err
        assert code == 0, err
        assert f"profile: {profile} (set in the config)" in err.splitlines()[0]
        rows[profile] = (out / "faces.csv").read_text().splitlines()[1:]
    assert len(rows["cpu"]) == len(rows["default"]) >= 10
    boxes = {p: sorted(tuple(round(float(v)) for v in r.split(",")[2:6]) for r in rows[p]) for p in rows}
    for a, b in zip(boxes["cpu"], boxes["default"], strict=True):  # fast and stock MTCNN: same boxes
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1
