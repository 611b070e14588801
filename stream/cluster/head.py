"""The head's side of streams on a cluster: plan the groups, place one worker actor per group, wait
for their runs (a bounded poll, so Ctrl-C is seen within a second), run a group again in its next
epoch when its worker's process died and Ray restarted it, and merge the summaries.

Who owns what: this thread owns the actor handles and the pending ``run`` calls; each actor owns its
pipeline. Ctrl-C / SIGTERM: every worker is asked to stop (outputs are finished there), then given
``STOP_GRACE_S`` to answer before its actor is killed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.app import RunOptions, stream_from_arg
from stream.config import AppConfig
from stream.errors import PipelineError
from stream.faces.models import ModelOverrides, Models
from stream.outputs.summary import RunSummary

from . import ray_adapter
from .plan import ClusterPlan, WorkerGroup, check_cluster_store, group_options_paths, merge_summaries, plan_cluster
from .worker import StreamWorker, WorkerStatus, status_line, worker_options

__all__ = ["POLL_S", "ClusterRun", "run_on_cluster", "worker_name"]

log = logging.getLogger(__name__)

POLL_S = 1.0  # the longest the head waits on Ray before looking at Ctrl-C again
STOP_GRACE_S = 30.0  # after Ctrl-C: how long workers get to finish their outputs
STATUS_TIMEOUT_S = 10.0
STATUS_LOG_S = 30.0  # how often the head logs each worker's status while they run
RESTART_WAIT_S = 120.0  # a dead worker's process must be back (Ray restarts it) within this


class WorkerLostError(RuntimeError):
    """A worker actor died more often than Ray restarts it."""


def worker_name(group: WorkerGroup) -> str:
    """The Ray actor name of a group's worker (``ray.get_actor`` finds it from this driver)."""
    return f"adaface-stream-{group.name}"


@dataclass
class _Placed:
    """One group's actor and its pending ``run`` call; ``epoch``: runs started after restarts."""

    group: WorkerGroup
    actor: Any
    ref: Any = None
    epoch: int = 0
    summary: RunSummary | None = None


