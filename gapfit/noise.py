"""The noise model of a fit: the σ of each observation, and the groups whose σ an optimisation scales.

σ_E (eV/atom; a frame of N atoms gets σ_E·√N), σ_F (eV/Å) and σ_V (eV/atom,
√N per component) as set, overridden per config_type
(``config_type_sigma``) and per frame (gap_fit's ``energy_sigma``,
``force_sigma`` and ``virial_sigma`` info keys). The likelihood optimisation
(:mod:`gapfit.hyper`) multiplies them by one factor per *noise group*:
``"energy"``, ``"forces"``, ``"virial"``, or one per config_type
(``"forces:md_300K"``) in the ``"config_type"`` mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np
from ase import Atoms

from .data import SIGMA_INFO_KEYS, Labels
from .errors import InputError

def group_key(kind: str, config_type: str, mode: str) -> str:
    """Name of the noise group of a row: ``"forces"`` or ``"forces:md_300K"``."""
    return f"{kind}:{config_type}" if mode == "config_type" else kind


@dataclass(frozen=True)
class NoiseModel:
    """The σ settings of a fit (see the module docstring); small and picklable, Dask workers receive it.

    ``mode``: ``"global"`` (one scale per kind) or ``"config_type"`` (one per
    kind and config_type) for the factors an optimisation puts on the σ.
    """

    sigma_energy: float
    sigma_forces: float
    sigma_virial: float
    config_type_sigma: Optional[Mapping[str, Mapping[str, float]]] = None
    mode: str = "global"

    @classmethod
    def of(cls, settings: Any) -> "NoiseModel":
        """The noise model of an estimator's settings (``sigma_*``, ``config_type_sigma``, ``optimize``)."""
        return cls(float(settings.sigma_energy), float(settings.sigma_forces), float(settings.sigma_virial),
                   settings.config_type_sigma,
                   "config_type" if getattr(settings, "optimize", False) == "config_type" else "global")

    def sigmas(self, atoms: Atoms, lb: Labels, noise_scale: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
        """σ per kind for one frame (per atom for energy and virial), times ``noise_scale`` of its groups when given.

        Raises :class:`gapfit.errors.InputError` naming the frame and field
        when a per-frame σ is not a number > 0.
        """
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
        if noise_scale:
            for k in s:
                s[k] *= noise_scale.get(self.group(k, lb.config_type), 1.0)
        return s

    def group(self, kind: str, config_type: str) -> str:
        """The noise group of a row of this kind and config_type."""
        return group_key(kind, config_type, self.mode)

