"""The weighted rows of the training system: each observation's design row and target divided by its σ.

Energies get e0 subtracted here (the other baseline parts are already out
of the labels: :func:`subtract_baseline`), forces are −∇E, virials are
stress × volume; σ comes from the noise model, scaled by the noise factors
the fit has found so far.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from ..baselines import residual_labels as _residual_of_frame
from ..data import Labels
from ..hygiene import KIND_CODES
from ..terms import design_rows

if TYPE_CHECKING:  # annotations only
    from .plan import FitPlan


def new_counts() -> Dict[str, int]:
    """Observation counts per kind, all zero."""
    return {"energy": 0, "forces": 0, "virial": 0}


@dataclass
class RowPart:
    """Weighted rows of one kind of observation of one frame of a chunk."""

    frame: int            # position in the chunk
    kind: str             # "energy", "forces" or "virial"
    A: np.ndarray         # rows divided by their σ
    b: np.ndarray         # targets divided by their σ
    sigma: np.ndarray     # σ of each row (eV, eV/Å)
    nominal: np.ndarray   # σ as users set it (per atom for energies and virials)


def stack_parts(parts: Sequence[RowPart], chunk_idx: Sequence[int]):
    """(rows, targets, frame index of each row, kind code of each row) of a chunk's parts."""
    return (np.vstack([p.A for p in parts]), np.concatenate([p.b for p in parts]),
            np.concatenate([np.full(len(p.b), chunk_idx[p.frame]) for p in parts]),
            np.concatenate([np.full(len(p.b), KIND_CODES[p.kind]) for p in parts]))


def subtract_baseline(baseline, frames: Sequence[Atoms], labels: Sequence[Labels]) -> List[Labels]:
    """Each frame's labels minus ``baseline`` (the baseline's parts other than e0; None: the labels as they are)."""
    if baseline is None:
        return list(labels)
    return [_residual_of_frame(baseline, a, lb) for a, lb in zip(frames, labels)]


def weighted_parts(plan: "FitPlan", chunk: Sequence[Atoms], lbs: Sequence[Labels], rows,
                   counts: Dict[str, int]) -> List[RowPart]:
    """The weighted rows of a chunk from its design ``rows``, one part per frame and kind; adds to ``counts``."""
    e0 = plan.e0
    parts = []
    for f, (a, lb) in enumerate(zip(chunk, lbs)):
        n = len(a)
        sig = plan.noise.sigmas(a, lb, plan.noise_scale)
        if lb.energy_eV is not None:
            s = sig["energy"] * np.sqrt(n)
            target = lb.energy_eV - sum(e0[int(z)] for z in a.numbers)
            parts.append(RowPart(f, "energy", rows.energy[f:f + 1] / s, np.array([target / s]),
                                 np.array([s]), np.array([sig["energy"]])))
            counts["energy"] += 1
        if lb.forces_eV_per_A is not None:
            lo = 3 * rows.atom_start[f]
            s = sig["forces"]
            # forces = -dE/dr
            parts.append(RowPart(f, "forces", rows.gradient[lo:lo + 3 * n] * (-1.0 / s),
                                 lb.forces_eV_per_A.ravel() / s, np.full(3 * n, s), np.full(3 * n, s)))
            counts["forces"] += 3 * n
        if lb.stress_eV_per_A3 is not None and rows.virial is not None:
            s = sig["virial"] * np.sqrt(n)
            parts.append(RowPart(f, "virial", rows.virial[f] / s, lb.stress_eV_per_A3 * a.get_volume() / s,
                                 np.full(6, s), np.full(6, sig["virial"])))
            counts["virial"] += 6
    return parts


def chunk_parts(plan: "FitPlan", frames: Sequence[Atoms], labels: Sequence[Labels], descs: Optional[List[list]] = None,
                counts: Optional[Dict[str, int]] = None) -> List[RowPart]:
    """The weighted rows of a chunk of frames (descriptors computed here unless given)."""
    need_grad = any(lb.forces_eV_per_A is not None or lb.stress_eV_per_A3 is not None for lb in labels)
    if descs is None:
        descs = [t.compute(frames, gradients=need_grad, layout="pairs") for t in plan.terms]
    rows = design_rows(plan.terms, descs, forces=need_grad,
                       virial=any(lb.stress_eV_per_A3 is not None for lb in labels))
    return weighted_parts(plan, frames, labels, rows, counts if counts is not None else new_counts())


def log_scales(terms, noise_scale: Dict[str, float], names: Sequence[str], delta_start: Sequence[float]) -> np.ndarray:
    """log(δ / δ at the start of the fit) per term, then log(noise scale) per named group."""
    log_c = [np.log(t.delta_eV / d0) for t, d0 in zip(terms, delta_start)]
    return np.array(log_c + [np.log(noise_scale.get(g, 1.0)) for g in names])
