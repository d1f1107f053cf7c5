"""The Coulomb baseline: its physics on small cases, its parameters, its command line, and that a fitted
model carries it (model file, prediction, calculator, eval, MD).

The fitted data are Cu/Au cells labelled with EMT plus the Coulomb energy of fixed charges Cu +0.5,
Au -0.5 (an ionic toy: EMT is the short-range part a local model can learn).
"""
import json
import math

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import FAST

import gapfit
from gapfit.baselines import CoulombBaseline, SumBaseline, baseline_from_dict, residual_labels
from gapfit.cli import CLIError, _model_params, build_parser, main, parse_coulomb_spec
from gapfit.data import LabelReader
from gapfit.electrostatics import K_E
from gapfit.errors import InputError, ModelFormatError
from gapfit.params import check_params, check_species_settings

CHARGES = {"Cu": 0.5, "Au": -0.5}
#: Ewald accuracy of the labels and the models (the same: the residual is then EMT to round-off)
ACCURACY = 1e-7
CU, AU, NA, CL = 29, 79, 11, 17


# --------------------------------------------------------------------------- data
def _cuau_cell(rng) -> "ase.Atoms":
    """A rattled, strained 8-atom CuAu cell (L1_0 ordering: alternate (001) planes)."""
    a = bulk("Cu", "fcc", a=3.80, cubic=True).repeat((2, 1, 1))
    a.numbers[np.isclose(a.positions[:, 2] % 3.80, 1.90)] = AU
    strain = np.eye(3) + 0.015 * rng.standard_normal((3, 3))
    a.set_cell(a.cell.array @ strain, scale_atoms=True)
    a.positions += 0.06 * rng.standard_normal(a.positions.shape)
    return a


def _labelled(frames, charges_baseline):
    """Frames labelled with EMT + the Coulomb baseline (energy, forces, stress)."""
    out = []
    for a in frames:
        b = a.copy()
        b.calc = EMT()
        e, f, s = b.get_potential_energy(), b.get_forces(), b.get_stress()
        c = charges_baseline.evaluate(a)
        xx, yy, zz, yz, xz, xy = (c.virial_eV[0, 0], c.virial_eV[1, 1], c.virial_eV[2, 2], c.virial_eV[1, 2],
                                  c.virial_eV[0, 2], c.virial_eV[0, 1])
        s_c = np.array([xx, yy, zz, yz, xz, xy]) / a.get_volume()
        lab = a.copy()
        lab.calc = SinglePointCalculator(lab, energy=e + c.energy_eV, forces=f + c.forces_eV_per_A, stress=s + s_c)
        out.append(lab)
    return out


@pytest.fixture(scope="module")
def cuau():
    """12 training and 3 test frames, each with initial_charges equal to the species charges."""
    rng = np.random.default_rng(7)
    frames = [_cuau_cell(rng) for _ in range(15)]
    for a in frames:
        a.set_initial_charges([CHARGES["Cu"] if z == CU else CHARGES["Au"] for z in a.numbers])
    labelled = _labelled(frames, CoulombBaseline(CHARGES, accuracy=ACCURACY))
    return labelled[:12], labelled[12:]


FIT = dict(FAST, n_sparse=24, calibration_fraction=0.0, hygiene=False, seed=3)


@pytest.fixture(scope="module")
def fixed_model(cuau):
    return gapfit.GAP(**FIT, charges=dict(CHARGES), coulomb={"accuracy": ACCURACY}).fit(cuau[0])


def _coulomb_part(model):
    parts = model.state_.baseline.parts
    found = [p for p in parts if isinstance(p, CoulombBaseline)]
    assert len(found) == 1, [type(p).__name__ for p in parts]
    return found[0]


# --------------------------------------------------------------------------- the baseline's physics
@pytest.mark.parametrize("r", [3.0, 7.5, 15.0])
def test_ion_pair_in_vacuum_follows_coulombs_law(r):
    from ase import Atoms
    pair = Atoms("NaCl", positions=[[0, 0, 0], [r, 0, 0]])
    res = CoulombBaseline({"Na": 1, "Cl": -1}).evaluate(pair)
    assert res.energy_eV == pytest.approx(-K_E / r, rel=1e-12)
    assert np.allclose(res.local_energy_eV, -K_E / (2 * r), rtol=1e-12)
    # attraction: Na pulled towards +x, Cl towards -x, |F| = e²/(4πε0 r²)
    expected = np.array([[K_E / r ** 2, 0, 0], [-K_E / r ** 2, 0, 0]])
    assert np.allclose(res.forces_eV_per_A, expected, rtol=1e-10, atol=1e-14)
    assert res.virial_eV is None  # not periodic: no virial


