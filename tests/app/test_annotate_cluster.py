"""run.py annotate --cluster: a real two-node Ray cluster (head with 2 CPUs, a second node with 1) on
loopback, inside a private network namespace made by the test (``unshare -n``: Ray advertises the
machine's address otherwise, and traffic may go to loopback only here).

One scenario, run once for the module (a Ray cluster takes ~10 s to start on 2 busy cores): the
generated bash script starts both nodes, each in its own process group, then runs

1. ``run.py annotate --cluster 127.0.0.1:PORT`` with the real models on a folder of two good clips, a
   garbage file and a truncated mp4;
2. the same command again once the bad files are gone (resume: the good files are skipped, exit 0);
3. a driver script: ``run_ray_jobs`` with ``ScriptedAnnotate`` (a file that kills its worker actor,
   one that fails), then a worker that cannot start;
4. ``run.py annotate --cluster`` at a port where nothing listens;

and kills both process groups on exit (never ``ray stop``: it kills by process name). The tests
below check each step's outputs."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.commands.annotate import EVENTS, SUMMARY, TRACKS, VIDEO
from tests.app.test_annotate import _folder, _frames
from tests.conftest import REPO, app_config_text

pytestmark = [pytest.mark.slow, pytest.mark.serial]

PORT, UNUSED_PORT = 6391, 6499  # in the test's own network namespace: nothing else listens there
SCRIPT_TIMEOUT_S = 150

DRIVER = """
import json, sys
from pathlib import Path
from stream.commands.annotate import FileJob, WorkerStartError
from stream.commands.annotate_ray import run_ray_jobs
from stream.config import ClusterConfig
from tests.fakes import ScriptedAnnotate

tmp, address = Path(sys.argv[1]), sys.argv[2]
cluster = ClusterConfig(address=address)
jobs = [FileJob(tmp / n, tmp / "scripted" / n) for n in ("a.mp4", "crash.mp4", "fail.mp4", "b.mp4", "c.mp4")]
results = run_ray_jobs(jobs, ScriptedAnnotate(), cluster, actors=2)
record = {"results": {r.source.name: [r.status, r.frames, r.reason] for r in results}}
try:
    run_ray_jobs(jobs, ScriptedAnnotate(refuse="no models here"), cluster, actors=2)
    record["refused"] = None
except WorkerStartError as exc:
    record["refused"] = [str(exc), exc.user]
