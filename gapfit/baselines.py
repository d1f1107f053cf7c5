"""Fixed physical baselines of a GAP model.

A GAP model is ``baseline + Σ GP terms``. The baseline's energy, forces and
virial are subtracted from the training labels before the fit (the GP terms
learn the residual) and added back at every prediction. A baseline has no
free parameters of the fit: it is chosen before it and stored in the model
file as plain JSON (:meth:`Baseline.to_dict`, :func:`baseline_from_dict`).

Units: Å, eV, eV/Å (forces), eV (virial). The virial is ``dE/dε`` for a
homogeneous strain ``ε`` of cell and positions, with ASE's sign convention:
``stress = virial / volume`` (eV/Å³), i.e. ``virial = stress_3x3 * volume``.
It is only defined for periodic frames (all ``pbc`` true and a cell of rank
3); for other frames it is ``None``.

Baselines
---------
:class:`E0Baseline`
    Isolated-atom energy per species; no forces.
:class:`ZBLBaseline`
    Ziegler-Biersack-Littmark universal screened nuclear repulsion per
    species pair, switched off smoothly (C2) between ``r_inner`` and
    ``r_outer``; :meth:`ZBLBaseline.from_frames` puts ``r_outer`` at the
    shortest distance of each pair in the training data, so that it is zero on
    every training frame and only acts where the data do not reach.
:class:`CoulombBaseline`
    Electrostatic energy of charges fixed per species or read from each
    frame's ``initial_charges``: Ewald sum in 3D-periodic cells, direct sum
    in finite systems, point or Gaussian charges, optional short-range
    screening (:mod:`gapfit.electrostatics` computes it).
:class:`TabulatedPairBaseline`
    A pair potential tabulated per species pair (gap_fit's
    ``core_param_file`` role) read from the plain-text format documented in
    :meth:`TabulatedPairBaseline.from_file`.
:class:`CalculatorBaseline`
    Any ASE calculator (Δ-learning). The model file records its import path
    and keyword arguments, but loading a model never imports anything: the
    caller passes the calculator (:func:`baseline_from_dict`).
:class:`SumBaseline`
    Sum of baselines.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols, covalent_radii
from ase.neighborlist import neighbor_list

from .errors import InputError, ModelFormatError

#: ZBL universal screening function φ(x) = Σ c_k exp(-b_k x) (Ziegler, Biersack, Littmark 1985).
ZBL_C = np.array([0.18175, 0.50986, 0.28022, 0.02817])
ZBL_B = np.array([3.19980, 0.94229, 0.40290, 0.20162])
#: ZBL universal screening length prefactor (Å): a = ZBL_A0 / (Z1^0.23 + Z2^0.23).
ZBL_A0 = 0.46850
#: e² / (4π ε0) in eV·Å.
COULOMB_EV_A = 14.399645
#: r_inner / r_outer of the radii that :meth:`ZBLBaseline.from_frames` chooses.
ZBL_INNER_FRACTION = 0.75
#: How far (Å) above a pair's shortest distance in the data the repulsion begins
#: (``r_outer``): where the data end, an untrained model's energy often still
#: falls as atoms approach; repulsion already under way there keeps a dimer's
#: energy rising all the way in. The fit corrects the few frames that reach it.
ZBL_OUTER_MARGIN_A = 0.0
#: r_outer / (sum of covalent radii) for pairs absent from the training data.
ZBL_UNSEEN_FRACTION = 0.75
#: Distances (Å) up to which :meth:`ZBLBaseline.from_frames` looks for each pair's
#: shortest contact; pairs never closer than this count as not seen.
ZBL_SEARCH_RADIUS_A = 6.0
#: Largest |energy| (eV) accepted as "zero" at the last point of a tabulated pair.
TABLE_ZERO_TOL_EV = 1e-8

Pair = Tuple[int, int]


# --------------------------------------------------------------------------- #
# results and the common interface
# --------------------------------------------------------------------------- #

@dataclass
class BaselineResult:
    """Energy, per-atom energies, forces and virial of a baseline on one frame.

    Attributes
    ----------
    energy_eV : float
        Total energy (eV).
    local_energy_eV : numpy.ndarray, shape (n,)
        Per-atom energies (eV); they sum to ``energy_eV``. For a
        :class:`CalculatorBaseline` whose calculator has no per-atom energies
        the total is spread evenly over the atoms (``local_energy_spread`` is
        then True).
    forces_eV_per_A : numpy.ndarray, shape (n, 3), or None
        Forces ``-dE/dr`` (eV/Å); None when not asked for.
    virial_eV : numpy.ndarray, shape (3, 3), or None
        Symmetric ``dE/dε`` (eV), ASE sign (``stress = virial / volume``);
        None when not asked for or when the frame is not periodic.
    local_energy_spread : bool
        True when ``local_energy_eV`` is the total spread evenly rather than a
        real per-atom decomposition.
    atom_virial_eV : numpy.ndarray, shape (n, 3, 3), or None
        Per-atom virials (eV, ASE sign like ``virial_eV``, symmetric), set
        only by :meth:`Baseline.evaluate_atoms`; they sum to the virial
        (periodic frames) or to ``Σ_j r_j ⊗ dE/dr_j`` (finite frames).
    atom_virial_split : bool
        True when ``atom_virial_eV`` is that sum split evenly over the atoms
        rather than a real per-atom decomposition.
    charges_e : numpy.ndarray, shape (n,), or None
        The atoms' charges (e) when the baseline computes them (charge
        equilibration, :class:`gapfit.qeq.QEqBaseline`); else None.
    """

    energy_eV: float
    local_energy_eV: np.ndarray
    forces_eV_per_A: Optional[np.ndarray]
    virial_eV: Optional[np.ndarray]
    local_energy_spread: bool = False
    atom_virial_eV: Optional[np.ndarray] = None
    atom_virial_split: bool = False
    charges_e: Optional[np.ndarray] = None


def is_periodic(atoms: Atoms) -> bool:
    """True when the virial of ``atoms`` is defined: periodic along all three axes with a cell of rank 3."""
    return bool(np.all(atoms.pbc)) and atoms.cell.rank == 3


class Baseline(ABC):
    """A fixed energy model added to the GP terms of a GAP model.

    Subclasses set ``type`` (the ``"type"`` key of :meth:`to_dict`) and
    implement :meth:`evaluate`, :meth:`to_dict` and :meth:`describe`.
    """

    type: ClassVar[str]

    @abstractmethod
    def evaluate(self, atoms: Atoms, *, forces: bool = True, virial: bool = True) -> BaselineResult:
        """Energy (eV), per-atom energies, forces (eV/Å) and virial (eV) on ``atoms``.

        Parameters
        ----------
        atoms : ase.Atoms
            The frame; it is not modified.
        forces : bool
            Compute forces (else ``forces_eV_per_A`` is None).
        virial : bool
            Compute the virial (else, and on non-periodic frames,
            ``virial_eV`` is None).
        """

    def evaluate_atoms(self, atoms: Atoms) -> BaselineResult:
        """:meth:`evaluate` with forces, virial and per-atom virials (``atom_virial_eV``), for MD codes.

        The per-atom virials sum to the virial on periodic frames and to
        ``Σ_j r_j ⊗ dE/dr_j`` on finite ones (origin-free when the forces sum
        to zero). Pair baselines split each pair's virial half and half
        between its atoms, E0's are zero; other baselines (Coulomb, an ASE
        calculator) split their total evenly over the atoms
        (``atom_virial_split`` True): right for the global virial and the
        pressure, not a local stress.
        """
        r = self.evaluate(atoms, forces=True, virial=True)
        n = len(atoms)
        if r.virial_eV is not None:
            total = np.asarray(r.virial_eV, dtype=float)
        else:
            total = -atoms.positions.T @ np.asarray(r.forces_eV_per_A, dtype=float)
            total = 0.5 * (total + total.T)
        r.atom_virial_eV = np.repeat((total / max(n, 1))[None], n, axis=0)
        r.atom_virial_split = True
        return r

    @abstractmethod
    def to_dict(self) -> dict:
        """Plain-JSON description ``{"type": ..., ...}``; :func:`baseline_from_dict` rebuilds it."""

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """Arrays of numbers the description refers to (a fitted part's weights); most baselines have none."""
        return {}

    @abstractmethod
    def describe(self) -> str:
        """One line for the log."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"


def _zero_result(n: int, forces: bool, virial: bool, periodic: bool) -> BaselineResult:
    return BaselineResult(0.0, np.zeros(n), np.zeros((n, 3)) if forces else None,
                          np.zeros((3, 3)) if (virial and periodic) else None)


# --------------------------------------------------------------------------- #
# helpers: species and pairs
# --------------------------------------------------------------------------- #

def _species_number(s, where: str) -> int:
    """Atomic number from an int, a numeric string or a chemical symbol."""
    if isinstance(s, (int, np.integer)) and not isinstance(s, bool):
        z = int(s)
    elif isinstance(s, str) and s.strip().isdigit():
        z = int(s.strip())
    elif isinstance(s, str) and s.strip() in atomic_numbers:
        z = atomic_numbers[s.strip()]
    else:
        raise InputError(f"{where}: {s!r} is not a chemical species (give a symbol such as Si or an atomic number)")
    if not 1 <= z < len(chemical_symbols):
        raise InputError(f"{where}: {s!r} is not a chemical species (atomic numbers run from 1 to "
                         f"{len(chemical_symbols) - 1})")
    return z


def _pair_key(z1: int, z2: int) -> Pair:
    """Unordered species pair as (smaller Z, larger Z)."""
    return (z1, z2) if z1 <= z2 else (z2, z1)


def _pair_name(pair: Pair) -> str:
    return f"{chemical_symbols[pair[0]]}-{chemical_symbols[pair[1]]}"


def _pair_arrays(atoms: Atoms, cutoff: float):
    """Ordered neighbour pairs within ``cutoff``: i, j, distance d (n_p,), vector D = r_j - r_i (n_p, 3).

    Periodic images are included; every unordered pair appears twice (i→j and
    j→i), so per-pair sums over this list are halved by the callers.
    """
    if len(atoms) == 0 or cutoff <= 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0), np.zeros((0, 3))
    return neighbor_list("ijdD", atoms, float(cutoff))


def _pair_result(atoms: Atoms, i, j, d, D, e_pair, de_pair, forces: bool, virial: bool) -> BaselineResult:
    """Assemble a pair-potential result from per-ordered-pair energies and dE/dr.

    ``e_pair`` and ``de_pair`` are the pair energy and its radial derivative
    of each *ordered* pair; each unordered pair is listed twice, so energies
    and the virial take half of the sums.
    """
    n = len(atoms)
    local = 0.5 * np.bincount(i, weights=e_pair, minlength=n)
    energy = float(local.sum())
    f = None
    w = None
    if forces or (virial and is_periodic(atoms)):
        # g = dE/dr · D/r is dE/d r_j of the pair; the force on i is +g (the
        # double listing supplies the reaction on j through the pair j→i).
        g = (de_pair / np.where(d > 0, d, 1.0))[:, None] * D
        if forces:
            f = np.zeros((n, 3))
            for k in range(3):
                f[:, k] = np.bincount(i, weights=g[:, k], minlength=n)
        if virial and is_periodic(atoms):
            # dE/dε_ab = Σ_pairs dE/dr D_a D_b / r, halved for the double listing.
            w = 0.5 * (D.T @ g)
            w = 0.5 * (w + w.T)
    return BaselineResult(energy, local, f, w)


def _pair_result_atoms(atoms: Atoms, i, j, d, D, e_pair, de_pair) -> BaselineResult:
    """:func:`_pair_result` with forces, virial and per-atom virials: each pair's virial half to each atom.

    The ordered pair i→j gives atom i ½ dE/dr D ⊗ D / r; its twin j→i gives j the same.
    """
    n = len(atoms)
    res = _pair_result(atoms, i, j, d, D, e_pair, de_pair, True, True)
    g = (de_pair / np.where(d > 0, d, 1.0))[:, None] * D
    per_pair = 0.5 * (D[:, :, None] * g[:, None, :]).reshape(-1, 9)
    w = np.stack([np.bincount(i, weights=per_pair[:, k], minlength=n) for k in range(9)], axis=1).reshape(n, 3, 3)
    res.atom_virial_eV = 0.5 * (w + w.transpose(0, 2, 1))
    return res


# --------------------------------------------------------------------------- #
# E0
# --------------------------------------------------------------------------- #

class _PairBaseline(Baseline):
    """A baseline that is a sum over pairs: evaluated from its ``_pairs(atoms)`` (i, j, d, D, e, dE/dr)."""

    def _pairs(self, atoms: Atoms):  # pragma: no cover - every pair baseline defines it
        raise NotImplementedError

    def evaluate(self, atoms: Atoms, *, forces: bool = True, virial: bool = True) -> BaselineResult:
        """The pair energy, analytic forces and virial (see :meth:`Baseline.evaluate`)."""
        if len(atoms) == 0:
            return _zero_result(0, forces, virial, is_periodic(atoms))
        return _pair_result(atoms, *self._pairs(atoms), forces, virial)

    def evaluate_atoms(self, atoms: Atoms) -> BaselineResult:
        """:meth:`evaluate` with per-atom virials, each pair's half and half (see :meth:`Baseline.evaluate_atoms`)."""
        if len(atoms) == 0:
            return super().evaluate_atoms(atoms)
        return _pair_result_atoms(atoms, *self._pairs(atoms))


class E0Baseline(Baseline):
    """Energy per species (isolated-atom energies); forces and virial are zero.

    Parameters
    ----------
    e0 : dict {int or str: float}
        Energy (eV) per atom of each species, keyed by atomic number or
        chemical symbol.
    """

    type: ClassVar[str] = "e0"

    def __init__(self, e0: Mapping[Union[int, str], float]):
        if not isinstance(e0, Mapping) or not e0:
            raise InputError("e0 baseline: expected a non-empty mapping {species: energy in eV}", param="e0")
        self.e0: Dict[int, float] = {}
        for k, v in e0.items():
            z = _species_number(k, "e0 baseline")
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise InputError(f"e0 baseline: energy of {chemical_symbols[z]} is {v!r}, not a number",
                                 param="e0") from None
            if not math.isfinite(v):
                raise InputError(f"e0 baseline: energy of {chemical_symbols[z]} is {v}, not finite", param="e0")
            self.e0[z] = v

    def evaluate(self, atoms: Atoms, *, forces: bool = True, virial: bool = True) -> BaselineResult:
        """Sum of the species energies; zero forces and virial (see :meth:`Baseline.evaluate`)."""
        numbers = atoms.numbers
        missing = sorted(set(numbers.tolist()) - set(self.e0))
        if missing:
            raise InputError(f"e0 baseline has no energy for {', '.join(chemical_symbols[z] for z in missing)} "
                             f"(it has {', '.join(chemical_symbols[z] for z in sorted(self.e0))})")
        local = np.array([self.e0[z] for z in numbers.tolist()], dtype=float)
        res = _zero_result(len(atoms), forces, virial, is_periodic(atoms))
        res.local_energy_eV = local
        res.energy_eV = float(local.sum())
        return res

    def evaluate_atoms(self, atoms: Atoms) -> BaselineResult:
        """:meth:`evaluate` with zero per-atom virials (see :meth:`Baseline.evaluate_atoms`)."""
        res = self.evaluate(atoms, forces=True, virial=True)
        res.atom_virial_eV = np.zeros((len(atoms), 3, 3))
        return res

    def to_dict(self) -> dict:
        """``{"type": "e0", "e0": {"Z": eV}}`` (JSON keys are strings)."""
        return {"type": self.type, "e0": {str(z): v for z, v in sorted(self.e0.items())}}

    def describe(self) -> str:
        """E.g. ``e0 baseline (eV/atom): Si -158.54, O -432.1``."""
        return "e0 baseline (eV/atom): " + ", ".join(f"{chemical_symbols[z]} {v:.6g}"
                                                     for z, v in sorted(self.e0.items()))


# --------------------------------------------------------------------------- #
# ZBL
# --------------------------------------------------------------------------- #

def zbl_energy(r, z1, z2):
    """Unswitched ZBL pair energy (eV) at distance ``r`` (Å) and its derivative dE/dr (eV/Å).

    ``E = Z1 Z2 e²/(4π ε0 r) φ(r/a)``, ``a = 0.46850 Å / (Z1^0.23 + Z2^0.23)``.
    ``r``, ``z1`` and ``z2`` broadcast against each other.
    """
    r = np.asarray(r, dtype=float)
    z1 = np.asarray(z1, dtype=float)
    z2 = np.asarray(z2, dtype=float)
    a = ZBL_A0 / (z1 ** 0.23 + z2 ** 0.23)
    ex = ZBL_C * np.exp(-ZBL_B * (r / a)[..., None])
    phi = ex.sum(-1)
    dphi = -(ex * ZBL_B).sum(-1) / a          # dφ/dr
    pre = COULOMB_EV_A * z1 * z2
    e = pre * phi / r
    de = pre * (dphi / r - phi / r ** 2)
    return e, de


def smooth_switch(r, r_inner, r_outer):
    """C2 switch S(r) and dS/dr: 1 below ``r_inner``, 0 above ``r_outer``.

    In between ``S = 1 - (10 t³ - 15 t⁴ + 6 t⁵)``, ``t = (r - r_inner) / (r_outer - r_inner)``
    (quintic smoothstep): S, S' and S'' are continuous, and S is non-increasing.
    """
    r = np.asarray(r, dtype=float)
    width = np.asarray(r_outer, dtype=float) - np.asarray(r_inner, dtype=float)
    t = np.clip((r - r_inner) / width, 0.0, 1.0)
    s = 1.0 - t ** 3 * (10.0 - 15.0 * t + 6.0 * t * t)
    ds = -30.0 * t * t * (1.0 - t) ** 2 / width      # zero outside (t clipped to 0 or 1)
    return s, ds


class ZBLBaseline(_PairBaseline):
    """ZBL universal screened nuclear repulsion per species pair, smoothly switched off.

    The pair energy is ``E(r) = E_ZBL(r) S(r)`` with ``E_ZBL`` from
    :func:`zbl_energy` and the C2 quintic switch ``S`` of :func:`smooth_switch`
    (1 below ``r_inner``, 0 above ``r_outer``). ``E_ZBL`` and ``S`` are both
    positive (``S`` ≥ 0) and non-increasing, so their product is a monotonic
    repulsion; energy, force and force derivative are continuous everywhere.

    Difference from LAMMPS ``pair_style zbl inner outer``: LAMMPS switches
    the *force* with a polynomial added between inner and outer (and shifts
    the energy by a constant so that it is zero at outer), so below inner
    its energy is ZBL plus a constant. Here the *energy* is multiplied by S,
    so below ``r_inner`` the energy is exactly ZBL, above ``r_outer`` exactly
    zero. Both go smoothly to zero between inner and outer; the two are not
    numerically equal in or below the switch region.

    Parameters
    ----------
    radii : dict {(Z1, Z2): (r_inner, r_outer)}
        Switch radii (Å) per unordered species pair (atomic numbers or
        symbols); ``0 < r_inner < r_outer``. Every pair of the species in a
        frame must be present.
    sources : dict {(Z1, Z2): str}, optional
        How each pair's radii were chosen, for the log (set by :meth:`from_frames`).
    """

    type: ClassVar[str] = "zbl"

    def __init__(self, radii: Mapping[Tuple, Tuple[float, float]], sources: Optional[Mapping[Tuple, str]] = None):
        if not isinstance(radii, Mapping) or not radii:
            raise InputError("zbl baseline: expected a non-empty mapping {(Z1, Z2): (r_inner, r_outer)}",
                             param="baseline")
        self.radii: Dict[Pair, Tuple[float, float]] = {}
        for key, val in radii.items():
            try:
                s1, s2 = key
            except (TypeError, ValueError):
                raise InputError(f"zbl baseline: pair {key!r} is not two species", param="baseline") from None
            pair = _pair_key(_species_number(s1, "zbl baseline"), _species_number(s2, "zbl baseline"))
            try:
                ri, ro = (float(x) for x in val)
            except (TypeError, ValueError):
                raise InputError(f"zbl baseline: radii of {_pair_name(pair)} are {val!r}, expected "
                                 "(r_inner, r_outer) in Å", param="baseline") from None
            if not (math.isfinite(ri) and math.isfinite(ro) and 0.0 < ri < ro):
                raise InputError(f"zbl baseline: radii of {_pair_name(pair)} are r_inner={ri}, r_outer={ro}; "
                                 "need 0 < r_inner < r_outer (Å)", param="baseline")
            if pair in self.radii:
                raise InputError(f"zbl baseline: pair {_pair_name(pair)} given twice", param="baseline")
            self.radii[pair] = (ri, ro)
        self.sources: Dict[Pair, str] = {}
        for key, text in (sources or {}).items():
            self.sources[_pair_key(*(_species_number(s, "zbl baseline") for s in key))] = str(text)
        self.cutoff = max(ro for _, ro in self.radii.values())

    @classmethod
    def from_frames(cls, frames: Sequence[Atoms], species: Optional[Sequence[Union[int, str]]] = None, *,
                    search_radius: float = ZBL_SEARCH_RADIUS_A,
                    margin_A: float = ZBL_OUTER_MARGIN_A) -> "ZBLBaseline":
        """Radii chosen from the training data, so that ZBL acts only below what the data cover.

        For each unordered species pair with shortest distance ``d`` in
        ``frames`` (periodic images included), ``r_outer = d + margin_A`` and
        ``r_inner = 0.75 d``: the baseline is zero on every training pair
        longer than ``d + margin_A`` and full ZBL well below the data (with
        ``margin_A=0`` it is exactly zero on every training frame). Pairs
        never closer than ``search_radius`` count as not seen and get
        ``r_outer = 0.75 × (sum of ase.data.covalent_radii)``, ``r_inner =
        0.75 r_outer``. :meth:`radii_table` lists the result and where it
        came from.

        Parameters
        ----------
        frames : sequence of ase.Atoms
            Training frames.
        species : sequence of int or str, optional
            Species to make pairs of (default: those of ``frames``); must
            include every species of ``frames``.
        search_radius : float
            Distance (Å) up to which contacts are looked for.
        margin_A : float
            How far above the shortest distance the repulsion begins (Å).
        """
        frames = list(frames)
        seen_z = sorted({int(z) for a in frames for z in a.numbers})
        return cls.from_contacts(cls.shortest_contacts(frames, search_radius), seen_z, species,
                                 search_radius=search_radius, margin_A=margin_A)

    @staticmethod
    def shortest_contacts(frames: Sequence[Atoms], search_radius: float = ZBL_SEARCH_RADIUS_A,
                          found: Optional[Dict[Pair, Tuple[float, str]]] = None,
                          first_index: int = 0) -> Dict[Pair, Tuple[float, str]]:
        """Shortest distance (Å) and where it occurs, per species pair, updating ``found`` (for streaming)."""
        shortest: Dict[Pair, Tuple[float, str]] = {} if found is None else found
        for k, atoms in enumerate(frames, start=first_index):
            # Only a contact shorter than the best so far can change the answer, so once
            # every species pair of the frame has been seen the search need not reach
            # further than the longest of their best distances: in a large data set that
            # is about a bond length, not search_radius.
            pairs = itertools.combinations_with_replacement(sorted({int(z) for z in atoms.numbers}), 2)
            radius = max((shortest[p][0] if p in shortest else search_radius for p in pairs), default=0.0)
            i, j, d, _ = _pair_arrays(atoms, min(radius, search_radius))
            if len(d) == 0:
                continue
            zi, zj = atoms.numbers[i], atoms.numbers[j]
            lo, hi = np.minimum(zi, zj), np.maximum(zi, zj)
            code = lo * 1000 + hi
            for c in np.unique(code):
                m = code == c
                dmin = float(d[m].min())
                pair = (int(c // 1000), int(c % 1000))
                if pair not in shortest or dmin < shortest[pair][0]:
                    src = atoms.info.get("gapfit_source") or f"frame {k}"
                    shortest[pair] = (dmin, src)
        return shortest

    @classmethod
    def from_contacts(cls, shortest: Mapping[Pair, Tuple[float, str]], seen_species: Sequence[int],
                      species: Optional[Sequence[Union[int, str]]] = None, *,
                      search_radius: float = ZBL_SEARCH_RADIUS_A,
                      margin_A: float = ZBL_OUTER_MARGIN_A) -> "ZBLBaseline":
        """:meth:`from_frames` from :meth:`shortest_contacts` output and the species of the frames."""
        seen_z = sorted(int(z) for z in seen_species)
        zs = seen_z if species is None else sorted({_species_number(s, "zbl baseline species") for s in species})
        extra = sorted(set(seen_z) - set(zs))
        if extra:
            raise InputError(f"zbl baseline: the frames contain {', '.join(chemical_symbols[z] for z in extra)}, "
                             f"not in the species given ({', '.join(chemical_symbols[z] for z in zs)})",
                             param="baseline")
        if not zs:
            raise InputError("zbl baseline: no frames and no species to choose radii for", param="baseline")
        radii, sources = {}, {}
        for a_i, z1 in enumerate(zs):
            for z2 in zs[a_i:]:
                pair = (z1, z2)
                if pair in shortest:
                    ro, src = shortest[pair]
                    if ro <= 0.0:
                        raise InputError(f"zbl baseline: two atoms coincide ({_pair_name(pair)}, {src})",
                                         param="baseline")
                    sources[pair] = f"shortest distance in the data {ro:.3f} A ({src}) + {margin_A:g} A"
                    radii[pair] = (ZBL_INNER_FRACTION * ro, ro + float(margin_A))
                    continue
                else:
                    ro = ZBL_UNSEEN_FRACTION * float(covalent_radii[z1] + covalent_radii[z2])
                    sources[pair] = (f"not in the data within {search_radius:g} A: "
                                     f"{ZBL_UNSEEN_FRACTION:g} x sum of covalent radii")
                radii[pair] = (ZBL_INNER_FRACTION * ro, ro)
        return cls(radii, sources)

    def radii_table(self) -> List[dict]:
        """JSON-able table of the radii, one entry per pair, for the log and the model file.

        Each entry: ``pair`` ("Si-O"), ``z`` ([Z1, Z2]), ``r_inner_A``,
        ``r_outer_A`` and ``source`` (how they were chosen, "" when given).
        """
        return [{"pair": _pair_name(p), "z": [p[0], p[1]], "r_inner_A": ri, "r_outer_A": ro,
                 "source": self.sources.get(p, "")} for p, (ri, ro) in sorted(self.radii.items())]

    def _pair_params(self, numbers: np.ndarray):
        """Per-species-index tables (r_inner, r_outer) for the species of a frame; checks coverage."""
        zs = np.unique(numbers)
        ns = len(zs)
        rin = np.zeros((ns, ns))
        rout = np.zeros((ns, ns))
        missing = []
        for a in range(ns):
            for b in range(a, ns):
                pair = (int(zs[a]), int(zs[b]))
                if pair not in self.radii:
                    missing.append(_pair_name(pair))
                    continue
                rin[a, b] = rin[b, a] = self.radii[pair][0]
                rout[a, b] = rout[b, a] = self.radii[pair][1]
        if missing:
            raise InputError(f"zbl baseline has no radii for {', '.join(missing)} (it has "
                             f"{', '.join(_pair_name(p) for p in sorted(self.radii))})", param="baseline")
        return zs, rin, rout


    def _pairs(self, atoms: Atoms):
        """Ordered pairs closer than their r_outer: i, j, d, D and the switched ZBL energy and dE/dr of each."""
        zs, rin, rout = self._pair_params(atoms.numbers)
        i, j, d, D = _pair_arrays(atoms, self.cutoff)
        sidx = np.searchsorted(zs, atoms.numbers)
        si, sj = sidx[i], sidx[j]
        ro = rout[si, sj]
        keep = d < ro                      # pairs beyond their own r_outer contribute nothing
        i, j, d, D, si, sj = i[keep], j[keep], d[keep], D[keep], si[keep], sj[keep]
        e0, de0 = zbl_energy(d, zs[si], zs[sj])
        s, ds = smooth_switch(d, rin[si, sj], rout[si, sj])
        return i, j, d, D, e0 * s, de0 * s + e0 * ds

    def to_dict(self) -> dict:
        """``{"type": "zbl", "radii": radii_table()}``."""
        return {"type": self.type, "radii": self.radii_table()}

    def describe(self) -> str:
        """E.g. ``ZBL baseline, switched off between r_inner and r_outer (A): Si-Si 1.76-2.35``."""
        return "ZBL baseline, switched off between r_inner and r_outer (A): " + ", ".join(
            f"{_pair_name(p)} {ri:.4g}-{ro:.4g}" for p, (ri, ro) in sorted(self.radii.items()))


# --------------------------------------------------------------------------- #
# Coulomb
# --------------------------------------------------------------------------- #

#: ``charges`` of a :class:`CoulombBaseline` that reads each frame's per-atom ``initial_charges`` array.
CHARGES_FROM_FRAMES = "initial_charges"
#: Default accuracy of the Ewald sum (:func:`gapfit.electrostatics.coulomb`: relative error of the energy).
COULOMB_ACCURACY = 1e-6
#: Accuracy parameters accepted: [COULOMB_ACCURACY_MIN, COULOMB_ACCURACY_MAX).
COULOMB_ACCURACY_MIN = 1e-15
COULOMB_ACCURACY_MAX = 0.1
#: Longest Gaussian width or screening radius accepted (Å): beyond it the value is a typo.
COULOMB_MAX_LENGTH_A = 50.0
#: The keys of :meth:`CoulombBaseline.to_dict`.
_COULOMB_FIELDS = ("type", "charges_e", "widths_A", "accuracy", "screening_A", "source")


def _is_number(v) -> bool:
    """A finite real number, not a bool (JSON ``true`` is not a charge)."""
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            and math.isfinite(float(v)))


def _where(atoms: Atoms) -> str:
    src = atoms.info.get("gapfit_source") if isinstance(atoms.info, dict) else None
    return str(src) if src else "frame"


class CoulombBaseline(Baseline):
    """Electrostatic energy of fixed charges: Ewald sum in 3D-periodic cells, direct sum in finite systems.

    The energy is ``E = ½ Σ_{i≠j} q_i q_j φ_ij(r_ij)`` in units of
    ``e²/(4π ε0) = 14.399645 eV·Å``, over all periodic images (Ewald sum;
    a cell that is not neutral sits in a uniform neutralising background),
    plus for Gaussian charges each cloud's self-energy ``q_i²/(2√π σ_i)``
    (a constant per atom for fixed charges, which e0 absorbs). It is
    computed by :func:`gapfit.electrostatics.coulomb` (conventions there):
    per-atom energies, analytic forces and the analytic virial. ``φ(r) =
    1/r`` for point charges; for Gaussian charges ``φ_ij(r) = erf(r / (√2
    γ_ij)) / r``, ``γ_ij = sqrt(σ_i² + σ_j²)``, finite at ``r = 0``.
    ``screening`` multiplies ``φ`` by a switch that is 0 below ``r_in`` and
    1 beyond ``r_out`` (C2 in between), so that the baseline carries the
    long-range tail while the local terms learn what is near. Frames
    periodic along some axes only (slabs, wires) are refused.

    The charges are fixed per species, or read at every evaluation from the
    frame's ``initial_charges`` array (``charges="initial_charges"``): then
    every frame the model fits *or predicts* must carry them.

    Parameters
    ----------
    charges : dict {Z or symbol: float} or "initial_charges"
        Charge per species, in units of the elementary charge e, or
        ``"initial_charges"``: each frame's per-atom charges.
    widths : dict {Z or symbol: float}, float or None
        Gaussian width σ in Å per species (a number: the same for every
        species); the charge density of an atom is ``q exp(-r²/2σ²) /
        (2πσ²)^{3/2}``. None: point charges.
    accuracy : float
        Target error of a periodic frame's energy relative to ``e²/(4π ε0)
        Σ q_i² / (2a)``, ``a`` the mean interatomic spacing (see
        :func:`gapfit.electrostatics.coulomb`), in [1e-15, 0.1); default
        1e-6. Finite frames are summed exactly.
    screening : (float, float) or None
        ``(r_in, r_out)`` in Å, ``0 <= r_in < r_out``: the short-range
        screening of :func:`gapfit.electrostatics.coulomb`. None: none.
    source : str, optional
        Where the charges came from (e.g. learned from the data), for the log.
    """

    type: ClassVar[str] = "coulomb"

    def __init__(self, charges: Union[Mapping[Union[int, str], float], str],
                 widths: Union[Mapping[Union[int, str], float], float, None] = None, *,
                 accuracy: float = COULOMB_ACCURACY, screening: Optional[Sequence[float]] = None,
                 source: Optional[str] = None):
        where = "coulomb baseline"
        if isinstance(charges, str):
            if charges != CHARGES_FROM_FRAMES:
                raise InputError(f"{where}: charges {charges!r}: expected a mapping {{species: charge in e}} or "
                                 f"{CHARGES_FROM_FRAMES!r}", param="charges")
            self.charges: Union[Dict[int, float], str] = CHARGES_FROM_FRAMES
        else:
            self.charges = _per_species_numbers(charges, f"{where}: charges", "charge in e", "charges",
                                                positive=False)
        if widths is None:
            self.widths: Union[Dict[int, float], float, None] = None
        elif isinstance(widths, Mapping):
            self.widths = _per_species_numbers(widths, f"{where}: widths", "Gaussian width in Å", "coulomb",
                                               positive=True)
        else:
            if not (_is_number(widths) and 0.0 < float(widths) <= COULOMB_MAX_LENGTH_A):
                raise InputError(f"{where}: width {widths!r} is not a length in (0, {COULOMB_MAX_LENGTH_A:g}] Å",
                                 param="coulomb")
            self.widths = float(widths)
        if not (_is_number(accuracy) and COULOMB_ACCURACY_MIN <= float(accuracy) < COULOMB_ACCURACY_MAX):
            raise InputError(f"{where}: accuracy {accuracy!r} is not a number in [{COULOMB_ACCURACY_MIN:g}, "
                             f"{COULOMB_ACCURACY_MAX:g})", param="coulomb")
        self.accuracy = float(accuracy)
        self.screening: Optional[Tuple[float, float]] = None
        if screening is not None:
            try:
                r_in, r_out = screening
            except (TypeError, ValueError):
                raise InputError(f"{where}: screening {screening!r} is not two radii [r_in, r_out] in Å",
                                 param="coulomb") from None
            if not (_is_number(r_in) and _is_number(r_out)
                    and 0.0 <= float(r_in) < float(r_out) <= COULOMB_MAX_LENGTH_A):
                raise InputError(f"{where}: screening radii r_in={r_in!r}, r_out={r_out!r}; need "
                                 f"0 <= r_in < r_out <= {COULOMB_MAX_LENGTH_A:g} Å", param="coulomb")
            self.screening = (float(r_in), float(r_out))
        if source is not None and not isinstance(source, str):
            raise InputError(f"{where}: source {source!r} is not text", param="coulomb")
        self.source = source

    @classmethod
    def from_settings(cls, charges: Union[Mapping[Union[int, str], float], str],
                      coulomb: Optional[Mapping[str, object]] = None, *,
                      source: Optional[str] = None) -> "CoulombBaseline":
        """The baseline of the GAP parameters ``charges`` and ``coulomb`` (see :class:`gapfit.GAP`).

        ``charges``: ``{species: e}`` or ``"initial_charges"`` (learned
        charges are passed here as a mapping once known); ``coulomb``:
        ``{"width": ..., "accuracy": ..., "screening": [r_in, r_out]}``,
        every key optional.
        """
        settings = dict(coulomb or {})
        unknown = sorted(set(settings) - {"width", "accuracy", "screening"})
        if unknown:
            raise InputError(f"coulomb: unknown key(s) {unknown}; known: width, accuracy, screening",
                             param="coulomb")
        accuracy = settings.get("accuracy")
        return cls(charges, settings.get("width"), accuracy=COULOMB_ACCURACY if accuracy is None else accuracy,
                   screening=settings.get("screening"), source=source)

    # ------------------------------------------------------------- per atom
    def charges_of(self, atoms: Atoms) -> np.ndarray:
        """Per-atom charges (e) of ``atoms``: from the species, or the frame's ``initial_charges``."""
        n = len(atoms)
        if self.charges == CHARGES_FROM_FRAMES:
            if "initial_charges" not in atoms.arrays:
                raise InputError(f"{_where(atoms)}: no per-atom 'initial_charges'; this Coulomb baseline reads "
                                 "each frame's charges (charges='initial_charges'), so every frame fitted or "
                                 "predicted must carry them (an initial_charges column in extended XYZ, or "
                                 "atoms.set_initial_charges(q) in Python)", param="charges")
            q = np.asarray(atoms.arrays["initial_charges"], dtype=float)
            if q.shape != (n,) or not np.all(np.isfinite(q)):
                raise InputError(f"{_where(atoms)}: 'initial_charges' must be one finite number per atom, got "
                                 f"shape {q.shape}" + ("" if q.shape != (n,) else " with values not finite"),
                                 param="charges")
            return q.copy()
        return self._per_atom(atoms, self.charges, "charge", "charges",
                              "give it one: charges {{{s}: e}} in the config, or --coulomb '{s}=...'")

    def widths_of(self, atoms: Atoms) -> Optional[np.ndarray]:
        """Per-atom Gaussian widths (Å) of ``atoms``, or None for point charges."""
        if self.widths is None:
            return None
        if isinstance(self.widths, float):
            return np.full(len(atoms), self.widths)
        return self._per_atom(atoms, self.widths, "Gaussian width", "coulomb",
                              "give it one: coulomb: {{width: {{{s}: A}}}} in the config")

    @staticmethod
    def _per_atom(atoms: Atoms, table: Mapping[int, float], what: str, param: str, fix: str) -> np.ndarray:
        numbers = atoms.numbers
        missing = sorted(set(numbers.tolist()) - set(table))
        if missing:
            names = ", ".join(chemical_symbols[z] for z in missing)
            raise InputError(f"{_where(atoms)}: the Coulomb baseline has no {what} for {names} (it has "
                             f"{', '.join(chemical_symbols[z] for z in sorted(table))}); "
                             + fix.format(s=chemical_symbols[missing[0]]), param=param)
        return np.array([table[z] for z in numbers.tolist()], dtype=float)

    def evaluate(self, atoms: Atoms, *, forces: bool = True, virial: bool = True) -> BaselineResult:
        """Electrostatic energy, per-atom energies, analytic forces and virial (see :meth:`Baseline.evaluate`).

        Raises :class:`gapfit.errors.InputError` for a frame periodic along
        some axes only, a species without a charge (or width), or, with
        ``charges="initial_charges"``, a frame without them.
        """
        n = len(atoms)
        periodic = is_periodic(atoms)
        q = self.charges_of(atoms) if n else np.zeros(0)
        if not np.any(q):
            # no charge, no energy: skip the Ewald sum (frames of neutral species only)
            return _zero_result(n, forces, virial, periodic)
        # imported here: the electrostatics (and its compiled loops) load only for models that have charges
        from .electrostatics import coulomb

        res = coulomb(atoms, q, self.widths_of(atoms), accuracy=self.accuracy, screening_A=self.screening,
                      forces=bool(forces), virial=bool(virial and periodic))
        f = np.array(res.forces_eV_per_A, dtype=float) if forces else None
        w = None
        if virial and periodic:
            w = np.asarray(res.virial_eV, dtype=float)
            w = 0.5 * (w + w.T)  # symmetric by construction; this removes the round-off
        return BaselineResult(float(res.energy_eV), np.array(res.energies_eV, dtype=float), f, w)

    # ---------------------------------------------------------------- files
    def to_dict(self) -> dict:
        """``{"type": "coulomb", "charges_e", "widths_A", "accuracy", "screening_A", "source"}``, plain JSON.

        ``charges_e`` is ``{"Z": e}`` or ``"initial_charges"``; ``widths_A``
        ``{"Z": Å}``, one number or None; ``screening_A`` ``[r_in, r_out]``
        or None.
        """
        charges = self.charges if isinstance(self.charges, str) else \
            {str(z): v for z, v in sorted(self.charges.items())}
        widths = {str(z): v for z, v in sorted(self.widths.items())} if isinstance(self.widths, dict) \
            else self.widths
        return {"type": self.type, "charges_e": charges, "widths_A": widths, "accuracy": self.accuracy,
                "screening_A": None if self.screening is None else list(self.screening), "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping) -> "CoulombBaseline":
        """Rebuild from :meth:`to_dict`, checking every field; a ValueError names the field at fault."""
        if not isinstance(d, Mapping):
            raise ValueError(f"expected an object, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_COULOMB_FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; a coulomb baseline has {list(_COULOMB_FIELDS[1:])}")
        if d.get("type") != cls.type:
            raise ValueError(f"type {d.get('type')!r} is not {cls.type!r}")
        if "charges_e" not in d:
            raise ValueError("field 'charges_e' is missing")
        charges = d["charges_e"]
        if isinstance(charges, str):
            if charges != CHARGES_FROM_FRAMES:
                raise ValueError(f"charges_e {charges!r} is neither a mapping nor {CHARGES_FROM_FRAMES!r}")
        else:
            charges = _stored_per_species(charges, "charges_e", positive=False)
        widths = d.get("widths_A")
        if isinstance(widths, Mapping):
            widths = _stored_per_species(widths, "widths_A", positive=True)
        elif widths is not None and not (_is_number(widths) and widths > 0):
            raise ValueError(f"widths_A {widths!r} is not a mapping, a positive number or null")
        accuracy = d.get("accuracy", COULOMB_ACCURACY)
        if not (_is_number(accuracy) and COULOMB_ACCURACY_MIN <= accuracy < COULOMB_ACCURACY_MAX):
            raise ValueError(f"accuracy {accuracy!r} is not a number in [{COULOMB_ACCURACY_MIN:g}, "
                             f"{COULOMB_ACCURACY_MAX:g})")
        screening = d.get("screening_A")
        if screening is not None:
            if not (isinstance(screening, list) and len(screening) == 2 and all(_is_number(r) for r in screening)
                    and 0 <= screening[0] < screening[1]):
                raise ValueError(f"screening_A {screening!r} is not null or [r_in, r_out] with 0 <= r_in < r_out")
        source = d.get("source")
        if source is not None and not isinstance(source, str):
            raise ValueError(f"source {source!r} is not text or null")
        return cls(charges, widths, accuracy=accuracy, screening=screening, source=source)

    def describe(self) -> str:
        """E.g. ``Coulomb baseline: charges (e) Na +1, Cl -1; point charges; Ewald accuracy 1e-06; no screening``."""
        if isinstance(self.charges, str):
            charges = "charges from each frame's initial_charges"
        else:
            charges = "charges (e) " + ", ".join(f"{chemical_symbols[z]} {v:+.6g}"
                                                  for z, v in sorted(self.charges.items()))
        if self.widths is None:
            widths = "point charges"
        elif isinstance(self.widths, float):
            widths = f"Gaussian width {self.widths:.4g} A"
        else:
            widths = "Gaussian widths (A) " + ", ".join(f"{chemical_symbols[z]} {v:.4g}"
                                                       for z, v in sorted(self.widths.items()))
        screening = "no screening" if self.screening is None else \
            f"screened: switched on between {self.screening[0]:.4g} and {self.screening[1]:.4g} A"
        source = f" ({self.source})" if self.source else ""
        return f"Coulomb baseline: {charges}{source}; {widths}; Ewald accuracy {self.accuracy:.3g}; {screening}"


def _per_species_numbers(table, where: str, what: str, param: str, *, positive: bool) -> Dict[int, float]:
    """``{Z: float}`` from a user's ``{species: number}`` mapping (InputError naming ``where``)."""
    if not isinstance(table, Mapping) or not table:
        raise InputError(f"{where}: expected a non-empty mapping {{species: {what}}}, got {table!r:.80}", param=param)
    out: Dict[int, float] = {}
    for key, value in table.items():
        z = _species_number(key, where)
        if not _is_number(value):
            raise InputError(f"{where}: {what} of {chemical_symbols[z]} is {value!r}, not a finite number",
                             param=param)
        if positive and not 0.0 < float(value) <= COULOMB_MAX_LENGTH_A:
            raise InputError(f"{where}: {what} of {chemical_symbols[z]} is {value}; need (0, "
                             f"{COULOMB_MAX_LENGTH_A:g}]", param=param)
        if z in out:
            raise InputError(f"{where}: {chemical_symbols[z]} given twice", param=param)
        out[z] = float(value)
    return out


def _stored_per_species(table, field: str, *, positive: bool) -> Dict[int, float]:
    """``{Z: float}`` from a model file's ``{"Z": number}`` (ValueError naming ``field``)."""
    if not isinstance(table, Mapping) or not table:
        raise ValueError(f"{field} {table!r:.80} is not a non-empty mapping of atomic numbers to numbers")
    out: Dict[int, float] = {}
    for key, value in table.items():
        if not (isinstance(key, str) and key.isdigit() and 1 <= int(key) < len(chemical_symbols)):
            raise ValueError(f"{field}: key {key!r} is not an atomic number")
        if not _is_number(value) or (positive and not value > 0):
            raise ValueError(f"{field}[{key!r}] = {value!r} is not a {'positive' if positive else 'finite'} number")
        out[int(key)] = float(value)
    return out


# --------------------------------------------------------------------------- #
# tabulated pair potential
# --------------------------------------------------------------------------- #

class _PairTable:
    """One tabulated pair: cubic spline through (r, E), zero slope and value at the last point."""

    def __init__(self, r: np.ndarray, e: np.ndarray):
        from scipy.interpolate import CubicSpline

        self.r = np.asarray(r, dtype=float)
        self.e = np.asarray(e, dtype=float)
        # not-a-knot at the short end (no assumption about the curvature of a
        # steep repulsion); dE/dr = 0 at the last point so the force goes to
        # zero continuously where the energy does.
        self.spline = CubicSpline(self.r, self.e, bc_type=("not-a-knot", (1, 0.0)))
        self.slope0 = float(self.spline(self.r[0], 1))

    def __call__(self, d: np.ndarray):
        """Energy (eV) and dE/dr (eV/Å) at distances ``d`` (Å)."""
        e = np.zeros_like(d)
        de = np.zeros_like(d)
        inside = (d >= self.r[0]) & (d < self.r[-1])
        e[inside] = self.spline(d[inside])
        de[inside] = self.spline(d[inside], 1)
        # below the table: straight-line continuation (energy and force
        # continuous, no runaway of the cubic's extrapolation)
        below = d < self.r[0]
        e[below] = self.e[0] + self.slope0 * (d[below] - self.r[0])
        de[below] = self.slope0
        return e, de


class TabulatedPairBaseline(_PairBaseline):
    """Pair potential tabulated per species pair (the role of gap_fit's ``core_param_file``).

    Between table points the energy is a cubic spline
    (:class:`scipy.interpolate.CubicSpline`, not-a-knot at the first point,
    zero first derivative at the last one); beyond the last point it is 0;
    below the first point it continues along the tangent there. Pairs of
    species with no table contribute nothing.

    Parameters
    ----------
    tables : dict {(Z1, Z2): (r, energy)}
        Per unordered species pair (atomic numbers or symbols): distances
        (Å, strictly increasing, at least 3, non-negative) and pair energies
        (eV; the last one 0).
    source : str, optional
        The file the tables came from (for the log only: the tables
        themselves are stored in :meth:`to_dict`).
    """

    type: ClassVar[str] = "tabulated_pair"

    def __init__(self, tables: Mapping[Tuple, Tuple[Sequence[float], Sequence[float]]],
                 source: Optional[str] = None):
        if not isinstance(tables, Mapping) or not tables:
            raise InputError("tabulated pair baseline: expected a non-empty mapping {(Z1, Z2): (r, energy)}",
                             param="baseline")
        self.source = source
        self.tables: Dict[Pair, _PairTable] = {}
        for key, val in tables.items():
            try:
                s1, s2 = key
                r, e = val
            except (TypeError, ValueError):
                raise InputError(f"tabulated pair baseline: entry {key!r} is not (Z1, Z2): (r, energy)",
                                 param="baseline") from None
            pair = _pair_key(_species_number(s1, "tabulated pair baseline"),
                             _species_number(s2, "tabulated pair baseline"))
            r = np.asarray(r, dtype=float)
            e = np.asarray(e, dtype=float)
            name = f"tabulated pair baseline, {_pair_name(pair)}"
            if r.ndim != 1 or r.shape != e.shape:
                raise InputError(f"{name}: r and energy must be lists of the same length", param="baseline")
            problem = _table_problem(r, e)
            if problem:
                raise InputError(f"{name}: {problem}", param="baseline")
            if pair in self.tables:
                raise InputError(f"{name}: pair given twice", param="baseline")
            e = e.copy()
            e[-1] = 0.0
            self.tables[pair] = _PairTable(r, e)
        self.cutoff = max(t.r[-1] for t in self.tables.values())

    @classmethod
    def from_file(cls, path: str) -> "TabulatedPairBaseline":
        """Read tables from a plain-text file.

        Format (whitespace separated; ``#`` starts a comment, to the end of
        the line; blank lines are ignored)::

            # Si-Si core repulsion, r in Å, energy in eV
            pair Si Si
            0.50   120.0
            1.00    21.3
            ...
            3.00     0.0
            pair 14 8        # atomic numbers work too; pair O Si is the same
            ...

        Each block starts with a line ``pair A B`` (chemical symbols or
        atomic numbers; the order of A and B does not matter, and a pair may
        appear only once), followed by lines ``r_A energy_eV``: at least 3
        points, ``r`` ≥ 0 and strictly increasing, all numbers finite, and the
        energy at the last ``r`` must be 0 (|E| ≤ 1e-8 eV): the potential
        ends there. Every error names the file and line.

        Parameters
        ----------
        path : str
            The file.
        """
        try:
            with open(path, "r", encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            raise InputError(f"{path}: no such file", param="baseline") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read it ({type(exc).__name__}: {exc})", param="baseline") from None

        blocks: List[Tuple[Pair, int, List[Tuple[int, float, float]]]] = []   # (pair, header line, points)
        seen: Dict[Pair, int] = {}
        for lineno, raw in enumerate(lines, start=1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            where = f"{path}, line {lineno}"
            words = text.split()
            if words[0].lower() == "pair":
                if len(words) != 3:
                    raise InputError(f"{where}: expected 'pair A B' (two species), got {text!r}", param="baseline")
                pair = _pair_key(_species_number(words[1], where), _species_number(words[2], where))
                if pair in seen:
                    raise InputError(f"{where}: pair {_pair_name(pair)} already given at line {seen[pair]}",
                                     param="baseline")
                seen[pair] = lineno
                blocks.append((pair, lineno, []))
                continue
            if not blocks:
                raise InputError(f"{where}: expected a 'pair A B' line before the first table row, got {text!r}",
                                 param="baseline")
            if len(words) != 2:
                raise InputError(f"{where}: expected two numbers 'r_A energy_eV', got {text!r}", param="baseline")
            try:
                r, e = float(words[0]), float(words[1])
            except ValueError:
                raise InputError(f"{where}: expected two numbers 'r_A energy_eV', got {text!r}",
                                 param="baseline") from None
            if not (math.isfinite(r) and math.isfinite(e)):
                raise InputError(f"{where}: numbers must be finite, got {text!r}", param="baseline")
            if r < 0:
                raise InputError(f"{where}: distance {r} is negative", param="baseline")
            pts = blocks[-1][2]
            if pts and r <= pts[-1][1]:
                raise InputError(f"{where}: distance {r} is not larger than {pts[-1][1]} at line {pts[-1][0]}; "
                                 "distances must increase strictly", param="baseline")
            pts.append((lineno, r, e))
        if not blocks:
            raise InputError(f"{path}: no 'pair A B' block found", param="baseline")
        tables = {}
        for pair, header, pts in blocks:
            if len(pts) < 3:
                raise InputError(f"{path}, line {header}: pair {_pair_name(pair)} has {len(pts)} points, "
                                 "need at least 3", param="baseline")
            last_line, r_last, e_last = pts[-1]
            if abs(e_last) > TABLE_ZERO_TOL_EV:
                raise InputError(f"{path}, line {last_line}: pair {_pair_name(pair)} ends at r={r_last} with "
                                 f"energy {e_last} eV, not 0; the table must end where the potential reaches 0 "
                                 "(add a last row 'r 0')", param="baseline")
            tables[pair] = ([p[1] for p in pts], [p[2] for p in pts])
        return cls(tables, source=str(path))


    def _pairs(self, atoms: Atoms):
        """Ordered pairs within the cutoff: i, j, d, D and the tabulated energy and dE/dr of each."""
        i, j, d, D = _pair_arrays(atoms, self.cutoff)
        zi, zj = atoms.numbers[i], atoms.numbers[j]
        lo, hi = np.minimum(zi, zj), np.maximum(zi, zj)
        e = np.zeros_like(d)
        de = np.zeros_like(d)
        for (z1, z2), table in self.tables.items():
            m = (lo == z1) & (hi == z2)
            if np.any(m):
                e[m], de[m] = table(d[m])
        return i, j, d, D, e, de

    def to_dict(self) -> dict:
        """``{"type": "tabulated_pair", "source": path or None, "tables": [...]}``.

        Each table is ``{"z": [Z1, Z2], "r_A": [...], "energy_eV": [...]}``.

        The tables are kept in full so that a model file never needs the
        original file.
        """
        return {"type": self.type, "source": self.source,
                "tables": [{"z": [p[0], p[1]], "r_A": t.r.tolist(), "energy_eV": t.e.tolist()}
                           for p, t in sorted(self.tables.items())]}

    def describe(self) -> str:
        """E.g. ``tabulated pair baseline from core.txt: Si-Si (40 points, 0.5-3 A)``."""
        src = f" from {self.source}" if self.source else ""
        return f"tabulated pair baseline{src}: " + ", ".join(
            f"{_pair_name(p)} ({len(t.r)} points, {t.r[0]:.4g}-{t.r[-1]:.4g} A)"
            for p, t in sorted(self.tables.items()))


def _table_problem(r: np.ndarray, e: np.ndarray) -> str:
    """Why (r, e) is not a usable table ('' when it is)."""
    if len(r) < 3:
        return f"{len(r)} points, need at least 3"
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(e))):
        return "numbers must be finite"
    if r[0] < 0:
        return f"distance {r[0]} is negative"
    if np.any(np.diff(r) <= 0):
        return "distances must increase strictly"
    if abs(e[-1]) > TABLE_ZERO_TOL_EV:
        return f"energy at the last distance r={r[-1]} is {e[-1]} eV, not 0"
    return ""


# --------------------------------------------------------------------------- #
# any ASE calculator
# --------------------------------------------------------------------------- #

def class_path(obj) -> str:
    """``"module:QualName"`` of an object's class (or of a class)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


class CalculatorBaseline(Baseline):
    """Δ-learning on an ASE calculator: its energy, forces and stress are the baseline.

    The frame is copied before the calculator is attached, so the frame's own
    calculator (holding reference labels) is left alone. Per-atom energies
    come from ``get_potential_energies`` when the calculator provides them;
    otherwise the total is spread evenly over the atoms and the result says
    so (``local_energy_spread``).

    Parameters
    ----------
    calculator : ase.calculators.calculator.Calculator
        The calculator instance.
    import_path : str, optional
        ``"module:Class"`` to record in the model file (default: the class
        path of ``calculator``).
    kwargs : dict, optional
        The keyword arguments it was made with (JSON), recorded so that the
        user can be told how to rebuild it; None when unknown.
    """

    type: ClassVar[str] = "calculator"

    def __init__(self, calculator, import_path: Optional[str] = None, kwargs: Optional[dict] = None):
        if calculator is None or isinstance(calculator, type):
            raise InputError(f"calculator baseline: expected a calculator instance, got {calculator!r} "
                             "(call the class: e.g. EMT(), not EMT)", param="baseline")
        if not hasattr(calculator, "get_potential_energy"):
            raise InputError(f"calculator baseline: {type(calculator).__name__} is not an ASE calculator "
                             "(no get_potential_energy)", param="baseline")
        self.calculator = calculator
        self.import_path = import_path if import_path is not None else class_path(calculator)
        if kwargs is not None:
            try:
                kwargs = json.loads(json.dumps(kwargs))
            except (TypeError, ValueError) as exc:
                raise InputError(f"calculator baseline {self.import_path}: kwargs are not plain JSON ({exc})",
                                 param="baseline") from None
            if not isinstance(kwargs, dict):
                raise InputError(f"calculator baseline {self.import_path}: kwargs must be a JSON object",
                                 param="baseline")
        self.kwargs = kwargs

    #: Most atoms whose results :meth:`cached` keeps (about 32 bytes each: 64 MB).
    CACHE_MAX_ATOMS: ClassVar[int] = 2_000_000

    @contextlib.contextmanager
    def cached(self):
        """Within this block, each distinct frame is calculated once, with forces and virial.

        A fit meets every frame two to four times (the energies e0 is fitted
        to, the design rows, held-out calibration frames, the hygiene
        pass): with an expensive reference calculator (DFTB, xTB) that
        repeats its cost. Frames are told apart as ASE's calculators do
        (numbers, positions, cell, pbc, initial charges and magnetic
        moments), so a changed frame is calculated again. Results are kept
        read-only and dropped when the block ends; a copy of the baseline
        sent to another process starts with none.
        """
        outer = getattr(self, "_cache", None), getattr(self, "_cached_atoms", 0)
        self._cache, self._cached_atoms = {}, 0
        try:
            yield self
        finally:
            self._cache, self._cached_atoms = outer

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_cache", None)
        state.pop("_cached_atoms", None)
        return state

    @staticmethod
    def _fingerprint(atoms: Atoms) -> bytes:
        h = hashlib.blake2b(digest_size=20)
        for arr in (atoms.numbers, atoms.positions, np.asarray(atoms.cell), atoms.pbc,
                    atoms.get_initial_charges(), atoms.get_initial_magnetic_moments()):
            a = np.ascontiguousarray(arr)
            h.update(str((a.dtype, a.shape)).encode())
            h.update(a.tobytes())
        return h.digest()

    def evaluate(self, atoms: Atoms, *, forces: bool = True, virial: bool = True) -> BaselineResult:
        """The calculator's energy, forces and stress × volume (see :meth:`Baseline.evaluate`)."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            return self._calculate(atoms, forces=forces, virial=virial)
        key = self._fingerprint(atoms)
        hit = cache.get(key)
        if hit is None:
            # everything at once: the later passes ask for forces and virial
            hit = self._calculate(atoms, forces=True, virial=True)
            for arr in (hit.local_energy_eV, hit.forces_eV_per_A, hit.virial_eV):
                if arr is not None:
                    arr.setflags(write=False)
            if self._cached_atoms + len(atoms) <= self.CACHE_MAX_ATOMS:
                cache[key] = hit
                self._cached_atoms += len(atoms)
        return BaselineResult(hit.energy_eV, hit.local_energy_eV, hit.forces_eV_per_A if forces else None,
                              hit.virial_eV if virial else None, local_energy_spread=hit.local_energy_spread)

    def _calculate(self, atoms: Atoms, *, forces: bool, virial: bool) -> BaselineResult:
        a = atoms.copy()
        a.calc = self.calculator
        n = len(a)
        energy = float(a.get_potential_energy())
        local, spread = None, False
        try:
            local = np.asarray(a.get_potential_energies(), dtype=float)
            if local.shape != (n,):
                local = None
        except Exception:  # calculators signal "not implemented" in many ways
            local = None
        if local is None:
            local, spread = np.full(n, energy / n if n else 0.0), True
        else:
            # some calculators' per-atom energies differ from the total by a
            # constant (e.g. reference shifts): keep the sum equal to the total.
            local = local + (energy - local.sum()) / max(n, 1)
        f = np.array(a.get_forces(), dtype=float) if forces else None
        w = None
        if virial and is_periodic(a):
            s = np.asarray(a.get_stress(voigt=True), dtype=float)
            xx, yy, zz, yz, xz, xy = s
            w = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]) * a.get_volume()
        return BaselineResult(energy, local, f, w, local_energy_spread=spread)

    def to_dict(self) -> dict:
        """``{"type": "calculator", "import_path": "module:Class", "kwargs": {...} or None}``."""
        return {"type": self.type, "import_path": self.import_path, "kwargs": self.kwargs}

    def describe(self) -> str:
        """E.g. ``calculator baseline ase.calculators.emt:EMT, kwargs {}``."""
        kw = "not recorded" if self.kwargs is None else json.dumps(self.kwargs, sort_keys=True)
        return f"calculator baseline {self.import_path}, kwargs {kw}"


def calculator_class(spec: str, kwargs_json: Optional[str] = None, *, flag: str = "--baseline"):
    """``(class, kwargs)`` from ``"module:Class"`` and a JSON object of keyword arguments.

    The one place that turns a user's calculator spec into a class (for
    ``--baseline`` and for ``gapfit learn --reference``); errors name ``flag``
    and the spec.
    """
    import importlib

    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise InputError(f"{flag} {spec!r}: expected MODULE:CLASS, e.g. ase.calculators.emt:EMT", param="baseline")
    try:
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
    except ValueError as exc:
        raise InputError(f"{flag}-kwargs for {spec}: not valid JSON ({exc})", param="baseline") from None
    if not isinstance(kwargs, dict):
        raise InputError(f"{flag}-kwargs for {spec}: expected a JSON object, e.g. '{{\"rc\": 5.0}}'",
                         param="baseline")
    mod_name, cls_name = spec.split(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InputError(f"{flag} {spec}: cannot import module {mod_name!r} ({exc})", param="baseline") from None
    obj = module
    for part in cls_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InputError(f"{flag} {spec}: module {mod_name!r} has no {cls_name!r}", param="baseline")
    return obj, kwargs


def import_calculator(spec: str, kwargs_json: Optional[str] = None) -> CalculatorBaseline:
    """Import ``"module:Class"``, instantiate it with JSON keyword arguments, wrap it.

    Used for the command line's ``--baseline module:Class --baseline-kwargs
    JSON``; loading a model never imports anything.

    Parameters
    ----------
    spec : str
        ``"module:Class"``, e.g. ``"ase.calculators.emt:EMT"``.
    kwargs_json : str, optional
        JSON object of keyword arguments (None or "" for none).
    """
    obj, kwargs = calculator_class(spec, kwargs_json)
    try:
        calc = obj(**kwargs)
    except Exception as exc:  # whatever the constructor raises, say which spec and kwargs
        raise InputError(f"--baseline {spec} with kwargs {json.dumps(kwargs)}: constructor failed "
                         f"({type(exc).__name__}: {exc})", param="baseline") from None
    if not hasattr(calc, "get_potential_energy"):
        raise InputError(f"--baseline {spec}: {type(calc).__name__} is not an ASE calculator (no get_potential_energy)",
                         param="baseline")
    return CalculatorBaseline(calc, import_path=spec, kwargs=kwargs)


def _same_class(recorded_path: str, calc) -> bool:
    """Whether ``calc``'s class is the one at ``recorded_path``, *without importing anything*.

    The recorded path may name a re-export (``pkg:Calc`` for ``pkg._impl.Calc``):
    that is resolved only through modules already imported.
    """
    if class_path(calc) == recorded_path:
        return True
    mod_name, _, cls_name = recorded_path.partition(":")
    obj = sys.modules.get(mod_name)
    for part in cls_name.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    return obj is type(calc)


def _how_to_pass(path: str, kwargs: Optional[dict]) -> str:
    cls = path.rpartition(":")[2] or path
    if kwargs is None:
        return (f"pass it: gapfit.load(path, baseline={cls}(...)) in Python, or --baseline {path} "
                "--baseline-kwargs JSON on the command line (its kwargs were not recorded)")
    kw = json.dumps(kwargs, sort_keys=True)
    return (f"pass it: gapfit.load(path, baseline={cls}(**{kw})) in Python, or --baseline {path} "
            f"--baseline-kwargs '{kw}' on the command line")


def _calculator_from_dict(d: dict, calculator, check_path: bool) -> CalculatorBaseline:
    path = d.get("import_path")
    kwargs = d.get("kwargs")
    if not isinstance(path, str) or ":" not in path:
        raise ModelFormatError(f"calculator baseline: import_path {path!r} is not 'module:Class'")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ModelFormatError(f"calculator baseline {path}: kwargs {kwargs!r} is not a JSON object")
    if calculator is None:
        raise InputError(f"the model's baseline is the ASE calculator {path} with kwargs "
                         f"{'not recorded' if kwargs is None else json.dumps(kwargs, sort_keys=True)}; "
                         f"a saved model never imports code, so {_how_to_pass(path, kwargs)}", param="baseline")
    given_kwargs = None
    if isinstance(calculator, CalculatorBaseline):
        given_kwargs = calculator.kwargs
        calculator = calculator.calculator
    if isinstance(calculator, type):
        raise InputError(f"baseline calculator: got the class {calculator.__name__}, expected an instance; "
                         f"{_how_to_pass(path, kwargs)}", param="baseline")
    if check_path:
        if not _same_class(path, calculator):
            raise InputError(f"baseline calculator: the model was fitted with {path} but a {class_path(calculator)} "
                             f"was given; {_how_to_pass(path, kwargs)} (or check_path=False to use it anyway)",
                             param="baseline")
        if (given_kwargs is not None and kwargs is not None
                and json.dumps(given_kwargs, sort_keys=True) != json.dumps(kwargs, sort_keys=True)):
            raise InputError(f"baseline calculator {path}: the model was fitted with kwargs "
                             f"{json.dumps(kwargs, sort_keys=True)} but {json.dumps(given_kwargs, sort_keys=True)} "
                             "were given (check_path=False to use them anyway)", param="baseline")
        return CalculatorBaseline(calculator, import_path=path, kwargs=kwargs if kwargs is not None else given_kwargs)
    # check skipped: record what is actually used from now on
    same = _same_class(path, calculator)
    return CalculatorBaseline(calculator, import_path=path if same else class_path(calculator),
                              kwargs=given_kwargs if given_kwargs is not None else (kwargs if same else None))


# --------------------------------------------------------------------------- #
# sums, loading, residual labels
# --------------------------------------------------------------------------- #

class SumBaseline(Baseline):
    """Sum of baselines (e.g. E0 + ZBL); results add term by term.

    Parameters
    ----------
    parts : list of Baseline
        The terms (at least one).
    """

    type: ClassVar[str] = "sum"

    def __init__(self, parts: Sequence[Baseline]):
        parts = list(parts)
        if not parts or not all(isinstance(p, Baseline) for p in parts):
            raise InputError("sum baseline: expected a non-empty list of baselines", param="baseline")
        self.parts: List[Baseline] = parts

    def evaluate(self, atoms: Atoms, *, forces: bool = True, virial: bool = True) -> BaselineResult:
        """Sum of the parts' results (see :meth:`Baseline.evaluate`)."""
        results = [p.evaluate(atoms, forces=forces, virial=virial) for p in self.parts]
        f = sum(r.forces_eV_per_A for r in results) if forces else None
        w = None
        if virial and is_periodic(atoms):
            w = sum(r.virial_eV for r in results)
        return BaselineResult(float(sum(r.energy_eV for r in results)),
                              sum(r.local_energy_eV for r in results), f, w,
                              local_energy_spread=any(r.local_energy_spread for r in results),
                              charges_e=_charges_of(results))

    def evaluate_atoms(self, atoms: Atoms) -> BaselineResult:
        """Sum of the parts' :meth:`Baseline.evaluate_atoms` (each part's own per-atom virials)."""
        results = [p.evaluate_atoms(atoms) for p in self.parts]
        w = sum(r.virial_eV for r in results) if is_periodic(atoms) else None
        return BaselineResult(float(sum(r.energy_eV for r in results)),
                              sum(r.local_energy_eV for r in results), sum(r.forces_eV_per_A for r in results), w,
                              local_energy_spread=any(r.local_energy_spread for r in results),
                              atom_virial_eV=sum(r.atom_virial_eV for r in results),
                              atom_virial_split=any(r.atom_virial_split for r in results),
                              charges_e=_charges_of(results))

    def to_dict(self) -> dict:
        """``{"type": "sum", "parts": [part.to_dict(), ...]}``."""
        return {"type": self.type, "parts": [p.to_dict() for p in self.parts]}

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """The parts' arrays, each name prefixed ``part{k}_``."""
        return {f"part{k}_{name}": a for k, p in enumerate(self.parts) for name, a in p.to_arrays().items()}

    def describe(self) -> str:
        """The parts' descriptions joined by `` + ``."""
        return " + ".join(p.describe() for p in self.parts)


def _charges_of(results: Sequence[BaselineResult]) -> Optional[np.ndarray]:
    """The charges of the one part that computes them (at most one part equilibrates charges)."""
    found = [r.charges_e for r in results if r.charges_e is not None]
    return found[0] if found else None


def baseline_from_dict(d: dict, calculator=None, *, check_path: bool = True,
                       arrays: Optional[Mapping[str, np.ndarray]] = None,
                       builders: Optional[Mapping[str, Callable]] = None) -> Baseline:
    """Rebuild a baseline from :meth:`Baseline.to_dict`, importing nothing.

    E0, ZBL, Coulomb, tabulated and sum baselines are rebuilt from the JSON alone. A
    calculator entry needs the caller's calculator: a saved model never
    imports code.

    Parameters
    ----------
    d : dict
        The JSON description.
    calculator : ASE calculator, CalculatorBaseline or list of them, optional
        The calculator of a ``"calculator"`` entry (a list: one per
        calculator entry, in order of appearance). Required when there is
        such an entry; an :class:`InputError` says which class and kwargs
        were recorded and how to pass them.
    check_path : bool
        Refuse a calculator whose class is not the recorded ``import_path``
        (checked against already-imported modules only), or whose recorded
        kwargs differ from the given CalculatorBaseline's. ``False`` skips
        these checks; the result then records what was given.
    arrays : {name: ndarray}, optional
        The arrays of :meth:`Baseline.to_arrays` (a sum's parts prefixed ``part{k}_``).
    builders : {type: callable(description, arrays) -> Baseline}, optional
        Baseline types defined above this module (``"qeq"``: :meth:`gapfit.qeq.QEqBaseline.from_dict`).

    Raises
    ------
    InputError
        Calculator missing or not the recorded one.
    ModelFormatError
        ``d`` is not a baseline description.
    """
    calcs = list(calculator) if isinstance(calculator, (list, tuple)) else [calculator]
    counter = [0]

    builders = dict(builders or {})

    def build(node, where, arrs):
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise ModelFormatError(f"baseline {where}: expected an object with a 'type', got {node!r:.80}")
        kind = node["type"]
        try:
            if kind == "e0":
                return E0Baseline({int(k): v for k, v in node["e0"].items()})
            if kind == "zbl":
                radii = {tuple(int(z) for z in e["z"]): (e["r_inner_A"], e["r_outer_A"]) for e in node["radii"]}
                sources = {tuple(int(z) for z in e["z"]): e.get("source", "") for e in node["radii"]}
                return ZBLBaseline(radii, sources)
            if kind == "coulomb":
                return CoulombBaseline.from_dict(node)
            if kind == "tabulated_pair":
                tables = {tuple(int(z) for z in e["z"]): (e["r_A"], e["energy_eV"]) for e in node["tables"]}
                return TabulatedPairBaseline(tables, source=node.get("source"))
            if kind in builders:
                return builders[kind](node, arrs)
            if kind == "sum":
                parts = node["parts"]
                if not isinstance(parts, list):
                    raise TypeError(f"parts is {type(parts).__name__}, not a list")
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise ModelFormatError(f"baseline {where} ({kind}): {exc}") from None
            raise ModelFormatError(f"baseline {where} ({kind}): malformed ({type(exc).__name__}: {exc})") from None
        if kind == "sum":
            # built outside the try above: a calculator part's InputError must reach the caller as is
            return SumBaseline([build(p, f"{where}.parts[{k}]",
                                      {n[len(f"part{k}_"):]: a for n, a in arrs.items() if n.startswith(f"part{k}_")})
                                for k, p in enumerate(node["parts"])])
        if kind == "calculator":
            k = counter[0]
            counter[0] += 1
            calc = calcs[k] if k < len(calcs) else None
            return _calculator_from_dict(node, calc, check_path)
        raise ModelFormatError(f"baseline {where}: unknown type {kind!r} (known: {', '.join(BASELINE_TYPES)})")

    return build(d, "root", dict(arrays or {}))


#: Baseline classes by their ``type``.
BASELINE_TYPES = {c.type: c for c in (E0Baseline, ZBLBaseline, CoulombBaseline, TabulatedPairBaseline,
                                      CalculatorBaseline, SumBaseline)}


def _voigt_from_3x3(m: np.ndarray) -> np.ndarray:
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])


