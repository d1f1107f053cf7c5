"""What every term of a GAP model provides: the one contract fit, prediction,
variances, the incremental learner and the model file rely on.

A model is ``baseline + Σ terms``. A term owns its descriptor, its kernel,
its scale δ (eV) and its sparse points; the solver only sees its block of
columns (``n_columns`` weights) and the blocks of its K_MM. Energies are
sums of local energies, each term's local energy at an atom being
``Σ_m α_m k(environment, x_m)``. Everything a term returns is linear in its
weights, so the design rows (what the fit stacks) and the prediction (the
rows times the weights, contracted early for speed) are two routes to the same
numbers; a test holds them equal for every term type.

Conventions (ASE's): positions in Å, energies in eV, ``gradient`` is
∂E/∂r (forces are minus it), ``virial`` is ∂E/∂ε for the homogeneous strain
``r -> r (1 + ε)`` of positions and cell, symmetrised, in Voigt order
xx yy zz yz xz xy, so that stress = virial / volume.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Sequence

import numpy as np
from ase import Atoms

from ..sampling import PrioritySample, frame_priorities

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@dataclass
class TermRows:
    """Design rows of one term for a chunk of frames: ∂(observable)/∂α_term.

    energy : (n_frames, n_columns) total-energy rows.
    gradient : (3 Σ n_atoms, n_columns) ∂E/∂r rows, row 3 j + x, atoms of all
        frames concatenated in order; None unless asked.
    virial : (n_frames, 6, n_columns) ∂E/∂ε rows in Voigt order; None unless
        asked (zero rows for non-periodic frames).
    local : (Σ n_atoms, n_columns) local-energy rows; None unless asked.
    atom_start : (n_frames + 1,) first atom of each frame in the chunk.
    """

    energy: np.ndarray
    gradient: Optional[np.ndarray]
    virial: Optional[np.ndarray]
    local: Optional[np.ndarray]
    atom_start: np.ndarray


@dataclass
class TermPrediction:
    """One term's contribution to one frame's prediction.

    local_energy_eV : (n_atoms,) local energies; their sum is the energy.
    gradient_eV_per_A : (n_atoms, 3) ∂E/∂r, or None when not asked.
    virial_eV : (3, 3) symmetric ∂E/∂ε, or None when not asked or not periodic.
    local_rows : (n_atoms, n_columns) the local-energy design rows (kernel
        values against the sparse points) the prediction used, when asked
        with ``local_rows=True`` and the term keeps them; else None (callers
        then take :meth:`Term.design_rows` with ``local=True``).
    """

    local_energy_eV: np.ndarray
    gradient_eV_per_A: Optional[np.ndarray] = None
    virial_eV: Optional[np.ndarray] = None
    local_rows: Optional[np.ndarray] = None


@dataclass
class TermShare:
    """One term's part of a frame's prediction from the local energies of some atoms (the centres).

    centres : (n_c,) the atoms (ascending indices into the frame).
    local_energy_eV : (n_c,) their local energies.
    gradient_eV_per_A : (n_atoms, 3) ∂(Σ of those energies)/∂r on every atom of the frame.
    atom_virial_eV : (n_c, 3, 3) or None: each centre's ∂ε_i/∂ε (eV; the
        strain derivative of its local energy, ASE's sign, symmetric), which
        is Σ_j (r_j - r_i) ⊗ ∂ε_i/∂r_j over the periodic images j in its
        environment; their sum is the share's part of :attr:`TermPrediction.virial_eV`.
        Finite frames have it too. None when not asked.
    local_rows : (n_c, n_columns) or None: the centres' local-energy design rows, when asked.
    local_prior_eV2 : (n_c,) or None: the prior variances of their local energies, when asked.
    """

    centres: np.ndarray
    local_energy_eV: np.ndarray
    gradient_eV_per_A: np.ndarray
    atom_virial_eV: Optional[np.ndarray] = None
    local_rows: Optional[np.ndarray] = None
    local_prior_eV2: Optional[np.ndarray] = None


@dataclass
class PriorVariance:
    """Prior (before any data) variances of one term's contribution to one frame.

    local_eV2 : (n_atoms,) of each local energy.
    energy_eV2 : of the total energy.
    forces_eV2_per_A2 : (n_atoms, 3) of each force component, or None when not asked.
    """

    local_eV2: np.ndarray
    energy_eV2: float
    forces_eV2_per_A2: Optional[np.ndarray] = None


class CandidateSample:
    """A term's sparse-point candidates: per block, a seeded uniform sample of bounded size.

    Each candidate's priority comes from the seed and its frame's global
    index (:func:`gapfit.sampling.frame_priorities`), so the samples of
    disjoint sets of frames :meth:`merge` into exactly the sample of all of
    them, whatever the chunking or the worker. Also counts the candidates of
    each block and keeps the smallest first coordinate seen. Memory: about
    2 × limit rows per block.
    """

    def __init__(self, limit: Optional[int], seed: int):
        self.limit = None if limit is None else int(limit)
        self.seed = int(seed)
        self.blocks: Dict[Any, Any] = {}
        self.count: Dict[Any, int] = {}
        self.first_min: Dict[Any, float] = {}

    def add(self, term: "Term", desc: Any, frame_index: int) -> None:
        """Offer the candidates of one frame's descriptor (global frame number ``frame_index``)."""
        parts = term.candidate_rows(desc)
        parts = [p for p in parts if len(p[1])]
        if not parts:
            return
        prio = frame_priorities(self.seed, frame_index, max(int(sites.max()) for _, _, sites in parts) + 1)
        for key, rows, sites in parts:
            if key not in self.blocks:
                self.blocks[key] = PrioritySample(self.limit)
                self.count[key] = 0
                self.first_min[key] = np.inf
            order = (np.int64(frame_index) << np.int64(32)) + sites.astype(np.int64)
            self.blocks[key].add(rows, prio[sites], order)
            self.count[key] += len(rows)
            self.first_min[key] = min(self.first_min[key], float(np.min(rows[:, 0])))

    def merge(self, other: "CandidateSample") -> "CandidateSample":
        """Take in the sample of a disjoint set of frames (in place; returns self)."""
        for key, block in other.blocks.items():
            if key in self.blocks:
                self.blocks[key].merge(block)
                self.count[key] += other.count[key]
                self.first_min[key] = min(self.first_min[key], other.first_min[key])
            else:
                self.blocks[key] = block
                self.count[key] = other.count[key]
                self.first_min[key] = other.first_min[key]
        return self

    def rows(self, key: Any) -> Optional[np.ndarray]:
        """The sampled candidates of a block, in (frame, site) order; None when the block had none."""
        return self.blocks[key].sample() if key in self.blocks else None


