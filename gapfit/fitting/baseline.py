"""The fit's baseline: its parts fixed from the survey, then e0 from the energies, then each term's δ."""
from __future__ import annotations

import contextlib
import logging
from types import SimpleNamespace
from typing import Dict, Iterator, List, Mapping, Sequence

import numpy as np

from ..baselines import (CalculatorBaseline, CoulombBaseline, E0Baseline, SumBaseline, TabulatedPairBaseline,
                         ZBLBaseline)
from ..state import FittedState
from .plan import sum_of
from .recipe import make_terms

log = logging.getLogger("gapfit")


def baseline_parts(s: SimpleNamespace, info, charge_part=None) -> list:
    """The baseline's parts other than e0, fixed from the survey (``s``: the estimator's settings).

    In order: core repulsion (ZBL), Coulomb (or ``charge_part``, the fitted
    charge equilibration of ``charges="qeq"``), tabulated pair, Δ-learning
    calculator.
    """
    parts = []
    if s.core_repulsion:
        # "covalent": radii from covalent radii, for fits that start from too few frames
        # (on-the-fly learning from one crystal) to know how close atoms come
        contacts = info.contacts if s.core_radii == "data" else {}
        seen = info.species if s.core_radii == "data" else []
        parts.append(ZBLBaseline.from_contacts(contacts, seen, info.species))
    charges = getattr(s, "charges", None)
    if charge_part is not None:
        parts.append(charge_part)
    elif charges is not None and not (isinstance(charges, str) and charges in ("learn", "qeq")):
        # fixed per species, or "initial_charges" (read from each frame when evaluated)
        parts.append(CoulombBaseline.from_settings(charges, getattr(s, "coulomb", None)))
    # charges="learn": no Coulomb part here. Its charges are what the fit learns, with the other parts
    # subtracted (gapfit.fitting.charges); the pipeline then sets s.charges to the learned mapping and
    # calls this again, which adds the Coulomb part with those charges fixed.
    if s.core_file:
        parts.append(TabulatedPairBaseline.from_file(s.core_file))
    if s.baseline is not None:
        b = s.baseline
        parts.append(b if isinstance(b, CalculatorBaseline) else CalculatorBaseline(b))
    for part in parts:
        log.info("baseline: %s", part.describe())
    return parts


@contextlib.contextmanager
def calculators_cached(parts: Sequence) -> Iterator[None]:
    """Within: each Δ-learning calculator part caches its results per frame (the passes ask more than once)."""
    with contextlib.ExitStack() as stack:
        for part in parts:
            if isinstance(part, CalculatorBaseline):
                stack.enter_context(part.cached())
        yield


def start_state(s: SimpleNamespace, info, parts: Sequence) -> FittedState:
    """A new state: the species, the non-e0 baseline and the terms bound (no e0, δ, points or weights yet)."""
    species = info.species
    terms = make_terms(vars(s), molecular=not any(info.any_pbc))
    for term in terms:
        term.bind(species)
    # until e0 is known the baseline is its other parts (what pass 1 subtracts from the energies)
    return FittedState(species=species, e0={}, baseline=sum_of(parts), terms=terms)


def finish_baseline(state: FittedState, e0_given, info, parts: Sequence, energies: Mapping[int, float]) -> None:
    """e0 from the residual energies, the whole baseline, and each term's δ, into ``state``."""
    e0 = fit_e0(e0_given, info, energies, state.species)
    state.e0 = e0
    state.baseline = SumBaseline([E0Baseline(e0)] + list(parts))
    rms = energy_rms(info, energies, e0)
    for term in state.terms:
        term.set_delta(float(term.delta) if term.delta is not None else term.default_delta(rms))


def fit_e0(e0_given, info, energies: Mapping[int, float], species: List[int]) -> Dict[int, float]:
    """e0 per species: given, else from isolated-atom frames, else least squares on ``energies``."""
    from ase.data import atomic_numbers
    e0: Dict[int, float] = {}
    if e0_given:
        for key, val in e0_given.items():
            z = atomic_numbers[key] if isinstance(key, str) and not key.isdigit() else int(key)
            e0[z] = float(val)
    for k, e in sorted(energies.items()):
        if info.isolated[k] and info.n_atoms[k] == 1:
            e0.setdefault(next(iter(info.composition[k])), e)
    missing = [z for z in species if z not in e0]
    if missing:
        e0.update(_e0_by_least_squares(info, energies, e0, missing))
    return {z: e0[z] for z in species}


def _e0_by_least_squares(info, energies: Mapping[int, float], e0: Mapping[int, float], missing: List[int]):
    """e0 of the ``missing`` species from the energies of the frames that are not isolated atoms."""
    rows, rhs = [], []
    for k, e in sorted(energies.items()):
        if info.isolated[k]:
            continue
        comp = info.composition[k]
        rows.append([comp.get(z, 0) for z in missing])
        rhs.append(e - sum(n * e0[z] for z, n in comp.items() if z in e0))
    if not rows:
        return {z: 0.0 for z in missing}
    # lstsq (SVD) gives the minimum-norm answer when the composition
    # never varies, as in a molecular-dynamics data set.
    sol = np.linalg.lstsq(np.array(rows, dtype=float), np.array(rhs), rcond=None)[0]
    return {z: float(v) for z, v in zip(missing, sol)}


def energy_rms(info, energies: Mapping[int, float], e0) -> float:
    """RMS per-atom training energy after e0 (the scale default δ values start from)."""
    per_atom = [(e - sum(n * e0[z] for z, n in info.composition[k].items())) / info.n_atoms[k]
                for k, e in energies.items()]
    return float(np.sqrt(np.mean(np.square(per_atom)))) if per_atom else 1.0
