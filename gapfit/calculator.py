"""ASE calculator face of a fitted gapfit model."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
from ase.calculators.calculator import (Calculator, CalculatorSetupError, PropertyNotImplementedError,
                                        all_changes)

if TYPE_CHECKING:  # only for annotations
    from .model import GAP  # noqa: F401
    from .prediction import Prediction  # noqa: F401

#: Results that carry the model's predictive standard deviations.
UNCERTAINTY_PROPERTIES = ("energy_std", "local_energy_std", "forces_std")
#: Results of the posterior committee (``committee=K``): every member's values.
COMMITTEE_PROPERTIES = ("energy_committee", "forces_committee", "stress_committee")


class GAPCalculator(Calculator):
    """ASE calculator for a :class:`gapfit.GAP` model (or the path of a saved one).

    Results: ``energy``/``free_energy`` (eV), ``energies`` (per-atom local
    energies, eV), ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt, periodic
    cells only) and, when ``uncertainty=True`` (the default) or when one of
    them is asked for, ``energy_std`` (eV), ``local_energy_std`` (eV, per
    atom) and ``forces_std`` (eV/Å, per atom and component): the model's
    calibrated predictive standard deviations, computed from the same
    descriptors as the energy (one descriptor evaluation per structure).
    Set ``uncertainty=False`` for speed in production MD; ``prediction``
    holds the last :class:`gapfit.prediction.Prediction`.

    ``baseline``: the ASE calculator of a Δ-learning model, when ``model`` is
    a path (see :func:`gapfit.load`).

    ``committee=K`` (K ≥ 2) adds every member of a posterior committee
    (:class:`gapfit.committee.Committee`, seeded by ``committee_seed``):
    ``energy_committee`` (K,), ``forces_committee`` (K, n_atoms, 3) and, for
    periodic cells, ``stress_committee`` (K, 6), from the same descriptors
    as the energy.
    """

    implemented_properties = (("energy", "free_energy", "energies", "forces", "stress") + UNCERTAINTY_PROPERTIES
                              + COMMITTEE_PROPERTIES)
    default_parameters = {"uncertainty": True, "committee": 0, "committee_seed": 0}

    def __init__(self, model: Union["GAP", str], *, uncertainty: bool = True, baseline: Any = None,
                 committee: int = 0, committee_seed: int = 0, **kwargs):
        super().__init__(uncertainty=uncertainty, committee=committee, committee_seed=committee_seed, **kwargs)
        if isinstance(model, str):
            from .model_io import load_model
            model = load_model(model, baseline=baseline)
        if getattr(model, "state_", None) is None or model.state_.alpha is None:
            raise CalculatorSetupError("GAPCalculator needs a fitted model: call fit() or gapfit.load(path)")
        self.model = model
        self.committee = None
        if committee:
            from .committee import Committee
            self.committee = Committee(model, committee, seed=committee_seed)
        self.prediction = None
        #: compute uncertainties at the next calculation even if ``uncertainty`` is False
        #: (MD sets it before a step it will check, so that the step costs one descriptor evaluation)
        self.uncertainty_next = False

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        a = self.atoms
        periodic = bool(np.all(a.pbc)) and a.cell.rank == 3
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a periodic cell with three lattice vectors")
        want_std = (bool(self.parameters.uncertainty) or self.uncertainty_next
                    or any(p in UNCERTAINTY_PROPERTIES for p in properties))
        self.uncertainty_next = False
        if self.committee is None and any(p in COMMITTEE_PROPERTIES for p in properties):
            raise PropertyNotImplementedError("committee results need GAPCalculator(model, committee=K)")
        want_committee = self.committee is not None
        cp = None
        if want_committee:  # one descriptor pass for the prediction, its stds and the members
            cp = self.committee.predict(a, forces=True, stress=periodic, uncertainty=want_std)[0]
            p = cp.mean
        else:
            p = self.model.predict([a], forces=True, stress=periodic, uncertainty=want_std)[0]
        if cp is not None:
            self.results["energy_committee"] = cp.energy_eV
            self.results["forces_committee"] = cp.forces_eV_per_A
            if cp.stress_eV_per_A3 is not None:
                self.results["stress_committee"] = cp.stress_eV_per_A3
        self.prediction = p
        self.results["energy"] = p.energy
        self.results["free_energy"] = p.energy
        self.results["energies"] = p.energies
        self.results["forces"] = p.forces
        if p.stress is not None:
            self.results["stress"] = p.stress
        if want_std:
            self.results["energy_std"] = p.energy_std
            self.results["local_energy_std"] = p.local_energy_std
            self.results["forces_std"] = p.forces_std

    def last_prediction(self, atoms) -> Optional["Prediction"]:
        """The prediction for ``atoms`` if the calculator holds one for exactly this state, else None."""
        if self.prediction is None or self.atoms is None or self.check_state(atoms):
            return None
        return self.prediction
