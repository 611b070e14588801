"""The library with stand-in models (fast): people and photos, uploads, deletes and renames with bad
input (clear errors, gallery untouched), live publication, unknowns grouped and named, ignored,
merged and split, "not this person", re-matching the past.

The stand-ins: ``OneFaceDetector`` finds one face in the middle of any image, ``LevelEmbedder`` embeds
a crop as the vector of its mean grey level (rounded to 10). A "photo of Alice" is grey level 100
with noise (sharp for the blur gate), Bob is 150, Carol 200.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stream.config import AppConfig
from stream.faces.models import Models
from stream.identity.library import Library, ReviewSettings
from stream.identity.photos import BadInput, Conflict, NotFound, PhotoLimits, Upload, person_name, photo_file_name
from stream.store import EventRecord, FaceRecord, RunRecord, Store, TrackRecord, open_store
from tests.fakes import CountingEmbedder, LevelEmbedder, OneFaceDetector

T0 = 1_796_092_710.0
DIM = 16
LEVELS = {"alice": 100, "bob": 150, "carol": 200, "dave": 60}


def _vector(level: int) -> np.ndarray:
    v = np.random.default_rng(level).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


VECTORS = {level: _vector(level) for level in LEVELS.values()}


def photo(level: int, seed: int = 0, size: int = 160, fmt: str = "PNG") -> bytes:
    """A sharp grey photo whose crops embed as ``VECTORS[level]``."""
    noise = np.random.default_rng(seed).integers(-25, 26, (size, size, 3))
    image = np.clip(level + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(image).save(out, format=fmt)
    return out.getvalue()


def models(embedder: LevelEmbedder | CountingEmbedder | None = None) -> Models:
    return Models(OneFaceDetector(), embedder or LevelEmbedder(VECTORS), batch_size=8)


def tree(folder: Path) -> dict[str, str]:
    """Every file under the folder (the enrolment cache aside) and a hash of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    folder = tmp_path / "gallery"
    for i in range(2):
        (folder / "alice").mkdir(parents=True, exist_ok=True)
        (folder / "alice" / f"a{i}.png").write_bytes(photo(LEVELS["alice"], i))
    (folder / "bob").mkdir()
    (folder / "bob" / "b0.png").write_bytes(photo(LEVELS["bob"]))
    (folder / "bob" / "notes.txt").write_text("not a photo\n")
    return folder


def make_library(gallery: Path, store_path: Path | None = None, **kwargs: object) -> Library:
    store = (lambda: open_store(store_path)) if store_path is not None else None
    library = Library(gallery, AppConfig(), models=kwargs.pop("models", None) or models(), store=store, **kwargs)  # type: ignore[arg-type]
    library.load()
    return library


# ------------------------------------------------------------------ people


def test_people_show_every_photo_with_its_status_and_the_template_quality(gallery: Path) -> None:
    library = make_library(gallery)
    view = library.people().to_dict()
    assert view["version"] == 0 and view["model_id"] == "facenet:casia-webface:fake"
    alice, bob = view["people"]
    assert (alice["name"], alice["enrolled"], alice["used"], alice["rejected"]) == ("alice", True, 2, 0)
    assert alice["quality"] == 20.0 and alice["photos"][0]["face_px"] == 96.0 and alice["photos"][0]["blur"] > 150
    assert [(p["file"], p["status"], p["reason"]) for p in bob["photos"]] == [
        ("b0.png", "used", None),
        ("notes.txt", "rejected", "not an image file (.txt)"),
    ]
    assert library.matcher.names == ("alice", "bob")
    assert library.photo_path("alice", "a0.png") == gallery / "alice" / "a0.png"