(tmp / "driver.json").write_text(json.dumps(record))
"""

BASH = """
set -u
ip link set lo up
cd {repo}
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 PYTHONPATH={repo}
PY={python}; RAY={ray}; T={tmp}; RT={ray_tmp}
trap 'for g in $(cat $T/*.pgid); do kill -TERM -$g 2>/dev/null; done; sleep 2; \\
      for g in $(cat $T/*.pgid); do kill -KILL -$g 2>/dev/null; done' EXIT
common="--block --object-store-memory 83886080 --disable-usage-stats"
setsid $RAY start --head --port {port} --num-cpus 2 --include-dashboard=false --temp-dir $RT/h $common >$T/head.log 2>&1 &
echo $! >$T/head.pgid
for i in $(seq 120); do (echo >/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.5; done
setsid $RAY start --address 127.0.0.1:{port} --num-cpus 1 --temp-dir $RT/n $common \\
  --dashboard-agent-listen-port 52465 --dashboard-agent-grpc-port 52466 --runtime-env-agent-port 52467 \\
  --metrics-export-port 52468 >$T/node.log 2>&1 &
echo $! >$T/node.pgid
timeout 60 $PY -c "
import sys, time, ray
ray.init(address='127.0.0.1:{port}', logging_level='ERROR')
for _ in range(120):
    if sum(n['Alive'] for n in ray.nodes()) == 2: sys.exit(0)
    time.sleep(0.5)
sys.exit('the second node never joined')
" >$T/wait.out 2>&1; rc=$?; echo $rc >$T/wait.rc; [ $rc = 0 ] || exit 1
annotate="$PY run.py annotate --config $T/config.yaml --input-dir $T/in --recursive"
timeout 90 $annotate --output-dir $T/out --cluster 127.0.0.1:{port} >$T/run1.out 2>$T/run1.err; echo $? >$T/run1.rc
rm $T/in/garbage.mp4 $T/in/truncated.mp4
timeout 60 $annotate --output-dir $T/out --cluster 127.0.0.1:{port} >$T/run2.out 2>$T/run2.err; echo $? >$T/run2.rc
timeout 60 $PY $T/driver.py $T 127.0.0.1:{port} >$T/driver.out 2>&1; echo $? >$T/driver.rc
timeout 30 $annotate --output-dir $T/out2 --cluster 127.0.0.1:{unused} >$T/unreachable.out 2>$T/unreachable.err
echo $? >$T/unreachable.rc
"""


@dataclass(frozen=True)
class Scenario:
    tmp: Path
    videos: Path
    out: Path

    def rc(self, step: str) -> int:
        return int(self.text(f"{step}.rc").strip() or -1)

    def text(self, name: str) -> str:
        path = self.tmp / name
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, *steps: str) -> str:
        """What to show when an assertion fails."""
        names = [f"{s}.{ext}" for s in steps for ext in ("out", "err")] + ["head.log", "node.log"]
        return "\n".join(f"--- {n}\n{self.text(n)[-3000:]}" for n in names)


def _unshare_problem() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2) for a private network namespace"
    try:
        probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n failed: {exc}"
    if probe.returncode != 0:
        return f"unshare -n is not permitted here ({probe.stderr.decode(errors='replace').strip()}): Ray tests need a private network namespace"
    return None


def _kill_groups(tmp: Path) -> None:
    """Belt and braces: the script's trap kills both Ray process groups; kill any that survived."""
    for path in tmp.glob("*.pgid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(path.read_text().strip()), signal.SIGKILL)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    problem = _unshare_problem()
    if problem is not None:
        pytest.skip(problem)
    from stream.faces.facenet_convert import ensure_facenet_weights

    ensure_facenet_weights(REPO / "checkpoints")  # once, before three actors would race to convert it
    tmp = tmp_path_factory.mktemp("cluster")
    videos = _folder(tmp)  # in/a.mp4 (6 frames), in/sub/b.mkv (4), in/garbage.mp4, in/truncated.mp4, in/notes.txt
    (tmp / "config.yaml").write_text(app_config_text(tmp) + f"gallery:\n  dir: {tmp / 'gallery'}\n")
    (tmp / "driver.py").write_text(DRIVER)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rayann-", dir="/tmp"))  # Ray's socket paths must stay short
    bin_dir = Path(sys.executable).parent
    script = BASH.format(
        repo=shlex.quote(str(REPO)),
        python=shlex.quote(sys.executable),
        ray=shlex.quote(str(bin_dir / "ray")),
        tmp=shlex.quote(str(tmp)),
        ray_tmp=shlex.quote(str(ray_tmp)),
        port=PORT,
        unused=UNUSED_PORT,
    )
    (tmp / "scenario.sh").write_text(script)
    try:
        subprocess.run(["unshare", "-n", "bash", str(tmp / "scenario.sh")], timeout=SCRIPT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        pass  # each step's missing .rc fails its test below, with the logs
    finally:
        _kill_groups(tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    found = Scenario(tmp, videos, tmp / "out")
    assert found.rc("wait") == 0, found.logs("wait")
    yield found


def test_cluster_annotates_every_good_file_and_reports_the_bad_ones(scenario: Scenario) -> None:
    """The real models in worker actors on two nodes: good files complete, corrupt ones fail, exit 1."""
    assert scenario.rc("run1") == 1, scenario.logs("run1")
    out = scenario.text("run1.out")
    assert "4 video files: 2 done, 0 skipped (already complete), 2 failed; 10 frames" in out, scenario.logs("run1")
    assert "  failed garbage.mp4: " in out and "cannot open as video" in out
    assert "  failed truncated.mp4: " in out and "no video stream in the file" in out
    for rel, frames in (("a.mp4", 6), ("sub/b.mkv", 4)):
        folder = scenario.out / rel
        assert _frames(folder / VIDEO) == frames
        assert (folder / EVENTS).exists() and (folder / TRACKS).exists()
        assert json.loads((folder / SUMMARY).read_text())["frames"] == frames
    assert not (scenario.out / "garbage.mp4" / SUMMARY).exists()
    assert (scenario.out / "events.db").exists()  # one store for the batch, written by the actors


def test_cluster_second_run_skips_the_finished_files(scenario: Scenario) -> None:
    """Run again without the bad files: nothing left to do, so no cluster call at all; exit 0."""
    assert scenario.rc("run2") == 0, scenario.logs("run2")
    out = scenario.text("run2.out")
    assert "2 video files: 0 done, 2 skipped (already complete), 0 failed" in out, scenario.logs("run2")


def test_a_dead_worker_actor_fails_only_its_file(scenario: Scenario) -> None:
    """``run_ray_jobs`` with scripted workers: the file that kills its actor fails with a reason naming
    the actor; the others are done by the rest and a replacement; a worker that cannot start is the
    user's error, as with local worker processes."""
    assert scenario.rc("driver") == 0, scenario.logs("driver")
    record = json.loads(scenario.text("driver.json"))
    results = record["results"]
    assert sorted(results) == ["a.mp4", "b.mp4", "c.mp4", "crash.mp4", "fail.mp4"]
    assert [results[n][:2] for n in ("a.mp4", "b.mp4", "c.mp4")] == [["done", 7]] * 3
    assert results["fail.mp4"] == ["failed", 0, "scripted failure"]
    status, _, reason = results["crash.mp4"]
    assert status == "failed"
    assert reason.startswith("Ray worker (pid ") and " on node 127.0.0.1) died while annotating this file" in reason
    assert record["refused"] == ["worker could not start: no models here", True]


def test_unreachable_cluster_is_a_one_line_error(scenario: Scenario) -> None:
    assert scenario.rc("unreachable") == 2, scenario.logs("unreachable")
    err = scenario.text("unreachable.err").strip()
    assert err.startswith(f"error: --cluster 127.0.0.1:{UNUSED_PORT}: cannot reach the Ray cluster"), err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
