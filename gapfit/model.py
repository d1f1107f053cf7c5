"""The GAP estimator: a fixed baseline plus a sum of terms, solved in one sparse GP.

Flow: frames -> labels (:mod:`.data`) -> baseline subtracted
(:mod:`.baselines`) -> each term's descriptors and sparse points
(:mod:`.terms`) -> design rows streamed into one QR factor (:mod:`.sgp`) ->
weights, held with everything else fitted in one :class:`FittedState`.
Prediction asks each term for its part (the same term code as the design
rows) and adds the baseline back.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from ase import Atoms

from . import sgp
from .data import (SIGMA_INFO_KEYS, Labels, check_structure, get_labels, is_isolated_atom,
                   species_of, where_of)
from .errors import InputError, NotFittedError
from .params import check_params, check_species_settings
from .prediction import Prediction
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
    progress : bool, default=False
        Show progress bars.

    Attributes (after :meth:`fit` or :func:`gapfit.load`)
    ----------
    state_ : FittedState
        Everything fitted; ``species_``, ``e0_``, ``terms_``, ``alpha_``,
        ``calibration_`` and ``training_summary_`` read from it.
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
                 stress_key: Optional[str] = None, progress: bool = False):
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
        self.progress = progress

    # ------------------------------------------------------------------ params
    _PARAMS = ("terms",) + SOAP_PARAMS + (
        "sigma_energy", "sigma_forces", "sigma_virial", "config_type_sigma", "e0", "core_repulsion", "core_radii", "core_file",
        "baseline", "jitter", "seed", "calibration_fraction", "energy_key", "forces_key", "stress_key", "progress")

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

    def make_terms(self, frames: Optional[Sequence[Atoms]] = None) -> List[Term]:
        """Fresh (unfitted) Term objects for this model's settings.

        With ``terms=None`` the default recipe, which depends on whether the
        training ``frames`` are molecules (none periodic).
        """
        if self.terms is None:
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
        to; e0 is subtracted with the design rows). Used by :meth:`fit` and
        the incremental learner.
        """
        frames = list(frames)
        labels, species = self._check(frames)
        baseline_parts = self._baseline_parts(frames, species)
        residual = self.residual_labels(frames, labels, baseline_parts)
        e0 = self._fit_e0(frames, residual, species)
        from .baselines import E0Baseline, SumBaseline
        baseline = SumBaseline([E0Baseline(e0)] + baseline_parts)
        for part in baseline_parts:
            log.info("baseline: %s", part.describe())
        terms = self.make_terms(frames)
        rms = self._energy_rms(frames, residual, e0)
        for term in terms:
            term.bind(species)
            term.set_delta(float(term.delta) if term.delta is not None else term.default_delta(rms))
        self.state_ = FittedState(species=species, e0=e0, baseline=baseline, terms=terms)
        return residual

    def _baseline_parts(self, frames, species) -> list:
        from .baselines import CalculatorBaseline, TabulatedPairBaseline, ZBLBaseline
        parts = []
        if self.core_repulsion:
            # "covalent": radii from covalent radii, for fits that start from too few frames
            # (on-the-fly learning from one crystal) to know how close atoms come
            parts.append(ZBLBaseline.from_frames(frames if self.core_radii == "data" else [], species))
        if self.core_file:
            parts.append(TabulatedPairBaseline.from_file(self.core_file))
        if self.baseline is not None:
            b = self.baseline
            parts.append(b if isinstance(b, CalculatorBaseline) else CalculatorBaseline(b))
        return parts

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
    def fit(self, frames: Sequence[Atoms]) -> "GAP":
        """Fit to frames carrying total energies and any of forces and stress.

        Returns ``self``. Raises :class:`gapfit.errors.InputError` naming the
        frame and field when the data cannot be used.
        """
        t_start = time.perf_counter()
        frames = list(frames)
        labels = self.prepare(frames)
        st = self.state_
        train_idx = list(range(len(frames)))
        cal_idx = self._calibration_split(frames, labels, train_idx)
        cal_set = set(cal_idx)
        fit_idx = [k for k in train_idx if k not in cal_set]

        # Pass 1: descriptors without gradients, for the sparse points. The
        # calibration frames are left out so their uncertainties are honest.
        fit_frames = [frames[k] for k in fit_idx]
        for k, term in enumerate(st.terms):
            t0 = time.perf_counter()
            chunks = (term.compute(c, gradients=False)
                      for c in self._chunks(fit_frames, f"{term.type} descriptors"))
            summary = term.select_sparse(chunks, seed=self.seed + 1000 * k)
            log.info("term %d (%s): δ %.4g eV, sparse points %s, %.1f s", k + 1, term.type, term.delta_eV,
                     summary, time.perf_counter() - t0)
            if isinstance(term, Soap):
                missing = [z for z in st.species if z not in term.points]
                if missing:
                    raise InputError(f"species {missing} occur only in calibration frames; set "
                                     "calibration_fraction=0 or add frames containing them")

        # Pass 2: design rows with gradients, streamed into the QR factor.
        t0 = time.perf_counter()
        st.factor_kmm(self.jitter)
        M = st.n_columns
        acc = sgp.QRAccumulator(M)
        acc.add(st.prior_rows(), np.zeros(M))
        counts = {"energy": 0, "forces": 0, "virial": 0}
        self._accumulate(acc, frames, labels, fit_idx, counts)
        if cal_idx:
            st.set_factor(acc.factor())
            preds = self.predict([frames[k] for k in cal_idx], uncertainty=True, calibrated=False)
            from .calibration import fit_scales
            true_labels = self._labels([frames[k] for k in cal_idx], [where_of(frames[k], k) for k in cal_idx])
            scales = fit_scales(preds, true_labels)
            st.calibration = {"method": "held-out frames, 95.45 % of |error|/std within 2",
                              "n_frames": len(cal_idx), **scales}
            log.info("uncertainty calibration on %d held-out frames: %s", len(cal_idx), scales)
            self._accumulate(acc, frames, labels, cal_idx, counts)
        st.set_factor(acc.factor())
        st.training = {
            "n_frames": len(frames), "n_train_frames": len(train_idx),
            "n_atoms": int(sum(len(frames[k]) for k in train_idx)),
            "n_observations": counts, "config_types": _count(lb.config_type for lb in labels),
            "species": st.species, "fit_seconds": None,
        }
        log.info("solved %d observations for %d weights in %.1f s", acc.n_rows - M, M, time.perf_counter() - t0)
        st.training["fit_seconds"] = round(time.perf_counter() - t_start, 3)
        return self

    def _energy_rms(self, frames, labels, e0) -> float:
        """RMS per-atom training energy after e0 (the scale default δ values start from)."""
        per_atom = [(lb.energy_eV - sum(e0[int(z)] for z in a.numbers)) / len(a)
                    for a, lb in zip(frames, labels) if lb.energy_eV is not None]
        return float(np.sqrt(np.mean(np.square(per_atom)))) if per_atom else 1.0

    def descriptors(self, frames: Sequence[Atoms], *, gradients: bool) -> List[list]:
        """Each term's descriptors of ``frames``: one list per term, one entry per frame."""
        return [t.compute(frames, gradients=gradients) for t in self.state_.terms]

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
        need_grad = any(lb.forces_eV_per_A is not None or lb.stress_eV_per_A3 is not None for lb in labels)
        if descs is None:
            descs = self.descriptors(frames, gradients=need_grad)
        rows = self.design_rows(descs, forces=need_grad,
                                virial=any(lb.stress_eV_per_A3 is not None for lb in labels))
        return self._weighted_rows(frames, labels, rows, counts if counts is not None else
                                   {"energy": 0, "forces": 0, "virial": 0})

    def _accumulate(self, acc, frames, labels, idx, counts) -> None:
        """Design rows of frames ``idx``, weighted, into the QR accumulator."""
        for chunk_idx in self._chunks(idx, "design rows", [len(frames[k]) for k in idx],
                                      atoms_per_chunk=self._atoms_per_chunk()):
            A, b = self.training_rows([frames[k] for k in chunk_idx], [labels[k] for k in chunk_idx],
                                      counts=counts)
            acc.add(A, b)

    def _check(self, frames: List[Atoms]):
        """(labels, species) of usable training frames, or the first problem as an InputError."""
        self._validate()
        if not frames:
            raise InputError("no training frames given")
        self.make_terms()  # term settings fail now, not after reading everything
        labels = self._labels(frames)
        if all(lb.energy_eV is None for lb in labels):
            raise InputError(f"{labels[0].where}: no frame has field 'energy'; a fit needs total energies "
                             "(use --energy-key NAME if they are stored under another name)")
        species = species_of(frames)
        check_species_settings(self.get_params(), species)
        unused = sorted(set(self.config_type_sigma or {}) - {lb.config_type for lb in labels})
        if unused:
            log.warning("config_type_sigma names config types that no frame has: %s", unused)
        if all(is_isolated_atom(a, lb) for a, lb in zip(frames, labels)):
            raise InputError("only isolated-atom frames given; add frames of condensed configurations")
        for lb in labels:
            if lb.energy_eV is None and lb.forces_eV_per_A is None and lb.stress_eV_per_A3 is None:
                raise InputError(f"{lb.where}: frame has none of the fields 'energy', 'forces', 'stress'; "
                                 "label it or remove it")
        return labels, species

    def _labels(self, frames, wheres=None) -> List[Labels]:
        out = []
        for k, a in enumerate(frames):
            where = wheres[k] if wheres else where_of(a, k)
            check_structure(a, where)
            lb = get_labels(a, where, energy_key=self.energy_key, forces_key=self.forces_key,
                            stress_key=self.stress_key)
            self._sigmas(a, lb)  # bad per-frame sigmas fail now, not after the descriptors
            out.append(lb)
        return out

    def _weighted_rows(self, chunk, lbs, rows, counts):
        e0 = self.state_.e0
        A_parts, b_parts = [], []
        for f, (a, lb) in enumerate(zip(chunk, lbs)):
            n = len(a)
            sig = self._sigmas(a, lb)
            if lb.energy_eV is not None:
                w = 1.0 / (sig["energy"] * np.sqrt(n))
                target = lb.energy_eV - sum(e0[int(z)] for z in a.numbers)
                A_parts.append(rows.energy[f:f + 1] * w)
                b_parts.append(np.array([target * w]))
                counts["energy"] += 1
            if lb.forces_eV_per_A is not None:
                lo = 3 * rows.atom_start[f]
                w = 1.0 / sig["forces"]
                # forces = -dE/dr
                A_parts.append(rows.gradient[lo:lo + 3 * n] * (-w))
                b_parts.append(lb.forces_eV_per_A.ravel() * w)
                counts["forces"] += 3 * n
            if lb.stress_eV_per_A3 is not None and rows.virial is not None:
                w = 1.0 / (sig["virial"] * np.sqrt(n))
                A_parts.append(rows.virial[f] * w)
                b_parts.append(lb.stress_eV_per_A3 * a.get_volume() * w)
                counts["virial"] += 6
        if not A_parts:
            return np.zeros((0, self.state_.n_columns)), np.zeros(0)
        return np.vstack(A_parts), np.concatenate(b_parts)

    def check_data(self, frames: Sequence[Atoms]) -> dict:
        """Check the settings and frames as :meth:`fit` would, without computing descriptors.

        Raises :class:`gapfit.errors.InputError` naming the setting, or the
        file, frame and field, at fault. Returns a summary: frame and atom
        counts, species, label counts and frames per config_type.
        """
        from ase.data import chemical_symbols
        frames = list(frames)
        labels, species = self._check(frames)
        return {"n_frames": len(frames), "n_atoms": int(sum(len(a) for a in frames)),
                "species": [chemical_symbols[z] for z in species],
                "n_energies": sum(lb.energy_eV is not None for lb in labels),
                "n_forces": sum(lb.forces_eV_per_A is not None for lb in labels),
                "n_stresses": sum(lb.stress_eV_per_A3 is not None for lb in labels),
                "config_types": _count(lb.config_type for lb in labels)}

    def _calibration_split(self, frames, labels, train_idx) -> List[int]:
        """Seeded choice of held-out calibration frames (empty when too few)."""
        frac = float(self.calibration_fraction or 0.0)
        eligible = [k for k in train_idx if not is_isolated_atom(frames[k], labels[k])
                    and (labels[k].forces_eV_per_A is not None or labels[k].energy_eV is not None)]
        n = min(200, int(round(frac * len(eligible))))
        if frac <= 0 or len(eligible) < 10 or n < 1:
            return []
        rng = np.random.default_rng(self.seed + 7919)
        return sorted(int(k) for k in rng.choice(eligible, size=n, replace=False))

    def _fit_e0(self, frames, labels, species) -> Dict[int, float]:
        from ase.data import atomic_numbers
        e0: Dict[int, float] = {}
        if self.e0:
            for key, val in self.e0.items():
                z = atomic_numbers[key] if isinstance(key, str) and not key.isdigit() else int(key)
                e0[z] = float(val)
        for a, lb in zip(frames, labels):
            if is_isolated_atom(a, lb) and lb.energy_eV is not None and len(a) == 1:
                z = int(a.numbers[0])
                e0.setdefault(z, lb.energy_eV)
        missing = [z for z in species if z not in e0]
        if missing:
            rows, rhs = [], []
            for a, lb in zip(frames, labels):
                if lb.energy_eV is None or is_isolated_atom(a, lb):
                    continue
                counts = np.array([np.sum(a.numbers == z) for z in missing], dtype=float)
                known = sum(e0[int(z)] for z in a.numbers if int(z) in e0)
                rows.append(counts)
                rhs.append(lb.energy_eV - known)
            if rows:
                # lstsq (SVD) gives the minimum-norm answer when the composition
                # never varies, as in a molecular-dynamics data set.
                sol = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
                e0.update({z: float(v) for z, v in zip(missing, sol)})
            else:
                e0.update({z: 0.0 for z in missing})
        return {z: e0[z] for z in species}

    def _sigmas(self, atoms: Atoms, lb: Labels):
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
        return s

    def _chunks(self, items, what, sizes=None, atoms_per_chunk=_ATOMS_PER_CHUNK):
        """Yield consecutive slices of ``items`` holding about ``atoms_per_chunk`` atoms."""
        from tqdm.auto import tqdm
        if sizes is None:
            sizes = [len(x) for x in items]
        bar = tqdm(total=len(items), desc=what, unit="frame", disable=not self.progress, leave=False)
        chunk, n = [], 0
        for it, size in zip(items, sizes):
            chunk.append(it)
            n += size
            if n >= atoms_per_chunk:
                yield chunk
                bar.update(len(chunk))
                chunk, n = [], 0
        if chunk:
            yield chunk
            bar.update(len(chunk))
        bar.close()

    def _atoms_per_chunk(self) -> int:
        # Pair gradients take about 3·D·8 bytes per pair and ~30 pairs per atom:
        # keep a chunk's gradients near 0.5 GB whatever the descriptor width.
        D = max([t.n_features for t in self.state_.terms if isinstance(t, Soap)] or [100])
        return int(np.clip(5e8 / (8 * 3 * D * 30), 64, _ATOMS_PER_CHUNK))

    # ----------------------------------------------------------------- predict
    def predict(self, frames: Union[Atoms, Sequence[Atoms]], *, forces: bool = True, stress: bool = True,
                uncertainty: bool = False, calibrated: bool = True) -> List[Prediction]:
        """Predict each frame: a list of :class:`gapfit.prediction.Prediction`, one per frame.

        Energies in eV, forces in eV/Å, stress in eV/Å³ (ASE's sign and Voigt
        order; periodic frames only). With ``uncertainty=True`` the posterior
        standard deviations of the energy, local energies and force
        components, scaled by the calibration when the model carries one and
        ``calibrated=True`` (raw values in the ``*_raw`` fields). Each term's
        descriptors are computed once per frame, whatever is asked.
        """
        self._check_fitted()
        if isinstance(frames, Atoms):
            frames = [frames]
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
        grad = forces or stress or uncertainty
        out = []
        for chunk in self._chunks(list(frames), "predict", atoms_per_chunk=self._atoms_per_chunk()):
            descs = self.descriptors(chunk, gradients=grad)
            for f, a in enumerate(chunk):
                ds = [d[f] for d in descs]
                p = self._predict_one(a, ds, forces, stress)
                if uncertainty:
                    self._uncertainty(p, ds, calibrated)
                out.append(p)
        return out

    def _predict_one(self, atoms: Atoms, ds: list, want_forces: bool, want_stress: bool) -> Prediction:
        st = self.state_
        periodic = bool(np.all(atoms.pbc)) and atoms.cell.rank == 3
        want_virial = bool(want_stress) and periodic
        base = st.baseline.evaluate(atoms, forces=bool(want_forces), virial=want_virial)
        local = np.array(base.local_energy_eV, dtype=float)
        grad = np.zeros((len(atoms), 3)) if want_forces else None
        virial = np.array(base.virial_eV, dtype=float) if want_virial else None
        for term, d, sl in zip(st.terms, ds, st.column_slices):
            tp = term.predict(d, st.alpha[sl], forces=bool(want_forces), virial=want_virial)
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
        return p

    def _uncertainty(self, p: Prediction, ds: list, calibrated: bool) -> None:
        """DTC predictive standard deviations of the GP part (latent, noise-free), into ``p``.

        var = k** − kᵀ K_MM⁻¹ k + kᵀ (K_MM + K_MN Σ⁻¹ K_NM)⁻¹ k, each term by
        triangular solves with the Cholesky factors of K_MM and the QR factor
        R; k** sums the terms' prior variances (terms are independent a priori).
        """
        st = self.state_
        with_forces = all(getattr(d, "pair_gradients", True) is not None for d in ds)
        rows = self.design_rows([[d] for d in ds], forces=with_forces, virial=False, local=True)
        priors = [t.prior_variance(d, forces=with_forces) for t, d in zip(st.terms, ds)]
        R = st.R
        var_local = sum(pr.local_eV2 for pr in priors) - sgp.nystrom(rows.local, st.kmm_chol) \
            + sgp.posterior(rows.local, R)
        var_E = sum(pr.energy_eV2 for pr in priors) - sgp.nystrom(rows.energy, st.kmm_chol)[0] \
            + sgp.posterior(rows.energy, R)[0]
        p.energy_std = float(np.sqrt(max(var_E, 0.0)))
        p.local_energy_std = np.sqrt(np.clip(var_local, 0, None))
        if with_forces and rows.gradient is not None:
            prior_f = sum(pr.forces_eV2_per_A2 for pr in priors).ravel()
            var_F = prior_f - sgp.nystrom(rows.gradient, st.kmm_chol) + sgp.posterior(rows.gradient, R)
            p.forces_std = np.sqrt(np.clip(var_F, 0, None)).reshape(-1, 3)
        cal = st.calibration
        if calibrated and cal:
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


def _count(items) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for it in items:
        out[it] = out.get(it, 0) + 1
    return out
