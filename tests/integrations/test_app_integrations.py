"""The app with its integrations, end to end (real PyAV, MTCNN, FaceNet; Debian's mosquitto; a local
HTTP server): the demo over MQTT with Home Assistant discovery and presence; a broker killed and
restarted while a live camera runs (QoS 1: nothing of the first 10 s after its return is lost); an
unknown face in a zone alerting through a signed webhook once per cool-down, while a failing and a
refused endpoint are retried without holding up a frame."""

from __future__ import annotations

import http.server
import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stream.app import App, RunOptions, build_app
from stream.config import parse_config
from stream.faces.models import ModelOverrides
from stream.integrations.webhook import SIGNATURE_HEADER, verify_signature
from stream.outputs.summary import RunSummary
from tests.conftest import REPO, app_config_text, unix_time
from tests.integrations.broker import Mosquitto, Subscriber, free_port

pytestmark = pytest.mark.slow  # real models and video, a broker, an HTTP server

SECRET = "webhook-secret-0123456789"
RIGHT_HALF = "[[0.6, 0], [1, 0], [1, 1], [0.6, 1]]"  # where Grace Hopper stands in the demo clip


def _journal(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _live_demo(clip: Path) -> str:
    """The demo clip as a 25 fps camera that never ends (it loops)."""
    return f"lavfi:movie={clip}:loop=0,setpts=N/(25*TB),realtime"


def _build(tmp_path: Path, extra: str, options: RunOptions, *, video: bool = True) -> App:
    base = app_config_text(tmp_path)
    assert base.endswith(f"outputs:\n  dir: {tmp_path / 'rec'}\n")
    base += "" if video else "  annotated_video: false\n"  # one more key of its outputs section
    config = parse_config(base + extra).resolve_paths(tmp_path)
    return build_app(config, options, ModelOverrides(device="cpu"))


@contextmanager
def _running(app: App) -> Iterator[dict[str, RunSummary]]:
    """Run ``app`` in a thread; on leaving, stop it (as Ctrl-C would) and wait for it."""
    out: dict[str, RunSummary] = {}
    thread = threading.Thread(target=lambda: out.setdefault("summary", app.run()), daemon=True)
    thread.start()
    try:
        yield out
    finally:
        app.pipeline.stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the app did not stop"


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------- MQTT


def test_the_demo_over_mqtt_discovery_identity_and_presence(broker: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(broker)
    app = _build(tmp_path, f"mqtt:\n  url: {broker.url}\n", RunOptions())
    summary = app.run()  # the built-in demo: a 6 s file
    assert sub.wait_for(lambda ms: any(m.topic == "adaface/status" and m.payload == b"offline" for m in ms), 10)

    events = [m.json() for m in sub.on("adaface/demo/events")]
    journal = _journal(tmp_path / "rec" / "events.jsonl")
    assert [e["kind"] for e in events] == [e["kind"] for e in journal]  # every event, in order
    assert any(e["kind"] == "identity_assigned" and e["person"] == "eileen_collins" for e in events)
    presence = [m.json()["state"] for m in sub.on("adaface/demo/person/eileen_collins")]
    assert presence[0] == "gone" and presence[1:] == ["present", "gone"]  # reset at start, then her track
    last = [m.json() for m in sub.on("adaface/demo/last_person")]
    assert last and last[0]["person"] == "eileen_collins"
    assert [m.payload for m in sub.on("adaface/status")] == [b"online", b"offline"]
    sub.close()

    late = Subscriber(broker, ("homeassistant/#", "adaface/demo/person/#", "adaface/status"))  # Home Assistant later
    assert late.wait_for(lambda ms: len(ms) >= 6, 10)
    retained = {m.topic: m for m in late.messages}
    assert all(m.retain for m in retained.values())
    sensor = json.loads(retained["homeassistant/sensor/adaface/demo_last_person/config"].payload)
    assert sensor["state_topic"] == "adaface/demo/last_person" and sensor["availability_topic"] == "adaface/status"
    binary = json.loads(retained["homeassistant/binary_sensor/adaface/demo_eileen_collins_presence/config"].payload)
    assert binary["state_topic"] == "adaface/demo/person/eileen_collins" and binary["device_class"] == "occupancy"
    assert "homeassistant/binary_sensor/adaface/demo_unknown_presence/config" in retained
    assert json.loads(retained["adaface/demo/person/eileen_collins"].payload)["state"] == "gone"
    assert retained["adaface/status"].payload == b"offline"
    late.close()
    counts = summary.integrations
    assert counts["mqtt_published"] >= len(journal) and counts["mqtt_dropped"] == 0
    assert summary.frames_processed == 150


def test_a_broker_killed_and_restarted_mid_run_loses_nothing_at_qos_1(
    broker: Mosquitto, demo: tuple[Path, Path], tmp_path: Path
) -> None:
    clip, gallery = demo
    extra = f"profile: cpu\nmqtt:\n  url: {broker.url}\n  qos: 1\n  keepalive_s: 5\n  reconnect_max_s: 1\n"
    events_path = tmp_path / "events.jsonl"
    options = RunOptions(sources=(_live_demo(clip),), gallery=gallery, events=events_path)
    app = _build(tmp_path, extra, options, video=False)
    first = Subscriber(broker, ("adaface/#",))
    with _running(app) as result:
        assert first.wait_for(lambda ms: any(b'"identity_assigned"' in m.payload for m in ms), 120), "no events"
        first.close()
        broker.kill()
        killed = time.time()
        time.sleep(4.0)  # events meanwhile wait in the app's outbox
        broker.start()
        sub = Subscriber(broker, ("adaface/#", "homeassistant/#"))
        back = time.time()  # the broker is back and a consumer listens (SUBACK received)
        time.sleep(13.0)
    summary = result["summary"]
    journal = _journal(events_path)
    window = [e for e in journal if back <= unix_time(e) <= back + 10.0]
    got = {
        (e["kind"], e["epoch"], e["track_id"], e["time"]) for e in (m.json() for m in sub.on("adaface/stream0/events"))
    }
    missing = [e for e in window if (e["kind"], e["epoch"], e["track_id"], e["time"]) not in got]
    during = [e for e in journal if killed <= unix_time(e) < back]
    delivered_late = sum((e["kind"], e["epoch"], e["track_id"], e["time"]) in got for e in during)
    print(f"\n{len(window)} events in the 10 s after the broker's return, {len(missing)} missing; "
          f"{delivered_late} of {len(during)} events of the outage delivered after it; {summary.integrations}")  # fmt: skip
    assert len(window) >= 3, "the live demo should give events every few seconds"
    assert not missing, missing
    assert summary.integrations["mqtt_reconnects"] >= 1 and summary.integrations["mqtt_dropped"] == 0
    assert any(m.topic.startswith("homeassistant/") for m in sub.messages)  # retained configs published again
    sub.close()


# ---------------------------------------------------------------- webhooks


class _Hooks:
    """A local HTTP server: /ok answers 200, /flaky answers 500 twice then 200; every request is kept."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, float, dict[str, str], bytes]] = []
        self.flaky_left = 2
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hooks.requests.append((self.path, time.time(), {k.lower(): v for k, v in self.headers.items()}, body))
                status = 200
                if self.path == "/flaky" and hooks.flaky_left > 0:
                    hooks.flaky_left -= 1
                    status = 500
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[tuple[str, float, dict[str, str], bytes]]:
        return [r for r in self.requests if r[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_unknown_face_in_a_zone_alerts_once_per_cooldown_and_failing_hooks_never_stall(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    clip, gallery = demo
    hooks = _Hooks()
    refused = free_port()  # nothing listens there
    url = _live_demo(clip)
    extra = f"""
profile: cpu
gallery: {{dir: {gallery}}}
snapshot_base_url: http://nvr.lan:8080/api/snapshots
streams:
  - name: door
    url: "{url}"
    zones:
      right: {RIGHT_HALF}
alerts:
  - name: stranger
    when: [unknown]
    zones: [right]
    cooldown_s: 10
    cooldown_per: person
    webhook: {{url: "http://127.0.0.1:{hooks.port}/ok", secret: {SECRET}}}
  - name: flaky
    when: [unknown]
    zones: [right]
    cooldown_s: 1000
    cooldown_per: person
    webhook: {{url: "http://127.0.0.1:{hooks.port}/flaky", secret: {SECRET}, retries: 5}}
  - name: down
    when: [any]
    cooldown_s: 0
    webhook: {{url: "http://127.0.0.1:{refused}/gone", retries: 2, timeout_s: 1}}
"""
    app = _build(tmp_path, extra, RunOptions(max_frames=25 * 32), video=False)  # 32 s of the camera
    started = time.monotonic()
    summary = app.run()
    took = time.monotonic() - started
    hooks.close()

    journal = _journal(tmp_path / "rec" / "events.jsonl")
    strangers = [e for e in journal if e["kind"] == "stranger_assigned" and "right" in e.get("zones", [])]
    alerts = [e for e in journal if e["kind"] == "alert" and e["rule"] == "stranger"]
    times = [unix_time(a) for a in alerts]
    print(f"\n{len(strangers)} unknown faces labelled in the zone, {len(alerts)} alerts at {times}; "
          f"{summary.integrations}; {took:.1f} s")  # fmt: skip
    assert len(strangers) >= 3 and 2 <= len(alerts) < len(strangers)  # some fell in a cool-down
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(times))

    delivered = hooks.on("/ok")
    assert len(delivered) == len(alerts)  # once each: no repeats, nothing lost
    for _, _, headers, body in delivered:
        assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER.lower()])
        alert = json.loads(body)
        assert (alert["kind"], alert["rule"], alert["stranger"], alert["zones"]) == (
            "alert",
            "stranger",
            "unknown-1",
            ["right"],
        )
        assert alert["event"]["kind"] in ("stranger_assigned", "zone_entered")
        assert alert["snapshot_url"].startswith("http://nvr.lan:8080/api/snapshots/door_e0_t")
        assert (tmp_path / "rec" / "snapshots" / alert["snapshot_url"].rsplit("/", 1)[1]).is_file()
    assert len({json.loads(b)["delivery"] for *_, b in delivered}) == len(delivered)

    flaky = hooks.on("/flaky")
    assert len(flaky) == 3 and len({json.loads(b)["delivery"] for *_, b in flaky}) == 1  # retried, then delivered
    counts = summary.integrations
    assert counts["webhook_retries"] >= 2 + 2 and counts["webhook_failed"] + counts["webhook_dropped"] >= 1
    assert counts["webhook_delivered"] == len(alerts) + 1
    assert summary.frames_in == summary.frames_processed + summary.frames_dropped  # nothing stuck in the pipeline
    assert took < 32 + 60, took  # model loading aside, the camera's 32 s


# ---------------------------------------------------------------- stopping


@pytest.mark.serial  # a wall-clock promise: measured without other tests on the CPUs
def test_ctrl_c_with_a_silent_broker_and_a_hanging_webhook_still_ends_within_5_s(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    """A broker and a webhook endpoint that accept connections and never answer: Ctrl-C still finishes
    the outputs and ends the process within 5 s (the integrations get 1 s of it)."""
    clip, gallery = demo
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections complete in the kernel; nobody reads or answers
    port = silent.getsockname()[1]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        app_config_text(tmp_path)
        + f"profile: cpu\nmqtt:\n  url: mqtt://127.0.0.1:{port}\n"
        + f"alerts:\n  - name: anyone\n    webhook: {{url: 'http://127.0.0.1:{port}/hook', timeout_s: 30}}\n"
    )
    events = tmp_path / "events.jsonl"
    cmd = [sys.executable, "run.py", "--config", str(cfg), "--source", _live_demo(clip), "--gallery", str(gallery)]
    cmd += ["--events", str(events)]
    app = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait(lambda: any(e["kind"] == "alert" for e in _journal(events)), 120), "no alert"
        time.sleep(1.0)  # the webhook thread is now inside a POST that will not be answered
        app.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, _ = app.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if app.poll() is None:
            app.kill()
        silent.close()
    print(f"\nCtrl-C to exit: {took:.2f} s")
    assert app.returncode == 130, out
    assert took < 5.0, f"took {took:.1f} s\n{out}"
    assert "Traceback" not in out
