"""A frame's prediction divided over sets of atoms (shares), as MPI ranks divide it.

The shares of a partition of the atoms, with the baseline in one of them,
must sum to the whole prediction: energies, forces and the virial
(``-stress × volume``); each share's per-atom virials sum to its virial; a
centre's per-atom virial is the strain derivative of its local energy
(finite differences); only the centres' environments are computed.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

import gapfit
from gapfit.baselines import CalculatorBaseline, CoulombBaseline, E0Baseline, SumBaseline, ZBLBaseline, is_periodic
from gapfit.errors import InputError
from gapfit.predictor import predict, predict_share
from gapfit.terms.base import VOIGT

SOAP = {"type": "soap", "n_max": 4, "l_max": 3, "cutoff": 4.0, "n_sparse": 40}
TWO = {"type": "distance_2b", "cutoff": 4.5, "n_sparse": 12, "theta": 0.6}
THREE = {"type": "angle_3b", "cutoff": 3.2, "n_sparse": 40}
TOL = 1e-10  # relative to the largest entry of the compared quantity


def _labelled(frames):
    out = []
    for a in frames:
        a = a.copy()
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        s = a.get_stress() if is_periodic(a) else None
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        out.append(a)
    return out


def _alloy(rng, repeat=(2, 1, 1), a0=3.61):
    a = bulk("Cu", "fcc", a0 * (1 + 0.02 * rng.standard_normal()), cubic=True).repeat(repeat)
    a.numbers[rng.random(len(a)) < 0.4] = 79
    a.rattle(0.1, seed=int(rng.integers(1 << 30)))
    return a


def _cluster(rng, n=13):
    """A finite CuAu cluster cut from fcc: the n atoms nearest to one atom."""
    b = bulk("Cu", "fcc", 3.61, cubic=True).repeat((3, 3, 3))
    d = np.linalg.norm(b.positions - b.positions[13 * 3], axis=1)
    a = b[np.argsort(d)[:n]]
    a.pbc = False
    a.cell = None
    a.numbers[rng.random(len(a)) < 0.4] = 79
    a.rattle(0.08, seed=int(rng.integers(1 << 30)))
    return a


@pytest.fixture(scope="module")
def alloy_model(tmp_path_factory):
    """SOAP (featomic) + two-body + three-body over e0 + ZBL + a tabulated pair, two species."""
    rng = np.random.default_rng(0)
    frames = _labelled([_alloy(rng) for _ in range(8)] + [_cluster(rng, 6) for _ in range(2)])
    table = tmp_path_factory.mktemp("core") / "core.txt"
    rs = np.linspace(1.5, 3.0, 16)
    rows = "".join(f"{r:.4f} {0.05 * (3.0 - r) ** 3:.10f}\n" for r in rs)
    table.write_text(f"pair Cu Cu\n{rows}pair Cu Au\n{rows}pair Au Au\n{rows}")
    return gapfit.GAP(terms=[TWO, THREE, SOAP], core_file=str(table), seed=3).fit(frames)


# ------------------------------------------------------------------- frames
def _push(a):
    """Bring atoms 0 and 1 to 1.9 Å, inside the ZBL switch, so the baseline's terms are not zero."""
    d = a.positions[1] - a.positions[0]
    a.positions[1] = a.positions[0] + d / np.linalg.norm(d) * 1.9
    return a


def _periodic():
    return _push(_alloy(np.random.default_rng(11), repeat=(2, 2, 1)))  # 16 atoms


def _triclinic():
    """A sheared primitive fcc cell (cell vectors 5.1 Å, under two cutoffs: atoms see their own images)."""
    a = bulk("Cu", "fcc", 3.61).repeat((2, 2, 2))
    a.set_cell(a.cell[:] @ np.array([[1.0, 0.05, -0.03], [0.02, 1.0, 0.04], [0.0, -0.06, 1.0]]), scale_atoms=True)
    rng = np.random.default_rng(12)
    a.numbers[rng.random(len(a)) < 0.4] = 79
    a.rattle(0.1, seed=5)
    return _push(a)


def _finite():
    return _push(_cluster(np.random.default_rng(13), 19))


def _boundary():
    """A cubic cell shifted so that most atoms sit within 0.2 Å of a face (inside, wrapped)."""
    a = _alloy(np.random.default_rng(14), repeat=(2, 2, 1))
    a.positions -= 0.15
    a.wrap()
    return a


FRAMES = {"periodic": _periodic, "triclinic": _triclinic, "finite": _finite, "boundary": _boundary}


def _near_faces(a, within_A=0.25):
    """Atoms within ``within_A`` of a face of the cell (fractional distance scaled by the cell heights)."""
    frac = a.get_scaled_positions(wrap=True)
    heights = a.get_volume() / np.linalg.norm(np.cross(a.cell[[1, 2, 0]], a.cell[[2, 0, 1]]), axis=1)
    dist = np.minimum(frac, 1 - frac) * heights
    return np.flatnonzero((dist < within_A).any(axis=1))


