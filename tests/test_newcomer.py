"""What a new user meets first: named keys in messages, outputs only when work can start, no silent surprises."""
from __future__ import annotations

import json
import subprocess

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

import gapfit
from conftest import DATA, GAPFIT
from gapfit.cli import build_parser, main

FAST_FLAGS = ["--n-max", "3", "--l-max", "3", "--cutoff", "4.0", "--n-sparse", "60", "--no-progress",
              "--train-error-frames", "0"]
TRAIN = str(DATA / "Cu_emt_train.xyz")
TEST = str(DATA / "Cu_emt_test.xyz")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A quick model on the first 12 training frames, and the file of those frames."""
    folder = tmp_path_factory.mktemp("newcomer")
    frames = ase.io.read(TRAIN, ":12")
    train = folder / "train.xyz"
    ase.io.write(train, frames, format="extxyz")
    model = folder / "cu.npz"
    assert main(["fit", str(train), "-o", str(model)] + FAST_FLAGS) == 0
    return model, train


def _err(capsys):
    return capsys.readouterr().err.strip()


def test_missing_energy_key_is_named(tmp_path, capsys):
    code = main(["fit", TRAIN, "-o", str(tmp_path / "m.npz"), "--energy-key", "REF_energy", "--dry-run"])
    err = _err(capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "'REF_energy'" in err and "field 'energy'" not in err and "Traceback" not in err


def test_md_refused_for_unseen_element_creates_no_output(small, tmp_path, capsys):
    model, _ = small
    start = tmp_path / "ag.xyz"
    ase.io.write(start, bulk("Ag", "fcc", 4.1, cubic=True))
    traj = tmp_path / "ag_md.xyz"
    assert main(["md", str(model), str(start), "-o", str(traj), "--steps", "5", "--no-progress"]) == 2
    assert "Ag" in _err(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ag.xyz"]  # no trajectory, no log


def test_eval_of_unlabelled_frames_says_so_and_writes_predictions(small, tmp_path, capsys):
    model, _ = small
    frames = ase.io.read(TEST, ":3")
    for a in frames:
        a.calc = None
    data = tmp_path / "unlabelled.xyz"
    ase.io.write(data, frames, format="extxyz")
    assert main(["eval", str(model), str(data), "--no-progress"]) == 2
    err = _err(capsys)
    assert "nothing to score" in err and "-o" in err
    out = tmp_path / "pred.xyz"
    assert main(["eval", str(model), str(data), "-o", str(out), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_labelled_frames"] == 0 and summary["n_frames"] == 3
    written = ase.io.read(out, ":")
    want = gapfit.load(str(model)).predict(frames, uncertainty=("energy", "forces"))
    for a, p in zip(written, want):
        assert a.info["gapfit_energy"] == pytest.approx(p.energy, rel=1e-12)
        # extended XYZ writes per-atom columns with 8 decimals: 5e-9 is the format's rounding
        assert np.allclose(a.arrays["gapfit_forces"], p.forces, rtol=0, atol=5e-9)
        assert np.allclose(a.arrays["gapfit_forces_std"], p.forces_std, rtol=0, atol=5e-9)


def test_eval_output_keeps_reference_labels(small, tmp_path, capsys):
    model, _ = small
    out = tmp_path / "pred.xyz"
    assert main(["eval", str(model), TEST, "-o", str(out), "--no-progress", "--no-uncertainty"]) == 0
    assert "predictions:" in capsys.readouterr().out
    ref, written = ase.io.read(TEST, ":"), ase.io.read(out, ":")
    assert len(written) == len(ref)
    for a, b in zip(written, ref):
        assert a.get_potential_energy() == b.get_potential_energy()  # the label, not the prediction
        assert "gapfit_energy" in a.info and "gapfit_forces_std" not in a.arrays


def test_inspect_refuses_frames_that_are_not_the_training_frames(small, tmp_path, capsys):
    model, train = small
    assert main(["inspect", str(model), str(train), "--json", "--no-progress"]) == 0
    assert len(json.loads(capsys.readouterr().out)["frames"]) == 11  # frame 0, the isolated atom, fixes e0
    # other frames, and the same frames with one label changed, in the same count
    other = tmp_path / "other.xyz"
    ase.io.write(other, ase.io.read(TEST, ":12"), format="extxyz")
    changed = ase.io.read(train, ":")
    res = dict(changed[4].calc.results)
    res["energy"] += 1e-6
    changed[4].calc = SinglePointCalculator(changed[4], **res)
    edited = tmp_path / "edited.xyz"
    ase.io.write(edited, changed, format="extxyz")
    for path in (TEST, other, edited):
        assert main(["inspect", str(model), str(path), "--no-progress"]) == 2
        err = _err(capsys)
        assert "not the frames the model was fitted to" in err and len(err.splitlines()) == 1


def test_missing_labels_are_reported_in_log_and_on_screen(tmp_path, capsys):
    frames = ase.io.read(TRAIN, "1:12")
    for k, a in enumerate(frames):
        res = dict(a.calc.results)
        if k < 3:
            res.pop("forces")
        a.calc = SinglePointCalculator(a, **res)
    data = tmp_path / "mixed.xyz"
    ase.io.write(data, frames, format="extxyz")
    assert main(["fit", str(data), "-o", str(tmp_path / "dry.npz"), "--dry-run"] + FAST_FLAGS) == 0
    assert "3 of 11 frames lack forces" in _err(capsys)
    model = tmp_path / "m.npz"
    assert main(["fit", str(data), "-o", str(model)] + FAST_FLAGS) == 0
    assert "3 of 11 frames lack forces" in _err(capsys)
    log = (tmp_path / "m.npz.log").read_text()
    assert "3 of 11 frames lack forces" in log and "labels: 11 energies, 8 force sets" in log


def test_dry_run_checks_the_output_path(tmp_path, capsys):
    (tmp_path / "folder.npz").mkdir()
    for out in (tmp_path / "folder.npz", tmp_path / "missing" / "m.npz"):
        assert main(["fit", TRAIN, "-o", str(out), "--dry-run"]) == 2
        assert str(out) in _err(capsys)
    assert main(["fit", TRAIN, "-o", str(tmp_path / "ok.npz"), "--dry-run"]) == 0
    assert not (tmp_path / "ok.npz").exists()


def test_settings_line_shows_only_settings_in_use(tmp_path):
    model = tmp_path / "m.npz"
    assert main(["fit", TRAIN, "-o", str(model), "--no-progress", "--train-error-frames", "0",
                 "--gap", "soap cutoff=4.0 n_max=3 l_max=3 n_sparse=40"]) == 0
    line = next(ln for ln in (tmp_path / "m.npz.log").read_text().splitlines() if " settings: " in ln)
    settings = json.loads(line.split(" settings: ", 1)[1])
    assert settings["terms"] is not None
    for unused in ("n_max", "l_max", "cutoff", "n_sparse"):
        assert unused not in settings


def test_calibration_log_says_why_a_scale_is_missing(tmp_path):
    # 12 frames hold out one (calibration_fraction 0.1): one energy cannot fix an energy scale
    frames = ase.io.read(TRAIN, "1:13")
    data = tmp_path / "twelve.xyz"
    ase.io.write(data, frames, format="extxyz")
    assert main(["fit", str(data), "-o", str(tmp_path / "m.npz")] + FAST_FLAGS) == 0
    line = next(ln for ln in (tmp_path / "m.npz.log").read_text().splitlines() if "calibration on" in ln)
    assert "energy stds not calibrated" in line and "5 needed" in line and "None" not in line


def test_traceback_flag_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["fit", "x.xyz", "-o", "m.npz", "-T"]).traceback is True
    assert parser.parse_args(["-T", "fit", "x.xyz", "-o", "m.npz"]).traceback is True
    assert parser.parse_args(["fit", "x.xyz", "-o", "m.npz"]).traceback is False


def test_subcommand_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["md", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 300.0)", "(default: 1000)", "(default: nvt)", "(default: md.xyz)"):
        assert shown in text


def test_unknown_extension_names_the_format_problem(tmp_path, capsys):
    dat = tmp_path / "train.dat"
    dat.write_bytes((DATA / "Cu_emt_train.xyz").read_bytes())
    assert main(["fit", str(dat), "-o", str(tmp_path / "m.npz"), "--dry-run"]) == 2
    err = _err(capsys)
    assert "--format" in err and "AttributeError: 'NoneType'" not in err.split("(")[0]
    assert main(["fit", str(dat), "-o", str(tmp_path / "m.npz"), "--dry-run", "--format", "extxyz"]) == 0
    capsys.readouterr()
    assert main(["fit", str(dat), "-o", str(tmp_path / "m.npz"), "--dry-run", "--format", "xyzz"]) == 2
    assert "did you mean" in _err(capsys)


def test_output_into_a_closed_pipe_is_quiet(small):
    model, train = small
    # as `gapfit inspect ... | head` when head has left: the writer gets EPIPE
    with subprocess.Popen(GAPFIT + ["inspect", str(model), str(train), "--top", "12", "--no-progress"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        p.stdout.close()  # nobody reads: the first write fails
        err = p.stderr.read().decode()
        code = p.wait(timeout=120)
    assert "Broken pipe" not in err and "Traceback" not in err, err
    assert code == 141


def test_version_matches_the_changelog():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()
    first = next(ln for ln in text.splitlines() if ln.startswith("## "))
    assert first == f"## {gapfit.__version__}"


def test_per_species_setting_of_a_term_names_absent_species(tmp_path, capsys):
    cfg = tmp_path / "soap_si.yaml"
    cfg.write_text("terms:\n  - {type: soap, n_max: 3, l_max: 3, n_sparse: {Si: 5}}\n")
    assert main(["fit", TRAIN, "-o", str(tmp_path / "m.npz"), "--config", str(cfg), "--dry-run"]) == 2
    err = _err(capsys)
    assert "terms[0] (soap) n_sparse" in err and "'Si'" in err and str(cfg) in err
