"""Prediction and uncertainty as functions of a :class:`gapfit.state.FittedState`.

Each term gives its part of a frame's energy, forces and virial (the same
term code as the design rows) and the baseline is added back; the posterior
standard deviations are DTC variances from the Cholesky factors of K_MM and
the QR factor R of the fit (:func:`gapfit.sgp.dtc_variance`).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

import numpy as np
from ase import Atoms

from . import sgp
from .baselines import is_periodic
from .data import check_structure, group_by_atoms, where_of
from .errors import InputError, NotFittedError
from .prediction import Prediction, SharePrediction, UncertaintyRequest
from .state import FittedState
from .terms.base import VOIGT

#: What ``uncertainty=`` accepts (see :func:`predict`).
UncertaintyArg = Union[bool, str, Sequence[str], None]


def check_fitted(state: Optional[FittedState]) -> None:
    """Raise :class:`gapfit.errors.NotFittedError` unless ``state`` holds solved weights."""
    if state is None or not state.is_fitted:
        raise NotFittedError("this GAP model is not fitted yet: call fit(frames) or gapfit.load(path) first")


def check_frames(state: Optional[FittedState], frames: Sequence[Atoms]) -> None:
    """Raise InputError naming the frame and field when a frame cannot be predicted with ``state``."""
    check_fitted(state)
    for k, a in enumerate(frames):
        where = where_of(a, k)
        check_structure(a, where)
        unknown = sorted(set(int(z) for z in a.numbers) - set(state.species))
        if unknown:
            from ase.data import chemical_symbols
            raise InputError(f"{where}: field 'numbers' holds species {[chemical_symbols[z] for z in unknown]} "
                             f"that the model was not trained on (it knows "
                             f"{[chemical_symbols[z] for z in state.species]})")


def predict(state: Optional[FittedState], frames: Union[Atoms, Sequence[Atoms]], *, forces: bool = True,
            stress: bool = True, uncertainty: UncertaintyArg = False, calibrated: bool = True,
            progress: bool = False) -> List[Prediction]:
    """Each frame's :class:`gapfit.prediction.Prediction` (see :meth:`gapfit.GAP.predict` for the arguments)."""
    from tqdm.auto import tqdm
    if isinstance(frames, Atoms):
        frames = [frames]
    check_frames(state, frames)
    request = UncertaintyRequest.parse(uncertainty)
    grad = forces or stress or request.forces
    # force variances and the exact route build design rows, which need per-pair gradients
    layout = "pairs" if (request.forces or request.exact) else "blocks"
    frames = list(frames)
    out = []
    with tqdm(total=len(frames), desc="predict", unit="frame", disable=not progress, leave=False) as bar:
        for idx in group_by_atoms(list(range(len(frames))), [len(a) for a in frames], state.atoms_per_chunk):
            chunk = [frames[k] for k in idx]
            descs = state.descriptors(chunk, gradients=grad, layout=layout)
            out.extend(predict_chunk(state, chunk, descs, forces, stress, request, calibrated))
            bar.update(len(chunk))
    return out


def predict_descriptors(state: FittedState, atoms: Atoms, descriptors: Sequence[Any], *, forces: bool = True,
                        stress: bool = True, uncertainty: UncertaintyArg = False,
                        calibrated: bool = True) -> Prediction:
    """One frame's prediction from its descriptors (one entry per term); see :meth:`gapfit.GAP.predict_descriptors`."""
    return predict_chunk(state, [atoms], [[d] for d in descriptors], forces, stress,
                         UncertaintyRequest.parse(uncertainty), calibrated)[0]


def predict_chunk(state: FittedState, chunk: Sequence[Atoms], descs: List[list], forces: bool, stress: bool,
                  request: UncertaintyRequest, calibrated: bool) -> List[Prediction]:
    """Predictions of a chunk of frames from each term's descriptors of them."""
    periodic = [is_periodic(a) for a in chunk]
    keep_rows = (request.local_energy or request.energy) and not request.exact
    # every term's kernels for the whole chunk at once: wide sparse sets are read once, not per frame
    parts = [term.predict_many(d, state.alpha[sl], forces=bool(forces), virial=bool(stress) and any(periodic),
                               local_rows=keep_rows)
             for term, d, sl in zip(state.terms, descs, state.column_slices)]
    out = [_frame_prediction(state, atoms, [term_parts[f] for term_parts in parts], forces,
                             bool(stress) and periodic[f])
           for f, atoms in enumerate(chunk)]
    if request:
        if request.exact:
            for f, p in enumerate(out):
                uncertainty_exact(state, p, [d[f] for d in descs])
        else:
            uncertainty(state, out, descs, request, [[tp.local_rows for tp in term_parts] for term_parts in parts])
        if calibrated:
            for p in out:
                apply_calibration(state, p)
        charge_stds(state, chunk, out, request)
    return out


