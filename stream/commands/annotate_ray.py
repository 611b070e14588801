"""`run.py annotate --cluster ADDRESS`: the folder's files annotated by worker actors on a Ray cluster.

The only module that imports ray for annotate; ``run_annotate`` imports it only when a cluster is set
(``--cluster`` or config.yaml's ``cluster``). The driver (this process) plans the batch, hands out
one file at a time to each actor and feeds every result to the same progress bar, summary and exit
code as the local worker processes (``annotate.run_jobs``); this mirrors their semantics:

- An actor (``FileWorker``, ``cluster.annotate_cpus`` CPUs) starts like a local worker process: it
  calls ``start()`` once (models, gallery matcher), then annotates files with ``annotate_job``.
- An actor whose process or node dies fails only the file it held (the reason names the actor's pid
  and node) and is replaced while files wait; an actor that cannot start raises ``WorkerStartError``.
- Ray restarts nothing itself (``max_restarts=0``, no task retries): a file is never annotated twice
  at the same time, and a file that kills its worker fails instead of killing the next one.

The actors write each file's outputs themselves, at the paths the driver planned: the input and
output folders (and the code and its virtual environment) must be at the same paths on every node,
a shared filesystem. A cluster that cannot be reached is a ``UserError`` naming its address.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError

from stream.commands.annotate_jobs import (
    FileFunction,
    FileJob,
    FileResult,
    WorkerStartError,
    failure_reason,
    start_failure,
)
from stream.config import ClusterConfig
from stream.errors import UserError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # a TCP probe of host:port first: Ray itself retries an absent GCS for minutes
START_TIMEOUT_S = 600.0  # no actor ready by then (the cluster never had room for one, or start hangs): give up
POLL_S = 1.0  # ray.wait's timeout: the loop stays responsive to Ctrl-C and the start deadline


def run_ray_jobs(
    jobs: Sequence[FileJob],
    start: Callable[[], FileFunction],
    cluster: ClusterConfig,
    actors: int | None = None,
    on_result: Callable[[FileResult], None] = lambda r: None,
) -> list[FileResult]:
    """Annotate ``jobs`` on the Ray cluster at ``cluster.address`` with ``actors`` worker actors
    (None: as many as the cluster's CPUs hold at ``cluster.annotate_cpus`` each); results in
    completion order. Connects, runs, and disconnects (``ray.shutdown``) whatever happens."""
    connect(cluster.address)
    try:
        count = actor_count(cluster.annotate_cpus, actors, len(jobs))
        return _ActorPool(jobs, start, cluster.annotate_cpus, count, on_result).run()
    finally:
        ray.shutdown()


def connect(address: str) -> None:
    """``ray.init`` on an existing cluster; a ``UserError`` naming ``address`` when it cannot be reached."""
    probe_address(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, configure_logging=True)
    except (ConnectionError, RuntimeError, OSError, TimeoutError) as exc:
        raise UserError(f"--cluster {address}: cannot connect to the Ray cluster ({_first_line(exc)})") from None


def probe_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """For host:port and ray://host:port, a TCP connection first (``auto`` is Ray's to find)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise UserError(f"--cluster {address}: cannot reach the Ray cluster ({exc.strerror or exc})") from None


def actor_count(cpus: float, wanted: int | None, files: int) -> int:
    """How many actors: ``wanted``, else what the alive nodes' CPUs hold at ``cpus`` each; at most one
    per file. A ``UserError`` when no node has ``cpus`` CPUs (an actor could never be placed)."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    largest = max((float(r.get("CPU", 0.0)) for r in nodes), default=0.0)
    if largest < cpus:
        raise UserError(f"cluster.annotate_cpus {cpus:g}: no node of the cluster has that many CPUs (largest: {largest:g})")
    fits = sum(int(float(r.get("CPU", 0.0)) // cpus) for r in nodes)
    return max(1, min(wanted or fits, files))


class FileWorker:
    """A worker actor: ``start()`` once (logging, torch threads, models, matcher), then one file per
    ``annotate`` call. A start failure is kept and reported by ``ready`` (not raised: the driver tells
    a user's mistake from a crash as the local pool does)."""

    def __init__(self, start: Callable[[], FileFunction]) -> None:
        self.annotate_file: FileFunction | None = None
        self.failure: tuple[str, bool] | None = None
        try:
            self.annotate_file = start()
        except Exception as exc:
            self.failure = start_failure(exc)

    def ready(self) -> tuple[str, int, tuple[str, bool] | None]:
        """Where it runs (node address, pid) and its start failure, if any."""
        return ray.util.get_node_ip_address(), os.getpid(), self.failure

    def annotate(self, job: FileJob) -> FileResult:
        assert self.annotate_file is not None, "annotate called on a worker that did not start"
        return self.annotate_file(job)


@dataclass
class _Actor:
    handle: Any  # ray.actor.ActorHandle of a FileWorker
    where: str = "not started"  # "pid P on node N", once ready
    job: FileJob | None = None  # the file it is on


class _ActorPool:
    """Worker actors fed one file at a time, so the driver always knows which file each one holds;
    every outstanding call (a ``ready`` or an ``annotate``) is a ref in ``pending``, gathered with
    ``ray.wait`` in a loop with a timeout."""

    def __init__(
        self,
        jobs: Sequence[FileJob],
        start: Callable[[], FileFunction],
        cpus: float,
        actors: int,
        on_result: Callable[[FileResult], None],
    ) -> None:
        self.queue = list(reversed(jobs))  # pop() takes the next
        self.total = len(jobs)
        self.start = start
        self.actors = actors
        self.on_result = on_result
        self.remote = ray.remote(FileWorker).options(num_cpus=cpus, max_restarts=0, max_task_retries=0)
        self.pending: dict[Any, _Actor] = {}  # ObjectRef -> the actor computing it
        self.live: list[_Actor] = []
        self.results: list[FileResult] = []
        self.deaths = 0
        self.started = False

    def run(self) -> list[FileResult]:
        try:
            for _ in range(self.actors):
                self._spawn()
            deadline = time.monotonic() + START_TIMEOUT_S
            while len(self.results) < self.total:
                done, _ = ray.wait(list(self.pending), num_returns=1, timeout=POLL_S)
                for ref in done:
                    self._settle(ref, self.pending.pop(ref))
                if not self.started and time.monotonic() > deadline:
                    raise WorkerStartError(
                        f"no Ray worker started within {START_TIMEOUT_S:g} s (is there room on the cluster?)", False
                    )
        finally:
            self._stop()
        return self.results

    def _spawn(self) -> None:
        actor = _Actor(self.remote.remote(self.start))
        self.live.append(actor)
        self.pending[actor.handle.ready.remote()] = actor

    def _settle(self, ref: Any, actor: _Actor) -> None:
        """One call came back: a worker ready (or not), a file's result, or the actor's death."""
        try:
            value = ray.get(ref, timeout=POLL_S)
        except RayTaskError as exc:  # the call raised (annotate_file does not; a bug): the actor lives on
            if actor.job is None:
                raise WorkerStartError(f"worker could not start: {failure_reason(exc.cause or exc)}", False) from None
            self._report(FileResult(actor.job.source, actor.job.out_dir, "failed", reason=failure_reason(exc.cause or exc)))
        except GetTimeoutError:  # cannot happen after ray.wait said done; keep waiting on it
            self.pending[ref] = actor
            return
        except RayError as exc:  # the actor's process or node died
            self._buried(actor, exc)
            return
        else:
            if actor.job is None:
                self._ready(actor, value)
            else:
                self._report(value)
        self._next(actor)

    def _ready(self, actor: _Actor, value: tuple[str, int, tuple[str, bool] | None]) -> None:
        node, pid, failure = value
        if failure is not None:
            raise WorkerStartError(f"worker could not start: {failure[0]}", failure[1])
        actor.where = f"pid {pid} on node {node}"
        self.started = True

    def _next(self, actor: _Actor) -> None:
        actor.job = self.queue.pop() if self.queue else None
        if actor.job is None:  # no more files: free its CPUs for the others' nodes
            self._kill(actor)
            return
        self.pending[actor.handle.annotate.remote(actor.job)] = actor

    def _report(self, result: FileResult) -> None:
        self.results.append(result)
        self.on_result(result)

    def _buried(self, actor: _Actor, exc: RayError) -> None:
        """An actor died: fail the file it held; start another while files are waiting."""
        self.deaths += 1
        self._kill(actor)
        if actor.job is not None:
            why = f"Ray worker ({actor.where}) died while annotating this file: {_first_line(exc)}"
            self._report(FileResult(actor.job.source, actor.job.out_dir, "failed", reason=why))
        else:
            log.warning("a Ray worker died before it was ready: %s", _first_line(exc))
        if self.deaths > self.total + self.actors:
            raise WorkerStartError(f"Ray workers keep dying (last: {_first_line(exc)})", False)
        if self.queue and len(self.live) < self.actors:
            self._spawn()

    def _kill(self, actor: _Actor) -> None:
        if actor in self.live:
            self.live.remove(actor)
        with contextlib.suppress(Exception):
            ray.kill(actor.handle, no_restart=True)

    def _stop(self) -> None:
        """Files still in flight (Ctrl-C, an error) are cut short: no summary, so they are redone next time."""
        for actor in list(self.live):
            self._kill(actor)
        self.pending.clear()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
