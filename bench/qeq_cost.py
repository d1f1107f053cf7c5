"""Cost of charge equilibration (QEq) against the whole prediction, 20 to 2,000 atoms, finite and periodic.

Reproduce (from the repository root, with ../shared beside it; about 8 min,
peak RSS 4.7 GB):

    python bench/carbon_chain.py --models qeq     # the model, bench/out/carbon_chain_qeq.npz (or this
    python bench/qeq_cost.py                      # script fits one with the hardness held fixed, ~2 min)
    python bench/qeq_cost.py --chains 2 16 --solve-only --repeats 3   # a quick check

The model is the QEq model of bench/carbon_chain.py (``GAP(charges="qeq")``
on carbon_chain_train.xyz: default short-range terms, χ from a SOAP of
cutoff 4 Å). It knows H and C only, so the systems are copies of a C10H2
chain (a test frame, straightened along x, 12 atoms) on a lattice: chains
along x every 16 Å, the lattice 3.2 Å apart in y and z (0.073 atoms/Å³;
each copy turned about its axis at random, seeded). The same atoms are
timed as a finite cluster (no cell: direct sums) and as a periodic box
(Ewald sums, stress asked). Sizes are chain counts: 2, 16 and 160 chains
(24, 192 and 1,920 atoms), total charge 0; for the exponents of (a) and (b)
alone, 336 chains (4,032 atoms).

Timed, each part on its own with the others' results precomputed (median
of ``--repeats`` rounds after a warm-up; the parts are timed in turn within
every round so that a busy machine slows them all alike; the machine is 2
cores shared with another long job, so single figures can be 1.5-2x off):

* (a) the Coulomb matrix C (:func:`gapfit.electrostatics.coulomb_matrix`);
* (b) the solve: Cholesky of C + diag(J) and the solves for q and for the
  adjoint μ (:class:`gapfit.qeq.Equilibration`: ``charges`` and ``project``);
* (c) ``pair_fields``: the forces (and virials) of ½qᵀCq and μᵀCq;
* (d) the χ term: (d1) its SOAP descriptors with gradients, (d2) χ and
  the μ-weighted gradient (``Term.predict`` + ``Term.predict_weighted``);
* (e) ``QEqBaseline.evaluate`` (energy, forces, virial where periodic):
  everything the charges cost;
* (f) ``model.predict`` (energy, forces, stress where periodic): the whole
  prediction, short-range terms included.

Memory: C alone is N² × 8 bytes; the peaks that tracemalloc sees in one
build of C and in one ``QEqBaseline.evaluate`` (NumPy's allocations) are
printed beside it. The scaling exponents are the slopes of log time against
log N between successive sizes; 10,000 and 50,000 atoms are extrapolated
from the largest size with p_fit, the slope over the sizes of 1,000 atoms
and more (and, for the factorisation, also as N³, the exponent it tends to
once BLAS runs at full speed). (e) and (f) are extrapolated as the sum of
their parts, each at its own exponent (the row's own exponent, fitted
between 192 and 1,920 atoms where C is not yet the largest part, is shown
in brackets and underestimates), the short-range terms linearly.

BLAS runs on one thread (``--blas-threads``): with another job on one of the
2 cores, a second OpenBLAS thread made every small BLAS call cost about
50 ms (the χ part of a 24-atom frame 57 ms against 1 ms) and the Cholesky of
2,016 atoms 0.43 s against 0.08 s, which would time the contention, not the
code.

Measured (``python bench/qeq_cost.py``; medians of 5, 2 shared cores with
another long job and, at times, other work: repeated runs moved single
entries by up to 2x, which is why 5 rounds and not 3):

| part | finite 24 | finite 192 | finite 1920 | finite 4032 | periodic 24 | periodic 192 | periodic 1920 | periodic 4032 |
|---|---|---|---|---|---|---|---|---|
| (a) Coulomb matrix | 0.0002 | 0.0023 | 0.235 | 1.170 | 0.0026 | 0.0235 | 2.739 | 19.7 |
| (b) Cholesky + solves | 0.0001 | 0.0006 | 0.0833 | 0.644 | 0.0002 | 0.0006 | 0.0828 | 0.666 |
| (c) pair_fields | 0.0001 | 0.0024 | 0.215 | – | 0.0026 | 0.0175 | 0.534 | – |
| (d1) χ descriptors | 0.0053 | 0.0433 | 0.804 | – | 0.0116 | 0.0718 | 0.856 | – |
| (d2) χ + weighted gradient | 0.0012 | 0.0080 | 0.0830 | – | 0.0015 | 0.0092 | 0.0968 | – |
| (e) QEq total (evaluate) | 0.0070 | 0.0557 | 1.114 | – | 0.0184 | 0.125 | 4.271 | – |
| (f) whole predict | 0.0324 | 0.356 | 19.2 | – | 0.0783 | 0.607 | 11.6 | – |
| (e) / (f): share of the prediction | 0.22 | 0.16 | 0.06 | – | 0.23 | 0.21 | 0.37 | – |
| C = N² × 8 bytes (MB) | 0.00461 | 0.295 | 29.5 | 130 | 0.00461 | 0.295 | 29.5 | 130 |
| peak traced in (a) (MB) | 0.0603 | 2.98 | 152 | – | 0.746 | 16.5 | 259 | – |
| peak traced in (e) (MB) | 2.22 | 26.8 | 438 | – | 3.84 | 53.7 | 685 | – |
| peak in (a) / (N² × 8 bytes) | 13.1 | 10.1 | 5.2 | – | 161.9 | 56.0 | 8.8 | – |

(Ewald parameters of the periodic boxes, from the accuracy rule at 1e-6:
α 0.641, 0.453, 0.309 /Å; r_c 6.9, 9.8, 14.6 Å; k_c 5.51, 3.98, 2.77 /Å.)

| part | kind | p, each step | p_fit | 10,000 atoms | 50,000 atoms |
|---|---|---|---|---|---|
| (a) Coulomb matrix | finite | 1.22, 2.00, 2.16 | 2.16 | 8.3 s | 4.5 min |
| (b) Cholesky + solves | finite | 0.64, 2.17, 2.76 | 2.76 | 7.9 s (as N³: 9.8 s) | 11 min (as N³: 20 min) |
| (c) pair_fields | finite | 1.37, 1.96 | 1.96 | 5.4 s | 2.1 min |
| (d1) χ descriptors | finite | 1.01, 1.27 | 1.27 | 6.5 s | 50 s |
| (d2) χ + weighted gradient | finite | 0.92, 1.02 | 1.02 | 0.45 s | 2.3 s |
| (e) QEq total (evaluate) | finite | 0.99, 1.30 | 1.30 | 29 s (own exponent 9.5 s) | 19 min (own exponent 77 s) |
| (f) whole predict | finite | 1.15, 1.73 | 1.73 | 2 min (own exponent 5.6 min) | 26 min (own exponent 91 min) |
| short-range terms, (f) − (e) | finite | 1.19, 1.78 | 1.78 | 5.7 min | 1e+02 min |
| (a) Coulomb matrix | periodic | 1.06, 2.07, 2.66 | 2.66 | 3.7 min | 4.4 h |
| (b) Cholesky + solves | periodic | 0.59, 2.16, 2.81 | 2.81 | 8.6 s (as N³: 10 s) | 13 min (as N³: 21 min) |
| (c) pair_fields | periodic | 0.91, 1.49 | 1.49 | 6.2 s | 68 s |
| (d1) χ descriptors | periodic | 0.88, 1.08 | 1.08 | 5.1 s | 29 s |
| (d2) χ + weighted gradient | periodic | 0.86, 1.02 | 1.02 | 0.52 s | 2.7 s |
| (e) QEq total (evaluate) | periodic | 0.92, 1.54 | 1.54 | 4 min (own exponent 54 s) | 4.6 h (own exponent 11 min) |
| (f) whole predict | periodic | 0.98, 1.28 | 1.28 | 4.6 min (own exponent 96 s) | 4.7 h (own exponent 13 min) |
| short-range terms, (f) − (e) | periodic | 1.00, 1.18 | 1.18 | 51 s | 5.7 min |

Memory: finite, building C peaks at 5.2 N² doubles (1,920 atoms), periodic
at 8.8 N²; the solve holds C, C + diag(J) and its factor (3 N²). At 10,000
atoms C is 0.8 GB and building it takes about 4 GB (finite) or 7 GB
(periodic); at 50,000 atoms C is 20 GB and building it 100-180 GB. The
charges (the sum of the parts) cost as much as the short-range terms (taken
linear) from about 27,000 atoms (finite) and 2,900 atoms (periodic). An
earlier run with ``--solve-only 336 672`` (peak RSS 5.3 GB) timed the finite
8,064-atom system: (a) 12.3 s, (b) 4.08 s (b: N^2.6 from 4,032 atoms).

After these figures, the periodic matrix build stopped forming the columns'
structure factors and the self and background terms as further N² arrays
(unit charges need neither): a 2,000-atom rattled rock-salt box with widths
0.8 Å went from 3.97 s to 2.76 s for ``coulomb_matrix`` (second of two
calls each, the same loaded machine), so the periodic (a) row above is about
1.4x pessimistic.

What this says:

* Below a few hundred atoms the charges cost about a fifth of the
  prediction, most of it the χ term's SOAP (d1), linear in N; the
  solve (b) is negligible (under 1 ms at 192 atoms).
* At 2,000 atoms the charges cost 1.1 s (finite) and 4.3 s (periodic) of
  19 s and 12 s; in the periodic box building C by Ewald summation is 2.7 s,
  64 % of the charges' cost, and it is the part that scales worst: its
  k-space sum is N² per k-vector, and the accuracy rule (set for sums over
  charges, N^1.5) lets the k-vectors grow with the box, so N^2.7 measured.
  The direct sum of a finite system is N² (N^2.2 measured). The Cholesky
  and its solves (b) are N³ but with BLAS's constant: 0.08 s at 1,920 atoms,
  0.65 s at 4,032, about 10 s at 10,000 and 20 min at 50,000.
* The limit is memory before time: C is N² doubles and its build holds 5-9
  N² at once, so a 10,000-atom frame needs 4-7 GB for C and a 50,000-atom
  frame 100-180 GB. Per frame, finite systems stay practical to about
  10,000 atoms (tens of seconds, a few GB) and periodic ones to a few
  thousand (20 s to build C at 4,032 atoms, minutes at 10,000). Beyond, an
  iterative solve with a mesh Ewald sum (C never formed) would be needed.
* The finite systems' short-range prediction (18 s at 1,920 atoms against
  7 s for the same atoms in a cell, N^1.8) is slowed by ASE's neighbour
  list on frames without a cell, not by the charges.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
import tracemalloc
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
from ase import Atoms
from ase.io import read
from threadpoolctl import threadpool_limits

from gapfit.electrostatics import coulomb_matrix, pair_fields
from gapfit.qeq import Equilibration, total_charge

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ions"
OUT = ROOT / "bench" / "out"
MODEL = OUT / "carbon_chain_qeq.npz"
#: chains per system: (along x, along y, along z)
LATTICES = {2: (1, 2, 1), 16: (2, 2, 4), 160: (2, 8, 10), 336: (3, 8, 14), 672: (6, 8, 14)}
PERIOD_X, SPACING = 16.0, 3.2            # Å
#: the hardness bench/carbon_chain.py's fit found (eV/e²): a fit with J held fixed skips the J search
HARDNESS = {"H": 0.001, "C": 2.205}
PARTS = ["a", "b", "c", "d1", "d2", "e", "f"]
BIG = 1000                                # atoms: the sizes the extrapolation's exponent is fitted over
LABELS = {"a": "(a) Coulomb matrix", "b": "(b) Cholesky + solves", "c": "(c) pair_fields",
          "d1": "(d1) χ descriptors", "d2": "(d2) χ + weighted gradient", "e": "(e) QEq total (evaluate)",
          "f": "(f) whole predict", "sr": "short-range terms, (f) − (e)"}


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def chain_template() -> Atoms:
    """A C10H2 test frame, centred, its long axis along x."""
    frames = read(DATA / "carbon_chain_test.xyz", ":")
    chain = next(f for f in frames if len(f) == 12).copy()
    p = chain.positions - chain.positions.mean(axis=0)
    _, _, vt = np.linalg.svd(p, full_matrices=False)
    rot = vt if np.linalg.det(vt) > 0 else vt * np.array([[1], [1], [-1]])
    chain.positions = p @ rot.T
    chain.info = {"charge": 0.0}
    return chain


def system(n_chains: int, periodic: bool, seed: int = 0) -> Atoms:
    """n_chains copies of the chain on the lattice of LATTICES, each turned about x at random."""
    if n_chains not in LATTICES:
        raise SystemExit(f"--chains: choose from {sorted(LATTICES)}")
    nx, ny, nz = LATTICES[n_chains]
    template = chain_template()
    rng = np.random.default_rng(seed)
    pos, numbers = [], []
    for ix in range(nx):
        for iy in range(ny):
            for iz in range(nz):
                phi = rng.uniform(0, 2 * np.pi)
                c, s = np.cos(phi), np.sin(phi)
                R = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
                shift = np.array([(ix + 0.5 * ((iy + iz) % 2)) * PERIOD_X, iy * SPACING, iz * SPACING])
                pos.append(template.positions @ R.T + shift)
                numbers.append(template.numbers)
    atoms = Atoms(numbers=np.concatenate(numbers), positions=np.concatenate(pos))
    atoms.info["charge"] = 0.0
    if periodic:
        atoms.cell = np.diag([nx * PERIOD_X, ny * SPACING, nz * SPACING])
        atoms.pbc = True
        atoms.wrap()
    return atoms


def get_model(path: Path):
    if path.exists():
        return gapfit.load(str(path)), f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    train = read(DATA / "carbon_chain_train.xyz", ":")
    t0 = time.perf_counter()
    model = gapfit.GAP(charges="qeq", coulomb={"hardness": HARDNESS}).fit(train)
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / "qeq_cost_model.npz"
    model.save(str(out))
    return model, f"fitted here in {time.perf_counter() - t0:.0f} s (hardness {HARDNESS} eV/e² fixed), {out.name}"


def parts(model, atoms: Atoms) -> dict:
    """The timed functions of one system, their inputs precomputed once."""
    qeq = model.state_.charge_part
    periodic = bool(atoms.pbc.all())
    widths = np.array([qeq.widths[int(z)] for z in atoms.numbers])
    J = np.array([qeq.hardness[int(z)] for z in atoms.numbers])
    Q = total_charge(atoms)
    desc = qeq.term.compute([atoms], gradients=True)[0]
    chi = qeq.term.predict(desc, qeq.alpha, forces=False, virial=False).local_energy_eV
    C, params = coulomb_matrix(atoms, widths, accuracy=qeq.accuracy)
    eq = Equilibration(C, J)
    q = eq.charges(chi, Q)
    mu = eq.project(C @ q)

    def solve():
        e = Equilibration(C, J)
        qq = e.charges(chi, Q)
        return e.project(C @ qq)

    def chi_part():
        qeq.term.predict(desc, qeq.alpha, forces=False, virial=False)
        return qeq.term.predict_weighted(desc, qeq.alpha, mu, virial=periodic)

    return {
        "a": lambda: coulomb_matrix(atoms, widths, accuracy=qeq.accuracy),
        "b": solve,
        "c": lambda: pair_fields(atoms, q, mu, widths, accuracy=qeq.accuracy, virial=periodic, parameters=params),
        "d1": lambda: qeq.term.compute([atoms], gradients=True),
        "d2": chi_part,
        "e": lambda: qeq.evaluate(atoms, forces=True, virial=periodic),
        "f": lambda: model.predict([atoms], forces=True, stress=periodic),
    }, params


def measure(fns: dict, repeats: int, timeout: float) -> dict:
    """Median seconds of each part, timed in turn within each round after one warm-up round; a part that
    takes longer than ``timeout`` s once is reported as (">", seconds) and not run again."""
    times = {k: [] for k in fns}
    over = {}
    signal.signal(signal.SIGALRM, _alarm)
    for rnd in range(repeats + 1):
        for k, fn in fns.items():
            if k in over:
                continue
            signal.setitimer(signal.ITIMER_REAL, timeout)
            t = time.perf_counter()
            try:
                fn()
            except Timeout:
                over[k] = time.perf_counter() - t
                continue
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if rnd > 0:                     # round 0 warms up (numba's kernels, caches)
                times[k].append(time.perf_counter() - t)
            elif time.perf_counter() - t > timeout / 3:
                times[k].append(time.perf_counter() - t)   # too slow to repeat: one timing is the answer
                over[k] = None
    return {k: (float(np.median(v)) if v else float("nan"), len(v), over.get(k)) for k, v in times.items()}


def peak_memory(fn) -> float:
    """Peak bytes NumPy (and Python) allocate during ``fn()``, by tracemalloc."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return float(peak - base)


