"""Presence per stream and person, from the events: present with the first track, gone with the last."""

from __future__ import annotations

from stream.integrations.presence import Presence
from stream.types import Event, EventKind, TrackKey


def ev(
    kind: EventKind, track: TrackKey, person: str | None = None, score: float | None = None, stranger: str | None = None
) -> Event:
    return Event.of_track(1.0, kind, track, person, score, stranger=stranger)


def test_present_with_the_first_track_gone_with_the_last() -> None:
    p = Presence()
    a, b = TrackKey("door", 0, 1), TrackKey("door", 0, 2)
    changes, last = p.update(ev(EventKind.IDENTITY_ASSIGNED, a, "alice", 0.7), 10.0)
    assert [(c.person, c.state, c.time, c.score) for c in changes] == [("alice", "present", 10.0, 0.7)]
    assert last is not None and (last.person, last.score, last.track) == ("alice", 0.7, a)
    assert p.update(ev(EventKind.IDENTITY_ASSIGNED, b, "alice", 0.8), 11.0)[0] == []  # second track: no change
    assert p.update(ev(EventKind.TRACK_ENDED, a, "alice", 0.7), 12.0) == ([], None)
    changes, _ = p.update(ev(EventKind.TRACK_ENDED, b, "alice", 0.81), 13.0)
    assert [(c.person, c.state, c.time, c.score) for c in changes] == [("alice", "gone", 13.0, 0.81)]
    assert not p.present("door", "alice")


def test_renaming_moves_the_track_and_unknown_counts_from_its_label() -> None:
    p = Presence()
    t = TrackKey("door", 0, 1)
    assert p.update(ev(EventKind.TRACK_STARTED, t), 1.0) == ([], None)
    changes, last = p.update(ev(EventKind.STRANGER_ASSIGNED, t, stranger="unknown-1", score=0.2), 2.0)
    assert [(c.person, c.state, c.score) for c in changes] == [("unknown", "present", None)]
    assert last is not None and (last.person, last.stranger) == ("unknown", "unknown-1")
    changes, _ = p.update(ev(EventKind.IDENTITY_ASSIGNED, t, "bob", 0.6), 3.0)
    assert [(c.person, c.state) for c in changes] == [("unknown", "gone"), ("bob", "present")]
    changes, _ = p.update(ev(EventKind.IDENTITY_CHANGED, t, "carol", 0.7), 4.0)
    assert [(c.person, c.state) for c in changes] == [("bob", "gone"), ("carol", "present")]
    assert p.update(ev(EventKind.ZONE_ENTERED, t, "carol", 0.7), 5.0) == ([], None)


def test_streams_are_separate() -> None:
    p = Presence()
    p.update(ev(EventKind.IDENTITY_ASSIGNED, TrackKey("door", 0, 1), "alice", 0.7), 1.0)
    changes, _ = p.update(ev(EventKind.IDENTITY_ASSIGNED, TrackKey("gate", 0, 1), "alice", 0.7), 1.0)
    assert [(c.stream, c.state) for c in changes] == [("gate", "present")]
    changes, _ = p.update(ev(EventKind.TRACK_ENDED, TrackKey("door", 0, 1), "alice"), 2.0)
    assert [(c.stream, c.state) for c in changes] == [("door", "gone")] and p.present("gate", "alice")


def test_a_track_never_named_changes_nothing_when_it_ends() -> None:
    p = Presence()
    assert p.update(ev(EventKind.TRACK_ENDED, TrackKey("door", 0, 9)), 1.0) == ([], None)
