"""Committee reweighting of MD averages and the per-frame observables it averages.

The reweighting is checked on harmonic models whose canonical averages are
known in closed form (equipartition: ⟨x²⟩ = k_B T / k per degree of freedom),
sampled with numpy as correlated, MD-like series; the observables on crystals
whose neighbour shells are known and on random walks of known D.
"""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.data import atomic_masses, atomic_numbers
from scipy.signal import lfilter

from gapfit.errors import InputError
from gapfit.reweight import (block_standard_error, blocking_curve, committee_energies, coordination_number,
                             density_g_cm3, diffusion_coefficient, msd, potential_energy_per_atom, rdf, reweight,
                             volume_per_atom)

TEMPERATURE_K = 300.0
KT = units.kB * TEMPERATURE_K  # eV
K_SPRING = 1.0  # eV/Å², the mean model's spring


def ar1(rng, n, phi, size=()):
    """A stationary AR(1) series of unit variance along the first axis: an MD-like correlated sample.

    Its correlation time is (1+φ)/(1−φ) frames: the variance of its mean is (1/n)(1+φ)/(1−φ).
    """
    xi = rng.standard_normal((n,) + tuple(size))
    x0 = rng.standard_normal(tuple(size))
    # start in the stationary distribution: the filter's state carries x_{-1} = x0
    x, _ = lfilter([np.sqrt(1 - phi ** 2)], [1.0, -phi], xi, axis=0, zi=(phi * x0)[None])
    return x


def harmonic_run(rng, n_frames, springs, phi=0.8):
    """Mean-model MD of V̄ = ½ k x² at T (x Gaussian with variance kT/k, correlated), members ½ k_k x²."""
    x = np.sqrt(KT / K_SPRING) * ar1(rng, n_frames, phi)
    mean_energy = 0.5 * K_SPRING * x ** 2
    member_energy = 0.5 * np.asarray(springs)[:, None] * x[None, :] ** 2
    return x, member_energy, mean_energy


# ----------------------------------------------------------------------------- (a) exactness

def test_reweighted_harmonic_average_is_equipartition_within_its_error():
    springs = K_SPRING * np.array([0.8, 0.9, 1.1, 1.2])
    x, Vk, V = harmonic_run(np.random.default_rng(1), 40_000, springs)
    res = reweight(x ** 2, Vk, V, TEMPERATURE_K)
    exact = KT / springs  # Å², equipartition of each member
    assert res.method == ("weights",) * 4
    assert np.all(np.abs(res.member_average - exact) < 4 * res.member_statistical_error)
    # the members differ by far more than the noise: reweighting resolves a 10 % spring change
    assert np.all(np.abs(exact - KT / K_SPRING) > 5 * res.member_statistical_error)
    # the mean model's own average and its block error (variance of the mean of an AR(1) series: (1+φ)/(1−φ)/n)
    assert abs(res.mean_model_average - KT / K_SPRING) < 4 * res.statistical_error
    var_x2 = 2 * (KT / K_SPRING) ** 2
    # x² of an AR(1) x has correlation φ²ᵗ: its mean's variance has the factor (1+φ²)/(1−φ²)
    analytic = np.sqrt(var_x2 / len(x) * (1 + 0.8 ** 2) / (1 - 0.8 ** 2))
    assert 0.6 < res.statistical_error / analytic < 1.5
    assert res.committee_std == pytest.approx(np.std(res.member_average, ddof=1), rel=1e-12)


def test_member_errors_match_the_scatter_of_independent_runs():
    springs = K_SPRING * np.array([0.8, 1.25])
    rng = np.random.default_rng(7)
    estimates, reported = [], []
    for _ in range(40):
        x, Vk, V = harmonic_run(rng, 10_000, springs)
        res = reweight(x ** 2, Vk, V, TEMPERATURE_K)
        estimates.append(res.member_average)
        reported.append(res.member_statistical_error)
    scatter = np.std(estimates, axis=0, ddof=1)
    ratio = np.mean(reported, axis=0) / scatter
    # 40 runs know the scatter to about 11 %: the block error must agree with it, not merely be positive
    # (an error that took the correlated frames as independent would be about 2.1× too small here)
    assert np.all((ratio > 0.7) & (ratio < 1.4)), ratio


