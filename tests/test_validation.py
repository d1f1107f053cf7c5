"""Validation properties: each checked against an independent computation with the same potential."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import GPa

from gapfit.cli import main
from gapfit.validation import (CalculatorEvaluator, CommitteeEvaluator, elastic_constants, gamma_frequencies,
                               relax, stress_consistency)
from gapfit.validation.phonons import THZ


def _energy_density(atoms, calc, strain_voigt):
    """E/V0 of ``atoms`` under a Voigt strain (engineering shear), ions relaxed."""
    e = np.zeros((3, 3))
    for j, (a, b) in enumerate(((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))):
        e[a, b] += strain_voigt[j] / (1 if a == b else 2)
        if a != b:
            e[b, a] += strain_voigt[j] / 2
    s = atoms.copy()
    s.set_cell(atoms.cell @ (np.eye(3) + e).T, scale_atoms=True)
    s, _ = relax(s, calc, fmax_eV_per_A=1e-5)
    s.calc = calc
    return s.get_potential_energy() / atoms.get_volume()


def test_emt_cu_elastic_constants_equal_energy_strain_curvatures():
    """Stress-strain slopes (the validation code) against energy-strain curvatures (independent), EMT Cu, ≤ 1 %."""
    calc = EMT()
    atoms, _ = relax(bulk("Cu", "fcc", a=3.6, cubic=True), calc, cell=True, fmax_eV_per_A=1e-6)
    res = elastic_constants(CalculatorEvaluator(calc), atoms, relax_cell=False)
    h = 0.005
    e0 = _energy_density(atoms, calc, np.zeros(6))

    def curvature(v):
        v = np.asarray(v, float)
        return (_energy_density(atoms, calc, h * v) - 2 * e0 + _energy_density(atoms, calc, -h * v)) / h ** 2 / GPa
    c11 = curvature([1, 0, 0, 0, 0, 0])                  # E/V = C11 ε²/2
    c11_plus_c12 = curvature([1, 1, 0, 0, 0, 0]) / 2     # E/V = (C11 + C12) ε²
    c44 = curvature([0, 0, 0, 1, 0, 0])                  # E/V = C44 γ²/2
    assert res.values["C11_GPa"] == pytest.approx(c11, rel=0.01)
    assert res.values["C12_GPa"] == pytest.approx(c11_plus_c12 - c11, rel=0.01)
    assert res.values["C44_GPa"] == pytest.approx(c44, rel=0.01)
    assert res.std("C11_GPa") is None  # a bare calculator has no committee


def test_gamma_phonons_equal_finite_difference_hessian(cu_model):
    """phonopy's Γ frequencies of the model equal the eigenfrequencies of a central-difference Hessian."""
    ev = CommitteeEvaluator(cu_model, 0)
    atoms, ok = relax(bulk("Cu", "fcc", a=3.6, cubic=True), ev.calculator, cell=True, fmax_eV_per_A=1e-5)
    assert ok
    freqs = gamma_frequencies(ev, atoms, displacement_A=0.005)
    n = len(atoms)
    H = np.zeros((3 * n, 3 * n))
    h = 0.005
    for i in range(n):
        for x in range(3):
            f = []
            for s in (1, -1):
                b = atoms.copy()
                b.positions[i, x] += s * h
                f.append(ev.evaluate(b).forces_eV_per_A[0].ravel())
            H[3 * i + x] = -(f[0] - f[1]) / (2 * h)
    H = 0.5 * (H + H.T)
    m = np.repeat(atoms.get_masses(), 3)
    w2 = np.linalg.eigvalsh(H / np.sqrt(np.outer(m, m)))
    ref = np.sort(np.sign(w2) * np.sqrt(np.abs(w2)) * THZ)
    assert ref[-1] > 1.0  # real optical modes, not noise
    # optical modes to 1e-4 THz (measured ~2e-7); the three acoustic ones are zero up to the square
    # root of rounding noise, so only their smallness is asserted
    np.testing.assert_allclose(freqs[3:], ref[3:], atol=1e-4)
    assert np.all(np.abs(freqs[:3]) < 0.05) and np.all(np.abs(ref[:3]) < 0.05)


