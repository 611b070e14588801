"""The stream worker actor: one group of streams through the same ``build_app``/``App.run`` as one
process, writing to the shared PostgreSQL store.

The head makes it a Ray actor (``stream.cluster.ray_adapter.worker_actor``) and calls ``run(epoch)``;
``status``, ``stop``, ``pid``, ``latest`` and ``view_status`` are answered from other threads of the actor (``max_concurrency``)
while ``run`` goes on. After its process died Ray starts the actor again (the constructor runs again)
and the head calls ``run`` with the next epoch: the streams start again, each announced with a
``stream_up`` in that epoch (``stream.cluster.resume``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream.app import App, RunOptions, build_app
from stream.config import AppConfig, StreamConfig
from stream.faces.models import ModelOverrides, Models
from stream.logs import setup_logging
from stream.outputs.live_view import LiveView
from stream.outputs.summary import RunSummary
from stream.sources import FrameSource, open_source

from .live import RemoteFrame, ViewReport, latest_frame, view_report
from .plan import WorkerGroup
from .resume import ResumedSource

__all__ = ["StreamProgress", "StreamWorker", "WorkerStatus", "status_line", "worker_options"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamProgress:
    """One stream of a worker: frames read and through every output; ``ended``: it reached its end."""

    name: str
    frames_in: int
    frames_out: int
    ended: bool


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """What the head sees of a worker: its group, the epoch it runs, where, and each stream's progress
    (empty before ``run`` built the pipeline). ``up``: the pipeline is running now."""

    group: str
    epoch: int
    pid: int
    host: str
    node_id: str
    up: bool
    streams: tuple[StreamProgress, ...]


class StreamWorker:
    """``models``: makes the detector and embedder in the worker's process (None: ``build_models`` with
    ``overrides``); it must pickle (it travels to the node)."""

    def __init__(
        self,
        config: AppConfig,
        group: WorkerGroup,
        options: RunOptions,
        overrides: ModelOverrides | None = None,
        models: Callable[[], Models] | None = None,
        cpus: float = 1.0,
    ) -> None:
        setup_logging(config.runtime.log_level)
        self.config = config.model_copy(update={"streams": group.streams, "cluster": None})
        self.group = group
        self.options = options
        self.overrides = overrides or ModelOverrides()
        self.make_models = models
        self.cpus = cpus
        self.epoch = 0
        self._app: App | None = None
        self._stop_asked = threading.Event()
        self._lock = threading.Lock()
        # what the head's web app shows (``latest``, ``view_status``; ``stream.cluster.live``)
        self.view = LiveView({s.name: s.effective_mode == "live" for s in group.streams}, max_fps=config.web.live_fps)
        self.instance = uuid.uuid4().hex  # another after a restart (a new process, a new view)
        log.info(
            "stream worker %s (pid %d on %s): %s",
            group.name,
            os.getpid(),
            socket.gethostname(),
            ", ".join(group.stream_names),
        )

    def pid(self) -> int:
        return os.getpid()

    def run(self, epoch: int = 0) -> RunSummary:
        """Run the group's streams to their end (files) or until ``stop``; ``epoch`` >= 1: a run again
        after the worker's process died (files start again from their beginning in that epoch)."""
        self.epoch = epoch
        models = self.make_models() if self.make_models is not None else self._build_models()

        def open_stream(spec: StreamConfig) -> FrameSource:
            source = open_source(spec)
            if epoch == 0:
                return source
            return ResumedSource(source, epoch, f"worker {self.group.name} restarted (run {epoch + 1})")

        app = build_app(
            self.config, self.options, self.overrides, models=models, open_stream=open_stream, view=self.view
        )
        with self._lock:
            self._app = app
            if self._stop_asked.is_set():
                app.pipeline.stop.set()
        log.info("stream worker %s: epoch %d started", self.group.name, epoch)
        return app.run()

    def stop(self) -> None:
        """Ask the running pipeline to finish (outputs are closed, the summary returned by ``run``)."""
        with self._lock:
            self._stop_asked.set()
            if self._app is not None:
                self._app.pipeline.stop.set()

    def status(self) -> WorkerStatus:
        with self._lock:
            app = self._app
        progress: tuple[StreamProgress, ...] = ()
        up = False
        if app is not None:
            counters = app.pipeline.counters.streams
            progress = tuple(
                StreamProgress(name, c.frames_in, c.frames_out, c.ended) for name, c in sorted(counters.items())
            )
            up = not all(p.ended for p in progress)
        return WorkerStatus(self.group.name, self.epoch, os.getpid(), socket.gethostname(), _node_id(), up, progress)

    def latest(self, stream: str, after_seq: int = 0) -> RemoteFrame | None:
        """The newest annotated JPEG of ``stream`` unless its seq is ``after_seq`` (the head has it);
        asking keeps frames of it coming for a few seconds (``LiveView.request_frame``)."""
        return latest_frame(self.view, stream, after_seq)

    def view_status(self, after_event: int = 0) -> ViewReport:
        """Each stream's status (up/down, frames/s, drops, reconnects) and the events after ``after_event``."""
        return view_report(self.view, self.group.name, self.instance, after_event)

    def _build_models(self) -> Models:
        import torch

        from stream.faces.models import build_models

        torch.set_num_threads(self.config.runtime.torch_threads or max(1, int(self.cpus)))  # the CPUs Ray reserved
        return build_models(self.config, self.overrides)


def status_line(group: str, status: WorkerStatus | None) -> str:
    """One log line of a worker's status: where it runs, its epoch, each stream's frames and state."""
    if status is None:
        return f"worker {group}: no answer (restarting or busy)"
    streams = ", ".join(f"{p.name} {p.frames_out}/{p.frames_in} {'ended' if p.ended else 'up'}" for p in status.streams)
    state = "running" if status.up else "idle"
    return f"worker {group} (pid {status.pid} on {status.host}, epoch {status.epoch}): {state}; {streams or 'starting'}"


def _node_id() -> str:
    """The Ray node this worker runs on ("" outside Ray)."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return ""


def worker_options(options: RunOptions, events: Path | None, tracks_out: Path | None) -> RunOptions:
    """A worker's run options: no sources of its own (its group is its config's streams), no window,
    summary or metrics port (the head has those), its own journal and tracks file."""
    return dataclasses.replace(
        options,
        sources=(),
        summary=None,
        display=False,
        metrics_port=None,
        progress=False,
        events=events,
        tracks_out=tracks_out,
    )
