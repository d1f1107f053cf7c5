"""The ``gapfit`` command line: ``gapfit fit`` and ``gapfit eval``.

Errors in the input end with one line on stderr naming file, frame and field,
and exit status 2; ``-T`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import List, Optional

EXIT_BAD_INPUT = 2

# (flag, GAP parameter, type, help) shared by the parser and the YAML config.
FIT_OPTIONS = [
    ("--cutoff", "cutoff", float, "SOAP cutoff radius in Å (default 5.0)"),
    ("--cutoff-transition-width", "cutoff_transition_width", float, "smooth cutoff region width in Å (default 1.0)"),
    ("--n-max", "n_max", int, "radial basis functions (default 8)"),
    ("--l-max", "l_max", int, "highest angular channel (default 8)"),
    ("--atom-sigma", "atom_sigma", float, "Gaussian width on each neighbour in Å (default 0.5)"),
    ("--backend", "backend", str, "SOAP backend: featomic (default, smooth) or dscribe"),
    ("--dscribe-mode", "dscribe_mode", str, "dscribe only: smooth (default) or analytic (fast, not smooth)"),
    ("--zeta", "zeta", float, "kernel exponent (default 4)"),
    ("--delta", "delta", float, "kernel scale δ in eV (default: from the data)"),
    ("--n-sparse", "n_sparse", int, "sparse points per species (default min(environments, 2000))"),
    ("--sparse-method", "sparse_method", str, "cur (default), fps or random"),
    ("--sigma-energy", "sigma_energy", float, "energy noise, eV/atom (default 0.003)"),
    ("--sigma-forces", "sigma_forces", float, "force noise, eV/Å (default 0.05)"),
    ("--sigma-virial", "sigma_virial", float, "virial noise, eV/atom (default 0.05)"),
    ("--jitter", "jitter", float, "relative jitter on K_MM (default 1e-8)"),
    ("--seed", "seed", int, "seed of the sparse-point selection (default 0)"),
    ("--energy-key", "energy_key", str, "info key of the energy (default: calculator 'energy')"),
    ("--forces-key", "forces_key", str, "arrays key of the forces (default: calculator 'forces')"),
    ("--stress-key", "stress_key", str, "info key of the stress (default: calculator 'stress')"),
]
CONFIG_ONLY = {"config_type_sigma", "e0", "n_sparse"}


class CLIError(Exception):
    """A user error the CLI reports in one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gapfit", description="Fit and use SOAP Gaussian Approximation Potentials.")
    p.add_argument("-T", "--traceback", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    f = sub.add_parser("fit", help="fit a model to labelled frames",
                       description="Fit a model to frames with energies (and forces, stresses).")
    f.add_argument("train", nargs="+", help="training files (any format ase.io reads; extended XYZ usual)")
    f.add_argument("-o", "--output", required=True, help="model file to write (.npz)")
    f.add_argument("--config", help="YAML file with GAP parameters (same names as the Python API)")
    f.add_argument("--log", help="log file (default: MODEL.log beside the model)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    f.add_argument("--train-error-frames", type=int, default=300,
                   help="frames (seeded sample) on which to report the training error; 0 to skip (default 300)")
    g = f.add_argument_group("model settings (override --config)")
    for flag, dest, typ, hlp in FIT_OPTIONS:
        g.add_argument(flag, dest=dest, type=typ, default=None, help=hlp)

    e = sub.add_parser("eval", help="errors of a model on labelled frames",
                       description="MAE and RMSE of energies, forces and stresses of a model on labelled frames.")
    e.add_argument("model", help="model file written by gapfit fit")
    e.add_argument("data", nargs="+", help="labelled frames")
    e.add_argument("--json", action="store_true", help="print exactly one JSON object")
    e.add_argument("--plot", help="write a parity plot, with calibration panels (PNG, PDF or SVG)")
    e.add_argument("--no-uncertainty", action="store_true",
                   help="skip predicted uncertainties and their calibration metrics (faster)")
    e.add_argument("--energy-key")
    e.add_argument("--forces-key")
    e.add_argument("--stress-key")
    m = sub.add_parser("md", help="molecular dynamics with a model, watching its uncertainty",
                       description="Run NVE, NVT (Langevin) or NPT (MTK) MD with a model; write an extended "
                                   "XYZ trajectory with per-atom uncertainties and a log.")
    m.add_argument("model", help="model file")
    m.add_argument("start", help="starting structure (last frame of the file is used)")
    m.add_argument("--ensemble", choices=["nve", "nvt", "npt"], default="nvt")
    m.add_argument("--temperature", type=float, default=300.0, help="K (initial velocities and thermostat)")
    m.add_argument("--timestep", type=float, default=1.0, help="fs")
    m.add_argument("--steps", type=int, default=1000)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    m.add_argument("--pressure", type=float, default=0.0, help="NPT pressure, GPa")
    m.add_argument("--interval", type=int, default=10, help="steps between trajectory frames and log lines")
    m.add_argument("--max-force-std", type=float, help="stop cleanly when an atom's force std norm exceeds this (eV/Å)")
    m.add_argument("-o", "--trajectory", default="md.xyz", help="trajectory file (extended XYZ)")
    m.add_argument("--log", default=None, help="log file (default: TRAJECTORY.log)")
    m.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    m.add_argument("--no-progress", action="store_true")
    ln = sub.add_parser("learn", help="on-the-fly learning: MD + reference calls where the model is unsure",
                        description="Run MD with a model that calls a reference calculator where its uncertainty "
                                    "passes a threshold, learns from the result and carries on.")
    ln.add_argument("start", help="starting structure")
    ln.add_argument("--reference", required=True, help="ASE calculator as MODULE:CLASS, e.g. ase.calculators.emt:EMT")
    ln.add_argument("--reference-kwargs", help="JSON object of keyword arguments for the reference calculator")
    ln.add_argument("-o", "--output", default="learn", help="output folder (default: learn)")
    ln.add_argument("--config", help="YAML file with GAP parameters for the model (when starting from nothing)")
    ln.add_argument("--model", help="start from this model file instead of from nothing (needs --initial-data)")
    ln.add_argument("--initial-data", help="the labelled frames the --model was fitted to")
    ln.add_argument("--temperature", type=float, default=300.0, help="K")
    ln.add_argument("--timestep", type=float, default=1.0, help="fs")
    ln.add_argument("--steps", type=int, default=1000)
    ln.add_argument("--ensemble", choices=["nve", "nvt"], default="nvt")
    ln.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    ln.add_argument("--seed", type=int, default=0)
    ln.add_argument("--threshold-force-std", type=float, help="call when an atom's force std exceeds this (eV/Å)")
    ln.add_argument("--threshold-relative", type=float,
                    help="call when an atom's force std exceeds this multiple of sigma_forces (default 1 if no threshold set)")
    ln.add_argument("--threshold-local-energy-std", type=float, help="call when a local-energy std exceeds this (eV)")
    ln.add_argument("--max-calls", type=int, default=100, help="cap on reference calls")
    ln.add_argument("--min-steps-between-calls", type=int, default=10)
    ln.add_argument("--check-interval", type=int, default=1, help="steps between uncertainty checks")
    ln.add_argument("--sparse-per-update", type=int, default=16,
                    help="most uncertain environments added as sparse points per call (default 16)")
    ln.add_argument("--resume", action="store_true", help="continue the run in the output folder")
    ln.add_argument("--json", action="store_true", help="last line printed: one JSON summary")
    ln.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status (also callable from tests)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import GapfitError
    try:
        if args.command == "fit":
            return _fit(args)
        if args.command == "md":
            return _md(args)
        if args.command == "learn":
            return _learn(args)
        return _eval(args)
    except (GapfitError, CLIError) as exc:
        if args.traceback:
            raise
        print(f"gapfit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"gapfit {args.command}: interrupted", file=sys.stderr)
        return 130


def _load_config(path: Optional[str]) -> dict:
    if not path:
        return {}
    import yaml
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise CLIError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise CLIError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(cfg, dict):
        raise CLIError(f"{path}: expected a mapping of parameter names to values")
    from .model import GAP
    known = set(GAP._PARAMS)
    bad = sorted(set(cfg) - known)
    if bad:
        raise CLIError(f"{path}: unknown parameter(s) {bad}; known: {sorted(known - {'progress'})}")
    return cfg


def _setup_logging(log_path: str) -> logging.Logger:
    log = logging.getLogger("gapfit")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for h in (logging.StreamHandler(sys.stderr), logging.FileHandler(log_path, mode="w")):
        h.setFormatter(fmt)
        log.addHandler(h)
    log.propagate = False
    return log


def _fit(args) -> int:
    import os

    import numpy as np

    from .data import get_labels, read_frames, where_of
    from .metrics import error_metrics, format_table, metrics_by_config_type
    from .model import GAP

    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise CLIError(f"{args.output}: folder {out_dir} does not exist")
    params = _load_config(args.config)
    for _, dest, _, _ in FIT_OPTIONS:
        v = getattr(args, dest)
        if v is not None:
            params[dest] = v
    params["progress"] = not args.no_progress
    log = _setup_logging(args.log or args.output + ".log")
    t0 = time.perf_counter()
    frames = read_frames(args.train)
    log.info("gapfit fit: %d frames, %d atoms from %s", len(frames), sum(len(a) for a in frames), args.train)
    model = GAP(**params)
    log.info("settings: %s", json.dumps({k: v for k, v in model.get_params().items()}, default=str))
    model.fit(frames)
    log.info("e0 (eV): %s; delta %.4g eV", {int(z): round(v, 6) for z, v in model.e0_.items()}, model.delta_)
    model.save(args.output)
    fit_s = time.perf_counter() - t0
    log.info("wrote %s (fit wall time %.1f s)", args.output, fit_s)
    n_check = min(args.train_error_frames, len(frames))
    if n_check > 0:
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(frames), size=n_check, replace=False))
        sub = [frames[k] for k in idx]
        preds = model.predict(sub)
        labels = [get_labels(a, where_of(a, k), energy_key=model.energy_key, forces_key=model.forces_key,
                             stress_key=model.stress_key) for k, a in zip(idx, sub)]
        n_at = [len(a) for a in sub]
        overall = error_metrics(preds, labels, n_at)
        log.info("training error on %d of %d frames:\n%s", n_check, len(frames),
                 format_table(overall, metrics_by_config_type(preds, labels, n_at)))
    return 0


