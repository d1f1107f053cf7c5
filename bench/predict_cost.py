"""Prediction cost on a rattled 512-atom Si cell against the cost of all the model's descriptors alone.

Reproduce: python bench/predict_cost.py [MODEL]   (default bench/out/Si.npz,
made by `python bench/accuracy.py Si`). Prints ms/atom, median of repeats, for:
each term's descriptors with position and strain gradients and its share of
the prediction, the baseline, and the model's energy + forces + stress, with
and without uncertainties, as ratios to the sum of the terms' descriptors.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase.build import bulk


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


def main(path):
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
    t_unc = timed(lambda: model.predict([atoms], forces=True, stress=True, uncertainty=True), repeats=2)
    rows.append(("energy + forces + stress (whole model)", t_pred))
    rows.append(("energy + forces + stress + uncertainties", t_unc))
    print(f"Command: python bench/predict_cost.py {_rel(path)}")
    print(f"512-atom rattled Si, terms {[t.type for t in st.terms]}, {model.n_sparse_total_} sparse points\n")
    print("| step | ms/atom | ratio to all terms' descriptors with gradients |")
    print("|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {1e3 * t / n:.3f} | {t / t_desc_total:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "bench" / "out" / "Si.npz"))
