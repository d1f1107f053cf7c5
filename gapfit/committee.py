"""A posterior committee: weight vectors drawn from the sparse GP's posterior, for uncertainties of derived properties.

The weights of a fitted model have the Gaussian posterior
``α ~ N(α̂, (RᵀR)⁻¹)``, R the triangular factor of the stacked, σ-weighted
system (data rows over the prior rows). A member is ``α̂ + s·R⁻¹z`` with
``z ~ N(0, I)``: one triangular solve for all members, no inverse. Every
prediction is linear in the weights, so a member's energy, forces and
stress are the model's own plus the design rows (the derivatives of those
observables with respect to the weights, computed once from one descriptor
evaluation) times the member's deviation: one matrix product for the whole
committee, whatever its size.

What the spread means: two kinds of member.

* ``kind="predictive"`` (default): each member is a draw of the whole
  predictive distribution, the weights' posterior plus the part the sparse
  points cannot represent (``k** − kᵀK_MM⁻¹k``, the Nyström residual of each
  SOAP term, drawn jointly and exactly at the environments the committee is
  asked about: :mod:`gapfit.residual_draws`). Far from the sparse points
  (a surface in a model fitted to bulk, a liquid in a model fitted to
  crystals) the residual dominates, and only these members spread there.
  The members' std of a local energy equals the model's predicted std (in
  expectation over the draws).
* ``kind="weights"``: the weight-space posterior only, ``kᵀ(RᵀR)⁻¹k``. A
  member is then a model of its own (:func:`member_models`), defined on any
  structure without further draws, and its std is at most the predicted
  std, equal to it only where the sparse points cover the structure. Kept
  for member-by-member MD (each member integrated as its own potential) and
  for comparison.

A predictive member is one function across all the frames it predicts (the
residual's values, once drawn at an environment, stay), so the same member
is used for a bulk reference and a slab cut from it, or for every frame of a
trajectory; the draws depend on the order frames are first seen.

Calibration: the model's calibration scales (fitted on held-out frames,
see :mod:`gapfit.calibration`) multiply the weight-space deviations.
Derived properties (lattice constants, elastic constants, phonons, relaxed
defect energies) are functions of forces and stresses at least as much as
of energies, so the forces scale is used, or the energy scale when the
model has no forces scale; ``calibrated=False`` keeps the raw posterior.
The residual draws are scaled by ``max(s, 1)`` (``residual_scale=
"conservative"``, default): held-out frames from the training distribution
that show the model too confident (s > 1) widen them too, but frames that
show it too cautious near the data (s < 1) say nothing about how wrong it is
far from them, so they do not narrow them. ``"prior"`` keeps the prior's δ,
``"calibrated"`` applies s as it is (docs/validation.md has the Cu surface
energy and the test sets under each choice).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Union

import numpy as np
import scipy.linalg
from ase import Atoms

from .errors import NotFittedError
from .prediction import UncertaintyRequest

if TYPE_CHECKING:  # annotations only
    from .model import GAP
    from .prediction import Prediction


@dataclass
class CommitteePrediction:
    """The model's prediction of one frame with every committee member's.

    Attributes
    ----------
    mean : Prediction
        The model's own prediction (the posterior mean weights).
    energy_eV : ndarray (K,)
        Each member's total energy.
    forces_eV_per_A : ndarray (K, n_atoms, 3) or None
    stress_eV_per_A3 : ndarray (K, 6) or None
        ASE's sign and Voigt order; periodic frames only.
    """

    mean: "Prediction"
    energy_eV: np.ndarray
    forces_eV_per_A: Optional[np.ndarray] = None
    stress_eV_per_A3: Optional[np.ndarray] = None

    @property
    def energy_std(self) -> float:
        """Committee standard deviation of the energy, eV."""
        return float(np.std(self.energy_eV, ddof=1)) if len(self.energy_eV) > 1 else 0.0

    @property
    def forces_std(self) -> Optional[np.ndarray]:
        """Committee standard deviation of each force component, eV/Å (n_atoms, 3)."""
        f = self.forces_eV_per_A
        if f is None:
            return None
        return np.std(f, axis=0, ddof=1) if len(f) > 1 else np.zeros(f.shape[1:])

    @property
    def stress_std(self) -> Optional[np.ndarray]:
        """Committee standard deviation of each stress component, eV/Å³ (6,)."""
        s = self.stress_eV_per_A3
        if s is None:
            return None
        return np.std(s, axis=0, ddof=1) if len(s) > 1 else np.zeros(6)


class Committee:
    """K weight vectors drawn from a fitted model's posterior (seeded), predicting together.

    Parameters
    ----------
    model : GAP
        A fitted model (it must hold its factor: any model fitted or loaded by
        this version does).
    n_members : int
        K, the committee size. The spread's relative error falls as
        ``1/sqrt(2K)``: 16 members give about 18 %, 64 about 9 %.
    seed : int
        Same model, K and seed give the same members.
    calibrated : bool
        Scale the members' deviations by the model's calibration (see the
        module docstring).
    member_forces : bool
        Compute the members' forces (most of a committee's cost: their design
        rows). False gives each member's energy and stress only, with the
        model's own forces still computed: what reweighting MD averages
        needs (``gapfit md --committee``: 1.14× a plain step for 64 Cu atoms
        against 1.63× with the members' forces, docs/reweighting.md).
    kind : {"predictive", "weights"}
        Members drawn from the whole predictive distribution (default) or
        from the weights' posterior only (see the module docstring).
    residual_scale : {"conservative", "prior", "calibrated"}
        Predictive members: the residual draws are scaled by the calibration
        factor s where it widens them and keep the prior's δ where it would
        narrow them (``max(s, 1)``, "conservative", default), always keep
        the prior's δ ("prior") or are scaled by s ("calibrated"); see the
        module docstring.
    tolerance, max_points
        Predictive members: an environment gets its own residual draw when
        its residual variance, given those drawn, exceeds ``tolerance · δ²``;
        at most ``max_points`` per SOAP term and species
        (:class:`gapfit.residual_draws.ResidualDraws`).
    """

    KINDS = ("predictive", "weights")
    RESIDUAL_SCALES = ("conservative", "prior", "calibrated")

    def __init__(self, model: "GAP", n_members: int = 16, *, seed: int = 0, calibrated: bool = True,
                 member_forces: bool = True, kind: str = "predictive", residual_scale: str = "conservative",
                 tolerance: float = 1e-10, max_points: int = 3000):
        st = getattr(model, "state_", None)
        if st is None or st.alpha is None or st.R_ab is None:
            raise NotFittedError("a committee needs a fitted model with its factor: fit() or gapfit.load() first")
        if int(n_members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got n_members={n_members!r}")
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        if residual_scale not in self.RESIDUAL_SCALES:
            raise ValueError(f"residual_scale must be one of {self.RESIDUAL_SCALES}, got {residual_scale!r}")
        self.model = model
        self.kind = kind
        self.member_forces = bool(member_forces)
        self.n_members = int(n_members)
        self.seed = int(seed)
        cal = st.calibration or {}
        scale = cal.get("forces_scale") or cal.get("energy_scale") if calibrated else None
        #: the factor the posterior deviations are multiplied by (1 without calibration)
        self.scale = float(scale) if scale else 1.0
        #: the factor the residual draws are multiplied by
        self.residual_scale = {"conservative": max(self.scale, 1.0), "prior": 1.0,
                               "calibrated": self.scale}[residual_scale]
        z = np.random.default_rng(self.seed).standard_normal((st.n_columns, self.n_members))
        #: (M, K) deviations of the members' weights from the model's
        self.deviations = self.scale * scipy.linalg.solve_triangular(st.R, z, check_finite=False)
        #: the members' residual draws (predictive members of a model with a SOAP term; else None)
        self.residual = None
        if kind == "predictive":
            from .residual_draws import ResidualDraws
            draws = ResidualDraws(st, self.n_members, self.seed, tolerance=tolerance, max_points=max_points)
            self.residual = draws if draws.blocks else None

    @property
    def weights(self) -> np.ndarray:
        """The members' weight vectors, (K, M): weight-space members only."""
        if self.residual is not None:
            raise ValueError("predictive members are not weight vectors alone (their residual draws grow with the "
                             "frames they see): use Committee(..., kind='weights') for members as models")
        return self.model.state_.alpha[None, :] + self.deviations.T

    def predict(self, frames: Union[Atoms, Sequence[Atoms]], *, forces: bool = True, stress: bool = True,
                uncertainty: Union[bool, str, Sequence[str], None] = False,
                calibrated: bool = True) -> List[CommitteePrediction]:
        """The model's and every member's energy, forces and stress of each frame (one descriptor pass each).

        ``uncertainty`` (as in :meth:`GAP.predict`) also fills the model's
        predicted standard deviations in ``mean``, from the same descriptors.
        """
        model = self.model
        if isinstance(frames, Atoms):
            frames = [frames]
        model.check_frames(frames)
        request = UncertaintyRequest.parse(uncertainty)
        out = []
        for a in frames:
            periodic = bool(np.all(a.pbc)) and a.cell.rank == 3
            want_stress = bool(stress and periodic)
            descs = model.descriptors([a], gradients=bool(forces or want_stress or request.forces))
            mean = model.predict_descriptors(a, [d[0] for d in descs], forces=bool(forces), stress=want_stress,
                                             uncertainty=request, calibrated=calibrated)
            want_f = bool(forces and self.member_forces)
            rows = model.design_rows(descs, forces=want_f, virial=want_stress)
            D = self.deviations
            parts = [(rows, D)]
            if self.residual is not None:
                frame_descs = [d[0] for d in descs]
                self.residual.cover(frame_descs)
                D = D + self.residual_scale * self.residual.weight_correction(len(D))
                parts = [(rows, D)] + [(r, self.residual_scale * c) for r, c in
                                       self.residual.rows(frame_descs, forces=want_f, virial=want_stress)]
            energy = mean.energy + sum(r.energy[0] @ c for r, c in parts)
            f = s = None
            if want_f and rows.gradient is not None:
                f = mean.forces[None] - sum(r.gradient @ c for r, c in parts).T.reshape(self.n_members, len(a), 3)
            if want_stress and rows.virial is not None:
                s = mean.stress[None] + sum(r.virial[0] @ c for r, c in parts).T / a.get_volume()
            out.append(CommitteePrediction(mean, energy, f, s))
        return out


def member_models(committee: Committee) -> List["GAP"]:
    """Each member as a model of its own: a clone of the model's parameters over its state with the member's weights.

    The members share the model's terms (descriptor settings, sparse points)
    and factors; only the weights differ. Weight-space members only
    (``Committee(..., kind="weights")``).
    """
    from dataclasses import replace

    from sklearn.base import clone
    out = []
    for w in committee.weights:
        m = clone(committee.model)
        m.state_ = replace(committee.model.state_, alpha=np.array(w))
        out.append(m)
    return out
