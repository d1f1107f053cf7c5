"""Hyperparameters from the data: the sparse GP's log marginal likelihood from
stored factors, and its maximisation over each term's δ and the noise levels.

The fit keeps one QR factor per *noise group* (a kind of observation:
energy, forces, virial; optionally per ``config_type``) of the data rows
weighted with the initial noise levels and computed with the initial δ, and
the Cholesky factors of K_MM. Changing a group's noise by a factor ``s``
divides its rows by ``s``; changing a term's δ by a factor ``c`` multiplies
its columns of K_NM by ``c²`` and its block of K_MM's factor by ``c``. Both
are rescalings of the stored factors (the QR of ``A·D`` is ``Q·(R·D)``), so a
new set of hyperparameters costs one merge of (groups + 1) triangular
matrices with M + 1 columns (a group with few rows keeps its rows, cheaper
still): no descriptors, no data rows.

For the model ``y = K_NM α + ε``, ``α ~ N(0, K_MM⁻¹)``, ``ε ~ N(0, Σ)`` (the
DTC/SoR sparse GP, whose evidence is that of the covariance
``Σ + K_NM K_MM⁻¹ K_MN``), with ``R`` the triangular factor of
``[Σ^-½ K_NM | Σ^-½ y ; Lᵀ | 0]`` and ``K_MM = L Lᵀ``:

    log p(y) = -½ r² - Σ log|R_ii| + Σ log L_ii - Σ log σ_row - n/2 log 2π

where ``r = R[M, M]`` is the norm of the stacked residual (the data misfit
plus the weights' prior penalty). Its gradient with respect to the log
scales is analytic (see :meth:`LikelihoodProblem.evaluate`) and costs about
as much as one more evaluation.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.linalg

from . import sgp
from .errors import NumericalError
from .noise import group_key  # noqa: F401  (its home is now gapfit.noise; kept for old imports)

log = logging.getLogger("gapfit")

KINDS = ("energy", "forces", "virial")
#: Noise-level groups: one per kind of observation, or one per kind and config_type.
SIGMA_MODES = ("global", "config_type")


class GroupedQR:
    """Streamed QR factors of the weighted data rows, one per noise group.

    Also counts each group's rows and the sum of the logarithms of their
    noise levels (the ``log|Σ|`` part of the likelihood).
    """

    def __init__(self, n_cols: int, n_groups_expected: int = 3):
        self.n_cols = n_cols
        k = n_cols + 1
        # the buffered rows of all groups together stay near the single-accumulator budget
        self._rows_per_flush = max(3 * k, int(1.5e9 / (8 * k) / max(1, n_groups_expected)))
        self._acc: Dict[str, sgp.QRAccumulator] = {}
        self.n_rows: Dict[str, int] = {}
        self.log_sigma: Dict[str, float] = {}
        self._log_nominal: Dict[str, float] = {}

    def add(self, key: str, A: np.ndarray, b: np.ndarray, sigma_rows: np.ndarray,
            nominal_sigma_rows: Optional[np.ndarray] = None) -> None:
        """Rows ``A`` (already divided by their σ), targets ``b`` (likewise) and the σ of each row.

        ``nominal_sigma_rows``: σ in the units users set it (per atom for
        energies and virials), for reports; default ``sigma_rows``.
        """
        if key not in self._acc:
            self._acc[key] = sgp.QRAccumulator(self.n_cols, rows_per_flush=self._rows_per_flush)
            self.n_rows[key] = 0
            self.log_sigma[key] = 0.0
            self._log_nominal[key] = 0.0
        self._acc[key].add(A, b)
        self.n_rows[key] += len(A)
        self.log_sigma[key] += float(np.sum(np.log(sigma_rows)))
        nominal = sigma_rows if nominal_sigma_rows is None else nominal_sigma_rows
        self._log_nominal[key] += float(np.sum(np.log(nominal)))

    def nominal_sigma(self) -> Dict[str, float]:
        """Geometric mean of each group's nominal σ."""
        return {k: float(np.exp(v / self.n_rows[k])) for k, v in self._log_nominal.items() if self.n_rows[k]}

    def factors(self) -> Dict[str, np.ndarray]:
        """Each group's factor of ``[A | b]``: (M+1) × (M+1) upper triangular, or its rows when fewer."""
        return {key: acc.compact() for key, acc in self._acc.items()}

    def finish(self) -> "GroupedFactors":
        """The compact, picklable result: each group's factor with its counts (the buffers are dropped)."""
        return GroupedFactors(self.n_cols, self.factors(), dict(self.n_rows), dict(self.log_sigma),
                              dict(self._log_nominal))


