"""Melting temperature by solid–liquid coexistence, with a committee spread from free-energy perturbation.

The method (docs/melting.md has the physics, every default and when it fails):

1. **Interface velocity.** A crystal is equilibrated in isotropic NPT at the
   guess ``T``; its lattice constant there fixes the lateral cell. An
   elongated cell (default 3×3×8 conventional cells, long along z) is built
   from a crystal half and a liquid half: the liquid half is melted as a
   periodic block of its own at ``2·T`` with z free (next to a fixed crystal
   at the crystal's density a half stays ordered for picoseconds even at
   twice the melting point), brought back to ``T``, set above the crystal,
   and the interfaces settle in Langevin NVT at ``T`` with the crystal held
   by :class:`ase.constraints.FixAtoms`. From that one start, MD at each
   of several temperatures keeps the lateral cell fixed and lets only z relax
   to zero pressure (ASE's :class:`~ase.md.nose_hoover_chain.MaskedMTKNPT`:
   MTK barostat on the c axis with Nosé–Hoover chains, which samples the
   N·P_zz·T ensemble and is the NPT family gapfit's own MD uses; ASE's older
   ``NPT`` (Melchionna) needs an upper-triangular cell, and Berendsen
   rescaling samples no canonical ensemble;
   with an ASE that lacks MaskedMTKNPT, ``Inhomogeneous_NPTBerendsen`` with the
   same mask is used and the log says so). Below the melting point the crystal
   grows into the liquid, above it melts: the rate of change of the solid
   fraction changes sign at ``T_m``.
2. **Solid fraction.** Atoms are binned along z. In each bin the in-plane
   structure factor ``S_b = ½ Σ_k |(1/N_b) Σ_i exp(i k·r_i)|²`` over two
   reciprocal vectors of the crystal in the fixed lateral cell
   (fcc and bcc: (2,0,0) and (0,2,0) in units of 2π/a; diamond: (2,2,0) and
   (2,−2,0)) is 1 in a perfect crystal, the Debye–Waller factor squared
   (≈0.5–0.8) in a hot one, and about ``1/N_b`` in a liquid. A bin is solid
   when ``S_b`` exceeds ``threshold`` (0.25); the solid fraction is the
   fraction of atoms in solid bins. The in-plane k makes ``S_b`` blind to z,
   so bins need not line up with atomic planes.
3. **Rate and T_m.** The rate d(solid fraction)/dt is a straight-line fit over
   the production part of each run (after ``equilibration_fraction``), cut
   where the fraction reaches 0 or 1; its standard error is the fit's,
   inflated for the frames' lag-1 autocorrelation. ``T_m`` is the zero of a
   weighted straight line through the rates of the (default 4) runs nearest
   the sign change, with its standard error from the fit. When every run
   melts, or every run freezes, there is no crossing to interpolate and
   :class:`NoMeltingCrossing` says which way to move the temperatures.
4. **Committee spread** (Imbalzano et al., J. Chem. Phys. 154, 074102, 2021).
   At the estimated ``T_m``, bulk solid and bulk liquid (default 108 atoms)
   run in isotropic NPT at zero pressure with the model; every member's
   energy is evaluated on the saved frames. Member k's free-energy shift per
   atom in phase p is ``Δf_k(p) = −(k_B T/N) ln⟨exp(−β(V_k − V_0))⟩_p``, and
   to first order in the shift, with the melting entropy
   ``ΔS_m = ΔH_m / T_m`` of the model held fixed,
   ``T_m,k = T_m + (Δf_k(liquid) − Δf_k(solid)) / ΔS_m``.

:func:`melting_point` runs it all and returns a
:class:`~gapfit.validation.results.PropertyResult`; the pieces
(:func:`layer_order_parameter`, :func:`solid_fraction`, :func:`interface_rate`,
:func:`melting_crossing`, :func:`free_energy_perturbation`,
:func:`melting_shift`) are public so that they can be tested and reused.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units

from ..errors import InputError
from ..md import thermalize
from ..reweight import boltzmann_weights
from .evaluate import Evaluator
from .results import PropertyResult

#: the in-plane reciprocal vectors of the order parameter, in units of 2π/a of the conventional cubic cell
K_VECTORS = {"fcc": ((2, 0, 0), (0, 2, 0)), "bcc": ((2, 0, 0), (0, 2, 0)), "diamond": ((2, 2, 0), (2, -2, 0))}
#: lattices the workflow builds (cubic conventional cells)
MELTING_LATTICES = tuple(K_VECTORS)
#: a bin whose structure factor exceeds this is solid
DEFAULT_THRESHOLD = 0.25
#: fewest atoms per bin before the liquid's 1/N_b noise approaches the threshold
MIN_ATOMS_PER_BIN = 12


class NoMeltingCrossing(InputError):
    """The rates do not change sign over the temperatures run (or do not fall with T): no T_m to interpolate.

    ``result`` holds the runs made (a PropertyResult with ``melting_temperature_K`` NaN) when the workflow
    raised it, so that nothing computed is lost.
    """

    def __init__(self, message: str, result: Optional[PropertyResult] = None):
        super().__init__(message, param="temperatures_K")
        self.result = result


# ----------------------------------------------------------------------------- order parameter

def _lateral_repeats(atoms: Atoms) -> Tuple[int, int]:
    n = atoms.info.get("melting_lateral_repeats")
    if n is None:
        raise InputError("the order parameter needs the number of conventional cells along x and y: pass "
                         "lateral_repeats=(nx, ny) or build the cell with coexistence_cell()",
                         param="lateral_repeats")
    return int(n[0]), int(n[1])


def layer_order_parameter(atoms: Atoms, lateral_repeats: Optional[Tuple[int, int]] = None, n_bins: int = 16, *,
                          lattice: str = "fcc") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The in-plane structure factor of each z-bin of a coexistence cell.

    The cell's a and b axes hold ``lateral_repeats = (nx, ny)`` conventional
    cubic cells of ``lattice``; the reciprocal vectors of :data:`K_VECTORS`
    are taken in that lateral cell, through fractional coordinates (so a
    phase ``2π (h·nx·s_a + k·ny·s_b)``), which holds for any lateral constant
    the cell has. Atoms are binned by their fractional c coordinate (wrapped)
    into ``n_bins`` equal bins.

    Returns
    -------
    z_fraction : ndarray (n_bins,)
        The bins' centres as fractions of the c axis.
    S : ndarray (n_bins,)
        ``½ Σ_k |(1/N_b) Σ_i exp(i k·r_i)|²``, dimensionless: 1 for a perfect
        crystal, ≈1/N_b for a liquid; NaN for an empty bin.
    counts : ndarray (n_bins,) of int
        Atoms per bin.
    """
    if lattice not in K_VECTORS:
        raise InputError(f"lattice {lattice!r}: the order parameter knows {', '.join(MELTING_LATTICES)}",
                         param="lattice")
    nx, ny = lateral_repeats if lateral_repeats is not None else _lateral_repeats(atoms)
    n_bins = int(n_bins)
    if n_bins < 1:
        raise InputError(f"n_bins must be a positive integer; got {n_bins}", param="n_bins")
    s = atoms.cell.scaled_positions(atoms.positions)  # unwrapped: the phases are periodic anyway
    b = np.minimum((np.mod(s[:, 2], 1.0) * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(b, minlength=n_bins)
    S = np.zeros(n_bins)
    for h, k, _ in K_VECTORS[lattice]:
        phase = np.exp(2j * np.pi * (h * nx * s[:, 0] + k * ny * s[:, 1]))
        amp = np.bincount(b, weights=phase.real, minlength=n_bins) + \
            1j * np.bincount(b, weights=phase.imag, minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            S += np.abs(amp / counts) ** 2
    S /= len(K_VECTORS[lattice])
    return (np.arange(n_bins) + 0.5) / n_bins, S, counts


def solid_fraction(atoms: Atoms, lateral_repeats: Optional[Tuple[int, int]] = None, n_bins: int = 16, *,
                   lattice: str = "fcc", threshold: float = DEFAULT_THRESHOLD) -> float:
    """Fraction of the atoms that sit in bins whose structure factor exceeds ``threshold`` (0 to 1)."""
    _, S, counts = layer_order_parameter(atoms, lateral_repeats, n_bins, lattice=lattice)
    return float(counts[np.nan_to_num(S) > threshold].sum() / max(1, counts.sum()))


# ----------------------------------------------------------------------------- rates and the crossing

@dataclass
class RateFit:
    """The rate of change of the solid fraction in one run.

    rate_per_ps : d(solid fraction)/dt, 1/ps (> 0: the crystal grows; < 0: it melts).
    error_per_ps : its standard error (fit error × the lag-1 autocorrelation factor, floored by the
        fraction's resolution over the fitted time).
    start_ps, end_ps : the fitted window.
    n_points : frames in it.
    saturated : the fraction reached 0 or 1 (the run melted or froze through) and the fit stops there;
        the rate is then a lower bound of its size.
    """

    rate_per_ps: float
    error_per_ps: float
    start_ps: float
    end_ps: float
    n_points: int
    saturated: bool


def interface_rate(time_ps: Sequence[float], fraction: Sequence[float], *, equilibration_fraction: float = 0.2,
                   resolution: float = 0.0, min_points: int = 5) -> RateFit:
    """Straight-line rate of a solid-fraction series, its standard error and the fitted window.

    The window starts after ``equilibration_fraction`` of the run and ends
    at the first frame where the fraction reaches 0 or 1 (fully molten or
    frozen: later frames carry no rate). When that leaves fewer than
    ``min_points`` frames (a run far from ``T_m`` that melted during the
    equilibration part), the window starts at the first frame instead. The
    standard error of the least-squares slope is multiplied by
    ``sqrt((1 + ρ)/(1 − ρ))``, ρ the lag-1 autocorrelation of the residuals
    (≥ 0): an AR(1) model of the correlated frames. It is floored at
    ``resolution / (√12 · window)``, the error of a fraction quantised in
    steps of ``resolution`` (1/n_bins for equal bins) that does not move.

    Parameters
    ----------
    time_ps, fraction : array_like (T,)
        Times (ps) and solid fractions (0 to 1) of the saved frames.
    """
    t = np.asarray(time_ps, dtype=np.float64)
    f = np.asarray(fraction, dtype=np.float64)
    if t.ndim != 1 or t.shape != f.shape or len(t) < 3 or not (np.all(np.isfinite(t)) and np.all(np.isfinite(f))):
        raise InputError(f"time_ps and fraction must be finite series of the same length ≥ 3; got shapes "
                         f"{t.shape} and {f.shape}", param="fraction")
    if not 0.0 <= equilibration_fraction < 1.0:
        raise InputError(f"equilibration_fraction must lie in [0, 1); got {equilibration_fraction!r}",
                         param="equilibration_fraction")
    ends = np.flatnonzero((f <= 0.0) | (f >= 1.0))
    start = int(np.searchsorted(t, t[0] + equilibration_fraction * (t[-1] - t[0])))
    ends = ends[ends > 0]
    stop = int(ends[ends >= start][0]) + 1 if np.any(ends >= start) else len(t)
    saturated = stop < len(t) or bool(f[-1] <= 0.0 or f[-1] >= 1.0)
    if stop - start < min_points:
        start = 0
        stop = int(ends[0]) + 1 if len(ends) else len(t)
        stop = max(stop, min(len(t), 3))
    tw, fw = t[start:stop], f[start:stop]
    n = len(tw)
    tc = tw - tw.mean()
    sxx = float(tc @ tc)
    slope = float(tc @ (fw - fw.mean()) / sxx)
    resid = fw - fw.mean() - slope * tc
    dof = max(1, n - 2)
    se = math.sqrt(float(resid @ resid) / dof / sxx)
    if n > 3 and float(resid @ resid) > 0:
        rho = float(resid[1:] @ resid[:-1] / (resid @ resid))
        rho = min(max(rho, 0.0), 0.95)
        se *= math.sqrt((1 + rho) / (1 - rho))
    span = float(tw[-1] - tw[0])
    if resolution > 0 and span > 0:
        se = max(se, resolution / (math.sqrt(12.0) * span))
    return RateFit(slope, se, float(tw[0]), float(tw[-1]), n, saturated)


@dataclass
class Crossing:
    """The zero of the rate against temperature.

    melting_temperature_K, error_K : T_m and its standard error from the fit.
    slope_per_ps_K, intercept_per_ps : the line rate = intercept + slope·(T − T_ref), T_ref = reference_K.
    used : indices (into the input arrays) of the runs fitted.
    extrapolated : T_m lies outside the temperatures fitted.
    """

    melting_temperature_K: float
    error_K: float
    slope_per_ps_K: float
    intercept_per_ps: float
    reference_K: float
    used: List[int]
    extrapolated: bool


def melting_crossing(temperatures_K: Sequence[float], rates_per_ps: Sequence[float],
                     errors_per_ps: Sequence[float], *, n_points: int = 4) -> Crossing:
    """Where the solid fraction's rate crosses zero: a weighted straight line through the runs around it.

    The runs are sorted by temperature and the sign change (rate ≥ 0 at a
    temperature, < 0 at the next) is located; with several (noise), the one
    nearest the zero of a line through all runs is taken. The two runs
    bracketing it and the nearest others up to ``n_points`` are fitted by
    least squares weighted by 1/error²; the covariance is scaled by the
    reduced χ² when it exceeds 1 (runs scattering more than their errors).
    T_m's standard error follows from the covariance of the two coefficients.

    Raises
    ------
    NoMeltingCrossing
        When every rate is negative (all runs melt: T_m lies below them),
        every rate positive (all freeze: above), or the fitted rate does not
        fall with temperature.
    """
    T = np.asarray(temperatures_K, dtype=np.float64)
    r = np.asarray(rates_per_ps, dtype=np.float64)
    e = np.asarray(errors_per_ps, dtype=np.float64)
    if T.ndim != 1 or T.shape != r.shape or T.shape != e.shape or len(T) < 2:
        raise InputError("temperatures_K, rates_per_ps and errors_per_ps must be equal-length series of at least "
                         f"2 runs; got shapes {T.shape}, {r.shape}, {e.shape}", param="temperatures_K")
    if not (np.all(np.isfinite(T)) and np.all(np.isfinite(r)) and np.all(np.isfinite(e)) and np.all(e > 0)):
        raise InputError("temperatures, rates must be finite and the errors positive", param="errors_per_ps")
    order = np.argsort(T)
    Ts, rs = T[order], r[order]
    listing = ", ".join(f"{t:g} K: {x:+.3g}/ps" for t, x in zip(Ts, rs))
    if np.all(rs < 0):
        raise NoMeltingCrossing(f"every run melted (the solid fraction fell at all of {listing}): the melting "
                                f"temperature lies below {Ts[0]:g} K; run lower temperatures")
    if np.all(rs > 0) or np.all(rs == 0):
        raise NoMeltingCrossing(f"every run froze (the solid fraction grew or stayed at all of {listing}): the "
                                f"melting temperature lies above {Ts[-1]:g} K; run higher temperatures")
    pairs = [i for i in range(len(Ts) - 1) if rs[i] >= 0 > rs[i + 1]]
    if not pairs:
        raise NoMeltingCrossing(f"the rates rise with temperature ({listing}): the crystal melts below and grows "
                                "above; the runs are too short or too noisy to tell, run longer")
    if len(pairs) > 1:
        c1, c0 = np.polyfit(Ts, rs, 1)
        guess = -c0 / c1 if c1 < 0 else 0.5 * (Ts[0] + Ts[-1])
        pairs.sort(key=lambda i: abs(0.5 * (Ts[i] + Ts[i + 1]) - guess))
    i = pairs[0]
    mid = 0.5 * (Ts[i] + Ts[i + 1])
    chosen = [i, i + 1]
    rest = sorted((j for j in range(len(Ts)) if j not in chosen), key=lambda j: abs(Ts[j] - mid))
    chosen += rest[:max(0, int(n_points) - 2)]
    chosen.sort()
    Tf, rf, ef = Ts[chosen], rs[chosen], e[order][chosen]
    A = np.stack([np.ones_like(Tf), Tf - mid], axis=1)
    W = 1.0 / ef ** 2
    cov = np.linalg.inv(A.T @ (W[:, None] * A))
    coef = cov @ (A.T @ (W * rf))
    dof = len(Tf) - 2
    if dof > 0:
        chi2 = float(np.sum(W * (rf - A @ coef) ** 2)) / dof
        cov = cov * max(1.0, chi2)
    c0, c1 = float(coef[0]), float(coef[1])
    if not c1 < 0:
        raise NoMeltingCrossing(f"the fitted rate does not fall with temperature near {mid:g} K (slope {c1:+.3g} "
                                f"/ps/K; runs {listing}): run longer or closer together")
    tm = mid - c0 / c1
    g = np.array([-1.0 / c1, c0 / c1 ** 2])
    err = float(math.sqrt(max(0.0, g @ cov @ g)))
    return Crossing(float(tm), err, c1, c0, float(mid), [int(order[j]) for j in chosen],
                    bool(tm < Tf[0] or tm > Tf[-1]))


# ----------------------------------------------------------------------------- free-energy perturbation

@dataclass
class FEPResult:
    """Each member's free-energy shift per atom from the model's frames of one phase.

    delta_f_eV_per_atom : (K,) the estimate used (exponential average, or the cumulant one where the
        weights collapsed).
    exponential_eV_per_atom, cumulant_eV_per_atom : (K,) both estimates.
    ess_fraction : (K,) effective sample size of the weights over the number of frames.
    method : ("exponential" | "cumulant",) per member.
    """

    delta_f_eV_per_atom: np.ndarray
    exponential_eV_per_atom: np.ndarray
    cumulant_eV_per_atom: np.ndarray
    ess_fraction: np.ndarray
    method: Tuple[str, ...]


def free_energy_perturbation(energies_eV, n_atoms: int, temperature_K: float, *,
                             min_ess_fraction: float = 0.1) -> FEPResult:
    """``Δf_k = −(k_B T / N) ln⟨exp(−β (V_k − V_0))⟩`` per member, from frames sampled with model 0.

    Parameters
    ----------
    energies_eV : array_like (T frames, 1 + K)
        Total potential energies, eV: column 0 the model that ran the MD,
        columns 1..K the members (as :meth:`Evaluator.evaluate` returns them).
    n_atoms : int
        Atoms per frame (N).
    temperature_K : float
        The MD's temperature, K.
    min_ess_fraction : float
        Members whose effective sample size ``(Σw)²/Σw²`` falls below this
        fraction of the frames get the second-order cumulant estimate
        ``(⟨ΔV⟩ − β Var(ΔV)/2)/N`` (exact for Gaussian ΔV) instead.

    The average is formed by log-sum-exp (no overflow for energies of
    thousands of eV). Returns eV per atom.
    """
    E = np.asarray(energies_eV, dtype=np.float64)
    if E.ndim != 2 or E.shape[1] < 3 or E.shape[0] < 2 or not np.all(np.isfinite(E)):
        raise InputError(f"energies_eV must be finite, shape (frames ≥ 2, 1 + K) with K ≥ 2 members; got "
                         f"{E.shape}", param="energies_eV")
    if int(n_atoms) < 1 or not temperature_K > 0:
        raise InputError(f"n_atoms must be ≥ 1 and temperature_K > 0; got {n_atoms!r}, {temperature_K!r}",
                         param="n_atoms")
    beta = 1.0 / (units.kB * float(temperature_K))
    dV = E[:, 1:] - E[:, :1]  # (T, K)
    _, ln_mean, ess_fraction = boltzmann_weights(dV.T, beta)  # ln⟨exp(−βΔV)⟩ by log-sum-exp
    expo = -ln_mean / (beta * n_atoms)
    cum = (dV.mean(axis=0) - 0.5 * beta * dV.var(axis=0, ddof=1)) / n_atoms
    collapsed = ess_fraction < min_ess_fraction
    return FEPResult(np.where(collapsed, cum, expo), expo, cum, ess_fraction,
                     tuple("cumulant" if c else "exponential" for c in collapsed))


def melting_shift(delta_f_liquid_eV_per_atom, delta_f_solid_eV_per_atom, entropy_eV_per_K_per_atom: float
                  ) -> np.ndarray:
    """``ΔT_k = (Δf_k(liquid) − Δf_k(solid)) / ΔS_m``, K: each member's melting point minus the model's.

    First order in ΔT (the free-energy difference of the phases is linear in
    T near T_m with slope −ΔS_m, ΔS_m the same for all members). A member
    that raises the liquid's free energy by c per atom melts c/ΔS_m higher.
    """
    if not entropy_eV_per_K_per_atom > 0:
        raise InputError(f"the melting entropy must be positive; got {entropy_eV_per_K_per_atom!r} eV/K/atom "
                         "(the liquid's enthalpy was not above the solid's: did a phase change during its run?)",
                         param="entropy_eV_per_K_per_atom")
    return (np.asarray(delta_f_liquid_eV_per_atom, dtype=np.float64)
            - np.asarray(delta_f_solid_eV_per_atom, dtype=np.float64)) / float(entropy_eV_per_K_per_atom)


# ----------------------------------------------------------------------------- MD helpers

def _langevin(atoms: Atoms, temperature_K: float, s: "_Settings", rng: np.random.Generator):
    from ase.md.langevin import Langevin
    return Langevin(atoms, timestep=s.timestep_fs * units.fs, temperature_K=temperature_K,
                    friction=s.friction_per_fs / units.fs, fixcm=False, rng=rng)


def _npt(atoms: Atoms, temperature_K: float, s: "_Settings", *, z_only: bool):
    """Zero-pressure NPT: isotropic, or the c axis alone (lateral cell fixed). Returns (integrator, name)."""
    dt = s.timestep_fs * units.fs
    try:
        from ase.md.nose_hoover_chain import IsotropicMTKNPT, MaskedMTKNPT
    except ImportError:  # ASE < 3.27: Berendsen rescaling, stated in the log
        from ase.md.nptberendsen import Inhomogeneous_NPTBerendsen, NPTBerendsen
        kw = dict(timestep=dt, temperature_K=temperature_K, pressure_au=0.0, taut=s.tdamp_fs * units.fs,
                  taup=s.pdamp_fs * units.fs, compressibility_au=1.0 / (140.0 * units.GPa))
        if z_only:
            return Inhomogeneous_NPTBerendsen(atoms, mask=(0, 0, 1), **kw), "Inhomogeneous_NPTBerendsen (c axis)"
        return NPTBerendsen(atoms, **kw), "NPTBerendsen (isotropic)"
    kw = dict(timestep=dt, temperature_K=temperature_K, pressure_au=0.0, tdamp=s.tdamp_fs * units.fs,
              pdamp=s.pdamp_fs * units.fs)
    if z_only:
        # the mask must be an array: ASE 3.29 indexes the cell momenta with it, and a tuple of bools
        # indexes nothing there (the cell then never moves)
        return MaskedMTKNPT(atoms, mask=np.array([False, False, True]), **kw), "MaskedMTKNPT (c axis only)"
    return IsotropicMTKNPT(atoms, **kw), "IsotropicMTKNPT"


def _npt_name(z_only: bool) -> str:
    """The name :func:`_npt` gives its integrator in this ASE."""
    try:
        from ase.md import nose_hoover_chain
    except ImportError:
        nose_hoover_chain = None
    if not hasattr(nose_hoover_chain, "MaskedMTKNPT"):
        return "Inhomogeneous_NPTBerendsen (c axis)" if z_only else "NPTBerendsen (isotropic)"
    return "MaskedMTKNPT (c axis only)" if z_only else "IsotropicMTKNPT"


def _run(dyn, atoms: Atoms, steps: int, interval: int, record, *, desc: str, progress: bool,
         target_K: float) -> None:
    """``steps`` of ``dyn``, calling ``record()`` every ``interval`` steps (and at step 0), with a bar."""
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False)

    def check():
        e = atoms.get_potential_energy()
        temp = atoms.get_temperature()
        if not (np.isfinite(e) and np.isfinite(temp)) or temp > 5.0 * target_K + 1000.0:
            raise InputError(f"{desc}: the MD became unstable (potential energy {e:g} eV, {temp:.0f} K against "
                             f"a target of {target_K:g} K): lower the time step or check the model",
                             param="timestep_fs")

    def tick():
        bar.update(min(dyn.nsteps, steps) - bar.n)
    # ASE calls the observers at step 0 too: the first record is the starting frame
    dyn.attach(check, interval=interval)
    if record is not None:
        dyn.attach(record, interval=interval)
    dyn.attach(tick, interval=interval)
    try:
        dyn.run(steps)
    finally:
        bar.close()


@dataclass
class _Settings:
    lattice: str
    cell: Tuple[int, int, int]
    timestep_fs: float
    steps: int
    interval: int
    lattice_steps: int
    melt_steps: int
    melt_temperature_K: float
    cool_steps: int
    equilibration_fraction: float
    threshold: float
    bins_per_cell: int
    tdamp_fs: float
    pdamp_fs: float
    friction_per_fs: float
    bulk_repeat: int
    bulk_steps: int
    min_ess_fraction: float
    seed: int
    log: List[str] = field(default_factory=list)


def _positive_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}; got {v!r}", param=name)
    return int(v)


def _positive_float(v, name: str, unit: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not (math.isfinite(x) and x > 0):
        raise InputError(f"{name} must be a positive number in {unit}; got {v!r}", param=name)
    return x


def _default_bins_per_cell(lattice: str, cell: Tuple[int, int, int]) -> int:
    """2 bins per conventional cell (one (002) plane each for fcc) unless that leaves < 12 atoms per bin."""
    from .structures import lattice_structure
    per_layer = len(lattice_structure(lattice, "Cu", 1.0)) * int(cell[0]) * int(cell[1])
    return 2 if per_layer / 2 >= MIN_ATOMS_PER_BIN else 1


def equilibrium_lattice_constant(evaluator: Evaluator, lattice: str, element: str, a_A: float,
                                 temperature_K: float, *, repeat: int = 3, steps: int = 1000,
                                 timestep_fs: float = 4.0, tdamp_fs: float = 100.0, pdamp_fs: float = 1000.0,
                                 seed: int = 0, progress: bool = True) -> Tuple[float, float, str]:
    """The crystal's lattice constant at ``temperature_K`` and zero pressure, Å, from isotropic NPT.

    ``repeat``³ conventional cells start at ``a_A``; the cell edge is
    averaged over the second half of ``steps``. Returns (a, its standard
    deviation over that half, the integrator's name).
    """
    from .structures import lattice_structure
    s = _Settings(lattice, (repeat, repeat, repeat), timestep_fs, steps, 10, steps, 0, 0.0, 0, 0.5,
                  DEFAULT_THRESHOLD, 1, tdamp_fs, pdamp_fs, 0.01, repeat, 0, 0.0, seed)
    atoms = lattice_structure(lattice, element, a_A).repeat((repeat,) * 3)
    atoms.calc = evaluator.calculator
    thermalize(atoms, temperature_K, np.random.default_rng(seed))
    dyn, name = _npt(atoms, temperature_K, s, z_only=False)
    edges: List[float] = []
    _run(dyn, atoms, steps, 10, lambda: edges.append(float(np.cbrt(atoms.get_volume())) / repeat),
         desc=f"lattice at {temperature_K:g} K", progress=progress, target_K=temperature_K)
    half = np.array(edges[len(edges) // 2:])
    return float(half.mean()), float(half.std()), name


def coexistence_cell(lattice: str, element: str, a_A: float, cell: Tuple[int, int, int]) -> Atoms:
    """``cell = (nx, ny, nz)`` conventional cubic cells of lattice constant ``a_A``, long along z.

    The lateral repeats are kept in ``info["melting_lateral_repeats"]`` for
    :func:`layer_order_parameter`.
    """
    from .structures import lattice_structure
    atoms = lattice_structure(lattice, element, a_A).repeat(tuple(cell))
    atoms.info["melting_lateral_repeats"] = (int(cell[0]), int(cell[1]))
    return atoms


def _coexistence_start(evaluator: Evaluator, lattice: str, element: str, a_A: float, cell: Tuple[int, int, int],
                       temperature_K: float, s: _Settings, rng: np.random.Generator, progress: bool
                       ) -> Tuple[Atoms, np.ndarray, List[str]]:
    """A crystal half and a liquid half in one cell, long along z; returns (atoms, the solid's mask, log lines).

    The liquid half is melted as a periodic block of its own with the same
    lateral cell (z free, MaskedMTKNPT at ``s.melt_temperature_K``, then at
    ``temperature_K``): a half melted next to a fixed crystal, at the
    crystal's density, stays ordered for picoseconds even at twice the
    melting point (the crystal templates it and it cannot expand), while a
    free block melts within one. The block is placed above the crystal with
    one plane spacing between them on each side, and the pair runs
    ``s.cool_steps`` of Langevin NVT at ``temperature_K`` with the crystal
    held by FixAtoms, so that the interfaces settle before any run.
    """
    from ase.constraints import FixAtoms
    nx, ny, nz = cell
    nz_s = nz // 2
    solid = coexistence_cell(lattice, element, a_A, (nx, ny, nz_s))
    liquid = coexistence_cell(lattice, element, a_A, (nx, ny, nz - nz_s))
    liquid.calc = evaluator.calculator
    thermalize(liquid, s.melt_temperature_K, rng)
    dyn, name = _npt(liquid, s.melt_temperature_K, s, z_only=True)
    _run(dyn, liquid, s.melt_steps, 10, None, desc=f"melt at {s.melt_temperature_K:g} K", progress=progress,
         target_K=s.melt_temperature_K)
    n_cool = max(10, s.cool_steps)
    dyn, _ = _npt(liquid, temperature_K, s, z_only=True)
    _run(dyn, liquid, n_cool, 10, None, desc=f"liquid to {temperature_K:g} K", progress=progress,
         target_K=temperature_K)
    f_liq = solid_fraction(liquid, (nx, ny), nz - nz_s, lattice=lattice, threshold=s.threshold)
    if f_liq > 0.5:
        raise InputError(f"the liquid half did not melt: solid fraction {f_liq:.2f} after {s.melt_steps} steps at "
                         f"{s.melt_temperature_K:g} K; raise melt_steps or melt_temperature_K", param="melt_steps")
    # the crystal's planes centred in its block: one plane spacing d between its outer planes and the liquid
    zs = solid.positions[:, 2]
    L_s = float(solid.cell[2, 2])
    d = L_s - float(zs.max())
    zs += 0.5 * d
    L_l = float(liquid.cell[2, 2])
    zl = np.mod(liquid.cell.scaled_positions(liquid.positions)[:, 2], 1.0) * L_l + L_s + 0.5 * d
    pos = np.concatenate([np.column_stack([solid.positions[:, :2], zs]),
                          np.column_stack([liquid.positions[:, :2], zl])])
    lateral = np.array(solid.cell)
    lateral[2] = [0.0, 0.0, L_s + L_l + d]
    atoms = Atoms(np.concatenate([solid.numbers, liquid.numbers]), positions=pos, cell=lateral, pbc=True)
    atoms.info["melting_lateral_repeats"] = (nx, ny)
    fixed = np.arange(len(atoms)) < len(solid)
    atoms.calc = evaluator.calculator
    momenta = np.zeros((len(atoms), 3))
    momenta[~fixed] = liquid.get_momenta()
    atoms.set_momenta(momenta)
    atoms.set_constraint(FixAtoms(mask=fixed))
    _run(_langevin(atoms, temperature_K, s, rng), atoms, n_cool, 10, None, desc="settle the interfaces",
         progress=progress, target_K=temperature_K)
    atoms.set_constraint()
    log = [f"liquid half: {len(liquid)} atoms ({nx}×{ny}×{nz - nz_s} cells) melted as a periodic block, "
           f"{s.melt_steps} steps of {name} at {s.melt_temperature_K:g} K (lateral cell fixed, z free, 0 GPa), then "
           f"{n_cool} at {temperature_K:g} K (solid fraction {f_liq:.2f}, z {L_l:.2f} Å)",
           f"coexistence start: crystal half {len(solid)} atoms ({nx}×{ny}×{nz_s} cells, {L_s:.2f} Å) below the "
           f"liquid half with one plane spacing ({d:.2f} Å) between them; {n_cool} steps of Langevin NVT at "
           f"{temperature_K:g} K (friction {s.friction_per_fs:g}/fs) with the crystal held by FixAtoms"]
    return atoms, fixed, log


# ----------------------------------------------------------------------------- the workflow

def _melting_settings(*, lattice: str, a_A: float, temperature_guess_K: float,
                      temperatures_K: Optional[Sequence[float]], cell: Tuple[int, int, int], timestep_fs: float,
                      steps: int, interval: int, lattice_steps: int, melt_steps: int,
                      melt_temperature_K: Optional[float], cool_steps: int, equilibration_fraction: float,
                      threshold: float, bins_per_cell: Optional[int], tdamp_fs: float, pdamp_fs: float,
                      friction_per_fs: float, bulk_repeat: int, bulk_steps: int, min_ess_fraction: float,
                      seed: int) -> Tuple[_Settings, float, float, List[float]]:
    """Checks :func:`melting_point`'s arguments; returns (settings, guess K, a_A Å, the runs' temperatures K)."""
    if lattice not in K_VECTORS:
        raise InputError(f"--lattice {lattice}: the melting workflow builds cubic cells of "
                         f"{', '.join(MELTING_LATTICES)}", param="lattice")
    guess = _positive_float(temperature_guess_K, "temperature_guess_K", "K")
    a_A = _positive_float(a_A, "a_A", "Å")
    cell = tuple(int(c) for c in cell)
    if len(cell) != 3 or min(cell) < 1:
        raise InputError(f"cell must be three repeats ≥ 1 (nx ny nz); got {cell}", param="cell")
    if cell[2] < 2:
        raise InputError(f"cell {cell}: the z repeat must be ≥ 2 to hold a solid and a liquid half", param="cell")
    if temperatures_K is None:
        temperatures_K = [guess + d for d in (-100.0, -50.0, 0.0, 50.0, 100.0)]
    temps = [_positive_float(t, "temperatures_K", "K") for t in temperatures_K]
    if len(temps) < 2 or len(set(temps)) != len(temps):
        raise InputError(f"temperatures_K needs at least 2 different temperatures; got {list(temperatures_K)}",
                         param="temperatures_K")
    s = _Settings(lattice, cell, _positive_float(timestep_fs, "timestep_fs", "fs"),
                  _positive_int(steps, "steps", 10), _positive_int(interval, "interval"),
                  _positive_int(lattice_steps, "lattice_steps", 10), _positive_int(melt_steps, "melt_steps"),
                  _positive_float(melt_temperature_K if melt_temperature_K is not None else 2.0 * guess,
                                  "melt_temperature_K", "K"),
                  _positive_int(cool_steps, "cool_steps", 0), float(equilibration_fraction),
                  _positive_float(threshold, "threshold", "(structure factor, 0 to 1)"),
                  _positive_int(bins_per_cell if bins_per_cell is not None else _default_bins_per_cell(lattice, cell),
                                "bins_per_cell"), _positive_float(tdamp_fs, "tdamp_fs", "fs"),
                  _positive_float(pdamp_fs, "pdamp_fs", "fs"),
                  _positive_float(friction_per_fs, "friction_per_fs", "1/fs"),
                  _positive_int(bulk_repeat, "bulk_repeat"), _positive_int(bulk_steps, "bulk_steps", 10),
                  float(min_ess_fraction), int(seed))
    if s.steps // s.interval < 10:
        raise InputError(f"steps={s.steps} with interval={s.interval} saves {s.steps // s.interval} frames; the "
                         "rate fit needs at least 10: more steps or a shorter interval", param="steps")
    if not 0.0 <= s.equilibration_fraction < 1.0:
        raise InputError(f"equilibration_fraction must lie in [0, 1); got {equilibration_fraction!r}",
                         param="equilibration_fraction")
    return s, guess, a_A, temps


def _lattice_at_guess(evaluator: Evaluator, element: str, a_A: float, guess: float, s: _Settings, progress: bool,
                      seconds: Dict[str, float]) -> float:
    """(a) The crystal's lattice constant at the guess, Å, from isotropic NPT at 0 GPa; logged and timed."""
    t0 = time.perf_counter()
    nl = max(s.cell[0], s.cell[1])
    a_T, a_sd, npt_iso = equilibrium_lattice_constant(
        evaluator, s.lattice, element, a_A, guess, repeat=nl, steps=s.lattice_steps, timestep_fs=s.timestep_fs,
        tdamp_fs=s.tdamp_fs, pdamp_fs=s.pdamp_fs, seed=s.seed, progress=progress)
    seconds["lattice"] = time.perf_counter() - t0
    s.log.append(f"lattice constant at {guess:g} K: {a_T:.4f} ± {a_sd:.4f} Å (std over the second half) from "
                 f"{s.lattice_steps} steps of {npt_iso} at 0 GPa on {nl}³ conventional cells, from a = {a_A:g} Å")
    return a_T


def _checked_start(evaluator: Evaluator, element: str, a_T: float, guess: float, s: _Settings,
                   rng: np.random.Generator, progress: bool, seconds: Dict[str, float]) -> Tuple[Atoms, int, int]:
    """(b) The coexistence start at the guess, checked to hold both phases; returns (start, atoms, z-bins)."""
    lattice, cell, log = s.lattice, s.cell, s.log
    t0 = time.perf_counter()
    start = coexistence_cell(lattice, element, a_T, cell)
    n = len(start)
    n_bins = s.bins_per_cell * cell[2]
    per_bin = n / n_bins
    log.append(f"coexistence cell: {cell[0]}×{cell[1]}×{cell[2]} conventional cells, {n} atoms, lateral "
               f"{start.cell.lengths()[0]:.3f} × {start.cell.lengths()[1]:.3f} Å fixed at a({guess:g} K) for every "
               "run")
    log.append(f"order parameter: in-plane structure factor at k = 2π/a·{K_VECTORS[lattice][0]} and "
               f"{K_VECTORS[lattice][1]} per z-bin; {n_bins} bins ({s.bins_per_cell} per cell, "
               f"{per_bin:.1f} atoms each; a liquid bin gives ≈ {1 / per_bin:.3f}); solid above {s.threshold:g}")
    if per_bin < MIN_ATOMS_PER_BIN:
        log.append(f"warning: {per_bin:.1f} atoms per bin (< {MIN_ATOMS_PER_BIN}): liquid bins fluctuate near "
                   "the threshold; use fewer bins per cell or a wider cell")
    start, _, melt_log = _coexistence_start(evaluator, lattice, element, a_T, cell, guess, s, rng, progress)
    log.extend(melt_log)
    f0 = solid_fraction(start, cell[:2], n_bins, lattice=lattice, threshold=s.threshold)
    seconds["melt"] = time.perf_counter() - t0
    log.append(f"solid fraction of the coexistence start: {f0:.3f}")
    if f0 > 0.75:
        raise InputError(f"the liquid half froze back: solid fraction {f0:.2f} of the coexistence start at {guess:g} "
                         "K; the guess is far below the melting point (raise temperature_guess_K) or cool_steps is "
                         "too long", param="temperature_guess_K")
    if f0 < 0.2:
        raise InputError(f"the solid half melted: solid fraction {f0:.2f} of the coexistence start at {guess:g} K; "
                         "the guess is far above the melting point (lower temperature_guess_K) or cool_steps is "
                         "too long", param="temperature_guess_K")
    return start, n, n_bins


def _coexistence_run(evaluator: Evaluator, start: Atoms, start_positions: np.ndarray, start_cell, j: int, T: float,
                     n_temps: int, n: int, n_bins: int, s: _Settings, progress: bool) -> Tuple[Dict[str, Any], str]:
    """(c) Run ``j`` at ``T`` from the start, lateral cell fixed, z free at 0 GPa; returns (run, integrator's name)."""
    lattice, cell = s.lattice, s.cell
    atoms = start.copy()
    atoms.set_positions(start_positions)
    atoms.set_cell(start_cell)
    atoms.info["melting_lateral_repeats"] = cell[:2]
    atoms.calc = evaluator.calculator
    thermalize(atoms, T, np.random.default_rng([s.seed, j]))
    dyn, npt_z = _npt(atoms, T, s, z_only=True)
    rec: Dict[str, List[float]] = {"time_ps": [], "solid_fraction": [], "potential_energy_eV_per_atom": [],
                                   "cell_z_A": [], "kinetic_temperature_K": []}

    def record(atoms=atoms, rec=rec, dyn=dyn):
        rec["time_ps"].append(dyn.nsteps * s.timestep_fs / 1000.0)
        rec["solid_fraction"].append(solid_fraction(atoms, cell[:2], n_bins, lattice=lattice,
                                                    threshold=s.threshold))
        rec["potential_energy_eV_per_atom"].append(atoms.get_potential_energy() / n)
        rec["cell_z_A"].append(float(atoms.cell.lengths()[2]))
        rec["kinetic_temperature_K"].append(float(atoms.get_temperature()))
    t1 = time.perf_counter()
    _run(dyn, atoms, s.steps, s.interval, record, desc=f"coexistence {T:g} K ({j + 1}/{n_temps})",
         progress=progress, target_K=T)
    fit = interface_rate(rec["time_ps"], rec["solid_fraction"], equilibration_fraction=s.equilibration_fraction,
                         resolution=1.0 / n_bins)
    tp = np.array(rec["time_ps"])
    w = (tp >= fit.start_ps) & (tp <= fit.end_ps)
    e_slope = float(np.polyfit(tp[w], np.array(rec["potential_energy_eV_per_atom"])[w], 1)[0]) \
        if w.sum() >= 2 else float("nan")
    lz = float(np.mean(rec["cell_z_A"]))
    run = {"temperature_K": T, **rec, "rate_per_ps": fit.rate_per_ps,
           "rate_error_per_ps": fit.error_per_ps, "fit_start_ps": fit.start_ps, "fit_end_ps": fit.end_ps,
           "fit_points": fit.n_points, "saturated": fit.saturated,
           # two interfaces share the change of the solid length L_z·Δf: v = L_z·rate/2 (Å/ps = 100 m/s)
           "interface_velocity_m_per_s": 100.0 * lz * fit.rate_per_ps / 2.0,
           "energy_rate_meV_per_atom_per_ps": 1000.0 * e_slope,
           "mean_temperature_K": float(np.mean(np.array(rec["kinetic_temperature_K"])[tp >= fit.start_ps])),
           "seconds": time.perf_counter() - t1}
    return run, npt_z


def _coexistence_runs(evaluator: Evaluator, start: Atoms, temps: List[float], n: int, n_bins: int, s: _Settings,
                      progress: bool, seconds: Dict[str, float]) -> Tuple[List[Dict[str, Any]], str]:
    """(c) One coexistence run per temperature from the one start; returns (runs, integrator's name), logged."""
    start_positions, start_cell = start.get_positions(), start.get_cell()
    runs: List[Dict[str, Any]] = []
    npt_z = ""
    t0 = time.perf_counter()
    for j, T in enumerate(temps):
        run, npt_z = _coexistence_run(evaluator, start, start_positions, start_cell, j, T, len(temps), n, n_bins, s,
                                      progress)
        runs.append(run)
    seconds["coexistence"] = time.perf_counter() - t0
    s.log.append(f"coexistence runs at {', '.join(f'{t:g}' for t in temps)} K: {s.steps} steps of "
                 f"{s.timestep_fs:g} fs each ({s.steps * s.timestep_fs / 1000:g} ps), {npt_z} at 0 GPa on the c "
                 f"axis (a, b fixed), Nosé–Hoover tdamp {s.tdamp_fs:g} fs, barostat pdamp {s.pdamp_fs:g} fs; "
                 f"fresh Maxwell–Boltzmann velocities at each T; a frame every {s.interval} steps")
    s.log.append(f"rate: straight line through the solid fraction after the first "
                 f"{100 * s.equilibration_fraction:g} % of each run, up to where it reaches 0 or 1; error × "
                 "sqrt((1+ρ)/(1−ρ)) for the lag-1 autocorrelation ρ")
    return runs, npt_z


def _new_result(evaluator: Evaluator, element: str, a_A: float, guess: float, temps: List[float], s: _Settings,
                runs: List[Dict[str, Any]], a_T: float, n: int, n_bins: int, npt_z: str,
                seconds: Dict[str, float]) -> PropertyResult:
    """The PropertyResult ``"melting"`` with no values yet; its details hold the runs, the settings and the log."""
    values: Dict[str, float] = {}
    result = PropertyResult("melting", values)
    result.details = {"runs": runs, "log": s.log, "lattice_constant_at_guess_A": a_T,
                      "settings": {"lattice": s.lattice, "element": element, "a_start_A": a_A, "cell": list(s.cell),
                                   "n_atoms": n, "temperature_guess_K": guess, "temperatures_K": temps,
                                   "timestep_fs": s.timestep_fs, "steps": s.steps, "interval": s.interval,
                                   "lattice_steps": s.lattice_steps, "melt_steps": s.melt_steps,
                                   "melt_temperature_K": s.melt_temperature_K, "cool_steps": s.cool_steps,
                                   "equilibration_fraction": s.equilibration_fraction, "threshold": s.threshold,
                                   "n_bins": n_bins, "tdamp_fs": s.tdamp_fs, "pdamp_fs": s.pdamp_fs,
                                   "friction_per_fs": s.friction_per_fs, "thermostat_barostat": npt_z,
                                   "bulk_repeat": s.bulk_repeat, "bulk_steps": s.bulk_steps,
                                   "min_ess_fraction": s.min_ess_fraction, "seed": s.seed,
                                   "committee_members": int(getattr(evaluator, "n_members", 0))},
                      "seconds": seconds}
    return result


def _finish(result: PropertyResult, t_start: float, plot_dir: Optional[str]) -> None:
    """Stamps the wall time since ``t_start`` on the result and writes melting.png into ``plot_dir`` if given."""
    result.seconds = time.perf_counter() - t_start
    if plot_dir:
        plot_melting(result, os.path.join(plot_dir, "melting.png"))


def _no_crossing(result: PropertyResult, exc: NoMeltingCrossing, t_start: float, plot_dir: Optional[str],
                 require_crossing: bool) -> PropertyResult:
    """T_m NaN with the reason as a note; raises NoMeltingCrossing carrying the result if ``require_crossing``."""
    result.values["melting_temperature_K"] = float("nan")
    result.notes.append(str(exc))
    _finish(result, t_start, plot_dir)
    if require_crossing:
        raise NoMeltingCrossing(str(exc), result) from None
    return result


def _record_crossing(result: PropertyResult, cross: Crossing, temps: List[float], runs: List[Dict[str, Any]],
                     log: List[str]) -> float:
    """Puts T_m and its fit error, the crossing's details, its log line and notes into the result; returns T_m, K."""
    tm = cross.melting_temperature_K
    result.values["melting_temperature_K"] = tm
    result.values["melting_temperature_fit_error_K"] = cross.error_K
    result.standard_errors["melting_temperature_K"] = cross.error_K
    result.details["crossing"] = {"slope_per_ps_K": cross.slope_per_ps_K, "intercept_per_ps": cross.intercept_per_ps,
                                  "reference_K": cross.reference_K, "runs_fitted_K": [temps[i] for i in cross.used],
                                  "extrapolated": cross.extrapolated}
    log.append(f"T_m: zero of a straight line (weights 1/error²) through the rates at "
               f"{', '.join(f'{temps[i]:g}' for i in cross.used)} K: {tm:.1f} ± {cross.error_K:.1f} K")
    if cross.extrapolated:
        result.notes.append(f"T_m = {tm:.0f} K lies outside the temperatures fitted: run one beyond it")
    if any(runs[i]["saturated"] for i in cross.used):
        result.notes.append("some fitted runs melted or froze through: their rates are lower bounds; runs closer "
                            "to T_m or a longer cell sharpen the crossing")
    return tm


def _add_committee_fep(result: PropertyResult, ph: Dict[str, Any], tm: float) -> None:
    """The members' T_m (T_m + ΔT_k from FEP of both phases), the FEP details and the note on the ±."""
    dT = np.asarray(ph["delta_T_K"])
    result.members["melting_temperature_K"] = tm + dT
    result.details["fep"] = {k: ph[k] for k in ("delta_T_K", "delta_f_solid_eV_per_atom",
                                                 "delta_f_liquid_eV_per_atom", "ess_fraction_solid",
                                                 "ess_fraction_liquid", "method_solid", "method_liquid")}
    result.notes.append("the ± of melting_temperature_K is the committee std from FEP of both phases at "
                        "T_m (first order in ΔT, ΔS_m of the model); melting_temperature_fit_error_K is "
                        "the statistical error of the zero crossing")


def _add_bulk_phases(evaluator: Evaluator, result: PropertyResult, element: str, a_T: float, tm: float,
                     s: _Settings, progress: bool, seconds: Dict[str, float]) -> None:
    """(d) Bulk solid and liquid at T_m: enthalpy, entropy and volume of melting, and the committee's FEP spread."""
    t0 = time.perf_counter()
    ph = phase_fep(evaluator, s.lattice, element, a_T, tm, repeat=s.bulk_repeat, steps=s.bulk_steps,
                   melt_steps=s.melt_steps, timestep_fs=s.timestep_fs, interval=s.interval,
                   equilibration_fraction=s.equilibration_fraction, threshold=s.threshold,
                   tdamp_fs=s.tdamp_fs, pdamp_fs=s.pdamp_fs, min_ess_fraction=s.min_ess_fraction, seed=s.seed,
                   progress=progress)
    seconds["bulk"] = time.perf_counter() - t0
    values = result.values
    values["melting_enthalpy_eV_per_atom"] = ph["enthalpy_eV_per_atom"]
    values["melting_entropy_kB_per_atom"] = ph["entropy_kB_per_atom"]
    values["melting_volume_change_percent"] = ph["volume_change_percent"]
    result.standard_errors["melting_enthalpy_eV_per_atom"] = ph["enthalpy_error_eV_per_atom"]
    result.standard_errors["melting_entropy_kB_per_atom"] = ph["entropy_error_kB_per_atom"]
    s.log.extend(ph["log"])
    result.notes.extend(ph["notes"])
    result.details["bulk"] = ph["phases"]
    if ph.get("delta_T_K") is not None:
        _add_committee_fep(result, ph, tm)


def melting_point(evaluator: Evaluator, element: str, a_A: float, *, lattice: str = "fcc",
                  temperature_guess_K: float, temperatures_K: Optional[Sequence[float]] = None,
                  cell: Tuple[int, int, int] = (3, 3, 8), timestep_fs: float = 4.0, steps: int = 5000,
                  interval: int = 10, lattice_steps: int = 1000, melt_steps: int = 1000,
                  melt_temperature_K: Optional[float] = None, cool_steps: int = 250,
                  equilibration_fraction: float = 0.2, threshold: float = DEFAULT_THRESHOLD,
                  bins_per_cell: Optional[int] = None, tdamp_fs: float = 100.0, pdamp_fs: float = 1000.0,
                  friction_per_fs: float = 0.02, bulk_phases: Optional[bool] = None, bulk_repeat: int = 3,
                  bulk_steps: int = 2000, min_ess_fraction: float = 0.1, n_fit: int = 4, seed: int = 0,
                  progress: bool = True, plot_dir: Optional[str] = None,
                  require_crossing: bool = True) -> PropertyResult:
    """Melting temperature of ``element`` in ``lattice`` by solid–liquid coexistence, with its committee spread.

    See the module docstring and docs/melting.md for the method. Units: K,
    Å, fs; steps are MD steps.

    Parameters
    ----------
    evaluator : Evaluator
        Runs the MD with ``evaluator.calculator``; with a committee
        (``n_members ≥ 2``) the members' energies give the FEP spread.
    element, a_A, lattice : the crystal (fcc, bcc or diamond) and a starting lattice constant, Å.
    temperature_guess_K : where the lattice is equilibrated and the coexistence start prepared.
    temperatures_K : the coexistence runs (default guess −100, −50, 0, +50, +100 K).
    cell : conventional cells (nx, ny, nz) of the coexistence cell, long along z (default 3×3×8 = 288 fcc atoms).
    timestep_fs : 4 fs by default (Cu; lighter elements need less).
    steps, interval : MD steps of each coexistence run, and steps between saved frames.
    lattice_steps : isotropic NPT steps for the lattice constant at the guess (108-atom cube for 3×3 lateral).
    melt_steps, melt_temperature_K, cool_steps : the liquid half's melt as a block of its own (z free, default
        at 2 × guess), its return to the guess, and the settling of the stacked cell at the guess with the
        crystal half fixed (at least 10 steps each).
    equilibration_fraction : the part of each run left out of the rate fit.
    threshold, bins_per_cell : the order parameter's solid threshold and z-bins per conventional cell
        (default 2, one atomic plane of fcc, or 1 when 2 would leave fewer than 12 atoms per bin).
    tdamp_fs, pdamp_fs : Nosé–Hoover and MTK barostat times; friction_per_fs : Langevin friction, 1/fs.
    bulk_phases : run bulk solid and liquid at T_m (enthalpy, entropy of melting and the FEP spread);
        None: only with a committee.
    bulk_repeat, bulk_steps : their cells (repeat³ conventional cells) and NPT steps.
    min_ess_fraction : below this effective-sample fraction a member's FEP uses the cumulant estimate.
    n_fit : runs nearest the sign change in the rate-vs-T fit.
    seed : seeds every velocity draw and Langevin thermostat.
    plot_dir : writes melting.png there (solid fraction and energy against time, rate against T).
    require_crossing : raise :class:`NoMeltingCrossing` (with ``.result``) when the rates do not change
        sign; False returns the result with ``melting_temperature_K`` NaN and a note instead.

    Returns
    -------
    PropertyResult ``"melting"``: ``melting_temperature_K`` (± the committee std when there is a committee,
    else the fit's standard error), ``melting_temperature_fit_error_K``, and with the bulk runs
    ``melting_enthalpy_eV_per_atom``, ``melting_entropy_kB_per_atom`` and
    ``melting_volume_change_percent``; ``details`` holds every run, the settings and the log of choices.
    """
    t_start = time.perf_counter()
    s, guess, a_A, temps = _melting_settings(
        lattice=lattice, a_A=a_A, temperature_guess_K=temperature_guess_K, temperatures_K=temperatures_K, cell=cell,
        timestep_fs=timestep_fs, steps=steps, interval=interval, lattice_steps=lattice_steps, melt_steps=melt_steps,
        melt_temperature_K=melt_temperature_K, cool_steps=cool_steps, equilibration_fraction=equilibration_fraction,
        threshold=threshold, bins_per_cell=bins_per_cell, tdamp_fs=tdamp_fs, pdamp_fs=pdamp_fs,
        friction_per_fs=friction_per_fs, bulk_repeat=bulk_repeat, bulk_steps=bulk_steps,
        min_ess_fraction=min_ess_fraction, seed=seed)
    committee = getattr(evaluator, "n_members", 0) >= 2
    do_bulk = committee if bulk_phases is None else bool(bulk_phases)
    seconds: Dict[str, float] = {}
    rng = np.random.default_rng(s.seed)

    a_T = _lattice_at_guess(evaluator, element, a_A, guess, s, progress, seconds)
    start, n, n_bins = _checked_start(evaluator, element, a_T, guess, s, rng, progress, seconds)
    runs, npt_z = _coexistence_runs(evaluator, start, temps, n, n_bins, s, progress, seconds)
    result = _new_result(evaluator, element, a_A, guess, temps, s, runs, a_T, n, n_bins, npt_z, seconds)
    try:
        cross = melting_crossing(temps, [r["rate_per_ps"] for r in runs],
                                 [r["rate_error_per_ps"] for r in runs], n_points=n_fit)
    except NoMeltingCrossing as exc:
        return _no_crossing(result, exc, t_start, plot_dir, require_crossing)
    tm = _record_crossing(result, cross, temps, runs, s.log)
    if do_bulk:
        _add_bulk_phases(evaluator, result, element, a_T, tm, s, progress, seconds)
    if not committee:
        result.notes.append("the ± of melting_temperature_K is the statistical error of the zero crossing (no "
                            "committee)")
    _finish(result, t_start, plot_dir)
    return result


def phase_fep(evaluator: Evaluator, lattice: str, element: str, a_A: float, temperature_K: float, *,
              repeat: int = 3, steps: int = 2000, melt_steps: int = 1000, timestep_fs: float = 4.0,
              interval: int = 10, equilibration_fraction: float = 0.2, threshold: float = DEFAULT_THRESHOLD,
              tdamp_fs: float = 100.0, pdamp_fs: float = 1000.0, min_ess_fraction: float = 0.1, seed: int = 0,
              progress: bool = True) -> Dict[str, Any]:
    """Bulk solid and bulk liquid at ``temperature_K`` (≈ T_m): ΔH_m, ΔS_m and, with a committee, every ΔT_k.

    Each phase runs ``steps`` of isotropic NPT at 0 GPa on ``repeat``³
    conventional cells (the liquid first melted for ``melt_steps`` at twice
    the temperature in the same NPT); a frame is kept every ``interval``
    steps after the first ``equilibration_fraction``, and the evaluator's
    energies (model and members) are computed on them.
    ``ΔH_m = ⟨V/N⟩_liquid − ⟨V/N⟩_solid`` (eV/atom; the kinetic energies are
    equal at one temperature and p·V vanishes at 0 GPa), with the block
    errors of the two averages; ``ΔS_m = ΔH_m / T``. With a committee
    (``evaluator.n_members ≥ 2``) and ΔS_m > 0:
    ``Δf_k(phase)`` by :func:`free_energy_perturbation` and
    ``ΔT_k`` by :func:`melting_shift` (K).

    Returns a JSON-ready dict: ``enthalpy_eV_per_atom``, ``enthalpy_error_eV_per_atom``,
    ``entropy_kB_per_atom``, ``entropy_error_kB_per_atom``, ``volume_change_percent``, ``phases`` (each
    phase's averages and whether it stayed itself), ``delta_T_K`` (or None), ``delta_f_{solid,liquid}_eV_per_atom``,
    ``ess_fraction_{solid,liquid}``, ``method_{solid,liquid}``, ``log`` and ``notes``.
    """
    T = _positive_float(temperature_K, "temperature_K", "K")
    s = _Settings(lattice, (repeat,) * 3, _positive_float(timestep_fs, "timestep_fs", "fs"), 0,
                  _positive_int(interval, "interval"), 0, _positive_int(melt_steps, "melt_steps"), 2.0 * T, 0,
                  float(equilibration_fraction), float(threshold), 1, float(tdamp_fs), float(pdamp_fs), 0.01,
                  _positive_int(repeat, "repeat"), _positive_int(steps, "steps", 10), float(min_ess_fraction),
                  int(seed))
    phases = {phase: _bulk_phase(evaluator, lattice, element, a_A, T, phase, s, progress)
              for phase in ("solid", "liquid")}
    n = phases["solid"]["n_atoms"]
    dH = phases["liquid"]["enthalpy_eV_per_atom"] - phases["solid"]["enthalpy_eV_per_atom"]
    dH_err = math.hypot(phases["liquid"]["enthalpy_error_eV_per_atom"], phases["solid"]["enthalpy_error_eV_per_atom"])
    dS = dH / T
    name = _npt_name(z_only=False)
    out: Dict[str, Any] = {
        "enthalpy_eV_per_atom": dH, "enthalpy_error_eV_per_atom": dH_err,
        "entropy_kB_per_atom": dS / units.kB, "entropy_error_kB_per_atom": dH_err / T / units.kB,
        "volume_change_percent": 100.0 * (phases["liquid"]["volume_A3_per_atom"]
                                          / phases["solid"]["volume_A3_per_atom"] - 1.0),
        "phases": {p: {k: v for k, v in ph.items() if k != "energies_eV"} for p, ph in phases.items()},
        "delta_T_K": None, "notes": [],
        "log": [f"bulk phases at {T:.1f} K: {n} atoms each, {s.bulk_steps} steps of {name} at 0 GPa (the liquid "
                f"first melted {s.melt_steps} steps at {2 * T:.0f} K, same NPT), a frame every {s.interval} steps, "
                f"the first {100 * s.equilibration_fraction:g} % left out; ΔH_m = {dH:.4f} ± {dH_err:.4f} eV/atom "
                f"(potential energy; kinetic energies and p·V at 0 GPa cancel), ΔS_m = ΔH_m/T = "
                f"{dS / units.kB:.3f} k_B/atom"]}
    for phase, ph in phases.items():
        if ph["phase_changed"]:
            out["notes"].append(f"the bulk {phase} at {T:.0f} K did not stay {phase} (final solid fraction "
                                f"{ph['final_solid_fraction']:.2f}): its enthalpy and FEP are not the {phase}'s")
    if getattr(evaluator, "n_members", 0) < 2:
        return out
    changed = [p for p, ph in phases.items() if ph["phase_changed"]]
    if changed:
        out["notes"].append(f"no FEP spread: the bulk {' and '.join(changed)} changed phase, so the runs do not "
                            "sample both phases (longer melt_steps, or a temperature nearer the melting point)")
        return out
    if not dS > 0:
        out["notes"].append(f"no FEP spread: the liquid's enthalpy is not above the solid's (ΔH_m = {dH:.4f} "
                            "eV/atom)")
        return out
    fep = {p: free_energy_perturbation(ph["energies_eV"], n, T, min_ess_fraction=s.min_ess_fraction)
           for p, ph in phases.items()}
    dT = melting_shift(fep["liquid"].delta_f_eV_per_atom, fep["solid"].delta_f_eV_per_atom, dS)
    out["delta_T_K"] = dT.tolist()
    for p, f in fep.items():
        out[f"delta_f_{p}_eV_per_atom"] = f.delta_f_eV_per_atom.tolist()
        out[f"ess_fraction_{p}"] = f.ess_fraction.tolist()
        out[f"method_{p}"] = list(f.method)
    ess_min = min(float(f.ess_fraction.min()) for f in fep.values())
    out["log"].append(f"committee FEP: Δf_k = −kT/N ln⟨exp(−β(V_k − V_0))⟩ per phase over "
                      f"{phases['solid']['n_frames']} frames, ΔT_k = (Δf_k(liquid) − Δf_k(solid))/ΔS_m; smallest "
                      f"ESS fraction {ess_min:.3f}; cumulant estimate below {s.min_ess_fraction:g}")
    n_cum = sum(m == "cumulant" for f in fep.values() for m in f.method)
    if n_cum:
        out["notes"].append(f"{n_cum} member-phase FEP averages had collapsed weights (ESS fraction < "
                            f"{s.min_ess_fraction:g}) and use the second-order cumulant estimate")
    return out


def _bulk_phase(evaluator: Evaluator, lattice: str, element: str, a_A: float, temperature_K: float, phase: str,
                s: _Settings, progress: bool) -> Dict[str, Any]:
    """Isotropic NPT of a bulk solid or liquid at ``temperature_K``: enthalpy, volume and every member's energies."""
    from ..reweight import block_standard_error
    rng = np.random.default_rng([s.seed, 1 if phase == "solid" else 2])
    atoms = coexistence_cell(lattice, element, a_A, (s.bulk_repeat,) * 3)
    atoms.calc = evaluator.calculator
    n = len(atoms)
    if phase == "liquid":
        hot = 2.0 * temperature_K
        thermalize(atoms, hot, rng)
        dyn, _ = _npt(atoms, hot, s, z_only=False)  # at 0 GPa: at fixed volume the crystal would not melt
        _run(dyn, atoms, s.melt_steps, 10, None, desc=f"bulk liquid: melt at {hot:.0f} K", progress=progress,
             target_K=hot)
    thermalize(atoms, temperature_K, rng)
    dyn, _ = _npt(atoms, temperature_K, s, z_only=False)
    frames: List[Atoms] = []

    def record():
        f = Atoms(atoms.numbers, positions=atoms.get_positions(), cell=atoms.get_cell(), pbc=True)
        frames.append(f)
    _run(dyn, atoms, s.bulk_steps, s.interval, record, desc=f"bulk {phase} at {temperature_K:.0f} K",
         progress=progress, target_K=temperature_K)
    frames = frames[int(s.equilibration_fraction * len(frames)):]
    from tqdm.auto import tqdm
    energies = np.array([evaluator.evaluate(f, forces=False).energy_eV
                         for f in tqdm(frames, desc=f"members' energies, {phase}", unit="frame",
                                       disable=not progress, leave=False)])
    e = energies[:, 0] / n
    vol = np.array([f.get_volume() / n for f in frames])
    rep = s.bulk_repeat
    final = solid_fraction(frames[-1], (rep, rep), rep, lattice=lattice, threshold=s.threshold)
    return {"n_atoms": n, "n_frames": len(frames), "energies_eV": energies,
            "enthalpy_eV_per_atom": float(e.mean()),
            "enthalpy_error_eV_per_atom": float(block_standard_error(e, min(20, len(e)))) if len(e) >= 2 else 0.0,
            "volume_A3_per_atom": float(vol.mean()), "final_solid_fraction": final,
            "phase_changed": bool(final < 0.5) if phase == "solid" else bool(final > 0.5)}


# ----------------------------------------------------------------------------- plot

def plot_melting(result: PropertyResult, path: str) -> None:
    """Solid fraction and potential energy against time for every run, and the rate against T with T_m."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = result.details.get("runs", [])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    cmap = plt.get_cmap("coolwarm")
    Ts = [r["temperature_K"] for r in runs]
    lo, hi = (min(Ts), max(Ts)) if Ts else (0, 1)
    for r in runs:
        c = cmap((r["temperature_K"] - lo) / (hi - lo) if hi > lo else 0.5)
        t = np.array(r["time_ps"])
        ax[0].plot(t, r["solid_fraction"], color=c, label=f"{r['temperature_K']:g} K")
        w = (t >= r["fit_start_ps"]) & (t <= r["fit_end_ps"])
        if w.any():
            f = np.array(r["solid_fraction"])[w]
            ax[0].plot(t[w], f.mean() + r["rate_per_ps"] * (t[w] - t[w].mean()), color=c, ls="--", lw=1)
        ax[1].plot(t, r["potential_energy_eV_per_atom"], color=c)
    ax[0].set(xlabel="time (ps)", ylabel="solid fraction", ylim=(-0.02, 1.02), title="solid fraction (dashed: fit)")
    ax[0].legend(fontsize=8)
    ax[1].set(xlabel="time (ps)", ylabel="potential energy (eV/atom)", title="potential energy")
    rates = np.array([r["rate_per_ps"] for r in runs])
    errs = np.array([r["rate_error_per_ps"] for r in runs])
    ax[2].errorbar(Ts, rates, yerr=errs, fmt="o", color="k", capsize=3)
    ax[2].axhline(0.0, color="grey", lw=0.8)
    tm = result.values.get("melting_temperature_K", float("nan"))
    cr = result.details.get("crossing")
    if cr and np.isfinite(tm):
        used = cr["runs_fitted_K"]
        x = np.linspace(min(used) - 10, max(used) + 10, 50)
        ax[2].plot(x, cr["intercept_per_ps"] + cr["slope_per_ps_K"] * (x - cr["reference_K"]), color="C0")
        err = result.values.get("melting_temperature_fit_error_K", 0.0)
        ax[2].axvspan(tm - err, tm + err, color="C0", alpha=0.2, label=f"T_m = {tm:.0f} ± {err:.0f} K (fit)")
        members = result.members.get("melting_temperature_K")
        if members is not None and len(members) > 1:
            sd = float(np.std(members, ddof=1))
            ax[2].axvspan(tm - sd, tm + sd, color="C1", alpha=0.15, label=f"committee std {sd:.0f} K")
        ax[2].legend(fontsize=8)
    ax[2].set(xlabel="temperature (K)", ylabel="d(solid fraction)/dt (1/ps)", title="rate against temperature")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
