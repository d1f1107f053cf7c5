"""One prediction, one object: the fields are fixed, whatever was asked.

A field that was not computed is None (forces when ``forces=False``, stress
for a non-periodic frame, the standard deviations without
``uncertainty=True``), never absent, so callers read attributes instead of
probing dictionary keys.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, Optional

import numpy as np


@dataclass
class Prediction:
    """A model's prediction for one frame (ASE's names and units).

    Attributes
    ----------
    energy : float
        Total energy, eV (baseline included).
    energies : ndarray (n_atoms,)
        Local (per-atom) energies, eV; they sum to ``energy``.
    forces : ndarray (n_atoms, 3) or None
        eV/Å.
    stress : ndarray (6,) or None
        eV/Å³, ASE's sign and Voigt order xx yy zz yz xz xy; periodic frames only.
    energy_std, local_energy_std, forces_std : float, ndarray (n_atoms,), ndarray (n_atoms, 3) or None
        Predictive standard deviations (eV, eV, eV/Å) of the GP part, calibrated
        by the scales fitted at fit time when the model has them and
        ``calibrated=True``.
    energy_std_raw, local_energy_std_raw, forces_std_raw : same, or None
        The posterior standard deviations before calibration (set whenever
        the calibrated ones are).
    charges : ndarray (n_atoms,) or None
        Atomic charges (e) of a model with charge equilibration
        (``charges="qeq"``); they sum to the frame's ``info["charge"]``.
    charges_std : ndarray (n_atoms,) or None
        Their predictive standard deviations (e), from the electronegativity
        GP's posterior, when stds are asked; ``energy_std`` then includes the
        energy's variance from the charges.
    """

    energy: float
    energies: np.ndarray
    forces: Optional[np.ndarray] = None
    stress: Optional[np.ndarray] = None
    energy_std: Optional[float] = None
    local_energy_std: Optional[np.ndarray] = None
    forces_std: Optional[np.ndarray] = None
    energy_std_raw: Optional[float] = None
    local_energy_std_raw: Optional[np.ndarray] = None
    forces_std_raw: Optional[np.ndarray] = None
    charges: Optional[np.ndarray] = None
    charges_std: Optional[np.ndarray] = None

    def as_dict(self) -> Dict[str, object]:
        """The fields that were computed, by name (for writing files)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


#: Quantities whose predictive standard deviation can be asked for, by name.
UNCERTAINTY_QUANTITIES = ("energy", "local_energy", "forces")


@dataclass(frozen=True)
class UncertaintyRequest:
    """Which predictive standard deviations to compute, and by which route.

    Built by :meth:`parse` from what users pass as ``uncertainty=``: False or
    None (none), True (all three), a quantity name (``"energy"``,
    ``"local_energy"``, ``"forces"``), a sequence of names, or any of those
    with ``"exact"`` (the reference route; ``"exact"`` alone asks for all).
    """

    energy: bool = False
    local_energy: bool = False
    forces: bool = False
    exact: bool = False

    def __bool__(self) -> bool:
        return self.energy or self.local_energy or self.forces

    @property
    def names(self) -> tuple:
        """The quantities asked, in :data:`UNCERTAINTY_QUANTITIES` order."""
        return tuple(q for q in UNCERTAINTY_QUANTITIES if getattr(self, q))

    @classmethod
    def parse(cls, spec) -> "UncertaintyRequest":
        """The request for ``spec`` (see the class docstring); ValueError naming a bad entry."""
        if isinstance(spec, cls):
            return spec
        if spec is None or spec is False:
            return cls()
        if spec is True:
            return cls(True, True, True)
        items = [spec] if isinstance(spec, str) else list(spec)
        exact = "exact" in items
        names = [s for s in items if s != "exact"]
        bad = [s for s in names if s not in UNCERTAINTY_QUANTITIES]
        if bad or not all(isinstance(s, str) for s in items):
            raise ValueError(f"uncertainty {spec!r}: unknown entry {bad[0] if bad else spec!r}; use True, "
                             f"False, 'exact' or names from {', '.join(UNCERTAINTY_QUANTITIES)}")
        if not names and items:  # "exact" alone: everything
            names = list(UNCERTAINTY_QUANTITIES)
        return cls(energy="energy" in names, local_energy="local_energy" in names, forces="forces" in names,
                   exact=exact)


@dataclass
class SharePrediction:
    """The part of one frame's prediction that comes from the local energies of some of its atoms.

    Made by :func:`gapfit.predictor.predict_share` for a set of atoms (the
    *centres*, e.g. an MPI rank's own atoms). The shares of a partition of a
    frame's atoms, with the baseline in exactly one of them, sum to the
    whole prediction (energies, forces, virial) to round-off. Every array is
    full length N (the frame's atoms); units eV, Å.

    Attributes
    ----------
    centres : ndarray (n_c,)
        The centres, ascending atom indices.
    energies_eV : ndarray (N,)
        The centres' local energies (0 at other atoms), plus the baseline's
        per-atom energies of every atom when the share has the baseline.
    forces_eV_per_A : ndarray (N, 3)
        ``-∂(Σ energies_eV)/∂r`` on every atom (also off the centres: a
        centre's energy moves with its neighbours).
    virial_eV : ndarray (3, 3)
        The share's part of the virial ``W = -Σ_j r_j ⊗ ∂E/∂r_j`` (periodic
        images included), the sign of MD codes (LAMMPS): ``W = -stress ×
        volume`` in ASE's terms. Symmetric; also for finite frames. None
        when not asked (``virial=False``).
    atom_virial_eV : ndarray (N, 3, 3)
        Per-atom virials, same sign, summing to ``virial_eV``: the centres'
        ``W_i = -Σ_j (r_j - r_i) ⊗ ∂ε_i/∂r_j`` (0 at other atoms), plus the
        baseline's of every atom when the share has it (see
        ``baseline_atom_virial_split``). None when not asked.
    local_energy_std_eV : ndarray (N,) or None
        Predictive std of the centres' local energies (0 elsewhere), when asked.
    forces_std_eV_per_A : ndarray (N,) or None
        Norm of each atom's force std, of the whole frame (every atom), when asked.
    baseline_atom_virial_split : bool
        True when the baseline's per-atom virials are its total split evenly
        over the atoms (a Coulomb or ASE-calculator baseline), not a local
        decomposition (:meth:`gapfit.baselines.Baseline.evaluate_atoms`).
    """

    centres: np.ndarray
    energies_eV: np.ndarray
    forces_eV_per_A: np.ndarray
    virial_eV: Optional[np.ndarray] = None
    atom_virial_eV: Optional[np.ndarray] = None
    local_energy_std_eV: Optional[np.ndarray] = None
    forces_std_eV_per_A: Optional[np.ndarray] = None
    baseline_atom_virial_split: bool = False

    @property
    def energy_eV(self) -> float:
        """The share's energy (eV): the sum of ``energies_eV``."""
        return float(self.energies_eV.sum())
