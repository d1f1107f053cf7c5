"""Charges learned from energies and forces (charges="learn"): the solver on a known quadratic, and a fit on data
made with known charges."""
import numpy as np
import pytest

from gapfit.errors import InputError
from gapfit.fitting.charges import PairSettings, charge_constraints, fix_sign, solve_charges
from gapfit.fitting.survey import Survey


def _problem(q_true, pairs, species, n_rows=400, noise=1e-3, seed=0):
    """T of [b0 | C] whose targets are C w(q_true) plus noise: b(q) = b0 - C w(q) vanishes at q_true."""
    rng = np.random.default_rng(seed)
    pos = {z: i for i, z in enumerate(species)}
    w = np.array([q_true[pos[a]] * q_true[pos[b]] for a, b in pairs])
    C = rng.standard_normal((n_rows, len(pairs)))
    b0 = C @ w + noise * rng.standard_normal(n_rows)
    T = np.linalg.qr(np.column_stack([b0, C]), mode="r")
    return T


def test_solver_recovers_known_charges_with_the_electronegative_species_negative():
    species = (11, 17)
    pairs = PairSettings(species).pairs
    T = _problem(np.array([0.9, -0.9]), pairs, species)
    N, Q = np.array([[1.0, 1.0]]), np.array([0.0])
    q, std, best = solve_charges(T, species, pairs, N, Q, seed=0)
    q = fix_sign(q, species, Q)
    assert q == pytest.approx([0.9, -0.9], abs=5 * std.max() + 1e-6)
    assert np.all(std > 0) and np.all(std < 0.05)
    assert best > -0.5 * T[0, 0] ** 2  # better than no charges


def test_solver_four_species_two_compositions():
    """NaCl in water: two compositions fix q_Cl = -q_Na and q_H = -q_O / 2; the rest comes from the data."""
    species = (1, 8, 11, 17)
    pairs = PairSettings(species).pairs
    q_true = np.array([0.417, -0.834, 1.0, -1.0])
    T = _problem(q_true, pairs, species, n_rows=2000, noise=1e-4, seed=1)
    N = np.array([[96.0, 48, 8, 8], [104.0, 52, 6, 6]])
    Q = np.zeros(2)
    q, std, _ = solve_charges(T, species, pairs, N, Q, seed=3)
    q = fix_sign(q, species, Q)
    assert N @ q == pytest.approx(Q, abs=1e-10)
    assert q == pytest.approx(q_true, abs=1e-3)


def test_charged_frames_fix_the_sign_and_inconsistent_charges_are_refused():
    info = Survey()
    info.composition = [{1: 2, 6: 10}, {1: 3, 6: 10}, {1: 3, 6: 10}]
    info.charge = [0.0, 1.0, 1.0]
    N, Q = charge_constraints(info)
    assert N.tolist() == [[2, 10], [3, 10]] and Q.tolist() == [0.0, 1.0]
    assert fix_sign(np.array([1.0, -0.2]), (1, 6), Q).tolist() == [1.0, -0.2]  # a charged frame: kept
    info.charge = [0.0, 1.0, 0.0]
    with pytest.raises(InputError, match="different total charges"):
        charge_constraints(info)


def test_compositions_that_fix_the_charges_are_refused_before_any_pass(monkeypatch):
    """C10H2 (0) and C10H3+ (+1) fix q_H = +1 and q_C = -0.2: the fit says so, with those charges, before it
    computes a single descriptor."""
    import gapfit
    from ase import Atoms
    from gapfit.fitting import charges as charges_module
    from gapfit.fitting import pipeline
    from gapfit.fitting.charges import constrained_charges
    info = Survey()
    info.composition = [{1: 2, 6: 10}, {1: 3, 6: 10}]
    info.charge = [0.0, 1.0]
    N, Q = charge_constraints(info)
    with pytest.raises(InputError, match=r"H: \+1, C: -0\.2"):
        constrained_charges(N, Q, [1, 6])
    q_p, Z = constrained_charges(N[:1], Q[:1], [1, 6])  # one composition leaves one direction free
    assert Z.shape == (2, 1) and np.allclose(N[:1] @ q_p, Q[:1]) and np.allclose(N[:1] @ Z, 0)

    def no_pass(*args, **kwargs):
        raise AssertionError("a pass over the data started before the refusal")
    monkeypatch.setattr(pipeline.FitRun, "start", no_pass)
    monkeypatch.setattr(charges_module, "learn_charges", no_pass)
    rng = np.random.default_rng(0)
    frames = []
    for n_h, q in ((2, 0.0), (3, 1.0)):
        a = Atoms("C10H%d" % n_h, positions=np.c_[np.arange(10 + n_h) * 1.3, rng.normal(0, 0.05, (10 + n_h, 2))])
        a.info.update(charge=q, energy=-100.0)
        a.arrays["forces"] = np.zeros((len(a), 3))
        frames.append(a)
    with pytest.raises(InputError, match="nothing to learn"):
        gapfit.GAP(charges="learn", energy_key="energy", forces_key="forces").fit(frames)