def exponent(n0, t0, n1, t1) -> float:
    return float(np.log(t1 / t0) / np.log(n1 / n0)) if t0 > 0 and t1 > 0 and n1 != n0 else float("nan")


def fmt_s(t: float) -> str:
    if not np.isfinite(t):
        return "–"
    return f"{t:.4f}" if t < 0.1 else f"{t:.3f}" if t < 10 else f"{t:.1f}"


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}" if np.isfinite(x) else "–"


def human_time(t: float) -> str:
    if not np.isfinite(t):
        return "–"
    return f"{t:.2g} s" if t < 120 else f"{t / 60:.2g} min" if t < 7200 else f"{t / 3600:.2g} h"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(MODEL), help="a QEq model file (default: %(default)s; fitted "
                        "here when absent)")
    parser.add_argument("--chains", type=int, nargs="+", default=[2, 16, 160],
                        help=f"chain counts to time, from {sorted(LATTICES)} (12 atoms each; default 2 16 160)")
    parser.add_argument("--solve-only", type=int, nargs="*", default=[336], metavar="CHAINS",
                        help="larger systems where only (a) and (b) are timed, for their exponents (default 336: "
                        "4,032 atoms; 672, 8,064 atoms, takes over 5 GB; none: give the option alone)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per system (median; default 5)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds after which one part's run is stopped and reported as longer (default 600)")
    parser.add_argument("--max-memory-gb", type=float, default=4.0,
                        help="skip a --solve-only system whose Coulomb matrix build would need more (from the peak "
                        "measured at the largest full size; default 4)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads (default 1: with another job on one of the 2 cores, a second thread "
                        "times the contention, not the code)")
    parser.add_argument("--kinds", default="finite,periodic", help="finite, periodic or both (default)")
    args = parser.parse_args(argv)
    if not (DATA / "carbon_chain_test.xyz").exists():
        raise SystemExit(f"{DATA / 'carbon_chain_test.xyz'} not found: put ../shared beside the repository")
    model, origin = get_model(Path(args.model))
    qeq = model.state_.charge_part
    if qeq is None:
        raise SystemExit(f"{args.model} has no charge equilibration: give a model fitted with charges='qeq'")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    print(f"Model: {origin}; {qeq.describe()}\n", flush=True)

    with threadpool_limits(args.blas_threads):
        results, memory = run(model, kinds, args)
    report(results, memory, kinds, args)
    cmd = " ".join(["python", "bench/qeq_cost.py"] + (argv if argv is not None else sys.argv[1:]))
    print(f"\nCommand: {cmd}")


