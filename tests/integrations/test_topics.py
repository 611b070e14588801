"""MQTT topics, message bodies and Home Assistant discovery configs."""

from __future__ import annotations

import json

from stream.integrations.topics import (
    Topics,
    discovery_configs,
    encode,
    event_message,
    object_id,
    snapshot_url,
    topic_level,
)
from stream.store.records import EventRecord

RUN = "6f1c2b7e-0c57-4a43-9a4e-0c3f5d1a2b3c"


def test_topics_and_names() -> None:
    t = Topics("home/faces")
    assert t.status == "home/faces/status"
    assert t.events("front.door") == "home/faces/front.door/events"
    assert t.person("cam", "José María") == "home/faces/cam/person/Jos_Mar_a"
    assert t.person("cam", "a/b+#") == "home/faces/cam/person/a_b"
    assert t.last_person("cam") == "home/faces/cam/last_person"
    assert t.alerts("stranger at door") == "home/faces/alerts/stranger_at_door"
    assert (
        t.discovery("binary_sensor", "cam_alice_presence")
        == "homeassistant/binary_sensor/home_faces/cam_alice_presence/config"
    )
    assert topic_level("+++") == "_" and object_id("front.door") == "front_door"


def test_snapshot_url_is_the_base_and_the_file_name() -> None:
    assert snapshot_url("http://nvr:8080/api/snapshots/", "/data/rec/snapshots/door_e0_t2.jpg") == (
        "http://nvr:8080/api/snapshots/door_e0_t2.jpg"
    )
    assert snapshot_url("http://nvr/s", "a b.jpg") == "http://nvr/s/a%20b.jpg"
    assert snapshot_url(None, "x.jpg") is None and snapshot_url("http://nvr/s", None) is None


def test_event_message_is_the_journal_line_plus_the_snapshot_url() -> None:
    record = EventRecord(RUN, 100.0, 1.5, "door", "identity_assigned", 0, 3, "alice", 0.7, snapshot="s/door_e0_t3.jpg",
                         extra={"votes": 2, "zones": ["porch"]})  # fmt: skip
    body = json.loads(encode(event_message(record, "http://nvr/api/snapshots")))
    assert body == {**record.to_dict(), "snapshot_url": "http://nvr/api/snapshots/door_e0_t3.jpg"}
    assert body["zones"] == ["porch"] and body["time"] == "1970-01-01T00:01:40.000Z"


def test_discovery_configs_for_home_assistant() -> None:
    configs = dict(discovery_configs(Topics("adaface"), ["door", "gate"], ["alice", "bob"]))
    assert len(configs) == 2 * (1 + 3)  # per stream: last person + alice, bob, unknown
    sensor = configs["homeassistant/sensor/adaface/door_last_person/config"]
    assert sensor["state_topic"] == "adaface/door/last_person" and sensor["value_template"] == "{{ value_json.person }}"
    presence = configs["homeassistant/binary_sensor/adaface/gate_unknown_presence/config"]
    assert presence["state_topic"] == "adaface/gate/person/unknown"
    assert (presence["payload_on"], presence["payload_off"], presence["device_class"]) == (
        "present",
        "gone",
        "occupancy",
    )
    assert presence["value_template"] == "{{ value_json.state }}"
    for config in configs.values():
        assert config["availability_topic"] == "adaface/status"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        assert config["device"]["identifiers"] == ["adaface_stream_adaface"]
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
