"""ASE calculator face of a fitted gapfit model."""
from __future__ import annotations

from typing import Union

import numpy as np
from ase.calculators.calculator import Calculator, CalculatorSetupError, all_changes



class GAPCalculator(Calculator):
    """ASE calculator for a :class:`gapfit.GAP` model (or the path of a saved one).

    Results: ``energy``/``free_energy`` (eV), ``energies`` (per-atom local
    energies, eV), ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt, periodic
    cells only) and, when ``uncertainty=True`` (the default), ``energy_std``
    (eV), ``local_energy_std`` (eV, per atom) and ``forces_std`` (eV/Å,
    per atom and component): posterior standard deviations of the model.
    Set ``uncertainty=False`` for speed in production MD.
    """

    implemented_properties = ("energy", "free_energy", "energies", "forces", "stress")
    default_parameters = {"uncertainty": True}

    def __init__(self, model: Union["GAP", str], *, uncertainty: bool = True, **kwargs):  # noqa: F821
        super().__init__(uncertainty=uncertainty, **kwargs)
        if isinstance(model, str):
            from .model_io import load_model
            model = load_model(model)
        if not hasattr(model, "alpha_"):
            raise CalculatorSetupError("GAPCalculator needs a fitted model: call fit() or gapfit.load(path)")
        self.model = model

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        a = self.atoms
        periodic = bool(np.all(a.pbc)) and a.cell.rank == 3
        if "stress" in properties and not periodic:
            from ase.calculators.calculator import PropertyNotImplementedError
            raise PropertyNotImplementedError("stress needs a periodic cell with three lattice vectors")
        r = self.model.predict([a], forces=True, stress=periodic,
                               uncertainty=bool(self.parameters.uncertainty))[0]
        self.results["energy"] = r["energy"]
        self.results["free_energy"] = r["energy"]
        self.results["energies"] = r["energies"]
        self.results["forces"] = r["forces"]
        if "stress" in r:
            self.results["stress"] = r["stress"]
        for key in ("energy_std", "local_energy_std", "forces_std"):
            if key in r:
                self.results[key] = r[key]
