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

import importlib
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
from .model_io import atomic_write

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

    def exceeded(self, pred: dict, sigma_forces: float):
        """(exceeded, per-atom score used to rank environments)."""
        fstd = pred["forces_std"].max(axis=1)
        limits = []
        if self.force_std is not None:
            limits.append(fstd / self.force_std)
        if self.force_std_relative is not None:
            limits.append(fstd / (self.force_std_relative * sigma_forces))
        if self.local_energy_std is not None:
            limits.append(pred["local_energy_std"] / self.local_energy_std)
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


def load_reference(spec: str, kwargs_json: Optional[str] = None):
    """Instantiate an ASE calculator from ``"module:Class"`` and JSON keyword arguments."""
    if ":" not in spec:
        raise InputError(f"--reference {spec!r}: expected MODULE:CLASS, e.g. ase.calculators.emt:EMT")
    mod_name, cls_name = spec.split(":", 1)
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"--reference {spec!r}: cannot import it ({exc})") from None
    try:
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
    except ValueError as exc:
        raise InputError(f"--reference-kwargs: not valid JSON ({exc})") from None
    if not isinstance(kwargs, dict):
        raise InputError("--reference-kwargs: expected a JSON object")
    return lambda: cls(**kwargs)


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


def learn(start: Atoms, reference: Callable, out_dir: str, *, params: Optional[dict] = None,
          temperature_K: float = 300.0, timestep_fs: float = 1.0, steps: int = 1000, ensemble: str = "nvt",
          friction_per_fs: float = 0.01, seed: int = 0, threshold: Optional[Threshold] = None,
          max_reference_calls: int = 100, min_steps_between_calls: int = 10, check_interval: int = 1,
          sparse_per_update: int = 16, checkpoint_interval: int = 100, min_distance: float = 0.5,
          resume: bool = False, progress: bool = False, initial_model: Optional[str] = None,
          initial_data: Optional[str] = None) -> LearnResult:
    """Run on-the-fly learning; see the module docstring. ``reference()`` returns a new ASE calculator.

    ``initial_model`` (a model file) with ``initial_data`` (the file of its
    training frames) starts from that model instead of from nothing; both are
    recorded in ``state.json`` so that ``resume`` finds them again.
    """
    from tqdm.auto import tqdm
    import ase.io

    threshold = threshold or Threshold()
    os.makedirs(out_dir, exist_ok=True)
    data_path = os.path.join(out_dir, "labelled.xyz")
    model_path = os.path.join(out_dir, "model.npz")
    state_json = os.path.join(out_dir, "state.json")
    state_xyz = os.path.join(out_dir, "state.xyz")
    species = sorted(set(int(z) for z in start.numbers))
    if resume and os.path.exists(state_json) and initial_model is None:
        saved = json.load(open(state_json))
        initial_model, initial_data = saved.get("initial_model"), saved.get("initial_data")
    if initial_model is not None:
        from .model_io import load_model
        if not initial_data:
            raise InputError("--model needs --initial-data (the model's training frames): the incremental "
                             "model needs their descriptors to add sparse points")
        from .data import read_frames
        inc = IncrementalGAP.from_model(load_model(initial_model), read_frames([initial_data]))
        missing = set(species) - set(inc.species)
        if missing:
            raise InputError(f"{initial_model}: the start structure has species {sorted(missing)} the model lacks")
        initial_model, initial_data = os.path.abspath(initial_model), os.path.abspath(initial_data)
    else:
        inc = IncrementalGAP(params, species)
    step0, calls, last_call_step = 0, 0, -10 ** 9
    atoms = start.copy()
    if resume:
        if not os.path.exists(data_path):
            raise InputError(f"{out_dir}: nothing to resume (no labelled.xyz); run without --resume")
        labelled = ase.io.read(data_path, ":")
        for a in labelled:
            inc.add_frame(a, [int(i) for i in np.atleast_1d(a.info.get("gapfit_sparse_atoms", []))])
        calls = len(labelled)
        state = json.load(open(state_json)) if os.path.exists(state_json) else {}
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
        log.info("resumed from %s: %d reference calls, step %d", out_dir, calls, step0)
    elif os.path.exists(data_path) and os.path.getsize(data_path) > 0:
        raise InputError(f"{out_dir}: already holds labelled.xyz; use --resume to continue or another -o DIR")

    data = AppendingXYZ(data_path, append=True)
    tlog = TextLog(os.path.join(out_dir, "learn.log"), LOG_COLUMNS, append=resume)

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
                                        "n_sparse": inc.model.sparse_.n_total if inc.n_frames else 0,
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
                        calls, inc.model.sparse_.n_total, "initial"])
        from .calculator import GAPCalculator
        if not np.any(atoms.get_momenta()):
            initial_velocities(atoms, temperature_K, seed)
        atoms.calc = GAPCalculator(inc.model, uncertainty=False)
        dyn = make_integrator(atoms, ensemble, timestep_fs=timestep_fs, temperature_K=temperature_K,
                              friction_per_fs=friction_per_fs, seed=seed + step0)
        bar = tqdm(total=steps, initial=min(step0, steps), desc="learn", unit="step", disable=not progress)
        last_good = atoms.copy()
        step = step0
        while step < steps:
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
                pred = inc.model.predict([atoms], uncertainty=True)[0]
                hit, score = threshold.exceeded(pred, inc.model.sigma_forces)
                event = ""
                if hit and step - last_call_step >= min_steps_between_calls:
                    if calls >= max_reference_calls:
                        result.stop_reason = "max_reference_calls"
                        result.message = f"step {step}: uncertainty above threshold and {calls} reference calls made"
                        tlog.write([step, step * timestep_fs, epot, atoms.get_temperature(),
                                    pred["forces_std"].max(), pred["local_energy_std"].max(), calls,
                                    inc.model.sparse_.n_total, "cap"])
                        break
                    order = np.argsort(-score)
                    # the most uncertain environments, whether or not each passed the
                    # threshold: one call buys a whole frame of new information
                    chosen = [int(i) for i in order[:sparse_per_update]]
                    update(step, chosen)
                    atoms.calc = GAPCalculator(inc.model, uncertainty=False)
                    event = "reference"
                if event or step % 10 == 0:
                    tlog.write([step, step * timestep_fs, epot, atoms.get_temperature(),
                                pred["forces_std"].max(), pred["local_energy_std"].max(), calls,
                                inc.model.sparse_.n_total, event or "-"])
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
