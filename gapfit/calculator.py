"""ASE calculator face of a fitted gapfit model."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
from ase.calculators.calculator import (Calculator, CalculatorSetupError, PropertyNotImplementedError,
                                        all_changes)

from .prediction import UNCERTAINTY_QUANTITIES, UncertaintyRequest

if TYPE_CHECKING:  # only for annotations
    from .model import GAP  # noqa: F401
    from .prediction import Prediction  # noqa: F401

#: Results that carry the model's predictive standard deviations.
UNCERTAINTY_PROPERTIES = ("energy_std", "local_energy_std", "forces_std")
#: Results of the posterior committee (``committee=K``): every member's values.
COMMITTEE_PROPERTIES = ("energy_committee", "forces_committee", "stress_committee")
#: Results of a model with charge equilibration: charges (e), their stds (e), the dipole (e Å, finite frames).
CHARGE_PROPERTIES = ("charges", "charges_std", "dipole")


class GAPCalculator(Calculator):
    """ASE calculator for a :class:`gapfit.GAP` model (or the path of a saved one).

    Results: ``energy``/``free_energy`` (eV), ``energies`` (per-atom local
    energies, eV), ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt, periodic
    cells only) and the model's calibrated predictive standard deviations
    ``energy_std`` (eV), ``local_energy_std`` (eV, per atom) and
    ``forces_std`` (eV/Å, per atom and component), computed from the same
    descriptors as the energy (one descriptor evaluation per structure).
    ``uncertainty`` says which each calculation computes: False (the
    default) none, so energy, forces and stress cost what the prediction
    alone costs; True all three; or a selection as in
    :meth:`gapfit.GAP.predict` (``"local_energy"``, ``("local_energy",
    "forces")``, ...: each costs only when asked; the local-energy std is
    the cheap one, the force std the dear one). A std asked for with
    ``get_property`` is computed even when not selected (with the other
    two, so one more evaluation answers all); ``gapfit md`` and ``learn``
    ask for them at the steps they check. ``prediction`` holds the last
    :class:`gapfit.prediction.Prediction`.

    ``baseline``: the ASE calculator of a Δ-learning model, when ``model`` is
    a path (see :func:`gapfit.load`).

    ``committee=K`` (K ≥ 2) adds every member of a posterior committee
    (:class:`gapfit.committee.Committee`, seeded by ``committee_seed``):
    ``energy_committee`` (K,), ``forces_committee`` (K, n_atoms, 3) and, for
    periodic cells, ``stress_committee`` (K, 6), from the same descriptors
    as the energy. ``committee_kind``: "predictive" (default: the members
    also draw the sparse points' residual at each new structure's
    environments, up to a limit) or "weights" (the weights' posterior only,
    no draws as the structures change); see :mod:`gapfit.committee`.

    A model with charge equilibration (``charges="qeq"``) also gives
    ``charges`` (e, per atom, summing to ``atoms.info["charge"]``, 0 when
    absent), ``charges_std`` (e; computed with the other stds) and, for
    finite frames, ``dipole`` (e·Å, ``Σ q_i (r_i − r_COM)``: about the
    centre of mass, which for a neutral frame is any origin). ASE does not
    watch ``atoms.info``: call ``calc.reset()`` after changing the total charge.
    """

    implemented_properties = (("energy", "free_energy", "energies", "forces", "stress") + UNCERTAINTY_PROPERTIES
                              + COMMITTEE_PROPERTIES + CHARGE_PROPERTIES)
    default_parameters = {"uncertainty": False, "committee": 0, "committee_seed": 0, "committee_kind": "predictive"}

    def __init__(self, model: Union["GAP", str], *, uncertainty: Union[bool, str, Sequence[str]] = False,
                 baseline: Any = None,
                 committee: int = 0, committee_seed: int = 0, committee_kind: str = "predictive", **kwargs):
        UncertaintyRequest.parse(uncertainty)  # a bad selection fails here, not at the first step
        super().__init__(uncertainty=uncertainty, committee=committee, committee_seed=committee_seed,
                         committee_kind=committee_kind, **kwargs)
        if isinstance(model, str):
            from .model import load
            model = load(model, baseline=baseline)
        if getattr(model, "state_", None) is None or not model.state_.is_fitted:
            raise CalculatorSetupError("GAPCalculator needs a fitted model: call fit() or gapfit.load(path)")
        self.model = model
        self.committee = None
        if committee:
            from .committee import Committee
            self.committee = Committee(model, committee, seed=committee_seed, kind=committee_kind)
        self.prediction = None
        #: compute uncertainties at the next calculation even if ``uncertainty`` is False: True (as
        #: selected by ``uncertainty``, all when that is False) or a selection (MD sets it before a step it
        #: will check, so that the step costs one descriptor evaluation)
        self.uncertainty_next: Union[bool, str, Sequence[str]] = False

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        a = self.atoms
        periodic = bool(np.all(a.pbc)) and a.cell.rank == 3
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a periodic cell with three lattice vectors")
        request = self._request(properties)
        self.uncertainty_next = False
        if self.committee is None and any(p in COMMITTEE_PROPERTIES for p in properties):
            raise PropertyNotImplementedError("committee results need GAPCalculator(model, committee=K)")
        if any(p in CHARGE_PROPERTIES for p in properties):
            if self.model.state_.charge_part is None:
                raise PropertyNotImplementedError("charges, their stds and the dipole need a model with charge "
                                                  "equilibration (fitted with charges='qeq', --coulomb qeq)")
            if "dipole" in properties and np.any(a.pbc):
                raise PropertyNotImplementedError("the dipole of a periodic cell is not defined; it is given for "
                                                  "finite frames (pbc False)")
        want_committee = self.committee is not None
        cp = None
        if want_committee:  # one descriptor pass for the prediction, its stds and the members
            cp = self.committee.predict(a, forces=True, stress=periodic, uncertainty=request)[0]
            p = cp.mean
        else:
            p = self.model.predict([a], forces=True, stress=periodic, uncertainty=request)[0]
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
        for name in UNCERTAINTY_PROPERTIES + ("charges", "charges_std"):
            if getattr(p, name) is not None:
                self.results[name] = getattr(p, name)
        if p.charges is not None and not np.any(a.pbc):
            self.results["dipole"] = p.charges @ (a.positions - a.get_center_of_mass())

    def _request(self, properties) -> UncertaintyRequest:
        """The stds this calculation computes: the selection, ``uncertainty_next`` and any asked by name."""
        base = UncertaintyRequest.parse(self.parameters.uncertainty)
        nxt = self.uncertainty_next
        if nxt is True:
            nxt = self.parameters.uncertainty or True
        extra = UncertaintyRequest.parse(nxt or False)
        # a std asked by name (get_property) brings the other two: ASE asks for them one at a time,
        # and one evaluation should answer all three
        asked = UNCERTAINTY_QUANTITIES if any(p in UNCERTAINTY_PROPERTIES + ("charges_std",)
                                              for p in properties) else ()
        names = set(base.names) | set(extra.names) | set(asked)
        return UncertaintyRequest(*(q in names for q in UNCERTAINTY_QUANTITIES), exact=base.exact or extra.exact)

    def last_prediction(self, atoms) -> Optional["Prediction"]:
        """The prediction for ``atoms`` if the calculator holds one for exactly this state, else None."""
        if self.prediction is None or self.atoms is None or self.check_state(atoms):
            return None
        return self.prediction
