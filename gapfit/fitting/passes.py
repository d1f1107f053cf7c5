"""The fit's passes over the data, one block of frames at a time.

Each function takes a :class:`gapfit.fitting.plan.FitPlan` (the fit's
settings and its state as far as it has got), a frame source and one block
of frames (a contiguous range of global frame indices), reads the block
chunk by chunk and returns a small, mergeable result. They run in the
fitting process or on Dask workers (:mod:`gapfit.executors`) alike: a
worker gets a pickled copy of the plan (whose terms rebuild their
descriptor calculators from their settings) and the source's part for its
block (paths, or the block's frames).

- :func:`sample_block`: descriptors without gradients -> each term's
  :class:`gapfit.terms.base.CandidateSample`, plus every frame's
  energy after the baseline's non-e0 parts (what e0 is fitted to).
- :func:`rows_block`: design rows with gradients -> one QR factor per
  noise group (:class:`gapfit.hyper.GroupedFactors`) and row counts.
- :func:`hygiene_block`: leverage and leave-one-out residuals per frame.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms

from .. import hyper
from ..data import group_by_atoms, is_isolated_atom, where_of
from ..hygiene import frame_statistics, summarise
from .plan import Block, FitPlan
from .rows import chunk_parts, log_scales, new_counts, stack_parts, subtract_baseline


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


def _labelled_chunks(plan: FitPlan, source, block: Block, progress=None):
    """(global indices, frames, labels minus the non-e0 baseline) of the block's chunks (frames already surveyed)."""
    for idx, frames in _chunks(source, block, plan.atoms_per_chunk, progress):
        wheres = [where_of(a, k) for k, a in zip(idx, frames)]
        yield idx, frames, subtract_baseline(plan.residual_baseline, frames, plan.reader.read_all(frames, wheres))


def sample_block(plan: FitPlan, source, block: Block, limit: Optional[int], sample_skip: Sequence[int] = (),
                 progress=None):
    """Candidate samples of each term (frames in ``sample_skip`` left out) and every frame's residual energy.

    Returns ``(samples, energies)``: one candidate sample per term;
    ``{frame: energy eV after the baseline's non-e0 parts}`` for every
    frame of the block with an energy.
    """
    samples = [t.candidate_sample(limit, plan.seed + 1000 * k) for k, t in enumerate(plan.terms)]
    base = plan.residual_baseline
    no_sample = set(sample_skip)
    energies: Dict[int, float] = {}
    for idx, frames in _chunks(source, block, plan.atoms_per_chunk, progress):
        for k, a in zip(idx, frames):
            e = block.energy_eV[k - block.lo]
            if np.isfinite(e):
                energies[k] = e - (base.evaluate(a, forces=False, virial=False).energy_eV if base else 0.0)
        pick = [j for j, k in enumerate(idx) if k not in no_sample]
        if not pick:
            continue
        sub = [frames[j] for j in pick]
        for t, sample in zip(plan.terms, samples):
            for j, d in zip(pick, t.compute(sub, gradients=False)):
                sample.add(t, d, idx[j])
    return samples, energies


def rows_block(plan: FitPlan, source, block: Block, names: Sequence[str], delta_start: Sequence[float],
               spool=None, progress=None):
    """The weighted design rows of the block's frames, factorised per noise group.

    Returns ``(GroupedFactors, counts)`` with counts of energy, force and
    virial observations. ``spool``: a :class:`gapfit.hygiene.RowSpool` that
    also receives the rows (in the fitting process only).
    """
    counts = new_counts()
    grouped = hyper.GroupedQR(plan.n_columns, n_groups_expected=len(names))
    number = {g: k for k, g in enumerate(names)}
    x_write = log_scales(plan.terms, plan.noise_scale, names, delta_start)
    for idx, frames, labels in _labelled_chunks(plan, source, block, progress):
        parts = chunk_parts(plan, frames, labels, counts=counts)
        keys = [plan.noise.group(p.kind, labels[p.frame].config_type) for p in parts]
        for key in sorted(set(keys)):
            sel = [p for p, k in zip(parts, keys) if k == key]
            grouped.add(key, np.vstack([p.A for p in sel]), np.concatenate([p.b for p in sel]),
                        np.concatenate([p.sigma for p in sel]), np.concatenate([p.nominal for p in sel]))
        if spool is not None and parts:
            spool.add(*stack_parts(parts, idx),
                      np.concatenate([np.full(len(p.b), number[k]) for p, k in zip(parts, keys)]), x_write)
    return grouped.finish(), counts


def hygiene_block(plan: FitPlan, source, block: Block, not_fitted: Sequence[int], progress=None):
    """Each labelled frame's :class:`gapfit.hygiene.FrameHygiene` under the solved model (rows computed again)."""
    out = []
    for idx, frames, labels in _labelled_chunks(plan, source, block, progress):
        parts = chunk_parts(plan, frames, labels)
        if not parts:
            continue
        A, b, frame, kind = stack_parts(parts, idx)
        pos = {k: j for j, k in enumerate(idx)}
        for f, stats in frame_statistics(plan.R_ab, plan.alpha, A, b, frame, kind, not_fitted).items():
            a, lb = frames[pos[f]], labels[pos[f]]
            if is_isolated_atom(a, lb):
                continue  # it fixes e0; its leave-one-out energy measures nothing about the data
            sig_e = plan.noise.sigmas(a, lb, plan.noise_scale)["energy"] * np.sqrt(len(a))
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
