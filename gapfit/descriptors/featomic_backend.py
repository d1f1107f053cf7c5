"""featomic backend: SOAP power spectrum with GAP's smooth (shifted-cosine) cutoff.

This is the default backend: it is smooth at the cutoff (so MD conserves
energy), gives analytic position and strain gradients stored per neighbour
pair, and is the fastest option measured here (see docs/descriptors.md).

Storage trick: for a pair of *equal* neighbour species the power spectrum is
symmetric in (n_1, n_2), so only n_1 <= n_2 is computed and the off-diagonal
entries are scaled by sqrt(2). Every dot product, and hence every kernel
value, is identical to the full spectrum's, with about 45 % fewer features.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence

import numpy as np
from ase import Atoms

from .._loops import scale_inplace, scatter_scaled
from ..errors import InputError
from .base import FrameDescriptors, SoapSettings, check_centres, normalise

# featomic parallelises over systems; a batch bounds the memory of one call.
_ATOMS_PER_CALL = 3000


class FeatomicSOAP:
    """SOAP power spectrum computed by featomic.

    Parameters
    ----------
    settings : SoapSettings
        Hyperparameters (cutoff and widths in Å).
    species : sequence of int
        Every atomic number the model knows; fixes the feature layout so that
        frames with fewer species still give vectors of the same length.
    """

    def __init__(self, settings: SoapSettings, species: Sequence[int]):
        from featomic import SoapPowerSpectrum
        from metatensor import Labels, TensorBlock, TensorMap

        self.settings = settings
        self.species = sorted(int(z) for z in set(species))
        s = settings
        try:
            self._calc = SoapPowerSpectrum(
                cutoff={"radius": float(s.cutoff),
                        "smoothing": {"type": "ShiftedCosine", "width": float(s.cutoff_transition_width)}},
                density={"type": "Gaussian", "width": float(s.atom_sigma)},
                basis={"type": "TensorProduct", "max_angular": int(s.l_max),
                       "radial": {"type": "Gto", "max_radial": int(s.n_max) - 1}},
            )
            # featomic builds its radial integrals at the first compute and
            # fails for some (cutoff, atom_sigma, n_max): find out now, by name
            self._calc.compute([Atoms(numbers=[self.species[0]], positions=[[0.0, 0.0, 0.0]])])
        except Exception as exc:  # featomic.status.FeatomicError, ValueError: all about the settings
            raise InputError(
                f"SOAP settings cutoff {s.cutoff} Å, atom_sigma {s.atom_sigma} Å, n_max {s.n_max}, l_max "
                f"{s.l_max}: featomic cannot build its radial basis ({' '.join(str(exc).split())}); "
                "increase atom_sigma, or decrease cutoff or n_max", param="atom_sigma") from None
        pairs = [(a, b) for a in self.species for b in self.species if a <= b]
        keys = np.array([[c, a, b] for c in self.species for (a, b) in pairs], dtype=np.int32)
        self._keys = Labels(["center_type", "neighbor_1_type", "neighbor_2_type"], keys)
        self._pair_labels = Labels(["neighbor_1_type", "neighbor_2_type"],
                                   np.array(pairs, dtype=np.int32))
        nmax, lmax = int(s.n_max), int(s.l_max)
        full = np.array([[l, n1, n2] for l in range(lmax + 1)
                         for n1 in range(nmax) for n2 in range(nmax)], dtype=np.int32)
        half = full[full[:, 1] <= full[:, 2]]
        blocks = []
        for c, a, b in keys:
            props = half if a == b else full
            blocks.append(TensorBlock(
                values=np.zeros((0, len(props))),
                samples=Labels(["system", "atom"], np.zeros((0, 2), dtype=np.int32)),
                components=[], properties=Labels(["l", "n_1", "n_2"], props)))
        self._selection = TensorMap(self._keys, blocks)
        scale = []
        for a, b in pairs:
            props = half if a == b else full
            sc = np.ones(len(props))
            if a == b:
                sc[props[:, 1] != props[:, 2]] = np.sqrt(2.0)
            scale.append(sc)
        self._scale = np.concatenate(scale)
        self._pair_index = {pr: k for k, pr in enumerate(pairs)}
        self._offsets = np.concatenate([[0], np.cumsum([len(x) for x in scale])])
        self.n_features = len(self._scale)

    def compute(self, frames: Sequence[Atoms], *, gradients: bool = False, layout: str = "pairs",
                centres: Optional[Sequence[np.ndarray]] = None) -> List[FrameDescriptors]:
        """Normalised descriptors (and, if asked, gradients) for each frame.

        ``layout="pairs"``: position gradients as one (pairs, 3, D) array per
        frame (what design rows need). ``layout="blocks"``: featomic's own
        blocks, one per (centre, neighbour pair) species key, kept as
        computed in :attr:`FrameDescriptors.gradient_blocks`, for prediction:
        with several species, assembling the per-pair array costs as much
        as featomic itself, and the force contraction does not need it.

        ``centres`` (one sorted array of distinct atom indices per frame, or
        None for all atoms): featomic computes only these atoms'
        environments (its ``selected_samples``), with their gradients with
        respect to every neighbour and their strain gradients; the result
        holds one row per centre (:attr:`FrameDescriptors.centres`).
        """
        if layout not in ("pairs", "blocks"):
            raise ValueError(f"layout must be 'pairs' or 'blocks', got {layout!r}")
        centres = check_centres(centres, len(frames))
        out: List[FrameDescriptors] = []
        batch: list = []
        n_in_batch = 0
        for k, atoms in enumerate(frames):
            batch.append(k)
            n_in_batch += len(atoms) if centres is None else len(centres[k])
            if n_in_batch >= _ATOMS_PER_CALL:
                out.extend(self._compute_batch([frames[b] for b in batch], gradients, layout,
                                               None if centres is None else [centres[b] for b in batch]))
                batch, n_in_batch = [], 0
        if batch:
            out.extend(self._compute_batch([frames[b] for b in batch], gradients, layout,
                                           None if centres is None else [centres[b] for b in batch]))
        return out

    def _compute_batch(self, frames: Sequence[Atoms], gradients: bool, layout: str,
                       centres: Optional[List[np.ndarray]] = None) -> List[FrameDescriptors]:
        # Strain gradients only exist for fully periodic frames: compute the
        # two kinds separately and put the results back in order.
        periodic = [bool(np.all(a.pbc)) for a in frames]
        result: List[FrameDescriptors] = [None] * len(frames)  # type: ignore
        for want_periodic in (True, False):
            idx = [k for k, p in enumerate(periodic) if p == want_periodic]
            if not idx:
                continue
            grads = []
            if gradients:
                grads = ["positions", "strain"] if want_periodic else ["positions"]
            descs = self._run([frames[k] for k in idx], grads, layout,
                              None if centres is None else [centres[k] for k in idx])
            for k, d in zip(idx, descs):
                result[k] = normalise(d)
        return result

    def _run(self, frames: Sequence[Atoms], grads: list, layout: str = "pairs",
             centres: Optional[List[np.ndarray]] = None) -> List[FrameDescriptors]:
        unknown = set(int(z) for a in frames for z in a.numbers) - set(self.species)
        if unknown:
            raise ValueError(f"species {sorted(unknown)} are not in this descriptor's species {self.species}")
        selected = None
        if centres is not None:
            from metatensor import Labels
            # only these (system, atom) samples are computed, in every block
            selected = Labels(["system", "atom"], np.array(
                [[s, i] for s, c in enumerate(centres) for i in c], dtype=np.int32).reshape(-1, 2))
        with warnings.catch_warnings():
            # featomic warns that it ignores the cell of a non-periodic frame: expected here.
            warnings.filterwarnings("ignore", message="periodic boundary conditions are disabled")
            tmap = self._calc.compute(list(frames), gradients=grads, selected_keys=self._keys,
                                      selected_properties=self._selection, selected_samples=selected)
        n_per = np.array([len(a) for a in frames], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(n_per)])
        n_tot = int(start[-1])
        # rows: one per atom, or one per centre (row_of maps a global atom number to its row)
        rstart, row_of = start, None
        if centres is not None:
            rstart = np.concatenate([[0], np.cumsum([len(c) for c in centres])]).astype(np.int64)
            row_of = np.full(n_tot, -1, dtype=np.int64)
            for s, c in enumerate(centres):
                row_of[start[s] + c] = rstart[s] + np.arange(len(c))
        n_rows = int(rstart[-1])
        D = self.n_features
        values = np.zeros((n_rows, D))
        strain = np.zeros((n_rows, 3, 3, D)) if "strain" in grads else None
        pair_parts = []  # (global centre row, global neighbour row, property slice, values)
        blocks_layout = layout == "blocks"
        for key, block in tmap.items():
            c, a, b = (int(v) for v in key.values)
            p = self._pair_index[(a, b)]
            sl = slice(self._offsets[p], self._offsets[p + 1])
            sc = self._scale[sl]
            smp = block.samples.values
            rows = start[smp[:, 0]] + smp[:, 1]
            if row_of is not None:
                rows = row_of[rows]
            values[rows, sl] = np.asarray(block.values) * sc
            if "positions" in grads:
                g = block.gradient("positions")
                gs = g.samples.values
                pair_parts.append((rows[gs[:, 0]], start[gs[:, 1]] + gs[:, 2], sl, g.values))
            if strain is not None:
                g = block.gradient("strain")
                strain[rows[g.samples.values[:, 0]], :, :, sl] = np.asarray(g.values) * sc
        pairs = None
        if pair_parts and blocks_layout:
            for k, (ci, nj, sl, gv) in enumerate(pair_parts):
                if np.any(np.diff(ci) < 0):  # featomic orders gradient samples by system; make sure
                    order = np.argsort(ci, kind="stable")
                    pair_parts[k] = (ci[order], nj[order], sl, np.asarray(gv)[order])
        elif pair_parts:
            codes = [ci * n_tot + nj for ci, nj, _, _ in pair_parts]
            if (len(pair_parts) == 1 and pair_parts[0][2].stop - pair_parts[0][2].start == D
                    and np.all(np.diff(codes[0]) > 0)):
                # one block (one species): featomic's order is already sorted
                uniq = codes[0]
                grad = np.array(pair_parts[0][3], dtype=np.float64, order="C")
                scale_inplace(grad.reshape(-1, grad.shape[-1]), self._scale[pair_parts[0][2]])
            else:
                uniq, inv = np.unique(np.concatenate(codes), return_inverse=True)
                grad = np.zeros((len(uniq), 3, D))
                pos = 0
                for ci, _, sl, gv in pair_parts:
                    scatter_scaled(grad, inv[pos:pos + len(ci)], sl.start,
                                   np.ascontiguousarray(gv, dtype=np.float64), self._scale[sl])
                    pos += len(ci)
            centre_row, nb_row = uniq // n_tot, uniq % n_tot
            frame_of_pair = np.searchsorted(rstart, centre_row, side="right") - 1
            bounds = np.searchsorted(frame_of_pair, np.arange(len(frames) + 1))
            pairs = (centre_row, nb_row, grad, bounds)

        out = []
        for s, atoms in enumerate(frames):
            lo = start[s]
            rlo, rhi = rstart[s], rstart[s + 1]  # the frame's rows: its atoms, or its centres
            numbers = np.asarray(atoms.numbers, dtype=np.int64)
            d = FrameDescriptors(numbers=numbers if centres is None else numbers[centres[s]],
                                 values=values[rlo:rhi])
            if centres is not None:
                d.centres = centres[s]
            if pair_parts and blocks_layout:
                d.gradient_blocks = []
                for ci, nj, sl, gv in pair_parts:
                    a, b = np.searchsorted(ci, [rlo, rhi])
                    if b > a:
                        d.gradient_blocks.append((ci[a:b] - rlo, nj[a:b] - lo, sl.start, self._scale[sl],
                                                  np.asarray(gv[a:b])))
            if pairs is not None:
                centre_row, nb_row, grad, bounds = pairs
                ps = slice(bounds[s], bounds[s + 1])
                d.pair_centre = centre_row[ps] - rlo
                d.pair_neighbour = nb_row[ps] - lo
                d.pair_gradients = grad[ps]
            if strain is not None:
                d.strain_gradients = strain[rlo:rhi]
            out.append(d)
        return out
