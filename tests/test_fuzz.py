"""Property-based fuzzing of everything a user hands gapfit: structure files, configs, model files.

Each property: the input ends either in gapfit's own error type with a
one-line message (command line: exit 2, one ``gapfit ...: error:`` line, no
traceback) or in a correct result. Examples per run come from the hypothesis
profile (``HYPOTHESIS_PROFILE=ci``, the default, is derandomised so the suite
is deterministic; ``HYPOTHESIS_PROFILE=long`` runs many more, at random).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import tempfile
import zipfile

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

import gapfit
from conftest import DATA
from gapfit.cli import main
from gapfit.errors import GapfitError, ModelFormatError
from gapfit.params import CHECKS

SMALL = dict(n_max=2, l_max=2, cutoff=3.0, cutoff_transition_width=0.5, calibration_fraction=0.0)


def fuzz(fraction: float = 1.0):
    """The profile's settings, with ``fraction`` of its examples (for the slower properties)."""
    return settings(max_examples=max(10, int(settings.default.max_examples * fraction)),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _run_cli(args):
    """(exit status, stdout, stderr) of the command line, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def _assert_clean_failure(code, err):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gapfit ") and ": error: " in lines[0], err


# ------------------------------------------------------------ structure files
def _number_text(draw):
    return draw(st.one_of(
        st.floats(-10.0, 10.0, allow_nan=False).map(lambda v: f"{v:.6f}"),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["nan", "inf", "-inf", "1e300", "1e8", "abc", "", "0x1F", "1,5"]),
    ))


def _fault(draw, percent: int) -> bool:
    """True with about ``percent`` % probability: most frames carry few faults, so many are valid."""
    return draw(st.integers(0, 99)) < percent


@st.composite
def xyz_frame_text(draw):
    """One extended XYZ frame: a valid Cu frame with, now and then, a field broken in some way."""
    n_atoms = draw(st.integers(1, 5))
    declared = str(n_atoms)
    if _fault(draw, 8):
        declared = draw(st.sampled_from(["0", "-1", "x", str(n_atoms + 1), ""]))
    with_forces = draw(st.booleans())
    cols = 6 if with_forces else 3
    if _fault(draw, 8):
        cols = draw(st.sampled_from([2, 4, 7]))
    props = "species:S:1:pos:R:3" + (":forces:R:3" if with_forces else "")
    if _fault(draw, 5):
        props = draw(st.sampled_from(["species:S:1:pos:R:2", "pos:R:3", "species:S:1:pos:R:3:forces:R:4"]))
    header = [f"Properties={props}"]
    lattice = "cubic" if draw(st.booleans()) else "none"
    if _fault(draw, 10):
        lattice = draw(st.sampled_from(["zero", "random", "short"]))
    if lattice == "cubic":
        header.append('Lattice="3.61 0 0 0 3.61 0 0 0 3.61"')
    elif lattice == "zero":
        header.append('Lattice="0 0 0 0 0 0 0 0 0"')
    elif lattice == "random":
        header.append('Lattice="' + " ".join(_number_text(draw) for _ in range(9)) + '"')
    elif lattice == "short":
        header.append('Lattice="3 0 0 0 3 0"')
    pbc = ("T T T" if lattice != "none" else "F F F") if draw(st.booleans()) else None
    if _fault(draw, 5):
        pbc = draw(st.sampled_from(["T F T", "yes", "T T T"]))
    if pbc is not None:
        header.append(f'pbc="{pbc}"')
    energy = f"{draw(st.floats(-50.0, 0.0)):.5f}"
    if _fault(draw, 10):
        energy = draw(st.sampled_from([None, "nan", "inf", "1e200", "abc", '"1 2"']))
    if energy is not None:
        header.append(f"energy={energy}")
    stress = draw(st.sampled_from([None, "six", "nine"]))
    if _fault(draw, 5):
        stress = draw(st.sampled_from(["five", "text", "nan"]))
    if stress is not None:
        vals = {"six": "0.01 0.01 0.01 0 0 0", "nine": "0.01 0 0 0 0.01 0 0 0 0.01", "five": "1 2 3 4 5",
                "text": "a b c d e f", "nan": "nan 0 0 0 0 0"}[stress]
        header.append(f'stress="{vals}"')
    if draw(st.booleans()):
        header.append("config_type=" + draw(st.sampled_from(["bulk", "isolated_atom", '"with space"', "", "1"])))
    if _fault(draw, 5):
        header.append("energy_sigma=" + _number_text(draw))
    lines = [declared, " ".join(header)]
    spread = 2.5 if not _fault(draw, 10) else draw(st.sampled_from([0.0, 0.05]))
    for i in range(n_atoms):
        symbol = "Cu" if not _fault(draw, 4) else draw(st.sampled_from(["Ag", "X", "Xx", "29", "cu", ""]))
        pos = [f"{spread * i + 0.3 * k:.4f}" for k in range(3)]
        if _fault(draw, 3):
            pos[draw(st.integers(0, 2))] = _number_text(draw)
        extra = ["0.1"] * max(cols - 3, 0)
        if extra and _fault(draw, 3):
            extra[0] = _number_text(draw)
        lines.append(" ".join([symbol] + pos[:max(cols, 2)] + extra))
    return "\n".join(lines) + "\n"


@fuzz()
@given(frames=st.lists(xyz_frame_text(), min_size=1, max_size=3), noise=st.binary(max_size=20))
def test_fuzzed_xyz_files_fail_cleanly_or_read_correctly(tmp_path, frames, noise):
    text = "".join(frames)
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        path = os.path.join(d, "fuzz.xyz")
        with open(path, "wb") as fh:
            fh.write(text.encode() + (noise if noise[:1] == b"#" else b""))
        code, out, err = _run_cli(["fit", path, "-o", os.path.join(d, "m.npz"), "--dry-run"])
        event(f"exit {code}")
        if code != 0:
            _assert_clean_failure(code, err)
        else:
            # a correct result: every frame usable, every label finite and well shaped
            got = ase.io.read(path, ":")
            assert f"{len(got)} frames" in out
            from gapfit.data import check_structure, get_labels
            for k, a in enumerate(got):
                check_structure(a, f"frame {k}")
                lb = get_labels(a, f"frame {k}")
                assert lb.energy_eV is None or np.isfinite(lb.energy_eV)
                assert lb.forces_eV_per_A is None or (lb.forces_eV_per_A.shape == (len(a), 3)
                                                      and np.all(np.isfinite(lb.forces_eV_per_A)))
        assert os.listdir(d) == ["fuzz.xyz"]  # a dry run writes nothing


_odd_values = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                        st.lists(st.integers(), max_size=3))


@given(positions=st.lists(st.tuples(*[st.floats(-6.0, 6.0)] * 3), min_size=1, max_size=4),
       odd_coordinate=st.one_of(st.none(), st.none(), st.none(), st.floats(allow_nan=True, allow_infinity=True)),
       numbers=st.lists(st.sampled_from([29] * 12 + [0, 1, 47, 118]), min_size=4, max_size=4),
       cell=st.one_of(st.none(), st.just([20.0, 0, 0, 0, 20.0, 0, 0, 0, 20.0]),
                      st.lists(st.floats(-20, 20), min_size=9, max_size=9)),
       energy=st.one_of(st.floats(-100, 100), st.floats(-100, 100), _odd_values),
       forces=st.one_of(st.none(), st.none(), st.just("zeros"), st.just("zeros"), _odd_values, st.just("shape")),
       stress=st.one_of(st.none(), st.none(), st.none(), _odd_values,
                        st.lists(st.floats(allow_nan=True), min_size=6, max_size=6)),
       sigma=st.one_of(st.none(), st.none(), st.none(), st.floats(0.001, 1.0), _odd_values))
# found by a long run: a nearly flat cell made the neighbour search enumerate millions of images
@example(positions=[(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)], odd_coordinate=None, numbers=[29] * 4,
         cell=[20.0, 0, 0, 0, 20.0, 0, 20.0, 20.0, 1e-6], energy=-1.0, forces=None, stress=None, sigma=None)
def test_fuzzed_frames_in_python_fail_cleanly_or_give_finite_labels(positions, odd_coordinate, numbers, cell,
                                                                    energy, forces, stress, sigma):
    n = len(positions)
    atoms = Atoms(numbers=numbers[:n], positions=np.array(positions, dtype=float))
    if odd_coordinate is not None:
        atoms.positions[0, 0] = odd_coordinate
    if cell is not None:
        atoms.cell = np.array(cell).reshape(3, 3)
        atoms.pbc = True
    if energy is not None:
        atoms.info["energy"] = energy
    if forces == "shape":
        atoms.info["forces"] = np.zeros((n + 1, 3))
    elif forces == "zeros":
        atoms.info["forces"] = np.zeros((n, 3))
    elif forces is not None:
        atoms.info["forces"] = forces
    if stress is not None:
        atoms.info["stress"] = stress
    if sigma is not None:
        atoms.info["energy_sigma"] = sigma
    model = gapfit.GAP(**SMALL, energy_key="energy", forces_key="forces", stress_key="stress")
    try:
        summary = model.check_data([atoms])
    except GapfitError as exc:
        assert "\n" not in str(exc)
        event("error")
        return
    event("usable")
    assert summary["n_frames"] == 1 and summary["n_energies"] == 1


# ----------------------------------------------------------------- configs
_keys = st.one_of(st.sampled_from(sorted(CHECKS)), st.text(min_size=1, max_size=10))
_species_maps = st.dictionaries(st.sampled_from(["Cu", "Si", "Xx", 29, "29", 0, "", True]),
                                st.one_of(st.integers(-5, 3000), st.floats(allow_nan=True), st.text(max_size=4)),
                                max_size=3)
_config_values = st.one_of(_odd_values, _species_maps,
                           st.dictionaries(st.text(max_size=6), st.dictionaries(
                               st.sampled_from(["energy", "forces", "virial", "force"]), _odd_values), max_size=2))


@fuzz()
@given(cfg=st.dictionaries(_keys, _config_values, max_size=5), raw=st.one_of(st.none(), st.text(max_size=40)))
def test_fuzzed_configs_fail_cleanly_or_are_valid(tmp_path, cfg, raw):
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        path = os.path.join(d, "fit.yaml")
        with open(path, "w") as fh:
            fh.write(raw if raw is not None else yaml.safe_dump(cfg))
        code, out, err = _run_cli(["fit", str(DATA / "Cu_emt_test.xyz"), "-o", os.path.join(d, "m.npz"),
                                   "--config", path, "--dry-run"])
        event(f"exit {code}")
        if code != 0:
            _assert_clean_failure(code, err)
            assert "fit.yaml" in err
            return
        loaded = yaml.safe_load(open(path)) or {}
        model = gapfit.GAP(**loaded)
        model._validate()
        model.make_terms()
        assert "nothing written" in out


@fuzz(0.3)
@given(n_max=st.integers(1, 4), l_max=st.integers(0, 3), cutoff=st.floats(1.0, 6.0),
       width_fraction=st.floats(0.05, 1.0), atom_sigma=st.floats(0.1, 1.5), zeta=st.floats(0.5, 6.0),
       sigma_energy=st.floats(1e-8, 1.0), sigma_forces=st.floats(1e-8, 1.0), jitter=st.floats(1e-14, 1e-2),
       n_sparse=st.integers(1, 40), method=st.sampled_from(["cur", "fps", "random"]),
       delta=st.one_of(st.none(), st.floats(1e-3, 1e3)), backend=st.sampled_from(["featomic", "featomic", "dscribe"]))
def test_fuzzed_valid_settings_fit_or_fail_cleanly(n_max, l_max, cutoff, width_fraction, atom_sigma, zeta,
                                                   sigma_energy, sigma_forces, jitter, n_sparse, method, delta,
                                                   backend):
    frames = _tiny_frames()
    model = gapfit.GAP(backend=backend, dscribe_mode="analytic",
                       n_max=n_max, l_max=l_max, cutoff=cutoff, cutoff_transition_width=width_fraction * cutoff,
                       atom_sigma=atom_sigma, zeta=zeta, sigma_energy=sigma_energy, sigma_forces=sigma_forces,
                       jitter=jitter, n_sparse=n_sparse, sparse_method=method, delta=delta,
                       calibration_fraction=0.0)
    try:
        model.fit(frames)
    except GapfitError as exc:
        assert "\n" not in str(exc)
        event(type(exc).__name__)
        return
    event("fitted")
    pred = model.predict(frames[:2])
    for p, a in zip(pred, frames):
        assert np.isfinite(p.energy) and np.all(np.isfinite(p.forces))
        assert abs(p.forces.sum(axis=0)).max() < 1e-6 * max(1.0, abs(p.forces).max())  # Newton's third law


_TINY = []


def _tiny_frames():
    if not _TINY:
        from ase.calculators.emt import EMT
        rng = np.random.default_rng(0)
        for k in range(4):
            a = bulk("Cu", "fcc", 3.61 + 0.02 * k, cubic=True)
            a.positions += rng.normal(0, 0.05, a.positions.shape)
            a.calc = EMT()
            res = {"energy": a.get_potential_energy(), "forces": a.get_forces(), "stress": a.get_stress()}
            a.calc = SinglePointCalculator(a, **res)
            _TINY.append(a)
    return _TINY


# ------------------------------------------------------------- model files
class _Original(tuple):
    """(model file bytes, prediction on a probe frame); a short repr keeps failure reports readable."""

    def __repr__(self):
        return f"<model file, {len(self[0])} bytes>"


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzzmodel") / "m.npz"
    model = gapfit.GAP(**SMALL, n_sparse=8).fit(_tiny_frames())
    model.save(str(path))
    probe = _tiny_frames()[1]
    return _Original((path.read_bytes(), model.predict([probe])[0]))


def _mutate(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "flip", "random", "splice"]))
    if kind == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "random":
        return draw(st.binary(max_size=2000))
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= draw(st.integers(1, 255))
        return bytes(buf)
    i = draw(st.integers(0, len(buf) - 1))
    return bytes(buf[:i]) + draw(st.binary(min_size=1, max_size=64)) + bytes(buf[i:])


_member_arrays = st.one_of(
    st.builds(lambda shape, fill: np.full(shape, fill), st.lists(st.integers(0, 4), max_size=3).map(tuple),
              st.floats(allow_nan=True, allow_infinity=True)),
    st.text(max_size=30).map(np.array), st.just(np.array(["a", "b"])), st.just(np.zeros(3, dtype=np.int8)))


@st.composite
def foreign_archives(draw, original: bytes):
    """npz and zip files that look more or less like a model: members replaced, added, removed, pickled."""
    with np.load(io.BytesIO(original), allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    kind = draw(st.sampled_from(["replace", "drop", "pickle", "plainzip", "metadata"]))
    if kind == "replace":
        members[draw(st.sampled_from(sorted(members)))] = draw(_member_arrays)
    elif kind == "drop":
        members.pop(draw(st.sampled_from(sorted(members))))
    elif kind == "metadata":
        meta = json.loads(str(members["metadata"]))
        key = draw(st.sampled_from(sorted(meta)))
        meta[key] = draw(st.one_of(_odd_values, st.dictionaries(st.text(max_size=5), _odd_values, max_size=2)))
        members["metadata"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    if kind == "pickle":
        members[draw(st.sampled_from(sorted(members)))] = np.array([{"x": 1}], dtype=object)
        np.savez(buf, **members)
    elif kind == "plainzip":
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(draw(st.sampled_from(["metadata.npy", "alpha.npy", "x.txt"])), draw(st.binary(max_size=200)))
            zf.writestr("payload.pkl", pickle.dumps({"boom": 1}))
    else:
        np.savez(buf, **members)
    return buf.getvalue(), kind


@fuzz()
@given(data=st.data())
def test_fuzzed_model_bytes_fail_cleanly_or_load_the_same_model(tmp_path, model_bytes, data):
    original, expected = model_bytes
    blob = _mutate(data.draw, original)
    assume(blob != original)
    path = tmp_path / "fuzz.npz"
    path.write_bytes(blob)
    try:
        model = gapfit.load(str(path))
    except ModelFormatError as exc:
        assert "\n" not in str(exc) and "allow_pickle" not in str(exc)
        event("refused")
        return
    event("loaded")
    # the archive's checksums protect every entry: what loads is the original model
    got = model.predict([_tiny_frames()[1]])[0]
    assert got.energy == expected.energy
    assert np.array_equal(got.forces, expected.forces)


@fuzz()
@given(data=st.data())
def test_fuzzed_foreign_archives_fail_cleanly_or_predict_finite(tmp_path, model_bytes, data):
    blob, kind = data.draw(foreign_archives(model_bytes[0]))
    path = tmp_path / "foreign.npz"
    path.write_bytes(blob)
    try:
        model = gapfit.load(str(path))
    except ModelFormatError as exc:
        assert "\n" not in str(exc) and "allow_pickle" not in str(exc)
        if kind == "pickle":
            assert "pickle" in str(exc)
        event(f"{kind}: refused")
        return
    event(f"{kind}: loaded")
    assert kind in ("replace", "metadata")  # a consistent file with other values is a model
    pred = model.predict([_tiny_frames()[1]], uncertainty=True)[0]
    assert np.isfinite(pred.energy) and np.all(np.isfinite(pred.forces))


@fuzz(0.5)
@given(data=st.data())
def test_fuzzed_model_files_through_eval_exit_2_with_one_line(tmp_path, model_bytes, data):
    blob = _mutate(data.draw, model_bytes[0])
    path = tmp_path / "cli.npz"
    path.write_bytes(blob)
    frame = tmp_path / "one.xyz"
    if not frame.exists():
        ase.io.write(frame, _tiny_frames()[1])
    code, out, err = _run_cli(["eval", str(path), str(frame), "--no-uncertainty", "--json"])
    event(f"exit {code}")
    if code != 0:
        _assert_clean_failure(code, err)
    else:
        assert json.loads(out.strip().splitlines()[-1])["n_frames"] == 1
