"""The terms a fit uses: the ones given, or the default recipe built from the top-level SOAP settings."""
from __future__ import annotations

from typing import Any, List, Mapping

from ..terms import Term, build_terms

#: Settings of the default SOAP term that may also be given at the top level (as in gapfit 0.x).
SOAP_PARAMS = ("cutoff", "cutoff_transition_width", "n_max", "l_max", "atom_sigma", "backend", "dscribe_mode",
               "zeta", "delta", "n_sparse", "sparse_method")


#: The two-body term of the default recipe (its cutoff does not follow the SOAP ``cutoff``).
DEFAULT_TWO_BODY = {"type": "distance_2b", "cutoff": 5.0, "cutoff_transition_width": 1.0, "theta": 0.5,
                    "n_sparse": 30}


#: The three-body term the default recipe adds for molecules.
DEFAULT_THREE_BODY = {"type": "angle_3b", "cutoff": 4.0, "cutoff_transition_width": 1.0, "theta": 1.0,
                      "n_sparse": 200}


def default_terms(soap_settings: Mapping[str, Any], molecular: bool = False) -> List[dict]:
    """The default recipe: the terms a plain ``gapfit fit`` uses.

    Two-body + SOAP for periodic data; two-body + three-body + SOAP for
    molecules (no training frame periodic). Chosen by measurement
    (bench/recipes.py, table in docs/index.md): the two-body term costs
    little, learns the pair repulsion the data show (a Si dimer's energy
    rises all the way in, where SOAP alone turned down) and lowers the force
    errors everywhere; the three-body term lowered the errors of aspirin and
    ethanol by 15-17 % but not Si's, at twice the fit time.
    """
    terms = [dict(DEFAULT_TWO_BODY)]
    if molecular:
        terms.append(dict(DEFAULT_THREE_BODY))
    return terms + [{"type": "soap", **soap_settings}]


def make_terms(params: Mapping[str, Any], molecular: bool) -> List[Term]:
    """Fresh (unfitted) terms of an estimator's parameters: ``params["terms"]``, or the default recipe."""
    if params["terms"] is None:
        return build_terms(default_terms({k: params[k] for k in SOAP_PARAMS}, molecular))
    return build_terms(params["terms"])
