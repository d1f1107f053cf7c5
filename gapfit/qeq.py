"""Charge equilibration with electronegativities from a Gaussian process (fourth-generation GAP).

The charges q (e) of a frame minimise

    E_QEq(q) = Σ_i (χ_i q_i + ½ J_i q_i²) + ½ qᵀ C q     subject to  Σ_i q_i = Q,

with χ_i (eV/e) the electronegativity of atom i, a sparse GP on its local
environment (a SOAP term of its own: species, cutoff, sparse points, δ),
J_i (eV/e²) a hardness per species, C (eV/e²) the Coulomb matrix of Gaussian
charges of width σ_i per species (:func:`gapfit.electrostatics.coulomb_matrix`:
Ewald sum in periodic cells, the direct sum in finite ones, the Gaussian
self-energy K_E/(√π σ_i) on its diagonal) and Q the frame's total charge
(``charge`` in its info, 0 when absent). With A = C + diag(J) (positive
definite: the electrostatic energy of Gaussian charges is positive), the
solution is one Cholesky factorisation and two solves:

    q = −P χ + Q b,   P X = A⁻¹X − A⁻¹1 (1ᵀA⁻¹X) / (1ᵀA⁻¹1),   b = A⁻¹1 / (1ᵀA⁻¹1),

linear in χ and so in the GP weights: the fit to reference charges
(Hirshfeld) is a sparse-GP regression whose rows pass through −P
(:mod:`gapfit.fitting.qeq`). As in Ko et al. (Nat. Commun. 12, 398, 2021),
the energy the baseline adds is the electrostatic energy of the
equilibrated charges, E = ½ qᵀ C q; the χ and J terms only decide q.

Forces and stress
-----------------
E depends on the positions directly (through C) and through q (through C and
χ). With v = ∂E/∂q = C q and the adjoint charges μ = P v (the solution of
the same constrained system with v on the right, Σ μ_i = 0),

    dE/dr = ∂(½ qᵀCq)/∂r − ∂(μᵀ C q)/∂r|_{q,μ} − ∂(Σ_i μ_i χ_i)/∂r|_μ,

and the same for the strain derivative (the virial): exactly minus the
gradient of the energy, with no finite differences and one extra solve. The
last term is the χ term's gradient with each atom weighted by μ_i
(:meth:`gapfit.terms.base.Term.predict_weighted`).

Uncertainty
-----------
χ has the GP's posterior covariance (the weights' ``(RᵀR)⁻¹`` and each
atom's Nyström residual, taken independent between atoms); the charges'
covariance is P Cov(χ) Pᵀ, the energy's variance from the charges
μᵀ Cov(χ) μ (dE/dχ = −μ). :meth:`QEqBaseline.uncertainty` gives the
charges' stds and that variance.

Cost: the matrix C is N² in memory and N² × k-vectors in time, the
factorisation N³/3: practical to a few thousand atoms (measured in
``bench/qeq_cost.py``), beyond which an iterative solve with a mesh Ewald
sum would be needed (not implemented).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import scipy.linalg
from ase import Atoms
from ase.data import chemical_symbols, covalent_radii

from . import sgp
from .baselines import Baseline, BaselineResult, is_periodic
from .electrostatics import EwaldParameters, coulomb_matrix, pair_fields
from .errors import InputError, NumericalError
from .terms import build_terms
from .terms.base import Term

#: The χ term's settings when none are given: a small SOAP (χ needs the environment's shape, not its detail).
DEFAULT_ELECTRONEGATIVITY = {"type": "soap", "cutoff": 4.0, "cutoff_transition_width": 1.0, "n_max": 6,
                             "l_max": 4, "atom_sigma": 0.5, "zeta": 2.0, "n_sparse": 200}
#: Starting hardness J (eV/e²) of every species before the fit maximises the likelihood over it.
DEFAULT_HARDNESS = 5.0


def default_widths(species) -> Dict[int, float]:
    """Gaussian widths (Å) per species when none are given: the covalent radius, as in Ko et al. (4G-HDNNP)."""
    return {int(z): float(covalent_radii[int(z)]) for z in species}


def total_charge(atoms: Atoms) -> float:
    """The frame's total charge (e): ``atoms.info["charge"]``, 0 when absent; InputError when not a number."""
    Q = atoms.info.get("charge", 0.0)
    try:
        Q = float(Q)
    except (TypeError, ValueError):
        Q = float("nan")
    if not math.isfinite(Q):
        raise InputError(f"the frame's total charge info['charge'] = {atoms.info.get('charge')!r} is not a finite "
                         "number: give the charge in e (charge=1 in the extended XYZ comment line)", param="charge")
    return Q


