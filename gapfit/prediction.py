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
