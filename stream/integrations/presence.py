"""Who is in view on each stream, from the events: presence changes and the last person seen. Pure.

A person (a gallery name, or ``unknown`` for faces labelled ``unknown-N``) is *present* on a stream
while at least one of its tracks there carries that name, and *gone* when the last such track ends
(``track_ended``, which the recogniser also emits for every track of an epoch that ended and of a
stream that finished) or is renamed (``identity_changed``). A track counts for ``unknown`` from its
``stranger_assigned`` until it ends or is named. Zone, alert and stream events change nothing.

``Presence.update`` returns the changes one event causes (at most one "gone" and one "present") and,
for events that say who a face is, the stream's new *last person*.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.config import UNKNOWN_PERSON
from stream.types import Event, EventKind, TrackKey

__all__ = ["LastPerson", "Presence", "PresenceChange"]

_NAMING = (EventKind.IDENTITY_ASSIGNED, EventKind.IDENTITY_CHANGED)


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """``person`` (a name or ``unknown``) became present or gone on ``stream`` at ``time`` (Unix s),
    through ``track``; ``score``: that track's match score (None for unknown faces)."""

    stream: str
    person: str
    present: bool
    time: float
    score: float | None
    track: TrackKey

    @property
    def state(self) -> str:
        return "present" if self.present else "gone"


@dataclass(frozen=True, slots=True)
class LastPerson:
    """The last face given a name (or an unknown-N label) on a stream."""

    stream: str
    person: str
    stranger: str | None
    score: float | None
    time: float
    track: TrackKey


class Presence:
    """Tracks per (stream, person); one owner: the output thread."""

    def __init__(self) -> None:
        self._tracks: dict[tuple[str, str], set[TrackKey]] = {}
        self._who: dict[TrackKey, str] = {}

    def present(self, stream: str, person: str) -> bool:
        return bool(self._tracks.get((stream, person)))

    def update(self, event: Event, time: float) -> tuple[list[PresenceChange], LastPerson | None]:
        """The presence changes of ``event`` (at wall-clock ``time``) and the stream's new last person."""
        key = event.track
        if key is None:
            return [], None
        if event.kind in _NAMING and event.person is not None:
            changes = self._move(key, event.person, event, time)
            return changes, LastPerson(event.stream, event.person, None, event.score, time, key)
        if event.kind is EventKind.STRANGER_ASSIGNED and event.person is None:
            changes = self._move(key, UNKNOWN_PERSON, event, time)
            return changes, LastPerson(event.stream, UNKNOWN_PERSON, event.stranger, None, time, key)
        if event.kind is EventKind.TRACK_ENDED:
            return self._leave(key, event, time), None
        return [], None

    def _move(self, key: TrackKey, person: str, event: Event, time: float) -> list[PresenceChange]:
        if self._who.get(key) == person:
            return []
        changes = self._leave(key, event, time)
        tracks = self._tracks.setdefault((key.stream_id, person), set())
        tracks.add(key)
        self._who[key] = person
        if len(tracks) == 1:
            score = event.score if person != UNKNOWN_PERSON else None
            changes.append(PresenceChange(key.stream_id, person, True, time, score, key))
        return changes

    def _leave(self, key: TrackKey, event: Event, time: float) -> list[PresenceChange]:
        person = self._who.pop(key, None)
        if person is None:
            return []
        tracks = self._tracks.get((key.stream_id, person), set())
        tracks.discard(key)
        if tracks:
            return []
        self._tracks.pop((key.stream_id, person), None)
        score = event.score if person != UNKNOWN_PERSON and event.person == person else None
        return [PresenceChange(key.stream_id, person, False, time, score, key)]
