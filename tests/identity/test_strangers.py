"""Stranger IDs: an unknown person keeps one unknown-N label within a run, across their tracks."""

from __future__ import annotations

import numpy as np
import pytest

from stream.identity.matcher import Matcher
from stream.identity.strangers import StrangerBook, StrangerSettings
from stream.identity.voting import TrackVoter, VotingSettings
from stream.types import Embedding, EventKind, TrackKey

DIM = 64


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture
def faces():
    """Three people's true directions and a noisy-embedding maker."""
    rng = np.random.default_rng(3)
    people = {name: unit(rng.normal(size=DIM)) for name in ("alice", "stan", "ursula")}

    def emb(person: str, noise: float = 0.08, norm: float = 20.0) -> Embedding:
        return Embedding(unit(people[person] + rng.normal(scale=noise, size=DIM)), norm, "test")

    return people, emb


def key(track_id: int, stream: str = "cam", epoch: int = 0) -> TrackKey:
    return TrackKey(stream, epoch, track_id)


def test_book_reuses_a_free_matching_stranger_and_makes_new_ones_otherwise(faces) -> None:
    people, _ = faces
    book = StrangerBook(StrangerSettings(threshold=0.5))
    assert book.claim(key(1), people["stan"], 40.0) == "unknown-1"
    assert book.claim(key(2), people["stan"], 40.0) == "unknown-2"  # unknown-1 is held by a running track
    book.release("unknown-1", key(1))
    assert book.claim(key(3), people["ursula"], 40.0) == "unknown-3"  # nobody free looks like her
    assert book.claim(key(4), people["stan"], 40.0) == "unknown-1"  # stan is back: the free, matching label
    assert len(book) == 3


def test_book_forgets_a_stranger_that_turned_out_to_be_known(faces) -> None:
    people, _ = faces
    book = StrangerBook(StrangerSettings(threshold=0.5))
    assert book.claim(key(1), people["alice"], 40.0) == "unknown-1"
    book.forget("unknown-1", key(1))
    assert len(book) == 0
    assert book.claim(key(2), people["stan"], 40.0) == "unknown-2"  # labels are never reused for someone else


def test_book_memory_is_bounded_least_recently_seen_first() -> None:
    book = StrangerBook(StrangerSettings(threshold=0.99, max_strangers=2))
    rng = np.random.default_rng(0)
    for i in range(5):
        label = book.claim(key(i), unit(rng.normal(size=DIM)), 10.0)
        book.release(label, key(i))
    assert len(book) == 2
    with pytest.raises(ValueError, match="StrangerSettings.threshold"):
        StrangerSettings(threshold=1.5)


def test_voter_labels_an_unknown_track_and_the_same_person_when_they_return(faces) -> None:
    _, emb = faces
    empty = Matcher((), np.zeros((0, DIM), np.float32), threshold=0.5, min_margin=0.05)
    voter = TrackVoter(empty, VotingSettings(min_votes=2), StrangerBook(StrangerSettings(threshold=0.5)))
    assert voter.add(key(1), emb("stan"), 0.0) == []  # one embedding is not enough evidence
    (event,) = voter.add(key(1), emb("stan"), 0.2)
    assert (event.kind, event.stranger, event.person, event.track) == (
        EventKind.STRANGER_ASSIGNED,
        "unknown-1",
        None,
        key(1),
    )
    assert voter.add(key(1), emb("stan"), 0.4) == []  # assigned once
    assert voter.end(key(1)).stranger == "unknown-1"

    other = [e for t in (0.0, 0.2) for e in voter.add(key(2), emb("ursula"), 10 + t)]
    assert [e.stranger for e in other] == ["unknown-2"]
    back = [e for t in (0.0, 0.2) for e in voter.add(key(3, epoch=1), emb("stan"), 20 + t)]
    assert [e.stranger for e in back] == ["unknown-1"]
    assert voter.identity(key(3, epoch=1)).stranger == "unknown-1"


def test_a_named_track_gets_no_stranger_label_and_gives_back_an_early_one(faces) -> None:
    people, emb = faces
    gallery = Matcher(("alice",), people["alice"][None, :], threshold=0.5, min_margin=0.05)
    book = StrangerBook(StrangerSettings(threshold=0.5))
    voter = TrackVoter(gallery, VotingSettings(min_votes=2), book)
    events = [e for t in (0.0, 0.2) for e in voter.add(key(1), emb("alice"), t)]
    assert [e.kind for e in events] == [EventKind.IDENTITY_ASSIGNED]
    assert voter.identity(key(1)).stranger is None and len(book) == 0

    # min_votes 3: a stranger label comes first (2 embeddings), the name later (3): the label is dropped
    voter = TrackVoter(gallery, VotingSettings(min_votes=3), book)
    kinds = [e.kind for t in (0.0, 0.2, 0.4) for e in voter.add(key(2), emb("alice"), t)]
    assert kinds == [EventKind.STRANGER_ASSIGNED, EventKind.IDENTITY_ASSIGNED]
    assert voter.identity(key(2)).stranger is None and len(book) == 0


def test_no_book_no_labels(faces) -> None:
    _, emb = faces
    empty = Matcher((), np.zeros((0, DIM), np.float32), threshold=0.5, min_margin=0.05)
    voter = TrackVoter(empty, VotingSettings(min_votes=2))
    assert [voter.add(key(1), emb("stan"), t) for t in (0.0, 0.2)] == [[], []]
    assert voter.identity(key(1)).stranger is None


def test_a_returning_track_first_judged_new_moves_to_the_earlier_label_when_evidence_grows(faces) -> None:
    people, emb = faces
    empty = Matcher((), np.zeros((0, DIM), np.float32), threshold=0.5, min_margin=0.05)
    book = StrangerBook(StrangerSettings(threshold=0.5))
    voter = TrackVoter(empty, VotingSettings(min_votes=2, top_k=5), book)
    for t in (0.0, 0.2, 0.4):
        voter.add(key(1), emb("stan"), t)
    voter.end(key(1))
    rng = np.random.default_rng(9)
    blurry = [Embedding(unit(people["stan"] + rng.normal(scale=0.5, size=DIM)), 1.0, "test") for _ in range(2)]
    first = [e for i, b in enumerate(blurry) for e in voter.add(key(2), b, 10 + i * 0.2)]
    assert [e.stranger for e in first] == ["unknown-2"]  # two poor crops: looks new
    later = [e for i in range(4) for e in voter.add(key(2), emb("stan", norm=30.0), 11 + i * 0.2)]
    assert [(e.kind, e.stranger, dict(e.extra).get("previous")) for e in later] == [
        (EventKind.STRANGER_ASSIGNED, "unknown-1", "unknown-2")
    ]
    assert len(book) == 1  # unknown-2 was this track's alone: dropped
