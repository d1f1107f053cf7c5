"""The fit as a pipeline of named steps: from the estimator's parameters and a frame source to a complete state.

:func:`fit_state` runs

1. the survey: every frame checked, a few numbers kept per frame
   (:func:`.survey.checked_survey`);
2. the baseline's parts other than e0, fixed from the survey;
3. pass 1: descriptors without gradients -> candidate sparse points per
   term (held-out calibration frames left out) and the energies e0 is
   fitted to; then e0, δ and the sparse points;
4. pass 2: design rows with gradients, streamed into one QR factor per
   noise group, so that δ and σ can change without the data;
5. optionally δ and σ by the marginal likelihood; the calibration of the
   predicted stds on the held-out frames, whose rows then join; the solve;
6. the training summary; the hygiene report.

The state is built aside and returned complete: the estimator publishes it
only when every step has succeeded, so a failed refit leaves the previous
model as it was.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from ase.data import chemical_symbols

from .. import hyper
from ..data import LabelReader
from ..errors import InputError
from ..hygiene import HygieneReport, RowSpool
from ..noise import NoiseModel
from ..state import FittedState
from ..stream import MemorySource
from . import hygiene_pass
from .baseline import baseline_parts, calculators_cached, finish_baseline, start_state
from .calibrate import fit_calibration
from .charges import LearnedCharges, PairSettings, charge_constraints, constrained_charges, learn_charges
from .optimise import hyper_summary, optimise
from .passes import merge_rows, merge_samples, rows_block, sample_block
from .plan import Block, FitPlan, block_of, calibration_split, fit_blocks, settings_of, sum_of
from .rows import new_counts, subtract_baseline
from .survey import Survey, checked_survey

log = logging.getLogger("gapfit")


def prepare_state(params: Mapping[str, Any], frames: List) -> Tuple[FittedState, List]:
    """A new state for ``frames`` in memory: species, baseline (e0 last), terms bound, δ set; no points or weights.

    Returns ``(state, residual labels)``: the labels minus the baseline's
    non-e0 parts (what the terms are fitted to). What the incremental
    learner starts from; :func:`fit_state` does the same in streamed passes.
    """
    info = checked_survey(params, MemorySource(frames))
    settings = settings_of(params)
    qeq = fit_qeq_first(settings, MemorySource(frames), info) if getattr(settings, "charges", None) == "qeq" \
        else None
    parts = baseline_parts(settings, info, charge_part=qeq)
    labels = LabelReader.of(settings).read_all(frames, check=True)
    residual = subtract_baseline(sum_of(parts), frames, labels)
    energies = {k: lb.energy_eV for k, lb in enumerate(residual) if lb.energy_eV is not None}
    state = start_state(settings, info, parts)
    finish_baseline(state, settings.e0, info, parts, energies)
    return state, residual


def fit_state(params: Mapping[str, Any], source, executor) -> Tuple[FittedState, Optional[HygieneReport]]:
    """Fit: the complete state and the hygiene report (None with ``hygiene=False``).

    ``params``: the estimator's parameters (already checked by themselves);
    ``source``: a :class:`gapfit.stream.FrameSource` or
    :class:`~gapfit.stream.MemorySource`; ``executor``: where the passes run
    (:mod:`gapfit.executors`).
    """
    t_start = time.perf_counter()
    info = checked_survey(params, source)
    settings = settings_of(params)
    learned = None
    if getattr(settings, "charges", None) == "learn":
        learned = learn_charges_first(settings, source, executor, info)
        # then the fit itself, over the learned charges held fixed
        settings.charges = {chemical_symbols[z]: q for z, q in learned.charges_e.items()}
    qeq = fit_qeq_first(settings, source, info) if getattr(settings, "charges", None) == "qeq" else None
    parts = baseline_parts(settings, info, charge_part=qeq)
    with calculators_cached(parts):
        state, hygiene = FitRun(settings, source, executor, info, parts).execute()
    if learned is not None:
        state.training["charges"] = learned.summary()
    if qeq is not None:
        state.training["charges"] = {"mode": "qeq", **qeq.fit}
    state.training["fit_seconds"] = round(time.perf_counter() - t_start, 3)
    return state, hygiene


def learn_charges_first(settings: SimpleNamespace, source, executor, info: Survey) -> LearnedCharges:
    """The charges of ``charges="learn"``: sparse points and K_MM without a Coulomb part, then one pass (see
    :mod:`.charges`)."""
    N, Q = charge_constraints(info)  # refused here, before any pass, when the compositions fix the charges
    constrained_charges(N, Q, info.species)
    parts = baseline_parts(settings, info)  # no Coulomb part: its charges are what is learned
    with calculators_cached(parts):
        run = FitRun(settings, source, executor, info, parts)
        run.start()
        run.choose_sparse_points()
        run.state.factor_kmm(settings.jitter)
        return learn_charges(run, pair_settings_of(settings, info.species))


def fit_qeq_first(settings: SimpleNamespace, source, info: Survey):
    """The charge equilibration of ``charges="qeq"``, fitted to the frames' reference charges (:mod:`.qeq`).

    Reads every frame once more (in memory: each frame's Coulomb matrix is kept, N² numbers).
    """
    from .qeq import QEqSettings, fit_qeq
    frames = source.take(range(len(info)))
    return fit_qeq(frames, list(info.where), info.species, QEqSettings.of(settings.coulomb, info.species),
                   seed=settings.seed, jitter=settings.jitter)


def pair_settings_of(settings: SimpleNamespace, species: List[int]) -> PairSettings:
    """The Coulomb settings (``coulomb`` parameter: width, accuracy, screening) for the pair parts.

    Read by the baseline's own parser (:meth:`gapfit.baselines.CoulombBaseline.from_settings`), so the
    charges are learned with exactly the widths, accuracy and screening the fitted baseline then uses.
    """
    from ..baselines import CoulombBaseline
    base = CoulombBaseline.from_settings({z: 0.0 for z in species}, settings.coulomb)
    widths = base.widths if isinstance(base.widths, dict) else \
        ({} if base.widths is None else {z: base.widths for z in species})
    return PairSettings(tuple(species), widths, base.accuracy, base.screening)


@dataclass
class FitRun:
    """One fit after the survey: steps 3-6 of the module docstring, each a method.

    ``info``: the survey; ``parts``: the baseline's parts other than e0.
    """

    settings: SimpleNamespace
    source: Any
    executor: Any
    info: Survey
    parts: list
    state: Optional[FittedState] = None
    cal_idx: List[int] = field(default_factory=list)
    blocks: List[Block] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=new_counts)
    reader: LabelReader = field(init=False)
    noise: NoiseModel = field(init=False)
    distributed: bool = field(init=False)
    likelihood: Dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.reader = LabelReader.of(self.settings)
        self.noise = NoiseModel.of(self.settings)
        self.distributed = getattr(self.executor, "client", None) is not None

    def plan(self, *, solved: bool = False) -> FitPlan:
        """What the passes need now (made afresh at each step: δ, e0 and the noise scales change)."""
        return FitPlan.of_state(self.state, self.reader, self.noise, self.settings.seed, solved=solved,
                                residual_parts=self.parts)

    def start(self) -> None:
        """A new state (terms bound), the held-out calibration frames and the blocks of work."""
        self.state = start_state(self.settings, self.info, self.parts)
        self.cal_idx = calibration_split(self.info, self.settings.calibration_fraction, self.settings.seed)
        # the blocks depend on the data and settings only, not on the workers: same model either way
        self.blocks = fit_blocks(self.info, self.settings.atoms_per_block, self.state.atoms_per_chunk, self.cal_idx)

    def execute(self) -> Tuple[FittedState, Optional[HygieneReport]]:
        """Steps 3-6: the new state, complete, and the hygiene report (None with ``hygiene=False``)."""
        self.start()
        self.choose_sparse_points()
        spool = hygiene_pass.open_spool(self.info, self.state.n_columns, self.settings.hygiene_spool_gb) \
            if self.settings.hygiene and not self.distributed else None
        try:
            names = self.info.noise_groups(self.noise)
            delta_start = [t.delta_eV for t in self.state.terms]
            problem, optimisation = self.solve(names, delta_start, spool)
            self.record_training(problem, optimisation)
            hygiene = self.hygiene(spool, names, delta_start) if self.settings.hygiene else None
        finally:
            if spool is not None:
                spool.close()
        return self.state, hygiene

    def choose_sparse_points(self) -> None:
        """Pass 1: candidate samples and residual energies; then e0, δ and each term's sparse points."""
        t0 = time.perf_counter()
        st, info = self.state, self.info
        # every frame's energy counts for e0 and δ; only the sample leaves the held-out frames out
        samples, energies = self.executor.run(
            sample_block, self.plan(), self.source, [block_of(info, b.lo, b.hi) for b in self.blocks],
            self.settings.sparse_candidates, sample_skip=self.cal_idx, what="sparse candidates",
            progress=self.settings.progress, reduce=merge_samples)
        finish_baseline(st, self.settings.e0, info, self.parts, energies)
        for k, (term, sample) in enumerate(zip(st.terms, samples)):
            chosen = term.select_from_sample(sample, seed=self.settings.seed + 1000 * k)
            log.info("term %d (%s): δ %.4g eV, sparse points %s", k + 1, term.type, term.delta_eV, chosen)
            missing = term.species_without_points(st.species)
            if missing:
                raise InputError(f"species {missing} occur only in calibration frames; set "
                                 "calibration_fraction=0 or add frames containing them")
        log.info("sparse points chosen in %.1f s", time.perf_counter() - t0)

    def solve(self, names: List[str], delta_start: List[float], spool: Optional[RowSpool]):
        """Pass 2 and the solve: grouped factors, optional δ/σ optimisation, calibration, final weights."""
        t0 = time.perf_counter()
        st = self.state
        st.factor_kmm(self.settings.jitter)
        grouped, block_counts = self.executor.run(
            rows_block, self.plan(), self.source, self.blocks, names, delta_start, what="design rows",
            progress=self.settings.progress, reduce=merge_rows, spool=spool)
        self._add_counts(block_counts)
        problem = hyper.LikelihoodProblem.from_groups(grouped, st.kmm_chol, st.block_terms,
                                                      [t.delta_eV for t in st.terms])
        optimisation = None
        if self.settings.optimize:
            problem, optimisation = optimise(st, problem, optimize_delta=self.settings.optimize_delta,
                                             sigma_floor=self.settings.sigma_floor)
        if self.cal_idx:
            problem = self.calibrate_and_join(problem, names, delta_start, spool)
        R_ab, _, sum_log_sigma, n_rows = problem.assemble(np.zeros(problem.n_params))
        st.set_factor(R_ab)
        st.likelihood = problem
        lml = hyper.log_marginal_likelihood(R_ab, st.kmm_chol, n_rows, sum_log_sigma)
        self.likelihood = {"log_marginal_likelihood": lml, "n_rows": n_rows, "sum_log_sigma": sum_log_sigma}
        log.info("solved %d observations for %d weights in %.1f s; log marginal likelihood %.6g",
                 n_rows, st.n_columns, time.perf_counter() - t0, lml)
        return problem, optimisation

    def calibrate_and_join(self, problem, names: List[str], delta_start: List[float], spool: Optional[RowSpool]):
        """Calibrate the stds on the held-out frames with interim weights, then add their rows."""
        st = self.state
        st.set_factor(problem.assemble(np.zeros(problem.n_params))[0])
        cal_frames = self.source.take(self.cal_idx)
        true_labels = self.reader.read_all(cal_frames, [self.info.where[k] for k in self.cal_idx])
        st.calibration = fit_calibration(st, cal_frames, true_labels, progress=self.settings.progress)
        # the held-out frames' rows join here, in this process: they are few (at most 200)
        cal_block = Block(0, len(cal_frames), [len(a) for a in cal_frames], numbers=list(self.cal_idx))
        cal_rows, cal_counts = rows_block(self.plan(), MemorySource(cal_frames), cal_block, names, delta_start,
                                          spool=spool)
        self._add_counts(cal_counts)
        return problem.merged(cal_rows)

    def _add_counts(self, counts: Mapping[str, int]) -> None:
        for key in self.counts:
            self.counts[key] += counts[key]

    def record_training(self, problem, optimisation) -> None:
        """The training summary the model file keeps."""
        info, st = self.info, self.state
        st.training = {
            "n_frames": len(info), "n_train_frames": len(info),
            "n_atoms": int(sum(info.n_atoms)),
            "n_observations": self.counts, "config_types": dict(Counter(info.config_type)),
            # what inspect checks its frames against (the frames given, in order)
            "input_frames": {"n_frames": len(info), "n_atoms": int(sum(info.n_atoms)),
                             "sha256": info.fingerprint.hexdigest()},
            "species": st.species, "fit_seconds": None,
            "likelihood": self.likelihood,
            "hyperparameters": hyper_summary(st, optimized=bool(self.settings.optimize), sigma_mode=self.noise.mode,
                                             problem=problem, optimisation=optimisation),
        }
        if self.distributed:
            st.training["workers"] = self.executor.n_workers

    def hygiene(self, spool: Optional[RowSpool], names: List[str], delta_start: List[float]) -> HygieneReport:
        """Each training frame's leverage and leave-one-out z-scores, from the spool or a pass of its own."""
        t1 = time.perf_counter()
        if spool is not None:
            report = hygiene_pass.from_spool(spool, self.state, self.info, self.noise, names, delta_start)
        else:
            report = hygiene_pass.by_pass(self.executor, self.plan(solved=True), self.source,
                                          [block_of(self.info, b.lo, b.hi) for b in self.blocks], (),
                                          self.settings.progress)
        log.info("hygiene (leverage, leave-one-out z) of %d frames in %.1f s; worst:\n%s",
                 len(report), time.perf_counter() - t1, report.table(5))
        return report
