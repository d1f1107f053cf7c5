"""Defaults against `--optimize`: held-out errors, the optimised δ and σ, and what the optimisation costs.

Reproduce (from the repository root; the DFT sets need ../shared beside it):

    python bench/optimize.py                       # Cu (shipped EMT), Si, Mo, aspirin, ethanol
    python bench/optimize.py Si Cu                 # chosen sets
    python bench/optimize.py Si --only optimize    # only the --optimize fits

Each row is a `gapfit fit` exactly as a user runs it (default recipe, with
or without `--optimize`), evaluated with `gapfit eval --json` on the test
file. The optimised values, the likelihoods and the optimisation's wall
time come from the model file's training summary. Lines are appended to
bench/out/optimize.jsonl; the table is printed at the end.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from accuracy import OUT, SETS, SHARED, gapfit_cmd  # noqa: E402

ALL_SETS = {"Cu": (ROOT / "data" / "Cu_emt_train.xyz", ROOT / "data" / "Cu_emt_test.xyz"),
            **{k: (SHARED / a, SHARED / b) for k, (a, b) in SETS.items()}}
MODES = {"default": [], "optimize": ["--optimize"]}


def run(data: str, mode: str) -> dict:
    train, test = ALL_SETS[data]
    if not train.exists():
        raise SystemExit(f"{train} not found: put ../shared beside the repository")
    OUT.mkdir(parents=True, exist_ok=True)
    model = OUT / f"{data}-{mode}.npz"
    t0 = time.perf_counter()
    subprocess.run(gapfit_cmd() + ["fit", str(train), "-o", str(model), "--no-progress",
                                   "--train-error-frames", "0"] + MODES[mode], check=True, stderr=subprocess.DEVNULL)
    fit_s = time.perf_counter() - t0
    r = subprocess.run(gapfit_cmd() + ["eval", str(model), str(test), "--json", "--no-uncertainty"],
                       check=True, capture_output=True, text=True)
    res = json.loads(r.stdout)
    with np.load(model, allow_pickle=False) as z:
        meta = json.loads(str(z["metadata"]))
    hp = meta["training"].get("hyperparameters", {})
    res.update(data=data, mode=mode, fit_wall_s=round(fit_s, 1), hyperparameters=hp,
               lml=meta["training"].get("likelihood", {}).get("log_marginal_likelihood"),
               n_sparse_total=int(sum(t["n_columns"] for t in meta["terms"])))
    with open(OUT / "optimize.jsonl", "a") as fh:
        fh.write(json.dumps(res) + "\n")
    return res


def table(rows) -> str:
    head = (f"{'data':<8} {'mode':<9} {'E meV/at':>9} {'F meV/Å':>8} {'S GPa':>7} {'fit s':>6} {'opt s':>6} "
            f"{'evals':>5} {'opt %':>6}  δ per term (eV); σ_E, σ_F, σ_V")
    out = [head]
    for r in rows:
        hp = r["hyperparameters"]
        deltas = ", ".join(f"{v:.3g}" for v in hp.get("delta_eV", {}).values())
        sig = hp.get("sigma", {})
        sigmas = ", ".join(f"{sig.get(k, float('nan')):.3g}" for k in ("energy", "forces", "virial"))
        opt_s = hp.get("seconds")
        stress = r.get("stress_mae_gpa")
        out.append(f"{r['data']:<8} {r['mode']:<9} {r['energy_mae_mev_per_atom']:>9.3f} "
                   f"{r.get('force_mae_mev_per_ang', float('nan')):>8.1f} "
                   f"{(stress if stress is not None else float('nan')):>7.3f} {r['fit_wall_s']:>6.0f} "
                   f"{(opt_s if opt_s is not None else float('nan')):>6.1f} {hp.get('evaluations', 0):>5} "
                   f"{(100 * opt_s / (r['fit_wall_s'] - opt_s) if opt_s else float('nan')):>6.1f}"
                   f"  {deltas}; {sigmas}")
    return "\n".join(out + ["opt %: the optimisation's wall time over the rest of the same fit (both in one run)"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sets", nargs="*", help="default: all")
    p.add_argument("--only", choices=list(MODES))
    args = p.parse_args(argv)
    bad = [x for x in args.sets if x not in ALL_SETS]
    if bad:
        p.error(f"unknown sets {bad}; known: {' '.join(ALL_SETS)}")
    args.sets = args.sets or list(ALL_SETS)
    modes = [args.only] if args.only else list(MODES)
    rows = []
    for data in args.sets:
        for mode in modes:
            rows.append(run(data, mode))
            print(table(rows).splitlines()[len(rows)], flush=True)
    print("\n" + table(rows))
    print(f"\nreproduce: python bench/optimize.py {' '.join(args.sets)}"
          + (f" --only {args.only}" if args.only else ""))


if __name__ == "__main__":
    main()
