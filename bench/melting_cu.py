"""Melting point of EMT Cu, and of a gapfit model fitted to EMT, by solid–liquid coexistence (issue 27, item 3).

Three stages, each cached in bench/out/ (git-ignored; never data/):

1. Training data from EMT MD (seeded): fcc solid of 32 and 108 atoms in
   isotropic NPT (MTK, 0 GPa) at 300–1400 K; liquid of 108 atoms melted at
   2500 K, then in Langevin NVT at 1200–2000 K at three densities (the NPT
   liquid volume at each T times 0.96, 1.00 and 1.04). 4 fs steps, a frame
   every 100 steps after 200 of equilibration (10 frames per run, 201 in
   all), labelled with EMT's energy, forces and stress, plus the isolated
   atom. Written to bench/out/melting_cu_train_f10_e200.xyz.
2. A gapfit model: ``gapfit.GAP(n_max=6, l_max=4, cutoff=4.5, n_sparse=N)``
   (n_max=8, l_max=8, the default, costs about 4× more per MD step), saved as
   bench/out/melting_cu_model_f10_e200_s1000.npz.
3. ``gapfit.validation.melting_point`` with EMT and with the model (committee
   of K members, free-energy perturbation of both phases at T_m), the same
   settings for both; the table gives T_m ± the zero-crossing fit error, the
   model's committee std, whether EMT's T_m lies within 2σ of the model's
   (σ = committee std and both fit errors combined) and the wall time of each
   stage. Plots and JSON go to bench/out/melting_cu_{emt,model}/.

Reproduce (full run, about 15 min for EMT and 1.5 h for the model on 2 cores):

    python bench/melting_cu.py
    python bench/melting_cu.py --emt-only            # EMT alone
    python bench/melting_cu.py --model-only --K 8    # the model alone (data and fit cached)

Measured (2026-12-06, 2 cores shared with other jobs; docs/melting.md has the plots):

    python bench/melting_cu.py --emt-only --steps 3000
    python bench/melting_cu.py --model-only --steps 3000 --temperatures 1100 1200 1300 1400 --guess 1250

| potential | T_m (K) | fit error (K) | committee std (K) | ΔH_m (eV/atom) | ΔS_m (k_B/atom) | ΔV_m (%) | wall |
|---|---|---|---|---|---|---|---|
| EMT | 1235 | 11 | | | | | 1650 s |
| gapfit (K = 8) | 1256 | 40 | 2 | 0.1334 | 1.232 | 7.2 | 3477 s |

EMT's T_m is 0.5σ from the model's against the combined error (42 K) but
ten committee std from it: the committee spread alone (FEP ΔT_k within
±4 K, ESS ≥ 0.96; the liquid's residual draws reached max_points) is far
below the coexistence runs' own statistical error. Data 782 s, fit 106 s.

Smoke test (a minute or two; numbers meaningless):

    python bench/melting_cu.py --smoke

Options set the sizes (--cell, --bulk-repeat), steps (--steps, --lattice-steps,
--melt-steps, --bulk-steps), temperatures (--guess, --temperatures), the time
step and the committee (--K, --seed).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import IsotropicMTKNPT

from gapfit.md import initial_velocities
from gapfit.validation import CalculatorEvaluator, CommitteeEvaluator, NoMeltingCrossing, melting_point, report_json

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
DT_FS = 4.0


def _rel(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _label(atoms: Atoms, kind: str) -> Atoms:
    """A copy of ``atoms`` with EMT's energy, forces and stress attached (as written to extended XYZ)."""
    a = Atoms(atoms.numbers, positions=atoms.get_positions(), cell=atoms.get_cell(), pbc=atoms.pbc)
    a.calc = EMT()
    e, f = a.get_potential_energy(), a.get_forces()
    s = a.get_stress() if all(a.pbc) else np.zeros(6)
    a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
    a.info["config_type"] = kind
    return a


def _sample(atoms: Atoms, dyn, n_frames: int, every: int, equil: int, kind: str):
    dyn.run(equil)
    out = []
    for _ in range(n_frames):
        dyn.run(every)
        out.append(_label(atoms, kind))
    return out


