"""The pure planning of streams on a cluster, the worker's resumed source, and the CLI around it (no
Ray cluster needed)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from stream.cli import EXIT_USAGE, main, with_cluster
from stream.cluster.plan import check_cluster_store, group_options_paths, merge_summaries, plan_cluster
from stream.cluster.resume import ResumedSource
from stream.config import AppConfig, ClusterConfig, ConfigError, StreamConfig
from stream.errors import UserError
from stream.outputs.summary import RunSummary
from stream.sources import FrameSource, SourceStatus
from stream.sources.base import Emit, SourceStats
from stream.types import Frame, TrackKey
from tests.conftest import REPO


def streams(n: int) -> tuple[StreamConfig, ...]:
    return tuple(StreamConfig(name=f"s{i}", url=f"rtsp://cam{i}/live") for i in range(n))


def test_streams_are_split_in_order_into_groups_of_streams_per_worker() -> None:
    plan = plan_cluster(ClusterConfig(streams_per_worker=2), streams(5), "cpu")
    assert [g.stream_names for g in plan.groups] == [("s0", "s1"), ("s2", "s3"), ("s4",)]
    assert [g.name for g in plan.groups] == ["w0", "w1", "w2"]
    assert (plan.cpus, plan.gpus, plan.max_restarts) == (1.0, 0.0, 10)
    assert "3 stream worker(s)" in plan.describe()


@pytest.mark.parametrize(
    ("profile", "configured", "expected"), [("gpu", None, 0.25), ("cpu", None, 0.0), ("cpu", 0.5, 0.5)]
)
def test_gpu_share_follows_the_profile_unless_set(profile: str, configured: float | None, expected: float) -> None:
    plan = plan_cluster(ClusterConfig(worker_gpus=configured), streams(1), profile)
    assert plan.gpus == expected


def test_no_streams_or_repeated_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="no streams"):
        plan_cluster(ClusterConfig(), (), "cpu")
    with pytest.raises(ConfigError, match="repeated: s0"):
        plan_cluster(ClusterConfig(), streams(1) * 2, "cpu")


def test_a_cluster_refuses_a_sqlite_store() -> None:
    with pytest.raises(ConfigError, match="outputs.events_db: cluster needs a PostgreSQL store"):
        check_cluster_store(AppConfig(cluster=ClusterConfig()))
    with pytest.raises(ConfigError, match="outputs.events_sqlite"):
        check_cluster_store(AppConfig.model_validate({"outputs": {"events_sqlite": False}}))
    check_cluster_store(AppConfig.model_validate({"outputs": {"events_db": "postgresql://u:p@db/events"}}))


def test_each_worker_journals_to_its_own_file() -> None:
    group = plan_cluster(ClusterConfig(streams_per_worker=1), streams(2), "cpu").groups[1]
    paths = group_options_paths(group, Path("rec/events.jsonl"), None)
    assert (paths.events, paths.tracks_out) == (Path("rec/events-w1.jsonl"), None)


def test_summaries_add_up_and_survive_pickling() -> None:
    a = RunSummary(
        10,
        10,
        0,
        5.0,
        1,
        {TrackKey("s0", 0, 1): None},
        latency_p95_ms=20.0,
        per_stream={"s0": RunSummary(10, 10, 0, 5.0, 1)},
    )
    b = RunSummary(
        4, 3, 1, 2.0, 2, latency_p95_ms=30.0, per_stream={"s1": RunSummary(4, 3, 1, 2.0, 2)}, integrations={"alerts": 2}
    )
    merged = merge_summaries([pickle.loads(pickle.dumps(a)), b])
    assert (merged.frames_in, merged.frames_processed, merged.frames_dropped, merged.tracks) == (14, 13, 1, 3)
    assert merged.fps == 7.0 and merged.latency_p95_ms == 30.0 and merged.latency_p50_ms is None
    assert set(merged.per_stream) == {"s0", "s1"} and dict(merged.integrations) == {"alerts": 2}
    assert merge_summaries([]).frames_in == 0


class _TwoFrames(FrameSource):
    stream_id, is_live, nominal_fps = "cam", False, 25.0  # type: ignore[assignment]

    def run(self, emit: Emit, stop: threading.Event) -> SourceStats:
        for i in range(2):
            emit(Frame("cam", i, 0, i / 25, 0.0, np.zeros((4, 4, 3), np.uint8)))
        return SourceStats(frames_read=2, epochs=1)


def test_a_resumed_source_announces_itself_and_runs_in_its_epoch() -> None:
    items: list[Frame | SourceStatus] = []
    stats = ResumedSource(_TwoFrames(), 2, "worker w0 restarted").run(
        lambda x: items.append(x) is None, threading.Event()
    )
    statuses = [(s.kind, s.epoch) for s in items[:2] if isinstance(s, SourceStatus)]
    assert statuses == [("down", 1), ("up", 2)] and "worker w0 restarted" in str(items[0])
    assert [(f.index, f.epoch) for f in items[2:] if isinstance(f, Frame)] == [(0, 2), (1, 2)]
    assert stats.frames_read == 2
    with pytest.raises(ValueError, match=">= 1"):
        ResumedSource(_TwoFrames(), 0, "")


def test_cluster_option_turns_the_cluster_on_at_that_address() -> None:
    assert with_cluster(AppConfig(), None).cluster is None
    config = with_cluster(AppConfig(cluster=ClusterConfig(streams_per_worker=3)), "ray://head:10001")
    assert config.cluster is not None and (config.cluster.address, config.cluster.streams_per_worker) == (
        "ray://head:10001",
        3,
    )
    with pytest.raises(UserError, match="--cluster not an address"):
        with_cluster(AppConfig(), "not an address")


def test_cluster_with_the_sqlite_store_is_one_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"streams:\n  - name: a\n    url: rtsp://cam/x\noutputs:\n  dir: {tmp_path / 'rec'}\n")
    assert main(["run", "--config", str(cfg), "--cluster", "127.0.0.1:1"]) == EXIT_USAGE
    assert "cluster needs a PostgreSQL store" in capsys.readouterr().err


def test_an_unreachable_cluster_is_one_line_naming_its_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scripts.pg_server import free_port

    port = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "streams:\n  - name: a\n    url: rtsp://cam/x\n"
        f"outputs:\n  dir: {tmp_path / 'rec'}\n  events_db: postgresql://app:Secret1@127.0.0.1:9/events\n"
    )
    assert main(["run", "--config", str(cfg), "--cluster", f"127.0.0.1:{port}"]) == EXIT_USAGE
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: cluster 127.0.0.1:{port}: cannot reach the Ray head")


@pytest.mark.slow
def test_a_run_without_cluster_never_imports_ray(tmp_path: Path) -> None:
    """One process, no Ray: a whole app run (fake models, a generated clip) leaves ``ray`` unimported."""
    script = f"""
