"""Physics of the site terms (distance_2b, angle_3b) against their definitions.

The references here are written from the definitions (brute-force sites over
explicit periodic images, the cutoff function and the squared-exponential
kernel), not from the term's code: energies, local energies and prior
covariances are compared with them, gradients and virials with finite
differences of the energy, force variances with mixed finite differences of
the prior covariance.
"""
from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from gapfit.errors import InputError
from gapfit.terms import sites as sites_module
from gapfit.terms.base import VOIGT
from gapfit.terms.sites import Angle3b, Distance2b

TERMS = {"2b": Distance2b, "3b": Angle3b}
# smaller sparse sets than the defaults: the physics does not depend on them
FAST = {"2b": dict(n_sparse=12), "3b": dict(n_sparse=40)}


def _nacl():
    a = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    a.rattle(0.1, seed=3)
    return a


def _si_primitive():
    # 2 atoms, lattice vectors 3.84 Å < cutoff: sites with periodic images of
    # the atom itself, and a non-orthogonal cell for the virial
    a = bulk("Si", "diamond", a=5.43)
    a.rattle(0.1, seed=4)
    return a


def _ethanol():
    a = molecule("CH3CH2OH")
    a.rattle(0.05, seed=5)
    return a


STRUCTURES = {"nacl": _nacl, "si2": _si_primitive, "ethanol": _ethanol}
CASES = [(t, s) for t in TERMS for s in STRUCTURES]


def _setup(kind, frames, seed=0, **settings):
    """A term bound to the frames' species, sparse points from them, δ set, random weights."""
    term = TERMS[kind](**{**FAST[kind], **settings})
    term.check_settings()
    term.bind(sorted({int(z) for f in frames for z in f.numbers}))
    term.select_sparse([term.compute(frames, gradients=False)], seed=seed)
    term.set_delta(1.3)
    alpha = np.random.default_rng(seed + 11).normal(size=term.n_columns)
    return term, alpha


def _predict(term, atoms, alpha, forces=True, virial=True):
    return term.predict(term.compute([atoms], gradients=forces or virial)[0], alpha, forces=forces,
                        virial=virial)


def _energy(term, atoms, alpha):
    return float(_predict(term, atoms, alpha, forces=False, virial=False).local_energy_eV.sum())


# ------------------------------------------------------------- references
def _fc(r, c, w):
    r = np.asarray(r, float)
    out = np.where(r <= c - w, 1.0, 0.5 * (1 + np.cos(np.pi * (r - c + w) / w)))
    return np.where(r >= c, 0.0, out)


def _ref_sites(term, atoms):
    """Sites from the definitions, over explicit images: list of (key, t, w, owner, atoms)."""
    c, wd = term.cutoff, term.cutoff_transition_width
    pos, Z, n = atoms.get_positions(), atoms.numbers, len(atoms)
    if atoms.pbc.all():
        cell = atoms.cell.array
        heights = atoms.get_volume() / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        m = np.ceil(c / heights).astype(int) + 1
        shifts = np.array(list(itertools.product(*[range(-k, k + 1) for k in m]))) @ cell
    else:
        shifts = np.zeros((1, 3))
    sites = []
    for i in range(n):
        vec = (pos[None, :, :] + shifts[:, None, :] - pos[i]).reshape(-1, 3)
        idx = np.tile(np.arange(n), len(shifts))
        r = np.linalg.norm(vec, axis=1)
        keep = (r > 1e-9) & (r < c)
        idx, vec, r = idx[keep], vec[keep], r[keep]
        if isinstance(term, Distance2b):
            # each unordered pair once in E; written as two halves, one per atom
            for j, rr in zip(idx, r):
                key = (min(Z[i], Z[j]), max(Z[i], Z[j]))
                sites.append((key, np.array([rr]), 0.5 * float(_fc(rr, c, wd)), i, {i, int(j)}))
        else:
            for a, b in itertools.combinations(range(len(idx)), 2):
                ra, rb = r[a], r[b]
                t = np.array([ra + rb, (ra - rb) ** 2, np.linalg.norm(vec[b] - vec[a])])
                key = (Z[i], min(Z[idx[a]], Z[idx[b]]), max(Z[idx[a]], Z[idx[b]]))
                sites.append((key, t, float(_fc(ra, c, wd) * _fc(rb, c, wd)), i, {i, int(idx[a]), int(idx[b])}))
    return sites


