"""gapfit: Gaussian Approximation Potentials: two-body, three-body and SOAP terms over physical baselines, in one sparse Gaussian process.

>>> import gapfit, ase.io
>>> model = gapfit.GAP().fit(ase.io.read("train.xyz", ":"))
>>> model.save("model.npz")
>>> atoms.calc = gapfit.GAPCalculator(gapfit.load("model.npz"))
"""
import os as _os

# numpy's and scipy's wheels each bundle an OpenBLAS with its own worker
# threads, which spin for 2^28 cycles (about 0.1 s) after every call before
# sleeping. Prediction alternates between the two (kernel GEMMs in numpy,
# triangular solves in scipy), so each call shared the cores with the other
# copy's spinning threads: measured 2x slower solves and GEMMs on 2 cores,
# 10.4 -> 15.1 MD steps/s for 64 Si atoms watching local-energy stds.
# 2^20 cycles (well under 1 ms) keeps the spin for back-to-back calls.
# OpenBLAS reads this once, when a copy loads: it cannot reach a numpy
# imported before gapfit (docs/index.md, "Two OpenBLAS copies").
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

from ._version import __version__  # noqa: E402

# The public names are imported on first use (PEP 562): ``import gapfit`` (and
# so the ``gapfit`` command) starts without numpy, scipy, ase and featomic, and
# the command takes its Ctrl-C handler before they load (gapfit._interrupt).
_LAZY = {"GAP": "model", "GAPCalculator": "calculator", "Coulomb": "coulomb", "Prediction": "prediction",
         "GapfitError": "errors",
         "InputError": "errors", "ModelFormatError": "errors", "NotFittedError": "errors"}


def __getattr__(name: str):
    import importlib
    import importlib.util
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # a submodule as an attribute: gapfit.errors
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def load(path: str, baseline=None) -> "GAP":
    """Load a model saved with :meth:`GAP.save` (no code is executed, nothing named in the file is imported).

    ``baseline``: the ASE calculator of a Δ-learning model; the file records
    its import path and arguments, and loading without it is refused with
    that path named.
    """
    from .model import load as _load
    return _load(path, baseline=baseline)


__all__ = ["GAP", "GAPCalculator", "Coulomb", "Prediction", "load", "GapfitError", "InputError", "ModelFormatError",
           "NotFittedError", "__version__"]