def subtract(result: BaselineResult, energy: Optional[float] = None, forces: Optional[np.ndarray] = None,
             stress: Optional[np.ndarray] = None, *, volume: Optional[float] = None):
    """Residual labels ``label - baseline`` for the fit.

    Parameters
    ----------
    result : BaselineResult
        The baseline on the frame (with forces / virial when those labels are given).
    energy : float, optional
        Reference total energy (eV).
    forces : array (n, 3), optional
        Reference forces (eV/Å).
    stress : array (6,), optional
        Reference stress (eV/Å³, ASE sign, Voigt xx yy zz yz xz xy).
    volume : float, optional
        Cell volume (Å³); required with ``stress``.

    Returns
    -------
    tuple (energy, forces, stress)
        Residuals, None where the label was None.
    """
    e = None if energy is None else float(energy) - result.energy_eV
    f = None
    if forces is not None:
        if result.forces_eV_per_A is None:
            raise ValueError("subtract: forces given but the baseline result has none (evaluate with forces=True)")
        f = np.asarray(forces, dtype=float) - result.forces_eV_per_A
    s = None
    if stress is not None:
        if result.virial_eV is None or volume is None:
            raise ValueError("subtract: stress given but the baseline result has no virial or no volume was given "
                             "(evaluate a periodic frame with virial=True and pass volume)")
        s = np.asarray(stress, dtype=float) - _voigt_from_3x3(result.virial_eV) / float(volume)
    return e, f, s