def test_uploading_several_photos_adds_a_person_and_publishes_a_new_matcher(gallery: Path) -> None:
    library = make_library(gallery)
    change = library.add_photos(
        "Carol",
        [Upload("../../etc/carol 1.png", photo(200, 1)), Upload("C:\\x\\carol 1.PNG", photo(200, 2, fmt="JPEG"))],
    )
    assert change.files == ("carol_1.png", "carol_1.jpg")  # names from the letters of the originals, no paths
    assert sorted(p.name for p in (gallery / "Carol").iterdir()) == ["carol_1.jpg", "carol_1.png"]
    assert change.version == 1 == library.version and library.matcher.names == ("Carol", "alice", "bob")
    assert change.person is not None and change.person.used == 2
    again = library.add_photos("Carol", [Upload("carol 1.png", photo(200, 3))])
    assert again.files == ("carol_1-2.png",) and again.version == 2


@pytest.mark.parametrize(
    ("person", "upload", "error", "message"),
    [
        ("carol", Upload("x.png", b""), BadInput, "'x.png': the file is empty"),
        ("carol", Upload("x.png", b"GIF89a not really"), BadInput, "not an image"),
        ("carol", Upload("x.png", b"hello, I am text\n" * 10), BadInput, "not an image"),
        ("carol", Upload("x.gif", b"GIF89a" + b"\0" * 200), BadInput, "'x.gif'"),
        ("carol", Upload("huge.png", b"\0" * 150_000), BadInput, "too large (150,000 bytes; at most 100,000)"),
        ("carol", Upload("tiny.png", photo(200, size=20)), BadInput, "too small (20x20; at least 40 px)"),
        ("carol", Upload("cut.png", photo(200)[:300]), BadInput, "cannot be decoded"),
        ("", Upload("x.png", photo(200)), BadInput, "person: the name is empty"),
        ("../alice", Upload("x.png", photo(200)), BadInput, "may not contain /"),
        ("a/b", Upload("x.png", photo(200)), BadInput, "may not contain /"),
        ("..", Upload("x.png", photo(200)), BadInput, "may not start or end with a dot"),
        (".hidden", Upload("x.png", photo(200)), BadInput, "may not start or end with a dot"),
        ("bob\x00", Upload("x.png", photo(200)), BadInput, "control or invisible characters"),
        ("x" * 65, Upload("x.png", photo(200)), BadInput, "longer than 64"),
        ("ALICE", Upload("x.png", photo(200)), Conflict, "person 'alice' already exists"),
    ],
)
def test_bad_uploads_are_refused_with_a_clear_error_and_the_gallery_untouched(
    gallery: Path, person: str, upload: Upload, error: type[Exception], message: str
) -> None:
    library = make_library(gallery, limits=PhotoLimits(max_bytes=100_000))
    before = tree(gallery)
    with pytest.raises(error, match=_escape(message)):
        library.add_photos(person, [Upload("good.png", photo(200)), upload])  # one bad file refuses all
    assert tree(gallery) == before and library.version == 0


def test_more_files_than_allowed_or_none_are_refused(gallery: Path) -> None:
    library = make_library(gallery, limits=PhotoLimits(max_files=2))
    before = tree(gallery)
    with pytest.raises(BadInput, match="too many photos at once \\(3; at most 2\\)"):
        library.add_photos("carol", [Upload(f"{i}.png", photo(200, i)) for i in range(3)])
    with pytest.raises(BadInput, match="no photos to add"):
        library.add_photos("carol", [])
    assert tree(gallery) == before


def test_deleting_a_photo_or_a_person_needs_one_that_is_there(gallery: Path) -> None:
    library = make_library(gallery)
    before = tree(gallery)
    for person, file, message in [
        ("alice", "a9.png", "no photo 'a9.png' of 'alice'"),
        ("alice", "../bob/b0.png", "no photo '../bob/b0.png' of 'alice'"),
        ("alice", "/etc/passwd", "no photo"),
        ("nobody", "a0.png", "no person 'nobody'"),
        ("..", "gallery/alice/a0.png", "no person '..'"),
    ]:
        with pytest.raises(NotFound, match=_escape(message)):
            library.delete_photo(person, file)
    for person in ("nobody", "../gallery", ".cache", ""):
        with pytest.raises((NotFound, BadInput)):
            library.delete_person(person)
    assert tree(gallery) == before and library.version == 0

    change = library.delete_photo("alice", "a1.png")
    assert change.files == ("a1.png",) and not (gallery / "alice" / "a1.png").exists()
    assert change.person is not None and change.person.used == 1 and change.version == 1
    gone = library.delete_person("bob")
    assert gone.person is None and set(gone.files) == {"b0.png", "notes.txt"}
    assert not (gallery / "bob").exists() and library.matcher.names == ("alice",)


