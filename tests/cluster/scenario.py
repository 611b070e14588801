"""One real-cluster scenario, run by tests/cluster/test_real_cluster.py inside a private network
namespace (``unshare -n``: Ray then uses 127.0.0.1 only) from the repository root:

    python -m tests.cluster.scenario WORK_DIR cli|complete|kill|stop|web|webcli

It starts a PostgreSQL server, a Ray head and a second Ray node (each ``ray start --block`` in its own
process group, with its own temp dir and agent ports), writes three small file streams and runs them
with ``run_on_cluster`` (two streams per worker: two workers, spread over the nodes), the worker
actors making fake models (tests/cluster/fakes.py). ``kill``: once worker w0 has put a few frames
through, its process gets SIGKILL. Then it reads the store and the journals and writes
WORK_DIR/result.json. ``cli``: instead, ``run.py run --config CFG --cluster 127.0.0.1:PORT`` as a user
types it, with the real detector and FaceNet on three short demo clips. ``stop``: Ctrl-C on the head
mid-run (``stop_midway``). ``web``: three endless live streams with the web app on the head
(``web_midway``): its pages read from inside the namespace, then Ctrl-C; ``webcli``: the same checks
on ``run.py serve --cluster --web`` with the real models and the demo clips looping live. Every process group it started is written to WORK_DIR/pgids (the test kills
what is left if this script does not get to its own cleanup).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from scripts.pg_server import PgServer, find_pg_bin
from stream.app import RunOptions
from stream.cluster.head import run_on_cluster
from stream.config import AppConfig
from tests.cluster.fakes import FakeModels

FRAMES = {"cam_a": 90, "cam_b": 70, "cam_c": 80}
CLI_FRAMES = {"door": 30, "hall": 25, "yard": 20}  # real models: short
RAY = str(Path(sys.executable).parent / "ray")
GCS_PORT = 6390  # the namespace is private: fixed ports cannot collide with anybody's
KILL_AFTER_FRAMES = 8  # per stream of w0: each has journaled its track_started by then
DEADLINE_S = 150.0
WEB_PORT = 8765
WEB_STREAMS = ("gate", "lobby", "dock")


def write_clip(path: Path, n: int) -> Path:
    rng = np.random.default_rng(n)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}
        for _ in range(n):
            image = np.clip(128 + rng.normal(0, 4, (96, 128, 3)), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def start_group(args: list[str], log: Path, work: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    with (work / "pgids").open("a") as f:
        f.write(f"{proc.pid}\n")
    return proc


def start_ray(work: Path) -> list[subprocess.Popen[bytes]]:
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    common = ["--block", "--num-cpus", "2", "--object-store-memory", str(80 * 1024 * 1024), "--disable-usage-stats"]
    head = start_group(
        [RAY, "start", "--head", "--port", str(GCS_PORT), "--include-dashboard=false", "--temp-dir", str(temp / "h"),
         "--dashboard-agent-listen-port", "52365", "--dashboard-agent-grpc-port", "52366",
         "--runtime-env-agent-port", "52367", "--metrics-export-port", "52368", *common],
        work / "ray-head.log", work,
    )  # fmt: skip
    wait_port(GCS_PORT, 60.0)
    node = start_group(
        [RAY, "start", "--address", f"127.0.0.1:{GCS_PORT}", "--temp-dir", str(temp / "n"),
         "--dashboard-agent-listen-port", "52465", "--dashboard-agent-grpc-port", "52466",
         "--runtime-env-agent-port", "52467", "--metrics-export-port", "52468", *common],
        work / "ray-node.log", work,
    )  # fmt: skip
    return [head, node]


def wait_port(port: int, limit: float) -> None:
    import socket

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {limit} s")


def wait_nodes(count: int, limit: float) -> None:
    import ray

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if sum(1 for n in ray.nodes() if n.get("Alive")) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"fewer than {count} Ray nodes alive after {limit} s")


def config_for(work: Path, db: str) -> AppConfig:
    clips = {name: write_clip(work / f"{name}.mp4", n) for name, n in FRAMES.items()}
    return AppConfig.model_validate(
        {
            "profile": "default",
            "streams": [{"name": name, "path": str(path)} for name, path in clips.items()],
            "gallery": {"dir": str(work / "no-gallery")},
            "outputs": {"dir": str(work / "rec"), "events_db": db, "annotated_video": False, "snapshots": False},
            "cluster": {"address": f"127.0.0.1:{GCS_PORT}", "streams_per_worker": 2, "worker_cpus": 1.0},
        }
    )


def cli_config(work: Path, db: str, *, live: bool = False) -> Path:
    """config.yaml for ``run.py run --cluster``: three short demo clips (people walking by), the real
    detector and the offline FaceNet (the repository's converted weights), the demo gallery. ``live``:
    each clip played in a loop at 25 frames/s as an endless live stream instead."""
    from stream.demo import make_demo_clip, prepare_demo
    from tests.conftest import REPO

    _, gallery = prepare_demo(work / "demo", make_clip=lambda path: make_demo_clip(path, seconds=0.04, size=(64, 64)))
    lines = ["profile: default", "streams:"]
    for i, (name, n) in enumerate(CLI_FRAMES.items()):
        clip = make_demo_clip(work / f"{name}.mp4", seconds=n / 25, size=(640, 360), seed=i)
        source = f"url: lavfi:movie={clip}:loop=0,setpts=N/(25*TB),realtime" if live else f"path: {clip}"
        lines += [f"  - name: {name}", f"    {source}"]
    lines += [
        f"gallery:\n  dir: {gallery}",
        f"recognition:\n  checkpoints_dir: {REPO / 'checkpoints'}\n  checkpoint: {work / 'none.ckpt'}",
        f"outputs:\n  dir: {work / 'rec'}\n  events_db: {db}\n  annotated_video: false\n  snapshots: false",
        "cluster:\n  address: auto\n  streams_per_worker: 2\n  worker_cpus: 1.0",
        "runtime:\n  torch_threads: 1",
    ]
    path = work / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(work: Path, db: str) -> dict[str, Any]:
    """``run.py run --config CFG --cluster 127.0.0.1:PORT`` as a user types it; its summary."""
    from tests.conftest import REPO

    config = cli_config(work, db)
    summary = work / "summary.json"
    args = [sys.executable, str(REPO / "run.py"), "run", "--config", str(config)]
    args += ["--cluster", f"127.0.0.1:{GCS_PORT}", "--summary", str(summary)]
    done = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=DEADLINE_S)
    (work / "run.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"run.py exited {done.returncode}: {done.stderr[-3000:]}")
    return dict(json.loads(summary.read_text()), stdout=done.stdout)


def serve_cli(work: Path, db: str) -> dict[str, Any]:
    """``run.py serve --config CFG --cluster 127.0.0.1:PORT --web 127.0.0.1:WEB`` as a user types it, the
    three demo clips as endless live streams (real models); the web checks from here, then Ctrl-C."""
    from tests.conftest import REPO

    config = cli_config(work, db, live=True)
    args = [sys.executable, str(REPO / "run.py"), "serve", "--config", str(config)]
    args += ["--cluster", f"127.0.0.1:{GCS_PORT}", "--web", f"127.0.0.1:{WEB_PORT}"]
    found: dict[str, Any] = {}
    with (work / "run.log").open("wb") as out:
        proc = subprocess.Popen(args, cwd=work, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    with (work / "pgids").open("a") as f:
        f.write(f"{proc.pid}\n")
    try:
        check_web(found, tuple(CLI_FRAMES), alive=lambda: proc.poll() is None)
    except Exception as exc:
        found["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            found["returncode"] = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            found["returncode"] = None
    found["stdout"] = (work / "run.log").read_text(errors="replace")
    return found


def kill_w0(found: dict[str, Any]) -> None:
    """Once each stream of worker w0 has put KILL_AFTER_FRAMES frames through, SIGKILL its process."""
    import ray

    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            actor = ray.get_actor("adaface-stream-w0")
            status = ray.get(actor.status.remote(), timeout=10)
        except Exception:
            time.sleep(0.2)
            continue
        if status.streams and min(s.frames_out for s in status.streams) >= KILL_AFTER_FRAMES:
            found.update(pid=status.pid, frames_out=[s.frames_out for s in status.streams], host=status.host)
            os.kill(status.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    else:
        return
    while time.monotonic() < deadline:  # after the restart: a new process, running epoch 1
        with contextlib.suppress(Exception):
            status = ray.get(actor.status.remote(), timeout=10)
            if status.pid != found["pid"] and status.epoch >= 1:
                found.update(new_pid=status.pid)
                return
        time.sleep(0.2)


def watch_workers(seen: dict[str, dict[str, Any]], done: threading.Event) -> None:
    """The latest status of each worker actor (by name, as any driver of the cluster may ask) until ``done``."""
    import ray

    while not done.is_set():
        for name in ("adaface-stream-w0", "adaface-stream-w1"):
            with contextlib.suppress(Exception):
                status = ray.get(ray.get_actor(name).status.remote(), timeout=5)
                seen[status.group] = {"epoch": status.epoch, "pid": status.pid, "node_id": status.node_id}
        done.wait(0.2)


def stop_midway(config: AppConfig, db: str) -> dict[str, Any]:
    """Ctrl-C on the head once every stream has put a few frames through: how long ``run_on_cluster``
    took to give up, and whether each worker's run was ended in the store (its outputs finished)."""
    import _thread

    import psycopg
    import ray

    asked: dict[str, float] = {}

    def interrupt_when_running() -> None:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                statuses = [ray.get(ray.get_actor(f"adaface-stream-w{i}").status.remote(), timeout=5) for i in range(2)]
                if all(s.streams and min(p.frames_out for p in s.streams) >= 5 for s in statuses):
                    asked["at"] = time.monotonic()
                    _thread.interrupt_main()
                    return
            time.sleep(0.2)

    threading.Thread(target=interrupt_when_running, daemon=True).start()
    try:
        run_on_cluster(config, RunOptions(), models=FakeModels(delay_s=0.1))
        outcome = "finished"
    except KeyboardInterrupt:
        outcome = "interrupted"
    stopped_s = round(time.monotonic() - asked.get("at", time.monotonic()), 1)
    with psycopg.connect(db, connect_timeout=5) as conn:
        runs = conn.execute("SELECT run_id, ended IS NOT NULL FROM runs").fetchall()
    return {"outcome": outcome, "stopped_s": stopped_s, "runs_ended": [bool(r[1]) for r in runs]}


def web_config_for(work: Path, db: str) -> AppConfig:
    """Three endless live streams (FFmpeg test pattern, 12 frames/s) on two workers, the web app's
    port in the namespace."""
    streams = [{"name": name, "url": "lavfi:testsrc=size=128x96:rate=12,realtime"} for name in WEB_STREAMS]
    return AppConfig.model_validate(
        {
            "profile": "default",
            "streams": streams,
            "gallery": {"dir": str(work / "no-gallery")},
            "outputs": {"dir": str(work / "rec"), "events_db": db, "annotated_video": False, "snapshots": False},
            "cluster": {"address": f"127.0.0.1:{GCS_PORT}", "streams_per_worker": 2, "worker_cpus": 1.0},
            "web": {"host": "127.0.0.1", "port": WEB_PORT},
        }
    )


def first_jpeg(name: str, limit_s: float) -> bytes:
    """The first JPEG part of ``/streams/NAME/live.mjpeg`` (a bounded read: ``limit_s`` per socket wait,
    at most 4 MB before the first part)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", WEB_PORT, timeout=limit_s)
    try:
        conn.request("GET", f"/streams/{name}/live.mjpeg")
        resp = conn.getresponse()
        assert resp.status == 200, (name, resp.status, resp.read(300))
        length, seen = None, 0
        while length is None:
            line = resp.readline(1000)
            seen += len(line)
            assert line and seen < 4_000_000, f"{name}: no JPEG part"
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        assert resp.readline(10) == b"\r\n"
        return resp.read(length)
    finally:
        conn.close()


def first_events(limit_s: float, streams: tuple[str, ...]) -> list[dict[str, Any]]:
    """Events from the live feed (``/api/events/stream``) until each of ``streams`` had one, reading for
    at most ``limit_s``."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", WEB_PORT, timeout=limit_s)
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit_s
    try:
        conn.request("GET", "/api/events/stream")
        resp = conn.getresponse()
        while {e.get("stream") for e in out} < set(streams) and time.monotonic() < deadline:
            line = resp.readline(100_000)
            if not line:
                break
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
    except TimeoutError:
        pass
    finally:
        conn.close()
    return out


