"""What a share of a frame costs: `predict_share` of half (a quarter, all) of the atoms against `model.predict`.

Reproduce (model made by `python bench/optimize.py Si --only default`):

    python bench/share_cost.py [MODEL] [--rounds 5]   # rattled 512-atom Si (default bench/out/Si-default.npz)

This is the division of a frame's work over MPI ranks: each rank gives its
own atoms as centres and computes only their environments. The centres are
a spatial slab (the atoms with x below a fraction of the cell, as a domain
decomposition gives a rank), or every other atom. Prints, per selection,
the median of interleaved rounds (every selection timed in turn within each
round, so that a busy machine slows them all alike), its ratio to the whole
prediction (energy, forces, stress, no stds) and the ratio's ideal (the
fraction of atoms), then the per-term split of one half, and checks that
the two halves sum to the whole prediction.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase.build import bulk

from gapfit.predictor import predict_share
from predict_cost import _rel, interleaved  # the same timing rules as bench/predict_cost.py (same folder)

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / "bench" / "out" / "Si-default.npz"))
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    if not Path(a.model).exists():
        raise SystemExit(f"{a.model} not found: make it with `python bench/optimize.py Si --only default`")
    model = gapfit.load(a.model)
    st = model.state_
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat((4, 4, 4))
    atoms.rattle(0.05, seed=0)
    n = len(atoms)
    x = atoms.get_scaled_positions()[:, 0]
    slab = {f: np.flatnonzero(x < f) for f in (0.25, 0.5)}
    other_half = np.setdiff1d(np.arange(n), slab[0.5])
    every_other = np.arange(0, n, 2)
    fns = {
        "model.predict (E, F, S)": lambda: model.predict([atoms]),
        "share: all atoms, with baseline": lambda: predict_share(st, atoms, np.arange(n), baseline=True),
        "share: half (x < L/2 slab)": lambda: predict_share(st, atoms, slab[0.5], baseline=False),
        "share: other half, with baseline": lambda: predict_share(st, atoms, other_half, baseline=True),
        "share: half (every other atom)": lambda: predict_share(st, atoms, every_other, baseline=False),
        "share: quarter (x < L/4 slab)": lambda: predict_share(st, atoms, slab[0.25], baseline=False),
    }
    ideal = {"model.predict (E, F, S)": 1.0, "share: all atoms, with baseline": 1.0,
             "share: half (x < L/2 slab)": len(slab[0.5]) / n,
             "share: other half, with baseline": len(other_half) / n,
             "share: half (every other atom)": len(every_other) / n,
             "share: quarter (x < L/4 slab)": len(slab[0.25]) / n}
    t = interleaved(fns, a.rounds)
    base = t["model.predict (E, F, S)"]
    print(f"Command: python bench/share_cost.py {_rel(a.model)} --rounds {a.rounds}")
    print(f"{n}-atom rattled Si, terms {[term.type for term in st.terms]}, {st.n_columns} sparse points; "
          f"median of {a.rounds} interleaved rounds\n")
    print("| what | ms | ratio to model.predict | atoms' fraction |")
    print("|---|---|---|---|")
    for name, sec in t.items():
        print(f"| {name} | {1e3 * sec:.0f} | {sec / base:.2f} | {ideal[name]:.2f} |")

    # one half, step by step (the terms' descriptors of the centres, their kernels and contractions)
    rows = []
    for term, sl in zip(st.terms, st.column_slices):
        def fn_d(term=term):
            return term.compute([atoms], gradients=True, layout="blocks", centres=[slab[0.5]])

        def full_d(term=term):
            return term.compute([atoms], gradients=True, layout="blocks")
        d = fn_d()[0]

        def fn_p(term=term, d=d, sl=sl):
            return term.predict_share(d, atoms, st.alpha[sl])
        tt = interleaved({"half": fn_d, "all": full_d, "kernel": fn_p}, a.rounds)
        rows.append((f"{term.type}: descriptors with gradients, half / all atoms", tt["half"], tt["all"]))
        rows.append((f"{term.type}: kernel, forces, per-atom virials of the half", tt["kernel"], None))
    print("\n| step (x < L/2 slab) | ms | ratio to all atoms |")
    print("|---|---|---|")
    for name, sec, full in rows:
        print(f"| {name} | {1e3 * sec:.0f} | {'' if full is None else f'{sec / full:.2f}'} |")

    p = model.predict([atoms])[0]
    s1 = predict_share(st, atoms, slab[0.5], baseline=False)
    s2 = predict_share(st, atoms, other_half, baseline=True)
    sv = np.array([p.stress[0], p.stress[1], p.stress[2]]) * atoms.get_volume()
    de = np.abs(s1.energies_eV + s2.energies_eV - p.energies).max()
    print(f"\ntwo halves against the whole: energies {de:.1e} eV, "
          f"forces {np.abs(s1.forces_eV_per_A + s2.forces_eV_per_A - p.forces).max():.1e} eV/Å, "
          f"virial diagonal {np.abs(np.diag(s1.virial_eV + s2.virial_eV) + sv).max():.1e} eV")


if __name__ == "__main__":
    main()
