"""Elastic constants from finite strains of the relaxed cell, with internal relaxation."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.units import GPa

from .evaluate import Evaluator
from .results import PropertyResult
from .structures import is_cubic, relax, require_periodic

VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def strain_tensor(j: int, eps: float) -> np.ndarray:
    """Symmetric strain with Voigt component j equal to ``eps`` (engineering shear: ε_yz = γ/2)."""
    e = np.zeros((3, 3))
    a, b = VOIGT_PAIRS[j]
    if a == b:
        e[a, a] = eps
    else:
        e[a, b] = e[b, a] = eps / 2
    return e


def elastic_constants(evaluator: Evaluator, atoms: Atoms, *, strains: Sequence[float] = (-0.01, -0.005, 0.005, 0.01),
                      relax_cell: bool = True, fmax_eV_per_A: float = 1e-4) -> PropertyResult:
    """The 6 × 6 elastic tensor C (GPa) from the stress of strained copies of the relaxed cell.

    The cell is first relaxed (positions and cell, ``relax_cell``), then
    each of the six Voigt strains is applied at the magnitudes ``strains``,
    the ions relaxed in the strained cell, and C's column j is the
    least-squares slope of the stress against strain j (σ = C ε, ASE's sign).
    Figures: ``C11_GPa``, ``C12_GPa``, ``C44_GPa`` for a cubic crystal in a
    cubic cell (space group by spglib; the cubic averages), else all 21 ``Cij_GPa`` (i ≤ j); the Voigt-Reuss-Hill
    ``elastic_bulk_modulus_GPa`` and ``shear_modulus_GPa``.

    Committee members take their stress at the model's relaxed structures:
    their spread includes each member's clamped-ion response but not the
    change of its own internal relaxation (a smaller, first-order part, and
    none at all for cells whose ions cannot relax by symmetry, as for C11 and
    C12 of diamond, fcc, bcc).
    """
    require_periodic(atoms, "the elastic constants")
    t0 = time.perf_counter()
    notes = []
    ref = atoms
    if relax_cell:
        ref, ok = relax(atoms, evaluator.calculator, cell=True, fmax_eV_per_A=fmax_eV_per_A)
        if not ok:
            notes.append("the cell relaxation did not reach fmax; constants are from the last step")
    strains = np.asarray(strains, dtype=float)
    n_col = 1 + evaluator.n_members
    C = np.zeros((n_col, 6, 6))
    unconverged = 0
    for j in range(6):
        stresses = []
        for eps in strains:
            a = ref.copy()
            F = np.eye(3) + strain_tensor(j, eps)
            a.set_cell(ref.cell @ F.T, scale_atoms=True)  # rows are vectors: v' = F v
            a, ok = relax(a, evaluator.calculator, fmax_eV_per_A=fmax_eV_per_A)
            unconverged += not ok
            stresses.append(evaluator.evaluate(a, forces=False, stress=True).stress_eV_per_A3)
        S = np.array(stresses)  # (n_strain, n_col, 6)
        x = strains - strains.mean()
        for c in range(n_col):
            y = S[:, c, :] - S[:, c, :].mean(axis=0)
            C[c, :, j] = (x @ y) / (x @ x) / GPa
    if unconverged:
        notes.append(f"{unconverged} internal relaxations did not reach fmax")
    C = 0.5 * (C + np.transpose(C, (0, 2, 1)))  # the tensor is symmetric; finite differences nearly so
    cubic = is_cubic(ref)
    per = [_figures(Cc, cubic) for Cc in C]
    res = PropertyResult("elastic", per[0], notes=notes,
                         details={"C_GPa": C[0].tolist(), "relaxed_cell_A": ref.cell.tolist(), "cubic": cubic,
                                  "strains": strains.tolist()})
    if n_col > 1:
        res.members = {k: np.array([p[k] for p in per[1:]]) for k in per[0]}
    res.seconds = time.perf_counter() - t0
    return res


def _figures(C: np.ndarray, cubic: bool) -> dict:
    out = {}
    if cubic:
        out["C11_GPa"] = float(np.mean(np.diag(C)[:3]))
        out["C12_GPa"] = float(np.mean([C[0, 1], C[0, 2], C[1, 2]]))
        out["C44_GPa"] = float(np.mean(np.diag(C)[3:]))
    else:
        for i in range(6):
            for j in range(i, 6):
                out[f"C{i + 1}{j + 1}_GPa"] = float(C[i, j])
    KV = (C[0, 0] + C[1, 1] + C[2, 2] + 2 * (C[0, 1] + C[0, 2] + C[1, 2])) / 9
    GV = (C[0, 0] + C[1, 1] + C[2, 2] - (C[0, 1] + C[0, 2] + C[1, 2]) + 3 * (C[3, 3] + C[4, 4] + C[5, 5])) / 15
    try:
        S = np.linalg.solve(C, np.eye(6))  # the compliance is the physical quantity here, not a solver shortcut
        KR = 1 / (S[0, 0] + S[1, 1] + S[2, 2] + 2 * (S[0, 1] + S[0, 2] + S[1, 2]))
        GR = 15 / (4 * (S[0, 0] + S[1, 1] + S[2, 2]) - 4 * (S[0, 1] + S[0, 2] + S[1, 2])
                   + 3 * (S[3, 3] + S[4, 4] + S[5, 5]))
    except np.linalg.LinAlgError:
        KR = GR = np.nan
    out["elastic_bulk_modulus_GPa"] = float((KV + KR) / 2)
    out["shear_modulus_GPa"] = float((GV + GR) / 2)
    return out
