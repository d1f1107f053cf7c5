"""SOAP descriptors behind one interface (featomic default, dscribe second).

``make_descriptor(settings, species)`` returns an object with
``n_features`` and ``compute(frames, gradients=...) -> list[FrameDescriptors]``
whose values and gradients are already normalised (see :mod:`.base`).
"""
from __future__ import annotations

from typing import Sequence

from .base import FrameDescriptors, SoapSettings, normalise

__all__ = ["FrameDescriptors", "SoapSettings", "normalise", "make_descriptor"]


def make_descriptor(settings: SoapSettings, species: Sequence[int]):
    """Build the backend named in ``settings`` for the given atomic numbers."""
    settings.validate()
    if settings.backend == "featomic":
        from .featomic_backend import FeatomicSOAP
        return FeatomicSOAP(settings, species)
    from .dscribe_backend import DscribeSOAP
    return DscribeSOAP(settings, species)
