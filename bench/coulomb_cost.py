"""Cost of the Coulomb baseline (Ewald, energy + forces + stress) against a default gapfit model's prediction.

Reproduce:

    python bench/coulomb_cost.py                       # 160, 1,280 and 10,000 atoms
    python bench/coulomb_cost.py --sizes 160 1280      # a quicker run

Cells: rock salt NaCl (a = 5.64 Å) as supercells of the 2-atom primitive
(triclinic) cell, rattled by 0.1 Å, charges Na +1, Cl -1, point charges and
Gaussian ones (σ = 1 Å), at the default accuracy (1e-6). The reference is
``GAP()`` with every default, fitted here on 30 rattled and strained 32-atom
NaCl cells (960 atoms, the size of data/Cu_emt_train.xyz) labelled by the
Coulomb calculator itself (the labels do not change the cost of a
prediction); its ``predict`` (energy + forces + stress) is timed on the 160-
and 1,280-atom cells, and its time per atom at 1,280 atoms is the reference
for every size (a local model's cost is linear in N). The scaling exponent
is the slope of log(time) against log(N) between the sizes timed.
"""
from __future__ import annotations

import argparse
import sys
import time

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase.build import bulk

from gapfit.coulomb import Coulomb
from gapfit.electrostatics import _half_kvectors, coulomb, ewald_parameters, periodic_pair_blocks

#: atoms: repeats of the 2-atom primitive cell (10,000 = 2 x 10 x 20 x 25: 40 x 80 x 100 Å)
SIZES = {160: (4, 4, 5), 1280: (8, 8, 10), 10000: (10, 20, 25)}


def nacl(n_atoms: int, seed: int = 0):
    if n_atoms not in SIZES:
        raise SystemExit(f"no NaCl cell of {n_atoms} atoms here: choose from {sorted(SIZES)}")
    atoms = bulk("NaCl", "rocksalt", a=5.64).repeat(SIZES[n_atoms])
    atoms.rattle(0.1, seed=seed)
    return atoms


def median_time(fn, repeats: int) -> float:
    fn()                                    # warm up (numba's compiled kernels load from its cache)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def reference_model():
    rng = np.random.default_rng(1)
    frames = []
    for k in range(30):
        atoms = bulk("NaCl", "rocksalt", a=5.64).repeat((2, 2, 4))
        strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ (0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(0.05 + 0.1 * rng.random(), seed=k)
        calc = Coulomb(charges={"Na": 1.0, "Cl": -1.0}, widths=1.0)
        atoms.calc = calc
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
        frames.append(atoms)
    t = time.perf_counter()
    model = gapfit.GAP().fit(frames)
    return model, time.perf_counter() - t, sum(len(a) for a in frames)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[160, 1280, 10000])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print("Command: python bench/coulomb_cost.py " + " ".join(sys.argv[1:]))

    model, fit_s, n_fit = reference_model()
    terms = [t.type for t in model.state_.terms]
    gap_per_atom = {}
    for n in [s for s in args.sizes if s <= 1280]:
        atoms = nacl(n)
        gap_per_atom[n] = median_time(lambda: model.predict([atoms], forces=True, stress=True), args.repeats) / n
    ref_n = max(gap_per_atom) if gap_per_atom else None
    print(f"Reference: GAP() defaults (terms {terms}, {model.n_sparse_total_} sparse points), fitted on "
          f"{n_fit} atoms in {fit_s:.0f} s; predict (energy + forces + stress) "
          + ", ".join(f"{1e3 * t:.3f} ms/atom at {n} atoms" for n, t in gap_per_atom.items()))
    print("Coulomb: gapfit.electrostatics.coulomb, energy + forces + virial (stress), accuracy 1e-6, "
          "median of {} runs after a warm-up\n".format(args.repeats))
    print("| atoms | charges | α (1/Å) | r_c (Å) | k_c (1/Å) | pairs | k-vectors | Coulomb (s) | "
          "GAP predict (s) | Coulomb / GAP |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    times = {"point": {}, "Gaussian σ = 1 Å": {}}
    for n in args.sizes:
        atoms = nacl(n)
        q = np.where(atoms.numbers == 11, 1.0, -1.0)
        gap_s = (gap_per_atom.get(n) or gap_per_atom[ref_n]) * n if ref_n else float("nan")
        gap_note = "" if n in gap_per_atom else " (from ms/atom at {})".format(ref_n)
        for label, widths in (("point", None), ("Gaussian σ = 1 Å", np.ones(n))):
            t = median_time(lambda: coulomb(atoms, q, widths), args.repeats)
            times[label][n] = t
            par = ewald_parameters(n, atoms.get_volume(), 1e-6, max_width_A=None if widths is None else 1.0)
            n_pairs = sum(len(b[0]) for b in periodic_pair_blocks(atoms, par.real_cutoff_A))
            n_k = len(_half_kvectors(atoms.cell.array, par.kspace_cutoff_per_A))
            print(f"| {n} | {label} | {par.alpha_per_A:.3f} | {par.real_cutoff_A:.1f} | "
                  f"{par.kspace_cutoff_per_A:.2f} | {n_pairs:,} | {n_k:,} | {t:.3f} | {gap_s:.2f}{gap_note} | "
                  f"{t / gap_s:.2f} |", flush=True)
    print()
    for label, tn in times.items():
        ns = sorted(tn)
        if len(ns) >= 2:
            slope = np.polyfit(np.log(ns), np.log([tn[n] for n in ns]), 1)[0]
            steps = ", ".join(f"{a}->{b}: {np.log(tn[b] / tn[a]) / np.log(b / a):.2f}" for a, b in zip(ns, ns[1:]))
            print(f"Scaling exponent, {label} charges: time ∝ N^{slope:.2f} (fit over {ns}; steps {steps})")


if __name__ == "__main__":
    main()
