"""The serve wiring with fake models: a live source, the web app in its thread while the pipeline runs,
everything stopped when the run ends; and a port in use is one clear error before anything is built."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from pathlib import Path

import pytest

from stream.app import RunOptions
from stream.config import WebConfig, parse_config
from stream.errors import UserError
from stream.faces.models import ModelOverrides, Models
from stream.web.serve import run_with_web
from tests.fakes import NoEmbedder, NoFaceDetector
from tests.web.conftest import jpeg_bytes


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def _post_image(url: str) -> tuple[int, bytes]:
    boundary = "b"
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        + jpeg_bytes()
        + b"\r\n--b--\r\n"
    )
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.status, r.read()


@pytest.mark.slow  # a 2.4 s live source (no models)
def test_run_with_web_serves_while_the_pipeline_runs_and_stops_with_it(tmp_path: Path) -> None:
    config = parse_config(f"outputs:\n  dir: {tmp_path / 'rec'}\n  annotated_video: false\n")
    options = RunOptions(
        sources=("lavfi:testsrc=size=160x120:rate=25,realtime",), max_frames=60, gallery=tmp_path / "none"
    )
    seen: dict[str, object] = {}
    done = threading.Event()

    def probe(url: str) -> None:
        def run() -> None:
            try:
                seen["health"] = json.loads(_get(url + "api/health")[1])
                seen["streams"] = json.loads(_get(url + "api/streams")[1])
                seen["latest"] = _get(url + "streams/stream0/latest.jpg")[1][:2]
                seen["identify"] = json.loads(_post_image(url + "api/identify")[1])
                seen["metrics"] = _get(url + "metrics")[1]
            except Exception as exc:  # reported by the assertions below
                seen["error"] = repr(exc)
            finally:
                done.set()

        seen["url"] = url
        threading.Thread(target=run, daemon=True).start()

    summary = run_with_web(
        config,
        options,
        ModelOverrides(),
        WebConfig(port=0),
        keep_serving=False,
        models=Models(NoFaceDetector(), NoEmbedder(), 8),
        api_detector=NoFaceDetector(),
        on_ready=probe,
    )
    assert done.wait(10)
    assert "error" not in seen, seen.get("error")
    assert summary.frames_in == 60 and 0 < summary.frames_processed <= 60  # live: a busy machine drops some
    assert seen["health"]["status"] == "ok"  # type: ignore[index]
    assert seen["streams"][0]["name"] == "stream0" and seen["streams"][0]["live"] is True  # type: ignore[index]
    assert seen["latest"] == b"\xff\xd8"
    assert seen["identify"] == []  # no face: the same empty list as run.py identify --json
    assert b"frames_processed_total" in seen["metrics"]  # type: ignore[operator]
    with pytest.raises(OSError):  # stopped with the run
        _get(str(seen["url"]) + "api/health")


def test_a_port_in_use_is_one_error_before_anything_is_built(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = parse_config(f"outputs:\n  dir: {tmp_path / 'rec'}\n")
        with pytest.raises(UserError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            run_with_web(
                config, RunOptions(sources=("nowhere.mp4",)), ModelOverrides(), WebConfig(port=port), keep_serving=False
            )
