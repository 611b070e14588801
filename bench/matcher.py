"""Speed of brute-force gallery matching (``stream.identity.matcher``) on CPU.

    python -m bench.matcher [--sizes 10000,100000] [--dim 512] [--batch 32] [--runs 15] [--json PATH]

Builds a synthetic gallery of random unit templates per size, then times ``Matcher.match`` on
batches of random unit queries: median and 90th-percentile ms per batch, with the share spent
in the one float32 matrix product. Also reports the matcher's build time (validation, no copy)
and the template matrix's memory. Prints one JSON object. 1,000,000 persons (2 GB of float32
at 512-d) runs only when asked for in ``--sizes``.

Where an ANN index takes over: brute force reads the whole (P, D) matrix once per batch, so
its cost grows linearly with P and is bound by memory bandwidth. The matcher therefore switches to
a FAISS shortlist (IVF by default) re-scored with exact cosines from ``recognition.index_auto_rows``
gallery rows on: ``python -m bench.ann`` measures where (the crossover) and compares exact numpy,
FAISS flat, IVF and HNSW at 10⁴–10⁶ identities (build time, memory, latency, recall@1, decision
agreement). This script times the exact matcher alone. A GPU matmul (torch) is another route for
10⁶+ when a GPU is present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from stream.identity.ann import IndexSettings
from stream.identity.matcher import Matcher

CHUNK = 65_536  # rows generated at a time, so 1M x 512 never needs a float64 copy


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    out = np.empty((rows, dim), np.float32)
    for start in range(0, rows, CHUNK):
        block = rng.standard_normal((min(CHUNK, rows - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def bench_size(persons: int, dim: int, batch: int, runs: int, seed: int = 0) -> dict[str, float | int]:
    rng = np.random.default_rng(seed)
    templates = unit_rows(rng, persons, dim)
    names = [f"p{i}" for i in range(persons)]
    start = time.perf_counter()
    matcher = Matcher(names, templates, threshold=0.4, min_margin=0.05, top_k=3, index=IndexSettings("exact"))
    build_s = time.perf_counter() - start
    batches = [unit_rows(rng, batch, dim) for _ in range(runs + 1)]
    matcher.match(batches[0])  # warm-up
    total = np.array([_ms(lambda q=q: matcher.match(q)) for q in batches[1:]])
    matmul = np.array([_ms(lambda q=q: q @ matcher.vectors.T) for q in batches[1:]])
    return {
        "persons": persons,
        "template_mb": round(matcher.vectors.nbytes / 2**20, 1),
        "build_s": round(build_s, 3),
        "ms_per_batch_median": round(float(np.median(total)), 2),
        "ms_per_batch_p90": round(float(np.percentile(total, 90)), 2),
        "matmul_ms_median": round(float(np.median(matmul)), 2),
        "queries_per_s": round(batch / (float(np.median(total)) / 1000), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated gallery sizes (1000000: 2 GB)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32, help="queries per batch")
    parser.add_argument("--runs", type=int, default=15, help="timed batches per size")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    result = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "numpy": np.__version__,
        "dim": args.dim,
        "batch": args.batch,
        "runs": args.runs,
        "sizes": [bench_size(n, args.dim, args.batch, args.runs) for n in sizes],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
