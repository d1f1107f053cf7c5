"""Low-body-order GAP terms: gap_fit's ``distance_2b`` and ``angle_3b``.

Both are sums of *site* energies over geometric sites of a frame (a pair of
atoms for 2b, a centre atom and two of its neighbours for 3b), written once on
a generic site machinery (:class:`_SiteTerm`); a term only says how it turns a
neighbour list into sites.

A site s of a frame has

* a key (the species block it belongs to; sites of different keys are
  uncorrelated a priori),
* coordinates t_s (d numbers, Å or Å²) on which a Gaussian process
  g_key(t) with the squared-exponential kernel
  ``k(t, t') = δ² exp(-|t - t'|² / (2 θ²))`` acts,
* a weight w_s (products of cutoff functions, and the ½ that shares an
  ordered pair between its two atoms for 2b), so its energy is
  ``f_s = w_s g_key(t_s)``,
* B *bonds*: vectors between two of its atoms (periodic images included);
  t_s and w_s depend on positions only through the bond lengths L_b, with
  derivatives ``dt/dL_b`` (d, B) and ``dw/dL_b`` (B,),
* the atom that owns its energy (for local energies).

With sparse points X_m of each key and weights α_m, g(t) = Σ_m α_m k(t, X_m),
so every observable (energy, ∂E/∂r, ∂E/∂ε, local energies) is linear in α and
the chain rule goes through the bond lengths only:
``∂L_b/∂r = ±L̂_b`` at its two atoms and ``∂L_b/∂ε = L_b ⊗ L_b / |L_b|``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse
from ase import Atoms
from ase.neighborlist import neighbor_list

from .._loops import _jit
from ..errors import InputError, NotFittedError
from .base import VOIGT, PriorVariance, Term, TermPrediction, TermRows, TermShare

# Pairs of sites further apart than this (in Σ (Δt/θ)²) may be left out of
# the prior variances: their kernel is below exp(-40) ≈ 4e-18 of δ², far under
# float64 resolution of a sum that contains the diagonal terms. (The local
# and force variances skip each such pair; the energy variance skips whole
# tiles of pairs further apart than that along the first coordinate.)
_PRIOR_CUT2 = 80.0
# Elements of the (sites, sparse points) kernel blocks of design_rows and
# predict: bounds memory on large frames.
_BLOCK_ELEMENTS = 1 << 21
# Tiles of the energy-variance pair sum: small enough to stay in cache.
_TILE_ROWS = 256
_TILE_COLS = 2048


def cutoff_function(r: np.ndarray, cutoff: float, width: float) -> Tuple[np.ndarray, np.ndarray]:
    """gap_fit's smooth (C¹) cosine cutoff and its derivative.

    Parameters
    ----------
    r : ndarray
        Distances, Å.
    cutoff, width : float
        Cutoff and transition width, Å.

    Returns
    -------
    fc, dfc : ndarray
        1 for r ≤ cutoff - width, ½ (1 + cos(π (r - cutoff + width) / width))
        in the transition, 0 beyond the cutoff; and d fc/dr (1/Å).
    """
    r = np.asarray(r, dtype=float)
    x = (r - (cutoff - width)) / width
    inside = (x > 0.0) & (x < 1.0)
    fc = np.where(x <= 0.0, 1.0, 0.0)
    dfc = np.zeros_like(r)
    xi = x[inside]
    fc[inside] = 0.5 * (1.0 + np.cos(np.pi * xi))
    dfc[inside] = -0.5 * np.pi / width * np.sin(np.pi * xi)
    return fc, dfc


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_)) \
        and math.isfinite(float(x))


@dataclass
class SiteDescriptor:
    """Sites of one frame (see the module docstring); sites are sorted by key.

    n_atoms : number of atoms of the frame.
    periodic : True when the frame has a virial (pbc on all axes, cell of rank 3).
    t : (S, d) coordinates (Å, or Å² for 3b's second one).
    w : (S,) weights.
    key : (S,) key index (into the term's keys), non-decreasing.
    key_bounds : (n_keys + 1,) sites of key q are ``key_bounds[q]:key_bounds[q + 1]``.
    owner : (S,) atom owning each site's energy.
    atoms : (S, A) the site's atoms (slots), or None without gradients.
    vec : (S, B, 3) bond vectors (Å) from the first to the second slot of each bond, or None.
    length : (S, B) bond lengths (Å), or None.
    dt : (S, d, B) ∂t/∂L_b, or None.
    dw : (S, B) ∂w/∂L_b (1/Å), or None.
    centres : the atoms whose sites these are (``compute(centres=...)``), or None for all.
    """

    n_atoms: int
    periodic: bool
    t: np.ndarray
    w: np.ndarray
    key: np.ndarray
    key_bounds: np.ndarray
    owner: np.ndarray
    atoms: Optional[np.ndarray] = None
    vec: Optional[np.ndarray] = None
    length: Optional[np.ndarray] = None
    dt: Optional[np.ndarray] = None
    dw: Optional[np.ndarray] = None
    centres: Optional[np.ndarray] = None

    @property
    def n_sites(self) -> int:
        return len(self.w)

    @property
    def has_gradients(self) -> bool:
        return self.vec is not None


# ------------------------------------------------------------------ pair sums
@_jit
def _half_sq_dist(a, bt, out):
    """out[i, j] = -|a[i] - b[j]|² / 2 with bt = bᵀ (d, n_b): one pass, SIMD along j, no BLAS."""
    n_a, d = a.shape
    n_b = bt.shape[1]
    for i in range(n_a):
        for j in range(n_b):
            out[i, j] = 0.0
        for k in range(d):
            x = a[i, k]
            for j in range(n_b):
                y = x - bt[k, j]
                out[i, j] -= 0.5 * y * y


@_jit
def _row_dot(m, v, acc):
    """acc[i] += Σ_j m[i, j] v[j] (a matrix-vector product kept off the threaded BLAS).

    Eight independent partial sums: without fastmath the compiler may not
    reorder one running sum, and the split lets it use SIMD (twice as fast).
    """
    n, k = m.shape
    k8 = k - k % 8
    for i in range(n):
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        for j in range(0, k8, 8):
            s0 += m[i, j] * v[j]
            s1 += m[i, j + 1] * v[j + 1]
            s2 += m[i, j + 2] * v[j + 2]
            s3 += m[i, j + 3] * v[j + 3]
            s4 += m[i, j + 4] * v[j + 4]
            s5 += m[i, j + 5] * v[j + 5]
            s6 += m[i, j + 6] * v[j + 6]
            s7 += m[i, j + 7] * v[j + 7]
        s = ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))
        for j in range(k8, k):
            s += m[i, j] * v[j]
        acc[i] += s


def _total_variance(ts: np.ndarray, w: np.ndarray, key_bounds: np.ndarray, cut2: float) -> float:
    """Σ_{s,s' same key} w w' exp(-|Δts|²/2) over all site pairs (sites sorted by key).

    This O(S²) pair sum is the cost of the energy variance, so it runs in
    cache-sized tiles: the exponents in a numba loop, the exponential by
    numpy's SIMD exp (several times faster than a scalar loop), the weighted
    sum in a numba loop (a threaded BLAS matrix-vector product slows down
    badly on a busy machine). Within a key the sites are sorted by their first
    coordinate; each tile of rows meets only the columns within √cut2 of it
    along that coordinate, and after it: the sum is symmetric, so the square
    diagonal tile counts once and the later columns twice.
    """
    cut = math.sqrt(cut2)
    total = 0.0
    buf = np.empty(_TILE_ROWS * _TILE_COLS)
    for q in range(len(key_bounds) - 1):
        lo, hi = int(key_bounds[q]), int(key_bounds[q + 1])
        if hi == lo:
            continue
        o = np.argsort(ts[lo:hi, 0], kind="stable")
        T = np.ascontiguousarray(ts[lo:hi][o])
        Tt = np.ascontiguousarray(T.T)
        W = np.ascontiguousarray(w[lo:hi][o])
        n = len(T)
        for i0 in range(0, n, _TILE_ROWS):
            i1 = min(n, i0 + _TILE_ROWS)
            jend = max(i1, int(np.searchsorted(T[:, 0], T[i1 - 1, 0] + cut, side="right")))
            wc = 2.0 * W[i0:jend]
            wc[:i1 - i0] = W[i0:i1]
            acc = np.zeros(i1 - i0)
            for j0 in range(i0, jend, _TILE_COLS):
                j1 = min(jend, j0 + _TILE_COLS)
                E = buf[:(i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
                _half_sq_dist(T[i0:i1], Tt[:, j0:j1], E)
                np.exp(E, out=E)
                _row_dot(E, wc[j0 - i0:j1 - i0], acc)
            total += float(W[i0:i1] @ acc)
    return total


@_jit
def _bond_rows(K, t, Xt, w, dt, dw, vec, length, a0, a1, inv2, G, V, want_g, want_v, voigt):
    """Add the gradient rows G (3 n, M) and virial rows V (6, M) of a block of sites.

    Per site s and bond b the coefficients c_m = ∂(w_s k(t_s, X_m))/∂L_b =
    k_sm (dw_b + w Σ_a dt_ab (X_ma - t_a) / θ²) are formed once in a buffer of
    length M and scattered straight to the bond's two atoms (±L̂_b) and to the
    virial (L_b ⊗ L_b / |L_b|): nothing of size (sites × bonds × M) is built.
    Xt is the sparse points transposed (d, M).
    """
    ns, M = K.shape
    B = dw.shape[1]
    d = t.shape[1]
    c = np.empty(M)
    for s in range(ns):
        ws = w[s] * inv2
        for b in range(B):
            q = 0.0
            for a in range(d):
                q += dt[s, a, b] * t[s, a]
            base = dw[s, b] - ws * q
            for m in range(M):
                c[m] = base
            for a in range(d):
                f = ws * dt[s, a, b]
                if f != 0.0:
                    for m in range(M):
                        c[m] += f * Xt[a, m]
            for m in range(M):
                c[m] *= K[s, m]
            inv_len = 1.0 / length[s, b]
            if want_g:
                for x in range(3):
                    ux = vec[s, b, x] * inv_len
                    r1 = 3 * a1[s, b] + x
                    r0 = 3 * a0[s, b] + x
                    for m in range(M):
                        G[r1, m] += ux * c[m]
                        G[r0, m] -= ux * c[m]
            if want_v:
                for k in range(6):
                    f = vec[s, b, voigt[k, 0]] * vec[s, b, voigt[k, 1]] * inv_len
                    for m in range(M):
                        V[k, m] += f * c[m]


@_jit
def _local_variance(ts, w, key, bounds, n_atoms, cut2):
    """Per atom Σ_{s,s' owned by it, same key} w w' exp(-|Δts|²/2); sites sorted by owner."""
    d = ts.shape[1]
    out = np.zeros(n_atoms)
    for i in range(n_atoms):
        tot = 0.0
        for s in range(bounds[i], bounds[i + 1]):
            acc = 0.0
            for s2 in range(s + 1, bounds[i + 1]):
                if key[s2] != key[s]:
                    continue
                d2 = 0.0
                for a in range(d):
                    x = ts[s, a] - ts[s2, a]
                    d2 += x * x
                if d2 <= cut2:
                    acc += w[s2] * np.exp(-0.5 * d2)
            tot += w[s] * (w[s] + 2.0 * acc)
        out[i] = tot
    return out


@_jit
def _force_variance(bounds, ts, w, key, ea, ev, n_atoms, cut2):
    """Var of ∂E/∂r_jx (without δ²) from per-(site, atom) derivative entries sorted by atom.

    Entry e (a site touching atom j): ts[e], w[e], key[e] of its site,
    ea[e, x] = ∂w/∂r_jx and ev[e, x, :] = ∂ts/∂r_jx. With Δ = ts - ts',
    ∂²[w w' k]/∂r_jx ∂r'_jx = k [a a' + a w' Δ·v' - w a' Δ·v + w w' (v·v' - (Δ·v)(Δ·v'))]
    (scaled coordinates, so θ = 1 and k = exp(-|Δ|²/2)); the summand is
    symmetric in e, e', so each unordered pair is visited once.
    """
    d = ts.shape[1]
    out = np.zeros((n_atoms, 3))
    dl = np.zeros(d)
    for j in range(n_atoms):
        lo = bounds[j]
        hi = bounds[j + 1]
        for e in range(lo, hi):
            for e2 in range(e, hi):
                if key[e2] != key[e]:
                    continue
                d2 = 0.0
                for a in range(d):
                    dl[a] = ts[e, a] - ts[e2, a]
                    d2 += dl[a] * dl[a]
                if d2 > cut2:
                    continue
                k = np.exp(-0.5 * d2)
                if e2 != e:
                    k *= 2.0
                w1 = w[e]
                w2 = w[e2]
                for x in range(3):
                    dv1 = 0.0
                    dv2 = 0.0
                    vv = 0.0
                    for a in range(d):
                        dv1 += dl[a] * ev[e, x, a]
                        dv2 += dl[a] * ev[e2, x, a]
                        vv += ev[e, x, a] * ev[e2, x, a]
                    a1 = ea[e, x]
                    a2 = ea[e2, x]
                    out[j, x] += k * (a1 * a2 + a1 * w2 * dv2 - w1 * a2 * dv1 + w1 * w2 * (vv - dv1 * dv2))
    return out


# ------------------------------------------------- kernel, site chunks, bonds
# What the term's methods compute from a descriptor, the sparse points and the
# kernel settings alone (no term state): plain functions, out of the class.
def _se_kernel(t: np.ndarray, x: np.ndarray, theta_A: float, delta_eV: float) -> np.ndarray:
    """δ² exp(-|t - x|² / (2 θ²)) for all pairs of rows, (len(t), len(x))."""
    inv = 1.0 / theta_A
    out = np.empty((len(t), len(x)))
    # exact differences (no |t|² + |x|² - 2 t·x cancellation), one pass
    _half_sq_dist(np.ascontiguousarray(t * inv), np.ascontiguousarray((x * inv).T), out)
    np.exp(out, out=out)
    out *= delta_eV ** 2
    return out


def _site_chunks(lo: int, hi: int, n_points: int):
    """Ranges [s, e) of the sites lo..hi-1 whose kernel block against n_points sparse points stays bounded."""
    step = max(1, _BLOCK_ELEMENTS // max(n_points, 1))
    for s in range(lo, hi, step):
        yield s, min(hi, s + step)


def _bond_atoms(desc: SiteDescriptor, bonds: Sequence[Tuple[int, int]]) -> Tuple[np.ndarray, np.ndarray]:
    """First and second atom of each bond, (S, B) each: ∂L_b/∂r is -L̂_b at the first, +L̂_b at the second."""
    slots = np.asarray(bonds)
    return (np.ascontiguousarray(desc.atoms[:, slots[:, 0]]), np.ascontiguousarray(desc.atoms[:, slots[:, 1]]))


def _bond_derivatives(desc: SiteDescriptor, g: np.ndarray, dg: np.ndarray) -> np.ndarray:
    """∂f_s/∂L_b = dw_b g + w ∇g · dt_b of every site s and bond b, (S, B): sites' values g, gradients dg."""
    return desc.dw * g[:, None] + desc.w[:, None] * np.einsum("sab,sa->sb", desc.dt, dg)


def _atom_gradient(desc: SiteDescriptor, cu: np.ndarray, bonds: Sequence[Tuple[int, int]]) -> np.ndarray:
    """∂E/∂r of every atom (n, 3) from each bond's ∂E/∂(bond vector) ``cu`` (S, B, 3)."""
    n = desc.n_atoms
    first, second = (a.ravel() for a in _bond_atoms(desc, bonds))
    grad = np.empty((n, 3))
    for x in range(3):
        cx = cu[:, :, x].ravel()
        grad[:, x] = np.bincount(second, weights=cx, minlength=n) - np.bincount(first, weights=cx, minlength=n)
    return grad


def _site_force_variance(desc: SiteDescriptor, bonds: Sequence[Tuple[int, int]], dim: int, ts: np.ndarray,
                         inv: float) -> np.ndarray:
    """Prior variances of the force components over δ², (n_atoms, 3), from the sites that move with each atom.

    ``bonds``: for each bond, the two slots of a site's atoms it joins;
    ``dim``: coordinates per site; ``ts``: the site coordinates over θ; ``inv``: 1/θ.
    """
    n = desc.n_atoms
    S, A, B = desc.n_sites, desc.atoms.shape[1], len(bonds)
    # sign[p, b]: ∂L_b/∂r(slot p) = sign L̂_b
    sign = np.zeros((A, B))
    for b, (p0, p1) in enumerate(bonds):
        sign[p0, b] -= 1.0
        sign[p1, b] += 1.0
    u = desc.vec / desc.length[:, :, None]  # (S, B, 3)
    # per (site, slot): ∂w/∂r_x and ∂t/∂r_x (scaled by 1/θ)
    ea = np.einsum("pb,sb,sbx->spx", sign, desc.dw, u).reshape(S * A, 3)
    ev = (np.einsum("pb,sab,sbx->spxa", sign, desc.dt, u) * inv).reshape(S * A, 3, dim)
    site = np.repeat(np.arange(S), A)
    atom = desc.atoms.ravel()
    order = np.lexsort((desc.key[site], atom))
    bounds = np.searchsorted(atom[order], np.arange(n + 1)).astype(np.int64)
    s = site[order]
    return _force_variance(bounds, np.ascontiguousarray(ts[s]), np.ascontiguousarray(desc.w[s]),
                           np.ascontiguousarray(desc.key[s]), np.ascontiguousarray(ea[order]),
                           np.ascontiguousarray(ev[order]), n, _PRIOR_CUT2)


# ------------------------------------------------------------------ generic term
class _SiteTerm(Term):
    """Generic sum of weighted site energies with a squared-exponential GP per key.

    Subclasses define ``_DIM`` (d), ``_BONDS`` (for each bond, the two slots of
    the site's atoms it joins, from first to second), ``METHODS`` (known
    sparse methods), the keys (:meth:`_make_keys`) and the sites of a frame
    (:meth:`_frame_sites`); everything else is here.
    """

    _DIM: ClassVar[int] = 1
    _BONDS: ClassVar[Tuple[Tuple[int, int], ...]] = ((0, 1),)
    METHODS: ClassVar[Tuple[str, ...]] = ("fps", "random")

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        self._keys: List[Tuple[int, ...]] = []
        self._key_table: Optional[np.ndarray] = None
        self._sparse: Optional[List[np.ndarray]] = None
        # A delta given as a setting is the kernel scale; None waits for set_delta.
        if _is_real(self.delta) and float(self.delta) > 0:
            self.set_delta(float(self.delta))

    # -------------------------------------------------------------- settings
    def check_settings(self) -> None:
        """Raise :class:`gapfit.errors.InputError` naming the first bad setting.

        cutoff in (0, 50] Å, 0 < cutoff_transition_width ≤ cutoff, theta > 0 (Å),
        delta None or > 0 (eV), n_sparse an integer ≥ 1, sparse_method one of
        ``METHODS``.
        """
        t = self.type
        if not _is_real(self.cutoff) or not 0.0 < float(self.cutoff) <= 50.0:
            raise InputError(f"term {t}: cutoff must be a number in (0, 50] Å, got {self.cutoff!r}",
                             param="cutoff")
        w = self.cutoff_transition_width
        if not _is_real(w) or not 0.0 < float(w) <= float(self.cutoff):
            raise InputError(f"term {t}: cutoff_transition_width must be in (0, cutoff={self.cutoff}] Å, "
                             f"got {w!r}", param="cutoff_transition_width")
        if not _is_real(self.theta) or not float(self.theta) > 0.0:
            raise InputError(f"term {t}: theta (kernel length scale, Å) must be > 0, got {self.theta!r}",
                             param="theta")
        if self.delta is not None and (not _is_real(self.delta) or not float(self.delta) > 0.0):
            raise InputError(f"term {t}: delta must be null or > 0 eV, got {self.delta!r}", param="delta")
        n = self.n_sparse
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"term {t}: n_sparse must be an integer >= 1, got {n!r}", param="n_sparse")
        if self.sparse_method not in self.METHODS:
            raise InputError(f"term {t}: sparse_method must be one of {', '.join(self.METHODS)}, "
                             f"got {self.sparse_method!r}", param="sparse_method")

    @property
    def cutoff_A(self) -> float:
        """The cutoff (Å): atoms further than this from all of a site's atoms do not change it."""
        return float(self.cutoff)

    # ------------------------------------------------------------ descriptors
    def _make_keys(self, species: Sequence[int]) -> Tuple[List[Tuple[int, ...]], np.ndarray]:
        """Sorted keys and a table from species indices to key index."""
        raise NotImplementedError

    def _frame_sites(self, atoms: Atoms, sp: np.ndarray, gradients: bool,
                     centres: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """Unsorted site arrays of one frame (``sp``: species index of each atom; only sites owned by ``centres``)."""
        raise NotImplementedError

    def bind(self, species: Sequence[int]) -> None:
        """Set the atomic numbers the model knows; the keys (column blocks) follow from them.

        Parameters
        ----------
        species : sequence of int
            Atomic numbers.
        """
        sp = sorted({int(z) for z in species})
        if not sp:
            raise InputError(f"term {self.type}: no species to bind", param="species")
        self.species = sp
        self._keys, self._key_table = self._make_keys(sp)

    def _check_bound(self) -> None:
        if self._key_table is None:
            raise NotFittedError(f"term {self.type}: bind(species) was not called")

    def compute(self, frames: Sequence[Atoms], *, gradients: bool, layout: str = "pairs",
                centres: Optional[Sequence[np.ndarray]] = None) -> List[SiteDescriptor]:
        """Sites of each frame.

        Parameters
        ----------
        frames : sequence of ase.Atoms
            Positions in Å; only the bound species may occur.
        gradients : bool
            Keep the bond vectors and the derivatives with respect to bond
            lengths (needed for forces, virials and force variances).
        centres : list of ndarray or None
            One array of atom indices per frame: only the sites these atoms
            own (the neighbour list is the frame's, the sites are built for
            the centres only). None: all sites.

        Returns
        -------
        list of SiteDescriptor
        """
        self._check_bound()
        species = np.asarray(self.species)
        out = []
        for k, atoms in enumerate(frames):
            z = atoms.numbers
            sp = np.searchsorted(species, z)
            sp = np.clip(sp, 0, len(species) - 1)
            bad = species[sp] != z
            if np.any(bad):
                raise InputError(f"term {self.type}: atomic number {int(z[bad][0])} in a frame is not among "
                                 f"the model's species {self.species}", param="species")
            raw = (self._frame_sites(atoms, sp, gradients) if centres is None
                   else self._frame_sites(atoms, sp, gradients, np.asarray(centres[k], dtype=np.int64)))
            order = np.argsort(raw["key"], kind="stable")
            bounds = np.searchsorted(raw["key"][order], np.arange(len(self._keys) + 1))
            periodic = bool(np.all(atoms.pbc)) and atoms.cell.rank == 3
            desc = SiteDescriptor(n_atoms=len(atoms), periodic=periodic, t=raw["t"][order],
                                  w=raw["w"][order], key=raw["key"][order], key_bounds=bounds,
                                  owner=raw["owner"][order],
                                  centres=None if centres is None else np.asarray(centres[k], dtype=np.int64))
            if gradients:
                desc.atoms = raw["atoms"][order]
                desc.vec = raw["vec"][order]
                desc.length = raw["length"][order]
                desc.dt = raw["dt"][order]
                desc.dw = raw["dw"][order]
            out.append(desc)
        return out

    def _neighbours(self, atoms: Atoms, centres: Optional[np.ndarray] = None):
        """Neighbour list (i, j, distance, vector) sorted by i, stable (ASE order within i); only i in ``centres``."""
        i, j, d, D = neighbor_list("ijdD", atoms, float(self.cutoff))
        order = np.argsort(i, kind="stable")
        if centres is not None:
            mine = np.zeros(len(atoms), dtype=bool)
            mine[centres] = True
            order = order[mine[i[order]]]
        return i[order].astype(np.int64), j[order].astype(np.int64), d[order], D[order]

    # ------------------------------------------------------------- sparse set
    def candidate_rows(self, desc: SiteDescriptor) -> List[tuple]:
        sites = np.arange(desc.n_sites)
        out = []
        for q in range(len(self._keys)):
            lo, hi = desc.key_bounds[q], desc.key_bounds[q + 1]
            if hi > lo:
                out.append((q, desc.t[lo:hi], sites[lo:hi]))
        return out

    def select_from_sample(self, sample, seed: int) -> Dict[str, Any]:
        """Choose the sparse points of every key from a sample of candidate sites.

        ``fps``: farthest-point sampling in t/θ from the sample (a seeded
        uniform sample of the sites, see :class:`gapfit.terms.base.CandidateSample`),
        started at a seeded random candidate, exact duplicates dropped.
        ``random``: seeded uniform choice from the same sample. Fewer points
        than ``n_sparse`` when there are fewer distinct candidates.
        """
        self._check_bound()
        rng = np.random.default_rng(seed)
        nk = len(self._keys)
        stats = {"count": np.array([sample.count.get(q, 0) for q in range(nk)], dtype=np.int64),
                 "tmin": np.array([sample.first_min.get(q, np.inf) for q in range(nk)]),
                 "sample": [sample.rows(q) if q in sample.blocks else np.zeros((0, self._DIM)) for q in range(nk)]}
        sparse = [self._choose(q, stats, rng) for q in range(nk)]
        self._sparse = sparse
        return {"method": self.sparse_method,
                "blocks": {self._key_name(key): {"points": int(len(x)), "candidates": int(stats["count"][q])}
                           for q, (key, x) in enumerate(zip(self._keys, sparse))}}

    def _choose(self, q: int, stats: Dict[str, Any], rng) -> np.ndarray:
        """Sparse points (n, d) of key q."""
        cand = stats["sample"][q]
        if len(cand) == 0:
            return np.zeros((0, self._DIM))
        # exact duplicates (e.g. the two ordered copies of a 2b pair) carry no extra information
        _, first = np.unique(cand, axis=0, return_index=True)
        cand = cand[np.sort(first)]
        n = min(int(self.n_sparse), len(cand))
        if self.sparse_method == "random":
            idx = np.sort(rng.choice(len(cand), size=n, replace=False))
            return cand[idx].copy()
        return cand[_farthest_points(cand / float(self.theta), n, int(rng.integers(len(cand))))].copy()

    @staticmethod
    def _key_name(key: Tuple[int, ...]) -> str:
        return "_".join(str(z) for z in key)

    @property
    def n_columns(self) -> int:
        """Number of weights: sparse points over all keys (0 before select_sparse/restore)."""
        return 0 if self._sparse is None else int(sum(len(x) for x in self._sparse))

    def _blocks(self):
        """(key index, sparse points, column offset) of the keys with points, in column order."""
        if self._sparse is None:
            raise NotFittedError(f"term {self.type}: no sparse points (select_sparse or restore first)")
        off = 0
        for q, x in enumerate(self._sparse):
            if len(x):
                yield q, x, off
            off += len(x)

    def kmm_blocks(self) -> List[np.ndarray]:
        """K_MM's diagonal blocks (one per key that has sparse points), in column order.

        Keys without sparse points have no columns and no block.
        """
        return [_se_kernel(x, x, float(self.theta), self.delta_eV) for _, x, _ in self._blocks()]

    # ------------------------------------------------------- rows, prediction
    def design_rows(self, descs: Sequence[SiteDescriptor], *, forces: bool, virial: bool,
                    local: bool = False) -> TermRows:
        """Design rows ∂(observable)/∂α for a chunk of frames (see :class:`TermRows`).

        Energies in eV per unit weight, gradients eV/Å, virials eV. Forces and
        virials need descriptors computed with ``gradients=True``.
        """
        blocks = list(self._blocks())
        M = self.n_columns
        n_frames = len(descs)
        start = np.concatenate([[0], np.cumsum([d.n_atoms for d in descs])]).astype(np.int64)
        n_tot = int(start[-1])
        E = np.zeros((n_frames, M))
        G = np.zeros((3 * n_tot, M)) if forces else None
        V = np.zeros((n_frames, 6, M)) if virial else None
        L = np.zeros((n_tot, M)) if local else None
        inv2 = 1.0 / float(self.theta) ** 2
        voigt = np.array(VOIGT, dtype=np.int64)
        dummy_g, dummy_v = np.zeros((0, 1)), np.zeros((6, 1))
        for f, desc in enumerate(descs):
            n = desc.n_atoms
            want_v = virial and desc.periodic
            need_grad = forces or want_v
            if need_grad and not desc.has_gradients:
                raise ValueError(f"term {self.type}: forces/virial rows need descriptors computed with gradients")
            if need_grad:
                a0, a1 = _bond_atoms(desc, self._BONDS)
            for q, X, off in blocks:
                cols = slice(off, off + len(X))
                lo_q, hi_q = desc.key_bounds[q], desc.key_bounds[q + 1]
                for lo, hi in _site_chunks(lo_q, hi_q, len(X)):
                    ns = hi - lo
                    w = desc.w[lo:hi]
                    K = _se_kernel(desc.t[lo:hi], X, float(self.theta), self.delta_eV)
                    E[f, cols] += w @ K
                    if local:
                        own = scipy.sparse.csr_matrix((w, (desc.owner[lo:hi], np.arange(ns))), shape=(n, ns))
                        L[start[f]:start[f + 1], cols] += own @ K
                    if need_grad:
                        _bond_rows(K, desc.t[lo:hi], np.ascontiguousarray(X.T), w, desc.dt[lo:hi],
                                   desc.dw[lo:hi], desc.vec[lo:hi], desc.length[lo:hi], a0[lo:hi], a1[lo:hi],
                                   inv2, G[3 * start[f]:3 * start[f + 1], cols] if forces else dummy_g,
                                   V[f, :, cols] if want_v else dummy_v, forces, want_v, voigt)
        return TermRows(energy=E, gradient=G, virial=V, local=L, atom_start=start)

    def _site_values(self, desc: SiteDescriptor, alpha: np.ndarray, grad: bool):
        """g(t_s) (S,) and, when asked, ∇_t g(t_s) (S, d) with weights alpha, per site."""
        g = np.zeros(desc.n_sites)
        dg = np.zeros((desc.n_sites, self._DIM)) if grad else None
        inv2 = 1.0 / float(self.theta) ** 2
        for q, X, off in self._blocks():
            a = alpha[off:off + len(X)]
            aX = a[:, None] * X
            lo_q, hi_q = desc.key_bounds[q], desc.key_bounds[q + 1]
            for lo, hi in _site_chunks(lo_q, hi_q, len(X)):
                K = _se_kernel(desc.t[lo:hi], X, float(self.theta), self.delta_eV)
                g[lo:hi] = K @ a
                if grad:
                    # ∇g = Σ_m α_m k (X_m - t) / θ²
                    dg[lo:hi] = (K @ aX - desc.t[lo:hi] * g[lo:hi, None]) * inv2
        return g, dg

    def predict(self, desc: SiteDescriptor, alpha: np.ndarray, *, forces: bool, virial: bool,
                local_rows: bool = False) -> TermPrediction:
        """This term's part of one frame's prediction.

        Parameters
        ----------
        desc : SiteDescriptor
            From :meth:`compute` (with gradients for forces or virial).
        alpha : ndarray of shape (n_columns,)
            Weights.
        forces, virial : bool
            Return ∂E/∂r (eV/Å) and, for periodic frames, ∂E/∂ε (eV).
        local_rows : bool
            Ignored: this term's kernel values are per site, not per atom, so
            the local-energy rows come from :meth:`design_rows` (cheap here).

        Returns
        -------
        TermPrediction
        """
        alpha = np.asarray(alpha, dtype=float)
        if alpha.shape != (self.n_columns,):
            raise ValueError(f"term {self.type}: alpha has shape {alpha.shape}, expected ({self.n_columns},)")
        want_v = virial and desc.periodic
        need_grad = forces or want_v
        if need_grad and not desc.has_gradients:
            raise ValueError(f"term {self.type}: forces/virial need descriptors computed with gradients")
        g, dg = self._site_values(desc, alpha, need_grad)
        n = desc.n_atoms
        local_e = np.bincount(desc.owner, weights=desc.w * g, minlength=n)
        out = TermPrediction(local_energy_eV=local_e)
        if not need_grad:
            return out
        c = _bond_derivatives(desc, g, dg)
        if forces:
            out.gradient_eV_per_A = _atom_gradient(desc, (c / desc.length)[:, :, None] * desc.vec, self._BONDS)
        if want_v:
            cv = ((c / desc.length)[:, :, None] * desc.vec).reshape(-1, 3)
            W = cv.T @ desc.vec.reshape(-1, 3)
            out.virial_eV = 0.5 * (W + W.T)
        return out

    def predict_share(self, desc: SiteDescriptor, atoms: Atoms, alpha: np.ndarray, *, virial: bool = True,
                      local_rows: bool = False) -> TermShare:
        """The part of the centres' sites (see :meth:`Term.predict_share`): ``desc`` from ``compute(centres=...)``.

        A site's virial Σ_b ∂f_s/∂L_b L_b ⊗ L_b / |L_b| (its bonds' vectors,
        periodic images included) goes to the atom that owns its energy.
        """
        alpha = np.asarray(alpha, dtype=float)
        if alpha.shape != (self.n_columns,):
            raise ValueError(f"term {self.type}: alpha has shape {alpha.shape}, expected ({self.n_columns},)")
        if not desc.has_gradients:
            raise ValueError(f"term {self.type}: a share needs descriptors computed with gradients")
        n = desc.n_atoms
        centres = np.arange(n) if desc.centres is None else desc.centres
        g, dg = self._site_values(desc, alpha, True)
        local_e = np.bincount(desc.owner, weights=desc.w * g, minlength=n)
        cu = (_bond_derivatives(desc, g, dg) / desc.length)[:, :, None] * desc.vec  # (S, B, 3)
        out = TermShare(centres, local_e[centres], _atom_gradient(desc, cu, self._BONDS))
        if virial:
            Ws = np.einsum("sbx,sby->sxy", cu, desc.vec).reshape(-1, 9)
            W = np.stack([np.bincount(desc.owner, weights=Ws[:, k], minlength=n) for k in range(9)],
                         axis=1)[centres].reshape(-1, 3, 3)
            out.atom_virial_eV = 0.5 * (W + W.transpose(0, 2, 1))
        if local_rows:
            out.local_rows = self.design_rows([desc], forces=False, virial=False, local=True).local[centres]
            out.local_prior_eV2 = self.prior_variance(desc, forces=False, energy=False).local_eV2[centres]
        return out

    # --------------------------------------------------------------- variance
    def prior_variance(self, desc: SiteDescriptor, *, forces: bool, energy: bool = True) -> PriorVariance:
        """Prior variances of the local energies, the energy (eV²) and the force components (eV²/Å²).

        Exact sums over same-key site pairs of w w' k (energy: all sites;
        local energy: the sites the atom owns) and, for the force components,
        of ∂²[w w' k]/∂r_jx∂r'_jx over the sites that move with atom j, except
        that pairs with Σ (Δt/θ)² > 80 (k < 4e-18 δ²) may be skipped.

        The energy variance costs O(S²) in the number of sites S of the frame:
        about 1.8e9 pair terms, a few seconds, for a 512-atom Si cell with 3b
        at the 4 Å cutoff (60 000 triplets); the local and force variances
        only pair sites of one atom and cost O(S). ``energy=False`` skips the
        energy's (reported as 0).
        """
        dd = self.delta_eV ** 2
        inv = 1.0 / float(self.theta)
        n = desc.n_atoms
        ts = desc.t * inv
        total = _total_variance(ts, desc.w, desc.key_bounds, _PRIOR_CUT2) if energy else 0.0
        order = np.lexsort((desc.key, desc.owner))
        ob = np.searchsorted(desc.owner[order], np.arange(n + 1)).astype(np.int64)
        loc = _local_variance(np.ascontiguousarray(ts[order]), np.ascontiguousarray(desc.w[order]),
                              np.ascontiguousarray(desc.key[order]), ob, n, _PRIOR_CUT2)
        fvar = None
        if forces:
            if not desc.has_gradients:
                raise ValueError(f"term {self.type}: force variances need descriptors computed with gradients")
            fvar = dd * _site_force_variance(desc, self._BONDS, self._DIM, ts, inv)
        return PriorVariance(local_eV2=dd * loc, energy_eV2=float(dd * total), forces_eV2_per_A2=fvar)

    # ----------------------------------------------------------- fitted state
    def _array_name(self, key: Tuple[int, ...]) -> str:
        return "sparse_" + self._key_name(key)

    def fitted_state(self) -> Dict[str, Any]:
        """δ (eV), species, keys and the number of sparse points of each key (JSON)."""
        if self._sparse is None:
            raise NotFittedError(f"term {self.type}: not fitted")
        return {"delta_eV": self.delta_eV, "species": list(self.species),
                "keys": [list(k) for k in self._keys], "counts": [int(len(x)) for x in self._sparse]}

    def fitted_arrays(self) -> Dict[str, np.ndarray]:
        """Sparse points of each key, ``sparse_<Z>_<Z>[_<Z>]`` (n, d), Å (Å² for 3b's second coordinate)."""
        if self._sparse is None:
            raise NotFittedError(f"term {self.type}: not fitted")
        return {self._array_name(k): x.copy() for k, x in zip(self._keys, self._sparse)}

    def restore(self, state: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        """Set δ, species, keys and sparse points from :meth:`fitted_state` / :meth:`fitted_arrays`.

        Raises
        ------
        ValueError or KeyError
            Naming the entry that is missing, of the wrong shape or not finite.
        """
        for name in ("delta_eV", "species", "keys", "counts"):
            if name not in state:
                raise KeyError(f"term {self.type}: fitted state has no '{name}'")
        delta = state["delta_eV"]
        if not _is_real(delta) or not float(delta) > 0:
            raise ValueError(f"term {self.type}: fitted state 'delta_eV' must be a finite number > 0, got {delta!r}")
        try:
            species = [int(z) for z in state["species"]]
        except (TypeError, ValueError):
            raise ValueError(f"term {self.type}: fitted state 'species' must be a list of atomic numbers") from None
        if not species or species != sorted(set(species)):
            raise ValueError(f"term {self.type}: fitted state 'species' must be sorted distinct atomic numbers, "
                             f"got {state['species']!r}")
        keys, table = self._make_keys(species)
        try:
            got = [tuple(int(z) for z in k) for k in state["keys"]]
        except (TypeError, ValueError):
            raise ValueError(f"term {self.type}: fitted state 'keys' must be lists of atomic numbers") from None
        if got != keys:
            raise ValueError(f"term {self.type}: fitted state 'keys' {state['keys']!r} do not match "
                             f"species {species} (expected {[list(k) for k in keys]})")
        counts = state["counts"]
        if not isinstance(counts, (list, tuple)) or len(counts) != len(keys):
            raise ValueError(f"term {self.type}: fitted state 'counts' must have one entry per key ({len(keys)})")
        sparse = []
        for key, cnt in zip(keys, counts):
            name = self._array_name(key)
            if name not in arrays:
                raise KeyError(f"term {self.type}: fitted array '{name}' is missing")
            x = np.asarray(arrays[name])
            if isinstance(cnt, (bool, np.bool_)) or not isinstance(cnt, (int, np.integer)) or cnt < 0:
                raise ValueError(f"term {self.type}: fitted state 'counts' entry for {name} must be an integer >= 0")
            if x.shape != (int(cnt), self._DIM):
                raise ValueError(f"term {self.type}: fitted array '{name}' has shape {x.shape}, "
                                 f"expected ({int(cnt)}, {self._DIM})")
            if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
                raise ValueError(f"term {self.type}: fitted array '{name}' has non-finite values")
            sparse.append(np.array(x, dtype=float))
        self.species = species
        self._keys, self._key_table = keys, table
        self._sparse = sparse
        self.set_delta(float(delta))


def _farthest_points(x: np.ndarray, n: int, first: int) -> np.ndarray:
    """Indices of n rows of x (distinct rows) by farthest-point sampling from row ``first``."""
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = first
    dmin = np.sum((x - x[first]) ** 2, axis=1)
    for k in range(1, n):
        nxt = int(np.argmax(dmin))
        chosen[k] = nxt
        np.minimum(dmin, np.sum((x - x[nxt]) ** 2, axis=1), out=dmin)
    return chosen


# ------------------------------------------------------------------ the terms
class Distance2b(_SiteTerm):
    """gap_fit's ``distance_2b``: a pair potential learnt per species pair.

    E = Σ over unordered pairs (i, j) with r_ij < cutoff of fc(r_ij) g_{Zi,Zj}(r_ij),
    written as ordered pairs (i, j) of the neighbour list (periodic images
    included), each with energy ½ fc(r) g(r) owned by atom i: a site's weight
    is ½ fc(r), its coordinate t = r (Å), its one bond the vector r_ij.

    Settings
    --------
    cutoff : float, default 5.0
        Å.
    cutoff_transition_width : float, default 1.0
        Å; fc goes smoothly from 1 to 0 over [cutoff - width, cutoff].
    theta : float, default 0.5
        Kernel length scale, Å.
    delta : float or None, default None
        Kernel scale, eV (None: set by the fit, :meth:`default_delta`).
    n_sparse : int, default 30
        Sparse points per species pair.
    sparse_method : str, default "uniform"
        "uniform" (gap_fit's: evenly spaced distances), "fps" or "random".
    """

    type = "distance_2b"
    SETTINGS = {"cutoff": 5.0, "cutoff_transition_width": 1.0, "theta": 0.5, "delta": None,
                "n_sparse": 30, "sparse_method": "uniform"}
    METHODS = ("uniform", "fps", "random")
    _DIM = 1
    _BONDS = ((0, 1),)

    def _make_keys(self, species):
        n = len(species)
        keys = sorted((species[a], species[b]) for a in range(n) for b in range(a, n))
        table = np.empty((n, n), dtype=np.int64)
        for a, b in itertools.product(range(n), repeat=2):
            table[a, b] = keys.index((species[min(a, b)], species[max(a, b)]))
        return keys, table

    def _frame_sites(self, atoms, sp, gradients, centres=None):
        i, j, d, D = self._neighbours(atoms, centres)
        fc, dfc = cutoff_function(d, float(self.cutoff), float(self.cutoff_transition_width))
        S = len(i)
        raw = {"t": d[:, None].copy(), "w": 0.5 * fc, "key": self._key_table[sp[i], sp[j]], "owner": i}
        if gradients:
            raw.update(atoms=np.stack([i, j], axis=1), vec=D[:, None, :].copy(), length=d[:, None].copy(),
                       dt=np.ones((S, 1, 1)), dw=0.5 * dfc[:, None])
        return raw

    def _choose(self, q, stats, rng):
        if self.sparse_method != "uniform":
            return super()._choose(q, stats, rng)
        if stats["count"][q] == 0:
            return np.zeros((0, 1))
        # gap_fit's uniform grid over the distances of the data, here from
        # 0.1 Å below the shortest distance seen (a little support for
        # slightly closer approaches in use) up to the cutoff (the largest
        # distance a site can have).
        lo = max(float(stats["tmin"][q]) - 0.1, 0.0)
        return np.linspace(lo, float(self.cutoff), int(self.n_sparse))[:, None]

    def default_delta(self, energy_rms_eV: float) -> float:
        """δ (eV) when the setting is None: 2.0 eV for now."""
        # Placeholder independent of the data, to be tuned against gap_fit fits later.
        return 2.0


class Angle3b(_SiteTerm):
    """gap_fit's ``angle_3b``: a three-body potential learnt per species triplet.

    Sites are triplets (i; j, k): j and k two distinct neighbour-list entries
    of centre i (periodic images included, j before k in neighbour-list
    order), owned by i, keyed by (Z_i, min(Z_j, Z_k), max(Z_j, Z_k)). The
    coordinates are gap_fit's symmetric ones, t = (r_ij + r_ik (Å),
    (r_ij - r_ik)² (Å²), r_jk (Å)); the weight is fc(r_ij) fc(r_ik) (no
    cutoff on r_jk); the bonds are r_ij, r_ik and r_jk = r_ik - r_ij.

    Settings
    --------
    cutoff : float, default 4.0
        Å (for r_ij and r_ik).
    cutoff_transition_width : float, default 1.0
        Å.
    theta : float, default 1.0
        Kernel length scale, the same for the three coordinates (Å, Å²).
    delta : float or None, default None
        Kernel scale, eV.
    n_sparse : int, default 200
        Sparse points per key.
    sparse_method : str, default "fps"
        "fps" (farthest-point sampling) or "random".
    """

    type = "angle_3b"
    SETTINGS = {"cutoff": 4.0, "cutoff_transition_width": 1.0, "theta": 1.0, "delta": None,
                "n_sparse": 200, "sparse_method": "fps"}
    METHODS = ("fps", "random")
    _DIM = 3
    _BONDS = ((0, 1), (0, 2), (1, 2))

    def _make_keys(self, species):
        n = len(species)
        keys = sorted((species[c], species[a], species[b]) for c in range(n) for a in range(n) for b in range(a, n))
        table = np.empty((n, n, n), dtype=np.int64)
        for c, a, b in itertools.product(range(n), repeat=3):
            table[c, a, b] = keys.index((species[c], species[min(a, b)], species[max(a, b)]))
        return keys, table

    def _frame_sites(self, atoms, sp, gradients, centres=None):
        i, j, d, D = self._neighbours(atoms, centres)
        # entries p < q with the same centre: the list is sorted by centre
        end = np.searchsorted(i, np.arange(len(atoms)), side="right")
        P_all = np.arange(len(i))
        cnt = end[i] - P_all - 1  # partners after p within its centre
        P = np.repeat(P_all, cnt)
        start = np.concatenate([[0], np.cumsum(cnt)])[:-1]
        Q = P + 1 + (np.arange(len(P)) - np.repeat(start, cnt))
        dp, dq = d[P], d[Q]
        Djk = D[Q] - D[P]
        rjk = np.sqrt(np.einsum("sx,sx->s", Djk, Djk))
        fp, dfp = cutoff_function(dp, float(self.cutoff), float(self.cutoff_transition_width))
        fq, dfq = cutoff_function(dq, float(self.cutoff), float(self.cutoff_transition_width))
        diff = dp - dq
        t = np.stack([dp + dq, diff * diff, rjk], axis=1)
        c = i[P]
        raw = {"t": t, "w": fp * fq, "key": self._key_table[sp[c], sp[j[P]], sp[j[Q]]], "owner": c}
        if gradients:
            S = len(P)
            dt = np.zeros((S, 3, 3))
            dt[:, 0, 0] = 1.0
            dt[:, 0, 1] = 1.0
            dt[:, 1, 0] = 2.0 * diff
            dt[:, 1, 1] = -2.0 * diff
            dt[:, 2, 2] = 1.0
            dw = np.stack([dfp * fq, fp * dfq, np.zeros(S)], axis=1)
            raw.update(atoms=np.stack([c, j[P], j[Q]], axis=1), vec=np.stack([D[P], D[Q], Djk], axis=1),
                       length=np.stack([dp, dq, rjk], axis=1), dt=dt, dw=dw)
        return raw

    def default_delta(self, energy_rms_eV: float) -> float:
        """δ (eV) when the setting is None: 0.5 eV for now."""
        # Placeholder independent of the data, to be tuned against gap_fit fits later.
        return 0.5
