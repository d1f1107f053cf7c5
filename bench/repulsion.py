"""Short-range repulsion of a model: Si dimer curve, an atom pushed onto its neighbour, hot MD.

Reproduce (from the repository root, after `python bench/accuracy.py Si` or any Si model):

    python bench/repulsion.py bench/out/Si.npz

Prints: the dimer energy from 2.0 to 0.5 Å (monotonic?), E(1.0 Å) − E(2.35 Å);
a 64-atom diamond cell with one atom pushed towards a neighbour (energy above
the perfect cell at 1.0 Å and down to 0.6 Å, monotonic?); Langevin MD at
3000 K (1 fs, 1500 steps) and the shortest pair distance it reached.
"""
from __future__ import annotations

import sys
import time

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution



def energy(model, atoms):
    return model.predict([atoms], forces=False, stress=False)[0].energy


def main(path: str) -> None:
    model = gapfit.load(path)
    print(f"model {path}: terms {[t.type for t in model.terms_]}, baseline "
          f"{[p.type for p in model.state_.baseline.parts]}\n")
    rs = np.round(np.arange(2.0, 0.49, -0.05), 3)
    dimer = [energy(model, Atoms("Si2", positions=[[0, 0, 0], [r, 0, 0]])) for r in rs]
    e235 = energy(model, Atoms("Si2", positions=[[0, 0, 0], [2.35, 0, 0]]))
    e100 = dimer[int(np.argmin(np.abs(rs - 1.0)))]
    mono = bool(np.all(np.diff(dimer) > 0))
    print("| Si dimer r (Å) | " + " | ".join(f"{r:.2f}" for r in rs[::3]) + " |")
    print("|---" * (len(rs[::3]) + 1) + "|")
    print("| E (eV) | " + " | ".join(f"{e:.2f}" for e in dimer[::3]) + " |")
    print(f"\ndimer: E rises monotonically from 2.0 to 0.5 Å: {mono}; E(1.0) − E(2.35) = {e100 - e235:.2f} eV\n")

    cell = bulk("Si", "diamond", 5.43, cubic=True).repeat(2)
    e_ref = energy(model, cell)
    i, j = 0, int(np.argsort(cell.get_distances(0, range(1, len(cell)), mic=True))[0]) + 1
    d0 = cell.get_distance(i, j, mic=True, vector=True)
    push = []
    for r in (1.6, 1.4, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6):
        a = cell.copy()
        a.positions[i] = a.positions[j] - d0 / np.linalg.norm(d0) * r
        push.append((r, energy(model, a) - e_ref))
    print("| pushed distance (Å) | " + " | ".join(f"{r:.1f}" for r, _ in push) + " |")
    print("|---" * (len(push) + 1) + "|")
    print("| E − E(perfect) (eV) | " + " | ".join(f"{e:.2f}" for _, e in push) + " |")
    rising = bool(np.all(np.diff([e for _, e in push]) > 0))
    print(f"\n64-atom cell: cost at 1.0 Å {dict(push)[1.0]:.2f} eV; rising down to 0.6 Å: {rising}\n")

    a = cell.copy()
    a.calc = gapfit.GAPCalculator(model, uncertainty=False)
    MaxwellBoltzmannDistribution(a, temperature_K=3000, rng=np.random.default_rng(0))
    dyn = Langevin(a, 1.0 * units.fs, temperature_K=3000, friction=0.01 / units.fs, rng=np.random.default_rng(1))
    dmin = [np.inf]

    def watch():
        d = a.get_all_distances(mic=True)
        dmin[0] = min(dmin[0], d[np.triu_indices(len(a), 1)].min())
    dyn.attach(watch, interval=1)
    t0 = time.perf_counter()
    dyn.run(1500)
    print(f"Langevin 3000 K, 1 fs, 1500 steps: shortest pair distance {dmin[0]:.3f} Å "
          f"(T at the end {a.get_temperature():.0f} K, {time.perf_counter() - t0:.0f} s)")
    print(f"\nCommand: python bench/repulsion.py {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/out/Si.npz")
