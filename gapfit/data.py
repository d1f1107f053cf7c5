"""Reading frames and their reference labels, with checks that name the culprit.

A *frame* is an :class:`ase.Atoms`. Its labels (total energy in eV, forces in
eV/Å, stress in eV/Å³ with ASE's sign and Voigt order xx yy zz yz xz xy) come
from its calculator results (what ``ase.io.read`` gives for extended XYZ) or
from named ``info``/``arrays`` keys.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms

from .errors import InputError

#: Per-frame ``info`` keys that override the noise levels, as in gap_fit.
SIGMA_INFO_KEYS = {"energy": "energy_sigma", "forces": "force_sigma", "virial": "virial_sigma"}

#: Atoms closer than this (Å), periodic images included, make a frame an input
#: error: no reference calculation gives such a frame, and SOAP gradients of
#: coinciding atoms are undefined (NaN forces).
MIN_DISTANCE_A = 0.1
#: Largest accepted absolute coordinate and cell-vector length (Å). Beyond it a
#: unit or parsing error is far likelier than a real structure.
MAX_COORDINATE_A = 1e5
#: Largest accepted absolute label per atom: energy (eV/atom), force component
#: (eV/Å), stress component (eV/Å³). Beyond it a unit or parsing error is likelier.
MAX_LABEL = 1e8


@dataclass
class Labels:
    """Reference values of one frame; any of them may be missing (None)."""

    energy_eV: Optional[float]
    forces_eV_per_A: Optional[np.ndarray]
    stress_eV_per_A3: Optional[np.ndarray]
    config_type: str
    where: str


def label_fields(energy_key: Optional[str] = None, forces_key: Optional[str] = None,
                 stress_key: Optional[str] = None) -> str:
    """The label fields :func:`get_labels` reads with these keys, quoted for a message: ``'energy', ...``."""
    return ", ".join(f"'{key or default}'" for key, default in (
        (energy_key, "energy"), (forces_key, "forces"), (stress_key, "stress")))


def files_of(wheres: Sequence[str]) -> str:
    """The files of frame locations (``FILE, frame N``), each once, in order, for a message."""
    return ", ".join(dict.fromkeys(w.rsplit(", frame ", 1)[0] for w in wheres))


def where_of(atoms: Atoms, index: int) -> str:
    """Human-readable location of a frame: ``file, frame N`` when known."""
    src = atoms.info.get("gapfit_source")
    return src if src else f"frame {index}"


def check_format(fmt: Optional[str]) -> None:
    """Raise :class:`InputError` unless ``fmt`` is None or a format name ase.io can read."""
    if fmt is None:
        return
    from ase.io.formats import ioformats
    if fmt not in ioformats or not ioformats[fmt].can_read:
        import difflib
        close = difflib.get_close_matches(fmt, [k for k, v in ioformats.items() if v.can_read], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; extended XYZ is 'extxyz'"
        raise InputError(f"--format {fmt}: not a format ase.io can read{hint}")


def read_frames(paths: Sequence[str], index: str = ":", format: Optional[str] = None) -> List[Atoms]:
    """Read every frame of every file (any format ase.io knows; ``format``: its ase.io name, else from the name).

    Each frame gets ``info['gapfit_source'] = 'FILE, frame N'`` so that later
    errors can point at it.
    """
    import ase.io

    check_format(format)
    frames: List[Atoms] = []
    for path in paths:
        try:
            got = ase.io.read(path, index, format=format)
        except Exception as exc:  # ase raises many types for unreadable files
            raise read_error(path, exc, format) from None
        if isinstance(got, Atoms):
            got = [got]
        if len(got) == 0:
            raise InputError(f"{path}: contains no frames")
        for k, atoms in enumerate(got):
            atoms.info["gapfit_source"] = f"{path}, frame {k}"
        frames.extend(got)
    return frames


def read_error(path: str, exc: BaseException, format: Optional[str] = None) -> InputError:
    """The one-line error for a file ase.io could not read (``exc``: what it raised; ``format``: as given)."""
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{path}: no such file")
    if isinstance(exc, InputError):
        return exc
    if format is not None:
        return InputError(f"{path}: cannot read it as --format {format} ({type(exc).__name__}: {exc}); "
                          "check the file or the format name")
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats
    try:
        guessed = filetype(path)
    except (UnknownFileTypeError, OSError, ValueError):
        guessed = None
    if guessed not in ioformats:  # ase returns an unknown extension as it is
        guessed = None
    how = f"as '{guessed}', the format ase.io infers from its name or content" if guessed else \
        "because ase.io cannot tell its format from its name or content"
    return InputError(f"{path}: cannot read it {how} ({type(exc).__name__}: {exc}); name the format with "
                      "--format NAME (e.g. --format extxyz for extended XYZ) or give the file its usual "
                      "extension (.xyz)")


def check_structure(atoms: Atoms, where: str) -> None:
    """Raise :class:`InputError` for frames no model can evaluate.

    Checks: at least one atom; real chemical species; finite coordinates no
    larger than :data:`MAX_COORDINATE_A`; a full, finite cell when periodic
    (all three directions or none); no two atoms (or an atom and a periodic
    image) closer than :data:`MIN_DISTANCE_A`.
    """
    if len(atoms) == 0:
        raise InputError(f"{where}: frame has no atoms")
    numbers = atoms.numbers
    bad_z = np.flatnonzero((numbers < 1) | (numbers > 118))
    if len(bad_z):
        k = int(bad_z[0])
        raise InputError(f"{where}: field 'numbers' of atom {k} is {int(numbers[k])}, not a chemical element "
                         "(dummy atoms 'X' cannot be fitted)")
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        bad = int(np.flatnonzero(~np.isfinite(pos).all(axis=1))[0])
        raise InputError(f"{where}: field 'positions' of atom {bad} is not finite (NaN or inf)")
    if np.abs(pos).max() > MAX_COORDINATE_A:
        bad = int(np.abs(pos).max(axis=1).argmax())
        raise InputError(f"{where}: field 'positions' of atom {bad} is {pos[bad].tolist()} Å, beyond "
                         f"{MAX_COORDINATE_A:g} Å; check the units (positions must be in Å)")
    pbc = atoms.get_pbc()
    if np.any(pbc):
        if not np.all(pbc):
            raise InputError(f"{where}: partly periodic frames (pbc={pbc.tolist()}) are not supported; "
                             "use pbc=True in all three directions or none")
        cell = atoms.cell[:]
        if not np.all(np.isfinite(cell)) or np.abs(cell).max() > MAX_COORDINATE_A:
            raise InputError(f"{where}: field 'cell' ({cell.tolist()}) is not finite or longer than "
                             f"{MAX_COORDINATE_A:g} Å; check the lattice and its units (Å)")
        vol = abs(float(np.linalg.det(cell)))
        if not np.isfinite(vol) or vol < 1e-6:
            raise InputError(f"{where}: field 'cell' has zero volume ({vol:.3g} Å³) but the frame is "
                             "periodic; give a full 3x3 cell or set pbc=False")
        # The thickness of the cell across each pair of lattice vectors: below
        # MIN_DISTANCE_A every atom sits on its own periodic images, and
        # neighbour searches would enumerate millions of images (a hang).
        heights = vol / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        if heights.min() < MIN_DISTANCE_A:
            k = int(heights.argmin())
            raise InputError(f"{where}: field 'cell' is {heights[k]:.3g} Å thick along lattice vector {k + 1} "
                             f"(normal to the other two), thinner than {MIN_DISTANCE_A} Å: the cell is nearly "
                             "flat; check the lattice")
    close = closest_pair(atoms, MIN_DISTANCE_A)
    if close is not None:
        i, j, d = close
        if i == j:
            raise InputError(f"{where}: atom {i} is {d:.3g} Å from its own periodic image (closer than "
                             f"{MIN_DISTANCE_A} Å); the field 'cell' is too small")
        raise InputError(f"{where}: atoms {i} and {j} are {d:.3g} Å apart, closer than {MIN_DISTANCE_A} Å "
                         "(the same atom twice?); remove one or fix field 'positions'")


def closest_pair(atoms: Atoms, limit_A: float) -> Optional[Tuple[int, int, float]]:
    """The closest pair ``(i, j, distance)`` with ``i <= j`` nearer than ``limit_A``, or None.

    Periodic images count (``i == j``: an atom and its own image). A k-d tree
    (with its own periodic box for orthorhombic cells) costs about a
    twentieth of ASE's neighbour list, which this check would otherwise add
    to every prediction; other cells use ASE's neighbour list.
    """
    from scipy.spatial import cKDTree

    if len(atoms) < 2 and not np.any(atoms.pbc):
        return None
    cell = atoms.cell[:]
    box = np.diag(cell).copy()
    if np.any(atoms.pbc) and not (np.count_nonzero(cell - np.diag(box)) == 0 and np.all(box > 2 * limit_A)):
        from ase.neighborlist import neighbor_list
        i, j, d = neighbor_list("ijd", atoms, limit_A)
    else:
        if np.any(atoms.pbc):
            pos = np.mod(atoms.positions, box)
            pos[pos >= box] = 0.0  # mod can round up to the box length itself
            tree = cKDTree(pos, boxsize=box)
        else:
            tree = cKDTree(atoms.positions)
        pairs = tree.query_pairs(limit_A, output_type="ndarray")
        if not len(pairs):
            return None
        i, j = pairs[:, 0], pairs[:, 1]
        delta = atoms.positions[j] - atoms.positions[i]
        if np.any(atoms.pbc):
            delta -= box * np.round(delta / box)  # minimum image in the orthorhombic box
        d = np.linalg.norm(delta, axis=1)
    keep = i <= j
    i, j, d = i[keep], j[keep], d[keep]
    if not len(d):
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k])


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
        if abs(energy) > MAX_LABEL * len(atoms):
            raise InputError(f"{where}: field '{ename}' is {energy:g} eV, beyond {MAX_LABEL:g} eV per atom; "
                             "check its units (eV)")
    forces = None
    if f is not None:
        forces = _as_float_array(f, where, fname)
        if forces.shape != (len(atoms), 3):
            raise InputError(f"{where}: field '{fname}' has shape {forces.shape}, expected ({len(atoms)}, 3)")
        if not np.all(np.isfinite(forces)):
            raise InputError(f"{where}: field '{fname}' contains NaN or inf")
        if np.abs(forces).max() > MAX_LABEL:
            raise InputError(f"{where}: field '{fname}' has a component of {np.abs(forces).max():g} eV/Å, "
                             f"beyond {MAX_LABEL:g}; check its units (eV/Å)")
    stress = None
    if s is not None:
        st = _as_float_array(s, where, sname)
        if st.shape == (3, 3):
            st = st[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        if st.shape != (6,):
            raise InputError(f"{where}: field '{sname}' has shape {st.shape}, expected 6 Voigt components or 3x3")
        if not np.all(np.isfinite(st)):
            raise InputError(f"{where}: field '{sname}' contains NaN or inf")
        if np.abs(st).max() > MAX_LABEL:
            raise InputError(f"{where}: field '{sname}' has a component of {np.abs(st).max():g} eV/Å³, "
                             f"beyond {MAX_LABEL:g}; check its units (eV/Å³)")
        if np.all(atoms.pbc):
            stress = st
    ct = str(atoms.info.get("config_type", "default"))
    return Labels(energy, forces, stress, ct, where)


@dataclass(frozen=True)
class LabelReader:
    """Where a data set keeps its labels: the one reader of labels for fits, evaluation and learning.

    ``energy_key``, ``forces_key``, ``stress_key``: names of the labels in
    ``info``/``arrays`` when they are not the calculator's (see
    :func:`get_labels`). Small and picklable: Dask workers receive it.
    """

    energy_key: Optional[str] = None
    forces_key: Optional[str] = None
    stress_key: Optional[str] = None

    @classmethod
    def of(cls, settings: Any) -> "LabelReader":
        """The reader of an object with ``energy_key``, ``forces_key`` and ``stress_key`` attributes (a GAP)."""
        return cls(getattr(settings, "energy_key", None), getattr(settings, "forces_key", None),
                   getattr(settings, "stress_key", None))

    def read(self, atoms: Atoms, where: str) -> Labels:
        """The labels of one frame (None where absent; malformed labels raise, naming ``where`` and the field)."""
        return get_labels(atoms, where, energy_key=self.energy_key, forces_key=self.forces_key,
                          stress_key=self.stress_key)

    def read_all(self, frames: Sequence[Atoms], wheres: Optional[Sequence[str]] = None,
                 check: bool = False) -> List[Labels]:
        """Labels of frames; ``check=True`` also checks each structure first (:func:`check_structure`)."""
        out = []
        for k, a in enumerate(frames):
            where = wheres[k] if wheres else where_of(a, k)
            if check:
                check_structure(a, where)
            out.append(self.read(a, where))
        return out

    def fields(self) -> str:
        """The label fields this reader looks for, quoted for a message."""
        return label_fields(self.energy_key, self.forces_key, self.stress_key)


def _as_float_array(value, where: str, field: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{where}: field '{field}' is not an array of numbers ({str(value)[:60]!r})") from None


def is_isolated_atom(atoms: Atoms, labels: Labels) -> bool:
    """gap_fit's convention: config_type 'isolated_atom', or one atom, not periodic."""
    if labels.config_type == "isolated_atom":
        return True
    return len(atoms) == 1 and not np.any(atoms.pbc)


