"""The GAP estimator: a fixed baseline plus a sum of terms, solved in one sparse GP.

A thin scikit-learn estimator: its parameters are declared once, in
``__init__``'s signature (``get_params``, ``set_params`` and
``sklearn.base.clone`` follow from it); :meth:`GAP.fit` hands them to the fit
pipeline (:func:`gapfit.fitting.fit_state`), which builds a
:class:`gapfit.state.FittedState` aside and returns it complete, and only
then does the estimator publish it as ``state_``; prediction and
uncertainty are functions of that state (:mod:`gapfit.predictor`); the
model file is :mod:`gapfit.model_file`.

Flow: frames -> labels (:mod:`.data`) -> baseline subtracted
(:mod:`.baselines`) -> each term's descriptors and sparse points
(:mod:`.terms`) -> design rows streamed into one QR factor (:mod:`.sgp`) ->
weights, held with everything else fitted in one :class:`FittedState`.
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from ase import Atoms
from sklearn.base import BaseEstimator

from . import hyper, model_file, predictor
from .data import LabelReader, Labels
from .errors import InputError, NotFittedError
from .executors import make_executor
from .fitting import pipeline
from .fitting.hygiene_pass import report_of_frames
from .fitting.plan import FitPlan, sum_of
from .fitting.recipe import DEFAULT_THREE_BODY, DEFAULT_TWO_BODY, SOAP_PARAMS, default_terms, make_terms
from .fitting.rows import chunk_parts, new_counts, subtract_baseline
from .fitting.survey import data_summary
from .noise import NoiseModel
from .params import check_params
from .prediction import Prediction
from .state import FittedState
from .stream import as_source
from .terms import Term
from .terms.base import TermRows

def _state_view(name: str, doc: str) -> property:
    """A read-only attribute of the estimator that reads ``state_.<name>`` (the fitted views, as in scikit-learn)."""
    return property(lambda self: getattr(self.state_, name), doc=doc)


__all__ = ["GAP", "FittedState", "load", "default_terms", "SOAP_PARAMS", "DEFAULT_TWO_BODY", "DEFAULT_THREE_BODY"]


class _EstimatorContract(BaseEstimator):
    """scikit-learn's estimator contract as GAP keeps it: parameters in signature order, clone, check_is_fitted."""

    #: parameters that ``clone`` shares rather than deep-copies
    _shared_params: tuple = ()

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        """The constructor parameters, as scikit-learn's, in the order of ``__init__``'s signature.

        (scikit-learn sorts them by name; the signature's order keeps the
        check of :meth:`fit`, the log's settings line and the model file's
        parameters in the order they are documented.)
        """
        params = super().get_params(deep=deep)
        order = [name for name in inspect.signature(type(self).__init__).parameters if name in params]
        return {**{name: params[name] for name in order}, **params}

    def __sklearn_clone__(self) -> "_EstimatorContract":
        """What ``sklearn.base.clone`` returns: an unfitted estimator with copies of the parameters.

        The parameters of ``_shared_params`` are shared, not copied: GAP's
        Δ-learning calculator (``baseline``) may hold what cannot be copied (a
        lock, a process, an open file), and a fit never changes it.
        """
        params = self.get_params(deep=False)
        shared = {name: params.pop(name) for name in self._shared_params}
        return type(self)(**copy.deepcopy(params), **shared)

    def __sklearn_is_fitted__(self) -> bool:
        # what sklearn.utils.validation.check_is_fitted asks: solved weights, not merely a state
        state = getattr(self, "state_", None)
        return state is not None and state.is_fitted


