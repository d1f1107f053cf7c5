"""Reading frames and their reference labels, with checks that name the culprit.

A *frame* is an :class:`ase.Atoms`. Its labels (total energy in eV, forces in
eV/Å, stress in eV/Å³ with ASE's sign and Voigt order xx yy zz yz xz xy) come
from its calculator results (what ``ase.io.read`` gives for extended XYZ) or
from named ``info``/``arrays`` keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import numpy as np
from ase import Atoms

from .errors import InputError

#: Per-frame ``info`` keys that override the noise levels, as in gap_fit.
SIGMA_INFO_KEYS = {"energy": "energy_sigma", "forces": "force_sigma", "virial": "virial_sigma"}


@dataclass
class Labels:
    """Reference values of one frame; any of them may be missing (None)."""

    energy_eV: Optional[float]
    forces_eV_per_A: Optional[np.ndarray]
    stress_eV_per_A3: Optional[np.ndarray]
    config_type: str
    where: str


def where_of(atoms: Atoms, index: int) -> str:
    """Human-readable location of a frame: ``file, frame N`` when known."""
    src = atoms.info.get("gapfit_source")
    return src if src else f"frame {index}"


def read_frames(paths: Sequence[str], index: str = ":") -> List[Atoms]:
    """Read every frame of every file (any format ase.io knows).

    Each frame gets ``info['gapfit_source'] = 'FILE, frame N'`` so that later
    errors can point at it.
    """
    import ase.io

    frames: List[Atoms] = []
    for path in paths:
        try:
            got = ase.io.read(path, index)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except Exception as exc:  # ase raises many types for unreadable files
            raise InputError(f"{path}: cannot read it as atomic structures ({type(exc).__name__}: {exc}); "
                             "check the file format (ase.io must be able to read it)") from None
        if isinstance(got, Atoms):
            got = [got]
        if len(got) == 0:
            raise InputError(f"{path}: contains no frames")
        for k, atoms in enumerate(got):
            atoms.info["gapfit_source"] = f"{path}, frame {k}"
        frames.extend(got)
    return frames


def check_structure(atoms: Atoms, where: str) -> None:
    """Raise :class:`InputError` for frames no model can evaluate."""
    if len(atoms) == 0:
        raise InputError(f"{where}: frame has no atoms")
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        bad = int(np.flatnonzero(~np.isfinite(pos).all(axis=1))[0])
        raise InputError(f"{where}: field 'positions' of atom {bad} is not finite (NaN or inf)")
    pbc = atoms.get_pbc()
    if np.any(pbc):
        if not np.all(pbc):
            raise InputError(f"{where}: partly periodic frames (pbc={pbc.tolist()}) are not supported; "
                             "use pbc=True in all three directions or none")
        vol = abs(float(np.linalg.det(atoms.cell[:])))
        if not np.isfinite(vol) or vol < 1e-6:
            raise InputError(f"{where}: field 'cell' has zero volume ({vol:.3g} Å³) but the frame is "
                             "periodic; give a full 3x3 cell or set pbc=False")


def get_labels(atoms: Atoms, where: str, *, energy_key: Optional[str] = None,
               forces_key: Optional[str] = None, stress_key: Optional[str] = None) -> Labels:
    """Reference labels of one frame.

    Named keys are looked up in ``atoms.info`` (energy, stress) and
    ``atoms.arrays`` (forces) first, then among the calculator results under
    the same name; without a key, the calculator's ``energy``/``forces``/
    ``stress`` are used. Missing labels are ``None``; malformed ones raise.
    """
    results = dict(atoms.calc.results) if atoms.calc is not None else {}

    def lookup(key, default, store):
        name = key or default
        if name in store:
            return store[name], name
        if name in results:
            return results[name], name
        if key is not None and key not in ("energy", "forces", "stress"):
            return None, name
        return results.get(default), default

    e, ename = lookup(energy_key, "energy", atoms.info)
    f, fname = lookup(forces_key, "forces", atoms.arrays)
    s, sname = lookup(stress_key, "stress", atoms.info)
    energy = None
    if e is not None:
        try:
            energy = float(np.asarray(e, dtype=float).reshape(()))
        except (TypeError, ValueError):
            raise InputError(f"{where}: field '{ename}' is not a single number ({e!r})") from None
        if not np.isfinite(energy):
            raise InputError(f"{where}: field '{ename}' is not finite ({energy})")
    forces = None
    if f is not None:
        forces = np.asarray(f, dtype=float)
        if forces.shape != (len(atoms), 3):
            raise InputError(f"{where}: field '{fname}' has shape {forces.shape}, expected ({len(atoms)}, 3)")
        if not np.all(np.isfinite(forces)):
            raise InputError(f"{where}: field '{fname}' contains NaN or inf")
    stress = None
    if s is not None:
        st = np.asarray(s, dtype=float)
        if st.shape == (3, 3):
            st = st[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        if st.shape != (6,):
            raise InputError(f"{where}: field '{sname}' has shape {st.shape}, expected 6 Voigt components or 3x3")
        if not np.all(np.isfinite(st)):
            raise InputError(f"{where}: field '{sname}' contains NaN or inf")
        if np.all(atoms.pbc):
            stress = st
    ct = str(atoms.info.get("config_type", "default"))
    return Labels(energy, forces, stress, ct, where)


def is_isolated_atom(atoms: Atoms, labels: Labels) -> bool:
    """gap_fit's convention: config_type 'isolated_atom', or one atom, not periodic."""
    if labels.config_type == "isolated_atom":
        return True
    return len(atoms) == 1 and not np.any(atoms.pbc)


def species_of(frames: Iterable[Atoms]) -> List[int]:
    """Sorted atomic numbers present in the frames."""
    zs: set = set()
    for a in frames:
        zs.update(int(z) for z in np.unique(a.numbers))
    return sorted(zs)
