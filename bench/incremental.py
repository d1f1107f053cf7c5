"""Cost of an incremental update with one new frame against a full refit at the same size.

Reproduce: python bench/incremental.py [N_FRAMES]   (default 40)

Frames: 108-atom fcc Cu from an EMT Langevin MD at 1000 K (labelled with EMT),
SOAP from bench/configs/learn_cu.yaml, 8 sparse points per frame (as
`gapfit learn` adds). Times: adding frame N+1 with no new sparse points (rows
only), then frame N+2 with 8 new sparse points, and a from-scratch batch fit
of N+1 frames with the same number of sparse points.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learn_cu import CONFIG, emt_md  # noqa: E402

from gapfit.incremental import IncrementalGAP  # noqa: E402


def main(n):
    params = yaml.safe_load(CONFIG.read_text())
    frames = emt_md(n + 2, 25, seed=5, equil_steps=200)
    inc = IncrementalGAP(params, [29])
    rng = np.random.default_rng(0)
    for a in frames[:n]:
        inc.add_frame(a, list(rng.choice(len(a), 8, replace=False)))
    t = time.perf_counter()
    inc.add_frame(frames[n], [])  # rows only: no new sparse points
    t_rows = time.perf_counter() - t
    M = inc.model.n_sparse_total_
    t = time.perf_counter()
    inc.add_frame(frames[n + 1], list(rng.choice(len(frames[n + 1]), 8, replace=False)))
    t_cols = time.perf_counter() - t
    t = time.perf_counter()
    gapfit.GAP(**params, n_sparse=M, calibration_fraction=0.0).fit(frames[:n + 1])
    t_full = time.perf_counter() - t
    print(f"Command: python bench/incremental.py {n}")
    print(f"{n} frames of 108-atom Cu + 1 new frame; M = {M} sparse points; SOAP {params}\n")
    print("| update | seconds | fraction of full refit |")
    print("|---|---|---|")
    print(f"| incremental, new frame only (QR row update) | {t_rows:.3f} | {t_rows / t_full:.3f} |")
    print(f"| incremental, new frame + 8 sparse points (columns from stored descriptors, re-QR) | {t_cols:.3f} | {t_cols / t_full:.3f} |")
    print(f"| full refit from scratch, same {n + 1} frames and M | {t_full:.3f} | 1.000 |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
