"""Hyperparameters from the likelihood and data hygiene from the factor.

Each quantity computed from stored factors is checked against a dense or
refitted reference computed independently: the log marginal likelihood
against the dense covariance, its gradient against finite differences, a
frame's leave-one-out residuals against a refit without it.
"""
from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
import scipy.linalg
from ase.calculators.singlepoint import SinglePointCalculator

import gapfit
from gapfit import hyper, sgp
from gapfit.cli import main
from conftest import DATA

SMALL_TERMS = [{"type": "distance_2b", "cutoff": 4.5, "n_sparse": 12},
               {"type": "soap", "cutoff": 4.5, "n_max": 3, "l_max": 3, "n_sparse": 25}]


@pytest.fixture(scope="module")
def small(cu_train):
    """A small fit (M = 37) on 10 frames, every row in the one factor."""
    frames = [cu_train[0]] + [a for a in cu_train if len(a) > 1][::4][:9]
    model = gapfit.GAP(terms=SMALL_TERMS, calibration_fraction=0.0, seed=3).fit(frames)
    return model, frames


def _weighted_system(model, frames):
    """Weighted rows, targets and the σ of every row, computed frame by frame from the public API."""
    labels = model.residual_labels(frames, [gapfit.data.get_labels(a, f"frame {k}") for k, a in enumerate(frames)])
    A, b, log_sigma = [], [], 0.0
    for a, lb in zip(frames, labels):
        Ak, bk = model.training_rows([a], [lb])
        A.append(Ak)
        b.append(bk)
        n = len(a)
        log_sigma += np.log(model.sigma_energy * np.sqrt(n))
        log_sigma += 3 * n * np.log(model.sigma_forces)
        if lb.stress_eV_per_A3 is not None and all(a.pbc):
            log_sigma += 6 * np.log(model.sigma_virial * np.sqrt(n))
    return A, b, log_sigma


def _kmm(model):
    blocks = [K for t in model.terms_ for K in t.kmm_blocks()]
    out = scipy.linalg.block_diag(*blocks)
    o = 0
    for K in blocks:
        out[o:o + len(K), o:o + len(K)] += model.jitter * np.mean(np.diag(K)) * np.eye(len(K))
        o += len(K)
    return out


def test_lml_from_factor_equals_dense_reference(small):
    model, frames = small
    A, b, log_sigma = _weighted_system(model, frames)
    A, b = np.vstack(A), np.concatenate(b)
    K = _kmm(model)
    # y ~ N(0, Σ + K_NM K_MM⁻¹ K_MN); in σ-weighted units C = I + A K⁻¹ Aᵀ
    C = np.eye(len(b)) + A @ np.linalg.solve(K, A.T)
    sign, logdet = np.linalg.slogdet(C)
    assert sign > 0
    dense = -0.5 * b @ np.linalg.solve(C, b) - 0.5 * logdet - log_sigma - 0.5 * len(b) * np.log(2 * np.pi)
    lml = model.log_marginal_likelihood()
    assert abs(lml - dense) <= 1e-8 * abs(dense), (lml, dense)
    # the stored per-group factors give the same value at unit scales
    problem = model.state_.likelihood
    assert abs(problem.evaluate(np.zeros(problem.n_params), gradient=False)[0] - dense) <= 1e-8 * abs(dense)


def test_lml_gradient_equals_finite_differences(small):
    problem = small[0].state_.likelihood
    x = np.random.default_rng(0).normal(0.0, 0.3, problem.n_params)
    _, grad = problem.evaluate(x)
    h = 1e-5
    fd = np.array([(problem.evaluate(x + e, False)[0] - problem.evaluate(x - e, False)[0]) / (2 * h)
                   for e in np.eye(problem.n_params) * h])
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-3 * np.max(np.abs(fd)))


def test_merged_factor_equals_factor_of_stacked_rows():
    rng = np.random.default_rng(1)
    blocks = [rng.standard_normal((n, 9)) for n in (30, 4, 17)]
    merged = sgp.merge_factors([sgp.qr_r(B)[:9] for B in blocks])
    serial = sgp.qr_r(np.vstack(blocks))
    np.testing.assert_allclose(np.abs(np.diag(merged)), np.abs(np.diag(serial)), rtol=1e-12)
    np.testing.assert_allclose(merged.T @ merged, serial.T @ serial, rtol=1e-10, atol=1e-10)
    # a group with fewer rows than columns stays as its rows, first or later in the merge
    acc = sgp.QRAccumulator(8)
    acc.add(blocks[1][:, :8], blocks[1][:, 8])
    assert acc.compact().shape == (4, 9)
    for order in ([acc.compact(), sgp.qr_r(blocks[0]), sgp.qr_r(blocks[2])[:9]],
                  [sgp.qr_r(blocks[0]), acc.compact(), sgp.qr_r(blocks[2])[:9]]):
        merged = sgp.merge_factors(order)
        np.testing.assert_allclose(merged.T @ merged, serial.T @ serial, rtol=1e-10, atol=1e-10)


