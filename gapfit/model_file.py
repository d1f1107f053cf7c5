"""The gapfit model file: one ``.npz`` (no pickle) with JSON metadata.

Format ``gapfit-model`` version 2 (documented in docs/model-format.md):

- ``metadata``: 0-d unicode array holding JSON: format name and version,
  package version, species, e0, the baseline (a JSON description: e0, core
  repulsion radii, tabulated pair tables, the import path and arguments of a
  Δ-learning calculator), the list of terms (type, settings, fitted state),
  jitter, the sizes of the K_MM blocks, training summary, fit parameters,
  calibration.
- ``term<k>_<name>``: arrays of term k (its sparse points).
- ``alpha``: (M,) weights of all terms, concatenated in term order.
- ``kmm_chol_<b>``: lower Cholesky factor of K_MM block b (+ jitter), its
  lower triangle packed row by row.
- ``R_ab``: upper-triangular QR factor of the stacked training matrix with
  the target column, (M+1) × (M+1), upper triangle packed row by row.
- ``baseline_<name>``: arrays a baseline part refers to (a sum's part k as
  ``baseline_part<k>_<name>``): the charge equilibration's electronegativity
  term (sparse points, weights, factors; :meth:`gapfit.qeq.QEqBaseline.to_arrays`).

Version 1 files (one SOAP term, e0 baseline) are still read.

Loading reads only arrays of numbers and one JSON string (``allow_pickle=False``),
so a model file can never run code, and never imports anything named in it:
a Δ-learning calculator is passed in by the caller. Writes go to a temporary
file in the same folder, are flushed to disk, then renamed over the target.
"""
from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple

import numpy as np

from ._version import __version__
from .errors import GapfitError, InputError, ModelFormatError
from .files import atomic_write

if TYPE_CHECKING:  # annotations only: the state module is imported when a file is read
    from .state import FittedState

FORMAT_NAME = "gapfit-model"
FORMAT_VERSION = 2


def _unpack(packed, n: int, lower: bool) -> np.ndarray:
    """Square matrix from its packed lower or upper triangle."""
    packed = np.asarray(packed, dtype=float)
    if packed.shape != (n * (n + 1) // 2,):
        raise ValueError(f"packed triangle has {packed.shape} values, expected {n * (n + 1) // 2}")
    out = np.zeros((n, n))
    out[np.tril_indices(n) if lower else np.triu_indices(n)] = packed
    return out


def write(state: "FittedState", params: Dict[str, Any], path: str) -> None:
    """Write a fitted state and the estimator parameters it was fitted with to ``path`` atomically."""
    atomic_write(path, state_writer(state, params))


def _json_params(params: Dict[str, Any]) -> Dict[str, Any]:
    """Constructor parameters as plain JSON (the calculator object becomes None)."""
    from .terms import Term
    params = {k: v for k, v in params.items() if k not in ("progress", "baseline")}
    if isinstance(params.get("n_sparse"), dict):
        params["n_sparse"] = {str(k): int(v) for k, v in params["n_sparse"].items()}
    if params.get("e0") is not None:
        params["e0"] = {str(k): float(v) for k, v in params["e0"].items()}
    if isinstance(params.get("terms"), (list, tuple)):
        params["terms"] = [t.to_dict() if isinstance(t, Term) else dict(t) for t in params["terms"]]
    return params


def state_writer(state: "FittedState", params: Dict[str, Any]) -> Callable:
    """``write(fileobj)`` that writes the model file of a fitted state and its estimator's parameters."""
    st = state
    terms_meta = []
    arrays: Dict[str, np.ndarray] = {}
    for k, term in enumerate(st.terms):
        names = {}
        for name, arr in term.fitted_arrays().items():
            arrays[f"term{k}_{name}"] = np.asarray(arr, dtype=np.float64)
            names[name] = f"term{k}_{name}"
        terms_meta.append({"type": term.type, "settings": term.settings(), "state": term.fitted_state(),
                           "n_columns": int(term.n_columns)})
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "gapfit_version": __version__,
        "species": [int(z) for z in st.species],
        "e0_eV": {str(z): float(v) for z, v in st.e0.items()},
        "baseline": st.baseline.to_dict(),
        "terms": terms_meta,
        "jitter": float(params["jitter"]),
        "kmm_block_sizes": [int(len(L)) for L in st.kmm_chol],
        "training": st.training,
        "params": _json_params(params),
        "calibration": st.calibration,
        "noise_scale": {str(k): float(v) for k, v in st.noise_scale.items()},
    }
    for name, arr in st.baseline.to_arrays().items():
        arrays[f"baseline_{name}"] = np.asarray(arr, dtype=np.float64)
    arrays.update({"metadata": np.array(json.dumps(meta)), "alpha": st.alpha,
                   "R_ab": st.R_ab[np.triu_indices(len(st.R_ab))]})
    for b, L in enumerate(st.kmm_chol):
        arrays[f"kmm_chol_{b}"] = L[np.tril_indices(len(L))]
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


