"""Shared fixtures. Real data is read from ../shared/data; tests skip with a reason when absent."""

from __future__ import annotations

import datetime
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from scripts.pg_server import PgServer

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"  # the RTSP test server runs on Debian's python3-gi
RTSP_SKIP = (
    "RTSP test server unavailable: needs /usr/bin/python3 with gi and GstRtspServer "
    "(apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)"
)
SHARED_DATA = Path(os.environ.get("ADAFACE_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """With several workers (``make test``: pytest-xdist), make the artifacts every worker reads from the
    repository once, before they start: FaceNet's converted weights (checkpoints/) and the demo clip
    and gallery (recordings/.demo). Workers making them at the same time would race."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    from stream.demo import prepare_demo
    from stream.faces.facenet_convert import ensure_facenet_weights

    ensure_facenet_weights(REPO / "checkpoints")
    prepare_demo(REPO / "recordings" / ".demo")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real test images and videos (../shared/data), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set ADAFACE_SHARED_DATA)")
    return SHARED_DATA


def unix_time(line: dict) -> float:
    """An event line's ``time`` (UTC ISO 8601, milliseconds) as Unix seconds."""
    return datetime.datetime.fromisoformat(line["time"].replace("Z", "+00:00")).timestamp()


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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for the session (tests/pg_server.py), or skip when the binaries are
    missing. Tests that stop or freeze it must start or thaw it again; it is restarted here if not."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg 3 is not installed (requirements/lock.txt)")
    from scripts.pg_server import PgServer, find_pg_bin

    bin_dir, why = find_pg_bin()
    if bin_dir is None:
        pytest.skip(why)
    server = PgServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.close()