def charge_stds(state: FittedState, chunk: Sequence[Atoms], preds: List[Prediction],
                request: UncertaintyRequest) -> None:
    """With charge equilibration: each charge's std, and the energy's variance from the charges added in.

    The electronegativity GP and the short-range terms are fitted apart, so their errors are taken as
    independent: var(E) = var(GP part, calibrated) + μᵀ Cov(χ) μ (:meth:`gapfit.qeq.QEqBaseline.uncertainty`).
    """
    qeq = state.charge_part
    if qeq is None:
        return
    for atoms, p in zip(chunk, preds):
        p.charges_std, var_E = qeq.uncertainty(atoms)
        if request.energy and p.energy_std is not None:
            p.energy_std = float(np.sqrt(p.energy_std ** 2 + var_E))


def _frame_prediction(state: FittedState, atoms: Atoms, term_parts: list, forces: bool,
                      want_virial: bool) -> Prediction:
    """One frame's energy, forces and stress: the baseline plus each term's part."""
    base = state.baseline.evaluate(atoms, forces=bool(forces), virial=want_virial)
    local = np.array(base.local_energy_eV, dtype=float)
    grad = np.zeros((len(atoms), 3)) if forces else None
    virial = np.array(base.virial_eV, dtype=float) if want_virial else None
    for tp in term_parts:
        local += tp.local_energy_eV
        if grad is not None and tp.gradient_eV_per_A is not None:
            grad += tp.gradient_eV_per_A
        if virial is not None and tp.virial_eV is not None:
            virial += tp.virial_eV
    p = Prediction(energy=float(local.sum()), energies=local, charges=base.charges_e)
    if grad is not None:
        p.forces = np.asarray(base.forces_eV_per_A, dtype=float) - grad
    if virial is not None:
        p.stress = np.array([virial[i, j] for i, j in VOIGT]) / atoms.get_volume()
    return p


