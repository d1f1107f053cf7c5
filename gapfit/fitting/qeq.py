"""The ``charges="qeq"`` step of a fit: electronegativities fitted to reference charges through the QEq solve.

For every frame with reference charges y (``initial_charges``, e.g.
Hirshfeld; or, for frames without them, the per-species
``reference_charges`` of the settings), the equilibrated charges are linear
in the weights α of the electronegativity GP (:mod:`gapfit.qeq`):

    q = −P K α + Q b,

K the frame's kernel rows against the χ term's sparse points. So the
weights are a sparse-GP regression of y − Q b on the rows −P K, solved by
the fit's own machinery: one QR factor of the weighted rows
(:class:`gapfit.hyper.GroupedQR`, noise group ``charges``), the prior rows
of K_MM, and the marginal likelihood maximised over δ_χ and σ_q
(:func:`gapfit.hyper.maximise`). P depends on the hardness J, so J (one per
species, when not given) is chosen by maximising that same maximised
likelihood over log J (Nelder–Mead; each step rebuilds the rows from cached
Coulomb matrices and kernel rows, without descriptors; on a seeded sample of
frames of at most :data:`HARDNESS_SEARCH_ATOMS` atoms, the weights then on
all). The short-range
terms are then fitted to what the electrostatic energy of the predicted
charges leaves (the pipeline adds the :class:`gapfit.qeq.QEqBaseline` to
the baseline's parts).

Frames with neither reference charges nor ``reference_charges`` for all
their species contribute no charge rows (their energies, forces and
virials still fit the short-range terms); a fit where no frame has charges
is refused with an InputError that says what to give.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import scipy.optimize
from ase import Atoms
from ase.data import chemical_symbols

from .. import hyper, sgp
from ..electrostatics import coulomb_matrix
from ..errors import InputError, NumericalError
from ..params import species_number
from ..qeq import (DEFAULT_ELECTRONEGATIVITY, DEFAULT_HARDNESS, Equilibration, QEqBaseline, default_widths,
                   total_charge)
from ..terms import build_terms

log = logging.getLogger("gapfit")

#: Keys of the ``coulomb`` settings that only charge equilibration reads.
QEQ_KEYS = ("hardness", "electronegativity", "charge_sigma", "reference_charges")
#: Starting noise level of the reference charges (e) before the likelihood sets it, and its floor.
DEFAULT_CHARGE_SIGMA = 0.01
CHARGE_SIGMA_FLOOR = 1e-4
#: Starting δ of the electronegativity GP (eV/e); the likelihood moves it within a factor 1e4.
DEFAULT_CHI_DELTA = 1.0
#: The range a fitted hardness J is kept in (eV/e²): the Gaussian self-energy K_E/(√π σ) already adds
#: 10-50 eV/e² to the diagonal, so J below 1e-3 is indistinguishable from 0.
HARDNESS_RANGE = (1e-3, 1e3)
#: The search over J uses the charges of at most this many atoms (a seeded sample of whole frames); the
#: weights are then fitted on all. Each step of the search factorises all its rows once more.
HARDNESS_SEARCH_ATOMS = 3000


@dataclass
class QEqSettings:
    """What the charge fit needs from the estimator's ``coulomb`` settings (all optional there)."""

    widths_A: Optional[Dict[int, float]] = None          # None: covalent radii
    accuracy: float = 1e-6
    hardness: Optional[Dict[int, float]] = None          # None: maximise the likelihood over J
    electronegativity: Dict[str, Any] = field(default_factory=dict)
    charge_sigma: float = DEFAULT_CHARGE_SIGMA
    reference_charges: Optional[Dict[int, float]] = None

    @classmethod
    def of(cls, coulomb: Optional[Mapping[str, Any]], species: List[int]) -> "QEqSettings":
        """The settings from the estimator's ``coulomb`` mapping (checked by :mod:`gapfit.params`)."""
        c = dict(coulomb or {})
        if c.get("screening") is not None:
            raise InputError("coulomb screening is not available with charge equilibration: the equilibrated "
                             "charges interact at every distance (remove screening, or use fixed charges)",
                             param="coulomb")
        width = c.get("width")
        if width is None:
            widths = default_widths(species)
        elif isinstance(width, Mapping):
            widths = {species_number(k): float(v) for k, v in width.items()}
        else:
            widths = {z: float(width) for z in species}
        per_species = (lambda m: None if m is None else {species_number(k): float(v) for k, v in m.items()})
        return cls(widths_A=widths, accuracy=float(c.get("accuracy") or 1e-6), hardness=per_species(c.get("hardness")),
                   electronegativity=dict(c.get("electronegativity") or {}),
                   charge_sigma=float(c.get("charge_sigma") or DEFAULT_CHARGE_SIGMA),
                   reference_charges=per_species(c.get("reference_charges")))


