"""On-the-fly learning: triggering, the call cap, MD blow-up, incremental exactness, resume after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from conftest import FAST, GAPFIT, wait_for
import gapfit
from gapfit.incremental import IncrementalGAP
from gapfit.errors import InputError
from gapfit.learn import Threshold, learn
from gapfit.md_io import complete_xyz_frames

PARAMS = dict(n_max=3, l_max=3, cutoff=4.0, cutoff_transition_width=1.0)


def _start():
    return bulk("Cu", "fcc", 3.61, cubic=True).repeat((2, 2, 2))


def test_incremental_equals_batch_solve(cu_train):
    inc = IncrementalGAP(FAST, [29])
    for a in cu_train[1:8]:
        inc.add_frame(a, list(range(0, len(a), 4)))
    m = inc.model
    from gapfit import sgp
    from gapfit.data import get_labels
    M = m.n_sparse_total_
    acc = sgp.QRAccumulator(M)
    acc.add(m.state_.prior_rows(), np.zeros(M))
    frames = cu_train[1:8]
    labels = m.residual_labels(frames, [get_labels(a, "x") for a in frames])
    A, b = m.training_rows(frames, labels)
    acc.add(A, b)
    alpha = sgp.solve_from_factor(acc.factor())[0]
    assert np.abs(alpha - m.alpha_).max() < 1e-6 * np.abs(alpha).max()
    # a frame whose environments are all known adds rows only
    inc.add_frame(cu_train[9], [])
    assert "rows" in inc.timings


def test_threshold_triggers_reference_calls(tmp_path):
    low = learn(_start(), EMT, str(tmp_path / "low"), params=PARAMS, temperature_K=800, timestep_fs=2,
                steps=40, threshold=Threshold(force_std=0.005), min_steps_between_calls=5, seed=1)
    high = learn(_start(), EMT, str(tmp_path / "high"), params=PARAMS, temperature_K=800, timestep_fs=2,
                 steps=40, threshold=Threshold(force_std=50.0), min_steps_between_calls=5, seed=1)
    assert high.reference_calls == 1  # only the initial frame
    assert low.reference_calls > 3
    frames = ase.io.read(low.data, ":")
    assert len(frames) == low.reference_calls
    assert all(abs(a.get_potential_energy() - _emt(a)) < 1e-6 for a in frames)
    model = gapfit.load(low.model)
    assert model.training_summary_["n_frames"] == low.reference_calls


def _emt(a):
    b = a.copy()
    b.calc = EMT()
    return b.get_potential_energy()


def test_reference_call_cap(tmp_path):
    res = learn(_start(), EMT, str(tmp_path / "cap"), params=PARAMS, temperature_K=1000, timestep_fs=2,
                steps=200, threshold=Threshold(force_std=1e-4), min_steps_between_calls=1, max_reference_calls=3)
    assert res.stop_reason == "max_reference_calls"
    assert res.reference_calls == 3
    assert len(ase.io.read(res.data, ":")) == 3


def test_md_blow_up_stops_cleanly(tmp_path):
    # absurd temperature and step: atoms collide; the run must stop, not crash
    res = learn(_start(), EMT, str(tmp_path / "boom"), params=PARAMS, temperature_K=2e5, timestep_fs=10,
                steps=200, threshold=Threshold(force_std=1e6), min_distance=1.2)
    assert res.stop_reason == "unstable"
    state = ase.io.read(tmp_path / "boom" / "state.xyz")
    from gapfit.md import min_pair_distance
    assert min_pair_distance(state, 1.2) >= 1.2  # the last good state was kept
    assert gapfit.load(res.model).training_summary_["n_frames"] == res.reference_calls


def test_resume_after_sigkill_keeps_every_reference_call_and_every_setting(tmp_path, spawn):
    start = tmp_path / "start.xyz"
    ase.io.write(start, _start())
    cfg = tmp_path / "c.yaml"
    cfg.write_text("\n".join(f"{k}: {v}" for k, v in PARAMS.items()) + "\n")
    out = tmp_path / "run"
    data = out / "labelled.xyz"
    args = ["learn", str(start), "--reference", "ase.calculators.emt:EMT", "-o", str(out), "--config", str(cfg),
            "--temperature", "900", "--timestep", "2", "--steps", "100000", "--threshold-force-std", "0.003",
            "--min-steps-between-calls", "3", "--no-progress", "--max-calls", "10", "--seed", "3"]
    proc = spawn(GAPFIT + args)
    # whole frames only: the file exists (and may hold half a frame) before the first is complete
    wait_for(lambda: data.exists() and complete_xyz_frames(data)[0] >= 3, "3 complete labelled frames", proc=proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    n_before, _ = complete_xyz_frames(data)
    before = ase.io.read(data, f":{n_before}")

    # a contradicting option is refused, naming both values, and nothing changes
    bytes_before = data.read_bytes()
    r = subprocess.run(GAPFIT + ["learn", "-o", str(out), "--resume", "--temperature", "300"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "temperature_K 900" in r.stderr and "300" in r.stderr and "--override" in r.stderr
    assert data.read_bytes() == bytes_before

    # the README's resume line, with nothing but --resume: every setting comes from the run
    r = subprocess.run(GAPFIT + ["learn", "-o", str(out), "--resume", "--json", "--no-progress"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    after = ase.io.read(data, ":")
    # every call made before the kill is still there, unchanged, and none was repeated
    for a, b in zip(before, after):
        assert np.array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
    positions = [tuple(np.round(a.positions.ravel(), 8)) for a in after]
    assert len(set(positions)) == len(after)
    assert summary["reference_calls"] == len(after) == 10  # the stored --max-calls
    assert summary["stop_reason"] == "max_reference_calls"
    assert gapfit.load(summary["model"]).training_summary_["n_frames"] == len(after)
    log = (out / "gapfit.log").read_text()
    assert "temperature 900 K, timestep 2 fs" in log and "of 100000" in log
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert (settings["temperature_K"], settings["timestep_fs"], settings["seed"]) == (900.0, 2.0, 3)

    # an explicit, logged change
    r = subprocess.run(GAPFIT + ["learn", "-o", str(out), "--resume", "--json", "--no-progress",
                                 "--max-calls", "11", "--override"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["reference_calls"] == 11
    assert "max_reference_calls 10 -> 11" in (out / "gapfit.log").read_text()
    assert json.loads((out / "run.json").read_text())["changes"][-1] == {"name": "max_reference_calls",
                                                                         "from": 10, "to": 11}


def test_resume_drops_an_incomplete_last_frame(tmp_path):
    out = tmp_path / "run"
    res = learn(_start(), EMT, str(out), params=PARAMS, temperature_K=800, timestep_fs=2, steps=20,
                threshold=Threshold(force_std=0.005), min_steps_between_calls=5, seed=1)
    data = out / "labelled.xyz"
    whole = data.read_bytes()
    n_whole = complete_xyz_frames(data)[0]
    assert n_whole == res.reference_calls
    with open(data, "ab") as fh:  # a kill in the middle of writing a frame
        fh.write(b"32\nLattice=\"7.22 0 0 0 7.22 0 0 0 7.22\" Properties=species:S:1:pos:R:3\nCu 0 0 0\nCu 1.8")
    assert complete_xyz_frames(data) == (n_whole, len(whole))
    again = learn(None, None, str(out), resume=True)
    assert again.reference_calls >= n_whole
    assert data.read_bytes()[:len(whole)] == whole
    assert complete_xyz_frames(data)[1] == data.stat().st_size


def test_resume_with_other_settings_is_refused_in_python_too(tmp_path):
    out = tmp_path / "run"
    learn(_start(), EMT, str(out), params=PARAMS, temperature_K=800, timestep_fs=2, steps=6)
    with pytest.raises(InputError, match="timestep_fs 2, but 1.0"):
        learn(None, None, str(out), resume=True, timestep_fs=1.0)
    with pytest.raises(InputError, match="cannot change"):
        learn(None, None, str(out), resume=True, params=dict(PARAMS, n_max=4), override=True)
    res = learn(None, None, str(out), resume=True, steps=10, override=True)
    assert res.steps == 10


def test_second_run_into_the_same_folder_is_refused_while_the_first_runs(tmp_path, spawn):
    from gapfit.errors import OutputError
    start = tmp_path / "start.xyz"
    ase.io.write(start, _start())
    out = tmp_path / "run"
    proc = spawn(GAPFIT + ["learn", str(start), "--reference", "ase.calculators.emt:EMT", "-o", str(out),
                           "--steps", "1000000", "--no-progress", "--threshold-force-std", "1e6"])
    wait_for(lambda: (out / "model.npz").exists(), "the first model of the running learn", proc=proc)
    with pytest.raises(OutputError, match="another gapfit run"):
        learn(None, None, str(out), resume=True)


def test_start_from_existing_model(tmp_path, cu_train):
    frames = [a for a in cu_train if len(a) == 32][:6]
    data = tmp_path / "train.xyz"
    ase.io.write(data, frames)
    base = gapfit.GAP(**PARAMS, n_sparse=40, calibration_fraction=0.0).fit(ase.io.read(data, ":"))
    path = tmp_path / "base.npz"
    base.save(str(path))
    inc = IncrementalGAP.from_model(gapfit.load(str(path)), ase.io.read(data, ":"))
    probe = cu_train[3]
    assert abs(inc.model.predict([probe])[0].energy - base.predict([probe])[0].energy) < 1e-8
    res = learn(_start(), EMT, str(tmp_path / "cont"), temperature_K=900, timestep_fs=2, steps=30,
                threshold=Threshold(force_std=0.01), min_steps_between_calls=5,
                initial_model=str(path), initial_data=str(data))
    m = gapfit.load(res.model)
    assert m.training_summary_["n_frames"] == len(frames) + res.reference_calls
    assert res.reference_calls >= 1
    assert m.n_sparse_total_ >= base.n_sparse_total_


def test_learn_on_a_delta_baseline_records_and_keeps_it(tmp_path):
    """gapfit learn --baseline: the model corrects EMT (here: learns nothing but noise), the run keeps the baseline."""
    from gapfit.errors import InputError
    out = str(tmp_path / "delta")
    res = learn(_start(), EMT, out, params=PARAMS, temperature_K=600, timestep_fs=2, steps=20,
                threshold=Threshold(force_std=50.0), seed=1, baseline="ase.calculators.emt:EMT")
    with pytest.raises(InputError, match="ase.calculators.emt:EMT"):
        gapfit.load(res.model)
    model = gapfit.load(res.model, baseline=EMT())
    a = _start()
    a.rattle(0.05, seed=2)
    # reference = baseline: the model's correction is tiny and the prediction is EMT's
    assert abs(model.predict([a])[0].energy - _emt(a)) < 1e-3 * len(a)
    with pytest.raises(InputError, match="baseline"):
        learn(None, None, out, resume=True, baseline="ase.calculators.lj:LennardJones")
