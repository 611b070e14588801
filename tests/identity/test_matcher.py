"""Matcher: exact top-k against brute force, margin and unknown decisions, validation, 100k persons."""

from __future__ import annotations

import numpy as np
import pytest

from stream.identity.ann import IndexSettings
from stream.identity.matcher import Matcher
from stream.types import Identity, Match
from tests.fakes import FakeGallery, FakePerson


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _names(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def _reference(templates: np.ndarray, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Brute force in float64: every person's score, sorted by (-score, index)."""
    scores = np.clip(templates.astype(np.float64) @ query.astype(np.float64), -1, 1)
    return sorted(enumerate(scores.tolist()), key=lambda t: (-t[1], t[0]))[:k]


# ------------------------------------------------------------------ top-k


@pytest.mark.parametrize(("persons", "top_k"), [(1, 3), (2, 1), (5, 5), (50, 3), (500, 10)])
def test_top_k_equals_brute_force(persons: int, top_k: int) -> None:
    rng = np.random.default_rng(persons)
    templates, queries = _unit(rng, persons, 64), _unit(rng, 20, 64)
    matcher = Matcher(_names(persons), templates, threshold=0.5, min_margin=0.05, top_k=top_k)
    for query, match in zip(queries, matcher.match(queries), strict=True):
        ref = _reference(templates, query, top_k)
        assert [name for name, _ in match.candidates] == [f"p{i}" for i, _ in ref]
        np.testing.assert_allclose([s for _, s in match.candidates], [s for _, s in ref], atol=1e-5)
        runner_up = _reference(templates, query, 2)[1][1] if persons > 1 else -1.0
        assert match.margin == pytest.approx(ref[0][1] - runner_up, abs=1e-5)


def test_scores_equal_dot_products_and_are_clipped() -> None:
    rng = np.random.default_rng(0)
    templates = _unit(rng, 4, 16)
    matcher = Matcher(_names(4), templates, 0.3, 0.0)
    queries = np.ascontiguousarray(templates[[2, 0]])
    scores = matcher.scores(queries)
    assert scores.dtype == np.float32 and scores.shape == (2, 4)
    np.testing.assert_allclose(scores, np.clip(queries @ templates.T, -1, 1), atol=1e-6)
    assert scores.max() <= 1.0 and scores[0, 2] == pytest.approx(1.0, abs=1e-6)


def test_margin_needs_the_runner_up_even_with_top_1() -> None:
    templates = np.eye(3, dtype=np.float32)
    query = np.array([[0.8, 0.6, 0.0]], np.float32)
    (match,) = Matcher(["a", "b", "c"], templates, 0.5, 0.1, top_k=1).match(query)
    assert match.candidates == (("a", pytest.approx(0.8)),)
    assert match.margin == pytest.approx(0.2, abs=1e-6)


def test_empty_query_batch_and_empty_gallery() -> None:
    matcher = Matcher(["a"], np.eye(1, 4, dtype=np.float32), 0.3, 0.05)
    assert matcher.match(np.zeros((0, 4), np.float32)) == []
    nobody = Matcher([], np.zeros((0, 4), np.float32), 0.3, 0.05)
    (match,) = nobody.match(np.eye(1, 4, dtype=np.float32))
    assert match == Match((), 0.0) and nobody.decide(match) == Identity(None, -1.0, 0)


# ------------------------------------------------------------------ decisions


def _matcher(threshold: float = 0.5, min_margin: float = 0.1) -> Matcher:
    return Matcher(["alice", "bob"], np.eye(2, dtype=np.float32), threshold, min_margin)


def _query(a: float, b: float) -> np.ndarray:
    v = np.array([[a, b]], np.float32)
    return v / np.linalg.norm(v)


def test_clear_best_above_threshold_is_named() -> None:
    matcher = _matcher()
    (match,) = matcher.match(_query(0.9, 0.2))
    identity = matcher.decide(match)
    assert identity.person == "alice" and identity.votes == 1
    assert identity.confidence == pytest.approx(match.candidates[0][1])


def test_below_threshold_is_unknown_with_its_score() -> None:
    matcher = _matcher(threshold=0.99)
    (match,) = matcher.match(_query(0.9, 0.2))
    identity = matcher.decide(match)
    assert identity.person is None and identity.votes == 0
    assert identity.confidence == pytest.approx(match.candidates[0][1]) and identity.confidence < 0.99


def test_two_close_people_are_unknown_by_margin() -> None:
    matcher = _matcher(threshold=0.5, min_margin=0.1)
    (match,) = matcher.match(_query(0.72, 0.69))
    assert match.candidates[0][1] >= 0.5 and match.margin < 0.1
    assert matcher.decide(match).person is None


def test_exact_tie_has_zero_margin_and_orders_by_gallery() -> None:
    for names in (["alice", "bob"], ["bob", "alice"]):
        matcher = Matcher(names, np.eye(2, dtype=np.float32), 0.5, 0.0)
        (match,) = matcher.match(_query(1.0, 1.0))
        assert match.margin == 0.0 and [n for n, _ in match.candidates] == names
        assert matcher.decide(match).person == names[0]  # min_margin 0 lets a tie through
    strict = _matcher(threshold=0.5, min_margin=0.01)
    assert strict.decide(strict.match(_query(1.0, 1.0))[0]).person is None


def test_thresholds_are_inclusive() -> None:
    match = Match((("alice", 0.5), ("bob", 0.4)), margin=0.1)
    assert _matcher(threshold=0.5, min_margin=0.1).decide(match).person == "alice"
    assert _matcher(threshold=0.5000001, min_margin=0.1).decide(match).person is None
    assert _matcher(threshold=0.5, min_margin=0.1000001).decide(match).person is None


def test_one_person_gallery_decides_by_threshold_alone() -> None:
    matcher = Matcher(["solo"], np.array([[1.0, 0.0]], np.float32), threshold=0.4, min_margin=0.5)
    close, far = matcher.match(np.concatenate([_query(0.9, 0.3), _query(0.1, 0.99)]))
    assert close.margin == pytest.approx(close.candidates[0][1] + 1.0)  # no rival: runner-up is -1
    assert matcher.decide(close).person == "solo"
    assert far.candidates[0][1] < 0.4 and matcher.decide(far).person is None
    opposite = matcher.match(np.array([[-1.0, 0.0]], np.float32))[0]
    assert opposite.margin == pytest.approx(0.0, abs=1e-6) and matcher.decide(opposite).person is None


# ------------------------------------------------------------------ per-image


def test_per_image_takes_each_persons_best_image() -> None:
    rng = np.random.default_rng(3)
    counts = [3, 1, 4, 2]
    blocks = [_unit(rng, c, 32) for c in counts]
    templates = np.stack([b.sum(0) / np.linalg.norm(b.sum(0)) for b in blocks]).astype(np.float32)
    gallery = FakeGallery(("a", "b", "c", "d"), templates, tuple(FakePerson(b) for b in blocks))
    queries = _unit(rng, 6, 32)
    per_image = Matcher.from_gallery(gallery, 0.3, 0.05, top_k=4, per_image=True)
    expected = np.stack([(queries @ b.T).max(axis=1) for b in blocks], axis=1)
    np.testing.assert_allclose(per_image.scores(queries), expected, atol=1e-6)
    fused = Matcher.from_gallery(gallery, 0.3, 0.05)
    np.testing.assert_allclose(fused.scores(queries), queries @ templates.T, atol=1e-6)
    queries_from_gallery = np.ascontiguousarray(blocks[2][1:2])
    (match,) = per_image.match(queries_from_gallery)
    assert match.candidates[0] == ("c", pytest.approx(1.0, abs=1e-6))


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": ["a", "a"]}, "names: must be unique, repeated: a"),
        ({"names": ["a", ""]}, "names: every name must be a non-empty string"),
        ({"names": "ab"}, "names: expected a sequence"),
        ({"names": ["a"]}, r"templates: expected one row per name \(1\), got 2 rows"),
        ({"templates": np.ones((2, 3, 1), np.float32)}, r"templates: expected shape \(N, D\)"),
        ({"templates": np.eye(2, dtype=np.int64)}, "templates: expected a float array"),
        ({"templates": np.array([[np.nan, 0], [0, 1]], np.float32)}, "templates: contains NaN or inf"),
        ({"templates": np.array([[2.0, 0], [0, 1]], np.float32)}, "templates: rows must be unit-norm, row 0"),
        ({"threshold": 1.5}, r"threshold: must be in \[-1, 1\]"),
        ({"threshold": float("nan")}, "threshold: must be in"),
        ({"min_margin": -0.1}, r"min_margin: must be in \[0, 2\]"),
        ({"top_k": 0}, "top_k: must be an integer >= 1"),
        ({"counts": [1, 2]}, "counts: sum to 3, but templates has 2 rows"),
        ({"counts": [2, 0]}, "counts: expected 2 integers >= 1"),
    ],
)
def test_bad_construction_names_the_field(kwargs: dict, message: str) -> None:
    args = {"names": ["a", "b"], "templates": np.eye(2, dtype=np.float32), "threshold": 0.4, "min_margin": 0.05}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Matcher(**args)


