"""A GAP model that grows frame by frame, for on-the-fly learning.

It keeps what a from-scratch refit would have to recompute: the normalised
descriptors (with gradients) of every labelled frame and the weighted design
matrix [Σ^-1/2 K_NM | Σ^-1/2 y]. Then

- a new frame adds rows: its descriptors and design rows are computed, and the
  (M+1) × (M+1) triangular factor is updated by QR of [R; new rows]
  (cost O((M + rows) M²), independent of the data already seen);
- new sparse points add columns: their kernel rows against the stored
  descriptors (no descriptor recomputation), the Cholesky factor of K_MM
  grows, and the triangular factor is re-formed from the stored design
  matrix (cost O((N + M) M²), no SOAP work).
"""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from . import sgp
from .data import Labels, check_structure, get_labels, where_of
from .descriptors import make_descriptor
from .model import GAP

log = logging.getLogger("gapfit")


class IncrementalGAP:
    """Grow a :class:`GAP` by frames and sparse points; ``.model`` is always solved.

    Parameters
    ----------
    params : dict
        ``GAP(**params)`` settings (SOAP, kernel, noise). ``delta`` and ``e0``
        default as in :class:`GAP` but are fixed by the first frames.
    species : sequence of int
        Every species that will occur (MD does not change composition).
    """

    def __init__(self, params: Optional[dict] = None, species: Sequence[int] = ()):
        self.params = dict(params or {})
        self.params.setdefault("calibration_fraction", 0.0)
        self.model = GAP(**self.params)
        self.species = sorted(int(z) for z in species)
        self.frames: List[Atoms] = []
        self.labels: List[Labels] = []
        self._descs: list = []
        self._A: List[np.ndarray] = []
        self._b: List[np.ndarray] = []
        self._counts = {"energy": 0, "forces": 0, "virial": 0}
        self.timings: Dict[str, float] = {}

    @classmethod
    def from_model(cls, model: GAP, frames: Sequence[Atoms]) -> "IncrementalGAP":
        """Continue a fitted model: its settings, e0, δ and sparse points, with
        ``frames`` (its training data) as the stored rows.

        The descriptors of the training frames are needed to add sparse points
        later, so a model file alone is not enough.
        """
        if not hasattr(model, "alpha_"):
            raise ValueError("from_model needs a fitted model")
        if not frames:
            raise ValueError("from_model needs the model's training frames")
        params = {k: v for k, v in model.get_params().items()}
        params.update(delta=model.delta_, e0={int(z): v for z, v in model.e0_.items()})
        inc = cls(params, model.species_)
        m = inc.model
        m._validate()
        m.species_ = list(model.species_)
        m.e0_ = dict(model.e0_)
        m.delta_ = model.delta_
        m.descriptor_ = model.descriptor_
        m.sparse_ = sgp.SparseSet({z: p.copy() for z, p in model.sparse_.points.items()}, model.delta_,
                                  model.sparse_.zeta)
        m.kmm_chol_ = sgp.kmm_cholesky(m.sparse_, m.jitter)
        m.calibration_ = getattr(model, "calibration_", None)
        for k, atoms in enumerate(frames):
            where = where_of(atoms, k)
            check_structure(atoms, where)
            lb = get_labels(atoms, where, energy_key=m.energy_key, forces_key=m.forces_key,
                            stress_key=m.stress_key)
            d = m.descriptor_.compute([atoms], gradients=True)[0]
            rows = sgp.design_rows([d], m.sparse_, forces=lb.forces_eV_per_A is not None,
                                   virial=lb.stress_eV_per_A3 is not None)
            A, b = m._weighted_rows([atoms], [lb], rows, inc._counts)
            inc.frames.append(atoms)
            inc.labels.append(lb)
            inc._descs.append(d)
            inc._A.append(A)
            inc._b.append(b)
        inc._refactor()
        m.alpha_, m.R_, _ = sgp.solve_from_factor(m.R_ab_)
        m.training_summary_ = dict(getattr(model, "training_summary_", {}), incremental=True)
        return inc

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    # ------------------------------------------------------------ building
    def add_frame(self, atoms: Atoms, new_sparse_atoms: Sequence[int] = ()) -> None:
        """Add a labelled frame, and its atoms ``new_sparse_atoms`` as sparse points."""
        t0 = time.perf_counter()
        m = self.model
        where = where_of(atoms, self.n_frames)
        check_structure(atoms, where)
        lb = get_labels(atoms, where, energy_key=m.energy_key, forces_key=m.forces_key, stress_key=m.stress_key)
        if self.n_frames == 0:
            self._initialise(atoms, lb)
        d = m.descriptor_.compute([atoms], gradients=True)[0]
        first = self.n_frames == 0
        if first and not new_sparse_atoms:
            new_sparse_atoms = list(range(len(atoms)))
        # columns for the frames already stored, then this frame's rows
        added = self._add_sparse_points(d, new_sparse_atoms)
        self.frames.append(atoms)
        self.labels.append(lb)
        self._descs.append(d)
        rows = sgp.design_rows([d], m.sparse_, forces=lb.forces_eV_per_A is not None,
                               virial=lb.stress_eV_per_A3 is not None)
        A, b = m._weighted_rows([atoms], [lb], rows, self._counts)
        self._A.append(A)
        self._b.append(b)
        if added or first:
            self._refactor()
            kind = "refactor"
        else:
            self._append_rows(A, b)
            kind = "rows"
        m.alpha_, m.R_, _ = sgp.solve_from_factor(m.R_ab_)
        m.training_summary_ = {"n_frames": self.n_frames, "n_train_frames": self.n_frames,
                               "n_atoms": int(sum(len(a) for a in self.frames)),
                               "n_observations": dict(self._counts), "species": self.species,
                               "incremental": True}
        self.timings[kind] = time.perf_counter() - t0

    def _initialise(self, atoms: Atoms, lb: Labels) -> None:
        m = self.model
        m._validate()
        species = sorted(set(self.species) | set(int(z) for z in atoms.numbers))
        self.species = species
        m.species_ = species
        m.e0_ = m._fit_e0([atoms], [lb], species)
        m.delta_ = float(m.delta) if m.delta is not None else m._default_delta([atoms], [lb], [0])
        m.descriptor_ = make_descriptor(m.soap_settings, species)
        m.sparse_ = sgp.SparseSet({}, m.delta_, float(m.zeta))
        m.kmm_chol_ = {}
        m.calibration_ = None

    def _add_sparse_points(self, d, atom_indices: Sequence[int]) -> int:
        """Add environments of descriptor ``d`` as sparse points; returns how many were new."""
        m = self.model
        sp = m.sparse_
        new: Dict[int, List[np.ndarray]] = {}
        for i in atom_indices:
            z = int(d.numbers[i])
            q = d.values[i]
            have = [sp.points[z]] if z in sp.points else []
            have += [np.array(new[z])] if z in new else []
            if any(len(h) and np.max(h @ q) > 1.0 - 1e-10 for h in have):
                continue  # duplicate environment: would make K_MM singular
            new.setdefault(z, []).append(q)
        if not new:
            return 0
        old_offsets = sp.offsets
        new_sets = {z: np.array(v) for z, v in new.items()}
        # kernel columns of the stored observations against the new points only
        cols_new = self._columns_for(sgp.SparseSet(new_sets, sp.delta, sp.zeta)) if self._A else None
        points = dict(sp.points)
        for z, X in new_sets.items():
            points[z] = np.vstack([points[z], X]) if z in points else X
        m.sparse_ = sgp.SparseSet(points, sp.delta, sp.zeta)
        m.kmm_chol_ = sgp.kmm_cholesky(m.sparse_, m.jitter)
        if cols_new is not None:
            # place old and new columns at their species offsets in the new layout
            A_old = np.vstack(self._A)
            A = np.zeros((len(A_old), m.sparse_.n_total))
            new_off_in_block = sgp.SparseSet(new_sets, sp.delta, sp.zeta).offsets
            for z in m.sparse_.species:
                o = m.sparse_.offsets[z]
                n_old = len(sp.points[z]) if z in sp.points else 0
                if n_old:
                    A[:, o:o + n_old] = A_old[:, old_offsets[z]:old_offsets[z] + n_old]
                if z in new_sets:
                    k = len(new_sets[z])
                    A[:, o + n_old:o + n_old + k] = cols_new[:, new_off_in_block[z]:new_off_in_block[z] + k]
            self._A = [A]
            self._b = [np.concatenate(self._b)]
        return sum(len(v) for v in new_sets.values())

    def _columns_for(self, sparse: sgp.SparseSet) -> np.ndarray:
        m = self.model
        parts = []
        scratch = {"energy": 0, "forces": 0, "virial": 0}
        for a, lb, d in zip(self.frames, self.labels, self._descs):
            rows = sgp.design_rows([d], sparse, forces=lb.forces_eV_per_A is not None,
                                   virial=lb.stress_eV_per_A3 is not None)
            saved, m.sparse_ = m.sparse_, sparse
            try:
                A, _ = m._weighted_rows([a], [lb], rows, scratch)
            finally:
                m.sparse_ = saved
            parts.append(A)
        return np.vstack(parts)

    def _refactor(self) -> None:
        m = self.model
        M = m.sparse_.n_total
        A = np.vstack(self._A)
        stacked = np.zeros((M + len(A), M + 1), order="F")
        stacked[:M, :M] = sgp.prior_rows(m.sparse_, m.kmm_chol_)
        stacked[M:, :M] = A
        stacked[M:, M] = np.concatenate(self._b)
        m.R_ab_ = sgp.qr_r(stacked)

    def _append_rows(self, A: np.ndarray, b: np.ndarray) -> None:
        m = self.model
        m.R_ab_ = sgp.qr_r(np.vstack([m.R_ab_, np.hstack([A, b[:, None]])]))
