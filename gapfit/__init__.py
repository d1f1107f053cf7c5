"""gapfit: Gaussian Approximation Potentials: two-body, three-body and SOAP terms over physical baselines, in one sparse Gaussian process.

>>> import gapfit, ase.io
>>> model = gapfit.GAP().fit(ase.io.read("train.xyz", ":"))
>>> model.save("model.npz")
>>> atoms.calc = gapfit.GAPCalculator(gapfit.load("model.npz"))
"""
from ._version import __version__
from .calculator import GAPCalculator
from .errors import GapfitError, InputError, ModelFormatError, NotFittedError
from .model import GAP
from .prediction import Prediction


def load(path: str, baseline=None) -> GAP:
    """Load a model saved with :meth:`GAP.save` (no code is executed, nothing named in the file is imported).

    ``baseline``: the ASE calculator of a Δ-learning model; the file records
    its import path and arguments, and loading without it is refused with
    that path named.
    """
    from .model_io import load_model
    return load_model(path, baseline=baseline)


__all__ = ["GAP", "GAPCalculator", "Prediction", "load", "GapfitError", "InputError", "ModelFormatError",
           "NotFittedError", "__version__"]