def test_optimiser_recovers_from_tenfold_poor_start(cu_train):
    frames = [a for a in cu_train if len(a) > 1][::2]
    good = gapfit.GAP(terms=SMALL_TERMS, calibration_fraction=0.0, hygiene=False, optimize=True).fit(frames)
    poor_terms = [dict(t, delta=10.0 * good.training_summary_["hyperparameters"]["initial_delta_eV"][f"{k + 1}:{t['type']}"])
                  for k, t in enumerate(SMALL_TERMS)]
    poor = gapfit.GAP(terms=poor_terms, sigma_energy=0.03, sigma_forces=0.005, sigma_virial=0.5,
                      calibration_fraction=0.0, hygiene=False, optimize=True).fit(frames)
    hp = poor.training_summary_["hyperparameters"]
    assert hp["lml_final_fit_frames"] > hp["lml_initial_fit_frames"] + 100.0
    # both starts end at the same likelihood (within 0.01 per cent) and similar noise levels
    lml_good, lml_poor = good.log_marginal_likelihood(), poor.log_marginal_likelihood()
    assert abs(lml_good - lml_poor) <= 1e-4 * abs(lml_good), (lml_good, lml_poor)
    for kind in ("energy", "forces"):
        s_good = good.training_summary_["hyperparameters"]["sigma"][kind]
        s_poor = hp["sigma"][kind]
        assert 0.8 < s_poor / s_good < 1.25, (kind, s_good, s_poor)
    # the optimum is a maximum: no direction improves it
    problem = poor.state_.likelihood
    assert np.max(np.abs(problem.evaluate(np.zeros(problem.n_params))[1])) < 1e-2 * sum(problem.n_rows.values())


def test_optimised_model_round_trips(tmp_path, cu_train, cu_test):
    frames = [a for a in cu_train if len(a) > 1][::3]
    model = gapfit.GAP(terms=SMALL_TERMS, optimize=True, calibration_fraction=0.0).fit(frames)
    assert model.state_.noise_scale and set(model.state_.noise_scale) <= {"energy", "forces", "virial"}
    path = tmp_path / "opt.npz"
    model.save(str(path))
    back = gapfit.load(str(path))
    assert back.state_.noise_scale == pytest.approx(model.state_.noise_scale, rel=1e-15)
    assert back.log_marginal_likelihood() == pytest.approx(model.log_marginal_likelihood(), rel=1e-12)
    p0, p1 = model.predict(cu_test[:2]), back.predict(cu_test[:2])
    for a, b in zip(p0, p1):
        assert a.energy == b.energy
        np.testing.assert_array_equal(a.forces, b.forces)


def test_leave_one_out_equals_refit_without_the_frame(small):
    model, frames = small
    A, b, _ = _weighted_system(model, frames)
    st = model.state_
    M = st.n_columns
    for f in (3, 7):
        rows = np.vstack([st.prior_rows()] + [A[k] for k in range(len(frames)) if k != f])
        rhs = np.concatenate([np.zeros(M)] + [b[k] for k in range(len(frames)) if k != f])
        alpha, *_ = np.linalg.lstsq(rows, rhs, rcond=None)
        loo = b[f] - A[f] @ alpha  # residual of the refit, in units of σ
        n = len(frames[f])
        expect = {"energy_z": loo[0], "forces_z_rms": np.sqrt(np.mean(loo[1:1 + 3 * n] ** 2)),
                  "forces_z_max": np.max(np.abs(loo[1:1 + 3 * n])),
                  "virial_z_rms": np.sqrt(np.mean(loo[1 + 3 * n:] ** 2))}
        got = next(h for h in model.hygiene_.frames if h.index == f)
        for key, value in expect.items():
            assert getattr(got, key) == pytest.approx(value, rel=1e-6), (f, key)
        # and the report of the recomputed rows (gapfit inspect) equals the fit's
        again = next(h for h in model.hygiene_report(frames).frames if h.index == f)
        assert again.score == pytest.approx(got.score, rel=1e-8)
        assert again.leverage == pytest.approx(got.leverage, rel=1e-8)


