"""The gapfit model file: one ``.npz`` (no pickle) with JSON metadata.

Format ``gapfit-model`` version 1 (documented in docs/model-format.md):

- ``metadata``: 0-d unicode array holding JSON: format name and version,
  package version, SOAP settings, kernel (zeta, delta), species, e0, jitter,
  sparse-point counts and offsets, training summary, fit parameters.
- ``sparse_<Z>``: (M_Z, D) normalised sparse descriptors of species Z.
- ``alpha``: (M,) weights in species order.
- ``kmm_chol_<Z>``: lower Cholesky factor of K_MM + jitter, its lower
  triangle packed row by row (M_Z (M_Z + 1) / 2 values).
- ``R_ab``: upper-triangular QR factor of the stacked training matrix with
  the target column, (M+1) × (M+1), its upper triangle packed row by row.
  Its leading M × M block is the R that predictive variances use.

Loading reads only arrays of numbers and one JSON string (``allow_pickle=False``),
so a model file can never run code. Writes go to a temporary file in the
same folder, are flushed to disk, then renamed over the target.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from ._version import __version__
from .errors import ModelFormatError

FORMAT_NAME = "gapfit-model"
FORMAT_VERSION = 1


def atomic_write(path: str, write) -> None:
    """Call ``write(fileobj)`` on a temporary file, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private; give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _unpack(packed, n: int, lower: bool) -> np.ndarray:
    """Square matrix from its packed lower or upper triangle."""
    packed = np.asarray(packed, dtype=float)
    if packed.shape != (n * (n + 1) // 2,):
        raise ValueError(f"packed triangle has {packed.shape} values, expected {n * (n + 1) // 2}")
    out = np.zeros((n, n))
    out[np.tril_indices(n) if lower else np.triu_indices(n)] = packed
    return out


def save_model(model, path: str) -> None:
    """Write a fitted :class:`gapfit.GAP` to ``path`` atomically."""
    sp = model.sparse_
    params = {k: v for k, v in model.get_params().items() if k != "progress"}
    if params.get("n_sparse") is not None and isinstance(params["n_sparse"], dict):
        params["n_sparse"] = {str(k): int(v) for k, v in params["n_sparse"].items()}
    if params.get("e0") is not None:
        params["e0"] = {str(k): float(v) for k, v in params["e0"].items()}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "gapfit_version": __version__,
        "soap": model.soap_settings.to_dict(),
        "n_features": int(model.descriptor_.n_features),
        "kernel": {"type": "normalised_dot_product", "zeta": float(sp.zeta), "delta_eV": float(sp.delta)},
        "species": [int(z) for z in model.species_],
        "e0_eV": {str(z): float(v) for z, v in model.e0_.items()},
        "jitter": float(model.jitter),
        "sparse_counts": {str(z): int(len(p)) for z, p in sp.points.items()},
        "training": model.training_summary_,
        "params": params,
        "calibration": getattr(model, "calibration_", None),
    }
    arrays = {"metadata": np.array(json.dumps(meta)), "alpha": model.alpha_,
              "R_ab": model.R_ab_[np.triu_indices(len(model.R_ab_))]}
    for z, p in sp.points.items():
        arrays[f"sparse_{z}"] = p
        L = model.kmm_chol_[z]
        arrays[f"kmm_chol_{z}"] = L[np.tril_indices(len(L))]
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_model(path: str):
    """Read a model written by :func:`save_model`; never executes code."""
    from . import sgp
    from .descriptors import SoapSettings, make_descriptor
    from .model import GAP

    if not os.path.exists(path):
        raise ModelFormatError(f"{path}: no such model file")
    try:
        data = np.load(path, allow_pickle=False)
        files = set(data.files)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelFormatError(f"{path}: not a gapfit model file (not a readable .npz archive: {exc})") from None
    if "metadata" not in files:
        raise ModelFormatError(f"{path}: not a gapfit model file (no 'metadata' entry)")
    try:
        meta = json.loads(str(data["metadata"]))
    except (ValueError, TypeError) as exc:
        raise ModelFormatError(f"{path}: not a gapfit model file (metadata is not JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{path}: not a gapfit model file (format is {meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: model format version {version} is newer than this gapfit ({__version__}) reads "
            f"(up to {FORMAT_VERSION}); upgrade gapfit")
    try:
        params = dict(meta["params"])
        model = GAP(**params)
        species = [int(z) for z in meta["species"]]
        points = {z: np.asarray(data[f"sparse_{z}"], dtype=float) for z in species if f"sparse_{z}" in files}
        model.species_ = species
        model.e0_ = {int(z): float(v) for z, v in meta["e0_eV"].items()}
        model.delta_ = float(meta["kernel"]["delta_eV"])
        model.sparse_ = sgp.SparseSet(points, model.delta_, float(meta["kernel"]["zeta"]))
        model.kmm_chol_ = {z: _unpack(data[f"kmm_chol_{z}"], len(points[z]), lower=True) for z in points}
        model.alpha_ = np.asarray(data["alpha"], dtype=float)
        M = len(model.alpha_)
        model.R_ab_ = _unpack(data["R_ab"], M + 1, lower=False)
        model.R_ = np.ascontiguousarray(model.R_ab_[:M, :M])
        model.training_summary_ = meta.get("training", {})
        if meta.get("calibration") is not None:
            model.calibration_ = meta["calibration"]
        model.descriptor_ = make_descriptor(SoapSettings(**meta["soap"]), species)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: damaged gapfit model file ({type(exc).__name__}: {exc})") from None
    if model.descriptor_.n_features != meta.get("n_features"):
        raise ModelFormatError(f"{path}: descriptor length {model.descriptor_.n_features} differs from the "
                               f"file's {meta.get('n_features')}; the model was made with another SOAP layout")
    return model
