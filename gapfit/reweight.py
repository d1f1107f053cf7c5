"""Committee reweighting of MD averages: every member's average, and so their spread, from one trajectory.

The physics (Imbalzano, Zhuang, Kapil, Rossi, Engel, Grasselli and Ceriotti,
J. Chem. Phys. 154, 074102, 2021): run molecular dynamics with the mean model
``V̄`` at temperature ``T`` and keep, for each saved frame ``t``, every
committee member's potential energy ``V_kt`` and the mean model's ``V̄_t``
(total energies of the frame, eV; see :func:`committee_energies`). The frames
are samples of ``exp(−βV̄)``; member ``k``'s canonical average of an
observable ``A`` is the reweighted average

    ⟨A⟩_k = Σ_t w_kt A_t / Σ_t w_kt,     w_kt = exp(−β (V_kt − V̄_t)),   β = 1 / (k_B T)

(the kinetic energy is the same for all members and cancels). In NPT the
weight would carry the members' ``p·Vol`` difference too, but the external
pressure ``p`` and the frame's cell volume are the same for every member: a
change of the potential alone leaves ``p·Vol`` unchanged, so the same formula
holds. The members' virials do not enter the weights; they enter observables
(the pressure) only. The weights are formed by log-sum-exp (the largest
``−βΔV`` is subtracted before the exponential), so members far from the mean
model, or energies of thousands of eV, do not overflow.

When reweighting fails: ``ΔV_k = V_k − V̄`` is a sum over atoms, so its
spread over the frames grows like ``√N``; once ``β·std(ΔV_k)`` passes about 1
a few frames carry all the weight. The effective sample size
``ESS_k = (Σ_t w_kt)² / Σ_t w_kt²`` (``T`` for uniform weights, 1 when one
frame takes all) measures it. Members whose ``ESS_k / T`` falls below
``min_ess_fraction`` are flagged and their average is replaced by the
second-order cumulant estimate

    ⟨A⟩_k ≈ ⟨A⟩ − β Cov(A, ΔV_k)     (plain average and covariance over the frames)

which is exact when ``A`` and ``ΔV_k`` are jointly Gaussian and otherwise
correct to first order in ``βΔV_k``; it does not collapse with the weights,
but it is an approximation: the result names, per member, which estimate it
used (``method``: ``"weights"`` or ``"cumulant"``). ESS counts frames, not
independent samples: correlated frames make the weights' statistical error
larger than the ESS suggests; the block errors below account for that.

Statistical error: MD frames are correlated, so the plain standard error of
the mean is too small. :func:`block_standard_error` splits the frames into a
fixed number of contiguous blocks (20 by default) and takes the standard
error of the block means. It is right when a block (``T / n_blocks`` frames)
is several correlation times long; :func:`blocking_curve` gives the error
against the block length (Flyvbjerg and Petersen, J. Chem. Phys. 91, 461,
1989) to check that it has reached its plateau there. Compare the committee
std with the statistical error: a spread below the MD noise is not resolved.

Observables as per-frame values (first axis: frames) ready for
:func:`reweight`: :func:`rdf` (g(r) of each frame), :func:`volume_per_atom`,
:func:`density_g_cm3`, :func:`potential_energy_per_atom`, :func:`msd` and
:func:`diffusion_coefficient`. The mean-square displacement and the diffusion
coefficient are dynamical: reweighting frames by static Boltzmann factors
reweights configurations, not trajectories, so a reweighted MSD is at best an
indication; a member's own dynamics is the rigorous route.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms, units
from ase.neighborlist import neighbor_list

from .errors import InputError
from .params import species_number

if TYPE_CHECKING:  # annotations only
    from .committee import Committee

#: 1 amu/Å³ in g/cm³ (ASE's CODATA atomic mass unit: kg → g is 1e3, Å³ → cm³ is 1e-24)
AMU_PER_A3_IN_G_PER_CM3 = units._amu * 1e3 / 1e-24
#: 1 Å²/ps in cm²/s
A2_PER_PS_IN_CM2_PER_S = 1e-16 / 1e-12

METHODS = ("weights", "cumulant")


# ----------------------------------------------------------------------------- input checks

def _finite_array(values, name: str) -> np.ndarray:
    """``values`` as a float64 array, or an InputError naming ``name`` when it is not numbers or not finite."""
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an array of numbers; got {type(values).__name__}", param=name) from None
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{name} has {int(bad.sum())} non-finite value(s), the first at index {where}: "
                         "drop those frames (or members) before averaging", param=name)
    return a


def _positive(value, name: str, unit: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive number in {unit}; got {value!r}", param=name) from None
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"{name} must be a positive number in {unit}; got {value!r}", param=name)
    return v


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}; got {value!r}", param=name)
    return int(value)


def _frame_list(frames, name: str = "frames") -> List[Atoms]:
    if isinstance(frames, Atoms):
        frames = [frames]
    try:
        out = list(frames)
    except TypeError:
        raise InputError(f"{name} must be a list of ase.Atoms (an MD trajectory); got {type(frames).__name__}",
                         param=name) from None
    if not out:
        raise InputError(f"{name} is empty: give at least one frame", param=name)
    for k, a in enumerate(out):
        if not isinstance(a, Atoms):
            raise InputError(f"{name}[{k}] is a {type(a).__name__}, not an ase.Atoms", param=name)
    return out


def _volume(atoms: Atoms, k: int, name: str) -> float:
    """The cell volume of a frame that has a 3-D cell, Å³ (an InputError otherwise)."""
    if atoms.cell.rank < 3 or not atoms.cell.volume > 0:
        raise InputError(f"{name}[{k}] has no three-dimensional cell (volume {atoms.cell.volume:g} Å³): "
                         "densities and g(r) need the periodic cell of the MD run", param=name)
    return float(atoms.cell.volume)


# ----------------------------------------------------------------------------- statistical errors

def block_standard_error(values, n_blocks: int = 20) -> np.ndarray:
    """Standard error of the mean of correlated per-frame values, from block averages.

    The frames (first axis) are cut into ``min(n_blocks, T)`` contiguous
    blocks of ``T // n_blocks`` frames; the first ``T mod n_blocks`` frames,
    the ones nearest equilibration, are left out. The error is the standard
    deviation of the block means (ddof=1) over the square root of the number
    of blocks. It is right when one block spans several correlation times;
    check with :func:`blocking_curve`. With 20 blocks the error itself is
    uncertain by about 1/√38, 16 %.

    Parameters
    ----------
    values : array_like (T, ...)
        Per-frame values, any units; at least 2 frames.
    n_blocks : int
        Number of blocks, at least 2.

    Returns
    -------
    ndarray (...)
        The standard error, in the units of ``values``.
    """
    a = _finite_array(values, "values")
    if a.ndim == 0 or a.shape[0] < 2:
        raise InputError(f"values needs at least 2 frames along its first axis; got shape {a.shape}",
                         param="values")
    nb = min(_count(n_blocks, "n_blocks", 2), a.shape[0])
    length = a.shape[0] // nb
    blocks = a[a.shape[0] - nb * length:].reshape(nb, length, *a.shape[1:]).mean(axis=1)
    return blocks.std(axis=0, ddof=1) / math.sqrt(nb)


def blocking_curve(values, min_blocks: int = 8) -> Tuple[np.ndarray, np.ndarray]:
    """The block standard error against the block length, doubling it each step (Flyvbjerg–Petersen).

    For correlated data the error rises with the block length and levels off
    once a block spans several correlation times; that plateau is the
    standard error of the mean. Levels with fewer than ``min_blocks`` blocks
    are left out (their error is too noisy to read).

    Parameters
    ----------
    values : array_like (T, ...)
        Per-frame values.
    min_blocks : int
        The fewest blocks a level may have, at least 2.

    Returns
    -------
    block_frames : ndarray (L,) of int
        Frames per block: 1, 2, 4, ...
    standard_error : ndarray (L, ...)
        The standard error of the mean at each block length, units of ``values``.
    """
    a = _finite_array(values, "values")
    min_blocks = _count(min_blocks, "min_blocks", 2)
    if a.ndim == 0 or a.shape[0] < min_blocks:
        raise InputError(f"values needs at least min_blocks={min_blocks} frames along its first axis; "
                         f"got shape {a.shape}", param="values")
    sizes, errors = [], []
    size = 1
    while a.shape[0] // size >= min_blocks:
        nb = a.shape[0] // size
        sizes.append(size)
        errors.append(block_standard_error(a, nb))
        size *= 2
    return np.array(sizes), np.array(errors)


# ----------------------------------------------------------------------------- reweighting

@dataclass
class ReweightResult:
    """Every committee member's average of one observable, reweighted from the mean model's MD.

    ``...`` below is the shape of one frame's observable (empty for a scalar).

    Attributes
    ----------
    member_average : ndarray (K, ...)
        Each member's average: the reweighted one, or the cumulant estimate
        where ``method[k] == "cumulant"``. Units of the observable.
    committee_mean, committee_std : ndarray (...)
        Mean and standard deviation (ddof=1) of ``member_average`` over the
        members: the prediction and its model uncertainty.
    mean_model_average : ndarray (...)
        The plain average over the frames, the mean model's own.
    statistical_error : ndarray (...)
        Block standard error of ``mean_model_average`` (MD noise; see
        :func:`block_standard_error`).
    member_statistical_error : ndarray (K, ...)
        Block standard error of each member's average (its linearisation
        per frame, block-averaged like the plain average).
    weighted_average, cumulant_average : ndarray (K, ...)
        Both estimates for every member, whichever was used.
    weights : ndarray (K, T)
        The normalised weights (each row sums to 1).
    ess : ndarray (K,)
        Effective sample size ``(Σw)²/Σw²``, in frames.
    ess_fraction : ndarray (K,)
        ``ess / T``.
    degenerate : ndarray (K,) of bool
        ``ess_fraction < min_ess_fraction``: the weights collapsed.
    method : tuple of str (K,)
        ``"weights"`` or ``"cumulant"``: which estimate ``member_average`` holds.
    temperature_K : float
    min_ess_fraction : float
    n_blocks : int
        The number of blocks of the statistical errors.
    """

    member_average: np.ndarray
    committee_mean: np.ndarray
    committee_std: np.ndarray
    mean_model_average: np.ndarray
    statistical_error: np.ndarray
    member_statistical_error: np.ndarray
    weighted_average: np.ndarray
    cumulant_average: np.ndarray
    weights: np.ndarray
    ess: np.ndarray
    ess_fraction: np.ndarray
    degenerate: np.ndarray
    method: Tuple[str, ...]
    temperature_K: float
    min_ess_fraction: float
    n_blocks: int

    @property
    def n_members(self) -> int:
        """K, the number of members."""
        return len(self.method)

    @property
    def n_frames(self) -> int:
        """T, the number of frames."""
        return int(self.weights.shape[1])

    def summary(self) -> str:
        """A few lines: the estimate and its errors (scalars; the largest entry otherwise), and each member's ESS."""
        def show(x):
            x = np.asarray(x)
            return f"{float(x):.6g}" if x.ndim == 0 else f"max {float(np.max(x)):.6g} over {x.size} entries"
        lines = [f"committee reweighting at {self.temperature_K:g} K of {self.n_frames} frames, "
                 f"{self.n_members} members",
                 f"  committee mean {show(self.committee_mean)}; committee std {show(self.committee_std)}",
                 f"  mean model {show(self.mean_model_average)} ± {show(self.statistical_error)} "
                 f"(block error, {self.n_blocks} blocks)"]
        for k in range(self.n_members):
            note = "" if self.method[k] == "weights" else \
                f" — below {self.min_ess_fraction:g}: weights degenerate, cumulant estimate used"
            lines.append(f"  member {k}: ESS {self.ess[k]:.1f} frames ({self.ess_fraction[k]:.3f}), "
                         f"{self.method[k]}{note}")
        return "\n".join(lines)


