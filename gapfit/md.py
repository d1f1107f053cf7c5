"""Molecular dynamics driven by a gapfit model, watching its uncertainty.

:func:`run_md` integrates NVE (velocity Verlet), NVT (Langevin) or NPT
(ASE's isotropic MTK barostat with Nosé-Hoover chains), writes an extended
XYZ trajectory with per-atom ``local_energy_std`` and ``forces_std`` arrays
and a plain-text log, and stops cleanly when an atom's predicted force
uncertainty passes a threshold or when the dynamics blows up (atoms closer
than ``min_distance``, or a non-finite energy).

Every frame also carries the run's settings that analysis needs:
``info["gapfit_ensemble"]`` and ``info["gapfit_temperature_K"]`` (the
thermostat's temperature, K; for NVE the ``temperature_K`` the initial
velocities were drawn at, which analysis does not use as β). With ``committee=K`` it carries every member of a posterior
committee (:class:`gapfit.committee.Committee`, calibrated as the committee
is) too, for committee reweighting (:mod:`gapfit.reweight`,
``gapfit analyze``): ``info["gapfit_energy_committee"]`` (K total energies,
eV) and, for periodic cells, ``info["gapfit_stress_committee"]`` (K×6,
eV/Å³, ASE's sign and Voigt order), with ``gapfit_committee_seed``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from .committee import Committee
from .errors import InputError

if TYPE_CHECKING:  # annotations only
    from .calculator import GAPCalculator
    from .md_io import AppendingXYZ, TextLog

ENSEMBLES = ("nve", "nvt", "npt")
#: Keys of ``atoms.info`` in every trajectory frame of :func:`run_md` (the committee's only with ``committee=K``).
INFO_ENSEMBLE = "gapfit_ensemble"
INFO_TEMPERATURE = "gapfit_temperature_K"
INFO_ENERGY_COMMITTEE = "gapfit_energy_committee"
INFO_STRESS_COMMITTEE = "gapfit_stress_committee"
INFO_COMMITTEE_SEED = "gapfit_committee_seed"
INFO_COMMITTEE_KIND = "gapfit_committee_kind"
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
    thermalize(atoms, temperature_K, np.random.default_rng(seed))


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` from ``rng``, with no centre-of-mass drift."""
    from ase.md import velocitydistribution as vd
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


def unstable_reason(atoms: Atoms, epot_eV: float, min_distance: float) -> Optional[str]:
    """Why the dynamics blew up (non-finite energy, atoms too close), or None when the state is sound."""
    if not math.isfinite(epot_eV):
        return "non-finite energy"
    if min_pair_distance(atoms, min_distance) < min_distance:
        return f"atoms closer than {min_distance} Å"
    return None


def restore_state(atoms: Atoms, good: Atoms) -> None:
    """Put ``atoms`` back to the positions, cell and momenta of ``good`` (the last sound state)."""
    atoms.set_positions(good.positions)
    atoms.set_cell(good.cell)
    atoms.set_momenta(good.get_momenta())