def test_corrupted_frames_rank_at_the_top(cu_train):
    from conftest import FAST
    frames = []
    for a in cu_train:
        b = a.copy()
        b.calc = SinglePointCalculator(b, **{k: np.copy(v) if isinstance(v, np.ndarray) else v
                                             for k, v in a.calc.results.items()})
        frames.append(b)
    rng = np.random.default_rng(5)
    candidates = [k for k, a in enumerate(frames) if len(a) > 1]
    shifted = [int(k) for k in rng.choice(candidates, 3, replace=False)]
    moving = [k for k in candidates if k not in shifted
              and np.max(np.linalg.norm(frames[k].calc.results["forces"], axis=1)) > 0.1]
    kicked = [int(k) for k in rng.choice(moving, 2, replace=False)]
    for k in shifted:
        frames[k].calc.results["energy"] += 0.5
    for k in kicked:
        forces = frames[k].calc.results["forces"]
        i = int(rng.integers(len(forces)))
        v = rng.standard_normal(3)
        forces[i] = v / np.linalg.norm(v) * np.linalg.norm(forces[i])
    model = gapfit.GAP(**FAST, n_sparse=300, seed=1).fit(frames)
    ranks = [model.hygiene_.rank_of(k) for k in shifted + kicked]
    assert max(ranks) <= 8, (shifted, kicked, ranks, model.hygiene_.table(10))
    # clean frames of the same fit stay unremarkable: the corrupted ones are well apart
    clean = [h.score for h in model.hygiene_.frames if h.index not in shifted + kicked]
    assert min(model.hygiene_.frames[r - 1].score for r in ranks) > np.median(clean)


