"""A model as baseline + Σ terms: physics of the sum, one implementation per term, Δ-learning, gap_fit strings."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

import gapfit
from gapfit.errors import InputError
from gapfit.terms.base import VOIGT

SOAP = {"type": "soap", "n_max": 4, "l_max": 3, "cutoff": 4.0, "n_sparse": 40}
TWO = {"type": "distance_2b", "cutoff": 4.5, "n_sparse": 12, "theta": 0.6}
THREE = {"type": "angle_3b", "cutoff": 3.2, "n_sparse": 40}
ALL = [TWO, THREE, SOAP]


@pytest.fixture(scope="module")
def multi(cu_train, tmp_path_factory):
    """2b + 3b + SOAP over e0 + ZBL + a tabulated pair potential, on the shipped Cu data."""
    table = tmp_path_factory.mktemp("core") / "cu_core.txt"
    rs = np.linspace(1.5, 3.0, 16)
    table.write_text("# a soft repulsive wall, zero at 3 Å\npair Cu Cu\n"
                     + "".join(f"{r:.4f} {0.05 * (3.0 - r) ** 3:.10f}\n" for r in rs))
    return gapfit.GAP(terms=ALL, core_file=str(table), calibration_fraction=0.0, seed=2).fit(cu_train[:20])


def _cell(seed=0, push=True):
    a = bulk("Cu", "fcc", 3.61, cubic=True).repeat((2, 1, 1))
    a.rattle(0.08, seed=seed)
    if push:  # one pair inside the ZBL switch, so the baseline's derivatives are tested too
        d = a.positions[1] - a.positions[0]
        a.positions[1] = a.positions[0] + d / np.linalg.norm(d) * 2.0
    return a


def _energy(model, atoms):
    return model.predict([atoms], forces=False, stress=False)[0].energy


def test_forces_and_stress_are_derivatives_of_the_energy(multi):
    a = _cell()
    p = multi.predict([a])[0]
    h = 1e-5
    fd = np.zeros_like(p.forces)
    for j in range(len(a)):
        for x in range(3):
            b, c = a.copy(), a.copy()
            b.positions[j, x] += h
            c.positions[j, x] -= h
            fd[j, x] = -(_energy(multi, b) - _energy(multi, c)) / (2 * h)
    assert np.abs(p.forces - fd).max() <= 1e-6 * np.abs(fd).max()
    # stress = (1/V) dE/dε for r -> r (1 + ε), symmetric strains
    sfd = np.zeros(6)
    for k, (i, j) in enumerate(VOIGT):
        e = np.zeros((3, 3))
        e[i, j] += 0.5 * h
        e[j, i] += 0.5 * h
        vals = []
        for sgn in (1, -1):
            b = a.copy()
            b.set_cell(a.cell[:] @ (np.eye(3) + sgn * e), scale_atoms=True)
            vals.append(_energy(multi, b))
        sfd[k] = (vals[0] - vals[1]) / (2 * h) / a.get_volume()
    assert np.abs(p.stress - sfd).max() <= 1e-6 * np.abs(sfd).max()


def test_prediction_equals_design_rows_times_weights(multi):
    """Training and prediction go through each term's one implementation and agree."""
    a = _cell(seed=3)
    st = multi.state_
    descs = multi.descriptors([a], gradients=True)
    rows = multi.design_rows(descs, forces=True, virial=True, local=True)
    p = multi.predict([a])[0]
    base = st.baseline.evaluate(a)
    assert np.isclose(rows.energy[0] @ st.alpha, p.energy - base.energy_eV, rtol=1e-10, atol=1e-9)
    assert np.allclose(rows.local @ st.alpha, p.energies - base.local_energy_eV, rtol=1e-10, atol=1e-9)
    assert np.allclose(-(rows.gradient @ st.alpha).reshape(-1, 3), p.forces - base.forces_eV_per_A, atol=1e-9)
    vir = np.array([base.virial_eV[i, j] for i, j in VOIGT])
    assert np.allclose(rows.virial[0] @ st.alpha, p.stress * a.get_volume() - vir, atol=1e-8)
    assert [t.type for t in multi.terms_] == ["distance_2b", "angle_3b", "soap"]
    assert [b.type for b in st.baseline.parts] == ["e0", "zbl", "tabulated_pair"]
    assert all(t.n_columns > 0 for t in multi.terms_)


