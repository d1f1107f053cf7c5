"""Cost of one log-marginal-likelihood evaluation from stored factors, at a given number of sparse points M.

Reproduce:

    python bench/lml_cost.py 2000 6000

Two shapes, both with two terms (a small two-body block and the rest SOAP):
``periodic``, three noise groups (energy, forces, virial) each with a full
upper-triangular (M+1) × (M+1) factor; ``molecule``, the energies of 1000
frames kept as plain rows (fewer than M + 1) and the forces as a triangle.
The cost does not depend on the values, only on M and the groups' shapes: a
merge of the prior and the groups' factors, plus for the gradient one
triangular solve with the prior and one with each group but the largest.
Prints ms per evaluation (median of ``--repeat``), with and without the
gradient.
"""
from __future__ import annotations

import argparse
import time

from gapfit import hyper  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np


def problem(M: int, shape: str = "periodic", seed: int = 0) -> hyper.LikelihoodProblem:
    rng = np.random.default_rng(seed)
    sizes = [30, M - 30]
    chol = []
    for n in sizes:
        X = rng.standard_normal((n, n)) / np.sqrt(n)
        chol.append(np.linalg.cholesky(X @ X.T + np.eye(n)))
    groups = ("energy", "forces", "virial") if shape == "periodic" else ("forces",)
    factors = {g: np.triu(rng.standard_normal((M + 1, M + 1))) + 10 * np.eye(M + 1) for g in groups}
    n_rows = {g: 10 * M for g in factors}
    if shape == "molecule":
        factors["energy"] = rng.standard_normal((1000, M + 1))
        n_rows["energy"] = 1000
    return hyper.LikelihoodProblem(factors=factors, n_rows=n_rows,
                                   log_sigma={g: 0.0 for g in factors}, kmm_chol=chol, block_term=[0, 1],
                                   delta0_eV=np.ones(2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("M", nargs="*", type=int, default=[2000, 6000])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    print(f"{'shape':<9} {'M':>6} {'value ms':>10} {'value+gradient ms':>18}")
    for shape, M in [(s, M) for M in args.M for s in ("periodic", "molecule")]:
        pb = problem(M, shape)
        x = np.full(pb.n_params, 0.1)
        times = {}
        for grad in (False, True):
            ts = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                pb.evaluate(x, gradient=grad)
                ts.append(time.perf_counter() - t0)
            times[grad] = 1e3 * float(np.median(ts))
        print(f"{shape:<9} {M:>6} {times[False]:>10.0f} {times[True]:>18.0f}", flush=True)
    print(f"\nreproduce: python bench/lml_cost.py {' '.join(map(str, args.M))}")


if __name__ == "__main__":
    main()
