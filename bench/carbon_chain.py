"""C10H2 / C10H3+ chains: a local model, a fixed-charge model and charge equilibration, same short-range settings.

Reproduce (from the repository root, with ../shared beside it; about 14 min,
11 of them the qeq fit):

    python bench/carbon_chain.py
    python bench/carbon_chain.py --models local,qeq
    python bench/carbon_chain.py --load      # the analysis again, on the models a run saved

The data (../shared/data/ions/carbon_chain_{train,test}.xyz, 102 / 26
frames) are the test case of Ko, Finkler, Goedecker and Behler (Nat. Commun.
12, 398, 2021): a proton added at one end of a C10H2 chain (12 atoms,
neutral) gives C10H3+ (13 atoms, charge +1), and the extra charge settles
along the whole chain, out to the far end, beyond any local cutoff. Frames
carry Hirshfeld charges (``initial_charges``) and their total charge
(``charge``). Fits through the Python API, the short-range part at gapfit's
defaults (seed 0) in every one:

* local: ``gapfit.GAP()``;
* fixed: the fixed-charge model, one charge per species. The script first
  asks ``gapfit.GAP(charges="learn")`` (charges learned from the energies and
  forces); on these data the fit refuses, rightly: per-species charges must
  give 10 q_C + 2 q_H = 0 (C10H2) and 10 q_C + 3 q_H = +1 (C10H3+), and
  these two constraints fix both, q_H = +1 and q_C = −0.2 e, so there is
  nothing left to learn. The model is then ``gapfit.GAP(charges={C: −0.2,
  H: +1})`` with the charges the compositions dictate (solved from the
  training frames' compositions and total charges, printed). Whatever the
  configuration, the extra proton's charge then sits on that proton;
* qeq: ``gapfit.GAP(charges="qeq")``, charge equilibration with
  electronegativities from a GP, fitted to the Hirshfeld charges (hardness
  fitted by likelihood, widths the covalent radii);
* oracle (extra, not a model that can predict new structures): ``gapfit.GAP(
  charges="initial_charges")``, a Coulomb baseline over each frame's own
  Hirshfeld charges, test frames included: what fixed electrostatics with
  the right charges would give.

Prints, per model: fit time (one fit each; a long job shares the 2 cores, so
times are indicative), test RMSEs of energy (meV/atom), forces (meV/Å, per
component) and charges (me, against Hirshfeld; the fixed model's are its
per-species charges), overall and for C10H2 and C10H3+ apart.

The two ends of the cation. In each C10H3+ frame the protonated end is the
end carbon (one C neighbour within 1.7 Å) bonded to two H (within 1.3 Å),
the far end the other end carbon. The far half is every atom closer to the
far-end carbon than to the protonated-end carbon (5 C and the far H; the
printout counts how many of those C lie beyond the default 5 Å cutoff of the
protonated carbon). Reported: (a) the Hirshfeld charge summed over the far half, mean ±
std over the cation test frames, against each model's (qeq: its predicted
charges; fixed: 5 q_C + q_H, the same in every frame; local: no charges),
and the RMSE of that half charge; for the neutral C10H2 the same is shown
for each of its two halves (both ends carry one H), whose charge is zero on
average; (b) each model's energy error on cations and on neutrals (mean,
signed, and RMSE, meV/atom) and the Pearson correlation, over the cation
test frames, of the energy error (meV/atom) with the reference far-half
charge: a model that misses the charge transfer leaves an error that
follows it. 12 cation frames: a correlation of |r| < 0.58 is not
significant at 5 %; (c) the force RMSE on each half of the cations, against
the neutrals; (d) with the qeq model only: the same cation geometry without
one H of its protonated end (charge 0) is the matching C10H2, and the change
of the qeq electrostatic energy, of the far half's charge and of the
electrostatic forces on the far half says how much of the two ends'
difference electrostatics carries at all.

Models are saved in bench/out/ (git-ignored); bench/qeq_cost.py reads
bench/out/carbon_chain_qeq.npz.

Published errors (Ko et al. 2021, on the full 10,019 frames; RMSE energy
meV/atom, forces meV/Å, charges me): 2G (local) 1.619 / 129.5 / −; 3G
(charges from a local network) 2.045 / 231.0 / 20.08; 4G (charge
equilibration) 1.194 / 78.00 / 6.577. This is a 128-frame subset (102
training frames; the paper's set has 10,019 frames), so absolute figures are
not comparable with these; the comparison that counts is between the models here.

Measured (``python bench/carbon_chain.py``, 14 min; 2 shared cores, another
job on one of them; the fits are deterministic, the times are not):

| model | fit (s) | E (meV/atom) | F (meV/Å) | q (me) |
|---|---|---|---|---|
| local | 46 | 1.157 | 105.2 | – |
| fixed (H +1, C -0.2) | 44 | 1.047 | 104.7 | 439.3 |
| qeq | 667 | 1.169 | 104.0 | 7.2 |
| oracle | 46 | 1.225 | 103.2 | 0.0 |
| Ko et al. 2G (local), 10,019 frames | | 1.619 | 129.5 | – |
| Ko et al. 3G (local charges), 10,019 frames | | 2.045 | 231.0 | 20.08 |
| Ko et al. 4G (charge equilibration), 10,019 frames | | 1.194 | 78.0 | 6.577 |

(``charges="learn"`` refused after 35 s, as above. The qeq fit's charge
step took most of its time: 80 likelihood evaluations of the search over the
hardness, 484 s of 667; it found J_H = 0.001 eV/e², the lower end of its
range, and J_C = 2.2 eV/e²; δ_χ 7.7 eV/e, σ_q 7.1 me, training charge RMSE
6.8 me.)

| model | C10H2 E | C10H2 F | C10H2 q | C10H3+ E | C10H3+ F | C10H3+ q |
|---|---|---|---|---|---|---|
| local | 0.614 | 99.7 | – | 1.569 | 110.8 | – |
| fixed | 0.640 | 99.2 | 400.8 | 1.377 | 110.4 | 477.3 |
| qeq | 0.624 | 98.1 | 6.0 | 1.583 | 110.0 | 8.4 |
| oracle | 0.577 | 96.6 | 0.0 | 1.692 | 109.8 | 0.0 |

(a) Far-half charge (e); all 5 far-half carbons lie beyond 5 Å of the
protonated carbon:

| model | C10H3+ far half: mean ± std | RMSE vs Hirshfeld | C10H2 halves: mean ± std | RMSE vs Hirshfeld |
|---|---|---|---|---|
| Hirshfeld (reference) | +0.469 ± 0.005 | – | +0.000 ± 0.005 | – |
| local | no charges | – | no charges | – |
| fixed | +0.000 ± 0.000 | 0.469 | +0.000 ± 0.000 | 0.005 |
| qeq | +0.487 ± 0.006 | 0.020 | -0.000 ± 0.004 | 0.006 |
| oracle | +0.469 ± 0.005 | 0.000 | +0.000 ± 0.005 | 0.000 |

(b) Energy error (meV/atom) and its correlation with the far-half charge
over the 12 C10H3+ test frames:

| model | C10H2 mean error | C10H2 RMSE | C10H3+ mean error | C10H3+ RMSE | r(error, far-half charge) |
|---|---|---|---|---|---|
| local | -0.122 | 0.614 | -0.366 | 1.569 | +0.15 |
| fixed | -0.174 | 0.640 | -0.181 | 1.377 | +0.24 |
| qeq | -0.209 | 0.624 | -0.384 | 1.583 | +0.16 |
| oracle | -0.115 | 0.577 | -0.509 | 1.692 | +0.34 |

(c) Force RMSE (meV/Å) on the halves of the C10H3+ test frames:

| model | C10H3+ protonated half | C10H3+ far half | C10H2 |
|---|---|---|---|
| local | 72.8 | 142.9 | 99.7 |
| fixed | 73.1 | 142.0 | 99.2 |
| qeq | 71.9 | 142.0 | 98.1 |
| oracle | 71.6 | 141.9 | 96.6 |

(d) The extra proton's effect at the far end by the qeq model's
electrostatics (each C10H3+ test frame against the same geometry without one
H of the protonated end, charge 0):

| change of | mean ± std over the 12 frames |
|---|---|
| electrostatic energy (eV) | +2.375 ± 0.007 (0.56 meV/atom std) |
| far-half charge (e) | +0.456 ± 0.005 |
| electrostatic forces on the far half, RMS (meV/Å) | 25.3 |

What this says. Where the charge goes is explained by charge equilibration
alone: the qeq model puts +0.487 e on the far half (Hirshfeld +0.469 e,
RMSE 0.020 e) and reaches 7.2 me on all charges (4G: 6.6 me on the full
data); per-species charges leave the far half neutral (all of the +1 on the
protonated half), and a local model has no charges. The energies and forces
do not follow: the four models are within 0.2 meV/atom and 2 meV/Å of each
other, the cations' energy errors are two to three times the neutrals' for all of
them, and no model's cation energy error correlates significantly with the
far-half charge. On these frames the far-half charge hardly varies (std
0.005 e), so what the proton does to the far end electrostatically is a
near-constant +2.375 eV (std 7 meV, below the 1.4-1.7 meV/atom × 13 atoms
errors) that every cation carries once, and a local model takes it up in the
energy of the protonated end; the electrostatic forces it adds at the far
end (25 meV/Å RMS) are small beside the 142 meV/Å far-half force errors,
which every model has, the oracle with the exact Hirshfeld charges included.
Those errors are not electrostatic at this level: the far end of the cation
is not the end of a neutral chain, but locally it looks the same. Ko et al.'s
4G networks also take the charges as inputs of the short-range energies; here
the short-range terms see only the geometry, and the charges change only the
electrostatic energy. With 102 training frames the short-range errors
dominate; the published 2G-to-4G gain came with 10,019.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase.io import read

from gapfit.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ions"
OUT = ROOT / "bench" / "out"
MODELS = ("local", "fixed", "qeq", "oracle")
#: Ko et al. 2021 on the full data (RMSE energy meV/atom, forces meV/Å, charges me)
PUBLISHED = {"2G (local)": (1.619, 129.5, None), "3G (local charges)": (2.045, 231.0, 20.08),
             "4G (charge equilibration)": (1.194, 78.00, 6.577)}
CC_BOND_A = 1.7   # C–C neighbours (bonds 1.2–1.4 Å, next neighbours 2.5 Å)
CH_BOND_A = 1.3   # C–H bonds (1.06–1.1 Å)


# ----------------------------------------------------------------------------- geometry of the chain
def ends(atoms) -> tuple:
    """(protonated-end carbon, far-end carbon) indices; for C10H2 the two end carbons in index order."""
    d = atoms.get_all_distances()
    C = np.flatnonzero(atoms.numbers == 6)
    H = np.flatnonzero(atoms.numbers == 1)
    n_cc = [(d[i, C] < CC_BOND_A).sum() - 1 for i in C]
    end = [int(i) for i, n in zip(C, n_cc) if n == 1]
    if len(end) != 2:
        raise ValueError(f"expected a chain with two end carbons, found {len(end)}")
    n_h = [int((d[i, H] < CH_BOND_A).sum()) for i in end]
    return (end[0], end[1]) if n_h[0] >= n_h[1] else (end[1], end[0])


def halves(atoms) -> tuple:
    """(atoms nearer the first end, atoms nearer the second end) as boolean masks, ends as :func:`ends`."""
    a, b = ends(atoms)
    d = atoms.get_all_distances()
    near_b = d[:, b] < d[:, a]
    return ~near_b, near_b


# ----------------------------------------------------------------------------- models
def composition_charges(frames) -> dict:
    """Per-species charges (e) that the frames' compositions and total charges dictate (least squares)."""
    species = sorted({int(z) for f in frames for z in f.numbers})
    N = np.array([[np.sum(f.numbers == z) for z in species] for f in frames], dtype=float)
    Q = np.array([float(f.info.get("charge", 0.0)) for f in frames])
    q, *_ = np.linalg.lstsq(N, Q, rcond=None)
    if np.abs(N @ q - Q).max() > 1e-8:
        raise SystemExit("the frames' compositions and charges admit no per-species charges")
    from ase.data import chemical_symbols
    return {chemical_symbols[z]: float(round(v, 12)) for z, v in zip(species, q)}


