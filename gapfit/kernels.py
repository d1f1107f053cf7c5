"""GAP's dot-product kernel on normalised SOAP vectors.

k(q̂, x) = δ² (q̂·x)^ζ between an atom's normalised descriptor q̂ and a sparse
point x of the same species (zero between species). Everything downstream
needs the kernel and its derivative with respect to the dot product, so one
function returns both.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def dot_kernel(q_hat: np.ndarray, sparse: np.ndarray, delta: float, zeta: float
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Kernel values and derivative factors.

    Parameters
    ----------
    q_hat : ndarray of shape (n, D)
        Normalised descriptors.
    sparse : ndarray of shape (M, D)
        Normalised sparse points of the same species.

    Returns
    -------
    K : ndarray of shape (n, M)
        δ² (q̂·x)^ζ.
    dK : ndarray of shape (n, M)
        δ² ζ (q̂·x)^(ζ-1): the factor that multiplies ``d(q̂·x)``.
    """
    return kernel_from_dot(q_hat @ sparse.T, delta, zeta)


def kernel_from_dot(c: np.ndarray, delta: float, zeta: float) -> Tuple[np.ndarray, np.ndarray]:
    """K and dK (as in :func:`dot_kernel`) from dot products ``c``; clips ``c`` in place."""
    # Normalised SOAP power spectra are non-negative, so c >= 0 up to rounding;
    # clipping keeps fractional ζ well defined.
    np.clip(c, 0.0, None, out=c)
    cz1 = c ** (zeta - 1.0)
    K = (delta * delta) * cz1 * c
    dK = (delta * delta * zeta) * cz1
    return K, dK


def kernel_matrix(a: np.ndarray, b: np.ndarray, delta: float, zeta: float) -> np.ndarray:
    """δ² (a·b)^ζ for all pairs of rows."""
    return dot_kernel(a, b, delta, zeta)[0]