def test_block_error_of_correlated_series_reaches_the_analytic_plateau():
    phi, n = 0.9, 200_000
    x = ar1(np.random.default_rng(3), n, phi)
    analytic = np.sqrt((1 + phi) / (1 - phi) / n)
    err = block_standard_error(x)
    assert 0.6 < err / analytic < 1.5
    naive = x.std(ddof=1) / np.sqrt(n)
    assert naive < 0.4 * err  # frames are not independent samples
    sizes, curve = blocking_curve(x)
    assert sizes[0] == 1 and curve[0] == pytest.approx(naive, rel=1e-9)
    assert np.all(np.diff(sizes) == sizes[:-1])  # doubling
    long_blocks = curve[sizes >= 200]
    assert np.all((long_blocks / analytic > 0.5) & (long_blocks / analytic < 1.6))


# ----------------------------------------------------------------------------- (b) degeneration

def test_ess_falls_and_the_cumulant_estimate_takes_over_as_members_move_away():
    # d degrees of freedom: ΔV is a sum over them, like a sum over atoms; A = |x|²/d
    d, n = 10_000, 4_000
    eps = np.array([0.003, 0.01, 0.015, 0.03])
    rng = np.random.default_rng(11)
    s2 = KT / K_SPRING
    x2 = s2 * rng.chisquare(d, n)  # |x|² of independent frames of V̄ = ½ k |x|²
    V = 0.5 * K_SPRING * x2
    Vk = 0.5 * K_SPRING * (1 + eps)[:, None] * x2[None, :]
    res = reweight(x2 / d, Vk, V, TEMPERATURE_K, min_ess_fraction=0.1)
    assert np.all(np.diff(res.ess_fraction) < 0)
    # Gaussian theory: ESS/T = (E w)² / E w² = ((1+2ε)^½ / (1+ε))^d
    theory = (np.sqrt(1 + 2 * eps) / (1 + eps)) ** d
    near = theory > 0.3
    np.testing.assert_allclose(res.ess_fraction[near], theory[near], rtol=0.2)
    assert res.degenerate.tolist() == [False, False, False, True]
    assert res.method == ("weights", "weights", "weights", "cumulant")
    assert res.member_average[3] == res.cumulant_average[3]
    exact = s2 / (1 + eps)
    # the cumulant estimate is s²(1−ε): second order in ε away from s²/(1+ε)
    bias = eps ** 2 * exact
    assert np.all(np.abs(res.cumulant_average - exact) < 1.5 * bias + 4 * res.member_statistical_error)
    assert abs(res.member_average[3] - exact[3]) < 0.003 * exact[3]
    for k in range(3):  # where both hold, they agree
        assert abs(res.weighted_average[k] - exact[k]) < 4 * res.member_statistical_error[k]
    assert "cumulant estimate used" in res.summary()


def test_flag_threshold_zero_keeps_the_weights():
    x, Vk, V = harmonic_run(np.random.default_rng(2), 2_000, K_SPRING * np.array([0.2, 5.0]))
    res = reweight(x ** 2, Vk, V, TEMPERATURE_K, min_ess_fraction=0.0)
    assert res.method == ("weights", "weights")
    np.testing.assert_array_equal(res.member_average, res.weighted_average)


# ----------------------------------------------------------------------------- (c) identical members

def test_identical_members_give_uniform_weights_whatever_the_energy_offset():
    rng = np.random.default_rng(5)
    n = 500
    A = rng.normal(size=(n, 3, 4))
    V = 1e3 * rng.normal(size=n)  # energies of a large cell, eV
    # a constant shift of a member's energy, even 10⁵ eV, must cancel (the log-sum-exp keeps exp() in range)
    Vk = np.stack([V, V, V + 1e5])
    res = reweight(A, Vk, V, TEMPERATURE_K)
    np.testing.assert_allclose(res.weights, 1.0 / n, rtol=1e-12)
    np.testing.assert_allclose(res.ess, n, rtol=1e-12)
    np.testing.assert_allclose(res.member_average, np.broadcast_to(A.mean(axis=0), (3, 3, 4)), rtol=1e-10,
                               atol=1e-14)
    np.testing.assert_allclose(res.committee_std, 0.0, atol=1e-13)
    np.testing.assert_allclose(res.member_statistical_error,
                               np.broadcast_to(res.statistical_error, (3, 3, 4)), rtol=1e-9)
    assert not res.degenerate.any()


