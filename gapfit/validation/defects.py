"""Relaxed point and planar defects: vacancy formation and surface energies."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.units import J, m

from .evaluate import Evaluator
from .results import PropertyResult
from .structures import relax, require_periodic, supercell_for

#: eV/Å² to J/m²
EV_PER_A2_TO_J_PER_M2 = 1.0 / (J / m ** 2)


def _bulk_reference(evaluator: Evaluator, atoms: Atoms, fmax: float):
    bulk, ok = relax(atoms, evaluator.calculator, cell=True, fmax_eV_per_A=fmax)
    e = evaluator.evaluate(bulk, forces=False).energy_eV / len(bulk)
    return bulk, e, ok


def vacancy_formation(evaluator: Evaluator, atoms: Atoms, *, min_atoms: int = 64,
                      fmax_eV_per_A: float = 1e-3) -> PropertyResult:
    """Relaxed vacancy formation energy ``E(N-1) − (N-1)/N · E(N)`` of the relaxed bulk (eV).

    The bulk cell is relaxed (positions and cell), repeated to at least
    ``min_atoms``, one atom removed and the ions relaxed at fixed cell.
    Committee members take their energies at the model's relaxed
    structures: by the variational principle a member's own relaxation would
    change its energies only at second order in the weights' deviation.
    """
    require_periodic(atoms, "the vacancy formation energy")
    t0 = time.perf_counter()
    bulk, e_atom, ok_b = _bulk_reference(evaluator, atoms, fmax_eV_per_A / 10)
    big = supercell_for(bulk, min_atoms)
    n = len(big)
    defect = big.copy()
    del defect[0]
    defect, ok = relax(defect, evaluator.calculator, fmax_eV_per_A=fmax_eV_per_A)
    e_def = evaluator.evaluate(defect, forces=False).energy_eV
    ef = e_def - (n - 1) * e_atom
    res = PropertyResult("vacancy", {"vacancy_formation_eV": float(ef[0])},
                         details={"n_atoms": n, "relaxation_displacement_max_A": float(
                             np.max(np.linalg.norm(defect.positions - big.positions[1:], axis=1)))})
    if len(ef) > 1:
        res.members = {"vacancy_formation_eV": ef[1:]}
    if not (ok and ok_b):
        res.notes.append("a relaxation did not reach fmax")
    res.seconds = time.perf_counter() - t0
    return res


def surface_energy(evaluator: Evaluator, atoms: Atoms, miller: Sequence[int], *, min_thickness_A: float = 10.0,
                   vacuum_A: float = 10.0, fmax_eV_per_A: float = 1e-3) -> PropertyResult:
    """Relaxed surface energy γ = (E_slab − N E_bulk/atom) / 2A of the (hkl) surface (J/m²).

    Miller indices refer to the given cell's axes (use the conventional
    cell, as ``--lattice`` builds, for the usual indices).

    The slab is cut from the relaxed bulk with ``ase.build.surface`` (as
    many layers as make it at least ``min_thickness_A`` thick), given
    ``vacuum_A`` on each side and its ions relaxed. Members as for the
    vacancy (energies at the model's relaxed structures).
    """
    from ase.build import surface
    require_periodic(atoms, "the surface energy")
    t0 = time.perf_counter()
    bulk, e_atom, ok_b = _bulk_reference(evaluator, atoms, fmax_eV_per_A / 10)
    miller = tuple(int(i) for i in miller)
    one = surface(bulk, miller, 1, vacuum=None, periodic=True)
    spacing = one.get_volume() / float(np.linalg.norm(np.cross(one.cell[0], one.cell[1])))
    layers = int(max(2, np.ceil(min_thickness_A / spacing)))
    slab = surface(bulk, miller, layers, vacuum=vacuum_A)
    slab.pbc = True
    area = float(np.linalg.norm(np.cross(slab.cell[0], slab.cell[1])))
    slab, ok = relax(slab, evaluator.calculator, fmax_eV_per_A=fmax_eV_per_A)
    e = evaluator.evaluate(slab, forces=False).energy_eV
    gamma = (e - len(slab) * e_atom) / (2 * area) * EV_PER_A2_TO_J_PER_M2
    res = PropertyResult("surface", {"surface_energy_J_per_m2": float(gamma[0])},
                         details={"miller": list(miller), "layers": layers, "n_atoms": len(slab),
                                  "area_A2": area})
    if len(gamma) > 1:
        res.members = {"surface_energy_J_per_m2": gamma[1:]}
    if not (ok and ok_b):
        res.notes.append("a relaxation did not reach fmax")
    res.seconds = time.perf_counter() - t0
    return res