def _partitions(a, seed):
    """Random partitions into 2 and 3 parts and, for periodic frames, the atoms near a face and the rest."""
    rng = np.random.default_rng(seed)
    n = len(a)
    out = [[np.flatnonzero(lab == k) for k in range(m)] for m, lab in
           ((2, rng.integers(0, 2, n)), (3, rng.permutation(np.arange(n) % 3)))]
    if is_periodic(a):
        near = _near_faces(a)
        assert 0 < len(near) < n
        out.append([near, np.setdiff1d(np.arange(n), near)])
    return out


def _virial_of(p, a):
    """The virial W = -Σ r ⊗ ∂E/∂r of a whole prediction: -stress × V, or Σ r ⊗ F for a finite frame."""
    if is_periodic(a):
        s = np.zeros((3, 3))
        for k, (i, j) in enumerate(VOIGT):
            s[i, j] = s[j, i] = p.stress[k]
        return -s * a.get_volume()
    W = a.positions.T @ p.forces
    return 0.5 * (W + W.T)


def _origin_defect(p, a):
    """How far Σ r_j ⊗ F_j of a finite frame depends on the origin: |r|·|Σ_j F_j|.

    Zero to round-off for analytic gradients; dscribe's smooth mode takes
    numerical derivatives, whose forces sum to ~1e-9 eV/Å, not to zero.
    """
    return 0.0 if is_periodic(a) else 3 * np.abs(a.positions).max() * np.abs(p.forces.sum(axis=0)).max()


def _close(got, want, what, allow=0.0):
    scale = max(np.abs(want).max(), 1e-300)
    err = np.abs(np.asarray(got) - np.asarray(want)).max()
    assert err <= TOL * scale + allow, f"{what}: max difference {err:.3g} against max {scale:.3g}"


def _check_sum(state, a, parts):
    p = predict(state, [a])[0]
    shares = [predict_share(state, a, c, baseline=(k == len(parts) - 1)) for k, c in enumerate(parts)]
    _close(sum(s.energies_eV for s in shares), p.energies, "per-atom energies")
    _close(sum(s.energy_eV for s in shares), np.array(p.energy), "energy")
    _close(sum(s.forces_eV_per_A for s in shares), p.forces, "forces")
    _close(sum(s.virial_eV for s in shares), _virial_of(p, a), "virial", _origin_defect(p, a))
    for s in shares:
        _close(s.atom_virial_eV.sum(axis=0), s.virial_eV, "per-atom virials of a share")
    for s in shares[:-1]:  # without the baseline: nothing off the centres but forces
        off = np.setdiff1d(np.arange(len(a)), s.centres)
        assert not np.any(s.energies_eV[off]) and not np.any(s.atom_virial_eV[off])
    return shares


# --------------------------------------------------------- sums of shares
@pytest.mark.parametrize("frame", sorted(FRAMES))
def test_shares_sum_to_the_prediction_soap_2b_3b_zbl(alloy_model, frame):
    a = FRAMES[frame]()
    for k, parts in enumerate(_partitions(a, seed=len(frame))):
        _check_sum(alloy_model.state_, a, parts)


@pytest.mark.parametrize("name", ["cu_model_dscribe", "cu_model_dscribe_smooth"])
def test_shares_sum_to_the_prediction_dscribe(request, name):
    model = request.getfixturevalue(name)
    frames = {"triclinic": _triclinic(), "finite": _finite()}
    if name == "cu_model_dscribe":
        frames["periodic"] = _periodic()
    for key, a in frames.items():
        a.numbers[:] = 29  # a Cu model
        for parts in _partitions(a, seed=3)[1:]:
            _check_sum(model.state_, a, parts)


@pytest.mark.parametrize("frame", ["triclinic", "finite"])
def test_each_term_share_sums_to_the_term_prediction(alloy_model, frame):
    """Per term type (2b, 3b, SOAP): local energies, gradients, strain derivative, per-atom virials."""
    a = FRAMES[frame]()
    state = alloy_model.state_
    parts = _partitions(a, seed=7)[1]
    for term, sl in zip(state.terms, state.column_slices):
        alpha = state.alpha[sl]
        full = term.predict(term.compute([a], gradients=True)[0], alpha, forces=True, virial=True)
        got = [term.predict_share(term.compute([a], gradients=True, layout="blocks", centres=[c])[0], a, alpha)
               for c in parts]
        local = np.zeros(len(a))
        for s in got:
            local[s.centres] += s.local_energy_eV
        _close(local, full.local_energy_eV, f"{term.type} local energies")
        _close(sum(s.gradient_eV_per_A for s in got), full.gradient_eV_per_A, f"{term.type} gradient")
        W = sum(s.atom_virial_eV.sum(axis=0) for s in got)
        if is_periodic(a):
            _close(W, full.virial_eV, f"{term.type} virial")
        else:  # finite: Σ_j r_j ⊗ ∂E/∂r_j (origin-free: the gradient sums to zero)
            ref = a.positions.T @ full.gradient_eV_per_A
            _close(W, 0.5 * (ref + ref.T), f"{term.type} virial")