def test_model_stress_consistent_for_model_and_every_member(cu_model):
    ev = CommitteeEvaluator(cu_model, 4, seed=1)
    res = stress_consistency(ev, bulk("Cu", "fcc", a=3.6, cubic=True))
    assert res.values["stress_max_abs_GPa"] > 0.1  # the rattled cell is stressed: the check is not vacuous
    assert res.values["stress_consistency_max_abs_GPa"] < 1e-3
    assert np.all(res.members["stress_consistency_max_abs_GPa"] < 1e-3)


def test_cli_validate_json_reference_and_plots(tmp_path, cu_model, capsys):
    model = tmp_path / "cu.npz"
    cu_model.save(str(model))
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"C11_GPa": 176.0, "lattice_constant_A": 3.61}))
    plots = tmp_path / "plots"
    code = main(["validate", str(model), "--lattice", "fcc", "--element", "Cu", "--a", "3.6", "--eos", "--elastic",
                 "--phonons", "--supercell", "2", "2", "2", "--vacancy", "--surface", "100", "--nve", "--nve-steps",
                 "40", "--stress-consistency", "--committee", "4", "--json", "--plot", str(plots), "--reference",
                 str(ref), "--no-progress"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("lattice_constant_A", "bulk_modulus_GPa", "C11_GPa", "C12_GPa", "C44_GPa", "vacancy_formation_eV",
                "surface_energy_J_per_m2", "nve_drift_meV_per_atom_per_ps", "max_frequency_THz",
                "stress_consistency_max_abs_GPa"):
        assert out[key] is not None and np.isfinite(out[key]), key
        assert out[f"{key}_std"] is not None and out[f"{key}_std"] >= 0, key
        if key != "nve_drift_meV_per_atom_per_ps":
            assert out[f"{key}_std"] > 0, key  # members differ on every committee figure
    assert out["bulk_modulus_GPa_std"] > 0
    assert 3.4 < out["lattice_constant_A"] < 3.8
    # B from the EOS and from the elastic constants are one quantity computed two ways
    assert out["bulk_modulus_GPa"] == pytest.approx((out["C11_GPa"] + 2 * out["C12_GPa"]) / 3, rel=0.03)
    assert out["deviation"]["C11_GPa"] == pytest.approx(out["C11_GPa"] - 176.0)
    assert (plots / "eos.png").stat().st_size > 0 and (plots / "phonons.png").stat().st_size > 0


@pytest.mark.parametrize("argv,message", [
    (["--lattice", "fcc", "--a", "3.6", "--eos"], "--element"),
    (["--lattice", "fcc", "--element", "Cu", "--a", "3.6"], "nothing to compute"),
    (["--lattice", "fcc", "--element", "Cu", "--a", "3.6", "--surface", "11", "--eos"], "Miller"),
    (["--lattice", "fcc", "--element", "Cu", "--a", "3.6", "--eos", "--committee", "1"], "--committee"),
    (["--lattice", "fcc", "--element", "Cu", "--a", "3.6", "--eos", "--reference", "REF"], "key 'C11_GPa'"),
    (["--lattice", "fcc", "--element", "Cu", "--a", "3.6", "--phonons", "--supercell", "0", "1", "1"], "≥ 1"),
    (["--lattice", "fcc", "--element", "Cu", "--a", "3.6", "--eos", "--supercell", "2", "2", "2"], "--phonons"),
    (["--lattice", "fcc", "--element", "Cu", "--a", "3.6", "--c", "5", "--eos"], "hcp only"),
    (["--lattice", "hcp", "--element", "Cu", "--a", "2.5", "--c", "-4", "--eos"], "--c must be a positive length"),
    (["--structure", "MOLECULE", "--eos"], "periodic crystal"),
    (["--structure", "MOLECULE", "--element", "Cu", "--eos"], "--structure the file gives the cell"),
])
def test_cli_validate_errors_are_one_line(tmp_path, cu_model, capsys, argv, message):
    model = tmp_path / "cu.npz"
    cu_model.save(str(model))
    (tmp_path / "ref.json").write_text(json.dumps({"C11_GPa": "high"}))
    from ase import Atoms
    from ase.io import write
    write(tmp_path / "cluster.xyz", Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]]))
    subst = {"REF": str(tmp_path / "ref.json"), "MOLECULE": str(tmp_path / "cluster.xyz")}
    argv = [subst.get(a, a) for a in argv]
    assert main(["validate", str(model)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
