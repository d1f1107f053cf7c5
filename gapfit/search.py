"""Choosing the settings that change descriptors (cutoff, n_max/l_max, ζ, sparse numbers) over a small grid.

δ and the noise levels are cheap to choose (:mod:`gapfit.hyper`); settings
that change descriptors need new fits. A search file names a grid of GAP
parameters and how to compare the points::

    # search.yaml
    method: cv          # cv (k-fold cross-validation, default) or likelihood
    folds: 3            # cv only
    score: combined     # cv only: combined (default), energy or forces
    optimize: false     # optimise δ and σ inside every fit (likelihood: always)
    grid:
      cutoff: [4.5, 5.0]
      n_max: [6, 8]

``cv`` fits each point on k−1 folds of the frames (seeded split by frame)
and scores the held-out fold: ``energy`` is the energy RMSE per atom,
``forces`` the force-component RMSE, ``combined`` their sum, each divided
by the noise level it is fitted with (σ_E, σ_F), so the two count as they
do in the fit. ``likelihood`` fits each point once on all frames with δ and
σ optimised and compares the log marginal likelihoods per observation
(higher is better); it costs one fit per point instead of k, but it can
only compare models on the same data.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from ase import Atoms

from .errors import InputError

log = logging.getLogger("gapfit")

METHODS = ("cv", "likelihood")
SCORES = ("combined", "energy", "forces")


@dataclass
class SearchSpec:
    """A validated search file (see the module docstring)."""

    grid: Dict[str, List[Any]]
    method: str = "cv"
    folds: int = 3
    score: str = "combined"
    optimize: bool = False

    def points(self) -> List[Dict[str, Any]]:
        """Every combination of the grid's values, in the order the grid lists them."""
        names = list(self.grid)
        return [dict(zip(names, values)) for values in itertools.product(*(self.grid[n] for n in names))]


@dataclass
class SearchResult:
    """The points tried, their scores (lower is better) and the best point."""

    spec: SearchSpec
    rows: List[dict] = field(default_factory=list)

    @property
    def best(self) -> Dict[str, Any]:
        return min(self.rows, key=lambda r: r["score"])["settings"]

    def table(self) -> str:
        """The results as a text table, best marked."""
        names = list(self.spec.grid)
        what = {"cv": f"{self.spec.folds}-fold CV, {self.spec.score} score (lower is better)",
                "likelihood": "−log marginal likelihood per observation (lower is better)"}[self.spec.method]
        head = "  ".join(f"{n:>12}" for n in names) + f"  {'score':>10}  {'E RMSE meV/at':>13}  " \
            f"{'F RMSE meV/Å':>12}  {'seconds':>8}"
        lines = [f"search over {len(self.rows)} points: {what}", head]
        best = min(self.rows, key=lambda r: r["score"])
        for r in self.rows:
            vals = "  ".join(f"{str(r['settings'][n]):>12}" for n in names)
            e, f = r.get("energy_rmse_meV_per_atom"), r.get("forces_rmse_meV_per_A")
            lines.append(f"{vals}  {r['score']:>10.4g}  {_num(e):>13}  {_num(f):>12}  {r['seconds']:>8.1f}"
                         + ("  <- best" if r is best else ""))
        return "\n".join(lines)


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def load_search(path: str) -> SearchSpec:
    """Read and check a search file; every problem is an :class:`InputError` naming the file and key."""
    import yaml

    from .params import check_params
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: no such search file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, Mapping) or "grid" not in raw:
        raise InputError(f"{path}: a search file is a mapping with a 'grid' of parameter: [values] "
                         "(and optionally method, folds, score, optimize)")
    unknown = sorted(set(raw) - {"grid", "method", "folds", "score", "optimize"})
    if unknown:
        raise InputError(f"{path}: unknown key {unknown[0]!r}; use grid, method, folds, score, optimize")
    grid = raw["grid"]
    if not isinstance(grid, Mapping) or not grid:
        raise InputError(f"{path}: 'grid' must map parameter names to lists of values")
    out: Dict[str, List[Any]] = {}
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{path}: grid entry {name!r} must be a non-empty list of values, got {values!r}")
        for v in values:
            try:
                check_params({name: v})
            except InputError as exc:
                raise InputError(f"{path}: grid entry {name!r}: {exc}") from None
        out[str(name)] = list(values)
    method = raw.get("method", "cv")
    if method not in METHODS:
        raise InputError(f"{path}: method must be one of {', '.join(METHODS)}, got {method!r}")
    folds = raw.get("folds", 3)
    if not (isinstance(folds, int) and not isinstance(folds, bool) and folds >= 2):
        raise InputError(f"{path}: folds must be an integer ≥ 2, got {folds!r}")
    score = raw.get("score", "combined")
    if score not in SCORES:
        raise InputError(f"{path}: score must be one of {', '.join(SCORES)}, got {score!r}")
    optimize = raw.get("optimize", False)
    if not isinstance(optimize, bool):
        raise InputError(f"{path}: optimize must be true or false, got {optimize!r}")
    return SearchSpec(grid=out, method=method, folds=folds, score=score, optimize=optimize)


