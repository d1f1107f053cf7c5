"""Electrostatics of fixed charges: Ewald sums for periodic cells, the direct sum for finite systems.

Units: Å, eV, e (charges), eV/Å (forces), eV (virial). ``K_E = e²/(4π ε0)``
= ``ase.units.Hartree * ase.units.Bohr`` = 14.399645 eV·Å.

The energy
----------
Charges ``q_i`` (e) at positions ``r_i`` (Å). Point charges (``widths_A`` None)
interact by ``K_E q_i q_j / r``. Gaussian charges of width ``σ_i`` (Å; charge
density ``q_i (2π σ_i²)^(-3/2) exp(-|r - r_i|² / (2 σ_i²))``) interact by
``K_E q_i q_j erf(r / (√2 γ_ij)) / r`` with ``γ_ij = sqrt(σ_i² + σ_j²)``:
finite at ``r = 0``, so atoms may come arbitrarily close. The energy is

    E = ½ Σ_i Σ_j Σ_n' q_i q_j φ_ij(|r_j - r_i + n|) + Σ_i E_self,i + E_background,

summed over all lattice vectors ``n`` of a periodic cell (only ``n = 0`` for a
finite system), ``'`` leaving out ``i = j`` at ``n = 0``:

* ``E_self,i = K_E q_i² / (2 √π σ_i)`` for Gaussian charges: the energy of a
  Gaussian charge cloud in its own field, kept in atom i's energy (it is the
  charge-independent "hardness" term of charge equilibration: the energy is
  then the full electrostatic energy of the charge density, a convex
  quadratic form in q). Point charges have no self-energy (it is infinite and
  left out, as everywhere).
* ``E_background``: a cell with net charge ``Q = Σ q_i ≠ 0`` has no finite
  periodic energy; it is given the standard meaning of the same cell in a
  uniform neutralising background charge ``-Q / V`` (the k = 0 term of the
  Fourier sum left out; "tin-foil" boundary conditions, as in LAMMPS, CP2K
  and matscipy): ``E_background = -π K_E Q² / (2 V α²)`` for point charges,
  ``+ 2π K_E Q Σ_i q_i σ_i² / V`` more for Gaussian charges, which makes
  the energy exactly ``(2π K_E / V) Σ_{k≠0} |ρ(k)|² / k²`` of the Gaussian
  charge density (independent of the Ewald parameter α). Each atom carries
  the share ``q_i / Q`` of the first term, and half of each pair's share of
  the second. Both vanish for neutral cells.

Optional screening ``screening_A = (r_in, r_out)`` multiplies every pair
interaction ``φ_ij(r)`` (not the self-energy) by the switch ``s(r)``: 0 for
``r <= r_in``, 1 for ``r >= r_out``, the quintic smoothstep
``t³ (10 - 15 t + 6 t²)``, ``t = (r - r_in) / (r_out - r_in)``, in between
(continuous value, first and second derivatives: energy is conserved in MD).
As with n2p2's ``screen_electrostatics``, the short range (where a local
model learns the interaction from the data anyway) is left out of the
baseline. It is a real-space correction ``½ Σ q_i q_j (s - 1) φ_ij`` over the
pairs closer than ``r_out`` (periodic images included), computed in the same
pass as the Ewald real-space sum.

Per-atom energies ``E_i = ½ q_i V_i`` with ``V_i`` the electrostatic potential
at atom i (without its own charge's singular part): each pair's energy is split
half and half, the reciprocal sum as ``q_i Re(S*(k) e^{ik·r_i})``, the
self-energy and the background share as above. They sum to the total exactly.

Periodic cells (Ewald)
----------------------
All three axes periodic, any cell shape. The point-charge Ewald split with
parameter α: ``1/r = erfc(α r)/r + erf(α r)/r``; the erf part of every pair
(Gaussian or not) is summed in reciprocal space
``(2π K_E / V) Σ_{k≠0} exp(-k²/4α²)/k² |S(k)|²``, ``S(k) = Σ_i q_i e^{ik·r_i}``,
and the rest, ``φ_ij(r) - erf(α r)/r`` (``erfc(αr)/r - erfc(β_ij r)/r`` with
``β_ij = 1/(√2 γ_ij)`` for Gaussian charges) in real space, over the pairs
within ``r_c`` (:func:`periodic_pair_blocks`: a k-d tree of the periodic
images, queried in blocks of atoms, memory per pair of a block). The pair
loop is a Numba kernel that accumulates potentials, fields and virials in
one pass (numpy's per-pair temporaries took ten times longer: 1.8 s against
0.18 s for the 6 million pairs of 2,560 atoms).
The reciprocal sum runs over half the k-vectors (k and -k give the same term)
in chunks: memory ``O(N · chunk)``. Forces and the virial are analytic.

The accuracy rule (:func:`ewald_parameters`): ``accuracy`` is a target error
of the energy relative to the scale ``E_scale = K_E Σ_i q_i² / (2 a)``, with
``a = (V/N)^(1/3)`` the mean interatomic spacing (:func:`energy_scale_eV`).
For ionic crystals ``E_scale`` is below the energy's magnitude (|E|/E_scale
is 1.62 for CsCl, 1.75 for rock salt, 1.89 for zinc blende), so there the
error is below ``accuracy`` relative to the energy itself. The parameters:

* ``α = (w π³ N / V²)^(1/6)`` balances the cost of the two sums (``w``
  = :data:`COST_RATIO`, measured); for Gaussian charges α is capped at
  ``β_min = 1 / (2 σ_max)``, so the Gaussian pair tail ``erfc(β r)/r`` dies
  at least as fast as ``erfc(α r)/r``;
* real space to ``r_1 = x / α``, with the smallest ``x`` for which the larger
  of two error estimates is at most ``accuracy · E_scale / 2``: the
  Kolafa-Perram rms estimate for random charges,
  ``K_E Σq² √(x/(2Vα)) e^{-x²}/x²``, and the coherent estimate of a crystal,
  whose first neglected shell of ``2π (r_1/a)²`` like charges is off by
  ``erfc(x)/r_1`` each, ``E_scale · 2π x erfc(x) / (α a)`` (both doubled for
  Gaussian charges); ``r_1`` is raised to ``r_out`` when screening reaches
  further;
* reciprocal space to ``k_1 = 2 α y``, the smallest ``y`` for which the
  larger of the Kolafa-Perram estimate ``K_E Σq² (α/π²) K^(-3/2) e^{-y²}``
  (``K = α y V^(1/3) / π``) and the coherent estimate of a crystal (a shell
  of :data:`KSHELL` Bragg peaks with ``|S|² = (Σ|q|)²`` at ``k_1``,
  ``E_scale · 2π KSHELL e^{-y²} / (a α y)²``) is at most
  ``accuracy · E_scale / 2``.

The random estimates alone fail for crystals (rock salt's 311 Bragg shell
just beyond k_1 gave ten times the target); with the coherent ones, the
error measured in tests/test_electrostatics.py over crystals (primitive,
conventional, supercells) and random triclinic cells, point and Gaussian
charges, stays below ``accuracy · E_scale``, typically by a factor 3 to 100
(large random cells, where the coherent estimates are pessimistic).

Both sums are then tapered to zero smoothly (C2, the switch above) from
``r_1`` to ``r_c = (1 + TAPER) r_1`` and from ``k_1`` to
``k_c = (1 + TAPER) k_1``: no jumps in energy, forces or stress when pairs
or k-vectors cross a cutoff. None of the parameters depends on the
charges (the errors and the scale are both proportional to Σq²), so every
part of :func:`species_pair_parts` uses the same truncation, and the parts
add up to :func:`coulomb` exactly. They do depend on the volume: the virial
is the exact strain derivative at fixed parameters (pass ``parameters=``
to hold them), and the parameters' own change under strain moves the energy
by less than the accuracy target.

Finite systems (no periodic axis): the direct sum over all pairs, O(N²) time
in row blocks of O(N · block) memory; no virial. Mixed periodicity (slabs,
wires) is refused: it needs a 2D/1D Ewald sum that is not implemented.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numba
import numpy as np
from ase import Atoms, units
from scipy.spatial import cKDTree

from .errors import InputError

#: e² / (4π ε0) in eV·Å (14.399645).
K_E = units.Hartree * units.Bohr
#: The w of α = (w π³ N / V²)^(1/6): the cost of a real-space pair over that of an (atom, k-vector)
#: term of the reciprocal sum. Timed over w = 0.3 ... 100 (energy, forces and virial of rattled rock
#: salt): 10 was fastest at 640 atoms (0.07 s; 0.09 s at w = 3 and 30) and at 5,120 atoms (2.0 s;
#: 2.6 s at w = 3, 2.5 s at w = 30, 4.3 s at w = 1).
COST_RATIO = 10.0
#: Elements (atoms × k-vectors, or atoms × atoms) per chunk of the reciprocal and the direct sums.
CHUNK_ELEMENTS = 1 << 20
#: Bragg peaks (half of ±k) assumed in the first reciprocal shell beyond k_c by the accuracy rule
#: (the 311 shell of rock salt has 12).
KSHELL = 12
#: Both Ewald sums are tapered smoothly (C2) to zero over this fraction of their cutoff beyond the
#: point where the accuracy rule puts it, so that energy, forces and stress have no jumps when pairs
#: or k-vectors cross the cutoffs (MD conserves energy; forces and stress are exact derivatives).
TAPER = 0.1
_SQRT_PI = math.sqrt(math.pi)


@dataclass
class CoulombResult:
    """Energy, per-atom energies, forces and virial of the electrostatic energy of one frame.

    Attributes
    ----------
    energy_eV : float
        Total energy (eV), the sum of ``energies_eV``.
    energies_eV : numpy.ndarray, shape (N,)
        Per-atom energies (eV): half of each pair, the atom's share of the
        reciprocal sum and of the background, its Gaussian self-energy.
    forces_eV_per_A : numpy.ndarray, shape (N, 3), or None
        ``-dE/dr`` (eV/Å); None unless asked for.
    virial_eV : numpy.ndarray, shape (3, 3), or None
        Symmetric ``dE/dε`` for a homogeneous strain ε of cell and positions
        (eV; ASE ``stress = virial / volume``); None unless asked for, and on
        frames that are not periodic.
    parameters : EwaldParameters or None
        The Ewald parameters used (None for the direct sum).
    """

    energy_eV: float
    energies_eV: np.ndarray
    forces_eV_per_A: Optional[np.ndarray]
    virial_eV: Optional[np.ndarray]
    parameters: Optional["EwaldParameters"] = None


@dataclass(frozen=True)
class EwaldParameters:
    """The splitting parameter and cutoffs of an Ewald sum, and the error they are estimated to give.

    ``alpha_per_A`` (1/Å); the real-space kernel is tapered smoothly to zero
    from ``real_taper_A`` to ``real_cutoff_A`` (Å), the reciprocal one from
    ``kspace_taper_per_A`` to ``kspace_cutoff_per_A`` (1/Å);
    ``estimated_error`` is the estimate of the energy error relative to
    :func:`energy_scale_eV` (real plus reciprocal) of the accuracy rule.
    """

    alpha_per_A: float
    real_taper_A: float
    real_cutoff_A: float
    kspace_taper_per_A: float
    kspace_cutoff_per_A: float
    estimated_error: float


# --------------------------------------------------------------------------- #
# parameters
# --------------------------------------------------------------------------- #

def _smallest(f, target: float, lo: float = 0.5, hi: float = 30.0) -> float:
    """The smallest x in [lo, hi] with f(x) <= target, f decreasing there (bisection)."""
    if f(lo) <= target:
        return lo
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def ewald_parameters(n_atoms: int, volume_A3: float, accuracy: float = 1e-6, *,
                     max_width_A: Optional[float] = None,
                     screening_A: Optional[Tuple[float, float]] = None) -> EwaldParameters:
    """The Ewald parameters that reach ``accuracy`` (relative to :func:`energy_scale_eV`).

    The rule is in the module docstring. ``max_width_A``: the largest Gaussian
    width (Å), None for point charges; ``screening_A``: (r_in, r_out) in Å.
    """
    n, V = int(n_atoms), float(volume_A3)
    a = (V / n) ** (1.0 / 3.0)
    alpha = (COST_RATIO * math.pi ** 3 * n / V ** 2) ** (1.0 / 6.0)
    gaussian = max_width_A is not None
    if gaussian:
        alpha = min(alpha, 1.0 / (2.0 * float(max_width_A)))
    target = 0.5 * accuracy

    def real_error(x):
        # Kolafa-Perram rms estimate (random charges), and the coherent estimate of a crystal: a shell
        # of 2π (r_c/a)² like charges just beyond r_c, each off by erfc(x)/r_c (relative to E_scale)
        random = 2.0 * a * math.sqrt(x / (2.0 * V * alpha)) * math.exp(-x * x) / x ** 2
        coherent = 2.0 * math.pi * x * math.erfc(x) / (alpha * a)
        return (2.0 if gaussian else 1.0) * max(random, coherent)

    L = V ** (1.0 / 3.0)

    def kspace_error(y):
        # Kolafa-Perram rms estimate, and the coherent estimate of a crystal: KSHELL k-vectors with
        # |S(k)|² = (Σ|q|)² just beyond k_c (Bragg peaks), relative to E_scale
        K = alpha * y * L / math.pi
        random = 2.0 * a * alpha / math.pi ** 2 * K ** -1.5 * math.exp(-y * y)
        coherent = 2.0 * math.pi * KSHELL * math.exp(-y * y) / (a * a * alpha * alpha * y * y)
        return max(random, coherent)

    x = _smallest(real_error, target)
    y = _smallest(kspace_error, target)
    r_1 = x / alpha
    if screening_A is not None:
        r_1 = max(r_1, float(screening_A[1]))
    k_1 = 2.0 * alpha * y
    return EwaldParameters(alpha, r_1, (1.0 + TAPER) * r_1, k_1, (1.0 + TAPER) * k_1,
                           real_error(x) + kspace_error(y))


def energy_scale_eV(atoms: Atoms, charges_e: np.ndarray) -> float:
    """``K_E Σ q_i² / (2 a)`` (eV), ``a = (V/N)^(1/3)``: the scale ``accuracy`` is relative to (periodic cells)."""
    q = np.asarray(charges_e, dtype=float)
    a = (abs(atoms.cell.volume) / len(atoms)) ** (1.0 / 3.0)
    return float(K_E * np.sum(q * q) / (2.0 * a))


# --------------------------------------------------------------------------- #
# pair kernels
# --------------------------------------------------------------------------- #

def _switch(r: np.ndarray, r_in: float, r_out: float) -> Tuple[np.ndarray, np.ndarray]:
    """Quintic smoothstep: 0 at r <= r_in, 1 at r >= r_out (C2), and its derivative (1/Å)."""
    w = r_out - r_in
    t = np.clip((r - r_in) / w, 0.0, 1.0)
    return t ** 3 * (10.0 - 15.0 * t + 6.0 * t * t), 30.0 * t * t * (1.0 - t) ** 2 / w


def _jit(fn):
    """``numba.njit(cache=True)``, or without the on-disk cache where numba finds no writable place for it."""
    try:
        return numba.njit(cache=True)(fn)
    except RuntimeError:
        return numba.njit(fn)


@_jit
def _erf_over_r(r, b):
    """erf(b r)/r and its r-derivative; b = inf gives 1/r; a series below b r = 1e-3 (finite at r = 0)."""
    if b == np.inf:
        return 1.0 / r, -1.0 / (r * r)
    x = b * r
    if x < 1e-3:
        return 2.0 * b / _SQRT_PI * (1.0 - x * x / 3.0 + x ** 4 / 10.0), \
            2.0 * b * b / _SQRT_PI * (-2.0 * x / 3.0 + 0.4 * x ** 3)
    e = math.erf(x) / r
    return e, -e / r + 2.0 * b / _SQRT_PI * math.exp(-x * x) / r


@_jit
def _erfc_over_r(r, b):
    """erfc(b r)/r and its r-derivative (r > 0); b = inf gives 0."""
    if b == np.inf:
        return 0.0, 0.0
    x = b * r
    e = math.erfc(x) / r
    return e, -e / r - 2.0 * b / _SQRT_PI * math.exp(-x * x) / r


@_jit
def _smoothstep(r, r0, r1):
    """Quintic smoothstep 0 -> 1 from r0 to r1 (C2), and its derivative."""
    w = r1 - r0
    t = min(max((r - r0) / w, 0.0), 1.0)
    return t * t * t * (10.0 - 15.0 * t + 6.0 * t * t), 30.0 * t * t * (1.0 - t) ** 2 / w


@_jit
def _kernel(r, beta, alpha, r_in, r_out, t0, t1):
    """The pair kernel (1/Å) and its r-derivative: ``s(r) φ(r) - erf(α r)/r``, tapered from t0 to t1.

    φ = erf(β r)/r (β = inf: 1/r); s the screening switch (r_out = 0: none);
    α = 0: no Ewald split (the direct sum); t1 = 0: no taper. Beyond the
    screening region, the Ewald form is computed as erfc(αr)/r - erfc(βr)/r
    where β r >= 0.5, free of the cancellation of two nearly equal 1/r terms.
    """
    near = r < r_out
    if alpha > 0.0 and not near and beta * r >= 0.5:
        fa, dfa = _erfc_over_r(r, alpha)
        fb, dfb = _erfc_over_r(r, beta)
        K, dK = fa - fb, dfa - dfb
    else:
        s, ds = 1.0, 0.0
        if near:
            s, ds = _smoothstep(r, r_in, r_out)
        K, dK = 0.0, 0.0
        if s > 0.0:                                  # φ of point charges is never evaluated where s = 0
            phi, dphi = _erf_over_r(r, beta)
            K, dK = s * phi, ds * phi + s * dphi
        if alpha > 0.0:
            fa, dfa = _erf_over_r(r, alpha)
            K, dK = K - fa, dK - dfa
    if t1 > 0.0 and r > t0:
        s, ds = _smoothstep(r, t0, t1)
        K, dK = K * (1.0 - s), dK * (1.0 - s) - K * ds
    return K, dK


@_jit
def _pair_sums(i, j, D, sigma, alpha, r_in, r_out, t0, t1, U, pot, field, vir, want_field, want_vir):
    """Add K_E Σ_j U_jd K(r_ij) to pot[i, d], the fields to field[i, d, :], ½ Σ U_ic U_jd K'/r D D to vir[c, d].

    One pass over the pairs, nothing the size of the pair list allocated.
    ``sigma`` empty: point charges; else β_ij = 1/sqrt(2 (σ_i² + σ_j²)).
    """
    m = U.shape[1]
    gauss = sigma.shape[0] > 0
    for p in range(i.shape[0]):
        a, b = i[p], j[p]
        dx, dy, dz = D[p, 0], D[p, 1], D[p, 2]
        r = math.sqrt(dx * dx + dy * dy + dz * dz)
        beta = 1.0 / math.sqrt(2.0 * (sigma[a] ** 2 + sigma[b] ** 2)) if gauss else np.inf
        K, dK = _kernel(r, beta, alpha, r_in, r_out, t0, t1)
        K *= K_E
        g = K_E * dK / r if r > 0.0 else 0.0        # r = 0 only for Gaussian charges, where K' = 0
        for d in range(m):
            u = U[b, d]
            if u == 0.0:
                continue
            pot[a, d] += u * K
            if want_field:
                field[a, d, 0] += u * g * dx
                field[a, d, 1] += u * g * dy
                field[a, d, 2] += u * g * dz
            if want_vir:
                for c in range(m):
                    w = 0.5 * U[a, c] * u * g
                    if w != 0.0:
                        vir[c, d, 0, 0] += w * dx * dx
                        vir[c, d, 1, 1] += w * dy * dy
                        vir[c, d, 2, 2] += w * dz * dz
                        vir[c, d, 0, 1] += w * dx * dy
                        vir[c, d, 0, 2] += w * dx * dz
                        vir[c, d, 1, 2] += w * dy * dz


def _accumulate_pairs(pot, field, vir, U, i, j, D, sigma, alpha, screening, taper) -> None:
    """Add the pairs' potentials, fields and virials to the column arrays (in place), via :func:`_pair_sums`."""
    n, m = U.shape
    r_in, r_out = screening if screening is not None else (0.0, 0.0)
    t0, t1 = taper if taper is not None else (0.0, 0.0)
    _pair_sums(np.ascontiguousarray(i, dtype=np.int64), np.ascontiguousarray(j, dtype=np.int64),
               np.ascontiguousarray(D, dtype=float), np.zeros(0) if sigma is None else np.ascontiguousarray(sigma),
               float(alpha or 0.0), float(r_in), float(r_out), float(t0), float(t1),
               np.ascontiguousarray(U, dtype=float), pot,
               field if field is not None else np.zeros((0, m, 3)),
               vir if vir is not None else np.zeros((m, m, 3, 3)), field is not None, vir is not None)