def predict_share(state: Optional[FittedState], atoms: Atoms, centres: Union[Sequence[int], np.ndarray], *,
                  baseline: bool, uncertainty: Union[str, Sequence[str], None] = None, virial: bool = True,
                  calibrated: bool = True) -> SharePrediction:
    """The part of ``atoms``' prediction that comes from the local energies of the atoms ``centres``.

    The division of a frame's work (e.g. over MPI ranks, each with its own
    atoms as centres): every term computes the environments (descriptors,
    kernels) of the centres only, and gives their local energies, the
    forces those energies exert on every atom and their per-atom virials
    (:class:`gapfit.prediction.SharePrediction`). Summing the shares of a
    partition of ``range(len(atoms))``, with ``baseline=True`` in exactly
    one of them, gives :func:`predict`'s energies, forces and virial
    (``-stress × volume``) to round-off.

    Parameters
    ----------
    state : FittedState
        A fitted model's state (``GAP.state_``).
    atoms : ase.Atoms
        The whole frame (positions in Å), periodic or finite.
    centres : sequence of int
        Distinct atom indices (any order; may be empty).
    baseline : bool
        Add the model's baseline (E0, ZBL, tabulated pair, Coulomb, an ASE
        calculator), evaluated for the whole frame: its per-atom energies,
        forces and per-atom virials of every atom
        (:meth:`gapfit.baselines.Baseline.evaluate_atoms`).
    uncertainty : None, "local_energy", "forces" or a sequence of them
        ``"local_energy"``: the predictive std of the centres' local
        energies (eV). ``"forces"``: the norm of each atom's force std
        (eV/Å), computed for the whole frame (the same for every share: ask
        it in one share only). The total-energy std is not a sum over
        shares and is not offered here.
    virial : bool
        Compute ``virial_eV`` and ``atom_virial_eV`` (needs the strain
        gradients of periodic frames: skip them on MD steps without pressure).
    calibrated : bool
        Scale the stds by the model's fitted calibration, as :func:`predict` does.

    Raises
    ------
    gapfit.errors.InputError
        For centres out of range, repeated or not integers, a bad
        ``uncertainty``, or a frame the model cannot predict.
    """
    check_frames(state, [atoms])
    n = len(atoms)
    centres = share_centres(centres, n)
    request = _share_request(uncertainty)
    energies = np.zeros(n)
    grad = np.zeros((n, 3))
    W = np.zeros((n, 3, 3)) if virial else None
    rows, priors = [], []
    if len(centres):
        for term, sl in zip(state.terms, state.column_slices):
            desc = term.compute([atoms], gradients=True, layout="blocks", centres=[centres])[0]
            part = term.predict_share(desc, atoms, state.alpha[sl], virial=virial, local_rows=request.local_energy)
            energies[centres] += part.local_energy_eV
            grad += part.gradient_eV_per_A
            if W is not None:
                W[centres] -= part.atom_virial_eV  # ∂ε/∂ε (ASE's sign) to the MD codes' virial
            if request.local_energy:
                rows.append(part.local_rows)
                priors.append(part.local_prior_eV2)
    split = False
    if baseline:
        base = state.baseline.evaluate_atoms(atoms)
        energies += base.local_energy_eV
        grad -= base.forces_eV_per_A
        if W is not None:
            W -= base.atom_virial_eV
        split = bool(base.atom_virial_split)
    out = SharePrediction(centres=centres, energies_eV=energies, forces_eV_per_A=-grad,
                          virial_eV=None if W is None else W.sum(axis=0), atom_virial_eV=W,
                          baseline_atom_virial_split=split)
    if request.local_energy:
        std = np.zeros(n)
        if len(centres):
            var = sgp.dtc_variance(np.hstack(rows), sum(priors), state.kmm_chol, state.R_ab)
            scale = (state.calibration or {}).get("energy_scale") if calibrated else None
            std[centres] = np.sqrt(var) * (1.0 if scale is None else scale)
        out.local_energy_std_eV = std
    if request.forces:
        p = predict(state, atoms, forces=True, stress=False, uncertainty="forces", calibrated=calibrated)[0]
        out.forces_std_eV_per_A = np.linalg.norm(p.forces_std, axis=1)
    return out


def share_centres(centres: Union[Sequence[int], np.ndarray], n_atoms: int) -> np.ndarray:
    """``centres`` as sorted distinct int64 atom indices, or InputError naming the bad entry and the fix."""
    c = np.asarray(centres)
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.ndim != 1 or not np.issubdtype(c.dtype, np.integer):
        raise InputError(f"centres must be a 1-D list of atom indices (integers), got an array of shape {c.shape} "
                         f"and type {c.dtype}")
    bad = c[(c < 0) | (c >= n_atoms)]
    if len(bad):
        raise InputError(f"centres: atom index {int(bad[0])} is outside the frame's {n_atoms} atoms "
                         f"(indices run from 0 to {n_atoms - 1})")
    out = np.unique(c).astype(np.int64)
    if len(out) != len(c):
        vals, counts = np.unique(c, return_counts=True)
        raise InputError(f"centres: atom index {int(vals[counts > 1][0])} is given more than once; each atom "
                         "belongs to one share")
    return out


def _share_request(spec) -> UncertaintyRequest:
    """The stds a share can give (local energies, forces), or InputError naming the one it cannot."""
    try:
        req = UncertaintyRequest.parse(spec)
    except ValueError as exc:
        raise InputError(f"predict_share: {exc}") from None
    if req.energy or req.exact:
        raise InputError(f"predict_share: uncertainty {spec!r} asks for the total-energy std (or the exact "
                         "route), which is not a sum over shares; ask for 'local_energy' and/or 'forces'")
    return req


