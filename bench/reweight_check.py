"""Committee reweighting against each member's own MD (issue 27, item 2).

One MD run with the mean model of the default Cu model (fitted on
data/Cu_emt_train.xyz) writes every member's energy of a K-member posterior
committee into each saved frame; three of those members then run MD of their
own (``member_models`` of the same committee and seed) with the same
settings and MD seed. For the potential energy per atom, the volume per atom
(NPT) and the height of the first g(r) peak, each member's reweighted average
(``gapfit.analyze``) ± its statistical error is set against the average of its
own MD ± the block error (20 blocks), with the difference in units of the
combined error ``|Δ| / sqrt(err_rw² + err_direct²)`` and the member's ESS.

Reproduce: python bench/reweight_check.py [--steps 1500] [--repeat 2] [--K 8] [--members 0 1 2]
(--calibrate N: time N steps of the mean model and stop). Outputs (model,
trajectories, JSON) go to bench/out/; a model or trajectory already there
with the same settings is reused.

Measured, resolving: ``python bench/reweight_check.py --steps 6000 --uncalibrated --independent``
(12 ps, 1,181 frames per run; the members uncalibrated, so their spread
exceeds the MD noise for the volume; each member's MD with a seed of its own;
wall 1081 s for the mean run, 720–1195 s per member on a loaded machine):

| member | observable | reweighted ± err | direct MD ± block err | Δ / combined err | ESS (fraction) |
|---|---|---|---|---|---|
| 0 | energy (eV/atom) | 0.10683 ± 0.00355 | 0.10570 ± 0.00174 | +0.29 | 1071 (0.91) |
| 0 | volume (Å³/atom) | 12.1632 ± 0.0236 | 12.1537 ± 0.0110 | +0.37 | 1071 (0.91) |
| 0 | first g(r) peak | 4.675 ± 0.095 | 4.706 ± 0.039 | −0.30 | 1071 (0.91) |
| 1 | energy (eV/atom) | 0.10711 ± 0.00325 | 0.10439 ± 0.00218 | +0.70 | 1072 (0.91) |
| 1 | volume (Å³/atom) | 12.1647 ± 0.0213 | 12.1507 ± 0.0135 | +0.55 | 1072 (0.91) |
| 1 | first g(r) peak | 4.668 ± 0.085 | 4.744 ± 0.053 | −0.77 | 1072 (0.91) |
| 2 | energy (eV/atom) | 0.10785 ± 0.00327 | 0.10878 ± 0.00298 | −0.21 | 1072 (0.91) |
| 2 | volume (Å³/atom) | 12.2028 ± 0.0243 | 12.2235 ± 0.0236 | −0.61 | 1072 (0.91) |
| 2 | first g(r) peak | 4.648 ± 0.086 | 4.715 ± 0.076 | −0.59 | 1072 (0.91) |

Mean model 0.10831 ± 0.00301 eV/atom, 12.2055 ± 0.0205 Å³/atom, peak 4.631 ±
0.078; committee std 0.00292, 0.0856, 0.086. The volume is resolved (spread
4× the noise; members 0 and 1 run 0.05 Å³/atom below the mean model and their
reweighted averages follow); energy and peak agree within noise of the same
size as the spread.

Earlier, not resolving: ``python bench/reweight_check.py --steps 2000`` (fit 20 s; 257 s
wall for the mean model's run with the committee, 182–191 s for each member's;
two cores shared with other jobs and a CI run, load average 2–4.5, so the
times are indicative only). NPT (ASE's isotropic MTK, pdamp = 1000 steps,
0 GPa), 32 Cu atoms from fcc a = 3.61 Å, 800 K (the mean run's mean
temperature 788 K), 2 fs, 2000 steps (4 ps), a frame every 5 steps, the first
20 frames skipped: 381 frames per run. K = 8, committee seed = MD seed = 7, the
same start for every run. g(r) to 3.4 Å in 34 bins; its "peak height" is the
highest bin of the averaged g(r), as ``gapfit analyze`` gives it.

| member | observable | reweighted ± err | direct MD ± block err | Δ / combined err | ESS (fraction) | plateau | ρ | Δ / err with ρ |
|---|---|---|---|---|---|---|---|---|
| 0 | energy (eV/atom) | 0.10659 ± 0.00505 | 0.10633 ± 0.00483 | +0.04 | 381 (1.00) | 1.26 | 1.00 | +0.55 |
| 0 | volume (Å³/atom) | 12.1976 ± 0.0326 | 12.1935 ± 0.0319 | +0.09 | 381 (1.00) | 1.25 | 1.00 | +2.51 |
| 0 | first g(r) peak | 4.715 ± 0.134 | 4.707 ± 0.133 | +0.04 | 381 (1.00) | 1.24 | 0.98 | +0.30 |
| 1 | energy (eV/atom) | 0.10671 ± 0.00501 | 0.10648 ± 0.00488 | +0.03 | 381 (1.00) | 1.27 | 1.00 | +1.11 |
| 1 | volume (Å³/atom) | 12.1986 ± 0.0325 | 12.1975 ± 0.0334 | +0.02 | 381 (1.00) | 1.27 | 1.00 | +0.35 |
| 1 | first g(r) peak | 4.712 ± 0.133 | 4.715 ± 0.133 | −0.02 | 381 (1.00) | 1.21 | 0.97 | −0.11 |
| 2 | energy (eV/atom) | 0.10674 ± 0.00504 | 0.10709 ± 0.00499 | −0.05 | 381 (1.00) | 1.27 | 1.00 | −2.68 |
| 2 | volume (Å³/atom) | 12.1990 ± 0.0327 | 12.2021 ± 0.0338 | −0.07 | 381 (1.00) | 1.26 | 1.00 | −1.31 |
| 2 | first g(r) peak | 4.711 ± 0.134 | 4.691 ± 0.134 | +0.10 | 381 (1.00) | 1.22 | 0.99 | +1.04 |

Mean model: energy 0.10688 ± 0.00498 eV/atom, volume 12.2004 ± 0.0325
Å³/atom, peak 4.707 ± 0.131; committee std (all 8 members) 0.00045 eV/atom,
0.0038 Å³/atom, 0.012. Every member used the weights (no cumulant estimate).
Each member's own-model energy agrees with the committee's energy for it to
2e-9 eV (a rattled 32-atom cell).

How to read it. "Δ / combined err" treats the two averages as independent:
every |Δ| is below 0.1 of it. They are not independent: the runs share their
start and MD seed and NPT-MTK is deterministic after the initial velocities,
so the members' runs follow the mean model's for about 800–1000 steps (their
per-frame energies correlate at 0.95 over the run, 0.76–0.81 over its second
half), and the 20 block means, dominated by the slow barostat oscillation,
correlate at ρ ≈ 0.97–1.00. "Δ / err with ρ" divides by
sqrt(e1² + e2² − 2ρ·e1·e2) instead: 7 of 9 within 2, two at 2.5 and 2.7 (ρ
from 20 blocks, so these are rough). "plateau" is the largest block error
of the blocking curve (≥ 8 blocks) over the 20-block error of the direct run:
1.21–1.27, so the 20-block errors are about a quarter too small (4 ps holds
two barostat periods). The weights are uniform to ESS = 1.00 and the
committee spread is a tenth of the MD noise: at this size and length the
check cannot tell the members apart from each other or from the mean model,
only that reweighting does not move them away from their own MD. A resolving
check needs independent runs (other MD seeds, longer, several barostat periods)
or a committee spread above the noise.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import gapfit  # before numpy: gapfit sets OpenBLAS's thread timeout, read when numpy loads its copy
import numpy as np
import ase.io
from ase.build import bulk

from gapfit.analyze import analyze, read_trajectory
from gapfit.committee import Committee, member_models
from gapfit.md import ENSEMBLES, run_md
from gapfit.reweight import block_standard_error, blocking_curve, rdf, volume_per_atom

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
TRAIN = ROOT / "data" / "Cu_emt_train.xyz"
MODEL = OUT / "Cu-default.npz"


def _rel(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def load_model():
    """The default Cu model: bench/out/Cu-default.npz, fitted now if missing."""
    if MODEL.exists():
        return gapfit.load(str(MODEL)), 0.0
    t0 = time.perf_counter()
    model = gapfit.GAP().fit(str(TRAIN))
    model.save(str(MODEL))
    return model, time.perf_counter() - t0


def start_cell(rep: int):
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((rep,) * 3)


def run(model, args, tag: str, committee: int, steps: int, md_seed: int):
    """One MD run (reused when its trajectory and marker are there); returns (trajectory path, CPU s, wall s)."""
    stem = (f"reweight_{tag}_{args.ensemble}_n{4 * args.rep ** 3}_T{args.temperature:g}_s{steps}"
            f"_i{args.interval}_dt{args.timestep:g}_K{args.K}_seed{args.seed}"
            + (f"_md{md_seed}" if md_seed != args.seed else "") + ("_raw" if args.uncalibrated else ""))
    traj = OUT / f"{stem}.xyz"
    marker = OUT / f"{stem}.json"
    if traj.exists() and marker.exists():
        info = json.loads(marker.read_text())
        return str(traj), info["cpu_s"], info["wall_s"]
    if traj.exists():
        traj.unlink()
    atoms = start_cell(args.rep)
    c0, w0 = time.process_time(), time.perf_counter()
    res = run_md(model, atoms, ensemble=args.ensemble, temperature_K=args.temperature, timestep_fs=args.timestep,
                 steps=steps, interval=args.interval, seed=md_seed, committee=committee,
                 committee_seed=args.seed, committee_kind="weights", committee_calibrated=not args.uncalibrated,
                 trajectory=str(traj), log=str(OUT / f"{stem}.log"))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    if res.stop_reason != "completed":
        sys.exit(f"{tag}: MD stopped early ({res.stop_reason}: {res.message})")
    marker.write_text(json.dumps({"cpu_s": cpu, "wall_s": wall, "steps": res.steps}))
    return str(traj), cpu, wall


def block_means(series, n_blocks: int = 20) -> np.ndarray:
    """The means of ``n_blocks`` contiguous blocks, the first ``T mod n_blocks`` frames left out (as block_standard_error)."""
    a = np.asarray(series, dtype=float)
    length = len(a) // n_blocks
    return a[len(a) - n_blocks * length:].reshape(n_blocks, length).mean(axis=1)


def per_frame(frames, r_max: float, n_bins: int, at=None):
    """Per-frame energy/atom, volume/atom and g(r) at the peak bin (``at``: that of these frames' mean g by default)."""
    e = np.array([a.get_potential_energy() / len(a) for a in frames])
    g = rdf(frames, r_max, n_bins).g  # (T, n_bins)
    at = int(g.mean(axis=0).argmax()) if at is None else at
    return {"energy": e, "volume": volume_per_atom(frames), "rdf_peak": g[:, at]}


def direct(traj: str, skip: int, r_max: float, n_bins: int, reference: dict):
    """A member's own MD: per observable (average, block error, plateau ratio, correlation of its 20 block means
    with those of ``reference``, the mean model's run, frame for frame)."""
    frames = ase.io.read(traj, ":")[skip:]
    out = {}
    for name, series in per_frame(frames, r_max, n_bins).items():
        err = float(block_standard_error(series, 20))
        sizes, errs = blocking_curve(series, 8)
        n = min(len(series), len(reference[name]))
        rho = float(np.corrcoef(block_means(series[:n]), block_means(reference[name][:n]))[0, 1])
        out[name] = (float(series.mean()), err, float(np.max(errs)) / err if err > 0 else float("nan"), rho)
    return out, len(frames)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ensemble", default="npt" if "npt" in ENSEMBLES else "nvt")
    p.add_argument("--rep", type=int, default=2, help="fcc conventional cells per side (2: 32 atoms)")
    p.add_argument("--temperature", type=float, default=800.0)
    p.add_argument("--timestep", type=float, default=2.0, help="fs")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--interval", type=int, default=5)
    p.add_argument("--skip", type=int, default=20, help="frames left out at the start (equilibration)")
    p.add_argument("--K", type=int, default=8)
    p.add_argument("--seed", type=int, default=7, help="MD seed and committee seed")
    p.add_argument("--members", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--r-max", type=float, default=3.4)
    p.add_argument("--bins", type=int, default=34)
    p.add_argument("--calibrate", type=int, default=0, help="time this many mean-model steps and stop")
    p.add_argument("--uncalibrated", action="store_true",
                   help="the raw posterior committee (no calibration scale): a wider spread")
    p.add_argument("--independent", action="store_true",
                   help="each member's MD with an MD seed of its own (seed + 101·(k+1)): independent runs")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cmd = "python bench/reweight_check.py " + " ".join(sys.argv[1:])
    print(f"Command: {cmd}")
    model, fit_s = load_model()
    print(f"model {_rel(MODEL)}" + (f" (fitted now, {fit_s:.0f} s)" if fit_s else " (loaded)"))

    if args.calibrate:
        a = start_cell(args.rep)
        c0, w0 = time.process_time(), time.perf_counter()
        run_md(model, a, ensemble=args.ensemble, temperature_K=args.temperature, timestep_fs=args.timestep,
               steps=args.calibrate, interval=args.interval, seed=args.seed, committee=args.K,
               committee_seed=args.seed, trajectory=str(OUT / "reweight_calibrate.xyz"))
        print(f"{args.calibrate} steps, {len(a)} atoms: {(time.process_time() - c0) / args.calibrate:.3f} CPU s/step, "
              f"{(time.perf_counter() - w0) / args.calibrate:.3f} wall s/step")
        return

    # the members as models of their own, and a check that they are the committee's members
    com = Committee(model, args.K, seed=args.seed, kind="weights", calibrated=not args.uncalibrated)
    members = member_models(com)
    a0 = start_cell(args.rep)
    a0.rattle(0.05, seed=1)
    ce = com.predict(a0, forces=False, stress=False)[0].energy_eV
    for k in args.members:
        dk = abs(members[k].predict([a0], forces=False, stress=False)[0].energy - ce[k]) \
            if hasattr(members[k], "predict") else float("nan")
        print(f"member {k}: own-model energy − committee energy on a rattled cell = {float(dk):.2e} eV")

    timings = []
    traj_mean, cpu, wall = run(model, args, "mean", args.K, args.steps, args.seed)
    timings.append(("mean model, committee", cpu, wall))
    T = read_trajectory(traj_mean, skip=args.skip)
    ana = {"energy": analyze(T, "energy"), "rdf_peak": analyze(T, "rdf", r_max_A=args.r_max, n_bins=args.bins)}
    if args.ensemble == "npt":
        ana["volume"] = analyze(T, "volume")
    reference = per_frame(T.frames, args.r_max, args.bins)
    rows = []
    for k in args.members:
        md_seed = args.seed + 101 * (k + 1) if args.independent else args.seed
        traj_k, cpu, wall = run(members[k], args, f"member{k}", 0, args.steps, md_seed)
        timings.append((f"member {k}", cpu, wall))
        d, n_direct = direct(traj_k, args.skip, args.r_max, args.bins, reference)
        for obs in ("energy", "volume", "rdf_peak"):
            if obs not in ana:
                continue
            a = ana[obs]
            r = a.result
            if obs == "rdf_peak":
                rw = float(a.summary["peak_height_members"][k])
                rw_err = float(a.summary["peak_height_member_statistical_error"][k])
            else:
                rw, rw_err = float(r.member_average[k]), float(r.member_statistical_error[k])
            dm, derr, plateau, rho = d[obs]
            z = (rw - dm) / math.hypot(rw_err, derr)
            # the runs share their start and MD seed: their block means are correlated (rho), and the error of
            # the difference is sqrt(e1² + e2² − 2·rho·e1·e2), not the independent sum
            z_corr = (rw - dm) / math.sqrt(max(rw_err ** 2 + derr ** 2 - 2 * rho * rw_err * derr, 1e-300))
            rows.append(dict(member=k, observable=obs, reweighted=rw, reweighted_err=rw_err, direct=dm,
                             direct_err=derr, direct_plateau=plateau, z=z, rho=rho, z_corr=z_corr, ess=float(r.ess[k]),
                             ess_fraction=float(r.ess_fraction[k]), method=r.method[k],
                             committee_std=float(np.max(r.committee_std)) if obs != "rdf_peak"
                             else float(a.summary["peak_height_committee_std"]),
                             mean_model=(float(r.mean_model_average) if obs != "rdf_peak"
                                         else float(a.summary["peak_height_mean_model"])),
                             mean_model_err=(float(r.statistical_error) if obs != "rdf_peak"
                                             else float(a.summary["peak_height_statistical_error"]))))

    unit = {"energy": "eV/atom", "volume": "Å³/atom", "rdf_peak": "g(r) peak"}
    fmt = {"energy": "{:.5f}", "volume": "{:.4f}", "rdf_peak": "{:.3f}"}
    n_frames = len(T.frames)
    print(f"\n{args.ensemble.upper()}, {4 * args.rep ** 3} Cu atoms, {args.temperature:g} K, {args.timestep:g} fs, "
          f"{args.steps} steps, frame every {args.interval} steps, first {args.skip} frames skipped "
          f"({n_frames} frames analysed per run), committee K={args.K}, seed {args.seed}; "
          f"g(r) to {args.r_max:g} Å in {args.bins} bins")
    if args.ensemble != "npt":
        print("(NVT: no volume row)")
    print("\n| member | observable | reweighted ± err | direct MD ± block err | Δ / combined err | ESS (fraction) "
          "| method | direct err plateau ratio | ρ block means vs mean-model run | Δ / err of the difference (with ρ) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        f = fmt[x["observable"]]
        print(f"| {x['member']} | {x['observable']} ({unit[x['observable']]}) | {f.format(x['reweighted'])} ± "
              f"{f.format(x['reweighted_err'])} | {f.format(x['direct'])} ± {f.format(x['direct_err'])} | "
              f"{x['z']:+.2f} | {x['ess']:.0f} ({x['ess_fraction']:.2f}) | {x['method']} | "
              f"{x['direct_plateau']:.2f} | {x['rho']:.2f} | {x['z_corr']:+.2f} |")
    print("\n| observable | mean model ± block err | committee std (all K) |")
    print("|---|---|---|")
    for obs in ("energy", "volume", "rdf_peak"):
        x = next((x for x in rows if x["observable"] == obs), None)
        if x:
            f = fmt[obs]
            print(f"| {obs} ({unit[obs]}) | {f.format(x['mean_model'])} ± {f.format(x['mean_model_err'])} | "
                  f"{f.format(x['committee_std'])} |")
    print("\n| run | CPU s | wall s |\n|---|---|---|")
    for name, cpu, wall in timings:
        print(f"| {name} | {cpu:.0f} | {wall:.0f} |")
    (OUT / "reweight_check.json").write_text(json.dumps({"command": cmd, "rows": rows, "timings": timings}, indent=1))


if __name__ == "__main__":
    main()