def run(model, kinds, args) -> tuple:
    """Time every system: ({(kind, N): {part: (median s, runs, over)}}, {(kind, N): peak bytes of (e)})."""
    results = {}    # (kind, n) -> {part: (median s, runs, over)}
    memory = {}
    for kind in kinds:
        for nc in sorted(args.chains):
            atoms = system(nc, kind == "periodic")
            n = len(atoms)
            d = atoms.get_all_distances(mic=kind == "periodic")
            molecule = np.arange(n) // len(chain_template())
            d_min = d[molecule[:, None] != molecule[None, :]].min()     # between chains
            t0 = time.perf_counter()
            fns, params = parts(model, atoms)
            setup = time.perf_counter() - t0
            res = measure(fns, args.repeats, args.timeout)
            results[(kind, n)] = res
            memory[(kind, n)] = (peak_memory(fns["a"]), peak_memory(fns["e"]))
            ew = (f"; Ewald α {params.alpha_per_A:.3f}/Å, r_c {params.real_cutoff_A:.1f} Å, "
                  f"k_c {params.kspace_cutoff_per_A:.2f}/Å, {n / atoms.get_volume():.3f} atoms/Å³") if params else ""
            print(f"{kind} {n} atoms (closest atoms of two chains {d_min:.2f} Å{ew}; setup {setup:.1f} s): "
                  + ", ".join(f"{k} {fmt_s(v[0])}" for k, v in res.items()), flush=True)
        full = [n for (k, n) in memory if k == kind]
        per_entry = memory[(kind, max(full))][0] / max(full) ** 2 if full else 80.0   # bytes of (a) per N²
        for nc in sorted(args.solve_only or []):
            atoms = system(nc, kind == "periodic")
            need = per_entry * len(atoms) ** 2
            if need > args.max_memory_gb * 1e9:
                print(f"{kind} {len(atoms)} atoms skipped: building C would take about {need / 1e9:.1f} GB "
                      f"({per_entry / 8:.1f} N² doubles, as measured at {max(full) if full else '?'} atoms), "
                      f"over --max-memory-gb {args.max_memory_gb:g}", flush=True)
                continue
            results[(kind, len(atoms))] = solve_only(model, atoms, args.repeats, args.timeout)
            print(f"{kind} {len(atoms)} atoms, (a) and (b) only: " + ", ".join(
                f"{k} {fmt_s(v[0])}" for k, v in results[(kind, len(atoms))].items() if k in "ab"), flush=True)
    return results, memory


