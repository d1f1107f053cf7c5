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

    def as_dict(self) -> Dict[str, object]:
        """The fields that were computed, by name (for writing files)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
