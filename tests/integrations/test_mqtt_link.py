"""The MQTT link against a real broker (Debian's mosquitto on a free loopback port): birth and will,
retained states, QoS 1 across a broker restart, a broker down at start, a full outbox, credentials
and TLS. Nothing here waits on the broker in the caller's thread."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from stream.config import MqttConfig
from stream.errors import UserError
from stream.integrations.mqtt import MqttLink
from tests.fakes import RecordingLogHandler
from tests.integrations.broker import Mosquitto, Subscriber, free_port, make_tls_files

pytestmark = pytest.mark.slow  # starts mosquitto

STATUS = "t/status"


def _link(url: str, **kw: object) -> MqttLink:
    config = MqttConfig.model_validate({"url": url, "topic_prefix": "t", "keepalive_s": 5, "reconnect_max_s": 1, **kw})
    return MqttLink(config, STATUS)


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_birth_states_events_in_order_and_offline_at_close(broker: Mosquitto) -> None:
    sub = Subscriber(broker)
    link = _link(broker.url)
    link.retain("t/cam/person/alice", b'{"state":"gone"}')
    link.start()
    for i in range(200):
        link.publish("t/cam/events", json.dumps({"n": i}).encode())
    assert sub.wait_for(lambda ms: sum(m.topic == "t/cam/events" for m in ms) == 200, 10)
    assert [m.json()["n"] for m in sub.on("t/cam/events")] == list(range(200))
    assert [m.payload for m in sub.on("t/cam/person/alice")] == [b'{"state":"gone"}']
    assert [m.payload for m in sub.on(STATUS)] == [b"online"]
    assert _wait(lambda: link.counters().published >= 202, 5) and link.counters().connected
    started = time.monotonic()
    link.close(time.monotonic() + 1.5)
    assert time.monotonic() - started < 5.0  # bounded (a hang would never return)
    assert sub.wait_for(lambda ms: [m.payload for m in ms if m.topic == STATUS] == [b"online", b"offline"], 5)
    late = Subscriber(broker, (STATUS, "t/cam/person/+"))  # retained: what a new subscriber (Home Assistant) sees
    assert late.wait_for(lambda ms: len(ms) == 2, 5)
    assert {m.topic: m.payload for m in late.messages} == {
        STATUS: b"offline",
        "t/cam/person/alice": b'{"state":"gone"}',
    }
    assert all(m.retain for m in late.messages)
    sub.close()
    late.close()


def test_a_broker_restart_loses_nothing_at_qos_1_and_gets_the_states_again(broker: Mosquitto) -> None:
    link = _link(broker.url, qos=1)
    link.retain("t/cam/last_person", b'{"person":"alice"}')
    link.start()
    assert _wait(lambda: link.counters().connected, 10)
    broker.kill()
    assert _wait(lambda: not link.counters().connected, 10)
    for i in range(50):  # while the broker is away: they wait in the outbox
        link.publish("t/cam/events", json.dumps({"n": i}).encode())
    assert link.counters().pending == 50
    broker.start()
    sub = Subscriber(broker)  # subscribes as soon as the broker is back, as Home Assistant would
    for i in range(50, 100):
        link.publish("t/cam/events", json.dumps({"n": i}).encode())
    assert sub.wait_for(lambda ms: sum(m.topic == "t/cam/events" for m in ms) >= 100, 15), link.counters()
    got = [m.json()["n"] for m in sub.on("t/cam/events")]
    assert sorted(set(got)) == list(range(100))
    assert sub.wait_for(lambda ms: any(m.topic == "t/cam/last_person" for m in ms), 5)  # republished on reconnect
    counters = link.counters()
    assert counters.reconnects == 1 and counters.dropped == 0
    link.close(time.monotonic() + 1)
    sub.close()


def test_a_broker_down_at_start_never_blocks_and_is_retried_with_one_warning(tmp_path: Path) -> None:
    handler = RecordingLogHandler()
    logging.getLogger("stream.integrations.mqtt").addHandler(handler)
    try:
        link = _link(f"mqtt://app:hunter2secret@127.0.0.1:{free_port()}", outbox=100)
        link.start()
        started = time.monotonic()
        for i in range(1000):
            link.publish("t/cam/events", b"x%d" % i)
        assert time.monotonic() - started < 5.0  # publishing only queues (blocking on the refused broker never returns)
        assert _wait(lambda: link.counters().connect_failures >= 3, 10)
        counters = link.counters()
        assert counters.dropped == 900 and counters.pending == 100 and not counters.connected
        started = time.monotonic()
        link.close(time.monotonic() + 0.5)
        assert time.monotonic() - started < 5.0
        assert link.counters().dropped == 1000  # the 100 waiting are dropped at exit, and counted
    finally:
        logging.getLogger("stream.integrations.mqtt").removeHandler(handler)
    warnings = [m for m in handler.messages if "cannot connect" in m]
    assert len(warnings) == 1 and "mqtt://app:***@127.0.0.1" in warnings[0]
    assert not any("hunter2secret" in m for m in handler.messages)


def test_credentials_right_and_wrong(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "auth", user="app", password="s3cret-pass")
    broker.start()
    handler = RecordingLogHandler()
    logging.getLogger("stream.integrations.mqtt").addHandler(handler)
    try:
        good = _link(broker.url)
        good.start()
        assert _wait(lambda: good.counters().connected, 10)
        good.close(time.monotonic() + 1)
        bad = _link(f"mqtt://app:wrong-pass@127.0.0.1:{broker.port}")
        bad.start()
        assert _wait(lambda: bad.counters().connect_failures >= 2, 10)
        assert not bad.counters().connected
        bad.close(time.monotonic() + 0.5)
    finally:
        logging.getLogger("stream.integrations.mqtt").removeHandler(handler)
        broker.kill()
    refused = [m for m in handler.messages if "refused" in m]
    assert refused and ("Not authorized" in refused[0] or "Bad user name or password" in refused[0]), refused
    assert not any("wrong-pass" in m or "s3cret-pass" in m for m in handler.messages)


def test_tls_with_the_brokers_ca(tmp_path: Path) -> None:
    try:
        files = make_tls_files(tmp_path / "tls")
    except (RuntimeError, OSError) as exc:
        pytest.skip(str(exc))
    broker = Mosquitto(tmp_path / "tls-broker", tls=files)
    broker.start()
    try:
        sub = Subscriber(broker)
        link = _link(broker.url, tls={"ca_file": str(files.ca)})
        link.start()
        link.publish("t/cam/events", b"over tls")
        assert sub.wait_for(lambda ms: any(m.payload == b"over tls" for m in ms), 10)
        link.close(time.monotonic() + 1)
        untrusting = _link(broker.url)  # the system's CAs do not know this one: handshake fails, retried
        untrusting.start()
        assert _wait(lambda: untrusting.counters().connect_failures >= 1, 10) and not untrusting.counters().connected
        untrusting.close(time.monotonic() + 0.5)
        sub.close()
    finally:
        broker.kill()
    with pytest.raises(UserError, match="mqtt.tls.ca_file: cannot load"):
        _link(broker.url, tls={"ca_file": str(tmp_path / "missing.pem")})


def test_a_frozen_broker_never_holds_up_the_caller(broker: Mosquitto) -> None:
    sub = Subscriber(broker)
    link = _link(broker.url, qos=1)
    link.start()
    assert _wait(lambda: link.counters().connected, 10)
    broker.freeze()  # accepts nothing, answers nothing: TCP buffers fill, no PUBACK comes
    try:
        started = time.monotonic()
        for i in range(3000):
            link.publish("t/cam/events", json.dumps({"n": i, "pad": "x" * 200}).encode())
        assert time.monotonic() - started < 5.0  # a blocked publish would wait for the frozen broker forever
        time.sleep(1.0)
        assert link.counters().pending > 0  # waiting: at most MAX_IN_FLIGHT are out unacknowledged
    finally:
        broker.thaw()
    assert sub.wait_for(lambda ms: sum(m.topic == "t/cam/events" for m in ms) >= 3000, 20), link.counters()
    assert sorted({m.json()["n"] for m in sub.on("t/cam/events")}) == list(range(3000))
    link.close(time.monotonic() + 1)
    sub.close()
