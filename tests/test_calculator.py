"""The ASE calculator in MD, optimisation and cell relaxation."""
from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

import gapfit
from gapfit.md import initial_velocities


def _cell(seed=0):
    a = bulk("Cu", "fcc", 3.61, cubic=True).repeat((2, 2, 2))
    a.rattle(0.05, seed=seed)
    return a


def test_results_and_uncertainties(cu_model):
    a = _cell()
    a.calc = gapfit.GAPCalculator(cu_model, uncertainty=True)
    e = a.get_potential_energy()
    assert a.get_forces().shape == (len(a), 3)
    assert a.get_stress().shape == (6,)
    assert np.isclose(a.get_potential_energies().sum(), e)
    r = a.calc.results
    assert r["forces_std"].shape == (len(a), 3) and r["local_energy_std"].shape == (len(a),)
    assert r["energy_std"] > 0
    assert a.calc.implemented_properties == gapfit.GAPCalculator.implemented_properties


def test_by_default_no_std_is_computed_until_one_is_asked_for(cu_model):
    """The default calculator computes energy, forces and stress only (the prediction's cost); a std asked
    for by name is then computed, equal to the model's."""
    a = _cell()
    a.calc = gapfit.GAPCalculator(cu_model)
    a.get_forces()
    assert not any(k in a.calc.results for k in ("energy_std", "local_energy_std", "forces_std"))
    assert a.calc.prediction.forces_std is None
    np.testing.assert_allclose(a.calc.get_property("forces_std", a),
                               cu_model.predict(a, uncertainty=True)[0].forces_std, rtol=1e-10)


def test_uncertainties_are_declared_properties(cu_model):
    """get_property works for every uncertainty result, also when uncertainty=False, with one evaluation."""
    a = _cell()
    a.calc = gapfit.GAPCalculator(cu_model, uncertainty=False)
    calls = []
    predict = cu_model.predict
    cu_model.predict = lambda *args, **kw: calls.append(kw) or predict(*args, **kw)
    try:
        std = a.calc.get_property("forces_std", a)
        assert std.shape == (len(a), 3) and np.all(std >= 0)
        assert a.calc.get_property("energy_std", a) > 0
        assert a.calc.get_property("local_energy_std", a).shape == (len(a),)
        a.get_forces()
    finally:
        del cu_model.predict
    assert len(calls) == 1 and calls[0]["uncertainty"]
    for name in ("energy_std", "local_energy_std", "forces_std"):
        assert name in gapfit.GAPCalculator.implemented_properties


def test_calculator_from_path(cu_model, tmp_path):
    p = tmp_path / "m.npz"
    cu_model.save(str(p))
    a, b = _cell(), _cell()
    a.calc = gapfit.GAPCalculator(str(p), uncertainty=False)
    b.calc = gapfit.GAPCalculator(cu_model, uncertainty=False)
    assert a.get_potential_energy() == b.get_potential_energy()


def test_nve_conserves_energy(cu_model):
    a = _cell(1)
    a.calc = gapfit.GAPCalculator(cu_model, uncertainty=False)
    initial_velocities(a, 600, seed=0)
    dyn = VelocityVerlet(a, timestep=1.0 * units.fs)
    etot = []
    dyn.attach(lambda: etot.append(a.get_total_energy()), interval=5)
    dyn.run(200)
    etot = np.array(etot) / len(a)
    assert np.ptp(etot) < 2e-3  # eV/atom over 200 fs
    assert a.get_kinetic_energy() > 0


def test_langevin_bfgs_and_cell_filter(cu_model):
    a = _cell(2)
    a.calc = gapfit.GAPCalculator(cu_model, uncertainty=False)
    Langevin(a, 2 * units.fs, temperature_K=500, friction=0.02, fixcm=False, rng=np.random.default_rng(1)).run(10)
    b = _cell(3)
    b.calc = gapfit.GAPCalculator(cu_model, uncertainty=False)
    opt = BFGS(b, logfile=None)
    assert opt.run(fmax=0.01, steps=200)
    assert np.abs(b.get_forces()).max() < 0.01
    c = bulk("Cu", "fcc", 3.75, cubic=True)  # stretched: should shrink
    c.calc = gapfit.GAPCalculator(cu_model, uncertainty=False)
    v0 = c.get_volume()
    opt = BFGS(FrechetCellFilter(c), logfile=None)
    assert opt.run(fmax=1e-3, steps=200)
    assert c.get_volume() < v0
    assert np.abs(c.get_stress()).max() < 1e-3


def test_stress_not_available_for_molecule(cu_model):
    from ase.calculators.calculator import PropertyNotImplementedError
    a = _cell()
    a.pbc = False
    a.calc = gapfit.GAPCalculator(cu_model, uncertainty=False)
    a.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError):
        a.get_stress()


def test_md_check_interval_tests_the_watch_every_n_steps_and_pays_for_stds_only_then(cu_model):
    """With check_interval=4 the watch sees steps 0, 4, 8 only, and stds are computed on those steps alone."""
    from gapfit.md import run_md
    seen, asked = [], []
    predict = cu_model.predict

    def counting_predict(frames, **kw):
        asked.append(bool(kw.get("uncertainty")))
        return predict(frames, **kw)

    def watch(step, atoms, pred):
        seen.append(step)
        assert pred.forces_std is not None and np.all(np.isfinite(pred.forces_std))
        return "enough" if step >= 5 else None

    cu_model.predict = counting_predict
    try:
        res = run_md(cu_model, _cell(), ensemble="nve", temperature_K=300, steps=20, seed=0, interval=100,
                     check_interval=4, on_check=watch)
    finally:
        del cu_model.predict
    assert seen == [0, 4, 8]
    assert res.stop_reason == "enough" and res.steps == 8
    assert len(asked) == 9 and sum(asked) == 3  # one evaluation per step; stds on the three checked steps
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="check_interval"):
            run_md(cu_model, _cell(), steps=2, check_interval=bad, max_force_std=1.0)


def test_md_watching_uncertainty_computes_descriptors_once_per_step(cu_model, tmp_path):
    """run_md with a force-std watch checks every step and still evaluates each term's descriptors once per step."""
    from gapfit.md import run_md
    a = _cell()
    calls = []
    state = cu_model.state_  # predictions compute descriptors through the fitted state
    descriptors = state.descriptors
    state.descriptors = lambda frames, **kw: calls.append(len(frames)) or descriptors(frames, **kw)
    try:
        res = run_md(cu_model, a, ensemble="nvt", temperature_K=300, steps=6, max_force_std=1e3, seed=0,
                     trajectory=str(tmp_path / "md.xyz"), interval=1)
    finally:
        del state.descriptors
    assert res.steps == 6 and res.stop_reason == "completed"
    assert len(calls) == res.steps + 1  # the start, then one evaluation per step (forces and stds together)
