"""Embedding off the frame path: the embed thread of a pipeline with live streams.

With live streams, frames must not wait for embeddings (≈ 45–120 ms a crop on a 2-core CPU). The
recognition thread hands the best-shot crops of its tracks to an ``EmbedWorker`` and carries on
tracking; the worker's thread embeds them and the recognition thread collects the vectors on a later
batch, votes, and attaches the identity events to the next frame of each stream. One batch is in
flight at a time, so no queue grows: while the worker is busy the crops wait in their tracks'
best-shot mailboxes, which keep only the best few.

Files run without a worker: the recognition thread embeds synchronously, so a file gives the same
events on every run.

Ownership: ``submit``/``collect``/``idle`` belong to the recognition thread, ``run`` to the embed
thread; they meet in two one-slot channels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stream.faces.embedder import Embedder
from stream.pipeline.channels import Channel
from stream.types import FaceCrop

__all__ = ["EmbedWorker", "Embedded", "LatencyObserver", "embed_crops"]


class LatencyObserver(Protocol):
    """Where stage timings go (``stream.outputs.metrics.Metrics``): seconds per item of a stage."""

    def observe_latency(self, stage: str, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Embedded:
    """Crops and their embeddings: vectors (N, D) unit float32, norms (N,) float32."""

    crops: tuple[FaceCrop, ...]
    vectors: np.ndarray
    norms: np.ndarray


def embed_crops(embedder: Embedder, crops: Sequence[FaceCrop], observer: LatencyObserver | None) -> Embedded:
    """Embed ``crops`` in one call, timed as the ``embed`` stage (the call: what each crop waits)."""
    started = time.perf_counter()
    vectors, norms = embedder.embed(np.stack([c.crop for c in crops]))
    if observer is not None:
        observer.observe_latency("embed", time.perf_counter() - started)
    return Embedded(tuple(crops), vectors, norms)


class EmbedWorker:
    """Embeds batches of crops in its own thread, one batch in flight at a time."""

    def __init__(self, embedder: Embedder, observer: LatencyObserver | None = None) -> None:
        self._embedder = embedder
        self._observer = observer
        self._requests: Channel[tuple[FaceCrop, ...]] = Channel(1, "embed requests")
        self._results: Channel[Embedded] = Channel(1, "embed results")
        self._in_flight = False  # recognition thread only

    # ---- recognition thread ---------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No batch submitted whose result has not been collected."""
        return not self._in_flight

    def submit(self, crops: Sequence[FaceCrop], stop: threading.Event) -> None:
        """Hand a batch to the worker; only when ``idle`` (so this never waits for room)."""
        if self._in_flight:
            raise RuntimeError("EmbedWorker.submit: a batch is already in flight")
        if crops:
            self._requests.put(tuple(crops), stop)
            self._in_flight = True

    def collect(self) -> Embedded | None:
        """The finished batch, if there is one; never waits."""
        done = self._results.get_nowait()
        if done is not None:
            self._in_flight = False
        return done

    # ---- embed thread -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Embed each submitted batch until ``stop`` is set (raises ``Stopped`` then)."""
        while True:
            crops = self._requests.get(stop)
            self._results.put(embed_crops(self._embedder, crops, self._observer), stop)