def test_gaussian_charges_are_finite_at_contact_and_point_charges_far_away():
    from ase import Atoms
    sigma = 0.5
    base = CoulombBaseline({"Na": 1, "Cl": -1}, widths=sigma)
    self_energy = 2 * K_E / (2 * math.sqrt(math.pi) * sigma)  # each cloud in its own field: q² / (2√π σ)
    for r in (0.05, 1.0, 2.0, 12.0):
        res = base.evaluate(Atoms("NaCl", positions=[[0, 0, 0], [r, 0, 0]]))
        # two Gaussian clouds of std σ interact as erf(r / (2σ)) / r: finite as r -> 0
        assert res.energy_eV - self_energy == pytest.approx(-K_E * math.erf(r / (2 * sigma)) / r, rel=1e-10)
    # at contact the pair energy is -2/(√π 2σ), its limit, not -1/r
    close = base.evaluate(Atoms("NaCl", positions=[[0, 0, 0], [1e-4, 0, 0]]))
    assert close.energy_eV - self_energy == pytest.approx(-K_E / (math.sqrt(math.pi) * sigma), rel=1e-6)
    # far apart, point charges
    far = base.evaluate(Atoms("NaCl", positions=[[0, 0, 0], [12.0, 0, 0]]))
    assert far.energy_eV - self_energy == pytest.approx(-K_E / 12.0, rel=1e-12)


def test_forces_and_virial_of_a_periodic_cell_are_derivatives():
    rng = np.random.default_rng(1)
    a = _cuau_cell(rng)
    base = CoulombBaseline({"Cu": 0.7, "Au": -0.7}, accuracy=1e-8)
    res = base.evaluate(a)
    assert np.isclose(res.local_energy_eV.sum(), res.energy_eV, rtol=1e-12)
    h = 1e-4
    for i, k in [(0, 0), (3, 1), (6, 2)]:
        e = []
        for s in (1, -1):
            b = a.copy()
            b.positions[i, k] += s * h
            e.append(base.evaluate(b, forces=False, virial=False).energy_eV)
        assert res.forces_eV_per_A[i, k] == pytest.approx(-(e[0] - e[1]) / (2 * h), rel=1e-6, abs=1e-8)
    for x, y in [(0, 0), (1, 2), (2, 0)]:
        e = []
        for s in (1, -1):
            eps = np.eye(3)
            eps[x, y] += s * h / 2
            eps[y, x] += s * h / 2
            b = a.copy()
            b.set_cell(a.cell.array @ eps, scale_atoms=True)
            e.append(base.evaluate(b, forces=False, virial=False).energy_eV)
        assert res.virial_eV[x, y] == pytest.approx((e[0] - e[1]) / (2 * h), rel=1e-6, abs=1e-8)
    assert np.allclose(res.virial_eV, res.virial_eV.T)


def test_initial_charges_are_read_from_each_frame():
    rng = np.random.default_rng(2)
    a = _cuau_cell(rng)
    q = np.where(a.numbers == CU, 0.5, -0.5)
    a.set_initial_charges(q)
    fixed = CoulombBaseline(CHARGES).evaluate(a)
    read = CoulombBaseline("initial_charges").evaluate(a)
    assert read.energy_eV == fixed.energy_eV
    assert np.array_equal(read.forces_eV_per_A, fixed.forces_eV_per_A)
    # per-atom charges that no species table can give: the energy follows the frame
    q2 = q * np.linspace(0.5, 1.5, len(a))
    q2 -= q2.mean()
    a.set_initial_charges(q2)
    assert CoulombBaseline("initial_charges").evaluate(a).energy_eV != pytest.approx(fixed.energy_eV)
    del a.arrays["initial_charges"]
    with pytest.raises(InputError, match="initial_charges.*every frame fitted or predicted must carry them"):
        CoulombBaseline("initial_charges").evaluate(a)


def test_neutral_species_only_cost_nothing_and_a_missing_charge_is_named():
    from ase import Atoms
    res = CoulombBaseline({"Na": 0.0, "Cl": 0.0}).evaluate(Atoms("NaCl", positions=[[0, 0, 0], [2, 0, 0]]))
    assert res.energy_eV == 0.0 and not np.any(res.forces_eV_per_A)
    with pytest.raises(InputError, match=r"no charge for Cl.*Cl: e"):
        CoulombBaseline({"Na": 1.0}).evaluate(Atoms("NaCl", positions=[[0, 0, 0], [2, 0, 0]]))


