"""The fitted state of a GAP model: the one owner of every fitted array.

A fit builds a :class:`FittedState` aside and hands it to the estimator only
when it is complete; a model file is read into one; prediction and
uncertainty (:mod:`gapfit.predictor`) are functions of one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from . import sgp
from .terms import Term, TermRows, atoms_per_chunk, design_rows


@dataclass
class FittedState:
    """Everything a fit (or a model file) determines; the one owner of fitted state.

    Attributes
    ----------
    species : list of int
        Atomic numbers the model knows.
    e0 : dict {Z: eV}
        Isolated-atom energies (part of the baseline).
    baseline : gapfit.baselines.Baseline
        The whole fixed baseline (e0, core repulsion, tabulated pair, Δ-learning calculator).
    terms : list of Term
        Fitted terms (descriptor bound, δ set, sparse points chosen), in column order.
    kmm_chol : list of ndarray
        Lower Cholesky factors of the diagonal blocks of K_MM (+ jitter), in column order.
    R_ab : ndarray (M+1, M+1)
        Upper-triangular QR factor of the stacked training system with its target column.
    alpha : ndarray (M,)
        Weights of all terms, concatenated.
    calibration : dict or None
        Scales of the predicted standard deviations fitted on held-out frames.
    training : dict
        Summary of the training data and fit.
    noise_scale : dict {group: factor}
        Factors the hyperparameter optimisation put on the noise levels of
        each noise group (``"energy"``, ``"forces"``, ``"virial"``, or
        ``"forces:md_300K"`` per config_type); empty when not optimised.
    likelihood : gapfit.hyper.LikelihoodProblem or None
        The per-noise-group factors of the last fit (in memory only, not
        saved): what re-optimising δ and σ needs without the data.
    """

    species: List[int]
    e0: Dict[int, float]
    baseline: Any
    terms: List[Term]
    kmm_chol: List[np.ndarray] = field(default_factory=list)
    R_ab: Optional[np.ndarray] = None
    alpha: Optional[np.ndarray] = None
    calibration: Optional[dict] = None
    training: dict = field(default_factory=dict)
    noise_scale: Dict[str, float] = field(default_factory=dict)
    likelihood: Any = None

    @property
    def n_columns(self) -> int:
        return int(sum(t.n_columns for t in self.terms))

    @property
    def charge_part(self) -> Any:
        """The baseline's charge equilibration (:class:`gapfit.qeq.QEqBaseline`), or None."""
        stack = [self.baseline]
        while stack:
            part = stack.pop()
            if getattr(part, "type", None) == "qeq":
                return part
            stack.extend(getattr(part, "parts", []))
        return None

    @property
    def column_slices(self) -> List[slice]:
        out, o = [], 0
        for t in self.terms:
            out.append(slice(o, o + t.n_columns))
            o += t.n_columns
        return out

    @property
    def R(self) -> np.ndarray:
        M = self.n_columns
        return self.R_ab[:M, :M]

    def factor_kmm(self, jitter: float) -> None:
        """Cholesky factors of every term's K_MM blocks (after sparse points change)."""
        blocks, names = [], []
        for k, t in enumerate(self.terms):
            term_blocks = t.kmm_blocks()
            blocks += term_blocks
            names += [f"term {k + 1} ({t.type}) block {b + 1}" for b in range(len(term_blocks))]
        self.kmm_chol = sgp.kmm_cholesky(blocks, jitter, names)

    def prior_rows(self) -> np.ndarray:
        """Lᵀ rows of the prior, to stack under the data rows."""
        return sgp.prior_rows(self.kmm_chol)

    def set_factor(self, R_ab: np.ndarray) -> None:
        """Take the factor of [A | b] and solve for the weights."""
        self.R_ab = np.ascontiguousarray(R_ab)
        self.alpha = sgp.solve_from_factor(self.R_ab)[0]

    def descriptors(self, frames: Sequence[Atoms], *, gradients: bool, layout: str = "pairs") -> List[list]:
        """Each term's descriptors of ``frames``: one list per term, one entry per frame.

        ``layout="blocks"``: gradients in the form cheapest for prediction
        alone (see :meth:`gapfit.terms.Term.compute`); design rows, force
        variances and committees need the default ``"pairs"``.
        """
        return [t.compute(frames, gradients=gradients, layout=layout) for t in self.terms]

    def design_rows(self, descs: List[list], *, forces: bool, virial: bool, local: bool = False) -> TermRows:
        """All terms' design rows side by side (columns in the model's order) from :meth:`descriptors`."""
        return design_rows(self.terms, descs, forces=forces, virial=virial, local=local)

    @property
    def atoms_per_chunk(self) -> int:
        """Atoms per chunk of descriptor work (pair gradients' memory bounded: :func:`gapfit.terms.atoms_per_chunk`)."""
        return atoms_per_chunk(self.terms)

    @property
    def block_terms(self) -> List[int]:
        """The term of each K_MM factor block (blocks are in column order)."""
        ends = np.cumsum([t.n_columns for t in self.terms])
        out, o = [], 0
        for L in self.kmm_chol:
            out.append(int(np.searchsorted(ends, o, side="right")))
            o += len(L)
        return out

    @property
    def is_fitted(self) -> bool:
        """Whether the weights are solved (a state being built by a fit is not)."""
        return self.alpha is not None