def reference_charges(atoms: Atoms, settings: QEqSettings, where: str) -> Optional[np.ndarray]:
    """The frame's reference charges: its ``initial_charges``, else the settings' per species, else None."""
    if "initial_charges" in atoms.arrays:
        q = np.asarray(atoms.arrays["initial_charges"], dtype=float)
        if q.shape != (len(atoms),) or not np.all(np.isfinite(q)):
            raise InputError(f"{where}: 'initial_charges' must be one finite number per atom (e)", param="charges")
        return q
    table = settings.reference_charges
    if table and all(z in table for z in atoms.numbers.tolist()):
        return np.array([table[z] for z in atoms.numbers.tolist()], dtype=float)
    return None


class ChargeData:
    """Per frame with reference charges: kernel rows K (at δ₀), Coulomb matrix, species index, targets, total."""

    def __init__(self, frames: List[Atoms], refs: List[np.ndarray], term, species: List[int], settings: QEqSettings):
        self.species = list(species)
        descs = term.compute(frames, gradients=False)
        self.descs = descs
        self.term = term
        self.frames, self.refs = frames, refs
        self.Q = [total_charge(a) for a in frames]
        index = {z: k for k, z in enumerate(self.species)}
        self.kind = [np.array([index[z] for z in a.numbers.tolist()]) for a in frames]
        self.C = []
        for a in frames:
            w = np.array([settings.widths_A[z] for z in a.numbers.tolist()])
            self.C.append(coulomb_matrix(a, w, accuracy=settings.accuracy)[0])
        self.K: List[np.ndarray] = []

    def kernel_rows(self) -> None:
        """K of every frame, once the sparse points and δ₀ are set."""
        rows = self.term.design_rows(self.descs, forces=False, virial=False, local=True)
        start = rows.atom_start
        self.K = [rows.local[start[f]:start[f + 1]] for f in range(len(self.frames))]

    def rows(self, J: np.ndarray, frames: Optional[np.ndarray] = None):
        """(design rows −P K, targets y − Q b) of the frames (default all), stacked, at hardness J per species."""
        A, b = [], []
        for f in (range(len(self.frames)) if frames is None else frames):
            C, kind, K, y, Q = self.C[f], self.kind[f], self.K[f], self.refs[f], self.Q[f]
            eq = Equilibration(C, J[kind])
            A.append(-eq.project(K))
            b.append(y - eq.offset(Q))
        return np.vstack(A), np.concatenate(b)


def _hardness(log_J: np.ndarray) -> np.ndarray:
    """J (eV/e²) from the optimiser's log J, held in :data:`HARDNESS_RANGE`."""
    return np.exp(np.clip(log_J, *np.log(HARDNESS_RANGE)))


