"""Norm-weighted feature fusion (AdaFace's official "pre_norm_vector_add", docs/adaface.md §6)."""

from __future__ import annotations

import numpy as np


def fuse(vectors: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """normalize(Σ nᵢ·fᵢ) of unit vectors ``vectors`` (N, D) with feature norms ``norms`` (N,).

    Low-quality (small-norm) features count less. Raises ValueError on empty input or when the
    weighted sum vanishes.
    """
    vectors = np.asarray(vectors, np.float64)
    norms = np.asarray(norms, np.float64)
    if vectors.ndim != 2 or norms.shape != (vectors.shape[0],) or vectors.shape[0] == 0:
        raise ValueError(
            f"fuse: expected (N, D) vectors and (N,) norms with N >= 1, got {vectors.shape}, {norms.shape}"
        )
    total = (vectors * norms[:, None]).sum(axis=0)
    length = float(np.linalg.norm(total))
    if not np.isfinite(length) or length <= 1e-12:
        raise ValueError("fuse: the weighted sum of the features is zero")
    return (total / length).astype(np.float32)
