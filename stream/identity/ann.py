"""FAISS shortlists for the gallery matcher: the only module that imports faiss (docs/architecture.md §5.3).

The matcher asks an index for the ``shortlist`` gallery rows nearest each query (inner product, which
is the cosine on unit rows), then scores those rows itself with exact float32 cosines: the threshold,
the margin and the decision never read a FAISS score. Kinds:

- ``flat``: ``IndexFlatIP``, exact (FAISS's blocked GEMM and a heap per query). Measured slower than
  the numpy brute force it would replace at every size here (``python -m bench.ann``), so ``auto``
  never picks it; it is there to compare and as a FAISS exact fallback.
- ``ivf``: ``IndexIVFFlat`` with inner product: a k-means coarse quantiser of ``nlist`` lists
  (``ivf_lists``: about 2·√rows, at least 40 training rows per list), ``nprobe`` lists scanned per
  query. k-means runs 10 iterations with FAISS's fixed seed on a fixed sample, so a gallery always
  builds the same index (with the same thread count) and a file gives the same events on every run.
- ``hnsw``: ``IndexHNSWFlat`` with inner product, ``HNSW_M`` links per node, ``HNSW_EF_CONSTRUCTION``
  at build and ``ef_search`` per query. Its multi-threaded build is not deterministic, and it builds
  6x (10⁴ rows) to 23x (10⁵ rows) slower than IVF here and searches slower at the same recall; use
  it on a gallery with little cluster structure, where IVF needs many lists scanned.

``auto`` (the default) is exact numpy brute force up to ``auto_rows`` gallery rows and ``AUTO_ANN``
above: the measured crossover where the approximate index, at recall@1 ≥ 0.99, gets faster than
brute force (README "A gallery for a million people").

The index is built once, when the matcher is built (a new gallery builds a new matcher), and only
read afterwards; FAISS searches are safe from several threads. faiss is imported on first use, so
importing this module costs nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    from stream.config import RecognitionConfig

IndexKind = Literal["auto", "exact", "flat", "ivf", "hnsw"]
BuiltKind = Literal["exact", "flat", "ivf", "hnsw"]

AUTO_ROWS = 10_000  # measured crossover at nprobe 64 (bench/results/matcher-ann-2026-12-01-cpu2.json): a tie at
# 10,000 rows (IVF 19.2 vs exact 19.5 ms per batch of 32), IVF faster at every larger size (20,000: 26 vs 43 ms)
AUTO_ANN: BuiltKind = "ivf"
SHORTLIST = 64  # rows re-scored exactly per query
IVF_NPROBE = 64  # recall@1 0.997 at 10^6 rows (nlist 2000) on the benchmark's gallery; 32: 0.987, 48: 0.992
HNSW_EF_SEARCH = 512  # recall@1 0.995 at 10^5 rows on the benchmark's gallery (256: 0.988, 1024: 1.0)
HNSW_M = 32  # links per node (memory: 2·M int32 per row on the base layer)
HNSW_EF_CONSTRUCTION = 80  # build-time beam; 200 gave better graphs but built 7x slower
IVF_TRAIN_PER_LIST = 40  # FAISS warns below 39 training rows per centroid
IVF_NITER = 10  # k-means iterations (FAISS's default is 25; 10 loses no recall here and trains 2.5x faster)


@dataclass(frozen=True)
class IndexSettings:
    """How the matcher searches its gallery rows; raises ValueError naming the bad field."""

    kind: IndexKind = "auto"
    auto_rows: int = AUTO_ROWS
    shortlist: int = SHORTLIST
    ivf_nprobe: int = IVF_NPROBE
    hnsw_ef_search: int = HNSW_EF_SEARCH

    def __post_init__(self) -> None:
        if self.kind not in get_args(IndexKind):
            raise ValueError(f"kind: must be one of {', '.join(get_args(IndexKind))}, got {self.kind!r}")
        for field, low in (("auto_rows", 1), ("shortlist", 2), ("ivf_nprobe", 1), ("hnsw_ef_search", 1)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{field}: must be an integer >= {low}, got {value!r}")

    @classmethod
    def from_recognition(cls, rec: RecognitionConfig) -> IndexSettings:
        return cls(rec.index, rec.index_auto_rows, rec.index_shortlist, rec.ivf_nprobe, rec.hnsw_ef_search)

    def resolve(self, rows: int) -> BuiltKind:
        """The kind built for a gallery of ``rows`` rows (``auto``: exact below ``auto_rows``)."""
        if self.kind == "auto":
            return AUTO_ANN if rows >= self.auto_rows else "exact"
        if rows == 0:
            return "exact"  # nothing to index
        return self.kind


def ivf_lists(rows: int) -> int:
    """IVF list count for ``rows`` gallery rows: ≈ 2·√rows, but ≥ 40 training rows per list."""
    return max(1, min(round(2 * math.sqrt(rows)), rows // IVF_TRAIN_PER_LIST))


@dataclass(frozen=True)
class Shortlist:
    """A built FAISS index over the gallery rows: ``search`` gives candidate rows, nothing else."""

    kind: BuiltKind
    rows: int
    index: Any  # a faiss.Index; typed loosely so this module's import does not need faiss
    params: Any  # faiss.SearchParameters (nprobe / efSearch) passed to every search, or None
    nbytes: int  # bytes the index holds (vectors, graph or lists), from its structure
    build_s: float
    detail: str  # e.g. "nlist 2000, nprobe 32"

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(Q, k) int64 gallery rows per query, nearest first by FAISS's score; -1 pads when fewer."""
        if queries.shape[0] == 0:
            return np.zeros((0, k), np.int64)
        _, found = self.index.search(np.ascontiguousarray(queries, np.float32), k, params=self.params)
        return np.asarray(found, np.int64)

    def tuned(self, settings: IndexSettings) -> Shortlist:
        """The same built index with the search-time settings (nprobe, efSearch) of ``settings``."""
        params, detail = _search_params(self.kind, self.index, settings)
        return replace(self, params=params, detail=detail)

    def describe(self) -> str:
        return f"{self.kind} over {self.rows} rows ({self.detail}), {self.nbytes / 2**20:.1f} MiB, built in {self.build_s:.2f} s"