def _k(term, t1, t2):
    d2 = ((t1[:, None, :] - t2[None, :, :]) ** 2).sum(-1)
    return term.delta_eV ** 2 * np.exp(-d2 / (2 * term.theta ** 2))


def _ref_cov(term, s1, s2):
    """Σ_{s ∈ s1, s' ∈ s2, same key} w w' k(t, t')."""
    total = 0.0
    for key in {s[0] for s in s1} & {s[0] for s in s2}:
        a = [s for s in s1 if s[0] == key]
        b = [s for s in s2 if s[0] == key]
        wa, wb = np.array([s[2] for s in a]), np.array([s[2] for s in b])
        total += wa @ _k(term, np.array([s[1] for s in a]), np.array([s[1] for s in b])) @ wb
    return float(total)


def _ref_energies(term, atoms, alpha):
    """Local energies Σ_{s owned} w g(t) with g = Σ_m α_m k(t, X_m) from the fitted sparse points."""
    state, arrays = term.fitted_state(), term.fitted_arrays()
    g_of = {}
    off = 0
    for key, cnt in zip(state["keys"], state["counts"]):
        X = arrays["sparse_" + "_".join(map(str, key))]
        g_of[tuple(key)] = (X, alpha[off:off + cnt])
        off += cnt
    local = np.zeros(len(atoms))
    for key, t, w, owner, _ in _ref_sites(term, atoms):
        X, a = g_of[tuple(int(z) for z in key)]
        if len(X):
            local[owner] += w * float(_k(term, t[None], X)[0] @ a)
    return local


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("kind, struct", CASES)
def test_prediction_equals_rows_and_definition(kind, struct):
    atoms = STRUCTURES[struct]()
    term, alpha = _setup(kind, [atoms])
    desc = term.compute([atoms], gradients=True)[0]
    rows = term.design_rows([desc], forces=True, virial=True, local=True)
    p = term.predict(desc, alpha, forces=True, virial=True)

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * max(np.abs(b).max(), 1e-300))

    assert rows.energy.shape == (1, term.n_columns)
    close(rows.energy @ alpha, [p.local_energy_eV.sum()])
    close(rows.local @ alpha, p.local_energy_eV)
    close(rows.gradient @ alpha, p.gradient_eV_per_A.ravel())
    if atoms.pbc.all():
        close(rows.virial[0] @ alpha, np.array([p.virial_eV[a, b] for a, b in VOIGT]))
        np.testing.assert_array_equal(p.virial_eV, p.virial_eV.T)
    else:
        assert p.virial_eV is None
        assert not np.any(rows.virial)
    # the energy is the definition's (brute-force sites over images)
    close(p.local_energy_eV, _ref_energies(term, atoms, alpha))
    assert abs(p.local_energy_eV.sum()) > 1e-3  # not trivially zero


