"""The store's review side: face size and blur, filtered face queries, relabelling faces with their
tracks and events, renaming a person everywhere, ignoring, pins, detaching, negative examples; on
SQLite and PostgreSQL. And the output stage filling face_px and blur."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream.pipeline.messages import TrackFace
from stream.pipeline.recording import EventRecorder
from stream.store import NegativeRecord, RelabelCounts, RunRecord, Store, open_store
from stream.types import Event, EventKind, TrackKey
from tests.store.conftest import T0, event, face, run_record, track, unit


def _two_tracks(store: Store) -> RunRecord:
    """Track 1: unknown (stranger unknown-1); track 2: named Alice. Each with its events, row and face."""
    run = run_record()
    store.begin_run(run)
    store.add_events(
        [
            event(run, T0, "track_started", track_id=1),
            event(run, T0 + 0.5, "stranger_assigned", track_id=1, stranger="unknown-1"),
            event(run, T0 + 2, "track_ended", track_id=1, stranger="unknown-1"),
            event(run, T0, "track_started", track_id=2),
            event(run, T0 + 0.4, "identity_assigned", track_id=2, person="Alice", score=0.7, extra={"votes": 2}),
            event(run, T0 + 2, "track_ended", track_id=2, person="Alice", score=0.7),
        ]
    )
    store.add_track(track(run, 1, T0, stranger="unknown-1"))
    store.add_track(track(run, 2, T0, person="Alice", score=0.7))
    store.add_face(face(run, 1, np.arange(1, 9), T0, stranger="unknown-1", face_px=64.5, blur=120.0))
    store.add_face(face(run, 2, np.arange(8, 0, -1), T0, person="Alice", score=0.7))
    assert store.flush()
    return run


def test_faces_keep_size_and_blur_and_filter_by_model_time_name_and_ignored(store: Store) -> None:
    run = _two_tracks(store)
    store.add_face(face(run, 3, np.ones(8), T0 + 100, model_id="other"))
    assert store.flush()
    one, two, three = store.faces()
    assert (one.face_px, one.blur, two.face_px, two.blur) == (64.5, 120.0, None, None)
    assert (one.ignored, one.pin, one.detached, one.label_source) == (None, None, False, None)
    assert [f.face_id for f in store.faces(model_id="test-model")] == [one.face_id, two.face_id]
    assert [f.face_id for f in store.faces(unnamed=True)] == [one.face_id, three.face_id]
    assert [f.face_id for f in store.faces(since=T0 + 50)] == [three.face_id]
    assert [f.face_id for f in store.faces(newest=2)] == [two.face_id, three.face_id]
    assert store.ignore_faces([one.face_id], 7) == 1
    assert [f.face_id for f in store.faces(ignored=False, unnamed=True)] == [three.face_id]
    assert [f.ignored for f in store.faces(ignored=True)] == [7]
    assert [f.face_id for f in store.faces_by_id([three.face_id, 10**9, one.face_id])] == [one.face_id, three.face_id]
    assert [f.face_id for f in store.track_faces(run.run_id, "front", 0, 2)] == [two.face_id]


def test_naming_relabels_the_faces_tracks_and_identity_events(store: Store) -> None:
    run = _two_tracks(store)
    unknown = store.faces(unnamed=True)[0]
    counts = store.relabel_faces([unknown.face_id], "Bob", source="user", at=T0 + 60)
    assert counts == RelabelCounts(faces=1, tracks=1, events=2)
    (named,) = [f for f in store.faces() if f.face_id == unknown.face_id]
    assert (named.person, named.label_source) == ("Bob", "user")
    rows = {t.track_id: t.person for t in store.tracks(run.run_id)}
    assert rows == {1: "Bob", 2: "Alice"}
    events = [e for e in store.events() if e.track_id == 1]
    by_kind = {e.kind: e for e in events}
    assert by_kind["track_started"].person is None  # says nothing about who it was
    for kind in ("stranger_assigned", "track_ended"):
        assert by_kind[kind].person == "Bob"
        assert {k: by_kind[kind].extra[k] for k in ("relabelled_from", "relabelled_by", "relabelled_at")} == {
            "relabelled_from": None,
            "relabelled_by": "user",
            "relabelled_at": "2026-12-01T02:39:30.440Z",
        }
    assert store.relabel_faces([unknown.face_id], "Bob", source="user", at=T0) == RelabelCounts()  # already so


def test_not_this_person_unnames_only_what_said_that_person_and_stores_the_example(store: Store) -> None:
    run = _two_tracks(store)
    alice = next(f for f in store.faces() if f.person == "Alice")
    example = NegativeRecord(
        "impostor", "Alice", alice.model_id, alice.norm, alice.embedding, T0, face_id=alice.face_id
    )
    counts = store.relabel_faces([alice.face_id], None, source="user", at=T0 + 60, negatives=[example])
    assert counts == RelabelCounts(faces=1, tracks=1, events=2, negatives=1)
    events = {e.kind: e for e in store.events() if e.track_id == 2}
    assert events["identity_assigned"].person is None and events["identity_assigned"].extra["votes"] == 2
    assert events["identity_assigned"].extra["relabelled_from"] == "Alice"
    assert {t.track_id: t.person for t in store.tracks(run.run_id)} == {1: None, 2: None}
    (stored,) = store.negatives("test-model")
    assert (stored.kind, stored.person, stored.face_id, stored.created) == ("impostor", "Alice", alice.face_id, T0)
    assert np.array_equal(stored.embedding, alice.embedding)
    assert store.negatives("other") == [] and store.negatives_stamp("test-model") == (1, stored.id)


def test_renaming_a_person_changes_faces_tracks_events_and_examples(store: Store) -> None:
    _two_tracks(store)
    alice = next(f for f in store.faces() if f.person == "Alice")
    store.add_negatives([NegativeRecord("impostor", "Alice", "test-model", 1.0, unit(np.ones(8)), T0)])
    assert store.rename_person("Alice", "Alice B") == RelabelCounts(faces=1, tracks=1, events=2, negatives=1)
    assert store.face(alice.face_id).person == "Alice B"  # type: ignore[union-attr]
    assert {e.person for e in store.events()} == {None, "Alice B"}
    assert store.negatives()[0].person == "Alice B"
    assert store.delete_negatives(person="Alice B") == 1 and store.negatives() == []


def test_ignoring_pins_and_detaching(store: Store) -> None:
    run = _two_tracks(store)
    for i in (3, 4):
        store.add_face(face(run, i, np.arange(1, 9) + i, T0 + i))
    assert store.flush()
    ids = [f.face_id for f in store.faces()]
    examples = [
        NegativeRecord("ignored", None, "test-model", 2.0, unit(np.ones(8)), T0, face_id=ids[2], group_id=ids[2])
    ]
    assert store.ignore_faces(ids[2:], ids[2], examples) == 2
    assert store.unignore(ids[2]) == (2, 1) and store.faces(ignored=True) == [] and store.negatives() == []
    assert store.pin_faces(ids[:2], ids[0]) == 2
    assert [f.pin for f in store.faces()] == [ids[0], ids[0], None, None]
    assert store.detach_faces([ids[1]]) == 1
    row = store.face(ids[1])
    assert row is not None and (row.detached, row.pin) == (True, None)
    assert store.pin_faces([ids[1]], ids[0]) == 1
    row = store.face(ids[1])
    assert row is not None and (row.detached, row.pin) == (False, ids[0])


def test_negative_records_check_their_fields() -> None:
    v = unit(np.ones(4))
    with pytest.raises(ValueError, match="NegativeRecord.kind"):
        NegativeRecord("maybe", None, "m", 1.0, v, T0)
    with pytest.raises(ValueError, match="NegativeRecord.person"):
        NegativeRecord("impostor", None, "m", 1.0, v, T0)
    with pytest.raises(ValueError, match="NegativeRecord.person"):
        NegativeRecord("ignored", "Alice", "m", 1.0, v, T0)
    with pytest.raises(ValueError, match="NegativeRecord.embedding"):
        NegativeRecord("ignored", None, "m", 1.0, v * 3, T0)


def test_relabelling_names_who_did_it(store: Store) -> None:
    with pytest.raises(ValueError, match="relabel_faces.source"):
        store.relabel_faces([1], None, source="robot", at=T0)
    with pytest.raises(ValueError, match="delete_negatives"):
        store.delete_negatives()


def test_the_output_stage_stores_the_face_size_and_the_crop_blur(tmp_path: Path) -> None:
    recorder = EventRecorder(RunRecord.new(started=T0), store=open_store(tmp_path / "events.db"))
    key = TrackKey("cam", 0, 1)
    recorder.events([Event.of_track(0.0, EventKind.TRACK_STARTED, key).at(T0)])
    recorder.events([Event.of_track(2.0, EventKind.TRACK_ENDED, key).at(T0 + 2)])
    crop = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    sharp = TrackFace(key, unit(np.ones(8)), 20.0, "m", crop, None, "unknown-1", 57.5)
    recorder.faces([sharp])
    recorder.close(T0 + 3)
    with open_store(tmp_path / "events.db", create=False) as store:
        (row,) = store.faces()
    from stream.identity.quality import blur_score

    assert row.face_px == 57.5 and row.blur == pytest.approx(blur_score(crop))


def test_a_store_made_before_schema_2_was_final_is_completed_by_a_writer(store_url: str) -> None:
    """A schema-2 store without the faces' size, blur and review columns and the negatives table (as
    written before they existed): a reader leaves it alone; a writer adds them, keeping every row."""
    from tests.store.test_store import _execute, columns

    with open_store(store_url) as s:
        _two_tracks(s)
    for column in ("face_px", "blur", "ignored", "pin", "detached", "label_source"):
        _execute(store_url, f"ALTER TABLE faces DROP COLUMN {column}")
    _execute(store_url, "DROP TABLE negatives")
    assert "face_px" not in [c for c, _ in columns(store_url, "faces")]
    with open_store(store_url, create=False) as reader:
        assert len(reader.events()) == 6
    assert "face_px" not in [c for c, _ in columns(store_url, "faces")]
    with open_store(store_url) as writer:
        assert [f.face_px for f in writer.faces()] == [None, None] and writer.negatives() == []
        run = run_record()
        writer.begin_run(run)
        writer.add_face(face(run, 9, np.ones(8), T0, face_px=50.0, blur=99.0))
        assert writer.flush() and writer.faces()[-1].face_px == 50.0
    assert [c for c, _ in columns(store_url, "faces")][-6:] == [
        "face_px",
        "blur",
        "ignored",
        "pin",
        "detached",
        "label_source",
    ]
