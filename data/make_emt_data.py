#!/usr/bin/env python
"""Generate a small, deterministic Cu training/test set with ASE's EMT calculator.

This script is part of the ``gapfit`` project and produces the two data files
shipped in this folder:

* ``Cu_emt_train.xyz`` -- training set (~40 frames)
* ``Cu_emt_test.xyz``  -- test set (~15 frames), drawn from independent seeds

Both are extended-XYZ files written with :func:`ase.io.write`. Energy, forces
and stress are stored as calculator results, so after ``ase.io.read(...,
index=":")`` they are available through ``atoms.get_potential_energy()``
(eV), ``atoms.get_forces()`` (eV/Angstrom) and ``atoms.get_stress()``
(eV/Angstrom^3, ASE sign convention, Voigt order xx, yy, zz, yz, xz, xy).
Each frame carries ``atoms.info["config_type"]``, one of:

``isolated_atom``
    a single Cu atom in a 20 Angstrom non-periodic box (training set only).
``rattled``
    fcc Cu (a = 3.61 Angstrom; 4-atom cubic cell or 2x2x2 = 32 atoms) with
    Gaussian random displacements, per-frame std drawn from [0.05, 0.15] A.
``strained``
    as above with a random symmetric strain (each component within +-3 %)
    applied to the cell (atoms scaled with it) plus a small rattle (0.02 A).
``md_300K``, ``md_800K``, ``md_1200K``
    snapshots of Langevin MD (EMT, 32 atoms, 2 fs time step, friction
    0.01 / fs, centre of mass fixed) taken every 100 steps (200 fs) after a
    300-step (600 fs) equilibration from Maxwell-Boltzmann velocities.
``vacancy``
    32-atom cell with one atom removed (31 atoms), rattled (std 0.05-0.10 A).

Determinism: every random number comes from a :class:`numpy.random.Generator`
built from a :class:`numpy.random.SeedSequence` with the fixed root seed
``SEED``; the training and test sets use independent child streams
(``spawn_key`` 0 and 1) and every block of frames has its own child stream.
Running the script twice produces byte-identical files.

Usage::

    python data/make_emt_data.py               # writes next to this script
    python data/make_emt_data.py --out-dir DIR # writes into DIR
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms, temperature_K, *, rng=None):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)

#: Root seed of all random streams.
SEED = 20241121
#: fcc lattice constant of Cu used for all bulk cells (Angstrom).
A_CU = 3.61

TRAIN_FILE = "Cu_emt_train.xyz"
TEST_FILE = "Cu_emt_test.xyz"

# Number of frames per config_type: (training, test).
COUNTS = {
    "isolated_atom": (1, 0),
    "rattled": (10, 4),
    "strained": (10, 3),
    "md_300K": (5, 2),
    "md_800K": (5, 2),
    "md_1200K": (5, 2),
    "vacancy": (4, 2),
}
MD_TEMPERATURES = {"md_300K": 300.0, "md_800K": 800.0, "md_1200K": 1200.0}

MD_TIMESTEP_FS = 2.0
MD_FRICTION_PER_FS = 0.01
MD_EQUIL_STEPS = 300
MD_SAMPLE_INTERVAL = 100


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def fcc_cell(size: int) -> Atoms:
    """Cubic fcc Cu cell: ``size`` = 1 gives 4 atoms, 2 gives 32 atoms."""
    atoms = bulk("Cu", "fcc", a=A_CU, cubic=True)
    if size > 1:
        atoms = atoms.repeat((size, size, size))
    return atoms


def labelled(atoms: Atoms, config_type: str) -> Atoms:
    """Evaluate EMT on ``atoms`` and return a clean copy holding the results.

    The returned object has no constraints, no momenta and a
    SinglePointCalculator with energy, forces and stress, so that
    ``ase.io.write`` stores them as calculator results in extended XYZ.
    """
    atoms = atoms.copy()
    atoms.set_constraint()
    atoms.calc = EMT()
    energy = float(atoms.get_potential_energy())
    forces = np.array(atoms.get_forces())
    stress = np.array(atoms.get_stress(voigt=True))

    frame = Atoms(
        symbols=atoms.get_chemical_symbols(),
        positions=atoms.get_positions(),
        cell=atoms.get_cell(),
        pbc=atoms.get_pbc(),
    )
    frame.info["config_type"] = config_type
    frame.calc = SinglePointCalculator(
        frame, energy=energy, forces=forces, stress=stress
    )
    return frame


# --------------------------------------------------------------------------
# generators for each config_type
# --------------------------------------------------------------------------
def make_isolated_atom(n: int, rng: np.random.Generator) -> list[Atoms]:
    """A single Cu atom in a large non-periodic box (EMT: E = 3.51 eV)."""
    frames = []
    for _ in range(n):
        atoms = Atoms("Cu", positions=[[10.0, 10.0, 10.0]],
                      cell=[20.0, 20.0, 20.0], pbc=False)
        frames.append(labelled(atoms, "isolated_atom"))
    return frames


def make_rattled(n: int, rng: np.random.Generator) -> list[Atoms]:
    """Rattled fcc cells, alternating 32-atom and 4-atom cells."""
    frames = []
    for i in range(n):
        atoms = fcc_cell(2 if i % 2 == 0 else 1)
        std = rng.uniform(0.05, 0.15)
        atoms.positions += rng.normal(0.0, std, size=atoms.positions.shape)
        frames.append(labelled(atoms, "rattled"))
    return frames


def make_strained(n: int, rng: np.random.Generator) -> list[Atoms]:
    """Randomly strained (|eps_ij| <= 3 %) fcc cells plus a 0.02 A rattle."""
    frames = []
    for i in range(n):
        atoms = fcc_cell(2 if i % 2 == 0 else 1)
        eps = rng.uniform(-0.03, 0.03, size=(3, 3))
        eps = 0.5 * (eps + eps.T)  # symmetric, components stay within +-3 %
        deform = np.eye(3) + eps
        atoms.set_cell(atoms.cell[:] @ deform, scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.02, size=atoms.positions.shape)
        frames.append(labelled(atoms, "strained"))
    return frames


def make_md(n: int, rng: np.random.Generator, config_type: str) -> list[Atoms]:
    """Langevin MD snapshots of a 32-atom fcc cell at the given temperature."""
    temperature = MD_TEMPERATURES[config_type]
    atoms = fcc_cell(2)
    atoms.calc = EMT()
    atoms.set_constraint(FixCom())
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(
        atoms,
        timestep=MD_TIMESTEP_FS * units.fs,
        temperature_K=temperature,
        friction=MD_FRICTION_PER_FS / units.fs,
        fixcm=False,
        rng=rng,
    )
    dyn.run(MD_EQUIL_STEPS)
    frames = []
    for _ in range(n):
        dyn.run(MD_SAMPLE_INTERVAL)
        frames.append(labelled(atoms, config_type))
    return frames


def make_vacancy(n: int, rng: np.random.Generator) -> list[Atoms]:
    """32-atom fcc cell minus one random atom, rattled (std 0.05-0.10 A)."""
    frames = []
    for _ in range(n):
        atoms = fcc_cell(2)
        del atoms[int(rng.integers(len(atoms)))]
        std = rng.uniform(0.05, 0.10)
        atoms.positions += rng.normal(0.0, std, size=atoms.positions.shape)
        frames.append(labelled(atoms, "vacancy"))
    return frames


def make_set(which: int, seq: np.random.SeedSequence) -> list[Atoms]:
    """Build the training (``which`` = 0) or test (``which`` = 1) frames.

    Each config_type block gets its own child stream of ``seq`` so that
    changing one block's size does not change the others.
    """
    children = seq.spawn(len(COUNTS))
    frames: list[Atoms] = []
    for child, (config_type, counts) in zip(children, COUNTS.items()):
        n = counts[which]
        if n == 0:
            continue
        rng = np.random.default_rng(child)
        if config_type in MD_TEMPERATURES:
            frames += make_md(n, rng, config_type)
        elif config_type == "isolated_atom":
            frames += make_isolated_atom(n, rng)
        elif config_type == "rattled":
            frames += make_rattled(n, rng)
        elif config_type == "strained":
            frames += make_strained(n, rng)
        elif config_type == "vacancy":
            frames += make_vacancy(n, rng)
        else:  # pragma: no cover
            raise ValueError(config_type)
    return frames


def summarize(path: str, frames: list[Atoms]) -> str:
    counts = Counter(f.info["config_type"] for f in frames)
    types = ", ".join(f"{k}:{v}" for k, v in counts.items())
    n_atoms = sum(len(f) for f in frames)
    return f"{os.path.basename(path):<18} {len(frames):>6} {n_atoms:>6}  {types}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out-dir",
        default=os.path.dirname(os.path.abspath(__file__)),
        help="output folder (default: the folder of this script)",
    )
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)

    root = np.random.SeedSequence(SEED)
    train_seq, test_seq = root.spawn(2)  # independent streams

    lines = [f"{'file':<18} {'frames':>6} {'atoms':>6}  config_types"]
    for which, seq, name in ((0, train_seq, TRAIN_FILE), (1, test_seq, TEST_FILE)):
        frames = make_set(which, seq)
        path = os.path.join(args.out_dir, name)
        write(path, frames, format="extxyz")
        lines.append(summarize(path, frames))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