@dataclass
class ClusterRun:
    """A planned cluster run (``start`` places the actors, ``wait`` returns the merged summary)."""

    config: AppConfig
    options: RunOptions
    plan: ClusterPlan
    overrides: ModelOverrides = field(default_factory=ModelOverrides)
    models: Callable[[], Models] | None = None
    placed: list[_Placed] = field(default_factory=list)

    def start(self) -> None:
        cls = StreamWorker
        events = self.options.events or (
            self.config.outputs.dir / "events.jsonl" if self.config.outputs.events_jsonl else None
        )
        for group in self.plan.groups:
            actor_cls = ray_adapter.worker_actor(
                cls,
                cpus=self.plan.cpus,
                gpus=self.plan.gpus,
                max_restarts=self.plan.max_restarts,
                name=worker_name(group),
            )
            paths = group_options_paths(group, events, self.options.tracks_out)
            options = worker_options(self.options, paths.events, paths.tracks_out)
            actor = actor_cls.remote(self.config, group, options, self.overrides, self.models, self.plan.cpus)
            placed = _Placed(group, actor)
            placed.ref = actor.run.remote(0)
            self.placed.append(placed)

    def wait(self) -> RunSummary:
        """Until every group's run returned; a worker whose process died runs its group again in the
        next epoch (up to ``max_restarts`` times, as Ray restarts it)."""
        import ray

        next_log = time.monotonic() + STATUS_LOG_S
        while True:
            pending = {p.ref: p for p in self.placed if p.summary is None}
            if not pending:
                return merge_summaries([p.summary for p in self.placed if p.summary is not None])
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                self._collect(ray, pending[ref])
            if time.monotonic() >= next_log:
                for placed, status in zip(self.placed, self.statuses(), strict=True):
                    log.info("%s", status_line(placed.group.name, status))
                next_log = time.monotonic() + STATUS_LOG_S

    def _collect(self, ray: Any, placed: _Placed) -> None:
        try:
            placed.summary = ray.get(placed.ref)
        except Exception as exc:
            if not ray_adapter.is_worker_death(exc):
                raise  # the pipeline's own error, re-raised as its cause's type (UserError, PipelineError)
            if placed.epoch >= self.plan.max_restarts:
                died = WorkerLostError(
                    f"its process died {placed.epoch + 1} time(s), more than cluster.max_restarts="
                    f"{self.plan.max_restarts} ({', '.join(placed.group.stream_names)})"
                )
                raise PipelineError(f"cluster worker {placed.group.name}", died) from died
            log.warning(
                "cluster worker %s died (%s); waiting for Ray to restart it", placed.group.name, type(exc).__name__
            )
            pid = self._restarted(ray, placed)
            placed.epoch += 1
            log.warning(
                "cluster worker %s restarted (pid %d): its streams run again in epoch %d",
                placed.group.name,
                pid,
                placed.epoch,
            )
            placed.ref = placed.actor.run.remote(placed.epoch)

    def _restarted(self, ray: Any, placed: _Placed) -> int:
        """The new process id once the restarted actor answers (calls made while Ray restarts it fail
        as unavailable: retried for up to ``RESTART_WAIT_S``); a ``PipelineError`` when it stays dead."""
        deadline = time.monotonic() + RESTART_WAIT_S
        while time.monotonic() < deadline:
            try:
                return int(ray.get(placed.actor.pid.remote(), timeout=STATUS_TIMEOUT_S))
            except Exception as exc:
                if not ray_adapter.is_worker_unavailable(exc):
                    lost = WorkerLostError(f"not restarted ({type(exc).__name__}: {str(exc).splitlines()[0]})")
                    raise PipelineError(f"cluster worker {placed.group.name}", lost) from exc
                time.sleep(POLL_S / 4)
        lost = WorkerLostError(f"not back within {RESTART_WAIT_S:.0f} s after its process died")
        raise PipelineError(f"cluster worker {placed.group.name}", lost)

    def statuses(self, timeout_s: float = STATUS_TIMEOUT_S) -> list[WorkerStatus | None]:
        """Each worker's status (None: it did not answer within ``timeout_s`` in all, e.g. while restarting)."""
        import ray

        refs = [p.actor.status.remote() for p in self.placed]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        answered = set(ready)
        out: list[WorkerStatus | None] = []
        for ref in refs:
            try:
                out.append(ray.get(ref, timeout=0) if ref in answered else None)
            except Exception:
                out.append(None)
        return out

    def stop(self) -> None:
        """Ask every worker to finish, wait up to ``STOP_GRACE_S`` for their runs, then kill the actors."""
        import ray

        for p in self.placed:
            with contextlib.suppress(Exception):
                p.actor.stop.remote()
        deadline = time.monotonic() + STOP_GRACE_S
        refs = [p.ref for p in self.placed if p.summary is None and p.ref is not None]
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=max(0.0, deadline - time.monotonic()))
        for p in self.placed:
            with contextlib.suppress(Exception):
                ray.kill(p.actor, no_restart=True)


def cluster_plan(config: AppConfig, options: RunOptions) -> ClusterPlan:
    """The plan of ``config``'s cluster section (``--source`` values replace the configured streams)."""
    assert config.cluster is not None
    check_cluster_store(config)
    streams: Sequence = (
        tuple(stream_from_arg(text, i) for i, text in enumerate(options.sources)) if options.sources else config.streams
    )
    return plan_cluster(config.cluster, streams, config.profile)


def run_on_cluster(
    config: AppConfig,
    options: RunOptions,
    overrides: ModelOverrides | None = None,
    *,
    models: Callable[[], Models] | None = None,
    watch: Callable[[ClusterRun], contextlib.AbstractContextManager[object]] | None = None,
) -> RunSummary:
    """Run the configured streams as worker actors on ``config.cluster``'s Ray cluster; the merged
    summary (written to ``options.summary`` too). ``models``: made in each worker (tests pass fakes).
    ``watch``: entered once the workers are placed, left when their runs ended or failed, before the
    head lets go of them (the web app's poller: ``stream.cluster.live``)."""
    plan = cluster_plan(config, options)
    if options.sources:
        config = config.model_copy(update={"streams": tuple(s for g in plan.groups for s in g.streams)})
    log.info("cluster %s: %s", plan.address, plan.describe())
    connected_here = ray_adapter.connect(plan.address)
    run = ClusterRun(config, options, plan, overrides or ModelOverrides(), models)
    finished = False
    try:
        run.start()
        with watch(run) if watch is not None else contextlib.nullcontext():
            summary = run.wait()
        finished = True
    finally:
        if not finished:
            run.stop()
        if connected_here:
            ray_adapter.disconnect()
    if options.summary is not None:
        options.summary.parent.mkdir(parents=True, exist_ok=True)
        options.summary.write_text(summary.to_json() + "\n")
    return summary
