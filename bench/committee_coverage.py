#!/usr/bin/env python
"""Do committee error bars cover extrapolation? Weight-space against predictive members.

Usage::

    python bench/committee_coverage.py                 # Cu (EMT data), Si and Mo (mlearn, skipped without ../shared)
    python bench/committee_coverage.py --systems Cu --members 32

For each model (``bench/out/<X>-default.npz``, fitted with the defaults by
``gapfit fit`` when absent):

* the test set's per-frame energy errors against several standard deviations:
  the model's predicted ``energy_std`` (calibrated), a weight-space committee
  (``kind="weights"``) and predictive committees (``kind="predictive"``, the
  residual draws at the prior's δ, scaled by the calibration factor s, or by
  max(s, 1), the default). Spearman
  of std and |error| over the frames, the fraction of frames with
  |error| ≤ 2σ, and the largest |error|/σ;
* for Cu, the relaxed (111) surface energy and vacancy formation energy from
  :func:`gapfit.validation.surface_energy` / ``vacancy_formation`` with each
  committee, against EMT's own (the model was fitted to EMT data without
  surfaces: an extrapolation);
* the check that predictive members carry the predicted variance: the
  ratio of the members' energy variance (uncalibrated) to the predicted
  (uncalibrated) energy variance, median over the test frames.

Prints markdown tables and the command.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
SHARED = ROOT.parent / "shared" / "data" / "mlearn"
DATA = {"Cu": (ROOT / "data" / "Cu_emt_train.xyz", ROOT / "data" / "Cu_emt_test.xyz"),
        "Si": (SHARED / "Si_train.xyz", SHARED / "Si_test.xyz"),
        "Mo": (SHARED / "Mo_train.xyz", SHARED / "Mo_test.xyz")}
KINDS = [("weights", dict(kind="weights")),
         ("predictive, residual at prior δ", dict(kind="predictive", residual_scale="prior")),
         ("predictive, residual calibrated", dict(kind="predictive", residual_scale="calibrated")),
         ("predictive, residual × max(s, 1) (default)", dict(kind="predictive", residual_scale="conservative"))]


def model_for(system: str):
    import gapfit
    path = OUT / f"{system}-default.npz"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "gapfit.cli", "fit", str(DATA[system][0]), "-o", str(path)], check=True)
    return gapfit.load(str(path))


def frame_table(system: str, model, test, K: int, seed: int) -> list:
    from gapfit.committee import Committee
    ref = np.array([a.get_potential_energy() for a in test])
    n = np.array([len(a) for a in test])
    pred = model.predict(test, forces=False, stress=False, uncertainty="energy")
    err = np.abs(np.array([p.energy for p in pred]) - ref) / n
    rows = [("predicted energy_std", np.array([p.energy_std for p in pred]) / n, None)]
    for label, kw in KINDS:
        com = Committee(model, K, seed=seed, **kw)
        cps = com.predict(test, forces=False, stress=False)
        pts = com.residual.n_points if com.residual is not None else 0
        rows.append((f"committee {K}: {label}", np.array([c.energy_std for c in cps]) / n, pts))
    out = []
    for label, std, pts in rows:
        z = err / std
        out.append((system, label, float(spearmanr(std, err).statistic), float(np.mean(z <= 2)), float(z.max()),
                    float(np.median(std) * 1e3), pts))
    types = [a.info.get("config_type", "") for a in test]
    return out, err, rows, types


def variance_ratio(model, test, K: int, seed: int) -> tuple:
    """Members' energy variance over the predicted one (both uncalibrated), median over frames, and U's size."""
    from gapfit.committee import Committee
    com = Committee(model, K, seed=seed, calibrated=False)
    cps = com.predict(test, forces=False, stress=False, uncertainty="energy", calibrated=False)
    r = np.array([c.energy_std ** 2 / c.mean.energy_std ** 2 for c in cps])
    return float(np.median(r)), float(np.percentile(r, 10)), float(np.percentile(r, 90)), com.residual.n_points


def cu_properties(model, K: int, seed: int) -> list:
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from gapfit.validation import CalculatorEvaluator, CommitteeEvaluator, relax, surface_energy, vacancy_formation
    start = bulk("Cu", "fcc", a=3.61, cubic=True)
    b_emt, _ = relax(start, EMT(), cell=True, fmax_eV_per_A=1e-4)
    emt = CalculatorEvaluator(EMT())
    ref = {"surface (111) J/m²": surface_energy(emt, b_emt, (1, 1, 1)).values["surface_energy_J_per_m2"],
           "vacancy eV": vacancy_formation(emt, b_emt).values["vacancy_formation_eV"]}
    out = []
    for label, kw in KINDS:
        ev = CommitteeEvaluator(model, K, seed=seed, **kw)
        b, _ = relax(start, ev.calculator, cell=True, fmax_eV_per_A=1e-4)
        s = surface_energy(ev, b, (1, 1, 1))
        v = vacancy_formation(ev, b)
        for name, r, key in (("surface (111) J/m²", s, "surface_energy_J_per_m2"),
                             ("vacancy eV", v, "vacancy_formation_eV")):
            val, std = r.values[key], r.std(key)
            out.append((name, label, val, std, ref[name], abs(val - ref[name]) / std))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", nargs="+", default=["Cu", "Si", "Mo"])
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from ase.io import read
    print(f"command: python bench/committee_coverage.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    tables, ratios, per_type = [], [], []
    for system in args.systems:
        if not DATA[system][1].exists():
            print(f"{system}: {DATA[system][1]} absent, skipped")
            continue
        t0 = time.perf_counter()
        model = model_for(system)
        test = read(str(DATA[system][1]), ":")
        rows, err, stds, types = frame_table(system, model, test, args.members, args.seed)
        tables += rows
        ratios.append((system,) + variance_ratio(model, test, args.members, args.seed))
        for t in sorted(set(types)):
            sel = np.array([x == t for x in types])
            per_type.append((system, t, int(sel.sum()), float(np.mean(err[sel]) * 1e3),
                             *[float(np.mean(err[sel] / s[sel] <= 2)) for _, s, _ in stds]))
        if system == "Cu":
            props = cu_properties(model, args.members, args.seed)
        print(f"{system}: {time.perf_counter() - t0:.0f} s", flush=True)
    print("\n### Test-set energies: std against |error| per atom\n")
    print("| system | std from | Spearman | frames |err| ≤ 2σ | max |err|/σ | median σ meV/atom | residual points |")
    print("|---|---|---|---|---|---|---|")
    for s, label, rho, cov, zmax, med, pts in tables:
        print(f"| {s} | {label} | {rho:+.2f} | {cov:.2f} | {zmax:.1f} | {med:.3f} | {'' if pts is None else pts} |")
    print("\n### Fraction of frames with |error| ≤ 2σ by configuration type\n")
    print("| system | config_type | frames | mean |err| meV/atom | " + " | ".join(
        ["predicted"] + [k for k, _ in KINDS]) + " |")
    print("|---|---|---|---|" + "---|" * (1 + len(KINDS)))
    for s, t, n, e, *c in per_type:
        print(f"| {s} | {t} | {n} | {e:.2f} | " + " | ".join(f"{x:.2f}" for x in c) + " |")
    print("\n### Predictive members carry the predicted variance (uncalibrated): member var / predicted var\n")
    print("| system | median | 10 % | 90 % | residual points |")
    print("|---|---|---|---|---|")
    for s, med, lo, hi, pts in ratios:
        print(f"| {s} | {med:.3f} | {lo:.3f} | {hi:.3f} | {pts} |")
    if "Cu" in args.systems:
        print("\n### Cu, model fitted to EMT data without surfaces: relaxed properties against EMT's own\n")
        print("| property | committee | model | std | EMT | |dev|/std |")
        print("|---|---|---|---|---|---|")
        for name, label, val, std, ref, z in props:
            print(f"| {name} | {label} | {val:.3f} | {std:.3f} | {ref:.3f} | {z:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