def solve_only(model, atoms: Atoms, repeats: int, timeout: float) -> dict:
    """(a) and (b) alone for a large system (no warm-up: the smaller systems warmed the kernels up)."""
    qeq = model.state_.charge_part
    widths = np.array([qeq.widths[int(z)] for z in atoms.numbers])
    J = np.array([qeq.hardness[int(z)] for z in atoms.numbers])
    chi = np.zeros(len(atoms))          # the cost of the solve does not depend on χ
    box = {}

    def build():
        box["C"] = coulomb_matrix(atoms, widths, accuracy=qeq.accuracy)[0]

    def solve():
        e = Equilibration(box["C"], J)
        e.project(box["C"] @ e.charges(chi, 0.0))

    out = {p: (float("nan"), 0, None) for p in PARTS}
    signal.signal(signal.SIGALRM, _alarm)
    for p, fn in (("a", build), ("b", solve)):
        ts = []
        for _ in range(repeats):
            signal.setitimer(signal.ITIMER_REAL, timeout)
            t = time.perf_counter()
            try:
                fn()
            except Timeout:
                out[p] = (float("nan"), 0, time.perf_counter() - t)
                break
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            ts.append(time.perf_counter() - t)
            if ts[-1] > timeout / 3:
                break
        if ts:
            out[p] = (float(np.median(ts)), len(ts), None)
        if "C" not in box:
            break
    box.clear()
    return out


