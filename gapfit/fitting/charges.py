"""Charges learned from energies, forces and virials: the ``charges="learn"`` step of a fit.

The Coulomb baseline of per-species charges q is a quadratic form in q: for
every energy, force component and virial component of a frame,

    E_C(q) = Σ_{a≤b} q_a q_b P_ab

with P_ab the part of species pair (a, b)
(:func:`gapfit.electrostatics.species_pair_parts`), computed once per frame.
The fit's targets are the labels minus the baseline, so the σ-weighted
target column is b(q) = b₀ − C w(q) + N E w(q), C holding the weighted pair
parts as columns, w(q) = (q_a q_b)_{a≤b}, N each energy row's species counts
and E how e0 (least squares on the energies after the baseline) moves with
w (:func:`e0_of_pairs`): the targets the fit over the learned charges will
have. One streamed QR per noise group of [A | b₀ | C | N] (the design rows A
do not change) gives, merged with the prior rows, in its last 1 + P + S rows
T, the data-fit term of the sparse GP's log marginal likelihood for any q:
−½‖T (1, G w(q))‖² with G = [−I; E]. The charges maximise it under the
linear constraints Σ_a n_fa q_a = Q_f of each frame's composition n_f and
total charge Q_f (``charge`` in the frame's info, 0 when absent); δ and σ
are held at their settings, or with ``optimize`` maximised together with
the charges from the same factors (:func:`optimise_jointly`). The charges'
posterior standard deviations come from the Gauss–Newton Hessian of that
term (a Laplace approximation at the final δ, σ).

The energy is even in q: with neutral frames only, q and −q explain the
data equally, and the sign is fixed by making the most electronegative
species (Pauling) negative. The fit then runs again with the learned
charges fixed (:func:`gapfit.fitting.pipeline.fit_state`), which costs about
one more pass of design rows.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.linalg
import scipy.optimize

from .. import hyper
from ..errors import InputError
from .baseline import fit_e0
from .passes import _labelled_chunks
from .plan import Block, FitPlan, block_of
from .rows import chunk_parts

log = logging.getLogger("gapfit")

#: Pauling electronegativities of the species whose sign convention matters most (others: none, sign by Z).
_PAULING = {1: 2.20, 3: 0.98, 6: 2.55, 7: 3.04, 8: 3.44, 9: 3.98, 11: 0.93, 12: 1.31, 13: 1.61, 14: 1.90,
            15: 2.19, 16: 2.58, 17: 3.16, 19: 0.82, 20: 1.00, 35: 2.96, 53: 2.66, 55: 0.79}


@dataclass(frozen=True)
class PairSettings:
    """The Coulomb settings the pair parts are computed with (picklable: Dask workers receive it)."""

    species: Tuple[int, ...]
    widths_A: Dict[int, float] = field(default_factory=dict)
    accuracy: float = 1e-6
    screening_A: Optional[Tuple[float, float]] = None

    @property
    def pairs(self) -> List[Tuple[int, int]]:
        """Species pairs (a ≤ b) in column order."""
        s = self.species
        return [(s[i], s[j]) for i in range(len(s)) for j in range(i, len(s))]


def _frame_pair_parts(atoms, kinds: Sequence[str], pair_settings: PairSettings) -> dict:
    """The species-pair parts of one frame, with forces and virial where its rows need them."""
    from ..electrostatics import species_pair_parts
    return species_pair_parts(atoms, list(pair_settings.species), pair_settings.widths_A or None,
                              accuracy=pair_settings.accuracy, screening_A=pair_settings.screening_A,
                              forces="forces" in kinds, virial="virial" in kinds)


def _pair_columns(parts: dict, kind: str, pair_settings: PairSettings) -> np.ndarray:
    """Each species pair's contribution to one kind of observation of a frame: (rows, P), as the rows lie."""
    cols = []
    for pair in pair_settings.pairs:
        r = parts[pair]
        if kind == "energy":
            cols.append(np.array([r.energy_eV]))
        elif kind == "forces":
            cols.append(np.asarray(r.forces_eV_per_A, dtype=float).ravel())
        else:
            v = r.virial_eV
            cols.append(np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]]))
    return np.stack(cols, axis=1)