def fit(name: str, train) -> tuple:
    """(model, fit seconds, note) for one of MODELS."""
    note = ""
    if name == "local":
        est = gapfit.GAP()
    elif name == "qeq":
        est = gapfit.GAP(charges="qeq")
    elif name == "oracle":
        est = gapfit.GAP(charges="initial_charges")
    else:
        t0 = time.perf_counter()
        try:
            model = gapfit.GAP(charges="learn").fit(train)
            return model, time.perf_counter() - t0, "learned"
        except InputError as exc:
            note = (f'charges="learn" refused after {time.perf_counter() - t0:.0f} s: {exc} -> '
                    "fitting over the charges the compositions dictate")
            print(f"fixed: {note}", flush=True)
        est = gapfit.GAP(charges=composition_charges(train))
    t0 = time.perf_counter()
    model = est.fit(train)
    return model, time.perf_counter() - t0, note


def species_charges(model) -> dict:
    """{Z: e} of a fixed-charge Coulomb baseline, or None."""
    for part in model.state_.baseline.parts:
        q = getattr(part, "charges", None)
        if part.type == "coulomb" and isinstance(q, dict):
            from ase.data import atomic_numbers
            return {(int(z) if not isinstance(z, str) else atomic_numbers[z]): float(v) for z, v in q.items()}
    return None