def build_shortlist(vectors: np.ndarray, settings: IndexSettings) -> Shortlist | None:
    """The index ``settings`` asks for over unit float32 rows (N, D); None for exact brute force."""
    kind = settings.resolve(vectors.shape[0])
    if kind == "exact":
        return None
    import faiss

    start = time.perf_counter()
    rows, dim = vectors.shape
    data = np.ascontiguousarray(vectors, np.float32)
    if kind == "flat":
        index: Any = faiss.IndexFlatIP(dim)
        index.add(data)
        nbytes = rows * dim * 4
    elif kind == "ivf":
        nlist = ivf_lists(rows)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = IVF_NITER
        index.cp.min_points_per_centroid = 1  # tiny galleries train one list on what there is, silently
        sample = min(rows, IVF_TRAIN_PER_LIST * nlist)
        picks = np.sort(np.random.default_rng(0).choice(rows, sample, replace=False)) if sample < rows else None
        index.train(data if picks is None else data[picks])
        index.add(data)  # faiss's wrapper keeps the quantiser alive with the index
        nbytes = rows * (dim * 4 + 8) + nlist * dim * 4
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(data)
        hnsw = index.hnsw
        nbytes = rows * dim * 4 + hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
    params, detail = _search_params(kind, index, settings)
    return Shortlist(kind, rows, index, params, int(nbytes), time.perf_counter() - start, detail)


def _search_params(kind: BuiltKind, index: Any, settings: IndexSettings) -> tuple[Any, str]:
    import faiss

    if kind == "ivf":
        params = faiss.SearchParametersIVF()
        params.nprobe = min(settings.ivf_nprobe, index.nlist)
        return params, f"nlist {index.nlist}, nprobe {params.nprobe}"
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss's stubs
        params.efSearch = max(settings.hnsw_ef_search, settings.shortlist)
        return params, f"M {HNSW_M}, efConstruction {HNSW_EF_CONSTRUCTION}, efSearch {params.efSearch}"
    return None, "exact inner product"


def faiss_info() -> dict[str, object]:
    """FAISS's version and OpenMP thread count (for benchmark records)."""
    import faiss

    return {"faiss": faiss.__version__, "omp_threads": faiss.omp_get_max_threads()}
