"""Draws of the part of a sparse GP's uncertainty its sparse points cannot express, for committee members.

A SOAP term's local energy is a GP, ε ~ GP(0, k). The sparse model writes it
as ε(x) = k(x, M) α, which splits the prior into what the sparse points M
span and the residual r ~ GP(0, k_r) with

    k_r(x, y) = k(x, y) − k(x, M) K_MM⁻¹ k(M, y),

independent of the data under the DTC approximation the fit makes (the data
see ε only through M). A weight-space committee (α from its posterior) leaves
r out: far from the sparse points, where k_r(x, x) → δ², its spread collapses
to what the weights alone allow, which is why it misses extrapolation.

Here each member also carries a draw of r, exactly, at the environments it is
asked about. The draw is kept on a growing set U of environments, chosen by
pivoted Cholesky: an environment joins U when its residual variance, given
the values already drawn on U, exceeds ``tolerance · δ²``. Writing
K_r(U, U) = L Lᵀ and the member's values r_U = L w with w ~ N(0, I), the
member's residual is the GP conditional mean

    r(x) = k_r(x, U) L⁻ᵀ w = k(x, U) β − k(x, M) K_MM⁻¹ K_MU β,   β = L⁻ᵀ w,

a sum of kernels to the points U and M: the members' energies, forces and
stresses come from design rows against U and a correction of the weights on
M, in the same algebra as the weight-space part. New environments extend U
by drawing only their new, whitened coordinates (appending rows to w); the
values already drawn do not change, so a member stays one function across
every frame it predicts (a bulk and a slab cut from it, every frame of a
trajectory). The values are pinned, not the gradients: a member's forces
and stress are the exact derivatives of its current function, which new
environments refine near them. Environments whose remaining variance is below the tolerance
are not added; their leftover variance, at most ``tolerance · δ²`` per atom,
is the approximation. ``max_points`` bounds U per species (memory
``max_points²`` doubles); beyond it nothing more is added and
:attr:`ResidualDraws.uncovered_max` reports the largest variance left out.

Every term is drawn: SOAP terms on their atoms' environments, the two- and
three-body terms on their sites' coordinates (the residual of g(t), which
enters a site's energy times its cutoff weight). The two-body residual is
not small: in the default Cu model its 30 sparse points leave 98 % of a
32-atom frame's predicted energy variance, summed over ~1,300 correlated
pairs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.linalg

from .kernels import dot_kernel

log = logging.getLogger("gapfit")


def _lower_solve(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    return scipy.linalg.solve_triangular(L, B, lower=True, check_finite=False)


class _SoapKind:
    """SOAP: blocks are species, candidates the normalised environments of that species."""

    @staticmethod
    def keys(term) -> list:
        return list(term.blocks)

    @staticmethod
    def points(term, key) -> Tuple[np.ndarray, int]:
        return term.points[key], term.offsets[key]

    @staticmethod
    def kernel(term):
        delta, zeta = term.delta_eV, term.zeta_
        return lambda A, B: dot_kernel(A, B, delta, zeta)[0]

    @staticmethod
    def prior_diagonal(term, Q: np.ndarray) -> np.ndarray:
        return term.delta_eV ** 2 * np.einsum("id,id->i", Q, Q) ** term.zeta_

    @staticmethod
    def candidates(desc, key) -> np.ndarray:
        return desc.values[desc.numbers == key]

    @staticmethod
    def with_points(term, points: Dict) -> object:
        aux = type(term).__new__(type(term))
        aux.__dict__ = dict(term.__dict__)  # shares the descriptor calculator
        aux.points = dict(points)
        return aux


class _SiteKind:
    """Two- and three-body terms: blocks are site keys, candidates the sites' coordinates t."""

    @staticmethod
    def keys(term) -> list:
        return [q for q, _, _ in term._blocks()]

    @staticmethod
    def points(term, key) -> Tuple[np.ndarray, int]:
        for q, X, off in term._blocks():
            if q == key:
                return X, off
        raise KeyError(key)

    @staticmethod
    def kernel(term):
        from .terms.sites import _se_kernel
        theta, delta = float(term.theta), term.delta_eV
        return lambda A, B: _se_kernel(A, B, theta, delta)

    @staticmethod
    def prior_diagonal(term, Q: np.ndarray) -> np.ndarray:
        return np.full(len(Q), term.delta_eV ** 2)

    @staticmethod
    def candidates(desc, key) -> np.ndarray:
        return desc.t[desc.key_bounds[key]:desc.key_bounds[key + 1]]

    @staticmethod
    def with_points(term, points: Dict) -> object:
        aux = type(term).__new__(type(term))
        aux.__dict__ = dict(term.__dict__)
        d = next(x for x in term._sparse if len(x)).shape[1]
        aux._sparse = [points.get(q, np.zeros((0, d))) for q in range(len(term._sparse))]
        return aux