def test_rows_of_a_chunk_stack_the_frames():
    frames = [_nacl(), _si_primitive(), _ethanol()]
    for kind in TERMS:
        term, alpha = _setup(kind, frames)
        descs = term.compute(frames, gradients=True)
        rows = term.design_rows(descs, forces=True, virial=True, local=True)
        np.testing.assert_array_equal(rows.atom_start, [0, 8, 10, 19])
        for f, d in enumerate(descs):
            one = term.design_rows([d], forces=True, virial=True, local=True)
            a, b = rows.atom_start[f], rows.atom_start[f + 1]
            np.testing.assert_allclose(rows.energy[f], one.energy[0], rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(rows.gradient[3 * a:3 * b], one.gradient, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(rows.local[a:b], one.local, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(rows.virial[f], one.virial[0], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kind, struct", CASES)
def test_gradient_and_virial_are_energy_derivatives(kind, struct):
    atoms = STRUCTURES[struct]()
    term, alpha = _setup(kind, [atoms])
    p = _predict(term, atoms, alpha)
    h = 1e-5
    fd = np.zeros((len(atoms), 3))
    for j in range(len(atoms)):
        for x in range(3):
            a1, a2 = atoms.copy(), atoms.copy()
            a1.positions[j, x] += h
            a2.positions[j, x] -= h
            fd[j, x] = (_energy(term, a1, alpha) - _energy(term, a2, alpha)) / (2 * h)
    g = p.gradient_eV_per_A
    assert np.abs(fd - g).max() <= 1e-6 * np.abs(g).max()
    if not atoms.pbc.all():
        return
    V = np.zeros((3, 3))
    for a, b in itertools.product(range(3), repeat=2):
        es = []
        for sgn in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] += sgn * h / 2
            eps[b, a] += sgn * h / 2
            s = atoms.copy()
            s.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            es.append(_energy(term, s, alpha))
        V[a, b] = (es[0] - es[1]) / (2 * h)
    assert np.abs(V - p.virial_eV).max() <= 1e-6 * np.abs(p.virial_eV).max()


def _rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("kind, struct", CASES)
def test_invariances(kind, struct):
    atoms = STRUCTURES[struct]()
    term, alpha = _setup(kind, [atoms])
    p = _predict(term, atoms, alpha)
    E = p.local_energy_eV.sum()
    tol = 1e-10 * max(np.abs(p.local_energy_eV).max(), 1e-12)

    R = _rotation(7)
    rot = atoms.copy()
    rot.positions = atoms.positions @ R.T
    if atoms.pbc.all():
        rot.set_cell(atoms.cell.array @ R.T, scale_atoms=False)
    pr = _predict(term, rot, alpha)
    np.testing.assert_allclose(pr.local_energy_eV, p.local_energy_eV, rtol=0, atol=tol)
    gtol = 1e-9 * np.abs(p.gradient_eV_per_A).max()
    np.testing.assert_allclose(pr.gradient_eV_per_A, p.gradient_eV_per_A @ R.T, rtol=0, atol=gtol)
    if atoms.pbc.all():
        np.testing.assert_allclose(pr.virial_eV, R @ p.virial_eV @ R.T, rtol=0,
                                   atol=1e-9 * np.abs(p.virial_eV).max())

    tr = atoms.copy()
    tr.positions += np.array([0.37, -1.21, 2.9])
    np.testing.assert_allclose(_predict(term, tr, alpha).local_energy_eV, p.local_energy_eV, rtol=0, atol=tol)

    # permutation of like atoms: exchange positions within each species
    perm = np.arange(len(atoms))
    rng = np.random.default_rng(8)
    for z in np.unique(atoms.numbers):
        idx = np.flatnonzero(atoms.numbers == z)
        perm[idx] = rng.permutation(idx)
    assert np.any(perm != np.arange(len(atoms)))
    pa = atoms.copy()
    pa.positions = atoms.positions[perm]
    pp = _predict(term, pa, alpha)
    np.testing.assert_allclose(pp.local_energy_eV, p.local_energy_eV[perm], rtol=0, atol=tol)
    np.testing.assert_allclose(pp.gradient_eV_per_A, p.gradient_eV_per_A[perm], rtol=0, atol=gtol)
    assert abs(pp.local_energy_eV.sum() - E) <= tol * len(atoms)


def _dimer(r):
    return Atoms("Si2", positions=[[0, 0, 0], [r, 0.0, 0.0]])


def _trimer(r):
    # centre 0, neighbour 1 at 2.3 Å, atom 2 at r from 0 and > 6 Å from 1:
    # the only triplet is (0; 1, 2), weighted by fc(r)
    return Atoms("Si3", positions=[[0, 0, 0], [2.3, 0, 0], [-r * np.cos(0.2), r * np.sin(0.2), 0]])


@pytest.mark.parametrize("kind", TERMS)
def test_continuous_at_the_cutoff(kind):
    make = _dimer if kind == "2b" else _trimer
    term, alpha = _setup(kind, [make(r) for r in (2.2, 2.8, 3.3, 3.7, 3.95)])
    c = term.cutoff
    # a priori bound on |g| from the kernel: δ² Σ|α|
    bound = term.delta_eV ** 2 * np.abs(alpha).sum()
    for eps in (1e-3, 1e-5, 1e-7):
        out = _predict(term, make(c + eps), alpha, virial=False)
        assert out.local_energy_eV.sum() == 0.0 and not np.any(out.gradient_eV_per_A)
        inn = _predict(term, make(c - eps), alpha, virial=False)
        # fc = O(eps²), fc' = O(eps)
        assert abs(inn.local_energy_eV.sum()) <= 3 * eps ** 2 * bound
        assert np.abs(inn.gradient_eV_per_A).max() <= 10 * eps * bound
    # and the term does something inside the cutoff
    assert abs(_energy(term, make(c - 0.5), alpha)) > 1e-6 * bound


@pytest.mark.parametrize("kind, struct", CASES)
def test_prior_variances_match_the_covariance(kind, struct):
    atoms = STRUCTURES[struct]()
    term, _ = _setup(kind, [atoms])
    desc = term.compute([atoms], gradients=True)[0]
    pv = term.prior_variance(desc, forces=True)
    sites = _ref_sites(term, atoms)
    ref_E = _ref_cov(term, sites, sites)
    assert pv.energy_eV2 == pytest.approx(ref_E, rel=1e-10)
    for i in range(len(atoms)):
        own = [s for s in sites if s[3] == i]
        assert pv.local_eV2[i] == pytest.approx(_ref_cov(term, own, own), rel=1e-10, abs=1e-12)

    # Var F_jx = ∂²Cov(E(r), E(r'))/∂r_jx∂r'_jx at r = r'. Only sites touching
    # atom j depend on r_j, so the others drop out of the mixed difference
    # exactly; leaving them out keeps the rounding error small. Central mixed
    # differences at h and 2h, Richardson-extrapolated: error O(h⁴).
    def mixed(j, x, h):
        moved = {}
        for sgn in (1, -1):
            a = atoms.copy()
            a.positions[j, x] += sgn * h
            moved[sgn] = [s for s in _ref_sites(term, a) if j in s[4]]
        return (_ref_cov(term, moved[1], moved[1]) - 2 * _ref_cov(term, moved[1], moved[-1])
                + _ref_cov(term, moved[-1], moved[-1])) / (4 * h * h)

    h = 1e-3
    rng = np.random.default_rng(1)
    for _ in range(4):
        j, x = int(rng.integers(len(atoms))), int(rng.integers(3))
        fd = (4 * mixed(j, x, h) - mixed(j, x, 2 * h)) / 3
        assert pv.forces_eV2_per_A2[j, x] == pytest.approx(fd, rel=1e-5, abs=1e-5 * pv.forces_eV2_per_A2.max())
    assert np.all(pv.forces_eV2_per_A2 >= 0) and np.all(pv.local_eV2 >= 0)


@pytest.mark.parametrize("kind, theta", [("3b", 1.0), ("2b", 0.05)])
@pytest.mark.parametrize("tiles", [(16, 40), None])
def test_energy_variance_over_tiles_and_pruning(kind, theta, tiles, monkeypatch):
    # 224 (2b) and 960 (3b) sites of one key: several tiles of the pair sum;
    # θ = 0.05 Å spreads the 2b sites over ~60 θ, so distant tiles are skipped
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.1, seed=6)
    if tiles:
        monkeypatch.setattr(sites_module, "_TILE_ROWS", tiles[0])
        monkeypatch.setattr(sites_module, "_TILE_COLS", tiles[1])
    term, _ = _setup(kind, [atoms], theta=theta)
    pv = term.prior_variance(term.compute([atoms], gradients=False)[0], forces=False)
    sites = _ref_sites(term, atoms)
    assert len(sites) > 200
    assert pv.energy_eV2 == pytest.approx(_ref_cov(term, sites, sites), rel=1e-10)


def test_local_variance_of_a_single_owner_is_the_energy_variance():
    # three neighbours of atom 0 at 2.6 Å, 120° apart (4.5 Å from each other):
    # all three triplets are owned by atom 0
    pos = [[0, 0, 0]] + [[2.6 * np.cos(a), 2.6 * np.sin(a), 0.1 * k] for k, a in enumerate((0, 2.1, 4.2))]
    atoms = Atoms("Si4", positions=pos)
    term, _ = _setup("3b", [atoms])
    desc = term.compute([atoms], gradients=False)[0]
    assert desc.n_sites == 3
    pv = term.prior_variance(desc, forces=False)
    assert pv.local_eV2[0] == pytest.approx(pv.energy_eV2, rel=1e-12)
    np.testing.assert_array_equal(pv.local_eV2[1:], 0.0)
    # three correlated sites: more than each alone, at most fully correlated
    w = _fc(2.6, term.cutoff, term.cutoff_transition_width) ** 2
    assert 3 * w ** 2 * term.delta_eV ** 2 < pv.energy_eV2 <= 9 * w ** 2 * term.delta_eV ** 2 + 1e-12
    assert pv.forces_eV2_per_A2 is None


@pytest.mark.parametrize("kind", TERMS)
def test_fitted_state_round_trip_and_seeded_selection(kind):
    frames = [_nacl(), _ethanol()]
    term, alpha = _setup(kind, frames)
    state = json.loads(json.dumps(term.fitted_state()))
    buf = io.BytesIO()
    np.savez(buf, **term.fitted_arrays())
    buf.seek(0)
    arrays = dict(np.load(buf))
    assert len(arrays) == len(state["keys"])
    new = TERMS[kind](**term.settings())
    new.restore(state, arrays)
    assert new.n_columns == term.n_columns and new.delta_eV == term.delta_eV
    for a, b in zip(new.kmm_blocks(), term.kmm_blocks()):
        np.testing.assert_array_equal(a, b)
    for f in frames:
        p1, p2 = _predict(term, f, alpha), _predict(new, f, alpha)
        np.testing.assert_array_equal(p1.local_energy_eV, p2.local_energy_eV)
        np.testing.assert_array_equal(p1.gradient_eV_per_A, p2.gradient_eV_per_A)

    # same data and seed, different chunking: same points
    other = TERMS[kind](**term.settings())
    other.bind(term.species)
    descs = other.compute(frames, gradients=False)
    other.select_sparse(iter([[d] for d in descs]), seed=0)
    for k, v in term.fitted_arrays().items():
        np.testing.assert_array_equal(other.fitted_arrays()[k], v)

    # damaged state: the entry is named
    name = next(k for k, v in arrays.items() if len(v))
    bad = dict(arrays)
    bad[name] = arrays[name][:-1]
    with pytest.raises(ValueError, match=name):
        TERMS[kind](**term.settings()).restore(state, bad)
    bad[name] = arrays[name].copy()
    bad[name][0, 0] = np.nan
    with pytest.raises(ValueError, match=name):
        TERMS[kind](**term.settings()).restore(state, bad)
    del bad[name]
    with pytest.raises(KeyError, match=name):
        TERMS[kind](**term.settings()).restore(state, bad)


def test_bounded_candidate_sample():
    # a sample of at most `limit` sites per key, the same whatever the chunking
    frames = [_si_primitive(), _nacl(), _nacl()]
    frames[2].rattle(0.05, seed=9)
    picks = []
    for chunking in ([frames], [[f] for f in frames], [frames[:2], frames[2:]]):
        term = Angle3b(n_sparse=100, sparse_method="random")
        term.bind([11, 14, 17])
        summary = term.select_sparse(iter([term.compute(c, gradients=False) for c in chunking]), seed=3, limit=30)
        assert summary["blocks"]["14_14_14"]["candidates"] == 240
        picks.append(term.fitted_arrays())
        for X in picks[-1].values():
            assert len(X) <= 30
    # (fewer than 30: the sample's exact duplicates, lattice-symmetric triplets, are dropped)
    assert 10 < len(picks[0]["sparse_14_14_14"]) <= 30
    for other in picks[1:]:
        for k, v in picks[0].items():
            np.testing.assert_array_equal(other[k], v)


def test_sparse_methods():
    atoms = _nacl()
    # 2b uniform: evenly spaced from 0.1 Å below the shortest pair distance to the cutoff
    term, _ = _setup("2b", [atoms])
    d = atoms.get_all_distances(mic=True)
    na, cl = atoms.numbers == 11, atoms.numbers == 17
    X = term.fitted_arrays()["sparse_11_17"][:, 0]
    assert X[0] == pytest.approx(d[np.ix_(na, cl)].min() - 0.1, abs=1e-12)
    assert X[-1] == pytest.approx(term.cutoff) and len(X) == term.n_sparse
    np.testing.assert_allclose(np.diff(X), np.diff(X)[0], rtol=1e-12)
    # 3b: points are distinct sites of the data, as many as asked; random differs with the seed
    for method in ("fps", "random"):
        t1, _ = _setup("3b", [atoms], sparse_method=method, n_sparse=25)
        t2, _ = _setup("3b", [atoms], sparse_method=method, n_sparse=25, seed=5)
        desc = t1.compute([atoms], gradients=False)[0]
        for key, X in t1.fitted_arrays().items():
            assert len(np.unique(X, axis=0)) == len(X) == 25
            dist = np.abs(X[:, None, :] - desc.t[None, :, :]).sum(-1).min(1)
            assert np.all(dist == 0.0)
        assert any(not np.array_equal(a, t2.fitted_arrays()[k]) for k, a in t1.fitted_arrays().items())
    # fewer distinct candidates than asked: all of them
    t3, _ = _setup("3b", [_trimer(3.0)], n_sparse=200)
    assert t3.n_columns == 1


@pytest.mark.parametrize("kind", TERMS)
@pytest.mark.parametrize("name, value", [("cutoff", 0.0), ("cutoff", 60.0), ("cutoff", "5"),
                                         ("cutoff_transition_width", 0.0), ("cutoff_transition_width", 9.0),
                                         ("theta", -1.0), ("theta", float("nan")), ("delta", 0.0),
                                         ("n_sparse", 0), ("n_sparse", 2.5), ("n_sparse", True),
                                         ("sparse_method", "kmeans")])
def test_check_settings_names_the_bad_setting(kind, name, value):
    term = TERMS[kind](**{name: value})
    with pytest.raises(InputError) as err:
        term.check_settings()
    assert err.value.param == name and name in str(err.value)


def test_settings_defaults_and_unknown():
    assert Distance2b().to_dict() == {"type": "distance_2b", "cutoff": 5.0, "cutoff_transition_width": 1.0,
                                      "theta": 0.5, "delta": None, "n_sparse": 30, "sparse_method": "uniform"}
    assert Angle3b().to_dict() == {"type": "angle_3b", "cutoff": 4.0, "cutoff_transition_width": 1.0,
                                   "theta": 1.0, "delta": None, "n_sparse": 200, "sparse_method": "fps"}
    assert Angle3b().cutoff_A == 4.0
    with pytest.raises(InputError) as err:
        Angle3b(cutof=3.0)
    assert err.value.param == "cutof"
    with pytest.raises(InputError, match="3b|angle_3b") as err:
        Angle3b(sparse_method="uniform").check_settings()
    assert err.value.param == "sparse_method"


@pytest.mark.parametrize("kind", TERMS)
def test_frames_without_sites_and_bad_input(kind):
    term, alpha = _setup(kind, [_nacl()])
    lone = Atoms("NaCl", positions=[[0, 0, 0], [9.0, 0, 0]])  # nothing within the cutoff
    desc = term.compute([lone], gradients=True)[0]
    assert desc.n_sites == 0
    p = term.predict(desc, alpha, forces=True, virial=True)
    np.testing.assert_array_equal(p.local_energy_eV, 0.0)
    np.testing.assert_array_equal(p.gradient_eV_per_A, 0.0)
    rows = term.design_rows([desc], forces=True, virial=True, local=True)
    assert not np.any(rows.energy) and not np.any(rows.gradient) and not np.any(rows.local)
    pv = term.prior_variance(desc, forces=True)
    assert pv.energy_eV2 == 0.0 and not np.any(pv.local_eV2) and not np.any(pv.forces_eV2_per_A2)
    with pytest.raises(InputError, match="8"):
        term.compute([Atoms("NaO", positions=[[0, 0, 0], [2.0, 0, 0]])], gradients=False)
    no_grad = term.compute([_nacl()], gradients=False)[0]
    with pytest.raises(ValueError, match="gradients"):
        term.predict(no_grad, alpha, forces=True, virial=False)
    with pytest.raises(ValueError, match="shape"):
        term.predict(no_grad, alpha[:-1], forces=False, virial=False)
