"""Structures to validate on: from a file or a lattice, and relaxed with the model."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..errors import InputError

LATTICES = ("diamond", "fcc", "bcc", "hcp")


def lattice_structure(lattice: str, element: str, a_A: float, c_A: Optional[float] = None) -> Atoms:
    """The conventional cell of ``lattice`` (cubic for diamond, fcc and bcc; hexagonal for hcp)."""
    from ase.build import bulk
    from ase.data import atomic_numbers
    if lattice not in LATTICES:
        raise InputError(f"--lattice {lattice!r} is not one of {', '.join(LATTICES)}")
    if element not in atomic_numbers:
        raise InputError(f"--element {element!r} is not a chemical symbol")
    if not (np.isfinite(a_A) and a_A > 0):
        raise InputError(f"--a must be a positive lattice constant in Å, got {a_A!r}")
    if lattice == "hcp":
        return bulk(element, "hcp", a=a_A, c=c_A if c_A else a_A * np.sqrt(8 / 3))
    return bulk(element, lattice, a=a_A, cubic=True)


def is_cubic(atoms: Atoms, tol: float = 1e-6) -> bool:
    """True for an orthogonal cell with three equal edges (its edge is the lattice constant)."""
    lengths, angles = atoms.cell.lengths(), atoms.cell.angles()
    return bool(np.all(np.abs(angles - 90.0) < 1e-4) and np.ptp(lengths) <= tol * lengths.mean())


def relax(atoms: Atoms, calculator: Calculator, *, cell: bool = False, fmax_eV_per_A: float = 1e-4,
          max_steps: int = 1000) -> Tuple[Atoms, bool]:
    """A copy of ``atoms`` relaxed with ``calculator`` (positions; the cell too with ``cell=True``).

    Returns (relaxed atoms, converged). Cell relaxation keeps the cell's
    shape and symmetry only as far as the forces and stress respect them.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    a = atoms.copy()
    a.calc = calculator
    if len(a) == 1 and not cell:
        return a, True
    target = FrechetCellFilter(a) if cell else a
    opt = BFGS(target, logfile=None)
    converged = bool(opt.run(fmax=fmax_eV_per_A, steps=max_steps))
    out = a.copy()
    out.calc = None
    return out, converged


def supercell_for(atoms: Atoms, min_atoms: int) -> Atoms:
    """``atoms`` repeated equally along its axes until it holds at least ``min_atoms``."""
    n = 1
    while len(atoms) * n ** 3 < min_atoms:
        n += 1
    return atoms.repeat((n, n, n))
