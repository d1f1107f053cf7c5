"""MD speed with and without uncertainty monitoring: steps per second.

Reproduce (from the repository root, models made by `python bench/optimize.py Si aspirin --only default`):

    python bench/md_speed.py                       # Si 64, Si 512, aspirin
    python bench/md_speed.py --systems si64 --steps 20

Velocity Verlet, 1 fs, from 300 K (Si, rattled diamond) or the first
aspirin test frame, with the calculator asked for the monitored standard
deviations at *every* step (the worst case, `gapfit md --max-force-std X`
with the default `--check-interval 1`). Columns: no monitoring; local-energy
std; local-energy and force std; every std (energy, local energy, forces);
then local-energy and force std on every 10th step only, as
`gapfit md --max-force-std X --check-interval 10` computes them. Each cell
is the median of three timed runs of ``--steps`` steps (at least 20 in the
every-10th column) after one warm-up step. Prints a Markdown table.

On code before selectable uncertainties (GAPCalculator(uncertainty=True)
only), every monitored column computes all three stds; the script says so.
"""
from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase import units
from ase.build import bulk
from ase.io import read
from ase.md.verlet import VelocityVerlet

from gapfit.md import initial_velocities

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"
MODES = {"none": None, "local energy std": ("local_energy",), "local energy + force std": ("local_energy", "forces"),
         "all stds": True, "local energy + force std every 10th step": ("local_energy", "forces")}
#: steps between checks of each mode (1: every step)
EVERY = {"local energy + force std every 10th step": 10}


def system(name: str):
    """(model path, atoms) of a benchmark system."""
    if name.startswith("si"):
        reps = {"si64": 2, "si512": 4}[name]
        atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat((reps,) * 3)
        atoms.rattle(0.05, seed=0)
        return OUT / "Si-default.npz", atoms
    if name == "aspirin":
        return OUT / "aspirin-default.npz", read(SHARED / "rmd17" / "aspirin_test.xyz", index=0)
    raise SystemExit(f"unknown system {name!r}")


def selectable() -> bool:
    """Whether this gapfit takes a selection of uncertainties (not just True/False)."""
    return "local_energy" in (inspect.getdoc(gapfit.GAP.predict) or "")


def steps_per_second(model, atoms0, mode, steps: int, repeats: int = 3) -> float:
    sel = MODES[mode]
    if sel is not None and sel is not True and not selectable():
        sel = True  # older code: every std or none
    every = EVERY.get(mode, 1)
    rates = []
    for _ in range(repeats):
        atoms = atoms0.copy()
        atoms.calc = gapfit.GAPCalculator(model, uncertainty=sel if (sel is not None and every == 1) else False)
        initial_velocities(atoms, temperature_K=300, seed=0)
        dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
        dyn.run(1)  # warm-up: numba, featomic, the model's solver factors
        t = time.perf_counter()
        if every == 1:
            dyn.run(steps)
        else:  # as gapfit.md.run_md: the calculator is told before a checked step what that step computes
            for k in range(1, steps + 1):
                atoms.calc.uncertainty_next = sel if k % every == 0 else False
                dyn.run(1)
        rates.append(steps / (time.perf_counter() - t))
        if sel is not None and every == 1:
            assert atoms.calc.results.get("local_energy_std") is not None
    return float(np.median(rates))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", nargs="+", default=["si64", "si512", "aspirin"])
    p.add_argument("--steps", type=int, default=None, help="steps per timed run (default: 20, 5 for si512)")
    args = p.parse_args()
    print(f"Command: python bench/md_speed.py --systems {' '.join(args.systems)}"
          + (f" --steps {args.steps}" if args.steps else ""))
    if not selectable():
        print("(this code computes every std whenever one is asked: the monitored columns all do that)")
    print("| system | atoms | " + " | ".join(f"{m} steps/s" for m in MODES) + " | ratio local / none | "
          "ratio local+force / none | ratio local+force every 10th / none |")
    print("|---|---|" + "---|" * (len(MODES) + 3))
    for name in args.systems:
        path, atoms = system(name)
        if not path.exists():
            print(f"| {name} | model {path} missing: run `python bench/optimize.py Si aspirin --only default` first |")
            continue
        model = gapfit.load(str(path))
        steps = args.steps or (5 if name == "si512" else 20)
        rates = {m: steps_per_second(model, atoms, m, max(steps, EVERY.get(m, 1) * 2)) for m in MODES}
        print(f"| {name} | {len(atoms)} | " + " | ".join(f"{rates[m]:.2f}" for m in MODES)
              + f" | {rates['none'] / rates['local energy std']:.2f} | "
                f"{rates['none'] / rates['local energy + force std']:.2f} | "
                f"{rates['none'] / rates['local energy + force std every 10th step']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