class Equilibration:
    """The constrained solve of one frame: ``A = C + diag(J)`` factorised once (Cholesky)."""

    def __init__(self, C: np.ndarray, hardness: np.ndarray):
        A = C + np.diag(np.asarray(hardness, dtype=float))
        try:
            self.cho = scipy.linalg.cho_factor(A, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise NumericalError("charge equilibration: C + diag(J) is not positive definite; give the charges "
                                 "larger Gaussian widths or the species a larger hardness") from None
        self.a1 = scipy.linalg.cho_solve(self.cho, np.ones(len(C)), check_finite=False)   # A⁻¹ 1
        self.s = float(self.a1.sum())                                                     # 1ᵀ A⁻¹ 1

    def project(self, X: np.ndarray) -> np.ndarray:
        """P X: A⁻¹X projected so that each column sums to 0 (the constrained solve with zero total)."""
        Y = scipy.linalg.cho_solve(self.cho, X, check_finite=False)
        total = Y.sum(axis=0)
        return Y - np.multiply.outer(self.a1, total) / self.s

    def charges(self, chi: np.ndarray, Q: float) -> np.ndarray:
        """The charges minimising E_QEq for electronegativities ``chi`` (eV/e) and total charge ``Q`` (e)."""
        return -self.project(chi) + self.offset(Q)

    def offset(self, Q: float) -> np.ndarray:
        """The charges at χ = 0: ``Q b``."""
        return Q * self.a1 / self.s


@dataclass
class QEqSolution:
    """One frame's equilibration: descriptors, χ (eV/e), C, the solve, the charges (e)."""

    desc: Any
    chi: np.ndarray
    C: np.ndarray
    parameters: Optional[EwaldParameters]
    eq: Equilibration
    charges: np.ndarray
    widths: np.ndarray


class QEqBaseline(Baseline):
    """The electrostatic energy of charges equilibrated with GP electronegativities (see the module docstring).

    Parameters
    ----------
    term : Term
        The electronegativity term (SOAP), bound to the species, sparse
        points set, δ (eV/e) set.
    alpha : ndarray (term.n_columns,)
        Its weights.
    hardness : {Z: eV/e²}
        J per species.
    widths : {Z: Å}
        Gaussian width of each species' charge.
    kmm_chol : list of ndarray
        Cholesky factors of the term's K_MM blocks (for the charges' stds).
    R : ndarray (M, M)
        Upper-triangular factor of the charge fit's stacked system (the weights' posterior precision RᵀR).
    accuracy : float
        The Ewald accuracy (as :class:`gapfit.baselines.CoulombBaseline`).
    fit : dict
        What the fit found (hyperparameters, likelihood, training errors), for the log and the model file.
    """

    type = "qeq"

    def __init__(self, term: Term, alpha: np.ndarray, hardness: Mapping[int, float], widths: Mapping[int, float],
                 kmm_chol: List[np.ndarray], R: np.ndarray, *, accuracy: float = 1e-6,
                 fit: Optional[Dict[str, Any]] = None):
        self.term = term
        self.alpha = np.asarray(alpha, dtype=float)
        self.hardness = {int(z): float(v) for z, v in hardness.items()}
        self.widths = {int(z): float(v) for z, v in widths.items()}
        self.kmm_chol = [np.asarray(L, dtype=float) for L in kmm_chol]
        self.R = np.asarray(R, dtype=float)
        self.accuracy = float(accuracy)
        self.fit = dict(fit or {})
        #: the last frame's solution, keyed by the frame: the stds of a prediction reuse its solve
        self._last: Optional[Tuple[bytes, QEqSolution]] = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_last"] = None          # an N² matrix: not shipped to workers or kept in pickles
        return state

    # ------------------------------------------------------------- the solve
    def _per_atom(self, atoms: Atoms, table: Mapping[int, float], what: str) -> np.ndarray:
        missing = sorted(set(atoms.numbers.tolist()) - set(table))
        if missing:
            raise InputError(f"charge equilibration has no {what} for {[chemical_symbols[z] for z in missing]}: "
                             f"the model was fitted on {[chemical_symbols[z] for z in sorted(table)]}",
                             param="charges")
        return np.array([table[z] for z in atoms.numbers.tolist()], dtype=float)

    def solve(self, atoms: Atoms, *, gradients: bool = False) -> QEqSolution:
        """Equilibrate ``atoms``' charges (descriptors with gradients when forces or stress will be asked).

        The same frame asked again (the stds after the prediction) gets the previous solution back.
        """
        key = b"".join([atoms.numbers.tobytes(), atoms.positions.tobytes(), np.asarray(atoms.cell).tobytes(),
                        np.asarray(atoms.pbc).tobytes(), repr(atoms.info.get("charge", 0.0)).encode()])
        if self._last is not None and self._last[0] == key and (self._last[1].desc.has_gradients or not gradients):
            return self._last[1]
        widths = self._per_atom(atoms, self.widths, "Gaussian width")
        J = self._per_atom(atoms, self.hardness, "hardness")
        desc = self.term.compute([atoms], gradients=gradients)[0]
        chi = self.term.predict(desc, self.alpha, forces=False, virial=False).local_energy_eV
        C, params = coulomb_matrix(atoms, widths, accuracy=self.accuracy)
        eq = Equilibration(C, J)
        q = eq.charges(chi, total_charge(atoms))
        sol = QEqSolution(desc, chi, C, params, eq, q, widths)
        self._last = (key, sol)
        return sol

    def charges_of(self, atoms: Atoms) -> np.ndarray:
        """The equilibrated charges (e) of ``atoms``."""
        return self.solve(atoms).charges if len(atoms) else np.zeros(0)

    def evaluate(self, atoms: Atoms, *, forces: bool = True, virial: bool = True) -> BaselineResult:
        """Electrostatic energy of the equilibrated charges, per-atom energies ½ q_i (Cq)_i, exact forces and virial."""
        n = len(atoms)
        periodic = is_periodic(atoms)
        want_virial = bool(virial and periodic)
        if n == 0:
            return BaselineResult(0.0, np.zeros(0), np.zeros((0, 3)) if forces else None,
                                  np.zeros((3, 3)) if want_virial else None, charges_e=np.zeros(0))
        sol = self.solve(atoms, gradients=bool(forces or want_virial))
        q = sol.charges
        v = sol.C @ q
        energies = 0.5 * q * v
        F = W = None
        if forces or want_virial:
            mu = sol.eq.project(v)
            pf = pair_fields(atoms, q, mu, sol.widths, accuracy=self.accuracy, virial=want_virial,
                             parameters=sol.parameters)
            tw = self.term.predict_weighted(sol.desc, self.alpha, mu, virial=want_virial)
            if forces:
                F = pf.forces_qq - pf.forces_qm + tw.gradient_eV_per_A
            if want_virial:
                W = pf.virial_qq - pf.virial_qm - tw.virial_eV
                W = 0.5 * (W + W.T)
        return BaselineResult(float(energies.sum()), energies, F, W, charges_e=q)

    def uncertainty(self, atoms: Atoms) -> Tuple[np.ndarray, float]:
        """(std of each charge (e), variance of the energy from the charges (eV²)), from χ's posterior."""
        sol = self.solve(atoms)
        K = self.term.predict(sol.desc, self.alpha, forces=False, virial=False, local_rows=True).local_rows
        if K is None:
            K = self.term.design_rows([sol.desc], forces=False, virial=False, local=True).local
        residual = np.clip(self.term.delta_eV ** 2 - sgp.nystrom(K, self.kmm_chol), 0.0, None)
        P = sol.eq.project(np.eye(len(atoms)))                     # symmetric
        Z = sgp.solve_rt(self.R, sol.eq.project(K))                # R⁻ᵀ (P K)ᵀ
        var_q = np.einsum("mk,mk->k", Z, Z) + (P * P) @ residual
        mu = sol.eq.project(sol.C @ sol.charges)
        z = sgp.solve_rt(self.R, (K.T @ mu)[None, :])
        var_E = float(np.sum(z * z) + np.sum(mu * mu * residual))
        return np.sqrt(np.clip(var_q, 0.0, None)), var_E

    # ---------------------------------------------------------------- files
    def to_dict(self) -> dict:
        """``{"type": "qeq", hardness, widths, accuracy, the χ term's settings and state, the fit's summary}``."""
        return {"type": self.type,
                "hardness_eV_per_e2": {str(z): v for z, v in sorted(self.hardness.items())},
                "widths_A": {str(z): v for z, v in sorted(self.widths.items())},
                "accuracy": self.accuracy,
                "term": {"type": self.term.type, "settings": self.term.settings(), "state": self.term.fitted_state(),
                         "n_columns": int(self.term.n_columns)},
                "kmm_block_sizes": [int(len(L)) for L in self.kmm_chol],
                "fit": self.fit}

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """The χ term's sparse points, the weights, R's upper triangle and K_MM's factors' lower triangles."""
        out = {f"term_{k}": np.asarray(v, dtype=float) for k, v in self.term.fitted_arrays().items()}
        out["alpha"] = self.alpha
        out["R"] = self.R[np.triu_indices(len(self.R))]
        for b, L in enumerate(self.kmm_chol):
            out[f"kmm_chol_{b}"] = L[np.tril_indices(len(L))]
        return out

    @classmethod
    def from_dict(cls, d: Mapping, arrays: Mapping[str, np.ndarray]) -> "QEqBaseline":
        """Rebuild from :meth:`to_dict` and :meth:`to_arrays`; ValueError or KeyError naming what does not fit."""
        tm = d["term"]
        term = build_terms([{"type": tm["type"], **dict(tm["settings"])}], where="qeq baseline term")[0]
        term.restore(dict(tm["state"]), {k[len("term_"):]: a for k, a in arrays.items() if k.startswith("term_")})
        M = int(term.n_columns)
        if M != int(tm["n_columns"]):
            raise ValueError(f"the electronegativity term has {M} sparse points, the file says {tm['n_columns']}")
        alpha = np.asarray(arrays["alpha"], dtype=float)
        if alpha.shape != (M,) or not np.all(np.isfinite(alpha)):
            raise ValueError(f"entry 'alpha' has shape {alpha.shape} or values not finite, expected ({M},)")
        R = np.zeros((M, M))
        tri = np.asarray(arrays["R"], dtype=float)
        if tri.shape != (M * (M + 1) // 2,):
            raise ValueError(f"entry 'R' has shape {tri.shape}, expected ({M * (M + 1) // 2},)")
        R[np.triu_indices(M)] = tri
        chol = []
        for b, n in enumerate(int(x) for x in d["kmm_block_sizes"]):
            L = np.zeros((n, n))
            L[np.tril_indices(n)] = np.asarray(arrays[f"kmm_chol_{b}"], dtype=float)
            chol.append(L)
        if sum(len(L) for L in chol) != M:
            raise ValueError(f"K_MM blocks of {[len(L) for L in chol]} do not add up to {M} sparse points")
        hardness = {int(z): float(v) for z, v in dict(d["hardness_eV_per_e2"]).items()}
        widths = {int(z): float(v) for z, v in dict(d["widths_A"]).items()}
        if not all(v > 0 and math.isfinite(v) for v in widths.values()):
            raise ValueError(f"widths_A {d['widths_A']!r} must be positive lengths")
        return cls(term, alpha, hardness, widths, chol, R, accuracy=float(d.get("accuracy", 1e-6)),
                   fit=dict(d.get("fit") or {}))

    def describe(self) -> str:
        """E.g. ``charge equilibration: χ from soap (cutoff 4 A, 180 sparse points, δ 2.1 eV/e); J (eV/e²) C 3.1, H 6.2; ...``."""
        J = ", ".join(f"{chemical_symbols[z]} {v:.4g}" for z, v in sorted(self.hardness.items()))
        w = ", ".join(f"{chemical_symbols[z]} {v:.3g}" for z, v in sorted(self.widths.items()))
        return (f"charge equilibration: χ from {self.term.type} (cutoff {self.term.cutoff_A:g} A, "
                f"{self.term.n_columns} sparse points, δ {self.term.delta_eV:.4g} eV/e); hardness (eV/e²) {J}; "
                f"Gaussian widths (A) {w}; Ewald accuracy {self.accuracy:.3g}")