def test_slabs_are_refused():
    a = _cuau_cell(np.random.default_rng(3))
    a.pbc = [True, True, False]
    with pytest.raises(InputError):
        CoulombBaseline(CHARGES).evaluate(a)


# --------------------------------------------------------------------------- model file entry
VARIANTS = [
    CoulombBaseline(CHARGES),
    CoulombBaseline("initial_charges", widths={"Cu": 0.4, "Au": 0.6}, accuracy=1e-5),
    CoulombBaseline({"Na": 1, "Cl": -1, "O": -0.834, "H": 0.417}, widths=0.5, screening=(1.0, 3.0),
                    source="learned from the data"),
]


@pytest.mark.parametrize("base", VARIANTS, ids=["fixed", "initial_charges", "widths_screening"])
def test_round_trip_through_plain_json(base):
    d = json.loads(json.dumps(base.to_dict()))
    back = baseline_from_dict(d)
    assert isinstance(back, CoulombBaseline) and back.to_dict() == base.to_dict()
    assert "Coulomb baseline" in back.describe() and "\n" not in back.describe()
    whole = baseline_from_dict(json.loads(json.dumps(SumBaseline([base]).to_dict())))
    assert whole.to_dict() == SumBaseline([base]).to_dict()


@pytest.mark.parametrize("change, field", [
    ({"charges_e": {"11": "one"}}, "charges_e"),
    ({"charges_e": {"Na": 1.0}}, "charges_e"),
    ({"charges_e": "learn"}, "charges_e"),
    ({"charges_e": {"11": float("nan")}}, "charges_e"),
    ({"widths_A": -0.5}, "widths_A"),
    ({"widths_A": {"11": 0.0}}, "widths_A"),
    ({"accuracy": 0.5}, "accuracy"),
    ({"accuracy": True}, "accuracy"),
    ({"screening_A": [3.0, 1.0]}, "screening_A"),
    ({"screening_A": [1.0]}, "screening_A"),
    ({"source": 3}, "source"),
    ({"code": "import os"}, "unknown field"),
])
def test_damaged_entries_are_model_format_errors(change, field):
    d = {**CoulombBaseline({"Na": 1, "Cl": -1}).to_dict(), **change}
    with pytest.raises(ModelFormatError, match=field):
        baseline_from_dict(d)
    d = CoulombBaseline({"Na": 1, "Cl": -1}).to_dict()
    del d["charges_e"]
    with pytest.raises(ModelFormatError, match="charges_e"):
        baseline_from_dict(d)


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("params, match", [
    ({"charges": "fixed"}, "charges must be a mapping"),
    ({"charges": {}}, "charges is empty"),
    ({"charges": {"Xx": 1.0}}, "'Xx' is not a chemical element"),
    ({"charges": {"Na": "1e0"}}, r"charges\['Na'\] must be a finite number.*YAML"),
    ({"charges": {"Na": float("inf")}}, "finite number"),
    ({"coulomb": [1, 2]}, "coulomb must be a mapping"),
    ({"coulomb": {"cutoff": 9.0}}, "unknown key 'cutoff'"),
    ({"coulomb": {"width": -1.0}}, r"coulomb\['width'\]"),
    ({"coulomb": {"width": {"Na": 0.0}}}, r"coulomb\['width'\]\['Na'\]"),
    ({"coulomb": {"accuracy": 0.2}}, r"coulomb\['accuracy'\] must be a number in \[1e-15, 0.1\)"),
    ({"coulomb": {"accuracy": 0.0}}, r"coulomb\['accuracy'\]"),
    ({"coulomb": {"accuracy": None}}, r"coulomb\['accuracy'\]"),
    ({"coulomb": {"accuracy": "1e-6"}}, "PyYAML reads 1e-6 as text"),
    ({"coulomb": {"screening": [3.0, 1.0]}}, "r_in < r_out"),
    ({"coulomb": {"screening": [1.0]}}, "two radii"),
])
def test_bad_parameters_are_named(params, match):
    with pytest.raises(InputError, match=match) as info:
        check_params(params)
    assert info.value.param == next(iter(params))


def test_good_parameters_pass():
    for charges in (None, "learn", "initial_charges", {"Na": 1, "Cl": -1.0}, {11: 1, "17": -1}):
        check_params({"charges": charges})
    check_params({"coulomb": {"width": {"Na": 0.5, "Cl": 0.7}, "accuracy": 1e-6, "screening": [1.0, 3.0]}})
    check_params({"coulomb": {"width": 0.5}})
    check_params({"coulomb": {}})


