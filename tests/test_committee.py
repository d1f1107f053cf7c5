"""The posterior committee: weight-space members are models; predictive members carry the whole predicted variance."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

import gapfit
from gapfit import sgp
from gapfit.committee import Committee, member_models


def _cell(seed=0):
    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    a.rattle(0.05, seed=seed)
    return a


def test_members_are_models_with_their_weights(cu_model):
    com = Committee(cu_model, 4, seed=1, kind="weights")
    atoms = _cell()
    cp = com.predict(atoms)[0]
    ref = cu_model.predict(atoms)[0]
    assert cp.mean.energy == pytest.approx(ref.energy, rel=1e-12)
    for k, m in enumerate(member_models(com)):
        p = m.predict(atoms)[0]
        # design rows and the terms' own contraction round differently: 1e-7 eV is far below any error
        assert cp.energy_eV[k] == pytest.approx(p.energy, abs=1e-7)
        np.testing.assert_allclose(cp.forces_eV_per_A[k], p.forces, atol=1e-7)
        np.testing.assert_allclose(cp.stress_eV_per_A3[k], p.stress, atol=1e-9)
    assert not np.allclose(cp.energy_eV, cp.energy_eV[0])  # members differ


def test_same_seed_same_members_and_calibration_scales_the_spread(cu_model):
    a, b = Committee(cu_model, 8, seed=5), Committee(cu_model, 8, seed=5)
    np.testing.assert_array_equal(a.deviations, b.deviations)
    raw = Committee(cu_model, 8, seed=5, calibrated=False)
    np.testing.assert_allclose(a.deviations, a.scale * raw.deviations, rtol=1e-12)
    assert a.scale == pytest.approx(cu_model.calibration_["forces_scale"])


def test_committee_converges_to_model_mean_and_weight_space_std(cu_model):
    """Mean → model prediction and std → sqrt(kᵀ(RᵀR)⁻¹k) as K grows.

    Tolerances from sampling statistics: the mean's error is std/√K (asserted
    within 4 of those), the std's relative error about 1/√(2K) (asserted within
    4 of those, and falling from K = 100 to K = 6400).
    """
    atoms = _cell(3)
    model = cu_model
    descs = model.descriptors([atoms], gradients=True)
    rows = model.design_rows(descs, forces=True, virial=False)
    std_E = np.sqrt(sgp.posterior(rows.energy, model.state_.R))[0]
    std_F = np.sqrt(sgp.posterior(rows.gradient, model.state_.R)).reshape(-1, 3)
    errors = []
    for K in (100, 400, 1600, 6400):
        cp = Committee(model, K, seed=11, calibrated=False, kind="weights").predict(atoms, stress=False)[0]
        assert abs(cp.energy_eV.mean() - cp.mean.energy) <= 4 * std_E / np.sqrt(K)
        assert np.all(np.abs(cp.forces_eV_per_A.mean(axis=0) - cp.mean.forces) <= 4 * std_F / np.sqrt(K) + 1e-12)
        rel = np.abs(cp.forces_std / std_F - 1.0)
        assert np.median(rel) <= 4 / np.sqrt(2 * K)
        assert abs(cp.energy_std / std_E - 1.0) <= 4 / np.sqrt(2 * K)
        errors.append(np.median(rel))
    assert errors[-1] < errors[0] / 3  # ~1/√K: 8x more precise from 100 to 6400


def test_weight_space_std_never_exceeds_raw_predicted_std(cu_model):
    atoms = _cell(4)
    cp = Committee(cu_model, 2000, seed=2, calibrated=False, kind="weights").predict(atoms, stress=False)[0]
    p = cu_model.predict(atoms, uncertainty=True, calibrated=False)[0]
    # weight space is part of the predictive variance (sampling tolerance 10 %)
    assert np.all(cp.forces_std <= 1.1 * p.forces_std + 1e-12)
    assert cp.energy_std <= 1.1 * p.energy_std


def test_committee_needs_a_fitted_model_and_two_members(cu_model):
    with pytest.raises(gapfit.errors.NotFittedError):
        Committee(gapfit.GAP(), 4)
    with pytest.raises(ValueError, match="at least 2"):
        Committee(cu_model, 1)


def test_calculator_committee_results_match_the_committee(cu_model):
    from ase.calculators.calculator import PropertyNotImplementedError

    from gapfit.calculator import GAPCalculator
    atoms = _cell(6)
    calc = GAPCalculator(cu_model, uncertainty=False, committee=8, committee_seed=4)
    atoms.calc = calc
    cp = Committee(cu_model, 8, seed=4).predict(atoms)[0]
    np.testing.assert_allclose(calc.get_property("energy_committee", atoms), cp.energy_eV, rtol=1e-12)
    np.testing.assert_allclose(calc.get_property("forces_committee", atoms), cp.forces_eV_per_A, rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(calc.get_property("stress_committee", atoms), cp.stress_eV_per_A3, rtol=1e-10,
                               atol=1e-14)
    assert atoms.get_potential_energy() == pytest.approx(cu_model.predict(atoms)[0].energy, abs=1e-9)
    # with uncertainties as well, the same members
    atoms.calc = GAPCalculator(cu_model, committee=8, committee_seed=4)
    np.testing.assert_allclose(atoms.calc.get_property("energy_committee", atoms), cp.energy_eV, rtol=1e-12)
    np.testing.assert_allclose(atoms.calc.get_property("forces_std", atoms),
                               cu_model.predict(atoms, uncertainty=True)[0].forces_std, rtol=1e-10)
    atoms.calc = GAPCalculator(cu_model)
    with pytest.raises(PropertyNotImplementedError, match="committee=K"):
        atoms.calc.get_property("energy_committee", atoms)


# ---------------------------------------------------------------- predictive members
def _slab():
    from ase.build import fcc111
    slab = fcc111("Cu", (2, 2, 4), a=3.6, vacuum=5.0, periodic=True)
    slab.rattle(0.02, seed=9)
    return slab


def test_predictive_members_carry_the_predicted_variance(cu_model):
    """Members' std of energy and forces → the model's raw predicted std, where weight-space members fall short.

    Uncalibrated, K = 1500: the std's sampling error is about 1/√(2K) = 1.8 %;
    the leftover below the tolerance adds at most a few per cent more. The
    cu_model was fitted to bulk frames only, so the slab's surface atoms are
    far from its sparse points.
    """
    for atoms in (_cell(4), _slab()):
        p = cu_model.predict(atoms, uncertainty=True, calibrated=False)[0]
        pred = Committee(cu_model, 1500, seed=3, calibrated=False).predict(atoms, stress=False)[0]
        weights = Committee(cu_model, 1500, seed=3, calibrated=False, kind="weights").predict(atoms,
                                                                                              stress=False)[0]
        assert pred.energy_std == pytest.approx(p.energy_std, rel=0.1)
        rel = pred.forces_std / p.forces_std
        assert np.median(rel) == pytest.approx(1.0, abs=0.1)
        assert np.percentile(rel, 5) > 0.8
        # the mean is still the model's (within 4 standard errors)
        assert abs(pred.energy_eV.mean() - p.energy) <= 4 * p.energy_std / np.sqrt(1500)
    # on the surface the weight space alone misses a good part of it (≈ 40 % of the variance here)
    assert weights.energy_std < 0.85 * p.energy_std


def test_a_predictive_member_is_one_function_across_frames(cu_model):
    """A frame's members are the same after other frames were seen, and the same seed and order give the same draws."""
    bulk_, slab = _cell(5), _slab()
    com = Committee(cu_model, 6, seed=8)
    first = com.predict(bulk_)[0]
    n_bulk = com.residual.n_points
    com.predict(slab)
    assert com.residual.n_points > n_bulk  # the surface needed draws of its own
    again = com.predict(bulk_)[0]
    # values drawn at the bulk's environments stay; environments left below the
    # tolerance move by at most ~sqrt(1e-10)·δ as U grows
    np.testing.assert_allclose(again.energy_eV, first.energy_eV, atol=1e-4)
    # (forces are not pinned: the residual's gradients are drawn only through its values)
    other = Committee(cu_model, 6, seed=8)
    np.testing.assert_array_equal(other.predict(bulk_)[0].energy_eV, first.energy_eV)
    assert not np.allclose(Committee(cu_model, 6, seed=9).predict(bulk_)[0].energy_eV, first.energy_eV)


