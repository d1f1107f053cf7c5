"""The gapfit command line: fit/eval round trip, JSON output, and one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
import ase.io

from conftest import DATA
from gapfit.cli import main

FAST_FLAGS = ["--n-max", "4", "--l-max", "4", "--cutoff", "4.5", "--n-sparse", "200", "--no-progress"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "cu.npz"
    assert main(["fit", str(DATA / "Cu_emt_train.xyz"), "-o", str(out)] + FAST_FLAGS) == 0
    return out


def test_fit_writes_model_and_log(model_path):
    assert model_path.exists()
    log = (model_path.parent / (model_path.name + ".log")).read_text()
    assert "settings:" in log and "training error" in log and "ALL" in log


def test_eval_json_has_required_keys(model_path, capsys, tmp_path):
    plot = tmp_path / "parity.png"
    assert main(["eval", str(model_path), str(DATA / "Cu_emt_test.xyz"), "--json", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    res = json.loads(out[0])
    for key in ("energy_mae_mev_per_atom", "energy_rmse_mev_per_atom", "energy_mae_mev_per_structure",
                "force_mae_mev_per_ang", "force_rmse_mev_per_ang", "stress_mae_gpa", "n_frames", "n_atoms"):
        assert key in res
    assert res["n_frames"] == len(ase.io.read(DATA / "Cu_emt_test.xyz", ":"))
    assert res["force_mae_mev_per_ang"] < 25
    for key in ("force_std_spearman", "force_z_within_1sigma", "force_z_within_2sigma",
                "energy_std_spearman", "energy_z_within_1sigma", "energy_z_within_2sigma"):
        assert key in res
    assert 0 <= res["force_z_within_1sigma"] <= res["force_z_within_2sigma"] <= 1
    assert plot.stat().st_size > 1000


def test_config_yaml_and_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("n_max: 3\nl_max: 3\ncutoff: 4.0\nn_sparse: 50\nconfig_type_sigma:\n  rattled: {forces: 0.2}\n")
    out = tmp_path / "m.npz"
    assert main(["fit", str(DATA / "Cu_emt_train.xyz"), "-o", str(out), "--config", str(cfg),
                 "--l-max", "2", "--no-progress", "--train-error-frames", "0"]) == 0
    import gapfit
    m = gapfit.load(str(out))
    assert (m.n_max, m.l_max, m.cutoff) == (3, 2, 4.0)
    assert m.config_type_sigma == {"rattled": {"forces": 0.2}}


def _run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def _bad_frames(tmp_path, name, frames):
    p = tmp_path / name
    ase.io.write(p, frames, format="extxyz")
    return str(p)


def test_bad_inputs_exit_2_with_one_line(model_path, tmp_path, capsys):
    out = str(tmp_path / "never.npz")
    # unreadable file
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is\nnot an xyz file at all\n")
    code, err = _run_cli(["fit", str(garbage), "-o", out, "--no-progress"], capsys)
    assert code == 2 and "garbage.xyz" in err and "Traceback" not in err
    # missing file
    code, err = _run_cli(["fit", str(tmp_path / "nope.xyz"), "-o", out], capsys)
    assert code == 2 and "no such file" in err
    # frames without labels
    bare = _bad_frames(tmp_path, "bare.xyz", [bulk("Cu", "fcc", 3.61, cubic=True)] * 2)
    code, err = _run_cli(["fit", bare, "-o", out, "--no-progress"], capsys)
    assert code == 2 and "energy" in err and "bare.xyz" in err
    # NaN positions (frame 1)
    good = bulk("Cu", "fcc", 3.61, cubic=True)
    good.calc = SinglePointCalculator(good, energy=-1.0)
    nan = good.copy()
    nan.positions[2, 1] = np.nan
    nan.calc = SinglePointCalculator(nan, energy=-1.0)
    p = _bad_frames(tmp_path, "nan.xyz", [good, nan])
    code, err = _run_cli(["fit", p, "-o", out, "--no-progress"], capsys)
    assert code == 2 and "frame 1" in err and "positions" in err
    # zero-volume periodic cell
    flat = good.copy()
    flat.cell[2] = [0, 0, 0]
    flat.calc = SinglePointCalculator(flat, energy=-1.0)
    p = _bad_frames(tmp_path, "flat.xyz", [good, flat])
    code, err = _run_cli(["fit", p, "-o", out, "--no-progress"], capsys)
    assert code == 2 and "cell" in err and "frame 1" in err
    # unknown species at prediction
    ag = bulk("Ag", "fcc", 4.09, cubic=True)
    ag.calc = SinglePointCalculator(ag, energy=-1.0)
    p = _bad_frames(tmp_path, "ag.xyz", [ag])
    code, err = _run_cli(["eval", str(model_path), p], capsys)
    assert code == 2 and "Ag" in err and "ag.xyz" in err
    # a file that is not a model
    code, err = _run_cli(["eval", str(garbage), str(DATA / "Cu_emt_test.xyz")], capsys)
    assert code == 2 and "not a gapfit model" in err
    # bad config key
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("n_maxx: 3\n")
    code, err = _run_cli(["fit", str(DATA / "Cu_emt_train.xyz"), "-o", out, "--config", str(cfg)], capsys)
    assert code == 2 and "n_maxx" in err
    # nothing half-written
    assert not os.path.exists(out)
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")] == []


def test_console_script_runs(model_path):
    """The installed entry point: status 2 and a single stderr line on bad input."""
    exe = os.path.join(os.path.dirname(sys.executable), "gapfit")
    if not os.path.exists(exe):
        pytest.skip("console script not installed in this environment")
    r = subprocess.run([exe, "eval", str(model_path), "/nonexistent.xyz"], capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_fit_workers_below_one_is_refused_before_any_work(workers, tmp_path, capsys):
    # 0 used to fall through to a silent single-process fit
    out = tmp_path / "m.npz"
    code, err = _run_cli(["fit", str(DATA / "Cu_emt_train.xyz"), "-o", str(out), "--workers", workers], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "--workers must be at least 1" in err
    assert not out.exists()


def test_md_check_interval_needs_a_threshold_and_a_positive_value(model_path, tmp_path, capsys):
    start = tmp_path / "start.xyz"
    ase.io.write(start, bulk("Cu", "fcc", 3.61, cubic=True))
    traj = tmp_path / "md.xyz"
    for extra, needle in ((["--check-interval", "5"], "--max-force-std"),
                          (["--check-interval", "0", "--max-force-std", "1"], "--check-interval must be positive")):
        code, err = _run_cli(["md", str(model_path), str(start), "--steps", "3", "-o", str(traj), "--no-progress",
                              *extra], capsys)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and needle in err
    assert not traj.exists()


def test_md_command_writes_uncertainties_and_stops_on_threshold(model_path, tmp_path, capsys):
    start = tmp_path / "start.xyz"
    ase.io.write(start, bulk("Cu", "fcc", 3.61, cubic=True).repeat((2, 2, 2)))
    traj = tmp_path / "md.xyz"
    assert main(["md", str(model_path), str(start), "--steps", "20", "--interval", "5", "--temperature", "600",
                 "-o", str(traj), "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["stop_reason"] == "completed" and res["steps"] == 20
    frames = ase.io.read(traj, ":")
    assert len(frames) == 5
    assert frames[-1].arrays["forces_std"].shape == (32, 3)
    assert frames[-1].arrays["local_energy_std"].shape == (32,)
    log = (tmp_path / "md.xyz.log").read_text().splitlines()
    assert log[0].startswith("# step") and len(log) == 6
    # a threshold below any std stops at once, cleanly
    assert main(["md", str(model_path), str(start), "--steps", "50", "--temperature", "600", "-o", str(traj),
                 "--max-force-std", "1e-12", "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["stop_reason"] == "max_force_std" and res["steps"] < 50
