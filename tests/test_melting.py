"""Melting point by coexistence: the order parameter, the rate and crossing estimators, FEP, and a tiny EMT run."""
from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.calculators.emt import EMT

from gapfit.errors import InputError
from gapfit.validation import CalculatorEvaluator, PropertyResult, melting_point
from gapfit.validation.evaluate import Evaluation, Evaluator
from gapfit.validation.melting import (NoMeltingCrossing, coexistence_cell, free_energy_perturbation,
                                       interface_rate, layer_order_parameter, melting_crossing, melting_shift,
                                       phase_fep, solid_fraction)


class ShiftedEMT(Evaluator):
    """EMT with members that add a constant energy per atom: every member's free energy shifts by it exactly."""

    def __init__(self, shifts_eV_per_atom):
        self.calculator = EMT()
        self.shifts = np.asarray(shifts_eV_per_atom, dtype=float)
        self.n_members = len(self.shifts)

    def evaluate(self, atoms, *, forces=True, stress=False):
        a = atoms.copy()
        a.calc = self.calculator
        e = a.get_potential_energy()
        return Evaluation(np.concatenate([[e], e + self.shifts * len(a)]))


# ----------------------------------------------------------------------------- order parameter

@pytest.mark.parametrize("lattice", ["fcc", "bcc", "diamond"])
def test_perfect_crystal_layers_are_solid_and_strained_cells_too(lattice):
    atoms = coexistence_cell(lattice, "Cu", 3.6, (3, 3, 4))
    _, S, counts = layer_order_parameter(atoms, n_bins=8, lattice=lattice)
    assert np.allclose(S, 1.0) and counts.sum() == len(atoms)
    # the k vectors follow the cell: a laterally strained, shifted crystal is still perfectly ordered
    atoms.set_cell(atoms.cell.array * [[1.03], [1.03], [0.9]], scale_atoms=True)
    atoms.positions += [0.7, -0.3, 0.2]
    assert solid_fraction(atoms, n_bins=8, lattice=lattice) == 1.0


def test_random_positions_are_liquid_and_half_and_half_is_half():
    atoms = coexistence_cell("fcc", "Cu", 3.6, (3, 3, 8))
    rng = np.random.default_rng(3)
    liquid = atoms.copy()
    liquid.positions = rng.random((len(atoms), 3)) @ atoms.cell.array
    _, S, counts = layer_order_parameter(liquid, n_bins=8)
    assert np.all(S < 0.25)
    assert abs(S.mean() - 1 / counts.mean()) < 0.03  # a random bin's |ρ_k|² averages 1/N_b
    assert solid_fraction(liquid, n_bins=8) == 0.0
    half = atoms.copy()
    z = half.cell.scaled_positions(half.positions)[:, 2]
    top = z >= 0.5 - 1e-9
    half.positions[top] = (rng.random((top.sum(), 3)) * [1, 1, 0.5] + [0, 0, 0.5]) @ atoms.cell.array
    assert solid_fraction(half, n_bins=8) == pytest.approx(0.5)


def test_default_bins_hold_at_least_twelve_atoms():
    from gapfit.validation.melting import _default_bins_per_cell
    assert _default_bins_per_cell("fcc", (3, 3, 8)) == 2  # 18 atoms per (002) plane
    assert _default_bins_per_cell("fcc", (2, 2, 4)) == 1  # 8 per plane: one bin per cell, 16 atoms
    assert _default_bins_per_cell("diamond", (2, 2, 4)) == 2


def test_order_parameter_refuses_unknown_lattice_and_missing_repeats():
    atoms = coexistence_cell("fcc", "Cu", 3.6, (2, 2, 2))
    with pytest.raises(InputError, match="knows fcc"):
        layer_order_parameter(atoms, n_bins=2, lattice="hcp")
    atoms.info.pop("melting_lateral_repeats")
    with pytest.raises(InputError, match="lateral_repeats"):
        layer_order_parameter(atoms, n_bins=2)


# ----------------------------------------------------------------------------- rates and the crossing

def test_interface_rate_recovers_slope_and_stops_at_saturation():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 20, 201)
    f = 0.5 - 0.02 * t + rng.normal(0, 0.01, t.size)
    fit = interface_rate(t, f)
    assert abs(fit.rate_per_ps + 0.02) < 3 * fit.error_per_ps and fit.error_per_ps < 0.002
    assert fit.start_ps == pytest.approx(4.0) and not fit.saturated
    # melts through at 12.5 ps: the fit ends there instead of averaging in the flat zeros
    g = np.clip(0.5 - 0.04 * t, 0, 1)
    fit = interface_rate(t, g)
    assert fit.saturated and fit.end_ps == pytest.approx(12.5) and fit.rate_per_ps == pytest.approx(-0.04)
    # melted within the equilibration part: the window moves to the start, the sign is kept
    h = np.clip(0.5 - 0.5 * t, 0, 1)
    fit = interface_rate(t, h)
    assert fit.start_ps == 0.0 and fit.rate_per_ps < -0.3
    # a fraction that never moves: the error is the quantisation floor, not zero
    fit = interface_rate(t, np.full(t.size, 0.5), resolution=1 / 16)
    assert fit.rate_per_ps == 0.0 and fit.error_per_ps == pytest.approx(1 / 16 / np.sqrt(12) / 16.0)