def test_predictive_members_forces_and_stress_are_their_energy_derivatives(cu_model):
    """Central differences of each member's energy (its U fixed by a coarse tolerance) against its forces and stress."""
    atoms = _slab()
    com = Committee(cu_model, 3, seed=4, tolerance=1e-6)
    cp = com.predict(atoms)[0]
    n_points = com.residual.n_points
    h = 1e-4
    for i, c in ((0, 2), (12, 0), (15, 1)):
        e = []
        for s in (+1, -1):
            b = atoms.copy()
            b.positions[i, c] += s * h
            e.append(com.predict(b, forces=False, stress=False)[0].energy_eV)
        fd = -(e[0] - e[1]) / (2 * h)
        np.testing.assert_allclose(cp.forces_eV_per_A[:, i, c], fd, atol=2e-5)
    eps = 1e-5
    for v, (a, b_) in enumerate(((0, 0), (2, 2), (0, 1))):
        e = []
        for s in (+1, -1):
            b = atoms.copy()
            strain = np.eye(3)
            strain[a, b_] += s * eps / (1 if a == b_ else 2)
            if a != b_:
                strain[b_, a] += s * eps / 2
            b.set_cell(atoms.cell @ strain, scale_atoms=True)
            e.append(com.predict(b, forces=False, stress=False)[0].energy_eV)
        voigt = {(0, 0): 0, (2, 2): 2, (0, 1): 5}[(a, b_)]
        fd = (e[0] - e[1]) / (2 * eps) / atoms.get_volume()
        np.testing.assert_allclose(cp.stress_eV_per_A3[:, voigt], fd, atol=2e-6)
    assert com.residual.n_points == n_points  # the displaced frames drew nothing new


