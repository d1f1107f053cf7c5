"""The terms a GAP model sums: SOAP, two-body (distance_2b) and three-body (angle_3b).

``build_terms(spec)`` turns what a user writes (a gap_fit descriptor string,
a list of ``{"type": ..., **settings}`` dicts, or Term objects) into Term
objects; a new term type plugs in by adding its class to ``TERM_TYPES``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Type

import numpy as np

from ..errors import InputError
from .base import PriorVariance, Term, TermPrediction, TermRows, TermShare
from .soap import Soap

_ATOMS_PER_CHUNK = 1500  # upper bound; wide descriptors use less, see atoms_per_chunk


def _site_types() -> Dict[str, Type[Term]]:
    try:
        from .sites import Angle3b, Distance2b
    except ImportError:  # pragma: no cover - only while the module is being written
        return {}
    return {"distance_2b": Distance2b, "angle_3b": Angle3b}


def term_types() -> Dict[str, Type[Term]]:
    """Every term type by name."""
    return {"soap": Soap, **_site_types()}


def build_terms(spec: Any, where: str = "terms") -> List[Term]:
    """Term objects from a gap_fit string, a list of dicts or of Term objects (checked)."""
    if isinstance(spec, str):
        from ..gapstring import parse_gap_string
        spec = parse_gap_string(spec, where=where)
    if not isinstance(spec, (list, tuple)) or not spec:
        raise InputError(f"{where} must be a non-empty list of terms (or a gap_fit descriptor string), "
                         f"got {spec!r}", param="terms")
    types = term_types()
    out: List[Term] = []
    for k, entry in enumerate(spec):
        if isinstance(entry, Term):
            term = type(entry)(**entry.settings())
        elif isinstance(entry, dict):
            entry = dict(entry)
            name = entry.pop("type", None)
            if name not in types:
                raise InputError(f"{where}: term {k + 1} has type {name!r}; known types: "
                                 f"{', '.join(sorted(types))}", param="terms")
            try:
                term = types[name](**entry)
            except InputError as exc:
                raise InputError(f"{where}: term {k + 1} ({name}): {exc}", param="terms") from None
        else:
            raise InputError(f"{where}: term {k + 1} must be a mapping with a 'type', got {entry!r}",
                             param="terms")
        try:
            term.check_settings()
        except InputError as exc:
            raise InputError(f"{where}: term {k + 1} ({term.type}): {exc}", param="terms") from None
        out.append(term)
    return out


def atoms_per_chunk(terms: Sequence[Term]) -> int:
    """How many atoms a chunk of frames may hold when their design rows (with gradients) are taken."""
    # Pair gradients take about 3·D·8 bytes per pair and ~30 pairs per atom:
    # keep a chunk's gradients near 0.5 GB whatever the descriptor width.
    widths = [t.gradient_width for t in terms]
    D = max([w for w in widths if w is not None] or [100])
    return int(np.clip(5e8 / (8 * 3 * D * 30), 64, _ATOMS_PER_CHUNK))


__all__ = ["Term", "TermRows", "TermPrediction", "TermShare", "PriorVariance", "Soap", "atoms_per_chunk",
           "build_terms", "term_types"]


def design_rows(terms: Sequence[Term], descs: List[list], *, forces: bool, virial: bool,
                local: bool = False) -> TermRows:
    """The design rows of ``terms`` side by side (columns in term order), from each term's descriptors."""
    parts = [t.design_rows(d, forces=forces, virial=virial, local=local) for t, d in zip(terms, descs)]

    def cat(name):
        arrs = [getattr(p, name) for p in parts]
        return None if arrs[0] is None else np.concatenate(arrs, axis=-1)
    return TermRows(cat("energy"), cat("gradient"), cat("virial"), cat("local"), parts[0].atom_start)