def _ionic_frames(n_frames=16, seed=0):
    """Rock-salt cells (8 and 16 atoms) rattled and strained, labelled by point charges ±0.8 plus a Born–Mayer
    repulsion between unlike ions: a reference whose charges are known."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    import gapfit
    rng = np.random.default_rng(seed)
    coulomb = gapfit.Coulomb(charges={"Na": 0.8, "Cl": -0.8})
    out = []
    for k in range(n_frames):
        atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
        if k % 2:
            atoms = atoms.repeat((2, 1, 1))
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell @ strain, scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        e, f, s = _born_mayer(atoms)
        atoms.calc = coulomb
        e += atoms.get_potential_energy()
        f = f + atoms.get_forces()
        s = s + atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        out.append(atoms)
    return out


def _born_mayer(atoms, A=1500.0, rho=0.32, cutoff=6.0):
    """Energy, forces and stress (ASE sign) of A·exp(-r/ρ) between unlike ions, shifted and force-shifted to
    vanish smoothly at ``cutoff`` Å (a short-range reference made outside gapfit)."""
    from ase.neighborlist import neighbor_list
    i, j, d, D = neighbor_list("ijdD", atoms, cutoff)
    unlike = atoms.numbers[i] != atoms.numbers[j]
    i, j, d, D = i[unlike], j[unlike], d[unlike], D[unlike]
    shift = A * np.exp(-cutoff / rho)
    e_pair = A * np.exp(-d / rho) - shift - (d - cutoff) * (-A / rho * np.exp(-cutoff / rho))
    de = -A / rho * np.exp(-d / rho) + A / rho * np.exp(-cutoff / rho)
    energy = 0.5 * e_pair.sum()
    g = (0.5 * de / d)[:, None] * D  # dE/dD of each ordered pair
    forces = np.zeros((len(atoms), 3))
    np.add.at(forces, i, g)
    np.add.at(forces, j, -g)
    virial = D.T @ g
    sigma = virial / atoms.get_volume()
    stress = np.array([sigma[0, 0], sigma[1, 1], sigma[2, 2], sigma[1, 2], sigma[0, 2], sigma[0, 1]])
    return energy, forces, stress


def test_a_fit_learns_the_charges_the_data_were_made_with():
    import gapfit
    frames = _ionic_frames()
    model = gapfit.GAP(terms=[{"type": "distance_2b", "cutoff": 4.5, "n_sparse": 20}], charges="learn",
                       calibration_fraction=0.0, hygiene=False).fit(frames)
    learned = model.training_summary_["charges"]
    assert learned["learned_e"]["Na"] == pytest.approx(0.8, rel=0.05)
    assert learned["learned_e"]["Cl"] == pytest.approx(-0.8, rel=0.05)
    assert 0 < learned["std_e"]["Na"] < 0.05
    coulomb = [p for p in model.state_.baseline.parts if p.type == "coulomb"]
    assert len(coulomb) == 1  # the learned charges are the model's baseline
    # the model's Coulomb part is the reference's: its energy on a new cell equals gapfit.Coulomb's with them
    test = _ionic_frames(1, seed=7)[0]
    ref = gapfit.Coulomb(charges={"Na": learned["learned_e"]["Na"], "Cl": learned["learned_e"]["Cl"]})
    assert coulomb[0].evaluate(test, forces=False, virial=False).energy_eV == \
        pytest.approx(ref.get_potential_energy(test), rel=1e-9)


def test_frames_without_initial_charges_are_refused_by_the_survey():
    """With charges read from the frames, a frame without them fails before any pass, naming the field."""
    import gapfit
    frames = _ionic_frames(4)
    for a in frames[:3]:
        a.set_initial_charges(np.where(a.numbers == 11, 0.8, -0.8))
    frames[3].arrays.pop("initial_charges", None)
    with pytest.raises(InputError, match="initial_charges"):
        gapfit.GAP(charges="initial_charges").check_data(frames)
    frames[3].set_initial_charges(np.where(frames[3].numbers == 11, 0.8, -0.8))
    assert gapfit.GAP(charges="initial_charges").check_data(frames)["n_frames"] == 4


def test_with_optimize_the_charges_delta_and_sigma_are_one_joint_maximum():
    """optimize=True: the charges are learned with δ and σ, and the result is a joint stationary point: the
    refit over the learned charges, optimising δ and σ again from the defaults, lands where the joint search
    did, and log p never fell on the way."""
    import gapfit
    frames = _ionic_frames()
    model = gapfit.GAP(terms=[{"type": "distance_2b", "cutoff": 4.5, "n_sparse": 20}], charges="learn",
                       optimize=True, calibration_fraction=0.0, hygiene=False).fit(frames)
    learned = model.training_summary_["charges"]
    joint = learned["joint"]
    assert joint["rounds"] >= 1
    lml = np.array(joint["log_marginal_likelihood"])
    assert np.all(np.diff(lml) > -1e-6 * np.abs(lml[1:]))  # block-coordinate ascent: never down
    assert learned["learned_e"]["Na"] == pytest.approx(0.8, rel=0.05)
    assert learned["learned_e"]["Cl"] == pytest.approx(-learned["learned_e"]["Na"], rel=1e-9)
    hyper = model.training_summary_["hyperparameters"]
    # the charges were learned against the targets the refit has (its e0 moves with them), so the refit's
    # own optimum of δ and σ at the learned charges is the joint one
    assert list(hyper["delta_eV"].values()) == pytest.approx(joint["delta_eV"], rel=1e-3)
    for group, sigma in joint["sigma"].items():
        assert hyper["sigma"][group] == pytest.approx(sigma, rel=1e-3)
