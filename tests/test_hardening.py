"""Bad input and faults a new user meets: each ends in one clear line, nothing lost or half-written."""
from __future__ import annotations

import os
import signal
import stat

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

import gapfit
from conftest import DATA, FAST, GAPFIT, wait_for
from gapfit.cli import main
from gapfit.errors import InputError, ModelFormatError

FAST_FLAGS = ["--n-max", "3", "--l-max", "3", "--cutoff", "4.0", "--n-sparse", "60", "--no-progress",
              "--train-error-frames", "0"]
TRAIN = str(DATA / "Cu_emt_train.xyz")


def _cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def _last_line(err: str) -> str:
    return err.splitlines()[-1] if err else ""


def _one_error_line(code, err, *needles):
    line = _last_line(err)
    assert code == 2, err
    assert "Traceback" not in err
    assert line.startswith("gapfit ") and ": error: " in line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def _labelled(atoms, energy=-1.0):
    atoms = atoms.copy()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((len(atoms), 3)))
    return atoms


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    """A fitted model with its log, in a folder of its own."""
    folder = tmp_path_factory.mktemp("good")
    out = folder / "m.npz"
    assert main(["fit", TRAIN, "-o", str(out)] + FAST_FLAGS) == 0
    return out


def _snapshot(model_path):
    """Bytes of a model and its log, to compare after a failed run."""
    return model_path.read_bytes(), (model_path.parent / (model_path.name + ".log")).read_bytes()


def _copy_of(model_path, folder):
    """A copy of a model and its log in a new folder: (folder, model path)."""
    import shutil
    folder.mkdir()
    target = folder / model_path.name
    shutil.copy(model_path, target)
    shutil.copy(str(model_path) + ".log", str(target) + ".log")
    return folder, target


def _leftovers(folder):
    return sorted(f for f in os.listdir(folder) if f.startswith(".tmp-") or f.endswith(".lock"))


# ------------------------------------------------------------------ structures
def test_overlapping_atoms_are_an_input_error_everywhere(good_model, tmp_path, capsys):
    dup = bulk("Cu", "fcc", 3.61, cubic=True).repeat((2, 1, 1))
    dup.positions[5] = dup.positions[2] + [0.02, 0.0, 0.0]
    p = tmp_path / "dup.xyz"
    ase.io.write(p, [_labelled(bulk("Cu", "fcc", 3.61, cubic=True)), _labelled(dup)])
    model_before = _snapshot(good_model)
    code, err = _cli(["fit", str(p), "-o", str(good_model)] + FAST_FLAGS, capsys)
    _one_error_line(code, err, "dup.xyz, frame 1", "atoms 2 and 5", "0.02 Å")
    assert _snapshot(good_model) == model_before
    code, err = _cli(["eval", str(good_model), str(p)], capsys)
    _one_error_line(code, err, "dup.xyz, frame 1", "atoms 2 and 5")
    model = gapfit.load(str(good_model))
    with pytest.raises(InputError, match="atoms 2 and 5"):
        model.predict([dup])
    dup.calc = gapfit.GAPCalculator(model)
    with pytest.raises(InputError, match="atoms 2 and 5"):
        dup.get_forces()
    # an atom on a periodic image of another, across the cell boundary
    wrap = bulk("Cu", "fcc", 3.61, cubic=True)
    wrap.positions[1] = wrap.positions[0] + wrap.cell[0] - [0.03, 0, 0]
    with pytest.raises(InputError, match="atoms 0 and 1"):
        model.predict([wrap])


def test_absurd_coordinates_and_labels_are_input_errors(good_model):
    model = gapfit.load(str(good_model))
    far = bulk("Cu", "fcc", 3.61, cubic=True)
    far.pbc = False
    far.positions[3, 0] = 1e8
    with pytest.raises(InputError, match="atom 3 .* beyond .* units"):
        model.predict([far])
    flat = bulk("Cu", "fcc", 3.61, cubic=True)
    flat.cell[2] = [3.61, 3.61, 1e-6]  # nearly flat: would make neighbour searches hang
    with pytest.raises(InputError, match="nearly flat"):
        model.predict([flat])
    big = _labelled(bulk("Cu", "fcc", 3.61, cubic=True), energy=1e12)
    with pytest.raises(InputError, match="field 'energy' .* per atom"):
        gapfit.GAP(**FAST).fit([big, _labelled(bulk("Cu", "fcc", 3.6, cubic=True))])