def test_descriptors_of_centres_are_the_rows_of_the_whole_frame(alloy_model):
    """featomic's selected samples give the very rows (and strain gradients) of a whole-frame computation."""
    a = _periodic()
    soap = [t for t in alloy_model.state_.terms if t.type == "soap"][0]
    c = np.array([0, 3, 4, 9, 15])
    full = soap.compute([a], gradients=True)[0]
    part = soap.compute([a], gradients=True, centres=[c])[0]
    assert np.array_equal(part.centres, c) and np.array_equal(part.numbers, a.numbers[c])
    assert np.array_equal(part.values, full.values[c])
    assert np.array_equal(part.strain_gradients, full.strain_gradients[c])
    mine = np.isin(full.pair_centre, c)
    assert np.array_equal(c[part.pair_centre], full.pair_centre[mine])
    assert np.array_equal(part.pair_neighbour, full.pair_neighbour[mine])
    assert np.array_equal(part.pair_gradients, full.pair_gradients[mine])


# ------------------------------------------------------ per-atom virials
def _local_energy(state, a, i):
    return predict_share(state, a, [i], baseline=False, virial=False).energies_eV[i]


@pytest.mark.parametrize("frame", ["triclinic", "finite"])
def test_atom_virial_is_the_strain_derivative_of_the_local_energy(alloy_model, frame):
    """W_i = -∂ε_i/∂ε (strain of cell and positions), by central differences; a one-atom share's forces too."""
    a = FRAMES[frame]()
    state = alloy_model.state_
    h = 1e-5
    for i in (0, 5):
        s = predict_share(state, a, [i], baseline=False)
        fd = np.zeros((3, 3))
        for x in range(3):
            for y in range(3):
                vals = []
                for sign in (1, -1):
                    e = np.eye(3)
                    e[x, y] += sign * h
                    b = a.copy()
                    b.positions = a.positions @ e
                    if is_periodic(a):
                        b.cell = a.cell[:] @ e
                    vals.append(_local_energy(state, b, i))
                fd[x, y] = (vals[0] - vals[1]) / (2 * h)
        fd = 0.5 * (fd + fd.T)
        assert np.abs(s.atom_virial_eV[i] + fd).max() <= 1e-6 * max(np.abs(fd).max(), 1e-3), (i, s.atom_virial_eV[i],
                                                                                            -fd)
        assert np.count_nonzero(np.abs(s.atom_virial_eV).sum(axis=(1, 2))) == 1  # only the centre's row
        # the forces of a one-atom share: -∂ε_i/∂r_j on its neighbours j
        for j in (i, (i + 1) % len(a)):
            for x in range(3):
                b, c = a.copy(), a.copy()
                b.positions[j, x] += h
                c.positions[j, x] -= h
                fd_f = -(_local_energy(state, b, i) - _local_energy(state, c, i)) / (2 * h)
                assert abs(s.forces_eV_per_A[j, x] - fd_f) <= 1e-6 * max(np.abs(s.forces_eV_per_A).max(), 1e-3)


# --------------------------------------------------------------- baselines
def _frames_for_baselines():
    p = _periodic()
    f = _finite()
    return [p, f]


def _baselines(alloy_model):
    base = alloy_model.state_.baseline
    parts = {type(b).__name__: b for b in base.parts}
    return {"e0": parts["E0Baseline"], "zbl": parts["ZBLBaseline"], "table": parts["TabulatedPairBaseline"],
            "coulomb": CoulombBaseline({"Cu": 0.3, "Au": -0.3}),
            "calculator": CalculatorBaseline(EMT(), "ase.calculators.emt:EMT", {}),
            "sum": base}


@pytest.mark.parametrize("kind", ["e0", "zbl", "table", "coulomb", "calculator", "sum"])
def test_baseline_atom_virials_sum_to_its_virial(alloy_model, kind):
    b = _baselines(alloy_model)[kind]
    for a in _frames_for_baselines():
        r = b.evaluate_atoms(a)
        plain = b.evaluate(a)
        assert np.array_equal(r.forces_eV_per_A, plain.forces_eV_per_A)
        assert np.array_equal(r.local_energy_eV, plain.local_energy_eV)
        assert r.atom_virial_eV.shape == (len(a), 3, 3)
        if is_periodic(a):
            want = plain.virial_eV
        else:
            want = a.positions.T @ -plain.forces_eV_per_A
            want = 0.5 * (want + want.T)
        if np.abs(want).max() > 0 or kind != "e0":
            _close(r.atom_virial_eV.sum(axis=0), want, f"{kind} per-atom virials")
        assert r.atom_virial_split == (kind in ("coulomb", "calculator"))
    if kind in ("zbl", "table", "sum"):
        assert np.abs(b.evaluate_atoms(_periodic()).atom_virial_eV).max() > 0


