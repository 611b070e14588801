"""End-of-run summary: counts, rates, latency percentiles, identities; as JSON and as a screen table.

Pure: no I/O, no clock. ``per_stream`` holds one ``RunSummary`` per stream id (whose own
``per_stream`` is empty); the top level is the whole run. ``identities`` maps each track
(``TrackKey``) to its last name (None: unknown) and is rendered as ``stream:id`` (``stream#epoch:id``
after a reconnect). Stream ids are masked (``mask_secrets``) in both renderings. Latencies are
``None`` when nothing was measured. ``decode_errors`` counts corrupt packets/frames the sources
skipped; ``detector_fallbacks`` counts detection batches that failed and were retried frame by frame;
``strangers`` counts the distinct ``unknown-N`` labels given (unknown people told apart).
``integrations`` holds the counts of MQTT and alert rules (alerts, mqtt_published, mqtt_dropped,
webhook_delivered, ...; see ``stream.integrations.hub``), empty when none is configured (and then left
out of the JSON).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from stream.logs import mask_secrets
from stream.types import TrackKey

__all__ = ["RunSummary", "latency_percentiles_ms"]

_COUNTS = (
    "frames_in",
    "frames_processed",
    "frames_dropped",
    "tracks",
    "reconnects",
    "decode_errors",
    "detector_fallbacks",
    "strangers",
)


@dataclass(frozen=True, slots=True)
class RunSummary:
    frames_in: int
    frames_processed: int
    frames_dropped: int
    fps: float
    tracks: int
    identities: Mapping[TrackKey, str | None] = field(default_factory=dict)
    reconnects: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    per_stream: Mapping[str, RunSummary] = field(default_factory=dict)
    decode_errors: int = 0
    detector_fallbacks: int = 0
    strangers: int = 0
    integrations: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _COUNTS:
            if getattr(self, name) < 0:
                raise ValueError(f"RunSummary.{name}: must be >= 0, got {getattr(self, name)}")
        object.__setattr__(self, "identities", MappingProxyType(dict(self.identities)))
        object.__setattr__(self, "per_stream", MappingProxyType(dict(self.per_stream)))
        object.__setattr__(self, "integrations", MappingProxyType(dict(self.integrations)))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Picklable (a cluster worker sends its summary to the head): the read-only mappings go as dicts."""
        values = tuple(
            dict(v) if isinstance(v, MappingProxyType) else v for v in (getattr(self, f.name) for f in fields(self))
        )
        return (type(self), values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "frames_in": self.frames_in,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "fps": _num(self.fps),
            "tracks": self.tracks,
            "identities": {mask_secrets(str(k)): v for k, v in sorted(self.identities.items())},
            "reconnects": self.reconnects,
            "decode_errors": self.decode_errors,
            "detector_fallbacks": self.detector_fallbacks,
            "strangers": self.strangers,
            "latency_p50_ms": _num(self.latency_p50_ms),
            "latency_p95_ms": _num(self.latency_p95_ms),
            "per_stream": {mask_secrets(k): s.to_dict() for k, s in sorted(self.per_stream.items())},
        }
        if self.integrations:
            out["integrations"] = dict(self.integrations)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)

    def table(self) -> str:
        """A short fixed-width table: one row per stream, a total row, then the identities."""
        head = f"{'stream':<16} {'in':>7} {'done':>7} {'drop':>6} {'fps':>6} {'tracks':>6} {'reconn':>6} {'p50 ms':>7} {'p95 ms':>7}"
        rows = [head, "-" * len(head)]
        rows += [_row(mask_secrets(k), s) for k, s in sorted(self.per_stream.items())]
        rows.append(_row("total", self))
        if self.decode_errors or self.detector_fallbacks:
            rows.append(
                f"corrupt packets/frames skipped: {self.decode_errors}; "
                f"detection batches retried frame by frame: {self.detector_fallbacks}"
            )
        if self.strangers:
            rows.append(f"strangers (unknown people told apart): {self.strangers}")
        if self.integrations:
            rows.append("integrations: " + ", ".join(f"{k} {v}" for k, v in self.integrations.items()))
        if self.identities:
            named = ", ".join(f"{mask_secrets(str(k))}={v or 'unknown'}" for k, v in sorted(self.identities.items()))
            rows.append(f"identities: {named}")
        return "\n".join(rows)


def latency_percentiles_ms(latencies_s: Sequence[float]) -> tuple[float | None, float | None]:
    """(p50, p95) in milliseconds of latencies given in seconds; (None, None) when empty."""
    values = np.asarray([v for v in latencies_s if math.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return None, None
    p50, p95 = np.percentile(values, [50, 95]) * 1000.0
    return float(p50), float(p95)


def _row(name: str, s: RunSummary) -> str:
    short = name if len(name) <= 16 else name[:15] + "…"
    return (
        f"{short:<16} {s.frames_in:>7} {s.frames_processed:>7} {s.frames_dropped:>6} {_cell(s.fps, 6, 1)} "
        f"{s.tracks:>6} {s.reconnects:>6} {_cell(s.latency_p50_ms, 7, 1)} {_cell(s.latency_p95_ms, 7, 1)}"
    )


def _cell(value: float | None, width: int, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return f"{'-':>{width}}"
    return f"{value:>{width}.{digits}f}"


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
