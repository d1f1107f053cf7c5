"""Default `gapfit fit` on the shared DFT data sets: test errors, fit time, prediction cost.

Reproduce (from the repository root, with ../shared beside it):

    python bench/accuracy.py                  # all four data sets
    python bench/accuracy.py Si Mo            # a subset

Each fit runs the command line exactly as a user would (`gapfit fit TRAIN -o
MODEL`, no config) and each evaluation `gapfit eval MODEL TEST --json`. Models
and logs go to bench/out/. Prints a Markdown table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"
SETS = {
    "Si": ("mlearn/Si_train.xyz", "mlearn/Si_test.xyz"),
    "Mo": ("mlearn/Mo_train.xyz", "mlearn/Mo_test.xyz"),
    "aspirin": ("rmd17/aspirin_train.xyz", "rmd17/aspirin_test.xyz"),
    "ethanol": ("rmd17/ethanol_train.xyz", "rmd17/ethanol_test.xyz"),
}


def gapfit_cmd():
    exe = Path(sys.executable).with_name("gapfit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gapfit.cli"]


def run(name: str) -> dict:
    train, test = (SHARED / p for p in SETS[name])
    if not train.exists():
        raise SystemExit(f"{train} not found: put ../shared beside the repository")
    OUT.mkdir(parents=True, exist_ok=True)
    model = OUT / f"{name}.npz"
    t0 = time.perf_counter()
    subprocess.run(gapfit_cmd() + ["fit", str(train), "-o", str(model), "--no-progress"], check=True)
    fit_s = time.perf_counter() - t0
    r = subprocess.run(gapfit_cmd() + ["eval", str(model), str(test), "--json"], check=True,
                       capture_output=True, text=True)
    res = json.loads(r.stdout)
    res["fit_wall_s"] = fit_s
    res["name"] = name
    return res


def main(names):
    rows = [run(n) for n in names]
    print("\nCommand: python bench/accuracy.py " + " ".join(names))
    print(f"Machine: {os.cpu_count()} cores; default settings (no config)\n")
    print("| data | E MAE meV/atom | E MAE meV/structure | F MAE meV/Å | S MAE GPa | fit wall s | predict ms/atom |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        s = f"{r['stress_mae_gpa']:.3f}" if "stress_mae_gpa" in r else "-"
        print(f"| {r['name']} | {r['energy_mae_mev_per_atom']:.2f} | {r['energy_mae_mev_per_structure']:.1f} | "
              f"{r['force_mae_mev_per_ang']:.1f} | {s} | {r['fit_wall_s']:.0f} | {r['predict_ms_per_atom']:.2f} |")
    (OUT / "accuracy.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:] or list(SETS))