class FramesFingerprint:
    """SHA-256 of a sequence of frames as a fit sees them: species, positions, cell, pbc and labels, in order.

    Recorded in the model at fit time so that tools that need the training
    frames themselves (``gapfit inspect``) can tell when they are handed
    other frames. Bitwise: the same file read again gives the same digest;
    any change of a coordinate, a label, the order or the count gives another.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.n_frames = 0

    def add(self, atoms: Atoms, labels: Labels) -> None:
        h = self._hash
        for arr in (atoms.numbers, atoms.positions, np.asarray(atoms.cell), atoms.pbc):
            a = np.ascontiguousarray(arr)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        for value in (labels.energy_eV, labels.forces_eV_per_A, labels.stress_eV_per_A3):
            a = np.ascontiguousarray(np.asarray(value, dtype=np.float64)) if value is not None else None
            h.update(b"-" if a is None else f"{a.shape}".encode() + a.tobytes())
        self.n_frames += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def group_by_atoms(indices: List[int], sizes: List[int], atoms_per_chunk: int) -> List[List[int]]:
    """Consecutive runs of ``indices`` (with ``sizes`` atoms each) holding about ``atoms_per_chunk`` atoms each."""
    out, chunk, n = [], [], 0
    for k, size in zip(indices, sizes):
        chunk.append(k)
        n += size
        if n >= atoms_per_chunk:
            out.append(chunk)
            chunk, n = [], 0
    if chunk:
        out.append(chunk)
    return out
