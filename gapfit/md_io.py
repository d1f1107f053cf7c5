"""Append-only outputs of long runs, flushed to disk as they are written."""
from __future__ import annotations

import io
import os
from typing import Sequence, Tuple

import ase.io
from ase import Atoms


class AppendingXYZ:
    """Extended XYZ file opened for appending; each frame is flushed and fsynced."""

    def __init__(self, path: str, append: bool = False):
        self.path = path
        self._fh = open(path, "a" if append else "w")

    def write(self, atoms: Atoms) -> None:
        buf = io.StringIO()
        # parallel=False: under MPI, ASE's write would broadcast from rank 0 to ranks that never call it
        # (the LAMMPS face writes on rank 0 only), and the ranks' collectives would no longer match
        ase.io.write(buf, atoms, format="extxyz", parallel=False)
        # one write call: a reader (or a kill) sees at most one incomplete frame, at the end
        self._fh.write(buf.getvalue())
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


class TextLog:
    """Whitespace-separated table with a commented header line."""

    def __init__(self, path: str, columns: Sequence[str], append: bool = False):
        exists = append and os.path.exists(path) and os.path.getsize(path) > 0
        self._fh = open(path, "a" if append else "w")
        if not exists:
            self._fh.write("# " + " ".join(columns) + "\n")
            self._fh.flush()

    def write(self, values) -> None:
        self._fh.write(" ".join(f"{v:.8g}" if isinstance(v, float) else str(v) for v in values) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def complete_xyz_frames(path: str) -> Tuple[int, int]:
    """``(frames, bytes)``: how many whole frames an (extended) XYZ file starts with, and their length.

    A frame is whole when its atom-count line, comment line and every atom
    line are there, each ended by a newline. What follows the last whole
    frame is a frame still being written (or cut off by a kill).
    """
    with open(path, "rb") as fh:
        data = fh.read()
    n_frames = pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        try:
            n_atoms = int(data[pos:end])
        except ValueError:
            break
        p = end + 1
        for _ in range(n_atoms + 1):  # comment line, then the atoms
            e = data.find(b"\n", p)
            if e < 0:
                return n_frames, pos
            p = e + 1
        n_frames += 1
        pos = p
    return n_frames, pos
