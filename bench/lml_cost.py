"""Cost of one log-marginal-likelihood evaluation from stored factors, at a given number of sparse points M.

Reproduce:

    python bench/lml_cost.py 2000 6000

The problem has the shape of a default fit: three noise groups (energy,
forces, virial), two terms (a small two-body block and the rest SOAP), each
group's factor a full upper-triangular (M+1) × (M+1) matrix. The cost does
not depend on the values, only on M and the number of groups: a merge of
(groups + 1) triangular factors, plus for the gradient one triangular
inverse and one product per group. Prints ms per evaluation (median of
``--repeat``), with and without the gradient.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from gapfit import hyper


def problem(M: int, seed: int = 0) -> hyper.LikelihoodProblem:
    rng = np.random.default_rng(seed)
    sizes = [30, M - 30]
    chol = []
    for n in sizes:
        X = rng.standard_normal((n, n)) / np.sqrt(n)
        chol.append(np.linalg.cholesky(X @ X.T + np.eye(n)))
    factors = {g: np.triu(rng.standard_normal((M + 1, M + 1))) + 10 * np.eye(M + 1)
               for g in ("energy", "forces", "virial")}
    return hyper.LikelihoodProblem(factors=factors, n_rows={g: 10 * M for g in factors},
                                   log_sigma={g: 0.0 for g in factors}, kmm_chol=chol, block_term=[0, 1],
                                   delta0_eV=np.ones(2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("M", nargs="*", type=int, default=[2000, 6000])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    print(f"{'M':>6} {'value ms':>10} {'value+gradient ms':>18}")
    for M in args.M:
        pb = problem(M)
        x = np.full(pb.n_params, 0.1)
        times = {}
        for grad in (False, True):
            ts = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                pb.evaluate(x, gradient=grad)
                ts.append(time.perf_counter() - t0)
            times[grad] = 1e3 * float(np.median(ts))
        print(f"{M:>6} {times[False]:>10.0f} {times[True]:>18.0f}", flush=True)
    print(f"\nreproduce: python bench/lml_cost.py {' '.join(map(str, args.M))}")


if __name__ == "__main__":
    main()