def snapshot(atoms: Atoms, pred, step: int, time_fs: float, info: Optional[dict] = None) -> Atoms:
    """A copy of ``atoms`` carrying the prediction as calculator results and arrays, and ``info`` added to its info."""
    snap = atoms.copy()
    snap.info.pop("gapfit_source", None)
    snap.info.update(step=int(step), time_fs=float(time_fs))
    snap.info.update(info or {})
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
           on_check: Optional[Callable[[int, Atoms, dict], Optional[str]]] = None,
           committee: int = 0, committee_seed: int = 0, committee_kind: str = "predictive",
           committee_calibrated: bool = True) -> MDResult:
    """Run MD with ``model`` from ``atoms`` (changed in place).

    Units: ``temperature_K`` K, ``timestep_fs`` fs, ``friction_per_fs``
    1/fs, ``pressure_GPa`` GPa, ``max_force_std`` eV/Å,
    ``max_local_energy_std`` eV, ``min_distance`` Å; intervals in steps.

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

    ``committee=K`` (K ≥ 2; 0 for none) writes every member's energy (and,
    for periodic cells, stress) of a posterior committee seeded by
    ``committee_seed`` into each trajectory frame (see the module
    docstring), for ``gapfit analyze``. The calculator computes the members
    from the descriptors of the step itself, and only on the steps that are
    written (every ``interval``): a frame written in between, when a watch
    stops the run there, costs one more descriptor evaluation.
    ``committee_kind`` ("predictive", default, or "weights") and
    ``committee_calibrated`` choose the members
    (:class:`gapfit.committee.Committee`'s ``kind`` and ``calibrated``).
    """
    _check_md_settings(ensemble, interval, check_interval)
    committee = _check_committee(committee, committee_seed)
    if committee_kind not in Committee.KINDS:
        raise InputError(f"committee_kind must be one of {', '.join(Committee.KINDS)}; got {committee_kind!r}",
                         param="committee_kind")
    watch = _Watch.of(interval, check_interval, max_force_std, max_local_energy_std, on_check)
    calc, dyn = _start_dynamics(model, atoms, watch, ensemble=ensemble, temperature_K=temperature_K,
                                timestep_fs=timestep_fs, seed=seed, friction_per_fs=friction_per_fs,
                                pressure_GPa=pressure_GPa, init_velocities=init_velocities,
                                committee=committee, committee_seed=committee_seed,
                                committee_options={"kind": committee_kind, "calibrated": bool(committee_calibrated)})
    info = {INFO_ENSEMBLE: ensemble, INFO_TEMPERATURE: float(temperature_K)}
    if committee:
        info[INFO_COMMITTEE_SEED] = int(committee_seed)
        info[INFO_COMMITTEE_KIND] = committee_kind
    run = _MDRun.open(model, atoms, calc, dyn, watch, timestep_fs=timestep_fs, min_distance=min_distance,
                      trajectory=trajectory, log=log, info=info)
    try:
        run.integrate(steps, progress)
    finally:
        run.close()
    return run.result


def _check_md_settings(ensemble: str, interval: int, check_interval: Optional[int]) -> None:
    """Refuse an unknown ensemble and step intervals that are not positive whole numbers."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    for name, value in (("interval", interval), ("check_interval", check_interval)):
        if value is not None and (isinstance(value, bool) or not float(value).is_integer() or value < 1):
            raise ValueError(f"{name} must be a positive whole number of steps, got {value!r}")


def _check_committee(committee, committee_seed) -> int:
    """The committee size (0: none), or an InputError when it is not 0 or a whole number ≥ 2."""
    def whole(value) -> bool:
        return not isinstance(value, bool) and isinstance(value, (int, np.integer))

    if not whole(committee_seed) or committee_seed < 0:
        raise InputError(f"committee_seed must be a whole number ≥ 0; got {committee_seed!r}",
                         param="committee_seed")
    if not whole(committee) or committee < 0 or committee == 1:
        raise InputError(f"committee must be 0 (none) or a whole number of members ≥ 2 (8 to 16 give a usable "
                         f"spread); got {committee!r}", param="committee")
    return int(committee)


@dataclass
class _Watch:
    """What a run watches (thresholds, callback), which stds that needs, and on which steps."""

    interval: int  # steps between written frames and log lines
    check_every: int  # steps between computed stds: every check (when watching) and every written frame
    stds: tuple  # the uncertainties computed on those steps
    max_force_std: Optional[float] = None  # eV/Å
    max_local_energy_std: Optional[float] = None  # eV
    on_check: Optional[Callable[[int, Atoms, dict], Optional[str]]] = None

    @classmethod
    def of(cls, interval, check_interval, max_force_std, max_local_energy_std, on_check) -> "_Watch":
        """The watch of run_md's arguments: local-energy stds alone when only they are watched."""
        watching = max_force_std is not None or max_local_energy_std is not None or on_check is not None
        check_every = int(check_interval or 1) if watching else int(interval)
        stds = ("local_energy",) if (max_local_energy_std is not None and max_force_std is None
                                     and on_check is None) else ("local_energy", "forces")
        return cls(int(interval), check_every, stds, max_force_std, max_local_energy_std, on_check)

    def computes_stds(self, step: int) -> bool:
        """Whether ``step`` is checked or written, so that its stds are computed."""
        return not (step % self.check_every and step % self.interval)