def _eval(args) -> int:
    from .data import get_labels, read_frames, where_of
    from .metrics import error_metrics, format_table, metrics_by_config_type, parity_plot
    from .model_io import load_model

    model = load_model(args.model)
    frames = read_frames(args.data)
    labels = [get_labels(a, where_of(a, k), energy_key=args.energy_key or model.energy_key,
                         forces_key=args.forces_key or model.forces_key,
                         stress_key=args.stress_key or model.stress_key) for k, a in enumerate(frames)]
    t0 = time.perf_counter()
    preds = model.predict(frames)
    dt = time.perf_counter() - t0
    n_at = [len(a) for a in frames]
    overall = error_metrics(preds, labels, n_at)
    overall["predict_ms_per_atom"] = 1e3 * dt / max(1, sum(n_at))
    if not args.no_uncertainty:
        from .calibration import uncertainty_metrics
        preds = model.predict(frames, uncertainty=True)
        overall.update(uncertainty_metrics(preds, labels))
    if args.plot:
        parity_plot(preds, labels, n_at, args.plot)
    if args.json:
        print(json.dumps(overall))
    else:
        print(format_table(overall, metrics_by_config_type(preds, labels, n_at)))
        unc = {k: v for k, v in overall.items() if "sigma" in k or "spearman" in k}
        if unc:
            print("uncertainty: " + ", ".join(f"{k} {v:.3f}" for k, v in unc.items()))
        if args.plot:
            print(f"parity plot: {args.plot}")
    return 0


