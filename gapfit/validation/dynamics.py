"""Checks of the potential as a mechanical model: energy conservation in NVE, stress against finite strains."""
from __future__ import annotations

import time

import numpy as np
from ase import Atoms, units
from ase.units import GPa

from .elastic import strain_tensor
from .evaluate import Evaluator
from .results import PropertyResult
from .structures import require_periodic, supercell_for


def nve(evaluator: Evaluator, atoms: Atoms, *, temperature_K: float = 300.0, timestep_fs: float = 1.0,
        n_steps: int = 500, min_atoms: int = 32, seed: int = 0) -> PropertyResult:
    """Short NVE run with the model: drift and spread of the total energy per atom.

    Velocities from Maxwell-Boltzmann at 2 × ``temperature_K`` (seeded;
    equipartition brings the cell near ``temperature_K``), velocity Verlet.
    ``nve_drift_meV_per_atom_per_ps`` is the slope of a straight line through
    the total energy per atom; ``nve_spread_meV_per_atom`` its standard
    deviation about that line. Their ``_std`` companions are the slope's and
    the spread's standard errors, not a committee spread: a member's energy
    is conserved only along its own trajectory, which would cost a run per
    member. The standard errors treat the steps as independent; MD energies
    are correlated, so they are lower bounds.
    """
    from ase.md.verlet import VelocityVerlet

    from ..md import initial_velocities
    t0 = time.perf_counter()
    a = supercell_for(atoms, min_atoms) if all(atoms.pbc) else atoms.copy()
    a.calc = evaluator.calculator
    initial_velocities(a, 2 * temperature_K, seed)
    dyn = VelocityVerlet(a, timestep=timestep_fs * units.fs, logfile=None)
    n = len(a)
    etot, temps = [], []

    def record():
        epot = a.get_potential_energy()
        ekin = a.get_kinetic_energy()
        etot.append((epot + ekin) / n)
        temps.append(ekin / (1.5 * units.kB * n))
    record()
    dyn.attach(record, interval=1)
    dyn.run(n_steps)
    t_ps = np.arange(len(etot)) * timestep_fs / 1000.0
    e_meV = (np.array(etot) - etot[0]) * 1000.0
    A = np.vstack([t_ps, np.ones_like(t_ps)]).T
    coef, res, *_ = np.linalg.lstsq(A, e_meV, rcond=None)
    resid = e_meV - A @ coef
    dof = max(1, len(t_ps) - 2)
    s2 = float(resid @ resid) / dof
    slope_se = float(np.sqrt(s2 / np.sum((t_ps - t_ps.mean()) ** 2)))
    spread = float(np.sqrt(s2))
    out = PropertyResult("nve", {"nve_drift_meV_per_atom_per_ps": float(coef[0]),
                                 "nve_spread_meV_per_atom": spread,
                                 "nve_mean_temperature_K": float(np.mean(temps[len(temps) // 2:]))},
                         details={"n_atoms": n, "timestep_fs": timestep_fs, "n_steps": n_steps,
                                  "total_energy_meV_per_atom": e_meV.tolist()})
    out.standard_errors = {"nve_drift_meV_per_atom_per_ps": slope_se,
                                      "nve_spread_meV_per_atom": spread / np.sqrt(2 * dof),
                                      "nve_mean_temperature_K": float(np.std(temps) / np.sqrt(len(temps)))}
    out.notes.append("the _std of the NVE figures are standard errors of the fit (lower bounds: steps are "
                     "correlated), not committee spreads")
    out.seconds = time.perf_counter() - t0
    return out


def stress_consistency(evaluator: Evaluator, atoms: Atoms, *, strain: float = 1e-4, rattle_A: float = 0.05,
                       seed: int = 0) -> PropertyResult:
    """Analytic stress against central differences of the energy under strain, for the model and every member.

    The cell is rattled (so no component vanishes by symmetry); each Voigt
    component j is compared with ``[E(+ε_j) − E(−ε_j)] / (2 ε V)``.
    ``stress_consistency_max_abs_GPa`` is the largest difference over the
    six components.
    """
    require_periodic(atoms, "the stress consistency check")
    t0 = time.perf_counter()
    a = atoms.copy()
    a.rattle(rattle_A, seed=seed)
    V = a.get_volume()
    analytic = evaluator.evaluate(a, forces=False, stress=True).stress_eV_per_A3  # (1 + K, 6)
    fd = np.zeros_like(analytic)
    for j in range(6):
        e = []
        for sgn in (1, -1):
            b = a.copy()
            b.set_cell(a.cell @ (np.eye(3) + strain_tensor(j, sgn * strain)).T, scale_atoms=True)
            e.append(evaluator.evaluate(b, forces=False).energy_eV)
        fd[:, j] = (e[0] - e[1]) / (2 * strain * V)
    dev = np.max(np.abs(analytic - fd), axis=1) / GPa
    out = PropertyResult("stress_consistency", {"stress_consistency_max_abs_GPa": float(dev[0]),
                                                "stress_max_abs_GPa": float(np.max(np.abs(analytic[0])) / GPa)},
                         details={"analytic_GPa": (analytic[0] / GPa).tolist(), "finite_difference_GPa":
                                  (fd[0] / GPa).tolist(), "strain": strain})
    if len(dev) > 1:
        out.members = {"stress_consistency_max_abs_GPa": dev[1:],
                       "stress_max_abs_GPa": np.max(np.abs(analytic[1:]), axis=1) / GPa}
    out.seconds = time.perf_counter() - t0
    return out
