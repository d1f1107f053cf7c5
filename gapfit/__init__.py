"""gapfit: Gaussian Approximation Potentials with SOAP and a sparse Gaussian process."""
from ._version import __version__

__all__ = ["__version__"]