def boltzmann_weights(delta_energies_eV: np.ndarray, beta_per_eV: float
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each member's frame weights exp(−β ΔV) by log-sum-exp, from ΔV = V_k − V̄ of shape (K, T), eV.

    Returns the weights normalised per member (K, T), ln⟨exp(−β ΔV)⟩ over the
    frames (K,) (the free-energy perturbation's average) and the effective
    sample size as a fraction of the frames, (Σw)²/Σw²/T (K,).
    """
    log_w = -beta_per_eV * np.asarray(delta_energies_eV, dtype=np.float64)
    # subtracting each member's largest log-weight keeps exp() in range whatever the energies
    top = log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w - top)
    total = w.sum(axis=1, keepdims=True)
    ln_mean = (top + np.log(total / w.shape[1]))[:, 0]
    w /= total
    return w, ln_mean, 1.0 / np.einsum("kt,kt->k", w, w) / w.shape[1]


def reweight(observable, member_energies_eV, mean_energies_eV, temperature_K: float, *,
             min_ess_fraction: float = 0.1, n_blocks: int = 20) -> ReweightResult:
    """Each committee member's average of a per-frame observable, reweighted from the mean model's MD.

    Parameters
    ----------
    observable : array_like (T,) or (T, ...)
        The observable of each saved frame (any units), for instance a g(r)
        of each frame from :func:`rdf`.
    member_energies_eV : array_like (K, T)
        Each member's total potential energy of each frame, eV.
    mean_energies_eV : array_like (T,)
        The mean model's (the one that ran the MD) total potential energy of each frame, eV.
    temperature_K : float
        The thermostat temperature, K (for NVE, the run's mean temperature).
    min_ess_fraction : float
        Members whose effective sample size falls below this fraction of the
        frames (0 to 1) get the cumulant estimate instead of the weights;
        0 keeps the weights always.
    n_blocks : int
        Blocks of the statistical errors (see :func:`block_standard_error`).

    Returns
    -------
    ReweightResult
        See the module docstring for the physics and when it fails.
    """
    A = _finite_array(observable, "observable")
    if A.ndim == 0:
        raise InputError("observable must have one value (or array) per frame, shape (T, ...); got a scalar",
                         param="observable")
    n_frames = A.shape[0]
    if n_frames < 2:
        raise InputError(f"observable has {n_frames} frame; averages and their errors need at least 2",
                         param="observable")
    V = _finite_array(member_energies_eV, "member_energies_eV")
    if V.ndim != 2 or V.shape[1] != n_frames:
        raise InputError(f"member_energies_eV has shape {V.shape}; it must be (K members, T frames) with "
                         f"T = {n_frames}, the frames of the observable", param="member_energies_eV")
    if V.shape[0] < 2:
        raise InputError(f"member_energies_eV has {V.shape[0]} member; a committee spread needs at least 2",
                         param="member_energies_eV")
    Vbar = _finite_array(mean_energies_eV, "mean_energies_eV")
    if Vbar.shape != (n_frames,):
        raise InputError(f"mean_energies_eV has shape {Vbar.shape}; it must be ({n_frames},), one energy per "
                         "frame of the observable", param="mean_energies_eV")
    beta = 1.0 / (units.kB * _positive(temperature_K, "temperature_K", "K"))
    try:
        fraction = float(min_ess_fraction)
    except (TypeError, ValueError):
        fraction = float("nan")
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"min_ess_fraction must lie between 0 and 1; got {min_ess_fraction!r}",
                         param="min_ess_fraction")
    min_ess_fraction = fraction
    n_blocks = _count(n_blocks, "n_blocks", 2)

    shape = A.shape[1:]
    Af = A.reshape(n_frames, -1)  # (T, P): any per-frame shape as one flat axis
    dV = V - Vbar[None, :]  # (K, T)

    w, _, ess_fraction = boltzmann_weights(dV, beta)
    ess = ess_fraction * n_frames
    degenerate = ess_fraction < min_ess_fraction

    weighted = w @ Af  # (K, P)
    plain = Af.mean(axis=0)
    A_c = Af - plain
    dV_c = dV - dV.mean(axis=1, keepdims=True)
    cov = dV_c @ A_c / (n_frames - 1)  # (K, P): Cov(A, ΔV_k) over the frames
    cumulant = plain[None, :] - beta * cov
    member = np.where(degenerate[:, None], cumulant, weighted)

    # Errors by linearisation: each estimate minus its value is, to first order, the mean of a
    # per-frame series; block-averaging that series accounts for the frames' correlation.
    #   weights:  Σw(A−μ)/Σw  →  T·w_t (A_t − μ_k)
    #   cumulant: Ā − β Cov  →  (A_t − Ā) − β[(A_t − Ā)(ΔV_t − ΔV̄) − Cov]
    # Uniform weights give back the plain average's own block error.
    member_err = np.empty_like(member)
    for k in range(V.shape[0]):
        if degenerate[k]:
            series = A_c - beta * (A_c * dV_c[k][:, None] - cov[k][None, :])
        else:
            series = n_frames * w[k][:, None] * (Af - weighted[k][None, :])
        member_err[k] = block_standard_error(series, n_blocks)

    K = V.shape[0]
    return ReweightResult(
        member_average=member.reshape(K, *shape),
        committee_mean=member.mean(axis=0).reshape(shape),
        committee_std=member.std(axis=0, ddof=1).reshape(shape),
        mean_model_average=plain.reshape(shape),
        statistical_error=block_standard_error(Af, n_blocks).reshape(shape),
        member_statistical_error=member_err.reshape(K, *shape),
        weighted_average=weighted.reshape(K, *shape),
        cumulant_average=cumulant.reshape(K, *shape),
        weights=w,
        ess=ess,
        ess_fraction=ess_fraction,
        degenerate=degenerate,
        method=tuple(METHODS[1] if d else METHODS[0] for d in degenerate),
        temperature_K=float(temperature_K),
        min_ess_fraction=min_ess_fraction,
        n_blocks=min(n_blocks, n_frames),
    )


def committee_energies(committee: "Committee", frames: Union[Atoms, Sequence[Atoms]]
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """Every member's and the model's total energy of each frame, eV, for :func:`reweight`.

    One descriptor pass per frame, no forces or stresses. The members are
    calibrated as the committee is (see :class:`gapfit.committee.Committee`).

    Returns
    -------
    member_energies_eV : ndarray (K, T)
    mean_energies_eV : ndarray (T,)
    """
    frames = _frame_list(frames)
    predictions = committee.predict(frames, forces=False, stress=False)
    member = np.stack([np.asarray(p.energy_eV, dtype=np.float64) for p in predictions], axis=1)
    mean = np.array([p.mean.energy for p in predictions], dtype=np.float64)
    return member, mean


# ----------------------------------------------------------------------------- observables

class RDF(NamedTuple):
    """g(r) of each frame: ``r_A`` the bin centres (Å, (n_bins,)), ``g`` (T, n_bins) or (T, n_pairs, n_bins)."""

    r_A: np.ndarray
    g: np.ndarray


def _species(value, name: str) -> int:
    z = species_number(value)
    if z is None:
        raise InputError(f"{name}: {value!r} is neither a chemical symbol nor an atomic number", param=name)
    return z


def _pair_list(pairs) -> List[Tuple[int, int]]:
    items = list(pairs)
    # a single pair, ("Na", "Cl") or (11, 17), is a list of one
    if len(items) == 2 and all(isinstance(x, (str, int, np.integer)) for x in items):
        items = [tuple(items)]
    out = []
    for p in items:
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise InputError(f"pairs must be pairs of species such as [('Na', 'Cl'), ('Na', 'Na')]; got {p!r}",
                             param="pairs")
        out.append((_species(p[0], "pairs"), _species(p[1], "pairs")))
    if not out:
        raise InputError("pairs is empty: give None for the total g(r), or pairs such as [('Na', 'Cl')]",
                         param="pairs")
    return out


def rdf(frames: Union[Atoms, Sequence[Atoms]], r_max_A: float, n_bins: int,
        pairs: Optional[Sequence] = None) -> RDF:
    """Radial distribution function g(r) of each frame, over periodic images, normalised to the ideal gas.

    ``g_AB(r) = n_AB(r) / (N_A · (N_B/Vol) · Vol_shell(r))``: ``n_AB`` counts,
    for every atom of species A, its neighbours of species B in the shell
    (periodic images included), so an ideal gas has g = 1 and
    ``(N_B/Vol) Σ g · Vol_shell`` up to r is the number of B neighbours
    within r (see :func:`coordination_number`). ``g_AB = g_BA``, and the total
    g(r) is ``Σ_AB c_A c_B g_AB`` (the convention of LAMMPS' ``compute rdf``
    and of ASE ≥ 3.27). Pairs come from :func:`ase.neighborlist.neighbor_list`,
    which finds every image within ``r_max_A``, so the cell may be smaller
    than ``2·r_max_A`` (ASE's ``get_rdf`` refuses that, averages frames and
    changed its partial-g convention in 3.27; the normalisation here is written
    out so that it does not depend on the ASE version).

    Parameters
    ----------
    frames : list of ase.Atoms
        The trajectory; every frame periodic on all three axes.
    r_max_A : float
        Largest distance, Å.
    n_bins : int
        Bins of equal width on [0, r_max_A].
    pairs : None, a pair, or a list of pairs of species (symbols or atomic numbers)
        None: the total g(r), shape (T, n_bins). Otherwise partial g_AB for
        each pair, shape (T, n_pairs, n_bins).

    Returns
    -------
    RDF
        ``r_A`` bin centres (Å), ``g`` per frame (dimensionless).
    """
    frames = _frame_list(frames)
    r_max = _positive(r_max_A, "r_max_A", "Å")
    n_bins = _count(n_bins, "n_bins", 1)
    pair_list = None if pairs is None else _pair_list(pairs)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    shell = 4.0 * np.pi / 3.0 * (edges[1:] ** 3 - edges[:-1] ** 3)  # exact shell volumes, Å³
    out = []
    for k, atoms in enumerate(frames):
        vol = _volume(atoms, k, "frames")
        if not np.all(atoms.pbc):
            raise InputError(f"frames[{k}] is not periodic on all three axes (pbc={atoms.pbc.tolist()}): the "
                             "ideal-gas normalisation of g(r) needs bulk, periodic frames", param="frames")
        i, j, d = neighbor_list("ijd", atoms, r_max)
        if pair_list is None:
            n = len(atoms)
            out.append(np.histogram(d, bins=edges)[0] / (n * (n / vol) * shell))
            continue
        z = atoms.numbers
        rows = []
        for za, zb in pair_list:
            na, nb = int(np.count_nonzero(z == za)), int(np.count_nonzero(z == zb))
            if na == 0 or nb == 0:
                missing = za if na == 0 else zb
                raise InputError(f"pairs: frames[{k}] has no atom of atomic number {missing}; give pairs of the "
                                 "species in the trajectory", param="pairs")
            mask = (z[i] == za) & (z[j] == zb)
            rows.append(np.histogram(d[mask], bins=edges)[0] / (na * (nb / vol) * shell))
        out.append(np.array(rows))
    return RDF(0.5 * (edges[1:] + edges[:-1]), np.array(out, dtype=np.float64))


def coordination_number(g, r_A, number_density_per_A3: float, r_cut_A: float) -> np.ndarray:
    """Neighbours within ``r_cut_A``: ``ρ Σ g(r) · Vol_shell`` over the bins whose centre lies below it.

    Parameters
    ----------
    g : array_like (..., n_bins)
        g(r) from :func:`rdf` (one frame, all frames, or a reweighted average).
    r_A : array_like (n_bins,)
        Bin centres, Å, equally spaced from 0 (as :func:`rdf` makes them).
    number_density_per_A3 : float
        Density of the neighbour species, atoms/Å³ (N_B / Vol).
    r_cut_A : float
        The shell's outer radius, Å (put it in the minimum of g after the shell).

    Returns
    -------
    ndarray (...)
        The coordination number, neighbours per centre atom.
    """
    g = _finite_array(g, "g")
    r = _finite_array(r_A, "r_A")
    if r.ndim != 1 or g.ndim == 0 or g.shape[-1] != r.shape[0] or r.shape[0] < 1:
        raise InputError(f"g has shape {g.shape} and r_A {r.shape}: g's last axis must be the bins of r_A",
                         param="g")
    rho = _positive(number_density_per_A3, "number_density_per_A3", "atoms/Å³")
    r_cut = _positive(r_cut_A, "r_cut_A", "Å")
    width = 2.0 * r[0]  # the first bin is [0, width]: its centre is width/2
    edges = width * np.arange(r.shape[0] + 1)
    if not (width > 0 and np.allclose(r, 0.5 * (edges[1:] + edges[:-1]), rtol=1e-9, atol=0)):
        raise InputError("r_A must be the bin centres of equal bins from 0, as rdf() returns them", param="r_A")
    shell = 4.0 * np.pi / 3.0 * (edges[1:] ** 3 - edges[:-1] ** 3)
    return rho * np.sum(g * (shell * (r < r_cut)), axis=-1)


def volume_per_atom(frames: Union[Atoms, Sequence[Atoms]]) -> np.ndarray:
    """Cell volume per atom of each frame, Å³/atom, shape (T,)."""
    frames = _frame_list(frames)
    return np.array([_volume(a, k, "frames") / len(a) for k, a in enumerate(frames)], dtype=np.float64)


def density_g_cm3(frames: Union[Atoms, Sequence[Atoms]]) -> np.ndarray:
    """Mass density of each frame, g/cm³, shape (T,), from the frames' masses (ASE's, amu)."""
    frames = _frame_list(frames)
    return np.array([a.get_masses().sum() / _volume(a, k, "frames") * AMU_PER_A3_IN_G_PER_CM3
                     for k, a in enumerate(frames)], dtype=np.float64)


def potential_energy_per_atom(energies_eV, n_atoms) -> np.ndarray:
    """Potential energy per atom of each frame, eV/atom, shape (T,).

    Parameters
    ----------
    energies_eV : array_like (T,)
        Total potential energy of each frame, eV.
    n_atoms : int or array_like (T,)
        Atoms of each frame (one number when all frames have the same).
    """
    e = _finite_array(energies_eV, "energies_eV")
    if e.ndim != 1:
        raise InputError(f"energies_eV must have one energy per frame, shape (T,); got shape {e.shape}",
                         param="energies_eV")
    n = _finite_array(n_atoms, "n_atoms")
    if n.ndim > 1 or (n.ndim == 1 and n.shape != e.shape) or np.any(n < 1) or np.any(n != np.round(n)):
        raise InputError(f"n_atoms must be a positive integer or one per frame ({e.shape[0]}); got {n_atoms!r}",
                         param="n_atoms")
    return e / n


class MSD(NamedTuple):
    """Mean-square displacement from the first frame: ``time_fs`` (T,), ``msd_A2`` (T,) or per atom (T, n)."""

    time_fs: np.ndarray
    msd_A2: np.ndarray


def msd(frames: Union[Atoms, Sequence[Atoms]], timestep_fs: float, *, indices: Optional[Sequence[int]] = None,
        unwrap: bool = False, remove_drift: bool = False, per_atom: bool = False) -> MSD:
    """Mean-square displacement of each frame from the first, Å², with the frames' times.

    The positions must be unwrapped: an atom that leaves the cell must keep
    its continuous coordinates. ASE's integrators do not wrap, so the
    positions of ASE's MD (``atoms.get_positions()``, and trajectories
    written from it) are unwrapped; LAMMPS dumps need ``xu yu zu``. For
    wrapped positions pass ``unwrap=True``: each frame-to-frame step is taken
    as its minimum image (in fractional coordinates, then through the later
    frame's cell), which is right when no atom moves half a cell between
    saved frames. Without it, a step of more than half a cell is taken as
    wrapping and refused, rather than returning a diffusion coefficient
    that is silently too small.

    Parameters
    ----------
    frames : list of ase.Atoms
        The trajectory, same atoms in the same order in every frame.
    timestep_fs : float
        Time between saved frames, fs.
    indices : sequence of int, optional
        The atoms to average over (for instance one species); all by default.
    unwrap : bool
        Unwrap wrapped positions by minimum-image steps (see above).
    remove_drift : bool
        Subtract the centre-of-mass displacement of the chosen atoms (a
        thermostat lets the centre of mass wander).
    per_atom : bool
        Return every atom's squared displacement, (T, n), instead of their mean;
        :func:`diffusion_coefficient` then also gives an error.

    Returns
    -------
    MSD
        ``time_fs`` = frame index × ``timestep_fs``; ``msd_A2`` (T,) or (T, n).
    """
    frames = _frame_list(frames)
    dt = _positive(timestep_fs, "timestep_fs", "fs")
    n = len(frames[0])
    for k, a in enumerate(frames):
        if len(a) != n or not np.array_equal(a.numbers, frames[0].numbers):
            raise InputError(f"frames[{k}] does not have the atoms of frames[0] in the same order; an MSD needs "
                             "one trajectory of fixed atoms", param="frames")
    if indices is None:
        idx = np.arange(n)
    else:
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= n:
            raise InputError(f"indices must be atom indices in [0, {n}); got {indices!r}", param="indices")
    pos = np.array([a.positions for a in frames], dtype=np.float64)  # (T, n, 3)
    steps = np.diff(pos, axis=0)
    pbc = frames[0].pbc
    if pbc.any() and not (pbc.all() and all(a.cell.rank == 3 for a in frames)):
        raise InputError(f"frames[0] has pbc={pbc.tolist()}: an MSD needs a cell periodic on all three axes "
                         "(with a three-dimensional cell in every frame) or none", param="frames")
    if pbc.any() and len(frames) > 1:
        cells = np.array([a.cell.array for a in frames], dtype=np.float64)
        # fractional steps in the later frame's cell (rows of the cell are its vectors: r = s @ cell)
        frac = np.einsum("tnc,tcd->tnd", steps, np.linalg.inv(cells[1:]))
        if unwrap:
            frac -= np.round(frac)
            steps = np.einsum("tnd,tdc->tnc", frac, cells[1:])
        elif np.abs(frac).max() > 0.5:
            t, a_, _ = np.unravel_index(np.argmax(np.abs(frac)), frac.shape)
            raise InputError(f"frames: atom {a_} moves more than half a cell between frames {t} and {t + 1}, "
                             "so the positions look wrapped; pass unwrap=True (or save frames more often)",
                             param="frames")
    disp = np.concatenate([np.zeros((1, n, 3)), np.cumsum(steps, axis=0)])[:, idx]  # from the first frame
    if remove_drift:
        m = frames[0].get_masses()[idx]
        disp -= np.einsum("tnc,n->tc", disp, m / m.sum())[:, None, :]
    sq = np.einsum("tnc,tnc->tn", disp, disp)
    return MSD(dt * np.arange(len(frames), dtype=np.float64), sq if per_atom else sq.mean(axis=1))


class Diffusion(NamedTuple):
    """Einstein diffusion coefficient, in Å²/ps and cm²/s, with its error and the fitted window (fs)."""

    D_A2_per_ps: float
    D_cm2_per_s: float
    error_A2_per_ps: float
    error_cm2_per_s: float
    fit_start_fs: float
    fit_end_fs: float


def diffusion_coefficient(msd_A2, times_fs, *, t_min_fs: Optional[float] = None,
                          t_max_fs: Optional[float] = None, dimensions: int = 3) -> Diffusion:
    """Diffusion coefficient from the Einstein relation: MSD(t) ≈ c + 2·d·D·t on the linear part.

    A straight line (with an intercept, which takes up the ballistic start)
    is fitted by least squares to the MSD between ``t_min_fs`` (default: 20 %
    of the run, past the ballistic regime of a liquid) and ``t_max_fs``
    (default: the last frame); D is its slope over ``2·dimensions`` (6 in 3-D).

    The error: with the MSD per atom, shape (T, n) (``msd(..., per_atom=True)``),
    each atom's slope is fitted too and the error is their standard deviation
    over √n. That treats atoms as independent, so it is a lower bound in a
    liquid where neighbours move together. With the mean MSD only, shape (T,),
    there is no error from one trajectory and it is NaN.

    Parameters
    ----------
    msd_A2 : array_like (T,) or (T, n), or an :class:`MSD`
        Mean-square displacement, Å² (with an MSD, ``times_fs`` may be None).
    times_fs : array_like (T,)
        The frames' times, fs.
    t_min_fs, t_max_fs : float, optional
        The window of the fit, fs.
    dimensions : int
        1, 2 or 3: the dimensions the atoms diffuse in.

    Returns
    -------
    Diffusion
    """
    if isinstance(msd_A2, MSD):
        times_fs = msd_A2.time_fs if times_fs is None else times_fs
        msd_A2 = msd_A2.msd_A2
    m = _finite_array(msd_A2, "msd_A2")
    t = _finite_array(times_fs, "times_fs")
    if t.ndim != 1 or m.ndim not in (1, 2) or m.shape[0] != t.shape[0]:
        raise InputError(f"msd_A2 has shape {m.shape} and times_fs {t.shape}: give one MSD (or one row per "
                         "atom) for each time", param="msd_A2")
    if dimensions not in (1, 2, 3):
        raise InputError(f"dimensions must be 1, 2 or 3; got {dimensions!r}", param="dimensions")
    lo = t[0] + 0.2 * (t[-1] - t[0]) if t_min_fs is None else float(t_min_fs)
    hi = t[-1] if t_max_fs is None else float(t_max_fs)
    window = (t >= lo) & (t <= hi)
    if np.count_nonzero(window) < 3:
        raise InputError(f"the fit window [{lo:g}, {hi:g}] fs holds {np.count_nonzero(window)} frames; "
                         "widen t_min_fs/t_max_fs to hold at least 3", param="t_min_fs")
    design = np.stack([np.ones(np.count_nonzero(window)), t[window]], axis=1)
    y = m[window]
    coef = np.linalg.lstsq(design, y.mean(axis=1) if y.ndim == 2 else y, rcond=None)[0]
    to_A2_per_ps = 1e3 / (2 * dimensions)  # slope Å²/fs → D in Å²/ps
    D = float(coef[1]) * to_A2_per_ps
    err = float("nan")
    if y.ndim == 2 and y.shape[1] > 1:
        slopes = np.linalg.lstsq(design, y, rcond=None)[0][1] * to_A2_per_ps
        err = float(slopes.std(ddof=1) / math.sqrt(y.shape[1]))
    return Diffusion(D, D * A2_PER_PS_IN_CM2_PER_S, err, err * A2_PER_PS_IN_CM2_PER_S,
                     float(t[window][0]), float(t[window][-1]))
