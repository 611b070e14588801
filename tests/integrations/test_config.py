"""The integrations' config: zones, mqtt, alerts. Each mistake is one line naming the key (exit 2);
secrets (broker password, webhook secret and URL path) never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import main
from stream.config import ConfigError, broker_address, load_config, parse_config
from stream.errors import UserError
from stream.integrations.hub import build_integrations

DOOR = "streams:\n  - name: door\n    webcam: 0\n    zones:\n      porch: [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "streams:\n  - {name: a, webcam: 0, zones: {door: [[0, 0], [1, 0]]}}\n",
            "streams[0].zones.door: a zone needs at least 3 points, got 2",
        ),
        (
            "streams:\n  - {name: a, webcam: 0, zones: {door: [[0, 0], [1, 0], [1.5, 1]]}}\n",
            "streams[0].zones.door[2][0]: must be <= 1.0, got 1.5",
        ),
        (
            "streams:\n  - {name: a, webcam: 0, zones: {door: [[0, 0], [1, 1], [1, 0], [0, 1]]}}\n",
            "streams[0].zones.door: the polygon's edges 1 and 3 cross",
        ),
        (
            "streams:\n  - {name: a, webcam: 0, zones: {door: [[0, 0], [0.5, 0.5], [1, 1]]}}\n",
            "streams[0].zones.door: the polygon is degenerate",
        ),
        (
            "streams:\n  - {name: a, webcam: 0, zones: {'front door': [[0, 0], [1, 0], [1, 1]]}}\n",
            "streams[0].zones.front door: must use only letters, digits",
        ),
        (
            "streams:\n  - {name: a, webcam: 0, zones: {door: [[0, 0], [1, 0], 'x']}}\n",
            "streams[0].zones.door[2]: input should be a valid tuple",
        ),
        (
            DOOR + "alerts:\n  - {name: r, zones: [gate]}\n",
            "alerts[0].zones: no zone gate on stream(s) door (zones: porch)",
        ),
        (DOOR + "alerts:\n  - {name: r, streams: [gate]}\n", "alerts[0].streams: no stream named gate (streams: door)"),
        (
            "alerts:\n  - {name: r, streams: [door]}\n",
            "alerts[0].streams: no stream named door (streams: none configured",
        ),
        ("alerts:\n  - {name: r}\n  - {name: r}\n", "alerts: rule names must be unique, repeated: r"),
        ("alerts:\n  - {name: r, when: [any, bob]}\n", "alerts[0].when: 'any' covers everybody: give it alone"),
        (
            "recognition: {stranger_ids: false}\nalerts:\n  - {name: r, when: [unknown]}\n",
            "alerts[0].when: 'unknown' needs recognition.stranger_ids: true",
        ),
        ("alerts:\n  - {name: r, mqtt_topic: a/b}\n", "alerts[0].mqtt_topic: needs the mqtt section"),
        (
            "mqtt: {url: 'mqtt://h'}\nalerts:\n  - {name: r, mqtt_topic: 'a/#'}\n",
            "alerts[0].mqtt_topic: must be a topic without wildcards",
        ),
        ("alerts:\n  - {name: r, cooldown_s: -1}\n", "alerts[0].cooldown_s: must be >= 0.0, got -1"),
        (
            "alerts:\n  - {name: r, cooldown_per: stream}\n",
            "alerts[0].cooldown_per: must be one of 'track' or 'person'",
        ),
        (
            "alerts:\n  - {name: r, webhook: {url: 'ftp://h/x'}}\n",
            "alerts[0].webhook.url: must be an http:// or https://",
        ),
        (
            "alerts:\n  - {name: r, webhook: {url: 'http://h/x', secret: short}}\n",
            "alerts[0].webhook.secret: must be at least 16 characters",
        ),
        ("mqtt: {}\n", "mqtt.url: required key is missing"),
        (
            "mqtt: {url: 'http://app:pw@h'}\n",
            "mqtt.url: must start with mqtt:// or mqtts:// (TLS), got 'http://app:***@h'",
        ),
        (
            "mqtt: {url: 'mqtt://app:pw@h:99999'}\n",
            "mqtt.url: not a valid URL (Port out of range 0-65535): 'mqtt://app:***@h:99999'",
        ),
        ("mqtt: {url: 'mqtt://h/x'}\n", "mqtt.url: must be mqtt[s]://[user:password@]host[:port] with nothing after"),
        ("mqtt: {url: 'mqtt://h', qos: 3}\n", "mqtt.qos: must be one of 0, 1 or 2, got 3"),
        ("mqtt: {url: 'mqtt://h', topic_prefix: '/a'}\n", "mqtt.topic_prefix: must be a topic without wildcards"),
        ("mqtt: {url: 'mqtt://h', tls: {}}\n", "mqtt: tls is set but url is mqtt:// (use mqtts:// for TLS)"),
        ("mqtt: {url: 'mqtts://h', tls: {key_file: k.pem}}\n", "mqtt.tls: cert_file and key_file go together"),
        ("mqtt: {url: 'mqtt://h', client_id: 'a b'}\n", "mqtt.client_id: must be 1 to 128 printable ASCII"),
        ("mqtt: {url: 'mqtt://h', keepalive: 5}\n", "mqtt.keepalive: unknown key (allowed: url, topic_prefix,"),
        ("snapshot_base_url: 'nvr:8080/x'\n", "snapshot_base_url: must be an http:// or https:// URL with a host"),
    ],
)
def test_mistakes_are_one_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.yaml")
    line = str(info.value)
    assert "\n" not in line and line.startswith("c.yaml: ")
    assert message in line, line
    assert "pw@" not in line


def test_valid_sections_and_paths_relative_to_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        DOOR
        + "mqtt:\n  url: mqtts://app:${MQTT_PASSWORD}@broker.lan\n  tls: {ca_file: certs/ca.pem}\n"
        + "snapshot_base_url: http://nvr.lan:8080/api/snapshots/\n"
        + "alerts:\n  - {name: porch, when: [unknown], zones: [porch], cooldown_per: person}\n"
    )
    config = load_config(cfg, environ={"MQTT_PASSWORD": "pw:with@odd/chars"})
    assert config.mqtt is not None and config.mqtt.tls is not None
    assert config.mqtt.tls.ca_file == tmp_path / "certs" / "ca.pem"
    assert config.snapshot_base_url == "http://nvr.lan:8080/api/snapshots"
    assert config.streams[0].zones["porch"][1] == (1.0, 0.0)
    assert config.alerts[0].when == ("unknown",) and config.alerts[0].cooldown_s == 60.0
    broker = broker_address(config.mqtt.url)  # the credentials end at the last @: any password character works
    assert (broker.host, broker.port, broker.tls, broker.username) == ("broker.lan", 8883, True, "app")
    assert broker.password == "pw:with@odd/chars" and broker.shown == "mqtts://app:***@broker.lan"
    assert "odd" not in repr(broker)


def test_run_py_config_masks_every_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "mqtt:\n  url: mqtt://app:${MQTT_PASSWORD}@broker.lan:1883\n"
        "alerts:\n  - name: r\n    webhook:\n      url: https://hooks.example.com/services/T0/B0/${HOOK_TOKEN}\n"
        "      secret: ${HOOK_SECRET}\n"
    )
    env = {"MQTT_PASSWORD": "broker@pass/123", "HOOK_TOKEN": "tok-456789", "HOOK_SECRET": "hmac-secret-0123456789"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert main(["config", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "url: mqtt://app:***@broker.lan:1883" in out
    assert "url: https://hooks.example.com/***" in out and "secret: '**********'" in out
    for secret in [*env.values(), "pass/123"]:
        assert secret not in out


def test_bad_integration_config_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(DOOR + "alerts:\n  - {name: r, zones: [garden]}\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {cfg}: alerts[0].zones: no zone garden on stream(s) door (zones: porch)"]


def test_tls_files_that_cannot_be_loaded_fail_at_start(tmp_path: Path) -> None:
    config = parse_config(f"mqtt:\n  url: mqtts://broker.lan\n  tls: {{ca_file: {tmp_path / 'nope.pem'}}}\n")
    with pytest.raises(UserError, match=r"^mqtt.tls.ca_file: cannot load .*nope.pem"):
        build_integrations(config, ["demo"], [])
    (tmp_path / "bad.pem").write_text("not a certificate")
    config = parse_config(f"mqtt:\n  url: mqtts://broker.lan\n  tls: {{ca_file: {tmp_path / 'bad.pem'}}}\n")
    with pytest.raises(UserError, match="mqtt.tls.ca_file: cannot load"):
        build_integrations(config, ["demo"], [])
