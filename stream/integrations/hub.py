"""The output stage's outlet to other systems: MQTT (events, presence, discovery, alerts) and alert rules
with their webhooks.

``Integrations`` runs in the output thread and never waits on the network: for each recorded event it
puts the MQTT messages into the ``MqttLink`` outbox, updates presence (``Presence``) and evaluates the
alert rules (``AlertEngine``); each alert that fires goes back to the output stage, which records it
like any event (journal + store), and then to ``deliver``: the events topic, the rule's alert topic
and its webhook (``WebhookSender`` queue). The network work happens on the link's ``mqtt`` thread and
the sender's ``webhook`` thread; ``close`` gives both ``CLOSE_BUDGET_S`` together to flush.

The snapshot URL of a message is ``<snapshot_base_url>/<file name>`` of the event's snapshot (the web
app serves the snapshots folder there); None without a base URL or a snapshot.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from stream.config import AppConfig
from stream.integrations.alerts import Alert, AlertEngine
from stream.integrations.counters import IntegrationCounters, MqttCounters
from stream.integrations.mqtt import MqttLink
from stream.integrations.presence import Presence
from stream.integrations.topics import (
    GONE,
    OFFLINE,
    ONLINE,
    Topics,
    alert_message,
    discovery_configs,
    encode,
    event_message,
    last_person_message,
    presence_message,
)
from stream.integrations.webhook import Delivery, WebhookSender
from stream.store.records import EventRecord, iso_utc
from stream.types import Event

__all__ = ["CLOSE_BUDGET_S", "FiredAlert", "IntegrationCounters", "Integrations", "Link", "build_integrations"]

log = logging.getLogger(__name__)

CLOSE_BUDGET_S = 1.0
"""How long ``close`` lets MQTT and webhooks flush, together (plus a 0.2 s join; the app joins its
threads within 4 s and the video must be finished too)."""


@dataclass(frozen=True, slots=True)
class FiredAlert:
    """An alert and the record of the event that fired it (for the message's ``event``)."""

    alert: Alert
    trigger: EventRecord


class Link(Protocol):
    """What ``Integrations`` needs of an MQTT link (``MqttLink``; tests pass fakes)."""

    def start(self) -> None: ...
    def publish(self, topic: str, payload: bytes) -> None: ...
    def retain(self, topic: str, payload: bytes) -> None: ...
    def counters(self) -> MqttCounters: ...
    def stop(self, deadline: float) -> None: ...
    def close(self, deadline: float) -> None: ...


class Integrations:
    """See the module notes. The output thread calls everything; ``start`` before the first event."""

    def __init__(
        self,
        *,
        rules: AlertEngine,
        streams: Sequence[str] = (),
        people: Sequence[str] = (),
        mqtt: Link | None = None,
        topics: Topics | None = None,
        discovery: bool = True,
        webhooks: WebhookSender | None = None,
        snapshot_base_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (mqtt is None) != (topics is None):
            raise ValueError("Integrations: mqtt and topics go together")
        self._engine = rules
        self._streams = tuple(streams)
        self._people = tuple(people)
        self._mqtt = mqtt
        self._topics = topics
        self._discovery = discovery
        self._webhooks = webhooks
        self._base = snapshot_base_url
        self._clock = clock
        self._presence = Presence()
        self._alerts: dict[str, int] = {rule.name: 0 for rule in rules.rules}
        self._started = False

    def start(self) -> None:
        """Start the link and sender threads; queue the discovery configs and every presence as gone."""
        if self._started:
            return
        self._started = True
        if self._mqtt is not None and self._topics is not None:
            if self._discovery:
                for topic, config in discovery_configs(self._topics, self._streams, self._people):
                    self._mqtt.retain(topic, encode(config))
            now = iso_utc(self._clock())
            for stream in self._streams:
                for person in [*dict.fromkeys([*self._people, "unknown"])]:
                    body = {"state": GONE, "time": now, "score": None, "person": person, "stream": stream}
                    self._mqtt.retain(self._topics.person(stream, person), encode(body))
            self._mqtt.start()
        if self._webhooks is not None:
            self._webhooks.start()

    def events(self, recorded: Sequence[tuple[Event, EventRecord]]) -> list[FiredAlert]:
        """Publish each recorded event, update presence, and return the alerts the events fire (to be
        recorded, then passed to ``deliver``)."""
        fired: list[FiredAlert] = []
        for event, record in recorded:
            self._publish(event, record)
            for alert in self._engine.evaluate(event, record.time):
                self._alerts[alert.rule.name] = self._alerts.get(alert.rule.name, 0) + 1
                fired.append(FiredAlert(alert, record))
        return fired

    def deliver(self, fired: Sequence[FiredAlert], records: Sequence[EventRecord]) -> None:
        """The recorded alerts to the events topic, the rule's alert topic and its webhook."""
        for item, record in zip(fired, records, strict=True):
            rule, event = item.alert.rule, item.alert.event
            who = event.person or event.stranger or "unknown"
            zones = f" in {', '.join(event.zones)}" if event.zones else ""
            log.info("alert %s: %s on %s%s (%s)", rule.name, who, event.stream, zones, item.trigger.kind)
            body = alert_message(record, item.trigger, self._base)
            if self._mqtt is not None and self._topics is not None:
                self._mqtt.publish(self._topics.events(event.stream), encode(event_message(record, self._base)))
                self._mqtt.publish(rule.mqtt_topic or self._topics.alerts(rule.name), encode(body))
            if rule.webhook is not None and self._webhooks is not None:
                hook = rule.webhook
                delivery_id = str(uuid.uuid4())
                secret = None if hook.secret is None else hook.secret.get_secret_value()
                payload = encode({**body, "delivery": delivery_id})
                self._webhooks.send(
                    Delivery(rule.name, hook.url, payload, secret, hook.timeout_s, hook.retries, delivery_id)
                )

    def counters(self) -> IntegrationCounters:
        return IntegrationCounters(
            self._alerts,
            None if self._mqtt is None else self._mqtt.counters(),
            None if self._webhooks is None else self._webhooks.counters(),
        )

    def close(self, budget_s: float = CLOSE_BUDGET_S) -> None:
        """Flush both for at most ``budget_s`` in all (plus a short join), then stop them."""
        deadline = time.monotonic() + budget_s
        for part in (self._webhooks, self._mqtt):
            if part is not None:
                part.stop(deadline)  # both flush at once
        try:
            if self._webhooks is not None:
                self._webhooks.close(deadline)
        finally:
            if self._mqtt is not None:
                self._mqtt.close(deadline)

    # ---- steps ---------------------------------------------------------------------------------------

    def _publish(self, event: Event, record: EventRecord) -> None:
        if self._mqtt is None or self._topics is None:
            return
        topics, base = self._topics, self._base
        self._mqtt.publish(topics.events(event.stream), encode(event_message(record, base)))
        changes, last = self._presence.update(event, record.time)
        for change in changes:
            body = presence_message(change, record.snapshot, base)
            self._mqtt.retain(topics.person(change.stream, change.person), encode(body))
        if last is not None:
            self._mqtt.retain(
                topics.last_person(event.stream), encode(last_person_message(last, record.snapshot, base))
            )


def build_integrations(config: AppConfig, streams: Sequence[str], people: Sequence[str]) -> Integrations | None:
    """The configured integrations for a run of ``streams`` with a gallery of ``people`` (None: none
    configured). TLS files that cannot be loaded are a ``UserError``; nothing connects yet."""
    if config.mqtt is None and not config.alerts:
        return None
    running = set(streams)
    for i, rule in enumerate(config.alerts):
        idle = [s for s in rule.streams if s not in running]
        if idle and len(idle) == len(rule.streams):
            log.warning("alerts[%d] (%s): none of its streams runs now (%s)", i, rule.name, ", ".join(idle))
        strangers = [p for p in rule.when if p not in (*people, "any", "unknown")]
        if strangers:
            log.warning("alerts[%d] (%s): nobody named %s in the gallery", i, rule.name, ", ".join(strangers))
    topics: Topics | None = None
    link: MqttLink | None = None
    if config.mqtt is not None:
        topics = Topics(config.mqtt.topic_prefix, config.mqtt.discovery_prefix)
        link = MqttLink(config.mqtt, topics.status, online=ONLINE, offline=OFFLINE)
    hooks = WebhookSender() if any(rule.webhook is not None for rule in config.alerts) else None
    return Integrations(
        rules=AlertEngine(config.alerts),
        streams=streams,
        people=people,
        mqtt=link,
        topics=topics,
        discovery=config.mqtt.discovery if config.mqtt is not None else False,
        webhooks=hooks,
        snapshot_base_url=config.snapshot_base_url,
    )
