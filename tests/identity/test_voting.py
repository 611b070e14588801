"""Per-track voting: evidence before naming, hysteresis before renaming, ties and junk ignored."""

from __future__ import annotations

import numpy as np
import pytest

from stream.identity.matcher import Matcher
from stream.identity.voting import TrackVoter, VotingSettings
from stream.types import Embedding, EventKind, TrackKey
from tests.fakes import FakeRecognition

DIM = 64
NAMES = ("alice", "bob", "carol")
TRACK = TrackKey("cam", 0, 5)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture
def world():
    rng = np.random.default_rng(42)
    templates = np.stack([unit(rng.normal(size=DIM)) for _ in NAMES])
    matcher = Matcher(NAMES, templates, threshold=0.4, min_margin=0.05)

    def emb(person: str, norm: float = 22.0, noise: float = 0.08) -> Embedding:
        vec = templates[NAMES.index(person)] + rng.normal(scale=noise, size=DIM)
        return Embedding(unit(vec), norm, "test")

    return matcher, emb, templates


def feed(voter: TrackVoter, embeddings, t0: float = 0.0, track: TrackKey = TRACK):
    events = []
    for i, e in enumerate(embeddings):
        events += voter.add(track, e, t0 + i * 0.2)
    return events


def test_identity_is_assigned_only_after_min_votes(world) -> None:
    matcher, emb, _ = world
    voter = TrackVoter(matcher, VotingSettings(min_votes=3))
    assert voter.add(TRACK, emb("alice"), 0.0) == []
    assert voter.add(TRACK, emb("alice"), 0.1) == []
    assert voter.identity(TRACK).person is None
    events = voter.add(TRACK, emb("alice"), 0.2)
    assert len(events) == 1
    ev = events[0]
    assert ev.kind is EventKind.IDENTITY_ASSIGNED
    assert (ev.stream, ev.track_id, ev.person, ev.pts_s) == ("cam", 5, "alice", 0.2)
    assert dict(ev.extra) == {"votes": 3}
    assert ev.score is not None and ev.score > 0.9
    ident = voter.identity(TRACK)
    assert (ident.person, ident.votes) == ("alice", 3)
    assert ident.confidence == pytest.approx(ev.score)
    assert feed(voter, [emb("alice") for _ in range(5)]) == []  # assigned once


def test_one_bad_frame_never_flips_an_assigned_identity(world) -> None:
    matcher, emb, _ = world
    voter = TrackVoter(matcher, VotingSettings(min_votes=2, switch_votes=3))
    feed(voter, [emb("alice") for _ in range(3)])
    assert voter.identity(TRACK).person == "alice"
    events = feed(voter, [emb("bob", norm=500.0)] + [emb("alice") for _ in range(10)], t0=1.0)
    assert events == []
    assert voter.identity(TRACK).person == "alice"


def test_unknown_frames_never_unname_a_track(world) -> None:
    matcher, emb, _ = world
    rng = np.random.default_rng(7)
    voter = TrackVoter(matcher, VotingSettings(top_k=3))
    feed(voter, [emb("alice") for _ in range(3)])
    strangers = [Embedding(unit(rng.normal(size=DIM)), 40.0, "test") for _ in range(6)]
    assert feed(voter, strangers, t0=1.0) == []
    assert voter.identity(TRACK).person == "alice"  # sticky


def test_a_tie_stays_unknown(world) -> None:
    matcher, emb, _ = world
    voter = TrackVoter(matcher, VotingSettings(top_k=4, min_votes=2))
    # alice leads the votes 2-1 but a high-norm bob frame makes the template say bob: no agreement
    assert feed(voter, [emb("alice"), emb("bob", norm=100.0), emb("alice")]) == []
    # 2-2: the template names bob, but bob does not lead the votes
    assert voter.add(TRACK, emb("bob"), 1.0) == []
    assert voter.identity(TRACK).person is None


def test_an_exact_template_tie_stays_unknown_even_without_a_margin(world) -> None:
    _, emb, templates = world
    twins = np.stack([templates[0], templates[0], templates[2]])  # alice and bob look exactly alike
    matcher = Matcher(NAMES, twins, threshold=0.4, min_margin=0.0)
    voter = TrackVoter(matcher, VotingSettings(min_votes=1))
    assert feed(voter, [emb("alice") for _ in range(5)]) == []
    assert voter.identity(TRACK).person is None


