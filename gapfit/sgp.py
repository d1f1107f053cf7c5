"""The sparse Gaussian process solver: streamed QR of the stacked system, K_MM factors.

The solver does not know what made its columns: a model's weights are the
concatenated weights of its terms, each term a few column blocks with a
diagonal block of K_MM (K_MM is block diagonal: terms and species blocks are
independent a priori). The weights solve

    min ‖Σ^{-1/2}(K_NM α − y)‖² + αᵀ K_MM α

by QR of the stacked matrix [Σ^{-1/2} K_NM ; Lᵀ] (K_MM + jitter = L Lᵀ),
accumulated chunk by chunk (TSQR), so memory stays bounded by the chunk size
and the M × M triangular factor.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import scipy.linalg

from .errors import NumericalError

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
        # the buffer grows to rows_per_flush as rows come: a small fit never touches the 1.5 GB (first
        # touching it took 9 s for 1,274 rows of 401 columns, measured)
        self._buf = np.zeros((k + min(self.rows_per_flush, 4 * k), k), order="F")
        self._fill = 0
        self._has_r = False
        self.n_rows = 0

    def _grow(self, rows: int) -> None:
        """Room for at least ``rows`` buffered rows (at most rows_per_flush), keeping what is there."""
        k = self.n_cols + 1
        cap = self._buf.shape[0] - k
        if rows <= cap:
            return
        new = np.zeros((k + min(self.rows_per_flush, max(rows, 2 * cap)), k), order="F")
        new[:k + self._fill] = self._buf[:k + self._fill]
        self._buf = new

    def add(self, A: np.ndarray, b: np.ndarray) -> None:
        """Append rows A (n, M) with targets b (n,)."""
        k = self.n_cols + 1
        pos = 0
        while pos < len(A):
            take = min(len(A) - pos, self.rows_per_flush - self._fill)
            self._grow(self._fill + take)
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

    def compact(self) -> np.ndarray:
        """The cheaper equivalent of R: the plain rows while there are at most (M+1)/2, else R.

        Either ``F`` satisfies ``FᵀF = [A | b]ᵀ[A | b]``. A triangular R of
        m < M + 1 rows is not m rows long in floating point (a nearly
        dependent leading column moves weight further down), so the rows
        themselves are the short form. Merging m plain rows costs less than
        merging a triangle while m is below about a third of M; solving with
        them, m/M of the triangle's cost.
        """
        k = self.n_cols + 1
        if not self._has_r and self._fill <= k // 2:
            return self._buf[k:k + self._fill].copy()
        return self.factor()

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


def kmm_cholesky(blocks: Sequence[np.ndarray], jitter: float, names: Optional[Sequence[str]] = None
                 ) -> List[np.ndarray]:
    """Lower Cholesky factors of each K_MM block + jitter · mean(diag) · I."""
    out = []
    for k, K in enumerate(blocks):
        K = np.array(K, dtype=np.float64)
        scale = float(np.mean(np.diag(K))) if len(K) else 1.0
        K[np.diag_indices_from(K)] += jitter * scale
        try:
            out.append(np.linalg.cholesky(K))
        except np.linalg.LinAlgError:
            what = names[k] if names else f"block {k}"
            raise NumericalError(
                f"K_MM of {what} is not positive definite with jitter {jitter}; "
                "increase the jitter (e.g. 1e-6) or use fewer sparse points") from None
    return out


def prior_rows(chol_blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Lᵀ of the block-diagonal K_MM = L Lᵀ as rows of the stacked least-squares system, (M, M)."""
    M = sum(len(L) for L in chol_blocks)
    Lt = np.zeros((M, M))
    o = 0
    for L in chol_blocks:
        Lt[o:o + len(L), o:o + len(L)] = L.T
        o += len(L)
    return Lt


