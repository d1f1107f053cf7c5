"""gapfit: Gaussian Approximation Potentials with SOAP and a sparse Gaussian process.

>>> import gapfit, ase.io
>>> model = gapfit.GAP().fit(ase.io.read("train.xyz", ":"))
>>> model.save("model.npz")
>>> atoms.calc = gapfit.GAPCalculator(gapfit.load("model.npz"))
"""
from ._version import __version__
from .calculator import GAPCalculator
from .errors import GapfitError, InputError, ModelFormatError, NotFittedError
from .model import GAP


def load(path: str) -> GAP:
    """Load a model saved with :meth:`GAP.save` (no code is executed)."""
    from .model_io import load_model
    return load_model(path)


__all__ = ["GAP", "GAPCalculator", "load", "GapfitError", "InputError", "ModelFormatError",
           "NotFittedError", "__version__"]
