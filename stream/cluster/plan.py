"""Pure planning for streams on a cluster: which streams each worker actor runs, what it reserves,
where its outputs go, and how the workers' summaries add up. No Ray, no I/O."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stream.config import AppConfig, ClusterConfig, ConfigError, StreamConfig
from stream.outputs.summary import RunSummary

__all__ = [
    "ClusterPlan",
    "WorkerGroup",
    "check_cluster_store",
    "group_options_paths",
    "merge_summaries",
    "plan_cluster",
]

GPU_SHARE_DEFAULT = 0.25  # cluster.worker_gpus when null and the profile is gpu


@dataclass(frozen=True, slots=True)
class WorkerGroup:
    """The streams one worker actor runs; ``name`` is stable run to run (``w0``, ``w1``, ...)."""

    index: int
    streams: tuple[StreamConfig, ...]

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"WorkerGroup.index: must be >= 0, got {self.index}")
        if not self.streams:
            raise ValueError("WorkerGroup.streams: a group has at least one stream")

    @property
    def name(self) -> str:
        return f"w{self.index}"

    @property
    def stream_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.streams)


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """Every worker group and what each worker actor asks Ray for."""

    address: str
    groups: tuple[WorkerGroup, ...]
    cpus: float
    gpus: float
    max_restarts: int

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("ClusterPlan.groups: at least one group")
        if self.cpus <= 0 or self.gpus < 0 or self.max_restarts < 0:
            raise ValueError(
                f"ClusterPlan: bad resources cpus={self.cpus} gpus={self.gpus} restarts={self.max_restarts}"
            )

    def describe(self) -> str:
        gpu = f", {self.gpus:g} GPU" if self.gpus else ""
        groups = "; ".join(f"{g.name}: {', '.join(g.stream_names)}" for g in self.groups)
        return f"{len(self.groups)} stream worker(s) ({self.cpus:g} CPU{gpu} each, up to {self.max_restarts} restarts): {groups}"


def plan_cluster(cluster: ClusterConfig, streams: Sequence[StreamConfig], profile: str) -> ClusterPlan:
    """Split ``streams`` in order into groups of ``cluster.streams_per_worker``; the GPU share is
    ``cluster.worker_gpus``, or 0.25 with the gpu profile and 0 otherwise."""
    if not streams:
        raise ConfigError("cluster: no streams to place; configure streams (the built-in demo runs in one process)")
    names = Counter(s.name for s in streams)
    twice = sorted(n for n, c in names.items() if c > 1)
    if twice:
        raise ConfigError(f"streams: names must be unique on a cluster, repeated: {', '.join(twice)}")
    size = cluster.streams_per_worker
    groups = tuple(
        WorkerGroup(i, tuple(streams[start : start + size])) for i, start in enumerate(range(0, len(streams), size))
    )
    gpus = cluster.worker_gpus if cluster.worker_gpus is not None else (GPU_SHARE_DEFAULT if profile == "gpu" else 0.0)
    return ClusterPlan(cluster.address, groups, cluster.worker_cpus, gpus, cluster.max_restarts)


def check_cluster_store(config: AppConfig) -> None:
    """Workers on other nodes cannot share a SQLite file: a cluster needs the PostgreSQL store."""
    out = config.outputs
    if not out.events_sqlite:
        raise ConfigError("outputs.events_sqlite: must be true with cluster (the workers share the event store)")
    if not (out.events_db or "").startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "outputs.events_db: cluster needs a PostgreSQL store (postgresql://user:pass@host/db); "
            "workers on other nodes cannot share a SQLite file"
        )


@dataclass(frozen=True, slots=True)
class GroupPaths:
    """Outputs of one worker that would collide between workers: its events journal and tracks file."""

    events: Path | None
    tracks_out: Path | None


def group_options_paths(group: WorkerGroup, events: Path | None, tracks_out: Path | None) -> GroupPaths:
    """``events.jsonl`` → ``events-w0.jsonl`` (each worker journals to its own file)."""

    def suffixed(path: Path | None) -> Path | None:
        return None if path is None else path.with_name(f"{path.stem}-{group.name}{path.suffix}")

    return GroupPaths(suffixed(events), suffixed(tracks_out))


def merge_summaries(summaries: Sequence[RunSummary]) -> RunSummary:
    """The workers' summaries as one: counts and rates add up (workers run side by side), streams and
    identities are the union, latency percentiles are the worst worker's (an upper bound: the workers'
    latency samples are not shipped back)."""
    if not summaries:
        return RunSummary(0, 0, 0, 0.0, 0)
    integrations: Counter[str] = Counter()
    for s in summaries:
        integrations.update(s.integrations)
    return dataclasses.replace(
        summaries[0],
        frames_in=sum(s.frames_in for s in summaries),
        frames_processed=sum(s.frames_processed for s in summaries),
        frames_dropped=sum(s.frames_dropped for s in summaries),
        fps=sum(s.fps for s in summaries),
        tracks=sum(s.tracks for s in summaries),
        identities={k: v for s in summaries for k, v in s.identities.items()},
        reconnects=sum(s.reconnects for s in summaries),
        latency_p50_ms=_worst([s.latency_p50_ms for s in summaries]),
        latency_p95_ms=_worst([s.latency_p95_ms for s in summaries]),
        per_stream={k: v for s in summaries for k, v in s.per_stream.items()},
        decode_errors=sum(s.decode_errors for s in summaries),
        detector_fallbacks=sum(s.detector_fallbacks for s in summaries),
        strangers=sum(s.strangers for s in summaries),
        integrations=dict(integrations),
    )


def _worst(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
