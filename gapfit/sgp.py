"""Sparse Gaussian process algebra: design rows, streamed QR solve, variances.

The model is E = Σ_i e0(Z_i) + Σ_i Σ_m α_m k(q̂_i, x_m) with sparse points
x_m of the centre's species. Observations are total energies, forces
(−∂E/∂r) and virials (∂E/∂ε, the strain derivative, so that stress =
virial / volume). Each observation is linear in α, with a *design row*
built here from the sparse per-pair descriptor gradients; no dense
(atoms × atoms × 3 × D) array is ever formed.

The weights solve min ‖Σ^{-1/2}(K_NM α − y)‖² + αᵀ K_MM α by QR of the
stacked matrix [Σ^{-1/2} K_NM ; Lᵀ] (K_MM + jitter = L Lᵀ), accumulated
chunk by chunk (TSQR) so that memory stays bounded by the chunk size and
the M × M triangular factor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import scipy.linalg
import scipy.sparse

from .descriptors.base import FrameDescriptors
from .descriptors.base import normalised_pair_gradients
from .errors import NumericalError
from .kernels import dot_kernel, kernel_from_dot

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
# Pairs per GEMM: bounds the (3·pairs × M) temporary to a few hundred MB.
_PAIRS_PER_GEMM = 8192


@dataclass
class SparseSet:
    """Sparse points of every species and where their weights sit in α."""

    points: Dict[int, np.ndarray]  # Z -> (M_Z, D) normalised descriptors
    delta: float
    zeta: float

    @property
    def species(self) -> List[int]:
        return sorted(self.points)

    @property
    def offsets(self) -> Dict[int, int]:
        off, out = 0, {}
        for z in self.species:
            out[z] = off
            off += len(self.points[z])
        return out

    @property
    def n_total(self) -> int:
        return sum(len(p) for p in self.points.values())


@dataclass
class DesignRows:
    """Rows of ∂(observable)/∂α for a chunk of frames (kernel sums only, no e0).

    energy : (n_frames, M) local-energy kernel sums per frame.
    gradient : (Σ 3 n_atoms, M) ∂E/∂r, row 3 j + x within each frame (forces are −gradient).
    virial : (n_frames, 6, M) ∂E/∂ε in Voigt order, or None when not asked.
    atom_start : (n_frames + 1,) first atom of each frame in the chunk.
    local : (Σ n_atoms, M) per-atom kernel rows, when asked.
    """

    energy: np.ndarray
    gradient: Optional[np.ndarray]
    virial: Optional[np.ndarray]
    atom_start: np.ndarray
    local: Optional[np.ndarray] = None


def design_rows(descs: Sequence[FrameDescriptors], sparse: SparseSet, *, forces: bool = True,
                virial: bool = True, local: bool = False) -> DesignRows:
    """Assemble design rows for a chunk of frames from their descriptors."""
    n_frames = len(descs)
    n_at = np.array([d.n_atoms for d in descs], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(n_at)])
    n_tot = int(start[-1])
    M = sparse.n_total
    numbers = np.concatenate([d.numbers for d in descs])
    q = np.concatenate([d.values for d in descs])
    norms = np.concatenate([d.norms for d in descs])
    frame_of_atom = np.repeat(np.arange(n_frames), n_at)
    E = np.zeros((n_frames, M))
    G = np.zeros((3 * n_tot, M)) if forces else None
    W9 = np.zeros((n_frames, 9, M)) if virial else None
    L = np.zeros((n_tot, M)) if local else None

    if forces:
        pc = np.concatenate([d.pair_centre + s for d, s in zip(descs, start[:-1])])
        pn = np.concatenate([d.pair_neighbour + s for d, s in zip(descs, start[:-1])])
        pg_parts = [d.pair_gradients for d in descs]
        pp_parts = [d.pair_projection for d in descs]
        pair_start = np.concatenate([[0], np.cumsum([len(d.pair_centre) for d in descs])])
    periodic = [d.strain_gradients is not None for d in descs]

    for z, X in sparse.points.items():
        cols = slice(sparse.offsets[z], sparse.offsets[z] + len(X))
        atoms_z = np.flatnonzero(numbers == z)
        if len(atoms_z) == 0:
            continue
        c = q[atoms_z] @ X.T
        K, dK = kernel_from_dot(c, sparse.delta, sparse.zeta)
        ind = scipy.sparse.csr_matrix((np.ones(len(atoms_z)), (frame_of_atom[atoms_z], np.arange(len(atoms_z)))),
                                      shape=(n_frames, len(atoms_z)))
        E[:, cols] = ind @ K
        if local:
            L[atoms_z, cols] = K
        if not (forces or virial):
            continue
        # Chain rule through q̂ = q/|q| applied on the kernel side, so the raw
        # (column-sparse) gradients go straight into the GEMM:
        # dk/dq · dq = dKn ⊙ (dq·x) − (dKn ⊙ c) (dq·q̂), with dKn = dK/|q|.
        dKn = dK / norms[atoms_z][:, None]
        Pc = dKn * c
        if forces:
            row_in_z = np.full(n_tot, -1, dtype=np.int64)
            row_in_z[atoms_z] = np.arange(len(atoms_z))
            G[:, cols] += _pair_contraction(pc, pn, pg_parts, pp_parts, pair_start, row_in_z, dKn, Pc, X,
                                            n_tot, numbers)
        if virial and any(periodic):
            for f in np.flatnonzero(periodic):
                sel = atoms_z[(atoms_z >= start[f]) & (atoms_z < start[f + 1])]
                if len(sel) == 0:
                    continue
                loc = sel - start[f]
                S = descs[f].strain_gradients[loc]  # (n, 3, 3, D) raw
                sproj = descs[f].strain_projection[loc].reshape(len(sel), 9)
                T = (S.reshape(-1, S.shape[-1]) @ X.T).reshape(len(sel), 9, len(X))
                rz = np.searchsorted(atoms_z, sel)
                W9[f, :, cols] = np.einsum("nam,nm->am", T, dKn[rz]) - sproj.T @ Pc[rz]
    Wv = None
    if virial:
        W = W9.reshape(n_frames, 3, 3, M)
        Wv = np.stack([0.5 * (W[:, a, b] + W[:, b, a]) for a, b in VOIGT], axis=1)
    return DesignRows(E, G, Wv, start, L)


def _pair_contraction(pc, pn, pg_parts, pp_parts, pair_start, row_in_z, dKn, Pc, X, n_tot, numbers_of_atoms):
    """Σ over pairs (i, j) with centre i of this species of dk(q̂_i, X)/dr_j."""
    M = len(X)
    out = np.zeros((3 * n_tot, M))
    mask = row_in_z[pc] >= 0
    # Pairs are grouped by neighbour species (self pairs apart): moving an atom
    # of species Z only changes the features that involve Z, so the GEMM can
    # skip columns that are zero throughout the group (about half of them in
    # a three-species molecule). Exact, just fewer flops.
    groups = [np.flatnonzero(mask & (pc == pn))]
    nb_species = numbers_of_atoms[pn]
    for zn in np.unique(nb_species):
        groups.append(np.flatnonzero(mask & (pc != pn) & (nb_species == zn)))
    for sel in groups:
        _contract_group(sel, pc, pn, pg_parts, pp_parts, pair_start, row_in_z, dKn, Pc, X, out, n_tot)
    return out


def _contract_group(sel, pc, pn, pg_parts, pp_parts, pair_start, row_in_z, dKn, Pc, X, out, n_tot):
    M = len(X)
    # Walk through the selected pairs in slices; gradients live per frame.
    for lo in range(0, len(sel), _PAIRS_PER_GEMM):
        idx = sel[lo:lo + _PAIRS_PER_GEMM]
        grads = _gather_pairs(pg_parts, pair_start, idx)  # (B, 3, D)
        B = len(idx)
        nz = np.flatnonzero(np.any(grads != 0.0, axis=(0, 1)))
        if len(nz) < 0.9 * grads.shape[-1]:
            T = (np.ascontiguousarray(grads[:, :, nz]).reshape(3 * B, -1) @ X[:, nz].T).reshape(B, 3, M)
        else:
            T = (grads.reshape(3 * B, -1) @ X.T).reshape(B, 3, M)
        rz = row_in_z[pc[idx]]
        T *= dKn[rz][:, None, :]
        proj = _gather_pairs(pp_parts, pair_start, idx)  # (B, 3)
        T -= proj[:, :, None] * Pc[rz][:, None, :]
        rows = (3 * pn[idx][:, None] + np.arange(3)[None, :]).ravel()
        S = scipy.sparse.csr_matrix((np.ones(3 * B), (rows, np.arange(3 * B))), shape=(3 * n_tot, 3 * B))
        out += S @ T.reshape(3 * B, M)


def _gather_pairs(parts, pair_start, idx):
    """Rows ``idx`` (global pair numbers, ascending) from per-frame gradient arrays."""
    f_lo = np.searchsorted(pair_start, idx[0], side="right") - 1
    f_hi = np.searchsorted(pair_start, idx[-1], side="right") - 1
    if f_lo == f_hi:
        return parts[f_lo][idx - pair_start[f_lo]]
    frame = np.searchsorted(pair_start, idx, side="right") - 1
    out = np.empty((len(idx),) + parts[f_lo].shape[1:])
    for f in range(f_lo, f_hi + 1):
        m = frame == f
        if m.any():
            out[m] = parts[f][idx[m] - pair_start[f]]
    return out


class QRAccumulator:
    """Streamed QR (TSQR) of a tall matrix [A | b] given in row chunks.

    Rows are written straight into a preallocated Fortran-ordered buffer
    under the running triangular factor, and LAPACK's dgeqrf factorises it in
    place: no copies of the buffer, and memory bounded by the buffer plus the
    (M+1) × (M+1) factor whatever the number of observations.
    """

    def __init__(self, n_cols: int, rows_per_flush: Optional[int] = None):
        self.n_cols = n_cols
        k = n_cols + 1
        # Each flush re-factors the carried R (k rows): large flushes amortise
        # that; ~1.5 GB of buffered rows bounds the memory.
        self.rows_per_flush = rows_per_flush or max(3 * k, int(1.5e9 / (8 * k)))
        self._buf = np.zeros((k + self.rows_per_flush, k), order="F")
        self._fill = 0
        self._has_r = False
        self.n_rows = 0

    def add(self, A: np.ndarray, b: np.ndarray) -> None:
        """Append rows A (n, M) with targets b (n,)."""
        k = self.n_cols + 1
        pos = 0
        while pos < len(A):
            take = min(len(A) - pos, self.rows_per_flush - self._fill)
            lo = k + self._fill
            self._buf[lo:lo + take, :-1] = A[pos:pos + take]
            self._buf[lo:lo + take, -1] = b[pos:pos + take]
            self._fill += take
            pos += take
            self.n_rows += take
            if self._fill == self.rows_per_flush:
                self._flush(self._buf)

    def _flush(self, a: np.ndarray) -> None:
        from scipy.linalg import lapack
        k = self.n_cols + 1
        lwork = int(lapack.dgeqrf_lwork(a.shape[0], a.shape[1])[0])
        qr, _, _, info = lapack.dgeqrf(a, lwork=max(lwork, 1), overwrite_a=True)
        if info != 0:
            raise NumericalError(f"QR factorisation failed (LAPACK info {info})")
        R = np.triu(qr[:k])
        self._buf[:k] = R
        # only the rows written since the last flush are dirty; leaving the
        # rest untouched keeps the unused part of the buffer unallocated
        self._buf[k:k + self._fill] = 0.0
        self._fill = 0
        self._has_r = True

    def factor(self) -> np.ndarray:
        """Upper-triangular R of [A | b], shape (M+1, M+1)."""
        k = self.n_cols + 1
        if self._fill or not self._has_r:
            used = np.asfortranarray(self._buf[:k + self._fill])
            self._flush(used)
        return np.ascontiguousarray(self._buf[:k])


def qr_r(a: np.ndarray) -> np.ndarray:
    """Upper-triangular R (n_cols × n_cols) of a tall matrix, by LAPACK dgeqrf in place on a Fortran copy."""
    from scipy.linalg import lapack
    a = np.asfortranarray(a, dtype=np.float64)
    lwork = int(lapack.dgeqrf_lwork(a.shape[0], a.shape[1])[0])
    qr, _, _, info = lapack.dgeqrf(a, lwork=max(lwork, 1), overwrite_a=True)
    if info != 0:
        raise NumericalError(f"QR factorisation failed (LAPACK info {info})")
    n = a.shape[1]
    R = np.zeros((n, n))
    k = min(qr.shape)
    R[:k] = np.triu(qr[:k])
    return R


def solve_from_factor(Rab: np.ndarray):
    """Weights α, the triangular factor R of A and the residual norm from R of [A | b]."""
    M = Rab.shape[0] - 1
    if not np.all(np.isfinite(Rab)):
        raise NumericalError("the training system holds NaN or inf (from descriptors or labels); "
                             "check the data for overlapping atoms or absurd values")
    R = Rab[:M, :M]
    z = Rab[:M, M]
    diag = np.abs(np.diag(R))
    if np.any(diag <= 1e-300):
        raise NumericalError("singular sparse-GP system: the training data do not determine the weights; "
                             "increase the jitter (e.g. --jitter 1e-6) or use fewer sparse points")
    alpha = scipy.linalg.solve_triangular(R, z, check_finite=False)
    return alpha, np.ascontiguousarray(R), float(abs(Rab[M, M]))


def kmm_cholesky(sparse: SparseSet, jitter: float) -> Dict[int, np.ndarray]:
    """Lower Cholesky factor of K_MM + jitter·δ²·I, per species (K_MM is block diagonal)."""
    out = {}
    for z, X in sparse.points.items():
        K = dot_kernel(X, X, sparse.delta, sparse.zeta)[0]
        K[np.diag_indices_from(K)] += jitter * sparse.delta ** 2
        try:
            out[z] = np.linalg.cholesky(K)
        except np.linalg.LinAlgError:
            raise NumericalError(
                f"K_MM of species {z} is not positive definite with jitter {jitter}; "
                "increase the jitter (e.g. 1e-6) or use fewer sparse points") from None
    return out


def prior_rows(sparse: SparseSet, kmm_chol: Dict[int, np.ndarray]) -> np.ndarray:
    """Lᵀ of K_MM = L Lᵀ as rows of the stacked least-squares system, (M, M).

    K_MM is block diagonal by species, so Lᵀ is placed block by block.
    """
    M = sparse.n_total
    Lt = np.zeros((M, M))
    for z, Lz in kmm_chol.items():
        o = sparse.offsets[z]
        Lt[o:o + len(Lz), o:o + len(Lz)] = Lz.T
    return Lt


def force_prior_variance(desc: FrameDescriptors, delta: float, zeta: float) -> np.ndarray:
    """Prior variance of each force component, (n_atoms, 3), exactly.

    Var F_jx = Σ_{i,i'} u_i ᵀ ∂²k(q̂_i, q̂_i')/∂q̂_i∂q̂_i' u_i' with u_i = ∂q̂_i/∂r_jx,
    over centres i, i' of equal species whose environments contain j.
    """
    n = desc.n_atoms
    out = np.zeros((n, 3))
    order = np.argsort(desc.pair_neighbour, kind="stable")
    bounds = np.searchsorted(desc.pair_neighbour[order], np.arange(n + 1))
    q = desc.values
    dd = delta * delta
    for j in range(n):
        p = order[bounds[j]:bounds[j + 1]]
        if len(p) == 0:
            continue
        ci = desc.pair_centre[p]
        U = normalised_pair_gradients(desc, p)  # (k, 3, D)
        Q = q[ci]
        C = np.clip(Q @ Q.T, 0, None)
        same = desc.numbers[ci][:, None] == desc.numbers[ci][None, :]
        c1 = np.where(same, zeta * C ** (zeta - 1), 0.0)
        c2 = np.where(same, zeta * (zeta - 1) * C ** (zeta - 2) if zeta != 1 else 0.0, 0.0)
        for x in range(3):
            Ux = U[:, x, :]
            A = Ux @ Q.T  # A[i, i'] = u_i · q̂_i'
            B = Ux @ Ux.T
            out[j, x] = dd * np.sum(c2 * A * A.T + c1 * B)
    return out