def make_data(path: Path, args) -> float:
    """EMT MD of fcc solid and liquid Cu (seeded); writes ``path``; returns the wall time."""
    t0 = time.perf_counter()
    frames = [_label(Atoms("Cu", positions=[[10, 10, 10]], cell=[20, 20, 20], pbc=False), "isolated_atom")]
    seed = 100
    npt = dict(timestep=DT_FS * units.fs, pressure_au=0.0, tdamp=100 * units.fs, pdamp=1000 * units.fs)
    for rep, temps in ((2, (300, 700, 1000, 1200, 1400)), (3, (600, 1000, 1300))):
        for T in temps:
            a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((rep,) * 3)
            a.calc = EMT()
            seed += 1
            initial_velocities(a, T, seed)
            frames += _sample(a, IsotropicMTKNPT(a, temperature_K=T, **npt), args.data_frames, 100,
                              args.data_equil, f"solid_{len(a)}")
            print(f"  solid {len(a)} atoms {T} K: {len(frames)} frames", flush=True)
    liquid = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    liquid.calc = EMT()
    initial_velocities(liquid, 2500, seed + 1)
    IsotropicMTKNPT(liquid, temperature_K=2500, **npt).run(5 * args.data_equil)
    for T in (1200, 1500, 1800, 2000):
        seed += 1
        IsotropicMTKNPT(liquid, temperature_K=T, **npt).run(int(2.5 * args.data_equil))  # its own volume at T
        v0 = liquid.get_volume()
        for scale in (0.96, 1.0, 1.04):
            a = liquid.copy()
            a.set_cell(liquid.cell * np.cbrt(scale * v0 / liquid.get_volume()), scale_atoms=True)
            a.calc = EMT()
            initial_velocities(a, T, seed)
            dyn = Langevin(a, timestep=DT_FS * units.fs, temperature_K=T, friction=0.02 / units.fs, fixcm=False,
                           rng=np.random.default_rng(seed))
            frames += _sample(a, dyn, args.data_frames, 100, args.data_equil, "liquid")
        print(f"  liquid 108 atoms {T} K: {len(frames)} frames", flush=True)
    ase.io.write(path, frames)
    return time.perf_counter() - t0


def load_or_fit(args, timings):
    """The training data and model in bench/out, made now when absent or of other settings."""
    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / f"melting_cu_train_f{args.data_frames}_e{args.data_equil}.xyz"
    if not data.exists():
        print(f"EMT training data -> {_rel(data)}", flush=True)
        timings.append(("EMT training data", make_data(data, args)))
    model_path = OUT / f"melting_cu_model_f{args.data_frames}_e{args.data_equil}_s{args.n_sparse}.npz"
    if model_path.exists():
        return gapfit.load(str(model_path)), data, model_path
    t0 = time.perf_counter()
    model = gapfit.GAP(n_max=6, l_max=4, cutoff=4.5, n_sparse=args.n_sparse, seed=0).fit(str(data))
    model.save(str(model_path))
    timings.append(("fit", time.perf_counter() - t0))
    return model, data, model_path