# ------------------------------------------------------------------- settings
@pytest.mark.parametrize("yaml_text, needles", [
    ('n_max: "eight"\n', ["n_max", "whole number", "'eight'"]),
    ("n_sparse: {Si: 2000}\n", ["n_sparse", "'Si'", "Cu"]),
    ("e0: {Si: -0.8}\n", ["e0", "'Si'", "Cu"]),
    ("e0: {Xx: -0.8}\n", ["e0", "'Xx'", "not a chemical element"]),
    ("config_type_sigma: {bulk: {force: 0.1}}\n", ["config_type_sigma", "'force'"]),
    ("sigma_forces: -1\n", ["sigma_forces", "positive"]),
    ("- a list\n", ["mapping"]),
])
def test_config_errors_name_the_parameter_and_the_file(tmp_path, capsys, yaml_text, needles):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(yaml_text)
    flags = ["--n-max", "3", "--l-max", "3", "--no-progress"]  # no --n-sparse: it would override the file's
    code, err = _cli(["fit", TRAIN, "-o", str(tmp_path / "m.npz"), "--config", str(cfg)] + flags, capsys)
    _one_error_line(code, err, "fit.yaml", *needles)
    assert not (tmp_path / "m.npz").exists() and _leftovers(tmp_path) == []


def test_dry_run_checks_everything_and_writes_nothing(tmp_path, capsys):
    code = main(["fit", TRAIN, "-o", str(tmp_path / "m.npz"), "--dry-run"] + FAST_FLAGS)
    out = capsys.readouterr().out
    assert code == 0 and "frames" in out and "Cu" in out and "nothing written" in out
    assert os.listdir(tmp_path) == []


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert gapfit.__version__ in capsys.readouterr().out


# ---------------------------------------------------------------- model files
def test_damaged_and_foreign_model_files(good_model, tmp_path, capsys):
    raw = bytearray(good_model.read_bytes())
    # damage the numbers of an entry (the archive's CRC catches it)
    at = bytes(raw).index(b"alpha.npy")
    raw[at + 400] ^= 0x5A
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match="damaged"):
        gapfit.load(str(bad))
    code, err = _cli(["eval", str(bad), str(DATA / "Cu_emt_test.xyz")], capsys)
    _one_error_line(code, err, "bad.npz", "damaged")
    # a pickle, and an npz holding a pickled object: never loaded, never "load it unsafely"
    import pickle
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"alpha": [1.0]}))
    obj = tmp_path / "obj.npz"
    np.savez(obj, metadata=np.array([{"format": "gapfit-model"}], dtype=object))
    for path in (pkl, obj):
        code, err = _cli(["eval", str(path), str(DATA / "Cu_emt_test.xyz")], capsys)
        line = _one_error_line(code, err, "not a gapfit model", "pickle")
        assert "allow_pickle" not in line and "unsafe" not in line


# ------------------------------------------------------------------ singular
def test_singular_factorisation_is_one_line(tmp_path, capsys):
    code, err = _cli(["fit", TRAIN, "-o", str(tmp_path / "m.npz"), "--jitter", "1e-300", "--n-sparse", "2000",
                      "--n-max", "3", "--l-max", "3", "--no-progress"], capsys)
    _one_error_line(code, err, "jitter")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------ outputs, logs
def test_failed_fit_leaves_previous_model_and_log(good_model, tmp_path, capsys):
    before = _snapshot(good_model)
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("not\nxyz\n")
    code, err = _cli(["fit", str(garbage), "-o", str(good_model)] + FAST_FLAGS, capsys)
    _one_error_line(code, err, "garbage.xyz")
    assert _snapshot(good_model) == before
    assert _leftovers(good_model.parent) == []


