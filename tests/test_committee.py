"""The posterior committee: members are models, their spread is the weight-space posterior."""
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
    com = Committee(cu_model, 4, seed=1)
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
        cp = Committee(model, K, seed=11, calibrated=False).predict(atoms, stress=False)[0]
        assert abs(cp.energy_eV.mean() - cp.mean.energy) <= 4 * std_E / np.sqrt(K)
        assert np.all(np.abs(cp.forces_eV_per_A.mean(axis=0) - cp.mean.forces) <= 4 * std_F / np.sqrt(K) + 1e-12)
        rel = np.abs(cp.forces_std / std_F - 1.0)
        assert np.median(rel) <= 4 / np.sqrt(2 * K)
        assert abs(cp.energy_std / std_E - 1.0) <= 4 / np.sqrt(2 * K)
        errors.append(np.median(rel))
    assert errors[-1] < errors[0] / 3  # ~1/√K: 8x more precise from 100 to 6400


def test_committee_std_never_exceeds_raw_predicted_std(cu_model):
    atoms = _cell(4)
    cp = Committee(cu_model, 2000, seed=2, calibrated=False).predict(atoms, stress=False)[0]
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