def report(results, memory, kinds, args) -> None:
    """The markdown tables: seconds per part and size, memory, scaling exponents and extrapolations."""

    print(f"\nSeconds (median of {args.repeats} interleaved rounds after a warm-up; '1 run' where a part took "
          f"over {args.timeout / 3:.0f} s once; {args.blas_threads} BLAS thread(s); 2 shared cores, another long "
          "job on one)\n")
    cols = [(kind, n) for kind in kinds for n in sorted({n for (k, n) in results if k == kind})]
    print("| part | " + " | ".join(f"{k} {n}" for k, n in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for p in PARTS:
        cells = []
        for c in cols:
            t, runs, over = results[c][p]
            cell = fmt_s(t) if over is None or runs else f"> {over:.0f} (stopped)"
            if runs == 1 and args.repeats > 1:
                cell += " (1 run)"
            cells.append(cell)
        print(f"| {LABELS[p]} | " + " | ".join(cells) + " |")
    print("| (e) / (f): share of the prediction | " + " | ".join(
        fmt_ratio(results[c]['e'][0] / results[c]['f'][0]) for c in cols) + " |")
    print("| C = N² × 8 bytes (MB) | " + " | ".join(f"{c[1] ** 2 * 8 / 1e6:.3g}" for c in cols) + " |")
    for idx, what in ((0, "(a)"), (1, "(e)")):
        print(f"| peak traced in {what} (MB) | " + " | ".join(
            f"{memory[c][idx] / 1e6:.3g}" if c in memory else "–" for c in cols) + " |")
    print("| peak in (a) / (N² × 8 bytes) | " + " | ".join(
        f"{memory[c][0] / (8 * c[1] ** 2):.1f}" if c in memory else "–" for c in cols) + " |")

    print("\nScaling: exponents p (time ∝ N^p) between successive sizes; p_fit, the least-squares slope over the "
          f"sizes ≥ {BIG} atoms (the last step when fewer than two), extrapolates from the largest size timed\n")
    print("| part | kind | p, each step | p_fit | 10,000 atoms | 50,000 atoms |")
    print("|---|---|---|---|---|---|")
    fitted, all_steps = {}, {}
    for kind in kinds:
        for p in PARTS + ["sr"]:
            ns, ts = series(results, kind, p)
            if len(ns) < 2:
                continue
            steps = [exponent(a, ta, b, tb) for a, ta, b, tb in zip(ns, ts, ns[1:], ts[1:])]
            big = [i for i, n in enumerate(ns) if n >= BIG]
            p_fit = (float(np.polyfit(np.log([ns[i] for i in big]), np.log([ts[i] for i in big]), 1)[0])
                     if len(big) >= 2 else steps[-1])
            fitted[(kind, p)] = (ns[-1], ts[-1], p_fit)
            all_steps[(kind, p)] = steps
    for kind in kinds:
        for p in PARTS + ["sr"]:
            if (kind, p) not in fitted:
                continue
            ns, ts = series(results, kind, p)
            steps, p_fit = all_steps[(kind, p)], fitted[(kind, p)][2]
            cells = []
            for N in (10_000, 50_000):
                cell = human_time(extrapolate(fitted, kind, p, N))
                if p == "b":        # the factorisation tends to N³ once BLAS runs at full speed
                    cell += f" (as N³: {human_time(ts[-1] * (N / ns[-1]) ** 3)})"
                if p in ("e", "f"):  # the sum of the parts, each at its own exponent
                    cell = human_time(extrapolate(fitted, kind, p + "+", N)) + " (own exponent " + cell + ")"
                cells.append(cell)
            print(f"| {LABELS[p]} | {kind} | " + ", ".join(f"{x:.2f}" for x in steps) + f" | {p_fit:.2f} | "
                  + " | ".join(cells) + " |")
    print("\n(e) at 10,000 and 50,000 atoms: the sum of (a), (b), (c), (d1), (d2), each at its own p_fit; (f): that "
          "plus the short-range terms at their time per atom (a local model's cost, linear in N); in brackets, "
          "the row's own exponent.\n")
    for kind in kinds:
        full = [n for (k, n) in memory if k == kind]
        if not full:
            continue
        n0 = max(full)
        ratio_a = memory[(kind, n0)][0] / (8.0 * n0 ** 2)
        mem = ", ".join(f"{N:,} atoms: C {8e-9 * N ** 2:.2g} GB, building it about {ratio_a * 8e-9 * N ** 2:.2g} GB"
                        for N in (10_000, 50_000))
        line = (f"{kind}: memory (building C peaks at {ratio_a:.1f} N² doubles at {n0:,} atoms; the solve holds "
                f"C, C + diag(J) and its factor, 3 N²): {mem}.")
        grid = np.geomspace(10, 1e6, 400)
        try:
            charge = np.array([extrapolate(fitted, kind, "e+", N) for N in grid])
            short = np.array([extrapolate(fitted, kind, "sr1", N) for N in grid])
        except KeyError:
            print(line)
            continue
        n_top = max(n for (k, n) in results if k == kind and np.isfinite(results[(k, n)]["f"][0]))
        over = grid[(charge >= short) & (grid >= n_top)]
        line += (f" The charges (the sum of the parts) cost as much as the short-range terms (linear) from about "
                 f"{over[0]:,.0f} atoms." if over.size else
                 " The charges stay cheaper than the short-range terms up to 10⁶ atoms at these exponents.")
        print(line)


def extrapolate(fitted: dict, kind: str, part: str, N: float) -> float:
    """Seconds at N atoms from the largest size timed and p_fit; ``"e+"``: the sum of (a)-(d2); ``"sr1"``: the
    short-range terms, linear in N; ``"f+"``: ``"e+"`` plus ``"sr1"``. KeyError when a part was not timed."""
    if part == "e+":
        return sum(extrapolate(fitted, kind, p, N) for p in ("a", "b", "c", "d1", "d2"))
    if part == "f+":
        return extrapolate(fitted, kind, "e+", N) + extrapolate(fitted, kind, "sr1", N)
    if part == "sr1":
        n, t, _ = fitted[(kind, "sr")]
        return t * N / n
    n, t, p = fitted[(kind, part)]
    return t * (N / n) ** p


def series(results, kind: str, part: str) -> tuple:
    """(sizes, seconds) of one part where measured; ``"sr"``: the short-range terms, (f) − (e)."""
    ns, ts = [], []
    for (k, n), res in sorted(results.items()):
        if k != kind:
            continue
        t = res["f"][0] - res["e"][0] if part == "sr" else res[part][0]
        if np.isfinite(t) and t > 0:
            ns.append(n)
            ts.append(t)
    return ns, ts


if __name__ == "__main__":
    main()
