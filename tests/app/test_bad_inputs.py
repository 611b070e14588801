"""A catalogue of bad inputs (issue "Reliability", items 2 and 5).

Each bad input either gets a clear one-line ``error: ...`` naming the file, field or URL with
exit code 2 (user mistake) / 1 (runtime failure), or is skipped with a warning and counted.
Never a traceback, never a hang: every subprocess has a timeout. Item 5: a password in a
stream URL appears in no output at all.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.cli import main
from stream.store import EventQuery, open_store
from tests.conftest import REPO, shared_file
from tests.fakes import PicklePayload
from tests.sources.test_sources import write_video

FACE = "facenet-pytorch/data/test_images/angelina_jolie/1.jpg"
PASSWORD = "S3cretPw"


# ---------------------------------------------------------------- helpers


def _config(tmp_path: Path, extra: str = "") -> Path:
    """Offline FaceNet (checkpoint missing), outputs and gallery in tmp_path."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"recognition:\n  checkpoints_dir: {REPO / 'checkpoints'}\n  checkpoint: {tmp_path / 'none.ckpt'}\n"
        f"outputs:\n  dir: {tmp_path / 'rec'}\ngallery:\n  dir: {tmp_path / 'gallery'}\n" + extra
    )
    return cfg


def _cli(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


def _error_line(err: str) -> str:
    """The one `error:` line of stderr (exactly one)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _run_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], source: Path, *extra: str) -> tuple[int, str, str]:
    args = ["run", "--config", str(_config(tmp_path)), "--source", str(source)]
    args += ["--output", str(tmp_path / "out.mp4"), "--summary", str(tmp_path / "summary.json"), *extra]
    return _cli(capsys, args)


def _frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Proc:
    """`python run.py ...` with stderr collected by a thread (so we can wait for a line)."""

    def __init__(self, args: list[str], cwd: Path, preexec_fn: Callable[[], None] | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=preexec_fn,
        )
        self.err_lines: list[str] = []
        self.out_text = ""
        self._err = threading.Thread(target=self._pump_err, daemon=True)
        self._out = threading.Thread(target=self._pump_out, daemon=True)
        self._err.start()
        self._out.start()

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err_lines.append(line)

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        self.out_text = self.proc.stdout.read()

    @property
    def err(self) -> str:
        return "".join(self.err_lines)

    def wait_for(self, text: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.err or self.proc.poll() is not None:
                return text in self.err
            time.sleep(0.1)
        return False

    def finish(self, timeout_s: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"process did not exit within {timeout_s}s; stderr:\n{self.err}")
        self._err.join(5)
        self._out.join(5)
        return code


# ---------------------------------------------------------------- videos


def test_zero_byte_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = tmp_path / "empty.mp4"
    clip.write_bytes(b"")
    code, _, err = _run_file(tmp_path, capsys, clip)
    assert code == 2
    assert "empty.mp4" in _error_line(err)


def test_truncated_mp4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = write_video(tmp_path / "full.mp4", 60, noise=True)
    clip = tmp_path / "truncated.mp4"
    clip.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # moov atom at the end: lost
    code, _, err = _run_file(tmp_path, capsys, clip)
    assert code == 2
    assert "truncated.mp4" in _error_line(err)


def test_non_video_with_mp4_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = tmp_path / "notes.mp4"
    clip.write_text("this is a shopping list, not a video\n" * 100)
    code, _, err = _run_file(tmp_path, capsys, clip)
    assert code == 2
    assert "notes.mp4" in _error_line(err)


@pytest.mark.slow
def test_corrupt_frames_mid_file_are_skipped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = write_video(tmp_path / "full.mp4", 90, noise=True, faststart=True)
    data = bytearray(full.read_bytes())
    mid = len(data) // 2
    rng = np.random.default_rng(7)
    data[mid : mid + 20_000] = rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()  # ~1.5 frames
    clip = tmp_path / "corrupt.mp4"
    clip.write_bytes(bytes(data))
    code, out, err = _run_file(tmp_path, capsys, clip)
    assert code == 0, err
    report = json.loads((tmp_path / "summary.json").read_text())
    assert 0 < report["frames_in"] < 90  # some frames lost, the rest decoded
    assert report["frames_processed"] == report["frames_in"]
    # file mode: the annotated output has exactly the frames decoded
    assert _frame_count(tmp_path / "out.mp4") == report["frames_in"]
    # the skips are counted in one warning naming the file
    warning = [line for line in err.splitlines() if "corrupt packet(s)/frame(s) skipped" in line]
    assert len(warning) == 1 and "corrupt.mp4" in warning[0], err
    assert f"{report['frames_in']} frames read" in warning[0]
    skipped = int(warning[0].split(": ")[-1].split()[0])
    # ... and in the run summary, per stream and in total, as the screen table says
    assert report["decode_errors"] == skipped > 0
    assert next(iter(report["per_stream"].values()))["decode_errors"] == skipped
    assert f"corrupt packets/frames skipped: {skipped};" in out


def test_unsupported_codec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An mp4 whose video sample entry is an unknown fourcc: FFmpeg has no decoder for it."""
    full = write_video(tmp_path / "full.mp4", 10)
    data = full.read_bytes()
    assert b"avc1" in data
    clip = tmp_path / "oddcodec.mp4"
    clip.write_bytes(data.replace(b"avc1", b"zzz9").replace(b"avcC", b"zzzC"))
    code, _, err = _run_file(tmp_path, capsys, clip)
    assert code == 2
    assert "oddcodec.mp4" in _error_line(err)


@pytest.mark.slow
def test_image_folder_with_non_images(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    face = shared_file(shared_data, FACE)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        shutil.copy(face, folder / f"{i:03d}.jpg")
    (folder / "readme.txt").write_text("not an image")
    (folder / "004.jpg").write_bytes(b"not a jpeg at all")
    code, _, err = _run_file(tmp_path, capsys, folder)
    assert code == 0, err
    assert "skipping" in err and "readme.txt" in err and "004.jpg" in err
    report = json.loads((tmp_path / "summary.json").read_text())
    assert report["frames_in"] == report["frames_processed"] == 3


# ---------------------------------------------------------------- images through `embed`


def _odd_images(face: Path, folder: Path) -> None:
    from PIL import Image

    folder.mkdir()
    bgr = cv2.imread(str(face))
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(folder / "gray.png"), gray)
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "deep16.png"), bgr.astype(np.uint16) * 257)
    Image.open(face).convert("CMYK").save(folder / "cmyk.jpg")
    huge = np.full((600, 8200, 3), 128, np.uint8)
    h, w = bgr.shape[:2]
    scale = 560 / h
    small = cv2.resize(bgr, (int(w * scale), 560))
    huge[20 : 20 + small.shape[0], 4000 : 4000 + small.shape[1]] = small
    cv2.imwrite(str(folder / "huge.jpg"), huge)