def fit_qeq(frames: List[Atoms], where: List[str], species: List[int], settings: QEqSettings, *, seed: int,
            jitter: float) -> QEqBaseline:
    """The fitted :class:`gapfit.qeq.QEqBaseline` of the frames (see the module docstring)."""
    t0 = time.perf_counter()
    species = sorted(int(z) for z in species)
    missing = [chemical_symbols[z] for z in species if z not in settings.widths_A]
    if missing:
        raise InputError(f"coulomb width has no Gaussian width for {', '.join(missing)}: give every species a width "
                         "(Å), or leave width out for covalent radii", param="coulomb")
    with_q, refs = [], []
    for a, w in zip(frames, where):
        y = reference_charges(a, settings, w)
        if y is not None:
            with_q.append(a)
            refs.append(y)
    if not with_q:
        raise InputError("charges qeq: no training frame has reference charges. Give per-atom charges as "
                         "'initial_charges' in the frames (e.g. Hirshfeld charges in the extended XYZ), or per-species "
                         "reference charges in the config (coulomb: {reference_charges: {Na: 1.0, Cl: -1.0}}); "
                         "without any, use fixed charges (--coulomb learn)", param="charges")
    spec = {**DEFAULT_ELECTRONEGATIVITY, **settings.electronegativity}
    term = build_terms([spec], where="coulomb electronegativity")[0]
    term.check_settings()
    term.bind(species)
    data = ChargeData(with_q, refs, term, species, settings)
    summary = term.select_sparse([data.descs], seed=seed)
    term.set_delta(DEFAULT_CHI_DELTA)
    data.kernel_rows()
    kmm_chol = sgp.kmm_cholesky(term.kmm_blocks(), jitter, names=[f"electronegativity block {b + 1}"
                                                                  for b in range(len(term.kmm_blocks()))])

    # the frames whose charges choose J: all, or a seeded sample of about HARDNESS_SEARCH_ATOMS atoms
    order = np.random.default_rng(seed).permutation(len(with_q))
    sizes = np.cumsum([len(with_q[f]) for f in order])
    search = np.sort(order[:max(1, int(np.searchsorted(sizes, HARDNESS_SEARCH_ATOMS, side="right")))])

    def problem_at(J: np.ndarray, frames: Optional[np.ndarray] = None):
        A, b = data.rows(J, frames)
        grouped = hyper.GroupedQR(term.n_columns, 1)
        s = settings.charge_sigma
        grouped.add("charges", A / s, b / s, np.full(len(b), s))
        return hyper.LikelihoodProblem.from_groups(grouped, kmm_chol, [0] * len(kmm_chol), [term.delta_eV])

    # each maximisation over δ and σ starts where the previous one ended (a nearby J has a nearby optimum)
    warm = np.zeros(2)

    def best(J: np.ndarray, quiet: bool = False, frames: Optional[np.ndarray] = None):
        problem = problem_at(J, frames)
        # the search over J maximises many times: only the final maximisation may warn (σ at its floor)
        level = log.level
        if quiet:
            log.setLevel(logging.ERROR)
        try:
            res = hyper.maximise(problem.rebase(warm), sigma_floor={"charges": CHARGE_SIGMA_FLOOR})
        finally:
            log.setLevel(level)
        res.x = res.x + warm          # log scales relative to the problem's own start
        if np.isfinite(res.lml_final):
            warm[:] = res.x
        return problem, res

    evaluations = [0]

    def objective(log_J: np.ndarray) -> float:
        evaluations[0] += 1
        try:
            return -best(_hardness(log_J), quiet=True, frames=search)[1].lml_final
        except NumericalError:
            return np.inf

    fixed = settings.hardness is not None
    if fixed:
        absent = [chemical_symbols[z] for z in species if z not in settings.hardness]
        if absent:
            raise InputError(f"coulomb hardness has no value for {', '.join(absent)}: give every species a hardness "
                             "(eV/e²), or leave hardness out to fit it", param="coulomb")
        J = np.array([settings.hardness[z] for z in species])
    else:
        start = np.full(len(species), np.log(DEFAULT_HARDNESS))
        # tolerances: J to about 5 %, log p to 0.05 (a likelihood ratio of 1.05)
        res = scipy.optimize.minimize(objective, start, method="Nelder-Mead",
                                      options={"xatol": 0.05, "fatol": 0.05, "maxfev": 40 * len(species)})
        J = _hardness(res.x)
    problem, res = best(J)
    R_ab, chol, _, _ = problem.assemble(res.x)
    alpha, R, _ = sgp.solve_from_factor(R_ab)
    scale = float(np.exp(res.x[0]))
    term.set_delta(DEFAULT_CHI_DELTA * scale)
    sigma_q = settings.charge_sigma * float(np.exp(res.x[1]))
    A, b = data.rows(J)
    residual = A @ (alpha * scale ** 2) - b
    fit = {"frames_with_charges": len(with_q), "frames": len(frames), "atoms_with_charges": int(len(b)),
           "hardness_eV_per_e2": {chemical_symbols[z]: float(v) for z, v in zip(species, J)},
           "hardness_fitted": not fixed, "hardness_search_frames": 0 if fixed else int(len(search)),
           "delta_eV_per_e": term.delta_eV, "charge_sigma_e": sigma_q,
           "log_marginal_likelihood": float(res.lml_final), "train_charge_rmse_e": float(np.sqrt(np.mean(residual ** 2))),
           "train_charge_mae_e": float(np.mean(np.abs(residual))), "sparse_points": summary,
           "likelihood_evaluations": evaluations[0], "seconds": round(time.perf_counter() - t0, 3)}
    baseline = QEqBaseline(term, alpha, dict(zip(species, J)), settings.widths_A, chol, R,
                           accuracy=settings.accuracy, fit=fit)
    log.info("charge equilibration fitted on %d frames (%d atoms) in %.1f s: training charge RMSE %.4g e; %s",
             len(with_q), len(b), fit["seconds"], fit["train_charge_rmse_e"], baseline.describe())
    return baseline