def run(evaluator, tag: str, args, timings):
    """The melting workflow with these settings; returns the PropertyResult (or None with no crossing)."""
    folder = OUT / f"melting_cu_{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        res = melting_point(evaluator, "Cu", 3.61, temperature_guess_K=args.guess, temperatures_K=args.temperatures,
                            cell=tuple(args.cell), timestep_fs=args.timestep, steps=args.steps,
                            interval=args.interval, lattice_steps=args.lattice_steps, melt_steps=args.melt_steps,
                            cool_steps=args.cool_steps, bins_per_cell=args.bins_per_cell,
                            bulk_phases=True if tag == "model" or args.emt_bulk else None,
                            bulk_repeat=args.bulk_repeat, bulk_steps=args.bulk_steps, seed=args.seed,
                            progress=not args.no_progress, plot_dir=str(folder))
    except NoMeltingCrossing as exc:
        print(f"{tag}: {exc}")
        res = exc.result
    wall = time.perf_counter() - t0
    for stage, sec in res.details["seconds"].items():
        timings.append((f"{tag}: {stage}", sec))
    timings.append((f"{tag}: total", wall))
    (folder / "result.json").write_text(json.dumps({"summary": report_json({"melting": res}),
                                                    "details": res.details}, indent=1, default=float))
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guess", type=float, default=1250.0, help="K: the coexistence start and the default grid")
    p.add_argument("--temperatures", type=float, nargs="+", help="K (default guess -100, -50, 0, +50, +100)")
    p.add_argument("--cell", type=int, nargs=3, default=[3, 3, 8], help="conventional cells, long along z")
    p.add_argument("--steps", type=int, default=5000, help="steps of each coexistence run")
    p.add_argument("--interval", type=int, default=10)
    p.add_argument("--timestep", type=float, default=DT_FS, help="fs")
    p.add_argument("--lattice-steps", type=int, default=1000)
    p.add_argument("--melt-steps", type=int, default=1000)
    p.add_argument("--cool-steps", type=int, default=250)
    p.add_argument("--bins-per-cell", type=int, default=None, help="z-bins per conventional cell (default: 2, or 1 "
                   "when 2 leave fewer than 12 atoms per bin)")
    p.add_argument("--bulk-repeat", type=int, default=3, help="bulk phases: repeat³ cells (3: 108 atoms)")
    p.add_argument("--bulk-steps", type=int, default=2000)
    p.add_argument("--emt-bulk", action="store_true", help="also run EMT's bulk phases (its ΔH_m and ΔS_m)")
    p.add_argument("--K", type=int, default=8, help="committee members")
    p.add_argument("--seed", type=int, default=0, help="MD seeds and committee seed")
    p.add_argument("--n-sparse", type=int, default=1000, help="sparse points of the model")
    p.add_argument("--data-frames", type=int, default=10, help="frames per training-data MD run")
    p.add_argument("--data-equil", type=int, default=200,
                   help="equilibration steps of each training-data run (the liquid melts for 5×, settles 2.5×)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--emt-only", action="store_true")
    g.add_argument("--model-only", action="store_true")
    p.add_argument("--smoke", action="store_true",
                   help="tiny settings to check the script runs: 2×2×4 cell, 300 and 2500 K, 200 steps, "
                        "short data and bulk runs (the numbers mean nothing)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.cell, args.steps, args.lattice_steps, args.melt_steps, args.cool_steps = [2, 2, 4], 200, 100, 250, 50
        args.temperatures = args.temperatures or [300.0, 2500.0]
        args.guess, args.bins_per_cell, args.bulk_repeat, args.bulk_steps = 1300.0, 1, 2, 150
        args.data_frames, args.data_equil, args.n_sparse, args.K = 2, 40, 200, 4
    cmd = "python bench/melting_cu.py " + " ".join(sys.argv[1:])
    print(f"Command: {cmd}", flush=True)
    timings = []
    results = {}
    if not args.emt_only:
        model, data, model_path = load_or_fit(args, timings)
        print(f"data {_rel(data)}, model {_rel(model_path)}", flush=True)
    if not args.model_only:
        results["EMT"] = run(CalculatorEvaluator(EMT()), "emt", args, timings)
    if not args.emt_only:
        results["gapfit"] = run(CommitteeEvaluator(model, args.K, seed=args.seed), "model", args, timings)

    ref = results["EMT"] if "EMT" in results else None
    temps = next(iter(results.values())).details["settings"]["temperatures_K"]
    print(f"\nCu, {args.cell[0]}×{args.cell[1]}×{args.cell[2]} conventional cells "
          f"({4 * args.cell[0] * args.cell[1] * args.cell[2]} atoms), runs at {', '.join(f'{t:g}' for t in temps)} K, "
          f"{args.steps} steps of {args.timestep:g} fs each; bulk phases {4 * args.bulk_repeat ** 3} atoms, "
          f"{args.bulk_steps} steps; committee K = {args.K}, seed {args.seed}\n")
    print("| potential | T_m (K) | fit error (K) | committee std (K) | ΔH_m (eV/atom) | ΔS_m (k_B/atom) "
          "| ΔV_m (%) | EMT within 2σ |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        v = r.values
        tm = v.get("melting_temperature_K", math.nan)
        fit = v.get("melting_temperature_fit_error_K", math.nan)
        members = r.members.get("melting_temperature_K")
        sd = float(np.std(members, ddof=1)) if members is not None and len(members) > 1 else math.nan
        within = ""
        if name == "gapfit" and ref is not None:
            tm_e = ref.values.get("melting_temperature_K", math.nan)
            fit_e = ref.values.get("melting_temperature_fit_error_K", math.nan)
            sigma = math.sqrt(np.nansum([sd ** 2, fit ** 2, fit_e ** 2]))
            if np.isfinite(tm) and np.isfinite(tm_e) and sigma > 0:
                within = f"{'yes' if abs(tm - tm_e) <= 2 * sigma else 'no'} (|Δ| = {abs(tm - tm_e):.0f} K, " \
                         f"σ = {sigma:.0f} K)"

        def fmt(key, f="{:.4f}"):
            x = v.get(key)
            return "" if x is None or not np.isfinite(x) else f.format(x)
        print(f"| {name} | {fmt('melting_temperature_K', '{:.0f}')} | "
              f"{fmt('melting_temperature_fit_error_K', '{:.0f}')} | {'' if not np.isfinite(sd) else f'{sd:.0f}'} | "
              f"{fmt('melting_enthalpy_eV_per_atom')} | "
              f"{fmt('melting_entropy_kB_per_atom', '{:.3f}')} | {fmt('melting_volume_change_percent', '{:.1f}')} | "
              f"{within} |")
    print("\n| potential | T (K) | rate (1/ps) | ± | interface velocity (m/s) | mean T (K) | saturated |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        for x in r.details["runs"]:
            print(f"| {name} | {x['temperature_K']:g} | {x['rate_per_ps']:+.4f} | {x['rate_error_per_ps']:.4f} | "
                  f"{x['interface_velocity_m_per_s']:+.1f} | {x['mean_temperature_K']:.0f} | {x['saturated']} |")
    if "gapfit" in results and "fep" in results["gapfit"].details:
        fep = results["gapfit"].details["fep"]
        print("\nFEP: ΔT_k (K) " + ", ".join(f"{t:+.1f}" for t in fep["delta_T_K"]) +
              f"; smallest ESS fraction solid {min(fep['ess_fraction_solid']):.3f}, liquid "
              f"{min(fep['ess_fraction_liquid']):.3f}")
    print("\n| stage | wall s |\n|---|---|")
    for stage, sec in timings:
        print(f"| {stage} | {sec:.0f} |")
    for name, r in results.items():
        for note in r.notes:
            print(f"note ({name}): {note}")


if __name__ == "__main__":
    main()
