"""Append-only outputs of long runs, flushed to disk as they are written."""
from __future__ import annotations

import os
from typing import Sequence

import ase.io
from ase import Atoms


class AppendingXYZ:
    """Extended XYZ file opened for appending; each frame is flushed and fsynced."""

    def __init__(self, path: str, append: bool = False):
        self.path = path
        self._fh = open(path, "a" if append else "w")

    def write(self, atoms: Atoms) -> None:
        ase.io.write(self._fh, atoms, format="extxyz")
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
