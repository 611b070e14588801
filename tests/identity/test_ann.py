"""The matcher's FAISS search (stream.identity.ann): same matches and decisions as numpy brute force."""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pytest

from stream.config import RecognitionConfig, parse_config
from stream.identity.ann import AUTO_ANN, IndexSettings, build_shortlist, ivf_lists
from stream.identity.matcher import Matcher
from stream.types import Identity, Match
from tests.conftest import REPO
from tests.fakes import FakeGallery, FakePerson

DIM = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _gallery(rng: np.random.Generator, rows: int, clusters: int = 20) -> np.ndarray:
    """Unit rows in loose clusters (look-alikes inside a cluster score ~0.3), like face templates."""
    centres = _unit(rng.standard_normal((clusters, DIM)))
    own = _unit(rng.standard_normal((rows, DIM)))
    return _unit(np.sqrt(0.3) * centres[rng.integers(0, clusters, rows)] + np.sqrt(0.7) * own)


def _probes(rng: np.random.Generator, rows: np.ndarray, n: int) -> np.ndarray:
    """Noisy copies of gallery rows at cosines 0.4–0.95 (same person), plus as many strangers."""
    picks = rows[rng.integers(0, len(rows), n)]
    cos = rng.uniform(0.4, 0.95, (n, 1))
    noise = _unit(rng.standard_normal((n, DIM)))
    noise = _unit(noise - np.sum(noise * picks, axis=1, keepdims=True) * picks)
    same = _unit(cos * picks + np.sqrt(1 - cos**2) * noise)
    return np.concatenate([same, _unit(rng.standard_normal((n, DIM)))])


