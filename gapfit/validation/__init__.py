"""Validation of a potential by the properties users publish, each with a committee uncertainty.

One function per property (:func:`equation_of_state`, :func:`elastic_constants`,
:func:`phonons`, :func:`vacancy_formation`, :func:`surface_energy`,
:func:`nve`, :func:`stress_consistency`, :func:`melting_point`), each taking an
:class:`~gapfit.validation.evaluate.Evaluator` (a gapfit model with its
posterior committee, or any ASE calculator) and a structure, and returning a
:class:`~gapfit.validation.results.PropertyResult` (:func:`melting_point` takes an element and a
lattice constant instead of a structure). :func:`validate` runs a
list of them on a relaxed structure, as ``gapfit validate`` does.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from ase import Atoms

from .defects import surface_energy, vacancy_formation
from .dynamics import nve, stress_consistency
from .elastic import elastic_constants
from .eos import equation_of_state, plot_eos
from .evaluate import CalculatorEvaluator, CommitteeEvaluator, Evaluation, Evaluator
from .melting import NoMeltingCrossing, melting_point, plot_melting
from .phonons import gamma_frequencies, phonons, plot_phonons
from .results import PropertyResult
from .structures import lattice_structure, relax, require_periodic

__all__ = ["validate", "equation_of_state", "elastic_constants", "phonons", "gamma_frequencies",
           "vacancy_formation", "surface_energy", "nve", "stress_consistency", "Evaluator", "Evaluation",
           "CalculatorEvaluator", "CommitteeEvaluator", "PropertyResult", "lattice_structure", "relax",
           "report_json", "report_table", "melting_point", "plot_melting", "NoMeltingCrossing",
           "PROPERTIES"]

#: the properties :func:`validate` knows, in the order it runs them
PROPERTIES = ("eos", "elastic", "phonons", "vacancy", "surface", "nve", "stress_consistency")


def validate(evaluator: Evaluator, atoms: Atoms, properties: Dict[str, Any], *, plot_dir: Optional[str] = None,
             progress: bool = True, fmax_eV_per_A: float = 1e-4) -> Dict[str, PropertyResult]:
    """Relax ``atoms`` (cell and ions) with the model, then compute each property asked for.

    ``properties`` maps a name of :data:`PROPERTIES` to its options (a dict,
    or the Miller indices for ``"surface"``). Returns the results by name,
    with a ``"structure"`` entry describing the relaxed cell. With
    ``plot_dir``, writes ``eos.png`` and ``phonons.png`` there.
    """
    from tqdm.auto import tqdm
    unknown = sorted(set(properties) - set(PROPERTIES))
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {', '.join(PROPERTIES)}")
    require_periodic(atoms, "gapfit validate")
    relaxed, ok = relax(atoms, evaluator.calculator, cell=True, fmax_eV_per_A=fmax_eV_per_A)
    structure = PropertyResult("structure", {"n_atoms": len(relaxed),
                                             "relaxed_volume_per_atom_A3": relaxed.get_volume() / len(relaxed)},
                               details={"cell_A": relaxed.cell.tolist(), "symbols": relaxed.get_chemical_formula()})
    if not ok:
        structure.notes.append("the starting relaxation did not reach fmax")
    out: Dict[str, PropertyResult] = {"structure": structure}
    todo = [p for p in PROPERTIES if p in properties]
    if plot_dir:
        os.makedirs(plot_dir, exist_ok=True)
    bar = tqdm(todo, desc="validate", unit="property", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        opts = properties[name]
        if name == "eos":
            r = equation_of_state(evaluator, relaxed, **(opts or {}))
            if plot_dir:
                plot_eos(r, os.path.join(plot_dir, "eos.png"))
        elif name == "elastic":
            r = elastic_constants(evaluator, relaxed, **(opts or {}))
        elif name == "phonons":
            r = phonons(evaluator, relaxed, **(opts or {}))
            if plot_dir:
                plot_phonons(r, os.path.join(plot_dir, "phonons.png"))
        elif name == "vacancy":
            r = vacancy_formation(evaluator, relaxed, **(opts or {}))
        elif name == "surface":
            r = surface_energy(evaluator, relaxed, opts)
        elif name == "nve":
            r = nve(evaluator, relaxed, **(opts or {}))
        else:
            r = stress_consistency(evaluator, relaxed, **(opts or {}))
        out[name] = r
    return out


def report_json(results: Dict[str, PropertyResult], reference: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """One flat object: every figure and its ``_std``; with a reference, ``reference`` and ``deviation`` maps."""
    flat: Dict[str, Any] = {}
    for r in results.values():
        flat.update(r.to_json())
    flat["seconds"] = {k: round(r.seconds, 2) for k, r in results.items() if k != "structure"}
    notes = {k: r.notes for k, r in results.items() if r.notes}
    if notes:
        flat["notes"] = notes
    if reference:
        ref = {k: v for k, v in reference.items() if k in flat and flat[k] is not None}
        flat["reference"] = ref
        flat["deviation"] = {k: flat[k] - v for k, v in ref.items()}
        flat["deviation_percent"] = {k: 100.0 * (flat[k] - v) / v for k, v in ref.items() if v}
    return flat


def report_table(results: Dict[str, PropertyResult], reference: Optional[Dict[str, float]] = None) -> str:
    """A text table: figure, value ± committee std, and with a reference its value, deviation and |dev|/std."""
    reference = reference or {}
    rows = [f"{'figure':<34} {'value':>12} {'± std':>10}" + (f" {'reference':>11} {'deviation':>10} {'|dev|/std':>9}"
                                                         if reference else "")]
    for name, r in results.items():
        for k, v in r.values.items():
            s = r.std(k)
            line = f"{k:<34} {v:>12.5g} {('' if s is None else f'{s:.3g}'):>10}"
            if reference:
                ref = reference.get(k)
                if ref is not None:
                    dev = v - ref
                    ratio = f"{abs(dev) / s:.2f}" if s else ""
                    line += f" {ref:>11.5g} {dev:>+10.4g} {ratio:>9}"
            rows.append(line)
    for name, r in results.items():
        for n in r.notes:
            rows.append(f"note ({name}): {n}")
    secs = ", ".join(f"{k} {r.seconds:.1f} s" for k, r in results.items() if k != "structure")
    rows.append(f"wall time: {secs}")
    return "\n".join(rows)