def _read_meta(path: str):
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
    return arrays, meta, version


def baseline_spec(path: str) -> Any:
    """The import path (``module:Class``) and arguments of a model's Δ-learning calculator, or None.

    Reads the metadata only; imports nothing.
    """
    _, meta, version = _read_meta(path)
    if version < 2:
        return None

    def find(d):
        if not isinstance(d, dict):
            return None
        if d.get("type") == "calculator":
            return {"import_path": d.get("import_path"), "kwargs": d.get("kwargs")}
        for part in d.get("parts", []) or []:
            hit = find(part)
            if hit:
                return hit
        return None
    return find(meta.get("baseline"))


def read(path: str, baseline: Any = None) -> Tuple[Dict[str, Any], "FittedState"]:
    """Read a model file: ``(params, state)``, the estimator's parameters and its :class:`gapfit.state.FittedState`.

    Never executes or imports code. ``baseline`` is the ASE calculator of a
    Δ-learning model (the file names its import path; reading without it is
    refused with that path named); it is put back among the parameters.
    Every entry is read and checked (shapes, finiteness, consistency with the
    metadata) first: a damaged or foreign file raises
    :class:`gapfit.errors.ModelFormatError`, never anything else.
    """
    path = os.fspath(path)
    arrays, meta, version = _read_meta(path)
    try:
        if version == 1:
            return _read_v1(arrays, meta)
        return _read_v2(path, arrays, meta, baseline)
    except ModelFormatError:
        raise
    except InputError as exc:
        if exc.param == "baseline":  # the caller's calculator is missing or not the recorded one
            raise
        raise ModelFormatError(f"{path}: damaged gapfit model file ({exc}); refit the model or restore the "
                               "file from a copy") from None
    except (GapfitError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ModelFormatError(f"{path}: damaged gapfit model file ({type(exc).__name__}: {exc}); refit the "
                               "model or restore the file from a copy") from None


def _species(meta) -> list:
    species = [int(z) for z in meta["species"]]
    if not species or sorted(set(species)) != species or not all(1 <= z <= 118 for z in species):
        raise ValueError(f"species {meta['species']!r} is not a sorted list of atomic numbers")
    return species


def _e0(meta, species) -> dict:
    e0 = {int(z): float(v) for z, v in dict(meta["e0_eV"]).items()}
    if sorted(e0) != species or not all(math.isfinite(v) for v in e0.values()):
        raise ValueError(f"e0_eV {meta['e0_eV']!r} does not give a finite energy for each species")
    return e0


def _calibration(meta):
    cal = meta.get("calibration")
    if cal is not None:
        if not isinstance(cal, dict):
            raise ValueError("calibration is not a mapping")
        for key in ("energy_scale", "forces_scale"):
            if cal.get(key) is not None:
                _positive(cal[key], f"calibration {key}")
    return cal


def _finish(st, arrays, sizes) -> None:
    """Weights, factors and their consistency checks, shared by both format versions."""
    M = st.n_columns
    if sum(sizes.values()) != M or min(sizes.values(), default=1) < 1:
        raise ValueError(f"K_MM block sizes {list(sizes.values())} do not add up to the {M} weights of the terms")
    st.kmm_chol = [_unpack(_numbers(arrays, name, (n * (n + 1) // 2,)), n, lower=True) for name, n in sizes.items()]
    st.alpha = _numbers(arrays, "alpha", (M,))
    st.R_ab = _unpack(_numbers(arrays, "R_ab", ((M + 1) * (M + 2) // 2,)), M + 1, lower=False)


def _read_v1(arrays, meta):
    """A format-1 file: one SOAP term, e0 baseline, K_MM blocks per species."""
    from .baselines import E0Baseline, SumBaseline
    from .params import check_params
    from .state import FittedState
    from .terms import Soap

    params = dict(meta["params"])
    check_params(params)
    params.setdefault("core_repulsion", False)  # version 1 had no core repulsion
    species = _species(meta)
    soap = Soap(**{**meta["soap"], "zeta": _positive(meta["kernel"]["zeta"], "kernel zeta"),
                   "delta": params.get("delta"), "n_sparse": params.get("n_sparse"),
                   "sparse_method": params.get("sparse_method", "cur")})
    counts = {int(z): int(n) for z, n in dict(meta["sparse_counts"]).items()}
    if sorted(counts) != species:
        raise ValueError(f"sparse_counts {meta['sparse_counts']!r} do not match species {species}")
    soap.restore({"delta_eV": _positive(meta["kernel"]["delta_eV"], "kernel delta_eV"), "species": species,
                  "n_features": meta.get("n_features"), "sparse_counts": meta["sparse_counts"]}, arrays)
    e0 = _e0(meta, species)
    st = FittedState(species=species, e0=e0, baseline=SumBaseline([E0Baseline(e0)]), terms=[soap],
                     calibration=_calibration(meta))
    training = meta.get("training", {})
    st.training = training if isinstance(training, dict) else {}
    _finish(st, arrays, {f"kmm_chol_{z}": counts[z] for z in species})
    return params, st


def _noise_scale(meta) -> Dict[str, float]:
    """The optimised noise-level factors per group (absent before the likelihood optimisation existed)."""
    raw = meta.get("noise_scale") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"'noise_scale' must be a mapping, got {type(raw).__name__}")
    out = {}
    for k, v in raw.items():
        v = float(v)
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"noise_scale[{k!r}] must be a finite number > 0, got {v!r}")
        out[str(k)] = v
    return out


def _read_v2(path, arrays, meta, calculator):
    from .baselines import baseline_from_dict
    from .params import check_params
    from .qeq import QEqBaseline
    from .state import FittedState
    from .terms import build_terms

    params = dict(meta["params"])
    check_params(params)
    species = _species(meta)
    e0 = _e0(meta, species)
    try:
        baseline = baseline_from_dict(meta["baseline"], calculator=calculator,
                                      arrays={n[len("baseline_"):]: a for n, a in arrays.items()
                                              if n.startswith("baseline_")},
                                      builders={"qeq": QEqBaseline.from_dict})
    except InputError as exc:
        raise InputError(f"{path}: {exc}", param="baseline") from None
    if calculator is not None:
        params["baseline"] = calculator
    terms_meta = list(meta["terms"])
    terms = build_terms([{"type": t["type"], **dict(t["settings"])} for t in terms_meta], where=f"{path} terms")
    for k, (term, tm) in enumerate(zip(terms, terms_meta)):
        prefix = f"term{k}_"
        term.restore(dict(tm["state"]), {name[len(prefix):]: a for name, a in arrays.items()
                                         if name.startswith(prefix)})
        if term.n_columns != int(tm["n_columns"]):
            raise ValueError(f"term {k + 1} has {term.n_columns} sparse points, the file says {tm['n_columns']}")
    st = FittedState(species=species, e0=e0, baseline=baseline, terms=terms, calibration=_calibration(meta),
                     noise_scale=_noise_scale(meta))
    training = meta.get("training", {})
    st.training = training if isinstance(training, dict) else {}
    sizes = [int(n) for n in meta["kmm_block_sizes"]]
    _finish(st, arrays, {f"kmm_chol_{b}": n for b, n in enumerate(sizes)})
    return params, st
