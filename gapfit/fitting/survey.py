"""The first pass of a fit: check every frame and keep a few numbers per frame, not the frames.

:func:`survey` reads a frame source once (one frame at a time) and checks
each frame and its labels as the fit will use them, so bad input fails
before any descriptor is computed, naming the file, frame and field. It
keeps what the fit needs to plan and to fix the baseline without the
frames: atom counts, composition, total energies, which labels are
present, config types, noise levels and the shortest contact per species
pair (for the core repulsion's radii). That is O(frames) numbers: a
million-atom data set costs a few MB here.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from ..baselines import CHARGES_FROM_FRAMES, CoulombBaseline, ZBLBaseline, is_periodic
from ..data import FramesFingerprint, LabelReader, check_structure, files_of, is_isolated_atom, where_of
from ..errors import InputError
from ..noise import NoiseModel
from ..params import check_species_settings
from .plan import settings_of
from .recipe import make_terms

log = logging.getLogger("gapfit")


@dataclass
class Survey:
    """Per-frame facts of a training set, in global frame order (see the module docstring)."""

    where: List[str] = field(default_factory=list)
    n_atoms: List[int] = field(default_factory=list)
    energy_eV: List[float] = field(default_factory=list)  # nan where absent
    has_forces: List[bool] = field(default_factory=list)
    has_stress: List[bool] = field(default_factory=list)
    periodic: List[bool] = field(default_factory=list)  # periodic in 3D with a full cell
    any_pbc: List[bool] = field(default_factory=list)
    isolated: List[bool] = field(default_factory=list)
    config_type: List[str] = field(default_factory=list)
    #: (energy eV/atom, forces eV/Å, virial eV/atom) as set, before any optimised noise scale
    sigma: List[Tuple[float, float, float]] = field(default_factory=list)
    composition: List[Dict[int, int]] = field(default_factory=list)
    #: total charge of each frame (e): its info's ``charge``, 0 when absent
    charge: List[float] = field(default_factory=list)
    contacts: Dict[Tuple[int, int], Tuple[float, str]] = field(default_factory=dict)
    fingerprint: FramesFingerprint = field(default_factory=FramesFingerprint)

    def __len__(self) -> int:
        return len(self.where)

    @property
    def species(self) -> List[int]:
        return sorted({z for c in self.composition for z in c})

    def has_energy(self, k: int) -> bool:
        return bool(np.isfinite(self.energy_eV[k]))

    @property
    def n_energies(self) -> int:
        """Frames with a total energy."""
        return sum(self.has_energy(k) for k in range(len(self)))

    def noise_groups(self, noise: NoiseModel) -> List[str]:
        """Sorted names of the noise groups the labels fall into (the likelihood's order)."""
        keys = set()
        for k in range(len(self)):
            for kind, present in (("energy", self.has_energy(k)), ("forces", self.has_forces[k]),
                                  ("virial", self.has_stress[k])):
                if present:
                    keys.add(noise.group(kind, self.config_type[k]))
        return sorted(keys)

    def missing_labels(self) -> List[str]:
        """Sentences on the labels some frames lack while others have them (empty when the set is uniform).

        Isolated-atom frames need energies only and are not counted; stress is
        counted among periodic frames, the only ones that can carry it.
        """
        rows = [k for k in range(len(self)) if not self.isolated[k]]
        out = []
        for name, has, among in (("energy", self.has_energy, rows),
                                 ("forces", lambda k: self.has_forces[k], rows),
                                 ("stress", lambda k: self.has_stress[k], [k for k in rows if self.periodic[k]])):
            lacking = [k for k in among if not has(k)]
            if lacking and len(lacking) < len(among):
                shown = "; ".join(self.where[k] for k in lacking[:3]) + ("; ..." if len(lacking) > 3 else "")
                other = {"energy": "forces and stress", "forces": "energy and stress",
                         "stress": "energy and forces"}[name]
                out.append(f"{len(lacking)} of {len(among)} frames lack {name}: fitted on their {other} alone "
                           f"({shown})")
        return out

    def n_rows(self, k: int) -> int:
        """Rows of frame k in the training system."""
        return int(self.has_energy(k)) + 3 * self.n_atoms[k] * bool(self.has_forces[k]) \
            + 6 * bool(self.has_stress[k] and self.periodic[k])


def survey(source, reader: LabelReader, noise: NoiseModel, *, contacts: bool, progress: bool = False,
           charges_from_frames: bool = False) -> Survey:
    """Check every frame of ``source`` as the fit will read it (``reader``, ``noise``); see :class:`Survey`.

    ``charges_from_frames``: the Coulomb baseline reads each frame's
    ``initial_charges``: a frame without them fails here, before any pass.

    ``contacts``: also find the shortest distance per species pair (the core
    repulsion's radii come from it).
    """
    from tqdm.auto import tqdm

    out = Survey()
    frame_charges = CoulombBaseline(CHARGES_FROM_FRAMES) if charges_from_frames else None
    for k, atoms in enumerate(tqdm(source.read(0, len(source)), total=len(source), desc="checking frames",
                                   unit="frame", disable=not progress, leave=False, delay=1.0)):
        where = where_of(atoms, k)
        check_structure(atoms, where)
        lb = reader.read(atoms, where)
        if lb.energy_eV is None and lb.forces_eV_per_A is None and lb.stress_eV_per_A3 is None:
            raise InputError(f"{where}: frame has none of the fields {reader.fields()}; label it, remove it or "
                             "name the keys its labels are stored under (--energy-key, --forces-key, --stress-key)")
        sig = noise.sigmas(atoms, lb)
        out.where.append(where)
        out.n_atoms.append(len(atoms))
        out.energy_eV.append(np.nan if lb.energy_eV is None else float(lb.energy_eV))
        out.has_forces.append(lb.forces_eV_per_A is not None)
        out.has_stress.append(lb.stress_eV_per_A3 is not None)
        out.periodic.append(is_periodic(atoms))
        out.any_pbc.append(bool(np.any(atoms.pbc)))
        out.isolated.append(is_isolated_atom(atoms, lb))
        out.config_type.append(lb.config_type)
        out.sigma.append((sig["energy"], sig["forces"], sig["virial"]))
        zs, n = np.unique(atoms.numbers, return_counts=True)
        out.composition.append({int(z): int(c) for z, c in zip(zs, n)})
        out.charge.append(_total_charge(atoms, where))
        if frame_charges is not None:
            frame_charges.charges_of(atoms)
        out.fingerprint.add(atoms, lb)
        if contacts:
            ZBLBaseline.shortest_contacts([atoms], found=out.contacts, first_index=k)
    return out


def _total_charge(atoms, where: str) -> float:
    """The frame's total charge in e (``charge`` in its info; 0 when absent)."""
    value = atoms.info.get("charge", 0.0)
    try:
        q = float(np.asarray(value, dtype=float).reshape(()))
    except (TypeError, ValueError):
        q = float("nan")
    if not np.isfinite(q):
        raise InputError(f"{where}: field 'charge' (the frame's total charge, e) must be a number, got {value!r}")
    return q


def checked_survey(params: Mapping[str, Any], source) -> Survey:
    """The survey of ``source`` with the settings' checks that need the data; logs what the labels hold.

    ``params``: the estimator's parameters (already checked by themselves).
    Raises :class:`gapfit.errors.InputError` naming the setting, or the
    file, frame and field, at fault.
    """
    settings = settings_of(params)
    if len(source) == 0:
        raise InputError("no training frames given")
    terms = make_terms(params, molecular=False)  # term settings fail now, not after reading everything
    info = survey(source, LabelReader.of(settings), NoiseModel.of(settings),
                  contacts=bool(settings.core_repulsion) and settings.core_radii == "data", progress=settings.progress,
                  charges_from_frames=getattr(settings, "charges", None) == CHARGES_FROM_FRAMES)
    _check_energies_present(settings.energy_key, info)
    check_species_settings(dict(params), info.species, [t.to_dict() for t in terms])
    unused = sorted(set(settings.config_type_sigma or {}) - set(info.config_type))
    if unused:
        log.warning("config_type_sigma names config types that no frame has: %s", unused)
    if all(info.isolated):
        raise InputError("only isolated-atom frames given; add frames of condensed configurations")
    log.info("labels: %d energies, %d force sets, %d stresses (%d of %d frames periodic)",
             info.n_energies, sum(info.has_forces),
             sum(h and p for h, p in zip(info.has_stress, info.periodic)), sum(info.periodic), len(info))
    for line in info.missing_labels():
        log.warning("%s", line)
    return info


def _check_energies_present(energy_key, info: Survey) -> None:
    """A fit needs total energies: refuse a data set without any, naming the key looked for."""
    if info.n_energies:
        return
    files = files_of(info.where)
    if energy_key:
        raise InputError(f"{files}: none of the {len(info)} frames has field '{energy_key}' "
                         "(energy_key, --energy-key); a fit needs total energies: name the key they are "
                         "stored under, or leave it unset to use the calculator's 'energy'")
    raise InputError(f"{files}: none of the {len(info)} frames has field 'energy'; a fit needs total "
                     "energies (use --energy-key NAME if they are stored under another name)")


def data_summary(params: Mapping[str, Any], source) -> dict:
    """What :meth:`gapfit.GAP.check_data` reports: counts of frames, atoms and labels, species, config types."""
    from ase.data import chemical_symbols
    info = checked_survey(params, source)
    return {"n_frames": len(info), "n_atoms": int(sum(info.n_atoms)),
            "species": [chemical_symbols[z] for z in info.species],
            "n_energies": info.n_energies,
            "n_forces": int(sum(info.has_forces)),
            "n_stresses": int(sum(info.has_stress)),
            "config_types": dict(Counter(info.config_type))}
