"""Backend-independent container and settings for per-atom SOAP descriptors.

Every backend returns, per frame, the *raw* power spectrum ``q_i`` of each
atom, its gradients with respect to atomic positions (sparse: one entry per
centre-neighbour pair, periodic images folded onto their owner atom) and with
respect to cell strain. :func:`normalise` then turns these into the normalised
vectors ``q̂_i = q_i / |q_i|`` and their gradients, which is what the kernel
uses. Keeping normalisation here means both backends share one code path for
the chain rule.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

import numpy as np


@dataclass
class SoapSettings:
    """SOAP hyperparameters, named as gap_fit users know them.

    Parameters
    ----------
    cutoff : float, default=5.0
        Cutoff radius in Å.
    cutoff_transition_width : float, default=1.0
        Width in Å of the smooth region below ``cutoff`` where neighbour
        contributions go to zero (featomic's ShiftedCosine smoothing).
    n_max : int, default=8
        Number of radial basis functions.
    l_max : int, default=8
        Highest angular channel.
    atom_sigma : float, default=0.5
        Width in Å of the Gaussian placed on each neighbour.
    backend : {"featomic", "dscribe"}, default="featomic"
        Which library computes the power spectrum.
    dscribe_mode : {"smooth", "analytic"}, default="smooth"
        For the dscribe backend only. ``"smooth"`` uses dscribe's polynomial
        weighting, which goes to zero with zero slope at ``cutoff`` (numerical
        derivatives, slow). ``"analytic"`` uses dscribe's analytic derivatives
        without weighting: fast but *not smooth* (the Gaussian tails are cut
        at about ``cutoff + 3.7 atom_sigma``), so MD will not conserve energy.
    """

    cutoff: float = 5.0
    cutoff_transition_width: float = 1.0
    n_max: int = 8
    l_max: int = 8
    atom_sigma: float = 0.5
    backend: str = "featomic"
    dscribe_mode: str = "smooth"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the setting that is out of range."""
        if not self.cutoff > 0:
            raise ValueError(f"cutoff must be > 0 Å, got {self.cutoff}")
        if not 0 < self.cutoff_transition_width <= self.cutoff:
            raise ValueError(
                "cutoff_transition_width must be in (0, cutoff], got "
                f"{self.cutoff_transition_width}")
        if int(self.n_max) < 1 or int(self.l_max) < 0:
            raise ValueError(f"need n_max >= 1 and l_max >= 0, got {self.n_max}, {self.l_max}")
        if not self.atom_sigma > 0:
            raise ValueError(f"atom_sigma must be > 0 Å, got {self.atom_sigma}")
        if self.backend not in ("featomic", "dscribe"):
            raise ValueError(f"backend must be 'featomic' or 'dscribe', got {self.backend!r}")
        if self.dscribe_mode not in ("smooth", "analytic"):
            raise ValueError(f"dscribe_mode must be 'smooth' or 'analytic', got {self.dscribe_mode!r}")

    def to_dict(self) -> dict:
        """Plain-JSON form, the inverse of ``SoapSettings(**d)``."""
        return asdict(self)


@dataclass
class FrameDescriptors:
    """SOAP descriptors of one frame.

    Attributes
    ----------
    numbers : ndarray of shape (n_atoms,), int
        Atomic numbers, in the frame's atom order.
    values : ndarray of shape (n_atoms, n_features)
        Power spectrum of each atom's environment (raw before
        :func:`normalise`, normalised q̂ after it).
    pair_centre, pair_neighbour : ndarray of shape (n_pairs,), int
        For each stored gradient, the centre atom ``i`` whose descriptor moves
        and the atom ``j`` that is moved. Periodic images are folded onto their
        owner, and ``i == j`` (the self term) is included.
    pair_gradients : ndarray of shape (n_pairs, 3, n_features) or None
        ``d q_i / d r_j[x]`` of the raw power spectrum for each pair.
    strain_gradients : ndarray of shape (n_atoms, 3, 3, n_features) or None
        ``d q_i / d epsilon[a, b]`` of the raw power spectrum for a homogeneous strain of cell and
        positions ``r -> r (1 + epsilon)``. None for non-periodic frames.
    norms : ndarray of shape (n_atoms,) or None
        ``|q_i|`` before normalisation (set by :func:`normalise`).
    pair_projection : ndarray of shape (n_pairs, 3) or None
        ``(d q_i / d r_j) · q̂_i`` (set by :func:`normalise`).
    strain_projection : ndarray of shape (n_atoms, 3, 3) or None
        ``(d q_i / d ε_ab) · q̂_i`` (set by :func:`normalise`).
    gradient_blocks : list of tuple or None
        Position gradients in the backend's own blocks instead of
        ``pair_gradients`` (featomic with ``layout="blocks"``, for
        prediction): ``(centre, neighbour, first feature, feature scale,
        values (n, 3, n_block_features))`` with ``d q_i / d r_j`` of the
        block's features = values · scale.
    centres : ndarray of shape (n_rows,), int, or None
        None (the default): the rows are the frame's atoms, in order. Else
        the descriptors of a *share* of the frame (see ``centres=`` of the
        backends' ``compute``): row k is the environment of atom
        ``centres[k]`` (ascending); ``numbers``, ``values``, ``norms``,
        ``strain_gradients`` and ``pair_centre`` count rows, while
        ``pair_neighbour`` (and the neighbours of ``gradient_blocks``) are
        atom indices of the whole frame.

    The gradients stay those of the *raw* q (see :func:`normalise`).
    """

    numbers: np.ndarray
    values: np.ndarray
    pair_centre: Optional[np.ndarray] = None
    pair_neighbour: Optional[np.ndarray] = None
    pair_gradients: Optional[np.ndarray] = None
    strain_gradients: Optional[np.ndarray] = None
    norms: Optional[np.ndarray] = None
    pair_projection: Optional[np.ndarray] = None
    strain_projection: Optional[np.ndarray] = None
    gradient_blocks: Optional[list] = None
    normalised: bool = field(default=False)
    centres: Optional[np.ndarray] = None

    @property
    def n_atoms(self) -> int:
        """Rows: the frame's atoms, or the centres of a share."""
        return len(self.numbers)

    @property
    def has_gradients(self) -> bool:
        return self.pair_gradients is not None or self.gradient_blocks is not None


def normalise(desc: FrameDescriptors) -> FrameDescriptors:
    """Normalise the values in place and prepare the gradients' chain rule.

    With ``q̂ = q/|q|``, ``dq̂ = (dq - q̂ (q̂·dq)) / |q|``. The raw gradients
    are kept (they are sparse in the feature index: moving an atom of species
    Z only touches features that involve Z, which the kernel code exploits);
    what the chain rule needs besides them is stored: ``norms`` = |q_i| and
    the projections ``pair_projection`` = (dq·q̂_i) per pair and component,
    ``strain_projection`` likewise. :func:`normalised_pair_gradients` builds
    the normalised gradients where they are really wanted.
    """
    if desc.normalised:
        return desc
    norms = np.linalg.norm(desc.values, axis=1)
    if np.any(norms == 0):
        bad = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(f"atom {bad} has an all-zero SOAP vector (no neighbours and no self term)")
    qhat = desc.values / norms[:, None]
    if desc.pair_gradients is not None:
        from .._loops import pair_projection
        desc.pair_projection = pair_projection(desc.pair_gradients, qhat, desc.pair_centre)
    if desc.strain_gradients is not None:
        n, D = desc.strain_gradients.shape[0], desc.strain_gradients.shape[-1]
        desc.strain_projection = np.einsum("iad,id->ia", desc.strain_gradients.reshape(n, 9, D), qhat).reshape(n, 3, 3)
    desc.values = qhat
    desc.norms = norms
    desc.normalised = True
    return desc


def normalised_pair_gradients(desc: FrameDescriptors, pairs=None) -> np.ndarray:
    """d q̂_i / d r_j for the given pair indices (all by default), (k, 3, D)."""
    if pairs is None:
        pairs = np.arange(len(desc.pair_centre))
    c = desc.pair_centre[pairs]
    g = desc.pair_gradients[pairs] - desc.pair_projection[pairs][:, :, None] * desc.values[c][:, None, :]
    return g / desc.norms[c][:, None, None]


def normalised_strain_gradients(desc: FrameDescriptors) -> np.ndarray:
    """d q̂_i / d ε_ab, (n_atoms, 3, 3, D)."""
    g = desc.strain_gradients - desc.strain_projection[..., None] * desc.values[:, None, None, :]
    return g / desc.norms[:, None, None, None]


def check_centres(centres: Optional[Sequence], n_frames: int) -> Optional[List[np.ndarray]]:
    """``centres=`` of a backend's ``compute``: None, or one sorted array of distinct atom indices per frame."""
    if centres is None:
        return None
    centres = [np.asarray(c, dtype=np.int64).ravel() for c in centres]
    if len(centres) != n_frames:
        raise ValueError(f"centres: {len(centres)} entries for {n_frames} frames; give one index array per frame")
    for c in centres:
        if len(c) and np.any(np.diff(c) <= 0):
            raise ValueError("centres must be sorted distinct atom indices")
    return centres
