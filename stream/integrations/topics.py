"""MQTT topics and message bodies, and Home Assistant discovery configs. Pure: JSON-ready dicts.

Topics (``<prefix>`` = ``mqtt.topic_prefix``):

- ``<prefix>/status``: ``online`` (birth, retained) / ``offline`` (last will and clean exit, retained);
- ``<prefix>/<stream>/events``: every event as JSON (the journal line plus ``snapshot_url``);
- ``<prefix>/<stream>/person/<name>``: retained presence ``{"state": "present"|"gone", "time", "score", ...}``;
- ``<prefix>/<stream>/last_person``: retained, the last face named (or labelled unknown) on the stream;
- ``<prefix>/alerts/<rule>`` (or the rule's ``mqtt_topic``): each alert;
- ``<discovery>/sensor/<node>/<stream>_last_person/config`` and
  ``<discovery>/binary_sensor/<node>/<stream>_<person>_presence/config``: Home Assistant discovery (retained).

Names in topic levels keep ``[A-Za-z0-9_.-]`` and turn anything else into ``_`` (``topic_level``);
the bodies carry the names as they are. Home Assistant ids keep ``[A-Za-z0-9_-]`` (``object_id``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

from stream.config import UNKNOWN_PERSON
from stream.integrations.presence import LastPerson, PresenceChange
from stream.store.records import EventRecord, iso_utc, json_ready

__all__ = [
    "OFFLINE",
    "ONLINE",
    "Topics",
    "alert_message",
    "discovery_configs",
    "encode",
    "event_message",
    "last_person_message",
    "object_id",
    "presence_message",
    "snapshot_url",
    "topic_level",
]

ONLINE, OFFLINE = "online", "offline"
PRESENT, GONE = "present", "gone"
_LEVEL = re.compile(r"[^A-Za-z0-9_.-]+")
_OBJECT = re.compile(r"[^A-Za-z0-9_-]+")


def topic_level(name: str) -> str:
    """``name`` as one topic level: letters, digits, ``_ . -`` kept, the rest as ``_``."""
    return _LEVEL.sub("_", name).strip("_") or "_"


def object_id(name: str) -> str:
    """``name`` as a Home Assistant node or object id (letters, digits, ``_ -``)."""
    return _OBJECT.sub("_", name).strip("_") or "_"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    discovery_prefix: str = "homeassistant"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def node(self) -> str:
        """The Home Assistant node id (and device identifier) of this app: its topic prefix."""
        return object_id(self.prefix)

    def events(self, stream: str) -> str:
        return f"{self.prefix}/{topic_level(stream)}/events"

    def person(self, stream: str, person: str) -> str:
        return f"{self.prefix}/{topic_level(stream)}/person/{topic_level(person)}"

    def last_person(self, stream: str) -> str:
        return f"{self.prefix}/{topic_level(stream)}/last_person"

    def alerts(self, rule: str) -> str:
        return f"{self.prefix}/alerts/{topic_level(rule)}"

    def discovery(self, component: str, object_name: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id(object_name)}/config"


def encode(body: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (no NaN)."""
    return json.dumps(json_ready(body), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def snapshot_url(base: str | None, snapshot: str | None) -> str | None:
    """``<base>/<file name>`` of a snapshot path, or None without either."""
    if base is None or not snapshot:
        return None
    return f"{base.rstrip('/')}/{quote(PurePath(snapshot).name)}"


def event_message(record: EventRecord, base_url: str | None) -> dict[str, Any]:
    """An event on ``<prefix>/<stream>/events``: the journal line and its snapshot's URL."""
    return {**record.to_dict(), "snapshot_url": snapshot_url(base_url, record.snapshot)}


def alert_message(alert: EventRecord, trigger: EventRecord, base_url: str | None) -> dict[str, Any]:
    """An alert (MQTT and webhook body): the alert event's fields, its snapshot URL and the trigger event."""
    body = event_message(alert, base_url)
    body["event"] = event_message(trigger, base_url)
    return body


def presence_message(change: PresenceChange, snapshot: str | None, base_url: str | None) -> dict[str, Any]:
    return {
        "state": change.state,
        "time": iso_utc(change.time),
        "score": change.score,
        "person": change.person,
        "stream": change.stream,
        "epoch": change.track.epoch,
        "track_id": change.track.track_id,
        "snapshot_url": snapshot_url(base_url, snapshot) if change.present else None,
    }


def last_person_message(last: LastPerson, snapshot: str | None, base_url: str | None) -> dict[str, Any]:
    return {
        "person": last.person,
        "stranger": last.stranger,
        "time": iso_utc(last.time),
        "score": last.score,
        "stream": last.stream,
        "epoch": last.track.epoch,
        "track_id": last.track.track_id,
        "snapshot_url": snapshot_url(base_url, snapshot),
    }


def discovery_configs(
    topics: Topics, streams: Sequence[str], people: Sequence[str], version: str = "1"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(topic, config) for Home Assistant MQTT discovery: per stream a ``sensor`` (last person seen) and
    per stream and person (``people`` plus ``unknown``) a ``binary_sensor`` (presence, occupancy class)."""
    device = {
        "identifiers": [f"adaface_stream_{topics.node}"],
        "name": f"AdaFace Stream ({topics.prefix})",
        "manufacturer": "AdaFace Stream",
        "model": "face recognition",
        "sw_version": version,
    }
    availability = {
        "availability_topic": topics.status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
    }
    everyone = [*dict.fromkeys([*people, UNKNOWN_PERSON])]
    for stream in streams:
        name = f"{stream}_last_person"
        yield (
            topics.discovery("sensor", name),
            {
                "name": f"{stream} last person",
                "unique_id": f"{topics.node}_{object_id(name)}",
                "object_id": f"{topics.node}_{object_id(name)}",
                "state_topic": topics.last_person(stream),
                "value_template": "{{ value_json.person }}",
                "json_attributes_topic": topics.last_person(stream),
                "icon": "mdi:face-recognition",
                "device": device,
                **availability,
            },
        )
        for person in everyone:
            name = f"{stream}_{person}_presence"
            yield (
                topics.discovery("binary_sensor", name),
                {
                    "name": f"{person} at {stream}",
                    "unique_id": f"{topics.node}_{object_id(name)}",
                    "object_id": f"{topics.node}_{object_id(name)}",
                    "state_topic": topics.person(stream, person),
                    "value_template": "{{ value_json.state }}",
                    "payload_on": PRESENT,
                    "payload_off": GONE,
                    "device_class": "occupancy",
                    "json_attributes_topic": topics.person(stream, person),
                    "device": device,
                    **availability,
                },
            )