@dataclass
class GroupedFactors:
    """Per noise group: the factor of ``[A | b]`` (triangle or plain rows), row count, Σ log σ, Σ log nominal σ.

    What a block of frames contributes to a fit; blocks factorised apart
    (on different workers) :meth:`merge` in any order into the factor of
    all their rows (equal up to row signs, :func:`gapfit.sgp.merge_factors`).
    """

    n_cols: int
    _factors: Dict[str, np.ndarray]
    n_rows: Dict[str, int]
    log_sigma: Dict[str, float]
    log_nominal: Dict[str, float]


    def merge(self, other: "GroupedFactors") -> "GroupedFactors":
        """Take in the factors of other rows (in place; returns self)."""
        for g, f in other._factors.items():
            self._factors[g] = sgp.stack_factors(self._factors[g], f) if g in self._factors else f
            self.n_rows[g] = self.n_rows.get(g, 0) + other.n_rows[g]
            self.log_sigma[g] = self.log_sigma.get(g, 0.0) + other.log_sigma[g]
            self.log_nominal[g] = self.log_nominal.get(g, 0.0) + other.log_nominal[g]
        return self

    def factors(self) -> Dict[str, np.ndarray]:
        return dict(self._factors)

    def nominal_sigma(self) -> Dict[str, float]:
        """Geometric mean of each group's nominal σ."""
        return {k: float(np.exp(v / self.n_rows[k])) for k, v in self.log_nominal.items() if self.n_rows[k]}


def log_marginal_likelihood(R_ab: np.ndarray, kmm_chol: Sequence[np.ndarray], n_rows: int,
                            sum_log_sigma: float) -> float:
    """log p(y) of the sparse GP from the factor of the stacked system (see the module docstring).

    ``R_ab``: (M+1) × (M+1) factor of ``[Σ^-½ K_NM | Σ^-½ y ; Lᵀ | 0]``;
    ``kmm_chol``: the blocks of L; ``n_rows``: data rows; ``sum_log_sigma``:
    Σ log σ over the data rows.
    """
    M = R_ab.shape[0] - 1
    r = float(R_ab[M, M])
    diag = np.abs(np.diag(R_ab)[:M])
    if np.any(diag <= 0) or not np.all(np.isfinite(diag)):
        raise NumericalError("the factor is singular: the likelihood is not defined")
    log_det_L = float(sum(np.sum(np.log(np.diag(L))) for L in kmm_chol))
    return float(-0.5 * r * r - np.sum(np.log(diag)) + log_det_L - sum_log_sigma
                 - 0.5 * n_rows * np.log(2 * np.pi))