@pytest.mark.slow
def test_odd_image_formats_through_embed(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    face = shared_file(shared_data, FACE)
    folder = tmp_path / "odd"
    _odd_images(face, folder)
    out = tmp_path / "emb"
    code, stdout, err = _cli(
        capsys, ["embed", "--config", str(_config(tmp_path)), "--input-dir", str(folder), "--output-dir", str(out)]
    )
    assert code == 0, err
    rows = (out / "faces.csv").read_text().splitlines()[1:]
    embedded = {row.split(",")[0] for row in rows}
    # every odd format is converted and its face embedded (huge included), or skipped with a reason
    for name in ("gray.png", "rgba.png", "deep16.png", "cmyk.jpg", "huge.jpg"):
        assert name in embedded or f"skipped {name}:" in stdout, (name, stdout, err)
    assert {"gray.png", "rgba.png", "deep16.png", "cmyk.jpg", "huge.jpg"} <= embedded, stdout
    assert np.load(out / "embeddings.npy").shape[0] == len(rows)


# ---------------------------------------------------------------- gallery


@pytest.mark.slow
def test_empty_person_folder_is_reported(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    face = shared_file(shared_data, FACE)
    gallery = tmp_path / "gallery"
    (gallery / "angelina").mkdir(parents=True)
    shutil.copy(face, gallery / "angelina" / "1.jpg")
    (gallery / "nobody").mkdir()
    code, out, err = _cli(capsys, ["enroll", "--config", str(_config(tmp_path)), "--gallery", str(gallery), "--json"])
    assert code == 0, err
    report = json.loads(out[out.index("{") :])
    people = {p["person"]: p for p in report["people"]}
    assert people["angelina"]["used"] == 1
    assert "nobody" in people and people["nobody"]["used"] == 0 and people["nobody"]["rejected"], report


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("detection:\n  max_batch: [1, 2\n", "config.yaml"),  # YAML syntax error: names the file
        ("detection:\n  max_bacth: 4\n", "max_bacth"),  # unknown key
        ("detection:\n  max_batch: lots\n", "max_batch"),  # wrong value type
    ],
    ids=["yaml-syntax", "unknown-key", "wrong-type"],
)
def test_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    code, _, err = _cli(capsys, ["config", "--config", str(cfg)])
    assert code == 2
    assert named in _error_line(err)
    assert len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- checkpoints


