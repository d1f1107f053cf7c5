"""Electrostatics (gapfit.electrostatics, gapfit.coulomb): Madelung constants, exact derivatives,
an independent Ewald implementation (matscipy), the species-pair decomposition and invariances."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, make_supercell
from ase.calculators.calculator import PropertyNotImplementedError

from gapfit.coulomb import Coulomb
from gapfit.electrostatics import (K_E, EwaldParameters, coulomb, energy_scale_eV, ewald_parameters,
                                   species_pair_parts)
from gapfit.errors import InputError

# Madelung constants per ion pair, referred to the nearest-neighbour distance (to 12 digits; the
# 7-digit values 1.747565, 1.762675, 1.638055 differ from them by less than 3e-7 relative).
MADELUNG = {"rocksalt": 1.747564594633, "cesiumchloride": 1.762674773070, "zincblende": 1.638055053388}
CRYSTALS = {"rocksalt": ("NaCl", 5.64), "cesiumchloride": ("CsCl", 4.12), "zincblende": ("ZnS", 5.41)}
SHEAR = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])      # unimodular: same lattice, a triclinic cell


def _crystal(structure: str, cell: str) -> Atoms:
    formula, a = CRYSTALS[structure]
    if cell == "conventional":
        return bulk(formula, structure, a=a, cubic=True)
    prim = bulk(formula, structure, a=a)                  # fcc primitive (triclinic); CsCl's is cubic
    return make_supercell(prim, SHEAR) if structure == "cesiumchloride" else prim


def _nearest(atoms: Atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def _random_cell(n: int, seed: int, neutral: bool = True, spacing: float = 2.6) -> Tuple:
    """A triclinic periodic cell of n atoms (no two closer than ~1.5 Å) with random charges."""
    rng = np.random.default_rng(seed)
    cell = np.eye(3) * (n * spacing ** 3) ** (1 / 3) + rng.normal(0.0, 0.15, (3, 3)) * (n * spacing ** 3) ** (1 / 3)
    atoms = Atoms(numbers=rng.choice([11, 17, 8], n), cell=cell, pbc=True)
    frac = []
    while len(frac) < n:                                  # rejection: keep atoms apart (point charges)
        f = rng.random(3)
        trial = Atoms(numbers=[1] * (len(frac) + 1), scaled_positions=frac + [f], cell=cell, pbc=True)
        if len(frac) == 0 or trial.get_distances(len(frac), range(len(frac)), mic=True).min() > 1.5:
            frac.append(f)
    atoms.set_scaled_positions(np.array(frac))
    q = rng.normal(size=n)
    if neutral:
        q -= q.mean()
    return atoms, q


# --------------------------------------------------------------------------- #
# 1. Madelung energies through the calculator
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("cell", ["primitive", "conventional"])
@pytest.mark.parametrize("structure", sorted(MADELUNG))
def test_madelung_energy_per_ion_pair(structure, cell):
    atoms = _crystal(structure, cell)
    cation, anion = sorted(set(atoms.get_chemical_symbols()), key=lambda s: s in ("Cl", "S"))
    atoms.calc = Coulomb(charges={cation: 1.0, anion: -1.0})
    per_pair = atoms.get_potential_energy() / (len(atoms) / 2)
    expected = -MADELUNG[structure] * K_E / _nearest(atoms)
    assert per_pair == pytest.approx(expected, rel=1e-6)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    # a perfect crystal: no forces, isotropic stress
    assert np.abs(atoms.get_forces()).max() < 1e-8
    s = atoms.get_stress()
    assert np.abs(s[3:]).max() < 1e-8 * np.abs(s[:3]).max() and np.ptp(s[:3]) < 1e-8 * np.abs(s[:3]).max()
    # the energy of point ions scales as 1/length: each diagonal virial is -E/3, stress = -E / (3 V)
    # (to 1e-6 at a tighter accuracy: the truncation error of a derivative is larger than the energy's)
    atoms.calc = Coulomb(charges={cation: 1.0, anion: -1.0}, accuracy=1e-9)
    assert atoms.get_stress()[0] == pytest.approx(-atoms.get_potential_energy() / (3 * atoms.get_volume()),
                                                  rel=1e-6)


def test_madelung_through_gapfit_namespace():
    import gapfit
    calc_class = getattr(gapfit, "Coulomb", None)
    if calc_class is None:
        pytest.skip("gapfit.Coulomb is not exported from gapfit/__init__.py yet")
    atoms = _crystal("rocksalt", "primitive")
    atoms.calc = calc_class(charges={"Na": 1, "Cl": -1})
    assert atoms.get_potential_energy() == pytest.approx(-MADELUNG["rocksalt"] * K_E / _nearest(atoms), rel=1e-6)


# --------------------------------------------------------------------------- #
# 2. forces and stress are the derivatives of the energy
# --------------------------------------------------------------------------- #

def _rattled_nacl() -> Tuple[Atoms, np.ndarray]:
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)          # 64 atoms
    atoms.rattle(0.1, seed=3)
    cell = atoms.cell.array.copy()
    cell[0, 1] += 0.7
    cell[2, 0] -= 0.4
    atoms.set_cell(cell, scale_atoms=True)
    return atoms, np.where(atoms.numbers == 11, 1.0, -1.0)


@pytest.mark.parametrize("accuracy", [1e-6, 1e-3])      # at 1e-3 the tapers of the cutoffs weigh 1e-3
@pytest.mark.parametrize("gaussian", [False, True], ids=["point", "gaussian"])
@pytest.mark.parametrize("screening", [None, (1.5, 4.5)], ids=["bare", "screened"])
def test_forces_and_stress_equal_finite_differences(gaussian, screening, accuracy):
    atoms, q = _rattled_nacl()
    widths = np.where(atoms.numbers == 11, 0.7, 1.1) if gaussian else None
    res = coulomb(atoms, q, widths, screening_A=screening, accuracy=accuracy)
    held = res.parameters                    # the derivatives are exact at fixed Ewald parameters

    def energy(a):
        return coulomb(a, q, widths, screening_A=screening, forces=False, virial=False, parameters=held).energy_eV

    h = 1e-4
    rng = np.random.default_rng(0)
    fd = []
    picked = [(int(i), int(c)) for i, c in zip(rng.choice(len(atoms), 8, replace=False), rng.integers(0, 3, 8))]
    for i, c in picked:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, c] += h
        minus.positions[i, c] -= h
        fd.append(-(energy(plus) - energy(minus)) / (2 * h))
    analytic = np.array([res.forces_eV_per_A[i, c] for i, c in picked])
    assert np.abs(np.array(fd) - analytic).max() <= 1e-6 * np.abs(res.forces_eV_per_A).max()

    e = 1e-5
    fd_virial = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            vals = []
            for sign in (1, -1):
                eps = np.eye(3)
                eps[a, b] += sign * e / (1 if a == b else 2)
                eps[b, a] += 0 if a == b else sign * e / 2
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ eps, scale_atoms=True)
                vals.append(energy(strained))
            fd_virial[a, b] = fd_virial[b, a] = (vals[0] - vals[1]) / (2 * e)
    assert np.abs(fd_virial - res.virial_eV).max() <= 1e-6 * np.abs(res.virial_eV).max()
    # the force sum of a periodic frame vanishes
    assert np.abs(res.forces_eV_per_A.sum(axis=0)).max() < 1e-10 * np.abs(res.forces_eV_per_A).max()


def test_calculator_stress_follows_strain_with_parameters_of_the_rule():
    """Through the calculator the Ewald parameters follow the volume; the stress still matches the
    strain derivative of the energy to the accuracy target."""
    atoms, _ = _rattled_nacl()
    atoms.calc = Coulomb(charges={"Na": 1, "Cl": -1})
    stress = atoms.get_stress(voigt=False)
    e = 1e-5
    for a, b in [(0, 0), (1, 2)]:
        vals = []
        for sign in (1, -1):
            eps = np.eye(3)
            eps[a, b] += sign * e / 2 if a != b else sign * e
            if a != b:
                eps[b, a] += sign * e / 2
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ eps, scale_atoms=True)
            strained.calc = Coulomb(charges={"Na": 1, "Cl": -1})
            vals.append(strained.get_potential_energy())
        fd = (vals[0] - vals[1]) / (2 * e) / atoms.get_volume()
        assert fd == pytest.approx(stress[a, b], abs=1e-5 * np.abs(stress).max())


# --------------------------------------------------------------------------- #
# 3. an independent implementation: matscipy's Ewald calculator
# --------------------------------------------------------------------------- #

MATSCIPY_KE = 14.399645      # matscipy's e²/(4π ε0) in eV·Å; ours is ase.units.Hartree * Bohr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cells_agree_with_matscipy(seed):
    """matscipy 1.3's Ewald (point charges, neutral cells only, self-energy subtracted, no background
    term, its own constant 14.399645 eV·Å): its results times K_E / 14.399645 are ours. Its parameters
    are set explicitly and far past convergence (its own rule calls np.int on triclinic cells)."""
    ewald = pytest.importorskip("matscipy.calculators.ewald", reason="matscipy (test extra) is not installed")
    atoms, q = _random_cell(24 + 12 * seed, seed)
    alpha, rc = 0.45, 12.0                  # erfc(5.4) ~ 1e-14
    kc = 2 * alpha * 6.2                    # exp(-k²/4α²) ~ 2e-17
    nk = np.ceil(kc * np.linalg.norm(atoms.cell.array, axis=1) / (2 * np.pi)).astype(int)
    calc = ewald.Ewald()
    calc.set(cutoff=rc, accuracy=1e-6, verbose=False, kspace={"alpha": alpha, "nbk_c": nk, "cutoff": kc})
    ref = atoms.copy()
    ref.set_array("charge", q)
    ref.calc = calc
    scale = K_E / MATSCIPY_KE
    e_ref = ref.get_potential_energy() * scale
    f_ref = ref.get_forces() * scale
    s_ref = ref.get_stress() * scale
    ours = coulomb(atoms, q)                                  # the default accuracy, 1e-6
    assert ours.energy_eV == pytest.approx(e_ref, rel=1e-6)
    assert np.abs(ours.forces_eV_per_A - f_ref).max() <= 1e-6 * np.abs(f_ref).max()
    tight = coulomb(atoms, q, accuracy=1e-10)
    assert tight.energy_eV == pytest.approx(e_ref, rel=1e-10)
    assert np.abs(tight.forces_eV_per_A - f_ref).max() <= 1e-8 * np.abs(f_ref).max()
    W = tight.virial_eV / atoms.get_volume()
    assert np.abs(np.array([W[0, 0], W[1, 1], W[2, 2], W[1, 2], W[0, 2], W[0, 1]]) - s_ref).max() \
        <= 1e-8 * np.abs(s_ref).max()


def _fourier_energy(atoms: Atoms, q: np.ndarray, sigma: np.ndarray) -> float:
    """(2π K_E / V) Σ_{k≠0} |ρ(k)|²/k² of Gaussian charges in a neutralising background, by brute force
    over k (converges since ρ(k) carries exp(-σ²k²/2)): a second, independent route to the energy with
    the Gaussian self-energies and the background convention of gapfit.electrostatics."""
    cell = atoms.cell.array
    V = atoms.get_volume()
    kmax = 9.0 / sigma.min()
    recip = 2 * np.pi * np.linalg.inv(cell).T
    nmax = np.ceil(kmax * np.linalg.norm(cell, axis=1) / (2 * np.pi)).astype(int)
    n = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in nmax], indexing="ij"), -1).reshape(-1, 3)
    k = n @ recip
    k2 = np.einsum("ij,ij->i", k, k)
    k, k2 = k[(k2 > 0) & (k2 <= kmax ** 2)], k2[(k2 > 0) & (k2 <= kmax ** 2)]
    total = 0.0
    for start in range(0, len(k), 4000):
        kk, kq = k[start:start + 4000], k2[start:start + 4000]
        rho = (q[:, None] * np.exp(-0.5 * sigma[:, None] ** 2 * kq[None]) *
               np.exp(1j * atoms.positions @ kk.T)).sum(axis=0)
        total += np.sum(np.abs(rho) ** 2 / kq)
    return 2 * np.pi * K_E / V * total


@pytest.mark.parametrize("neutral", [True, False], ids=["neutral", "charged"])
def test_gaussian_charges_equal_the_fourier_sum(neutral):
    atoms, q = _random_cell(12, 7, neutral=neutral, spacing=3.0)
    sigma = np.random.default_rng(3).uniform(0.9, 1.3, len(atoms))
    assert coulomb(atoms, q, sigma).energy_eV == pytest.approx(_fourier_energy(atoms, q, sigma), rel=1e-6)


@pytest.mark.parametrize("gaussian", [False, True], ids=["point", "gaussian"])
def test_charged_cell_energy_does_not_depend_on_alpha(gaussian):
    """The background convention is exact: splitting parameters far apart give the same energy."""
    atoms, q = _random_cell(16, 5, neutral=False)
    assert abs(q.sum()) > 0.5
    sigma = np.full(len(atoms), 0.8) if gaussian else None
    energies = []
    for alpha in (0.3, 0.45, 0.6):
        p = EwaldParameters(alpha, 7.0 / alpha, 7.5 / alpha, 2 * alpha * 7.0, 2 * alpha * 7.5, 0.0)
        energies.append(coulomb(atoms, q, sigma, parameters=p, forces=False).energy_eV)
    assert np.ptp(energies) < 1e-10 * abs(energies[0])


# --------------------------------------------------------------------------- #
# the accuracy rule
# --------------------------------------------------------------------------- #

def test_accuracy_rule_holds_on_crystals_and_random_cells():
    frames = [(_crystal(s, c), None) for s in MADELUNG for c in ("primitive", "conventional")]
    frames.append((bulk("CaF2", "fluorite", a=5.46), None))
    frames += [_random_cell(40, 11), _random_cell(9, 12)]
    for atoms, q in frames:
        if q is None:
            q = np.select([atoms.numbers == 20, atoms.numbers == 9], [2.0, -1.0],
                          np.where(np.isin(atoms.numbers, [11, 55, 30]), 1.0, -1.0))
        for widths in (None, np.full(len(atoms), 0.6)):
            exact = coulomb(atoms, q, widths, accuracy=1e-13, forces=False, virial=False).energy_eV
            scale = energy_scale_eV(atoms, q)
            for accuracy in (1e-4, 1e-6, 1e-8):
                e = coulomb(atoms, q, widths, accuracy=accuracy, forces=False, virial=False).energy_eV
                assert abs(e - exact) <= accuracy * scale, (atoms.get_chemical_formula(), widths is None, accuracy)


def test_parameters_do_not_depend_on_charges_and_grow_with_accuracy():
    loose, tight = ewald_parameters(64, 1400.0, 1e-4), ewald_parameters(64, 1400.0, 1e-10)
    assert tight.real_cutoff_A > loose.real_cutoff_A and tight.kspace_cutoff_per_A > loose.kspace_cutoff_per_A
    assert tight.alpha_per_A == loose.alpha_per_A
    capped = ewald_parameters(64, 1400.0, 1e-6, max_width_A=2.0)
    assert capped.alpha_per_A <= 1 / (2 * 2.0) + 1e-15


# --------------------------------------------------------------------------- #
# 4. species-pair parts
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("periodic", [True, False], ids=["periodic", "finite"])
@pytest.mark.parametrize("widths", [None, {8: 0.9, 11: 0.6, 17: 1.2, 1: 0.5}], ids=["point", "gaussian"])
def test_species_pair_parts_reproduce_coulomb(periodic, widths):
    atoms, _ = _random_cell(30, 21)
    if not periodic:
        atoms.pbc = False
    species = [1, 8, 11, 17]                                  # H is absent from the frame
    screening = (1.0, 3.0)
    parts = species_pair_parts(atoms, species, widths, screening_A=screening)
    assert sorted(parts) == [(a, b) for i, a in enumerate(species) for b in species[i:]]
    assert parts[(1, 1)].energy_eV == 0 and parts[(1, 8)].energy_eV == 0
    rng = np.random.default_rng(4)
    for _ in range(3):
        qs = dict(zip(species, rng.normal(size=len(species))))
        q = np.array([qs[z] for z in atoms.numbers])
        w = None if widths is None else np.array([widths[z] for z in atoms.numbers])
        ref = coulomb(atoms, q, w, screening_A=screening)
        e = sum(qs[a] * qs[b] * p.energy_eV for (a, b), p in parts.items())
        energies = sum(qs[a] * qs[b] * p.energies_eV for (a, b), p in parts.items())
        forces = sum(qs[a] * qs[b] * p.forces_eV_per_A for (a, b), p in parts.items())
        assert e == pytest.approx(ref.energy_eV, rel=1e-10, abs=1e-12)
        assert np.abs(energies - ref.energies_eV).max() < 1e-10 * np.abs(ref.energies_eV).max()
        assert np.abs(forces - ref.forces_eV_per_A).max() < 1e-10 * np.abs(ref.forces_eV_per_A).max()
        if periodic:
            virial = sum(qs[a] * qs[b] * p.virial_eV for (a, b), p in parts.items())
            assert np.abs(virial - ref.virial_eV).max() < 1e-10 * np.abs(ref.virial_eV).max()
        else:
            assert ref.virial_eV is None and parts[(8, 11)].virial_eV is None


def test_species_pair_parts_refuse_uncharged_species():
    atoms, _ = _random_cell(10, 2)
    with pytest.raises(InputError, match="not among the charged species"):
        species_pair_parts(atoms, [8, 11])
    with pytest.raises(InputError, match="widths"):
        species_pair_parts(atoms, [8, 11, 17], {8: 1.0, 11: 1.0})


# --------------------------------------------------------------------------- #
# 5. invariances, finite systems, refusals
# --------------------------------------------------------------------------- #

def test_translation_and_rotation_invariance():
    atoms, q = _random_cell(20, 8)
    widths = np.full(len(atoms), 0.7)
    ref = coulomb(atoms, q, widths, screening_A=(1.0, 2.5))
    assert ref.energies_eV.sum() == pytest.approx(ref.energy_eV, rel=1e-14)
    moved = atoms.copy()
    moved.positions += np.array([3.3, -17.1, 40.2])          # far outside the cell: wrapping is the code's job
    r = coulomb(moved, q, widths, screening_A=(1.0, 2.5))
    assert r.energy_eV == pytest.approx(ref.energy_eV, rel=1e-10)
    assert np.abs(r.energies_eV - ref.energies_eV).max() < 1e-10 * np.abs(ref.energies_eV).max()
    assert np.abs(r.forces_eV_per_A - ref.forces_eV_per_A).max() < 1e-10 * np.abs(ref.forces_eV_per_A).max()
    R = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ R.T)
    turned.positions = atoms.positions @ R.T
    r = coulomb(turned, q, widths, screening_A=(1.0, 2.5))
    assert r.energy_eV == pytest.approx(ref.energy_eV, rel=1e-10)
    assert np.abs(r.forces_eV_per_A - ref.forces_eV_per_A @ R.T).max() < 1e-9 * np.abs(ref.forces_eV_per_A).max()
    assert np.abs(r.virial_eV - R @ ref.virial_eV @ R.T).max() < 1e-9 * np.abs(ref.virial_eV).max()


def _cluster() -> Tuple[Atoms, np.ndarray]:
    """A Na4Cl4 cube, ions alternating on the corners: no dipole, no net charge."""
    atoms = Atoms("Na4Cl4", positions=[[0, 0, 0], [2.8, 2.8, 0], [2.8, 0, 2.8], [0, 2.8, 2.8],
                                       [2.8, 0, 0], [0, 2.8, 0], [0, 0, 2.8], [2.8, 2.8, 2.8]], pbc=False)
    return atoms, np.array([1.0] * 4 + [-1.0] * 4)


@pytest.mark.parametrize("widths", [None, 0.8], ids=["point", "gaussian"])
def test_finite_direct_sum_is_the_limit_of_large_vacuum_boxes(widths):
    atoms, q = _cluster()
    direct = coulomb(atoms, q, widths)
    assert direct.virial_eV is None
    # the direct sum against pairs written out by hand
    d = atoms.get_all_distances()
    iu = np.triu_indices(len(atoms), 1)
    if widths is None:
        assert direct.energy_eV == pytest.approx(K_E * np.sum(np.outer(q, q)[iu] / d[iu]), rel=1e-12)
    errors = []
    for box in (30.0, 45.0):
        boxed = atoms.copy()
        boxed.set_cell(np.eye(3) * box)
        boxed.pbc = True
        boxed.center()
        errors.append(abs(coulomb(boxed, q, widths).energy_eV - direct.energy_eV))
    assert errors[1] < 1e-4 * abs(direct.energy_eV) and errors[1] < errors[0]


def test_screening_switches_the_pair_on_smoothly():
    r_in, r_out = 2.0, 5.0
    dists = np.array([1.0, 2.0, 3.5, 5.0, 7.0])
    energies = []
    for r in dists:
        pair = Atoms("NaCl", positions=[[0, 0, 0], [r, 0, 0]])
        energies.append(coulomb(pair, np.array([1.0, -1.0]), screening_A=(r_in, r_out)).energy_eV)
    assert energies[0] == 0 and energies[1] == 0
    assert energies[3] == pytest.approx(-K_E / 5.0, rel=1e-14) and energies[4] == pytest.approx(-K_E / 7.0)
    assert -K_E / 3.5 < energies[2] < 0
    # continuous first derivative at both ends: one-sided slopes agree
    for r0 in (r_in, r_out):
        e = [coulomb(Atoms("NaCl", positions=[[0, 0, 0], [r0 + s, 0, 0]]), np.array([1.0, -1.0]),
                     screening_A=(r_in, r_out), forces=False).energy_eV for s in (-2e-4, -1e-4, 0, 1e-4, 2e-4)]
        left, right = (e[2] - e[1]) / 1e-4, (e[3] - e[2]) / 1e-4
        assert abs(left - right) < 1e-3 * max(abs(left), abs(right), 1e-3)


def test_gaussian_charges_are_finite_when_atoms_coincide():
    pair = Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 0]])
    r = coulomb(pair, np.array([1.0, -1.0]), np.array([1.0, 1.0]))
    # two self-energies K_E/(2√π σ) and the pair at r = 0: -K_E · 2/(√π · 2σ) (γ = √2 σ)
    assert r.energy_eV == pytest.approx(K_E / np.sqrt(np.pi) - K_E / np.sqrt(np.pi), abs=1e-12)
    assert np.all(np.isfinite(r.forces_eV_per_A))
    with pytest.raises(InputError, match="coincide"):
        coulomb(pair, np.array([1.0, -1.0]))


@pytest.mark.parametrize("pbc", [(True, True, False), (True, False, False)])
def test_mixed_periodicity_is_refused(pbc):
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    atoms.pbc = pbc
    with pytest.raises(InputError, match=r"periodic along all\s+three axes.*non-periodic"):
        coulomb(atoms, np.array([1.0, -1.0]))
    atoms.calc = Coulomb(charges={"Na": 1, "Cl": -1})
    with pytest.raises(InputError, match="slabs"):
        atoms.get_potential_energy()


def test_bad_settings_are_refused():
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    with pytest.raises(InputError, match="accuracy"):
        coulomb(atoms, np.array([1.0, -1.0]), accuracy=0.5)
    with pytest.raises(InputError, match="r_in < r_out"):
        coulomb(atoms, np.array([1.0, -1.0]), screening_A=(3.0, 2.0))
    with pytest.raises(InputError, match="one width"):
        coulomb(atoms, np.array([1.0, -1.0]), np.array([1.0]))
    with pytest.raises(InputError, match="one\\s+finite charge"):
        coulomb(atoms, np.array([1.0]))
    with pytest.raises(InputError, match="Xx"):
        Coulomb(charges={"Xx": 1.0})


def test_calculator_reads_initial_charges_and_species_widths():
    atoms = _crystal("rocksalt", "primitive")
    atoms.set_initial_charges([0.8, -0.8])
    atoms.calc = Coulomb(widths={"Na": 0.7, "Cl": 1.1})
    ref = coulomb(atoms, np.array([0.8, -0.8]), np.array([0.7, 1.1]))
    assert atoms.get_potential_energy() == pytest.approx(ref.energy_eV, rel=1e-14)
    assert np.allclose(atoms.get_potential_energies(), ref.energies_eV, rtol=1e-14, atol=0)
    atoms.set_initial_charges([1.0, -1.0])                  # a change of charges is a change of state
    assert atoms.get_potential_energy() == pytest.approx(ref.energy_eV / 0.64, rel=1e-12)   # quadratic in q
    with pytest.raises(InputError, match="not for"):
        Coulomb(charges={"Na": 1.0}).get_potential_energy(atoms)
    finite, q = _cluster()
    finite.calc = Coulomb(charges={"Na": 1, "Cl": -1})
    assert finite.get_forces().shape == (8, 3)
    with pytest.raises(PropertyNotImplementedError):
        finite.get_stress()
