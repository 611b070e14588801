"""Negative examples in matching ("not this person", ignored groups) and a new gallery swapped into a
running voter: tracks on screen are re-decided at their next vote."""

from __future__ import annotations

import numpy as np
import pytest

from stream.identity.matcher import Matcher, Negatives
from stream.identity.slot import GallerySlot
from stream.identity.voting import TrackVoter, VotingSettings
from stream.types import Embedding, EventKind, TrackKey

DIM = 8


def unit(*values: float) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[: len(values)] = values
    return (v / np.linalg.norm(v)).astype(np.float32)


ALICE = unit(1)
BOB = unit(0, 1)
LOOKALIKE = unit(1, 0, 0.9)  # cos to ALICE 0.74: above the threshold, a wrong match
ALICE_PROBE = unit(1, 0, -0.3)  # the real Alice, a little off her template (cos 0.96)


def matcher(negatives: Negatives | None = None, names=("alice", "bob"), rows=(ALICE, BOB)) -> Matcher:
    return Matcher(names, np.stack(rows), threshold=0.5, min_margin=0.05, negatives=negatives)


def test_an_impostor_example_stops_the_lookalike_but_not_the_person() -> None:
    plain = matcher()
    assert plain.identify(LOOKALIKE[None])[0][1].person == "alice"  # the deliberately wrong match
    marked = matcher(Negatives(("alice",), LOOKALIKE[None]))
    (match, identity), (probe_match, probe) = marked.identify(np.stack([LOOKALIKE, ALICE_PROBE]))
    assert identity.person is None and match.veto == pytest.approx(1.0)
    assert match.best is not None and match.best[0] == "alice"  # still the best candidate, only vetoed
    assert probe.person == "alice" and probe_match.veto == pytest.approx(float(ALICE_PROBE @ LOOKALIKE))
    assert marked.allows(ALICE_PROBE, "alice") and not marked.allows(LOOKALIKE, "alice")
    assert not marked.allows(ALICE_PROBE, "carol")


def test_impostor_examples_count_only_against_their_person_and_ignored_ones_against_everybody() -> None:
    near_bob = unit(0.2, 1)
    only_alice = matcher(Negatives(("alice",), near_bob[None]))
    assert only_alice.identify(near_bob[None])[0][1].person == "bob"
    assert only_alice.match(near_bob[None])[0].veto is None  # nothing counts against bob
    ignored = matcher(Negatives((None,), near_bob[None]))
    assert ignored.identify(near_bob[None])[0][1].person is None
    assert ignored.identify(ALICE[None])[0][1].person == "alice"  # closer to alice than to the ignored face


def test_examples_of_people_not_in_the_gallery_are_left_out_and_bad_ones_refused() -> None:
    m = matcher(Negatives(("carol", "alice", None), np.stack([ALICE, LOOKALIKE, unit(0, 0, 0, 1)])))
    assert m.negatives.persons == ("alice", None) and len(m.negatives) == 2
    with pytest.raises(ValueError, match="negatives: expected dimension 8"):
        matcher(Negatives(("alice",), np.ones((1, 4), np.float32) / 2))
    with pytest.raises(ValueError, match="Negatives.vectors: rows must be unit-norm"):
        Negatives(("alice",), np.ones((1, DIM), np.float32))
    with pytest.raises(ValueError, match="Negatives.vectors: expected one row per person"):
        Negatives(("alice", "bob"), ALICE[None])
    with pytest.raises(ValueError, match="Negatives.persons"):
        Negatives(("",), ALICE[None])


# ------------------------------------------------------------------ a new gallery in a running voter

KEY = TrackKey("cam", 0, 1)


def feed(voter: TrackVoter, vector: np.ndarray, times: range, norm: float = 20.0) -> list:
    events = []
    for t in times:
        events += voter.add(KEY, Embedding(vector, norm, "m"), float(t))
    return events


def test_an_unknown_track_is_named_at_its_next_vote_once_the_person_is_enrolled() -> None:
    voter = TrackVoter(matcher(names=("bob",), rows=(BOB,)), VotingSettings(min_votes=2))
    assert feed(voter, ALICE_PROBE, range(3)) == []
    voter.set_matcher(matcher())  # alice enrolled
    (event,) = feed(voter, ALICE_PROBE, range(3, 4), norm=1.0)  # even one that does not make the top-k cut
    assert (event.kind, event.person) == (EventKind.IDENTITY_ASSIGNED, "alice")


def test_a_renamed_person_is_renamed_at_the_next_vote_without_hysteresis() -> None:
    voter = TrackVoter(matcher(), VotingSettings(min_votes=2, switch_votes=3))
    (named,) = feed(voter, ALICE_PROBE, range(2))
    assert named.person == "alice"
    voter.set_matcher(matcher(names=("alice smith", "bob")))
    assert voter.identity(KEY).person == "alice"  # nothing changes before the track's next vote
    (event,) = feed(voter, ALICE_PROBE, range(2, 3))
    assert (event.kind, event.person, dict(event.extra)) == (
        EventKind.IDENTITY_CHANGED,
        "alice smith",
        {"previous": "alice", "reason": "gallery", "votes": 3},
    )
    assert feed(voter, ALICE_PROBE, range(3, 6)) == []


def test_a_vetoed_or_deleted_name_is_taken_back_and_a_fair_one_stays() -> None:
    voter = TrackVoter(matcher(), VotingSettings(min_votes=2))
    (wrong,) = feed(voter, LOOKALIKE, range(2))
    assert wrong.person == "alice"
    voter.set_matcher(matcher())  # a new gallery that changes nothing for this track
    assert feed(voter, LOOKALIKE, range(2, 3)) == []
    voter.set_matcher(matcher(Negatives(("alice",), LOOKALIKE[None])))  # "not this person"
    (event,) = feed(voter, LOOKALIKE, range(3, 4))
    assert (event.kind, event.person, dict(event.extra)["previous"]) == (EventKind.IDENTITY_CHANGED, None, "alice")
    assert voter.identity(KEY).person is None and feed(voter, LOOKALIKE, range(4, 8)) == []

    other = TrackVoter(matcher(), VotingSettings(min_votes=2))
    feed(other, ALICE_PROBE, range(2))
    other.set_matcher(Matcher((), np.zeros((0, DIM), np.float32), 0.5, 0.05))  # everybody deleted
    (gone,) = other.add(KEY, Embedding(ALICE_PROBE, 20.0, "m"), 3.0)
    assert (gone.kind, gone.person) == (EventKind.IDENTITY_CHANGED, None)


def test_the_slot_hands_over_a_matcher_and_counts_versions() -> None:
    first, second = matcher(), matcher(names=("a", "b"))
    slot = GallerySlot(first)
    assert slot.current() == (first, 0)
    assert slot.publish(second) == 1 and slot.matcher is second and slot.version == 1
    with pytest.raises(TypeError, match="expected a Matcher"):
        slot.publish("alice")  # type: ignore[arg-type]
