"""The GAP estimator: fit a SOAP sparse-GP potential, predict with uncertainties.

Flow: frames -> labels (:mod:`.data`) -> descriptors (:mod:`.descriptors`)
-> sparse points (:mod:`.sparsify`) -> design rows and QR solve
(:mod:`.sgp`) -> weights. Prediction reuses the same descriptor and kernel
code, so training and prediction cannot drift apart.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import scipy.linalg
from ase import Atoms

from . import sgp
from ._loops import contract_forces
from .data import (SIGMA_INFO_KEYS, Labels, check_structure, get_labels, is_isolated_atom,
                   species_of, where_of)
from .descriptors import SoapSettings, make_descriptor
from .errors import InputError, NotFittedError
from .kernels import dot_kernel
from .params import check_params, check_species_settings
from .sparsify import select_sparse

log = logging.getLogger("gapfit")

#: Sparse points per species when ``n_sparse`` is not given (capped by the data).
DEFAULT_SPARSE_PER_SPECIES = 2000
_ATOMS_PER_CHUNK = 1500  # upper bound; wide descriptors use less, see _atoms_per_chunk


class GAP:
    """SOAP Gaussian Approximation Potential with a sparse Gaussian process.

    Parameters (all keyword-only; stored as given, checked in :meth:`fit`)
    ----------
    cutoff, cutoff_transition_width, n_max, l_max, atom_sigma, backend, dscribe_mode
        SOAP settings, see :class:`gapfit.descriptors.SoapSettings` (Å).
    zeta : float, default=4
        Exponent of the dot-product kernel.
    delta : float or None, default=None
        Kernel scale δ in eV. None: the root mean square of the per-atom
        training energies after subtracting e0, floored at 0.5 eV.
    n_sparse : int or dict {Z: int} or None
        Sparse points per species. None: ``min(environments, 2000)``.
    sparse_method : {"cur", "fps", "random"}, default="cur"
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
    jitter : float, default=1e-8
        Added to the diagonal of K_MM, relative to δ².
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
    """

    def __init__(self, *, cutoff: float = 5.0, cutoff_transition_width: float = 1.0,
                 n_max: int = 8, l_max: int = 8, atom_sigma: float = 0.5,
                 backend: str = "featomic", dscribe_mode: str = "smooth",
                 zeta: float = 4.0, delta: Optional[float] = None,
                 n_sparse: Union[int, Mapping, None] = None, sparse_method: str = "cur",
                 sigma_energy: float = 0.003, sigma_forces: float = 0.05,
                 sigma_virial: float = 0.05, config_type_sigma: Optional[Mapping] = None,
                 e0: Optional[Mapping] = None, jitter: float = 1e-8, seed: int = 0,
                 calibration_fraction: float = 0.1,
                 energy_key: Optional[str] = None, forces_key: Optional[str] = None,
                 stress_key: Optional[str] = None, progress: bool = False):
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
        self.jitter = jitter
        self.seed = seed
        self.calibration_fraction = calibration_fraction
        self.energy_key = energy_key
        self.forces_key = forces_key
        self.stress_key = stress_key
        self.progress = progress

    # ------------------------------------------------------------------ params
    _PARAMS = ("cutoff", "cutoff_transition_width", "n_max", "l_max", "atom_sigma", "backend",
               "dscribe_mode", "zeta", "delta", "n_sparse", "sparse_method", "sigma_energy",
               "sigma_forces", "sigma_virial", "config_type_sigma", "e0", "jitter", "seed",
               "calibration_fraction",
               "energy_key", "forces_key", "stress_key", "progress")

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

    @property
    def soap_settings(self) -> SoapSettings:
        return SoapSettings(cutoff=float(self.cutoff),
                            cutoff_transition_width=float(self.cutoff_transition_width),
                            n_max=int(self.n_max), l_max=int(self.l_max),
                            atom_sigma=float(self.atom_sigma), backend=self.backend,
                            dscribe_mode=self.dscribe_mode)

    def _validate(self) -> None:
        check_params(self.get_params())

    # --------------------------------------------------------------------- fit
    def fit(self, frames: Sequence[Atoms]) -> "GAP":
        """Fit to frames carrying total energies and any of forces and stress.

        Returns ``self``. Raises :class:`gapfit.errors.InputError` naming the
        frame and field when the data cannot be used.
        """
        t_start = time.perf_counter()
        frames = list(frames)
        labels, species = self._check(frames)
        self.species_ = species
        self.e0_ = self._fit_e0(frames, labels, species)
        # Isolated atoms stay in the fit: their energy rows pin the local
        # energy of a lone atom to e0, as in gap_fit.
        train_idx = list(range(len(frames)))
        self.delta_ = float(self.delta) if self.delta is not None else self._default_delta(frames, labels, train_idx)
        self.descriptor_ = make_descriptor(self.soap_settings, species)

        cal_idx = self._calibration_split(frames, labels, train_idx)
        cal_set = set(cal_idx)
        fit_idx = [k for k in train_idx if k not in cal_set]

        # Pass 1: descriptors without gradients, for the sparse points. The
        # calibration frames are left out so their uncertainties are honest.
        t0 = time.perf_counter()
        fit_frames = [frames[k] for k in fit_idx]
        by_species: Dict[int, List[np.ndarray]] = {z: [] for z in species}
        for chunk in self._chunks(fit_frames, "descriptors"):
            for d in self.descriptor_.compute(chunk):
                for z in species:
                    by_species[z].append(d.values[d.numbers == z])
        points = {}
        n_env = {}
        for z in species:
            x = np.concatenate(by_species[z]) if by_species[z] else np.zeros((0, self.descriptor_.n_features))
            n_env[z] = len(x)
            if len(x) == 0:
                continue
            m = self._n_sparse_for(z, len(x))
            idx = select_sparse(x, m, self.sparse_method, seed=self.seed + z, zeta=self.zeta)
            points[z] = np.ascontiguousarray(x[idx])
        del by_species
        missing = [z for z in species if z not in points]
        if missing:
            raise InputError(f"species {missing} occur only in calibration frames; set calibration_fraction=0 "
                             "or add frames containing them")
        self.sparse_ = sgp.SparseSet(points, self.delta_, float(self.zeta))
        log.info("sparse points per species: %s (of %s environments, method %s), %.1f s",
                 {z: len(p) for z, p in points.items()}, n_env, self.sparse_method, time.perf_counter() - t0)

        # Pass 2: design rows with gradients, streamed into the QR factor.
        t0 = time.perf_counter()
        self.kmm_chol_ = sgp.kmm_cholesky(self.sparse_, self.jitter)
        M = self.sparse_.n_total
        acc = sgp.QRAccumulator(M)
        acc.add(sgp.prior_rows(self.sparse_, self.kmm_chol_), np.zeros(M))
        counts = {"energy": 0, "forces": 0, "virial": 0}
        self._accumulate(acc, frames, labels, fit_idx, counts)
        self.calibration_ = None
        if cal_idx:
            self.R_ab_ = acc.factor()
            self.alpha_, self.R_, _ = sgp.solve_from_factor(self.R_ab_)
            cal_frames = [frames[k] for k in cal_idx]
            preds = self.predict(cal_frames, uncertainty=True, calibrated=False)
            from .calibration import fit_scales
            scales = fit_scales(preds, [labels[k] for k in cal_idx])
            self.calibration_ = {"method": "held-out frames, 95.45 % of |error|/std within 2",
                                 "n_frames": len(cal_idx), **scales}
            log.info("uncertainty calibration on %d held-out frames: %s", len(cal_idx), scales)
            self._accumulate(acc, frames, labels, cal_idx, counts)
        self.R_ab_ = acc.factor()
        self.alpha_, self.R_, _ = sgp.solve_from_factor(self.R_ab_)
        self.training_summary_ = {
            "n_frames": len(frames), "n_train_frames": len(train_idx),
            "n_atoms": int(sum(len(frames[k]) for k in train_idx)),
            "n_observations": counts, "config_types": _count(lb.config_type for lb in labels),
            "species": species, "n_environments": {str(z): int(n) for z, n in n_env.items()},
            "fit_seconds": None,
        }
        log.info("solved %d observations for %d weights in %.1f s", acc.n_rows - M, M,
                 time.perf_counter() - t0)
        self.training_summary_["fit_seconds"] = round(time.perf_counter() - t_start, 3)
        return self

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

    def _check(self, frames: List[Atoms]):
        """(labels, species) of usable training frames, or the first problem as an InputError."""
        self._validate()
        if not frames:
            raise InputError("no training frames given")
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

    def _accumulate(self, acc, frames, labels, idx, counts) -> None:
        """Design rows of frames ``idx``, weighted, into the QR accumulator."""
        for chunk_idx in self._chunks(idx, "design rows", [len(frames[k]) for k in idx],
                                      atoms_per_chunk=self._atoms_per_chunk()):
            chunk = [frames[k] for k in chunk_idx]
            lbs = [labels[k] for k in chunk_idx]
            need_grad = any(lb.forces_eV_per_A is not None or lb.stress_eV_per_A3 is not None for lb in lbs)
            descs = self.descriptor_.compute(chunk, gradients=need_grad)
            rows = sgp.design_rows(descs, self.sparse_, forces=need_grad,
                                   virial=any(lb.stress_eV_per_A3 is not None for lb in lbs))
            A, b = self._weighted_rows(chunk, lbs, rows, counts)
            acc.add(A, b)

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

    def _labels(self, frames) -> List[Labels]:
        out = []
        for k, a in enumerate(frames):
            where = where_of(a, k)
            check_structure(a, where)
            lb = get_labels(a, where, energy_key=self.energy_key, forces_key=self.forces_key,
                            stress_key=self.stress_key)
            self._sigmas(a, lb)  # bad per-frame sigmas fail now, not after the descriptors
            out.append(lb)
        return out

    def _n_sparse_for(self, z: int, n_env: int) -> int:
        ns = self.n_sparse
        if ns is None:
            return min(n_env, DEFAULT_SPARSE_PER_SPECIES)
        if isinstance(ns, Mapping):
            from ase.data import chemical_symbols
            for key in (z, str(z), chemical_symbols[z]):
                if key in ns:
                    return min(n_env, int(ns[key]))
            return min(n_env, DEFAULT_SPARSE_PER_SPECIES)
        return min(n_env, int(ns))

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

    def _default_delta(self, frames, labels, idx) -> float:
        per_atom = []
        for k in idx:
            lb = labels[k]
            if lb.energy_eV is None:
                continue
            a = frames[k]
            per_atom.append((lb.energy_eV - sum(self.e0_[int(z)] for z in a.numbers)) / len(a))
        if not per_atom:
            return 1.0
        # The floor keeps δ from collapsing when e0 absorbs nearly all of the
        # energy (molecular dynamics of one molecule): there the RMS measures
        # thermal noise, not the scale of local energies. 0.5 eV was best or
        # equal on aspirin and Si (see docs/index.md).
        return float(max(np.sqrt(np.mean(np.square(per_atom))), 0.5))

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

    def _weighted_rows(self, chunk, lbs, rows: sgp.DesignRows, counts):
        A_parts, b_parts = [], []
        for f, (a, lb) in enumerate(zip(chunk, lbs)):
            n = len(a)
            sig = self._sigmas(a, lb)
            if lb.energy_eV is not None:
                w = 1.0 / (sig["energy"] * np.sqrt(n))
                target = lb.energy_eV - sum(self.e0_[int(z)] for z in a.numbers)
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
                vol = a.get_volume()
                A_parts.append(rows.virial[f] * w)
                b_parts.append(lb.stress_eV_per_A3 * vol * w)
                counts["virial"] += 6
        if not A_parts:
            return np.zeros((0, self.sparse_.n_total)), np.zeros(0)
        return np.vstack(A_parts), np.concatenate(b_parts)

    def _atoms_per_chunk(self) -> int:
        # Pair gradients take about 3·D·8 bytes per pair and ~30 pairs per atom:
        # keep a chunk's gradients near 0.5 GB whatever the descriptor width.
        D = self.descriptor_.n_features
        return int(np.clip(5e8 / (8 * 3 * D * 30), 64, _ATOMS_PER_CHUNK))

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

    # ----------------------------------------------------------------- predict
    def _check_fitted(self):
        if not hasattr(self, "alpha_"):
            raise NotFittedError("this GAP model is not fitted yet: call fit(frames) or gapfit.load(path) first")

    def predict(self, frames: Union[Atoms, Sequence[Atoms]], *, forces: bool = True, stress: bool = True,
                uncertainty: bool = False, calibrated: bool = True) -> List[dict]:
        """Predict each frame.

        Returns a list (one per frame) of dicts with ``energy`` (eV),
        ``energies`` (per-atom local energies, eV), and as asked ``forces``
        (eV/Å, (n, 3)), ``stress`` (eV/Å³, Voigt xx yy zz yz xz xy, periodic
        frames only), and with ``uncertainty=True`` the posterior standard
        deviations ``energy_std`` (eV), ``local_energy_std`` (eV, (n,)) and
        ``forces_std`` (eV/Å, (n, 3)). When the model carries a calibration
        and ``calibrated=True`` these are scaled by it, and the raw posterior
        values are also returned under ``energy_std_raw``, ``local_energy_std_raw``
        and ``forces_std_raw``.
        """
        self._check_fitted()
        if isinstance(frames, Atoms):
            frames = [frames]
        out = []
        for k, a in enumerate(frames):
            where = where_of(a, k)
            check_structure(a, where)
            unknown = sorted(set(int(z) for z in a.numbers) - set(self.species_))
            if unknown:
                from ase.data import chemical_symbols
                raise InputError(f"{where}: field 'numbers' holds species {[chemical_symbols[z] for z in unknown]} "
                                 f"that the model was not trained on (it knows "
                                 f"{[chemical_symbols[z] for z in self.species_]})")
        grad = forces or stress or uncertainty
        for chunk in self._chunks(list(frames), "predict", atoms_per_chunk=self._atoms_per_chunk()):
            descs = self.descriptor_.compute(chunk, gradients=grad)
            for a, d in zip(chunk, descs):
                r = self._predict_one(a, d, forces, stress, uncertainty)
                if uncertainty and calibrated:
                    self._apply_calibration(r)
                out.append(r)
        return out

    def _apply_calibration(self, r: dict) -> None:
        cal = getattr(self, "calibration_", None)
        if not cal:
            return
        se, sf = cal.get("energy_scale"), cal.get("forces_scale")
        for key, scale in (("energy_std", se), ("local_energy_std", se), ("forces_std", sf)):
            if key in r and scale is not None:
                r[key + "_raw"] = r[key]
                r[key] = r[key] * scale

    def _predict_one(self, atoms, d, want_forces, want_stress, uncertainty) -> dict:
        sp = self.sparse_
        n = d.n_atoms
        local = np.array([self.e0_[int(z)] for z in d.numbers], dtype=float)
        dE_dq = np.zeros_like(d.values)
        for z, X in sp.points.items():
            m = d.numbers == z
            if not m.any():
                continue
            a = self.alpha_[sp.offsets[z]:sp.offsets[z] + len(X)]
            K, dK = dot_kernel(d.values[m], X, sp.delta, sp.zeta)
            local[m] += K @ a
            dE_dq[m] = (dK * a) @ X
        res = {"energy": float(local.sum()), "energies": local}
        # dE/dq from dE/dq̂: remove the radial part and divide by |q|, so the
        # raw gradients can be contracted directly.
        h = (dE_dq - np.einsum("id,id->i", dE_dq, d.values)[:, None] * d.values) / d.norms[:, None]
        if want_forces and d.pair_gradients is not None:
            res["forces"] = contract_forces(d.pair_gradients, h, d.pair_centre, d.pair_neighbour, n)
        if want_stress and d.strain_gradients is not None:
            W = np.einsum("iad,id->a", d.strain_gradients.reshape(n, 9, -1), h).reshape(3, 3)
            W = 0.5 * (W + W.T)
            res["stress"] = np.array([W[a, b] for a, b in sgp.VOIGT]) / atoms.get_volume()
        if uncertainty:
            res.update(self._uncertainty(d))
        return res

    def _uncertainty(self, d) -> dict:
        """DTC predictive standard deviations of the latent (noise-free) quantities.

        var = k** − kᵀ K_MM⁻¹ k + kᵀ (K_MM + K_MN Σ⁻¹ K_NM)⁻¹ k, each term by
        triangular solves with the Cholesky factor of K_MM and the QR factor R.
        The first two terms grow away from the sparse points.
        """
        sp = self.sparse_
        rows = sgp.design_rows([d], sp, forces=d.pair_gradients is not None, virial=False, local=True)
        dd = sp.delta ** 2
        # local energies: k** = δ² (q̂·q̂)^ζ = δ²
        var_local = dd - self._nystrom(rows.local) + self._posterior(rows.local)
        # total energy: k** = Σ_{i,i'} same species k(q̂_i, q̂_i')
        kss = 0.0
        for z in sp.points:
            qz = d.values[d.numbers == z]
            if len(qz):
                kss += dot_kernel(qz, qz, sp.delta, sp.zeta)[0].sum()
        kE = rows.energy
        var_E = kss - self._nystrom(kE)[0] + self._posterior(kE)[0]
        out = {"energy_std": float(np.sqrt(max(var_E, 0.0))),
               "local_energy_std": np.sqrt(np.clip(var_local, 0, None))}
        if rows.gradient is not None:
            prior = sgp.force_prior_variance(d, sp.delta, sp.zeta).ravel()
            var_F = prior - self._nystrom(rows.gradient) + self._posterior(rows.gradient)
            out["forces_std"] = np.sqrt(np.clip(var_F, 0, None)).reshape(-1, 3)
        return out

    def _nystrom(self, K: np.ndarray) -> np.ndarray:
        """Row-wise kᵀ K_MM⁻¹ k, species block by block."""
        out = np.zeros(len(K))
        for z, L in self.kmm_chol_.items():
            o = self.sparse_.offsets[z]
            blk = K[:, o:o + len(L)]
            if not np.any(blk):
                continue
            v = scipy.linalg.solve_triangular(L, blk.T, lower=True, check_finite=False)
            out += np.einsum("mk,mk->k", v, v)
        return out

    def _posterior(self, K: np.ndarray) -> np.ndarray:
        """Row-wise kᵀ (RᵀR)⁻¹ k = ‖R⁻ᵀ k‖²."""
        v = scipy.linalg.solve_triangular(self.R_, K.T, trans="T", check_finite=False)
        return np.einsum("mk,mk->k", v, v)

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
