"""The fit's hygiene step: each training frame's leverage and leave-one-out z-scores under the solved model.

From the weighted rows kept in a temporary file while the fit wrote them
(rescaled to the final δ and σ), or from a pass that computes them again
when they did not fit the budget or the fit ran on Dask workers.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from ..data import FramesFingerprint, files_of, where_of
from ..errors import InputError
from ..hygiene import HygieneReport, RowSpool, frame_statistics, summarise
from .passes import hygiene_block
from .rows import log_scales

log = logging.getLogger("gapfit")


def open_spool(info, n_columns: int, budget_gb: float) -> Optional[RowSpool]:
    """A temporary file for the weighted design rows, when they fit ``budget_gb`` (None: compute them again)."""
    n_rows = sum(info.n_rows(k) for k in range(len(info)))
    nbytes = 8.0 * n_rows * (n_columns + 1)
    if nbytes > budget_gb * 1e9:
        log.info("hygiene: design rows (%.1f GB) exceed hygiene_spool_gb; they will be computed again",
                 nbytes / 1e9)
        return None
    return RowSpool(n_columns)


def from_spool(spool: RowSpool, state, info, noise, names, delta_start) -> HygieneReport:
    """The report from the spooled rows, each rescaled from the δ and σ it was written with to the final ones."""
    problem = state.likelihood
    T = len(state.terms)
    x_final = log_scales(state.terms, state.noise_scale, names, delta_start)
    out = []
    for A, b, frame, kind, group, x_write in spool:
        rel = x_final - x_write
        col = np.exp(2 * rel[:T])[problem.column_term]
        row = np.exp(-rel[T:])[group]
        A, b = A * col[None, :] * row[:, None], b * row
        for f, stats in frame_statistics(state.R_ab, state.alpha, A, b, frame, kind).items():
            if info.isolated[f]:
                continue  # it fixes e0; its leave-one-out energy measures nothing about the data
            ct = info.config_type[f]
            sig_e = info.sigma[f][0] * state.noise_scale.get(noise.group("energy", ct), 1.0) \
                * np.sqrt(info.n_atoms[f])
            out.append(summarise(f, info.where[f], ct, info.n_atoms[f], stats, sig_e))
    return HygieneReport(out)


def by_pass(executor, plan, source, blocks, not_fitted: Sequence[int], progress: bool) -> HygieneReport:
    """The report from a pass that computes the rows again (``plan`` solved: it carries R and α)."""
    results = executor.run(hygiene_block, plan, source, blocks, list(not_fitted), what="hygiene",
                           progress=progress)
    return HygieneReport([h for r in results for h in r])


def check_training_frames(training: dict, frames, labels) -> None:
    """Refuse frames that are not the ones the model was fitted to (leverages of other frames mean nothing).

    ``training``: the model's training summary (its ``input_frames`` fingerprint).
    """
    given = training.get("input_frames")
    n, n_atoms = len(frames), int(sum(len(a) for a in frames))
    files = files_of([where_of(a, k) for k, a in enumerate(frames)])
    advice = ("hygiene needs the model's own training frames, all of them in the order of the fit "
              "(gapfit eval scores other frames)")
    if given is None:  # written before the fingerprint was recorded, or grown frame by frame
        fitted = training.get("n_frames")
        if fitted is not None and fitted != n:
            raise InputError(f"{files}: {n} frames, but the model was fitted to {fitted}; {advice}")
        log.warning("the model records no fingerprint of its training frames: cannot check that these "
                    "%d frames are the ones it was fitted to", n)
        return
    fp = FramesFingerprint()
    for a, lb in zip(frames, labels):
        fp.add(a, lb)
    if fp.hexdigest() == given["sha256"]:
        return
    if (n, n_atoms) != (given["n_frames"], given["n_atoms"]):
        why = (f"{n} frames of {n_atoms} atoms, but the model was fitted to {given['n_frames']} frames of "
               f"{given['n_atoms']} atoms")
    else:
        why = "as many frames and atoms as the fit had, but other positions, labels or order"
    raise InputError(f"{files}: not the frames the model was fitted to ({why}); {advice}")


def report_of_frames(plan, training: dict, frames, not_fitted: Optional[Sequence[int]],
                     progress: bool) -> HygieneReport:
    """The report of a fitted model on its own training ``frames`` (checked first, then computed again).

    ``plan``: the solved model's plan; ``training``: its training summary
    (the fingerprint the frames must match, the frames a fit dropped).
    """
    from ..executors import SerialExecutor
    from ..stream import MemorySource
    from .plan import Block
    if not_fitted is None:
        not_fitted = training.get("dropped_frames", [])
    # the pass trusts its frames: check these (structure, labels, sigmas) first
    labels = plan.reader.read_all(frames, check=True)
    for a, lb in zip(frames, labels):
        plan.noise.sigmas(a, lb)
    check_training_frames(training, frames, labels)
    block = Block(0, len(frames), [len(a) for a in frames])
    return by_pass(SerialExecutor(), plan, MemorySource(frames), [block], not_fitted, progress)