@_jit
def _pair_matrix(i, j, D, sigma, alpha, r_in, r_out, t0, t1, out):
    """Add K_E K(r_ij) to out[i, j] for every pair: the real-space part of the Coulomb matrix (one pass).

    The same kernel as :func:`_pair_sums` with one unit charge per column, where each pair touches one entry.
    """
    gauss = sigma.shape[0] > 0
    for p in range(i.shape[0]):
        r = math.sqrt(D[p, 0] ** 2 + D[p, 1] ** 2 + D[p, 2] ** 2)
        beta = 1.0 / math.sqrt(2.0 * (sigma[i[p]] ** 2 + sigma[j[p]] ** 2)) if gauss else np.inf
        out[i[p], j[p]] += K_E * _kernel(r, beta, alpha, r_in, r_out, t0, t1)[0]


def _accumulate_matrix(out, i, j, D, sigma, alpha, screening, taper) -> None:
    """The pairs' part of the Coulomb matrix (in place), via :func:`_pair_matrix`."""
    r_in, r_out = screening if screening is not None else (0.0, 0.0)
    t0, t1 = taper if taper is not None else (0.0, 0.0)
    _pair_matrix(np.ascontiguousarray(i, dtype=np.int64), np.ascontiguousarray(j, dtype=np.int64),
                 np.ascontiguousarray(D, dtype=float), np.zeros(0) if sigma is None else np.ascontiguousarray(sigma),
                 float(alpha or 0.0), float(r_in), float(r_out), float(t0), float(t1), out)