def test_predictive_members_are_not_models_of_their_own(cu_model):
    com = Committee(cu_model, 3, seed=0)
    with pytest.raises(ValueError, match="kind='weights'"):
        member_models(com)
    with pytest.raises(ValueError, match="kind"):
        Committee(cu_model, 3, kind="everything")


def test_a_full_set_of_residual_draws_says_so_once(cu_model):
    """At max_points the members stop drawing: the largest variance left out is kept and one warning names it."""
    import logging

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    # a handler of its own on gapfit's logger: the CLI tests in this process may stop it propagating to the root
    keep, log = Keep(), logging.getLogger("gapfit")
    log.addHandler(keep)
    try:
        com = Committee(cu_model, 3, seed=0, max_points=4)
        com.predict([_cell(1), _cell(2), _slab()], forces=False, stress=False)
    finally:
        log.removeHandler(keep)
    assert all(b.n_points <= 4 for b in com.residual.blocks.values())
    assert com.residual.uncovered_max > 0
    assert len([m for m in keep.messages if "max_points" in m]) == 1


def test_calculator_takes_the_kind_of_member(cu_model):
    from gapfit.calculator import GAPCalculator
    atoms = _cell(7)
    for kind in Committee.KINDS:
        atoms.calc = GAPCalculator(cu_model, committee=4, committee_seed=2, committee_kind=kind)
        ref = Committee(cu_model, 4, seed=2, kind=kind).predict(atoms)[0]
        assert atoms.calc.committee.kind == kind
        np.testing.assert_allclose(atoms.calc.get_property("energy_committee", atoms), ref.energy_eV, rtol=1e-12)
