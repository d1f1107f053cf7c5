"""On-the-fly learning: MD with the current model, reference calls where it is unsure.

The loop (:func:`learn`): run MD with the model; check the per-atom
uncertainty every ``check_interval`` steps; when it passes the threshold (and
at least ``min_steps_between_calls`` steps have passed since the last call),
label the frame with the reference calculator, append it to
``DIR/labelled.xyz`` (flushed and fsynced before it is used), add it to the
model with its most uncertain environments as new sparse points (incremental
update, :mod:`.incremental`), save the model atomically, and carry on from
the same configuration.

Files in ``DIR``: ``labelled.xyz`` (every reference result, in order, with
``info['gapfit_sparse_atoms']`` recording which atoms became sparse points),
``model.npz``, ``state.json`` + ``state.xyz`` (MD state at the last
checkpoint, written atomically), ``learn.log``. ``resume=True`` rebuilds the
model from ``labelled.xyz`` (no reference call is repeated: the labels are
read back) and continues the MD from the checkpoint.
"""
from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from .errors import InputError
from .incremental import IncrementalGAP
from .md import initial_velocities, make_integrator, restore_state, unstable_reason
from .md_io import AppendingXYZ, TextLog
from .params import LEARN_DEFAULTS as RUN_DEFAULTS
from .params import check_params, check_species_settings
from .files import atomic_write

log = logging.getLogger("gapfit")
LOG_COLUMNS = ("step", "time_fs", "epot_eV", "temperature_K", "max_force_std_eV_per_A",
               "max_local_energy_std_eV", "reference_calls", "n_sparse", "event")


@dataclass
class Threshold:
    """When to call the reference: any atom above any threshold that is set.

    ``force_std`` (eV/Å) compares the largest force-component std of an atom;
    ``force_std_relative`` multiplies the model's ``sigma_forces``;
    ``local_energy_std`` (eV) compares an atom's local-energy std.
    """

    force_std: Optional[float] = None
    force_std_relative: Optional[float] = None
    local_energy_std: Optional[float] = None

    def exceeded(self, pred, sigma_forces: float):
        """(exceeded, per-atom score used to rank environments)."""
        fstd = pred.forces_std.max(axis=1)
        limits = []
        if self.force_std is not None:
            limits.append(fstd / self.force_std)
        if self.force_std_relative is not None:
            limits.append(fstd / (self.force_std_relative * sigma_forces))
        if self.local_energy_std is not None:
            limits.append(pred.local_energy_std / self.local_energy_std)
        if not limits:
            limits.append(fstd / sigma_forces)
        score = np.max(limits, axis=0)
        return bool(score.max() > 1.0), score


@dataclass
class LearnResult:
    """What a learning run did: its files, reference calls, steps, and why it stopped."""

    model: str
    data: str
    reference_calls: int
    steps: int
    stop_reason: str
    message: str = ""
    timings: dict = field(default_factory=dict)


class ReferenceFactory:
    """Makes a new reference calculator ``cls(**kwargs)`` per call; remembers how, for ``--resume``."""

    def __init__(self, spec: str, kwargs: dict):
        from .baselines import calculator_class
        self._cls, self.kwargs = calculator_class(spec, json.dumps(dict(kwargs)), flag="--reference")
        self.spec = spec

    def __call__(self):
        return self._cls(**self.kwargs)


def load_reference(spec: str, kwargs_json: Optional[str] = None) -> ReferenceFactory:
    """Reference calculator factory from ``"module:Class"`` and JSON keyword arguments."""
    from .baselines import calculator_class
    _, kwargs = calculator_class(spec, kwargs_json, flag="--reference")  # names the culprit if anything is wrong
    return ReferenceFactory(spec, kwargs)


def _reference_record(reference) -> Optional[dict]:
    """How to rebuild ``reference`` (a factory or a calculator class), or None if it cannot be said."""
    if isinstance(reference, ReferenceFactory):
        return {"spec": reference.spec, "kwargs": reference.kwargs}
    if isinstance(reference, type):
        return {"spec": f"{reference.__module__}:{reference.__qualname__}", "kwargs": {}}
    return None


