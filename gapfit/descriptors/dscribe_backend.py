"""SOAP power spectrum from dscribe, with sparse position and strain gradients.

dscribe's own periodic derivatives sum every periodic image onto its owner
atom, which loses the per-image vectors a virial needs, and they return a
dense ``(n_centres, n_atoms, 3, D)`` array. This backend therefore never asks
dscribe for periodic derivatives. For each chunk of a few centres it builds an
explicit *non-periodic* cluster: the chunk's centres first, then every atom or
periodic image within dscribe's neighbour radius of one of those centres. It
then calls ``SOAP(periodic=False).derivatives(cluster, centers=..., attach=True)``
and

* folds the rows of periodic images back onto their owner atom, which gives
  ``d q_i / d r_j`` for the pairs ``(i, j)`` with ``j`` in range of ``i``
  (self term included), and
* contracts the same rows with the cluster positions,
  ``d q_i / d eps_ab = sum_k (r_k - r_i)[a] d q_i / d r_k[b]``, which gives the
  strain derivative for ``r -> r (1 + eps)`` (row vectors). The sum over all
  ``d q_i / d r_k`` is zero (translation invariance), so measuring positions
  from the centre changes nothing but the rounding error.

Memory per call is bounded by the chunk size, never by the frame size.

Modes (``SoapSettings.dscribe_mode``)
-------------------------------------
``"smooth"`` (the default)
    dscribe's polynomial weighting
    ``w(r) = (1 + 2 (r/r0)^3 - 3 (r/r0)^2)^2`` with ``r0 = cutoff``, which goes
    to zero with zero slope at ``cutoff``: the descriptor is smooth (C1) in the
    atomic positions and the neighbour radius is ``cutoff`` itself. dscribe
    offers only *numerical* derivatives (central differences in C++) with
    weighting, so this mode is slow (of order 10-20 ms per atom with
    gradients at ``n_max = l_max = 8``). Note that the weighting also damps
    the middle of the sphere (about 60 times at 3.8 Å for ``cutoff = 5``).
``"analytic"``
    No weighting and dscribe's analytic derivatives: fast (about 4 ms per
    atom with gradients at ``n_max = l_max = 8``), but **not smooth**.
    dscribe keeps neighbours out to
    ``cutoff + atom_sigma * sqrt(-2 ln 1e-3)`` (6.858 Å for 5 Å and 0.5 Å)
    and drops them abruptly beyond, so the descriptor jumps when an atom
    crosses that radius and MD will not conserve energy.

``SoapSettings.cutoff_transition_width`` is **not used** by this backend:
dscribe has no cosine transition region; in ``"smooth"`` mode the whole
sphere is weighted by the polynomial above.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from ase import Atoms
from ase.geometry.cell import complete_cell
from scipy.spatial import cKDTree

from ..errors import InputError
from .base import FrameDescriptors, SoapSettings, check_centres, normalise

__all__ = ["DscribeSOAP"]

# Neighbours exactly at the radius carry no weight; the margin only makes sure
# that rounding in the neighbour search never drops an atom dscribe counts.
_RADIUS_MARGIN = 1e-8


class DscribeSOAP:
    """SOAP descriptors and their gradients computed with dscribe.

    Parameters
    ----------
    settings : SoapSettings
        Hyperparameters; ``cutoff``, ``n_max``, ``l_max``, ``atom_sigma`` and
        ``dscribe_mode`` are used (``cutoff_transition_width`` is not).
    species : sequence of int
        Atomic numbers of every element that will ever be seen. The feature
        layout depends on this list, so keep it fixed for a model.
    chunk_size : int, default=8
        Number of centres per dscribe call. Memory per call grows with
        ``chunk_size * cluster_size * D``.

    Attributes
    ----------
    settings : SoapSettings
    species : list of int
        Sorted atomic numbers.
    n_features : int
        Length ``D`` of one atom's power spectrum.
    radius : float
        Distance in Å beyond which a neighbour does not contribute.
    """

    def __init__(self, settings: SoapSettings, species: Sequence[int], *,
                 chunk_size: int = 8):
        from dscribe.descriptors import SOAP

        settings.validate()
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        species = sorted({int(z) for z in species})
        if not species:
            raise ValueError("species must name at least one atomic number")
        self.settings = settings
        self.species = species
        self.chunk_size = int(chunk_size)

        smooth = settings.dscribe_mode == "smooth"
        kwargs = dict(
            r_cut=float(settings.cutoff),
            n_max=int(settings.n_max),
            l_max=int(settings.l_max),
            sigma=float(settings.atom_sigma),
            rbf="gto",
            species=list(species),
            periodic=False,
            compression={"mode": "off", "species_weighting": None},
            sparse=False,
            dtype="float64",
        )
        if smooth:
            kwargs["weighting"] = {"function": "poly", "r0": float(settings.cutoff),
                                   "c": 1, "m": 2}
        try:
            self._soap = SOAP(**kwargs)
        except ValueError as exc:  # dscribe's checks of r_cut, n_max, l_max, sigma
            raise InputError(f"SOAP settings not accepted by dscribe: {' '.join(str(exc).split())}",
                             param="cutoff") from None
        self._method = "numerical" if smooth else "analytical"
        if smooth:
            self.radius = float(settings.cutoff)
        else:
            self.radius = float(settings.cutoff) + float(self._soap.get_cutoff_padding())
        self.n_features = int(self._soap.get_number_of_features())

    def __repr__(self) -> str:
        return (f"DscribeSOAP(settings={self.settings!r}, species={self.species!r}, "
                f"chunk_size={self.chunk_size})")

    # ------------------------------------------------------------------ API
    def compute(self, frames: List[Atoms], *, gradients: bool = False,
                centres: Optional[Sequence[np.ndarray]] = None) -> List[FrameDescriptors]:
        """Normalised SOAP descriptors of each frame.

        Parameters
        ----------
        frames : list of ase.Atoms
            Structures; a frame is treated as periodic along the directions
            where ``pbc`` is True. Strain gradients are computed only when
            all three are True.
        gradients : bool, default=False
            Also compute position gradients (sparse, per centre-neighbour
            pair, periodic images folded onto their owner, self term
            included) and, for fully periodic frames, strain gradients.
        centres : list of ndarray or None
            One sorted array of distinct atom indices per frame: only these
            atoms' environments are computed (the neighbour search still
            covers the frame; clusters are built around the centres only),
            one row per centre (:attr:`FrameDescriptors.centres`). None: all atoms.

        Returns
        -------
        list of FrameDescriptors
            One per frame, already passed through :func:`.base.normalise`.
        """
        if isinstance(frames, Atoms):
            raise TypeError("compute expects a list of ase.Atoms, got a single Atoms")
        centres = check_centres(centres, len(frames))
        if centres is None:
            return [normalise(self._compute_frame(atoms, gradients)) for atoms in frames]
        return [normalise(self._compute_frame(atoms, gradients, c)) for atoms, c in zip(frames, centres)]

    # ------------------------------------------------------------ internals
    def _compute_frame(self, atoms: Atoms, gradients: bool, only: Optional[np.ndarray] = None) -> FrameDescriptors:
        """Raw (not normalised) descriptors of one frame (of the atoms ``only`` when given)."""
        numbers = np.asarray(atoms.get_atomic_numbers(), dtype=np.int64)
        unknown = sorted(set(numbers.tolist()) - set(self.species))
        if unknown:
            raise ValueError(
                f"frame contains atomic numbers {unknown} that are not in species "
                f"{self.species}")
        n_atoms = len(numbers)
        if n_atoms == 0:
            raise ValueError("frame has no atoms")
        positions = np.asarray(atoms.get_positions(), dtype=np.float64)
        pbc = np.asarray(atoms.get_pbc(), dtype=bool)
        cell = np.asarray(atoms.get_cell(), dtype=np.float64)
        if pbc.any():
            if abs(np.linalg.det(cell)) < 1e-12:
                raise ValueError("frame has periodic boundaries but a degenerate cell")
        cell_c = complete_cell(cell)
        with_strain = bool(gradients and pbc.all())

        # All (centre, neighbour, image shift) triples within the radius,
        # sorted by centre, then by distance.
        pi, pj, ps, pd = _neighbour_pairs(positions, cell_c, pbc, self.radius + _RADIUS_MARGIN, only)
        starts = np.searchsorted(pi, np.arange(n_atoms + 1))
        # rows of the result: every atom, or the atoms ``only`` (row[i] of atom i)
        computed = np.arange(n_atoms, dtype=np.int64) if only is None else only
        row = np.full(n_atoms, -1, dtype=np.int64)
        row[computed] = np.arange(len(computed))

        D = self.n_features
        values = np.empty((len(computed), D), dtype=np.float64)
        strain = np.empty((len(computed), 3, 3, D), dtype=np.float64) if with_strain else None
        if gradients:
            # Stored pairs: every owner j with an image in range of i, plus
            # i itself, sorted by (i, j). Preallocated, filled per centre.
            pair_keys = np.unique(np.concatenate(
                [computed * (n_atoms + 1),
                 pi.astype(np.int64) * n_atoms + pj]))
            pair_centre, pair_neighbour = np.divmod(pair_keys, n_atoms)
            ptr = np.searchsorted(pair_centre, np.arange(n_atoms + 1))
            pair_gradients = np.empty((len(pair_keys), 3, D), dtype=np.float64)

        for members, shifts in self._chunks(n_atoms, pj, ps, starts, only):
            nc = len(members)
            # Cluster keys (owner, shift): centres first, then neighbours.
            keys = [np.column_stack([members, shifts])]
            n_pairs = []
            for c in range(nc):
                lo, hi = starts[members[c]], starts[members[c] + 1]
                k = np.column_stack([pj[lo:hi], ps[lo:hi] + shifts[c]])
                keys.append(k)
                n_pairs.append(len(k))
            keys = np.concatenate(keys)
            uniq, first, inv = np.unique(keys, axis=0, return_index=True,
                                         return_inverse=True)
            inv = inv.ravel()
            # Put the centres at cluster positions 0..nc-1, in chunk order.
            rank = np.empty(len(uniq), dtype=np.int64)
            centre_uid = inv[:nc]
            rest = np.setdiff1d(np.arange(len(uniq)), centre_uid, assume_unique=True)
            rest = rest[np.argsort(first[rest], kind="stable")]
            rank[centre_uid] = np.arange(nc)
            rank[rest] = np.arange(nc, len(uniq))
            cluster_keys = np.empty_like(uniq)
            cluster_keys[rank] = uniq
            idx = rank[inv]  # cluster index of every row of ``keys``
            owner = cluster_keys[:, 0]
            cpos = positions[owner] + cluster_keys[:, 1:] @ cell_c
            cluster = Atoms(numbers=numbers[owner], positions=cpos, pbc=False)
            centres = list(range(nc))

            if not gradients:
                values[row[members]] = self._soap.create(cluster, centers=centres)
                continue

            deriv, q = self._soap.derivatives(
                cluster, centers=centres, attach=True, method=self._method,
                return_descriptor=True)
            values[row[members]] = q
            offset = nc
            for c in range(nc):
                i = members[c]
                npair = n_pairs[c]
                ks = np.concatenate([[c], idx[offset:offset + npair]])
                offset += npair
                # Group the in-range cluster atoms by owner, then fold.
                own = owner[ks]
                srt = np.argsort(own, kind="stable")
                ks, own = ks[srt], own[srt]
                g = deriv[c, ks]  # (n_in_range, 3, D)
                bounds = np.flatnonzero(np.diff(own, prepend=-1))
                lo, hi = ptr[i], ptr[i + 1]
                if not np.array_equal(own[bounds], pair_neighbour[lo:hi]):
                    raise RuntimeError("internal error: cluster and pair list disagree")
                pair_gradients[lo:hi] = np.add.reduceat(g, bounds, axis=0)
                if with_strain:
                    rel = cpos[ks] - cpos[c]
                    strain[row[i]] = np.einsum("ka,kbd->abd", rel, g)

        desc = FrameDescriptors(numbers=numbers if only is None else numbers[only], values=values)
        if only is not None:
            desc.centres = only
        if gradients:
            desc.pair_centre = pair_centre if only is None else row[pair_centre]
            desc.pair_neighbour = pair_neighbour
            desc.pair_gradients = pair_gradients
            desc.strain_gradients = strain
        return desc

    def _chunks(self, n_atoms, pj, ps, starts, only=None):
        """Group centres into spatially compact chunks.

        Each chunk starts from the lowest-numbered unassigned atom and adds
        its nearest unassigned neighbours, each at the image closest to the
        seed, so that the chunk's cluster stays small. Yields
        ``(members, shifts)``: frame indices and integer lattice shifts.
        With ``only``, only those atoms are assigned to chunks.
        """
        assigned = np.zeros(n_atoms, dtype=bool)
        if only is not None:
            assigned[:] = True
            assigned[only] = False
        for seed in range(n_atoms):
            if assigned[seed]:
                continue
            members, shifts = [seed], [np.zeros(3, dtype=np.int64)]
            assigned[seed] = True
            for p in range(starts[seed], starts[seed + 1]):  # sorted by distance
                if len(members) >= self.chunk_size:
                    break
                j = pj[p]
                if not assigned[j]:
                    assigned[j] = True
                    members.append(int(j))
                    shifts.append(ps[p])
            yield np.asarray(members, dtype=np.int64), np.asarray(shifts, dtype=np.int64)


def _neighbour_pairs(positions, cell, pbc, radius, centres=None):
    """All pairs within ``radius``, periodic images included.

    Parameters
    ----------
    positions : ndarray of shape (n_atoms, 3)
        Cartesian positions (need not be wrapped into the cell).
    cell : ndarray of shape (3, 3)
        Complete (non-singular) cell, lattice vectors as rows.
    pbc : ndarray of shape (3,), bool
    radius : float
    centres : ndarray of int or None
        Only pairs whose centre ``i`` is one of these (None: all atoms).

    Returns
    -------
    i, j : ndarray of shape (n_pairs,), int
        Centre and neighbour; ``(i, i)`` with zero shift is left out.
    shift : ndarray of shape (n_pairs, 3), int
        Lattice shift ``S`` with ``r_j + S @ cell - r_i`` the pair vector.
    dist : ndarray of shape (n_pairs,)
        Pair distance. Pairs are sorted by ``i``, then by ``dist``.

    Unlike ``ase.neighborlist.primitive_neighbor_list``, whose cost grows
    steeply when the radius exceeds the cell size, this builds the images of
    the atoms that can be within ``radius`` of the cell once and queries a
    k-d tree.
    """
    from ase.cell import Cell
    recip = Cell(cell).reciprocal()  # rows b_a with b_a · c_b = δ_ab (no 2π)
    frac = positions @ recip.T
    off = np.where(pbc, np.floor(frac), 0.0).astype(np.int64)
    wrapped = positions - off @ cell
    fw = frac - off
    # |Δf_a| <= |Δr| |b_a| with b_a the reciprocal vectors (columns of inv(cell)).
    reach = np.where(pbc, radius * np.linalg.norm(recip, axis=1), 0.0)
    nmax = np.where(pbc, np.floor(reach).astype(np.int64) + 1, 0)
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in nmax], indexing="ij")
    T = np.stack(grids, axis=-1).reshape(-1, 3)
    img_frac = fw[None, :, :] + T[:, None, :]
    tol = 1e-8
    keep = np.all(~pbc | ((img_frac >= -reach - tol) & (img_frac <= 1 + reach + tol)), axis=-1)
    t_idx, owner = np.nonzero(keep)
    img_pos = wrapped[owner] + T[t_idx] @ cell
    query = wrapped if centres is None else wrapped[centres]
    res = cKDTree(query).sparse_distance_matrix(cKDTree(img_pos), radius,
                                                output_type="ndarray")
    i = res["i"].astype(np.int64)
    if centres is not None:
        i = np.asarray(centres, dtype=np.int64)[i]
    k = res["j"].astype(np.int64)
    j = owner[k]
    shift = T[t_idx[k]] - off[j] + off[i]
    not_self = (i != j) | np.any(shift != 0, axis=1)
    i, j, shift = i[not_self], j[not_self], shift[not_self]
    dist = np.linalg.norm(positions[j] + shift @ cell - positions[i], axis=1)
    order = np.lexsort((dist, i))
    return i[order], j[order], shift[order], dist[order]
