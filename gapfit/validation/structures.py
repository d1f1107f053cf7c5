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
    if c_A is not None and lattice != "hcp":
        raise InputError(f"--c is for hcp only; {lattice} is cubic")
    if c_A is not None and not (np.isfinite(c_A) and c_A > 0):
        raise InputError(f"--c must be a positive length in Å, got {c_A!r}")
    if lattice == "hcp":
        return bulk(element, "hcp", a=a_A, c=c_A if c_A is not None else a_A * np.sqrt(8 / 3))
    return bulk(element, lattice, a=a_A, cubic=True)


def require_periodic(atoms: Atoms, what: str) -> None:
    """Raise InputError unless ``atoms`` is a 3D-periodic crystal (``what`` names the property)."""
    if not (bool(np.all(atoms.pbc)) and atoms.cell.rank == 3):
        where = atoms.info.get("gapfit_source", "the structure")
        raise InputError(f"{where}: {what} needs a periodic crystal (pbc True on all three axes and three cell "
                         f"vectors); this structure has pbc={list(map(bool, atoms.pbc))}, "
                         f"{atoms.cell.rank} cell vectors")


def cubic_lattice_constant(atoms: Atoms, symprec: float = 1e-3) -> Optional[float]:
    """The conventional cubic lattice constant (Å) when ``atoms`` has a cubic space group and a cubic cell, else None.

    The cell must be orthogonal with equal edges (so the cubic averages of
    the elastic tensor are over its own axes); a supercell of a cubic crystal
    reports its conventional cell's constant, not its own edge.
    """
    import spglib
    lengths, angles = atoms.cell.lengths(), atoms.cell.angles()
    if not (np.all(np.abs(angles - 90.0) < 1e-3) and np.ptp(lengths) <= 1e-4 * lengths.mean()):
        return None
    if hasattr(spglib, "error"):  # spglib >= 2.5: errors as exceptions, not None plus a warning
        spglib.error.OLD_ERROR_HANDLING = False
    try:
        data = spglib.get_symmetry_dataset((np.array(atoms.cell), atoms.get_scaled_positions(), atoms.numbers),
                                           symprec=symprec)
    except Exception:  # no symmetry found at this precision: not cubic
        return None
    if data is None or not 195 <= data.number <= 230:
        return None
    return float(np.linalg.norm(np.asarray(data.std_lattice)[0]))


def is_cubic(atoms: Atoms) -> bool:
    """True for a cubic crystal in a cubic cell (see :func:`cubic_lattice_constant`)."""
    return cubic_lattice_constant(atoms) is not None


def relax(atoms: Atoms, calculator: Calculator, *, cell: bool = False, fmax_eV_per_A: float = 1e-4,
          max_steps: int = 1000) -> Tuple[Atoms, bool]:
    """A copy of ``atoms`` relaxed with ``calculator`` (positions; the cell too with ``cell=True``).

    Returns (relaxed atoms, converged). Cell relaxation keeps the cell's
    shape and symmetry only as far as the forces and stress respect them.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    a = atoms.copy()
    if len(a) == 1 and not cell:
        return a, True
    a.calc = calculator
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
