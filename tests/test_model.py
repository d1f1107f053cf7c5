"""Model behaviour: accuracy on shipped data, determinism, files, uncertainties, labels."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from ase.build import bulk

import gapfit
from conftest import FAST
from gapfit.data import get_labels
from gapfit.metrics import error_metrics


def _errors(model, frames):
    preds = model.predict(frames)
    labels = [get_labels(a, f"frame {k}") for k, a in enumerate(frames)]
    return error_metrics(preds, labels, [len(a) for a in frames])


def test_fit_on_shipped_data_reaches_stated_error(cu_model, cu_test):
    # Stated in README: EMT Cu test errors with these small settings.
    m = _errors(cu_model, cu_test)
    assert m["energy_mae_mev_per_atom"] < 2.0
    assert m["force_mae_mev_per_ang"] < 25.0
    assert m["stress_mae_gpa"] < 0.2


def test_same_seed_same_model_and_seed_matters(cu_train):
    frames = cu_train[:12]
    a = gapfit.GAP(**FAST, n_sparse=40, seed=3).fit(frames)
    b = gapfit.GAP(**FAST, n_sparse=40, seed=3).fit(frames)
    c = gapfit.GAP(**FAST, n_sparse=40, seed=4).fit(frames)
    assert np.array_equal(a.alpha_, b.alpha_)
    assert not np.array_equal(a.terms_[-1].points[29], c.terms_[-1].points[29])


@pytest.mark.parametrize("method", ["cur", "fps", "random"])
def test_sparse_methods_give_distinct_points(cu_train, method):
    m = gapfit.GAP(**FAST, n_sparse=50, sparse_method=method).fit(cu_train[:10])
    pts = m.terms_[-1].points[29]
    assert len(pts) == 50
    assert len(np.unique(np.round(pts, 10), axis=0)) == 50


def test_save_load_identical_predictions(cu_model, cu_test, tmp_path):
    path = tmp_path / "m.npz"
    cu_model.save(str(path))
    loaded = gapfit.load(str(path))
    p0 = cu_model.predict(cu_test[:3], uncertainty=True)
    p1 = loaded.predict(cu_test[:3], uncertainty=True)
    for a, b in zip(p0, p1):
        for key in ("energy", "forces", "stress", "energies", "energy_std", "forces_std", "local_energy_std"):
            assert np.array_equal(getattr(a, key), getattr(b, key)), key
    # no temporary files left behind by the atomic write, and the usual permissions
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_load_rejects_non_models_and_newer_versions(cu_model, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_text("this is not a model")
    with pytest.raises(gapfit.ModelFormatError, match="not a gapfit model"):
        gapfit.load(str(junk))
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(gapfit.ModelFormatError, match="not a gapfit model"):
        gapfit.load(str(other))
    good = tmp_path / "good.npz"
    cu_model.save(str(good))
    data = dict(np.load(good, allow_pickle=False))
    meta = json.loads(str(data["metadata"]))
    meta["format_version"] = 99
    data["metadata"] = np.array(json.dumps(meta))
    newer = tmp_path / "newer.npz"
    np.savez(newer, **data)
    with pytest.raises(gapfit.ModelFormatError, match="newer"):
        gapfit.load(str(newer))


def test_model_file_holds_no_pickled_objects(cu_model, tmp_path):
    path = tmp_path / "m.npz"
    cu_model.save(str(path))
    with np.load(path, allow_pickle=False) as data:  # raises if any entry needs pickle
        for name in data.files:
            assert data[name].dtype != object


def test_uncertainty_larger_away_from_training_data(cu_model, cu_train):
    train_like = cu_train[5]
    r_train = cu_model.predict([train_like], uncertainty=True)[0]
    # strongly compressed and disordered copper: unlike anything in training
    odd = bulk("Cu", "fcc", 3.2, cubic=True).repeat((2, 2, 2))
    odd.rattle(0.3, seed=1)
    r_odd = cu_model.predict([odd], uncertainty=True)[0]
    assert r_odd.local_energy_std.mean() > 3 * r_train.local_energy_std.mean()
    assert np.linalg.norm(r_odd.forces_std, axis=1).mean() > 3 * np.linalg.norm(r_train.forces_std, axis=1).mean()
    assert r_odd.energy_std / len(odd) > 3 * r_train.energy_std / len(train_like)
    for r in (r_train, r_odd):
        assert np.all(r.forces_std >= 0) and np.all(np.isfinite(r.forces_std))


def test_force_std_matches_brute_force_dtc_variance(cu_train):
    """Exact prior force variance vs finite differences of the kernel (small model)."""
    from gapfit.kernels import dot_kernel
    m = gapfit.GAP(**FAST, n_sparse=20).fit(cu_train[1:4])
    atoms = cu_train[2].copy()
    # prior covariance of E between two geometries: Σ_i Σ_i' k(q_i, q'_i')
    def qhat(a):
        return m.terms_[-1].compute([a], gradients=False)[0].values
    def kE(a, b):
        return dot_kernel(qhat(a), qhat(b), m.terms_[-1].delta_eV, m.zeta)[0].sum()
    h = 1e-3
    j, x = 1, 2
    ap, am = atoms.copy(), atoms.copy()
    ap.positions[j, x] += h
    am.positions[j, x] -= h
    # Var(dE/dr) = ∂²k(r, r')/∂r∂r' at r = r'
    fd = (kE(ap, ap) - kE(ap, am) - kE(am, ap) + kE(am, am)) / (4 * h * h)
    d = m.terms_[-1].compute([atoms], gradients=True)[0]
    exact = m.terms_[-1].prior_variance(d, forces=True).forces_eV2_per_A2[j, x]
    assert abs(exact - fd) < 1e-4 * abs(fd)


def test_labels_from_named_keys_and_sigma_overrides(cu_train):
    frames = [a.copy() for a in cu_train[1:8]]
    for a, src in zip(frames, cu_train[1:8]):
        a.info["dft_energy"] = src.get_potential_energy()
        a.arrays["dft_forces"] = src.get_forces()
        a.calc = None
    m = gapfit.GAP(**FAST, n_sparse=30, energy_key="dft_energy", forces_key="dft_forces",
                   config_type_sigma={"rattled": {"forces": 0.5}}).fit(frames)
    assert m.training_summary_["n_observations"]["forces"] == 3 * sum(len(a) for a in frames)
    assert m.training_summary_["n_observations"]["virial"] == 0


def test_frames_without_forces_or_stress_still_count(cu_train):
    frames = [a.copy() for a in cu_train[1:10]]
    from ase.calculators.singlepoint import SinglePointCalculator
    for k, (a, src) in enumerate(zip(frames, cu_train[1:10])):
        extra = {} if k < 3 else {"forces": src.get_forces()}
        a.calc = SinglePointCalculator(a, energy=src.get_potential_energy(), **extra)
    m = gapfit.GAP(**FAST, n_sparse=30).fit(frames)
    obs = m.training_summary_["n_observations"]
    assert obs["energy"] == 9
    assert obs["forces"] == 3 * sum(len(a) for a in frames[3:])


def test_predict_before_fit_names_fit():
    with pytest.raises(gapfit.NotFittedError, match="fit"):
        gapfit.GAP().predict([bulk("Cu")])


def test_unknown_species_at_prediction(cu_model):
    with pytest.raises(gapfit.InputError, match="Ag"):
        cu_model.predict([bulk("Ag", "fcc", 4.1)])


def test_mlearn_si_small_fit_regression(tmp_path):
    """Loose accuracy floor on real DFT data: a quick fit on part of mlearn Si."""
    from conftest import shared_file
    import ase.io
    train = ase.io.read(shared_file("mlearn", "Si_train.xyz"), "::4")
    test = ase.io.read(shared_file("mlearn", "Si_test.xyz"), ":")
    m = gapfit.GAP(n_max=6, l_max=6, n_sparse=400).fit(train)
    e = _errors(m, test)
    assert e["energy_mae_mev_per_atom"] < 15
    assert e["force_mae_mev_per_ang"] < 150
    assert e["stress_mae_gpa"] < 1.5


def _rounding_bounds(model, atoms):
    """First-order bounds on the absolute rounding error of each predicted quantity of ``atoms``, by key.

    Values are contractions kᵀα of design rows with the weights: computed in any
    order, each errs by at most γ_N Σ_m |k_m||α_m| (γ_N = N·u/(1 − N·u), u the
    unit roundoff; Higham, Accuracy and Stability, §3.1), where N counts the
    roundings in a row entry and its contraction: the normalisation and the dot
    product of D-long descriptors, the ζ-th power (ζ more), the sum over the
    frame's atoms or neighbour pairs, and the M-long sum with α. With α of
    ±1e5 from a near-singular v1 fit, Σ|k||α| is ~1e7 times the energy itself.

    Stds: a DTC variance var = p − ‖L⁻¹k‖² + ‖R⁻ᵀk‖² (prior p, Cholesky factor
    L of K_MM, QR factor R) is a small difference of large numbers (var/p ≈
    1e-8 for these energies). A backward-stable triangular solve of order n
    returns v̂ with ‖v̂ − v‖/‖v‖ ≤ γ_n cond(T, v), cond(T, v) = ‖|T⁻¹||T||v|‖/‖v‖
    Skeel's condition number (Higham, Thm 8.5 and §7.2), so ‖v̂‖² is good to
    2 γ_n cond(T, v) relative; the variance errs by at most γ_{M+1} (p + 2
    cond(L, v)‖v‖² + 2 cond(R, w)‖w‖²) and the std by that over 2 std.

    Every BLAS kernel (SkylakeX, Haswell, Zen, ...) sums in its own order inside
    these bounds: they follow from the model's conditioning, not from what one
    machine's rounding happened to be.
    """
    from scipy.linalg import solve_triangular
    from gapfit import sgp
    st = model.state_
    (L,) = st.kmm_chol                     # the v1 fixture has one SOAP block
    (term,) = st.terms
    M = len(L)
    R = st.R_ab[:M, :M]
    u = np.finfo(float).eps / 2

    def gamma(n):
        return n * u / (1 - n * u)

    ds = [d[0] for d in model.descriptors([atoms], gradients=True)]
    rows = model.design_rows([[d] for d in ds], forces=True, virial=True, local=True)
    n_features = ds[0].values.shape[1]
    g_value = gamma(M + len(atoms) + (term.to_dict()["zeta"] + 2) * n_features)
    alpha_abs = np.abs(st.alpha)
    out = {"energy": g_value * (np.abs(rows.energy) @ alpha_abs),
           "energies": g_value * (np.abs(rows.local) @ alpha_abs),
           "forces": g_value * (np.abs(rows.gradient) @ alpha_abs).reshape(-1, 3),
           "stress": g_value * (np.abs(rows.virial[0]) @ alpha_abs) / atoms.get_volume()}
    # |T⁻¹| enters only the bound (Skeel's condition), never a prediction
    abs_inv_L = np.abs(solve_triangular(L, np.eye(M), lower=True))
    abs_inv_Rt = np.abs(solve_triangular(R.T, np.eye(M), lower=True))
    priors = [t.prior_variance(d, forces=True) for t, d in zip(st.terms, ds)]
    for key, K, prior in (("energy_std", rows.energy, np.array([sum(p.energy_eV2 for p in priors)])),
                          ("local_energy_std", rows.local, sum(p.local_eV2 for p in priors)),
                          ("forces_std", rows.gradient, sum(p.forces_eV2_per_A2 for p in priors).ravel())):
        v = solve_triangular(L, K.T, lower=True)
        w = solve_triangular(R.T, K.T, lower=True)
        ny, post = (v ** 2).sum(0), (w ** 2).sum(0)
        cond_L = np.linalg.norm(abs_inv_L @ np.abs(L) @ np.abs(v), axis=0) / np.linalg.norm(v, axis=0)
        cond_R = np.linalg.norm(abs_inv_Rt @ np.abs(R.T) @ np.abs(w), axis=0) / np.linalg.norm(w, axis=0)
        std = np.sqrt(sgp.dtc_variance(K, prior, st.kmm_chol, st.R_ab))
        bound = gamma(M + 1) * (prior + 2 * cond_L * ny + 2 * cond_R * post) / (2 * std)
        out[key] = bound.reshape(-1, 3) if key == "forces_std" else bound
    return out


def test_v1_fixture_predicts_as_written(cu_test):
    """A model file of format v1 (written by the v1 release) predicts what that release predicted.

    To within the rounding that the model's conditioning allows (bounds derived
    in :func:`_rounding_bounds`), on the exact route that wrote the file's stds
    and on the default route, which sums the energy row in another order.
    """
    from pathlib import Path
    here = Path(__file__).parent / "fixtures"
    model = gapfit.load(str(here / "model_v1.npz"))
    ref = np.load(here / "model_v1_predictions.npz")
    preds = model.predict(cu_test[:3], uncertainty="exact")
    fast = model.predict(cu_test[:3], uncertainty=True)
    for k, (p, pf) in enumerate(zip(preds, fast)):
        for key, bound in _rounding_bounds(model, cu_test[k]).items():
            want = ref[f"{k}_{key}"]
            for route, pred in (("exact", p), ("fast", pf)):
                err = np.abs(np.asarray(getattr(pred, key)) - want)
                assert np.all(err <= bound), (k, key, route, float((err / bound).max()))
            # a bound this loose would no longer test anything
            assert np.all(bound <= 0.05 * np.abs(want).max()), (k, key)
    assert [t.type for t in model.terms_] == ["soap"]


@pytest.mark.parametrize("user_value, expected", [(None, "20"), ("28", "28")])
def test_import_sets_openblas_thread_timeout_before_numpy_loads(user_value, expected):
    # numpy's and scipy's OpenBLAS copies read the timeout once, when they load:
    # gapfit must set it before its own numpy import and never override the user's.
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if user_value is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = user_value
    code = ("import sys, builtins, os\n"
            "seen = {}\n"
            "real = builtins.__import__\n"
            "def spy(name, *a, **k):\n"
            "    if name == 'numpy' and 'numpy' not in seen:\n"
            "        seen['numpy'] = os.environ.get('OPENBLAS_THREAD_TIMEOUT')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = spy\n"
            "import gapfit\n"
            "gapfit.GAP  # the public names load numpy on first use\n"
            "print(seen.get('numpy'), os.environ['OPENBLAS_THREAD_TIMEOUT'])\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    at_numpy_import, after = out.stdout.split()
    assert at_numpy_import == expected and after == expected