def _names(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def _assert_same(got: list[tuple[Match, Identity]], want: list[tuple[Match, Identity]]) -> None:
    """Same persons in the same order and the same decisions; scores equal up to float32 rounding."""
    assert len(got) == len(want)
    for (gm, gi), (wm, wi) in zip(got, want, strict=True):
        assert [n for n, _ in gm.candidates] == [n for n, _ in wm.candidates]
        np.testing.assert_allclose([s for _, s in gm.candidates], [s for _, s in wm.candidates], atol=1e-5)
        assert gm.margin == pytest.approx(wm.margin, abs=1e-5)
        assert gi.person == wi.person and gi.votes == wi.votes
        assert gi.confidence == pytest.approx(wi.confidence, abs=1e-5)


# ------------------------------------------------------------------ settings


def test_default_settings_match_the_config_defaults() -> None:
    assert IndexSettings.from_recognition(RecognitionConfig()) == IndexSettings()
    rec = parse_config("recognition: {index: hnsw, index_shortlist: 16, hnsw_ef_search: 99}").recognition
    assert IndexSettings.from_recognition(rec) == IndexSettings("hnsw", shortlist=16, hnsw_ef_search=99)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "annoy"}, "kind: must be one of auto, exact, flat, ivf, hnsw, got 'annoy'"),
        ({"shortlist": 1}, "shortlist: must be an integer >= 2, got 1"),
        ({"auto_rows": 0}, "auto_rows: must be an integer >= 1"),
        ({"ivf_nprobe": 2.5}, "ivf_nprobe: must be an integer >= 1, got 2.5"),
        ({"hnsw_ef_search": True}, "hnsw_ef_search: must be an integer >= 1"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexSettings(**kwargs)


def test_bad_config_names_the_key() -> None:
    from stream.config import ConfigError

    with pytest.raises(ConfigError, match="recognition.index"):
        parse_config("recognition: {index: annoy}")
    with pytest.raises(ConfigError, match="recognition.index_shortlist"):
        parse_config("recognition: {index_shortlist: 1}")


def test_auto_is_exact_below_the_crossover_and_the_index_above() -> None:
    rows = _gallery(np.random.default_rng(0), 300)
    small = Matcher(_names(299), rows[:299], 0.5, 0.05, index=IndexSettings(auto_rows=300))
    large = Matcher(_names(300), rows, 0.5, 0.05, index=IndexSettings(auto_rows=300))
    assert small.search == "exact" and small.index_nbytes == 0 and "exact brute force" in small.describe_search()
    assert large.search == AUTO_ANN and large.index_nbytes > rows.nbytes
    assert "shortlist 64 rows re-scored exactly" in large.describe_search()
    assert Matcher(_names(3), rows[:3], 0.5, 0.05).search == "exact"  # the default: exact for small galleries
    assert IndexSettings("hnsw").resolve(0) == "exact" and IndexSettings().resolve(10**6) == AUTO_ANN


def test_ivf_lists_keep_40_training_rows_per_list() -> None:
    assert [ivf_lists(n) for n in (1, 39, 80, 10_000, 1_000_000)] == [1, 1, 2, 200, 2000]


# ------------------------------------------------------------------ same as brute force


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize(("persons", "top_k"), [(2, 1), (7, 3), (300, 5), (3000, 3)])
def test_exhaustive_index_equals_brute_force(kind: str, persons: int, top_k: int) -> None:
    """Flat is exact; IVF probing every list and HNSW with a beam over the whole gallery are too."""
    rng = np.random.default_rng(persons)
    rows = _gallery(rng, persons)
    queries = _probes(rng, rows, 40)
    settings = IndexSettings(kind, ivf_nprobe=10**4, hnsw_ef_search=max(64, persons))  # type: ignore[arg-type]
    exact = Matcher(_names(persons), rows, 0.5, 0.05, top_k=top_k, index=IndexSettings("exact"))
    indexed = Matcher(_names(persons), rows, 0.5, 0.05, top_k=top_k, index=settings)
    assert indexed.search == kind
    _assert_same(indexed.identify(queries), exact.identify(queries))
    named = [i.person for _, i in exact.identify(queries)]
    assert any(named) and None in named  # both decisions are exercised


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_defaults_agree_on_a_few_thousand_rows(kind: str) -> None:
    """The shipped nprobe / efSearch on 4,000 clustered rows: the same person first for the probes of
    enrolled people and the same decisions, allowing 2 % misses (the benchmark's bar is 1 % at 10⁶)."""
    rng = np.random.default_rng(11)
    rows = _gallery(rng, 4000)
    queries = _probes(rng, rows, 200)
    exact = Matcher(_names(4000), rows, 0.5, 0.05, index=IndexSettings("exact")).identify(queries)
    approx = Matcher(_names(4000), rows, 0.5, 0.05, index=IndexSettings(kind)).identify(queries)  # type: ignore[arg-type]
    recall = np.mean([a.candidates[0][0] == e.candidates[0][0] for (a, _), (e, _) in zip(approx[:200], exact[:200], strict=True)])
    agree = np.mean([a.person == e.person for (_, a), (_, e) in zip(approx, exact, strict=True)])
    assert recall >= 0.98 and agree >= 0.98, (recall, agree)
    assert 0.2 < np.mean([e.person is not None for _, e in exact]) < 0.8  # named and unknown both common


def test_per_image_rows_map_to_persons_and_score_their_best_image() -> None:
    """Per-image: each shortlisted person is scored over all their rows, so equal to brute force,
    including a person with more images than the shortlist holds (brute force for that query)."""
    rng = np.random.default_rng(5)
    counts = [1, 3, 80, 2, *rng.integers(1, 6, 200).tolist()]
    blocks = [_gallery(rng, c, clusters=3) for c in counts]
    names = tuple(_names(len(counts)))
    templates = _unit(np.stack([b.sum(0) for b in blocks]))
    gallery = FakeGallery(names, templates, tuple(FakePerson(b) for b in blocks))
    rows = np.concatenate(blocks)
    queries = np.concatenate([_probes(rng, rows, 30), blocks[2][:3]])
    exact = Matcher.from_gallery(gallery, 0.5, 0.05, top_k=4, per_image=True, index=IndexSettings("exact"))
    for kind in ("flat", "ivf", "hnsw"):
        settings = IndexSettings(kind, shortlist=8, ivf_nprobe=10**4, hnsw_ef_search=2000)  # type: ignore[arg-type]
        indexed = Matcher.from_gallery(gallery, 0.5, 0.05, top_k=4, per_image=True, index=settings)
        _assert_same(indexed.identify(queries), exact.identify(queries))
        np.testing.assert_allclose(indexed.scores_of(queries, ["p2", "p0"]), exact.scores(queries)[:, [2, 0]], atol=1e-6)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_empty_and_one_person_galleries(kind: str) -> None:
    settings = IndexSettings(kind)  # type: ignore[arg-type]
    nobody = Matcher([], np.zeros((0, 4), np.float32), 0.3, 0.05, index=settings)
    (match,) = nobody.match(np.eye(1, 4, dtype=np.float32))
    assert nobody.search == "exact" and match == Match((), 0.0) and nobody.decide(match) == Identity(None, -1.0, 0)
    solo = Matcher(["solo"], np.array([[1.0, 0.0]], np.float32), threshold=0.4, min_margin=0.5, index=settings)
    assert solo.search == kind
    close, far = solo.match(np.array([[0.9, 0.3], [0.1, 0.99]], np.float32) / np.array([[0.94868], [0.99504]]))
    assert close.margin == pytest.approx(close.candidates[0][1] + 1.0, abs=1e-5)  # no rival: runner-up is -1
    assert solo.decide(close).person == "solo" and solo.decide(far).person is None
    assert solo.match(np.zeros((0, 2), np.float32)) == []


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_margin_semantics_are_unchanged(kind: str) -> None:
    settings = IndexSettings(kind)  # type: ignore[arg-type]
    for names in (["alice", "bob"], ["bob", "alice"]):  # an exact tie: margin 0, gallery order first
        tie = Matcher(names, np.eye(2, dtype=np.float32), 0.5, 0.0, index=settings)
        (match,) = tie.match(np.array([[1.0, 1.0]], np.float32) / np.sqrt(2))
        assert match.margin == 0.0 and [n for n, _ in match.candidates] == names
    close = Matcher(["alice", "bob"], np.eye(2, dtype=np.float32), 0.5, 0.1, index=settings)
    (match,) = close.match(np.array([[0.72, 0.69]], np.float32) / np.hypot(0.72, 0.69))
    assert match.candidates[0][1] >= 0.5 and match.margin < 0.1 and close.decide(match).person is None


def test_scores_of_equals_the_score_columns() -> None:
    rng = np.random.default_rng(2)
    rows = _gallery(rng, 500)
    queries = _probes(rng, rows, 5)
    for settings in (IndexSettings("exact"), IndexSettings("ivf")):
        matcher = Matcher(_names(500), rows, 0.5, 0.05, index=settings)
        np.testing.assert_allclose(matcher.scores_of(queries, ["p7", "p3"]), matcher.scores(queries)[:, [7, 3]], atol=1e-6)
        assert matcher.scores_of(queries, []).shape == (10, 0)
        with pytest.raises(KeyError):
            matcher.scores_of(queries, ["nobody"])


def test_tuned_shares_the_index_and_changes_only_the_search_settings() -> None:
    rng = np.random.default_rng(4)
    rows = _gallery(rng, 2000)
    queries = _probes(rng, rows, 20)
    ivf = Matcher(_names(2000), rows, 0.5, 0.05, index=IndexSettings("ivf", ivf_nprobe=1))
    wide = ivf.tuned(IndexSettings("ivf", ivf_nprobe=10**4))
    assert "nprobe 1)" in ivf.describe_search() and "nprobe 50)" in wide.describe_search()
    assert wide.index_nbytes == ivf.index_nbytes and wide.index_settings.ivf_nprobe == 10**4
    exact = Matcher(_names(2000), rows, 0.5, 0.05, index=IndexSettings("exact"))
    _assert_same(wide.identify(queries), exact.identify(queries))  # every list probed: exact
    hnsw = Matcher(_names(2000), rows, 0.5, 0.05, index=IndexSettings("hnsw"))
    assert "efSearch 300" in hnsw.tuned(IndexSettings("hnsw", hnsw_ef_search=300)).describe_search()
    with pytest.raises(ValueError, match="index: this matcher searches with ivf, the settings ask for hnsw"):
        ivf.tuned(IndexSettings("hnsw"))
    assert exact.tuned(IndexSettings("exact")).search == "exact"


def test_index_rows_and_padding() -> None:
    rows = _gallery(np.random.default_rng(3), 10)
    shortlist = build_shortlist(rows, IndexSettings("flat"))
    assert shortlist is not None and shortlist.rows == 10
    found = shortlist.search(rows[:2], 12)  # more than the gallery holds: -1 pads
    assert found.dtype == np.int64 and found.shape == (2, 12) and (found[:, 10:] == -1).all()
    assert found[0, 0] == 0 and found[1, 0] == 1
    assert shortlist.search(np.zeros((0, DIM), np.float32), 4).shape == (0, 4)
    assert build_shortlist(rows, IndexSettings("exact")) is None


# ------------------------------------------------------------------ faiss stays in its adapter


def test_only_the_adapter_imports_faiss() -> None:
    importers = []
    for path in sorted((REPO / "stream").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "faiss" or n.startswith("faiss.") for n in names):
                importers.append(path.relative_to(REPO).as_posix())
    assert sorted(set(importers)) == ["stream/identity/ann.py"]


def test_importing_the_matcher_does_not_load_faiss() -> None:
    code = "import sys, stream.identity.matcher, stream.cli; stream.cli.build_parser(); print('faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
