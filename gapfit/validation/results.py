"""What a property calculation returns: values with their committee spread, named with units."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np


@dataclass
class PropertyResult:
    """One property's figures.

    Attributes
    ----------
    name : str
        The property ("eos", "elastic", ...).
    values : {key: float}
        The model's value of each figure; keys carry their unit
        (``bulk_modulus_GPa``).
    members : {key: ndarray (K,)}
        Each committee member's value (empty without a committee).
    details : dict
        Everything else worth keeping (curves, tensors, settings), JSON-ready.
    notes : list of str
        What the figures mean where it is not obvious (approximations made).
    standard_errors : {key: float}
        For figures without a committee meaning (NVE drift): the fit's
        standard error, reported as the ``_std`` companion.
    """

    name: str
    values: Dict[str, float]
    members: Dict[str, np.ndarray] = field(default_factory=dict)
    details: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    standard_errors: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def std(self, key: str) -> Optional[float]:
        """Committee standard deviation of ``key`` (its standard error for non-committee figures; else None)."""
        m = self.members.get(key)
        if m is None or len(m) < 2:
            return self.standard_errors.get(key)
        return float(np.std(np.asarray(m, dtype=float), ddof=1))

    def to_json(self) -> Dict[str, Optional[float]]:
        """``{key: value, key_std: committee std or None}`` for every figure."""
        out: Dict[str, Optional[float]] = {}
        for k, v in self.values.items():
            out[k] = _num(v)
            out[f"{k}_std"] = self.std(k)
        return out


def _num(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    return v if np.isfinite(v) else None