def test_renaming_moves_the_folder_keeps_the_cache_and_refuses_bad_names(gallery: Path) -> None:
    embedder = CountingEmbedder(LevelEmbedder(VECTORS))
    library = make_library(gallery, models=models(embedder))
    before = tree(gallery)
    for new, error, message in [
        ("bob", Conflict, "person 'bob' already exists"),
        ("BOB", Conflict, "person 'bob' already exists"),
        ("alice", BadInput, "already the person's name"),
        ("x/y", BadInput, "may not contain /"),
        ("  ", BadInput, "the name is empty"),
        (".", BadInput, "start or end with a dot"),
    ]:
        with pytest.raises(error, match=_escape(message)):
            library.rename_person("alice", new)
    with pytest.raises(NotFound, match="no person 'zoe'"):
        library.rename_person("zoe", "zed")
    assert tree(gallery) == before and library.version == 0

    embedder.reset()
    change = library.rename_person("alice", "Alice Liddell")
    assert change.previous == "alice" and change.person is not None and change.person.name == "Alice Liddell"
    assert (gallery / "Alice Liddell" / "a0.png").is_file() and not (gallery / "alice").exists()
    assert library.matcher.names == ("Alice Liddell", "bob") and embedder.crops == 0  # nothing embedded again
    assert library.rename_person("Alice Liddell", "alice liddell").person is not None  # a change of case


def test_sync_picks_up_hand_edits_and_nothing_else(gallery: Path) -> None:
    library = make_library(gallery)
    assert library.sync() is False and library.version == 0
    (gallery / "dave").mkdir()
    (gallery / "dave" / "d.png").write_bytes(photo(LEVELS["dave"]))
    assert library.sync() is True and library.matcher.names == ("alice", "bob", "dave") and library.version == 1
    assert library.sync() is False


def test_names_and_file_names() -> None:
    assert person_name("  Zoë Ångström ") == "Zoë Ångström"
    assert photo_file_name("..\\..\\a b.c.JPG", ".jpg", set()) == "a_b_c.jpg"
    assert photo_file_name("///", ".png", {"photo.png", "PHOTO-2.png"}) == "photo-3.png"
    assert photo_file_name(".bashrc", ".png", set()) == "bashrc.png"


def _escape(text: str) -> str:
    import re

    return re.escape(text)


# ------------------------------------------------------------------ unknowns, negatives, the past


