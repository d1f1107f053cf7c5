"""Frames read lazily by index range, for fits larger than memory.

A *frame source* numbers the training frames globally (the frames of its
files taken in order) and yields any contiguous range of them, or the frames
at given indices, without holding more than those: :class:`FrameSource`
reads files as streams (ase.io.iread with an index slice, so a range deep in
a file costs a scan of its line counts, not a parse of what precedes it);
:class:`MemorySource` wraps frames already in memory (the Python API's
``fit(frames)``). Both pickle small (paths and counts, or only the frames of
a :meth:`part`), which is what the distributed fit sends to its workers.

The mergeable bounded samples (:class:`PrioritySample`,
:func:`frame_priorities`) live in :mod:`gapfit.sampling`; they are
importable from here too, as they were before.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np
from ase import Atoms

from .errors import InputError
from .sampling import PrioritySample, frame_priorities  # noqa: F401  (re-exported: old imports)


def _iread(path: str, index=":", name: Optional[str] = None, format: Optional[str] = None):
    import ase.io

    from .data import read_error
    try:
        yield from ase.io.iread(path, index, format=format)
    except Exception as exc:  # ase raises many types for unreadable files
        raise read_error(name or path, exc, format) from None


class FrameSource:
    """The frames of ``paths`` (any ase.io format that can be read as a stream), read on demand.

    Global frame k is the k-th frame of the files taken in order; every frame
    yielded carries ``info['gapfit_source'] = 'FILE, frame N'`` as
    :func:`gapfit.data.read_frames` sets it. Counting the frames (one pass
    that keeps nothing) happens once, at construction, unless ``counts`` are
    given (as when a source is sent to a worker).
    """

    def __init__(self, paths: Sequence[str], counts: Optional[Sequence[int]] = None, format: Optional[str] = None):
        from .data import check_format
        check_format(format)
        self.format = format  # ase.io's name for the files' format; None: from each file's name
        self.paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
        # read by absolute path (a worker may start in another folder); named as given in messages
        self._absolute = [os.path.abspath(p) for p in self.paths]
        if not self.paths:
            raise InputError("no training files given")
        if counts is None:
            counts = []
            for p in self.paths:
                n = sum(1 for _ in _iread(p, format=format))
                if n == 0:
                    raise InputError(f"{p}: contains no frames")
                counts.append(n)
        self.counts: List[int] = [int(c) for c in counts]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, lo: int = 0, hi: Optional[int] = None) -> Iterator[Atoms]:
        """Frames lo, lo+1, ..., hi-1 (global indices), one at a time."""
        hi = len(self) if hi is None else hi
        if not 0 <= lo <= hi <= len(self):
            raise IndexError(f"frame range {lo}:{hi} outside [0, {len(self)}]")
        for f, (p, absolute) in enumerate(zip(self.paths, self._absolute)):
            a, b = max(lo, self.starts[f]), min(hi, self.starts[f + 1])
            if a >= b:
                continue
            first = int(a - self.starts[f])
            for k, atoms in enumerate(_iread(absolute, slice(first, int(b - self.starts[f])), name=p,
                                                  format=self.format), start=first):
                atoms.info["gapfit_source"] = f"{p}, frame {k}"
                yield atoms

    def chunks(self, chunk_frames: int, indices: Optional[Sequence[int]] = None) -> Iterator[List[Atoms]]:
        """Lists of at most ``chunk_frames`` frames, in file order; only those at ``indices`` when given."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
        wanted = None
        if indices is not None:
            wanted = np.unique(np.asarray(list(indices), dtype=int))
            if len(wanted) and (wanted[0] < 0 or wanted[-1] >= len(self)):
                raise IndexError(f"frame indices must lie in [0, {len(self)}), got {wanted[0]}..{wanted[-1]}")
        if wanted is not None and len(wanted) == 0:
            return
        lo, hi = (0, len(self)) if wanted is None else (int(wanted[0]), int(wanted[-1]) + 1)
        want = None if wanted is None else set(wanted.tolist())
        chunk: List[Atoms] = []
        for k, atoms in enumerate(self.read(lo, hi), start=lo):
            if want is not None and k not in want:
                continue
            chunk.append(atoms)
            if len(chunk) == chunk_frames:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def take(self, indices: Sequence[int]) -> List[Atoms]:
        """The frames at the global ``indices``, in increasing index order."""
        return [a for c in self.chunks(1 << 30, indices) for a in c]

    def part(self, lo: int, hi: int) -> "FrameSource":
        """This source, to be read in [lo, hi) only (for a worker: paths and counts, no frames)."""
        return self

    def describe(self) -> str:
        return ", ".join(self.paths)


class MemorySource:
    """Frames already in memory, with :class:`FrameSource`'s interface."""

    def __init__(self, frames: Sequence[Atoms], offset: int = 0, total: Optional[int] = None):
        self.frames = list(frames)
        self.offset = int(offset)
        self.total = len(self.frames) + self.offset if total is None else int(total)

    def __len__(self) -> int:
        return self.total

    def read(self, lo: int = 0, hi: Optional[int] = None) -> Iterator[Atoms]:
        """Frames lo .. hi-1 (global indices)."""
        hi = len(self) if hi is None else hi
        if not (self.offset <= lo <= hi <= self.offset + len(self.frames)):
            raise IndexError(f"frame range {lo}:{hi} outside the frames held "
                             f"[{self.offset}, {self.offset + len(self.frames)}]")
        yield from self.frames[lo - self.offset:hi - self.offset]

    def take(self, indices: Sequence[int]) -> List[Atoms]:
        """The frames at the global ``indices``, in increasing index order."""
        wanted = sorted(set(int(i) for i in indices))
        if wanted and (wanted[0] < self.offset or wanted[-1] >= self.offset + len(self.frames)):
            raise IndexError(f"frame indices must lie in [{self.offset}, {self.offset + len(self.frames)}), "
                             f"got {wanted[0]}..{wanted[-1]}")
        return [self.frames[k - self.offset] for k in wanted]

    def part(self, lo: int, hi: int) -> "MemorySource":
        """The frames of [lo, hi) only, keeping their global numbers (what a worker is sent)."""
        return MemorySource(self.frames[lo - self.offset:hi - self.offset], offset=lo, total=self.total)

    def describe(self) -> str:
        return f"{len(self.frames)} frames in memory"


Source = Union[FrameSource, MemorySource]


def as_source(data) -> Source:
    """A source for ``data``: a source, a path or list of paths, or a sequence of Atoms."""
    if isinstance(data, (FrameSource, MemorySource)):
        return data
    if isinstance(data, Atoms):
        return MemorySource([data])
    if isinstance(data, (str, os.PathLike)):
        return FrameSource([data])
    data = list(data)
    if data and all(isinstance(d, (str, os.PathLike)) for d in data):
        return FrameSource(data)
    return MemorySource(data)
