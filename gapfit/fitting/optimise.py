"""The fit's hyperparameter step: δ and σ by the log marginal likelihood, on the stored per-group factors."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from .. import hyper
from ..state import FittedState

log = logging.getLogger("gapfit")


def optimise(state: FittedState, problem: "hyper.LikelihoodProblem", *, optimize_delta: bool,
             sigma_floor: Optional[Mapping[str, float]]) -> Tuple["hyper.LikelihoodProblem", Tuple[Any, Any]]:
    """Maximise the likelihood over δ and σ and set the optimum in ``state`` (δ of its terms, noise scales, K_MM).

    Returns the problem rebased at the optimum and (start problem, result).
    """
    res = hyper.maximise(problem, optimise_delta=optimize_delta, sigma_floor=sigma_floor)
    log_c, log_s = problem.split(res.x)
    for t, lc in zip(state.terms, log_c):
        t.set_delta(t.delta_eV * float(np.exp(lc)))
    state.noise_scale = {g: float(np.exp(v)) * state.noise_scale.get(g, 1.0) for g, v in log_s.items()}
    rebased = problem.rebase(res.x)
    state.kmm_chol = rebased.kmm_chol
    _log_result(state, problem, rebased, res)
    return rebased, (problem, res)


def _log_result(state, problem, rebased, res) -> None:
    log.info("hyperparameters: log marginal likelihood %.6g -> %.6g in %d evaluations, %.1f s (%s)",
             res.lml_initial, res.lml_final, res.n_evaluations, res.seconds, res.message)
    for k, t in enumerate(state.terms):
        log.info("  term %d (%s): δ %.4g -> %.4g eV", k + 1, t.type, problem.delta0_eV[k], t.delta_eV)
    for g in problem.groups:
        log.info("  σ %s: %.4g -> %.4g%s", g, problem.sigma0.get(g, float("nan")),
                 rebased.sigma0.get(g, float("nan")), " (its floor)" if g in res.at_floor else "")


def hyper_summary(state: FittedState, *, optimized: bool, sigma_mode: str, problem, optimisation) -> dict:
    """The hyperparameters of a fit as the model file's training summary records them."""
    out = {"optimized": bool(optimized), "sigma_mode": sigma_mode,
           "delta_eV": {f"{k + 1}:{t.type}": t.delta_eV for k, t in enumerate(state.terms)},
           "sigma": dict(problem.sigma0), "noise_scale": dict(state.noise_scale)}
    if optimisation is not None:
        start, res = optimisation
        out.update({"initial_delta_eV": {f"{k + 1}:{t.type}": float(d) for k, (t, d)
                                         in enumerate(zip(state.terms, start.delta0_eV))},
                    "initial_sigma": dict(start.sigma0),
                    "lml_initial_fit_frames": res.lml_initial, "lml_final_fit_frames": res.lml_final,
                    "evaluations": res.n_evaluations, "seconds": round(res.seconds, 3),
                    "converged": res.converged, "optimizer_message": res.message,
                    "sigma_floor": dict(res.sigma_floor), "sigma_at_floor": list(res.at_floor)})
    return out