def crop(level: int, seed: int) -> bytes:
    noise = np.random.default_rng(seed).integers(-25, 26, (112, 112, 3))
    ok, data = cv2.imencode(".jpg", np.clip(level + noise, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def record_run(store: Store, people: list[tuple[str, str | None, float]], start: float = T0) -> RunRecord:
    """One run: a track per (who it really is, who the run named, face px), each with its events,
    track row and face (the template of the person it really is)."""
    run = RunRecord.new(started=start)
    store.begin_run(run)
    for i, (truth, named, face_px) in enumerate(people, 1):
        t = start + 10 * i
        kinds = [("track_started", None)]
        kinds += [("identity_assigned", named)] if named else [("stranger_assigned", None)]
        kinds += [("track_ended", named)]
        store.add_events(
            [
                EventRecord(run.run_id, t + k, float(k), "cam", kind, 0, i, person, 0.8 if person else None)
                for k, (kind, person) in enumerate(kinds)
            ]
        )
        store.add_track(TrackRecord(run.run_id, "cam", 0, i, t, t + 2, person=named))
        level = LEVELS[truth]
        store.add_face(
            FaceRecord(
                run.run_id,
                "cam",
                0,
                i,
                t,
                t + 2,
                "facenet:casia-webface:fake",
                20.0,
                VECTORS[level],
                crop(level, i),
                person=named,
                face_px=face_px,
                blur=400.0,
            )
        )
    assert store.flush()
    return run


@pytest.fixture
def reviewed(gallery: Path, tmp_path: Path) -> tuple[Library, Store]:
    """A store with 3 unknown tracks of carol (one too small to offer), 2 of dave, 1 of bob named bob."""
    path = tmp_path / "events.db"
    with open_store(path) as store:
        people = [("carol", None, 80.0), ("dave", None, 90.0), ("carol", None, 70.0)]
        people += [("carol", None, 30.0), ("bob", "bob", 90.0), ("dave", None, 60.0)]
        record_run(store, people)
    library = make_library(gallery, path, settings=ReviewSettings(crops_per_group=2))
    return library, open_store(path, create=False)


def test_unknowns_are_grouped_by_person_with_their_best_gated_crops(reviewed: tuple[Library, Store]) -> None:
    library, store = reviewed
    view = library.unknowns()
    groups = {len(g.faces): g for g in view.groups}
    assert sorted(groups) == [2, 3] and view.faces == 5 and view.hidden == 0 and not view.limited
    carol = groups[3].to_dict()
    faces = [f.face_id for f in store.faces() if f.person is None]
    assert carol["id"] == faces[0] and carol["count"] == 3 and carol["offered"] == 2 and carol["streams"] == ["cam"]
    assert [c["face_px"] for c in carol["crops"]] == [80.0, 70.0]  # the 30 px face is never offered
    assert carol["first_seen"] == "2026-12-01T02:38:40.000Z" and carol["last_seen"] == "2026-12-01T02:39:12.000Z"
    assert [g.id for g in library.unknowns(since=T0 + 55).groups] == [groups[2].id]  # dave was seen last
    assert library.face_crop(carol["crops"][0]["face_id"]).startswith(b"\xff\xd8")
    with pytest.raises(NotFound, match="no stored face"):
        library.face_crop(10**6)


def test_naming_a_group_relabels_it_fills_the_gallery_and_names_the_person_live(
    reviewed: tuple[Library, Store], gallery: Path
) -> None:
    library, store = reviewed
    carol = max(library.unknowns().groups, key=lambda g: g.count)
    before = tree(gallery)
    with pytest.raises(BadInput, match="may not contain /"):
        library.name_group(carol.id, "../carol")
    with pytest.raises(Conflict, match="person 'bob' already exists"):
        library.name_group(carol.id, "Bob")
    with pytest.raises(NotFound, match="no group 999"):
        library.name_group(999, "carol")
    assert tree(gallery) == before and library.version == 0

    naming = library.name_group(carol.id, "carol")
    assert naming.faces == 3 and naming.relabelled.faces == 3 and naming.relabelled.events == 6
    assert sorted(p.file for p in naming.photos) == [f"unknown-{i}.jpg" for i in sorted(carol.faces)[:2]]
    assert all(p.status == "used" for p in naming.photos) and naming.person.enrolled
    assert library.matcher.names == ("alice", "bob", "carol") and naming.version == 1
    assert library.matcher.identify(VECTORS[LEVELS["carol"]][None])[0][1].person == "carol"
    named = {e.track_id: e.person for e in store.events() if e.kind == "track_ended"}
    assert [named[i] for i in (1, 3, 4)] == ["carol"] * 3 and named[2] is None
    assert [g.count for g in library.unknowns().groups] == [2]  # carol's group is gone


def test_ignoring_merging_and_removing_faces(reviewed: tuple[Library, Store]) -> None:
    library, _store = reviewed
    dave = min(library.unknowns().groups, key=lambda g: g.count)
    carol = max(library.unknowns().groups, key=lambda g: g.count)
    merged = library.merge_groups(carol.id, dave.id)
    assert merged.id == min(carol.id, dave.id) and merged.count == 5 and len(library.unknowns().groups) == 1
    rest = library.remove_face(merged.id, dave.faces[0])
    assert rest is not None and rest.count == 4
    assert sorted(g.count for g in library.unknowns().groups) == [1, 4]
    with pytest.raises(NotFound, match="is not in group"):
        library.remove_face(merged.id, dave.faces[0])
    with pytest.raises(BadInput, match="with itself"):
        library.merge_groups(merged.id, merged.id)

    ignoring = library.ignore_group(merged.id)
    assert ignoring.faces == 4 and ignoring.examples == 4 and ignoring.version == 1
    assert len(library.matcher.negatives) == 4
    view = library.unknowns()
    assert [g.count for g in view.groups] == [] and view.hidden == 1  # the lone dave looks like the ignored ones
    (ignored,) = library.ignored_groups()
    assert (ignored.id, ignored.faces, ignored.examples) == (merged.id, 4, 4)
    assert library.unignore_group(merged.id).faces == 4 and library.ignored_groups() == ()
    assert len(library.matcher.negatives) == 0 and sum(g.count for g in library.unknowns().groups) == 5
    with pytest.raises(NotFound, match="no ignored group"):
        library.unignore_group(merged.id)


def test_not_this_person_keeps_an_impostor_example_and_unnames_the_track(gallery: Path, tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with open_store(path) as store:
        run = record_run(store, [("dave", "alice", 90.0)])  # dave wrongly named alice
    library = make_library(gallery, path)
    with open_store(path, create=False) as store:
        events = {e.kind: e for e in store.events()}
        with pytest.raises(BadInput, match="names nobody"):
            library.not_this_person(events["track_started"].id)
        with pytest.raises(NotFound, match="no event 999"):
            library.not_this_person(999)
        correction = library.not_this_person(events["identity_assigned"].id)
        assert (correction.person, correction.track_id, correction.version) == ("alice", 1, 1)
        assert correction.relabelled.negatives == 1 and correction.relabelled.events == 2
        assert library.people().people[0].impostors == 1
        assert library.matcher.identify(VECTORS[LEVELS["dave"]][None])[0][1].person is None
        assert library.matcher.identify(VECTORS[LEVELS["alice"]][None])[0][1].person == "alice"
        assert {t.person for t in store.tracks(run.run_id)} == {None}
        with pytest.raises(BadInput, match="names nobody"):  # twice: the event says unknown now
            library.not_this_person(events["identity_assigned"].id)
        assert len(store.negatives()) == 1


def test_rematch_relabels_the_past_against_the_current_gallery(reviewed: tuple[Library, Store]) -> None:
    library, store = reviewed
    library.add_photos("dave", [Upload("d.png", photo(LEVELS["dave"]))])
    dry = library.rematch(apply=False)
    assert dry.checked == 6 and [(c.before, c.after) for c in dry.changes] == [(None, "dave")] * 2
    assert not dry.applied and {f.person for f in store.faces()} == {None, "bob"}
    report = library.rematch()
    assert report.relabelled.faces == 2 and {f.person for f in store.faces()} == {None, "bob", "dave"}
    assert report.to_dict()["changes"][0]["after"] == "dave"
    assert library.rematch().changes == ()  # nothing left to change
    library.delete_person("bob")
    changed = library.rematch(since=T0)
    assert [(c.before, c.after) for c in changed.changes] == [("bob", None)]


def test_the_unknowns_need_the_store(gallery: Path) -> None:
    library = make_library(gallery)
    with pytest.raises(Exception, match="the event store is off"):
        library.unknowns()
