"""Physics of the fitted potential: gradients, invariances, extensivity, smoothness."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

import gapfit
from conftest import BACKEND_MODELS


def _energy(model, atoms):
    return model.predict([atoms], forces=False, stress=False)[0].energy


def _fd_forces(model, atoms, h=1e-4):
    f = np.zeros((len(atoms), 3))
    for j in range(len(atoms)):
        for x in range(3):
            a1, a2 = atoms.copy(), atoms.copy()
            a1.positions[j, x] += h
            a2.positions[j, x] -= h
            # 4th-order central difference, small step: the cutoff functions are C1, so a
            # stencil across a cutoff edge errs by O(h²); h = 1e-4 keeps that below 1e-7
            a3, a4 = atoms.copy(), atoms.copy()
            a3.positions[j, x] += 2 * h
            a4.positions[j, x] -= 2 * h
            f[j, x] = -(8 * (_energy(model, a1) - _energy(model, a2))
                        - (_energy(model, a3) - _energy(model, a4))) / (12 * h)
    return f


def _fd_stress(model, atoms, h=1e-4):
    s = np.zeros(6)
    V = atoms.get_volume()
    for k, (a, b) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        def strained(t):
            eps = np.zeros((3, 3))
            eps[a, b] += t / 2
            eps[b, a] += t / 2
            at = atoms.copy()
            at.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
            return _energy(model, at)
        s[k] = (8 * (strained(h) - strained(-h)) - (strained(2 * h) - strained(-2 * h))) / (12 * h) / V
    return s


def _rattled_cu(n=1, seed=0, d=0.1):
    a = bulk("Cu", "fcc", 3.61, cubic=True).repeat((n, n, n))
    a.rattle(d, seed=seed)
    a.set_cell(a.cell[:] @ (np.eye(3) + [[0.01, 0.02, 0], [0.02, -0.01, 0.01], [0, 0.01, 0.02]]), scale_atoms=True)
    return a


@pytest.mark.parametrize("which", BACKEND_MODELS)
def test_forces_and_stress_are_energy_derivatives(which, request):
    model = request.getfixturevalue(which)
    atoms = _rattled_cu(1, seed=3)
    r = model.predict([atoms])[0]
    f_fd = _fd_forces(model, atoms)
    s_fd = _fd_stress(model, atoms)
    assert np.abs(r.forces - f_fd).max() <= 1e-6 * np.abs(f_fd).max()
    assert np.abs(r.stress - s_fd).max() <= 1e-6 * np.abs(s_fd).max()


def test_forces_of_molecule_match_finite_differences(cu_model):
    cluster = _rattled_cu(1, seed=5)
    cluster.pbc = False
    cluster.cell = None
    r = cu_model.predict([cluster])[0]
    assert r.stress is None
    f_fd = _fd_forces(cu_model, cluster)
    assert np.abs(r.forces - f_fd).max() <= 1e-6 * np.abs(f_fd).max()


def test_calculator_matches_ase_numerical_derivatives(cu_model):
    from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
    atoms = _rattled_cu(1, seed=7)
    atoms.calc = gapfit.GAPCalculator(cu_model, uncertainty=False)
    f = atoms.get_forces()
    s = atoms.get_stress()
    fn = calculate_numerical_forces(atoms, eps=1e-3)
    sn = calculate_numerical_stress(atoms, eps=1e-4)
    # ASE's second-order differences: error O(eps²) of the largest component
    assert np.abs(f - fn).max() < 1e-5 * np.abs(fn).max()
    assert np.abs(s - sn).max() < 1e-5 * np.abs(sn).max()


@pytest.mark.parametrize("which", BACKEND_MODELS)
def test_rotation_translation_permutation_invariance(which, request):
    cu_model = request.getfixturevalue(which)
    atoms = _rattled_cu(1, seed=11)
    r0 = cu_model.predict([atoms])[0]
    rng = np.random.default_rng(0)
    # rotation of positions and cell together
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    rot = atoms.copy()
    rot.set_cell(atoms.cell[:] @ q.T, scale_atoms=False)
    rot.positions = atoms.positions @ q.T
    r_rot = cu_model.predict([rot])[0]
    assert abs(r_rot.energy - r0.energy) < 1e-9 * max(1, abs(r0.energy))
    assert np.allclose(r_rot.forces, r0.forces @ q.T, atol=1e-8)
    # translation
    tr = atoms.copy()
    tr.translate([0.37, -1.2, 2.9])
    assert abs(_energy(cu_model, tr) - r0.energy) < 1e-9 * max(1, abs(r0.energy))
    # permutation of like atoms
    perm = rng.permutation(len(atoms))
    pa = atoms[perm]
    rp = cu_model.predict([pa])[0]
    assert abs(rp.energy - r0.energy) < 1e-9 * max(1, abs(r0.energy))
    assert np.allclose(rp.forces, r0.forces[perm], atol=1e-8)


@pytest.mark.parametrize("which", BACKEND_MODELS)
def test_energy_is_extensive(which, request):
    cu_model = request.getfixturevalue(which)
    one = _rattled_cu(1, seed=13)
    one.pbc = False
    one.cell = None
    two = one.copy()
    far = one.copy()
    far.translate([30.0, 0, 0])
    two.extend(far)
    e1 = _energy(cu_model, one)
    e2 = _energy(cu_model, two)
    assert abs(e2 - 2 * e1) < 1e-9 * abs(e2)
    # periodic supercell: same energy per atom as its unit cell
    cell = _rattled_cu(1, seed=17)
    sup = cell.repeat((2, 1, 1))
    assert abs(_energy(cu_model, sup) - 2 * _energy(cu_model, cell)) < 1e-8 * abs(_energy(cu_model, sup))


def test_energy_continuous_as_neighbour_crosses_cutoff(cu_model):
    """Default backend: a third atom crossing the (largest) cutoff changes E smoothly."""
    rc = max(t.cutoff_A for t in cu_model.terms_)  # beyond every term's cutoff the atom is invisible
    base = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])
    rs = np.linspace(rc - 0.05, rc + 0.05, 201)
    energies = []
    for r in rs:
        a = base.copy()
        a.append("Cu")
        a.positions[-1] = [-r, 0, 0]  # distance r to atom 0, > rc to atom 1 nearby the end
        energies.append(_energy(cu_model, a))
    energies = np.array(energies)
    inside = energies[rs < rc]
    beyond = energies[rs > rc + 1e-9]
    # beyond the cutoff the third atom is invisible: exactly constant energy
    assert np.ptp(beyond) < 1e-12
    # it matters inside (so the test is not vacuous) ...
    assert abs(inside[0] - beyond[0]) > 1e-7
    # ... and joins without a jump, the change shrinking to zero at rc
    def e_at(r):
        a = base.copy()
        a.append("Cu")
        a.positions[-1] = [-r, 0, 0]
        return _energy(cu_model, a)
    assert abs(e_at(rc - 1e-6) - e_at(rc + 1e-6)) < 1e-10
    slope_near_rc = abs(e_at(rc - 1e-4) - e_at(rc - 2e-4)) / 1e-4
    slope_nearer = abs(e_at(rc - 1e-5) - e_at(rc - 2e-5)) / 1e-5
    slope_inside = abs(inside[1] - inside[0]) / (rs[1] - rs[0])
    # zero slope at rc (forces continuous too): the slope is small near rc and shrinks as rc nears
    assert slope_near_rc < 3e-2 * slope_inside
    assert slope_nearer < 0.2 * slope_near_rc
