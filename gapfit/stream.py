"""Frames read lazily in chunks, and bounded uniform samples of streams, for fits larger than memory.

:class:`FrameSource` counts the frames of its files once (one pass that
keeps nothing) and then yields them in chunks of a given size, or only the
frames at given global indices, reading each file as a stream: at no time
are more than one chunk's frames held. :class:`Reservoir` keeps a uniform
random sample of fixed size of everything offered to it (Vitter's
algorithm R, seeded), so sparse points can be chosen from a bounded sample
whatever the data size.
"""
from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Sequence

import numpy as np
from ase import Atoms

from .errors import InputError


def _iread(path: str, index=":"):
    import ase.io

    from .data import read_error
    try:
        yield from ase.io.iread(path, index)
    except Exception as exc:  # ase raises many types for unreadable files
        raise read_error(path, exc) from None


class FrameSource:
    """The frames of ``paths`` (any ase.io format that can be read as a stream), read on demand.

    Global frame k is the k-th frame of the files taken in order; every frame
    yielded carries ``info['gapfit_source'] = 'FILE, frame N'`` as
    :func:`gapfit.data.read_frames` sets it.
    """

    def __init__(self, paths: Sequence[str]):
        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise InputError("no training files given")
        self.counts: List[int] = []
        for p in self.paths:
            n = sum(1 for _ in _iread(p))
            if n == 0:
                raise InputError(f"{p}: contains no frames")
            self.counts.append(n)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _frames(self) -> Iterator[Atoms]:
        for p in self.paths:
            for k, atoms in enumerate(_iread(p)):
                atoms.info["gapfit_source"] = f"{p}, frame {k}"
                yield atoms

    def chunks(self, chunk_frames: int, indices: Optional[Iterable[int]] = None) -> Iterator[List[Atoms]]:
        """Lists of at most ``chunk_frames`` frames, in file order; only those at ``indices`` when given."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
        wanted = None
        if indices is not None:
            wanted = np.unique(np.asarray(list(indices), dtype=int))
            if len(wanted) and (wanted[0] < 0 or wanted[-1] >= len(self)):
                raise IndexError(f"frame indices must lie in [0, {len(self)}), got {wanted[0]}..{wanted[-1]}")
        chunk: List[Atoms] = []
        pos = 0
        for k, atoms in enumerate(self._frames()):
            if wanted is not None:
                if pos >= len(wanted):
                    break
                if k != wanted[pos]:
                    continue
                pos += 1
            chunk.append(atoms)
            if len(chunk) == chunk_frames:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def take(self, indices: Iterable[int]) -> List[Atoms]:
        """The frames at the global ``indices``, in increasing index order."""
        return [a for c in self.chunks(1 << 30, indices) for a in c]


class Reservoir:
    """A uniform random sample of at most ``size`` rows of everything :meth:`add`-ed (seeded).

    After n rows have been offered, each of them is in the sample with
    probability size/n, independently of the order of chunks, and the memory
    is ``size`` rows whatever n is. The same rows offered in the same chunks
    with the same seed give the same sample.
    """

    def __init__(self, size: int, seed: int = 0):
        if size < 1:
            raise ValueError(f"a reservoir holds at least 1 row, got size={size}")
        self.size = int(size)
        self.rng = np.random.default_rng(seed)
        self.n_seen = 0
        self.rows: Optional[np.ndarray] = None
        #: the global position (order of arrival) of each kept row
        self.positions = np.zeros(0, dtype=np.int64)

    def add(self, rows: np.ndarray) -> None:
        """Offer a chunk of rows (n, ...)."""
        rows = np.asarray(rows)
        n = len(rows)
        if n == 0:
            return
        if self.rows is None:
            self.rows = np.empty((self.size,) + rows.shape[1:], dtype=rows.dtype)
            self.positions = np.zeros(self.size, dtype=np.int64)
        fill = min(n, max(0, self.size - self.n_seen))
        if fill:
            self.rows[self.n_seen:self.n_seen + fill] = rows[:fill]
            self.positions[self.n_seen:self.n_seen + fill] = self.n_seen + np.arange(fill)
        rest = np.arange(fill, n)
        if len(rest):
            # algorithm R: the i-th row (0-based overall) replaces slot j ~ U{0..i} when j < size
            i = self.n_seen + rest
            j = np.floor(self.rng.random(len(rest)) * (i + 1)).astype(np.int64)
            for r, slot, pos in zip(rest[j < self.size], j[j < self.size], i[j < self.size]):
                self.rows[slot] = rows[r]  # in arrival order: a later row overwrites an earlier one
                self.positions[slot] = pos
        self.n_seen += n

    def sample(self) -> np.ndarray:
        """The kept rows (min(size, rows offered), ...)."""
        if self.rows is None:
            return np.zeros((0,))
        return self.rows[:min(self.size, self.n_seen)]