def test_bad_queries_name_the_field() -> None:
    matcher = Matcher(["a", "b"], np.eye(2, dtype=np.float32), 0.4, 0.05)
    with pytest.raises(ValueError, match="queries: expected dimension 2"):
        matcher.match(np.ones((1, 3), np.float32) / np.sqrt(3))
    with pytest.raises(ValueError, match=r"queries: expected shape \(N, D\)"):
        matcher.match(np.array([1.0, 0.0], np.float32))
    with pytest.raises(ValueError, match="queries: rows must be unit-norm"):
        matcher.match(np.zeros((1, 2), np.float32))


def test_templates_are_kept_read_only_without_a_copy() -> None:
    templates = np.eye(3, dtype=np.float32)
    matcher = Matcher(["a", "b", "c"], templates, 0.4, 0.05)
    assert np.shares_memory(matcher.vectors, templates) and not matcher.vectors.flags.writeable
    assert matcher.vectors.flags.c_contiguous and len(matcher) == 3 and matcher.dim == 3
    converted = Matcher(["a", "b", "c"], templates.astype(np.float64), 0.4, 0.05)
    assert converted.vectors.dtype == np.float32


# ------------------------------------------------------------------ scale


@pytest.mark.slow
def test_100k_persons_batch_of_32() -> None:
    rng = np.random.default_rng(7)
    persons, dim = 100_000, 512
    templates = _unit(rng, persons, dim)
    picks = rng.choice(persons, 32, replace=False)
    queries = templates[picks] + 0.01 * rng.standard_normal((32, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # Exact search: the whole top 5 must be brute force's (with the default, an IVF index from 10,000
    # rows, ranks 2-5 are near-ties of random rows that a shortlist may miss; tests/identity/test_ann.py).
    matcher = Matcher(_names(persons), templates, threshold=0.5, min_margin=0.1, top_k=5, index=IndexSettings("exact"))
    results = matcher.identify(queries)
    assert [identity.person for _, identity in results] == [f"p{i}" for i in picks]
    assert all(len(match.candidates) == 5 and match.margin > 0.5 for match, _ in results)
    ref = _reference(templates, queries[0], 5)
    assert [n for n, _ in results[0][0].candidates] == [f"p{i}" for i, _ in ref]
