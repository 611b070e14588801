"""The REST API and pages with fakes (no models, no pipeline): health, streams, events and their filters,
snapshots (and every way of asking for a file outside the snapshots folder), identify and its bad
uploads, metrics, docs, live MJPEG and server-sent events."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from stream.types import Event, EventKind, TrackKey
from tests.web.conftest import BASE, T0, Site, jpeg_bytes, png_bytes


def test_health_and_streams(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["streams"] == 2
    streams = {s["name"]: s for s in client.get("/api/streams").json()}
    assert set(streams) == {"cam", "door"}
    assert streams["cam"]["live"] is True and streams["door"]["live"] is False
    assert streams["cam"]["live_url"] == "/streams/cam/live.mjpeg"
    assert {"state", "fps", "dropped", "reconnects", "frames", "last_frame_at"} <= set(streams["cam"])


def _events(client: TestClient, **params: object) -> list[dict]:
    r = client.get("/api/events", params=params)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def test_events_newest_first_with_ids_and_no_server_paths(client: TestClient) -> None:
    events = _events(client)
    assert len(events) == 8
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    assert events[0]["kind"] == "identity_changed" and events[0]["time"] == "2025-12-01T08:07:00.000Z"
    assert all("snapshot" not in e for e in events)  # only snapshot_url: never a path of the server
    named = next(e for e in events if e["person"] == "alice" and e["kind"] == "identity_assigned")
    assert named["snapshot_url"] == f"/api/events/{named['id']}/snapshot"
    assert named["run_id"] == "6f1c1a52-8a77-4c3e-9b3f-111111111111" and named["track_id"] == 1


def test_event_filters(client: TestClient) -> None:
    assert {e["person"] for e in _events(client, person="alice")} == {"alice"}
    assert len(_events(client, person="alice")) == 2
    unknown = _events(client, person="unknown")
    assert unknown and all(e["person"] is None for e in unknown)
    assert {e["stream"] for e in _events(client, stream="door")} == {"door"}
    assert {e["kind"] for e in _events(client, kind="track_started")} == {"track_started"}
    both = client.get("/api/events", params=[("kind", "track_started"), ("kind", "track_ended")]).json()["events"]
    assert {e["kind"] for e in both} == {"track_started", "track_ended"}
    assert {e["kind"] for e in _events(client, kind="track_started,track_ended")} == {"track_started", "track_ended"}
    window = _events(client, since="2025-12-01T08:02:00Z", until="2025-12-01T08:05")
    assert [e["time"][11:16] for e in window] == ["08:04", "08:03", "08:02"]
    assert len(_events(client, since=str(T0 + 300))) == 3  # Unix seconds work too
    assert _events(client, person="alice", stream="door") == []


def test_events_are_paged(client: TestClient) -> None:
    first = client.get("/api/events", params={"limit": 3}).json()
    assert len(first["events"]) == 3 and first["next_offset"] == 3
    second = client.get("/api/events", params={"limit": 3, "offset": 3}).json()
    assert {e["id"] for e in first["events"]}.isdisjoint(e["id"] for e in second["events"])
    last = client.get("/api/events", params={"limit": 3, "offset": 6}).json()
    assert len(last["events"]) == 2 and last["next_offset"] is None


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-45"}, "until"),
        ({"kind": "exploded"}, "kind"),
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"since": "1e300"}, "since"),
    ],
)
def test_bad_event_queries_are_400_json_naming_the_parameter(client: TestClient, params: dict, word: str) -> None:
    r = client.get("/api/events", params=params)
    assert r.status_code == 400
    assert word in r.json()["error"]


def test_one_event_and_its_snapshot(client: TestClient) -> None:
    named = next(e for e in _events(client, person="alice") if e["snapshot_url"])
    assert client.get(f"/api/events/{named['id']}").json()["person"] == "alice"
    r = client.get(named["snapshot_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    assert client.get("/api/events/99999").status_code == 404
    assert client.get("/api/events/99999/snapshot").status_code == 404


def test_stored_snapshot_paths_outside_the_folder_are_never_served(client: TestClient) -> None:
    """Rows whose snapshot is /etc/hosts.jpg or ../../secret.jpg: reduced to a name inside the folder."""
    bob = _events(client, person="bob")
    assert len(bob) == 2
    for event in bob:
        assert event["snapshot_url"] is not None  # the names look fine...
        assert client.get(event["snapshot_url"]).status_code == 404  # ...but no such file in the folder


@pytest.mark.parametrize(
    "path",
    [
        "/api/snapshots/..%2Fsecret.jpg",
        "/api/snapshots/%2E%2E%2Fsecret.jpg",
        "/api/snapshots/%2Fetc%2Fpasswd",
        "/api/snapshots/..%5Csecret.jpg",
        "/api/snapshots/.hidden.jpg",
        "/api/snapshots/cam_e0_t1.png",
        "/api/snapshots/cam_e0_t1.jpg%00.png",
        "/api/snapshots//etc/passwd",
        "/api/events/..%2F..%2Fetc%2Fpasswd/snapshot",
        "/api/events/-1/snapshot",
        "/streams/..%2F..%2Fetc%2Fpasswd/live.mjpeg",
        "/streams/..%2Frec/latest.jpg",
        "/streams/%2Fetc%2Fpasswd/latest.jpg",
        "/streams/nope/latest.jpg",
        "/static/..%2F..%2Fapp.py",
        "/static/%2Fetc%2Fpasswd",
    ],
)
def test_no_parameter_reaches_a_file_outside(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert b"not for the web" not in r.content and b"root:" not in r.content and b"import" not in r.content


def test_snapshot_by_name_and_a_symlink_out_of_the_folder(client: TestClient, site: Site) -> None:
    assert client.get("/api/snapshots/cam_e0_t1.jpg").status_code == 200
    (site.root / "snapshots" / "link_e0_t9.jpg").symlink_to(site.root / "secret.jpg")
    assert client.get("/api/snapshots/link_e0_t9.jpg").status_code == 404


def test_identify_returns_the_cli_json_list(client: TestClient, site: Site) -> None:
    r = client.post("/api/identify", files={"file": ("x.jpg", jpeg_bytes(64, 48), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.json() == [{"box": [1.0, 2.0, 30.0, 40.0], "person": "alice", "score": 0.8, "margin": 0.3}]
    assert site.identifier.shapes == [(48, 64, 3)]
    png = client.post("/api/identify", files={"file": ("x.png", png_bytes(20, 10), "application/octet-stream")})
    assert png.status_code == 200 and site.identifier.shapes[-1] == (10, 20, 3)  # sniffed, not trusted by name


@pytest.mark.parametrize(
    ("files", "status", "word"),
    [
        ({"file": ("x.jpg", b"", "image/jpeg")}, 400, "empty"),
        ({"file": ("x.jpg", b"GIF89a but not really", "image/gif")}, 415, "not an image"),
        ({"file": ("notes.txt", b"hello, I am text", "text/plain")}, 415, "not an image"),
        ({"file": ("x.jpg", jpeg_bytes(640, 480)[:2700], "image/jpeg")}, 415, "cannot decode"),
        ({"file": ("x.png", png_bytes(1100, 1000), "image/png")}, 413, "pixels"),
        ({"file": ("x.jpg", b"\xff\xd8" + bytes(300_000), "image/jpeg")}, 413, "over the limit"),
        ({"image": ("x.jpg", jpeg_bytes(), "image/jpeg")}, 400, "file"),
    ],
)
def test_bad_uploads_are_4xx_json(client: TestClient, site: Site, files: dict, status: int, word: str) -> None:
    r = client.post("/api/identify", files=files)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert word in r.json()["error"]
    assert site.identifier.shapes == []


def test_identify_without_multipart_and_a_chunked_body_over_the_cap(client: TestClient) -> None:
    assert client.post("/api/identify", content=b"raw bytes", headers={"Content-Type": "image/jpeg"}).status_code == 400
    assert client.post("/api/identify", json={"file": "x"}).status_code == 400

    def chunks():  # a well-formed multipart upload of 400 kB, sent chunked (no Content-Length)
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        for _ in range(40):
            yield bytes(10_000)
        yield b"\r\n--x--\r\n"

    r = client.post("/api/identify", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert client.get("/api/identify").status_code == 405


def test_small_bodies_elsewhere(client: TestClient) -> None:
    r = client.post("/login", content=bytes(100_000), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_metrics_docs_and_openapi(client: TestClient) -> None:
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'frames_processed_total{stream="cam"} 3.0' in metrics.text
    schema = client.get("/openapi.json").json()
    for path in ("/api/health", "/api/streams", "/api/events", "/api/events/{event_id}/snapshot", "/api/identify"):
        assert path in schema["paths"], path
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/api/identify" in docs.text and "/api/events/stream" in docs.text


def test_pages_render(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'data-stream="cam"' in page.text and "/streams/cam/live.mjpeg" in page.text
    events = client.get("/events", params={"person": "alice"})
    assert events.status_code == 200 and events.text.count('class="person">alice<') == 2
    assert "bob" not in events.text.split("<tbody>")[1]
    bad = client.get("/events", params={"since": "soon"})
    assert bad.status_code == 400 and "since" in bad.text
    assert client.get("/login", follow_redirects=False).status_code == 303  # no password: nothing to log into


def test_events_page_escapes_what_it_shows(client: TestClient) -> None:
    r = client.get("/events", params={"person": '<script>alert("x")</script>'})
    assert r.status_code == 200 and "<script>alert" not in r.text and "&lt;script&gt;" in r.text


def test_latest_frame_jpeg(client: TestClient) -> None:
    r = client.get("/streams/cam/latest.jpg")
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert client.get("/streams/door/latest.jpg").status_code == 503  # no frame yet


def _publisher(site: Site, stop: threading.Event) -> threading.Thread:
    def publish() -> None:
        value = 0
        while not stop.is_set():
            value = (value + 40) % 256
            site.view.publish_frame("cam", np.full((90, 160, 3), value, np.uint8), time.time())
            time.sleep(0.03)

    return threading.Thread(target=publish, daemon=True)


def test_mjpeg_sends_new_frames_and_counts_the_viewer(client: TestClient, site: Site) -> None:
    stop = threading.Event()
    thread = _publisher(site, stop)
    thread.start()
    try:
        with client.stream("GET", "/streams/cam/live.mjpeg") as r:
            assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
            buffer = b""
            for chunk in r.iter_bytes():
                buffer += chunk
                if buffer.count(b"--frame") >= 3:
                    break
            assert site.view.status("cam").viewers == 1  # type: ignore[union-attr]
            site.deps.closing.set()  # what the server does on shutdown: the stream ends
    finally:
        stop.set()
        thread.join()
    parts = [p for p in buffer.split(b"--frame\r\n") if p]
    assert len(parts) >= 3
    images = [p.split(b"\r\n\r\n", 1)[1][:-2] for p in parts[:3]]
    assert all(img[:2] == b"\xff\xd8" for img in images)
    assert len(set(images)) == 3  # each part is a newer frame


def test_server_sent_events_start_with_the_backlog_then_follow(client: TestClient, site: Site) -> None:
    old = Event.of_track(1.0, EventKind.TRACK_STARTED, TrackKey("cam", 0, 5)).at(T0)
    site.view.publish_events([(old, None)])

    def later() -> None:
        time.sleep(0.2)
        named = Event.of_track(2.0, EventKind.IDENTITY_ASSIGNED, TrackKey("cam", 0, 5), "alice", 0.9).at(T0 + 1)
        site.view.publish_events([(named, "cam_e0_t5.jpg")])

    thread = threading.Thread(target=later)
    thread.start()
    received: list[dict] = []
    with client.stream("GET", "/api/events/stream") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[6:]))
            if len(received) == 2:
                site.deps.closing.set()
                break
    thread.join()
    assert [e["kind"] for e in received] == ["track_started", "identity_assigned"]
    assert received[1]["person"] == "alice" and received[1]["snapshot_url"] == "/api/snapshots/cam_e0_t5.jpg"
    assert received[0]["seq"] < received[1]["seq"]
    assert site.view.subscribers == 0


def test_server_sent_events_resume_after_last_event_id(client: TestClient, site: Site) -> None:
    for i in range(1, 6):
        site.view.publish_events([(Event.of_track(1.0, EventKind.TRACK_STARTED, TrackKey("cam", 0, i)).at(T0), None)])
    seqs = []
    with client.stream("GET", "/api/events/stream", headers={"Last-Event-ID": "3"}) as r:
        for line in r.iter_lines():
            if line.startswith("id: "):
                seqs.append(int(line[4:]))
            if len(seqs) == 2:
                site.deps.closing.set()
                break
    assert seqs == [4, 5]


def test_errors_are_json_and_never_500_for_bad_input(client: TestClient) -> None:
    for method, path in [
        ("GET", "/nowhere"),
        ("GET", "/api/events/abc"),
        ("DELETE", "/api/events/1"),
        ("POST", "/api/health"),
    ]:
        r = client.request(method, path, headers={"Origin": BASE})
        assert 400 <= r.status_code < 500, (method, path, r.status_code)
        assert "error" in r.json()


def test_a_broken_event_database_is_503_not_500(site: Site, tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    from dataclasses import replace

    from stream.web.app import create_app
    from stream.web.events import StoreEventReader

    with TestClient(create_app(replace(site.deps, events=StoreEventReader(str(broken)))), base_url=BASE) as c:
        assert c.get("/api/events").status_code == 503
        assert c.get("/api/events/1").status_code == 404
        assert c.get("/events").status_code == 503
    with TestClient(create_app(replace(site.deps, events=None)), base_url=BASE) as c:
        r = c.get("/api/events")
        assert r.status_code == 503 and "events_sqlite" in r.json()["error"]
