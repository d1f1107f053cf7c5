"""The electrostatics of fixed charges as an ASE calculator: ``gapfit.Coulomb``.

>>> from ase.build import bulk
>>> atoms = bulk("NaCl", "rocksalt", a=5.64)
>>> atoms.calc = Coulomb(charges={"Na": 1.0, "Cl": -1.0})
>>> atoms.get_potential_energy()       # eV: -K_E * 1.747565 / 2.82 per ion pair

The physics and conventions (Ewald for periodic cells, the direct sum for
finite ones, Gaussian charges and their self-energy, the neutralising
background, screening, the accuracy rule) are those of
:mod:`gapfit.electrostatics`.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import atomic_numbers, chemical_symbols

from .electrostatics import coulomb
from .errors import InputError

SpeciesMap = Mapping[Union[str, int], float]


def _by_number(values: SpeciesMap, what: str) -> Dict[int, float]:
    """{symbol or Z: value} as {Z: float}; InputError naming an unknown key."""
    out = {}
    for key, value in values.items():
        if isinstance(key, (int, np.integer)) and 0 < int(key) < len(chemical_symbols):
            z = int(key)
        elif isinstance(key, str) and key in atomic_numbers:
            z = atomic_numbers[key]
        else:
            raise InputError(f"Coulomb {what}: {key!r} is neither a chemical symbol nor an atomic number: "
                             f"give e.g. {{'Na': ..., 'Cl': ...}}", param=what)
        out[z] = float(value)
    return out


class Coulomb(Calculator):
    """Electrostatic energy of fixed charges (eV), per-atom energies, forces (eV/Å) and stress (eV/Å³).

    Parameters
    ----------
    charges : {symbol or Z: e} or None
        Charge per species (units of e); None reads each atom's charge from
        ``atoms.get_initial_charges()``.
    widths : {symbol or Z: Å}, float or None
        Gaussian widths σ of the charges per species, one width for all, or
        None for point charges.
    accuracy : float
        Target error of a periodic energy relative to
        :func:`gapfit.electrostatics.energy_scale_eV` (the accuracy rule of
        :mod:`gapfit.electrostatics`).
    screening : (r_in, r_out) or None
        Switch pair interactions on smoothly from r_in to r_out (Å).

    ``stress`` is given for frames periodic along all three axes only (ASE's
    sign and Voigt order: xx yy zz yz xz xy); frames periodic along one or two
    axes are refused (InputError).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters = {"charges": None, "widths": None, "accuracy": 1e-6, "screening": None}

    def __init__(self, charges: Optional[SpeciesMap] = None, widths: Union[SpeciesMap, float, None] = None,
                 accuracy: float = 1e-6, screening: Optional[Tuple[float, float]] = None, **kwargs):
        super().__init__(charges=charges, widths=widths, accuracy=accuracy, screening=screening, **kwargs)
        self._settings()          # checked now, so that a bad setting fails where it is written

    def _settings(self) -> Tuple[Optional[Dict[int, float]], Union[Dict[int, float], float, None]]:
        """The charges {Z: e} (None: per atom) and widths ({Z: Å}, one float, or None) of the parameters."""
        charges, widths = self.parameters["charges"], self.parameters["widths"]
        charges = None if charges is None else _by_number(charges, "charges")
        if isinstance(widths, Mapping):
            widths = _by_number(widths, "widths")
        elif widths is not None:
            try:
                widths = float(widths)
            except (TypeError, ValueError):
                raise InputError(f"Coulomb widths {widths!r}: give {{symbol: Å}}, one width in Å for all species, "
                                 "or None for point charges", param="widths") from None
        return charges, widths

    def _per_atom(self, atoms: Atoms) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        numbers = atoms.get_atomic_numbers()
        charges, widths = self._settings()
        if charges is None:
            q = np.asarray(atoms.get_initial_charges(), dtype=float)
        else:
            missing = sorted({chemical_symbols[z] for z in numbers.tolist()} -
                             {chemical_symbols[z] for z in charges})
            if missing:
                raise InputError(f"Coulomb has charges for {sorted(chemical_symbols[z] for z in charges)} "
                                 f"but not for {missing} of the frame: give every species a charge",
                                 param="charges")
            q = np.array([charges[z] for z in numbers.tolist()], dtype=float)
        if widths is None:
            return q, None
        if isinstance(widths, float):
            return q, np.full(len(atoms), widths)
        missing = sorted({chemical_symbols[z] for z in numbers.tolist() if z not in widths})
        if missing:
            raise InputError(f"Coulomb has Gaussian widths for {sorted(chemical_symbols[z] for z in widths)} "
                             f"but not for {missing} of the frame: give every species a width (Å), one width for "
                             "all, or None for point charges", param="widths")
        return q, np.array([widths[z] for z in numbers.tolist()], dtype=float)

    def calculate(self, atoms: Optional[Atoms] = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.pbc))
        if "stress" in properties and not np.any(atoms.pbc):     # mixed periodicity: coulomb() says why not
            raise PropertyNotImplementedError("Coulomb gives the stress of frames periodic along all three axes only")
        q, widths = self._per_atom(atoms)
        p = self.parameters
        result = coulomb(atoms, q, widths, accuracy=p["accuracy"], screening_A=p["screening"],
                         forces=True, virial=periodic)
        self.results["energy"] = self.results["free_energy"] = result.energy_eV
        self.results["energies"] = result.energies_eV
        self.results["forces"] = result.forces_eV_per_A
        if periodic:
            W = result.virial_eV / atoms.get_volume()
            self.results["stress"] = np.array([W[0, 0], W[1, 1], W[2, 2], W[1, 2], W[0, 2], W[0, 1]])