def predicted_charges(name: str, model, preds, frames) -> list:
    """Per-frame charge arrays (e) of a model, or None where it has none."""
    if name == "qeq":
        return [p.charges for p in preds]
    if name == "oracle":
        return [f.get_initial_charges() for f in frames]
    table = species_charges(model)
    if table is None:
        return None
    return [np.array([table[int(z)] for z in f.numbers]) for f in frames]


def proton_effect(qeq, frames) -> dict:
    """What the extra proton changes at the far end, by the qeq model's electrostatics alone.

    For each C10H3+ frame, the same geometry without one H of the protonated end (total charge 0) is
    the matching C10H2; returns the change of the electrostatic energy (eV, per frame), of the far half's
    charge (e) and the RMS change of the electrostatic forces on the far half's atoms (eV/Å).
    """
    dE, dq, dF = [], [], []
    for f in frames:
        a, _ = ends(f)
        d = f.get_all_distances()
        extra = max(i for i in np.flatnonzero(f.numbers == 1) if d[a, i] < CH_BOND_A)
        neutral = f.copy()
        del neutral[extra]
        neutral.info["charge"] = 0.0
        keep = np.array([i for i in range(len(f)) if i != extra])
        far = halves(f)[1][keep]
        rc, rn = qeq.evaluate(f, virial=False), qeq.evaluate(neutral, virial=False)
        dE.append(rc.energy_eV - rn.energy_eV)
        dq.append(rc.charges_e[keep][far].sum() - rn.charges_e[far].sum())
        dF.append((rc.forces_eV_per_A[keep] - rn.forces_eV_per_A)[far].ravel())
    return {"dE": np.array(dE), "dq": np.array(dq), "dF_rms": rmse(np.concatenate(dF))}


