"""Physics of the fixed baselines (gapfit.baselines): derivatives, switching, invariances, files, round trips."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.data import covalent_radii

from gapfit.baselines import (
    CalculatorBaseline, E0Baseline, SumBaseline, TabulatedPairBaseline, ZBLBaseline, baseline_from_dict,
    import_calculator, residual_labels, subtract,
)
from gapfit.errors import InputError

H = 1e-5           # finite-difference step: Å for positions, dimensionless for strain
RTOL = 1e-6        # relative agreement asked of analytic derivatives


# --------------------------------------------------------------------------- #
# frames and reference implementations
# --------------------------------------------------------------------------- #

def periodic_cell():
    """8-atom compressed, rattled Si/C diamond cell: nearest neighbours spread over 1.6-2.6 Å."""
    a = bulk("Si", "diamond", a=5.0, cubic=True)
    a.numbers[[1, 6]] = 6
    a.rattle(stdev=0.2, seed=3)
    return a


def cluster():
    """Non-periodic Si/C cluster with contacts between 1.4 and 2.6 Å."""
    rng = np.random.default_rng(7)
    pos = np.array([[0, 0, 0], [1.9, 0, 0], [0, 1.8, 0], [0, 0, 2.0], [1.5, 1.5, 1.2], [-1.4, 0.6, 0.8]], float)
    pos += rng.normal(scale=0.1, size=pos.shape)
    return Atoms("Si3C3", positions=pos)


def dimer(r, symbols="Si2"):
    return Atoms(symbols, positions=[[0, 0, 0], [r, 0, 0]])


ZBL_RADII = {(14, 14): (2.0, 2.6), (6, 14): (1.7, 2.3), (6, 6): (1.3, 2.0)}


def zbl_reference(r, z1, z2):
    """ZBL written out from the Ziegler-Biersack-Littmark formula (no switch)."""
    a = 0.46850 / (z1 ** 0.23 + z2 ** 0.23)
    x = r / a
    phi = (0.18175 * np.exp(-3.19980 * x) + 0.50986 * np.exp(-0.94229 * x)
           + 0.28022 * np.exp(-0.40290 * x) + 0.02817 * np.exp(-0.20162 * x))
    return 14.399645 * z1 * z2 / r * phi


def table_energy(r, amp, rc):
    return amp * np.clip(rc - r, 0, None) ** 3 / r


TABLE_PAIRS = {(14, 14): (5.0, 2.8), (6, 14): (8.0, 2.5), (6, 6): (3.0, 2.2)}


def write_table(path):
    lines = ["# test core potential: r in A, energy in eV", ""]
    for (z1, z2), (amp, rc) in TABLE_PAIRS.items():
        lines.append(f"pair {z1} {z2}   # amp {amp}")
        for r in np.linspace(0.8, rc, 25):
            lines.append(f"{r:.10f} {table_energy(r, amp, rc):.17g}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tabulated(tmp_path):
    return TabulatedPairBaseline.from_file(str(write_table(tmp_path / "core.txt")))


def pair_distances(atoms, cutoff):
    """All (d, Zi, Zj) within cutoff by explicit periodic images (brute force)."""
    reps = [range(-2, 3) if p else [0] for p in atoms.pbc]
    out = []
    pos, cell = atoms.positions, np.asarray(atoms.cell)
    for n1 in reps[0]:
        for n2 in reps[1]:
            for n3 in reps[2]:
                shift = np.array([n1, n2, n3]) @ cell
                for i in range(len(atoms)):
                    for j in range(len(atoms)):
                        if i == j and (n1, n2, n3) == (0, 0, 0):
                            continue
                        d = np.linalg.norm(pos[j] + shift - pos[i])
                        if d < cutoff:
                            out.append((d, atoms.numbers[i], atoms.numbers[j]))
    return out


def fd_forces(baseline, atoms):
    f = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for k in range(3):
            e = []
            for s in (+1, -1):
                b = atoms.copy()
                b.positions[i, k] += s * H
                e.append(baseline.evaluate(b, forces=False, virial=False).energy_eV)
            f[i, k] = -(e[0] - e[1]) / (2 * H)
    return f


def fd_virial(baseline, atoms):
    w = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            e = []
            for s in (+1, -1):
                eps = np.zeros((3, 3))
                # symmetric strain: for a != b, dE/dh = W_ab (= W_ba)
                eps[a, b] += s * H / (1 if a == b else 2)
                eps[b, a] += 0 if a == b else s * H / 2
                c = atoms.copy()
                c.set_cell(np.asarray(atoms.cell) @ (np.eye(3) + eps), scale_atoms=True)
                e.append(baseline.evaluate(c, forces=False, virial=False).energy_eV)
            w[a, b] = w[b, a] = (e[0] - e[1]) / (2 * H)
    return w


def assert_close_rel(x, ref, rtol=RTOL):
    np.testing.assert_allclose(x, ref, rtol=rtol, atol=rtol * np.max(np.abs(ref)))


def random_rotation(seed):
    from scipy.spatial.transform import Rotation
    return Rotation.random(random_state=seed).as_matrix()


# --------------------------------------------------------------------------- #
# ZBL and tabulated: derivatives and invariances
# --------------------------------------------------------------------------- #

def test_test_frames_probe_the_switch_region():
    """The periodic cell has Si-Si pairs below r_inner, in the switch and beyond r_outer."""
    ds = pair_distances(periodic_cell(), 3.0)
    si = [d for d, a, b in ds if a == b == 14]
    assert min(si) < 2.0 and any(2.0 < d < 2.6 for d in si) and max(si) > 2.6
    assert any(1.7 < d < 2.3 for d, a, b in ds if {a, b} == {6, 14})


@pytest.mark.parametrize("kind", ["zbl", "tabulated"])
@pytest.mark.parametrize("frame", ["periodic", "cluster"])
def test_forces_and_virial_are_derivatives(kind, frame, tabulated):
    base = ZBLBaseline(ZBL_RADII) if kind == "zbl" else tabulated
    atoms = periodic_cell() if frame == "periodic" else cluster()
    res = base.evaluate(atoms)
    assert res.energy_eV > 0.1
    assert np.isclose(res.local_energy_eV.sum(), res.energy_eV, rtol=1e-12)
    assert_close_rel(res.forces_eV_per_A, fd_forces(base, atoms))
    np.testing.assert_allclose(res.forces_eV_per_A.sum(0), 0, atol=1e-9)
    if frame == "periodic":
        assert_close_rel(res.virial_eV, fd_virial(base, atoms))
        np.testing.assert_allclose(res.virial_eV, res.virial_eV.T)
    else:
        assert res.virial_eV is None


@pytest.mark.parametrize("kind", ["zbl", "tabulated"])
def test_translation_and_rotation_invariance(kind, tabulated):
    base = ZBLBaseline(ZBL_RADII) if kind == "zbl" else tabulated
    R = random_rotation(11)
    for atoms in (periodic_cell(), cluster()):
        ref = base.evaluate(atoms)
        moved = atoms.copy()
        moved.positions += [0.37, -1.2, 5.1]
        moved.wrap()
        res = base.evaluate(moved)
        assert np.isclose(res.energy_eV, ref.energy_eV, rtol=1e-12)
        np.testing.assert_allclose(res.forces_eV_per_A, ref.forces_eV_per_A,
                                   atol=1e-10 * np.abs(ref.forces_eV_per_A).max())
        rot = atoms.copy()
        rot.positions = atoms.positions @ R.T
        if atoms.pbc.all():
            rot.set_cell(np.asarray(atoms.cell) @ R.T, scale_atoms=False)
        res = base.evaluate(rot)
        assert np.isclose(res.energy_eV, ref.energy_eV, rtol=1e-12)
        np.testing.assert_allclose(res.forces_eV_per_A, ref.forces_eV_per_A @ R.T,
                                   atol=1e-10 * np.abs(ref.forces_eV_per_A).max())
        if atoms.pbc.all():
            np.testing.assert_allclose(res.virial_eV, R @ ref.virial_eV @ R.T, atol=1e-10 * np.abs(ref.virial_eV).max())


# --------------------------------------------------------------------------- #
# ZBL: switch, formula, radii from data
# --------------------------------------------------------------------------- #

def dimer_e_f(base, r, symbols="Si2"):
    res = base.evaluate(dimer(r, symbols))
    return res.energy_eV, res.forces_eV_per_A[1, 0]     # force on the outer atom along +x = -dE/dr


@pytest.mark.parametrize("r0", [2.0, 2.6])
def test_zbl_continuous_at_switch_radii(r0):
    """Energy, force and force derivative continuous when a dimer crosses r_inner and r_outer."""
    base = ZBLBaseline(ZBL_RADII)
    d = 1e-8
    (e1, f1), (e2, f2) = dimer_e_f(base, r0 - d), dimer_e_f(base, r0 + d)
    scale = max(abs(f1), 1.0)
    assert abs(e2 - e1) <= 3 * d * scale
    h = 1e-4      # force derivative on each side
    k_lo = (dimer_e_f(base, r0 - d)[1] - dimer_e_f(base, r0 - d - h)[1]) / h
    k_hi = (dimer_e_f(base, r0 + d + h)[1] - dimer_e_f(base, r0 + d)[1]) / h
    assert abs(f2 - f1) <= 3 * d * max(abs(k_lo), 1.0)
    assert abs(k_hi - k_lo) <= 1e-2 * max(abs(k_lo), 1.0)
    if r0 == 2.6:
        assert e2 == 0.0 and f2 == 0.0


def test_zbl_dimer_formula_and_monotonic():
    base = ZBLBaseline(ZBL_RADII)
    for sym, (z1, z2) in (("Si2", (14, 14)), ("SiC", (14, 6)), ("C2", (6, 6))):
        r_in, r_out = ZBL_RADII[tuple(sorted((z1, z2)))]
        for r in np.linspace(0.2, r_in - 1e-6, 9):
            assert np.isclose(dimer_e_f(base, r, sym)[0], zbl_reference(r, z1, z2), rtol=1e-12)
        for r in (r_out, r_out + 1e-9, r_out + 0.5):
            assert dimer_e_f(base, r, sym) == (0.0, 0.0)
        rs = np.linspace(0.3, r_out, 600)
        e = np.array([dimer_e_f(base, r, sym)[0] for r in rs])
        assert np.all(np.diff(e) <= 0) and np.all(np.diff(e[:-1]) < 0) and e[-1] == 0.0
        f = np.array([dimer_e_f(base, r, sym)[1] for r in rs])
        assert np.all(f >= 0)           # repulsive everywhere


def test_zbl_from_frames_radii():
    frames = [periodic_cell(), cluster()]
    base = ZBLBaseline.from_frames(frames, species=["Si", "C", "O"], margin_A=0.0)
    margin = ZBLBaseline.from_frames(frames, species=["Si", "C", "O"])
    shifted = ZBLBaseline.from_frames(frames, species=["Si", "C", "O"], margin_A=0.2)
    assert all(np.isclose(shifted.radii[p][1], base.radii[p][1] + 0.2) for p in ((14, 14), (6, 14), (6, 6)))
    ds = pair_distances(frames[0], 6.0) + pair_distances(frames[1], 6.0)
    for (z1, z2) in ((14, 14), (6, 14), (6, 6)):
        shortest = min(d for d, a, b in ds if {a, b} == {z1, z2} and (a == b) == (z1 == z2))
        r_in, r_out = base.radii[(z1, z2)]
        assert np.isclose(r_out, shortest, rtol=1e-12)
        assert np.isclose(r_in, 0.75 * shortest, rtol=1e-12)
        assert margin.radii[(z1, z2)] == (r_in, r_out)  # the default margin is 0
    for pair in ((8, 8), (6, 8), (8, 14)):
        r_in, r_out = base.radii[pair]
        assert np.isclose(r_out, 0.75 * (covalent_radii[pair[0]] + covalent_radii[pair[1]]))
        assert np.isclose(r_in, 0.75 * r_out)
    # zero on every training frame, and the table is JSON
    for a in frames:
        res = base.evaluate(a)
        assert res.energy_eV == 0.0 and not res.forces_eV_per_A.any()
    table = json.loads(json.dumps(base.radii_table()))
    assert {e["pair"] for e in table} == {"C-C", "C-O", "C-Si", "O-O", "O-Si", "Si-Si"}
    assert all(e["source"] for e in table)
    assert "Si-Si" in base.describe()


def test_shortest_contacts_streamed_equal_brute_force_over_all_frames():
    """The search narrows to the best distances so far; it must still find every later, shorter contact."""
    frames = []
    for k, scale in enumerate((1.0, 1.04, 0.93, 1.1, 0.9)):
        a = periodic_cell()
        a.set_cell(a.cell * scale, scale_atoms=True)
        a.rattle(stdev=0.1, seed=k)
        frames.append(a)
    frames.insert(2, cluster())
    late = cluster()
    late.numbers[[0, 4]] = 8  # O-O, O-Si and O-C first seen in the last frame
    frames.append(late)
    found = {}
    for k, a in enumerate(frames):  # one frame at a time, as the survey streams them
        ZBLBaseline.shortest_contacts([a], found=found, first_index=k)
    expected = {}
    for k, a in enumerate(frames):
        for d, zi, zj in pair_distances(a, 6.0):
            pair = (min(zi, zj), max(zi, zj))
            if pair not in expected or d < expected[pair][0]:
                expected[pair] = (d, f"frame {k}")
    assert set(found) == set(expected)
    for pair, (d, where) in expected.items():
        assert np.isclose(found[pair][0], d, rtol=1e-12) and found[pair][1] == where, pair


def test_zbl_refusals():
    with pytest.raises(InputError, match="r_inner < r_outer"):
        ZBLBaseline({(14, 14): (2.0, 1.0)})
    with pytest.raises(InputError, match="no radii for C-Si"):
        ZBLBaseline({(14, 14): (1.0, 2.0), (6, 6): (1.0, 2.0)}).evaluate(dimer(1.5, "SiC"))
    with pytest.raises(InputError, match="O"):
        ZBLBaseline.from_frames([cluster()], species=["O"])


# --------------------------------------------------------------------------- #
# tabulated: file format, spline
# --------------------------------------------------------------------------- #

def test_table_spline_through_points_and_ends(tabulated, tmp_path):
    assert tabulated.source.endswith("core.txt")
    for (z1, z2), (amp, rc) in TABLE_PAIRS.items():
        def pair(r):
            return tabulated.evaluate(Atoms(numbers=[z1, z2], positions=[[0, 0, 0], [r, 0, 0]]))
        for r in np.linspace(0.8, rc, 25)[:-1]:
            assert np.isclose(pair(r).energy_eV, table_energy(r, amp, rc), rtol=1e-9, atol=1e-12)
        # continuous at the last point (energy and force go to zero), zero beyond
        inner, outer = pair(rc - 1e-6), pair(rc + 1e-6)
        assert abs(inner.energy_eV) < 1e-9 and abs(inner.forces_eV_per_A).max() < 1e-4
        assert outer.energy_eV == 0.0 and not outer.forces_eV_per_A.any()
        # continuous at the first point (straight-line continuation below it)
        d = 1e-8
        lo, hi = pair(0.8 - d), pair(0.8 + d)
        f = abs(hi.forces_eV_per_A).max()
        assert abs(lo.energy_eV - hi.energy_eV) <= 3 * d * f
        np.testing.assert_allclose(lo.forces_eV_per_A, hi.forces_eV_per_A, rtol=1e-5)
    # pairs without a table contribute nothing
    assert tabulated.evaluate(dimer(1.0, "O2")).energy_eV == 0.0


def test_table_dict_is_self_contained(tabulated, tmp_path):
    d = json.loads(json.dumps(tabulated.to_dict()))
    (tmp_path / "core.txt").unlink()
    again = baseline_from_dict(d)
    atoms = periodic_cell()
    a, b = tabulated.evaluate(atoms), again.evaluate(atoms)
    assert a.energy_eV == b.energy_eV
    np.testing.assert_array_equal(a.forces_eV_per_A, b.forces_eV_per_A)
    np.testing.assert_array_equal(a.virial_eV, b.virial_eV)


GOOD = "pair Si Si\n1.0 3.0\n2.0 1.0\n3.0 0.0\n"


@pytest.mark.parametrize("text, line, what", [
    ("1.0 3.0\npair Si Si\n", 1, "before the first"),
    ("# c\npair Si\n1 2\n", 2, "two species"),
    ("pair Si Xx\n1 2\n", 1, "not a chemical species"),
    ("pair Si Si\n1.0 3.0\n2.0 abc\n3 0\n", 3, "two numbers"),
    ("pair Si Si\n1.0 3.0 4.0\n", 2, "two numbers"),
    ("pair Si Si\n1.0 3.0\n\n2.0 1.0\n2.0 0.5\n3 0\n", 5, "increase strictly"),
    ("pair Si Si\n1.0 3.0\n2.0 1.0\n3.0 0.1\n", 4, "not 0"),
    ("pair Si Si\n1.0 3.0\n2.0 nan\n3.0 0\n", 3, "finite"),
    ("pair Si Si\n1.0 3.0\n3.0 0.0\n", 1, "at least 3"),
    ("pair O Si\n1 3\n2 1\n3 0\npair Si O\n1 3\n2 1\n3 0\n", 5, "already given at line 1"),
    ("pair Si Si\n-1.0 3.0\n2.0 1.0\n3.0 0.0\n", 2, "negative"),
])
def test_table_file_errors_name_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=what) as err:
        TabulatedPairBaseline.from_file(str(path))
    assert f"{path}, line {line}:" in str(err.value)
    assert "\n" not in str(err.value)


def test_table_file_good_and_missing(tmp_path):
    path = tmp_path / "good.txt"
    path.write_text("# header\n" + GOOD.replace("2.0 1.0", "2.0 1.0   # inline comment") + "pair 6 14\n1 2\n2 1\n3 0\n")
    base = TabulatedPairBaseline.from_file(str(path))
    assert sorted(base.tables) == [(6, 14), (14, 14)]
    assert np.isclose(base.evaluate(dimer(2.0)).energy_eV, 1.0)
    with pytest.raises(InputError, match="no such file"):
        TabulatedPairBaseline.from_file(str(tmp_path / "none.txt"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="no 'pair A B' block"):
        TabulatedPairBaseline.from_file(str(tmp_path / "empty.txt"))


# --------------------------------------------------------------------------- #
# E0, sums, subtraction
# --------------------------------------------------------------------------- #

def test_e0_baseline():
    base = E0Baseline({"Si": -158.5, 6: -147.0})
    atoms = periodic_cell()
    res = base.evaluate(atoms)
    assert np.isclose(res.energy_eV, 6 * -158.5 + 2 * -147.0)
    assert not res.forces_eV_per_A.any() and not res.virial_eV.any()
    assert base.evaluate(cluster()).virial_eV is None
    with pytest.raises(InputError, match="no energy for O"):
        base.evaluate(dimer(1.2, "O2"))


def test_sum_equals_parts_and_round_trips():
    e0, zbl = E0Baseline({14: -158.5, 6: -147.0}), ZBLBaseline(ZBL_RADII)
    both = SumBaseline([e0, zbl])
    for atoms in (periodic_cell(), cluster()):
        s, a, b = both.evaluate(atoms), e0.evaluate(atoms), zbl.evaluate(atoms)
        assert np.isclose(s.energy_eV, a.energy_eV + b.energy_eV, rtol=1e-14)
        np.testing.assert_allclose(s.local_energy_eV, a.local_energy_eV + b.local_energy_eV, rtol=1e-14)
        np.testing.assert_allclose(s.forces_eV_per_A, a.forces_eV_per_A + b.forces_eV_per_A, rtol=1e-14)
        if atoms.pbc.all():
            np.testing.assert_allclose(s.virial_eV, a.virial_eV + b.virial_eV, rtol=1e-14)
        d = json.loads(json.dumps(both.to_dict()))
        assert d["type"] == "sum" and [p["type"] for p in d["parts"]] == ["e0", "zbl"]
        again = baseline_from_dict(d)
        r = again.evaluate(atoms)
        assert r.energy_eV == s.energy_eV
        np.testing.assert_array_equal(r.forces_eV_per_A, s.forces_eV_per_A)
        if atoms.pbc.all():
            np.testing.assert_array_equal(r.virial_eV, s.virial_eV)
        assert again.to_dict() == d


def test_subtract_gives_residual_labels():
    from gapfit.data import Labels

    atoms = periodic_cell()
    res = ZBLBaseline(ZBL_RADII).evaluate(atoms)
    stress = np.arange(6) * 1e-3
    e, f, s = subtract(res, 10.0, np.ones((8, 3)), stress, volume=atoms.get_volume())
    assert np.isclose(e, 10.0 - res.energy_eV)
    np.testing.assert_allclose(f, 1.0 - res.forces_eV_per_A)
    w = res.virial_eV / atoms.get_volume()
    np.testing.assert_allclose(s, stress - [w[0, 0], w[1, 1], w[2, 2], w[1, 2], w[0, 2], w[0, 1]])
    lb = Labels(10.0, np.ones((8, 3)), stress, "x", "here")
    out = residual_labels(ZBLBaseline(ZBL_RADII), atoms, lb)
    assert out.energy_eV == e and out.where == "here"
    np.testing.assert_allclose(out.stress_eV_per_A3, s)


# --------------------------------------------------------------------------- #
# ASE calculator baseline
# --------------------------------------------------------------------------- #

def cu_cell():
    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    a.rattle(0.05, seed=1)
    return a


def test_calculator_equals_emt():
    atoms = cu_cell()
    res = CalculatorBaseline(EMT()).evaluate(atoms)
    ref = atoms.copy()
    ref.calc = EMT()
    assert np.isclose(res.energy_eV, ref.get_potential_energy(), rtol=1e-12)
    np.testing.assert_allclose(res.forces_eV_per_A, ref.get_forces(), rtol=1e-12, atol=1e-14)
    s = ref.get_stress(voigt=False)
    np.testing.assert_allclose(res.virial_eV, s * ref.get_volume(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.local_energy_eV, ref.get_potential_energies(), rtol=1e-10, atol=1e-12)
    assert not res.local_energy_spread
    assert atoms.calc is None                      # the frame itself is left alone
    mol = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.4, 0.3]])
    assert CalculatorBaseline(EMT()).evaluate(mol).virial_eV is None


class _NoLocalEMT(EMT):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]


def test_calculator_cache_calculates_each_frame_once_and_tells_frames_apart():
    class Counting(EMT):
        n = 0

        def calculate(self, *args, **kwargs):
            Counting.n += 1
            super().calculate(*args, **kwargs)
    base = CalculatorBaseline(Counting())
    atoms = cu_cell()
    with base.cached():
        first = base.evaluate(atoms, forces=False, virial=False)
        assert first.forces_eV_per_A is None and first.virial_eV is None
        full = base.evaluate(atoms)  # asked for more: already there
        assert Counting.n == 1
        assert not full.forces_eV_per_A.flags.writeable  # a caller cannot change what the next one reads
        moved = atoms.copy()
        moved.positions[0, 0] += 1e-9
        charged = atoms.copy()
        charged.set_initial_charges(np.full(len(atoms), 0.1))
        for other in (moved, charged):
            base.evaluate(other)
        assert Counting.n == 3
        assert "_cache" not in base.__getstate__()  # a copy sent to a worker starts empty
    reference = CalculatorBaseline(EMT()).evaluate(atoms)
    assert full.energy_eV == pytest.approx(reference.energy_eV, abs=1e-10)
    np.testing.assert_allclose(full.forces_eV_per_A, reference.forces_eV_per_A, atol=1e-10)
    np.testing.assert_allclose(full.virial_eV, reference.virial_eV, atol=1e-10)
    base.evaluate(atoms)  # outside the block: nothing kept
    assert Counting.n == 4


def test_calculator_without_local_energies_spreads_evenly():
    res = CalculatorBaseline(_NoLocalEMT()).evaluate(cu_cell())
    assert res.local_energy_spread
    np.testing.assert_allclose(res.local_energy_eV, res.energy_eV / 8)


def test_calculator_round_trip_and_refusals():
    base = CalculatorBaseline(EMT())
    d = json.loads(json.dumps(base.to_dict()))
    assert d == {"type": "calculator", "import_path": "ase.calculators.emt:EMT", "kwargs": None}
    atoms = cu_cell()
    for given in (EMT(), CalculatorBaseline(EMT())):
        again = baseline_from_dict(d, calculator=given)
        assert again.evaluate(atoms).energy_eV == base.evaluate(atoms).energy_eV
    with pytest.raises(InputError, match="ase.calculators.emt:EMT") as err:
        baseline_from_dict(d)
    assert "gapfit.load(path, baseline=EMT(" in str(err.value)
    assert "--baseline ase.calculators.emt:EMT" in str(err.value)
    with pytest.raises(InputError, match="ase.calculators.lj:LennardJones") as err:
        baseline_from_dict(d, calculator=LennardJones())
    assert "ase.calculators.emt:EMT" in str(err.value)
    other = baseline_from_dict(d, calculator=LennardJones(), check_path=False)
    assert other.import_path == "ase.calculators.lj:LennardJones"
    # inside a sum, with recorded kwargs
    s = SumBaseline([E0Baseline({29: -1.0}), import_calculator("ase.calculators.emt:EMT", "{}")])
    ds = json.loads(json.dumps(s.to_dict()))
    with pytest.raises(InputError, match=r"--baseline-kwargs '\{\}'"):
        baseline_from_dict(ds)
    assert baseline_from_dict(ds, calculator=EMT()).evaluate(atoms).energy_eV == s.evaluate(atoms).energy_eV


def test_loading_never_imports():
    name = "gapfit_test_module_that_must_not_be_imported"
    d = {"type": "calculator", "import_path": f"{name}:Calc", "kwargs": {"x": 1}}
    with pytest.raises(InputError, match=f"{name}:Calc"):
        baseline_from_dict(d)
    with pytest.raises(InputError, match="was given"):
        baseline_from_dict(d, calculator=EMT())
    assert name not in sys.modules


def test_import_calculator():
    base = import_calculator("ase.calculators.emt:EMT", None)
    assert isinstance(base.calculator, EMT) and base.import_path == "ase.calculators.emt:EMT" and base.kwargs == {}
    lj = import_calculator("ase.calculators.lj:LennardJones", '{"sigma": 2.3, "rc": 5.0}')
    assert lj.calculator.parameters.sigma == 2.3 and lj.kwargs == {"sigma": 2.3, "rc": 5.0}
    for spec, kw, what in [("no_such_module_xyz:Calc", None, "cannot import"),
                           ("ase.calculators.emt:Nope", None, "has no 'Nope'"),
                           ("ase.calculators.emt", None, "MODULE:CLASS"),
                           ("ase.calculators.emt:EMT", "{bad", "not valid JSON"),
                           ("ase.calculators.emt:EMT", "[1]", "JSON object"),
                           ("fractions:Fraction", '{"numerator": "x"}', "constructor failed"),
                           ("json:JSONDecoder", None, "not an ASE calculator")]:
        with pytest.raises(InputError, match=what) as err:
            import_calculator(spec, kw)
        assert spec in str(err.value)
