"""Shared fixtures. Real data is read from ../shared/data; tests skip with a reason when absent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"  # the RTSP test server runs on Debian's python3-gi
RTSP_SKIP = (
    "RTSP test server unavailable: needs /usr/bin/python3 with gi and GstRtspServer "
    "(apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)"
)
SHARED_DATA = Path(os.environ.get("ADAFACE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real test images and videos (../shared/data), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set ADAFACE_SHARED_DATA)")
    return SHARED_DATA


def shared_file(root: Path, relative: str) -> Path:
    path = root / relative
    if not path.exists():
        pytest.skip(f"missing shared data file {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One intra-op thread: on a shared 2-core machine two threads oversubscribe badly."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def rtsp_server_available() -> None:
    """Skip unless scripts/rtsp_server.py can run (GStreamer's RTSP server through python3-gi)."""
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        ok = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        pytest.skip(RTSP_SKIP)


def app_config_text(tmp_path: Path) -> str:
    """Config YAML for app tests: outputs under tmp_path, the repo's checkpoints/ (FaceNet converted
    once), and a missing AdaFace checkpoint so the offline FaceNet is used. ``profile: default``
    keeps the tests' figures the same on machines with and without CUDA (``auto`` picks per machine)."""
    return (
        "profile: default\n"
        f"recognition:\n  checkpoints_dir: {REPO / 'checkpoints'}\n  checkpoint: {tmp_path / 'none.ckpt'}\n"
        f"outputs:\n  dir: {tmp_path / 'rec'}\n"
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The built-in demo clip and its gallery, made once per test module."""
    from stream.demo import prepare_demo

    return prepare_demo(tmp_path_factory.mktemp("demo"))