def _md(args) -> int:
    from .data import check_structure, read_frames
    from .md import run_md
    from .model_io import load_model

    model = load_model(args.model)
    atoms = read_frames([args.start])[-1]
    check_structure(atoms, atoms.info["gapfit_source"])
    for name in ("timestep", "steps", "interval"):
        if getattr(args, name) <= 0:
            raise CLIError(f"--{name} must be positive, got {getattr(args, name)}")
    res = run_md(model, atoms, ensemble=args.ensemble, temperature_K=args.temperature,
                 timestep_fs=args.timestep, steps=args.steps, seed=args.seed, friction_per_fs=args.friction,
                 pressure_GPa=args.pressure, trajectory=args.trajectory,
                 log=args.log or args.trajectory + ".log", interval=args.interval,
                 max_force_std=args.max_force_std, progress=not args.no_progress)
    summary = {"steps": res.steps, "stop_reason": res.stop_reason, "message": res.message,
               "trajectory": res.trajectory, "log": res.log, "max_force_std_seen": res.max_force_std_seen}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{res.steps} steps, stopped: {res.stop_reason} {res.message}".rstrip())
        print(f"trajectory {res.trajectory}, log {res.log}")
    return 0


def _learn(args) -> int:
    import os

    from .data import check_structure, read_frames
    from .learn import Threshold, learn, load_reference

    params = _load_config(args.config)
    reference = load_reference(args.reference, args.reference_kwargs)
    start = read_frames([args.start])[-1]
    check_structure(start, start.info["gapfit_source"])
    start.info.pop("gapfit_source", None)
    os.makedirs(args.output, exist_ok=True)
    _setup_logging(os.path.join(args.output, "gapfit.log"))
    thr = Threshold(force_std=args.threshold_force_std, force_std_relative=args.threshold_relative,
                    local_energy_std=args.threshold_local_energy_std)
    res = learn(start, reference, args.output, params=params, temperature_K=args.temperature,
                timestep_fs=args.timestep, steps=args.steps, ensemble=args.ensemble,
                friction_per_fs=args.friction, seed=args.seed, threshold=thr, max_reference_calls=args.max_calls,
                min_steps_between_calls=args.min_steps_between_calls, check_interval=args.check_interval,
                sparse_per_update=args.sparse_per_update, resume=args.resume, progress=not args.no_progress,
                initial_model=args.model, initial_data=args.initial_data)
    summary = {"model": res.model, "data": res.data, "reference_calls": res.reference_calls, "steps": res.steps,
               "stop_reason": res.stop_reason, "message": res.message}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{res.steps} steps, {res.reference_calls} reference calls, stopped: {res.stop_reason} "
              f"{res.message}".rstrip())
        print(f"model {res.model}, labelled data {res.data}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
