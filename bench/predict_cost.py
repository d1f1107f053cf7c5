"""Prediction cost, and what each uncertainty adds to it.

Reproduce (models made by `python bench/optimize.py Si aspirin --only default`):

    python bench/predict_cost.py [MODEL]            # rattled 512-atom Si (default bench/out/Si-default.npz)
    python bench/predict_cost.py --aspirin [MODEL]  # 100 aspirin test frames (default bench/out/aspirin-default.npz)

Si prints two tables (ms/atom, medians): each step of the prediction as a
ratio to the terms' descriptors alone; then energy + forces + stress with
each selection of uncertainties as a ratio to the prediction alone, the
selections timed in turn within each round so that a busy machine slows
them all alike; last, the ASE calculator's energy + forces + stress (by
default no std) against ``model.predict`` of the same. Aspirin prints the prediction against featomic's SOAP with
position gradients alone for the same frames, and what the uncertainty
selections add.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase.build import bulk
from ase.io import read


ROOT = Path(__file__).resolve().parents[1]


def _rel(path: str) -> str:
    """Path relative to the repository root when inside it (for the printed command)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def timed(fn, repeats=5):
    fn()  # warm up (numba, featomic)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


SELECTIONS = [("local-energy std", "local_energy"), ("local-energy + force std", ["local_energy", "forces"]),
              ("energy std", "energy"), ("all three stds", True), ("all three, exact route", "exact")]


def interleaved(fns: dict, rounds: int) -> dict:
    """Median seconds of each function, timed in turn within every round (after one warm-up call each)."""
    for fn in fns.values():
        fn()
    ts = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            ts[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in ts.items()}


def uncertainty_table(model, frames, n_atoms: int, rounds: int, selections=SELECTIONS) -> None:
    fns = {"energy + forces (+ stress)": lambda: model.predict(frames)}
    for name, sel in selections:
        fns[f"+ {name}"] = lambda sel=sel: model.predict(frames, uncertainty=sel)
    t = interleaved(fns, rounds)
    base = t["energy + forces (+ stress)"]
    print(f"\n| asked (median of {rounds} interleaved rounds) | ms/atom | ratio to energy + forces (+ stress) |")
    print("|---|---|---|")
    for name, sec in t.items():
        print(f"| {name} | {1e3 * sec / n_atoms:.3f} | {sec / base:.2f} |")


def calculator_table(model, atoms, rounds: int) -> None:
    """The ASE calculator's energy + forces + stress against ``model.predict`` of the same (no stds)."""
    from ase.calculators.calculator import all_changes
    calc = gapfit.GAPCalculator(model)  # the default: no std
    wanted = ["energy", "forces", "stress"]
    t = interleaved({"model.predict (energy, forces, stress)": lambda: model.predict([atoms]),
                     "GAPCalculator(model) (default, no std)": lambda: calc.calculate(atoms, wanted, all_changes)},
                    rounds)
    base = t["model.predict (energy, forces, stress)"]
    print(f"\n| E+F+S through (median of {rounds} interleaved rounds) | ms/atom | ratio to model.predict |")
    print("|---|---|---|")
    for name, sec in t.items():
        print(f"| {name} | {1e3 * sec / len(atoms):.3f} | {sec / base:.3f} |")


def si(path: str, rounds: int) -> None:
    model = gapfit.load(path)
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat((4, 4, 4))
    atoms.rattle(0.05, seed=0)
    n = len(atoms)
    st = model.state_
    rows = []
    t_desc_total = 0.0
    for k, term in enumerate(st.terms):
        t_d = timed(lambda: term.compute([atoms], gradients=True))
        d = term.compute([atoms], gradients=True)[0]
        t_p = timed(lambda: term.predict(d, st.alpha[st.column_slices[k]], forces=True, virial=True))
        t_desc_total += t_d
        rows.append((f"term {k + 1} {term.type}: descriptors with gradients", t_d))
        rows.append((f"term {k + 1} {term.type}: kernel and contraction (prediction part)", t_p))
    t_base = timed(lambda: st.baseline.evaluate(atoms))
    rows.append(("baseline (e0 + ZBL ...)", t_base))
    soap = next((t for t in st.terms if t.type == "soap"), None)
    if soap is not None:
        feat = soap.descriptor._calc
        t_featomic = timed(lambda: feat.compute(atoms, gradients=["positions", "strain"],
                                                selected_properties=soap.descriptor._selection))
        rows.insert(0, ("featomic SoapPowerSpectrum.compute with gradients (library call alone)", t_featomic))
    t_pred = timed(lambda: model.predict([atoms], forces=True, stress=True))
    rows.append(("energy + forces + stress (whole model)", t_pred))
    print(f"Command: python bench/predict_cost.py {_rel(path)}")
    print(f"512-atom rattled Si, terms {[t.type for t in st.terms]}, {model.n_sparse_total_} sparse points\n")
    print("| step | ms/atom | ratio to all terms' descriptors with gradients |")
    print("|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {1e3 * t / n:.3f} | {t / t_desc_total:.2f} |")
    uncertainty_table(model, [atoms], n, rounds)
    calculator_table(model, atoms, rounds)


def aspirin(path: str, rounds: int, n_frames: int = 100) -> None:
    data = ROOT.parent / "shared" / "data" / "rmd17" / "aspirin_test.xyz"
    if not data.exists():
        raise SystemExit(f"{data} not found: the aspirin benchmark reads ../shared/data/rmd17 in place")
    model = gapfit.load(path)
    frames = read(data, index=f":{n_frames}")
    n = sum(len(a) for a in frames)
    soap = next(t for t in model.state_.terms if t.type == "soap")
    desc = soap.descriptor
    t = interleaved({
        "featomic": lambda: desc._calc.compute(frames, gradients=["positions"], selected_keys=desc._keys,
                                               selected_properties=desc._selection),
        "predict": lambda: model.predict(frames),
    }, rounds)
    print(f"Command: python bench/predict_cost.py --aspirin {_rel(path)}")
    print(f"{n_frames} aspirin test frames ({n} atoms), terms {[t.type for t in model.state_.terms]}, "
          f"{model.n_sparse_total_} sparse points\n")
    print("| step | ms/atom | ratio to featomic alone |")
    print("|---|---|---|")
    print(f"| featomic SoapPowerSpectrum.compute with position gradients (library call alone) | "
          f"{1e3 * t['featomic'] / n:.3f} | 1 |")
    print(f"| gapfit predict: energy + forces, every term | {1e3 * t['predict'] / n:.3f} | "
          f"{t['predict'] / t['featomic']:.2f} |")
    uncertainty_table(model, frames, n, rounds, [s for s in SELECTIONS if s[1] != "exact"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", help="model file (default: the default model of the system)")
    p.add_argument("--aspirin", action="store_true", help="100 aspirin test frames instead of 512 Si atoms")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds (default 5)")
    a = p.parse_args()
    if a.aspirin:
        aspirin(a.model or str(ROOT / "bench" / "out" / "aspirin-default.npz"), a.rounds)
    else:
        si(a.model or str(ROOT / "bench" / "out" / "Si-default.npz"), a.rounds)


if __name__ == "__main__":
    main()