@dataclass
class LikelihoodProblem:
    """Everything the likelihood needs, at the initial hyperparameters; cheap to rescale.

    Attributes
    ----------
    factors : {group: (M+1, M+1) or (n_rows, M+1)}
        QR factor of each noise group's weighted data rows with their
        targets, or the rows themselves when there are at most (M+1)/2
        (the energies of a molecular set): cheaper to merge and solve with.
    n_rows, log_sigma : {group: ...}
        Rows per group and Σ log σ over them.
    kmm_chol : list of ndarray
        Blocks of the Cholesky factor of K_MM at the initial δ.
    block_term : list of int
        The term each K_MM block belongs to.
    delta0_eV : ndarray (n_terms,)
        The initial δ of each term.
    sigma0 : {group: float}
        The nominal initial noise level of each group (for reports; units of the kind).
    n_targets : int
        Target columns after the M design columns: 1, or several whose fixed
        combination is the target (the learned charges' ``[b₀ | C]``,
        :mod:`gapfit.fitting.charges`); such a problem is rescaled and
        rebased as any other, and evaluated through :meth:`with_targets`.
    """

    factors: Dict[str, np.ndarray]
    n_rows: Dict[str, int]
    log_sigma: Dict[str, float]
    kmm_chol: List[np.ndarray]
    block_term: List[int]
    delta0_eV: np.ndarray
    sigma0: Dict[str, float] = field(default_factory=dict)
    n_targets: int = 1

    def __post_init__(self):
        self.groups = sorted(self.factors)
        self.delta0_eV = np.asarray(self.delta0_eV, dtype=float)
        self.column_term = np.concatenate([np.full(len(L), t, dtype=int)
                                           for L, t in zip(self.kmm_chol, self.block_term)])
        self.M = len(self.column_term)
        self.n_terms = len(self.delta0_eV)

    @classmethod
    def from_groups(cls, grouped: GroupedQR, kmm_chol: Sequence[np.ndarray], block_term: Sequence[int],
                    delta0_eV: Sequence[float], n_targets: int = 1) -> "LikelihoodProblem":
        """The problem of a fit's grouped factors and K_MM factor blocks."""
        return cls(factors=grouped.factors(), n_rows=dict(grouped.n_rows), log_sigma=dict(grouped.log_sigma),
                   kmm_chol=list(kmm_chol), block_term=list(block_term), delta0_eV=np.array(delta0_eV, dtype=float),
                   sigma0=grouped.nominal_sigma(), n_targets=n_targets)

    def with_targets(self, combination: np.ndarray) -> "LikelihoodProblem":
        """The one-target problem whose target column is ``[targets] @ combination`` (length :attr:`n_targets`).

        Exact: each group's factor F has FᵀF = [A | B]ᵀ[A | B], so the rows
        F·diag(I, combination) have the Gram matrix of [A | B·combination].
        """
        combination = np.asarray(combination, dtype=float)
        if combination.shape != (self.n_targets,):
            raise ValueError(f"combination of {combination.shape} for {self.n_targets} target columns")
        M = self.M
        factors = {}
        for g, F in self.factors.items():
            rows = np.hstack([F[:, :M], (F[:, M:] @ combination)[:, None]])
            # a triangle of M + n_targets rows becomes M + n_targets rows of M + 1 columns: triangular again
            factors[g] = sgp.qr_r(rows) if len(rows) > M + 1 else rows
        return LikelihoodProblem(factors=factors, n_rows=dict(self.n_rows), log_sigma=dict(self.log_sigma),
                                 kmm_chol=list(self.kmm_chol), block_term=list(self.block_term),
                                 delta0_eV=self.delta0_eV.copy(), sigma0=dict(self.sigma0))

    def target_factor(self) -> np.ndarray:
        """The last :attr:`n_targets` rows and columns of the factor of the stacked system at this problem's base.

        T with ‖T·combination‖² the weighted squared residual of the least-squares solve for any target
        combination (the prior's rows included): what the charges are fitted to.
        """
        M = self.M
        prior = np.zeros((M, M + self.n_targets))
        prior[:, :M] = sgp.prior_rows(self.kmm_chol)
        R = sgp.merge_factors([prior] + [self.factors[g] for g in self.groups])
        return R[M:, M:]

    def _scaled(self, x: np.ndarray):
        """Group factors and K_MM factor blocks at log scales ``x``, with the σ log scales and δ factors."""
        log_c, log_s = self.split(x)
        c = np.exp(log_c)
        col2 = np.concatenate([c[self.column_term] ** 2, np.ones(self.n_targets)])
        factors = {g: self.factors[g] * (col2 / np.exp(log_s[g]))[None, :] for g in self.groups}
        chol = [L * c[t] for L, t in zip(self.kmm_chol, self.block_term)]
        return factors, chol, log_s, c

    def rebase(self, x: np.ndarray) -> "LikelihoodProblem":
        """The same problem with the hyperparameters at log scales ``x`` as its new starting point."""
        factors, chol, log_s, c = self._scaled(x)
        return LikelihoodProblem(
            factors=factors, n_rows=dict(self.n_rows),
            log_sigma={g: self.log_sigma[g] + self.n_rows[g] * log_s[g] for g in self.groups},
            kmm_chol=chol, block_term=list(self.block_term), delta0_eV=self.delta0_eV * c,
            sigma0={g: v * float(np.exp(log_s.get(g, 0.0))) for g, v in self.sigma0.items()},
            n_targets=self.n_targets)

    def merged(self, grouped: GroupedQR) -> "LikelihoodProblem":
        """This problem with more rows (weighted at this problem's starting hyperparameters) merged in."""
        more = grouped.factors()
        factors = dict(self.factors)
        n_rows, log_sigma, sigma0 = dict(self.n_rows), dict(self.log_sigma), dict(self.sigma0)
        nominal = grouped.nominal_sigma()
        for g, R in more.items():
            factors[g] = sgp.stack_factors(factors[g], R) if g in factors else R
            n_rows[g] = n_rows.get(g, 0) + grouped.n_rows[g]
            log_sigma[g] = log_sigma.get(g, 0.0) + grouped.log_sigma[g]
            sigma0.setdefault(g, nominal.get(g, 1.0))
        return LikelihoodProblem(factors=factors, n_rows=n_rows, log_sigma=log_sigma, kmm_chol=list(self.kmm_chol),
                                 block_term=list(self.block_term), delta0_eV=self.delta0_eV.copy(), sigma0=sigma0)

    @property
    def n_params(self) -> int:
        return self.n_terms + len(self.groups)

    def split(self, x: np.ndarray) -> Tuple[np.ndarray, Dict[str, float]]:
        """log δ scales per term and log σ scales per group from the parameter vector."""
        x = np.asarray(x, dtype=float)
        return x[:self.n_terms], dict(zip(self.groups, x[self.n_terms:]))

    def assemble(self, x: np.ndarray) -> Tuple[np.ndarray, List[np.ndarray], float, int]:
        """(R_ab, K_MM factor blocks, Σ log σ, n_rows) at log scales ``x`` (δ per term, σ per group)."""
        if self.n_targets != 1:
            raise ValueError("a problem of several target columns is evaluated through with_targets()")
        factors, chol, log_s, _ = self._scaled(x)
        M = self.M
        prior = np.zeros((M + 1, M + 1))
        prior[:M, :M] = sgp.prior_rows(chol)
        R_ab = sgp.merge_factors([prior] + [factors[g] for g in self.groups])
        sum_log_sigma = float(sum(self.log_sigma[g] + self.n_rows[g] * log_s[g] for g in self.groups))
        return R_ab, chol, sum_log_sigma, int(sum(self.n_rows.values()))

    def evaluate(self, x: np.ndarray, gradient: bool = True):
        """log p(y) at log scales ``x``, and its gradient with respect to ``x`` when asked.

        With ``C`` the column scales, ``α`` the weights, ``ρ_g`` group g's
        weighted squared residual, ``N = RᵀR`` and ``K = L Lᵀ``:
        ∂/∂log s_g = ρ_g + ‖R_g C² R⁻¹‖²/s_g² − n_g and
        ∂/∂log c_t = α_tᵀ K_t α_t − |t| + tr_t(K N⁻¹) (envelope theorem and
        the normal equations: α is at the minimum of the stacked residual).
        """
        R_ab, chol, sum_log_sigma, n = self.assemble(x)
        lml = log_marginal_likelihood(R_ab, chol, n, sum_log_sigma)
        if not gradient:
            return lml, None
        M = self.M
        log_c, log_s = self.split(x)
        c2 = np.exp(2 * log_c)[self.column_term]
        R = R_ab[:M, :M]
        alpha = scipy.linalg.solve_triangular(R, R_ab[:M, M], check_finite=False)
        grad = np.zeros(self.n_params)
        dF_dc = np.zeros(self.n_terms)
        # Traces tr(N⁻¹ X) as squared norms of R⁻ᵀ-solves: every entry is bounded
        # (each X is part of N = RᵀR), where an explicit R⁻¹ would cancel badly
        # once the data dominate the prior.
        Z = scipy.linalg.solve_triangular(R, sgp.prior_rows(chol).T, trans="T", check_finite=False)
        tr_KN = np.bincount(self.column_term, weights=np.einsum("ij,ij->j", Z, Z), minlength=self.n_terms)
        # At the minimum Σ_g C²A_gᵀr_g/s_g² = −Kα, so ∂F/∂log c_t = −2 α_tᵀ K_t α_t (no residuals needed)
        o = 0
        for L, t in zip(chol, self.block_term):
            a = alpha[o:o + len(L)]
            dF_dc[t] -= 2.0 * float(np.sum(np.square(L.T @ a)))
            o += len(L)
        # Σ_g tr(N⁻¹ Ĝ_g) + tr(N⁻¹ K) = tr(I) = M: the largest group's trace comes free
        skip = max(self.groups, key=lambda g: self.n_rows[g])
        T_skip = float(M - tr_KN.sum())
        v = np.append(c2 * alpha, -1.0)
        for k, g in enumerate(self.groups):
            s = float(np.exp(log_s[g]))
            Rg = self.factors[g]
            q = Rg @ v / s
            rho = float(q @ q)
            if g != skip:
                Y = scipy.linalg.solve_triangular(R, (Rg[:M, :M] * (c2 / s)[None, :]).T, trans="T",
                                                  check_finite=False)
                T = float(np.sum(np.square(Y)))
                T_skip -= T
                grad[self.n_terms + k] = rho + T - self.n_rows[g]
            else:
                grad[self.n_terms + k] = rho - self.n_rows[g]
        grad[self.n_terms + self.groups.index(skip)] += T_skip
        sizes = np.bincount(self.column_term, minlength=self.n_terms)
        grad[:self.n_terms] = -0.5 * dF_dc - sizes + tr_KN
        return lml, grad