def test_array_observable_is_reweighted_entry_by_entry():
    x, Vk, V = harmonic_run(np.random.default_rng(4), 3_000, K_SPRING * np.array([0.9, 1.1, 1.2]))
    A = np.stack([x ** 2, np.abs(x), x ** 4], axis=1).reshape(-1, 3, 1)
    res = reweight(A, Vk, V, TEMPERATURE_K)
    assert res.member_average.shape == (3, 3, 1) and res.committee_std.shape == (3, 1)
    for j in range(3):
        one = reweight(A[:, j, 0], Vk, V, TEMPERATURE_K)
        np.testing.assert_allclose(res.member_average[:, j, 0], one.member_average, rtol=1e-12)
        np.testing.assert_allclose(res.member_statistical_error[:, j, 0], one.member_statistical_error,
                                   rtol=1e-12)


# ----------------------------------------------------------------------------- (d) observables

A_CU = 3.61  # Å


def test_rdf_of_fcc_copper_has_twelve_neighbours_at_a_over_root_two():
    frames = []
    for seed in range(3):
        a = bulk("Cu", "fcc", a=A_CU, cubic=True).repeat(4)  # 256 atoms, 14.4 Å cell
        a.rattle(0.02, seed=seed)
        frames.append(a)
    r, g = rdf(frames, 5.0, 200)
    assert g.shape == (3, 200) and r.shape == (200,)
    first = r[np.argmax(g[:, r < 3.0], axis=1)]
    np.testing.assert_allclose(first, A_CU / np.sqrt(2), atol=0.05)  # within two bins of 0.025 Å
    rho = 4 / A_CU ** 3
    cut1 = 0.5 * (A_CU / np.sqrt(2) + A_CU)
    np.testing.assert_allclose(coordination_number(g, r, rho, cut1), 12.0, rtol=1e-12)
    cut2 = 0.5 * (A_CU + A_CU * np.sqrt(1.5))
    np.testing.assert_allclose(coordination_number(g, r, rho, cut2), 18.0, rtol=1e-12)  # + 6 at a
    # ASE's own g(r) of one frame agrees (its routine averages frames; here it gets one at a time)
    from ase.geometry.rdf import get_rdf
    np.testing.assert_allclose(get_rdf(frames[1], 5.0, 200, no_dists=True), g[1], rtol=1e-10, atol=1e-12)


def test_rdf_counts_every_periodic_image_of_a_small_cell():
    prim = bulk("Cu", "fcc", a=A_CU)  # one atom, cell far below 2 r_max
    r, g = rdf(prim, 4.0, 160)
    cut1 = 0.5 * (A_CU / np.sqrt(2) + A_CU)
    assert coordination_number(g[0], r, 1 / prim.get_volume(), cut1) == pytest.approx(12.0, rel=1e-12)


def test_partial_rdfs_of_rock_salt():
    a0 = 5.64
    nacl = bulk("NaCl", "rocksalt", a=a0, cubic=True).repeat(2)
    nacl.rattle(0.02, seed=1)
    r, g = rdf([nacl], 5.0, 200, pairs=[("Na", "Cl"), ("Cl", "Na"), ("Na", "Na"), ("Cl", "Cl")])
    assert g.shape == (1, 4, 200)
    rho_half = 4 / a0 ** 3  # Na (or Cl) per Å³
    np.testing.assert_allclose(g[0, 0], g[0, 1], rtol=1e-12)  # g_AB = g_BA
    assert r[np.argmax(g[0, 0])] == pytest.approx(a0 / 2, abs=0.05)
    assert r[np.argmax(g[0, 2])] == pytest.approx(a0 / np.sqrt(2), abs=0.05)
    assert coordination_number(g[0, 0], r, rho_half, 0.5 * (a0 / 2 + a0 / np.sqrt(2))) == pytest.approx(6.0)
    assert coordination_number(g[0, 2], r, rho_half, 0.5 * (a0 / np.sqrt(2) + a0)) == pytest.approx(12.0)
    # the total is the concentration-weighted sum of the partials (c = ½ each)
    total = rdf([nacl], 5.0, 200).g[0]
    np.testing.assert_allclose(total, 0.25 * g[0].sum(axis=0), rtol=1e-12)
    # one pair given bare is a list of one
    np.testing.assert_array_equal(rdf([nacl], 5.0, 200, pairs=("Na", "Cl")).g[:, 0], g[:, 0])


def test_rdf_of_an_ideal_gas_is_one():
    rng = np.random.default_rng(0)
    L = 20.0
    frames = [Atoms("Ar400", positions=rng.uniform(0, L, (400, 3)), cell=[L] * 3, pbc=True) for _ in range(4)]
    r, g = rdf(frames, 6.0, 30)
    mean = g.mean(axis=0)[r > 2.0]
    # 400 atoms × 4 frames: each bin beyond 2 Å holds over 1,000 pairs, a few % noise
    assert abs(mean.mean() - 1.0) < 0.02
    assert np.all(np.abs(mean - 1.0) < 0.15)