def _start_dynamics(model, atoms: Atoms, watch: _Watch, *, ensemble: str, temperature_K: float,
                    timestep_fs: float, seed: int, friction_per_fs: float, pressure_GPa: float,
                    init_velocities: bool, committee: int = 0, committee_seed: int = 0,
                    committee_options: Optional[dict] = None):
    """Attach the model's calculator, give momenta, build the integrator and predict step 0: (calc, dyn).

    With ``committee`` the calculator holds a :class:`gapfit.committee.Committee` without the members'
    forces (step 0, written, computes it).
    """
    from .calculator import GAPCalculator

    calc = GAPCalculator(model, uncertainty=False, committee=committee, committee_seed=committee_seed)
    if committee:  # the same members, without their forces
        calc.committee = Committee(model, committee, seed=committee_seed, member_forces=False,
                                   **(committee_options or {}))
    calc.uncertainty_next = watch.stds  # step 0 is checked
    atoms.calc = calc
    if init_velocities and not np.any(atoms.get_momenta()):
        initial_velocities(atoms, temperature_K, seed)
    dyn = make_integrator(atoms, ensemble, timestep_fs=timestep_fs, temperature_K=temperature_K,
                          friction_per_fs=friction_per_fs, pressure_GPa=pressure_GPa, seed=seed)
    # step 0 is predicted before any output exists: a structure the model refuses
    # (an element it has not seen) leaves no empty trajectory or header-only log behind
    atoms.get_potential_energy()
    return calc, dyn


