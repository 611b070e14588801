"""1:N matching of embeddings against a gallery: top-k persons, margin, decision.

**Search.** Below ``IndexSettings.auto_rows`` gallery rows (10,000 by default), one float32 matrix
product scores a batch of queries against every row and ``argpartition`` picks the top candidates
without sorting all persons: exact brute force, the reference. From there a FAISS index
(``stream.identity.ann``: IVF by default, or HNSW, or FAISS's exact flat index) shortlists
``shortlist`` rows per query, and the matcher scores the persons of those rows itself with exact
cosines (in per-image mode every row of each shortlisted person, so a person's score is always
their true best). Threshold, margin and decision use only those exact scores, so they equal brute
force whenever the true best and second person are in the shortlist (IVF at its defaults: recall@1
0.997 measured at 10⁶ persons, ``python -m bench.ann``). A query whose shortlist names fewer persons
than the match needs (``max(top_k, 2)``, or all when the gallery is smaller) is scored by brute
force instead.

Scores are cosine similarities clipped to [-1, 1]. A person's score is the cosine to their
template, or in per-image mode the best cosine over their enrolled images.

**Margin.** ``margin = best - second`` where *second* is the best score of any *other* person.
With a one-person gallery there is no rival, so *second* is the cosine floor -1 and the margin
is ``best + 1`` (in [0, 2]). The margin exists to catch *ambiguity between enrolled people*
(two look-alikes both above the threshold); with nobody to confuse the face with, only the
threshold decides. So margin is always in [0, 2], ``min_margin`` in [0, 2] keeps its meaning,
and a tie at the top has margin 0: unknown whenever ``min_margin > 0``.

**Decision.** A face is named only when ``best >= threshold`` and ``margin >= min_margin``;
otherwise it is unknown (``Identity.person is None``). Ties in score are ordered by gallery
order (the earlier person first), so results repeat run to run.

**Negative examples** (``Negatives``): templates of faces that are *not* a given person (a
person said "not this person" about a wrong match: an impostor example of that person) or that
are nobody to name (an ignored group of unknown faces: they count against everybody). The best
candidate P is named only when the query is closer to P's template than to every negative
example that counts against P: ``best > veto`` where ``veto`` = the highest cosine of the query
to P's impostor examples and to the ignored examples (``Match.veto``). A look-alike that was
once wrongly named P is closer to its own stored template than to P's, so it stays unknown,
while P, closer to P's template than to the look-alike's, is still named. The veto never names
anybody else: a vetoed face is unknown. Examples of people not in the gallery are left out.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stream.identity.ann import IndexSettings, Shortlist, build_shortlist
from stream.types import Identity, Match

UNIT_TOLERANCE = 1e-3  # |‖row‖ - 1| allowed for templates and queries
NO_RIVAL = -1.0  # the "second-best" score when the gallery has one person


class PersonLike(Protocol):
    @property
    def vectors(self) -> np.ndarray:
        """(N_i, D) unit rows, one per enrolled image."""
        ...


class GalleryLike(Protocol):
    """What ``Matcher.from_gallery`` reads (``stream.identity.gallery.Gallery`` fits)."""

    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def templates(self) -> np.ndarray: ...

    @property
    def people(self) -> Sequence[PersonLike]: ...

    @property
    def model_id(self) -> str: ...


@dataclass(frozen=True)
class Negatives:
    """Negative examples: unit rows (N, D); ``persons[i]`` is the person row i must not be named, or
    None when it must not be named anybody (an ignored face)."""

    persons: tuple[str | None, ...]
    vectors: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "persons", tuple(self.persons))
        bad = [p for p in self.persons if p is not None and (not isinstance(p, str) or not p)]
        if bad:
            raise ValueError(f"Negatives.persons: a name must be a non-empty string or None, got {bad[0]!r}")
        vectors = np.asarray(self.vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(self.persons):
            raise ValueError(
                f"Negatives.vectors: expected one row per person ({len(self.persons)}), got shape {vectors.shape}"
            )
        if len(self.persons):
            vectors = _check_rows("Negatives.vectors", vectors)
        object.__setattr__(self, "vectors", vectors)

    @classmethod
    def none(cls) -> Negatives:
        return cls((), np.zeros((0, 0), np.float32))

    def __len__(self) -> int:
        return len(self.persons)


@dataclass(frozen=True)
class _Scored:
    """Top candidates of a batch: (Q, K) person indices and scores, best first; (Q,) margins."""

    index: np.ndarray
    score: np.ndarray
    margin: np.ndarray


class Matcher:
    """Scores unit embeddings against P persons and decides person or unknown.

    ``templates`` (P, D) has one unit row per person, in the order of ``names``. With
    ``counts`` (P,) it instead holds sum(counts) rows, ``counts[i]`` consecutive rows for
    person i, and a person's score is the max over their rows (per-image matching).
    ``index`` chooses the search (None: ``IndexSettings()``, exact below 10,000 rows, IVF from there); the index is built
    here, once: a matcher never changes, and a new gallery builds a new matcher.
    Raises ValueError naming the field for bad shapes, duplicate names, non-finite or
    non-unit rows, or thresholds out of range.
    """

    def __init__(
        self,
        names: Sequence[str],
        templates: np.ndarray,
        threshold: float,
        min_margin: float,
        top_k: int = 3,
        *,
        counts: Sequence[int] | np.ndarray | None = None,
        negatives: Negatives | None = None,
        index: IndexSettings | None = None,
    ) -> None:
        self.names: tuple[str, ...] = _check_names(names)
        self.vectors: np.ndarray = _check_rows("templates", templates)
        self._starts = _check_counts(counts, len(self.names), self.vectors.shape[0])
        self.negatives, self._owners = _check_negatives(negatives, self.names, self.dim)
        self.threshold = _check_range("threshold", threshold, -1.0, 1.0)
        self.min_margin = _check_range("min_margin", min_margin, 0.0, 2.0)
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
            raise ValueError(f"top_k: must be an integer >= 1, got {top_k!r}")
        self.top_k = int(top_k)
        index = IndexSettings() if index is None else index
        if not isinstance(index, IndexSettings):
            raise ValueError(f"index: expected IndexSettings, got {type(index).__name__}")
        self.index_settings = index
        self._positions = {name: i for i, name in enumerate(self.names)}
        self._counts = None if self._starts is None else np.diff(np.append(self._starts, self.vectors.shape[0]))
        self._person_of_row = None if self._counts is None else np.repeat(np.arange(len(self.names)), self._counts)
        self._shortlist: Shortlist | None = build_shortlist(self.vectors, index)

    @classmethod
    def from_gallery(
        cls,
        gallery: GalleryLike,
        threshold: float,
        min_margin: float,
        top_k: int = 3,
        per_image: bool = False,
        negatives: Negatives | None = None,
        index: IndexSettings | None = None,
    ) -> Matcher:
        """Match against the fused templates, or with ``per_image`` against every enrolled image."""
        if not per_image:
            return cls(gallery.names, gallery.templates, threshold, min_margin, top_k, negatives=negatives, index=index)
        blocks = [np.asarray(p.vectors, np.float32) for p in gallery.people]
        dim = int(np.asarray(gallery.templates).shape[-1])
        rows = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
        counts = [b.shape[0] for b in blocks]
        return cls(gallery.names, rows, threshold, min_margin, top_k, counts=counts, negatives=negatives, index=index)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        """Number of persons."""
        return len(self.names)

    def __contains__(self, person: object) -> bool:
        """Whether ``person`` is a name of this gallery (a dict lookup, whatever the gallery's size)."""
        return isinstance(person, str) and person in self._positions

    def tuned(self, index: IndexSettings) -> Matcher:
        """This matcher with the search-time settings of ``index`` (shortlist, nprobe, efSearch), sharing
        the built index and everything else. ValueError when ``index`` would build another kind."""
        kind = index.resolve(self.vectors.shape[0])
        if kind != self.search:
            raise ValueError(f"index: this matcher searches with {self.search}, the settings ask for {kind}")
        twin = copy.copy(self)
        twin.index_settings = index
        twin._shortlist = None if self._shortlist is None else self._shortlist.tuned(index)
        return twin

    @property
    def search(self) -> str:
        """How ``match`` searches: ``exact`` (numpy brute force), or ``flat``, ``ivf``, ``hnsw``."""
        return "exact" if self._shortlist is None else self._shortlist.kind

    @property
    def index_nbytes(self) -> int:
        """Bytes held by the FAISS index (0 for exact search); the rows themselves are ``vectors``."""
        return 0 if self._shortlist is None else self._shortlist.nbytes

    def describe_search(self) -> str:
        """One line for the log: the search and, for an index, its size and build time."""
        rows = self.vectors.shape[0]
        if self._shortlist is None:
            return f"gallery search: exact brute force over {rows} rows"
        return (
            f"gallery search: {self._shortlist.describe()}; shortlist {self._shortlist_size()} rows re-scored exactly"
        )

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(Q, P) float32 person scores of unit ``queries`` (Q, D), clipped to [-1, 1] (brute force)."""
        return self._scores(_check_rows("queries", queries, dim=self.dim))

    def scores_of(self, queries: np.ndarray, persons: Sequence[str]) -> np.ndarray:
        """(Q, len(persons)) exact scores of the named persons only (KeyError for an unknown name).

        With exact search these are the columns of ``scores``; with an index only the persons' own
        rows are read, so asking for two persons of a million costs microseconds.
        """
        q = _check_rows("queries", queries, dim=self.dim)
        picks = np.array([self._positions[p] for p in persons], np.intp)
        if self._shortlist is None:
            return self._scores(q)[:, picks]
        if picks.size == 0:
            return np.zeros((q.shape[0], 0), np.float32)
        return np.stack([self._person_scores(row, picks) for row in q])

    def match(self, queries: np.ndarray) -> list[Match]:
        """The top-k persons (best first), margin and veto of each query row."""
        q = _check_rows("queries", queries, dim=self.dim)
        scored = _top(self._scores(q), self.top_k) if self._shortlist is None else self._shortlisted(q)
        k = min(self.top_k, len(self.names))
        best = scored.index[:, 0] if scored.index.shape[1] else np.full(len(scored.index), -1, np.intp)
        vetoes = self._vetoes(queries, best)
        return [
            Match(tuple(zip((self.names[j] for j in idx[:k]), sc[:k].tolist(), strict=True)), float(m), veto)
            for idx, sc, m, veto in zip(scored.index, scored.score, scored.margin, vetoes, strict=True)
        ]

    def decide(self, match: Match) -> Identity:
        """Person when best >= threshold, margin >= min_margin and best > veto; else unknown.

        ``confidence`` is the best cosine (also for unknown faces: how close the nearest person
        came); ``votes`` is 1 for a named single observation, 0 for unknown.
        """
        best = match.best
        if best is None:
            return Identity(None, -1.0, 0)
        person, score = best
        allowed = match.veto is None or score > match.veto
        if score >= self.threshold and match.margin >= self.min_margin and allowed:
            return Identity(person, score, 1)
        return Identity(None, score, 0)

    def allows(self, query: np.ndarray, person: str) -> bool:
        """Whether ``person`` is in the gallery and ``query`` (D,) is closer to their template than to
        every negative example that counts against them (threshold and margin aside)."""
        if person not in self.names:
            return False
        j = self.names.index(person)
        q = np.asarray(query, np.float32).reshape(1, -1)
        score = float(self.scores_of(q, [person])[0, 0])
        veto = self._vetoes(q, np.array([j], np.intp))[0]
        return veto is None or score > veto

    def _vetoes(self, queries: np.ndarray, best: np.ndarray) -> list[float | None]:
        """Per query: the highest cosine to the negatives counting against its best candidate ``best[i]``
        (an index into ``names``, -1: none), or None when none counts."""
        if not len(self.negatives) or not len(best):
            return [None] * len(best)
        q = _check_rows("queries", queries, dim=self.dim)
        scores = np.clip(q @ self.negatives.vectors.T, -1.0, 1.0)
        counts = (self._owners[None, :] == best[:, None]) | (self._owners[None, :] == _EVERYBODY)
        counts &= (best >= 0)[:, None]
        top = np.where(counts, scores, -np.inf).max(axis=1)
        return [float(v) if np.isfinite(v) else None for v in top]

    def identify(self, queries: np.ndarray) -> list[tuple[Match, Identity]]:
        """``match`` then ``decide`` for each query row."""
        return [(m, self.decide(m)) for m in self.match(queries)]

    # -- search ------------------------------------------------------------------------------

    def _scores(self, q: np.ndarray) -> np.ndarray:
        rows = q @ self.vectors.T
        if self._starts is not None and rows.shape[1] > 0:
            rows = np.maximum.reduceat(rows, self._starts, axis=1)
        return np.clip(rows, -1.0, 1.0, out=rows)

    def _shortlist_size(self) -> int:
        return max(self.index_settings.shortlist, self.top_k + 1)

    def _shortlisted(self, q: np.ndarray) -> _Scored:
        """``_top`` over the persons of each query's FAISS shortlist, scored exactly."""
        assert self._shortlist is not None
        persons = len(self.names)
        k = min(max(self.top_k, 2), persons)
        found = self._shortlist.search(q, min(self._shortlist_size(), self.vectors.shape[0]))
        if self._person_of_row is None:
            return self._shortlisted_templates(q, found, k)
        index = np.zeros((q.shape[0], k), np.intp)
        score = np.zeros((q.shape[0], k), np.float32)
        margin = np.zeros(q.shape[0])
        for i, rows in enumerate(found):
            rows = rows[rows >= 0]
            candidates = np.unique(rows if self._person_of_row is None else self._person_of_row[rows])
            if candidates.size >= k:
                top = _top(self._person_scores(q[i], candidates)[None, :], self.top_k)
                index[i], score[i], margin[i] = candidates[top.index[0]], top.score[0], top.margin[0]
            else:  # too few persons shortlisted to fill the match: brute force for this query
                top = _top(self._scores(q[i : i + 1]), self.top_k)
                index[i], score[i], margin[i] = top.index[0], top.score[0], top.margin[0]
        return _Scored(index, score, margin)

    def _shortlisted_templates(self, q: np.ndarray, found: np.ndarray, k: int) -> _Scored:
        """One row per person: score the shortlisted rows of all queries at once. Each query's rows are
        put in gallery order first, so ``_top`` breaks score ties by gallery order, as brute force does."""
        persons = len(self.names)
        rows = np.sort(np.where(found >= 0, found, persons), axis=1)  # FAISS's -1 padding goes last
        valid = rows < persons
        scores = np.einsum("qkd,qd->qk", self.vectors[np.where(valid, rows, 0)], q)
        np.clip(scores, -1.0, 1.0, out=scores)
        scores[~valid] = -np.inf
        top = _top(scores, self.top_k)
        index = np.take_along_axis(rows, top.index, axis=1)[:, :k]
        score, margin = top.score[:, :k], top.margin
        short = np.flatnonzero(valid.sum(axis=1) < k)  # too few persons to fill the match
        if short.size:
            exact = _top(self._scores(q[short]), self.top_k)
            index[short], score[short], margin[short] = exact.index, exact.score, exact.margin
        return _Scored(index, score, margin)

    def _person_scores(self, query: np.ndarray, persons: np.ndarray) -> np.ndarray:
        """(len(persons),) exact float32 scores of one query against the given persons (sorted or not)."""
        if self._counts is None or self._starts is None:
            scores = self.vectors[persons] @ query
        else:
            counts = self._counts[persons]
            firsts = np.cumsum(counts) - counts  # where each person's block starts in ``rows``
            rows = np.repeat(self._starts[persons] - firsts, counts) + np.arange(int(counts.sum()))
            scores = np.maximum.reduceat(self.vectors[rows] @ query, firsts)
        return np.clip(scores, -1.0, 1.0).astype(np.float32, copy=False)


def _top(scores: np.ndarray, top_k: int) -> _Scored:
    """Best ``max(top_k, 2)`` columns per row, ordered by score then column; margin to the runner-up."""
    q, p = scores.shape
    k = min(max(top_k, 2), p)
    if k == 0:
        empty = np.zeros((q, 0))
        return _Scored(empty.astype(np.intp), empty.astype(np.float32), np.zeros(q))
    index = np.argpartition(scores, p - k, axis=1)[:, p - k :]  # unordered best k (all when k == p)
    top = np.take_along_axis(scores, index, axis=1)
    order = np.lexsort((index, -top), axis=1)
    index = np.take_along_axis(index, order, axis=1)
    top = np.take_along_axis(top, order, axis=1)
    second = top[:, 1] if k >= 2 else np.full(q, NO_RIVAL, np.float32)
    margin = np.clip(top[:, 0].astype(np.float64) - second, 0.0, 2.0)
    return _Scored(index, top, margin)


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ValueError("names: expected a sequence of person names, got one string")
    out = tuple(names)
    bad = [n for n in out if not isinstance(n, str) or not n]
    if bad:
        raise ValueError(f"names: every name must be a non-empty string, got {bad[0]!r}")
    if len(set(out)) != len(out):
        dupes = sorted({n for n in out if out.count(n) > 1})
        raise ValueError(f"names: must be unique, repeated: {', '.join(dupes)}")
    return out


def _check_rows(field: str, value: np.ndarray, dim: int | None = None) -> np.ndarray:
    """A read-only C-contiguous float32 (N, D) view (copied only when the input is not one)."""
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{field}: expected a float array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{field}: expected shape (N, D) with D >= 1, got {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{field}: expected dimension {dim} (the gallery's), got {arr.shape[1]}")
    arr = np.ascontiguousarray(arr, np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{field}: contains NaN or inf")
    lengths = np.sqrt(np.einsum("ij,ij->i", arr, arr, dtype=np.float64))
    off = np.flatnonzero(np.abs(lengths - 1.0) > UNIT_TOLERANCE)
    if off.size:
        raise ValueError(f"{field}: rows must be unit-norm, row {off[0]} has norm {lengths[off[0]]:.6f}")
    view = arr.view()
    view.flags.writeable = False
    return view


def _check_counts(counts: Sequence[int] | np.ndarray | None, persons: int, rows: int) -> np.ndarray | None:
    """Start row of each person's block (per-image mode), or None for one template per person."""
    if counts is None:
        if rows != persons:
            raise ValueError(f"templates: expected one row per name ({persons}), got {rows} rows")
        return None
    c = np.asarray(counts)
    if c.shape != (persons,) or not np.issubdtype(c.dtype, np.integer) or (persons and c.min() < 1):
        raise ValueError(f"counts: expected {persons} integers >= 1 (rows per name), got {counts!r}")
    if int(c.sum()) != rows:
        raise ValueError(f"counts: sum to {int(c.sum())}, but templates has {rows} rows")
    return np.concatenate([[0], np.cumsum(c)[:-1]]).astype(np.intp)


_EVERYBODY = -1  # owner index of a negative example that counts against every person


def _check_negatives(negatives: Negatives | None, names: tuple[str, ...], dim: int) -> tuple[Negatives, np.ndarray]:
    """The examples that matter (those of people in the gallery, and those against everybody) and
    each one's owner: its person's index in ``names``, or ``_EVERYBODY``."""
    if negatives is None or not len(negatives):
        return Negatives.none(), np.zeros(0, np.intp)
    if negatives.vectors.shape[1] != dim:
        raise ValueError(f"negatives: expected dimension {dim} (the gallery's), got {negatives.vectors.shape[1]}")
    index = {name: i for i, name in enumerate(names)}
    keep = [i for i, p in enumerate(negatives.persons) if p is None or p in index]
    persons = tuple(negatives.persons[i] for i in keep)
    owners = np.array([_EVERYBODY if p is None else index[p] for p in persons], np.intp)
    if not keep:
        return Negatives.none(), owners
    return Negatives(persons, negatives.vectors[keep]), owners


def _check_range(field: str, value: float, low: float, high: float) -> float:
    number = float(value)
    if not (low <= number <= high):
        raise ValueError(f"{field}: must be in [{low:g}, {high:g}], got {value!r}")
    return number