def test_a_pair_baseline_splits_each_pair_half_and_half():
    zbl = ZBLBaseline({(29, 29): (1.0, 2.5)})
    a = Atoms("Cu3", positions=[[0, 0, 0], [1.6, 0.3, 0.1], [9.0, 0, 0]])
    r = zbl.evaluate_atoms(a)
    D = a.positions[1] - a.positions[0]
    d = np.linalg.norm(D)
    h = 1e-6
    dE = (zbl.evaluate(Atoms("Cu2", positions=[[0, 0, 0], D * (1 + h / d)])).energy_eV
          - zbl.evaluate(Atoms("Cu2", positions=[[0, 0, 0], D * (1 - h / d)])).energy_eV) / (2 * h)
    pair = dE * np.outer(D, D) / d  # the pair's ∂E/∂ε
    assert np.allclose(r.atom_virial_eV[0], 0.5 * pair, rtol=1e-6, atol=0)
    assert np.allclose(r.atom_virial_eV[1], 0.5 * pair, rtol=1e-6, atol=0)
    assert np.all(r.atom_virial_eV[2] == 0)
    both = SumBaseline([E0Baseline({"Cu": 1.0}), zbl]).evaluate_atoms(a)
    assert np.array_equal(both.atom_virial_eV, r.atom_virial_eV) and not both.atom_virial_split


@pytest.mark.parametrize("kind", ["coulomb", "calculator"])
def test_shares_sum_with_every_baseline_kind(alloy_model, kind):
    base = _baselines(alloy_model)[kind]
    state = dataclasses.replace(alloy_model.state_, baseline=SumBaseline([alloy_model.state_.baseline, base]))
    for a in _frames_for_baselines():
        shares = _check_sum(state, a, _partitions(a, seed=1)[0])
        assert shares[-1].baseline_atom_virial_split and not shares[0].baseline_atom_virial_split


# ------------------------------------------------------------ uncertainty
def test_share_local_energy_std_and_force_std(alloy_model):
    a = _periodic()
    state = alloy_model.state_
    p = alloy_model.predict([a], uncertainty=["local_energy", "forces"])[0]
    parts = _partitions(a, seed=2)[0]
    stds = [predict_share(state, a, c, baseline=False, uncertainty="local_energy").local_energy_std_eV for c in parts]
    for c, s in zip(parts, stds):
        off = np.setdiff1d(np.arange(len(a)), c)
        assert np.all(s[off] == 0)
    # the variances are differences of nearly equal numbers (docs: Uncertainties): equal to ~1e-6
    assert np.allclose(sum(stds), p.local_energy_std, rtol=1e-6, atol=0)
    s = predict_share(state, a, parts[0], baseline=False, uncertainty=["forces", "local_energy"])
    assert np.allclose(s.forces_std_eV_per_A, np.linalg.norm(p.forces_std, axis=1), rtol=1e-9, atol=0)
    assert predict_share(state, a, parts[0], baseline=False).local_energy_std_eV is None


# ------------------------------------------------------------------ edges
def test_empty_share_and_the_baseline_alone(alloy_model):
    a = _periodic()
    state = alloy_model.state_
    s = predict_share(state, a, [], baseline=False)
    assert not np.any(s.energies_eV) and not np.any(s.forces_eV_per_A) and not np.any(s.atom_virial_eV)
    b = predict_share(state, a, np.array([], dtype=int), baseline=True)
    ref = state.baseline.evaluate(a)
    assert np.allclose(b.energies_eV, ref.local_energy_eV, rtol=0, atol=1e-12)
    assert np.allclose(b.forces_eV_per_A, ref.forces_eV_per_A, rtol=0, atol=1e-12)
    _close(b.virial_eV, -ref.virial_eV, "baseline virial")


@pytest.mark.parametrize("centres, uncertainty, match", [
    ([0, 99], None, "atom index 99 is outside"),
    ([1, 2, 1], None, "atom index 1 is given more than once"),
    ([0.0, 1.0], None, "integers"),
    ([0], "energy", "total-energy std"),
    ([0], True, "total-energy std"),
    ([0], "bogus", "bogus"),
])
def test_bad_share_requests_are_refused_by_name(alloy_model, centres, uncertainty, match):
    with pytest.raises(InputError, match=match):
        predict_share(alloy_model.state_, _periodic(), centres, baseline=False, uncertainty=uncertainty)
