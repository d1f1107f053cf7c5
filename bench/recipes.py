"""Which terms make the default: test errors and fit time of candidate recipes on the shared DFT data.

Reproduce (from the repository root, with ../shared beside it):

    python bench/recipes.py Si                      # every variant on Si
    python bench/recipes.py aspirin soap 2b+soap    # chosen variants

Each variant is a `gapfit fit` exactly as a user would run it (`--gap STRING`
plus flags), evaluated with `gapfit eval --json` on the test file. Results are
appended to bench/out/recipes.jsonl (one line per fit) and printed as a table.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from accuracy import OUT, SETS, SHARED, gapfit_cmd  # noqa: E402

SOAP = "soap cutoff=5.0 n_max=8 l_max=8 atom_sigma=0.5 zeta=4"
VARIANTS = {
    "soap": [SOAP],
    "2b+soap": ["distance_2b cutoff=5.0 n_sparse=30 theta_uniform=0.5", SOAP],
    "2b+3b+soap": ["distance_2b cutoff=5.0 n_sparse=30 theta_uniform=0.5",
                   "angle_3b cutoff=4.0 n_sparse=200 theta_uniform=1.0", SOAP],
    "soap-delta2": [SOAP + " delta=2.0"],
    "2b+soap-delta2": ["distance_2b cutoff=5.0 n_sparse=30 theta_uniform=0.5", SOAP + " delta=2.0"],
}
TWO_B = "distance_2b cutoff=5.0 n_sparse=30 theta_uniform=0.5"
VARIANTS.update({
    # noise levels: gap_fit's defaults (0.003 eV/atom, 0.05 eV/Å, 0.05 eV/atom) against tighter energy/virial ones
    "2b+soap-sv01": [TWO_B, SOAP],
    "2b+soap-d1-se1-sv01": [TWO_B, SOAP + " delta=1.0"],
})
FLAGS = {v: [] for v in VARIANTS}
FLAGS["2b+soap-sv01"] = ["--sigma-virial", "0.01"]
FLAGS["2b+soap-d1-se1-sv01"] = ["--sigma-virial", "0.01", "--sigma-energy", "0.001"]


def run(data: str, variant: str) -> dict:
    train, test = (SHARED / p for p in SETS[data])
    OUT.mkdir(parents=True, exist_ok=True)
    model = OUT / f"{data}-{variant}.npz"
    gap = " : ".join(VARIANTS[variant])
    t0 = time.perf_counter()
    subprocess.run(gapfit_cmd() + ["fit", str(train), "-o", str(model), "--no-progress", "--gap", gap,
                                   "--train-error-frames", "0"] + FLAGS[variant],
                   check=True, stderr=subprocess.DEVNULL)
    fit_s = time.perf_counter() - t0
    r = subprocess.run(gapfit_cmd() + ["eval", str(model), str(test), "--json", "--no-uncertainty"],
                       check=True, capture_output=True, text=True)
    res = json.loads(r.stdout)
    res.update(data=data, variant=variant, gap=gap, fit_wall_s=round(fit_s, 1))
    with open(OUT / "recipes.jsonl", "a") as fh:
        fh.write(json.dumps(res) + "\n")
    return res


def main(argv):
    data = argv[0]
    variants = argv[1:] or list(VARIANTS)
    rows = []
    for v in variants:
        rows.append(run(data, v))
        r = rows[-1]
        print(f"{data} {v}: {r['energy_mae_mev_per_atom']:.2f} meV/atom, {r['force_mae_mev_per_ang']:.1f} meV/Å, "
              f"{r.get('stress_mae_gpa', float('nan')):.3f} GPa, fit {r['fit_wall_s']:.0f} s", flush=True)
    print(f"\nCommand: python bench/recipes.py {' '.join(argv)}\n")
    print("| data | variant | E MAE meV/atom | E MAE meV/structure | F MAE meV/Å | S MAE GPa | fit wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        s = f"{r['stress_mae_gpa']:.3f}" if "stress_mae_gpa" in r else "-"
        print(f"| {r['data']} | {r['variant']} | {r['energy_mae_mev_per_atom']:.2f} | "
              f"{r['energy_mae_mev_per_structure']:.1f} | {r['force_mae_mev_per_ang']:.1f} | {s} | {r['fit_wall_s']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