import sys
from pathlib import Path
from tests.cluster.scenario import write_clip
from tests.cluster.fakes import FakeModels
import stream.cli, stream.cluster, stream.cluster.plan, stream.web.serve
from stream.app import RunOptions, build_app
from stream.config import AppConfig
work = Path({str(tmp_path)!r})
clip = write_clip(work / "clip.mp4", 12)
config = AppConfig.model_validate({{"profile": "default", "streams": [{{"name": "a", "path": str(clip)}}],
    "gallery": {{"dir": str(work / "none")}}, "outputs": {{"dir": str(work / "rec"), "annotated_video": False}}}})
summary = build_app(config, RunOptions(), models=FakeModels()()).run()
assert summary.frames_processed == 12, summary
print("ray imported:", "ray" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray imported: False" in done.stdout


def test_only_stream_cluster_imports_ray() -> None:
    from tests.core.test_imports import imported_names, module_files

    importers = sorted(
        module
        for module, path in module_files().items()
        if any(name == "ray" or name.startswith("ray.") for name in imported_names(path, module))
    )
    # stream.cluster's modules, and annotate's own Ray scheduler (``run.py annotate --cluster``)
    allowed = ("stream.cluster.", "stream.commands.annotate_ray")
    assert importers and all(m.startswith(allowed) for m in importers), importers
    assert "stream.cluster.live" not in importers  # the web poller gets Ray's calls passed in
    assert "stream.cluster.plan" not in importers and "stream.cluster" not in importers


def test_a_worker_status_is_one_line() -> None:
    from stream.cluster.worker import StreamProgress, WorkerStatus, status_line

    status = WorkerStatus(
        "w0", 1, 42, "node-a", "n1", True, (StreamProgress("door", 31, 30, False), StreamProgress("hall", 5, 5, True))
    )
    assert status_line("w0", status) == "worker w0 (pid 42 on node-a, epoch 1): running; door 30/31 up, hall 5/5 ended"
    assert status_line("w1", None) == "worker w1: no answer (restarting or busy)"