def run_search(params: Mapping[str, Any], frames: Sequence[Atoms], spec: SearchSpec,
               progress: bool = False) -> SearchResult:
    """Score every grid point (see the module docstring); ``params`` are the other GAP parameters."""
    from tqdm.auto import tqdm

    from .model import GAP
    frames = list(frames)
    result = SearchResult(spec)
    points = spec.points()
    folds = _folds(len(frames), spec.folds, int(params.get("seed", 0))) if spec.method == "cv" else None
    bar = tqdm(points, desc="search", unit="point", disable=not progress)
    for point in bar:
        t0 = time.perf_counter()
        settings = {**params, **point, "progress": False, "hygiene": False}
        if spec.method == "likelihood":
            model = GAP(**{**settings, "optimize": True, "calibration_fraction": 0.0}).fit(frames)
            n_obs = int(model.training_summary_["likelihood"]["n_rows"])
            row = {"score": -model.log_marginal_likelihood() / n_obs}
        else:
            if spec.optimize:
                settings["optimize"] = True
            row = _cross_validate(settings, frames, folds, spec.score)
        row.update(settings=point, seconds=time.perf_counter() - t0)
        result.rows.append(row)
        log.info("search point %s: score %.4g (%.1f s)", point, row["score"], row["seconds"])
    bar.close()
    return result


def _folds(n: int, k: int, seed: int) -> List[np.ndarray]:
    if n < k:
        raise InputError(f"{k}-fold cross-validation needs at least {k} frames, got {n}")
    order = np.random.default_rng(seed + 4241).permutation(n)
    return [np.sort(f) for f in np.array_split(order, k)]


def _cross_validate(settings: Mapping[str, Any], frames: List[Atoms], folds: List[np.ndarray], score: str) -> dict:
    from .data import where_of
    from .model import GAP
    e_err, f_err = [], []
    sigma_e = sigma_f = None
    for k, held in enumerate(folds):
        held_set = set(int(i) for i in held)
        train = [a for i, a in enumerate(frames) if i not in held_set]
        test = [frames[i] for i in held]
        model = GAP(**settings).fit(train)
        sigma_e, sigma_f = model.sigma_energy, model.sigma_forces
        preds = model.predict(test, stress=False)
        for i, a, p in zip(held, test, preds):
            lb = model.label_reader().read(a, where_of(a, int(i)))
            if lb.energy_eV is not None and len(a) > 1:
                e_err.append((p.energy - lb.energy_eV) / len(a))
            if lb.forces_eV_per_A is not None:
                f_err.append((p.forces - lb.forces_eV_per_A).ravel())
    e_rmse = float(np.sqrt(np.mean(np.square(e_err)))) if e_err else None
    f_rmse = float(np.sqrt(np.mean(np.square(np.concatenate(f_err))))) if f_err else None
    parts = {"energy": [e_rmse / sigma_e] if e_rmse is not None else [],
             "forces": [f_rmse / sigma_f] if f_rmse is not None else []}
    chosen = parts["energy"] + parts["forces"] if score == "combined" else parts[score]
    if not chosen:
        raise InputError(f"the '{score}' score needs {score if score != 'combined' else 'energy or force'} labels")
    return {"score": float(sum(chosen)),
            "energy_rmse_meV_per_atom": None if e_rmse is None else 1e3 * e_rmse,
            "forces_rmse_meV_per_A": None if f_rmse is None else 1e3 * f_rmse}


def apply_best(params: Dict[str, Any], result: SearchResult) -> Dict[str, Any]:
    """``params`` with the best point's settings (what the final fit uses)."""
    return {**params, **result.best}


def search_summary(result: SearchResult) -> Optional[dict]:
    """JSON record of a search for the model's training summary."""
    return {"method": result.spec.method, "folds": result.spec.folds, "score": result.spec.score,
            "best": result.best, "points": [{**r["settings"], "score": r["score"]} for r in result.rows]}