def test_a_sustained_change_switches_with_an_event(world) -> None:
    matcher, emb, _ = world
    voter = TrackVoter(matcher, VotingSettings(top_k=5, min_votes=2, switch_votes=3))
    feed(voter, [emb("alice") for _ in range(5)])
    events = feed(voter, [emb("bob") for _ in range(8)], t0=2.0)
    assert [e.kind for e in events] == [EventKind.IDENTITY_CHANGED]
    change = events[0]
    assert change.person == "bob" and dict(change.extra)["previous"] == "alice"
    assert dict(change.extra)["votes"] >= 2
    assert voter.identity(TRACK).person == "bob"


def test_a_short_lead_does_not_switch(world) -> None:
    matcher, emb, _ = world
    voter = TrackVoter(matcher, VotingSettings(top_k=3, min_votes=2, switch_votes=3))
    feed(voter, [emb("alice") for _ in range(3)])
    # bob leads the template for two updates only, then alice comes back
    events = feed(voter, [emb("bob"), emb("bob"), emb("alice"), emb("alice")], t0=2.0)
    assert events == []
    assert voter.identity(TRACK).person == "alice"


def test_low_norm_embeddings_are_ignored(world) -> None:
    matcher, emb, _ = world
    voter = TrackVoter(matcher, VotingSettings(norm_floor=10.0))
    assert feed(voter, [emb("alice", norm=5.0) for _ in range(6)]) == []
    assert voter.identity(TRACK).person is None and voter.kept(TRACK) == ()
    events = feed(voter, [emb("alice", norm=15.0) for _ in range(2)], t0=2.0)
    assert [e.person for e in events] == ["alice"]


def test_top_k_by_norm_is_kept(world) -> None:
    matcher, emb, _ = world
    voter = TrackVoter(matcher, VotingSettings(top_k=3, min_votes=2, switch_votes=1))
    feed(voter, [emb("alice", norm=n) for n in (30.0, 10.0, 31.0, 32.0, 12.0)])
    assert [e.norm for e in voter.kept(TRACK)] == [32.0, 31.0, 30.0]
    # lower-norm embeddings of someone else do not make the cut, so they change nothing
    assert feed(voter, [emb("bob", norm=n) for n in (1.0, 2.0, 3.0, 4.0)], t0=2.0) == []
    assert [e.norm for e in voter.kept(TRACK)] == [32.0, 31.0, 30.0]
    assert voter.identity(TRACK).person == "alice"


def test_old_embeddings_age_out_when_max_age_is_set(world) -> None:
    matcher, emb, _ = world
    voter = TrackVoter(matcher, VotingSettings(top_k=3, max_age_s=1.0))
    feed(voter, [emb("alice", norm=40.0) for _ in range(3)])
    events = feed(voter, [emb("bob", norm=20.0) for _ in range(4)], t0=10.0)
    assert [e.kind for e in events] == [EventKind.IDENTITY_CHANGED]


def test_end_returns_the_final_identity_and_forgets(world) -> None:
    matcher, emb, _ = world
    voter = TrackVoter(matcher)
    other = TrackKey("cam", 0, 6)
    feed(voter, [emb("alice") for _ in range(2)])
    feed(voter, [emb("carol") for _ in range(2)], track=other)
    final = voter.end(TRACK)
    assert final.person == "alice" and final.votes == 2
    assert voter.identity(TRACK).person is None and voter.kept(TRACK) == ()
    assert voter.identity(other).person == "carol"


def test_settings_validation(world) -> None:
    with pytest.raises(ValueError, match="min_votes"):
        VotingSettings(top_k=2, min_votes=3)
    with pytest.raises(ValueError, match="norm_floor"):
        VotingSettings(norm_floor=-1.0)
    with pytest.raises(ValueError, match="switch_votes"):
        VotingSettings(switch_votes=0)

    assert VotingSettings.from_recognition(FakeRecognition(min_votes=4)).min_votes == 4