def test_crossing_is_exact_on_a_line_and_within_its_error_with_noise():
    T = np.array([1200.0, 1250, 1300, 1350, 1400])
    exact = -0.002 * (T - 1318.0)
    c = melting_crossing(T, exact, np.full(5, 0.01))
    assert c.melting_temperature_K == pytest.approx(1318.0, abs=1e-9) and not c.extrapolated
    assert len(c.used) == 4 and c.slope_per_ps_K == pytest.approx(-0.002)
    rng = np.random.default_rng(1)
    misses = []
    for _ in range(200):
        err = np.full(5, 0.02)
        c = melting_crossing(T, exact + rng.normal(0, 0.02, 5), err)
        misses.append(abs(c.melting_temperature_K - 1318.0) / c.error_K)
    # a standard error: about 95 % within 2 of them (the weighted fit with known errors)
    assert 0.88 < np.mean(np.array(misses) < 2.0) <= 1.0


def test_crossing_refuses_all_melt_all_freeze_and_rising_rates():
    T = [1200.0, 1300, 1400]
    with pytest.raises(NoMeltingCrossing, match="every run melted.*below 1200 K"):
        melting_crossing(T, [-0.1, -0.2, -0.3], [0.01] * 3)
    with pytest.raises(NoMeltingCrossing, match="every run froze.*above 1400 K"):
        melting_crossing(T, [0.3, 0.2, 0.1], [0.01] * 3)
    with pytest.raises(NoMeltingCrossing, match="rise with temperature"):
        melting_crossing(T, [-0.1, 0.1, 0.2], [0.01] * 3)


# ----------------------------------------------------------------------------- FEP

def test_fep_liquid_only_shift_gives_c_over_entropy_and_equal_shifts_give_zero():
    rng = np.random.default_rng(2)
    n, T = 108, 1300.0
    c = np.array([0.004, -0.002, 0.001])
    v0_s = -3.5 * n + rng.normal(0, 0.3, 50)
    v0_l = -3.3 * n + rng.normal(0, 0.3, 50)
    solid = np.column_stack([v0_s] + [v0_s] * 3)
    liquid = np.column_stack([v0_l] + [v0_l + ck * n for ck in c])
    fs = free_energy_perturbation(solid, n, T)
    fl = free_energy_perturbation(liquid, n, T)
    assert np.allclose(fl.delta_f_eV_per_atom, c, atol=1e-12) and np.allclose(fs.delta_f_eV_per_atom, 0, atol=1e-12)
    assert np.allclose(fl.ess_fraction, 1.0)
    dS = 1.1 * units.kB
    assert np.allclose(melting_shift(fl.delta_f_eV_per_atom, fs.delta_f_eV_per_atom, dS), c / dS, rtol=1e-9)
    both = np.column_stack([v0_s] + [v0_s + ck * n for ck in c])
    fb = free_energy_perturbation(both, n, T)
    assert np.allclose(melting_shift(fl.delta_f_eV_per_atom, fb.delta_f_eV_per_atom, dS), 0.0, atol=1e-6)
    with pytest.raises(InputError, match="melting entropy must be positive"):
        melting_shift(fl.delta_f_eV_per_atom, fs.delta_f_eV_per_atom, -dS)


def test_fep_gaussian_differences_match_the_exact_free_energy_and_collapse_to_the_cumulant():
    rng = np.random.default_rng(4)
    n, T = 100, 1000.0
    beta = 1 / (units.kB * T)
    v0 = -300.0 + rng.normal(0, 1, 20000)
    mu, sigma = 0.05, 0.5 / beta  # β·σ = 0.5: the weights are healthy
    E = np.column_stack([v0, v0 + rng.normal(mu, sigma, v0.size), v0 + rng.normal(-mu, sigma, v0.size)])
    f = free_energy_perturbation(E, n, T)
    exact = (np.array([mu, -mu]) - beta * sigma ** 2 / 2) / n  # Gaussian ΔV: the cumulant series ends at 2nd order
    assert np.allclose(f.exponential_eV_per_atom, exact, atol=3e-5) and f.method == ("exponential",) * 2
    assert np.allclose(f.cumulant_eV_per_atom, exact, atol=3e-5)
    # β·σ = 4: a few frames carry the weight; the cumulant estimate takes over and is still right
    wide = 4 / beta
    E = np.column_stack([v0, v0 + rng.normal(mu, wide, v0.size), v0 + rng.normal(0, wide, v0.size)])
    f = free_energy_perturbation(E, n, T)
    assert f.method == ("cumulant",) * 2 and np.all(f.ess_fraction < 0.1)
    assert np.allclose(f.delta_f_eV_per_atom, (np.array([mu, 0]) - beta * wide ** 2 / 2) / n, atol=2e-4)
    # energies of thousands of eV do not overflow
    big = np.column_stack([v0 - 1e5, v0 - 1e5 + 50.0, v0 - 1e5 - 50.0])
    assert np.allclose(free_energy_perturbation(big, n, T).delta_f_eV_per_atom, [0.5, -0.5])