def test_species_of_the_data_need_a_charge():
    with pytest.raises(InputError, match=r"no charge for Cl.*--coulomb") as info:
        check_species_settings({"charges": {"Na": 1.0}}, [NA, CL])
    assert info.value.param == "charges"
    with pytest.raises(InputError, match=r"entries for \['O'\]"):
        check_species_settings({"charges": {"Na": 1.0, "Cl": -1.0, "O": -0.834}}, [NA, CL])
    with pytest.raises(InputError, match="no Gaussian width for Cl"):
        check_species_settings({"charges": "learn", "coulomb": {"width": {"Na": 0.5}}}, [NA, CL])
    with pytest.raises(InputError, match="no charges") as info:
        check_species_settings({"coulomb": {"accuracy": 1e-5}}, [NA, CL])
    assert info.value.param == "coulomb"
    for charges in ("learn", "initial_charges", {"Na": 1, "Cl": -1}):
        check_species_settings({"charges": charges, "coulomb": {"width": 0.5}}, [NA, CL])


# --------------------------------------------------------------------------- command line
def test_coulomb_spec_parsing():
    assert parse_coulomb_spec("Na=1 Cl=-1 O=-0.834 H=0.417") == {"Na": 1.0, "Cl": -1.0, "O": -0.834, "H": 0.417}
    assert parse_coulomb_spec("11=1, 17=-1") == {"Na": 1.0, "Cl": -1.0}
    assert parse_coulomb_spec("learn") == "learn"
    assert parse_coulomb_spec(" initial_charges ") == "initial_charges"
    for bad in ("Na=one", "Na", "Qq=1", "Na=1 Na=2", "", "Na=nan", "fixed"):
        with pytest.raises(CLIError, match=r"--coulomb.*expected \"learn\", \"initial_charges\""):
            parse_coulomb_spec(bad)
    args = build_parser().parse_args(["fit", "t.xyz", "-o", "m.npz", "--coulomb", "Na=1 Cl=-1"])
    assert _model_params(args, set()) == {"charges": {"Na": 1.0, "Cl": -1.0}}