def _kind_of(term):
    from .terms.sites import _SiteTerm
    from .terms.soap import Soap
    if isinstance(term, Soap):
        return _SoapKind
    if isinstance(term, _SiteTerm):
        return _SiteKind
    return None


@dataclass
class _Block:
    """One term's one species block: its sparse points and the points U drawn on so far."""

    term: int
    z: int  # the block's key: species (SOAP) or site key index
    col0: int  # the model column of this block's first sparse point
    X_M: np.ndarray  # (m, D) sparse points
    L_M: np.ndarray  # (m, m) lower Cholesky factor of K_MM (+ the fit's jitter)
    delta: float
    kernel: object  # k(A, B) of the term
    kind: object
    term_obj: object
    X_U: np.ndarray = field(default=None)  # (u, D)
    A_U: np.ndarray = field(default=None)  # (m, u) L_M⁻¹ K_MU
    L_U: np.ndarray = field(default=None)  # (u, u) lower factor of K_r(U, U)
    w: np.ndarray = field(default=None)  # (u, K) whitened draws

    @property
    def n_points(self) -> int:
        return 0 if self.X_U is None else len(self.X_U)

    def k(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return self.kernel(A, B)


class ResidualDraws:
    """K joint draws of every SOAP term's residual GP, extended to each frame's environments on demand.

    Parameters
    ----------
    state : FittedState
        The fitted model's state (terms, sparse points, K_MM factors).
    n_members : int
    seed : int
        With the same frames asked in the same order, the same draws.
    tolerance : float
        An environment joins U when its residual variance given U exceeds
        ``tolerance · δ²`` (relative to the term's prior variance).
    max_points : int
        At most this many environments per term and species.
    """

    def __init__(self, state, n_members: int, seed: int, *, tolerance: float = 1e-10, max_points: int = 3000):
        if not (tolerance > 0):
            raise ValueError(f"tolerance must be positive, got {tolerance!r}")
        self.n_members = int(n_members)
        self.tolerance = float(tolerance)
        self.max_points = int(max_points)
        self.terms = state.terms
        # a stream of its own: the weight-space draws use default_rng(seed)
        self.rng = np.random.default_rng([int(seed), 1])
        #: largest residual variance (eV²) of an environment left out because U was full
        self.uncovered_max = 0.0
        self.blocks: Dict[Tuple[int, int], _Block] = {}
        chol = list(state.kmm_chol)
        term_of_block = state.block_terms
        term_col0 = np.concatenate([[0], np.cumsum([t.n_columns for t in state.terms])])
        seen: Dict[int, int] = {}
        for b, t in enumerate(term_of_block):
            j = seen.get(t, 0)
            seen[t] = j + 1
            term = state.terms[t]
            kind = _kind_of(term)
            if kind is None:
                continue
            z = kind.keys(term)[j]
            X, off = kind.points(term, z)
            if len(X) != len(chol[b]):
                raise ValueError(f"K_MM factor {b} has {len(chol[b])} rows, term {t} block {z} {len(X)} points")
            self.blocks[(t, z)] = _Block(t, z, int(term_col0[t] + off), X, chol[b], term.delta_eV,
                                         kind.kernel(term), kind, term)
        self._beta: Optional[Dict[Tuple[int, int], np.ndarray]] = None
        self._correction: Optional[np.ndarray] = None  # weight_correction's, valid while _beta is

    @property
    def n_points(self) -> int:
        """Environments drawn on, over all terms and species."""
        return int(sum(b.n_points for b in self.blocks.values()))

    # ------------------------------------------------------------ extension
    def cover(self, frame_descs: Sequence[object]) -> int:
        """Draw the members' residuals at every environment of one frame not yet covered; returns how many were added.

        ``frame_descs``: each term's descriptors of the frame (one entry per term).
        """
        added = 0
        for (t, z), blk in self.blocks.items():
            Q = blk.kind.candidates(frame_descs[t], z)
            if len(Q):
                added += self._cover_block(blk, Q)
        if added:
            self._beta = self._correction = None
        return added

    def _cover_block(self, blk: _Block, Q: np.ndarray) -> int:
        dd = blk.delta ** 2
        AQ = _lower_solve(blk.L_M, blk.k(blk.X_M, Q))  # (m, n)
        var = blk.kind.prior_diagonal(blk.term_obj, Q) - np.einsum("mi,mi->i", AQ, AQ)
        CQ = None
        if blk.n_points:
            KrUQ = blk.k(blk.X_U, Q) - blk.A_U.T @ AQ
            CQ = _lower_solve(blk.L_U, KrUQ)  # (u, n)
            var -= np.einsum("ui,ui->i", CQ, CQ)
        threshold = self.tolerance * dd
        room = self.max_points - blk.n_points
        chosen: List[int] = []
        V = np.zeros((min(room, len(Q), 64), len(Q)))  # rows: the new factor's columns; doubled as needed
        # pivoted Cholesky of the conditional residual kernel over this frame's environments
        while True:
            j = int(np.argmax(var))
            if var[j] <= threshold:
                break
            if len(chosen) >= room:
                if not self.uncovered_max:  # once: a committee predicts many frames
                    log.warning("committee: %d residual draws reached for term %d, block %d (max_points); "
                                "environments beyond them get the draws' conditional mean, so the spread is a "
                                "lower bound there (Committee(..., max_points=N) raises the limit, N² doubles of "
                                "memory)", self.max_points, blk.term, blk.z)
                self.uncovered_max = max(self.uncovered_max, float(var[j]))
                break
            s = len(chosen)
            if s == len(V):
                V = np.vstack([V, np.zeros((min(len(V), room - s), len(Q)))])
            col = blk.k(Q, Q[j:j + 1])[:, 0] - AQ.T @ AQ[:, j] - V[:s].T @ V[:s, j]
            if CQ is not None:
                col -= CQ.T @ CQ[:, j]
            V[s] = col / np.sqrt(var[j])
            var = var - V[s] * V[s]
            var[j] = 0.0
            chosen.append(j)
        if not chosen:
            return 0
        S = Q[chosen]
        A_S = AQ[:, chosen]
        B = CQ[:, chosen] if CQ is not None else None
        # the pivoted factor itself is the new block of L: exact, and no jitter that
        # would make the member's values at U move when U grows
        L2 = np.tril(V[:len(chosen)][:, chosen].T)
        w_new = self.rng.standard_normal((len(chosen), self.n_members))
        if blk.n_points:
            u, s = blk.n_points, len(chosen)
            L = np.zeros((u + s, u + s))
            L[:u, :u] = blk.L_U
            L[u:, :u] = B.T
            L[u:, u:] = L2
            blk.L_U = L
            blk.X_U = np.vstack([blk.X_U, S])
            blk.A_U = np.hstack([blk.A_U, A_S])
            blk.w = np.vstack([blk.w, w_new])
        else:
            blk.L_U, blk.X_U, blk.A_U, blk.w = L2, S, A_S, w_new
        return len(chosen)

    # ------------------------------------------------------------ coefficients
    def _betas(self) -> Dict[Tuple[int, int], np.ndarray]:
        if self._beta is None:
            self._beta = {key: scipy.linalg.solve_triangular(b.L_U, b.w, lower=True, trans="T", check_finite=False)
                          for key, b in self.blocks.items() if b.n_points}
        return self._beta

    def weight_correction(self, n_columns: int) -> np.ndarray:
        """(n_columns, K): −K_MM⁻¹ K_MU β on each block's sparse-point columns, zero elsewhere.

        Kept until new draws are made (most frames of a run add none).
        """
        if self._beta is not None and self._correction is not None and len(self._correction) == n_columns:
            return self._correction
        out = np.zeros((n_columns, self.n_members))
        for key, beta in self._betas().items():
            b = self.blocks[key]
            out[b.col0:b.col0 + len(b.X_M)] = -scipy.linalg.solve_triangular(
                b.L_M, b.A_U @ beta, lower=True, trans="T", check_finite=False)
        self._correction = out
        return out

    def rows(self, frame_descs: Sequence[object], *, forces: bool, virial: bool):
        """Design rows against U of one frame and the coefficients they multiply: a list of (TermRows, (u, K))."""
        out = []
        betas = self._betas()
        for t, term in enumerate(self.terms):
            keys = sorted(k for k in betas if k[0] == t)
            if not keys:
                continue
            kind = self.blocks[keys[0]].kind
            aux = kind.with_points(term, {z: self.blocks[(t, z)].X_U for _, z in keys})
            rows = aux.design_rows([frame_descs[t]], forces=forces, virial=virial)
            coef = np.vstack([betas[(t, z)] for _, z in keys])  # column order: keys ascending
            out.append((rows, coef))
        return out
