"""Gallery search at 10⁴–10⁶ identities: numpy brute force against FAISS flat, IVF and HNSW.

    python -m bench.ann [--sizes 10000,100000,1000000] [--kinds flat,ivf,hnsw] [--batches 20]
                        [--genuine 1000] [--strangers 250] [--crossover 2000,5000,...] [--threads 1]
                        [--hnsw-max-rows N] [--json PATH]

Per gallery size, every search is a ``stream.identity.matcher.Matcher`` (the app's code path: a
FAISS shortlist, then exact re-scoring and the threshold/margin decision) and is compared with the
exact numpy matcher on the same queries:

- build time (constructing the matcher, i.e. building the index) and memory: the index's own bytes
  (from its structure) and the process RSS growth while building it; the exact matcher holds only
  the gallery rows (P × 512 float32), which every matcher keeps for re-scoring;
- latency of ``Matcher.identify`` on batches of 32 queries: p50 and p95 over ``--batches`` batches,
  timed alternately with the exact matcher on the same batches (one process, so a load change on
  this shared machine hits both; ``exact_same_batches_ms_p50`` is that pairing's exact figure);
- recall@1: the share of queries of enrolled people whose first candidate is brute force's, and
  the same for strangers (their nearest gallery person is a near-tie, so it is lower and matters
  less: their decision is unknown either way); decision agreement: same person or unknown as brute
  force, over all queries;
- a sweep of the search-time knob (IVF nprobe, HNSW efSearch) on the same built index
  (``Matcher.tuned``): recall, agreement and latency for each value.

``--threads`` (default 1) sets numpy's and FAISS's BLAS/OpenMP threads alike: on this shared 2-core
machine under load, two OpenBLAS threads made a 32 × 3,000 matrix product 10x slower than one, and
in the app the matcher runs beside the torch stages anyway.

``--hnsw-max-rows N`` skips HNSW on galleries of more than N rows (its single-threaded build at 10⁶
rows takes longer than the rest of the run together); the JSON records the skip under ``skipped``.

``--crossover SIZES`` times exact against IVF and HNSW at their defaults on small galleries and
reports the smallest size from which IVF is faster at recall@1 ≥ 0.99 (``recognition.index_auto_rows``).

**The synthetic gallery** has the structure of face templates rather than of uniform noise (on which
any index is at its worst): 512-d unit rows = √0.05·(one shared direction) + √0.25·(one of 64 group
directions: look-alike groups) + √0.70·(the person's own direction), the group and own directions
drawn from an anisotropic Gaussian (variance of the k-th of 512 random orthogonal axes ∝ 1/(k+16),
as the spectrum of real embeddings decays). Impostor cosines then have mean 0.05, sd 0.074 and a
99.9th percentile of 0.39, close to FaceNet's on the shared calibration set. A query of an enrolled
person is their row mixed with an orthogonal direction of the same distribution at a cosine drawn
from U(0.5, 0.8) (a same-person pair); a stranger's query is a new person's row, mixed the same
way. Decisions use threshold 0.45 and min_margin 0.05.

Prints one JSON object and a Markdown table; ``--json`` also writes the object (bench/results/
matcher-ann-<date>-cpu2.json). A 10⁶ gallery is 2 GB of float32; each index holds another copy
(about 2 GB, plus the HNSW graph), built one at a time and freed before the next.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from stream.identity.ann import IndexSettings, faiss_info
from stream.identity.matcher import Matcher

DIM = 512
CHUNK = 65_536  # rows generated at a time
GROUPS = 64
THRESHOLD, MIN_MARGIN = 0.45, 0.05
BATCH = 32
SWEEPS: dict[str, tuple[str, tuple[int, ...]]] = {
    "ivf": ("ivf_nprobe", (8, 16, 32, 48, 64, 128)),
    "hnsw": ("hnsw_ef_search", (64, 128, 256, 512, 1024)),
}


class FaceLike:
    """Draws unit rows shaped like face templates (see the module docstring)."""

    def __init__(self, seed: int, dim: int = DIM) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        scale = 1.0 / np.sqrt(np.arange(dim) + 16.0)
        self.scale = (scale / np.sqrt(np.mean(scale**2))).astype(np.float32)
        self.axes = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
        self.shared = _unit(rng.standard_normal((1, dim)).astype(np.float32))
        self.groups = self.directions(rng, GROUPS)

    def directions(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return _unit((rng.standard_normal((n, self.dim), dtype=np.float32) * self.scale) @ self.axes)

    def people(self, rng: np.random.Generator, n: int) -> np.ndarray:
        out = np.empty((n, self.dim), np.float32)
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            group = self.groups[rng.integers(0, GROUPS, m)]
            own = self.directions(rng, m)
            out[start : start + m] = _unit(np.sqrt(0.05) * self.shared + np.sqrt(0.25) * group + np.sqrt(0.70) * own)
        return out

    def probes(self, rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
        """Same-person queries of ``rows``: cosine U(0.5, 0.8) to their row."""
        noise = self.directions(rng, len(rows))
        noise = _unit(noise - np.sum(noise * rows, axis=1, keepdims=True) * rows)
        cos = rng.uniform(0.5, 0.8, (len(rows), 1)).astype(np.float32)
        return _unit(cos * rows + np.sqrt(1 - cos**2) * noise)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32, copy=False)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _stats(ms: Sequence[float]) -> dict[str, float]:
    return {"ms_p50": round(float(np.median(ms)), 2), "ms_p95": round(float(np.percentile(ms, 95)), 2)}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _identify(matcher: Matcher, queries: np.ndarray) -> list[tuple[str | None, str | None]]:
    """(first candidate, decision) per query, in batches of 32."""
    out: list[tuple[str | None, str | None]] = []
    for start in range(0, len(queries), BATCH):
        for match, identity in matcher.identify(queries[start : start + BATCH]):
            out.append((match.candidates[0][0] if match.candidates else None, identity.person))
    return out


def _quality(
    got: list[tuple[str | None, str | None]], want: list[tuple[str | None, str | None]], genuine: int
) -> dict[str, float]:
    first = [g[0] == w[0] for g, w in zip(got, want, strict=True)]
    return {
        "recall_at_1": round(float(np.mean(first[:genuine])), 4),
        "stranger_recall_at_1": round(float(np.mean(first[genuine:])), 4) if len(first) > genuine else 1.0,
        "decision_agreement": round(float(np.mean([g[1] == w[1] for g, w in zip(got, want, strict=True)])), 4),
    }


def _batches(queries: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [queries[rng.choice(len(queries), BATCH, replace=False)] for _ in range(count)]


def _paired_latency(a: Matcher, b: Matcher, batches: list[np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    """Latency of ``a.identify`` and ``b.identify`` on the same batches, alternating (after a warm-up)."""
    a.identify(batches[0])
    b.identify(batches[0])
    ta, tb = [], []
    for i, q in enumerate(batches):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        t1 = _timed(partial(first.identify, q))
        t2 = _timed(partial(second.identify, q))
        ta.append(t1 if first is a else t2)
        tb.append(t2 if first is a else t1)
    return _stats(ta), _stats(tb)


def bench_size(persons: int, kinds: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(persons)
    faces = FaceLike(seed=1)
    base_rss = rss_mb()
    gallery = faces.people(rng, persons)
    picks = rng.choice(persons, args.genuine, replace=False)
    queries = np.concatenate([faces.probes(rng, gallery[picks]), faces.probes(rng, faces.people(rng, args.strangers))])
    names = [f"p{i}" for i in range(persons)]
    start = time.perf_counter()
    exact = Matcher(names, gallery, THRESHOLD, MIN_MARGIN, index=IndexSettings("exact"))
    result: dict[str, Any] = {
        "persons": persons,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "exact": {"build_s": round(time.perf_counter() - start, 3), "memory_mb": round(gallery.nbytes / 2**20, 1)},
    }
    truth = _identify(exact, queries)
    impostors = gallery[:2000] @ gallery[2000:4000].T
    genuine_best = np.array([exact.scores_of(queries[i : i + 1], [names[p]])[0, 0] for i, p in enumerate(picks[:200])])
    result["data"] = {
        "impostor_cosine_mean": round(float(impostors.mean()), 4),
        "impostor_cosine_sd": round(float(impostors.std()), 4),
        "impostor_cosine_p999": round(float(np.percentile(impostors, 99.9)), 4),
        "genuine_cosine_median": round(float(np.median(genuine_best)), 4),
        "named_by_exact": round(float(np.mean([t[1] is not None for t in truth])), 4),
        "genuine_named_right": round(float(np.mean([t[1] == names[p] for t, p in zip(truth, picks, strict=False)])), 4),
    }
    batches = _batches(queries, args.batches, rng)
    exact_alone = [_timed(partial(exact.identify, q)) for q in batches[: max(5, args.batches // 2)]]
    result["exact"].update(_stats(exact_alone))
    for kind in kinds:
        if kind == "hnsw" and args.hnsw_max_rows and persons > args.hnsw_max_rows:
            result.setdefault("skipped", {})[kind] = f"not built: more than --hnsw-max-rows {args.hnsw_max_rows} rows"
            continue
        gc.collect()
        before = rss_mb()
        start = time.perf_counter()
        matcher = Matcher(names, gallery, THRESHOLD, MIN_MARGIN, index=IndexSettings(kind))  # type: ignore[arg-type]
        build_s = time.perf_counter() - start
        row: dict[str, Any] = {
            "build_s": round(build_s, 2),
            "index_mb": round(matcher.index_nbytes / 2**20, 1),
            "rss_delta_mb": round(rss_mb() - before, 1),
            "search": matcher.describe_search(),
        }
        ann_ms, exact_ms = _paired_latency(matcher, exact, batches)
        row.update(ann_ms)
        row["exact_same_batches_ms_p50"] = exact_ms["ms_p50"]
        row.update(_quality(_identify(matcher, queries), truth, args.genuine))
        if kind in SWEEPS:
            knob, values = SWEEPS[kind]
            row["sweep"] = []
            for value in values:
                tuned = matcher.tuned(IndexSettings(kind, **{knob: value}))  # type: ignore[arg-type]
                tuned.identify(batches[0])
                point: dict[str, Any] = {knob: value}
                point.update(_quality(_identify(tuned, queries), truth, args.genuine))
                point.update(_stats([_timed(partial(tuned.identify, q)) for q in batches]))
                row["sweep"].append(point)
        result[kind] = row
        del matcher
        gc.collect()
        print(f"  {persons} {kind}: {json.dumps(row)}", flush=True)
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["rss_mb_peak_minus_start"] = round(rss_mb() - base_rss, 1)
    return result


def crossover(sizes: Sequence[int], args: argparse.Namespace) -> dict[str, Any]:
    """Exact against IVF and HNSW (defaults) on small galleries; the smallest size from which IVF is
    faster at recall@1 >= 0.99 and stays so at every larger size measured."""
    points = []
    faces = FaceLike(seed=1)
    for persons in sizes:
        rng = np.random.default_rng(persons)
        gallery = faces.people(rng, persons)
        picks = rng.choice(persons, min(args.genuine, persons), replace=False)
        queries = np.concatenate(
            [faces.probes(rng, gallery[picks]), faces.probes(rng, faces.people(rng, args.strangers))]
        )
        names = [f"p{i}" for i in range(persons)]
        exact = Matcher(names, gallery, THRESHOLD, MIN_MARGIN, index=IndexSettings("exact"))
        truth = _identify(exact, queries)
        batches = _batches(queries, args.batches, rng)
        point: dict[str, Any] = {"persons": persons, "load_avg": [round(x, 2) for x in os.getloadavg()]}
        for kind in ("ivf", "hnsw"):
            start = time.perf_counter()
            matcher = Matcher(names, gallery, THRESHOLD, MIN_MARGIN, index=IndexSettings(kind))
            build_s = time.perf_counter() - start
            ann_ms, exact_ms = _paired_latency(matcher, exact, batches)
            point[kind] = {"build_s": round(build_s, 2), **ann_ms, "exact_ms_p50": exact_ms["ms_p50"]}
            point[kind].update(_quality(_identify(matcher, queries), truth, len(picks)))
        points.append(point)
        print(f"  crossover {json.dumps(point)}", flush=True)
    wins = [p["ivf"]["ms_p50"] < p["ivf"]["exact_ms_p50"] and p["ivf"]["recall_at_1"] >= 0.99 for p in points]
    first = next((i for i in range(len(points)) if all(wins[i:])), None)
    return {"points": points, "ivf_faster_from": None if first is None else points[first]["persons"]}


def table(result: dict[str, Any]) -> str:
    """README's table: one row per size and search."""
    lines = [
        "| identities | search | build s | memory MiB | batch-32 ms p50 / p95 | exact ms p50 (same batches) | recall@1 | decisions agree |",
        "|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    for size in result["sizes"]:
        ex = size["exact"]
        lines.append(
            f"| {size['persons']:,} | exact numpy | {ex['build_s']:.2f} | {ex['memory_mb']:.0f} | "
            f"{ex['ms_p50']:.1f} / {ex['ms_p95']:.1f} | | 1 | 1 |"
        )
        for kind in ("flat", "ivf", "hnsw"):
            if kind in size.get("skipped", {}):
                lines.append(f"| | {kind} | {size['skipped'][kind]} | | | | | |")
            if kind not in size:
                continue
            r = size[kind]
            detail = r["search"].split("(")[1].split(")")[0]
            lines.append(
                f"| | {kind} ({detail}) | {r['build_s']:.1f} | +{r['index_mb']:.0f} | {r['ms_p50']:.1f} / {r['ms_p95']:.1f} | "
                f"{r['exact_same_batches_ms_p50']:.1f} | {r['recall_at_1']:.4f} | {r['decision_agreement']:.4f} |"
            )
    return "\n".join(lines)


def pin_threads(threads: int, argv: Sequence[str]) -> None:
    """Run with ``threads`` BLAS and OpenMP threads (numpy's OpenBLAS, FAISS's OpenMP and its own BLAS):
    they are read when the libraries load, so the process starts again with them set if needed."""
    want = str(threads)
    if os.environ.get("OPENBLAS_NUM_THREADS") == want and os.environ.get("OMP_NUM_THREADS") == want:
        return
    env = dict(os.environ, OPENBLAS_NUM_THREADS=want, OMP_NUM_THREADS=want)
    os.execve(sys.executable, [sys.executable, "-m", "bench.ann", *argv], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated gallery sizes (1000000: 2 GB)")
    parser.add_argument("--kinds", default="flat,ivf,hnsw", help="FAISS searches to compare with exact numpy")
    parser.add_argument("--batches", type=int, default=20, help="timed batches of 32 per search")
    parser.add_argument("--genuine", type=int, default=1000, help="queries of enrolled people (recall@1)")
    parser.add_argument("--strangers", type=int, default=250, help="queries of people not enrolled")
    parser.add_argument("--crossover", default="", help="comma-separated small sizes: exact vs IVF/HNSW")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for numpy and FAISS alike")
    parser.add_argument("--hnsw-max-rows", type=int, default=0, help="skip HNSW above this many rows (0: never)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    pin_threads(args.threads, sys.argv[1:])
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    kinds = [k for k in args.kinds.split(",") if k.strip()]
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "numpy": np.__version__,
        **faiss_info(),
        "threads": args.threads,
        "dim": DIM,
        "batch": BATCH,
        "threshold": THRESHOLD,
        "min_margin": MIN_MARGIN,
        "defaults": IndexSettings().__dict__,
        "data": "FaceLike: 64 look-alike groups, anisotropic spectrum; queries at cosine U(0.5, 0.8)",
    }
    if args.crossover:
        result["crossover"] = crossover([int(s) for s in args.crossover.split(",") if s.strip()], args)
    result["sizes"] = []
    for persons in sizes:
        result["sizes"].append(bench_size(persons, kinds, args))
        gc.collect()
        if args.json is not None:  # so far, in case a later size dies
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    text = json.dumps(result, indent=2)
    print(text)
    if result["sizes"]:
        print(table(result))
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
