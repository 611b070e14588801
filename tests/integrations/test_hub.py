"""Integrations in the output stage, with a fake MQTT link and a recording webhook poster: what each
topic carries, presence, alerts recorded as events (journal + store) and delivered, privacy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from stream.config import parse_config
from stream.integrations.alerts import AlertEngine
from stream.integrations.hub import Integrations, build_integrations
from stream.integrations.topics import Topics
from stream.integrations.webhook import SIGNATURE_HEADER, WebhookSender, verify_signature
from stream.outputs.events import EventJournal
from stream.pipeline.messages import Annotated, TrackLabel
from stream.pipeline.recording import EventRecorder
from stream.pipeline.writers import OutputPaths, OutputWriters
from stream.store import open_store
from stream.store.records import RunRecord
from stream.types import Event, EventKind, Frame, TrackKey
from tests.fakes import FakeMqttLink, RecordingPoster
from trackers import TrackSnapshot, TrackState

SECRET = "0123456789abcdef-secret"
DOOR1, DOOR2 = TrackKey("door", 0, 1), TrackKey("door", 0, 2)
CONFIG = f"""
streams:
  - name: door
    webcam: 0
    zones:
      porch: [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]
mqtt:
  url: mqtt://127.0.0.1:1
snapshot_base_url: http://nvr.lan:8080/api/snapshots
alerts:
  - name: stranger-on-porch
    when: [unknown]
    zones: [porch]
    cooldown_s: 30
    webhook: {{url: "http://hooks.lan/alert", secret: "{SECRET}"}}
  - name: alice
    when: [alice]
    mqtt_topic: house/alerts/alice
