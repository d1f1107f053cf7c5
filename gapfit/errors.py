"""Exception types. Messages say what is wrong, where, and how to fix it."""
from __future__ import annotations


class GapfitError(Exception):
    """Base class of the errors gapfit raises on purpose."""


class InputError(GapfitError, ValueError):
    """Bad user input: a file, frame or setting that cannot be used."""


class ModelFormatError(GapfitError, ValueError):
    """A file that is not a gapfit model, or of an unsupported format version."""


class NotFittedError(GapfitError, RuntimeError):
    """A model used before ``fit`` was called."""