def test_invariances_and_extensivity(multi):
    a = _cell(seed=5, push=False)
    e0 = _energy(multi, a)
    b = a.copy()
    b.positions += [0.3, -1.1, 2.0]
    b.wrap()
    assert np.isclose(_energy(multi, b), e0, rtol=1e-10, atol=1e-9)
    rot = a.copy()
    rot.rotate(37, (1, 2, 3), rotate_cell=True)
    assert np.isclose(_energy(multi, rot), e0, rtol=1e-10, atol=1e-9)
    perm = a[np.random.default_rng(0).permutation(len(a))]
    assert np.isclose(_energy(multi, perm), e0, rtol=1e-10, atol=1e-9)
    big = a.repeat((1, 2, 1))
    assert np.isclose(_energy(multi, big), 2 * e0, rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("which", ["distance_2b", "angle_3b", "soap", "zbl"])
def test_continuous_at_each_cutoff_and_switch(multi, which):
    """Energy of a trimer/dimer is continuous where each term's cutoff, or the ZBL switch, is crossed."""
    from ase import Atoms
    if which == "zbl":
        zbl = multi.state_.baseline.parts[1]
        r_c = max(zbl.radii_table()[0]["r_inner_A"], zbl.radii_table()[0]["r_outer_A"])
        edges = [zbl.radii_table()[0]["r_inner_A"], r_c]
    else:
        term = next(t for t in multi.terms_ if t.type == which)
        edges = [term.cutoff_A]
    def trimer(r):
        # two bonds of length r cross the edge together, so every term sees it
        return Atoms("Cu3", positions=[[0, 0, 0], [r, 0, 0], [0.5 * r, 0.8 * r, 0]], pbc=False)
    h = 1e-7
    for r_c in edges:
        jump = abs(_energy(multi, trimer(r_c - h)) - _energy(multi, trimer(r_c + h)))
        # continuous: the change across the edge is what the slope nearby explains, no step
        slope = abs(_energy(multi, trimer(r_c - 1e-4)) - _energy(multi, trimer(r_c + 1e-4))) / 2e-4
        assert jump <= 1.5 * 2 * h * slope + 1e-9, (which, r_c, jump, slope)


def test_terms_from_a_gap_fit_string_and_round_trip(cu_train, tmp_path):
    s = "distance_2b cutoff=4.5 n_sparse=12 theta_uniform=0.6 : soap cutoff=4.0 n_max=4 l_max=3 n_sparse=30"
    m = gapfit.GAP(terms=s, calibration_fraction=0.0).fit(cu_train[:8])
    assert [t.type for t in m.terms_] == ["distance_2b", "soap"]
    path = tmp_path / "m.npz"
    m.save(str(path))
    loaded = gapfit.load(str(path))
    a = _cell(seed=7)
    p0, p1 = m.predict([a], uncertainty=True)[0], loaded.predict([a], uncertainty=True)[0]
    assert p0.energy == p1.energy and np.array_equal(p0.forces, p1.forces)
    assert np.array_equal(p0.forces_std, p1.forces_std)
    with pytest.raises(InputError, match="bogus"):
        gapfit.GAP(terms="soap bogus=3").fit(cu_train[:4])
    with pytest.raises(InputError, match="cutoff"):
        gapfit.GAP(terms=[SOAP], cutoff=3.0).fit(cu_train[:4])


def test_uncertainty_sums_over_terms(multi):
    a = _cell(seed=9, push=False)
    p = multi.predict([a], uncertainty=True)[0]
    assert np.all(p.forces_std >= 0) and np.all(np.isfinite(p.forces_std))
    assert p.energy_std > 0 and np.all(p.local_energy_std > 0)
    far = a.copy()
    far.set_cell(far.cell * 1.35, scale_atoms=True)  # far from the training data: less certain
    q = multi.predict([far], uncertainty=True)[0]
    assert q.local_energy_std.mean() > p.local_energy_std.mean()


# ----------------------------------------------------------------- Δ-learning
def _labelled(n, seed, calc):
    from ase.calculators.singlepoint import SinglePointCalculator
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = bulk("Cu", "fcc", 3.61 * (1 + 0.03 * rng.standard_normal()), cubic=True).repeat((2, 1, 1))
        a.rattle(0.1, seed=int(rng.integers(1 << 30)))
        a.calc = calc
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        out.append(a)
    return out


def test_delta_learning_on_a_calculator_beats_a_plain_fit(tmp_path):
    from ase.calculators.lj import LennardJones
    from ase.calculators.mixing import SumCalculator
    reference = SumCalculator([EMT(), LennardJones(epsilon=0.02, sigma=2.3, rc=4.5, smooth=True)])
    train, test = _labelled(12, 0, reference), _labelled(6, 1, reference)
    # a pair term can represent the pair perturbation exactly, EMT's many-body part it cannot
    settings = dict(terms=[dict(TWO, n_sparse=30, theta=0.3)], calibration_fraction=0.0, core_repulsion=False,
                    sigma_energy=0.001, sigma_forces=0.005)
    plain = gapfit.GAP(**settings).fit(train)
    delta = gapfit.GAP(**settings, baseline=EMT()).fit(train)

    def force_mae(model):
        return np.mean([np.abs(p.forces - a.get_forces()).mean() for p, a in zip(model.predict(test), test)])
    assert force_mae(delta) < 0.3 * force_mae(plain), (force_mae(delta), force_mae(plain))
    # the file names the calculator and loading never imports it: without it, a refusal naming it
    path = tmp_path / "delta.npz"
    delta.save(str(path))
    with pytest.raises(InputError, match="ase.calculators.emt:EMT"):
        gapfit.load(str(path))
    loaded = gapfit.load(str(path), baseline=EMT())
    assert np.allclose(loaded.predict(test[:1])[0].forces, delta.predict(test[:1])[0].forces, atol=1e-12)
    calc = gapfit.GAPCalculator(str(path), baseline=EMT(), uncertainty=False)
    a = test[0].copy()
    a.calc = calc
    assert np.isclose(a.get_potential_energy(), delta.predict([test[0]])[0].energy)


def test_a_fit_calculates_the_delta_baseline_once_per_frame():
    """Pass 1 (e0), pass 2 (rows), calibration and hygiene all read the baseline: one calculation per frame."""
    import collections

    class Counting(EMT):
        calls = collections.Counter()

        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            Counting.calls[atoms.get_positions().tobytes()] += 1
            super().calculate(atoms, properties, system_changes)
    train = _labelled(12, 2, EMT())
    settings = dict(terms=[dict(TWO, n_sparse=20, theta=0.3)], calibration_fraction=0.25, core_repulsion=False)
    model = gapfit.GAP(**settings, baseline=Counting()).fit(train)
    assert model.calibration_ and model.hygiene_ is not None  # every pass that reads the baseline ran
    assert len(Counting.calls) == len(train) and set(Counting.calls.values()) == {1}, Counting.calls.values()
    assert model.predict(train[:1])[0].energy == pytest.approx(train[0].get_potential_energy(), abs=0.05)


def test_default_recipe_depends_on_periodicity(cu_train):
    """Measured choice: two-body + SOAP for crystals, two-body + three-body + SOAP for molecules."""
    periodic = [a for a in cu_train if a.pbc.all()][:3]
    molecule = _cell(push=False)
    molecule.pbc = False
    assert [t.type for t in gapfit.GAP().make_terms(periodic)] == ["distance_2b", "soap"]
    assert [t.type for t in gapfit.GAP().make_terms([molecule])] == ["distance_2b", "angle_3b", "soap"]
    assert [t.type for t in gapfit.GAP(terms=[SOAP]).make_terms([molecule])] == ["soap"]
