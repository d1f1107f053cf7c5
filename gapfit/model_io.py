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
import math
import os
from typing import Callable, Dict

import numpy as np

from ._version import __version__
from .errors import GapfitError, ModelFormatError
from .files import atomic_write

FORMAT_NAME = "gapfit-model"
FORMAT_VERSION = 1


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
    atomic_write(path, model_writer(model))


def model_writer(model) -> Callable:
    """``write(fileobj)`` that writes the model file of a fitted :class:`gapfit.GAP`."""
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
    return lambda fh: np.savez(fh, **arrays)


def _read_arrays(path: str) -> Dict[str, np.ndarray]:
    """Every entry of the archive, read now (so that damage shows here, CRC included)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise ModelFormatError(f"{path}: not a gapfit model file: it is a Python pickle, which gapfit never "
                               "loads (model files hold only arrays of numbers and JSON)")
    if head != b"PK":
        raise ModelFormatError(f"{path}: not a gapfit model file (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise ModelFormatError(f"{path}: not a gapfit model file: an entry holds pickled Python objects, "
                                   "which gapfit never loads (model files hold only arrays of numbers and "
                                   "JSON)") from None
        raise ModelFormatError(f"{path}: damaged or not a gapfit model file (ValueError: {exc}); refit the "
                               "model or restore the file from a copy") from None
    except Exception as exc:  # zipfile, zlib and numpy raise many types for damaged archives
        raise ModelFormatError(f"{path}: damaged or not a gapfit model file ({type(exc).__name__}: {exc}); "
                               "refit the model or restore the file from a copy") from None
    odd = sorted(name for name, a in arrays.items() if not isinstance(a, np.ndarray))
    if odd:  # numpy hands back the raw bytes of archive members that are not .npy arrays
        raise ModelFormatError(f"{path}: not a gapfit model file (entry '{odd[0]}' is not an array)")
    return arrays


def _numbers(arrays: Dict[str, np.ndarray], name: str, shape: tuple) -> np.ndarray:
    """A finite float64 entry of the given shape, or a ValueError naming it."""
    if name not in arrays:
        raise KeyError(f"entry '{name}' is missing")
    a = arrays[name]
    if a.dtype.kind not in "fi" or a.shape != shape:
        raise ValueError(f"entry '{name}' has dtype {a.dtype} and shape {a.shape}, expected numbers of shape {shape}")
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"entry '{name}' holds NaN or inf")
    return a


def _positive(value, what: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return v


def load_model(path: str):
    """Read a model written by :func:`save_model`; never executes code.

    Every entry is read and checked (shapes, finiteness, consistency with
    the metadata) before the model is built: a damaged or foreign file
    raises :class:`gapfit.errors.ModelFormatError`, never anything else.
    """
    from . import sgp
    from .descriptors import SoapSettings, make_descriptor
    from .model import GAP
    from .params import check_params

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFormatError(f"{path}: no such model file")
    if os.path.isdir(path):
        raise ModelFormatError(f"{path}: is a folder, not a gapfit model file")
    try:
        arrays = _read_arrays(path)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if "metadata" not in arrays:
        raise ModelFormatError(f"{path}: not a gapfit model file (no 'metadata' entry)")
    meta_arr = arrays["metadata"]
    if meta_arr.dtype.kind != "U" or meta_arr.shape != ():
        raise ModelFormatError(f"{path}: not a gapfit model file ('metadata' is not a JSON string)")
    try:
        meta = json.loads(str(meta_arr))
    except ValueError as exc:
        raise ModelFormatError(f"{path}: not a gapfit model file (metadata is not JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{path}: not a gapfit model file (format is "
                               f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{path}: damaged gapfit model file (format_version {version!r})")
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: model format version {version} is newer than this gapfit ({__version__}) reads "
            f"(up to {FORMAT_VERSION}); upgrade gapfit")
    try:
        params = dict(meta["params"])
        check_params(params)
        model = GAP(**params)
        species = [int(z) for z in meta["species"]]
        if not species or sorted(set(species)) != species or not all(1 <= z <= 118 for z in species):
            raise ValueError(f"species {meta['species']!r} is not a sorted list of atomic numbers")
        model.descriptor_ = make_descriptor(SoapSettings(**meta["soap"]), species)
        D = model.descriptor_.n_features
        if D != meta.get("n_features"):
            raise ModelFormatError(f"{path}: descriptor length {D} differs from the file's "
                                   f"{meta.get('n_features')!r}; the model was made with another SOAP layout")
        counts = {int(z): int(n) for z, n in dict(meta["sparse_counts"]).items()}
        if sorted(counts) != species or min(counts.values()) < 1:
            raise ValueError(f"sparse_counts {meta['sparse_counts']!r} do not match species {species}")
        points = {z: _numbers(arrays, f"sparse_{z}", (counts[z], D)) for z in species}
        model.species_ = species
        e0 = {int(z): float(v) for z, v in dict(meta["e0_eV"]).items()}
        if sorted(e0) != species or not all(math.isfinite(v) for v in e0.values()):
            raise ValueError(f"e0_eV {meta['e0_eV']!r} does not give a finite energy for each species")
        model.e0_ = e0
        model.delta_ = _positive(meta["kernel"]["delta_eV"], "kernel delta_eV")
        zeta = _positive(meta["kernel"]["zeta"], "kernel zeta")
        model.sparse_ = sgp.SparseSet(points, model.delta_, zeta)
        model.kmm_chol_ = {z: _unpack(_numbers(arrays, f"kmm_chol_{z}", (counts[z] * (counts[z] + 1) // 2,)),
                                      counts[z], lower=True) for z in species}
        M = sum(counts.values())
        model.alpha_ = _numbers(arrays, "alpha", (M,))
        model.R_ab_ = _unpack(_numbers(arrays, "R_ab", ((M + 1) * (M + 2) // 2,)), M + 1, lower=False)
        model.R_ = np.ascontiguousarray(model.R_ab_[:M, :M])
        training = meta.get("training", {})
        model.training_summary_ = training if isinstance(training, dict) else {}
        cal = meta.get("calibration")
        if cal is not None:
            if not isinstance(cal, dict):
                raise ValueError("calibration is not a mapping")
            for key in ("energy_scale", "forces_scale"):
                if cal.get(key) is not None:
                    _positive(cal[key], f"calibration {key}")
            model.calibration_ = cal
    except ModelFormatError:
        raise
    except (GapfitError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ModelFormatError(f"{path}: damaged gapfit model file ({type(exc).__name__}: {exc}); refit the "
                               "model or restore the file from a copy") from None
    return model
