"""Molecular dynamics driven by a gapfit model, watching its uncertainty.

:func:`run_md` integrates NVE (velocity Verlet), NVT (Langevin) or NPT
(ASE's isotropic MTK barostat with Nosé-Hoover chains), writes an extended
XYZ trajectory with per-atom ``local_energy_std`` and ``forces_std`` arrays
and a plain-text log, and stops cleanly when an atom's predicted force
uncertainty passes a threshold or when the dynamics blows up (atoms closer
than ``min_distance``, or a non-finite energy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

ENSEMBLES = ("nve", "nvt", "npt")
LOG_COLUMNS = ("step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K",
               "max_force_std_eV_per_A", "mean_force_std_eV_per_A", "max_local_energy_std_eV")


@dataclass
class MDResult:
    """What a run did: steps taken, why it stopped, where it wrote."""

    steps: int
    stop_reason: str  # "completed", "max_force_std", "max_local_energy_std", "unstable"
    message: str = ""
    trajectory: Optional[str] = None
    log: Optional[str] = None
    max_force_std_seen: float = 0.0
    extra: dict = field(default_factory=dict)


def initial_velocities(atoms: Atoms, temperature_K: float, seed: int) -> None:
    """Seeded Maxwell-Boltzmann momenta at ``temperature_K`` with no centre-of-mass drift."""
    from ase.md import velocitydistribution as vd
    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.29
        vd.thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)


def make_integrator(atoms: Atoms, ensemble: str, *, timestep_fs: float, temperature_K: float,
                    friction_per_fs: float = 0.01, pressure_GPa: float = 0.0, seed: int = 0):
    """The ASE integrator for the ensemble name."""
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet
        return VelocityVerlet(atoms, timestep=dt)
    if ensemble == "nvt":
        from ase.md.langevin import Langevin
        return Langevin(atoms, timestep=dt, temperature_K=temperature_K, friction=friction_per_fs / units.fs,
                        fixcm=False, rng=np.random.default_rng(seed))
    if ensemble == "npt":
        if not np.all(atoms.pbc):
            raise ValueError("NPT needs a periodic cell")
        from ase.md.nose_hoover_chain import IsotropicMTKNPT
        return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=temperature_K,
                               pressure_au=pressure_GPa * units.GPa, tdamp=100 * dt, pdamp=1000 * dt)
    raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")


def min_pair_distance(atoms: Atoms, limit: float) -> float:
    """Shortest interatomic distance (with periodic images), or ``limit`` if none is shorter."""
    from .data import closest_pair
    close = closest_pair(atoms, limit)
    return limit if close is None else close[2]


def snapshot(atoms: Atoms, pred, step: int, time_fs: float) -> Atoms:
    """A copy of ``atoms`` carrying the prediction as calculator results and arrays."""
    snap = atoms.copy()
    snap.info.pop("gapfit_source", None)
    snap.info.update(step=int(step), time_fs=float(time_fs))
    for key in ("local_energy_std", "forces_std"):
        if getattr(pred, key) is not None:
            snap.arrays[key] = np.asarray(getattr(pred, key))
    results = {"energy": pred.energy, "forces": pred.forces, "energies": pred.energies}
    if pred.stress is not None:
        results["stress"] = pred.stress
    if pred.energy_std is not None:
        snap.info["energy_std"] = float(pred.energy_std)
    snap.calc = SinglePointCalculator(snap, **results)
    return snap


def run_md(model, atoms: Atoms, *, ensemble: str = "nvt", temperature_K: float = 300.0,
           timestep_fs: float = 1.0, steps: int = 1000, seed: int = 0, friction_per_fs: float = 0.01,
           pressure_GPa: float = 0.0, trajectory: Optional[str] = None, log: Optional[str] = None,
           interval: int = 10, max_force_std: Optional[float] = None,
           max_local_energy_std: Optional[float] = None, check_interval: Optional[int] = None,
           min_distance: float = 0.5, init_velocities: bool = True, progress: bool = False,
           on_check: Optional[Callable[[int, Atoms, dict], Optional[str]]] = None) -> MDResult:
    """Run MD with ``model`` from ``atoms`` (changed in place).

    Uncertainties are computed every ``interval`` steps, when the trajectory
    frame and the log line are written, and every ``check_interval`` steps
    when ``max_force_std``, ``max_local_energy_std`` or ``on_check`` is
    given (default 1: every step). The thresholds are tested whenever stds
    are computed, so a larger ``check_interval`` trades how soon a run
    stops for speed (as FLARE's ``skip``). ``on_check(step, atoms,
    prediction)`` may return a reason string to stop.
    What is computed follows what is watched: with ``max_local_energy_std``
    alone only the local-energy stds (cheap: a small fraction of a step),
    otherwise local-energy and force stds (force stds cost several times
    a step; see docs/index.md, "Which stds, and what they cost").
    """
    from tqdm.auto import tqdm

    from .calculator import GAPCalculator
    from .md_io import AppendingXYZ, TextLog

    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    for name, value in (("interval", interval), ("check_interval", check_interval)):
        if value is not None and (isinstance(value, bool) or not float(value).is_integer() or value < 1):
            raise ValueError(f"{name} must be a positive whole number of steps, got {value!r}")
    watching = max_force_std is not None or max_local_energy_std is not None or on_check is not None
    # steps whose stds are computed: every check (when watching) and every written frame
    check_every = int(check_interval or 1) if watching else int(interval)
    watch = ("local_energy",) if (max_local_energy_std is not None and max_force_std is None
                                  and on_check is None) else ("local_energy", "forces")
    calc = GAPCalculator(model, uncertainty=False)
    calc.uncertainty_next = watch  # step 0 is checked
    atoms.calc = calc
    if init_velocities and not np.any(atoms.get_momenta()):
        initial_velocities(atoms, temperature_K, seed)
    dyn = make_integrator(atoms, ensemble, timestep_fs=timestep_fs, temperature_K=temperature_K,
                          friction_per_fs=friction_per_fs, pressure_GPa=pressure_GPa, seed=seed)
    # step 0 is predicted before any output exists: a structure the model refuses
    # (an element it has not seen) leaves no empty trajectory or header-only log behind
    atoms.get_potential_energy()
    traj = AppendingXYZ(trajectory) if trajectory else None
    tlog = TextLog(log, LOG_COLUMNS) if log else None
    result = MDResult(steps=0, stop_reason="completed", trajectory=trajectory, log=log)
    last_good = atoms.copy()
    bar = tqdm(total=steps, desc="md", unit="step", disable=not progress, leave=False)
    try:
        for step in range(steps + 1):
            if step > 0:
                # a step that will be checked computes its uncertainties with its forces:
                # one descriptor evaluation per step
                calc.uncertainty_next = False if (step % check_every and step % interval) else watch
                dyn.run(1)
                bar.update(1)
            result.steps = step
            epot = atoms.get_potential_energy()
            if not math.isfinite(epot) or min_pair_distance(atoms, min_distance) < min_distance:
                result.stop_reason = "unstable"
                result.message = (f"step {step}: " + ("non-finite energy" if not math.isfinite(epot)
                                                      else f"atoms closer than {min_distance} Å"))
                atoms.set_positions(last_good.positions)
                atoms.set_cell(last_good.cell)
                atoms.set_momenta(last_good.get_momenta())
                break
            last_good = atoms.copy()
            if step % check_every and step % interval:
                continue
            pred = calc.last_prediction(atoms)
            if pred is None or pred.local_energy_std is None or ("forces" in watch and pred.forces_std is None):
                pred = model.predict([atoms], uncertainty=watch)[0]
            fstd = (np.linalg.norm(pred.forces_std, axis=1) if pred.forces_std is not None
                    else np.full(len(atoms), np.nan))
            if pred.forces_std is not None:
                result.max_force_std_seen = max(result.max_force_std_seen, float(fstd.max()))
            time_fs = step * timestep_fs
            stop = None
            if max_force_std is not None and fstd.max() > max_force_std:
                stop = "max_force_std"
                result.message = (f"step {step}: atom {int(fstd.argmax())} force std {fstd.max():.4f} eV/Å "
                                  f"> {max_force_std}")
            lstd = pred.local_energy_std
            if stop is None and max_local_energy_std is not None and lstd.max() > max_local_energy_std:
                stop = "max_local_energy_std"
                result.message = (f"step {step}: atom {int(lstd.argmax())} local energy std {lstd.max():.4f} eV "
                                  f"> {max_local_energy_std}")
            if on_check is not None and stop is None:
                reason = on_check(step, atoms, pred)
                if reason:
                    stop = reason
            if step % interval == 0 or stop:
                if traj:
                    traj.write(snapshot(atoms, pred, step, time_fs))
                if tlog:
                    ekin = atoms.get_kinetic_energy()
                    tlog.write([step, time_fs, pred.energy, ekin, pred.energy + ekin,
                                atoms.get_temperature(), fstd.max(), fstd.mean(), pred.local_energy_std.max()])
            if stop:
                result.stop_reason = stop
                break
    finally:
        bar.close()
        if traj:
            traj.close()
        if tlog:
            tlog.close()
    return result