def charge_rows_block(plan: FitPlan, source, block: Block, pair_settings: PairSettings, progress=None):
    """The block's rows [A | b₀ | C | N], factorised per noise group, and each frame's pair energies.

    N holds each energy row's species counts (zeros in other rows), all divided by σ: the refit's e0 moves
    with the charges (:func:`e0_of_pairs`), and these columns carry that move. Grouped as the fit's own rows
    are, so that δ and σ can be optimised with the charges. Returns (GroupedFactors, {frame: (P,) pair
    energies in eV}).
    """
    species = list(pair_settings.species)
    P, S = len(pair_settings.pairs), len(species)
    grouped = hyper.GroupedQR(plan.n_columns + P + S)
    pair_energies: Dict[int, np.ndarray] = {}
    for idx, frames, labels in _labelled_chunks(plan, source, block, progress):
        parts = chunk_parts(plan, frames, labels)
        kinds: Dict[int, List[str]] = {f: [] for f, lb in enumerate(labels) if lb.energy_eV is not None}
        for p in parts:
            kinds.setdefault(p.frame, []).append(p.kind)
        pair_parts = {f: _frame_pair_parts(frames[f], k, pair_settings) for f, k in kinds.items()}
        for f in kinds:
            if labels[f].energy_eV is not None:
                pair_energies[idx[f]] = _pair_columns(pair_parts[f], "energy", pair_settings)[0]
        for p in parts:
            C = _pair_columns(pair_parts[p.frame], p.kind, pair_settings)
            if len(C) != len(p.b):
                raise ValueError(f"pair parts give {len(C)} rows for {p.kind}, the design rows {len(p.b)}")
            counts = np.zeros((len(p.b), S))
            if p.kind == "energy":
                counts[0] = np.bincount(np.searchsorted(species, frames[p.frame].numbers), minlength=S)
            stacked = np.hstack([p.A, p.b[:, None], C / p.sigma[:, None], counts / p.sigma[:, None]])
            key = plan.noise.group(p.kind, labels[p.frame].config_type)
            grouped.add(key, stacked[:, :-1], stacked[:, -1], p.sigma, p.nominal)
    return grouped.finish(), pair_energies


def e0_of_pairs(e0_given, info, pair_energies: Dict[int, np.ndarray], species: Sequence[int]) -> np.ndarray:
    """(S, P): how each species' e0 moves per unit of each pair weight w_ab = q_a q_b.

    The fit over the learned charges takes e0 from the energies minus the Coulomb energy (given values and
    isolated atoms as always, least squares otherwise: :func:`gapfit.fitting.baseline.fit_e0`), so its e0 is
    the charge-free e0 minus this matrix times w(q): the charges are learned against the targets that fit
    will have. Given e0 values do not move (their column is zero).
    """
    zero_given = {k: 0.0 for k in (e0_given or {})}
    P = len(next(iter(pair_energies.values()))) if pair_energies else 0
    out = np.zeros((len(species), P))
    for p in range(P):
        e0 = fit_e0(zero_given, info, {k: float(v[p]) for k, v in pair_energies.items()}, list(species))
        out[:, p] = [e0[z] for z in species]
    return out


def merge_charge_rows(a, b):
    """Merge two :func:`charge_rows_block` results (in place into ``a``)."""
    a[0].merge(b[0])
    a[1].update(b[1])
    return a


@dataclass
class LearnedCharges:
    """Per-species charges learned by the fit, with their posterior standard deviations (e)."""

    charges_e: Dict[int, float]
    std_e: Dict[int, float]
    data_fit: float          #: −½‖T(1, −w)‖² at the optimum (the likelihood's data term)
    data_fit_zero: float     #: the same without charges
    seconds: float
    #: with ``optimize``: the joint maximum over charges, δ and σ (rounds, log p per round, δ and σ found)
    joint: Optional[dict] = None

    def summary(self) -> dict:
        """The record the training summary keeps (JSON)."""
        from ase.data import chemical_symbols
        out = {"learned_e": {chemical_symbols[z]: q for z, q in self.charges_e.items()},
               "std_e": {chemical_symbols[z]: s for z, s in self.std_e.items()},
               "data_fit": self.data_fit, "data_fit_without_charges": self.data_fit_zero,
               "seconds": round(self.seconds, 3),
               "method": "maximum of the marginal likelihood over per-species charges at fixed δ and σ, "
                         "under each frame's total charge; std from its Gauss-Newton Hessian"}
        if self.joint is not None:
            out["method"] = ("maximum of the marginal likelihood over per-species charges, δ and σ together "
                             "(block-coordinate ascent), under each frame's total charge; std from the "
                             "Gauss-Newton Hessian at the optimal δ and σ")
            out["joint"] = self.joint
        return out


def charge_constraints(info) -> Tuple[np.ndarray, np.ndarray]:
    """(N, Q): the distinct (composition, total charge) rows of the frames, species in sorted order."""
    species = info.species
    rows = {}
    for comp, q in zip(info.composition, info.charge):
        key = tuple(comp.get(z, 0) for z in species)
        if key in rows and abs(rows[key] - q) > 1e-9:
            raise InputError(f"frames of the same composition {dict(zip(species, key))} carry different total "
                             f"charges ({rows[key]:g} and {q:g}): per-species charges cannot hold both; fix the "
                             "'charge' of those frames, or give per-atom charges (initial_charges)")
        rows[key] = q
    return np.array(list(rows), dtype=float), np.array(list(rows.values()), dtype=float)


