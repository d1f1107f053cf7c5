"""Exception types. Messages say what is wrong, where, and how to fix it.

Every error gapfit raises on purpose derives from :class:`GapfitError`; the
command line turns each into one line on stderr and exit status 2.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class GapfitError(Exception):
    """Base class of the errors gapfit raises on purpose.

    The message is kept on one line (runs of whitespace, newlines included,
    become one space): values quoted from a user's file cannot break it.
    """

    def __init__(self, message: str = "", *args):
        super().__init__(" ".join(str(message).split()), *args)


class InputError(GapfitError, ValueError):
    """Bad user input: a file, frame or setting that cannot be used.

    ``param`` names the setting at fault when there is one, so that the
    command line can add the config file it came from.
    """

    def __init__(self, message: str, *, param: Optional[str] = None):
        super().__init__(message)
        self.param = param


class ModelFormatError(GapfitError, ValueError):
    """A file that is not a gapfit model, or of an unsupported format version."""


class NotFittedError(GapfitError, RuntimeError):
    """A model used before ``fit`` was called."""


class OutputError(GapfitError, OSError):
    """An output that cannot be written: folder not writable, target locked or not replaceable."""


class NumericalError(GapfitError, np.linalg.LinAlgError):
    """A factorisation that failed (singular or not positive definite); the message says what to change."""


class WorkerError(GapfitError, RuntimeError):
    """A distributed fit lost a worker, or had none to run on; the message names the block of frames."""
