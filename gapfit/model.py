"""The GAP estimator: a fixed baseline plus a sum of terms, solved in one sparse GP.

Flow: frames -> labels (:mod:`.data`) -> baseline subtracted
(:mod:`.baselines`) -> each term's descriptors and sparse points
(:mod:`.terms`) -> design rows streamed into one QR factor (:mod:`.sgp`) ->
weights, held with everything else fitted in one :class:`FittedState`.
Prediction asks each term for its part (the same term code as the design
rows) and adds the baseline back.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from ase import Atoms

from . import hyper, sgp
from .data import SIGMA_INFO_KEYS, Labels, check_structure, files_of, get_labels, where_of
from .errors import InputError, NotFittedError
from .hygiene import KIND_CODES
from .params import check_params, check_species_settings
from .prediction import Prediction, UncertaintyRequest
from .terms import Soap, Term, build_terms
from .terms.base import VOIGT

log = logging.getLogger("gapfit")

_ATOMS_PER_CHUNK = 1500  # upper bound; wide descriptors use less, see _atoms_per_chunk
#: Settings of the default SOAP term that may also be given at the top level (as in gapfit 0.x).
SOAP_PARAMS = ("cutoff", "cutoff_transition_width", "n_max", "l_max", "atom_sigma", "backend", "dscribe_mode",
               "zeta", "delta", "n_sparse", "sparse_method")


#: The two-body term of the default recipe (its cutoff does not follow the SOAP ``cutoff``).
DEFAULT_TWO_BODY = {"type": "distance_2b", "cutoff": 5.0, "cutoff_transition_width": 1.0, "theta": 0.5,
                    "n_sparse": 30}


#: The three-body term the default recipe adds for molecules.
DEFAULT_THREE_BODY = {"type": "angle_3b", "cutoff": 4.0, "cutoff_transition_width": 1.0, "theta": 1.0,
                      "n_sparse": 200}


def default_terms(soap_settings: Mapping[str, Any], molecular: bool = False) -> List[dict]:
    """The default recipe: the terms a plain ``gapfit fit`` uses.

    Two-body + SOAP for periodic data; two-body + three-body + SOAP for
    molecules (no training frame periodic). Chosen by measurement
    (bench/recipes.py, table in docs/index.md): the two-body term costs
    little, learns the pair repulsion the data show (a Si dimer's energy
    rises all the way in, where SOAP alone turned down) and lowers the force
    errors everywhere; the three-body term lowered the errors of aspirin and
    ethanol by 15-17 % but not Si's, at twice the fit time.
    """
    terms = [dict(DEFAULT_TWO_BODY)]
    if molecular:
        terms.append(dict(DEFAULT_THREE_BODY))
    return terms + [{"type": "soap", **soap_settings}]


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


class GAP:
    """Gaussian Approximation Potential: a fixed baseline plus a sum of terms in one sparse GP.

    Parameters (all keyword-only; stored as given, checked in :meth:`fit`)
    ----------
    terms : list of dict or Term, or str, optional
        The terms, each ``{"type": "soap" | "distance_2b" | "angle_3b", **settings}``
        (see :mod:`gapfit.terms` and docs/gap_fit.md), or a gap_fit descriptor
        string (``"distance_2b cutoff=5.0 delta=2.0 : soap ..."``). None: the
        default recipe, whose SOAP term takes the top-level SOAP settings below.
    cutoff, cutoff_transition_width, n_max, l_max, atom_sigma, backend, dscribe_mode
        Settings of the default recipe's SOAP term (Å), see
        :class:`gapfit.descriptors.SoapSettings`. Only with ``terms=None``.
    zeta, delta, n_sparse, sparse_method
        Kernel exponent, kernel scale δ (eV; None: from the data), sparse
        points per species and their selection ("cur", "fps", "random") of
        the default SOAP term. Only with ``terms=None``.
    sigma_energy : float, default=0.003
        Energy noise in eV per atom; a frame of N atoms gets σ_E·√N.
    sigma_forces : float, default=0.05
        Force-component noise in eV/Å.
    sigma_virial : float, default=0.05
        Virial noise in eV per atom (σ_V·√N per component).
    config_type_sigma : dict, optional
        ``{config_type: {"energy": .., "forces": .., "virial": ..}}`` overrides.
        Per-frame ``info`` keys ``energy_sigma``, ``force_sigma`` and
        ``virial_sigma`` override both (gap_fit's names).
    e0 : dict {Z or symbol: eV} or None
        Energy of an isolated atom per species. None: from isolated-atom
        frames when present, else least squares on the training energies.
    core_repulsion : bool, default=True
        Add ZBL screened nuclear repulsion to the baseline, switched off
        between radii chosen per species pair from the training data's
        shortest distances (so it acts only below what the data cover).
    core_radii : {"data", "covalent"}, default="data"
        Where the ZBL radii come from: the training data's shortest distance
        per species pair, or 0.75 × the sum of covalent radii (what the
        on-the-fly learner uses, since its first frame is no guide).
    core_file : str, optional
        A tabulated pair potential added to the baseline (gap_fit's
        ``core_param_file`` role; format in :mod:`gapfit.baselines`).
    baseline : ASE calculator, optional
        Δ-learning: the model fits the difference between the labels and this
        calculator, and adds it back at prediction.
    jitter : float, default=1e-8
        Added to the diagonal of each K_MM block, relative to its mean diagonal.
    seed : int, default=0
        Seed of the sparse-point selection and calibration split: same data
        and seed, same model.
    calibration_fraction : float, default=0.1
        Fraction of the frames (at most 200, at least 10 frames needed) held
        out while the model is first solved, to fit the scales that calibrate
        the predicted standard deviations; their rows are then added to the
        factorisation, so the final weights use all the data. 0 disables.
    energy_key, forces_key, stress_key : str or None
        Names of the labels in ``info``/``arrays`` when not the calculator's.
    optimize : bool or {"global", "config_type"}, default=False
        Choose each term's δ and the noise levels by maximising the log
        marginal likelihood (:mod:`gapfit.hyper`) before the final solve:
        ``True``/``"global"`` scales σ_E, σ_F and σ_V (each by one factor,
        keeping any per-config_type and per-frame ratios), ``"config_type"``
        scales them per config_type. Costs no descriptor work.
    optimize_delta : bool, default=True
        Whether the optimisation also moves each term's δ.
    sigma_floor : dict or None, default=None
        With ``optimize``: the smallest σ the optimisation may choose, per
        kind (``{"energy": eV/atom, "forces": eV/Å, "virial": eV/atom}``;
        0 removes a kind's floor). None, and kinds not given:
        :data:`gapfit.hyper.SIGMA_FLOOR`. A σ that ends on its floor is
        logged as a warning (docs/hyperparameters.md).
    hygiene : bool, default=True
        Compute each training frame's leverage and leave-one-out residuals
        after the fit (``hygiene_``; see :mod:`gapfit.hygiene`). The design
        rows are kept in a temporary file for this when they fit in
        ``hygiene_spool_gb``, else computed again.
    hygiene_spool_gb : float, default=4.0
        Largest temporary file of design rows (GB) for the hygiene pass.
    atoms_per_block : int or None, default=None
        Atoms per block of frames: the unit of work of a fit, one task per
        block on a Dask cluster. The blocks (and so the model's floating-point
        operations) depend on this and the data, not on the number of workers.
        Each block adds one merge of (M+1)² factors. None: four chunks of
        descriptor work (about 6000 atoms for SOAP at the default settings).
    sparse_candidates : int or None, default=20000
        Candidate environments kept per term and species (or species
        tuple) for choosing the sparse points: a seeded uniform sample of
        the training environments, so that the memory of the selection does
        not grow with the data (8 × features bytes each: 50 MB for Si SOAP).
        None: all environments.
    progress : bool, default=False
        Show progress bars.

    Attributes (after :meth:`fit` or :func:`gapfit.load`)
    ----------
    state_ : FittedState
        Everything fitted; ``species_``, ``e0_``, ``terms_``, ``alpha_``,
        ``calibration_`` and ``training_summary_`` read from it.
    hygiene_ : gapfit.hygiene.HygieneReport
        After a fit with ``hygiene=True``: each training frame's leverage and
        leave-one-out z-scores, worst first.
    """

    def __init__(self, *, terms: Union[str, Sequence, None] = None,
                 cutoff: float = 5.0, cutoff_transition_width: float = 1.0,
                 n_max: int = 8, l_max: int = 8, atom_sigma: float = 0.5,
                 backend: str = "featomic", dscribe_mode: str = "smooth",
                 zeta: float = 4.0, delta: Optional[float] = None,
                 n_sparse: Union[int, Mapping, None] = None, sparse_method: str = "cur",
                 sigma_energy: float = 0.003, sigma_forces: float = 0.05,
                 sigma_virial: float = 0.05, config_type_sigma: Optional[Mapping] = None,
                 e0: Optional[Mapping] = None, core_repulsion: bool = True, core_radii: str = "data",
                 core_file: Optional[str] = None,
                 baseline: Any = None, jitter: float = 1e-8, seed: int = 0,
                 calibration_fraction: float = 0.1,
                 energy_key: Optional[str] = None, forces_key: Optional[str] = None,
                 stress_key: Optional[str] = None, optimize: Union[bool, str] = False,
                 optimize_delta: bool = True, sigma_floor: Optional[Mapping] = None,
                 hygiene: bool = True, hygiene_spool_gb: float = 4.0,
                 atoms_per_block: Optional[int] = None, sparse_candidates: Optional[int] = 20000,
                 progress: bool = False):
        self.terms = terms
        self.cutoff = cutoff
        self.cutoff_transition_width = cutoff_transition_width
        self.n_max = n_max
        self.l_max = l_max
        self.atom_sigma = atom_sigma
        self.backend = backend
        self.dscribe_mode = dscribe_mode
        self.zeta = zeta
        self.delta = delta
        self.n_sparse = n_sparse
        self.sparse_method = sparse_method
        self.sigma_energy = sigma_energy
        self.sigma_forces = sigma_forces
        self.sigma_virial = sigma_virial
        self.config_type_sigma = config_type_sigma
        self.e0 = e0
        self.core_repulsion = core_repulsion
        self.core_radii = core_radii
        self.core_file = core_file
        self.baseline = baseline
        self.jitter = jitter
        self.seed = seed
        self.calibration_fraction = calibration_fraction
        self.energy_key = energy_key
        self.forces_key = forces_key
        self.stress_key = stress_key
        self.optimize = optimize
        self.optimize_delta = optimize_delta
        self.sigma_floor = sigma_floor
        self.hygiene = hygiene
        self.hygiene_spool_gb = hygiene_spool_gb
        self.atoms_per_block = atoms_per_block
        self.sparse_candidates = sparse_candidates
        self.progress = progress

    # ------------------------------------------------------------------ params
    _PARAMS = ("terms",) + SOAP_PARAMS + (
        "sigma_energy", "sigma_forces", "sigma_virial", "config_type_sigma", "e0", "core_repulsion", "core_radii", "core_file",
        "baseline", "jitter", "seed", "calibration_fraction", "energy_key", "forces_key", "stress_key",
        "optimize", "optimize_delta", "hygiene", "hygiene_spool_gb", "atoms_per_block", "sparse_candidates",
        "progress", "sigma_floor")

    def get_params(self) -> dict:
        """Constructor parameters, as in scikit-learn."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> "GAP":
        """Set constructor parameters; unknown names raise ``ValueError``."""
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ValueError(f"unknown parameter {k!r}; known: {', '.join(self._PARAMS)}")
            setattr(self, k, v)
        return self

    def _validate(self) -> None:
        check_params({k: v for k, v in self.get_params().items()})
        if self.terms is not None:
            defaults = GAP().get_params()
            given = [k for k in SOAP_PARAMS if getattr(self, k) != defaults[k]]
            if given:
                raise InputError(f"{given[0]} is a setting of the default SOAP term; with terms given, put it in "
                                 "the soap term's settings instead", param=given[0])

    def make_terms(self, frames: Optional[Sequence[Atoms]] = None, *, molecular: Optional[bool] = None) -> List[Term]:
        """Fresh (unfitted) Term objects for this model's settings.

        With ``terms=None`` the default recipe, which depends on whether the
        training ``frames`` are molecules (none periodic); ``molecular``
        says so when the frames are not at hand.
        """
        if self.terms is None:
            if molecular is None:
                molecular = bool(frames) and not any(bool(np.any(a.pbc)) for a in frames)
            return build_terms(default_terms({k: getattr(self, k) for k in SOAP_PARAMS}, molecular))
        return build_terms(self.terms)

    # ----------------------------------------------------- fitted state views
    def _check_fitted(self):
        if getattr(self, "state_", None) is None or self.state_.alpha is None:
            raise NotFittedError("this GAP model is not fitted yet: call fit(frames) or gapfit.load(path) first")

    @property
    def species_(self) -> List[int]:
        return self.state_.species

    @property
    def e0_(self) -> Dict[int, float]:
        return self.state_.e0

    @property
    def terms_(self) -> List[Term]:
        return self.state_.terms

    @property
    def alpha_(self) -> np.ndarray:
        return self.state_.alpha

    @property
    def calibration_(self) -> Optional[dict]:
        return self.state_.calibration

    @property
    def training_summary_(self) -> dict:
        return self.state_.training

    @property
    def n_sparse_total_(self) -> int:
        """Sparse points over all terms."""
        return self.state_.n_columns

    # --------------------------------------------------------------- prepare
    def prepare(self, frames: Sequence[Atoms]) -> List[Labels]:
        """Check the data and settings and start a new fitted state (no sparse points, no weights yet).

        Fixes the species, the baseline (e0 fitted after the other baseline
        parts), and the terms (descriptors bound, δ set). Returns the labels
        with the baseline's non-e0 parts subtracted (what the terms are fitted
        to; e0 is subtracted with the design rows). Used by the incremental
        learner; :meth:`fit` does the same in streamed passes.
        """
        from .stream import MemorySource
        frames = list(frames)
        info = self._survey(MemorySource(frames))
        parts = self._baseline_parts(info)
        residual = self.residual_labels(frames, self._labels(frames), parts)
        energies = {k: lb.energy_eV for k, lb in enumerate(residual) if lb.energy_eV is not None}
        self._start_state(info, parts)
        self._finish_baseline(info, parts, energies)
        return residual

    def _survey(self, source):
        """Check every frame and the settings; the per-frame facts the fit plans with (:mod:`gapfit.survey`)."""
        from .survey import survey
        self._validate()
        if len(source) == 0:
            raise InputError("no training frames given")
        terms = self.make_terms()  # term settings fail now, not after reading everything
        info = survey(self, source, contacts=bool(self.core_repulsion) and self.core_radii == "data",
                      progress=self.progress)
        if all(not info.has_energy(k) for k in range(len(info))):
            files = files_of(info.where)
            if self.energy_key:
                raise InputError(f"{files}: none of the {len(info)} frames has field '{self.energy_key}' "
                                 "(energy_key, --energy-key); a fit needs total energies: name the key they are "
                                 "stored under, or leave it unset to use the calculator's 'energy'")
            raise InputError(f"{files}: none of the {len(info)} frames has field 'energy'; a fit needs total "
                             "energies (use --energy-key NAME if they are stored under another name)")
        check_species_settings(self.get_params(), info.species, [t.to_dict() for t in terms])
        unused = sorted(set(self.config_type_sigma or {}) - set(info.config_type))
        if unused:
            log.warning("config_type_sigma names config types that no frame has: %s", unused)
        if all(info.isolated):
            raise InputError("only isolated-atom frames given; add frames of condensed configurations")
        log.info("labels: %d energies, %d force sets, %d stresses (%d of %d frames periodic)",
                 sum(info.has_energy(k) for k in range(len(info))), sum(info.has_forces),
                 sum(h and p for h, p in zip(info.has_stress, info.periodic)), sum(info.periodic), len(info))
        for line in info.missing_labels():
            log.warning("%s", line)
        return info

    def _baseline_parts(self, info) -> list:
        """The baseline's parts other than e0, fixed from the survey."""
        from .baselines import CalculatorBaseline, TabulatedPairBaseline, ZBLBaseline
        parts = []
        if self.core_repulsion:
            # "covalent": radii from covalent radii, for fits that start from too few frames
            # (on-the-fly learning from one crystal) to know how close atoms come
            contacts = info.contacts if self.core_radii == "data" else {}
            seen = info.species if self.core_radii == "data" else []
            parts.append(ZBLBaseline.from_contacts(contacts, seen, info.species))
        if self.core_file:
            parts.append(TabulatedPairBaseline.from_file(self.core_file))
        if self.baseline is not None:
            b = self.baseline
            parts.append(b if isinstance(b, CalculatorBaseline) else CalculatorBaseline(b))
        for part in parts:
            log.info("baseline: %s", part.describe())
        return parts

    def _start_state(self, info, parts) -> None:
        """A fitted state with the species, the non-e0 baseline and the terms bound (no e0, δ, points yet)."""
        species = info.species
        from .baselines import SumBaseline
        terms = self.make_terms(molecular=not any(info.any_pbc))
        for term in terms:
            term.bind(species)
        # until e0 is known the baseline is its other parts (what pass 1 subtracts from the energies)
        self.state_ = FittedState(species=species, e0={}, baseline=SumBaseline(list(parts)) if parts else None,
                                  terms=terms)

    def _finish_baseline(self, info, parts, energies: Mapping[int, float]) -> None:
        """e0 from the residual energies, the whole baseline, and each term's δ."""
        from .baselines import E0Baseline, SumBaseline
        st = self.state_
        e0 = self._fit_e0(info, energies, st.species)
        st.e0 = e0
        st.baseline = SumBaseline([E0Baseline(e0)] + list(parts))
        rms = self._energy_rms(info, energies, e0)
        for term in st.terms:
            term.set_delta(float(term.delta) if term.delta is not None else term.default_delta(rms))

    def residual_labels(self, frames: Sequence[Atoms], labels: Sequence[Labels], parts=None) -> List[Labels]:
        """Labels minus the baseline's non-e0 parts (core repulsion, tabulated pair, Δ-learning calculator)."""
        if parts is None:
            parts = self.state_.baseline.parts[1:]
        if not parts:
            return list(labels)
        from .baselines import SumBaseline
        base = SumBaseline(list(parts))
        out = []
        for a, lb in zip(frames, labels):
            periodic = bool(np.all(a.pbc)) and a.cell.rank == 3
            r = base.evaluate(a, forces=lb.forces_eV_per_A is not None,
                              virial=lb.stress_eV_per_A3 is not None and periodic)
            e = None if lb.energy_eV is None else lb.energy_eV - r.energy_eV
            f = None if lb.forces_eV_per_A is None else lb.forces_eV_per_A - r.forces_eV_per_A
            s = lb.stress_eV_per_A3
            if s is not None and r.virial_eV is not None:
                s = s - np.array([r.virial_eV[i, j] for i, j in VOIGT]) / a.get_volume()
            out.append(Labels(e, f, s, lb.config_type, lb.where))
        return out

    # --------------------------------------------------------------------- fit
    def fit(self, frames, *, client: Any = None) -> "GAP":
        """Fit to frames carrying total energies and any of forces and stress.

        ``frames``: a sequence of Atoms, a path or list of paths (any format
        ase.io reads as a stream; read in chunks, never all at once), or a
        :class:`gapfit.stream.FrameSource`. ``client``: a
        ``dask.distributed.Client``; its workers then compute the
        descriptors, design rows and factors of blocks of frames (the files
        must be readable from the workers), and the same data and seed give
        the same model as without it (to the last bit with the same BLAS
        threading; see docs/distributed.md). Returns ``self``. Raises
        :class:`gapfit.errors.InputError` naming the frame and field when
        the data cannot be used.
        """
        from .executors import make_executor
        from .stream import as_source
        t_start = time.perf_counter()
        source = as_source(frames)
        executor = make_executor(client)
        self.hygiene_ = None
        info = self._survey(source)
        parts = self._baseline_parts(info)
        from .baselines import CalculatorBaseline
        with contextlib.ExitStack() as stack:
            for part in parts:
                if isinstance(part, CalculatorBaseline):
                    stack.enter_context(part.cached())
            return self._fit_passes(source, executor, info, parts, client, t_start)

    def _fit_passes(self, source, executor, info, parts, client, t_start: float) -> "GAP":
        """:meth:`fit` after the survey: sparse points, design rows, solve, calibration, hygiene."""
        from .stream import MemorySource
        from .survey import plan_blocks
        self._start_state(info, parts)
        st = self.state_
        cal_idx = self._calibration_split(info)
        # the blocks depend on the data and settings only, not on the workers: same model either way
        blocks = [self._block(info, b[0], b[-1] + 1, cal_idx)
                  for b in plan_blocks(info.n_atoms, list(range(len(info))), self._n_blocks(info))]

        # Pass 1: descriptors without gradients -> a bounded sample of candidate
        # sparse points per term (calibration frames left out, so that their
        # uncertainties are honest), and the energies e0 is fitted to.
        t0 = time.perf_counter()
        from . import passes
        # every frame's energy counts for e0 and δ; only the sample leaves the held-out frames out
        samples, energies = executor.run(passes.sample_block, self, source,
                                         [self._block(info, b.lo, b.hi, ()) for b in blocks], self.sparse_candidates,
                                         sample_skip=cal_idx, what="sparse candidates", progress=self.progress,
                                         reduce=passes.merge_samples)
        self._finish_baseline(info, parts, energies)
        for k, (term, sample) in enumerate(zip(st.terms, samples)):
            summary = term.select_from_sample(sample, seed=self.seed + 1000 * k)
            log.info("term %d (%s): δ %.4g eV, sparse points %s", k + 1, term.type, term.delta_eV, summary)
            if isinstance(term, Soap):
                missing = [z for z in st.species if z not in term.points]
                if missing:
                    raise InputError(f"species {missing} occur only in calibration frames; set "
                                     "calibration_fraction=0 or add frames containing them")
        log.info("sparse points chosen in %.1f s", time.perf_counter() - t0)

        # Pass 2: design rows with gradients, streamed into one QR factor per
        # noise group, so that δ and σ can change without the data.
        t0 = time.perf_counter()
        st.factor_kmm(self.jitter)
        counts = {"energy": 0, "forces": 0, "virial": 0}
        spool = self._open_spool(info) if client is None else None
        try:
            names = self._group_names(info)
            delta_start = [t.delta_eV for t in st.terms]
            grouped = self._rows(executor, source, blocks, names, delta_start, spool, counts)
            problem = hyper.LikelihoodProblem.from_groups(grouped, st.kmm_chol, self._block_terms(),
                                                          [t.delta_eV for t in st.terms])
            optimisation = None
            if self.optimize:
                problem, optimisation = self._optimise(problem)
            if cal_idx:
                st.set_factor(problem.assemble(np.zeros(problem.n_params))[0])
                cal_frames = source.take(cal_idx)
                preds = self.predict(cal_frames, uncertainty=True, calibrated=False)
                from .calibration import describe_scales, fit_scales
                true_labels = self._labels(cal_frames, [info.where[k] for k in cal_idx])
                scales = fit_scales(preds, true_labels)
                st.calibration = {"method": "held-out frames, 95.45 % of |error|/std within 2",
                                  "n_frames": len(cal_idx), **scales}
                log.info("uncertainty calibration on %d held-out frames: %s", len(cal_idx),
                         describe_scales(scales, preds, true_labels))
                # the held-out frames' rows join here, in this process: they are few (at most 200)
                cal_source = MemorySource(cal_frames)
                cal_block = passes.Block(0, len(cal_frames), [len(a) for a in cal_frames], numbers=list(cal_idx))
                cal_rows, cal_counts = passes.rows_block(self, cal_source, cal_block, names, delta_start, spool=spool)
                for key in counts:
                    counts[key] += cal_counts[key]
                problem = problem.merged(cal_rows)
            R_ab, _, sum_log_sigma, n_rows = problem.assemble(np.zeros(problem.n_params))
            st.set_factor(R_ab)
            st.likelihood = problem
            lml = hyper.log_marginal_likelihood(R_ab, st.kmm_chol, n_rows, sum_log_sigma)
            st.training = {
                "n_frames": len(info), "n_train_frames": len(info),
                "n_atoms": int(sum(info.n_atoms)),
                "n_observations": counts, "config_types": _count(info.config_type),
                # what inspect checks its frames against (the frames given, in order)
                "input_frames": {"n_frames": len(info), "n_atoms": int(sum(info.n_atoms)),
                                 "sha256": info.fingerprint.hexdigest()},
                "species": st.species, "fit_seconds": None,
                "likelihood": {"log_marginal_likelihood": lml, "n_rows": n_rows, "sum_log_sigma": sum_log_sigma},
                "hyperparameters": self._hyper_summary(problem, optimisation),
            }
            if client is not None:
                st.training["workers"] = executor.n_workers
            log.info("solved %d observations for %d weights in %.1f s; log marginal likelihood %.6g",
                     n_rows, st.n_columns, time.perf_counter() - t0, lml)
            if self.hygiene:
                t1 = time.perf_counter()
                if spool is not None:
                    self.hygiene_ = self._hygiene_from_spool(spool, info, names, delta_start)
                else:
                    self.hygiene_ = self._hygiene_pass(executor, source, [self._block(info, b.lo, b.hi, ())
                                                                          for b in blocks], ())
                log.info("hygiene (leverage, leave-one-out z) of %d frames in %.1f s; worst:\n%s",
                         len(self.hygiene_), time.perf_counter() - t1, self.hygiene_.table(5))
        finally:
            if spool is not None:
                spool.close()
        st.training["fit_seconds"] = round(time.perf_counter() - t_start, 3)
        return self

    @staticmethod
    def _block(info, lo: int, hi: int, skip):
        from .passes import Block
        return Block(lo, hi, list(info.n_atoms[lo:hi]), tuple(k for k in skip if lo <= k < hi),
                     energy_eV=list(info.energy_eV[lo:hi]))

    def _rows(self, executor, source, blocks, names, delta_start, spool, counts):
        """All blocks' grouped factors, merged; adds to ``counts``."""
        from . import passes
        grouped, c = executor.run(passes.rows_block, self, source, blocks, names, delta_start,
                                  what="design rows", progress=self.progress, reduce=passes.merge_rows,
                                  spool=spool)
        for key in counts:
            counts[key] += c[key]
        return grouped

    def _n_blocks(self, info) -> int:
        """Blocks of about ``atoms_per_block`` atoms (default: 4 chunks' worth)."""
        per_block = self.atoms_per_block or 4 * self._atoms_per_chunk()
        return max(1, int(round(sum(info.n_atoms) / per_block)))

    # ----------------------------------------------------- hyperparameters
    def _block_terms(self) -> List[int]:
        """The term of each K_MM factor block (blocks are in column order)."""
        st = self.state_
        ends = np.cumsum([t.n_columns for t in st.terms])
        out, o = [], 0
        for L in st.kmm_chol:
            out.append(int(np.searchsorted(ends, o, side="right")))
            o += len(L)
        return out

    def _sigma_mode(self) -> str:
        return "config_type" if self.optimize == "config_type" else "global"

    def _optimise(self, problem):
        """Maximise the likelihood over δ and σ and set the optimum in the state.

        Returns the problem rebased at the optimum and (start problem, result).
        """
        st = self.state_
        res = hyper.maximise(problem, optimise_delta=self.optimize_delta, sigma_floor=self.sigma_floor)
        log_c, log_s = problem.split(res.x)
        for t, lc in zip(st.terms, log_c):
            t.set_delta(t.delta_eV * float(np.exp(lc)))
        st.noise_scale = {g: float(np.exp(v)) * st.noise_scale.get(g, 1.0) for g, v in log_s.items()}
        rebased = problem.rebase(res.x)
        st.kmm_chol = rebased.kmm_chol
        log.info("hyperparameters: log marginal likelihood %.6g -> %.6g in %d evaluations, %.1f s (%s)",
                 res.lml_initial, res.lml_final, res.n_evaluations, res.seconds, res.message)
        for k, t in enumerate(st.terms):
            log.info("  term %d (%s): δ %.4g -> %.4g eV", k + 1, t.type, problem.delta0_eV[k], t.delta_eV)
        for g in problem.groups:
            log.info("  σ %s: %.4g -> %.4g%s", g, problem.sigma0.get(g, float("nan")),
                     rebased.sigma0.get(g, float("nan")), " (its floor)" if g in res.at_floor else "")
        return rebased, (problem, res)

    def _hyper_summary(self, problem, optimisation) -> dict:
        st = self.state_
        out = {"optimized": bool(self.optimize), "sigma_mode": self._sigma_mode(),
               "delta_eV": {f"{k + 1}:{t.type}": t.delta_eV for k, t in enumerate(st.terms)},
               "sigma": dict(problem.sigma0), "noise_scale": dict(st.noise_scale)}
        if optimisation is not None:
            start, res = optimisation
            out.update({"initial_delta_eV": {f"{k + 1}:{t.type}": float(d) for k, (t, d)
                                             in enumerate(zip(st.terms, start.delta0_eV))},
                        "initial_sigma": dict(start.sigma0),
                        "lml_initial_fit_frames": res.lml_initial, "lml_final_fit_frames": res.lml_final,
                        "evaluations": res.n_evaluations, "seconds": round(res.seconds, 3),
                        "converged": res.converged, "optimizer_message": res.message,
                        "sigma_floor": dict(res.sigma_floor), "sigma_at_floor": list(res.at_floor)})
        return out

    def log_marginal_likelihood(self) -> float:
        """log p(y) of the training labels under the fitted sparse GP (from the stored factor).

        See :mod:`gapfit.hyper`. Needs a model fitted by this version (the
        fit records the row count and log|Σ| with the factor).
        """
        self._check_fitted()
        st = self.state_
        info = st.training.get("likelihood")
        if not info:
            raise NotFittedError("this model does not record its likelihood terms (fitted by an older gapfit "
                                 "or updated on the fly); refit it")
        return hyper.log_marginal_likelihood(st.R_ab, st.kmm_chol, int(info["n_rows"]), float(info["sum_log_sigma"]))

    # --------------------------------------------------------------- hygiene
    def _open_spool(self, info):
        """A temporary file for the weighted design rows, when hygiene is on and they fit the budget."""
        if not self.hygiene:
            return None
        from .hygiene import RowSpool
        n_rows = sum(info.n_rows(k) for k in range(len(info)))
        nbytes = 8.0 * n_rows * (self.state_.n_columns + 1)
        if nbytes > self.hygiene_spool_gb * 1e9:
            log.info("hygiene: design rows (%.1f GB) exceed hygiene_spool_gb; they will be computed again",
                     nbytes / 1e9)
            return None
        return RowSpool(self.state_.n_columns)

    def _hygiene_from_spool(self, spool, info, names, delta_start):
        from .hygiene import HygieneReport, frame_statistics, summarise
        st = self.state_
        problem = st.likelihood
        T = len(st.terms)
        x_final = self._log_scales(names, delta_start)
        mode = self._sigma_mode()
        out = []
        for A, b, frame, kind, group, x_write in spool:
            rel = x_final - x_write
            col = np.exp(2 * rel[:T])[problem.column_term]
            row = np.exp(-rel[T:])[group]
            A, b = A * col[None, :] * row[:, None], b * row
            for f, stats in frame_statistics(st.R_ab, st.alpha, A, b, frame, kind).items():
                if info.isolated[f]:
                    continue  # it fixes e0; its leave-one-out energy measures nothing about the data
                ct = info.config_type[f]
                sig_e = info.sigma[f][0] * st.noise_scale.get(hyper.group_key("energy", ct, mode), 1.0) \
                    * np.sqrt(info.n_atoms[f])
                out.append(summarise(f, info.where[f], ct, info.n_atoms[f], stats, sig_e))
        return HygieneReport(out)

    def _hygiene_pass(self, executor, source, blocks, not_fitted):
        import copy
        import dataclasses

        from . import passes
        from .hygiene import HygieneReport
        # the workers need R and α, not the per-group factors of the likelihood ((M+1)² each)
        slim = copy.copy(self)
        slim.state_ = dataclasses.replace(self.state_, likelihood=None)
        results = executor.run(passes.hygiene_block, slim, source, blocks, list(not_fitted), what="hygiene",
                               progress=self.progress)
        return HygieneReport([h for r in results for h in r])

    def hygiene_report(self, frames: Sequence[Atoms], not_fitted: Optional[Sequence[int]] = None):
        """Leverage and leave-one-out z-scores of each labelled frame under this model.

        ``frames`` are the training frames, in the order of the fit.
        ``not_fitted``: positions of frames among them that the fit left out
        (default: those the model records as dropped); their residuals are
        reported out of sample. Computes the descriptors again; see
        :mod:`gapfit.hygiene`. Returns a :class:`gapfit.hygiene.HygieneReport`.
        """
        from .executors import SerialExecutor
        from .passes import Block
        from .stream import MemorySource
        self._check_fitted()
        frames = list(frames)
        if not_fitted is None:
            not_fitted = self.state_.training.get("dropped_frames", [])
        labels = self._labels(frames)  # the pass trusts its frames: check these (structure, labels, sigmas) first
        self._check_training_frames(frames, labels)
        block = Block(0, len(frames), [len(a) for a in frames])
        return self._hygiene_pass(SerialExecutor(), MemorySource(frames), [block], not_fitted)

    def _check_training_frames(self, frames: Sequence[Atoms], labels: Sequence[Labels]) -> None:
        """Refuse frames that are not the ones the model was fitted to (leverages of other frames mean nothing)."""
        from .data import FramesFingerprint
        given = self.state_.training.get("input_frames")
        n, n_atoms = len(frames), int(sum(len(a) for a in frames))
        files = files_of([where_of(a, k) for k, a in enumerate(frames)])
        advice = ("hygiene needs the model's own training frames, all of them in the order of the fit "
                  "(gapfit eval scores other frames)")
        if given is None:  # written before the fingerprint was recorded, or grown frame by frame
            fitted = self.state_.training.get("n_frames")
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

    def _energy_rms(self, info, energies: Mapping[int, float], e0) -> float:
        """RMS per-atom training energy after e0 (the scale default δ values start from)."""
        per_atom = [(e - sum(n * e0[z] for z, n in info.composition[k].items())) / info.n_atoms[k]
                    for k, e in energies.items()]
        return float(np.sqrt(np.mean(np.square(per_atom)))) if per_atom else 1.0

    def descriptors(self, frames: Sequence[Atoms], *, gradients: bool, layout: str = "pairs") -> List[list]:
        """Each term's descriptors of ``frames``: one list per term, one entry per frame.

        ``layout="blocks"``: gradients in the form cheapest for prediction
        alone (see :meth:`Term.compute`); design rows, force variances and
        committees need the default ``"pairs"``.
        """
        return [t.compute(frames, gradients=gradients, layout=layout) for t in self.state_.terms]

    def design_rows(self, descs: List[list], *, forces: bool, virial: bool, local: bool = False):
        """All terms' design rows side by side (columns in the model's order) from :meth:`descriptors`."""
        from .terms.base import TermRows
        parts = [t.design_rows(d, forces=forces, virial=virial, local=local) for t, d in zip(self.state_.terms, descs)]

        def cat(name):
            arrs = [getattr(p, name) for p in parts]
            return None if arrs[0] is None else np.concatenate(arrs, axis=-1)
        return TermRows(cat("energy"), cat("gradient"), cat("virial"), cat("local"), parts[0].atom_start)

    def training_rows(self, frames: Sequence[Atoms], labels: Sequence[Labels], descs: Optional[List[list]] = None,
                      counts: Optional[dict] = None):
        """Weighted rows (A, b) of the stacked system for labelled frames.

        ``labels`` are residual labels (:meth:`residual_labels`); e0 is
        subtracted here. ``descs`` from :meth:`descriptors` (with gradients)
        when already computed.
        """
        parts = self._chunk_parts(frames, labels, descs, counts)
        if not parts:
            return np.zeros((0, self.state_.n_columns)), np.zeros(0)
        return np.vstack([p.A for p in parts]), np.concatenate([p.b for p in parts])

    def _chunk_parts(self, frames, labels, descs=None, counts=None) -> List["_RowPart"]:
        """The weighted rows of a chunk of frames, one part per frame and kind of observation."""
        need_grad = any(lb.forces_eV_per_A is not None or lb.stress_eV_per_A3 is not None for lb in labels)
        if descs is None:
            descs = self.descriptors(frames, gradients=need_grad)
        rows = self.design_rows(descs, forces=need_grad,
                                virial=any(lb.stress_eV_per_A3 is not None for lb in labels))
        return self._weighted_parts(frames, labels, rows, counts if counts is not None else
                                    {"energy": 0, "forces": 0, "virial": 0})

    def _log_scales(self, names, delta_start) -> np.ndarray:
        """log(δ / δ at the start of the fit) per term, then log(noise scale) per named group."""
        st = self.state_
        log_c = [np.log(t.delta_eV / d0) for t, d0 in zip(st.terms, delta_start)]
        return np.array(log_c + [np.log(st.noise_scale.get(g, 1.0)) for g in names])

    def _group_names(self, info) -> List[str]:
        """Sorted names of the noise groups the training labels fall into (the likelihood's order)."""
        mode = self._sigma_mode()
        keys = set()
        for k in range(len(info)):
            for kind, present in (("energy", info.has_energy(k)), ("forces", info.has_forces[k]),
                                  ("virial", info.has_stress[k])):
                if present:
                    keys.add(hyper.group_key(kind, info.config_type[k], mode))
        return sorted(keys)

    def _labels(self, frames, wheres=None, check: bool = True) -> List[Labels]:
        """Labels of frames; ``check=False`` for frames the survey has already checked (no second neighbour list)."""
        out = []
        for k, a in enumerate(frames):
            where = wheres[k] if wheres else where_of(a, k)
            if check:
                check_structure(a, where)
            lb = get_labels(a, where, energy_key=self.energy_key, forces_key=self.forces_key,
                            stress_key=self.stress_key)
            if check:
                self._sigmas(a, lb)  # bad per-frame sigmas fail now, not after the descriptors
            out.append(lb)
        return out

    def _weighted_parts(self, chunk, lbs, rows, counts) -> List["_RowPart"]:
        e0 = self.state_.e0
        parts = []
        for f, (a, lb) in enumerate(zip(chunk, lbs)):
            n = len(a)
            sig = self._sigmas(a, lb)
            if lb.energy_eV is not None:
                s = sig["energy"] * np.sqrt(n)
                target = lb.energy_eV - sum(e0[int(z)] for z in a.numbers)
                parts.append(_RowPart(f, "energy", rows.energy[f:f + 1] / s, np.array([target / s]),
                                      np.array([s]), np.array([sig["energy"]])))
                counts["energy"] += 1
            if lb.forces_eV_per_A is not None:
                lo = 3 * rows.atom_start[f]
                s = sig["forces"]
                # forces = -dE/dr
                parts.append(_RowPart(f, "forces", rows.gradient[lo:lo + 3 * n] * (-1.0 / s),
                                      lb.forces_eV_per_A.ravel() / s, np.full(3 * n, s), np.full(3 * n, s)))
                counts["forces"] += 3 * n
            if lb.stress_eV_per_A3 is not None and rows.virial is not None:
                s = sig["virial"] * np.sqrt(n)
                parts.append(_RowPart(f, "virial", rows.virial[f] / s, lb.stress_eV_per_A3 * a.get_volume() / s,
                                      np.full(6, s), np.full(6, sig["virial"])))
                counts["virial"] += 6
        return parts

    def check_data(self, frames) -> dict:
        """Check the settings and frames as :meth:`fit` would, without computing descriptors.

        ``frames`` as for :meth:`fit`. Raises :class:`gapfit.errors.InputError`
        naming the setting, or the file, frame and field, at fault. Returns a
        summary: frame and atom counts, species, label counts and frames per
        config_type.
        """
        from ase.data import chemical_symbols

        from .stream import as_source
        info = self._survey(as_source(frames))
        return {"n_frames": len(info), "n_atoms": int(sum(info.n_atoms)),
                "species": [chemical_symbols[z] for z in info.species],
                "n_energies": sum(info.has_energy(k) for k in range(len(info))),
                "n_forces": int(sum(info.has_forces)),
                "n_stresses": int(sum(info.has_stress)),
                "config_types": _count(info.config_type)}

    def _calibration_split(self, info) -> List[int]:
        """Seeded choice of held-out calibration frames (empty when too few)."""
        frac = float(self.calibration_fraction or 0.0)
        eligible = [k for k in range(len(info)) if not info.isolated[k]
                    and (info.has_forces[k] or info.has_energy(k))]
        n = min(200, int(round(frac * len(eligible))))
        if frac <= 0 or len(eligible) < 10 or n < 1:
            return []
        rng = np.random.default_rng(self.seed + 7919)
        return sorted(int(k) for k in rng.choice(eligible, size=n, replace=False))

    def _fit_e0(self, info, energies: Mapping[int, float], species) -> Dict[int, float]:
        """e0 per species: given, else from isolated-atom frames, else least squares on ``energies``."""
        from ase.data import atomic_numbers
        e0: Dict[int, float] = {}
        if self.e0:
            for key, val in self.e0.items():
                z = atomic_numbers[key] if isinstance(key, str) and not key.isdigit() else int(key)
                e0[z] = float(val)
        for k, e in sorted(energies.items()):
            if info.isolated[k] and info.n_atoms[k] == 1:
                e0.setdefault(next(iter(info.composition[k])), e)
        missing = [z for z in species if z not in e0]
        if missing:
            rows, rhs = [], []
            for k, e in sorted(energies.items()):
                if info.isolated[k]:
                    continue
                comp = info.composition[k]
                rows.append([comp.get(z, 0) for z in missing])
                rhs.append(e - sum(n * e0[z] for z, n in comp.items() if z in e0))
            if rows:
                # lstsq (SVD) gives the minimum-norm answer when the composition
                # never varies, as in a molecular-dynamics data set.
                sol = np.linalg.lstsq(np.array(rows, dtype=float), np.array(rhs), rcond=None)[0]
                e0.update({z: float(v) for z, v in zip(missing, sol)})
            else:
                e0.update({z: 0.0 for z in missing})
        return {z: e0[z] for z in species}

    def _sigmas(self, atoms: Atoms, lb: Labels, scaled: bool = True):
        s = {"energy": float(self.sigma_energy), "forces": float(self.sigma_forces),
             "virial": float(self.sigma_virial)}
        if self.config_type_sigma and lb.config_type in self.config_type_sigma:
            for k, v in self.config_type_sigma[lb.config_type].items():
                s[k] = float(v)  # keys and values checked by check_params
        for k, info_key in SIGMA_INFO_KEYS.items():
            if info_key in atoms.info:
                try:
                    v = float(np.asarray(atoms.info[info_key], dtype=float).reshape(()))
                except (TypeError, ValueError):
                    v = float("nan")
                if not (np.isfinite(v) and v > 0):
                    raise InputError(f"{lb.where}: field '{info_key}' must be a number > 0, "
                                     f"got {atoms.info[info_key]!r}")
                s[k] = v
        st = getattr(self, "state_", None)
        if scaled and st is not None and st.noise_scale:
            mode = self._sigma_mode()
            for k in s:
                s[k] *= st.noise_scale.get(hyper.group_key(k, lb.config_type, mode), 1.0)
        return s

    def _atoms_per_chunk(self) -> int:
        # Pair gradients take about 3·D·8 bytes per pair and ~30 pairs per atom:
        # keep a chunk's gradients near 0.5 GB whatever the descriptor width.
        D = max([t.n_features for t in self.state_.terms if isinstance(t, Soap)] or [100])
        return int(np.clip(5e8 / (8 * 3 * D * 30), 64, _ATOMS_PER_CHUNK))

    # ----------------------------------------------------------------- predict
    def predict(self, frames: Union[Atoms, Sequence[Atoms]], *, forces: bool = True, stress: bool = True,
                uncertainty: Union[bool, str, Sequence[str], None] = False,
                calibrated: bool = True) -> List[Prediction]:
        """Predict each frame: a list of :class:`gapfit.prediction.Prediction`, one per frame.

        Energies in eV, forces in eV/Å, stress in eV/Å³ (ASE's sign and Voigt
        order; periodic frames only).

        ``uncertainty`` selects the posterior standard deviations to compute
        (each is paid for only when asked): ``"local_energy"`` (per atom),
        ``"forces"`` (per atom and component), ``"energy"`` (total), a
        sequence of them, ``True`` for all three, or False/None for none.
        Add ``"exact"`` (alone: all three) to take the reference route, which
        builds every design row from scratch; the default route reuses the
        prediction's kernel values and computes the same numbers (tested
        against each other). They are scaled by the calibration when the
        model carries one and ``calibrated=True`` (raw values in the
        ``*_raw`` fields). Each term's descriptors are computed once per
        frame, whatever is asked. Progress bar with ``progress=True``.
        """
        from tqdm.auto import tqdm

        from .survey import group_by_atoms
        if isinstance(frames, Atoms):
            frames = [frames]
        self.check_frames(frames)
        request = UncertaintyRequest.parse(uncertainty)
        grad = forces or stress or request.forces
        # force variances and the exact route build design rows, which need per-pair gradients
        layout = "pairs" if (request.forces or request.exact) else "blocks"
        frames = list(frames)
        out = []
        with tqdm(total=len(frames), desc="predict", unit="frame", disable=not self.progress, leave=False) as bar:
            for idx in group_by_atoms(list(range(len(frames))), [len(a) for a in frames], self._atoms_per_chunk()):
                chunk = [frames[k] for k in idx]
                descs = self.descriptors(chunk, gradients=grad, layout=layout)
                out.extend(self._predict_chunk(chunk, descs, forces, stress, request, calibrated))
                bar.update(len(chunk))
        return out

    def check_frames(self, frames: Sequence[Atoms]) -> None:
        """Raise InputError naming the frame and field when a frame cannot be predicted by this model."""
        self._check_fitted()
        st = self.state_
        for k, a in enumerate(frames):
            where = where_of(a, k)
            check_structure(a, where)
            unknown = sorted(set(int(z) for z in a.numbers) - set(st.species))
            if unknown:
                from ase.data import chemical_symbols
                raise InputError(f"{where}: field 'numbers' holds species {[chemical_symbols[z] for z in unknown]} "
                                 f"that the model was not trained on (it knows "
                                 f"{[chemical_symbols[z] for z in st.species]})")

    def predict_descriptors(self, atoms: Atoms, descriptors: Sequence[Any], *, forces: bool = True,
                            stress: bool = True, uncertainty: Union[bool, str, Sequence[str], None] = False,
                            calibrated: bool = True) -> Prediction:
        """One frame's prediction from its descriptors (one entry per term, from :meth:`descriptors`).

        What :meth:`predict` does per frame, for callers that reuse the
        descriptors (a posterior committee evaluates its members on the same
        ones). The descriptors need gradients for forces, stress or force
        uncertainties. ``uncertainty`` as in :meth:`predict`.
        """
        return self._predict_chunk([atoms], [[d] for d in descriptors], forces, stress,
                                   UncertaintyRequest.parse(uncertainty), calibrated)[0]

    def _predict_chunk(self, chunk: Sequence[Atoms], descs: List[list], forces: bool, stress: bool,
                       request: UncertaintyRequest, calibrated: bool) -> List[Prediction]:
        st = self.state_
        periodic = [bool(np.all(a.pbc)) and a.cell.rank == 3 for a in chunk]
        keep_rows = (request.local_energy or request.energy) and not request.exact
        # every term's kernels for the whole chunk at once: wide sparse sets are read once, not per frame
        parts = [term.predict_many(d, st.alpha[sl], forces=bool(forces), virial=bool(stress) and any(periodic),
                                   local_rows=keep_rows)
                 for term, d, sl in zip(st.terms, descs, st.column_slices)]
        out = []
        for f, atoms in enumerate(chunk):
            want_virial = bool(stress) and periodic[f]
            base = st.baseline.evaluate(atoms, forces=bool(forces), virial=want_virial)
            local = np.array(base.local_energy_eV, dtype=float)
            grad = np.zeros((len(atoms), 3)) if forces else None
            virial = np.array(base.virial_eV, dtype=float) if want_virial else None
            for term_parts in parts:
                tp = term_parts[f]
                local += tp.local_energy_eV
                if grad is not None and tp.gradient_eV_per_A is not None:
                    grad += tp.gradient_eV_per_A
                if virial is not None and tp.virial_eV is not None:
                    virial += tp.virial_eV
            p = Prediction(energy=float(local.sum()), energies=local)
            if grad is not None:
                p.forces = np.asarray(base.forces_eV_per_A, dtype=float) - grad
            if virial is not None:
                p.stress = np.array([virial[i, j] for i, j in VOIGT]) / atoms.get_volume()
            out.append(p)
        if request:
            if request.exact:
                for f, p in enumerate(out):
                    self._uncertainty_exact(p, [d[f] for d in descs])
            else:
                self._uncertainty(out, descs, request, [[tp.local_rows for tp in term_parts] for term_parts in parts])
            if calibrated:
                for p in out:
                    self._calibrate(p)
        return out

    def _uncertainty(self, preds: List[Prediction], descs: List[list], request: UncertaintyRequest,
                     local_rows: List[list]) -> None:
        """DTC predictive standard deviations of the GP part (latent, noise-free) of a chunk, into ``preds``.

        var = k** − kᵀ K_MM⁻¹ k + kᵀ (K_MM + K_MN Σ⁻¹ K_NM)⁻¹ k for the rows k
        of each asked quantity: triangular solves with the Cholesky factors
        of K_MM's blocks (skipping blocks no row touches) and with the QR
        factor R, for all frames of the chunk at once (R is read once per
        chunk, not per frame); k** sums the terms' prior variances (terms
        are independent a priori). The local-energy rows are the
        prediction's own kernel values (``local_rows[term][frame]``); force
        rows are built only when force stds are asked.

        Why not a low-rank factor of K_MM⁻¹ − (RᵀR)⁻¹: the variances are
        differences of nearly equal numbers (variance / prior ≈ 1e-6 for
        forces and 1e-8 for local energies with the default Si model), so a
        truncated factor's error swamps them (docs/index.md, Uncertainties).
        """
        st = self.state_
        n_frames = len(preds)
        with_forces = request.forces and all(getattr(d[0], "pair_gradients", True) is not None for d in descs)
        priors = [[t.prior_variance(d[f], forces=with_forces, energy=request.energy)
                   for t, d in zip(st.terms, descs)] for f in range(n_frames)]
        n_at = [len(p.energies) for p in preds]
        bounds = np.concatenate([[0], np.cumsum(n_at)])

        def variance(rows, prior):
            return sgp.dtc_variance(rows, prior, st.kmm_chol, st.R_ab)

        if request.local_energy or request.energy:
            per_term = []
            for k, (t, d) in enumerate(zip(st.terms, descs)):
                if all(r is not None for r in local_rows[k]):
                    per_term.append(np.vstack(local_rows[k]))
                else:
                    per_term.append(t.design_rows(d, forces=False, virial=False, local=True).local)
            L = np.hstack(per_term)
            # local and energy rows in one solve: with a wide model, reading R dominates the solve
            rows, prior = [], []
            if request.local_energy:
                rows.append(L)
                prior.append(np.concatenate([sum(pr.local_eV2 for pr in frame) for frame in priors]))
            if request.energy:
                rows.append(np.add.reduceat(L, bounds[:-1], axis=0))
                prior.append(np.array([sum(pr.energy_eV2 for pr in frame) for frame in priors]))
            var = variance(np.vstack(rows), np.concatenate(prior))
            if request.local_energy:
                for f, p in enumerate(preds):
                    p.local_energy_std = np.sqrt(var[bounds[f]:bounds[f + 1]])
            if request.energy:
                for f, p in enumerate(preds):
                    p.energy_std = float(np.sqrt(var[len(var) - n_frames + f]))
        if with_forces:
            G = np.hstack([t.design_rows(d, forces=True, virial=False, local=False).gradient
                           for t, d in zip(st.terms, descs)])
            prior_f = np.concatenate([sum(pr.forces_eV2_per_A2 for pr in frame).ravel() for frame in priors])
            var_F = variance(G, prior_f)
            for f, p in enumerate(preds):
                p.forces_std = np.sqrt(var_F[3 * bounds[f]:3 * bounds[f + 1]]).reshape(-1, 3)

    def _uncertainty_exact(self, p: Prediction, ds: list) -> None:
        """The reference route: every row from :meth:`design_rows`, every prior in full, all three stds."""
        st = self.state_
        with_forces = all(getattr(d, "pair_gradients", True) is not None for d in ds)
        rows = self.design_rows([[d] for d in ds], forces=with_forces, virial=False, local=True)
        priors = [t.prior_variance(d, forces=with_forces) for t, d in zip(st.terms, ds)]
        var_local = sgp.dtc_variance(rows.local, sum(pr.local_eV2 for pr in priors), st.kmm_chol, st.R_ab)
        var_E = sgp.dtc_variance(rows.energy, np.array([sum(pr.energy_eV2 for pr in priors)]), st.kmm_chol, st.R_ab)
        p.energy_std = float(np.sqrt(var_E[0]))
        p.local_energy_std = np.sqrt(var_local)
        if with_forces and rows.gradient is not None:
            prior_f = sum(pr.forces_eV2_per_A2 for pr in priors).ravel()
            p.forces_std = np.sqrt(sgp.dtc_variance(rows.gradient, prior_f, st.kmm_chol, st.R_ab)).reshape(-1, 3)

    def _calibrate(self, p: Prediction) -> None:
        """Scale the computed stds by the fitted calibration (raw values into the ``*_raw`` fields)."""
        cal = self.state_.calibration
        if not cal:
            return
        se, sf = cal.get("energy_scale"), cal.get("forces_scale")
        for name, scale in (("energy_std", se), ("local_energy_std", se), ("forces_std", sf)):
            val = getattr(p, name)
            if val is not None and scale is not None:
                setattr(p, name + "_raw", val)
                setattr(p, name, val * scale)

    # ------------------------------------------------------------------- files
    def save(self, path: str) -> None:
        """Write the model atomically to ``path`` (see docs/model-format.md)."""
        self._check_fitted()
        from .model_io import save_model
        save_model(self, path)


@dataclass
class _RowPart:
    """Weighted rows of one kind of observation of one frame of a chunk."""

    frame: int            # position in the chunk
    kind: str             # "energy", "forces" or "virial"
    A: np.ndarray         # rows divided by their σ
    b: np.ndarray         # targets divided by their σ
    sigma: np.ndarray     # σ of each row (eV, eV/Å)
    nominal: np.ndarray   # σ as users set it (per atom for energies and virials)


def _stack_parts(parts: Sequence[_RowPart], chunk_idx: Sequence[int]):
    """(rows, targets, frame index of each row, kind code of each row) of a chunk's parts."""
    return (np.vstack([p.A for p in parts]), np.concatenate([p.b for p in parts]),
            np.concatenate([np.full(len(p.b), chunk_idx[p.frame]) for p in parts]),
            np.concatenate([np.full(len(p.b), KIND_CODES[p.kind]) for p in parts]))


def _count(items) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for it in items:
        out[it] = out.get(it, 0) + 1
    return out