def nystrom(K: np.ndarray, chol_blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Row-wise kᵀ K_MM⁻¹ k, block by block (K: (n, M) kernel rows)."""
    out = np.zeros(len(K))
    o = 0
    for L in chol_blocks:
        blk = K[:, o:o + len(L)]
        o += len(L)
        if not np.any(blk):
            continue
        # Lᵀ of the C-ordered factor is Fortran-ordered: LAPACK takes it without a copy
        v = scipy.linalg.solve_triangular(L.T, blk.T, trans="T", check_finite=False)
        out += np.einsum("mk,mk->k", v, v)
    return out


def solve_rt(R_ab: np.ndarray, K: np.ndarray) -> np.ndarray:
    """R⁻ᵀ Kᵀ, (M, n), for rows K (n, M) and R the leading M × M block of the upper-triangular ``R_ab``.

    ``R_ab`` is R itself (M × M) or the fit's (M+1)-square factor of
    ``[A | b]``. LAPACK wants Fortran order; R_abᵀ of the C-ordered factor is
    that already, whereas the block ``R_ab[:M, :M]`` would be copied on every
    call (765 MB at M = 9780: the copy took 3.4× the solve itself, measured).
    With the (M+1)-square factor the right-hand sides get a zero last entry:
    the first M unknowns of R_abᵀ v = [k; 0] are R⁻ᵀ k, the last is dropped.
    BLAS's trsm, not LAPACK's trtrs: the residual norm R_ab[M, M] is 0 for
    labels the model reproduces exactly (a Δ-model on its own baseline), and
    trtrs refuses any zero on the diagonal though only the dropped unknown
    divides by it. R's own diagonal is checked when the weights are solved.
    """
    R_ab = np.ascontiguousarray(R_ab, dtype=np.float64)
    n, M = K.shape
    B = np.zeros((R_ab.shape[0], n), order="F")
    B[:M] = K.T
    v = scipy.linalg.blas.dtrsm(1.0, R_ab.T, B, side=0, lower=1, trans_a=0, overwrite_b=1)
    return v[:M]


def posterior(K: np.ndarray, R_ab: np.ndarray) -> np.ndarray:
    """Row-wise kᵀ (RᵀR)⁻¹ k = ‖R⁻ᵀ k‖² (``R_ab`` as in :func:`solve_rt`)."""
    v = solve_rt(R_ab, K)
    return np.einsum("mk,mk->k", v, v)


def dtc_variance(K: np.ndarray, prior: np.ndarray, chol_blocks: Sequence[np.ndarray], R_ab: np.ndarray
                 ) -> np.ndarray:
    """Row-wise DTC predictive variance k** − kᵀ K_MM⁻¹ k + kᵀ (RᵀR)⁻¹ k, clipped at zero against rounding.

    ``R_ab``: R or the fit's (M+1)-square factor, as in :func:`solve_rt`.
    """
    return np.clip(prior - nystrom(K, chol_blocks) + posterior(K, R_ab), 0, None)


def merge_factors(factors: Sequence[np.ndarray]) -> np.ndarray:
    """Upper-triangular R of the stacked factors ``[R_1; R_2; ...]``, each n × n upper triangular or m × n rows.

    QR of ``[R_1; R_2]`` is the QR of the rows the two factors came from
    (up to row signs), so chunks factorised apart can be reduced in any
    order. LAPACK's triangular-pentagonal QR (dtpqrt) uses the zeros below
    the diagonals: about a quarter of the work of a QR of the stacked block.
    A block of m < n plain rows (see :meth:`QRAccumulator.compact`) costs
    O(m n²) to merge instead of O(n³). The result is n × n.
    """
    from scipy.linalg import lapack
    factors = [np.asarray(f, dtype=np.float64) for f in factors]
    if not factors:
        raise ValueError("no factors to merge")
    n = factors[0].shape[1]
    acc = np.zeros((n, n), order="F")
    if factors[0].shape == (n, n):
        acc[:] = np.triu(factors[0])
    else:
        factors = [acc.copy()] + factors
    for f in factors[1:]:
        if f.ndim != 2 or f.shape[1] != n or f.shape[0] > n:
            raise ValueError(f"factors must have {n} columns and at most {n} rows, got {f.shape}")
        m = len(f)
        if m == 0:
            continue
        square = m == n  # an n × n block is an upper-triangular factor; fewer rows are plain rows
        b = np.array(np.triu(f) if square else f, order="F")
        acc, _, _, info = lapack.dtpqrt(n if square else 0, max(1, min(64, n)), acc, b,
                                        overwrite_a=1, overwrite_b=1)
        if info != 0:
            raise NumericalError(f"QR merge failed (LAPACK info {info})")
    return np.triu(acc)


def stack_factors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One compact factor of two: plain rows stacked while at most half the columns, else the merged triangle."""
    if len(a) + len(b) <= a.shape[1] // 2:
        return np.vstack([a, b])
    return merge_factors([a, b])