def test_volume_density_and_energy_per_atom_of_known_cells():
    a0 = 3.615  # Å, copper at room temperature
    cu = bulk("Cu", "fcc", a=a0, cubic=True)
    big = cu.repeat((2, 1, 1))
    np.testing.assert_allclose(volume_per_atom([cu, big]), a0 ** 3 / 4, rtol=1e-12)
    amu_g = 1.66053906660e-24  # g, CODATA 2018 (ASE's units are CODATA 2014: 2e-8 apart)
    expected = 4 * atomic_masses[atomic_numbers["Cu"]] * amu_g / (a0 * 1e-8) ** 3
    np.testing.assert_allclose(density_g_cm3([cu, big]), expected, rtol=1e-7)
    assert density_g_cm3(cu)[0] == pytest.approx(8.96, rel=0.005)  # the handbook density of copper
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    assert density_g_cm3(nacl)[0] == pytest.approx(2.165, rel=0.005)
    e = potential_energy_per_atom([-14.0, -28.4], [4, 8])
    np.testing.assert_allclose(e, [-3.5, -3.55])
    np.testing.assert_allclose(potential_energy_per_atom([-14.0, -28.4], 4), [-3.5, -7.1])


def random_walk(rng, n_atoms, n_frames, D_A2_per_ps, dt_fs, L=10.0):
    """Unwrapped Brownian positions: each Cartesian step has variance 2 D Δt."""
    step = np.sqrt(2 * D_A2_per_ps * dt_fs * 1e-3)
    start = rng.uniform(0, L, (n_atoms, 3))
    pos = start + np.concatenate([np.zeros((1, n_atoms, 3)),
                                  np.cumsum(step * rng.standard_normal((n_frames - 1, n_atoms, 3)), axis=0)])
    return [Atoms(f"Ar{n_atoms}", positions=p, cell=[L] * 3, pbc=True) for p in pos]


def test_msd_of_random_walks_gives_their_diffusion_coefficient():
    D, dt = 0.5, 10.0  # Å²/ps, fs
    # one time origin per atom: each atom's slope is uncertain by some 25 %, so many atoms are needed
    frames = random_walk(np.random.default_rng(8), 2000, 300, D, dt)
    per_atom = msd(frames, dt, per_atom=True)
    assert per_atom.msd_A2.shape == (300, 2000)
    np.testing.assert_allclose(per_atom.time_fs, dt * np.arange(300))
    fit = diffusion_coefficient(per_atom, None)
    assert 0 < fit.error_A2_per_ps < 0.04 * D  # fine enough to tell 2·d = 6 from 5 or 7
    assert abs(fit.D_A2_per_ps - D) < 4 * fit.error_A2_per_ps
    assert fit.D_cm2_per_s == pytest.approx(fit.D_A2_per_ps * 1e-4, rel=1e-12)
    # the mean MSD gives the same slope (the fit is linear), with no error from one curve
    mean = msd(frames, dt)
    np.testing.assert_allclose(mean.msd_A2, per_atom.msd_A2.mean(axis=1), rtol=1e-12)
    fit_mean = diffusion_coefficient(mean.msd_A2, mean.time_fs)
    assert fit_mean.D_A2_per_ps == pytest.approx(fit.D_A2_per_ps, rel=1e-10)
    assert np.isnan(fit_mean.error_A2_per_ps)
    # MSD(t) = 6 D t on average at every time, not only in the fitted slope
    late = mean.time_fs > 1000
    assert np.all(np.abs(mean.msd_A2[late] / (6 * D * mean.time_fs[late] * 1e-3) - 1) < 0.1)


def test_wrapped_positions_are_refused_or_unwrapped():
    D, dt = 0.5, 10.0
    frames = random_walk(np.random.default_rng(9), 50, 400, D, dt, L=6.0)
    reference = msd(frames, dt)
    wrapped = [a.copy() for a in frames]
    for a in wrapped:
        a.wrap()
    assert not np.allclose(wrapped[-1].positions, frames[-1].positions)  # some atoms did cross
    with pytest.raises(InputError, match="unwrap=True"):
        msd(wrapped, dt)
    np.testing.assert_allclose(msd(wrapped, dt, unwrap=True).msd_A2, reference.msd_A2, rtol=1e-9, atol=1e-9)
    # drift removal: a uniform translation of all atoms does not count
    shifted = [a.copy() for a in frames]
    for k, a in enumerate(shifted):
        a.positions += 0.01 * k
    np.testing.assert_allclose(msd(shifted, dt, remove_drift=True).msd_A2,
                               msd(frames, dt, remove_drift=True).msd_A2, rtol=1e-9, atol=1e-12)


