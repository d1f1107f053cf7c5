#!/usr/bin/env python
"""What ``gapfit md --committee K`` costs against a plain run, for each kind of member.

Usage::

    python bench/reweight_cost.py [--steps 400] [--interval 10] [--K 8] [--repeat 3] [--rep 2]

The default Cu model (``bench/out/Cu-default.npz``, fitted on
data/Cu_emt_train.xyz when absent), NPT at 800 K from fcc (``--rep`` cells per
side: 2 gives 32 atoms, 3 gives 108), 2 fs, one frame written every
``--interval`` steps. Each row: CPU seconds of :func:`gapfit.md.run_md` (process
time, medians of ``--repeat`` runs after one warm-up run, the variants
interleaved), the ratio to the
plain run, and for predictive members the residual points drawn by the end.
Prints a markdown table with the command.

Measured (``--steps 400 --repeat 5``, a machine shared with a benchmark):
plain 41.1 s, weight-space members 40.7 s (0.99×), predictive members
41.9 s (1.02×, 1,298 residual points drawn).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase.build import bulk

from gapfit.md import run_md

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def model():
    path = OUT / "Cu-default.npz"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "gapfit.cli", "fit", str(ROOT / "data" / "Cu_emt_train.xyz"),
                        "-o", str(path)], check=True)
    return gapfit.load(str(path))


def one_run(m, args, K: int, kind: str) -> tuple:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((args.rep,) * 3)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.process_time()
        run_md(m, atoms, ensemble="npt", temperature_K=800.0, timestep_fs=2.0, steps=args.steps, seed=3,
               interval=args.interval, trajectory=f"{tmp}/t.xyz", committee=K, committee_seed=1,
               committee_kind=kind)
        cpu = time.process_time() - t0
    points = atoms.calc.committee.residual.n_points if K and kind == "predictive" else None
    return cpu, points


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--interval", type=int, default=10)
    p.add_argument("--K", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rep", type=int, default=2)
    args = p.parse_args(argv)
    m = model()
    rows = [("plain run", 0, "predictive"), (f"--committee {args.K} --committee-kind weights", args.K, "weights"),
            (f"--committee {args.K} (predictive)", args.K, "predictive")]
    one_run(m, args, 0, "predictive")  # warm-up: imports, numba caches
    # interleaved (plain, weights, predictive, plain, ...): a load that drifts on a shared machine hits all alike
    runs = {label: [] for label, _, _ in rows}
    for _ in range(args.repeat):
        for label, K, kind in rows:
            runs[label].append(one_run(m, args, K, kind))
    out = [(label, float(np.median([r[0] for r in runs[label]])), runs[label][-1][1]) for label, _, _ in rows]
    print(f"command: python bench/reweight_cost.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    print(f"{4 * args.rep ** 3} Cu atoms, NPT 800 K, {args.steps} steps of 2 fs, a frame every {args.interval}; "
          f"CPU s, median of {args.repeat}\n")
    print("| run | CPU s | × plain | residual points at the end |")
    print("|---|---|---|---|")
    for label, cpu, pts in out:
        print(f"| {label} | {cpu:.1f} | {cpu / out[0][1]:.2f} | {'' if pts is None else pts} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