def label_frame(atoms: Atoms, make_calc: Callable) -> Atoms:
    """Reference energy, forces (and stress when periodic) on a copy of ``atoms``."""
    a = atoms.copy()
    a.calc = make_calc()
    res = {"energy": a.get_potential_energy(), "forces": a.get_forces()}
    if np.all(a.pbc):
        res["stress"] = a.get_stress()
    a.calc = SinglePointCalculator(a, **res)
    return a


def _write_json_atomic(path: str, obj: dict) -> None:
    """Replace ``path`` by ``obj`` as indented JSON, all or nothing."""
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1).encode()))


def _write_xyz_atomic(path: str, atoms: Atoms) -> None:
    """Replace ``path`` by ``atoms`` as extended XYZ, all or nothing."""
    import ase.io
    buf = io.StringIO()
    ase.io.write(buf, atoms, format="extxyz")
    atomic_write(path, lambda fh: fh.write(buf.getvalue().encode()))


#: Settings that define what is learned; a resumed run cannot change them (nor the reference).
FIXED_SETTINGS = ("params", "initial_model", "initial_data")
RUN_FILE = "run.json"
RUN_FORMAT = "gapfit-learn-run"


def _normalised(value):
    """JSON round trip, so that values read back from run.json compare equal to fresh ones."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def read_run_settings(out_dir: str) -> Optional[dict]:
    """The stored settings of the run in ``out_dir`` (None when the folder holds no run.json)."""
    path = os.path.join(out_dir, RUN_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as fh:
            saved = json.load(fh)
        if saved.get("format") != RUN_FORMAT or not isinstance(saved.get("settings"), dict):
            raise ValueError("not a gapfit learning-run record")
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: damaged run record ({exc}); start a new run with another -o DIR") from None
    return saved["settings"]


def _resolve_settings(given: dict, stored: Optional[dict], out_dir: str, override: bool):
    """Merge the settings given for this call with the stored ones of the run being resumed.

    Returns ``(settings, changes)``. Not given (None): the stored value (the
    default for a new run). Given and different from the stored value: an
    error naming both, unless ``override`` (then the change is returned to be
    logged); settings in :data:`FIXED_SETTINGS` never change.
    """
    settings, changes = {}, []
    for name, default in list(RUN_DEFAULTS.items()) + [(k, None) for k in FIXED_SETTINGS]:
        value = given.get(name)
        if stored is None or name not in stored:
            settings[name] = default if value is None else value
            continue
        old = stored[name]
        if value is None or _normalised(value) == _normalised(old):
            settings[name] = old
            continue
        if name in FIXED_SETTINGS:
            raise InputError(f"{out_dir}: the run was made with {name} {_show(old)}, not {_show(value)}; "
                             f"{name} cannot change in a resumed run: start a new run with another -o DIR")
        if not override:
            raise InputError(f"{out_dir}: the run was made with {name} {_show(old)}, but {_show(value)} was "
                             f"given; leave it out to continue the same run, or add --override to change it")
        settings[name] = value
        changes.append((name, old, value))
    return settings, changes


def _show(value) -> str:
    """A setting's value as JSON for a message, cut to 80 characters."""
    text = json.dumps(_normalised(value), sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _same_structure(a: Atoms, b: Atoms) -> bool:
    """Whether ``a`` and ``b`` have the same atoms, positions, cell and periodicity."""
    return (len(a) == len(b) and np.array_equal(a.numbers, b.numbers) and np.allclose(a.positions, b.positions)
            and np.allclose(a.cell[:], b.cell[:]) and np.array_equal(a.pbc, b.pbc))


def learn(start: Optional[Atoms], reference: Optional[Callable], out_dir: str, *,
          params: Optional[dict] = None, temperature_K: Optional[float] = None,
          timestep_fs: Optional[float] = None, steps: Optional[int] = None, ensemble: Optional[str] = None,
          friction_per_fs: Optional[float] = None, seed: Optional[int] = None,
          threshold: Optional[Threshold] = None, max_reference_calls: Optional[int] = None,
          min_steps_between_calls: Optional[int] = None, check_interval: Optional[int] = None,
          sparse_per_update: Optional[int] = None, checkpoint_interval: int = 100, min_distance: float = 0.5,
          resume: bool = False, override: bool = False, progress: bool = False,
          initial_model: Optional[str] = None, initial_data: Optional[str] = None,
          baseline: Optional[str] = None, baseline_kwargs: Optional[str] = None) -> LearnResult:
    """Run on-the-fly learning; see the module docstring.

    ``reference()`` returns a new ASE calculator (a calculator class, or the
    factory of :func:`load_reference`, which can be rebuilt on resume).
    ``initial_model`` (a model file) with ``initial_data`` (the file of its
    training frames) starts from that model instead of from nothing.
    ``baseline`` (``"module:Class"``) with ``baseline_kwargs`` (JSON) makes the
    model a Δ-learning model on that ASE calculator (recorded in the run, so
    a resumed run uses it again; it cannot change within a run).

    Every run setting (``params`` and those in :data:`RUN_DEFAULTS`;
    ``threshold`` stands for the three ``threshold_*``) is stored in
    ``DIR/run.json`` with the start structure (``DIR/start.xyz``). With
    ``resume=True`` a setting left as None takes the stored value, so the run
    continues as it was started; one given with another value is refused
    (:class:`InputError` naming both) unless ``override=True``, which logs the
    change. ``start`` and ``reference`` may be None when resuming.
    """
    from .files import TargetLock

    given = dict(temperature_K=temperature_K, timestep_fs=timestep_fs, steps=steps, ensemble=ensemble,
                 friction_per_fs=friction_per_fs, seed=seed, max_reference_calls=max_reference_calls,
                 min_steps_between_calls=min_steps_between_calls, check_interval=check_interval,
                 sparse_per_update=sparse_per_update, params=params, initial_model=initial_model,
                 initial_data=initial_data)
    if threshold is not None:
        given.update(threshold_force_std=threshold.force_std, threshold_force_std_relative=threshold.force_std_relative,
                     threshold_local_energy_std=threshold.local_energy_std)
    os.makedirs(out_dir, exist_ok=True)
    with TargetLock(out_dir, inside=True):
        base = None
        if baseline:
            try:
                kwargs = json.loads(baseline_kwargs) if baseline_kwargs else {}
            except ValueError as exc:
                raise InputError(f"--baseline-kwargs is not valid JSON ({exc})", param="baseline") from None
            base = {"spec": baseline, "kwargs": kwargs}
        elif baseline_kwargs:
            raise InputError("--baseline-kwargs needs --baseline MODULE:CLASS", param="baseline")
        return _learn_locked(start, reference, out_dir, given, base, resume=resume, override=override,
                             progress=progress, checkpoint_interval=checkpoint_interval, min_distance=min_distance)


@dataclass(frozen=True)
class _RunPaths:
    """The files of a learning run's folder."""

    out_dir: str
    data: str  # labelled.xyz: every reference result, in order
    model: str  # model.npz
    state_json: str  # the MD checkpoint record
    state_xyz: str  # the MD state at the checkpoint
    start: str  # start.xyz: the run's start structure
    run: str  # run.json: the run's settings

    @classmethod
    def of(cls, out_dir: str) -> "_RunPaths":
        """The paths in ``out_dir``."""
        def path(name):
            return os.path.join(out_dir, name)
        return cls(out_dir, path("labelled.xyz"), path("model.npz"), path("state.json"), path("state.xyz"),
                   path("start.xyz"), path(RUN_FILE))


def _learn_locked(start, reference, out_dir: str, given: dict, given_base: Optional[dict], *, resume: bool,
                  override: bool, progress: bool, checkpoint_interval: int, min_distance: float) -> LearnResult:
    """:func:`learn` once the run folder is locked: settle and check everything, then learn."""
    paths = _RunPaths.of(out_dir)
    _check_run_folder(paths, resume)
    stored, state = _stored_run(paths, resume)
    settings, changes = _settle_settings(paths, given, given_base, reference, stored, override)
    base_calc = _baseline_calculator(settings)
    _check_settings(settings)
    reference = _reference_factory(reference, settings, out_dir)
    start = _start_structure(start, paths, resume)
    species = _checked_species(settings, start)
    # every check passed: only now may the run folder change
    labelled = _read_labelled(paths.data) if resume and os.path.exists(paths.data) else []
    _record_run(paths, settings, changes, start, resume)
    run = _LearnRun(paths=paths, settings=settings, reference=reference,
                    inc=_initial_model(settings, species, base_calc), atoms=start.copy(),
                    threshold=_threshold_of(settings), checkpoint_interval=checkpoint_interval,
                    min_distance=min_distance)
    if resume:
        run.resume_from(labelled, state)
    return run.execute(changes, resume=resume, progress=progress)


def _check_run_folder(paths: _RunPaths, resume: bool) -> None:
    """Refuse to resume an empty folder, or to start a new run over labelled frames."""
    if resume:
        if not os.path.exists(paths.data) and not os.path.exists(paths.run):
            raise InputError(f"{paths.out_dir}: nothing to resume (no labelled.xyz); run without --resume")
    elif os.path.exists(paths.data) and os.path.getsize(paths.data) > 0:
        raise InputError(f"{paths.out_dir}: already holds labelled.xyz; use --resume to continue or another -o DIR")


def _stored_run(paths: _RunPaths, resume: bool):
    """``(stored settings or None, checkpoint record)`` of the run being resumed (``(None, {})`` for a new run)."""
    if not resume:
        return None, {}
    stored = read_run_settings(paths.out_dir)
    state = _read_state(paths.state_json)
    if stored is None:
        log.warning("%s has no %s (a run of an older gapfit): using the settings given now", paths.out_dir, RUN_FILE)
        stored = {k: state[k] for k in ("initial_model", "initial_data") if state.get(k)} or None
    return stored, state


def _settle_settings(paths: _RunPaths, given: dict, given_base: Optional[dict], reference, stored: Optional[dict],
                     override: bool):
    """``(settings, changes)``: the given settings merged with the stored ones, reference and baseline included."""
    for key in ("initial_model", "initial_data"):
        given[key] = os.path.abspath(given[key]) if given.get(key) else None
    settings, changes = _resolve_settings(given, stored, paths.out_dir, override)
    # the reference: recorded when it can be rebuilt (a class or load_reference's factory)
    stored_ref = (stored or {}).get("reference")
    given_ref = _reference_record(reference) if reference is not None else None
    if given_ref and stored_ref and _normalised(given_ref) != _normalised(stored_ref):
        raise InputError(f"{paths.out_dir}: the run's reference is {_show(stored_ref)}, not {_show(given_ref)}; the "
                         "reference cannot change in a resumed run: start a new run with another -o DIR")
    settings["reference"] = given_ref or stored_ref
    stored_base = (stored or {}).get("baseline")
    if stored is not None and given_base and _normalised(given_base) != _normalised(stored_base):
        raise InputError(f"{paths.out_dir}: the run's Δ-learning baseline is {_show(stored_base)}, not "
                         f"{_show(given_base)}; it cannot change in a resumed run: start a new run with another -o DIR")
    settings["baseline"] = given_base or stored_base
    return settings, changes


def _baseline_calculator(settings: dict):
    """The Δ-learning baseline of the run (None without one)."""
    if not settings["baseline"]:
        return None
    from .baselines import import_calculator
    return import_calculator(settings["baseline"]["spec"], json.dumps(settings["baseline"]["kwargs"]))


def _check_settings(settings: dict) -> None:
    """Refuse settings out of range; an absent ``params`` becomes ``{}``."""
    if settings["params"] is None:
        settings["params"] = {}
    if settings["initial_model"] and not settings["initial_data"]:
        raise InputError("--model needs --initial-data (the model's training frames): the incremental "
                         "model needs their descriptors to add sparse points")
    for name in ("steps", "max_reference_calls", "min_steps_between_calls", "check_interval", "sparse_per_update",
                 "timestep_fs", "temperature_K"):
        v, least = settings[name], 0 if name in ("min_steps_between_calls", "temperature_K") else 1
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= least:
            raise InputError(f"{name} must be a number >= {least}, got {v!r}")
    if settings["ensemble"] not in ("nve", "nvt"):
        raise InputError(f"ensemble must be 'nve' or 'nvt', got {settings['ensemble']!r}")


def _reference_factory(reference: Optional[Callable], settings: dict, out_dir: str) -> Callable:
    """The reference given, or the one recorded in the run when none is."""
    if reference is not None:
        return reference
    if not settings["reference"]:
        raise InputError(f"{out_dir}: the run's reference calculator is not recorded; give --reference")
    return load_reference(settings["reference"]["spec"], json.dumps(settings["reference"]["kwargs"]))


def _start_structure(start: Optional[Atoms], paths: _RunPaths, resume: bool) -> Atoms:
    """The run's start structure: the stored one when resuming (a given one must be the same)."""
    import ase.io
    if resume and os.path.exists(paths.start):
        saved_start = ase.io.read(paths.start)
        if start is not None and not _same_structure(start, saved_start):
            raise InputError(f"{paths.out_dir}: the run started from another structure than the one given now; "
                             "leave the start structure out (or give the same) to continue the run")
        start = saved_start
    if start is None:
        raise InputError(f"{paths.out_dir}: no start structure given and none stored in the run folder")
    return start


def _checked_species(settings: dict, start: Atoms) -> List[int]:
    """The atomic numbers of ``start``, once the model settings are checked against them."""
    check_params(settings["params"])
    species = sorted(set(int(z) for z in start.numbers))
    check_species_settings(settings["params"], species)
    return species


def _record_run(paths: _RunPaths, settings: dict, changes: list, start: Atoms, resume: bool) -> None:
    """Write run.json (when new or changed) and start.xyz; log the settings and any override."""
    if not resume or changes or not os.path.exists(paths.run):
        record = {"format": RUN_FORMAT, "settings": settings,
                  "changes": (_stored_changes(paths.out_dir)
                              + [{"name": n, "from": o, "to": v} for n, o, v in changes])}
        _write_json_atomic(paths.run, record)
    if not os.path.exists(paths.start):
        _write_xyz_atomic(paths.start, start)
    for name, old, value in changes:
        log.warning("resumed with a changed setting (--override): %s %s -> %s", name, _show(old), _show(value))
    log.info("learn settings: %s", json.dumps(settings, sort_keys=True))


def _threshold_of(settings: dict) -> Threshold:
    """The reference-call threshold of the run settings."""
    return Threshold(force_std=settings["threshold_force_std"],
                     force_std_relative=settings["threshold_force_std_relative"],
                     local_energy_std=settings["threshold_local_energy_std"])


def _initial_model(settings: dict, species: List[int], base_calc) -> IncrementalGAP:
    """The model the run starts from: the initial model with its frames, or an empty one."""
    initial_model = settings["initial_model"]
    if initial_model is None:
        params = dict(settings["params"])
        if base_calc is not None:
            params["baseline"] = base_calc
        return IncrementalGAP(params, species)
    from .data import read_frames
    from .model import load as load_model
    inc = IncrementalGAP.from_model(load_model(initial_model, baseline=base_calc and base_calc.calculator),
                                    read_frames([settings["initial_data"]]))
    missing = set(species) - set(inc.species)
    if missing:
        raise InputError(f"{initial_model}: the start structure has species {sorted(missing)} the model lacks")
    return inc


@dataclass
class _LearnRun:
    """A learning run under way: its files, settings, model, MD state and counters."""

    paths: _RunPaths
    settings: dict
    reference: Callable  # makes a new reference calculator per call
    inc: IncrementalGAP
    atoms: Atoms  # the MD state
    threshold: Threshold
    checkpoint_interval: int  # steps
    min_distance: float  # Å
    step0: int = 0  # the step the run (re)starts at
    calls: int = 0  # reference calls made, in this run and the ones it resumes
    last_call_step: int = -10 ** 9
    data: Optional[AppendingXYZ] = None
    tlog: Optional[TextLog] = None

    def resume_from(self, labelled: List[Atoms], state: dict) -> None:
        """Rebuild the model from the labelled frames and restore the MD state to continue from."""
        import ase.io
        if labelled:
            for a in labelled:
                self.inc.add_frame(a, [int(i) for i in np.atleast_1d(a.info.get("gapfit_sparse_atoms", []))])
            self.calls = len(labelled)
            # The checkpoint is current only if it was written after the last
            # labelled frame; otherwise restart from that frame (it carries momenta).
            if os.path.exists(self.paths.state_xyz) and state.get("reference_calls", -1) == self.calls:
                self.atoms = ase.io.read(self.paths.state_xyz)
                self.step0 = int(state.get("step", 0))
                self.last_call_step = int(state.get("last_call_step", -10 ** 9))
            else:
                self.atoms = labelled[-1].copy()
                self.atoms.set_momenta(labelled[-1].get_momenta())
                self.step0 = int(labelled[-1].info.get("gapfit_step", 0))
                self.last_call_step = self.step0
        elif self.settings["initial_model"] is not None and os.path.exists(self.paths.state_xyz):
            self.atoms = ase.io.read(self.paths.state_xyz)
            self.step0 = int(state.get("step", 0))
        s = self.settings
        log.info("resumed %s at step %d of %d with %d reference calls: temperature %g K, timestep %g fs, "
                 "ensemble %s, seed %d", self.paths.out_dir, self.step0, s["steps"], self.calls, s["temperature_K"],
                 s["timestep_fs"], s["ensemble"], s["seed"])

    def execute(self, changes: list, *, resume: bool, progress: bool) -> LearnResult:
        """Open the outputs, make sure the model exists, run the MD; the result of the run."""
        self.data = AppendingXYZ(self.paths.data, append=True)
        self.tlog = TextLog(os.path.join(self.paths.out_dir, "learn.log"), LOG_COLUMNS, append=resume)
        result = LearnResult(model=self.paths.model, data=self.paths.data, reference_calls=self.calls,
                             steps=self.step0, stop_reason="completed")
        try:
            self._log_overrides(changes)
            self._first_model()
            result.steps = self._run_dynamics(result, progress)
            self.checkpoint(result.steps)
        finally:
            self.data.close()
            self.tlog.close()
        result.reference_calls = self.calls
        result.timings = dict(self.inc.timings)
        return result

    def _n_sparse(self) -> int:
        """Sparse points of the model (0 before its first frame)."""
        return self.inc.model.n_sparse_total_ if self.inc.n_frames else 0

    def _log_overrides(self, changes: list) -> None:
        """One learn.log line per setting changed with --override."""
        step0, timestep_fs = self.step0, self.settings["timestep_fs"]
        for name, old, value in changes:
            self.tlog.write([step0, step0 * timestep_fs, 0.0, 0.0, 0.0, 0.0, self.calls, self._n_sparse(),
                             f"override:{name}:{_show(old)}->{_show(value)}".replace(" ", "")])

    def _first_model(self) -> None:
        """From nothing: label the start frame. From an initial model: save it and checkpoint, once."""
        if self.inc.n_frames == 0:
            self.update(self.step0, list(range(len(self.atoms))))
        elif self.calls == 0 and not os.path.exists(self.paths.state_json):
            self.inc.model.save(self.paths.model)
            self.checkpoint(self.step0)
            self.tlog.write([self.step0, self.step0 * self.settings["timestep_fs"],
                             self.inc.frames[-1].get_potential_energy(), 0.0, 0.0, 0.0, self.calls,
                             self.inc.model.n_sparse_total_, "initial"])

    def _start_dynamics(self):
        """Give momenta (when the state has none), attach the model's calculator; the integrator."""
        from .calculator import GAPCalculator
        s = self.settings
        if not np.any(self.atoms.get_momenta()):
            initial_velocities(self.atoms, s["temperature_K"], s["seed"])
        self.atoms.calc = GAPCalculator(self.inc.model, uncertainty=False)
        return make_integrator(self.atoms, s["ensemble"], timestep_fs=s["timestep_fs"],
                               temperature_K=s["temperature_K"], friction_per_fs=s["friction_per_fs"],
                               seed=s["seed"] + self.step0)

    def _run_dynamics(self, result: LearnResult, progress: bool) -> int:
        """MD from step0 to the last step, checking and learning on the way; the last good step."""
        from tqdm.auto import tqdm
        dyn = self._start_dynamics()
        steps, check_interval = self.settings["steps"], self.settings["check_interval"]
        bar = tqdm(total=steps, initial=min(self.step0, steps), desc="learn", unit="step", disable=not progress)
        last_good = self.atoms.copy()
        step = self.step0
        while step < steps:
            # a step that will be checked computes its uncertainties with its forces:
            # one descriptor evaluation per step
            self.atoms.calc.uncertainty_next = (step + 1) % check_interval == 0
            dyn.run(1)
            step += 1
            bar.update(1)
            epot = self.atoms.get_potential_energy()
            reason = unstable_reason(self.atoms, epot, self.min_distance)
            if reason:
                result.stop_reason = "unstable"
                result.message = f"step {step}: {reason}; the last good state is in state.xyz"
                restore_state(self.atoms, last_good)
                step -= 1
                break
            last_good = self.atoms.copy()
            if step % check_interval == 0 and self._check(step, epot, result):
                break
            if step % self.checkpoint_interval == 0:
                self.checkpoint(step)
        bar.close()
        return step

    def _check(self, step: int, epot: float, result: LearnResult) -> bool:
        """Test the uncertainty of ``step``, calling the reference when it is high; True when the call cap stops."""
        pred = self.atoms.calc.last_prediction(self.atoms)
        if pred is None or pred.forces_std is None:
            pred = self.inc.model.predict([self.atoms], uncertainty=True)[0]
        hit, score = self.threshold.exceeded(pred, self.inc.model.sigma_forces)
        event = ""
        if hit and step - self.last_call_step >= self.settings["min_steps_between_calls"]:
            if self.calls >= self.settings["max_reference_calls"]:
                result.stop_reason = "max_reference_calls"
                result.message = f"step {step}: uncertainty above threshold and {self.calls} reference calls made"
                self._log_step(step, epot, pred, "cap")
                return True
            # the most uncertain environments, whether or not each passed the
            # threshold: one call buys a whole frame of new information
            chosen = [int(i) for i in np.argsort(-score)[:self.settings["sparse_per_update"]]]
            self.update(step, chosen)
            from .calculator import GAPCalculator
            self.atoms.calc = GAPCalculator(self.inc.model, uncertainty=False)
            event = "reference"
        if event or step % 10 == 0:
            self._log_step(step, epot, pred, event or "-")
        return False

    def _log_step(self, step: int, epot: float, pred, event: str) -> None:
        """The learn.log line of a checked step."""
        self.tlog.write([step, step * self.settings["timestep_fs"], epot, self.atoms.get_temperature(),
                         pred.forces_std.max(), pred.local_energy_std.max(), self.calls,
                         self.inc.model.n_sparse_total_, event])

    def update(self, step: int, sparse_atoms: List[int]) -> None:
        """Label the current state, add it to the model with ``sparse_atoms`` as new sparse points, save."""
        labelled = self._label(step, sparse_atoms)
        self.calls += 1
        self.last_call_step = step
        self.inc.add_frame(labelled, sparse_atoms)
        self.inc.model.save(self.paths.model)
        self.checkpoint(step)

    def _label(self, step: int, sparse_atoms: List[int]) -> Atoms:
        """The reference result of the current state, appended to labelled.xyz before it is used."""
        labelled = label_frame(self.atoms, self.reference)
        labelled.set_momenta(self.atoms.get_momenta())
        labelled.info["gapfit_step"] = int(step)
        labelled.info["gapfit_sparse_atoms"] = np.array(sparse_atoms, dtype=int)
        self.data.write(labelled)  # on disk before it is used
        return labelled

    def checkpoint(self, step: int) -> None:
        """Write the MD state and its record (state.xyz, state.json)."""
        _write_xyz_atomic(self.paths.state_xyz, self.atoms)
        _write_json_atomic(self.paths.state_json,
                           {"step": step, "reference_calls": self.calls, "last_call_step": self.last_call_step,
                            "n_sparse": self._n_sparse(), "initial_model": self.settings["initial_model"],
                            "initial_data": self.settings["initial_data"]})


def _read_state(path: str) -> dict:
    """The MD checkpoint record ``state.json`` ({} when there is none yet)."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: damaged checkpoint record ({exc}); start a new run with another -o DIR") from None


def _stored_changes(out_dir: str) -> list:
    """The setting changes recorded in the run's run.json ([] when there is none to read)."""
    path = os.path.join(out_dir, RUN_FILE)
    try:
        with open(path) as fh:
            return list(json.load(fh).get("changes", []))
    except (OSError, ValueError, AttributeError):
        return []


def _read_labelled(path: str) -> List[Atoms]:
    """The complete frames of ``labelled.xyz``; an incomplete last frame (a kill mid-write) is cut off."""
    import ase.io
    from .md_io import complete_xyz_frames
    n, n_bytes = complete_xyz_frames(path)
    if n_bytes < os.path.getsize(path):
        log.warning("%s ends with an incomplete frame (the run was stopped while writing it): removed it; "
                    "that reference call will be made again", path)
        os.truncate(path, n_bytes)
    return ase.io.read(path, ":") if n else []