def residual_labels(baseline: Baseline, atoms: Atoms, labels):
    """:class:`gapfit.data.Labels` of ``atoms`` minus the baseline (only what the labels hold is computed).

    The one place residual labels are made (fits, the incremental learner).
    A stress label of a frame that is not periodic in 3D has no virial to
    subtract and is passed on as it is.
    """
    from dataclasses import replace

    want_f = labels.forces_eV_per_A is not None
    want_w = labels.stress_eV_per_A3 is not None and is_periodic(atoms)
    res = baseline.evaluate(atoms, forces=want_f, virial=want_w)
    e, f, s = subtract(res, labels.energy_eV, labels.forces_eV_per_A, labels.stress_eV_per_A3 if want_w else None,
                       volume=atoms.get_volume() if want_w else None)
    return replace(labels, energy_eV=e, forces_eV_per_A=f,
                   stress_eV_per_A3=s if want_w else labels.stress_eV_per_A3)


__all__ = ["BaselineResult", "Baseline", "E0Baseline", "ZBLBaseline", "CoulombBaseline", "TabulatedPairBaseline",
           "CalculatorBaseline", "SumBaseline", "import_calculator", "baseline_from_dict", "subtract",
           "residual_labels", "zbl_energy", "smooth_switch", "is_periodic", "class_path", "BASELINE_TYPES"]