def test_output_that_is_a_folder_is_refused_before_fitting(tmp_path, capsys):
    target = tmp_path / "m.npz"
    target.mkdir()
    (target / "keep").write_text("x")
    code, err = _cli(["fit", TRAIN, "-o", str(target)] + FAST_FLAGS, capsys)
    _one_error_line(code, err, "m.npz", "folder")
    assert "sparse points" not in err  # refused before any work
    assert (target / "keep").read_text() == "x"


def test_unreplaceable_output_keeps_the_new_model_aside(good_model, tmp_path, capsys, monkeypatch):
    folder, target = _copy_of(good_model, tmp_path / "out")
    before = _snapshot(target)
    real_replace = os.replace

    def refuse(src, dst):
        if os.path.abspath(dst) == str(target):
            raise PermissionError(13, "Permission denied", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    code, err = _cli(["fit", TRAIN, "-o", str(target)] + FAST_FLAGS, capsys)
    monkeypatch.undo()
    _one_error_line(code, err, "m.npz", "cannot replace", "m.npz.new")
    assert _snapshot(target) == before
    assert gapfit.load(str(target) + ".new").alpha_.shape == gapfit.load(str(good_model)).alpha_.shape
    assert _leftovers(folder) == []


def test_unwritable_folder_is_one_line(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:  # a real read-only folder
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    else:  # root writes anywhere: refuse at the system call instead
        real_open = os.open

        def refuse(path, *args, **kwargs):
            if os.path.dirname(os.path.abspath(path)) == str(folder):
                raise PermissionError(13, "Permission denied", path)
            return real_open(path, *args, **kwargs)
        monkeypatch.setattr(os, "open", refuse)
    try:
        code, err = _cli(["fit", TRAIN, "-o", str(folder / "m.npz")] + FAST_FLAGS, capsys)
    finally:
        monkeypatch.undo()
        folder.chmod(stat.S_IRWXU)
    _one_error_line(code, err, "cannot write in folder", "Permission denied")
    assert os.listdir(folder) == []


def test_killed_fit_and_concurrent_fit(good_model, tmp_path, capsys, spawn):
    """A second fit to a running fit's output is refused; killing the first loses nothing."""
    folder, target = _copy_of(good_model, tmp_path / "out")
    before = _snapshot(target)
    fifo = tmp_path / "never_written.xyz"
    os.mkfifo(fifo)  # the first fit blocks reading it, holding its lock: no race with the second
    proc = spawn(GAPFIT + ["fit", str(fifo), "-o", str(target)] + FAST_FLAGS)
    wait_for(lambda: len([f for f in os.listdir(folder) if f.startswith(".tmp-")]) == 2,
             "the first fit's temporary model and log", proc=proc)
    code, err = _cli(["fit", TRAIN, "-o", str(target)] + FAST_FLAGS, capsys)
    _one_error_line(code, err, "another gapfit run", f"pid {proc.pid}")
    assert _snapshot(target) == before
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert _snapshot(target) == before  # killed: the old model and its log as they were
    # the next fit takes the lock and removes the dead run's temporary files
    assert main(["fit", TRAIN, "-o", str(target)] + FAST_FLAGS) == 0
    assert _leftovers(folder) == []
    assert _snapshot(target) != before
    log = (folder / "m.npz.log").read_text()
    assert log.count("gapfit fit:") == 1 and "wrote" in log


def test_model_error_messages_stay_on_one_line(good_model, tmp_path):
    """Found by the long fuzz profile: text quoted from a damaged file could break the one-line message."""
    import json
    with np.load(good_model, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    meta = json.loads(str(members["metadata"]))
    meta["terms"][-1]["state"]["n_features"] = "\n12\n"
    members["metadata"] = np.array(json.dumps(meta))
    odd = tmp_path / "odd.npz"
    np.savez(odd, **members)
    with pytest.raises(ModelFormatError) as exc:
        gapfit.load(str(odd))
    assert "\n" not in str(exc.value) and "SOAP layout" in str(exc.value)