def test_committee_energies_feed_reweight(cu_train, cu_test):
    import gapfit
    from gapfit.committee import Committee
    from conftest import FAST
    # a small fit of its own: the shared model's fit would take most of this file's time budget
    model = gapfit.GAP(**FAST, n_sparse=40, seed=1).fit([a for a in cu_train if len(a) <= 8][:6])
    frames = cu_test[:6]
    committee = Committee(model, 4, seed=3)
    Vk, V = committee_energies(committee, frames)
    assert Vk.shape == (4, 6) and V.shape == (6,)
    # energies without forces take another descriptor path: 1e-7 eV is far below any error
    np.testing.assert_allclose(V, [p.energy for p in model.predict(frames)], rtol=0, atol=1e-7)
    # each frame's column is the committee's energy spread, the one its own predictions report
    spread = Vk.std(axis=0, ddof=1)
    # (a fresh committee of the same seed: predictive members drawn on the same frames in the same order)
    again = Committee(model, 4, seed=3).predict(frames)
    np.testing.assert_allclose(spread, [p.energy_std for p in again], rtol=1e-6)
    assert np.all(spread > 0)
    res = reweight(potential_energy_per_atom(V, [len(a) for a in frames]), Vk, V, TEMPERATURE_K)
    assert res.member_average.shape == (4,) and np.all(res.ess >= 1) and np.all(res.ess <= 6 + 1e-9)


# ----------------------------------------------------------------------------- (e) bad input

@pytest.mark.parametrize("change, argument", [
    (dict(mean=np.zeros(99)), "mean_energies_eV"),
    (dict(members=np.zeros((3, 99))), "member_energies_eV"),
    (dict(members=np.zeros(100)), "member_energies_eV"),
    (dict(members=np.zeros((1, 100))), "member_energies_eV"),
    (dict(temperature=0.0), "temperature_K"),
    (dict(temperature=-300.0), "temperature_K"),
    (dict(temperature=float("nan")), "temperature_K"),
    (dict(observable=np.zeros(0)), "observable"),
    (dict(observable=np.full(100, np.nan)), "observable"),
    (dict(fraction=1.5), "min_ess_fraction"),
    (dict(blocks=1), "n_blocks"),
])
def test_bad_reweight_input_names_the_argument(change, argument):
    args = dict(observable=np.ones(100), members=np.zeros((3, 100)), mean=np.zeros(100), temperature=300.0,
                fraction=0.1, blocks=20)
    args.update(change)
    with pytest.raises(InputError, match=argument) as info:
        reweight(args["observable"], args["members"], args["mean"], args["temperature"],
                 min_ess_fraction=args["fraction"], n_blocks=args["blocks"])
    assert info.value.param == argument


def test_bad_observable_input_names_the_argument():
    cu = bulk("Cu", "fcc", a=A_CU, cubic=True)
    with pytest.raises(InputError, match="r_max_A"):
        rdf([cu], 0.0, 10)
    with pytest.raises(InputError, match="n_bins"):
        rdf([cu], 4.0, 0)
    with pytest.raises(InputError, match="pairs"):
        rdf([cu], 4.0, 10, pairs=[("Cu", "Xx")])
    with pytest.raises(InputError, match="pairs"):
        rdf([cu], 4.0, 10, pairs=[("Cu", "Na")])  # no Na in the frame
    with pytest.raises(InputError, match="frames"):
        rdf([Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]])], 4.0, 10)  # no cell
    with pytest.raises(InputError, match="frames"):
        volume_per_atom([cu, "not a frame"])
    with pytest.raises(InputError, match="timestep_fs"):
        msd([cu, cu], -1.0)
    with pytest.raises(InputError, match="frames"):
        msd([cu, cu.repeat((2, 1, 1))], 1.0)
    with pytest.raises(InputError, match="msd_A2"):
        diffusion_coefficient(np.zeros(10), np.arange(11.0))
    with pytest.raises(InputError, match="n_atoms"):
        potential_energy_per_atom([1.0, 2.0], [4, 0])
    r, g = rdf([cu], 4.0, 10)
    with pytest.raises(InputError, match="r_A"):
        coordination_number(g, r + 0.1, 0.08, 3.0)  # not the centres of bins from 0