@dataclass
class _MDRun:
    """One run_md run under way: the dynamics, what it watches, its open outputs and its result."""

    model: object  # a fitted GAP
    atoms: Atoms
    calc: GAPCalculator
    dyn: object  # the ASE integrator
    watch: _Watch
    timestep_fs: float
    min_distance: float  # Å
    traj: Optional[AppendingXYZ]
    tlog: Optional[TextLog]
    result: MDResult
    info: dict = field(default_factory=dict)  # added to every frame's info
    #: the calculator's committee (None without): switched on in the calculator for the steps written only
    members: Optional[Committee] = None
    bar: object = None  # the progress bar, once the steps run

    @classmethod
    def open(cls, model, atoms, calc, dyn, watch, *, timestep_fs, min_distance, trajectory, log,
             info=None) -> "_MDRun":
        """Open the trajectory and the log (each only when a path is given)."""
        from .md_io import AppendingXYZ, TextLog

        traj = AppendingXYZ(trajectory) if trajectory else None
        tlog = TextLog(log, LOG_COLUMNS) if log else None
        result = MDResult(steps=0, stop_reason="completed", trajectory=trajectory, log=log)
        return cls(model, atoms, calc, dyn, watch, timestep_fs, min_distance, traj, tlog, result,
                   dict(info or {}), calc.committee)

    def integrate(self, steps: int, progress: bool) -> None:
        """Steps 0 to ``steps``: stop when the dynamics blows up or a watch says so."""
        from tqdm.auto import tqdm

        last_good = self.atoms.copy()
        self.bar = tqdm(total=steps, desc="md", unit="step", disable=not progress, leave=False)
        for step in range(steps + 1):
            if step > 0:
                # a step that will be checked computes its uncertainties with its forces:
                # one descriptor evaluation per step
                self.calc.uncertainty_next = self.watch.stds if self.watch.computes_stds(step) else False
                if self.members is not None:  # the members cost a step's design rows: only where written
                    self.calc.committee = self.members if step % self.watch.interval == 0 else None
                self.dyn.run(1)
                self.bar.update(1)
            self.result.steps = step
            reason = unstable_reason(self.atoms, self.atoms.get_potential_energy(), self.min_distance)
            if reason:
                self.result.stop_reason = "unstable"
                self.result.message = f"step {step}: {reason}"
                restore_state(self.atoms, last_good)
                break
            last_good = self.atoms.copy()
            if self.watch.computes_stds(step) and self._check_and_write(step):
                break

    def _check_and_write(self, step: int) -> bool:
        """Test the watches on ``step``, write its frame and log line when due; True to stop."""
        pred = self.calc.last_prediction(self.atoms)
        if pred is None or pred.local_energy_std is None or ("forces" in self.watch.stds
                                                             and pred.forces_std is None):
            pred = self.model.predict([self.atoms], uncertainty=self.watch.stds)[0]
        force_std = (np.linalg.norm(pred.forces_std, axis=1) if pred.forces_std is not None
                     else np.full(len(self.atoms), np.nan))  # eV/Å per atom
        if pred.forces_std is not None:
            self.result.max_force_std_seen = max(self.result.max_force_std_seen, float(force_std.max()))
        stop = self._stop_reason(step, pred, force_std)
        if step % self.watch.interval == 0 or stop:
            self._write(step, pred, force_std)
        if stop:
            self.result.stop_reason = stop
        return bool(stop)

    def _stop_reason(self, step: int, pred, force_std: np.ndarray) -> Optional[str]:
        """The first watch that fires on ``step`` (its message in the result), or None."""
        w = self.watch
        if w.max_force_std is not None and force_std.max() > w.max_force_std:
            self.result.message = (f"step {step}: atom {int(force_std.argmax())} force std "
                                   f"{force_std.max():.4f} eV/Å > {w.max_force_std}")
            return "max_force_std"
        local_std = pred.local_energy_std
        if w.max_local_energy_std is not None and local_std.max() > w.max_local_energy_std:
            self.result.message = (f"step {step}: atom {int(local_std.argmax())} local energy std "
                                   f"{local_std.max():.4f} eV > {w.max_local_energy_std}")
            return "max_local_energy_std"
        if w.on_check is not None:
            return w.on_check(step, self.atoms, pred) or None
        return None

    def _write(self, step: int, pred, force_std: np.ndarray) -> None:
        """The trajectory frame and the log line of ``step``."""
        time_fs = step * self.timestep_fs
        if self.traj:
            info = dict(self.info)
            if self.members is not None:
                info.update(self._committee_info())
            self.traj.write(snapshot(self.atoms, pred, step, time_fs, info))
        if self.tlog:
            ekin = self.atoms.get_kinetic_energy()
            self.tlog.write([step, time_fs, pred.energy, ekin, pred.energy + ekin, self.atoms.get_temperature(),
                             force_std.max(), force_std.mean(), pred.local_energy_std.max()])

    def _committee_info(self) -> dict:
        """The members' energies (K,) eV and, periodic cells, stresses (K, 6) eV/Å³ of the current state.

        From the calculator's results when it computed them for this state (every written step); a
        frame written off the interval (a watch stopped the run there) costs one committee prediction.
        """
        a, calc = self.atoms, self.calc
        periodic = bool(np.all(a.pbc)) and a.cell.rank == 3
        r = calc.results
        if (not calc.check_state(a) and "energy_committee" in r
                and (not periodic or "stress_committee" in r)):
            energy, stress = r["energy_committee"], r.get("stress_committee")
        else:
            cp = self.members.predict([a], forces=False, stress=periodic)[0]
            energy, stress = cp.energy_eV, cp.stress_eV_per_A3
        out = {INFO_ENERGY_COMMITTEE: np.array(energy, dtype=np.float64)}
        if periodic and stress is not None:
            out[INFO_STRESS_COMMITTEE] = np.array(stress, dtype=np.float64).reshape(-1, 6)
        return out

    def close(self) -> None:
        """Close the progress bar and the outputs."""
        if self.bar is not None:
            self.bar.close()
        if self.traj:
            self.traj.close()
        if self.tlog:
            self.tlog.close()
