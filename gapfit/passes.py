"""The fit's passes over the data, one block of frames at a time.

Each function takes the model (its state as far as the fit has got), a
frame source and one block of frames (a contiguous range of global frame
indices), reads the block chunk by chunk and returns a small, mergeable
result. They run in the fitting process or on Dask workers
(:mod:`gapfit.executors`) alike: a worker gets a pickled copy of the model
(whose terms rebuild their descriptor calculators from their settings) and
the source's part for its block (paths, or the block's frames).

- :func:`sample_block`: descriptors without gradients -> each term's
  :class:`gapfit.terms.base.CandidateSample`, plus every frame's energy
  after the baseline's non-e0 parts (what e0 is fitted to).
- :func:`rows_block`: design rows with gradients -> one QR factor per
  noise group (:class:`gapfit.hyper.GroupedFactors`) and row counts.
- :func:`hygiene_block`: leverage and leave-one-out residuals per frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms

from . import hyper
from .data import where_of
from .survey import group_by_atoms


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
        return f"frames {self.lo}..{self.hi - 1} of {source.describe()}"


def _chunks(source, block: Block, atoms_per_chunk: int, progress=None) -> Iterator[Tuple[List[int], List[Atoms]]]:
    """(global indices, frames) of the block's frames not skipped, about ``atoms_per_chunk`` atoms at a time."""
    skip = set(block.skip)
    frames = source.read(block.lo, block.hi)
    numbers = list(range(block.lo, block.hi)) if block.numbers is None else list(block.numbers)
    for idx in group_by_atoms(numbers, block.n_atoms, atoms_per_chunk):
        chunk = [next(frames) for _ in idx]
        keep = [(k, a) for k, a in zip(idx, chunk) if k not in skip]
        if keep:
            yield [k for k, _ in keep], [a for _, a in keep]
        if progress is not None:
            progress.update(len(idx))


def _labelled_chunks(model, source, block: Block, progress=None):
    """(global indices, frames, labels minus the non-e0 baseline) of the block's chunks (frames already surveyed)."""
    for idx, frames in _chunks(source, block, model._atoms_per_chunk(), progress):
        wheres = [where_of(a, k) for k, a in zip(idx, frames)]
        yield idx, frames, model.residual_labels(frames, model._labels(frames, wheres, check=False))


def sample_block(model, source, block: Block, limit: Optional[int], sample_skip: Sequence[int] = (), progress=None):
    """Candidate samples of each term (frames in ``sample_skip`` left out) and every frame's residual energy.

    ``model.state_.baseline`` holds the baseline's parts other than e0 (or
    None). Returns ``(samples, energies)``: one :class:`CandidateSample`
    per term; ``{frame: energy eV after those parts}`` for every frame of
    the block with an energy.
    """
    st = model.state_
    samples = [t.candidate_sample(limit, model.seed + 1000 * k) for k, t in enumerate(st.terms)]
    base = st.baseline
    no_sample = set(sample_skip)
    energies: Dict[int, float] = {}
    for idx, frames in _chunks(source, block, model._atoms_per_chunk(), progress):
        for k, a in zip(idx, frames):
            e = block.energy_eV[k - block.lo]
            if np.isfinite(e):
                energies[k] = e - (base.evaluate(a, forces=False, virial=False).energy_eV if base else 0.0)
        pick = [j for j, k in enumerate(idx) if k not in no_sample]
        if not pick:
            continue
        sub = [frames[j] for j in pick]
        for t, sample in zip(st.terms, samples):
            for j, d in zip(pick, t.compute(sub, gradients=False)):
                sample.add(t, d, idx[j])
    return samples, energies


def rows_block(model, source, block: Block, names: Sequence[str], delta_start: Sequence[float],
               spool=None, progress=None):
    """The weighted design rows of the block's frames, factorised per noise group.

    Returns ``(GroupedFactors, counts)`` with counts of energy, force and
    virial observations. ``spool``: a :class:`gapfit.hygiene.RowSpool` that
    also receives the rows (in the fitting process only).
    """
    counts = {"energy": 0, "forces": 0, "virial": 0}
    mode = model._sigma_mode()
    grouped = hyper.GroupedQR(model.state_.n_columns, n_groups_expected=len(names))
    number = {g: k for k, g in enumerate(names)}
    x_write = model._log_scales(names, delta_start)
    from .model import _stack_parts
    for idx, frames, labels in _labelled_chunks(model, source, block, progress):
        parts = model._chunk_parts(frames, labels, counts=counts)
        keys = [hyper.group_key(p.kind, labels[p.frame].config_type, mode) for p in parts]
        for key in sorted(set(keys)):
            sel = [p for p, k in zip(parts, keys) if k == key]
            grouped.add(key, np.vstack([p.A for p in sel]), np.concatenate([p.b for p in sel]),
                        np.concatenate([p.sigma for p in sel]), np.concatenate([p.nominal for p in sel]))
        if spool is not None and parts:
            spool.add(*_stack_parts(parts, idx),
                      np.concatenate([np.full(len(p.b), number[k]) for p, k in zip(parts, keys)]), x_write)
    return grouped.finish(), counts


def hygiene_block(model, source, block: Block, not_fitted: Sequence[int], progress=None):
    """Each labelled frame's :class:`gapfit.hygiene.FrameHygiene` under the solved model (rows computed again)."""
    from .data import is_isolated_atom
    from .hygiene import frame_statistics, summarise
    from .model import _stack_parts
    st = model.state_
    out = []
    for idx, frames, labels in _labelled_chunks(model, source, block, progress):
        parts = model._chunk_parts(frames, labels)
        if not parts:
            continue
        A, b, frame, kind = _stack_parts(parts, idx)
        pos = {k: j for j, k in enumerate(idx)}
        for f, stats in frame_statistics(st.R_ab, st.alpha, A, b, frame, kind, not_fitted).items():
            a, lb = frames[pos[f]], labels[pos[f]]
            if is_isolated_atom(a, lb):
                continue  # it fixes e0; its leave-one-out energy measures nothing about the data
            sig_e = model._sigmas(a, lb)["energy"] * np.sqrt(len(a))
            out.append(summarise(f, where_of(a, f), lb.config_type, len(a), stats, sig_e))
    return out


def merge_samples(a, b):
    """Merge two :func:`sample_block` results (in place into ``a``)."""
    samples, energies = a
    for x, y in zip(samples, b[0]):
        x.merge(y)
    energies.update(b[1])
    return a


def merge_rows(a, b):
    """Merge two :func:`rows_block` results (in place into ``a``)."""
    grouped, counts = a
    grouped.merge(b[0])
    for key in counts:
        counts[key] += b[1][key]
    return a
