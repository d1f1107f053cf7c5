"""Peak memory of `gapfit fit` as the data grow, at a fixed number of sparse points.

Reproduce (from the repository root, with ../shared beside it):

    python bench/stream_memory.py                 # 1x, 4x, 16x mlearn Si, M fixed
    python bench/stream_memory.py --sizes 1 4 --n-sparse 500
    python bench/stream_memory.py --candidates    # sparse points from a sample vs from all environments

The k× set is the mlearn Si training set followed by k-1 copies whose atoms
are moved by a seeded Gaussian of --rattle Å (labels unchanged: a force
error of about force-constant × rattle is added on purpose, small against
σ_F). Each size is fitted by the command line, as a user runs it, with
`--n-sparse N --no-hygiene --train-error-frames 0`; the peak resident
memory is sampled every 0.1 s over the process and its children. Then the
model's errors on Si_test (MAE: energy meV/atom, forces meV/Å, stress GPa).

--candidates instead fits the 1× set with sparse points chosen from seeded
samples of 2000 and 5000 environments, and from all of them.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from accuracy import SHARED, gapfit_cmd  # noqa: E402


def replicate(src: Path, k: int, rattle_A: float, out: Path) -> int:
    import ase.io
    frames = ase.io.read(src, ":")
    rng = np.random.default_rng(1)
    n = 0
    with open(out, "w") as fh:
        for copy in range(k):
            for a in frames:
                b = a.copy()
                b.calc = a.calc
                if copy:
                    b.positions = b.positions + rng.normal(0, rattle_A, b.positions.shape)
                ase.io.write(fh, b, format="extxyz")
                n += len(b)
    return n


def peak_rss_run(cmd) -> tuple:
    """(peak RSS in MB over the process tree, wall seconds, exit code)."""
    import psutil
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    try:
        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    if proc.returncode:
        print(err, file=sys.stderr)
    return peak / 1e6, time.perf_counter() - t0, proc.returncode


def test_errors(model: Path) -> dict:
    out = subprocess.run(gapfit_cmd() + ["eval", str(model), str(SHARED / "mlearn/Si_test.xyz"), "--json",
                                         "--no-uncertainty"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _label(cand, candidates_mode: bool) -> str:
    return str(cand) if cand else ("all" if candidates_mode else "20000 (default)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--n-sparse", type=int, default=500, help="SOAP sparse points (2b: 30)")
    ap.add_argument("--rattle", type=float, default=0.002, help="Å")
    ap.add_argument("--candidates", action="store_true")
    args = ap.parse_args()
    if not (SHARED / "mlearn/Si_train.xyz").exists():
        sys.exit(f"needs {SHARED}/mlearn (the shared data)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [(k, None) for k in args.sizes] if not args.candidates else [(1, 2000), (1, 5000), (1, None)]
        sizes = {}
        for k, cand in runs:
            data = tmp / f"Si_{k}x.xyz"
            if k not in sizes:
                sizes[k] = replicate(SHARED / "mlearn/Si_train.xyz", k, args.rattle, data)
            n_atoms = sizes[k]
            model = tmp / f"m_{k}_{cand}.npz"
            cmd = gapfit_cmd() + ["fit", str(data), "-o", str(model), "--n-sparse", str(args.n_sparse),
                                  "--no-hygiene", "--train-error-frames", "0", "--no-progress"]
            if cand:
                cmd += ["--sparse-candidates", str(cand)]
            elif args.candidates:
                cmd += ["--config", str(tmp / "all.yaml")]
                (tmp / "all.yaml").write_text("sparse_candidates: null\n")
            peak, wall, code = peak_rss_run(cmd)
            if code:
                sys.exit(f"fit failed: {' '.join(cmd)}")
            err = test_errors(model)
            rows.append((k, n_atoms, cand, peak, wall, err))
            print(f"{k}x: {n_atoms} atoms, candidates {_label(cand, args.candidates)}: peak {peak:.0f} MB, {wall:.0f} s, "
                  f"test E {err['energy_mae_mev_per_atom']:.2f} meV/atom, F {err['force_mae_mev_per_ang']:.1f} meV/A, "
                  f"S {err.get('stress_mae_gpa', float('nan')):.3f} GPa", flush=True)
    print("\ncommand: python bench/stream_memory.py " + " ".join(sys.argv[1:]))
    print("| data | atoms | candidates | peak RSS MB | ratio to first | wall s | test E meV/atom | F meV/Å | S GPa |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, n, cand, peak, wall, err in rows:
        print(f"| {k}× Si | {n} | {_label(cand, args.candidates)} | {peak:.0f} | {peak / rows[0][3]:.2f} | {wall:.0f} | "
              f"{err['energy_mae_mev_per_atom']:.2f} | {err['force_mae_mev_per_ang']:.1f} | "
              f"{err.get('stress_mae_gpa', float('nan')):.3f} |")


if __name__ == "__main__":
    main()
