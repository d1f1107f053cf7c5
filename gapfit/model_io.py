"""Saving and loading whole models: the estimator-level names of the model file.

The format itself (``write(state, params)`` / ``read(path) -> (params,
state)``) is :mod:`gapfit.model_file`; this module holds what works with a
:class:`gapfit.GAP` as a whole, under the names earlier versions had
(``gapfit.model_io.load_model``, ``save_model``, ``model_writer``), so that
users' imports keep working. New code: :func:`gapfit.load` and
:meth:`gapfit.GAP.save`.
"""
from __future__ import annotations

from typing import Any, Callable

from .model import GAP, load
from .model_file import FORMAT_NAME, FORMAT_VERSION, baseline_spec, read, state_writer, write
from .predictor import check_fitted

__all__ = ["load_model", "save_model", "model_writer", "baseline_spec", "read", "write", "FORMAT_NAME",
           "FORMAT_VERSION"]


def load_model(path: str, baseline: Any = None) -> GAP:
    """Read a model written by :func:`save_model` (the same as :func:`gapfit.load`); never executes code."""
    return load(path, baseline=baseline)


def save_model(model: GAP, path: str) -> None:
    """Write a fitted :class:`gapfit.GAP` to ``path`` atomically (the same as :meth:`gapfit.GAP.save`)."""
    model.save(path)


def model_writer(model: GAP) -> Callable:
    """``write(fileobj)`` that writes the model file of a fitted :class:`gapfit.GAP` (for staged outputs)."""
    check_fitted(getattr(model, "state_", None))
    return state_writer(model.state_, model.get_params(deep=False))
