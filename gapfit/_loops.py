"""Numba loops for the memory-bound steps BLAS cannot express.

Each walks the per-pair gradient array once, in place, without temporaries
the size of that array (which is the largest object gapfit holds).
"""
from __future__ import annotations

import numba
import numpy as np


def _jit(fn):
    """``numba.njit(cache=True)``, or without the on-disk cache where numba finds no writable place for it.

    (A read-only installation used by an account without a writable home or
    NUMBA_CACHE_DIR: numba then refuses ``cache=True`` at import time.)
    """
    try:
        return numba.njit(cache=True)(fn)
    except RuntimeError:
        return numba.njit(fn)


@_jit
def scatter_scaled(dst, rows, col_start, src, scale):
    """dst[rows[k], :, col_start + d] = src[k, :, d] * scale[d]."""
    n, nx, nd = src.shape
    for k in range(n):
        r = rows[k]
        for x in range(nx):
            for d in range(nd):
                dst[r, x, col_start + d] = src[k, x, d] * scale[d]


@_jit
def scale_inplace(a, scale):
    """a[..., d] *= scale[d] for a C-contiguous array viewed as (n, D)."""
    n, nd = a.shape
    for k in range(n):
        for d in range(nd):
            a[k, d] *= scale[d]


@_jit
def pair_projection(grad, qhat, centre):
    """proj[p, x] = grad[p, x, :] · qhat[centre[p], :]."""
    n, nx, nd = grad.shape
    out = np.zeros((n, nx))
    for p in range(n):
        c = centre[p]
        for x in range(nx):
            s = 0.0
            for d in range(nd):
                s += grad[p, x, d] * qhat[c, d]
            out[p, x] = s
    return out


def contract_forces(grad, h, centre, neighbour, n_atoms):
    """F[j, x] = -Σ_{p: neighbour[p] = j} grad[p, x, :] · h[centre[p], :]."""
    f = np.zeros((n_atoms, grad.shape[1]))
    accumulate_forces(f, grad, h, centre, neighbour)
    return f

@_jit
def add_pair_rows(out, T, centre_row, neighbour, dKn, Pc, proj):
    """out[3 j + x, :] += T[b, x, :] · dKn[c, :] − proj[b, x] · Pc[c, :] for pair b = (c, j).

    The kernel-side chain rule of a force design row and its scatter onto
    the moved atom, in one pass over the GEMM result ``T`` (pairs, 3, M).
    """
    nb, nx, m = T.shape
    for b in range(nb):
        c = centre_row[b]
        j = neighbour[b]
        for x in range(nx):
            r = 3 * j + x
            p = proj[b, x]
            for k in range(m):
                out[r, k] += T[b, x, k] * dKn[c, k] - p * Pc[c, k]


@_jit
def accumulate_forces(f, grad, h, centre, neighbour):
    """f[j, x] -= Σ_d grad[p, x, d] · h[centre[p], d] for each pair p with neighbour[p] = j (in place)."""
    n, nx, nd = grad.shape
    for p in range(n):
        c = centre[p]
        j = neighbour[p]
        for x in range(nx):
            s = 0.0
            for d in range(nd):
                s += grad[p, x, d] * h[c, d]
            f[j, x] -= s