#: The smallest noise level the optimiser may choose for each kind of observation,
#: in the units σ is set in (energy and virial per atom): eV/atom, eV/Å, eV/atom.
#: About the precision of converged DFT labels (energies to ~1 meV/atom, forces
#: to ~10 meV/Å, stresses to ~0.1 GPa). Below it the likelihood explains what
#: is left of the labels as noise the data do not have: on noise-free labels
#: (EMT) σ then falls 10-100× further and the predicted uncertainties and the
#: hygiene z-scores lose their meaning. See docs/hyperparameters.md.
SIGMA_FLOOR = {"energy": 1e-3, "forces": 1e-2, "virial": 1e-2}
#: Largest gradient component of the per-row objective at which a stop of the
#: line search still counts as the optimum (within the rounding of log p).
LINE_SEARCH_GRADIENT_TOL = 1e-4


def group_kind(group: str) -> str:
    """The kind of observation of a noise group: ``"forces:md_300K"`` -> ``"forces"``."""
    return group.split(":", 1)[0]


def sigma_floors(problem: "LikelihoodProblem", sigma_floor: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Each group's floor on its nominal σ: ``sigma_floor`` per kind, over :data:`SIGMA_FLOOR`.

    A kind given as 0 or None has no floor; a group whose nominal starting σ
    is unknown has none either.
    """
    per_kind = dict(SIGMA_FLOOR)
    per_kind.update(sigma_floor or {})
    out = {}
    for g in problem.groups:
        floor = per_kind.get(group_kind(g))
        if floor and g in problem.sigma0:
            out[g] = float(floor)
    return out


@dataclass
class OptimisationResult:
    """Outcome of :func:`maximise`: log scales, likelihoods, cost, and how the optimiser stopped.

    ``message`` says in words why the optimiser stopped and whether its end
    point is the optimum; ``scipy_message`` is L-BFGS-B's own status text.
    ``converged`` is true when scipy's convergence test passed, or its line
    search stopped where the gradient is below
    :data:`LINE_SEARCH_GRADIENT_TOL` per row (the optimum to within the
    rounding of the likelihood). ``sigma_floor``: each group's floor on its
    σ; ``at_floor``: the groups whose optimised σ rests on it (the
    likelihood alone would go lower); ``raised_to_floor``: groups whose
    starting σ was below the floor.
    """

    x: np.ndarray
    lml_initial: float
    lml_final: float
    n_evaluations: int
    seconds: float
    converged: bool
    message: str
    scipy_message: str = ""
    gradient_per_row: float = float("nan")
    sigma_floor: Dict[str, float] = field(default_factory=dict)
    at_floor: List[str] = field(default_factory=list)
    raised_to_floor: List[str] = field(default_factory=list)


def describe_stop(scipy_message: str, status: int, gradient_per_row: float, max_iter: int) -> Tuple[bool, str]:
    """(converged, why the optimiser stopped in words) from L-BFGS-B's status.

    ``gradient_per_row``: the largest component of the projected gradient of
    ``log p / rows`` at the end point (components pushing against a bound do
    not count).
    """
    raw = scipy_message.decode() if isinstance(scipy_message, bytes) else str(scipy_message)
    text = raw.upper()
    grad = f"largest gradient component {gradient_per_row:.1e} per row"
    small = np.isfinite(gradient_per_row) and gradient_per_row <= LINE_SEARCH_GRADIENT_TOL
    if status == 0 and "FACTR" in text:
        return True, f"converged: the likelihood stopped changing between iterations ({grad})"
    if status == 0:
        return True, f"converged: the gradient vanished ({grad})"
    if status == 1:
        return False, (f"stopped at the limit of {max_iter} iterations before converging ({grad}); the best "
                       "point found is used, but it may not be the optimum")
    if text.startswith("ABNORMAL"):
        what = ("L-BFGS-B ABNORMAL_TERMINATION_IN_LNSRCH: the line search found no better point along its last "
                f"direction; the {grad} there")
        if small:
            return True, (f"converged to within line-search precision ({what} is below "
                          f"{LINE_SEARCH_GRADIENT_TOL:g}, so the optimum is found to within the rounding of the "
                          "likelihood, and it is used)")
        return False, (f"not converged ({what} is above {LINE_SEARCH_GRADIENT_TOL:g}): the best point found is "
                       "used, but it may not be the optimum (the likelihood may be flat or badly scaled there)")
    return False, f"stopped: L-BFGS-B reports {raw.strip() or 'no reason'!r} ({grad}); the best point found is used"


def maximise(problem: LikelihoodProblem, *, optimise_delta: bool = True, max_log_scale: float = np.log(1e4),
             max_iter: int = 200, sigma_floor: Optional[Dict[str, float]] = None) -> OptimisationResult:
    """Maximise log p(y) over the log scales of each term's δ and each group's σ (L-BFGS-B, bounded).

    Scales are relative to the initial values and bounded to within a factor
    ``exp(max_log_scale)`` of them. ``optimise_delta=False`` keeps every δ.
    No group's nominal σ goes below its floor (``sigma_floor`` per kind,
    default :data:`SIGMA_FLOOR`; 0 removes a kind's floor): a start below
    the floor is raised to it, and a group that ends on its floor is logged
    as a warning.
    """
    import scipy.optimize
    t0 = time.perf_counter()
    n_eval = [0]
    free = np.ones(problem.n_params, dtype=bool)
    if not optimise_delta:
        free[:problem.n_terms] = False
    floors = sigma_floors(problem, sigma_floor)
    lower = np.full(problem.n_params, -max_log_scale)
    for k, g in enumerate(problem.groups):
        if g in floors:
            lower[problem.n_terms + k] = min(max(-max_log_scale, float(np.log(floors[g] / problem.sigma0[g]))),
                                             max_log_scale)
    upper = np.full(problem.n_params, max_log_scale)
    start = np.clip(np.zeros(problem.n_params), lower, upper)
    raised = [g for k, g in enumerate(problem.groups) if start[problem.n_terms + k] > 0]

    def full(xf):
        x = start.copy()
        x[free] = xf
        return x

    scale = float(sum(problem.n_rows.values()))  # per-row objective keeps L-BFGS's tolerances meaningful

    first: List[float] = []  # L-BFGS-B evaluates the start first: its value is the likelihood there

    def objective(xf):
        n_eval[0] += 1
        try:
            lml, g = problem.evaluate(full(xf))
        except NumericalError:
            lml, g = -np.inf, np.zeros(problem.n_params)
        if not first:
            first.append(lml)
        return (-lml / scale if np.isfinite(lml) else np.inf), -g[free] / scale

    res = scipy.optimize.minimize(objective, start[free], jac=True, method="L-BFGS-B",
                                  bounds=list(zip(lower[free], upper[free])),
                                  options={"maxiter": max_iter, "ftol": 1e-9, "gtol": 1e-6})
    x = full(res.x)
    lml_start, lml1 = first[0], float(-res.fun * scale)
    lml0 = lml_start
    if raised:  # the likelihood at the user's start, for the report
        n_eval[0] += 1
        try:
            lml0 = float(problem.evaluate(np.zeros(problem.n_params), gradient=False)[0])
        except NumericalError:
            lml0 = -np.inf
    # the projected gradient: components pushing against a bound do not count
    jac = np.asarray(res.jac, dtype=float)
    xf = np.asarray(res.x, dtype=float)
    at_lo, at_hi = xf <= lower[free] + 1e-10, xf >= upper[free] - 1e-10
    pg = np.where((at_lo & (jac > 0)) | (at_hi & (jac < 0)), 0.0, jac)
    grad_per_row = float(np.max(np.abs(pg))) if pg.size else 0.0
    converged, message = describe_stop(res.message, int(res.status), grad_per_row, max_iter)
    if not lml1 >= lml_start:  # never hand back something worse than the start
        x, lml1 = start.copy(), lml_start
        message += "; the end point was no better than the start, so the start is kept"
    at_floor = [g for k, g in enumerate(problem.groups)
                if g in floors and lower[problem.n_terms + k] > -max_log_scale
                and x[problem.n_terms + k] <= lower[problem.n_terms + k] + 1e-6]
    if raised:
        log.info("σ %s: the starting value is below its floor; the optimisation starts from the floor (%s)",
                 ", ".join(raised), ", ".join(f"{g} {floors[g]:.3g}" for g in raised))
    if at_floor:
        log.warning("σ at its floor: %s. The likelihood alone would choose a smaller σ: the labels look more "
                    "precise than the floor (noise-free reference data), or the model follows its training "
                    "labels more closely than it predicts new ones. The fit uses the floor; set sigma_floor to "
                    "change it (docs/hyperparameters.md, \"Floors on σ\").",
                    ", ".join(f"{g} {floors[g]:.3g} {_unit(g)}" for g in at_floor))
    return OptimisationResult(x=x, lml_initial=float(lml0), lml_final=float(lml1), n_evaluations=n_eval[0],
                              seconds=time.perf_counter() - t0, converged=converged, message=message,
                              scipy_message=str(res.message), gradient_per_row=grad_per_row,
                              sigma_floor=floors, at_floor=at_floor, raised_to_floor=raised)


def _unit(group: str) -> str:
    return {"forces": "eV/Å", "charges": "e"}.get(group_kind(group), "eV/atom")
