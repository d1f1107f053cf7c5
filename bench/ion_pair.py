"""A Na+ Cl− ion pair pulled apart in vacuum: a local model against a model over a Coulomb baseline.

Reproduce (from the repository root; the models are fitted on the rigid-ion
NaCl data made by data/make_nacl_rigid_ion.py; 45 s, 66 s and 126 s on the
shared 2-core machine):

    gapfit fit data/NaCl_rigid_ion_train.xyz -o bench/out/nacl_local.npz
    gapfit fit data/NaCl_rigid_ion_train.xyz -o bench/out/nacl_coulomb.npz --coulomb "Na=1 Cl=-1"
    gapfit fit data/NaCl_rigid_ion_train.xyz -o bench/out/nacl_learned.npz --coulomb learn
    python bench/ion_pair.py bench/out/nacl_local.npz bench/out/nacl_coulomb.npz bench/out/nacl_learned.npz

Any number of model files may be given. For each, the energy of the pair at
distances 3 to 15 Å (non-periodic), relative to the two ions alone
(ΔE(r) = E(NaCl at r) − E(Na) − E(Cl)), next to the pure Coulomb tail
−k_e/r of charges ±1 and the rigid-ion truth the data were made with
(Fumi–Tosi Born–Mayer–Huggins + Coulomb). Beyond a model's cutoff nothing
local reaches across the pair: a local model's ΔE is flat there, while a
model over a Coulomb baseline follows the tail. The summary gives, for
r ≥ cutoff, how much each model's ΔE changes and how far it is from the tail.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase import Atoms

ROOT = Path(__file__).resolve().parents[1]
#: e^2/(4 pi eps0) in eV Å (the value of LAMMPS's metal units, which made the data)
K_E = 14.399645
DISTANCES = np.round(np.arange(3.0, 15.001, 0.5), 3)


def rigid_ion_truth(r: np.ndarray):
    """The reference potential of data/make_nacl_rigid_ion.py for a Na–Cl pair (eV), or None."""
    path = ROOT / "data" / "make_nacl_rigid_ion.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("make_nacl_rigid_ion", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # imports numpy, scipy and ase only; LAMMPS is loaded on use
    return mod.bmh_pair(r, "Na", "Cl") + mod.CHARGES["Na"] * mod.CHARGES["Cl"] * mod.K_E / r


def energy(model, atoms: Atoms) -> float:
    return model.predict([atoms], forces=False, stress=False)[0].energy


def ion(symbol: str, charge: int) -> Atoms:
    """One ion alone; its total charge in info (read by charge equilibration, ignored by fixed charges)."""
    atoms = Atoms(symbol, positions=[[0, 0, 0]])
    atoms.info["charge"] = charge
    return atoms


def pair_charges(model, r: float):
    """The Na charge (e) a charge-equilibration model gives the neutral pair at r; None for other models."""
    if model.state_.charge_part is None:
        return None
    return float(model.predict([Atoms("NaCl", positions=[[0, 0, 0], [r, 0, 0]])], forces=False,
                               stress=False)[0].charges[0])


def describe(model) -> tuple:
    """(cutoff Å, a short description of the model's baseline charges)."""
    cutoff = max(float(getattr(t, "cutoff", 0.0) or 0.0) for t in model.terms_)
    charges = "none (local)"
    for part in model.state_.baseline.parts:
        if part.type == "coulomb":
            q = getattr(part, "charges", None)
            if isinstance(q, dict):
                from ase.data import chemical_symbols
                charges = " ".join(f"{chemical_symbols[z] if isinstance(z, int) else z}={v:+.4f}"
                                   for z, v in q.items())
            else:
                charges = str(q)
    learned = getattr(model.state_, "training", {}).get("charges")
    if isinstance(learned, dict) and learned.get("learned_e"):
        std = learned.get("std_e") or {}
        charges = "learned " + " ".join(f"{s}={q:+.4f}" + (f"±{std[s]:.4f}" if s in std else "")
                                        for s, q in learned["learned_e"].items())
    return cutoff, charges


def curve(model) -> np.ndarray:
    """ΔE(r) = E(pair at r) − E(Na+ alone) − E(Cl− alone), eV, at DISTANCES.

    The ions alone carry charges +1 and −1 (their info's ``charge``), the pair 0: for fixed-charge and local
    models this changes nothing; charge equilibration puts exactly ±1 on the lone ions.
    """
    alone = energy(model, ion("Na", 1)) + energy(model, ion("Cl", -1))
    return np.array([energy(model, Atoms("NaCl", positions=[[0, 0, 0], [r, 0, 0]])) - alone for r in DISTANCES])


def main(paths: list) -> None:
    if not paths:
        raise SystemExit(__doc__)
    tail = -K_E / DISTANCES
    truth = rigid_ion_truth(DISTANCES)
    names, curves, summary = [], [], []
    equilibrated = {}
    for path in paths:
        model = gapfit.load(path)
        cutoff, charges = describe(model)
        if model.state_.charge_part is not None:
            charges = "equilibrated (QEq)"
            equilibrated[Path(path).stem] = [pair_charges(model, r) for r in (3.0, 5.0, 10.0, 15.0)]
        de = curve(model)
        names.append(Path(path).stem)
        curves.append(de)
        far = DISTANCES >= cutoff
        summary.append(f"| {Path(path).stem} | {cutoff:g} | {charges} | {np.ptp(de[far]):.4f} | "
                       f"{np.abs(de[far] - tail[far]).max():.4f} |")
    cols = names + ["−k_e/r"] + (["rigid-ion truth"] if truth is not None else [])
    print("ΔE(r) = E(Na+ Cl− at r) − E(Na) − E(Cl), eV, non-periodic\n")
    print("| r (Å) | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for i, r in enumerate(DISTANCES):
        row = [c[i] for c in curves] + [tail[i]] + ([truth[i]] if truth is not None else [])
        print(f"| {r:.1f} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    print("\nBeyond each model's cutoff (r ≥ cutoff, up to 15 Å):\n")
    print("| model | cutoff (Å) | Coulomb baseline charges (e) | change of ΔE (max − min, eV) "
          "| max \\|ΔE − (−k_e/r)\\| (eV) |")
    print("|---|---|---|---|---|")
    print("\n".join(summary))
    print(f"\n(−k_e/r changes by {np.ptp(tail[DISTANCES >= 5.0]):.4f} eV from 5 to 15 Å.)")
    if equilibrated:
        print("\nEquilibrated charge of Na in the pair (e):\n\n| model | 3 Å | 5 Å | 10 Å | 15 Å |\n|---|---|---|---|---|")
        for name, q in equilibrated.items():
            print(f"| {name} | " + " | ".join(f"{v:+.4f}" for v in q) + " |")
    print(f"\nCommand: python bench/ion_pair.py {' '.join(paths)}")


if __name__ == "__main__":
    main(sys.argv[1:])