def test_cli_hygiene_csv_inspect_json_and_plot(tmp_path, capsys):
    out = tmp_path / "cu.npz"
    flags = ["--n-max", "3", "--l-max", "3", "--cutoff", "4.5", "--n-sparse", "60", "--no-progress"]
    assert main(["fit", str(DATA / "Cu_emt_train.xyz"), "-o", str(out)] + flags) == 0
    csv_text = (tmp_path / "cu.npz.hygiene.csv").read_text().splitlines()
    assert csv_text[0].startswith("rank,index,where,config_type,n_atoms,leverage,energy_z")
    assert len(csv_text) == 1 + 39  # every frame but the isolated atom
    capsys.readouterr()
    plot = tmp_path / "h.png"
    assert main(["inspect", str(out), str(DATA / "Cu_emt_train.xyz"), "--json", "--plot", str(plot),
                 "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    frames = report["frames"]
    assert len(frames) == 39
    for key in ("index", "config_type", "leverage", "energy_z", "forces_z_rms", "forces_z_max", "virial_z_rms"):
        assert key in frames[0]
    scores = [f["score"] for f in frames]
    assert scores == sorted(scores, reverse=True)
    # the CSV of the fit (spooled rows) and inspect (recomputed rows) agree
    first = next(csv.reader(csv_text[1:2]))
    assert int(first[1]) == frames[0]["index"]
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_drop_outliers_refits_without_them(tmp_path):
    out = tmp_path / "cu.npz"
    flags = ["--n-max", "3", "--l-max", "3", "--cutoff", "4.5", "--n-sparse", "60", "--no-progress"]
    assert main(["fit", str(DATA / "Cu_emt_train.xyz"), "-o", str(out), "--drop-outliers", "0.5"] + flags) == 0
    rows = list(csv.reader((tmp_path / "cu.npz.hygiene.csv").read_text().splitlines()))
    head, rows = rows[0], rows[1:]
    col = {name: k for k, name in enumerate(head)}
    dropped = [int(r[col["index"]]) for r in rows if r[col["dropped"]] == "1"]
    above = [int(r[col["index"]]) for r in rows if float(r[col["score"]]) > 0.5]
    assert dropped and sorted(dropped) == sorted(above)
    model = gapfit.load(str(out))
    assert model.training_summary_["n_frames"] == 40 - len(dropped)
    assert model.training_summary_["dropped_frames"] == sorted(dropped)
    assert str(dropped[0]) in (tmp_path / "cu.npz.log").read_text()


def test_inspect_bad_model_path_is_one_line_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.npz"), str(DATA / "Cu_emt_train.xyz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.npz" in err[0]


def test_cli_search_grid_picks_the_best_and_records_it(tmp_path, capsys):
    spec = tmp_path / "search.yaml"
    spec.write_text("method: cv\nfolds: 2\ngrid:\n  cutoff: [3.0, 4.5]\n")
    out = tmp_path / "cu.npz"
    flags = ["--n-max", "3", "--l-max", "3", "--n-sparse", "40", "--no-progress", "--no-hygiene",
             "--cutoff-transition-width", "0.5"]
    assert main(["fit", str(DATA / "Cu_emt_train.xyz"), "-o", str(out), "--search", str(spec)] + flags) == 0
    model = gapfit.load(str(out))
    record = model.training_summary_["search"]
    scores = {p["cutoff"]: p["score"] for p in record["points"]}
    assert set(scores) == {3.0, 4.5}
    best = min(scores, key=scores.get)
    assert record["best"] == {"cutoff": best}
    soap = next(t for t in model.terms_ if t.type == "soap")
    assert soap.cutoff == best
    log = (tmp_path / "cu.npz.log").read_text()
    assert "search over 2 points" in log and "<- best" in log


def test_search_file_errors_name_the_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    for text, words in (("grid:\n  cutof: [4.0]\n", ["bad.yaml", "cutof"]),
                        ("grid:\n  cutoff: 4.0\n", ["bad.yaml", "non-empty list"]),
                        ("method: bayes\ngrid:\n  cutoff: [4.0]\n", ["bad.yaml", "method"])):
        bad.write_text(text)
        code = main(["fit", str(DATA / "Cu_emt_train.xyz"), "-o", str(tmp_path / "m.npz"), "--search", str(bad)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and all(w in err[0] for w in words), err
        assert not (tmp_path / "m.npz").exists()


def test_noise_levels_per_config_type(tmp_path, cu_train):
    frames = [a for a in cu_train if len(a) > 1][::2]
    model = gapfit.GAP(terms=SMALL_TERMS, optimize="config_type", calibration_fraction=0.0, hygiene=False).fit(frames)
    types = {a.info["config_type"] for a in frames}
    scale = model.state_.noise_scale
    assert {k.split(":", 1)[1] for k in scale} == types
    assert {k.split(":", 1)[0] for k in scale} == {"energy", "forces", "virial"}
    hp = model.training_summary_["hyperparameters"]
    assert hp["sigma_mode"] == "config_type" and hp["lml_final_fit_frames"] > hp["lml_initial_fit_frames"]
    # the weights in use are those of the per-config_type σ: the stored likelihood equals the dense one
    A, b, _ = _weighted_system(model, frames)
    labels = [gapfit.data.get_labels(a, "") for a in frames]
    noise, scale = model.noise_model(), model.state_.noise_scale
    log_sigma = sum(np.log(noise.sigmas(a, lb, scale)["energy"] * np.sqrt(len(a)))
                    + 3 * len(a) * np.log(noise.sigmas(a, lb, scale)["forces"])
                    + 6 * np.log(noise.sigmas(a, lb, scale)["virial"] * np.sqrt(len(a)))
                    for a, lb in zip(frames, labels))
    A, b = np.vstack(A), np.concatenate(b)
    C = np.eye(len(b)) + A @ np.linalg.solve(_kmm(model), A.T)
    dense = -0.5 * b @ np.linalg.solve(C, b) - 0.5 * np.linalg.slogdet(C)[1] - log_sigma \
        - 0.5 * len(b) * np.log(2 * np.pi)
    # rel 1e-7: the optimised σ reach 2e-6 eV, so the dense reference itself rounds at ~1e-8
    # (a σ from the wrong group moves the likelihood by far more)
    assert model.log_marginal_likelihood() == pytest.approx(dense, rel=1e-7)
    path = tmp_path / "ct.npz"
    model.save(str(path))
    assert gapfit.load(str(path)).log_marginal_likelihood() == pytest.approx(dense, rel=1e-7)


# ------------------------------------------------- the optimiser's report and the floors on σ
class _Records(logging.Handler):
    """The records of the ``gapfit`` logger (which the command line stops from propagating)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self, level=logging.DEBUG):
        return "\n".join(r.getMessage() for r in self.records if r.levelno >= level)


@pytest.fixture
def gapfit_log():
    handler, logger = _Records(), logging.getLogger("gapfit")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _sigmas(problem, x):
    return {g: problem.sigma0[g] * float(np.exp(v)) for g, v in problem.split(x)[1].items()}


NO_FLOOR = {"energy": 0, "forces": 0, "virial": 0}


def test_optimiser_stop_is_described_in_words():
    # scipy >= 1.15 says "ABNORMAL: " with no reason; older ones ABNORMAL_TERMINATION_IN_LNSRCH
    for raw in ("ABNORMAL: ", "ABNORMAL_TERMINATION_IN_LNSRCH", b"ABNORMAL_TERMINATION_IN_LNSRCH"):
        converged, text = hyper.describe_stop(raw, 2, 5e-6, 200)
        assert converged and text.startswith("converged to within line-search precision")
        assert "line search found no better point" in text and "ABNORMAL_TERMINATION_IN_LNSRCH" in text
        assert "optimum is found to within the rounding" in text and "it is used" in text
        converged, text = hyper.describe_stop(raw, 2, 0.3, 200)
        assert not converged and text.startswith("not converged") and "may not be the optimum" in text
        assert "3.0e-01" in text
    converged, text = hyper.describe_stop("CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH", 0, 1e-7, 200)
    assert converged and text.startswith("converged: the likelihood stopped changing")
    converged, text = hyper.describe_stop("STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT", 1, 1e-2, 200)
    assert not converged and "limit of 200 iterations" in text


def test_sigma_never_goes_below_its_floor_and_the_floor_is_logged(small, gapfit_log):
    problem = small[0].state_.likelihood
    free = hyper.maximise(problem, sigma_floor=NO_FLOOR)
    assert free.converged and not free.at_floor and gapfit_log.text(logging.WARNING) == ""
    s_free = _sigmas(problem, free.x)
    # floors above the free optimum for forces and energy bind; the virial's far below does not
    floor = {"energy": 3 * s_free["energy"], "forces": 3 * s_free["forces"], "virial": 1e-3 * s_free["virial"]}
    res = hyper.maximise(problem, sigma_floor=floor)
    s = _sigmas(problem, res.x)
    for g in problem.groups:
        assert s[g] >= floor[g] * (1 - 1e-9), (g, s[g], floor[g])
    assert sorted(res.at_floor) == ["energy", "forces"] and res.sigma_floor == pytest.approx(floor)
    assert s["energy"] == pytest.approx(floor["energy"], rel=1e-9)
    assert res.lml_final <= free.lml_final + 1e-6 * abs(free.lml_final)  # a bound costs likelihood
    warning = gapfit_log.text(logging.WARNING)
    assert "σ at its floor" in warning and "energy" in warning and "forces" in warning and "virial" not in warning
    # a start below the floor starts from the floor and never goes under it
    high = {"energy": 3 * problem.sigma0["energy"], "forces": 0, "virial": 0}
    res = hyper.maximise(problem, sigma_floor=high)
    assert res.raised_to_floor == ["energy"] and "energy" in res.at_floor
    assert _sigmas(problem, res.x)["energy"] >= high["energy"] * (1 - 1e-9)
    assert "starts from the floor" in gapfit_log.text()


def test_floor_in_the_fit_log_and_summary(cu_train, gapfit_log):
    frames = [a for a in cu_train if len(a) > 1][::3]
    # this small model's free optimum is σ_F ≈ 9.5 meV/Å: a floor of 30 binds, the default ones need not
    model = gapfit.GAP(terms=SMALL_TERMS, optimize=True, calibration_fraction=0.0, hygiene=False,
                       sigma_floor={"forces": 0.03}).fit(frames)
    hp = model.training_summary_["hyperparameters"]
    assert hp["sigma_floor"] == {**hyper.SIGMA_FLOOR, "forces": 0.03}  # the kinds not given keep the defaults
    for g, floor in hp["sigma_floor"].items():
        assert hp["sigma"][g] >= floor * (1 - 1e-9)
    assert "forces" in hp["sigma_at_floor"] and hp["sigma"]["forces"] == pytest.approx(0.03, rel=1e-9)
    assert hp["converged"] and hp["optimizer_message"].startswith("converged")
    text = gapfit_log.text()
    line = next(t for t in text.splitlines() if t.startswith("hyperparameters: log marginal likelihood"))
    assert "(converged" in line and "ABNORMAL: )" not in line
    assert "σ forces: 0.05 -> 0.03 (its floor)" in text
    warning = gapfit_log.text(logging.WARNING)
    assert "σ at its floor:" in warning and "forces 0.03 eV/Å" in warning
    # a floor of 0 lets σ go below; the setting is checked by name
    low = gapfit.GAP(terms=SMALL_TERMS, optimize=True, calibration_fraction=0.0, hygiene=False,
                     sigma_floor={"forces": 0}).fit(frames)
    low_hp = low.training_summary_["hyperparameters"]
    assert low_hp["sigma"]["forces"] < 0.02 and "forces" not in low_hp["sigma_at_floor"]
    for bad in ({"force": 0.01}, {"forces": -1.0}, 0.01):
        with pytest.raises(gapfit.errors.InputError, match="sigma_floor"):
            gapfit.GAP(sigma_floor=bad)._validate()
