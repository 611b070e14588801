"""Alert rules: who, where, score, and cool-downs per track or per person, with an injected clock."""

from __future__ import annotations

import pytest

from stream.config import AlertRule
from stream.integrations.alerts import AlertEngine, rule_matches
from stream.types import Event, EventKind, TrackKey

DOOR = TrackKey("door", 0, 1)


def named(person: str = "alice", score: float = 0.7, track: TrackKey = DOOR, zones: tuple[str, ...] = ()) -> Event:
    return Event(1.0, track.stream_id, EventKind.IDENTITY_ASSIGNED, track, person, score, zones=zones)


def stranger(label: str = "unknown-1", track: TrackKey = DOOR, zones: tuple[str, ...] = ("porch",)) -> Event:
    return Event(1.0, track.stream_id, EventKind.STRANGER_ASSIGNED, track, None, 0.2, stranger=label, zones=zones)


def rule(**kw: object) -> AlertRule:
    return AlertRule.model_validate({"name": "r", **kw})


def test_who_matches() -> None:
    assert rule_matches(rule(), named()) and rule_matches(rule(), stranger())
    assert rule_matches(rule(when=["alice", "bob"]), named("bob"))
    assert not rule_matches(rule(when=["bob"]), named("alice"))
    assert rule_matches(rule(when=["unknown"]), stranger()) and not rule_matches(rule(when=["unknown"]), named())
    assert not rule_matches(rule(when=["alice"]), stranger())
    undecided = Event(
        1.0, "door", EventKind.ZONE_ENTERED, DOOR, None, None, extra=(("zone", "porch"),), zones=("porch",)
    )
    assert not rule_matches(rule(), undecided)  # nobody knows yet who it is


def test_only_events_that_say_who_someone_is_fire() -> None:
    for kind in (EventKind.TRACK_STARTED, EventKind.TRACK_ENDED, EventKind.ZONE_LEFT, EventKind.ALERT):
        assert not rule_matches(rule(), Event(1.0, "door", kind, DOOR, "alice", 0.9))
    for kind in (EventKind.IDENTITY_CHANGED, EventKind.ZONE_ENTERED):
        assert rule_matches(rule(), Event(1.0, "door", kind, DOOR, "alice", 0.9))
    assert not rule_matches(rule(), Event.of_stream(1.0, "door", EventKind.STREAM_DOWN, 0, "eof"))


def test_streams_zones_and_score() -> None:
    assert not rule_matches(rule(streams=["gate"]), named())
    assert rule_matches(rule(streams=["gate", "door"]), named())
    assert not rule_matches(rule(zones=["porch"]), named(zones=()))
    assert rule_matches(rule(zones=["drive", "porch"]), named(zones=("porch",)))
    assert not rule_matches(rule(min_score=0.75), named(score=0.7))
    assert rule_matches(rule(min_score=0.7), named(score=0.7))
    assert rule_matches(rule(min_score=0.99), stranger())  # unknown faces have no score to compare


def test_cooldown_per_track_with_an_injected_clock() -> None:
    now = [1000.0]
    engine = AlertEngine([rule(cooldown_s=10)], clock=lambda: now[0])
    assert len(engine.evaluate(stranger())) == 1
    now[0] += 9.9
    assert engine.evaluate(stranger()) == []
    assert len(engine.evaluate(stranger(track=TrackKey("door", 0, 2)))) == 1  # another track: its own cool-down
    now[0] += 0.1
    alerts = engine.evaluate(stranger())
    assert len(alerts) == 1 and alerts[0].event.time == 1010.0
    now[0] -= 3600  # the clock jumps back an hour: far from the last alert either way
    assert len(engine.evaluate(stranger())) == 1


def test_cooldown_per_person_spans_tracks_and_streams() -> None:
    now = [0.0]
    engine = AlertEngine([rule(cooldown_s=60, cooldown_per="person")], clock=lambda: now[0])
    assert len(engine.evaluate(named("alice"))) == 1
    assert engine.evaluate(named("alice", track=TrackKey("gate", 0, 7))) == []
    assert len(engine.evaluate(named("bob", track=TrackKey("door", 0, 2)))) == 1
    assert len(engine.evaluate(stranger("unknown-1"))) == 1
    assert engine.evaluate(stranger("unknown-1", track=TrackKey("door", 1, 1))) == []  # the same stranger back
    assert len(engine.evaluate(stranger("unknown-2", track=TrackKey("door", 1, 2)))) == 1
    now[0] = 60.0
    assert len(engine.evaluate(named("alice"))) == 1


def test_event_time_wins_over_the_clock() -> None:
    """Files: alerts follow the video's time, so a file gives the same alerts however fast it runs."""
    engine = AlertEngine([rule(cooldown_s=5)], clock=lambda: 0.0)
    at = [engine.evaluate(named().at(t)) for t in (100.0, 103.0, 105.0, 106.0)]
    assert [len(a) for a in at] == [1, 0, 1, 0]
    assert len(engine.evaluate(named(), at=200.0)) == 1


def test_every_rule_fires_on_its_own() -> None:
    engine = AlertEngine([rule(name="a"), rule(name="b", when=["unknown"]), rule(name="c", when=["bob"])])
    assert [a.rule.name for a in engine.evaluate(stranger().at(5.0))] == ["a", "b"]


def test_the_alert_event_carries_the_trigger() -> None:
    engine = AlertEngine([rule(name="porch-stranger", when=["unknown"], zones=["porch"])])
    trigger = Event(
        2.5, "door", EventKind.ZONE_ENTERED, DOOR, None, None, extra=(("zone", "porch"),), stranger="unknown-3",
        time=50.0, zones=("porch",),
    )  # fmt: skip
    (alert,) = engine.evaluate(trigger)
    event = alert.event
    assert alert.trigger is trigger and alert.rule.name == "porch-stranger"
    assert (event.kind, event.pts_s, event.time, event.track, event.stranger) == (
        EventKind.ALERT,
        2.5,
        50.0,
        DOOR,
        "unknown-3",
    )
    assert event.zones == ("porch",)
    assert dict(event.extra) == {"rule": "porch-stranger", "trigger": "zone_entered", "zone": "porch"}


def test_many_tracks_do_not_grow_the_cooldowns_forever() -> None:
    engine = AlertEngine([rule(cooldown_s=1)])
    for i in range(10_000):
        engine.evaluate(named(track=TrackKey("door", 0, i)).at(float(i)))
    assert len(engine._last) <= 4097


@pytest.mark.parametrize("when", [["any", "bob"], ["  "]])
def test_bad_when_is_refused(when: list[str]) -> None:
    with pytest.raises(ValueError):
        rule(when=when)
