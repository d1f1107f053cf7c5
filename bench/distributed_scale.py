"""Wall time of `gapfit fit` on one process and on local Dask workers, and a GAP-18-sized extrapolation.

Reproduce (from the repository root, with ../shared beside it; about 10 minutes):

    python bench/distributed_scale.py
    python bench/distributed_scale.py --skip-walls     # only the per-block costs and the extrapolation

Part 1 fits the mlearn Si training set (default settings, `--no-hygiene
--train-error-frames 0`) three ways: in one process, with `--workers 1` and
with `--workers 2`, and prints the wall times.

Part 2 measures, with one BLAS thread (as a worker runs), the costs a
distributed fit is made of, on a chunk of Si frames with the default model:
descriptors without and with gradients (per atom), design rows (per atom,
at the model's M; they scale with M), the QR of design rows (flop rate of
dgeqrf at M), and the merge of two (M+1)² triangles (scales with M³).

Part 3 extrapolates those to a GAP-18-sized fit: 2475 periodic frames with
171,815 atoms (energies, forces and virials), 2b + SOAP with M = 9000, on
one 2-core machine (2 workers, blocks of about 6000 atoms) and on a
64-core cluster (64 single-thread workers, blocks of about 1350 atoms), with
the peak memory of a worker and of the fitting process.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from accuracy import SHARED, gapfit_cmd  # noqa: E402

GAP18 = {"frames": 2475, "atoms": 171815, "M": 9000}


def wall(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def best_of(fn, repeats=3) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def measure_costs(model_path: Path) -> dict:
    import gapfit
    from gapfit import sgp
    model = gapfit.load(str(model_path))
    frames = gapfit.data.read_frames([str(SHARED / "mlearn/Si_train.xyz")])
    chunk, n = [], 0
    for a in frames:
        chunk.append(a)
        n += len(a)
        if n >= model.state_.atoms_per_chunk:
            break
    M = model.n_sparse_total_
    k = M + 1
    t_nograd = best_of(lambda: model.descriptors(chunk, gradients=False), 2) / n
    descs = model.descriptors(chunk, gradients=True)
    t_grad = best_of(lambda: model.descriptors(chunk, gradients=True), 2) / n
    t_rows = best_of(lambda: model.design_rows(descs, forces=True, virial=True), 2) / n
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((6 * k, k))
    t_qr = best_of(lambda: sgp.qr_r(rows), 2)
    qr_rate = 2 * rows.shape[0] * k * k / t_qr  # flop/s of dgeqrf, tall (6k × k)
    R1, R2 = np.triu(sgp.qr_r(rows[:3 * k])), np.triu(sgp.qr_r(rows[3 * k:]))
    t_merge = best_of(lambda: sgp.merge_factors([R1, R2]), 2)
    return {"M": M, "chunk_atoms": n, "t_nograd": t_nograd, "t_grad": t_grad, "t_rows": t_rows,
            "qr_rate": qr_rate, "t_merge": t_merge}


def extrapolate(c: dict, workers: int, atoms_per_block: int, chunk_peak_GB: float) -> dict:
    N, F, M = GAP18["atoms"], GAP18["frames"], GAP18["M"]
    k = M + 1
    scale_M = M / c["M"]
    n_blocks = max(1, round(N / atoms_per_block))
    force_rows = 3 * N
    per_atom = c["t_nograd"] + c["t_grad"] + c["t_rows"] * scale_M
    work = N * per_atom + 2 * force_rows * k * k / c["qr_rate"]
    t_merge = c["t_merge"] * (k / (c["M"] + 1)) ** 3
    # the merge tree: level l has ceil(n/2^l) merges, run on min(workers, merges) workers at once
    merges_time, level = 0.0, n_blocks
    while level > 1:
        m = level // 2
        merges_time += t_merge * np.ceil(m / workers)
        level = level - m
    # the virial group (6 rows per frame) is a triangle once its rows pass k/2: one more merge per level then
    if 6 * F > k // 2:
        merges_time *= 2
    client = (k ** 3 / 3 + 2 * (2 * k ** 3 / 3)) / c["qr_rate"] * 2  # K_MM, assembling groups + prior, solve
    seconds = work / workers + merges_time + client
    tri_GB = 8 * k * k / 1e9
    block_rows = 3 * atoms_per_block
    worker_GB = chunk_peak_GB + 8 * (k + block_rows) * k / 1e9 + 2 * tri_GB
    client_GB = 5 * tri_GB + 0.5
    return {"workers": workers, "blocks": n_blocks, "hours": seconds / 3600, "work_h": work / 3600,
            "merge_h": merges_time / 3600, "worker_GB": worker_GB, "client_GB": client_GB}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-walls", action="store_true")
    ap.add_argument("--chunk-peak-gb", type=float, default=None,
                    help="peak RSS (GB) of a one-process fit at small M, the chunk's transient memory "
                         "(default: measured here)")
    args = ap.parse_args()
    train = SHARED / "mlearn/Si_train.xyz"
    if not train.exists():
        sys.exit(f"needs {SHARED}/mlearn (the shared data)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = ["fit", str(train), "--no-hygiene", "--train-error-frames", "0", "--no-progress"]
        walls = {}
        model = tmp / "serial.npz"
        if not args.skip_walls:
            for name, extra in (("one process", []), ("--workers 1", ["--workers", "1"]),
                                ("--workers 2", ["--workers", "2"])):
                out = tmp / f"{name.replace(' ', '_')}.npz"
                walls[name] = wall(gapfit_cmd() + base + ["-o", str(out)] + extra)
                print(f"{name}: {walls[name]:.1f} s", flush=True)
            model = tmp / "one_process.npz"
        else:
            subprocess.run(gapfit_cmd() + base + ["-o", str(model)], check=True, capture_output=True)
        chunk_peak = args.chunk_peak_gb
        if chunk_peak is None:
            sys.path.insert(0, str(ROOT / "bench"))
            from stream_memory import peak_rss_run
            peak_MB, _, code = peak_rss_run(gapfit_cmd() + base + ["-o", str(tmp / "small.npz"), "--n-sparse", "100"])
            if code:  # a failed run's peak would be read as a chunk's memory
                sys.exit(f"the chunk-peak fit failed with exit code {code} (its stderr is above)")
            chunk_peak = peak_MB / 1e3
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1):
            c = measure_costs(model)
    print("\ncommand: python bench/distributed_scale.py " + " ".join(sys.argv[1:]))
    if walls:
        print("\n| mlearn Si, default settings | wall s | vs one process |\n|---|---|---|")
        for name, t in walls.items():
            print(f"| {name} | {t:.1f} | {t / walls['one process']:.2f} |")
    print(f"\nmeasured with one BLAS thread (M = {c['M']}, chunk of {c['chunk_atoms']} Si atoms):")
    print(f"  descriptors without gradients {1e3 * c['t_nograd']:.3f} ms/atom, with gradients "
          f"{1e3 * c['t_grad']:.3f} ms/atom, design rows {1e3 * c['t_rows']:.3f} ms/atom")
    print(f"  QR of design rows {c['qr_rate'] / 1e9:.1f} GFlop/s; merge of two triangles {c['t_merge']:.2f} s; "
          f"chunk transient memory {chunk_peak:.2f} GB")
    print(f"\nGAP-18-sized fit ({GAP18['frames']} frames, {GAP18['atoms']} atoms, M = {GAP18['M']}), extrapolated:")
    print("| machine | workers | blocks | hours | of which rows + QR (per worker) | merges | worker peak GB | "
          "fitting process GB |\n|---|---|---|---|---|---|---|---|")
    for name, workers, apb in (("one 2-core machine", 2, 6000), ("64-core cluster", 64, 1350)):
        e = extrapolate(c, workers, apb, chunk_peak)
        print(f"| {name} | {workers} | {e['blocks']} | {e['hours']:.2f} | {e['work_h'] / workers:.2f} | "
              f"{e['merge_h']:.2f} | {e['worker_GB']:.1f} | {e['client_GB']:.1f} |")


if __name__ == "__main__":
    main()
