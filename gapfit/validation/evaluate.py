"""One interface for what a property calculation asks of a potential: energies, forces, stresses, committee and all.

Every property function takes an :class:`Evaluator`. It returns, for a
structure, the model's values and each committee member's in one array whose
first entry is the model (index 0) and the rest the members, so that a
property is computed once per column and its spread read off the members. A
plain ASE calculator (EMT in the tests, DFT in principle) is an evaluator
without members.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator


@dataclass
class Evaluation:
    """Model (index 0) and committee members (1..K) on one structure.

    energy_eV : (1 + K,); forces_eV_per_A : (1 + K, n_atoms, 3) or None;
    stress_eV_per_A3 : (1 + K, 6) or None (ASE's sign and Voigt order).
    """

    energy_eV: np.ndarray
    forces_eV_per_A: Optional[np.ndarray] = None
    stress_eV_per_A3: Optional[np.ndarray] = None


class Evaluator:
    """Base: ``calculator`` (the model alone, for relaxations and MD) and :meth:`evaluate`."""

    #: number of committee members (0: no spread)
    n_members: int = 0
    calculator: Calculator

    def evaluate(self, atoms: Atoms, *, forces: bool = True, stress: bool = False) -> Evaluation:
        """The model's and the members' energy (and forces, stress when asked) of ``atoms``."""
        raise NotImplementedError


class CalculatorEvaluator(Evaluator):
    """Any ASE calculator as an evaluator without a committee."""

    def __init__(self, calculator: Calculator):
        self.calculator = calculator

    def evaluate(self, atoms: Atoms, *, forces: bool = True, stress: bool = False) -> Evaluation:
        a = atoms.copy()
        a.calc = self.calculator
        e = np.array([a.get_potential_energy()])
        f = a.get_forces()[None] if forces else None
        s = a.get_stress(voigt=True)[None] if stress else None
        return Evaluation(e, f, s)


class CommitteeEvaluator(Evaluator):
    """A gapfit model with a posterior committee of ``n_members`` (see :class:`gapfit.committee.Committee`).

    ``n_members=0`` evaluates the model alone. ``kind`` and
    ``residual_scale``: which members (predictive, the default, or
    weight-space) and how their residual draws are scaled, as in
    :class:`~gapfit.committee.Committee`.
    """

    def __init__(self, model, n_members: int = 16, *, seed: int = 0, calibrated: bool = True,
                 kind: str = "predictive", residual_scale: str = "conservative"):
        from ..calculator import GAPCalculator
        from ..committee import Committee
        self.model = model
        self.n_members = int(n_members)
        self.committee = Committee(model, self.n_members, seed=seed, calibrated=calibrated, kind=kind,
                                   residual_scale=residual_scale) \
            if self.n_members >= 2 else None
        if 0 < self.n_members < 2:
            raise ValueError(f"a committee needs at least 2 members (or 0 for none), got {n_members}")
        self.calculator = GAPCalculator(model, uncertainty=False)

    def evaluate(self, atoms: Atoms, *, forces: bool = True, stress: bool = False) -> Evaluation:
        periodic = bool(np.all(atoms.pbc)) and atoms.cell.rank == 3
        if self.committee is None:
            p = self.model.predict([atoms], forces=forces, stress=stress and periodic)[0]
            return Evaluation(np.array([p.energy]), None if p.forces is None else p.forces[None],
                              None if p.stress is None else p.stress[None])
        cp = self.committee.predict(atoms, forces=forces, stress=stress and periodic)[0]
        e = np.concatenate([[cp.mean.energy], cp.energy_eV])
        f = None if cp.forces_eV_per_A is None else np.concatenate([cp.mean.forces[None], cp.forces_eV_per_A])
        s = None if cp.stress_eV_per_A3 is None else np.concatenate([cp.mean.stress[None], cp.stress_eV_per_A3])
        return Evaluation(e, f, s)