# --------------------------------------------------------------------------- #
# the bilinear engine: potentials and fields of charge columns
# --------------------------------------------------------------------------- #

@dataclass
class _Fields:
    """For each charge column d (U[:, d]): potential (V, (N, m)), field ((N, m, 3)), virial parts.

    The energy of charges q = U c is ½ Σ_cd c_c c_d Σ_i U_ic pot_id; forces q_i Σ_d c_d field_id;
    virial Σ_cd c_c c_d vir[c, d] (vir symmetric in c, d).
    """

    pot: np.ndarray
    field: Optional[np.ndarray]
    vir: Optional[np.ndarray]
    parameters: Optional[EwaldParameters]


def _check_frame(atoms: Atoms) -> bool:
    """True for a periodic frame, False for a finite one; InputError for mixed periodicity."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise InputError(f"electrostatics of a frame periodic along some axes only (pbc={pbc.tolist()}) is not "
                         "implemented (slabs and wires need a 2D/1D Ewald sum): make the cell periodic along all "
                         "three axes with enough vacuum in the open directions, or make it non-periodic "
                         "(atoms.pbc = False) for a finite system")
    if pbc.all() and atoms.cell.rank < 3:
        raise InputError(f"a frame periodic along all axes has a cell of rank {atoms.cell.rank}: set a cell of "
                         "three independent vectors (atoms.cell), or make the frame non-periodic (atoms.pbc = False)")
    return bool(pbc.all())


def periodic_pair_blocks(atoms: Atoms, cutoff_A: float, max_pairs: int = 1 << 22
                         ) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The ordered pairs of a periodic frame closer than ``cutoff_A``, in blocks of central atoms.

    Each block: i, j, distance d (Å), D = r_j + n - r_i (Å), for lattice
    vector n. Both orders of each pair are listed, and an atom's own images
    (i = j, n ≠ 0); the atom itself at n = 0 is not. Any cell shape, cutoffs
    longer than the cell included. The images of the atoms within
    ``cutoff_A`` of the cell go into one k-d tree (scipy's), queried for
    blocks of central atoms of about ``max_pairs`` pairs: memory per image
    atom (N times about (1 + 2 r_c/h)³ for plane spacings h) and per block,
    time per pair. (ase.neighborlist.neighbor_list takes 0.9 s against 0.01 s
    here for 64 atoms and a cutoff of 11.5 Å, longer than the cell.)
    """
    cell = np.asarray(atoms.cell, dtype=float)
    n_atoms = len(atoms)
    frac = np.linalg.solve(cell.T, atoms.get_positions().T).T
    frac -= np.floor(frac)                                    # wrapped into [0, 1)
    frac[frac >= 1.0] = 0.0                                   # (floor of values just below 1)
    margin = cutoff_A * np.linalg.norm(np.linalg.inv(cell), axis=0)   # r_c / plane spacing, per axis
    reach = np.ceil(margin).astype(int)
    shifts = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in reach], indexing="ij"), -1).reshape(-1, 3)
    img_atom, img_frac = [], []
    for n in shifts:
        f = frac + n
        keep = np.all((f >= -margin) & (f <= 1.0 + margin), axis=1)
        img_atom.append(np.nonzero(keep)[0])
        img_frac.append(f[keep])
    img_atom = np.concatenate(img_atom)
    img_frac = np.concatenate(img_frac)
    own = np.all(np.abs(img_frac - frac[img_atom]) < 0.5, axis=1)       # the zero shift
    pos = frac @ cell
    img_pos = img_frac @ cell
    img_tree = cKDTree(img_pos)
    per_atom = 4.0 / 3.0 * math.pi * cutoff_A ** 3 * n_atoms / abs(np.linalg.det(cell)) + 1.0
    block = max(1, int(max_pairs / per_atom))
    for start in range(0, n_atoms, block):
        rows = np.arange(start, min(n_atoms, start + block))
        found = cKDTree(pos[rows]).sparse_distance_matrix(img_tree, cutoff_A, output_type="ndarray")
        i, k = rows[found["i"]], found["j"].astype(np.intp)
        j = img_atom[k]
        keep = ~(own[k] & (j == i))
        i, j, k = i[keep], j[keep], k[keep]
        D = img_pos[k] - pos[i]
        yield i, j, np.sqrt(np.einsum("ij,ij->i", D, D)), D