def constrained_charges(N: np.ndarray, Q: np.ndarray, species: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(q_p, Z): the charges q = q_p + Z z that meet every N q = Q; InputError when none do or only one does.

    Checked before a fit's passes (:func:`gapfit.fitting.pipeline.learn_charges_first`): compositions that fix
    the charges leave nothing to learn, and the message gives those charges.
    """
    S = len(species)
    q_p, *_ = np.linalg.lstsq(N, Q, rcond=None)
    if np.linalg.norm(N @ q_p - Q) > 1e-8 * max(1.0, np.linalg.norm(Q)):
        raise InputError("the frames' total charges cannot all hold with one charge per species "
                         f"(compositions {N.astype(int).tolist()}, charges {Q.tolist()}); check their 'charge'")
    Z = scipy.linalg.null_space(N) if len(N) else np.eye(S)
    if Z.shape[1] == 0:
        from ase.data import chemical_symbols
        fixed = ", ".join(f"{chemical_symbols[z]}: {q:+.6g}" for z, q in zip(species, q_p))
        raise InputError("the frames' compositions and total charges fix every species' charge, so there is "
                         f"nothing to learn from the energies: they are {{{fixed}}}; give them as charges "
                         "(charges={...}, --coulomb \"...\"), or use charge equilibration (charges qeq)",
                         param="charges")
    return q_p, Z


def solve_charges(T: np.ndarray, species: Sequence[int], pairs: Sequence[Tuple[int, int]], N: np.ndarray,
                  Q: np.ndarray, seed: int, start: Optional[np.ndarray] = None,
                  G: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, float]:
    """Charges maximising −½‖T (1, G w(q))‖² under N q = Q; returns (q, std of q, the maximum).

    ``G``: how the target columns after b₀ combine the pair weights w (default −I: the columns are C).
    ``start``: charges to start from as well as the seeded starts (the previous round of a joint optimisation).
    """
    S = len(species)
    pos = {z: i for i, z in enumerate(species)}
    q_p, Z = constrained_charges(N, Q, species)
    ia = np.array([pos[a] for a, _ in pairs])
    ib = np.array([pos[b] for _, b in pairs])
    G = -np.eye(len(pairs)) if G is None else np.asarray(G, dtype=float)

    def charges(z):
        return q_p + Z @ z

    def residual(z):
        q = charges(z)
        return T @ np.concatenate([[1.0], G @ (q[ia] * q[ib])])

    def jacobian(z):
        q = charges(z)
        dw = np.zeros((len(pairs), S))  # d(q_a q_b)/dq
        np.add.at(dw, (np.arange(len(pairs)), ia), q[ib])
        np.add.at(dw, (np.arange(len(pairs)), ib), q[ia])
        return T @ np.vstack([np.zeros((1, S)), G @ dw]) @ Z

    rng = np.random.default_rng(seed + 4649)
    # q = 0 is a stationary point (the energy is quadratic in q): start from seeded charges of order 1
    starts = [rng.uniform(-1.5, 1.5, Z.shape[1]) for _ in range(8)]
    if start is not None:
        starts.insert(0, Z.T @ (np.asarray(start, dtype=float) - q_p))
    best = min((scipy.optimize.least_squares(residual, z0, jac=jacobian, method="lm", xtol=1e-12, ftol=1e-14)
                for z0 in starts), key=lambda r: r.cost)
    q = charges(best.x)
    J = jacobian(best.x)
    cov_z = np.linalg.pinv(J.T @ J)
    std = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", Z, cov_z, Z), 0, None))
    return q, std, -float(best.cost)


def fix_sign(q: np.ndarray, species: Sequence[int], Q: np.ndarray) -> np.ndarray:
    """With neutral frames only, the sign that makes the most electronegative species negative."""
    if np.any(np.abs(Q) > 1e-12):
        return q  # a charged frame fixes the sign
    most = max(range(len(species)), key=lambda i: (_PAULING.get(species[i], 0.0), species[i]))
    return -q if q[most] > 0 else q


def learn_charges(run, pair_settings: PairSettings) -> LearnedCharges:
    """Learn the charges from a fit run whose sparse points are chosen and K_MM factored (``run``: a FitRun).

    With the run's ``optimize`` setting, δ and σ are optimised with the charges (:func:`optimise_jointly`).
    """
    t0 = time.perf_counter()
    st, info, settings = run.state, run.info, run.settings
    # every frame, the held-out calibration frames too: the charges are fitted before any calibration
    blocks = [block_of(info, b.lo, b.hi) for b in run.blocks]
    grouped, pair_energies = run.executor.run(charge_rows_block, run.plan(), run.source, blocks, pair_settings,
                                              what="charge rows", progress=settings.progress,
                                              reduce=merge_charge_rows)
    pairs = pair_settings.pairs
    species = list(pair_settings.species)
    G = np.vstack([-np.eye(len(pairs)), e0_of_pairs(settings.e0, info, pair_energies, species)])
    wide = hyper.LikelihoodProblem(factors=grouped.factors(), n_rows=dict(grouped.n_rows),
                                   log_sigma=dict(grouped.log_sigma), kmm_chol=list(st.kmm_chol),
                                   block_term=list(st.block_terms), delta0_eV=[t.delta_eV for t in st.terms],
                                   sigma0=grouped.nominal_sigma(), n_targets=1 + len(G))
    N, Q = charge_constraints(info)
    T = wide.target_factor()
    q, std, data_fit = solve_charges(T, species, pairs, N, Q, settings.seed, G=G)
    zero = -0.5 * float(T[0, 0] ** 2)
    joint = None
    if getattr(settings, "optimize", False):
        q, std, data_fit, joint = optimise_jointly(wide, q, species, pairs, G, N, Q, settings)
    q = fix_sign(q, species, Q)
    out = LearnedCharges({z: float(v) for z, v in zip(species, q)}, {z: float(s) for z, s in zip(species, std)},
                         data_fit, zero, time.perf_counter() - t0, joint)
    log.info("charges learned in %.1f s (likelihood data term %.6g -> %.6g): %s", out.seconds, zero, data_fit,
             ", ".join(f"{_symbol(z)} {out.charges_e[z]:+.4f} ± {out.std_e[z]:.4f} e" for z in species))
    return out


def _combination(q: np.ndarray, species: Sequence[int], pairs: Sequence[Tuple[int, int]],
                 G: np.ndarray) -> np.ndarray:
    """(1, G w(q)): the target column's combination of [b₀ | C | N] at charges q."""
    pos = {z: i for i, z in enumerate(species)}
    return np.concatenate([[1.0], G @ np.array([q[pos[a]] * q[pos[b]] for a, b in pairs])])


def optimise_jointly(wide: "hyper.LikelihoodProblem", q: np.ndarray, species: Sequence[int],
                     pairs: Sequence[Tuple[int, int]], G: np.ndarray, N: np.ndarray, Q: np.ndarray, settings,
                     max_rounds: int = 8):
    """Maximise log p over the charges, δ and σ together: block-coordinate ascent from charges ``q``.

    Each round maximises over δ and σ at fixed charges (:func:`gapfit.hyper.maximise`, as ``optimize``
    does), then over the charges at fixed δ and σ (:func:`solve_charges`); log p rises every round, and
    the rounds stop when it rises by less than 1e-3 nats (or 1e-9 of its size). Both steps reuse the same
    grouped factors of [A | b₀ | C | N]: no pass over the data. Returns (q, std, data term, record).
    """
    zero = np.zeros(wide.n_params)
    lml = [wide.with_targets(_combination(q, species, pairs, G)).evaluate(zero, gradient=False)[0]]
    delta0, sigma0 = wide.delta0_eV.copy(), dict(wide.sigma0)
    std, data_fit = None, None
    for _ in range(max_rounds):
        res = hyper.maximise(wide.with_targets(_combination(q, species, pairs, G)),
                             optimise_delta=getattr(settings, "optimize_delta", True),
                             sigma_floor=getattr(settings, "sigma_floor", None))
        wide = wide.rebase(res.x)
        q, std, data_fit = solve_charges(wide.target_factor(), species, pairs, N, Q, settings.seed, start=q, G=G)
        lml.append(wide.with_targets(_combination(q, species, pairs, G)).evaluate(zero, gradient=False)[0])
        log.info("charges with δ and σ, round %d: log marginal likelihood %.8g; %s", len(lml) - 1, lml[-1],
                 ", ".join(f"{_symbol(z)} {abs(v):.4f}" for z, v in zip(species, q)))
        if lml[-1] - lml[-2] < max(1e-3, 1e-9 * abs(lml[-1])):
            break
    record = {"rounds": len(lml) - 1, "log_marginal_likelihood": lml,
              "initial_delta_eV": [float(d) for d in delta0], "delta_eV": [float(d) for d in wide.delta0_eV],
              "initial_sigma": sigma0, "sigma": dict(wide.sigma0)}
    return q, std, data_fit, record


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols
    return chemical_symbols[z]


__all__ = ["learn_charges", "LearnedCharges", "PairSettings", "charge_constraints", "constrained_charges",
           "solve_charges", "fix_sign",
           "optimise_jointly"]