def uncertainty(state: FittedState, preds: List[Prediction], descs: List[list], request: UncertaintyRequest,
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
    with_forces = request.forces and all(getattr(d[0], "pair_gradients", True) is not None for d in descs)
    priors = [[t.prior_variance(d[f], forces=with_forces, energy=request.energy)
               for t, d in zip(state.terms, descs)] for f in range(len(preds))]
    if request.local_energy or request.energy:
        _energy_stds(state, preds, descs, request, local_rows, priors)
    if with_forces:
        G = np.hstack([t.design_rows(d, forces=True, virial=False, local=False).gradient
                       for t, d in zip(state.terms, descs)])
        prior_f = np.concatenate([sum(pr.forces_eV2_per_A2 for pr in frame).ravel() for frame in priors])
        var_F = sgp.dtc_variance(G, prior_f, state.kmm_chol, state.R_ab)
        bounds = _atom_bounds(preds)
        for f, p in enumerate(preds):
            p.forces_std = np.sqrt(var_F[3 * bounds[f]:3 * bounds[f + 1]]).reshape(-1, 3)


def _atom_bounds(preds: Sequence[Prediction]) -> np.ndarray:
    """Where each frame's atoms start in the chunk, and the end."""
    return np.concatenate([[0], np.cumsum([len(p.energies) for p in preds])])


def _energy_stds(state: FittedState, preds, descs, request, local_rows, priors) -> None:
    """Local-energy and total-energy stds of a chunk, in one solve (with a wide model, reading R dominates)."""
    n_frames = len(preds)
    bounds = _atom_bounds(preds)
    per_term = []
    for k, (t, d) in enumerate(zip(state.terms, descs)):
        if all(r is not None for r in local_rows[k]):
            per_term.append(np.vstack(local_rows[k]))
        else:
            per_term.append(t.design_rows(d, forces=False, virial=False, local=True).local)
    L = np.hstack(per_term)
    rows, prior = [], []
    if request.local_energy:
        rows.append(L)
        prior.append(np.concatenate([sum(pr.local_eV2 for pr in frame) for frame in priors]))
    if request.energy:
        rows.append(np.add.reduceat(L, bounds[:-1], axis=0))
        prior.append(np.array([sum(pr.energy_eV2 for pr in frame) for frame in priors]))
    var = sgp.dtc_variance(np.vstack(rows), np.concatenate(prior), state.kmm_chol, state.R_ab)
    if request.local_energy:
        for f, p in enumerate(preds):
            p.local_energy_std = np.sqrt(var[bounds[f]:bounds[f + 1]])
    if request.energy:
        for f, p in enumerate(preds):
            p.energy_std = float(np.sqrt(var[len(var) - n_frames + f]))


def uncertainty_exact(state: FittedState, p: Prediction, ds: list) -> None:
    """The reference route: every row from the design rows, every prior in full, all three stds."""
    with_forces = all(getattr(d, "pair_gradients", True) is not None for d in ds)
    rows = state.design_rows([[d] for d in ds], forces=with_forces, virial=False, local=True)
    priors = [t.prior_variance(d, forces=with_forces) for t, d in zip(state.terms, ds)]
    var_local = sgp.dtc_variance(rows.local, sum(pr.local_eV2 for pr in priors), state.kmm_chol, state.R_ab)
    var_E = sgp.dtc_variance(rows.energy, np.array([sum(pr.energy_eV2 for pr in priors)]), state.kmm_chol,
                             state.R_ab)
    p.energy_std = float(np.sqrt(var_E[0]))
    p.local_energy_std = np.sqrt(var_local)
    if with_forces and rows.gradient is not None:
        prior_f = sum(pr.forces_eV2_per_A2 for pr in priors).ravel()
        p.forces_std = np.sqrt(sgp.dtc_variance(rows.gradient, prior_f, state.kmm_chol, state.R_ab)).reshape(-1, 3)


def apply_calibration(state: FittedState, p: Prediction) -> None:
    """Scale the computed stds by the fitted calibration (raw values into the ``*_raw`` fields)."""
    cal = state.calibration
    if not cal:
        return
    se, sf = cal.get("energy_scale"), cal.get("forces_scale")
    for name, scale in (("energy_std", se), ("local_energy_std", se), ("forces_std", sf)):
        val = getattr(p, name)
        if val is not None and scale is not None:
            setattr(p, name + "_raw", val)
            setattr(p, name, val * scale)