def check_web(found: dict[str, Any], names: tuple[str, ...] = WEB_STREAMS, alive: Any = None) -> None:
    """From inside the namespace: every stream listed by ``/api/streams`` and up, then the first MJPEG
    frame of each, then a few live events."""
    import urllib.request

    base = f"http://127.0.0.1:{WEB_PORT}"
    deadline = time.monotonic() + 90.0
    streams: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("the head exited before its streams were up")
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"{base}/api/streams", timeout=5) as resp:
                streams = json.loads(resp.read())
            if len(streams) == len(names) and all(s["state"] == "up" and s["frames"] > 0 for s in streams):
                break
        time.sleep(0.3)
    found["streams"] = streams
    found["waited_up_s"] = round(90.0 - (deadline - time.monotonic()), 1)
    frames = {}
    for name in names:
        t0 = time.monotonic()
        data = first_jpeg(name, 20.0)
        frames[name] = {"bytes": len(data), "jpeg": data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9",
                        "s": round(time.monotonic() - t0, 2)}  # fmt: skip
    found["frames"] = frames
    found["events"] = first_events(15.0, names)


def web_midway(config: AppConfig) -> dict[str, Any]:
    """``serve``'s cluster path (``run_cluster_with_web``, fake models in the workers): the checks run
    from another thread once the web app listens, then Ctrl-C on the head."""
    import _thread

    import ray

    from stream.faces.models import ModelOverrides
    from stream.web.serve import run_cluster_with_web

    found: dict[str, Any] = {}

    def check_then_stop() -> None:
        try:
            check_web(found)
            found["workers"] = [
                ray.get(ray.get_actor(f"adaface-stream-w{i}").status.remote(), timeout=10).node_id for i in range(2)
            ]
        except Exception as exc:
            found["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            _thread.interrupt_main()

    def ready(url: str) -> None:
        found["url"] = url
        threading.Thread(target=check_then_stop, daemon=True).start()

    t0 = time.monotonic()
    try:
        run_cluster_with_web(
            config, RunOptions(), ModelOverrides(), config.web, keep_serving=True, models=FakeModels(), on_ready=ready
        )
        found["outcome"] = "finished"
    except KeyboardInterrupt:
        found["outcome"] = "interrupted"
    found["run_s"] = round(time.monotonic() - t0, 1)
    return found


def read_store(db: str) -> list[dict[str, Any]]:
    import psycopg

    with psycopg.connect(db, connect_timeout=5) as conn:
        rows = conn.execute("SELECT run_id, stream, kind, epoch, track_id, pts_s FROM events ORDER BY id").fetchall()
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()
    return [
        {"run_id": r[0], "stream": r[1], "kind": r[2], "epoch": r[3], "track_id": r[4], "pts_s": r[5], "runs": runs[0]}
        for r in rows
    ]


def read_journals(folder: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        p.name: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        for p in sorted(folder.glob("events-*.jsonl"))
    }


def main(work: Path, mode: str) -> None:
    import ray

    bin_dir, why = find_pg_bin()
    assert bin_dir is not None, why
    pg = PgServer(bin_dir)
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"mode": mode}
    started = time.monotonic()
    try:
        pg.start()
        (work / "pgids").open("a").write(f"{pg._proc.pid if pg._proc else 0}\n")
        db = pg.create_database()
        procs = start_ray(work)
        ray.init(address=f"127.0.0.1:{GCS_PORT}", log_to_driver=True)
        wait_nodes(2, 60.0)
        result["cluster_up_s"] = round(time.monotonic() - started, 1)
        if mode == "cli":
            t0 = time.monotonic()
            summary_json = run_cli(work, db)
            result["run_s"] = round(time.monotonic() - t0, 1)
            result["frames"] = CLI_FRAMES
            result["per_stream"] = {
                k: {"in": s["frames_in"], "done": s["frames_processed"]} for k, s in summary_json["per_stream"].items()
            }
            result["stdout"] = summary_json["stdout"]
            result["events"] = read_store(db)
            result["journals"] = read_journals(work / "rec")
            return
        config = config_for(work, db)
        if mode == "webcli":
            result.update(serve_cli(work, db))
            return
        if mode == "web":
            result.update(web_midway(web_config_for(work, db)))
            return
        if mode == "stop":
            result.update(stop_midway(config, db))
            return
        killed: dict[str, Any] = {}
        killer = threading.Thread(target=kill_w0, args=(killed,), daemon=True) if mode == "kill" else None
        if killer is not None:
            killer.start()
        seen: dict[str, dict[str, Any]] = {}
        done = threading.Event()
        watcher = threading.Thread(target=watch_workers, args=(seen, done), daemon=True)
        watcher.start()
        t0 = time.monotonic()
        summary = run_on_cluster(config, RunOptions(), models=FakeModels(delay_s=0.03 if mode == "kill" else 0.0))
        result["run_s"] = round(time.monotonic() - t0, 1)
        if killer is not None:
            killer.join(timeout=30)
        done.set()
        watcher.join(timeout=30)
        result["killed"] = killed
        result["workers"] = [dict(seen.get(group, {}), group=group) for group in ("w0", "w1")]
        result["nodes"] = sorted(
            {n["NodeManagerAddress"] + ":" + str(n["NodeManagerPort"]) for n in ray.nodes() if n.get("Alive")}
        )
        result["per_stream"] = {
            k: {"in": s.frames_in, "done": s.frames_processed} for k, s in summary.per_stream.items()
        }
        result["frames"] = FRAMES
        result["events"] = read_store(db)
        result["journals"] = read_journals(config.outputs.dir)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
        pg.close()
        result["total_s"] = round(time.monotonic() - started, 1)
        (work / "result.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
