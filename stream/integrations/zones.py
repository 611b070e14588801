"""Zones: named polygons of a stream's picture, in normalised coordinates (0-1, x from the left, y
from the top). Pure: no threads, no I/O.

- ``Zone.contains(x, y)``: even-odd ray casting; a point on an edge or a corner counts as inside.
- ``ZoneSet.of_box(box, width, height)``: the zones that hold a box's centre (boxes in frame pixels).
- ``ZoneTagger``: owned by the recogniser (the recognition thread). For the streams that have zones
  it stamps every track event with the zones of the track's box centre (``Event.zones``) and emits
  ``zone_entered`` / ``zone_left`` (extra ``zone``) when a confirmed track's zones change: on its first
  placement in a zone, on crossing an edge, and (``zone_left``, before its ``track_ended``) when it
  ends. A lost track (no detection, Kalman prediction only) keeps its last zones. Streams without
  zones pass through untouched.

Polygons are checked by ``stream.config.polygon_problem`` (at least 3 distinct points, a real area,
no crossing edges) when the config is read; ``Zone`` checks again when built directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from stream.config import polygon_problem
from stream.types import Event, EventKind, Identity, TrackKey
from trackers import TrackSnapshot, TrackState

__all__ = ["TrackPlace", "Zone", "ZoneSet", "ZoneTagger"]


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Zone.name: must not be empty")
        object.__setattr__(self, "points", tuple((float(x), float(y)) for x, y in self.points))
        problem = polygon_problem(self.points)
        if problem:
            raise ValueError(f"Zone {self.name!r}: {problem}")

    def contains(self, x: float, y: float) -> bool:
        """Whether the normalised point (x, y) is inside (or on the edge of) the polygon."""
        inside = False
        pts = self.points
        for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True):
            if _on_segment(x, y, x1, y1, x2, y2):
                return True
            if (y1 > y) != (y2 > y):
                cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
                if x < cross:
                    inside = not inside
        return inside


def _on_segment(x: float, y: float, x1: float, y1: float, x2: float, y2: float, eps: float = 1e-12) -> bool:
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    if abs(cross) > eps:
        return False
    return min(x1, x2) - eps <= x <= max(x1, x2) + eps and min(y1, y2) - eps <= y <= max(y1, y2) + eps


@dataclass(frozen=True, slots=True)
class ZoneSet:
    """One stream's zones, in config order."""

    zones: tuple[Zone, ...] = ()

    @classmethod
    def from_config(cls, zones: Mapping[str, Sequence[tuple[float, float]]]) -> ZoneSet:
        return cls(tuple(Zone(name, tuple(points)) for name, points in zones.items()))

    def __bool__(self) -> bool:
        return bool(self.zones)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(z.name for z in self.zones)

    def at(self, x: float, y: float) -> tuple[str, ...]:
        """Names of the zones that hold the normalised point (x, y)."""
        return tuple(z.name for z in self.zones if z.contains(x, y))

    def of_box(self, box: np.ndarray | Sequence[float], width: int, height: int) -> tuple[str, ...]:
        """Names of the zones that hold the centre of ``box`` (x1, y1, x2, y2 in pixels of a
        ``width`` x ``height`` frame)."""
        if width <= 0 or height <= 0:
            raise ValueError(f"ZoneSet.of_box: frame size must be positive, got {width}x{height}")
        x1, y1, x2, y2 = (float(v) for v in box)
        return self.at((x1 + x2) / 2.0 / width, (y1 + y2) / 2.0 / height)


@dataclass(frozen=True, slots=True)
class TrackPlace:
    """One track in one frame: its snapshot (box, state) and its identity now."""

    snapshot: TrackSnapshot
    identity: Identity


class ZoneTagger:
    """Zones of track events and zone_entered/zone_left events (see the module notes). One owner: the
    recogniser; it calls ``tag`` once per annotated frame and once with a stream's last events."""

    def __init__(self, zones: Mapping[str, ZoneSet] | None = None) -> None:
        self._zones = {stream: zs for stream, zs in (zones or {}).items() if zs}
        self._where: dict[TrackKey, tuple[str, ...]] = {}  # each placed track's zones (confirmed tracks)

    def __bool__(self) -> bool:
        return bool(self._zones)

    def tag(
        self,
        stream: str,
        events: Sequence[Event],
        places: Sequence[TrackPlace] = (),
        *,
        epoch: int = 0,
        size: tuple[int, int] | None = None,
        pts_s: float | None = None,
    ) -> list[Event]:
        """The frame's events with zones, and the zone events it causes.

        ``places``: the stream's tracks in this frame (epoch ``epoch``, frame ``size`` = (width, height),
        stream time ``pts_s``); none when a stream ends (its last events are only tagged)."""
        zones = self._zones.get(stream)
        if zones is None:
            return list(events)
        moves: list[tuple[TrackKey, TrackPlace, tuple[str, ...], tuple[str, ...]]] = []
        if places:
            if size is None or pts_s is None:
                raise ValueError("ZoneTagger.tag: places need the frame size and pts_s")
            for place in places:
                snap = place.snapshot
                if snap.state is not TrackState.CONFIRMED:
                    continue
                key = TrackKey(stream, epoch, snap.track_id)
                now = zones.of_box(snap.box, *size)
                before = self._where.get(key, ())
                self._where[key] = now
                if now != before:
                    moves.append((key, place, before, now))
        out: list[Event] = []
        ended: set[TrackKey] = set()
        for event in events:
            if event.track is None:
                out.append(event)
                continue
            here = self._where.get(event.track, ())
            if event.kind is EventKind.TRACK_ENDED:
                self._where.pop(event.track, None)
                ended.add(event.track)
                out += [_zone_event(event, EventKind.ZONE_LEFT, zone, ()) for zone in here]
            out.append(replace(event, zones=here) if here and not event.zones else event)
        for key, place, before, now in moves:
            if key in ended:
                continue
            identity = place.identity
            score = identity.confidence if identity.person else None
            base = Event.of_track(float(pts_s or 0.0), EventKind.ZONE_ENTERED, key, identity.person, score)
            base = replace(base, stranger=identity.stranger)
            out += [_zone_event(base, EventKind.ZONE_LEFT, zone, now) for zone in before if zone not in now]
            out += [_zone_event(base, EventKind.ZONE_ENTERED, zone, now) for zone in now if zone not in before]
        return out


def _zone_event(like: Event, kind: EventKind, zone: str, zones: tuple[str, ...]) -> Event:
    """A zone event for ``like``'s track, at its time, naming ``zone``; ``zones``: where the track is now."""
    return Event(
        like.pts_s,
        like.stream,
        kind,
        like.track,
        like.person,
        like.score,
        extra=(("zone", zone),),
        stranger=like.stranger,
        time=like.time,
        zones=zones,
    )