# ----------------------------------------------------------------------------- a tiny real run

def test_emt_coexistence_runs_melts_hot_keeps_cold_and_reports(tmp_path):
    res = melting_point(CalculatorEvaluator(EMT()), "Cu", 3.61, temperature_guess_K=1300.0,
                        temperatures_K=[300.0, 2500.0], cell=(2, 2, 4), steps=250, interval=10, lattice_steps=100,
                        melt_steps=250, cool_steps=50, bins_per_cell=1, progress=False, plot_dir=str(tmp_path),
                        require_crossing=False, seed=1)
    assert isinstance(res, PropertyResult) and res.name == "melting"
    runs = {r["temperature_K"]: r for r in res.details["runs"]}
    cold, hot = runs[300.0], runs[2500.0]
    for r in (cold, hot):
        assert len(r["time_ps"]) == 26 and len(r["solid_fraction"]) == 26
        assert 0.2 <= r["solid_fraction"][0] <= 0.75  # the coexistence start holds both phases
    assert hot["solid_fraction"][-1] < 0.2 and hot["rate_per_ps"] < 0
    assert cold["solid_fraction"][-1] >= cold["solid_fraction"][0] and cold["rate_per_ps"] >= 0
    assert cold["rate_per_ps"] > hot["rate_per_ps"]
    assert np.mean(hot["potential_energy_eV_per_atom"][-5:]) > np.mean(cold["potential_energy_eV_per_atom"][-5:])
    tm = res.values["melting_temperature_K"]
    assert 300.0 < tm < 2500.0 and res.std("melting_temperature_K") == res.values["melting_temperature_fit_error_K"]
    settings = res.details["settings"]
    assert settings["cell"] == [2, 2, 4] and settings["timestep_fs"] == 4.0 and settings["n_bins"] == 4
    assert any("MaskedMTKNPT" in line or "Berendsen" in line for line in res.details["log"])
    assert (tmp_path / "melting.png").stat().st_size > 0
    from gapfit.validation import report_json
    assert report_json({"melting": res})["melting_temperature_K"] == pytest.approx(tm)


def test_phase_fep_pipeline_with_shifted_members_gives_zero_spread():
    shifts = [0.002, -0.001, 0.003]
    out = phase_fep(ShiftedEMT(shifts), "fcc", "Cu", 3.68, 1400.0, repeat=2, steps=150, melt_steps=200,
                    progress=False)
    assert out["enthalpy_eV_per_atom"] > 0 and out["entropy_kB_per_atom"] > 0
    assert np.allclose(out["delta_f_solid_eV_per_atom"], shifts) and np.allclose(out["delta_f_liquid_eV_per_atom"],
                                                                                shifts)
    assert np.allclose(out["delta_T_K"], 0.0, atol=1e-6) and np.allclose(out["ess_fraction_liquid"], 1.0)


def test_bad_settings_are_refused_with_the_setting_named():
    ev = CalculatorEvaluator(EMT())
    with pytest.raises(InputError, match="at least 2 different temperatures"):
        melting_point(ev, "Cu", 3.61, temperature_guess_K=1300, temperatures_K=[1300])
    with pytest.raises(InputError, match="z repeat must be ≥ 2"):
        melting_point(ev, "Cu", 3.61, temperature_guess_K=1300, cell=(3, 3, 1))
    with pytest.raises(InputError, match="melting workflow builds cubic cells"):
        melting_point(ev, "Cu", 3.61, lattice="hcp", temperature_guess_K=1300)
    with pytest.raises(InputError, match="saves 2 frames"):
        melting_point(ev, "Cu", 3.61, temperature_guess_K=1300, steps=20, interval=10)


@pytest.mark.parametrize("extra, message", [
    ([], "--melting needs --melting-guess"),
    (["--melting-temperatures", "1300"], "at least two different positive temperatures"),
    (["--melting-guess", "1300", "--melting-steps", "50"], "--melting-steps must be at least 100"),
    (["--melting-guess", "1300", "--melting-cell", "3", "3", "1"], "z repeat ≥ 2"),
])
def test_cli_melting_refuses_bad_options_in_one_line(extra, message, capsys):
    from gapfit.cli import main
    rc = main(["validate", "absent.npz", "--lattice", "fcc", "--element", "Cu", "--a", "3.61", "--melting", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_melting_options_need_melting_and_a_cubic_lattice(capsys):
    from gapfit.cli import main
    assert main(["validate", "absent.npz", "--lattice", "fcc", "--element", "Cu", "--a", "3.61", "--eos",
                 "--melting-steps", "1000"]) == 2
    assert "--melting-steps sets the melting workflow: it needs --melting" in capsys.readouterr().err
    assert main(["validate", "absent.npz", "--lattice", "hcp", "--element", "Mg", "--a", "3.2", "--melting",
                 "--melting-guess", "900"]) == 2
    assert "--structure and hcp are not supported" in capsys.readouterr().err