class Term(ABC):
    """One additive part of a GAP model (see the module docstring).

    Subclasses set ``type`` and ``SETTINGS`` (name -> default), keep every
    setting as an attribute, and implement the abstract methods. Settings
    are plain JSON values; ``delta`` (eV) may be None until the fit sets it.
    """

    type: ClassVar[str] = ""
    SETTINGS: ClassVar[Dict[str, Any]] = {}

    def __init__(self, **settings: Any):
        unknown = sorted(set(settings) - set(self.SETTINGS))
        if unknown:
            from ..errors import InputError
            raise InputError(f"term {self.type}: unknown setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(self.SETTINGS))}", param=unknown[0])
        for name, default in self.SETTINGS.items():
            setattr(self, name, settings.get(name, default))
        self.species: List[int] = []

    # --------------------------------------------------------------- settings
    def settings(self) -> Dict[str, Any]:
        """The term's settings as given (JSON values): ``type(self)(**t.settings())`` rebuilds it."""
        return {name: getattr(self, name) for name in self.SETTINGS}

    def to_dict(self) -> Dict[str, Any]:
        """``{"type": ..., **settings}``, the form of a ``terms:`` entry in a config."""
        return {"type": self.type, **self.settings()}

    @abstractmethod
    def check_settings(self) -> None:
        """Raise :class:`gapfit.errors.InputError` naming the first bad setting."""

    @property
    @abstractmethod
    def cutoff_A(self) -> float:
        """Largest distance (Å) at which an atom still changes an environment."""

    # ---------------------------------------------------------- descriptors
    @abstractmethod
    def bind(self, species: Sequence[int]) -> None:
        """Prepare the descriptor calculator for these atomic numbers (all the model knows)."""

    @abstractmethod
    def compute(self, frames: Sequence[Atoms], *, gradients: bool, layout: str = "pairs",
                centres: Optional[Sequence[np.ndarray]] = None) -> List[Any]:
        """Descriptors of each frame (an object per frame, opaque to callers).

        ``layout="blocks"`` lets a term keep its gradients in whatever form
        is cheapest for :meth:`predict` alone (design rows and variances then
        need ``"pairs"``); terms with one form ignore it. ``centres`` (one
        sorted array of distinct atom indices per frame; None: all atoms):
        descriptors of those atoms' environments only, for
        :meth:`predict_share`; :meth:`predict` and the design rows take only
        ``centres=None`` descriptors.
        """

    # ------------------------------------------------------------ sparse set
    @abstractmethod
    def candidate_rows(self, desc: Any) -> List[tuple]:
        """The sparse-point candidates of one frame: ``[(block key, rows (n, d), site numbers (n,)), ...]``.

        Site numbers are unique within the frame (they order the candidates).
        """

    @abstractmethod
    def select_from_sample(self, sample: "CandidateSample", seed: int) -> Dict[str, Any]:
        """Choose the sparse points from a :class:`CandidateSample`; returns a JSON summary for the log."""

    def candidate_sample(self, limit: Optional[int], seed: int) -> "CandidateSample":
        """An empty sample of at most ``limit`` candidates per block (None: all), priorities from ``seed``."""
        return CandidateSample(limit, seed)

    def select_sparse(self, chunks: Iterable[List[Any]], seed: int, limit: Optional[int] = 20000,
                      first_frame: int = 0) -> Dict[str, Any]:
        """Choose the sparse points from descriptor chunks (computed without gradients).

        ``chunks`` yields lists of per-frame descriptors from :meth:`compute`,
        numbered from ``first_frame``; it is consumed once. Candidates are a
        seeded uniform sample of at most ``limit`` per block
        (:class:`CandidateSample`). Returns a JSON summary for the log
        (points and candidates per block).
        """
        sample = self.candidate_sample(limit, seed)
        k = first_frame
        for chunk in chunks:
            for desc in chunk:
                sample.add(self, desc, k)
                k += 1
        return self.select_from_sample(sample, seed)

    def species_without_points(self, species: Sequence[int]) -> List[int]:
        """The atomic numbers among ``species`` this term needs sparse points for but has none of.

        Asked once the sparse points are chosen (a species seen only in
        held-out frames has none). Terms whose blocks may stay empty return [].
        """
        return []

    @property
    @abstractmethod
    def n_columns(self) -> int:
        """Number of weights (sparse points over all blocks)."""

    @abstractmethod
    def kmm_blocks(self) -> List[np.ndarray]:
        """K_MM's diagonal blocks, in column order (the term's K_MM is block diagonal)."""

    # ------------------------------------------------------- rows, prediction
    @property
    def gradient_width(self) -> Optional[int]:
        """Features per environment whose pair gradients a chunk of design rows holds; None when negligible.

        Sizes the chunks of frames (:func:`gapfit.terms.atoms_per_chunk`):
        wide descriptors hold large gradients per pair.
        """
        return None

    @abstractmethod
    def design_rows(self, descs: Sequence[Any], *, forces: bool, virial: bool, local: bool = False) -> TermRows:
        """Design rows for a chunk of frames (see :class:`TermRows`)."""

    @abstractmethod
    def predict(self, desc: Any, alpha: np.ndarray, *, forces: bool, virial: bool,
                local_rows: bool = False) -> TermPrediction:
        """This term's part of one frame's prediction with weights ``alpha`` (n_columns,).

        ``local_rows=True``: also return the local-energy design rows when
        the prediction has them anyway (see :class:`TermPrediction`).
        """

    def predict_many(self, descs: Sequence[Any], alpha: np.ndarray, *, forces: bool, virial: bool,
                     local_rows: bool = False) -> List[TermPrediction]:
        """:meth:`predict` for several frames (terms may batch their kernel evaluations)."""
        return [self.predict(d, alpha, forces=forces, virial=virial, local_rows=local_rows) for d in descs]

    def predict_share(self, desc: Any, atoms: Atoms, alpha: np.ndarray, *, virial: bool = True,
                      local_rows: bool = False) -> TermShare:
        """This term's part of ``atoms``' prediction from the local energies of the centres of ``desc``.

        ``desc`` comes from :meth:`compute` with ``centres=[centres]`` and
        gradients; ``virial``: also the centres' per-atom virials (for
        periodic and finite frames alike); ``local_rows``: also their
        local-energy design rows and prior variances (for their stds).
        Shares of a partition of the atoms sum to :meth:`predict` (see :class:`TermShare`).
        """
        raise NotImplementedError(f"term {self.type} cannot predict a share of a frame's atoms")

    def predict_weighted(self, desc: Any, alpha: np.ndarray, weights: np.ndarray, *,
                         virial: bool) -> TermPrediction:
        """The local values ε_i, and the gradient and virial of the weighted sum ``Σ_i w_i ε_i``.

        What a per-atom quantity that is not summed plainly needs (the
        electronegativities of :mod:`gapfit.qeq`, weighted by the adjoint
        charges). ``desc`` from :meth:`compute` with gradients, all atoms.
        """
        raise NotImplementedError(f"term {self.type} cannot differentiate a weighted sum of its local values; "
                                  "use a soap term")

    @abstractmethod
    def prior_variance(self, desc: Any, *, forces: bool, energy: bool = True) -> PriorVariance:
        """Prior variances of this term's contributions to one frame.

        ``energy=False`` may skip the total energy's (then reported as 0).
        """

    # ---------------------------------------------------------- fitted state
    @abstractmethod
    def fitted_state(self) -> Dict[str, Any]:
        """JSON part of the fitted state (δ, blocks and their sizes, ...)."""

    @abstractmethod
    def fitted_arrays(self) -> Dict[str, np.ndarray]:
        """Array part of the fitted state (sparse points), names unique within the term."""

    @abstractmethod
    def restore(self, state: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        """Set the fitted state from :meth:`fitted_state` and :meth:`fitted_arrays` output.

        Raises ``ValueError`` or ``KeyError`` naming the entry when they do not fit.
        """

    def add_sparse_points(self, desc: Any, atom_indices: Sequence[int]) -> int:
        """Add environments of one frame as sparse points (on-the-fly learning); returns how many.

        Terms whose sparse points are fixed at the fit (a grid) return 0.
        """
        return 0

    def default_delta(self, energy_rms_eV: float) -> float:
        """δ (eV) to use when the setting is None, given the RMS per-atom training energy after e0."""
        return float(max(energy_rms_eV, 0.5))

    @property
    def delta_eV(self) -> float:
        """Kernel scale δ in eV (set by the fit when the setting is None)."""
        return float(self._delta_eV)

    def set_delta(self, delta_eV: float) -> None:
        """Set the kernel scale δ (eV); K scales with δ²."""
        self._delta_eV = float(delta_eV)

