"""Prediction cost on a rattled 512-atom Si cell against the cost of the SOAP alone.

Reproduce: python bench/predict_cost.py [MODEL]   (default bench/out/Si.npz,
made by `python bench/accuracy.py Si`). Prints ms/atom, median of repeats, for:
the default backend's SOAP with position and strain gradients alone, and the
model's energy + forces + stress, with and without uncertainties.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from ase.build import bulk

import gapfit

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
    feat = model.terms_[0].descriptor._calc
    t_featomic = timed(lambda: feat.compute(atoms, gradients=["positions", "strain"],
                                            selected_properties=model.terms_[0].descriptor._selection))
    t_soap = timed(lambda: model.terms_[0].descriptor.compute([atoms], gradients=True))
    t_pred = timed(lambda: model.predict([atoms], forces=True, stress=True))
    t_unc = timed(lambda: model.predict([atoms], forces=True, stress=True, uncertainty=True), repeats=2)
    print(f"Command: python bench/predict_cost.py {_rel(path)}")
    print(f"512-atom rattled Si, model with {model.n_sparse_total_} sparse points, D = {model.terms_[0].descriptor.n_features}\n")
    print("| step | ms/atom | ratio to SOAP+gradients |")
    print("|---|---|---|")
    print(f"| featomic SoapPowerSpectrum.compute with gradients (library call alone) | {1e3 * t_featomic / n:.2f} | {t_featomic / t_featomic:.2f} |")
    print(f"| gapfit descriptor layer (featomic + assembly + normalisation) | {1e3 * t_soap / n:.2f} | {t_soap / t_featomic:.2f} |")
    print(f"| energy + forces + stress | {1e3 * t_pred / n:.2f} | {t_pred / t_featomic:.2f} |")
    print(f"| energy + forces + stress + uncertainties | {1e3 * t_unc / n:.2f} | {t_unc / t_featomic:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "bench" / "out" / "Si.npz"))
