"""Choosing sparse (inducing) points among the training environments.

Methods, per species, all seeded:

- ``"cur"`` (default, as gap_fit's ``cur_points``): rows sampled without
  replacement with probability proportional to their leverage scores in the
  descriptor matrix, from its leading singular vectors.
- ``"fps"``: farthest-point sampling in the kernel-induced distance
  d² = 2 - 2 (q̂·q̂')^ζ, started from a seeded random point.
- ``"random"``: uniform without replacement.

Exact duplicates (symmetry-equivalent environments) are removed first: they
make K_MM singular and add nothing.
"""
from __future__ import annotations

import numpy as np

METHODS = ("cur", "fps", "random")


def unique_rows(x: np.ndarray, decimals: int = 10) -> np.ndarray:
    """Indices of the first occurrence of each distinct row (rounded)."""
    _, idx = np.unique(np.round(x, decimals), axis=0, return_index=True)
    return np.sort(idx)


def select_sparse(x: np.ndarray, n_sparse: int, method: str, seed: int, zeta: float = 4.0) -> np.ndarray:
    """Indices of ``n_sparse`` rows of ``x`` (normalised descriptors) to use as sparse points."""
    if method not in METHODS:
        raise ValueError(f"sparse method must be one of {METHODS}, got {method!r}")
    cand = unique_rows(x)
    m = min(int(n_sparse), len(cand))
    if m == len(cand):
        return cand
    rng = np.random.default_rng(seed)
    xc = x[cand]
    if method == "random":
        pick = rng.choice(len(cand), size=m, replace=False)
    elif method == "cur":
        pick = _cur(xc, m, rng)
    else:
        pick = _fps(xc, m, rng, zeta)
    return np.sort(cand[pick])


def _cur(x: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    # Leverage scores from the top-k left singular vectors (Mahoney & Drineas,
    # PNAS 2009), the method behind gap_fit's cur_points. The singular vectors
    # come from the D x D Gram matrix: one BLAS product and a small eigh
    # instead of an SVD of the tall n x D matrix.
    k = max(1, min(m, x.shape[1], x.shape[0]) // 2)
    w, v = np.linalg.eigh(x.T @ x)
    w, v = w[::-1][:k], v[:, ::-1][:, :k]
    keep = w > w[0] * 1e-12
    u = (x @ v[:, keep]) / np.sqrt(w[keep])
    lev = np.sum(u ** 2, axis=1)
    # A floor keeps every environment reachable once m exceeds the rank.
    p = lev + 1e-3 * lev.mean()
    p /= p.sum()
    return rng.choice(len(x), size=m, replace=False, p=p)


def _fps(x: np.ndarray, m: int, rng: np.random.Generator, zeta: float) -> np.ndarray:
    n = len(x)
    chosen = np.empty(m, dtype=np.int64)
    chosen[0] = rng.integers(n)
    dist = np.full(n, np.inf)
    for k in range(1, m):
        c = x @ x[chosen[k - 1]]
        d = 2.0 - 2.0 * np.clip(c, 0, None) ** zeta
        np.minimum(dist, d, out=dist)
        dist[chosen[:k]] = -1.0
        chosen[k] = int(np.argmax(dist))
    return chosen
