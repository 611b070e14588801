"""Per-track identity voting: evidence from several embeddings, hysteresis before a name changes.

Pure and thread-free; one ``TrackVoter`` is owned by the pipeline's recognition thread. Users' top
complaints about peers are flickering names and strangers named (docs/peers.md §2 items 1, 3): one frame decides.
Here a track is named only on agreeing evidence, and once named it changes only on sustained
evidence.

**What a track keeps.** The ``top_k`` embeddings with the largest feature norm (AdaFace's norm is
its quality estimate, docs/adaface.md §6; on equal norms the newer one). An embedding that does not make the
cut changes nothing and is not an update. Embeddings with a norm under
``norm_floor`` are ignored entirely. Typical norms: AdaFace IR-101 about 20-30 for good faces and
much lower for blurred or tiny ones; FaceNet's pre-normalisation norms sit in a different,
narrower range, so the floor is off (0.0) by default and must be calibrated per model.

**Per update** (``add``):

1. the *template* ``fuse(vectors, norms)`` = normalize(Σ nᵢ·fᵢ) over the kept embeddings (docs/adaface.md §6)
   is matched; its *decision* names a person when best >= threshold, margin >= min_margin (the
   Matcher's) and margin > 0 (an exact tie is always unknown);
2. each kept embedding also has its own decision (a *vote*, made once when it arrives);
3. a person *qualifies* when the template decision names them, at least ``min_votes`` kept
   embeddings vote for them, and no other person has as many votes.

**Rules.**

- Unnamed track: the first update on which a person qualifies names the track →
  ``IDENTITY_ASSIGNED`` (extra ``votes``), emitted once.
- Named track, template names the same person: nothing changes (confidence is refreshed).
- Named track, template names another person B: B's lead streak grows by one (a different
  challenger restarts it at 1). When the streak reaches ``switch_votes`` and B qualifies, the
  name changes → ``IDENTITY_CHANGED`` (extra ``previous``, ``votes``).
- Named track, template unknown: the name is **sticky** (a turned head or a blurred frame must not
  un-name a person; the tracker ends the track when the face leaves); the challenger streak resets,
  since the lead must be consecutive.

So a single frame of someone else can never rename a track: even with a huge norm it is one vote,
below ``min_votes >= 2``.

**A new gallery** (``set_matcher``: the library changed, see ``stream.identity.library``): every kept
embedding votes again against the new matcher, and each track is re-decided at its next update
(even one whose embedding does not make the top-k cut), without hysteresis, since the evidence did
not change, the gallery did:

- unnamed track: the usual rule (a person who qualifies names it → ``IDENTITY_ASSIGNED``);
- named track, another person qualifies (the person was renamed, or photos of the right person were
  added) → ``IDENTITY_CHANGED`` at once (extra ``previous``, ``votes``, ``reason: "gallery"``);
- named track, nobody qualifies: the name stays if the person is still in the gallery and the
  track's template is not vetoed for them ("not this person", an ignored group); otherwise the track
  is un-named → ``IDENTITY_CHANGED`` with person None (extra ``previous``, ``reason: "gallery"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from stream.identity.matcher import Matcher
from stream.identity.strangers import StrangerBook
from stream.identity.templates import fuse
from stream.types import Embedding, Event, EventKind, Identity, TrackKey

__all__ = ["TrackVoter", "VotingSettings"]

UNKNOWN = Identity(None, -1.0, 0)


@dataclass(frozen=True, slots=True)
class VotingSettings:
    """top_k: embeddings kept per track, by norm. norm_floor: ignore embeddings with a smaller norm
    (0 = off). min_votes: kept embeddings that must individually name a person before the track is
    named. switch_votes: consecutive template decisions a new person must lead before a named track
    is renamed. max_age_s: kept embeddings older than this are dropped, so the evidence follows the
    face seen now (None: kept by norm only). Threshold and min_margin come from the Matcher."""

    top_k: int = 5
    norm_floor: float = 0.0
    min_votes: int = 2
    switch_votes: int = 3
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("top_k", "min_votes", "switch_votes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VotingSettings.{name}: must be an integer >= 1, got {value!r}")
        if self.min_votes > self.top_k:
            raise ValueError(
                f"VotingSettings.min_votes: must be <= top_k ({self.top_k}), got {self.min_votes}; "
                "the track could never be named"
            )
        if not (math.isfinite(self.norm_floor) and self.norm_floor >= 0):
            raise ValueError(f"VotingSettings.norm_floor: must be finite and >= 0, got {self.norm_floor}")
        if self.max_age_s is not None and not (math.isfinite(self.max_age_s) and self.max_age_s > 0):
            raise ValueError(f"VotingSettings.max_age_s: must be finite and > 0, got {self.max_age_s}")

    @classmethod
    def from_recognition(cls, recognition: object, **overrides: object) -> VotingSettings:
        """Settings from a ``RecognitionConfig`` (min_votes) plus overrides."""
        values: dict[str, object] = {"min_votes": int(recognition.min_votes)}  # type: ignore[attr-defined]
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Kept:
    embedding: Embedding
    arrival: int
    t: float
    vote: str | None  # this embedding's own decision


@dataclass(slots=True)
class _TrackState:
    kept: list[_Kept] = field(default_factory=list)
    arrivals: int = 0
    person: str | None = None
    confidence: float = -1.0
    votes: int = 0
    challenger: str | None = None
    streak: int = 0
    stranger: str | None = None  # the run's unknown-N label while the track is unknown
    regallery: bool = False  # the gallery changed since the last update: re-decide at the next one


@dataclass(frozen=True, slots=True)
class _Evidence:
    """One update's evidence: the template's decision, the scores of its decision and of the track's
    current person, and the votes."""

    decision: str | None
    best_score: float
    scores: dict[str, float]
    votes: dict[str, int]

    def qualifies(self, person: str | None, min_votes: int) -> bool:
        if person is None or self.decision != person:
            return False
        count = self.votes.get(person, 0)
        rivals = (n for p, n in self.votes.items() if p != person)
        return count >= min_votes and all(n < count for n in rivals)


class TrackVoter:
    """Owns every track's kept embeddings and identity; turns embeddings into identity events."""

    def __init__(
        self, matcher: Matcher, settings: VotingSettings = VotingSettings(), strangers: StrangerBook | None = None
    ) -> None:
        """``strangers``: label tracks that stay unknown with the run's ``unknown-N`` (None: off)."""
        self.matcher = matcher
        self.settings = settings
        self.strangers = strangers
        self._tracks: dict[TrackKey, _TrackState] = {}

    def set_matcher(self, matcher: Matcher) -> None:
        """Use a new gallery's matcher from now on: kept embeddings vote again against it, and every
        track is re-decided at its next update (module notes). The same matcher again is a no-op."""
        if matcher is self.matcher:
            return
        self.matcher = matcher
        for state in self._tracks.values():
            state.kept = [replace(k, vote=self._vote(k.embedding)) for k in state.kept]
            state.regallery = True

    def add(self, track: TrackKey, embedding: Embedding, t: float) -> list[Event]:
        """Take one embedding of ``track``; the identity events it causes (usually none)."""
        state = self._tracks.get(track)
        regallery = state is not None and state.regallery and state.person is not None
        if embedding.norm < self.settings.norm_floor or (
            len(self.matcher) == 0 and self.strangers is None and not regallery
        ):
            return []
        state = self._tracks.setdefault(track, _TrackState())
        if not self._keep(state, embedding, t) and not state.regallery:
            return []
        template, weight = self._template(state)
        events: list[Event] = []
        if state.regallery:
            state.regallery = False
            events = self._redecide(track, state, template, t)
        elif len(self.matcher):
            evidence = self._evidence(state, template)
            if state.person is None:
                events = self._maybe_assign(track, state, evidence, t)
            else:
                events = self._maybe_switch(track, state, evidence, t)
        return events + self._stranger(track, state, template, weight, t)

    def identity(self, track: TrackKey) -> Identity:
        """The track's current identity: person None until assigned; confidence = template score."""
        state = self._tracks.get(track)
        if state is None:
            return UNKNOWN
        return Identity(state.person, state.confidence, state.votes, state.stranger)

    def template(self, track: TrackKey) -> tuple[np.ndarray, float] | None:
        """The track's fused template (unit float32) and the mean feature norm of the embeddings
        behind it; None when the track has none kept."""
        state = self._tracks.get(track)
        if state is None or not state.kept:
            return None
        template, _ = self._template(state)
        return template.astype(np.float32), float(np.mean([k.embedding.norm for k in state.kept]))

    def kept(self, track: TrackKey) -> tuple[Embedding, ...]:
        """The embeddings the track keeps, highest norm first."""
        state = self._tracks.get(track)
        return tuple(k.embedding for k in state.kept) if state is not None else ()

    def end(self, track: TrackKey) -> Identity:
        """Forget the track; its final identity (its stranger label is free for later tracks)."""
        final = self.identity(track)
        state = self._tracks.pop(track, None)
        if state is not None and state.stranger is not None and self.strangers is not None:
            self.strangers.release(state.stranger, track)
        return final

    # -- steps -------------------------------------------------------------------------------

    def _keep(self, state: _TrackState, embedding: Embedding, t: float) -> bool:
        """Insert into the top-k by norm (newer first on equal norms); False when it did not make
        the cut, so nothing changed."""
        before = len(state.kept)
        if self.settings.max_age_s is not None:
            state.kept = [k for k in state.kept if t - k.t <= self.settings.max_age_s]
        aged_out = len(state.kept) < before
        state.kept.append(_Kept(embedding, state.arrivals, float(t), self._vote(embedding)))
        state.arrivals += 1
        state.kept.sort(key=lambda k: (-k.embedding.norm, -k.arrival))
        if len(state.kept) <= self.settings.top_k:
            return True
        dropped = state.kept.pop()
        return aged_out or dropped.arrival != state.arrivals - 1

    def _vote(self, embedding: Embedding) -> str | None:
        """One embedding's own decision."""
        if not len(self.matcher):
            return None
        return self.matcher.decide(self.matcher.match(embedding.vector[None, :])[0]).person

    @staticmethod
    def _template(state: _TrackState) -> tuple[np.ndarray, float]:
        """The fused template of the kept embeddings and their summed norms (its weight)."""
        vectors = np.stack([k.embedding.vector for k in state.kept])
        norms = np.array([k.embedding.norm for k in state.kept], np.float64)
        if float(norms.sum()) <= 0.0:
            norms = np.ones_like(norms)  # all-zero norms: fall back to a plain average
        return fuse(vectors, norms), float(norms.sum())

    def _stranger(self, track: TrackKey, state: _TrackState, template: np.ndarray, weight: float, t: float) -> list[Event]:
        """Unknown with enough evidence: a stranger label (new, or an earlier stranger's); named: none."""
        book = self.strangers
        if book is None:
            return []
        if state.person is not None:
            if state.stranger is not None:
                book.forget(state.stranger, track)
                state.stranger = None
            return []
        if state.stranger is not None:
            previous, state.stranger = state.stranger, book.update(state.stranger, track, template, weight)
            if state.stranger == previous:
                return []
            return [self._stranger_event(track, state, t, (("previous", previous),))]
        if len(state.kept) < book.settings.min_embeddings:
            return []
        state.stranger = book.claim(track, template, weight)
        return [self._stranger_event(track, state, t, ())]

    def _stranger_event(
        self, track: TrackKey, state: _TrackState, t: float, extra: tuple[tuple[str, object], ...]
    ) -> Event:
        score = state.confidence if len(self.matcher) else None
        return Event.of_track(float(t), EventKind.STRANGER_ASSIGNED, track, None, score, extra, state.stranger)

    def _evidence(self, state: _TrackState, template: np.ndarray) -> _Evidence:
        match = self.matcher.match(template[None, :])[0]
        decided = self.matcher.decide(match)
        decision = decided.person if match.margin > 0 else None
        # Only the current person's and the decision's scores are read: ask for those two, not for a
        # score per gallery person (a million-person gallery would build a million-entry dict per update).
        # (A person renamed or removed since the track was named is not in a new gallery's matcher.)
        wanted = sorted({p for p in (state.person, decision) if p is not None and p in self.matcher})
        row = self.matcher.scores_of(template[None, :], wanted)[0]
        scores = dict(zip(wanted, row.tolist(), strict=True))
        votes: dict[str, int] = {}
        for kept in state.kept:
            if kept.vote is not None:
                votes[kept.vote] = votes.get(kept.vote, 0) + 1
        return _Evidence(decision, decided.confidence, scores, votes)

    def _maybe_assign(self, track: TrackKey, state: _TrackState, ev: _Evidence, t: float) -> list[Event]:
        state.confidence = ev.best_score
        if not ev.qualifies(ev.decision, self.settings.min_votes):
            return []
        person = ev.decision
        assert person is not None
        self._name(state, person, ev)
        return [self._event(EventKind.IDENTITY_ASSIGNED, track, state, t, ())]

    def _maybe_switch(self, track: TrackKey, state: _TrackState, ev: _Evidence, t: float) -> list[Event]:
        current = state.person
        assert current is not None
        state.confidence = ev.scores.get(current, -1.0)
        state.votes = ev.votes.get(current, 0)
        if ev.decision is None or ev.decision == current:
            state.challenger, state.streak = None, 0  # sticky: unknown never un-names
            return []
        if ev.decision == state.challenger:
            state.streak += 1
        else:
            state.challenger, state.streak = ev.decision, 1
        if state.streak < self.settings.switch_votes or not ev.qualifies(ev.decision, self.settings.min_votes):
            return []
        self._name(state, ev.decision, ev)
        return [self._event(EventKind.IDENTITY_CHANGED, track, state, t, (("previous", current),))]

    def _redecide(self, track: TrackKey, state: _TrackState, template: np.ndarray, t: float) -> list[Event]:
        """The first update after a gallery change (module notes)."""
        state.challenger, state.streak = None, 0
        current = state.person
        evidence = self._evidence(state, template) if len(self.matcher) else None
        if current is None:
            return [] if evidence is None else self._maybe_assign(track, state, evidence, t)
        if evidence is not None and evidence.qualifies(evidence.decision, self.settings.min_votes):
            person = evidence.decision
            assert person is not None
            self._name(state, person, evidence)
            if person == current:
                return []
            extra: tuple[tuple[str, object], ...] = (("previous", current), ("reason", "gallery"))
            return [self._event(EventKind.IDENTITY_CHANGED, track, state, t, extra)]
        if len(self.matcher) and self.matcher.allows(template, current):
            state.confidence = evidence.scores.get(current, -1.0) if evidence is not None else -1.0
            return []  # still a fair name: sticky, as ever
        state.person, state.votes = None, 0
        state.confidence = evidence.best_score if evidence is not None else -1.0
        return [
            Event.of_track(
                float(t),
                EventKind.IDENTITY_CHANGED,
                track,
                None,
                state.confidence,
                (("previous", current), ("reason", "gallery")),
            )
        ]

    def _name(self, state: _TrackState, person: str, ev: _Evidence) -> None:
        state.person = person
        state.confidence = ev.scores[person]
        state.votes = ev.votes[person]
        state.challenger, state.streak = None, 0

    @staticmethod
    def _event(
        kind: EventKind, track: TrackKey, state: _TrackState, t: float, extra: tuple[tuple[str, object], ...]
    ) -> Event:
        return Event.of_track(float(t), kind, track, state.person, state.confidence, (("votes", state.votes), *extra))
