"""The library's routes and pages under TestClient, with a real ``Library`` over a temporary gallery and
the site's SQLite store, enrolling with stand-in models (``tests/identity/test_library.py``: a photo of
grey level L embeds as ``VECTORS[L]``): people and photos with their statuses, uploads, deletes and
renames, unknown faces grouped, named, ignored, merged and split, "not this person", the snapshot links;
and every bad input (non-images, empty, huge, too many pixels or files, path-like names, unknown ids)
answered with a clear 4xx JSON error and the gallery folder byte for byte untouched."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from stream.config import AppConfig
from stream.identity.library import Library
from stream.identity.photos import BadInput
from stream.store import Store, StoreUnavailableError, open_store
from stream.web.app import WebDeps, create_app
from stream.web.auth import PasswordCheck
from stream.web.identify import UploadLimits
from tests.identity.test_library import LEVELS, models, photo, record_run, tree
from tests.web.conftest import BASE, CHEAP_HASHER, PASSWORD, Site, login

FOREIGN = "https://evil.example"
LIMITS = UploadLimits(max_bytes=200_000, max_pixels=1_000_000)


@dataclass
class Lib:
    client: TestClient
    library: Library
    gallery: Path
    db: Path
    deps: WebDeps

    def groups(self) -> list[dict[str, Any]]:
        r = self.client.get("/api/unknowns")
        assert r.status_code == 200, r.text
        return r.json()["groups"]


def flat(level: int, size: int = 160) -> bytes:
    """A photo without texture: the stand-in detector finds a face (level >= 5), the blur gate refuses it."""
    out = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), level, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def make_gallery(folder: Path) -> Path:
    (folder / "alice").mkdir(parents=True)
    for i in range(2):
        (folder / "alice" / f"a{i}.png").write_bytes(photo(LEVELS["alice"], i))
    (folder / "bob").mkdir()
    (folder / "bob" / "b0.png").write_bytes(photo(LEVELS["bob"]))
    (folder / "bob" / "notes.txt").write_text("not a photo\n")
    return folder


@pytest.fixture
def lib(site: Site, tmp_path: Path) -> Iterator[Lib]:
    """The site's events plus a run of unknown faces in the same store: 3 tracks of carol (one 30 px face,
    never offered), 2 of dave, and dave wrongly named alice."""
    db = site.root / "events.db"
    with open_store(db) as store:
        record_run(store, [("carol", None, 80.0), ("dave", None, 90.0), ("carol", None, 70.0), ("carol", None, 30.0)])
        record_run(store, [("dave", None, 60.0), ("dave", "alice", 90.0)], start=2_000_000_000.0)
    gallery = make_gallery(tmp_path / "gallery")
    library = Library(gallery, AppConfig(), models=models(), store=lambda: open_store(db))
    library.load()
    deps = replace(
        site.deps,
        library=library,
        people=lambda: library.matcher.names,
        settings=replace(site.deps.settings, uploads=LIMITS),
    )
    with TestClient(create_app(deps), base_url=BASE) as client:
        yield Lib(client, library, gallery, db, deps)
    library.close()


def _files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


# ---------------------------------------------------------------- people


def test_people_show_each_photo_with_its_status_and_the_template_quality(lib: Lib) -> None:
    r = lib.client.get("/api/people")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    view = r.json()
    assert view["version"] == 0 and [p["name"] for p in view["people"]] == ["alice", "bob"]
    alice, bob = view["people"]
    assert (alice["enrolled"], alice["used"], alice["rejected"], alice["quality"]) == (True, 2, 0, 20.0)
    assert [(p["file"], p["status"], p["reason"]) for p in bob["photos"]] == [
        ("b0.png", "used", None),
        ("notes.txt", "rejected", "not an image file (.txt)"),
    ]
    assert alice["photos"][0]["face_px"] == 96.0 and alice["photos"][0]["blur"] > 150
    assert lib.client.get("/api/people/bob").json() == bob
    image = lib.client.get("/api/people/alice/photos/a0.png")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == (lib.gallery / "alice" / "a0.png").read_bytes()
    assert lib.client.get("/api/people/bob/photos/notes.txt").status_code == 404  # listed, but not a photo
    assert lib.client.get("/api/people/nobody").status_code == 404


def test_hand_edits_of_the_folder_show_up(lib: Lib) -> None:
    (lib.gallery / "dave").mkdir()
    (lib.gallery / "dave" / "d.png").write_bytes(photo(LEVELS["dave"]))
    view = lib.client.get("/api/people").json()
    assert [p["name"] for p in view["people"]] == ["alice", "bob", "dave"] and view["version"] == 1


def test_uploading_several_photos_makes_a_new_person_with_each_photos_status(lib: Lib) -> None:
    r = lib.client.post(
        "/api/people/Carol Ann/photos",
        files=_files(
            ("c1.png", photo(200, 1)), ("../../etc/c 2.jpg", photo(200, 2, fmt="JPEG")), ("flat.png", flat(200))
        ),
    )
    assert r.status_code == 200, r.text
    change = r.json()
    assert change["action"] == "add_photos" and change["version"] == 1
    assert change["files"] == ["c1.png", "c_2.jpg", "flat.png"]  # names from the originals' letters, never paths
    statuses = {p["file"]: (p["status"], p["reason"]) for p in change["person"]["photos"]}
    assert statuses["c1.png"] == statuses["c_2.jpg"] == ("used", None)
    assert statuses["flat.png"][0] == "rejected" and "blurry" in statuses["flat.png"][1]
    assert sorted(p.name for p in (lib.gallery / "Carol Ann").iterdir()) == ["c1.png", "c_2.jpg", "flat.png"]
    assert not (lib.gallery.parent / "etc").exists()
    assert lib.library.matcher.names == ("Carol Ann", "alice", "bob")  # the streams' matcher, swapped
    assert lib.client.get("/api/people/Carol%20Ann/photos/c_2.jpg").headers["content-type"] == "image/jpeg"
    more = lib.client.post("/api/people/Carol Ann/photos", files=_files(("c1.png", photo(200, 3))))
    assert more.json()["files"] == ["c1-2.png"] and more.json()["version"] == 2


def _image(width: int, height: int, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        (_files(("notes.png", b"hello, I am text\n" * 20)), 415, "'notes.png': not an image"),
        (_files(("empty.png", b"")), 400, "'empty.png': empty upload"),
        (
            _files(("huge.png", b"\x89PNG" + b"\0" * 200_000)),
            413,
            "'huge.png': 200,004 bytes is over the limit of 200,000",
        ),
        (_files(("wide.png", _image(1100, 1000))), 413, "1100x1000 is 1,100,000 pixels, over the limit of 1,000,000"),
        (_files(("anim.gif", _image(64, 64, "GIF"))), 400, "'anim.gif': GIF images are not accepted"),
        (_files(("cut.png", photo(200)[:400])), 400, "'cut.png': the image cannot be decoded"),
        (_files(("tiny.png", photo(200, size=20))), 400, "too small (20x20; at least 40 px)"),
        (_files(*[(f"{i}.png", photo(200, i, size=48)) for i in range(20)]), 400, "21 photos at once; at most 20"),
        ([("file", ("x.png", photo(200), "image/png"))], 400, "files: Field required"),
        ([], 400, "files"),
    ],
)
def test_bad_uploads_are_clear_4xx_errors_and_leave_the_gallery_untouched(
    lib: Lib, files: list, status: int, message: str
) -> None:
    before = tree(lib.gallery)
    good = _files(("good.png", photo(200))) if files and files[0][0] == "files" else []
    r = lib.client.post(
        "/api/people/carol/photos", files=[*good, *files] if files else None, data={} if not files else None
    )
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert tree(lib.gallery) == before and lib.library.version == 0


@pytest.mark.parametrize(
    ("person", "status", "message"),
    [
        ("..", 404, "Not Found"),  # the client resolves it: /api/photos
        ("%2E%2E", 400, "'..' is not a name"),
        (".hidden", 400, "may not start or end with a dot"),
        ("bob%00", 400, "control or invisible characters"),
        ("tab%09name", 400, "control or invisible characters"),
        ("a%5Cb", 400, "may not contain"),
        ("x" * 65, 400, "longer than 64"),
        ("c%3Aolon", 400, "may not contain :"),
        ("ALICE", 409, "person 'alice' already exists"),
        ("a%2Fb", 400, "may not contain / or"),
        ("..%2F..%2Fetc", 400, "may not contain / or"),
        ("alice/photos/x", 400, "may not contain / or"),
    ],
)
def test_bad_person_names_for_an_upload_are_refused(lib: Lib, person: str, status: int, message: str) -> None:
    before = tree(lib.gallery)
    r = lib.client.post(f"/api/people/{person}/photos", files=_files(("good.png", photo(200))))
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert tree(lib.gallery) == before and lib.library.version == 0


def test_an_upload_body_over_the_cap_is_413_before_it_is_read(lib: Lib) -> None:
    before = tree(lib.gallery)
    big = _files(*[(f"{i}.png", b"\0" * 190_000) for i in range(11)])  # 11 x 190 kB > 10 x 200 kB
    r = lib.client.post("/api/people/carol/photos", files=big)
    assert r.status_code == 413 and "request body over the limit" in r.json()["error"]
    assert tree(lib.gallery) == before


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/people/alice/photos/a9.png", 404),
        ("/api/people/alice/photos/..%2Fbob%2Fb0.png", 400),
        ("/api/people/alice/photos/%2E%2E%2Fbob%2Fb0.png", 400),
        ("/api/people/alice/photos/sub%2F..%2Fa0.png", 400),
        ("/api/people/alice/photos/%2Fetc%2Fpasswd", 400),
        ("/api/people/alice/photos//etc/passwd", 400),
        ("/api/people/alice/photos/..%5Ca0.png", 400),
        ("/api/people/alice/photos/a0.png%00", 400),
        ("/api/people/alice/photos/.%2Fa0.png", 400),
        ("/api/people/%2E%2E/photos/alice%2Fa0.png", 400),
        ("/api/people/nobody/photos/a0.png", 404),
        ("/api/people/.cache/photos/x.npz", 404),
    ],
)
def test_photos_are_served_and_deleted_only_by_checked_names(lib: Lib, path: str, status: int) -> None:
    before = tree(lib.gallery)
    got = lib.client.get(path)
    assert got.status_code == status and got.headers["content-type"] == "application/json", got.text
    gone = lib.client.delete(path)
    assert gone.status_code == status, gone.text
    assert tree(lib.gallery) == before and lib.library.version == 0


def test_deleting_a_photo_then_a_person(lib: Lib) -> None:
    r = lib.client.delete("/api/people/alice/photos/a1.png")
    assert r.status_code == 200 and r.json()["files"] == ["a1.png"] and r.json()["person"]["used"] == 1
    assert not (lib.gallery / "alice" / "a1.png").exists()
    for name in ("nobody", "%2E%2E", ".cache"):
        assert lib.client.delete(f"/api/people/{name}").status_code in (400, 404)
    gone = lib.client.delete("/api/people/bob")
    assert (
        gone.status_code == 200
        and gone.json()["person"] is None
        and sorted(gone.json()["files"]) == ["b0.png", "notes.txt"]
    )
    assert not (lib.gallery / "bob").exists() and lib.library.matcher.names == ("alice",)
    assert lib.client.delete("/api/people/bob").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": "bob"}, 409, "person 'bob' already exists"),
        ({"name": "BOB"}, 409, "already exists"),
        ({"name": "alice"}, 400, "already the person's name"),
        ({"name": "x/y"}, 400, "may not contain /"),
        ({"name": "../bob"}, 400, "may not contain /"),
        ({"name": "a\nb"}, 400, "control or invisible"),
        ({"name": "  "}, 400, "the name is empty"),
        ({"name": "."}, 400, "start or end with a dot"),
        ({"name": 5}, 400, "name: Input should be a valid string"),
        ({}, 400, "name: Field required"),
        ({"name": "zed", "extra": 1}, 400, "extra: Extra inputs are not permitted"),
        ("not json", 400, "JSON"),
    ],
)
def test_bad_renames_are_refused(lib: Lib, body: object, status: int, message: str) -> None:
    before = tree(lib.gallery)
    if isinstance(body, str):
        r = lib.client.post("/api/people/alice/rename", content=body, headers={"Content-Type": "application/json"})
    else:
        r = lib.client.post("/api/people/alice/rename", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert tree(lib.gallery) == before and lib.library.version == 0


def test_renaming_a_person_renames_their_events_too(lib: Lib) -> None:
    assert lib.client.post("/api/people/zoe/rename", json={"name": "zed"}).status_code == 404
    r = lib.client.post("/api/people/alice/rename", json={"name": "Alice Liddell"})
    assert r.status_code == 200, r.text
    assert r.json()["previous"] == "alice" and r.json()["person"]["name"] == "Alice Liddell"
    assert (lib.gallery / "Alice Liddell" / "a0.png").is_file() and not (lib.gallery / "alice").exists()
    assert r.json()["relabelled"]["events"] >= 2
    events = lib.client.get("/api/events", params={"person": "Alice Liddell"}).json()["events"]
    assert events and lib.client.get("/api/events", params={"person": "alice"}).json()["events"] == []


# ---------------------------------------------------------------- unknowns


def test_unknowns_are_grouped_with_their_best_crops(lib: Lib) -> None:
    view = lib.client.get("/api/unknowns").json()
    assert view["faces"] == 5 and view["hidden"] == 0 and view["model_id"] == "facenet:casia-webface:fake"
    dave, carol = view["groups"]  # most recently seen first
    assert (dave["count"], carol["count"], carol["offered"]) == (2, 3, 2)
    assert [c["face_px"] for c in carol["crops"]] == [80.0, 70.0] and carol["crops"][0]["blur"] == 400.0  # not 30 px
    assert carol["streams"] == ["cam"] and carol["first_seen"].endswith("Z")
    assert lib.client.get(f"/api/unknowns/{carol['id']}").json() == carol
    crop = lib.client.get(f"/api/faces/{carol['crops'][0]['face_id']}/crop.jpg")
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg" and crop.content[:2] == b"\xff\xd8"

    def since(text: str) -> list[int]:
        r = lib.client.get("/api/unknowns", params={"since": text})
        assert r.status_code == 200, r.text
        return [g["id"] for g in r.json()["groups"]]

    assert since("2033-05-18T03:33:00Z") == since("2000000000") == since("now") == [dave["id"]]
    assert since("") == since("1d") == [dave["id"], carol["id"]]  # carol was seen on the machine's today
    assert since("2040-01-01") == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/api/unknowns?since=soon", None, 400, "since: expected ISO 8601"),
        ("GET", "/api/unknowns/999", None, 404, "no group 999"),
        ("GET", "/api/unknowns/abc", None, 400, "group_id: Input should be a valid integer"),
        ("GET", "/api/unknowns/-1", None, 400, "group_id"),
        ("GET", f"/api/unknowns/{10**30}", None, 400, "group_id"),
        ("GET", "/api/faces/999999/crop.jpg", None, 404, "no stored face 999999"),
        ("GET", "/api/faces/..%2F1/crop.jpg", None, 404, "Not Found"),
        ("GET", "/api/faces/x/crop.jpg", None, 400, "face_id"),
        ("POST", "/api/unknowns/999/name", {"person": "carol"}, 404, "no group 999"),
        ("POST", "/api/unknowns/{carol}/name", {"person": "../carol"}, 400, "may not contain /"),
        ("POST", "/api/unknowns/{carol}/name", {"person": "Bob"}, 409, "person 'bob' already exists"),
        ("POST", "/api/unknowns/{carol}/name", {"person": ""}, 400, "the name is empty"),
        ("POST", "/api/unknowns/{carol}/name", {"person": "a\x00b"}, 400, "control or invisible"),
        ("POST", "/api/unknowns/{carol}/name", {"name": "carol"}, 400, "person: Field required"),
        ("POST", "/api/unknowns/{carol}/name", None, 400, "Field required"),
        ("POST", "/api/unknowns/999/ignore", None, 404, "no group 999"),
        ("POST", "/api/unknowns/{carol}/merge", {"with": "{carol}"}, 400, "with itself"),
        ("POST", "/api/unknowns/{carol}/merge", {"with": 999}, 404, "no group 999"),
        ("POST", "/api/unknowns/{carol}/merge", {"with": "x"}, 400, "with: Input should be a valid integer"),
        ("POST", "/api/unknowns/{carol}/merge", {}, 400, "with: Field required"),
        ("DELETE", "/api/unknowns/{carol}/faces/999999", None, 404, "is not in group"),
        ("DELETE", "/api/unknowns/999/faces/1", None, 404, "no group 999"),
        ("POST", "/api/events/999999/not-this-person", None, 404, "no event 999999"),
        ("POST", "/api/events/x/not-this-person", None, 400, "event_id"),
    ],
)
def test_bad_review_requests_are_clear_4xx_errors(
    lib: Lib, method: str, path: str, body: dict | None, status: int, message: str
) -> None:
    carol = str(_carol(lib)["id"])
    if body is not None:
        body = {k: (v.replace("{carol}", carol) if isinstance(v, str) else v) for k, v in body.items()}
        if body.get("with") == carol:
            body["with"] = int(carol)
    before, groups = tree(lib.gallery), lib.groups()
    r = lib.client.request(method, path.replace("{carol}", carol), json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert tree(lib.gallery) == before and lib.groups() == groups and lib.library.version == 0


def _carol(lib: Lib) -> dict[str, Any]:
    return next(g for g in lib.groups() if g["count"] == 3)


def test_naming_a_group_relabels_its_events_and_fills_the_gallery(lib: Lib) -> None:
    carol = _carol(lib)
    r = lib.client.post(f"/api/unknowns/{carol['id']}/name", json={"person": "carol"})
    assert r.status_code == 200, r.text
    naming = r.json()
    assert naming["group"] == carol["id"] and naming["faces"] == 3 and naming["relabelled"]["events"] == 6
    assert sorted(p["file"] for p in naming["photos"]) == sorted(f"unknown-{c['face_id']}.jpg" for c in carol["crops"])
    assert naming["person"]["enrolled"] and naming["version"] == 1
    assert sorted(p.name for p in (lib.gallery / "carol").iterdir()) == sorted(p["file"] for p in naming["photos"])
    events = lib.client.get("/api/events", params={"person": "carol"}).json()["events"]
    assert len(events) == 6 and {e["kind"] for e in events} == {"stranger_assigned", "track_ended"}
    assert all(e["relabelled_by"] == "user" for e in events if "relabelled_by" in e)
    assert carol["id"] not in [g["id"] for g in lib.groups()]
    assert "carol" in lib.client.get("/events").text  # the events page's suggestions follow the gallery


def test_merging_removing_a_face_and_ignoring(lib: Lib) -> None:
    first, second = lib.groups()
    merged = lib.client.post(f"/api/unknowns/{first['id']}/merge", json={"with": second["id"]})
    assert merged.status_code == 200, merged.text
    assert merged.json()["id"] == min(first["id"], second["id"]) and merged.json()["count"] == 5
    face = second["faces"][0]
    rest = lib.client.delete(f"/api/unknowns/{merged.json()['id']}/faces/{face}")
    assert rest.status_code == 200 and rest.json()["count"] == 4
    alone = next(g for g in lib.groups() if g["faces"] == [face])
    assert lib.client.delete(f"/api/unknowns/{alone['id']}/faces/{face}").json() is None  # nobody left
    ignored = lib.client.post(f"/api/unknowns/{rest.json()['id']}/ignore")  # its id: its smallest face's
    assert ignored.status_code == 200 and ignored.json()["faces"] == 4 and ignored.json()["version"] == 1
    assert lib.library.version == 1


def test_not_this_person(lib: Lib) -> None:
    events = lib.client.get("/api/events", params={"person": "alice", "kind": "identity_assigned"}).json()["events"]
    stored = next(e for e in events if e["time"].startswith("2033"))  # the run with faces: dave named alice
    other = next(e for e in events if e["time"].startswith("2025"))  # the site's run: no stored face
    started = lib.client.get("/api/events", params={"kind": "track_started"}).json()["events"][0]
    r = lib.client.post(f"/api/events/{other['id']}/not-this-person")
    assert r.status_code == 409 and "not stored yet" in r.json()["error"]
    r = lib.client.post(f"/api/events/{started['id']}/not-this-person")
    assert r.status_code == 400 and "names nobody" in r.json()["error"]
    r = lib.client.post(f"/api/events/{stored['id']}/not-this-person")
    assert r.status_code == 200, r.text
    assert (r.json()["person"], r.json()["relabelled"]["negatives"], r.json()["version"]) == ("alice", 1, 1)
    assert lib.client.get(f"/api/events/{stored['id']}").json()["person"] is None
    assert lib.client.get("/api/people/alice").json()["impostors"] == 1
    again = lib.client.post(f"/api/events/{stored['id']}/not-this-person")
    assert again.status_code == 400 and "names nobody" in again.json()["error"]


# ---------------------------------------------------------------- pages


def test_the_people_page_shows_every_photo_with_its_status(lib: Lib) -> None:
    page = lib.client.get("/people")
    assert page.status_code == 200 and 'href="/people" class="active"' in page.text
    text = page.text
    assert 'data-person="alice"' in text and 'data-person="bob"' in text and 'id="new-person"' in text
    assert 'src="/api/people/alice/photos/a0.png"' in text and "not an image file (.txt)" in text
    assert 'src="/static/library.js"' in text and "<script>" not in text
    assert lib.client.get("/static/library.js").status_code == 200


def test_the_unknowns_page_shows_groups_with_crops_size_and_blur(lib: Lib) -> None:
    page = lib.client.get("/unknowns")
    assert page.status_code == 200
    text = page.text
    for group in lib.groups():
        assert f'data-group="{group["id"]}"' in text
        for crop in group["crops"]:
            assert f'src="/api/faces/{crop["face_id"]}/crop.jpg"' in text
    assert "80 px" in text and "blur 400" in text and 'data-action="name"' in text and 'data-action="merge"' in text
    assert '<option value="alice">' in text  # name a group as an existing person
    assert lib.client.get("/unknowns", params={"since": "soon"}).status_code == 400
    assert 'id="no-groups"' in lib.client.get("/unknowns", params={"since": "2040-01-01"}).text


def test_the_events_page_offers_not_this_person_on_identity_events(lib: Lib, site: Site) -> None:
    text = lib.client.get("/events").text
    named = lib.client.get("/api/events", params={"kind": "identity_assigned"}).json()["events"]
    for event in named:
        assert f'data-action="not-this" data-event="{event["id"]}"' in text
    started = lib.client.get("/api/events", params={"kind": "track_started"}).json()["events"][0]
    assert f'data-event="{started["id"]}"' not in text
    with site.client() as plain:  # no library: no button
        assert 'data-action="not-this"' not in plain.get("/events").text


def test_without_a_library_every_route_is_503_and_the_pages_say_why(client: TestClient) -> None:
    for method, path in [
        ("GET", "/api/people"),
        ("GET", "/api/people/alice"),
        ("POST", "/api/people/alice/rename"),
        ("DELETE", "/api/people/alice"),
        ("GET", "/api/unknowns"),
        ("GET", "/api/faces/1/crop.jpg"),
        ("POST", "/api/unknowns/1/ignore"),
        ("POST", "/api/events/1/not-this-person"),
    ]:
        r = client.request(method, path, json={"name": "x"} if "rename" in path else None)
        assert r.status_code == 503 and "library" in r.json()["error"], (method, path, r.text)
    for path in ("/people", "/unknowns"):
        page = client.get(path)
        assert page.status_code == 503 and "not available" in page.text


class SlowLibrary:
    """A fake library whose ``people`` waits for a signal (an enrolment in progress)."""

    gallery_dir = Path("/nonexistent")

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.threads: list[str] = []

    def sync(self) -> bool:
        return False

    def people(self) -> Any:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(10)
        return _View({"model_id": "m", "threshold": 0.5, "version": 0, "people": []})

    def unknowns(self, since: float | None = None) -> Any:
        raise StoreUnavailableError("event store sqlite:///x.db: database is locked")

    def __getattr__(self, name: str) -> Any:
        def refuse(*args: object) -> Any:
            raise BadInput(f"{name}: refused")

        return refuse


@dataclass
class _View:
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data


def test_a_slow_library_call_runs_in_a_worker_thread_and_never_holds_the_server(site: Site) -> None:
    slow = SlowLibrary()
    deps = replace(site.deps, library=slow)  # type: ignore[arg-type]
    with TestClient(create_app(deps), base_url=BASE) as client:
        answers: list[int] = []
        caller = threading.Thread(target=lambda: answers.append(client.get("/api/people").status_code))
        caller.start()
        assert slow.entered.wait(5)
        started = time.monotonic()
        assert client.get("/api/health").status_code == 200  # the event loop is free meanwhile
        assert client.get("/api/events", params={"limit": 1}).status_code == 200
        assert time.monotonic() - started < 2
        slow.release.set()
        caller.join(10)
        assert answers == [200] and slow.threads and "MainThread" not in slow.threads
        r = client.get("/api/unknowns")
        assert r.status_code == 503 and "database is locked" in r.json()["error"]
        assert client.delete("/api/people/x").status_code == 400


def test_the_store_unavailable_is_503_and_the_people_still_show(site: Site, tmp_path: Path) -> None:
    def broken() -> Store:
        raise StoreUnavailableError("event store postgresql://app:***@db/x: connection refused")

    library = Library(make_gallery(tmp_path / "g"), AppConfig(), models=models(), store=broken)
    library.load  # noqa: B018 - built lazily: the store is opened at the first call that needs it
    with TestClient(create_app(replace(site.deps, library=library)), base_url=BASE) as client:
        r = client.get("/api/unknowns")
        assert r.status_code == 503 and "connection refused" in r.json()["error"]
        assert client.post("/api/events/1/not-this-person").status_code == 503
        assert client.get("/unknowns").status_code == 503
        people = client.get("/api/people")
        assert people.status_code == 503 or [p["name"] for p in people.json()["people"]] == ["alice", "bob"]


# ---------------------------------------------------------------- security


STATE_CHANGING = [
    ("POST", "/api/people/carol/photos"),
    ("DELETE", "/api/people/alice/photos/a0.png"),
    ("DELETE", "/api/people/alice"),
    ("POST", "/api/people/alice/rename"),
    ("POST", "/api/unknowns/1/name"),
    ("POST", "/api/unknowns/1/ignore"),
    ("POST", "/api/unknowns/1/merge"),
    ("DELETE", "/api/unknowns/1/faces/1"),
    ("POST", "/api/events/1/not-this-person"),
]


def _body(path: str) -> dict[str, Any]:
    if path.endswith("/photos"):
        return {"files": _files(("x.png", photo(200)))}
    if path.endswith("rename"):
        return {"json": {"name": "zed"}}
    if path.endswith("/name"):
        return {"json": {"person": "zed"}}
    if path.endswith("/merge"):
        return {"json": {"with": 2}}
    return {}


def test_state_changing_routes_refuse_other_sites_and_anonymous_callers(lib: Lib) -> None:
    before = tree(lib.gallery)
    for method, path in STATE_CHANGING:  # no password: a page of another site is refused
        r = lib.client.request(method, path, headers={"Origin": FOREIGN}, **_body(path))
        assert r.status_code == 403, (method, path, r.text)
    check = PasswordCheck.from_secret(PASSWORD, CHEAP_HASHER)
    deps = replace(lib.deps, settings=replace(lib.deps.settings, password=check))
    with TestClient(create_app(deps), base_url=BASE) as secured:
        for method, path in [
            *STATE_CHANGING,
            ("GET", "/api/people"),
            ("GET", "/api/unknowns"),
            ("GET", "/api/faces/1/crop.jpg"),
        ]:
            r = secured.request(method, path, headers={"Origin": BASE}, **_body(path))
            assert r.status_code == 401, (method, path, r.text)
        for path in ("/people", "/unknowns"):
            assert secured.get(path, follow_redirects=False).headers["location"].startswith("/login?next=")
        login(secured)
        for method, path in STATE_CHANGING:  # a cookie without Origin/Referer, or another site's: refused
            assert secured.request(method, path, **_body(path)).status_code == 403, (method, path)
            assert secured.request(method, path, headers={"Origin": FOREIGN}, **_body(path)).status_code == 403
        assert tree(lib.gallery) == before and lib.library.version == 0
        r = secured.post("/api/people/alice/rename", json={"name": "Alice"}, headers={"Origin": BASE})
        assert r.status_code == 200, r.text
    assert lib.library.matcher.names == ("Alice", "bob")


def test_bearer_tokens_work_on_the_library_routes(lib: Lib) -> None:
    check = PasswordCheck.from_secret(PASSWORD, CHEAP_HASHER)
    deps = replace(lib.deps, settings=replace(lib.deps.settings, password=check))
    with TestClient(create_app(deps), base_url=BASE) as tool:
        token = tool.post("/api/token", data={"password": PASSWORD}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert tool.get("/api/people", headers=auth).status_code == 200
        r = tool.post("/api/people/dave/photos", headers=auth, files=_files(("d.png", photo(LEVELS["dave"]))))
        assert r.status_code == 200 and r.json()["person"]["used"] == 1


# ---------------------------------------------------------------- snapshot links


def test_snapshot_links_serve_checked_names_from_the_snapshots_folder(site: Site, client: TestClient) -> None:
    r = client.get("/snapshots/cam_e0_t1.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == (site.root / "snapshots" / "cam_e0_t1.jpg").read_bytes()
    for path in (
        "/snapshots/..%2Fsecret.jpg",
        "/snapshots/%2E%2E%2Fsecret.jpg",
        "/snapshots/%2Fetc%2Fpasswd",
        "/snapshots//etc/passwd",
        "/snapshots/..%5Csecret.jpg",
        "/snapshots/.hidden.jpg",
        "/snapshots/cam_e0_t1.jpg%00.png",
        f"/snapshots/{site.root / 'secret.jpg'}",
        "/snapshots/nothing.jpg",
    ):
        r = client.get(path)
        assert r.status_code == 404 and b"not for the web" not in r.content, path
    (site.root / "snapshots" / "link.jpg").symlink_to(site.root / "secret.jpg")
    assert client.get("/snapshots/link.jpg").status_code == 404


def test_snapshot_links_need_a_login_with_a_password(site: Site) -> None:
    check = PasswordCheck.from_secret(PASSWORD, CHEAP_HASHER)
    with site.client(password=check) as c:
        r = c.get("/snapshots/cam_e0_t1.jpg", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fsnapshots%2Fcam_e0_t1.jpg"
        token = c.post("/api/token", data={"password": PASSWORD}).json()["token"]
        r = c.get("/snapshots/cam_e0_t1.jpg", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"


# ---------------------------------------------------------------- identify follows the library


def test_the_identify_api_knows_whom_the_library_knows_now(lib: Lib) -> None:
    """``run.py serve``'s identifier is made again from the library's gallery after every change."""
    from stream.commands.identify import StillIdentifier
    from stream.faces.images import decode_bgr
    from stream.web.serve import LibraryIdentifier, _NoGallery

    class Nobody(_NoGallery):
        @property
        def templates(self) -> np.ndarray:
            return np.zeros((0, 16), np.float32)  # the stand-in embedder's dimension

    built: list[tuple[str, ...]] = []

    def still(gallery: Any) -> StillIdentifier:
        gallery = gallery if gallery is not None and gallery.names else Nobody("facenet:casia-webface:fake")
        built.append(tuple(gallery.names))
        return StillIdentifier(models(), gallery, None, 0.05)

    identify = LibraryIdentifier(lib.library, still)
    carol = decode_bgr(photo(LEVELS["carol"], 7))
    assert [f["person"] for f in identify(carol)] == [None]
    assert [f["person"] for f in identify(decode_bgr(photo(LEVELS["alice"], 7)))] == ["alice"]
    assert built == [("alice", "bob")]  # made once while nothing changes
    assert lib.client.post("/api/people/carol/photos", files=_files(("c.png", photo(LEVELS["carol"])))).status_code == 200
    assert [f["person"] for f in identify(carol)] == ["carol"]
    assert built[-1] == ("alice", "bob", "carol")
    for name in ("alice", "bob", "carol"):
        assert lib.client.delete(f"/api/people/{name}").status_code == 200
    assert [f["person"] for f in identify(carol)] == [None] and built[-1] == ()