def test_cli_dry_run_with_coulomb(cuau, tmp_path, capsys):
    train = str(tmp_path / "train.xyz")
    ase.io.write(train, cuau[0])
    out = str(tmp_path / "m.npz")
    for spec in ("Cu=0.5 Au=-0.5", "learn", "initial_charges"):
        assert main(["fit", train, "-o", out, "--dry-run", "--coulomb", spec]) == 0, spec
    capsys.readouterr()
    for spec, says in (("Cu=0.5", "no charge for Au"), ("Cu=0.5 Au=minus", "--coulomb")):
        assert main(["fit", train, "-o", out, "--dry-run", "--coulomb", spec]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and err.startswith("gapfit fit: error:"), err
    config = tmp_path / "c.yaml"
    config.write_text("charges: {Cu: 0.5, Au: -0.5}\ncoulomb: {width: {Cu: 0.4, Au: 0.6}, accuracy: 1.0e-6, "
                      "screening: [0.5, 2.0]}\n")
    assert main(["fit", train, "-o", out, "--dry-run", "--config", str(config)]) == 0
    config.write_text("charges: {Cu: 0.5, Au: -0.5}\ncoulomb: {accuracy: 1e-6}\n")
    capsys.readouterr()
    assert main(["fit", train, "-o", out, "--dry-run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "1.0e-6" in err
    assert not (tmp_path / "m.npz").exists()


# --------------------------------------------------------------------------- a fitted model carries it
def test_the_local_terms_are_fitted_to_the_labels_minus_coulomb(fixed_model, cuau):
    """With the charges of the data, the residual the GP terms see is EMT alone: the short-range part."""
    part = _coulomb_part(fixed_model)
    for a in cuau[0][:3]:
        res = residual_labels(part, a, LabelReader(None, None, None).read(a, "frame"))
        b = a.copy()
        b.calc = EMT()
        assert res.energy_eV == pytest.approx(b.get_potential_energy(), abs=1e-9)
        assert np.allclose(res.forces_eV_per_A, b.get_forces(), atol=1e-9)
        assert np.allclose(res.stress_eV_per_A3, b.get_stress(), atol=1e-11)


def test_fixed_charges_model_adds_the_coulomb_part_everywhere(fixed_model, cuau, tmp_path, capsys):
    import copy

    from gapfit import predictor
    from gapfit.calculator import GAPCalculator
    from gapfit.md import run_md
    from gapfit.metrics import error_metrics

    test = cuau[1]
    part = _coulomb_part(fixed_model)
    assert part.to_dict() == CoulombBaseline(CHARGES, accuracy=ACCURACY).to_dict()
    preds = fixed_model.predict(test)

    # the prediction minus that of the same state without its Coulomb part is the Coulomb baseline
    without = copy.copy(fixed_model.state_)
    without.baseline = SumBaseline([p for p in without.baseline.parts if not isinstance(p, CoulombBaseline)])
    for a, p, q in zip(test, preds, predictor.predict(without, test)):
        c = part.evaluate(a)
        assert abs(c.energy_eV) > 0.1  # a part that matters
        assert p.energy - q.energy == pytest.approx(c.energy_eV, abs=1e-9)
        assert np.allclose(p.forces - q.forces, c.forces_eV_per_A, atol=1e-9)
        assert np.allclose(p.energies - q.energies, c.local_energy_eV, atol=1e-9)
        v = c.virial_eV / a.get_volume()
        assert np.allclose(p.stress - q.stress, [v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]],
                           atol=1e-11)

    # the model file: the baseline comes back from plain JSON, and the predictions bit for bit
    path = str(tmp_path / "m.npz")
    fixed_model.save(path)
    loaded = gapfit.load(path)
    assert _coulomb_part(loaded).to_dict() == part.to_dict()
    assert loaded.charges == CHARGES and loaded.coulomb == {"accuracy": ACCURACY}
    for p, q in zip(preds, loaded.predict(test)):
        assert p.energy == q.energy and np.array_equal(p.forces, q.forces) and np.array_equal(p.stress, q.stress)

    # the ASE calculator gives the same numbers
    a = test[0].copy()
    a.calc = GAPCalculator(loaded, uncertainty=False)
    assert a.get_potential_energy() == pytest.approx(preds[0].energy, abs=1e-10)
    assert np.allclose(a.get_forces(), preds[0].forces, atol=1e-10)
    assert np.allclose(a.get_stress(), preds[0].stress, atol=1e-12)

    # MD: NVE conserves the total energy only if the forces are -grad of the whole energy, Coulomb included
    from ase import units
    start = test[0].copy()
    kT = 300 * units.kB
    start.set_momenta(np.random.default_rng(0).standard_normal((len(start), 3))
                      * np.sqrt(start.get_masses() * kT)[:, None])
    start.calc = GAPCalculator(loaded, uncertainty=False)
    e_start = start.get_potential_energy() + start.get_kinetic_energy()
    res = run_md(loaded, start, ensemble="nve", timestep_fs=0.5, steps=40, interval=20, init_velocities=False,
                 trajectory=str(tmp_path / "md.xyz"))
    assert res.steps == 40
    e_end = start.get_potential_energy() + start.get_kinetic_energy()
    assert abs(e_end - e_start) < 1e-4, (e_start, e_end)  # measured: 3e-6 eV over these 40 steps

    # gapfit eval scores the Coulomb-inclusive prediction
    data = str(tmp_path / "test.xyz")
    ase.io.write(data, test)
    capsys.readouterr()
    assert main(["eval", path, data, "--json", "--no-uncertainty", "--no-progress"]) == 0
    scored = json.loads(capsys.readouterr().out)
    written = ase.io.read(data, ":")  # what eval reads (positions and labels as written)
    expected = error_metrics(loaded.predict(written), LabelReader(None, None, None).read_all(written),
                             [len(a) for a in written])
    assert scored["energy_mae_mev_per_atom"] == pytest.approx(expected["energy_mae_mev_per_atom"], rel=1e-9)
    assert scored["force_mae_mev_per_ang"] == pytest.approx(expected["force_mae_mev_per_ang"], rel=1e-9)


def test_initial_charges_model_equals_the_fixed_one_and_needs_them(fixed_model, cuau):
    train, test = cuau
    model = gapfit.GAP(**FIT, charges="initial_charges", coulomb={"accuracy": ACCURACY}).fit(train)
    assert _coulomb_part(model).charges == "initial_charges"
    for p, q in zip(fixed_model.predict(test), model.predict(test)):
        assert q.energy == pytest.approx(p.energy, abs=1e-8)
        assert np.allclose(q.forces, p.forces, atol=1e-8)
    bare = test[0].copy()
    del bare.arrays["initial_charges"]
    with pytest.raises(InputError, match="initial_charges"):
        model.predict(bare)
