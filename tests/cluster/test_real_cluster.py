"""Streams on a real local Ray cluster (a head and a second node, started by the scenario) with a real
PostgreSQL store, inside a private network namespace so that every connection stays on loopback.
The scenario (tests/cluster/scenario.py) runs in a subprocess; these tests read what it measured."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.serial]

SCENARIO_TIMEOUT_S = 200


def _skip_reason() -> str | None:
    from scripts.pg_server import find_pg_bin

    if not (Path(sys.executable).parent / "ray").is_file():
        return "ray is not installed in this Python environment (requirements/lock.txt)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip not found (util-linux, iproute2): a private network namespace is needed for Ray"
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=20)
    if probe.returncode != 0:
        return f"no private network namespace here (unshare -n: {probe.stderr.decode(errors='replace').strip()})"
    bin_dir, why = find_pg_bin()
    return why if bin_dir is None else None


@pytest.fixture(scope="module")
def can_run() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


def run_scenario(work: Path, mode: str) -> dict[str, Any]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    command = f"ip link set lo up && exec {sys.executable} -m tests.cluster.scenario {work} {mode}"
    proc = subprocess.Popen(
        ["unshare", "-n", "bash", "-c", command],
        cwd=REPO,
        env=env,
        stdout=(work / "scenario.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=SCENARIO_TIMEOUT_S)
    finally:
        _kill_leftovers(proc, work / "pgids")
    log = (work / "scenario.log").read_text(errors="replace")
    assert proc.returncode == 0, f"scenario {mode} failed ({proc.returncode}):\n{log[-6000:]}"
    result = json.loads((work / "result.json").read_text())
    result["log"] = log
    return result


def _kill_leftovers(proc: subprocess.Popen[bytes], pgids: Path) -> None:
    """Whatever the scenario started and did not stop (it timed out, it crashed): by process group."""
    groups = [proc.pid]
    if pgids.is_file():
        groups += [int(line) for line in pgids.read_text().split() if line.strip() and int(line) > 0]
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _key(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["run_id"], e["stream"], e["kind"], e["epoch"], e["track_id"])


def _check_every_frame_and_store(result: dict[str, Any], *, two_nodes: bool = True) -> list[dict[str, Any]]:
    for name, count in result["frames"].items():
        assert result["per_stream"][name] == {"in": count, "done": count}, name
    events = result["events"]
    assert {e["stream"] for e in events} == set(result["frames"])  # three streams, one store
    if two_nodes:
        nodes = {w["node_id"] for w in result["workers"]}
        assert len(nodes) == 2, f"both workers on one node: {result['workers']}"
    journaled = [line for lines in result["journals"].values() for line in lines]
    assert sorted(result["journals"]) == ["events-w0.jsonl", "events-w1.jsonl"]
    missing = Counter(_key(e) for e in journaled) - Counter(_key(e) for e in events)
    assert not missing, f"journaled events not in the store: {missing}"
    return events


def test_run_py_run_cluster_three_file_streams_on_two_workers_into_one_postgresql_store(
    can_run: None, tmp_path: Path
) -> None:
    """``run.py run --config CFG --cluster 127.0.0.1:PORT`` as typed, real detector and FaceNet: every frame
    of the three demo clips, and their events (the gallery's person named in each) in the one store."""
    from stream.faces.facenet_convert import ensure_facenet_weights

    ensure_facenet_weights(REPO / "checkpoints")  # once, here: the workers only read it
    result = run_scenario(tmp_path, "cli")
    events = _check_every_frame_and_store(result, two_nodes=False)
    print(f"cluster up {result['cluster_up_s']} s, run.py ran {result['run_s']} s, {len(events)} events")
    print(result["stdout"])
    for name in result["frames"]:
        kinds = [e["kind"] for e in events if e["stream"] == name]
        assert kinds[0] == "track_started" and kinds[-1] == "track_ended", (name, kinds)
        assert "identity_assigned" in kinds, (name, kinds)
    assert not [e for e in events if e["kind"] in ("stream_up", "stream_down")]
    assert {e["epoch"] for e in events} == {0}
    assert len({e["run_id"] for e in events}) == 2  # one run record per worker
    assert "total " in result["stdout"]  # the merged summary table


def test_a_killed_worker_is_restarted_and_its_streams_resume_in_a_new_epoch(can_run: None, tmp_path: Path) -> None:
    result = run_scenario(tmp_path, "kill")
    killed = result["killed"]
    assert killed.get("pid") and killed.get("new_pid") and killed["new_pid"] != killed["pid"], killed
    print(f"killed w0 (pid {killed['pid']}) after {killed['frames_out']} frames; back as pid {killed['new_pid']}")
    assert "restarted" in result["log"] and "run again in epoch 1" in result["log"]
    events = _check_every_frame_and_store(result)
    w0, w1 = result["workers"]
    assert (w0["epoch"], w0["pid"], w1["epoch"]) == (1, killed["new_pid"], 0)
    for name in ("cam_a", "cam_b"):  # w0's streams: begun in epoch 0, up again and whole in epoch 1
        mine = [e for e in events if e["stream"] == name]
        assert any(e["epoch"] == 0 and e["kind"] == "track_started" for e in mine), name
        assert [e["kind"] for e in mine if e["epoch"] == 0][-1] == "stream_down"  # recorded at the restart
        again = [e["kind"] for e in mine if e["epoch"] == 1]
        assert again[0] == "stream_up" and again[1] == "track_started" and again[-1] == "track_ended", again
        assert mine.index(next(e for e in mine if e["kind"] == "stream_up")) > 0  # after what epoch 0 recorded
    cam_c = [(e["epoch"], e["kind"]) for e in events if e["stream"] == "cam_c"]
    assert cam_c[0] == (0, "track_started") and cam_c[-1] == (0, "track_ended")  # w1 never restarted


def test_ctrl_c_on_the_head_stops_every_worker_and_their_runs_are_ended(can_run: None, tmp_path: Path) -> None:
    result = run_scenario(tmp_path, "stop")
    print(f"Ctrl-C mid-run: run_on_cluster gave up after {result['stopped_s']} s; runs ended {result['runs_ended']}")
    assert result["outcome"] == "interrupted"
    assert result["runs_ended"] == [True, True]  # each worker finished its outputs and closed its run


def test_the_heads_web_app_shows_every_stream_of_both_workers_with_live_frames_and_events(
    can_run: None, tmp_path: Path
) -> None:
    """``serve --cluster``'s path (``run_cluster_with_web``) with three endless live streams on two workers
    on two nodes: ``/api/streams`` on the head lists all three, up, with their workers' counts; the
    first MJPEG part of each is a JPEG fetched from its worker; the live event feed carries the
    workers' events; Ctrl-C then stops it all."""
    result = run_scenario(tmp_path, "web")
    assert "error" not in result, result["error"]
    streams = {s["name"]: s for s in result["streams"]}
    print(f"web app {result['url']}: streams up after {result['waited_up_s']} s; run {result['run_s']} s")
    for name, s in sorted(streams.items()):
        print(
            f"  {name}: {s['state']} {s['fps']} frames/s, {s['frames']} frames, live {s['live']}; first frame {result['frames'][name]}"
        )
    print(f"  live events: {[(e['kind'], e['stream']) for e in result['events']]}")
    assert sorted(streams) == ["dock", "gate", "lobby"]
    assert all(s["state"] == "up" and s["live"] and s["frames"] > 0 for s in streams.values()), streams
    assert all(f["jpeg"] and f["bytes"] > 500 for f in result["frames"].values()), result["frames"]
    assert len(set(result["workers"])) == 2, f"both workers on one node: {result['workers']}"  # frames from both
    assert {e["stream"] for e in result["events"]} == set(streams)  # from both workers
    assert result["outcome"] == "interrupted"


def test_run_py_serve_cluster_web_shows_the_demo_streams_of_both_workers(can_run: None, tmp_path: Path) -> None:
    """``run.py serve --config CFG --cluster 127.0.0.1:PORT --web 127.0.0.1:WEB`` as typed, real detector and
    FaceNet, the three demo clips looping as live cameras (two on w0, one on w1): the head's web app
    lists them all up and sends a JPEG of each; Ctrl-C ends it with exit 130."""
    from stream.faces.facenet_convert import ensure_facenet_weights

    ensure_facenet_weights(REPO / "checkpoints")
    result = run_scenario(tmp_path, "webcli")
    assert "error" not in result, f"{result['error']}\n{result['stdout'][-4000:]}"
    streams = {s["name"]: s for s in result["streams"]}
    print(f"run.py serve --cluster --web: streams up after {result['waited_up_s']} s")
    for name, s in sorted(streams.items()):
        print(f"  {name}: {s['state']} {s['fps']} frames/s, {s['frames']} frames; first frame {result['frames'][name]}")
    print(f"  live events: {[(e['kind'], e['stream'], e.get('person')) for e in result['events']]}")
    assert sorted(streams) == ["door", "hall", "yard"]
    assert all(s["state"] == "up" and s["live"] and s["frames"] > 0 for s in streams.values()), streams
    assert all(f["jpeg"] and f["bytes"] > 2000 for f in result["frames"].values()), result["frames"]
    assert "not serving it" not in result["stdout"] and "web app: http://127.0.0.1:" in result["stdout"]
    assert result["returncode"] == 130, result["stdout"][-4000:]