def test_missing_checkpoint_strict(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    face = shared_file(shared_data, FACE)
    missing = tmp_path / "absent.ckpt"
    args = ["verify", "--config", str(_config(tmp_path)), str(face), str(face)]
    code, _, err = _cli(capsys, [*args, "--model", "adaface", "--checkpoint", str(missing), "--strict-model"])
    assert code == 2
    assert "absent.ckpt" in _error_line(err)


def test_wrong_architecture_checkpoint(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from stream.faces.adaface import build_backbone

    face = shared_file(shared_data, FACE)
    with torch.device("meta"):
        keys = list(build_backbone("ir_18").state_dict())
    assert len(keys) == 179
    ckpt = tmp_path / "ir18.ckpt"
    torch.save({"state_dict": {f"model.{k}": torch.zeros(1) for k in keys}}, ckpt)
    args = ["verify", "--config", str(_config(tmp_path)), str(face), str(face), "--model", "adaface"]
    code, _, err = _cli(capsys, [*args, "--arch", "ir_50", "--checkpoint", str(ckpt), "--strict-model"])
    assert code == 2
    line = _error_line(err)
    assert "ir18.ckpt" in line and "ir_50" in line and "ir_18" in line


@pytest.mark.parametrize("zip_format", [False, True], ids=["raw-pickle", "torch-zip"])
def test_malicious_pickle_checkpoint_is_refused(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], zip_format: bool
) -> None:
    import torch

    face = shared_file(shared_data, FACE)
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "evil.ckpt"
    if zip_format:
        torch.save({"state_dict": PicklePayload(os.system, f"touch {marker}")}, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps({"state_dict": PicklePayload(os.system, f"touch {marker}")}, protocol=2))
    args = ["verify", "--config", str(_config(tmp_path)), str(face), str(face), "--model", "adaface"]
    code, _, err = _cli(capsys, [*args, "--checkpoint", str(ckpt), "--strict-model"])
    assert code == 2
    assert "evil.ckpt" in _error_line(err)
    assert not marker.exists(), "the pickle payload ran"


# ---------------------------------------------------------------- outputs


@pytest.mark.slow
def test_output_folder_not_writable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = write_video(tmp_path / "clip.mp4", 10)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")  # works as root too, unlike chmod
    target = blocker / "sub" / "out.mp4"
    code, _, err = _cli(
        capsys, ["run", "--config", str(_config(tmp_path)), "--source", str(clip), "--output", str(target)]
    )
    assert code == 2
    assert str(blocker) in _error_line(err)


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))  # the empty event store takes ~70 KB


