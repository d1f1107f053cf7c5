"""A GAP model that grows frame by frame, for on-the-fly learning.

It keeps what a from-scratch refit would have to recompute: every labelled
frame's descriptors (with gradients, for every term) and the weighted design
matrix [Σ^-1/2 K_NM | Σ^-1/2 y]. Then

- a new frame adds rows: its descriptors and design rows are computed, and the
  (M+1) × (M+1) triangular factor is updated by QR of [R; new rows]
  (cost O((M + rows) M²), independent of the data already seen);
- new sparse points add columns: the design rows of the stored frames are
  rebuilt from their stored descriptors (kernel work, no descriptor
  recomputation), the K_MM factors are redone and the triangular factor is
  re-formed (cost O((N + M) M²)).

It uses only :class:`gapfit.GAP`'s public interface (``prepare``,
``descriptors``, ``training_rows``, ``residual_labels`` and the
:class:`gapfit.state.FittedState` it owns).
"""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from . import sgp
from .data import Labels, where_of
from .model import GAP
from .state import FittedState
from .terms import build_terms

log = logging.getLogger("gapfit")


class IncrementalGAP:
    """Grow a :class:`GAP` by frames and sparse points; ``.model`` is always solved.

    Parameters
    ----------
    params : dict
        ``GAP(**params)`` settings (terms, noise, baseline). Each term's δ and
        the baseline (e0, core repulsion radii) are fixed by the first frame.
    species : sequence of int
        Every species that will occur (MD does not change composition); the
        first frame must contain them all.
    """

    def __init__(self, params: Optional[dict] = None, species: Sequence[int] = ()):
        self.params = dict(params or {})
        self.params.setdefault("calibration_fraction", 0.0)
        # the first frame (often a perfect crystal) says nothing about how close atoms come
        self.params.setdefault("core_radii", "covalent")
        self.model = GAP(**self.params)
        self.species = sorted(int(z) for z in species)
        self.frames: List[Atoms] = []
        self.labels: List[Labels] = []  # with the baseline's non-e0 parts subtracted
        self._descs: List[list] = []  # per frame: one descriptor per term
        self._A: List[np.ndarray] = []
        self._b: List[np.ndarray] = []
        self._counts = {"energy": 0, "forces": 0, "virial": 0}
        self.timings: Dict[str, float] = {}

    @classmethod
    def from_model(cls, model: GAP, frames: Sequence[Atoms]) -> "IncrementalGAP":
        """Continue a fitted model: its settings, baseline, δ and sparse points, with
        ``frames`` (its training data) as the stored rows.

        The descriptors of the training frames are needed to add sparse points
        later, so a model file alone is not enough.
        """
        if getattr(model, "state_", None) is None or not model.state_.is_fitted:
            raise ValueError("from_model needs a fitted model")
        if not frames:
            raise ValueError("from_model needs the model's training frames")
        params = dict(model.get_params(deep=False))
        params["e0"] = {int(z): v for z, v in model.e0_.items()}
        inc = cls(params, model.species_)
        m = inc.model
        old = model.state_
        terms = build_terms([t.to_dict() for t in old.terms])
        for new, t in zip(terms, old.terms):
            new.restore(t.fitted_state(), t.fitted_arrays())
        m.state_ = FittedState(species=list(old.species), e0=dict(old.e0), baseline=old.baseline, terms=terms,
                               calibration=old.calibration)
        m.state_.factor_kmm(m.jitter)
        for k, atoms in enumerate(frames):
            lb = inc._read_labels(atoms, k)
            inc._store(atoms, m.residual_labels([atoms], [lb])[0])
        inc._refactor()
        m.state_.training = dict(old.training, incremental=True)
        return inc

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    # ------------------------------------------------------------ building
    def add_frame(self, atoms: Atoms, new_sparse_atoms: Sequence[int] = ()) -> None:
        """Add a labelled frame, and its atoms ``new_sparse_atoms`` as sparse points."""
        t0 = time.perf_counter()
        m = self.model
        lb = self._read_labels(atoms, self.n_frames)
        first = self.n_frames == 0
        if first:
            residual = m.prepare([atoms])[0]
            missing = sorted(set(self.species) - set(m.state_.species))
            if missing:
                raise ValueError(f"the first frame must contain every species; it lacks {missing}")
            self.species = list(m.state_.species)
            m.state_.calibration = None
        else:
            residual = m.residual_labels([atoms], [lb])[0]
        descs = self._store(atoms, residual, rows=False)
        if first:
            # every term chooses its sparse points from the first frame (SOAP: all its
            # distinct environments; two- and three-body terms: their grids)
            for k, (term, d) in enumerate(zip(m.terms_, descs)):
                term.select_sparse(iter([[d]]), seed=m.seed + 1000 * k)
            added = m.state_.n_columns
        else:
            added = sum(term.add_sparse_points(d, new_sparse_atoms) for term, d in zip(m.terms_, descs))
        if added:
            m.state_.factor_kmm(m.jitter)
            self._rebuild_rows()
            self._refactor()
            kind = "refactor"
        else:
            A, b = m.training_rows([atoms], [residual], [[d] for d in descs], self._counts)
            self._A.append(A)
            self._b.append(b)
            m.state_.set_factor(sgp.qr_r(np.vstack([m.state_.R_ab, np.hstack([A, b[:, None]])])))
            kind = "rows"
        m.state_.training = {"n_frames": self.n_frames, "n_train_frames": self.n_frames,
                             "n_atoms": int(sum(len(a) for a in self.frames)),
                             "n_observations": dict(self._counts), "species": self.species, "incremental": True}
        self.timings[kind] = time.perf_counter() - t0

    def _read_labels(self, atoms: Atoms, k: int) -> Labels:
        """The labels of the k-th frame, its structure checked first."""
        return self.model.label_reader().read_all([atoms], [where_of(atoms, k)], check=True)[0]

    def _store(self, atoms: Atoms, residual: Labels, rows: bool = True) -> list:
        """Keep a frame, its residual labels and descriptors (and its rows, when the columns are settled)."""
        m = self.model
        descs = [d[0] for d in m.descriptors([atoms], gradients=True)]
        self.frames.append(atoms)
        self.labels.append(residual)
        self._descs.append(descs)
        if rows:
            A, b = m.training_rows([atoms], [residual], [[d] for d in descs], self._counts)
            self._A.append(A)
            self._b.append(b)
        return descs

    def _rebuild_rows(self) -> None:
        """Design rows of every stored frame for the current sparse points, from the stored descriptors."""
        m = self.model
        self._counts = {"energy": 0, "forces": 0, "virial": 0}
        self._A, self._b = [], []
        for atoms, lb, descs in zip(self.frames, self.labels, self._descs):
            A, b = m.training_rows([atoms], [lb], [[d] for d in descs], self._counts)
            self._A.append(A)
            self._b.append(b)

    def _refactor(self) -> None:
        st = self.model.state_
        M = st.n_columns
        A = np.vstack(self._A)
        stacked = np.zeros((M + len(A), M + 1), order="F")
        stacked[:M, :M] = st.prior_rows()
        stacked[M:, :M] = A
        stacked[M:, M] = np.concatenate(self._b)
        st.set_factor(sgp.qr_r(stacked))
