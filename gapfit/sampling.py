"""Mergeable bounded samples: a uniform random sample of a stream of rows, split over any parts.

:class:`PrioritySample` keeps a uniform random sample of bounded size of
everything offered to it: each row carries a random priority drawn from the
seed and the row's *global* position (:func:`frame_priorities`), and the
sample is the rows of lowest priority. Because the priorities do not depend
on the order or the partition in which rows arrive, samples of disjoint
parts merge (:meth:`PrioritySample.merge`) into exactly the sample of the
whole, so workers can sample their chunks apart.

Kept apart from :mod:`gapfit.stream` (which reads frames) so that the terms,
which sample their sparse-point candidates, need nothing that reads files.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np


def frame_priorities(seed: int, frame_index: int, n: int) -> np.ndarray:
    """The sampling priorities of the n rows of global frame ``frame_index`` (uniform on [0, 1), seeded)."""
    return np.random.default_rng([int(seed), int(frame_index)]).random(n)


class PrioritySample:
    """The ``size`` rows of lowest priority among everything offered: a uniform sample, mergeable.

    With priorities independent and uniform (:func:`frame_priorities`),
    every row offered is kept with probability size/n after n rows, the
    memory is about two samples' worth whatever n is, and the samples of
    disjoint parts merge into exactly the sample of their union. Rows come
    back in the order of their ``order`` keys (global positions), so the
    sample does not depend on the order of arrival either.
    """

    def __init__(self, size: Optional[int]):
        if size is not None and size < 1:
            raise ValueError(f"a sample holds at least 1 row, got size={size}")
        self.size = None if size is None else int(size)
        self.n_seen = 0
        self._rows: List[np.ndarray] = []
        self._prio: List[np.ndarray] = []
        self._order: List[np.ndarray] = []
        self._n_held = 0

    def add(self, rows: np.ndarray, priorities: np.ndarray, order: np.ndarray) -> None:
        """Offer rows (n, ...) with their priorities (n,) and order keys (n,) or (n, k)."""
        if len(rows) == 0:
            return
        self.n_seen += len(rows)
        self._rows.append(np.asarray(rows))
        self._prio.append(np.asarray(priorities, dtype=float))
        self._order.append(np.asarray(order))
        self._n_held += len(rows)
        if self.size is not None and self._n_held >= 2 * self.size:
            self._compact()

    def _compact(self) -> None:
        if not self._rows:
            return
        rows, prio, order = (np.concatenate(x) for x in (self._rows, self._prio, self._order))
        if self.size is not None and len(prio) > self.size:
            keep = np.argpartition(prio, self.size - 1)[:self.size]
            rows, prio, order = rows[keep], prio[keep], order[keep]
        self._rows, self._prio, self._order = [rows], [prio], [order]
        self._n_held = len(prio)

    def merge(self, other: "PrioritySample") -> "PrioritySample":
        """Take in the sample of a disjoint part (in place; returns self)."""
        other._compact()
        if other._rows:
            seen = self.n_seen
            self.add(other._rows[0], other._prio[0], other._order[0])
            self.n_seen = seen + other.n_seen
        else:
            self.n_seen += other.n_seen
        return self

    def sample(self) -> np.ndarray:
        """The kept rows (min(size, rows offered), ...), in order-key order."""
        self._compact()
        if not self._rows:
            return np.zeros((0,))
        order = self._order[0]
        idx = np.argsort(order, kind="stable") if order.ndim == 1 else np.lexsort(order.T[::-1])
        return self._rows[0][idx]

    def __getstate__(self):
        self._compact()
        return self.__dict__