# ----------------------------------------------------------------------------- statistics
def rmse(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.sqrt(np.mean(x ** 2))) if x.size else float("nan")


def fmt(x, digits=2) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--load", action="store_true",
                        help="load the models a previous run saved in bench/out/ instead of fitting them")
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    train_path, test_path = DATA / "carbon_chain_train.xyz", DATA / "carbon_chain_test.xyz"
    if not train_path.exists():
        raise SystemExit(f"{train_path} not found: put ../shared beside the repository")
    train, test = read(train_path, ":"), read(test_path, ":")
    cation = np.array([abs(float(f.info.get("charge", 0.0)) - 1.0) < 1e-6 for f in test])
    print(f"train: {len(train)} frames ({sum(abs(f.info.get('charge', 0.0)) > 0 for f in train)} C10H3+); "
          f"test: {len(test)} frames ({cation.sum()} C10H3+, {(~cation).sum()} C10H2)\n", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)

    # reference half-chain charges: cations' far half; neutrals' two halves
    ref_q = [f.get_initial_charges() for f in test]
    masks = [halves(f) for f in test]
    far = [m[1] for m in masks]                     # for cations: the far half
    cut = 5.0
    beyond = [int(np.sum((f.get_all_distances()[ends(f)[0]] > cut) & (f.numbers == 6) & m))
              for f, m, c in zip(test, far, cation) if c]
    ref_far = np.array([q[m].sum() for q, m in zip(ref_q, far)])

    rows, split, half_rows, energy_rows, force_rows, notes = [], [], [], [], [], []
    effect = None
    for name in names:
        try:
            if args.load:
                model, seconds, note = gapfit.load(str(OUT / f"carbon_chain_{name}.npz")), float("nan"), ""
            else:
                model, seconds, note = fit(name, train)
        except Exception as exc:
            print(f"{name}: fit failed: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc(limit=3)
            rows.append(f"| {name} | failed: {type(exc).__name__} | | | | |")
            continue
        if not args.load:
            model.save(str(OUT / f"carbon_chain_{name}.npz"))
        preds = model.predict(test, forces=True, stress=False)
        de = np.array([1e3 * (p.energy - f.get_potential_energy()) / len(f) for p, f in zip(preds, test)])
        df = [1e3 * (p.forces - f.get_forces()).ravel() for p, f in zip(preds, test)]
        qs = predicted_charges(name, model, preds, test)
        dq = None if qs is None else [1e3 * (q - r) for q, r in zip(qs, ref_q)]

        def err(sel):
            idx = np.flatnonzero(sel)
            e = rmse(de[idx])
            f = rmse(np.concatenate([df[i] for i in idx]))
            q = None if dq is None else rmse(np.concatenate([dq[i] for i in idx]))
            return e, f, q

        label = name
        if name == "fixed":
            table = species_charges(model)
            label = "fixed (" + ", ".join(f"{'H' if z == 1 else 'C'} {v:+.3g}" for z, v in sorted(table.items())) + ")"
            if note:
                notes.append(f"fixed: {note}")
        if name == "qeq":
            notes.append("qeq: " + model.state_.charge_part.describe())
            effect = proton_effect(model.state_.charge_part, [f for f, c in zip(test, cation) if c])
        e = err(np.ones(len(test), bool))
        rows.append(f"| {label} | {fmt(seconds, 0)} | {fmt(e[0], 3)} | {fmt(e[1], 1)} | {fmt(e[2], 1)} |")
        en, ec = err(~cation), err(cation)
        split.append(f"| {name} | {fmt(en[0], 3)} | {fmt(en[1], 1)} | {fmt(en[2], 1)} | "
                     f"{fmt(ec[0], 3)} | {fmt(ec[1], 1)} | {fmt(ec[2], 1)} |")
        # (a) half-chain charges
        if qs is None:
            half_rows.append(f"| {name} | no charges | – | no charges | – |")
        else:
            pf = np.array([q[m].sum() for q, m in zip(qs, far)])
            pn = np.concatenate([[q[m[0]].sum(), q[m[1]].sum()] for q, m, c in zip(qs, masks, cation) if not c])
            rn = np.concatenate([[r[m[0]].sum(), r[m[1]].sum()] for r, m, c in zip(ref_q, masks, cation) if not c])
            half_rows.append(f"| {name} | {pf[cation].mean():+.3f} ± {pf[cation].std():.3f} | "
                             f"{rmse(pf[cation] - ref_far[cation]):.3f} | {pn.mean():+.3f} ± {pn.std():.3f} | "
                             f"{rmse(pn - rn):.3f} |")
        # far-half forces: cations' far half against the neutrals' halves (locally the same environments)
        f_far = rmse(np.concatenate([df[i].reshape(-1, 3)[far[i]].ravel() for i in np.flatnonzero(cation)]))
        f_near = rmse(np.concatenate([df[i].reshape(-1, 3)[~far[i]].ravel() for i in np.flatnonzero(cation)]))
        f_neu = rmse(np.concatenate([df[i] for i in np.flatnonzero(~cation)]))
        force_rows.append(f"| {name} | {f_near:.1f} | {f_far:.1f} | {f_neu:.1f} |")
        # (b) energy errors and their correlation with the far-half charge
        r = float(np.corrcoef(de[cation], ref_far[cation])[0, 1])
        energy_rows.append(f"| {name} | {de[~cation].mean():+.3f} | {rmse(de[~cation]):.3f} | "
                           f"{de[cation].mean():+.3f} | {rmse(de[cation]):.3f} | {r:+.2f} |")
        print(f"{name}: fitted in {seconds:.0f} s; test E RMSE {e[0]:.3f} meV/atom, F RMSE {e[1]:.1f} meV/Å"
              + (f", q RMSE {e[2]:.1f} me" if e[2] is not None else ""), flush=True)

    print("\nTest RMSE (26 frames): energy meV/atom, forces meV/Å per component, charges me against Hirshfeld\n")
    print("| model | fit (s) | E (meV/atom) | F (meV/Å) | q (me) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    for label, (e, f, q) in PUBLISHED.items():
        print(f"| Ko et al. {label}, 10,019 frames | | {e} | {f} | {q if q is not None else '–'} |")
    print("\nBy composition (test RMSE)\n")
    print("| model | C10H2 E | C10H2 F | C10H2 q | C10H3+ E | C10H3+ F | C10H3+ q |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(split))
    n_beyond = f"{min(beyond)}" if min(beyond) == max(beyond) else f"{min(beyond)}-{max(beyond)}"
    print(f"\n(a) Charge of the far half of the chain (e): C10H3+ far half (atoms nearer the far-end carbon than "
          f"the protonated one; {n_beyond} of its 5 C beyond {cut:g} Å of the protonated carbon); "
          "C10H2: each of the two halves\n")
    print("| model | C10H3+ far half: mean ± std | RMSE vs Hirshfeld | C10H2 halves: mean ± std | RMSE vs Hirshfeld |")
    print("|---|---|---|---|---|")
    rn_all = np.concatenate([[r[m[0]].sum(), r[m[1]].sum()] for r, m, c in zip(ref_q, masks, cation) if not c])
    print(f"| Hirshfeld (reference) | {ref_far[cation].mean():+.3f} ± {ref_far[cation].std():.3f} | – | "
          f"{rn_all.mean():+.3f} ± {rn_all.std():.3f} | – |")
    print("\n".join(half_rows))
    print("\n(b) Energy error (meV/atom) by composition, and its Pearson correlation with the Hirshfeld far-half "
          f"charge over the {cation.sum()} C10H3+ test frames\n")
    print("| model | C10H2 mean error | C10H2 RMSE | C10H3+ mean error | C10H3+ RMSE | r(error, far-half charge) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(energy_rows))
    print("\n(c) Force RMSE (meV/Å) on the two halves of the C10H3+ test frames, against C10H2 (all atoms)\n")
    print("| model | C10H3+ protonated half | C10H3+ far half | C10H2 |")
    print("|---|---|---|---|")
    print("\n".join(force_rows))
    if effect is not None:
        print("\n(d) The extra proton's effect at the far end by the qeq model's electrostatics: each C10H3+ test "
              "frame against the same geometry without one H of the protonated end (C10H2, charge 0)\n")
        print("| change of | mean ± std over the 12 frames |")
        print("|---|---|")
        print(f"| electrostatic energy (eV) | {effect['dE'].mean():+.3f} ± {effect['dE'].std():.3f} "
              f"({1e3 * effect['dE'].std() / 13:.2f} meV/atom std) |")
        print(f"| far-half charge (e) | {effect['dq'].mean():+.3f} ± {effect['dq'].std():.3f} |")
        print(f"| electrostatic forces on the far half, RMS (meV/Å) | {1e3 * effect['dF_rms']:.1f} |")
    if notes:
        print()
        print("\n".join(notes))
    cmd = " ".join(["python", "bench/carbon_chain.py"] + (argv if argv is not None else sys.argv[1:]))
    print(f"\nCommand: {cmd}")


if __name__ == "__main__":
    main()