@pytest.mark.slow
def test_disk_full_on_output(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", 150, noise=True)
    out = tmp_path / "full" / "out.mp4"
    args = ["run", "--config", str(_config(tmp_path)), "--source", str(clip), "--output", str(out)]
    proc = _Proc(args, tmp_path, preexec_fn=_limit_file_size)
    code = proc.finish(300)
    err = proc.err
    assert code != 0, err
    assert "Traceback" not in err, err
    assert "out.mp4" in _error_line(err)


@pytest.mark.slow
def test_two_instances_share_the_events_db(tmp_path: Path) -> None:
    from stream.demo import prepare_demo

    clip, gallery = prepare_demo(tmp_path / "demo")
    cfg = _config(tmp_path)
    runs = []
    for name in ("left", "right"):
        shutil.copy(clip, tmp_path / f"{name}.mp4")
        args = ["run", "--config", str(cfg), "--source", str(tmp_path / f"{name}.mp4"), "--gallery", str(gallery)]
        runs.append(_Proc([*args, "--max-frames", "60"], tmp_path))
    codes = [r.finish(400) for r in runs]
    for r, code in zip(runs, codes, strict=True):
        assert code == 0, r.err
        assert "Traceback" not in r.err
    with open_store(tmp_path / "rec" / "events.db", create=False) as store:
        streams = {row.stream for row in store.events(EventQuery(limit=10_000))}
        assert len(store.runs()) == 2
    assert {"left", "right"} <= streams


# ---------------------------------------------------------------- live: unreachable URL, secrets


def _interrupt_live(tmp_path: Path, url: str, *extra: str) -> tuple[_Proc, int, float, str]:
    """Start a live run on ``url``, wait for its retry logs, SIGINT after ~4 s; (proc, code, exit secs, metrics)."""
    args = ["run", "--config", str(_config(tmp_path)), "--source", url, "--max-frames", "5", *extra]
    proc = _Proc(args, tmp_path)
    try:
        assert proc.wait_for("127.0.0.1", 180), f"no log line about the stream; stderr:\n{proc.err}"
        time.sleep(4)
        assert proc.proc.poll() is None, f"exited early; stderr:\n{proc.err}"
        metrics = ""
        if "--metrics-port" in extra:
            port = extra[extra.index("--metrics-port") + 1]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                metrics = resp.read().decode()
        proc.proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        code = proc.finish(30)
        return proc, code, time.monotonic() - start, metrics
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()


@pytest.mark.slow
@pytest.mark.serial
def test_unreachable_url_retries_until_interrupted(tmp_path: Path) -> None:
    url = f"rtsp://127.0.0.1:{_free_port()}/x"
    proc, code, seconds, _ = _interrupt_live(tmp_path, url)
    assert code == 130, proc.err
    assert seconds < 5, seconds
    assert "Traceback" not in proc.err
    assert sum(url in line for line in proc.err_lines) >= 2, proc.err  # retried, with the URL named


@pytest.mark.slow
@pytest.mark.serial
def test_password_in_url_appears_in_no_output(tmp_path: Path) -> None:
    url = f"rtsp://user:{PASSWORD}@127.0.0.1:{_free_port()}/cam"
    port = _free_port()
    events, summary = tmp_path / "ev.jsonl", tmp_path / "summary.json"
    extra = ("--events", str(events), "--summary", str(summary), "--metrics-port", str(port))
    proc, code, _, metrics = _interrupt_live(tmp_path, url, *extra)
    assert code == 130, proc.err
    assert "user:***@127.0.0.1" in proc.err  # the URL is logged, masked
    assert metrics
    texts = {"stdout": proc.out_text, "stderr": proc.err, "metrics": metrics}
    for path in [events, summary, *(tmp_path / "rec").rglob("*")]:
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    assert summary.exists() and str(tmp_path / "rec" / "events.db") in texts
    leaks = [name for name, text in texts.items() if PASSWORD in text]
    assert not leaks, leaks
