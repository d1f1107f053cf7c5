"""NVE energy conservation: 64-atom Si, default Si model, 1 fs steps from 1000 K for 1 ps.

Reproduce: python bench/nve.py [MODEL] [--steps 1000]   (default bench/out/Si.npz).
Prints the drift (slope of a linear fit of total energy against time, times
the run length) and the spread (max - min) of the total energy, in meV/atom.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet


ROOT = Path(__file__).resolve().parents[1]


def _rel(path: str) -> str:
    """Path relative to the repository root when inside it (for the printed command)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?", default=str(ROOT / "bench" / "out" / "Si.npz"))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--temperature", type=float, default=1000.0)
    args = p.parse_args()
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat((2, 2, 2))
    atoms.calc = gapfit.GAPCalculator(args.model, uncertainty=False)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    t_ps, etot, temp = [], [], []

    def record():
        t_ps.append(dyn.nsteps * 1e-3)
        etot.append(atoms.get_total_energy() / len(atoms))
        temp.append(atoms.get_temperature())

    dyn.attach(record, interval=1)
    t0 = time.perf_counter()
    dyn.run(args.steps)
    wall = time.perf_counter() - t0
    t_ps, etot = np.array(t_ps), np.array(etot)
    slope = np.polyfit(t_ps, etot, 1)[0]
    drift = 1e3 * slope * (t_ps[-1] - t_ps[0])
    spread = 1e3 * np.ptp(etot)
    print(f"Command: python bench/nve.py {_rel(args.model)} --steps {args.steps} --temperature {args.temperature}")
    print("| atoms | steps | dt fs | T start K | mean T K | drift meV/atom (linear) | spread meV/atom | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {len(atoms)} | {args.steps} | 1.0 | {args.temperature:.0f} | {np.mean(temp):.0f} | {drift:+.3f} | "
          f"{spread:.3f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