def periodic_pairs(atoms: Atoms, cutoff_A: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs of :func:`periodic_pair_blocks` at once: i, j, d (Å), D (Å)."""
    blocks = list(periodic_pair_blocks(atoms, cutoff_A))
    if not blocks:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0), np.zeros((0, 3))
    return tuple(np.concatenate(parts) for parts in zip(*blocks))


def _refuse_coincident(i, j, d) -> None:
    if d.size and d.min() < 1e-8:
        p = int(np.argmin(d))
        raise InputError(f"atoms {i[p]} and {j[p]} coincide (distance {d[p]:.2e} Å): point charges there have "
                         "infinite energy; move them apart, or give the charges Gaussian widths")


def _half_kvectors(cell: np.ndarray, k_c: float) -> np.ndarray:
    """The k-vectors 2π n·B (B the reciprocal rows) with 0 < |k| <= k_c, one of each ±k pair, (M, 3) in 1/Å."""
    recip = 2.0 * math.pi * np.linalg.inv(cell).T
    nmax = np.floor(k_c * np.linalg.norm(cell, axis=1) / (2.0 * math.pi)).astype(int)
    ranges = [np.arange(-m, m + 1) for m in nmax]
    n = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    half = (n[:, 0] > 0) | ((n[:, 0] == 0) & (n[:, 1] > 0)) | ((n[:, 0] == 0) & (n[:, 1] == 0) & (n[:, 2] > 0))
    k = n[half] @ recip
    return k[np.einsum("ij,ij->i", k, k) <= k_c * k_c]


def _ewald_fields(atoms: Atoms, U: np.ndarray, sigma: Optional[np.ndarray], accuracy: float,
                  screening: Optional[Tuple[float, float]], want_forces: bool, want_virial: bool,
                  params: Optional[EwaldParameters] = None, identity: bool = False) -> _Fields:
    """The columns' fields by Ewald summation; ``identity``: U is the unit matrix and pot is the Coulomb matrix."""
    n, m = U.shape
    cell = np.asarray(atoms.cell, dtype=float)
    V = abs(float(np.linalg.det(cell)))
    if params is None:
        params = ewald_parameters(n, V, accuracy, max_width_A=None if sigma is None else float(sigma.max()),
                                  screening_A=screening)
    elif screening is not None and params.real_taper_A < screening[1]:
        raise InputError(f"the Ewald parameters taper the real-space sum from {params.real_taper_A:g} Å, inside "
                         f"the screening range (r_out = {screening[1]:g} Å): give parameters with real_taper_A >= "
                         "r_out, or leave parameters to the accuracy rule", param="screening")
    alpha = params.alpha_per_A
    pot = np.zeros((n, m))
    field = np.zeros((n, m, 3)) if want_forces else None
    vir = np.zeros((m, m, 3, 3)) if want_virial else None

    # real space: the full (ordered) neighbour list, block by block
    for i, j, d, D in periodic_pair_blocks(atoms, params.real_cutoff_A):
        if sigma is None:
            _refuse_coincident(i, j, d)
        if identity:      # one matrix entry per pair instead of a pass over n columns
            _accumulate_matrix(pot, i, j, D, sigma, alpha, screening, (params.real_taper_A, params.real_cutoff_A))
            continue
        _accumulate_pairs(pot, field, vir, U, i, j, D, sigma, alpha, screening,
                          (params.real_taper_A, params.real_cutoff_A))
    if vir is not None:       # the pair sums filled the upper triangle; symmetric in (c, d) as well
        for a, b in ((0, 1), (0, 2), (1, 2)):
            vir[:, :, b, a] = vir[:, :, a, b]
        vir[:] = 0.5 * (vir + vir.transpose(1, 0, 2, 3))

    # reciprocal space, chunks of k-vectors: memory O(N * chunk)
    kvec = _half_kvectors(cell, params.kspace_cutoff_per_A)
    pos = atoms.get_positions()
    chunk = max(1, CHUNK_ELEMENTS // max(n, 1))
    pre = K_E * 8.0 * math.pi / V
    for start in range(0, len(kvec), chunk):
        k = kvec[start:start + chunk]
        k2 = np.einsum("ij,ij->i", k, k)
        # g(k²) = exp(-k²/4α²)/k² times the taper 1 - switch(|k|), and dg/dk² for the virial
        kn = np.sqrt(k2)
        sw, dsw = _switch(kn, params.kspace_taper_per_A, params.kspace_cutoff_per_A)
        A0 = np.exp(-k2 / (4.0 * alpha * alpha)) / k2
        A = A0 * (1.0 - sw)
        theta = pos @ k.T                                     # (N, C)
        c, s = np.cos(theta), np.sin(theta)
        # the structure factors of the columns; of unit charges (the matrix) they are the phases themselves
        Sc, Ss = (c, s) if identity else (U.T @ c, U.T @ s)   # (m, C)
        pot += pre * (c @ (A * Sc).T + s @ (A * Ss).T)
        if want_forces:
            ka = (A[None, :, None] * k[None]) * pre           # (1, C, 3)
            field += (s @ (Sc[:, :, None] * ka).transpose(1, 0, 2).reshape(len(k), 3 * m)
                      - c @ (Ss[:, :, None] * ka).transpose(1, 0, 2).reshape(len(k), 3 * m)).reshape(n, m, 3)
        if want_virial:
            # E_k ∝ g(k²)/V with k² -> k² - 2 k·ε·k under strain: dE_k/dε = E_k (-δ) - 2 k k g'/g E_k
            dg = -A * (1.0 / (4.0 * alpha * alpha) + 1.0 / k2) - A0 * dsw / (2.0 * kn)
            T = -2.0 * k[:, :, None] * k[:, None, :] * dg[:, None, None] - A[:, None, None] * np.eye(3)[None]
            R = Sc[:, None, :] * Sc[None, :, :] + Ss[:, None, :] * Ss[None, :, :]   # Re(S_c S_d*), (m, m, C)
            vir += 0.5 * pre * np.einsum("cdk,kab->cdab", R, T)

    # self-interaction removal of the reciprocal sum, and the Gaussian self-energy: 2 e_i / q_i
    self_pot = np.full(n, -2.0 * alpha / _SQRT_PI)
    if sigma is not None:
        self_pot += 1.0 / (_SQRT_PI * sigma)
    if identity:          # in place on the diagonal and by broadcasting: no further N² temporaries
        pot[np.diag_indices(n)] += K_E * self_pot
        pot += -math.pi * K_E / (V * alpha * alpha)
        if sigma is not None:
            g = 2.0 * math.pi * K_E / V * sigma * sigma
            pot += g[:, None]
            pot += g[None, :]
        return _Fields(pot, field, vir, params)
    pot += K_E * self_pot[:, None] * U

    # neutralising background (non-neutral columns only): a constant potential, plus the Gaussian term
    Q = U.sum(axis=0)                                        # (m,)
    bg = np.broadcast_to(-math.pi * K_E * Q / (V * alpha * alpha), (n, m)).copy()
    if sigma is not None:
        s2 = sigma * sigma
        bg += 2.0 * math.pi * K_E / V * (s2[:, None] * Q[None, :] + (s2 @ U)[None, :])
    pot += bg
    if want_virial:                                          # E_bg ∝ 1/V: dE/dε = -E δ
        e_bg = 0.5 * U.T @ bg                                 # (m, m): ½ Σ_i U_ic bg_id
        e_bg = 0.5 * (e_bg + e_bg.T)
        vir -= e_bg[:, :, None, None] * np.eye(3)[None, None]
    return _Fields(pot, field, vir, params)


def _direct_fields(atoms: Atoms, U: np.ndarray, sigma: Optional[np.ndarray],
                   screening: Optional[Tuple[float, float]], want_forces: bool, identity: bool = False) -> _Fields:
    """The direct sum over all pairs of a finite system, in row blocks (O(N²) time, O(N · block) memory)."""
    n, m = U.shape
    pos = atoms.get_positions()
    pot = np.zeros((n, m))
    field = np.zeros((n, m, 3)) if want_forces else None
    block = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        ii, jj = np.meshgrid(rows, np.arange(n), indexing="ij")
        keep = ii != jj
        ii, jj = ii[keep], jj[keep]
        D = pos[jj] - pos[ii]
        if sigma is None:
            _refuse_coincident(ii, jj, np.sqrt(np.einsum("ij,ij->i", D, D)))
        if identity:
            _accumulate_matrix(pot, ii, jj, D, sigma, None, screening, None)
            continue
        _accumulate_pairs(pot, field, None, U, ii, jj, D, sigma, None, screening, None)
    if sigma is not None and identity:
        pot[np.diag_indices(n)] += K_E / (_SQRT_PI * sigma)
    elif sigma is not None:
        pot += K_E / (_SQRT_PI * sigma)[:, None] * U
    return _Fields(pot, field, None, None)


def _fields(atoms: Atoms, U: np.ndarray, sigma: Optional[np.ndarray], accuracy: float, screening,
            want_forces: bool, want_virial: bool, params: Optional[EwaldParameters] = None,
            identity: bool = False) -> Tuple[_Fields, bool]:
    periodic = _check_frame(atoms)
    if periodic:
        return _ewald_fields(atoms, U, sigma, accuracy, screening, want_forces, want_virial, params,
                             identity), True
    return _direct_fields(atoms, U, sigma, screening, want_forces, identity), False


# --------------------------------------------------------------------------- #
# input checks
# --------------------------------------------------------------------------- #

def _check_settings(accuracy: float, screening_A) -> Optional[Tuple[float, float]]:
    if not (isinstance(accuracy, (int, float)) and 1e-15 <= float(accuracy) <= 1e-1):
        raise InputError(f"Coulomb accuracy {accuracy!r} is outside [1e-15, 0.1]: give the target relative error "
                         "of the energy, e.g. 1e-6", param="accuracy")
    if screening_A is None:
        return None
    try:
        r_in, r_out = (float(r) for r in screening_A)
    except (TypeError, ValueError):
        raise InputError(f"Coulomb screening {screening_A!r} is not a pair (r_in, r_out) of distances in Å: "
                         "give e.g. (2.0, 6.0), or None for no screening", param="screening") from None
    if not (0.0 <= r_in < r_out and math.isfinite(r_out)):
        raise InputError(f"Coulomb screening (r_in, r_out) = ({r_in:g}, {r_out:g}) Å needs 0 <= r_in < r_out: "
                         "the interaction is switched on from r_in to r_out", param="screening")
    return r_in, r_out


def _check_widths(widths, n: int) -> Optional[np.ndarray]:
    if widths is None:
        return None
    w = np.broadcast_to(np.asarray(widths, dtype=float), (n,)).copy() if np.ndim(widths) == 0 \
        else np.asarray(widths, dtype=float)
    if w.shape != (n,):
        raise InputError(f"Gaussian widths have shape {w.shape}, the frame has {n} atoms: give one width (Å) per "
                         "atom, or None for point charges", param="widths")
    if n and not (np.all(np.isfinite(w)) and w.min() > 0.0):
        raise InputError(f"Gaussian widths must be finite and positive (Å), smallest given {w.min():g}: give a "
                         "width > 0 to every atom, or None for point charges", param="widths")
    return w


# --------------------------------------------------------------------------- #
# public functions
# --------------------------------------------------------------------------- #

def coulomb(atoms: Atoms, charges_e: np.ndarray, widths_A: Optional[np.ndarray] = None, *,
            accuracy: float = 1e-6, screening_A: Optional[Tuple[float, float]] = None,
            forces: bool = True, virial: bool = True,
            parameters: Optional[EwaldParameters] = None) -> CoulombResult:
    """Electrostatic energy (eV), per-atom energies, forces (eV/Å) and virial (eV) of fixed charges.

    Parameters
    ----------
    atoms : ase.Atoms
        The frame (not modified): periodic along all three axes (Ewald sum) or
        along none (direct sum). Mixed periodicity raises InputError.
    charges_e : array (N,)
        Charges in units of e.
    widths_A : array (N,), float or None
        Gaussian widths σ_i (Å) of the charges; None for point charges.
    accuracy : float
        Target error of a periodic energy relative to :func:`energy_scale_eV`
        (module docstring); unused for finite systems (exact direct sum).
    screening_A : (r_in, r_out) or None
        Switch the pair interactions on smoothly from 0 at r_in to 1 at r_out (Å).
    forces, virial : bool
        Compute forces; compute the virial (periodic frames only).
    parameters : EwaldParameters or None
        Ewald parameters to use instead of those of the accuracy rule (which
        depend on the volume): with them held fixed, the virial is the exact
        strain derivative of the energy; with the rule's, the energy also
        moves with the parameters under strain, by less than ``accuracy``
        times the energy scale (``CoulombResult.parameters`` gives those used).

    The conventions (self-energy, background, per-atom split) are in the module docstring.
    """
    n = len(atoms)
    q = np.asarray(charges_e, dtype=float)
    if q.shape != (n,) or not np.all(np.isfinite(q)):
        raise InputError(f"charges have shape {q.shape} (or are not finite), the frame has {n} atoms: give one "
                         "finite charge (e) per atom", param="charges")
    sigma = _check_widths(widths_A, n)
    screening = _check_settings(accuracy, screening_A)
    periodic = _check_frame(atoms)
    if n == 0:
        return CoulombResult(0.0, np.zeros(0), np.zeros((0, 3)) if forces else None,
                             np.zeros((3, 3)) if virial and periodic else None)
    U = q[:, None]
    f, periodic = _fields(atoms, U, sigma, float(accuracy), screening, forces, virial and periodic, parameters)
    energies = 0.5 * q * f.pot[:, 0]
    F = q[:, None] * f.field[:, 0, :] if forces else None
    W = f.vir[0, 0].copy() if (virial and periodic) else None
    if W is not None:
        W = 0.5 * (W + W.T)
    return CoulombResult(float(energies.sum()), energies, F, W, f.parameters)


def species_pair_parts(atoms: Atoms, species: Sequence[int], widths_A: Optional[Mapping[int, float]] = None, *,
                       accuracy: float = 1e-6, screening_A=None, forces: bool = True, virial: bool = True,
                       parameters: Optional[EwaldParameters] = None) -> Dict[Tuple[int, int], CoulombResult]:
    """The parts P_ab of the Coulomb energy, forces and virial for per-species charges.

    For per-species charges q (q_a on every atom of species a),
    ``coulomb(atoms, q[numbers]) = Σ_{a<=b} q_a q_b parts[(a, b)]`` exactly,
    energies, per-atom energies, forces and virials alike (the same Ewald
    truncation is used for all parts and for :func:`coulomb`: it does not
    depend on the charges). ``species``: atomic numbers (sorted here; every
    species of the frame must be among them); ``widths_A``: {Z: σ (Å)} for
    Gaussian charges (every species of the frame needs one), None for point
    charges. Species absent from the frame get zero parts. Units as
    :class:`CoulombResult`; ``parameters`` as in :func:`coulomb`.
    """
    species = sorted(int(z) for z in set(species))
    numbers = atoms.get_atomic_numbers()
    n = len(atoms)
    missing = sorted(set(numbers.tolist()) - set(species))
    if missing:
        raise InputError(f"the frame has species {missing} that are not among the charged species {species}: "
                         "give every species of the frame a charge", param="charges")
    sigma = None
    if widths_A is not None:
        widths = {int(k): float(v) for k, v in widths_A.items()}
        absent = sorted(set(numbers.tolist()) - set(widths))
        if absent:
            raise InputError(f"Gaussian widths are given for species {sorted(widths)} but not for {absent} of the "
                             "frame: give every species a width (Å), or None for point charges", param="widths")
        sigma = _check_widths(np.array([widths[z] for z in numbers.tolist()], dtype=float), n)
    screening = _check_settings(accuracy, screening_A)
    periodic = _check_frame(atoms)
    want_virial = virial and periodic
    present = [z for z in species if np.any(numbers == z)]

    def zero() -> CoulombResult:
        return CoulombResult(0.0, np.zeros(n), np.zeros((n, 3)) if forces else None,
                             np.zeros((3, 3)) if want_virial else None)

    out = {(a, b): zero() for k, a in enumerate(species) for b in species[k:]}
    if not present:
        return out
    U = np.stack([(numbers == z).astype(float) for z in present], axis=1)     # indicator columns
    f, _ = _fields(atoms, U, sigma, float(accuracy), screening, forces, want_virial, parameters)
    for c, a in enumerate(present):
        for d in range(c, len(present)):
            b = present[d]
            if c == d:
                e = 0.5 * U[:, c] * f.pot[:, c]
                F = U[:, c, None] * f.field[:, c] if forces else None
                W = f.vir[c, c] if want_virial else None
            else:
                e = 0.5 * (U[:, c] * f.pot[:, d] + U[:, d] * f.pot[:, c])
                F = U[:, c, None] * f.field[:, d] + U[:, d, None] * f.field[:, c] if forces else None
                W = f.vir[c, d] + f.vir[d, c] if want_virial else None
            if W is not None:
                W = 0.5 * (W + W.T)
            out[(a, b)] = CoulombResult(float(e.sum()), e, F, W, f.parameters)
    return out


def coulomb_matrix(atoms: Atoms, widths_A: Optional[np.ndarray] = None, *, accuracy: float = 1e-6,
                   screening_A: Optional[Tuple[float, float]] = None,
                   parameters: Optional[EwaldParameters] = None) -> Tuple[np.ndarray, Optional[EwaldParameters]]:
    """The Coulomb matrix C (N, N; eV/e²) with ``E = ½ qᵀ C q`` for any charges q, and the Ewald parameters used.

    Exactly the energy of :func:`coulomb` (same truncation, Gaussian
    self-energies on the diagonal, the neutralising background of a charged
    cell), as a quadratic form: what charge equilibration minimises over.
    ``C q`` is the electrostatic potential (V) at each atom. Memory N², time
    N² times the k-vectors (periodic) or N² (finite). Arguments as :func:`coulomb`.
    """
    n = len(atoms)
    sigma = _check_widths(widths_A, n)
    screening = _check_settings(accuracy, screening_A)
    _check_frame(atoms)
    if n == 0:
        return np.zeros((0, 0)), None
    f, _ = _fields(atoms, np.eye(n), sigma, float(accuracy), screening, False, False, parameters, identity=True)
    C = f.pot
    return 0.5 * (C + C.T), f.parameters


@dataclass
class PairFields:
    """Forces and virials of the two quadratic forms of charges q and μ: ½ qᵀCq and the bilinear μᵀCq.

    ``forces_qq`` (N, 3) = −∂(½ qᵀCq)/∂r; ``forces_qm`` = −∂(μᵀCq)/∂r (eV/Å);
    ``virial_qq``, ``virial_qm`` (3, 3) their strain derivatives (eV; None for finite frames or when not asked).
    """

    forces_qq: np.ndarray
    forces_qm: np.ndarray
    virial_qq: Optional[np.ndarray]
    virial_qm: Optional[np.ndarray]


def pair_fields(atoms: Atoms, q: np.ndarray, mu: np.ndarray, widths_A: Optional[np.ndarray] = None, *,
                accuracy: float = 1e-6, screening_A: Optional[Tuple[float, float]] = None,
                virial: bool = True, parameters: Optional[EwaldParameters] = None) -> PairFields:
    """Position and strain derivatives of ½ qᵀC q and μᵀC q at fixed q, μ (C of :func:`coulomb_matrix`).

    What the forces of equilibrated charges need (:mod:`gapfit.qeq`): the
    explicit derivative of the electrostatic energy, and that of the
    bilinear form with the adjoint charges μ, from one pass over the pairs.
    """
    n = len(atoms)
    sigma = _check_widths(widths_A, n)
    screening = _check_settings(accuracy, screening_A)
    periodic = _check_frame(atoms)
    U = np.stack([np.asarray(q, dtype=float), np.asarray(mu, dtype=float)], axis=1)
    f, periodic = _fields(atoms, U, sigma, float(accuracy), screening, True, virial and periodic, parameters)
    Fqq = U[:, 0, None] * f.field[:, 0]
    Fqm = U[:, 1, None] * f.field[:, 0] + U[:, 0, None] * f.field[:, 1]
    Wqq = Wqm = None
    if virial and periodic:
        Wqq = f.vir[0, 0]
        Wqq = 0.5 * (Wqq + Wqq.T)
        Wqm = f.vir[0, 1] + f.vir[1, 0]
        Wqm = 0.5 * (Wqm + Wqm.T)
    return PairFields(Fqq, Fqm, Wqq, Wqm)
