"""Alert rules: which events fire an alert, and cool-downs. Pure (no threads, no I/O; the clock is injected).

An event can fire a rule when it says who a face is: ``identity_assigned``, ``identity_changed``,
``stranger_assigned`` (an unknown face got its ``unknown-N`` label) or ``zone_entered`` (a track already
named or labelled walked into a zone). A rule (``stream.config.AlertRule``) matches when

- ``when`` names the person, or says ``unknown`` and the face is unknown (it has a stranger label), or
  says ``any`` (named or unknown; a track not decided yet matches nothing);
- the event's stream is in ``streams`` (empty: any);
- one of the event's zones is in ``zones`` (empty: anywhere; a face in a zone is a face whose box
  centre is in it, ``stream.integrations.zones``);
- a named person's score is at least ``min_score`` (unknown faces have no match score to compare);
- the same track (``cooldown_per: track``), or the same person or unknown-N label on any stream
  (``person``), has not fired this rule in the last ``cooldown_s`` seconds.

Times are the events' wall-clock times (``Event.time``: capture time for live sources, the file's
time plus pts for files, so a file gives the same alerts on every run); an event without one is
timed by the injected clock. A clock that goes back counts the distance either way.

Each firing gives an ``Alert``: the rule and an ``alert`` event (the trigger's stream, track, person,
score, stranger label and zones; extra ``rule`` and ``trigger``, plus ``zone`` for a zone entry), which
the output stage records like any event and hands to the rule's actions.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stream.config import ANY, UNKNOWN_PERSON, AlertRule
from stream.types import Event, EventKind, TrackKey

__all__ = ["TRIGGERS", "Alert", "AlertEngine", "rule_matches"]

TRIGGERS = frozenset(
    {EventKind.IDENTITY_ASSIGNED, EventKind.IDENTITY_CHANGED, EventKind.STRANGER_ASSIGNED, EventKind.ZONE_ENTERED}
)
_PRUNE_AT = 4096  # cool-down entries kept before the expired ones are swept out


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule that fired: its ``alert`` event and the event that fired it."""

    rule: AlertRule
    event: Event
    trigger: Event


def rule_matches(rule: AlertRule, event: Event) -> bool:
    """Whether ``event`` satisfies ``rule`` (everything but the cool-down)."""
    if event.kind not in TRIGGERS or event.track is None:
        return False
    if rule.streams and event.stream not in rule.streams:
        return False
    if rule.zones and not set(rule.zones).intersection(event.zones):
        return False
    if event.person is not None:
        if ANY not in rule.when and event.person not in rule.when:
            return False
        return rule.min_score is None or (event.score is not None and event.score >= rule.min_score)
    if event.stranger is not None:
        return ANY in rule.when or UNKNOWN_PERSON in rule.when
    return False


class AlertEngine:
    """Evaluates every rule on each event; keeps the cool-downs. One owner: the output thread."""

    def __init__(self, rules: Sequence[AlertRule], clock: Callable[[], float] = _time.time) -> None:
        self.rules = tuple(rules)
        self._clock = clock
        self._last: dict[tuple[str, object], float] = {}  # (rule, track or person) -> last alert time
        self._longest = max((r.cooldown_s for r in self.rules), default=0.0)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def evaluate(self, event: Event, at: float | None = None) -> list[Alert]:
        """The alerts ``event`` fires, at wall-clock ``at`` (default: the event's time, else the clock)."""
        if not self.rules or event.kind not in TRIGGERS:
            return []
        now = at if at is not None else event.time if event.time is not None else self._clock()
        fired = []
        for rule in self.rules:
            if not rule_matches(rule, event):
                continue
            key = (rule.name, _cooldown_key(rule, event))
            last = self._last.get(key)
            if last is not None and abs(now - last) < rule.cooldown_s:
                continue
            self._last[key] = now
            fired.append(Alert(rule, _alert_event(rule, event, now), event))
        if len(self._last) > _PRUNE_AT:
            self._prune(now)
        return fired

    def _prune(self, now: float) -> None:
        self._last = {k: t for k, t in self._last.items() if abs(now - t) < self._longest}


def _cooldown_key(rule: AlertRule, event: Event) -> object:
    if rule.cooldown_per == "person":
        return ("person", event.person) if event.person is not None else ("stranger", event.stranger)
    track: TrackKey | None = event.track
    return ("track", track)


def _alert_event(rule: AlertRule, trigger: Event, now: float) -> Event:
    extra: tuple[tuple[str, object], ...] = (("rule", rule.name), ("trigger", trigger.kind.value))
    if trigger.kind is EventKind.ZONE_ENTERED:
        extra += tuple((k, v) for k, v in trigger.extra if k == "zone")
    return Event(
        trigger.pts_s,
        trigger.stream,
        EventKind.ALERT,
        trigger.track,
        trigger.person,
        trigger.score,
        extra=extra,
        stranger=trigger.stranger,
        time=now,
        zones=trigger.zones,
    )