class GAP(_EstimatorContract):
    """Gaussian Approximation Potential: a fixed baseline plus a sum of terms in one sparse GP.

    All parameters are keyword-only, stored as given and checked in
    :meth:`fit`. The first sentence of each parameter's entry below is also
    its help in ``gapfit fit --help``. The attributes exist after
    :meth:`fit` or :func:`gapfit.load`.

    Parameters
    ----------
    terms : list of dict or Term, or str, default=None
        The model's terms, as a list of term settings or a gap_fit descriptor string.
        Each term is ``{"type": "soap" | "distance_2b" | "angle_3b", **settings}``
        (see :mod:`gapfit.terms` and docs/gap_fit.md); the string is written
        as gap_fit writes it (``"distance_2b cutoff=5.0 delta=2.0 : soap ..."``).
        None: the default recipe, whose SOAP term takes the top-level SOAP
        settings below (``cutoff`` to ``sparse_method``).
    cutoff : float, default=5.0
        SOAP cutoff radius in Å.
        This and the SOAP settings below up to ``dscribe_mode`` are settings
        of the default recipe's SOAP term, used only with ``terms=None``; see
        :class:`gapfit.descriptors.SoapSettings`.
    cutoff_transition_width : float, default=1.0
        Width in Å of the smooth cutoff region of the SOAP term.
        Neighbour contributions go to zero over this width below ``cutoff``.
        Only with ``terms=None``.
    n_max : int, default=8
        Number of radial basis functions of the SOAP term.
        Only with ``terms=None``.
    l_max : int, default=8
        Highest angular channel of the SOAP term.
        Only with ``terms=None``.
    atom_sigma : float, default=0.5
        Width in Å of the Gaussian the SOAP term puts on each neighbour.
        Only with ``terms=None``.
    backend : {"featomic", "dscribe"}, default="featomic"
        SOAP backend: featomic (smooth) or dscribe.
        Only with ``terms=None``.
    dscribe_mode : {"smooth", "analytic"}, default="smooth"
        With the dscribe backend only: smooth, or analytic, which is fast but not smooth.
        Only with ``terms=None``.
    zeta : float, default=4.0
        Kernel exponent of the default SOAP term.
        Only with ``terms=None``.
    delta : float or None, default=None
        Kernel scale δ in eV of the default SOAP term, by default from the data.
        None: from the data. Only with ``terms=None``.
    n_sparse : int or dict {Z or symbol: int} or None, default=None
        Sparse points per species of the default SOAP term, by default min(environments, 2000).
        One number for every species, or a mapping per species (config file
        or Python only). Only with ``terms=None``.
    sparse_method : {"cur", "fps", "random"}, default="cur"
        How the default SOAP term's sparse points are chosen: cur, fps or random.
        Only with ``terms=None``.
    sigma_energy : float, default=0.003
        Energy noise in eV per atom.
        A frame of N atoms gets σ_E·√N.
    sigma_forces : float, default=0.05
        Force-component noise in eV/Å.
    sigma_virial : float, default=0.05
        Virial noise in eV per atom.
        Each virial component of a frame of N atoms gets σ_V·√N.
    config_type_sigma : dict or None, default=None
        Noise levels per config_type, overriding the three above.
        Written ``{config_type: {"energy": .., "forces": .., "virial": ..}}``.
        Per-frame ``info`` keys ``energy_sigma``, ``force_sigma`` and
        ``virial_sigma`` override both (gap_fit's names).
    e0 : dict {Z or symbol: eV} or None, default=None
        Energy in eV of an isolated atom per species.
        None: from isolated-atom frames when present, else least squares on
        the training energies.
    core_repulsion : bool, default=True
        Add ZBL screened nuclear repulsion to the baseline.
        It is switched off between radii chosen per species pair (see
        ``core_radii``), so it acts only below what the data cover.
    core_radii : {"data", "covalent"}, default="data"
        Where the radii of the ZBL core repulsion come from: data or covalent.
        "data": the training data's shortest distance per species pair;
        "covalent": 0.75 × the sum of covalent radii (what the on-the-fly
        learner uses, since its first frame is no guide).
    charges : dict {Z or symbol: e}, {"initial_charges", "learn", "qeq"} or None, default=None
        Charges of a Coulomb baseline (long-range electrostatics): per species, from the frames, learned or equilibrated.
        A mapping fixes the charge of every species of the data, in units
        of e (``{"Na": 1.0, "Cl": -1.0}``); ``"initial_charges"`` reads each
        frame's per-atom ``initial_charges`` array, which every frame the
        model fits or predicts must then carry; ``"learn"`` learns one charge
        per species from the energies and forces, constrained by each frame's
        total charge (``charge`` in its info, 0 when absent). The baseline is
        an Ewald sum in 3D-periodic cells and a direct sum in finite systems
        (slabs are refused); see docs/electrostatics.md. ``"qeq"``: charge
        equilibration, the charges of every frame minimising a QEq energy
        with electronegativities from a Gaussian process fitted to the
        frames' reference ``initial_charges`` (docs/qeq.md). None: no Coulomb
        baseline. On the command line: ``--coulomb "Na=1 Cl=-1"``,
        ``--coulomb initial_charges``, ``--coulomb learn`` or ``--coulomb qeq``.
    coulomb : dict or None, default=None
        Settings of the Coulomb baseline: Gaussian widths, Ewald accuracy and short-range screening.
        Written ``{"width": Å or {species: Å} or None, "accuracy": 1e-6,
        "screening": [r_in, r_out] or None}``, every key optional: ``width``
        smears each charge into a Gaussian of that standard deviation (None:
        point charges); ``accuracy`` is the target error of the Ewald sum,
        relative to the energy scale of the charges (default 1e-6; finite
        systems are summed exactly); ``screening`` takes the Coulomb
        interaction away below ``r_in`` and switches it on smoothly up to
        ``r_out`` (Å), so that the local terms learn what is near. Needs
        ``charges``. With ``charges="qeq"`` also ``hardness`` ({species:
        eV/e²}, fixed; default fitted), ``electronegativity`` (the χ term's
        SOAP settings), ``charge_sigma`` (e) and ``reference_charges``
        ({species: e} for frames without ``initial_charges``); widths default
        to covalent radii there (docs/qeq.md).
    core_file : str or None, default=None
        Tabulated pair potential file added to the baseline, in gap_fit's ``core_param_file`` role.
        The file's format is in :mod:`gapfit.baselines`.
    baseline : ASE calculator or None, default=None
        Δ-learning: the ASE calculator whose predictions the model corrects.
        The model fits the difference between the labels and this
        calculator, and adds it back at prediction.
    jitter : float, default=1e-8
        Jitter added to the diagonal of each K_MM block, relative to its mean diagonal.
    seed : int, default=0
        Seed of the sparse-point selection and of the choice of held-out calibration frames.
        Same data and seed, same model.
    calibration_fraction : float, default=0.1
        Fraction of the frames held out to calibrate the predicted standard deviations, 0 for none.
        At most 200 frames are held out, and at least 10 frames are needed.
        They are held out while the model is first solved, to fit the scales
        that calibrate the predicted standard deviations; their rows are then
        added to the factorisation, so the final weights use all the data.
    energy_key : str or None, default=None
        Key in the frames' info of the energy label, by default the calculator's energy.
        Give it when the label is not the calculator's.
    forces_key : str or None, default=None
        Key in the frames' arrays of the force label, by default the calculator's forces.
        Give it when the label is not the calculator's.
    stress_key : str or None, default=None
        Key in the frames' info of the stress label, by default the calculator's stress.
        Give it when the label is not the calculator's.
    optimize : bool or {"global", "config_type"}, default=False
        Choose each term's δ and the noise levels by maximising the log marginal likelihood.
        This runs before the final solve (:mod:`gapfit.hyper`):
        ``True``/``"global"`` scales σ_E, σ_F and σ_V (each by one factor,
        keeping any per-config_type and per-frame ratios), ``"config_type"``
        scales them per config_type. Costs no descriptor work.
    optimize_delta : bool, default=True
        Whether the optimisation also moves each term's δ.
    sigma_floor : dict or None, default=None
        With ``optimize``: the smallest σ the optimisation may choose, per kind.
        Written ``{"energy": eV/atom, "forces": eV/Å, "virial": eV/atom}``;
        0 removes a kind's floor. None, and kinds not given:
        :data:`gapfit.hyper.SIGMA_FLOOR`. A σ that ends on its floor is
        logged as a warning (docs/hyperparameters.md).
    hygiene : bool, default=True
        Compute each training frame's leverage and leave-one-out residuals after the fit.
        They are stored in ``hygiene_`` (see :mod:`gapfit.hygiene`). The design
        rows are kept in a temporary file for this when they fit in
        ``hygiene_spool_gb``, else computed again.
    hygiene_spool_gb : float, default=4.0
        Largest temporary file of design rows, in GB, for the hygiene pass.
    atoms_per_block : int or None, default=None
        Atoms per block of frames, the unit of work of a fit (one Dask task), by default about 6000.
        The blocks (and so the model's floating-point operations) depend on
        this and the data, not on the number of workers.
        Each block adds one merge of (M+1)² factors. None: four chunks of
        descriptor work (about 6000 atoms for SOAP at the default settings).
    sparse_candidates : int or None, default=20000
        Environments sampled per term and species to choose the sparse points from.
        Per species tuple for terms of several species. They are a seeded
        uniform sample of the training environments, so that the memory of
        the selection does not grow with the data (8 × features bytes each: 50 MB for Si SOAP).
        None: all environments.
    progress : bool, default=False
        Show progress bars.

    Attributes
    ----------
    state_ : FittedState
        Everything fitted; ``species_``, ``e0_``, ``terms_``, ``alpha_``,
        ``calibration_`` and ``training_summary_`` read from it.
    hygiene_ : gapfit.hygiene.HygieneReport
        After a fit with ``hygiene=True``: each training frame's leverage and
        leave-one-out z-scores, worst first.
    """

    _shared_params = ("baseline",)

    def __init__(self, *, terms: Union[str, Sequence, None] = None,
                 cutoff: float = 5.0, cutoff_transition_width: float = 1.0,
                 n_max: int = 8, l_max: int = 8, atom_sigma: float = 0.5,
                 backend: str = "featomic", dscribe_mode: str = "smooth",
                 zeta: float = 4.0, delta: Optional[float] = None,
                 n_sparse: Union[int, Mapping, None] = None, sparse_method: str = "cur",
                 sigma_energy: float = 0.003, sigma_forces: float = 0.05,
                 sigma_virial: float = 0.05, config_type_sigma: Optional[Mapping] = None,
                 e0: Optional[Mapping] = None, core_repulsion: bool = True, core_radii: str = "data",
                 charges: Union[Mapping, str, None] = None, coulomb: Optional[Mapping] = None,
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
        self.charges = charges
        self.coulomb = coulomb
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

    def _validate(self) -> None:
        """Check the parameters (what :meth:`fit` does first)."""
        check_params(self.get_params(deep=False))
        if self.terms is not None:
            defaults = type(self)().get_params(deep=False)
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
        if molecular is None:
            molecular = bool(frames) and not any(bool(np.any(a.pbc)) for a in frames)
        return make_terms(self.get_params(deep=False), molecular)

    def label_reader(self) -> LabelReader:
        """How this model reads the labels of frames (its ``energy_key``, ``forces_key``, ``stress_key``)."""
        return LabelReader.of(self)

    def noise_model(self) -> NoiseModel:
        """The σ of each observation (:class:`gapfit.noise.NoiseModel`) this model's settings give."""
        return NoiseModel.of(self)

    # ----------------------------------------------------- fitted state views
    def _check_fitted(self) -> None:
        predictor.check_fitted(getattr(self, "state_", None))

    species_ = _state_view("species", "Atomic numbers the model knows (list of int).")
    e0_ = _state_view("e0", "Isolated-atom energy per species, eV ({Z: eV}).")
    terms_ = _state_view("terms", "The fitted terms, in column order (list of Term).")
    alpha_ = _state_view("alpha", "Weights of all terms, concatenated (ndarray (M,)).")
    calibration_ = _state_view("calibration", "Scales of the predicted stds from held-out frames (dict or None).")
    training_summary_ = _state_view("training", "Summary of the training data and fit (dict).")
    n_sparse_total_ = _state_view("n_columns", "Sparse points over all terms (int).")

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
        the data cannot be used; the model is then left as it was (a fit
        publishes its state only when complete).
        """
        self._validate()
        state, hygiene = pipeline.fit_state(self.get_params(deep=False), as_source(frames), make_executor(client))
        self.state_, self.hygiene_ = state, hygiene
        return self

    def check_data(self, frames) -> dict:
        """Check the settings and frames as :meth:`fit` would, without computing descriptors.

        ``frames`` as for :meth:`fit`. Raises :class:`gapfit.errors.InputError`
        naming the setting, or the file, frame and field, at fault. Returns a
        summary: frame and atom counts, species, label counts and frames per
        config_type.
        """
        self._validate()
        return data_summary(self.get_params(deep=False), as_source(frames))

    def prepare(self, frames: Sequence[Atoms]) -> List[Labels]:
        """Check the data and settings and start a new fitted state (no sparse points, no weights yet).

        Fixes the species, the baseline (e0 fitted after the other baseline
        parts), and the terms (descriptors bound, δ set). Returns the labels
        with the baseline's non-e0 parts subtracted (what the terms are fitted
        to; e0 is subtracted with the design rows). Used by the incremental
        learner; :meth:`fit` does the same in streamed passes.
        """
        self._validate()
        self.state_, residual = pipeline.prepare_state(self.get_params(deep=False), list(frames))
        return residual

    def residual_labels(self, frames: Sequence[Atoms], labels: Sequence[Labels],
                        parts: Optional[Sequence] = None) -> List[Labels]:
        """Labels minus the baseline's non-e0 parts (core repulsion, tabulated pair, Δ-learning calculator).

        ``parts``: those parts (default: the fitted baseline's).
        """
        baseline = self._plan().residual_baseline if parts is None else sum_of(parts)
        return subtract_baseline(baseline, frames, labels)

    def _plan(self, *, solved: bool = False) -> FitPlan:
        """The fit plan of this model's state (what a pass over frames needs)."""
        return FitPlan.of_state(self.state_, self.label_reader(), self.noise_model(), self.seed, solved=solved)

    def descriptors(self, frames: Sequence[Atoms], *, gradients: bool, layout: str = "pairs") -> List[list]:
        """Each term's descriptors of ``frames``: one list per term, one entry per frame.

        ``layout="blocks"``: gradients in the form cheapest for prediction
        alone (see :meth:`Term.compute`); design rows, force variances and
        committees need the default ``"pairs"``.
        """
        return self.state_.descriptors(frames, gradients=gradients, layout=layout)

    def design_rows(self, descs: List[list], *, forces: bool, virial: bool, local: bool = False) -> TermRows:
        """All terms' design rows side by side (columns in the model's order) from :meth:`descriptors`."""
        return self.state_.design_rows(descs, forces=forces, virial=virial, local=local)

    def training_rows(self, frames: Sequence[Atoms], labels: Sequence[Labels], descs: Optional[List[list]] = None,
                      counts: Optional[dict] = None):
        """Weighted rows (A, b) of the stacked system for labelled frames.

        ``labels`` are residual labels (:meth:`residual_labels`); e0 is
        subtracted here. ``descs`` from :meth:`descriptors` (with gradients)
        when already computed.
        """
        parts = chunk_parts(self._plan(), frames, labels, descs, counts if counts is not None else new_counts())
        if not parts:
            return np.zeros((0, self.state_.n_columns)), np.zeros(0)
        return np.vstack([p.A for p in parts]), np.concatenate([p.b for p in parts])

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

    def hygiene_report(self, frames: Sequence[Atoms], not_fitted: Optional[Sequence[int]] = None):
        """Leverage and leave-one-out z-scores of each labelled frame under this model.

        ``frames`` are the training frames, in the order of the fit.
        ``not_fitted``: positions of frames among them that the fit left out
        (default: those the model records as dropped); their residuals are
        reported out of sample. Computes the descriptors again; see
        :mod:`gapfit.hygiene`. Returns a :class:`gapfit.hygiene.HygieneReport`.
        """
        self._check_fitted()
        return report_of_frames(self._plan(solved=True), self.state_.training, list(frames), not_fitted,
                                self.progress)

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
        return predictor.predict(getattr(self, "state_", None), frames, forces=forces, stress=stress,
                                 uncertainty=uncertainty, calibrated=calibrated, progress=self.progress)

    def check_frames(self, frames: Sequence[Atoms]) -> None:
        """Raise InputError naming the frame and field when a frame cannot be predicted by this model."""
        predictor.check_frames(getattr(self, "state_", None), frames)

    def predict_descriptors(self, atoms: Atoms, descriptors: Sequence[Any], *, forces: bool = True,
                            stress: bool = True, uncertainty: Union[bool, str, Sequence[str], None] = False,
                            calibrated: bool = True) -> Prediction:
        """One frame's prediction from its descriptors (one entry per term, from :meth:`descriptors`).

        What :meth:`predict` does per frame, for callers that reuse the
        descriptors (a posterior committee evaluates its members on the same
        ones). The descriptors need gradients for forces, stress or force
        uncertainties. ``uncertainty`` as in :meth:`predict`.
        """
        return predictor.predict_descriptors(self.state_, atoms, descriptors, forces=forces, stress=stress,
                                             uncertainty=uncertainty, calibrated=calibrated)

    # ------------------------------------------------------------------- files
    def save(self, path: str) -> None:
        """Write the model atomically to ``path`` (see docs/model-format.md)."""
        self._check_fitted()
        model_file.write(self.state_, self.get_params(deep=False), path)

    @classmethod
    def from_state(cls, params: Mapping[str, Any], state: FittedState) -> "GAP":
        """A fitted model of these parameters and this state (what :func:`load` builds)."""
        model = cls(**params)
        model.state_ = state
        return model


def load(path: str, baseline: Any = None) -> GAP:
    """Load a model written by :meth:`GAP.save`; never executes or imports code (see :func:`gapfit.model_file.read`)."""
    params, state = model_file.read(path, baseline=baseline)
    return GAP.from_state(params, state)
