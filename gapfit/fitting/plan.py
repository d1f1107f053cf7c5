"""What a fit's passes need, and how the data are cut into blocks of work.

A :class:`FitPlan` is all a pass over the data needs (the terms, the
baseline parts, the noise model, the label reader, the chunk size, the
seed, and the state of the fit so far): small and picklable, it is what a
Dask worker receives, never the estimator. The blocks
(:func:`plan_blocks`) depend only on the data and the settings, never on
the number of workers, so the same data and seed give the same model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..data import LabelReader
from ..noise import NoiseModel
from ..terms import Term


def settings_of(params: Mapping[str, Any]) -> SimpleNamespace:
    """An estimator's parameters as attributes (``settings.seed``): what the fit's steps read."""
    return SimpleNamespace(**params)


@dataclass
class FitPlan:
    """The picklable part of a fit that its passes run with (see the module docstring).

    ``residual_baseline``: the baseline's parts other than e0 (None when
    there are none); labels minus these are what the terms and e0 are fitted
    to. ``e0``, ``noise_scale``, ``R_ab`` and ``alpha`` are the fit's state
    as far as it has got (empty or None before they are known).
    """

    terms: List[Term]
    reader: LabelReader
    noise: NoiseModel
    residual_baseline: Optional[Any]
    atoms_per_chunk: int
    seed: int
    e0: Dict[int, float] = field(default_factory=dict)
    noise_scale: Dict[str, float] = field(default_factory=dict)
    R_ab: Optional[np.ndarray] = None
    alpha: Optional[np.ndarray] = None

    @property
    def n_columns(self) -> int:
        """Columns of the design rows: sparse points over all terms."""
        return int(sum(t.n_columns for t in self.terms))

    @classmethod
    def of_state(cls, state, reader: LabelReader, noise: NoiseModel, seed: int, *, solved: bool = False,
                 residual_parts: Optional[Sequence] = None) -> "FitPlan":
        """The plan of a fitted state (or one being fitted); ``solved``: with R and α.

        ``residual_parts``: the baseline's parts other than e0; None: those
        of the state's baseline, which must then be complete (e0 first).
        """
        parts = state.baseline.parts[1:] if residual_parts is None else residual_parts
        return cls(terms=state.terms, reader=reader, noise=noise, residual_baseline=sum_of(parts),
                   atoms_per_chunk=state.atoms_per_chunk, seed=seed, e0=state.e0,
                   noise_scale=state.noise_scale, R_ab=state.R_ab if solved else None,
                   alpha=state.alpha if solved else None)


def sum_of(parts: Sequence) -> object:
    """One baseline of ``parts`` (None when there are none)."""
    from ..baselines import SumBaseline
    return SumBaseline(list(parts)) if parts else None


@dataclass
class Block:
    """Frames ``lo .. hi-1`` of a source, of which those in ``skip`` are passed over."""

    lo: int
    hi: int
    n_atoms: List[int]          # atoms of frames lo .. hi-1
    skip: Tuple[int, ...] = ()  # global numbers
    #: global numbers of frames lo .. hi-1 when the source numbers them otherwise
    #: (the calibration frames, read apart); None: the same
    numbers: Optional[List[int]] = None
    #: the survey's total energy of frames lo .. hi-1 (nan: none); what pass 1 needs of the labels
    energy_eV: Optional[List[float]] = None

    def describe(self, source) -> str:
        """The block's frames, for a message."""
        return f"frames {self.lo}..{self.hi - 1} of {source.describe()}"


def block_of(info, lo: int, hi: int, skip: Sequence[int] = ()) -> Block:
    """The block of frames ``lo .. hi-1`` of a survey, passing over those of ``skip`` in it."""
    return Block(lo, hi, list(info.n_atoms[lo:hi]), tuple(k for k in skip if lo <= k < hi),
                 energy_eV=list(info.energy_eV[lo:hi]))


def plan_blocks(n_atoms: List[int], indices: List[int], n_blocks: int) -> List[List[int]]:
    """Split ``indices`` (increasing) into at most ``n_blocks`` consecutive runs of about equal atom counts."""
    if not indices:
        return []
    sizes = np.array([n_atoms[k] for k in indices], dtype=float)
    cum = np.cumsum(sizes)
    bounds = np.searchsorted(cum, cum[-1] * np.arange(1, n_blocks) / n_blocks, side="left") + 1
    cuts = [0] + sorted(set(int(b) for b in bounds if 0 < b < len(indices))) + [len(indices)]
    return [list(indices[a:b]) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def fit_blocks(info, atoms_per_block: Optional[int], atoms_per_chunk: int, skip: Sequence[int]) -> List[Block]:
    """The fit's blocks of about ``atoms_per_block`` atoms (default: 4 chunks' worth), passing over ``skip``."""
    per_block = atoms_per_block or 4 * atoms_per_chunk
    n_blocks = max(1, int(round(sum(info.n_atoms) / per_block)))
    return [block_of(info, b[0], b[-1] + 1, skip)
            for b in plan_blocks(info.n_atoms, list(range(len(info))), n_blocks)]


def calibration_split(info, fraction: Optional[float], seed: int) -> List[int]:
    """Seeded choice of held-out calibration frames (empty when too few)."""
    frac = float(fraction or 0.0)
    eligible = [k for k in range(len(info)) if not info.isolated[k]
                and (info.has_forces[k] or info.has_energy(k))]
    n = min(200, int(round(frac * len(eligible))))
    if frac <= 0 or len(eligible) < 10 or n < 1:
        return []
    rng = np.random.default_rng(seed + 7919)
    return sorted(int(k) for k in rng.choice(eligible, size=n, replace=False))
