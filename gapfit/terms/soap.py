"""The SOAP term: GAP's many-body term, a normalised dot-product kernel to the power ζ.

k(q̂, x) = δ² (q̂·x)^ζ between an atom's normalised SOAP vector q̂ and a sparse
point x of the same centre species (zero across species). Descriptors come
from featomic (default; smooth cutoff, strain gradients) or dscribe, with
gradients stored per neighbour pair (never as dense atoms × atoms arrays).

Design rows and the prediction are two routes to the same numbers: the rows
contract the raw pair gradients against the sparse points (one GEMM per pair
group), the prediction first contracts the kernel derivatives with the
weights (h = ∂E/∂q, one vector per atom) and then with the gradients, which
is what makes prediction cheap.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import scipy.sparse

from ase import Atoms

from .._loops import accumulate_forces, add_pair_rows, contract_forces, pair_projection
from ..descriptors import SoapSettings, make_descriptor
from ..descriptors.base import FrameDescriptors, normalised_pair_gradients
from ..errors import InputError
from ..kernels import dot_kernel, kernel_from_dot
from ..params import species_number
from ..sparsify import METHODS, select_sparse
from .base import VOIGT, PriorVariance, Term, TermPrediction, TermRows, TermShare

#: Sparse points per species when ``n_sparse`` is not given (capped by the data).
DEFAULT_SPARSE_PER_SPECIES = 2000
# Pairs per GEMM: bounds the (3·pairs × M) temporary to a few hundred MB.
_PAIRS_PER_GEMM = 8192


class Soap(Term):
    """SOAP power spectrum with GAP's dot-product kernel.

    Settings
    --------
    cutoff, cutoff_transition_width, n_max, l_max, atom_sigma, backend, dscribe_mode
        SOAP settings, see :class:`gapfit.descriptors.SoapSettings` (Å).
    zeta : float, default=4
        Kernel exponent.
    delta : float or None
        Kernel scale δ in eV; None: from the data (see :meth:`default_delta`).
    n_sparse : int, dict {species: int} or None
        Sparse points per species; None: ``min(environments, 2000)``.
    sparse_method : {"cur", "fps", "random"}, default="cur"
    """

    type = "soap"
    SETTINGS = {"cutoff": 5.0, "cutoff_transition_width": 1.0, "n_max": 8, "l_max": 8, "atom_sigma": 0.5,
                "zeta": 4.0, "delta": None, "n_sparse": None, "sparse_method": "cur",
                "backend": "featomic", "dscribe_mode": "smooth"}

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        self.points: Dict[int, np.ndarray] = {}
        self.descriptor = None

    # --------------------------------------------------------------- settings
    @property
    def soap_settings(self) -> SoapSettings:
        return SoapSettings(cutoff=float(self.cutoff), cutoff_transition_width=float(self.cutoff_transition_width),
                            n_max=int(self.n_max), l_max=int(self.l_max), atom_sigma=float(self.atom_sigma),
                            backend=self.backend, dscribe_mode=self.dscribe_mode)

    def check_settings(self) -> None:
        from ..params import check_params
        check_params({k: v for k, v in self.settings().items()})
        if self.sparse_method not in METHODS:
            raise InputError(f"soap sparse_method must be one of {METHODS}, got {self.sparse_method!r}",
                             param="sparse_method")

    @property
    def cutoff_A(self) -> float:
        return float(self.cutoff)

    @property
    def zeta_(self) -> float:
        return float(self.zeta)

    # ------------------------------------------------------------ descriptors
    def bind(self, species: Sequence[int]) -> None:
        self.species = sorted(int(z) for z in species)
        self.descriptor = make_descriptor(self.soap_settings, self.species)

    @property
    def n_features(self) -> int:
        return int(self.descriptor.n_features)

    @property
    def gradient_width(self) -> int:
        """The descriptor's length: every pair of a chunk holds its gradient of that many features."""
        return self.n_features

    def compute(self, frames, *, gradients: bool, layout: str = "pairs",
                centres: Optional[Sequence[np.ndarray]] = None) -> List[FrameDescriptors]:
        if centres is not None:
            # both backends compute only the centres' environments (featomic's selected samples,
            # dscribe's clusters around the centres)
            if self.backend == "featomic":
                return self.descriptor.compute(frames, gradients=gradients, layout=layout, centres=centres)
            return self.descriptor.compute(frames, gradients=gradients, centres=centres)
        if self.backend == "featomic":
            return self.descriptor.compute(frames, gradients=gradients, layout=layout)
        return self.descriptor.compute(frames, gradients=gradients)

    # ------------------------------------------------------------- sparse set
    def n_sparse_for(self, z: int, n_env: int) -> int:
        """Sparse points for species ``z`` given ``n_env`` candidate environments."""
        ns = self.n_sparse
        if ns is None:
            return min(n_env, DEFAULT_SPARSE_PER_SPECIES)
        if isinstance(ns, dict):
            for key, val in ns.items():
                if species_number(key) == z:
                    return min(n_env, int(val))
            return min(n_env, DEFAULT_SPARSE_PER_SPECIES)
        return min(n_env, int(ns))

    def candidate_rows(self, desc: FrameDescriptors) -> List[tuple]:
        atoms = np.arange(desc.n_atoms)
        return [(z, desc.values[desc.numbers == z], atoms[desc.numbers == z]) for z in self.species]

    def select_from_sample(self, sample, seed: int) -> Dict[str, Any]:
        """CUR / FPS / random selection per species from the sampled environments (in frame, atom order)."""
        self.points = {}
        n_env, n_cand = {}, {}
        for z in self.species:
            x = sample.rows(z)
            n_env[z] = int(sample.count.get(z, 0))
            if x is None or len(x) == 0:
                continue
            n_cand[z] = len(x)
            # the number of points follows the environments seen, not the sample's size
            n = min(self.n_sparse_for(z, n_env[z]), len(x))
            idx = select_sparse(x, n, self.sparse_method, seed=seed + z, zeta=float(self.zeta))
            self.points[z] = np.ascontiguousarray(x[idx])
        return {"sparse_points": {str(z): len(p) for z, p in self.points.items()},
                "environments": {str(z): n for z, n in n_env.items()},
                "candidates": {str(z): n for z, n in n_cand.items()}, "method": self.sparse_method}

    def __getstate__(self):
        # featomic's calculator handles do not pickle: a copy (a worker's) rebuilds them from the settings
        state = dict(self.__dict__)
        state["descriptor"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.species:
            self.bind(self.species)

    def species_without_points(self, species: Sequence[int]) -> List[int]:
        """The atomic numbers among ``species`` without sparse points: every species needs its own."""
        return [z for z in species if z not in self.points]

    @property
    def blocks(self) -> List[int]:
        """Species with sparse points, in column order."""
        return sorted(self.points)

    @property
    def offsets(self) -> Dict[int, int]:
        off, out = 0, {}
        for z in self.blocks:
            out[z] = off
            off += len(self.points[z])
        return out

    @property
    def n_columns(self) -> int:
        return int(sum(len(p) for p in self.points.values()))

    def kmm_blocks(self) -> List[np.ndarray]:
        return [dot_kernel(self.points[z], self.points[z], self.delta_eV, self.zeta_)[0] for z in self.blocks]

    def add_sparse_points(self, desc: FrameDescriptors, atom_indices: Sequence[int]) -> int:
        new: Dict[int, List[np.ndarray]] = {}
        for i in atom_indices:
            z = int(desc.numbers[i])
            q = desc.values[i]
            have = [self.points[z]] if z in self.points else []
            have += [np.array(new[z])] if z in new else []
            if any(len(h) and np.max(h @ q) > 1.0 - 1e-10 for h in have):
                continue  # a duplicate environment would make K_MM singular
            new.setdefault(z, []).append(q)
        for z, v in new.items():
            X = np.array(v)
            self.points[z] = np.vstack([self.points[z], X]) if z in self.points else X
        return sum(len(v) for v in new.values())

    # ------------------------------------------------------ rows, prediction
    def design_rows(self, descs: Sequence[FrameDescriptors], *, forces: bool, virial: bool,
                    local: bool = False) -> TermRows:
        n_frames = len(descs)
        n_at = np.array([d.n_atoms for d in descs], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(n_at)])
        n_tot = int(start[-1])
        M = self.n_columns
        numbers = np.concatenate([d.numbers for d in descs])
        q = np.concatenate([d.values for d in descs])
        frame_of_atom = np.repeat(np.arange(n_frames), n_at)
        E = np.zeros((n_frames, M))
        G = np.zeros((3 * n_tot, M)) if forces else None
        W9 = np.zeros((n_frames, 9, M)) if virial else None
        L = np.zeros((n_tot, M)) if local else None
        if forces or virial:
            norms = np.concatenate([d.norms for d in descs])
        if forces:
            pc = np.concatenate([d.pair_centre + s for d, s in zip(descs, start[:-1])])
            pn = np.concatenate([d.pair_neighbour + s for d, s in zip(descs, start[:-1])])
            pg_parts = [d.pair_gradients for d in descs]
            pp_parts = [d.pair_projection for d in descs]
            pair_start = np.concatenate([[0], np.cumsum([len(d.pair_centre) for d in descs])])
        periodic = [d.strain_gradients is not None for d in descs]
        delta, zeta = self.delta_eV, self.zeta_
        for z, o in self.offsets.items():
            X = self.points[z]
            cols = slice(o, o + len(X))
            atoms_z = np.flatnonzero(numbers == z)
            if len(atoms_z) == 0:
                continue
            c = q[atoms_z] @ X.T
            K, dK = kernel_from_dot(c, delta, zeta)
            ind = scipy.sparse.csr_matrix((np.ones(len(atoms_z)), (frame_of_atom[atoms_z], np.arange(len(atoms_z)))),
                                          shape=(n_frames, len(atoms_z)))
            E[:, cols] = ind @ K
            if local:
                L[atoms_z, cols] = K
            if not (forces or virial):
                continue
            # Chain rule through q̂ = q/|q| applied on the kernel side, so the raw
            # (column-sparse) gradients go straight into the GEMM:
            # dk/dq · dq = dKn ⊙ (dq·x) − (dKn ⊙ c) (dq·q̂), with dKn = dK/|q|.
            dKn = dK / norms[atoms_z][:, None]
            Pc = dKn * c
            if forces:
                row_in_z = np.full(n_tot, -1, dtype=np.int64)
                row_in_z[atoms_z] = np.arange(len(atoms_z))
                G[:, cols] += _pair_contraction(pc, pn, pg_parts, pp_parts, pair_start, row_in_z, dKn, Pc, X,
                                                n_tot, numbers)
            if virial and any(periodic):
                for f in np.flatnonzero(periodic):
                    sel = atoms_z[(atoms_z >= start[f]) & (atoms_z < start[f + 1])]
                    if len(sel) == 0:
                        continue
                    loc = sel - start[f]
                    S = descs[f].strain_gradients[loc]  # (n, 3, 3, D) raw
                    sproj = descs[f].strain_projection[loc].reshape(len(sel), 9)
                    T = (S.reshape(-1, S.shape[-1]) @ X.T).reshape(len(sel), 9, len(X))
                    rz = np.searchsorted(atoms_z, sel)
                    W9[f, :, cols] = np.einsum("nam,nm->am", T, dKn[rz]) - sproj.T @ Pc[rz]
        Wv = None
        if virial:
            W = W9.reshape(n_frames, 3, 3, M)
            Wv = np.stack([0.5 * (W[:, a, b] + W[:, b, a]) for a, b in VOIGT], axis=1)
        return TermRows(E, G, Wv, L, start)

    def predict(self, desc: FrameDescriptors, alpha: np.ndarray, *, forces: bool, virial: bool,
                local_rows: bool = False) -> TermPrediction:
        return self.predict_many([desc], alpha, forces=forces, virial=virial, local_rows=local_rows)[0]

    def predict_many(self, descs: Sequence[FrameDescriptors], alpha: np.ndarray, *, forces: bool, virial: bool,
                     local_rows: bool = False) -> List[TermPrediction]:
        """Every frame's part in one kernel GEMM per species (reading the sparse points once, not per frame)."""
        n_at = np.array([d.n_atoms for d in descs], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(n_at)])
        numbers = np.concatenate([d.numbers for d in descs])
        q = np.concatenate([d.values for d in descs]) if len(descs) > 1 else descs[0].values
        local, dE_dq, rows = self._kernel_parts(q, numbers, alpha, local_rows)
        out = []
        for f, desc in enumerate(descs):
            sl = slice(start[f], start[f + 1])
            tp = TermPrediction(local[sl], local_rows=None if rows is None else rows[sl])
            self._gradient_part(desc, dE_dq[sl], tp, forces, virial)
            out.append(tp)
        return out

    def _kernel_parts(self, q: np.ndarray, numbers: np.ndarray, alpha: np.ndarray, local_rows: bool):
        """Local energies, ∂ε/∂q of each environment row and (optionally) the kernel rows: one GEMM per species."""
        local = np.zeros(len(q))
        dE_dq = np.zeros_like(q)
        rows = np.zeros((len(q), self.n_columns)) if local_rows else None
        for z, o in self.offsets.items():
            X = self.points[z]
            m = np.flatnonzero(numbers == z)
            if not len(m):
                continue
            a = alpha[o:o + len(X)]
            K, dK = dot_kernel(q[m], X, self.delta_eV, self.zeta_)
            local[m] = K @ a
            dE_dq[m] = (dK * a) @ X
            if rows is not None:
                rows[m, o:o + len(X)] = K
        return local, dE_dq, rows

    def predict_share(self, desc: FrameDescriptors, atoms: Atoms, alpha: np.ndarray, *, virial: bool = True,
                      local_rows: bool = False) -> TermShare:
        """The centres' part of ``atoms``' prediction (see :meth:`Term.predict_share`).

        The same kernel as :meth:`predict_many` on the centres' rows; h =
        ∂E/∂q is contracted with their gradients onto every atom they see.
        Per-atom virials: from each centre's strain gradients in periodic
        frames (images included), from Σ_j (r_j − r_i) ⊗ ∂ε_i/∂r_j over its
        pairs in finite frames.
        """
        centres = np.arange(desc.n_atoms) if desc.centres is None else np.asarray(desc.centres)
        n, N = desc.n_atoms, len(atoms)
        if not desc.has_gradients:
            raise ValueError("soap: a share needs descriptors computed with gradients")
        q = desc.values
        local, dE_dq, rows = self._kernel_parts(q, desc.numbers, alpha, local_rows)
        h = (dE_dq - np.einsum("id,id->i", dE_dq, q)[:, None] * q) / desc.norms[:, None]
        f = np.zeros((N, 3))
        # per pair p = (centre row c, atom j): ∂ε_c/∂r_j (needed for finite frames' per-atom virials)
        want_pairs = virial and desc.strain_gradients is None
        pc, pn, pgrad = [], [], []
        if desc.pair_gradients is not None:
            accumulate_forces(f, desc.pair_gradients, h, desc.pair_centre, desc.pair_neighbour)
            if want_pairs:
                pc.append(desc.pair_centre)
                pn.append(desc.pair_neighbour)
                pgrad.append(pair_projection(desc.pair_gradients, h, desc.pair_centre))
        else:
            for centre, neighbour, first, scale, values in desc.gradient_blocks:
                hs = np.ascontiguousarray(h[:, first:first + len(scale)] * scale)
                accumulate_forces(f, values, hs, centre, neighbour)
                if want_pairs:
                    pc.append(centre)
                    pn.append(neighbour)
                    pgrad.append(pair_projection(values, hs, centre))
        W = None
        if virial and desc.strain_gradients is not None:
            W = np.einsum("iad,id->ia", desc.strain_gradients.reshape(n, 9, -1), h).reshape(n, 3, 3)
        elif virial:
            c, j, g = np.concatenate(pc), np.concatenate(pn), np.concatenate(pgrad)
            rel = atoms.positions[j] - atoms.positions[centres[c]]
            W = _rows_sum(c, rel[:, :, None] * g[:, None, :], n)
        if W is not None:
            W = 0.5 * (W + W.transpose(0, 2, 1))
        return TermShare(centres, local, -f, W, rows,
                         np.full(n, self.delta_eV ** 2) if local_rows else None)

    def predict_weighted(self, desc: FrameDescriptors, alpha: np.ndarray, weights: np.ndarray, *,
                         virial: bool) -> TermPrediction:
        """See :meth:`Term.predict_weighted`: ∂E/∂q̂ of each atom scaled by its weight, then the usual contraction."""
        local, dE_dq, _ = self._kernel_parts(desc.values, desc.numbers, alpha, False)
        out = TermPrediction(local)
        self._gradient_part(desc, dE_dq * np.asarray(weights, dtype=float)[:, None], out, True, virial)
        return out

    @staticmethod
    def _gradient_part(desc: FrameDescriptors, dE_dq: np.ndarray, out: TermPrediction, forces: bool,
                       virial: bool) -> None:
        """∂E/∂r and the virial from ∂E/∂q̂ (one vector per atom) and the stored raw gradients."""
        n = desc.n_atoms
        want_f = forces and desc.has_gradients
        if not (want_f or (virial and desc.strain_gradients is not None)):
            return
        # dE/dq from dE/dq̂: remove the radial part and divide by |q|, so the
        # raw gradients can be contracted directly.
        h = (dE_dq - np.einsum("id,id->i", dE_dq, desc.values)[:, None] * desc.values) / desc.norms[:, None]
        if want_f and desc.pair_gradients is not None:
            out.gradient_eV_per_A = -contract_forces(desc.pair_gradients, h, desc.pair_centre,
                                                     desc.pair_neighbour, n)
        elif want_f:
            f = np.zeros((n, 3))
            for centre, neighbour, first, scale, values in desc.gradient_blocks:
                hs = np.ascontiguousarray(h[:, first:first + len(scale)] * scale)
                accumulate_forces(f, values, hs, centre, neighbour)
            out.gradient_eV_per_A = -f
        if virial and desc.strain_gradients is not None:
            W = np.einsum("iad,id->a", desc.strain_gradients.reshape(n, 9, -1), h).reshape(3, 3)
            out.virial_eV = 0.5 * (W + W.T)

    def prior_variance(self, desc: FrameDescriptors, *, forces: bool, energy: bool = True) -> PriorVariance:
        dd = self.delta_eV ** 2
        # local energies: k(q̂, q̂) = δ² (q̂·q̂)^ζ = δ²
        local = np.full(desc.n_atoms, dd)
        want_energy, energy = energy, 0.0
        for z in (self.species if want_energy else ()):
            qz = desc.values[desc.numbers == z]
            if len(qz):
                energy += float(dot_kernel(qz, qz, self.delta_eV, self.zeta_)[0].sum())
        f = None
        if forces and desc.pair_gradients is not None:
            f = _force_prior_variance(desc, self.delta_eV, self.zeta_)
        return PriorVariance(local, energy, f)

    # ---------------------------------------------------------- fitted state
    def fitted_state(self) -> Dict[str, Any]:
        return {"delta_eV": self.delta_eV, "species": self.species, "n_features": self.n_features,
                "sparse_counts": {str(z): int(len(p)) for z, p in sorted(self.points.items())}}

    def fitted_arrays(self) -> Dict[str, np.ndarray]:
        return {f"sparse_{z}": p for z, p in sorted(self.points.items())}

    def restore(self, state: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        delta = float(state["delta_eV"])
        if not (np.isfinite(delta) and delta > 0):
            raise ValueError(f"soap delta_eV must be a positive number, got {state['delta_eV']!r}")
        self.set_delta(delta)
        self.bind([int(z) for z in state["species"]])
        D = self.n_features
        if D != state.get("n_features"):
            raise ValueError(f"descriptor length {D} differs from the file's {state.get('n_features')!r}; "
                             "the model was made with another SOAP layout")
        self.points = {}
        for z, n in dict(state["sparse_counts"]).items():
            z, n = int(z), int(n)
            if z not in self.species or n < 1:
                raise ValueError(f"sparse_counts {state['sparse_counts']!r} do not match species {self.species}")
            name = f"sparse_{z}"
            if name not in arrays:
                raise KeyError(f"entry '{name}' is missing")
            X = np.asarray(arrays[name], dtype=np.float64)
            if X.shape != (n, D) or not np.all(np.isfinite(X)):
                raise ValueError(f"entry '{name}' has shape {X.shape} or non-finite values, expected ({n}, {D})")
            self.points[z] = X


def _rows_sum(rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """out[r] = Σ of values[p] over p with rows[p] = r, (n,) + values.shape[1:] (one bincount per component)."""
    flat = values.reshape(len(values), -1)
    out = np.stack([np.bincount(rows, weights=flat[:, k], minlength=n) for k in range(flat.shape[1])], axis=1)
    return out.reshape((n,) + values.shape[1:])


def _pair_contraction(pc, pn, pg_parts, pp_parts, pair_start, row_in_z, dKn, Pc, X, n_tot, numbers_of_atoms):
    """Σ over pairs (i, j) with centre i of this species of dk(q̂_i, X)/dr_j."""
    M = len(X)
    out = np.zeros((3 * n_tot, M))
    mask = row_in_z[pc] >= 0
    # Pairs are grouped by neighbour species (self pairs apart): moving an atom
    # of species Z only changes the features that involve Z, so the GEMM can
    # skip columns that are zero throughout the group (about half of them in
    # a three-species molecule). Exact, just fewer flops.
    groups = [np.flatnonzero(mask & (pc == pn))]
    nb_species = numbers_of_atoms[pn]
    for zn in np.unique(nb_species):
        groups.append(np.flatnonzero(mask & (pc != pn) & (nb_species == zn)))
    for sel in groups:
        _contract_group(sel, pc, pn, pg_parts, pp_parts, pair_start, row_in_z, dKn, Pc, X, out)
    return out


def _contract_group(sel, pc, pn, pg_parts, pp_parts, pair_start, row_in_z, dKn, Pc, X, out):
    M = len(X)
    for lo in range(0, len(sel), _PAIRS_PER_GEMM):
        idx = sel[lo:lo + _PAIRS_PER_GEMM]
        grads = _gather_pairs(pg_parts, pair_start, idx)  # (B, 3, D)
        B = len(idx)
        nz = np.flatnonzero(np.any(grads != 0.0, axis=(0, 1)))
        if len(nz) < 0.9 * grads.shape[-1]:
            T = (np.ascontiguousarray(grads[:, :, nz]).reshape(3 * B, -1) @ X[:, nz].T).reshape(B, 3, M)
        else:
            T = (grads.reshape(3 * B, -1) @ X.T).reshape(B, 3, M)
        proj = _gather_pairs(pp_parts, pair_start, idx)  # (B, 3)
        add_pair_rows(out, T, row_in_z[pc[idx]], pn[idx], dKn, Pc, np.ascontiguousarray(proj))


def _gather_pairs(parts, pair_start, idx):
    """Rows ``idx`` (global pair numbers, ascending) from per-frame gradient arrays."""
    f_lo = np.searchsorted(pair_start, idx[0], side="right") - 1
    f_hi = np.searchsorted(pair_start, idx[-1], side="right") - 1
    if f_lo == f_hi:
        return parts[f_lo][idx - pair_start[f_lo]]
    frame = np.searchsorted(pair_start, idx, side="right") - 1
    out = np.empty((len(idx),) + parts[f_lo].shape[1:])
    for f in range(f_lo, f_hi + 1):
        m = frame == f
        if m.any():
            out[m] = parts[f][idx[m] - pair_start[f]]
    return out


def _force_prior_variance(desc: FrameDescriptors, delta: float, zeta: float) -> np.ndarray:
    """Prior variance of each force component, (n_atoms, 3), exactly.

    Var F_jx = Σ_{i,i'} u_i ᵀ ∂²k(q̂_i, q̂_i')/∂q̂_i∂q̂_i' u_i' with u_i = ∂q̂_i/∂r_jx,
    over centres i, i' of equal species whose environments contain j.
    """
    n = desc.n_atoms
    out = np.zeros((n, 3))
    order = np.argsort(desc.pair_neighbour, kind="stable")
    bounds = np.searchsorted(desc.pair_neighbour[order], np.arange(n + 1))
    q = desc.values
    dd = delta * delta
    for j in range(n):
        p = order[bounds[j]:bounds[j + 1]]
        if len(p) == 0:
            continue
        ci = desc.pair_centre[p]
        U = normalised_pair_gradients(desc, p)  # (k, 3, D)
        Q = q[ci]
        C = np.clip(Q @ Q.T, 0, None)
        same = desc.numbers[ci][:, None] == desc.numbers[ci][None, :]
        c1 = np.where(same, zeta * C ** (zeta - 1), 0.0)
        c2 = np.where(same, zeta * (zeta - 1) * C ** (zeta - 2) if zeta != 1 else 0.0, 0.0)
        for x in range(3):
            Ux = U[:, x, :]
            A = Ux @ Q.T  # A[i, i'] = u_i · q̂_i'
            B = Ux @ Ux.T
            out[j, x] = dd * np.sum(c2 * A * A.T + c1 * B)
    return out
