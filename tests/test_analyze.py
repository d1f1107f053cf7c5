"""gapfit md --committee K and gapfit analyze: committee energies in every frame, reweighted averages, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import gapfit  # noqa: I001  first: it sets OpenBLAS's thread timeout before numpy loads
import ase.io
import numpy as np
import pytest
from ase import units
from ase.build import bulk

from gapfit.analyze import analyze, read_trajectory
from gapfit.cli import main
from gapfit.committee import Committee
from gapfit.errors import InputError

from conftest import DATA, FAST

K = 4
STEPS, INTERVAL = 40, 4  # 11 frames


@pytest.fixture(scope="module")
def cu_file(tmp_path_factory) -> Path:
    """A tiny Cu model (every other EMT training frame, small SOAP, 100 sparse points) saved to a file."""
    frames = ase.io.read(DATA / "Cu_emt_train.xyz", "::2")
    path = tmp_path_factory.mktemp("analyze-model") / "cu.npz"
    gapfit.GAP(**FAST, n_sparse=100, seed=1, progress=False).fit(frames).save(str(path))
    return path


def _start(path: Path) -> Path:
    atoms = bulk("Cu", "fcc", 3.61, cubic=True).repeat(2)  # 32 atoms
    atoms.rattle(0.03, seed=1)
    ase.io.write(path, atoms)
    return path


@pytest.fixture(scope="module")
def npt_run(cu_file, tmp_path_factory) -> Path:
    """An NPT run through the command line with --committee 4: its trajectory."""
    d = tmp_path_factory.mktemp("analyze-md")
    traj = d / "md.xyz"
    assert main(["md", str(cu_file), str(_start(d / "start.xyz")), "--ensemble", "npt", "--temperature", "500",
                 "--steps", str(STEPS), "--interval", str(INTERVAL), "--committee", str(K), "--committee-seed", "3",
                 "-o", str(traj), "--no-progress"]) == 0
    return traj


def test_every_frame_carries_each_members_energy_and_stress_as_a_committee_recomputes_them(cu_file, npt_run):
    """Each saved frame holds K member energies (eV) and K×6 stresses (eV/Å³) equal to a Committee of the same
    model, size and seed evaluated on the saved frame, the mean model's energy, and the run's temperature."""
    model = gapfit.load(str(cu_file))
    committee = Committee(model, K, seed=3)
    frames = ase.io.read(npt_run, ":")
    assert len(frames) == STEPS // INTERVAL + 1
    assert [a.info["step"] for a in frames] == list(range(0, STEPS + 1, INTERVAL))
    spreads = []
    for a in frames:
        assert a.info["gapfit_temperature_K"] == 500.0 and a.info["gapfit_ensemble"] == "npt"
        assert a.info["gapfit_committee_seed"] == 3
        e = np.asarray(a.info["gapfit_energy_committee"])
        s = np.asarray(a.info["gapfit_stress_committee"])
        assert e.shape == (K,) and s.shape == (K, 6)
        cp = committee.predict(a.copy())[0]
        # predictive members: values drawn are pinned, those left below the draw tolerance move by ~1e-6 eV
        np.testing.assert_allclose(e, cp.energy_eV, rtol=0, atol=5e-6)
        # predictive members: energies are pinned where drawn; their derivatives depend on which environments
        # were drawn before (the run drew at every written step, at positions the file rounds): 5e-7 eV/Å³ seen,
        # 1e-4 GPa
        np.testing.assert_allclose(s, cp.stress_eV_per_A3, rtol=0, atol=2e-6)
        np.testing.assert_allclose(a.get_potential_energy(), cp.mean.energy, rtol=0, atol=1e-6)
        spreads.append(np.ptp(e))
    assert min(spreads) > 1e-6  # the members differ: the comparison above is not of K copies of one energy
    # NPT: the cell moves, so the volume is a real observable
    assert np.ptp([a.get_volume() for a in frames]) > 1e-3


def test_committee_costs_no_descriptor_pass_and_only_the_written_steps_design_rows(cu_file, tmp_path):
    """run_md(committee=K) evaluates descriptors once per step (the members come from the step's own), and the
    members' design rows only on the steps written, without the members' forces."""
    from gapfit.md import run_md
    model = gapfit.load(str(cu_file))
    state = model.state_
    descriptor_calls, row_calls = [], []
    descriptors, design_rows = state.descriptors, state.design_rows
    state.descriptors = lambda frames, **kw: descriptor_calls.append(len(frames)) or descriptors(frames, **kw)
    state.design_rows = lambda descs, **kw: row_calls.append(kw) or design_rows(descs, **kw)
    atoms = ase.io.read(_start(tmp_path / "start.xyz"))
    res = run_md(model, atoms, ensemble="nvt", temperature_K=300, steps=10, interval=5, seed=0, committee=K,
                 trajectory=str(tmp_path / "md.xyz"))
    assert res.steps == 10 and res.stop_reason == "completed"
    assert len(descriptor_calls) == res.steps + 1
    assert len(row_calls) == 3 and all(kw["forces"] is False and kw["virial"] is True for kw in row_calls)
    assert len(ase.io.read(tmp_path / "md.xyz", ":")) == 3


def test_a_frame_written_between_intervals_carries_the_members_too(cu_file, tmp_path):
    """A watch that stops the run off the interval writes that frame with its members (one more evaluation)."""
    from gapfit.md import run_md
    model = gapfit.load(str(cu_file))
    atoms = ase.io.read(_start(tmp_path / "start.xyz"))
    res = run_md(model, atoms, ensemble="nvt", temperature_K=300, steps=10, interval=5, seed=0, committee=K,
                 on_check=lambda step, a, pred: "enough" if step == 3 else None, trajectory=str(tmp_path / "md.xyz"))
    assert res.stop_reason == "enough" and res.steps == 3
    frames = ase.io.read(tmp_path / "md.xyz", ":")
    assert [a.info["step"] for a in frames] == [0, 3]
    com = Committee(model, K, seed=0)
    com.predict(frames[0].copy())  # the run's members drew at step 0 first: replay that
    cp = com.predict(frames[1].copy())[0]
    np.testing.assert_allclose(frames[1].info["gapfit_energy_committee"], cp.energy_eV, rtol=0, atol=1e-6)
    # (stresses of predictive members depend on the draws made before, see above)
    np.testing.assert_allclose(frames[1].info["gapfit_stress_committee"], cp.stress_eV_per_A3, rtol=0, atol=2e-6)


def test_bad_committee_sizes_are_refused_in_one_line(cu_file, tmp_path, capsys):
    from gapfit.md import run_md
    model = gapfit.load(str(cu_file))
    atoms = ase.io.read(_start(tmp_path / "start.xyz"))
    for bad in (1, -2, 2.5, True):
        with pytest.raises(InputError, match="committee"):
            run_md(model, atoms.copy(), steps=1, committee=bad)
    assert main(["md", str(cu_file), str(tmp_path / "start.xyz"), "--steps", "2", "--committee", "1",
                 "-o", str(tmp_path / "x.xyz"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--committee must be 0" in err and "Traceback" not in err


def _weights(traj, T):
    dV = traj.member_energies_eV - traj.mean_energies_eV
    logw = -dV / (units.kB * T)
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


def test_member_averages_are_the_reweighted_ones_and_each_member_averages_its_own_energy(npt_run):
    traj = read_trajectory(str(npt_run))
    w = _weights(traj, 500.0)
    n = len(traj.frames[0])
    volume = analyze(traj, "volume", min_ess_fraction=0)
    v = np.array([a.get_volume() / len(a) for a in traj.frames])
    np.testing.assert_allclose(volume.result.member_average, w @ v, rtol=1e-12)
    assert volume.temperature_K == 500.0 and "thermostat" in volume.temperature_source
    energy = analyze(traj, "energy", min_ess_fraction=0)
    own = np.einsum("kt,kt->k", w, traj.member_energies_eV) / n  # ⟨V_k/N⟩_k, not ⟨V̄/N⟩_k
    np.testing.assert_allclose(energy.result.member_average, own, rtol=0, atol=1e-12)
    np.testing.assert_allclose(energy.result.mean_model_average, traj.mean_energies_eV.mean() / n, atol=1e-12)
    np.testing.assert_allclose(energy.result.committee_std, own.std(ddof=1), rtol=1e-10)
    # --temperature sets β
    hot = analyze(traj, "volume", temperature_K=5000.0, min_ess_fraction=0)
    assert hot.temperature_source == "given" and hot.temperature_K == 5000.0
    np.testing.assert_allclose(hot.result.member_average, _weights(traj, 5000.0) @ v, rtol=1e-12)


def test_identical_members_give_the_plain_average(npt_run, tmp_path):
    """A committee whose members all equal the mean model: every member's average is the mean model's plain
    average, the committee std is 0 and every frame counts (ESS = T)."""
    frames = ase.io.read(npt_run, ":")
    for a in frames:
        a.info["gapfit_energy_committee"] = np.full(K, a.get_potential_energy())
    same = tmp_path / "same.xyz"
    ase.io.write(same, frames, format="extxyz")
    for observable in ("energy", "volume", "rdf"):
        res = analyze(str(same), observable, r_max_A=5.0, n_bins=40).result
        np.testing.assert_allclose(res.member_average, np.broadcast_to(res.mean_model_average,
                                                                       res.member_average.shape), atol=1e-12)
        np.testing.assert_allclose(res.committee_std, 0.0, atol=1e-12)
        np.testing.assert_allclose(res.ess, len(frames), rtol=1e-12)
        assert res.method == ("weights",) * K
    plain = np.mean([a.get_volume() / len(a) for a in frames])
    assert analyze(str(same), "volume").result.committee_mean == pytest.approx(plain, rel=1e-12)


def test_cli_table_json_and_plot(npt_run, tmp_path, capsys):
    """The table names the averages, errors and ESS; --json holds every field; --plot writes the g(r) band."""
    assert main(["analyze", str(npt_run), "--observable", "energy"]) == 0
    out = capsys.readouterr().out
    assert "committee mean" in out and "mean model" in out and "ESS" in out and "500 K" in out
    assert len([line for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]) == K

    plot = tmp_path / "g.png"
    assert main(["analyze", str(npt_run), "--observable", "rdf", "--r-max", "5", "--bins", "50", "--json",
                 "--plot", str(plot), "--skip", "1"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("committee_mean", "committee_std", "mean_model_average", "statistical_error", "member_average",
                "member_statistical_error", "ess", "ess_fraction", "method", "warnings", "temperature_K", "r_A"):
        assert key in d, key
    assert d["observable"] == "rdf" and d["frames"] == STEPS // INTERVAL and d["skipped"] == 1
    assert len(d["r_A"]) == 50 and len(d["committee_mean"]) == 50 and len(d["ess"]) == K
    assert np.array(d["member_average"]).shape == (K, 50)
    assert 2.2 < d["summary"]["peak_r_A"] < 2.8 and d["summary"]["peak_height_committee_mean"] > 2
    assert plot.stat().st_size > 5000 and plot.read_bytes()[:4] == b"\x89PNG"

    assert main(["analyze", str(npt_run), "--observable", "msd", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["summary"]["D_A2_per_ps_members"]) == K and d["lag_fs"][1] == pytest.approx(INTERVAL * 1.0)
    assert any("indication" in w for w in d["warnings"])


def test_a_trajectory_without_committee_energies_exits_2_naming_the_file(cu_file, npt_run, tmp_path, capsys):
    frames = ase.io.read(npt_run, ":")
    del frames[2].info["gapfit_energy_committee"]
    bare = tmp_path / "bare.xyz"
    ase.io.write(bare, frames, format="extxyz")
    assert main(["analyze", str(bare), "--observable", "energy"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == ""
    assert str(bare) in lines[0] and "frame 2" in lines[0] and "--committee K" in lines[0]
    assert main(["analyze", str(npt_run), "--observable", "energy", "--skip", "11"]) == 2
    assert "--skip 11" in capsys.readouterr().err
    assert main(["analyze", str(npt_run), "--observable", "volume", "--plot", str(tmp_path / "v.png")]) == 2
    assert "--plot" in capsys.readouterr().err


def test_nve_uses_the_frames_kinetic_temperature_and_a_cut_off_last_frame_is_left_out(cu_file, tmp_path):
    """NVE has no thermostat: β comes from the frames' mean kinetic temperature (3N − 3 degrees of freedom, the
    total momentum being conserved); a frame cut off at the end of the file (a run still writing) is left out."""
    from gapfit.md import run_md
    model = gapfit.load(str(cu_file))
    traj = tmp_path / "nve.xyz"
    run_md(model, ase.io.read(_start(tmp_path / "start.xyz")), ensemble="nve", temperature_K=400, steps=20,
           interval=2, seed=0, committee=2, trajectory=str(traj))
    frames = ase.io.read(traj, ":")
    ke = [a.get_kinetic_energy() - np.sum(a.get_momenta().sum(0) ** 2) / (2 * a.get_masses().sum())
          for a in frames]
    expected = np.mean(ke) * 2 / ((3 * len(frames[0]) - 3) * units.kB)
    res = analyze(str(traj), "energy")
    assert res.temperature_source.startswith("mean kinetic") and res.temperature_K == pytest.approx(expected)
    assert any("NVE" in w for w in res.warnings) and res.n_frames == 11
    text = traj.read_text()
    cut = tmp_path / "cut.xyz"
    cut.write_text(text + text[: len(text) // 20])  # the first lines of a twelfth frame
    res = analyze(str(cut), "energy", temperature_K=400)
    assert res.n_frames == 11 and any("incomplete" in w for w in res.warnings)