"""


def _integrations(link: FakeMqttLink, poster: RecordingPoster, text: str = CONFIG) -> Integrations:
    config = parse_config(text)
    return Integrations(
        rules=AlertEngine(config.alerts),
        streams=["door"],
        people=["alice"],
        mqtt=link,
        topics=Topics("adaface"),
        webhooks=WebhookSender(post=poster, first_backoff_s=0.05),
        snapshot_base_url=config.snapshot_base_url,
        clock=lambda: 1000.0,
    )


def _writers(tmp_path: Path, integrations: Integrations, blur_unknown: bool = False) -> OutputWriters:
    paths = OutputPaths(videos={"door": None}, mot={"door": None}, jsonl=None, snapshots=None, summary=None)
    recorder = EventRecorder(
        RunRecord.new(started=1000.0),
        journal=EventJournal(tmp_path / "events.jsonl"),
        store=open_store(tmp_path / "events.db"),
        snapshots=tmp_path / "snapshots",
    )
    writers = OutputWriters(
        paths, fps={"door": 25.0}, recorder=recorder, integrations=integrations, blur_unknown=blur_unknown
    )
    writers.start()
    return writers


def _ev(t: float, kind: EventKind, key: TrackKey, person: str | None = None, score: float | None = None,
        stranger: str | None = None, zones: tuple[str, ...] = ()) -> Event:  # fmt: skip
    return Event(t - 1000.0, key.stream_id, kind, key, person, score, stranger=stranger, time=t, zones=zones)


def test_start_announces_discovery_and_everybody_gone() -> None:
    link = FakeMqttLink()
    _integrations(link, RecordingPoster()).start()
    assert link.started
    topics = [t for t, _ in link.retained]
    assert "homeassistant/sensor/adaface/door_last_person/config" in topics
    assert "homeassistant/binary_sensor/adaface/door_alice_presence/config" in topics
    assert "homeassistant/binary_sensor/adaface/door_unknown_presence/config" in topics
    for who in ("alice", "unknown"):
        assert json.loads(link.states[f"adaface/door/person/{who}"])["state"] == "gone"


def test_events_presence_and_alerts_through_the_output_stage(tmp_path: Path) -> None:
    link, poster = FakeMqttLink(), RecordingPoster(200)
    integrations = _integrations(link, poster)
    writers = _writers(tmp_path, integrations)
    writers.recorder.snapshot(DOOR2, np.full((112, 112, 3), 90, np.uint8))  # the stranger's best crop
    writers.events([
        _ev(1001.0, EventKind.TRACK_STARTED, DOOR1),
        _ev(1001.5, EventKind.IDENTITY_ASSIGNED, DOOR1, "alice", 0.71),
        _ev(1002.0, EventKind.TRACK_STARTED, DOOR2, zones=("porch",)),
        _ev(1002.4, EventKind.STRANGER_ASSIGNED, DOOR2, score=0.2, stranger="unknown-1", zones=("porch",)),
    ])  # fmt: skip
    present = json.loads(link.states["adaface/door/person/unknown"])
    assert (
        present["state"] == "present" and present["snapshot_url"] == "http://nvr.lan:8080/api/snapshots/door_e0_t2.jpg"
    )
    assert json.loads(link.states["adaface/door/last_person"])["stranger"] == "unknown-1"
    writers.events([
        _ev(1003.0, EventKind.ZONE_ENTERED, DOOR2, stranger="unknown-1", zones=("porch",)),  # cool-down: quiet
        _ev(1005.0, EventKind.TRACK_ENDED, DOOR2, stranger="unknown-1", zones=("porch",)),
        _ev(1006.0, EventKind.TRACK_ENDED, DOOR1, "alice", 0.72),
    ])  # fmt: skip
    deadline = time.monotonic() + 5
    while not poster.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    writers.close()

    kinds = [e["kind"] for e in link.on("adaface/door/events")]
    assert kinds == [  # a batch's alerts follow its events
        "track_started", "identity_assigned", "track_started", "stranger_assigned", "alert", "alert",
        "zone_entered", "track_ended", "track_ended",
    ]  # fmt: skip
    (alice_alert,) = link.on("house/alerts/alice")
    assert alice_alert["rule"] == "alice" and alice_alert["event"]["kind"] == "identity_assigned"
    (stranger_alert,) = link.on("adaface/alerts/stranger-on-porch")
    assert (stranger_alert["stranger"], stranger_alert["zones"], stranger_alert["trigger"]) == (
        "unknown-1", ["porch"], "stranger_assigned",
    )  # fmt: skip
    assert stranger_alert["snapshot_url"] == "http://nvr.lan:8080/api/snapshots/door_e0_t2.jpg"
    for who, state in (("alice", "gone"), ("unknown", "gone")):
        assert json.loads(link.states[f"adaface/door/person/{who}"])["state"] == state
    states = [json.loads(p)["state"] for t, p in link.retained if t == "adaface/door/person/alice"]
    assert states == ["gone", "present", "gone"]

    ((url, body, headers, _),) = poster.calls  # the webhook: only the stranger rule has one
    assert url == "http://hooks.lan/alert" and verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
    hook = json.loads(body)
    assert hook["kind"] == "alert" and hook["rule"] == "stranger-on-porch" and hook["delivery"]
    assert hook["event"]["kind"] == "stranger_assigned" and hook["snapshot_url"].endswith("door_e0_t2.jpg")

    journal = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    alerts = [e for e in journal if e["kind"] == "alert"]
    assert [(a["rule"], a["track_id"]) for a in alerts] == [("alice", 1), ("stranger-on-porch", 2)]
    assert alerts[1]["snapshot"].endswith("door_e0_t2.jpg") and alerts[1]["zones"] == ["porch"]
    with open_store(tmp_path / "events.db", create=False) as store:
        stored = [(r.kind, r.extra.get("rule")) for r in store.events() if r.kind == "alert"]
    assert sorted(stored) == [("alert", "alice"), ("alert", "stranger-on-porch")]
    assert integrations.counters().summary()["alerts"] == 2


def test_blur_unknown_saves_no_snapshot_of_an_unknown_face(tmp_path: Path) -> None:
    writers = _writers(tmp_path, _integrations(FakeMqttLink(), RecordingPoster()), blur_unknown=True)
    frame = Frame("door", 0, 0, 0.5, time.monotonic(), np.zeros((100, 200, 3), np.uint8), wall_time=1000.5)
    snap = TrackSnapshot(2, TrackState.CONFIRMED, np.array([120, 10, 180, 90], np.float32), 0.99, 0, 5, 5, 0.0)
    crop = np.full((112, 112, 3), 90, np.uint8)
    stranger = _ev(1000.5, EventKind.STRANGER_ASSIGNED, DOOR2, score=0.2, stranger="unknown-1")
    writers.frame(Annotated(frame, (TrackLabel(snap, None, None, 0.5, "unknown-1"),), (stranger,), ((DOOR2, crop),)))
    writers.close()
    assert not (tmp_path / "snapshots").exists()
    (line,) = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert line["kind"] == "stranger_assigned" and line["snapshot"] is None


def test_nothing_configured_means_no_integrations() -> None:
    assert build_integrations(parse_config(""), ["demo"], ["alice"]) is None
    built = build_integrations(parse_config("alerts:\n  - {name: a}\n"), ["demo"], [])
    assert built is not None and built.counters().mqtt is None and built.counters().webhook is None


def test_build_warns_of_rules_that_cannot_fire(caplog: pytest.LogCaptureFixture) -> None:
    text = "streams:\n  - {name: door, webcam: 0}\nalerts:\n  - {name: a, streams: [door], when: [bob]}\n"
    with caplog.at_level("WARNING"):
        build_integrations(parse_config(text), ["stream0"], ["alice"])
    assert "alerts[0] (a): none of its streams runs now (door)" in caplog.text
    assert "alerts[0] (a): nobody named bob in the gallery" in caplog.text
