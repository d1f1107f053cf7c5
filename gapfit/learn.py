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
import math
import os
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from .errors import InputError
from .incremental import IncrementalGAP
from .md import initial_velocities, make_integrator, min_pair_distance
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
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1).encode()))


def _write_xyz_atomic(path: str, atoms: Atoms) -> None:
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
    text = json.dumps(_normalised(value), sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _same_structure(a: Atoms, b: Atoms) -> bool:
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


def _learn_locked(start, reference, out_dir: str, given: dict, given_base: Optional[dict], *, resume: bool, override: bool, progress: bool,
                  checkpoint_interval: int, min_distance: float) -> LearnResult:
    from tqdm.auto import tqdm
    import ase.io

    data_path = os.path.join(out_dir, "labelled.xyz")
    model_path = os.path.join(out_dir, "model.npz")
    state_json = os.path.join(out_dir, "state.json")
    state_xyz = os.path.join(out_dir, "state.xyz")
    start_path = os.path.join(out_dir, "start.xyz")

    if resume:
        if not os.path.exists(data_path) and not os.path.exists(os.path.join(out_dir, RUN_FILE)):
            raise InputError(f"{out_dir}: nothing to resume (no labelled.xyz); run without --resume")
    elif os.path.exists(data_path) and os.path.getsize(data_path) > 0:
        raise InputError(f"{out_dir}: already holds labelled.xyz; use --resume to continue or another -o DIR")

    stored = read_run_settings(out_dir) if resume else None
    state = _read_state(state_json) if resume else {}
    if resume and stored is None:
        log.warning("%s has no %s (a run of an older gapfit): using the settings given now", out_dir, RUN_FILE)
        stored = {k: state[k] for k in ("initial_model", "initial_data") if state.get(k)} or None
    for key in ("initial_model", "initial_data"):
        given[key] = os.path.abspath(given[key]) if given.get(key) else None
    settings, changes = _resolve_settings(given, stored, out_dir, override)
    # the reference: recorded when it can be rebuilt (a class or load_reference's factory)
    stored_ref = (stored or {}).get("reference")
    given_ref = _reference_record(reference) if reference is not None else None
    if given_ref and stored_ref and _normalised(given_ref) != _normalised(stored_ref):
        raise InputError(f"{out_dir}: the run's reference is {_show(stored_ref)}, not {_show(given_ref)}; the "
                         "reference cannot change in a resumed run: start a new run with another -o DIR")
    settings["reference"] = given_ref or stored_ref
    stored_base = (stored or {}).get("baseline")
    if resume and stored is not None and given_base and _normalised(given_base) != _normalised(stored_base):
        raise InputError(f"{out_dir}: the run's Δ-learning baseline is {_show(stored_base)}, not {_show(given_base)};"
                         " it cannot change in a resumed run: start a new run with another -o DIR")
    settings["baseline"] = given_base or stored_base
    base_calc = None
    if settings["baseline"]:
        from .baselines import import_calculator
        base_calc = import_calculator(settings["baseline"]["spec"], json.dumps(settings["baseline"]["kwargs"]))
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

    if reference is None:
        if not settings["reference"]:
            raise InputError(f"{out_dir}: the run's reference calculator is not recorded; give --reference")
        reference = load_reference(settings["reference"]["spec"], json.dumps(settings["reference"]["kwargs"]))
    if resume and os.path.exists(start_path):
        saved_start = ase.io.read(start_path)
        if start is not None and not _same_structure(start, saved_start):
            raise InputError(f"{out_dir}: the run started from another structure than the one given now; "
                             "leave the start structure out (or give the same) to continue the run")
        start = saved_start
    if start is None:
        raise InputError(f"{out_dir}: no start structure given and none stored in the run folder")
    check_params(settings["params"])
    species = sorted(set(int(z) for z in start.numbers))
    check_species_settings(settings["params"], species)

    # every check passed: only now may the run folder change
    labelled = _read_labelled(data_path) if resume and os.path.exists(data_path) else []
    if not resume or changes or not os.path.exists(os.path.join(out_dir, RUN_FILE)):
        record = {"format": RUN_FORMAT, "settings": settings,
                  "changes": (_stored_changes(out_dir) + [{"name": n, "from": o, "to": v} for n, o, v in changes])}
        _write_json_atomic(os.path.join(out_dir, RUN_FILE), record)
    if not os.path.exists(start_path):
        _write_xyz_atomic(start_path, start)
    for name, old, value in changes:
        log.warning("resumed with a changed setting (--override): %s %s -> %s", name, _show(old), _show(value))
    log.info("learn settings: %s", json.dumps(settings, sort_keys=True))

    thr = Threshold(force_std=settings["threshold_force_std"],
                    force_std_relative=settings["threshold_force_std_relative"],
                    local_energy_std=settings["threshold_local_energy_std"])
    temperature_K, timestep_fs, steps = settings["temperature_K"], settings["timestep_fs"], settings["steps"]
    seed, check_interval = settings["seed"], settings["check_interval"]
    min_steps_between_calls = settings["min_steps_between_calls"]
    initial_model, initial_data = settings["initial_model"], settings["initial_data"]

    if initial_model is not None:
        from .data import read_frames
        from .model_io import load_model
        inc = IncrementalGAP.from_model(load_model(initial_model, baseline=base_calc and base_calc.calculator),
                                        read_frames([initial_data]))
        missing = set(species) - set(inc.species)
        if missing:
            raise InputError(f"{initial_model}: the start structure has species {sorted(missing)} the model lacks")
    else:
        params = dict(settings["params"])
        if base_calc is not None:
            params["baseline"] = base_calc
        inc = IncrementalGAP(params, species)
    step0, calls, last_call_step = 0, 0, -10 ** 9
    atoms = start.copy()
    if resume and labelled:
        for a in labelled:
            inc.add_frame(a, [int(i) for i in np.atleast_1d(a.info.get("gapfit_sparse_atoms", []))])
        calls = len(labelled)
        # The checkpoint is current only if it was written after the last
        # labelled frame; otherwise restart from that frame (it carries momenta).
        if os.path.exists(state_xyz) and state.get("reference_calls", -1) == calls:
            atoms = ase.io.read(state_xyz)
            step0 = int(state.get("step", 0))
            last_call_step = int(state.get("last_call_step", -10 ** 9))
        else:
            atoms = labelled[-1].copy()
            atoms.set_momenta(labelled[-1].get_momenta())
            step0 = int(labelled[-1].info.get("gapfit_step", 0))
            last_call_step = step0
    elif resume and initial_model is not None and os.path.exists(state_xyz):
        atoms = ase.io.read(state_xyz)
        step0 = int(state.get("step", 0))
    if resume:
        log.info("resumed %s at step %d of %d with %d reference calls: temperature %g K, timestep %g fs, "
                 "ensemble %s, seed %d", out_dir, step0, steps, calls, temperature_K, timestep_fs,
                 settings["ensemble"], seed)

    data = AppendingXYZ(data_path, append=True)
    tlog = TextLog(os.path.join(out_dir, "learn.log"), LOG_COLUMNS, append=resume)
    for name, old, value in changes:
        tlog.write([step0, step0 * timestep_fs, 0.0, 0.0, 0.0, 0.0, calls, inc.model.n_sparse_total_
                    if inc.n_frames else 0, f"override:{name}:{_show(old)}->{_show(value)}".replace(" ", "")])

    def record(step: int, a: Atoms, sparse_atoms: List[int]) -> Atoms:
        labelled = label_frame(a, reference)
        labelled.set_momenta(a.get_momenta())
        labelled.info["gapfit_step"] = int(step)
        labelled.info["gapfit_sparse_atoms"] = np.array(sparse_atoms, dtype=int)
        data.write(labelled)  # on disk before it is used
        return labelled

    def checkpoint(step: int) -> None:
        _write_xyz_atomic(state_xyz, atoms)
        _write_json_atomic(state_json, {"step": step, "reference_calls": calls, "last_call_step": last_call_step,
                                        "n_sparse": inc.model.n_sparse_total_ if inc.n_frames else 0,
                                        "initial_model": initial_model, "initial_data": initial_data})

    def update(step: int, sparse_atoms: List[int]) -> None:
        nonlocal calls, last_call_step
        labelled = record(step, atoms, sparse_atoms)
        calls += 1
        last_call_step = step
        inc.add_frame(labelled, sparse_atoms)
        inc.model.save(model_path)
        checkpoint(step)

    result = LearnResult(model=model_path, data=data_path, reference_calls=calls, steps=step0,
                         stop_reason="completed")
    try:
        if inc.n_frames == 0:
            update(step0, list(range(len(atoms))))  # from nothing: the first frame is labelled
        elif calls == 0 and not os.path.exists(state_json):
            inc.model.save(model_path)
            checkpoint(step0)
            tlog.write([step0, step0 * timestep_fs, inc.frames[-1].get_potential_energy(), 0.0, 0.0, 0.0,
                        calls, inc.model.n_sparse_total_, "initial"])
        from .calculator import GAPCalculator
        if not np.any(atoms.get_momenta()):
            initial_velocities(atoms, temperature_K, seed)
        atoms.calc = GAPCalculator(inc.model, uncertainty=False)
        dyn = make_integrator(atoms, settings["ensemble"], timestep_fs=timestep_fs, temperature_K=temperature_K,
                              friction_per_fs=settings["friction_per_fs"], seed=seed + step0)
        bar = tqdm(total=steps, initial=min(step0, steps), desc="learn", unit="step", disable=not progress)
        last_good = atoms.copy()
        step = step0
        while step < steps:
            # a step that will be checked computes its uncertainties with its forces:
            # one descriptor evaluation per step
            atoms.calc.uncertainty_next = (step + 1) % check_interval == 0
            dyn.run(1)
            step += 1
            bar.update(1)
            epot = atoms.get_potential_energy()
            if not math.isfinite(epot) or min_pair_distance(atoms, min_distance) < min_distance:
                result.stop_reason = "unstable"
                result.message = (f"step {step}: " + ("non-finite energy" if not math.isfinite(epot)
                                                      else f"atoms closer than {min_distance} Å")
                                  + "; the last good state is in state.xyz")
                atoms.set_positions(last_good.positions)
                atoms.set_cell(last_good.cell)
                atoms.set_momenta(last_good.get_momenta())
                step -= 1
                break
            last_good = atoms.copy()
            if step % check_interval == 0:
                pred = atoms.calc.last_prediction(atoms)
                if pred is None or pred.forces_std is None:
                    pred = inc.model.predict([atoms], uncertainty=True)[0]
                hit, score = thr.exceeded(pred, inc.model.sigma_forces)
                event = ""
                if hit and step - last_call_step >= min_steps_between_calls:
                    if calls >= settings["max_reference_calls"]:
                        result.stop_reason = "max_reference_calls"
                        result.message = f"step {step}: uncertainty above threshold and {calls} reference calls made"
                        tlog.write([step, step * timestep_fs, epot, atoms.get_temperature(),
                                    pred.forces_std.max(), pred.local_energy_std.max(), calls,
                                    inc.model.n_sparse_total_, "cap"])
                        break
                    order = np.argsort(-score)
                    # the most uncertain environments, whether or not each passed the
                    # threshold: one call buys a whole frame of new information
                    chosen = [int(i) for i in order[:settings["sparse_per_update"]]]
                    update(step, chosen)
                    atoms.calc = GAPCalculator(inc.model, uncertainty=False)
                    event = "reference"
                if event or step % 10 == 0:
                    tlog.write([step, step * timestep_fs, epot, atoms.get_temperature(),
                                pred.forces_std.max(), pred.local_energy_std.max(), calls,
                                inc.model.n_sparse_total_, event or "-"])
            if step % checkpoint_interval == 0:
                checkpoint(step)
        bar.close()
        result.steps = step
        checkpoint(step)
    finally:
        data.close()
        tlog.close()
    result.reference_calls = calls
    result.timings = dict(inc.timings)
    return result


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
