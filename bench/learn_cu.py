"""On-the-fly learning on fcc Cu with EMT as the reference, against labelling every k-th or random frames.

Reproduce (from the repository root):

    python bench/learn_cu.py                 # full run: 3000 steps
    python bench/learn_cu.py --steps 600     # quicker

1. `gapfit learn` from nothing: 108-atom fcc Cu (3x3x3 conventional cells,
   a = 3.61 Å), EMT reference, Langevin 1000 K, 2 fs, STEPS steps, config
   bench/configs/learn_cu.yaml, default threshold.
2. Test set: an independent EMT Langevin MD at 1000 K (other seed), 40 frames
   100 fs apart after 2 ps of equilibration.
3. Baselines on an EMT-driven Langevin trajectory of the same length and
   conditions: label every k-th frame, or random frames, fit the same GAP
   settings (batch fit, default sparse points: every environment up to 2000),
   and find the number of labelled frames that reaches the on-the-fly model's
   test force MAE. The on-the-fly frames refitted in batch are shown too.
Prints a table of reference calls and test force MAE (meV/Å).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import ase.io
import numpy as np
import yaml
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin

from gapfit.md import initial_velocities

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "learn_cu"
CONFIG = ROOT / "bench" / "configs" / "learn_cu.yaml"


def cu108():
    return bulk("Cu", "fcc", 3.61, cubic=True).repeat((3, 3, 3))


def emt_md(n_frames, every, seed, equil_steps):
    a = cu108()
    a.calc = EMT()
    initial_velocities(a, 1000, seed)
    dyn = Langevin(a, 2 * units.fs, temperature_K=1000, friction=0.01 / units.fs, fixcm=False,
                   rng=np.random.default_rng(seed))
    dyn.run(equil_steps)
    frames = []
    for _ in range(n_frames):
        dyn.run(every)
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=a.get_potential_energy(), forces=a.get_forces(),
                                       stress=a.get_stress())
        frames.append(b)
    return frames


def force_mae(model, frames):
    preds = model.predict(frames)
    return 1e3 * float(np.mean(np.concatenate([np.abs(p.forces - a.get_forces()).ravel()
                                               for p, a in zip(preds, frames)])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--sparse-per-update", type=int, default=16)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load(CONFIG.read_text())
    test = emt_md(40, 50, seed=12345, equil_steps=1000)

    start = OUT / "start.xyz"
    ase.io.write(start, cu108())
    run_dir = OUT / "run"
    if run_dir.exists():
        import shutil
        shutil.rmtree(run_dir)
    exe = Path(sys.executable).with_name("gapfit")
    t0 = time.perf_counter()
    r = subprocess.run([str(exe), "learn", str(start), "--reference", "ase.calculators.emt:EMT", "-o", str(run_dir),
                        "--config", str(CONFIG), "--temperature", "1000", "--timestep", "2",
                        "--steps", str(args.steps), "--sparse-per-update", str(args.sparse_per_update),
                        "--json", "--no-progress"],
                       check=True, capture_output=True, text=True)
    learn_s = time.perf_counter() - t0
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    otf = gapfit.load(summary["model"])
    otf_mae = force_mae(otf, test)
    calls = summary["reference_calls"]

    # baselines: frames from an EMT-driven trajectory of the same length
    pool = emt_md(args.steps // 10, 10, seed=777, equil_steps=0)
    rng = np.random.default_rng(0)
    rows = []
    for n in sorted(set([2, 4, 6, 8, 12, calls, 2 * calls])):
        if n > len(pool):
            continue
        k = max(1, len(pool) // n)
        every = pool[::k][:n]
        rand = [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]
        for name, frames in (("every k-th frame, batch fit", every), ("random frames, batch fit", rand)):
            m = gapfit.GAP(**params, calibration_fraction=0.0).fit(frames)
            rows.append((name, n, force_mae(m, test)))

    # the on-the-fly frames refitted in batch with the default sparse points
    labelled = ase.io.read(summary["data"], ":")
    refit = gapfit.GAP(**params, calibration_fraction=0.0).fit(labelled)
    refit_mae = force_mae(refit, test)

    print(f"Command: python bench/learn_cu.py --steps {args.steps} --sparse-per-update {args.sparse_per_update}")
    print(f"108-atom fcc Cu, EMT reference, Langevin 1000 K, 2 fs, {args.steps} steps; SOAP {params}")
    print(f"Test: 40 frames of an independent EMT Langevin MD at 1000 K\n")
    print("| scheme | reference calls | test force MAE meV/Å |")
    print("|---|---|---|")
    print(f"| gapfit learn (on the fly, {summary['steps']} steps, {learn_s:.0f} s wall, "
          f"{otf.n_sparse_total_} sparse points) | {calls} | {otf_mae:.1f} |")
    print(f"| same labelled frames, batch refit (all environments as sparse points) | {calls} | {refit_mae:.1f} |")
    for name, n, mae in rows:
        print(f"| {name} | {n} | {mae:.1f} |")
    (OUT / "learn_cu.json").write_text(json.dumps({"learn": {"calls": calls, "mae": otf_mae, "wall_s": learn_s,
                                                            "summary": summary},
                                                   "baselines": rows}, indent=1))


if __name__ == "__main__":
    main()
