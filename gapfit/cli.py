"""The ``gapfit`` command line: fit, eval, inspect, validate, md, analyze, learn and lammps.

Errors in the input end with one line on stderr naming file, frame and field,
and exit status 2; ``-T`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional

if TYPE_CHECKING:
    from .params import ScalarFlag

EXIT_BAD_INPUT = 2

#: GAP parameters set by a flag of their own (a switch, a calculator, a string of several terms) rather
#: than by the flag derived from GAP's signature and docstring (:func:`fit_options`): {parameter: flag}.
DEDICATED_FIT_FLAGS = {
    "terms": "--gap",
    "baseline": "--baseline",
    "core_repulsion": "--no-core-repulsion",
    "charges": "--coulomb",
    "optimize": "--optimize",
    "optimize_delta": "--no-optimize-delta",
    "hygiene": "--no-hygiene",
    "progress": "--no-progress",
}
#: GAP parameters that only the --config YAML file sets (mappings). ``n_sparse`` has a flag for one number
#: for every species; its per-species mapping, too, is given in the config file.
CONFIG_ONLY = {"config_type_sigma", "e0", "sigma_floor", "coulomb"}
#: What ``--coulomb`` takes, for its help and its errors.
COULOMB_SPEC_FORM = ('"learn", "initial_charges", "qeq", or SPECIES=CHARGE pairs in e such as "Na=1 Cl=-1 O=-0.834 '
                     'H=0.417"')

# (flag, learn() argument, type, help) of the settings a learning run stores and --resume restores.
LEARN_OPTIONS = [
    ("--temperature", "temperature_K", float, "K"),
    ("--timestep", "timestep_fs", float, "fs"),
    ("--steps", "steps", int, "total MD steps of the run"),
    ("--ensemble", "ensemble", str, "nve or nvt"),
    ("--friction", "friction_per_fs", float, "Langevin friction, 1/fs"),
    ("--seed", "seed", int, "seed of the initial velocities and the thermostat"),
    ("--threshold-force-std", "threshold_force_std", float, "call when an atom's force std exceeds this (eV/Å)"),
    ("--threshold-relative", "threshold_force_std_relative", float,
     "call when an atom's force std exceeds this multiple of sigma_forces (1 if no threshold is set)"),
    ("--threshold-local-energy-std", "threshold_local_energy_std", float,
     "call when a local-energy std exceeds this (eV)"),
    ("--max-calls", "max_reference_calls", int, "cap on reference calls"),
    ("--min-steps-between-calls", "min_steps_between_calls", int, "fewest MD steps between two reference calls"),
    ("--check-interval", "check_interval", int, "steps between uncertainty checks"),
    ("--sparse-per-update", "sparse_per_update", int, "most uncertain environments added as sparse points per call"),
]


class CLIError(Exception):
    """A user error the CLI reports in one line."""


def parse_coulomb_spec(text: str):
    """The ``charges`` parameter of ``--coulomb TEXT``: ``{symbol: e}``, ``"learn"`` or ``"initial_charges"``.

    ``TEXT`` is ``"learn"``, ``"initial_charges"`` or whitespace- (or
    comma-) separated ``SPECIES=CHARGE`` pairs, ``SPECIES`` a chemical
    symbol or an atomic number and ``CHARGE`` in units of e:
    ``"Na=1 Cl=-1 O=-0.834 H=0.417"``. Raises :class:`CLIError` naming the
    flag, the part at fault and the expected form.
    """
    import math

    from ase.data import chemical_symbols

    from .params import CHARGE_MODES, species_number
    spec = " ".join(str(text).replace(",", " ").split())
    if spec in CHARGE_MODES:
        return spec
    if not spec:
        raise CLIError(f"--coulomb: empty; expected {COULOMB_SPEC_FORM}")
    charges: Dict[str, float] = {}
    for item in spec.split():
        name, sep, value = item.partition("=")
        z = species_number(name)
        if not sep or z is None:
            what = f"{name!r} is not a chemical element" if sep else f"{item!r} is not SPECIES=CHARGE"
            raise CLIError(f"--coulomb {text!r}: {what}; expected {COULOMB_SPEC_FORM}")
        try:
            q = float(value)
        except ValueError:
            q = math.nan
        if not math.isfinite(q):
            raise CLIError(f"--coulomb {text!r}: charge {value!r} of {name} is not a finite number; expected "
                           f"{COULOMB_SPEC_FORM}")
        symbol = chemical_symbols[z]
        if symbol in charges:
            raise CLIError(f"--coulomb {text!r}: {symbol} is given twice; expected {COULOMB_SPEC_FORM}")
        charges[symbol] = q
    return charges


def fit_options() -> List[ScalarFlag]:
    """The flags of ``gapfit fit`` that set one scalar GAP parameter each, in GAP's signature order.

    Derived from ``GAP.__init__``'s signature (name, type) and the class
    docstring (help), so a new scalar parameter gets its flag without being
    listed here; the parameters of :data:`DEDICATED_FIT_FLAGS` and
    :data:`CONFIG_ONLY` get none.
    """
    from .model import GAP
    from .params import scalar_flags
    return scalar_flags(GAP, exclude=set(DEDICATED_FIT_FLAGS) | CONFIG_ONLY)


class _HelpWithDefaults(argparse.HelpFormatter):
    """Help that states each option's default, where it has one and the text does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS or "default" in text
                or not action.option_strings
                or isinstance(action, argparse._StoreConstAction)):
            return text
        return text + " (default: %(default)s)"


def _subcommand(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand's parser: defaults in its help, and -T accepted after the subcommand too."""
    parser = sub.add_parser(name, formatter_class=_HelpWithDefaults, **kwargs)
    # SUPPRESS: absent here, the value given (or not) before the subcommand stands
    parser.add_argument("-T", "--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    return parser


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of the ``gapfit`` command line: global flags, then one subparser per entry of COMMANDS.

    ``command``: the subcommand about to be parsed, when known (:func:`main`
    passes it). The fit flags derived from GAP's signature need
    :mod:`gapfit.model` and its imports (scikit-learn, scipy, ase: about
    0.8 s), so they are built only when that is ``fit`` or unknown: ``gapfit
    --version``, ``--help`` and the other subcommands' parsing start without them.
    """
    from ._version import __version__
    p = argparse.ArgumentParser(prog="gapfit", description="Fit and use SOAP Gaussian Approximation Potentials.")
    p.add_argument("-T", "--traceback", action="store_true", help="show the full traceback on errors")
    p.add_argument("--version", action="version", version=f"gapfit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, entry in COMMANDS.items():
        if name == "fit":
            _add_fit_parser(sub, derived_flags=command in (None, "fit"))
        else:
            entry.add_parser(sub)
    return p


# -- gapfit fit --------------------------------------------------------------------------------------------

def _add_fit_parser(sub, derived_flags: bool = True) -> None:
    """The fit subcommand; ``derived_flags=False`` leaves out the flags read from GAP (see :func:`build_parser`)."""
    f = _subcommand(sub, "fit", help="fit a model to labelled frames",
                    description="Fit a model to frames with energies (and forces, stresses).")
    _fit_input_output_flags(f)
    _fit_model_flags(f.add_argument_group("model settings (override --config)"), derived_flags)
    _fit_parallel_flags(f.add_argument_group("parallel and distributed fits (docs/distributed.md)"))
    _fit_hygiene_flags(f.add_argument_group("hyperparameters and data hygiene (docs/hyperparameters.md)"))


def _fit_input_output_flags(f) -> None:
    f.add_argument("train", nargs="+", help="training files (any format ase.io reads; extended XYZ usual)")
    f.add_argument("-o", "--output", required=True, help="model file to write (.npz)")
    f.add_argument("--config", help="YAML file with GAP parameters (same names as the Python API)")
    f.add_argument("--log", help="log file (default: MODEL.log beside the model)")
    _format_flag(f)
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    f.add_argument("--train-error-frames", type=int, default=300,
                   help="frames (seeded sample) on which to report the training error; 0 to skip (default 300)")
    f.add_argument("--dry-run", action="store_true",
                   help="check the data and settings as a fit would, print a summary, write nothing")


def _fit_model_flags(g, derived_flags: bool = True) -> None:
    """The GAP parameters' flags: the dedicated ones, then one per scalar parameter (:func:`fit_options`)."""
    g.add_argument("--gap", dest="terms", default=None, metavar="STRING",
                   help='the terms as gap_fit writes them, e.g. "distance_2b cutoff=5.0 delta=2.0 n_sparse=30 : '
                        'soap cutoff=5.0 n_max=8 l_max=8 atom_sigma=0.5 zeta=4 n_sparse=2000" (docs/gap_fit.md); '
                        'default: the default recipe')
    g.add_argument("--no-core-repulsion", dest="core_repulsion", action="store_const", const=False, default=None,
                   help="no ZBL core repulsion in the baseline (on by default)")
    g.add_argument("--coulomb", dest="charges", default=None, metavar="SPEC",
                   help="add a Coulomb baseline (Ewald in periodic cells, direct sum in molecules) with these "
                        f"charges: {COULOMB_SPEC_FORM}; its settings (Gaussian widths, accuracy, screening) go in "
                        "--config as coulomb: {width: .., accuracy: .., screening: [r_in, r_out]} "
                        "(docs/electrostatics.md); qeq: charge equilibration with electronegativities learned from "
                        "the frames' initial_charges (docs/qeq.md)")
    _baseline_flags(g)
    for option in fit_options() if derived_flags else ():
        g.add_argument(option.flag, dest=option.dest, type=option.type, default=None, help=option.help)


def _fit_parallel_flags(d) -> None:
    par = d.add_mutually_exclusive_group()
    par.add_argument("--workers", type=int, default=None, metavar="N",
                     help="run the descriptor and design-row work on N local worker processes (a local Dask "
                          "cluster, one thread each)")
    par.add_argument("--dask", metavar="SCHEDULER_ADDRESS", default=None,
                     help="run it on the Dask cluster at this address (tcp://host:8786; the training files must "
                          "be readable by the workers at the same paths)")


def _fit_hygiene_flags(h) -> None:
    h.add_argument("--optimize", nargs="?", const="global", choices=["global", "config_type"], default=None,
                   help="choose each term's δ and the noise levels by maximising the log marginal likelihood "
                        "(no descriptor work); 'config_type': one σ set per config_type")
    h.add_argument("--no-optimize-delta", dest="optimize_delta", action="store_const", const=False, default=None,
                   help="with --optimize, keep every term's δ and optimise only the noise levels")
    h.add_argument("--no-hygiene", dest="hygiene", action="store_const", const=False, default=None,
                   help="do not compute each frame's leverage and leave-one-out z-scores (MODEL.hygiene.csv)")
    h.add_argument("--search", metavar="FILE.yaml", default=None,
                   help="choose descriptor settings (cutoff, n_max, l_max, zeta, n_sparse, ...) over a grid by "
                        "k-fold cross-validation or likelihood, then fit with the best (gapfit.search)")
    h.add_argument("--drop-outliers", type=float, metavar="Z", default=None,
                   help="after the fit, drop the frames whose hygiene score (largest leave-one-out |z|) exceeds Z "
                        "and fit again without them; the dropped frames are listed")


# -- gapfit eval, inspect, validate ------------------------------------------------------------------------

def _add_eval_parser(sub) -> None:
    e = _subcommand(sub, "eval", help="errors of a model on labelled frames",
                    description="MAE and RMSE of energies, forces and stresses of a model on labelled frames.")
    e.add_argument("model", help="model file written by gapfit fit")
    e.add_argument("data", nargs="+", help="labelled frames")
    e.add_argument("--json", action="store_true", help="print exactly one JSON object")
    _format_flag(e)
    e.add_argument("--plot", help="write a parity plot, with calibration panels (PNG, PDF or SVG)")
    e.add_argument("--no-uncertainty", action="store_true",
                   help="skip predicted uncertainties and their calibration metrics (faster)")
    e.add_argument("--uncertainty", default="energy,forces", metavar="LIST",
                   help="which predicted stds to compute and score, comma-separated from energy, forces, "
                        "local_energy, exact (default: energy,forces; force stds cost the most)")
    e.add_argument("-o", "--output", metavar="FILE.xyz",
                   help="also write every frame with the model's predictions (extended XYZ; gapfit_energy, "
                        "gapfit_stress and gapfit_energy_std in the frame's info, gapfit_forces, gapfit_energies "
                        "and the per-atom stds in its arrays; the reference labels are kept)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    _baseline_flags(e)
    e.add_argument("--energy-key")
    e.add_argument("--forces-key")
    e.add_argument("--stress-key")


def _add_inspect_parser(sub) -> None:
    i = _subcommand(sub, "inspect", help="rank training frames by leverage and leave-one-out residuals",
                    description="Data hygiene: each training frame's leverage and leave-one-out z-scores "
                                "(energy, forces, virial) under a fitted model, worst first, from the model's "
                                "factor without refits (docs/hyperparameters.md).")
    i.add_argument("model", help="model file (.npz)")
    i.add_argument("train", nargs="+", help="the frames the model was fitted to, in the same order")
    i.add_argument("--json", action="store_true", help="print one JSON object: {'frames': [...worst first...]}")
    _format_flag(i)
    i.add_argument("--plot", metavar="FILE", help="picture of score against leverage, worst frames labelled (PNG)")
    i.add_argument("--top", type=int, default=20, help="frames in the printed table (default 20)")
    i.add_argument("--no-progress", action="store_true")
    _baseline_flags(i)


def _add_validate_parser(sub) -> None:
    v = _subcommand(sub, "validate", help="properties of a model with committee uncertainties",
                    description="Relax a structure with the model and compute the properties asked for, each "
                                "as value ± the std of a posterior committee (docs/validation.md).")
    v.add_argument("model", help="model file (.npz)")
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--structure", metavar="FILE", help="starting structure, any ase.io format (last frame)")
    src.add_argument("--lattice", choices=["diamond", "fcc", "bcc", "hcp"], help="build the conventional cell")
    v.add_argument("--element", help="chemical symbol, with --lattice")
    _format_flag(v)
    v.add_argument("--a", type=float, help="lattice constant in Å, with --lattice (a start: the cell is relaxed)")
    v.add_argument("--c", type=float, help="hcp c in Å (default a·sqrt(8/3))")
    v.add_argument("--eos", action="store_true", help="energy-volume curve, V0, E0, bulk modulus")
    v.add_argument("--elastic", action="store_true", help="elastic constants with internal relaxation")
    v.add_argument("--phonons", action="store_true", help="phonon bands and DOS (phonopy), imaginary modes")
    v.add_argument("--supercell", type=int, nargs=3, metavar="N", help="phonon supercell (default: axes ≥ 10 Å)")
    v.add_argument("--vacancy", action="store_true", help="relaxed vacancy formation energy")
    v.add_argument("--surface", metavar="HKL", help="relaxed surface energy of (hkl), e.g. 111 or 1,-1,0")
    v.add_argument("--nve", action="store_true", help="short NVE run: drift and spread of the total energy")
    v.add_argument("--nve-steps", type=int, default=500, help="NVE steps of 1 fs (default 500)")
    v.add_argument("--temperature", type=float, default=300.0, help="NVE temperature in K (default 300)")
    v.add_argument("--stress-consistency", action="store_true", help="analytic stress against finite strains")
    v.add_argument("--all", action="store_true", help="every property above (surface: 111 unless --surface)")
    v.add_argument("--melting", action="store_true",
                   help="melting temperature by solid-liquid coexistence, with a --lattice fcc, bcc or diamond; "
                        "with a committee its spread by free-energy perturbation (docs/melting.md; long: minutes "
                        "to hours). Not part of --all")
    v.add_argument("--melting-guess", type=float, metavar="K",
                   help="temperature where the coexistence start is made (default: the median of "
                        "--melting-temperatures)")
    v.add_argument("--melting-temperatures", type=float, nargs="+", metavar="K",
                   help="temperatures of the coexistence runs (default: guess -100, -50, 0, +50, +100 K)")
    v.add_argument("--melting-steps", type=int, default=5000, metavar="N", help="MD steps of each coexistence run")
    v.add_argument("--melting-cell", type=int, nargs=3, default=[3, 3, 8], metavar="N",
                   help="conventional cells of the coexistence cell, long along z (default 3 3 8: 288 fcc atoms)")
    v.add_argument("--melting-timestep", type=float, default=4.0, metavar="FS",
                   help="MD time step in fs (4 suits Cu and heavier; lighter elements need less)")
    v.add_argument("--committee", type=int, default=16, metavar="K",
                   help="posterior committee size for the ± (default 16; 0 for none)")
    v.add_argument("--seed", type=int, default=0, help="seed of the committee (default 0)")
    v.add_argument("--committee-kind", choices=["predictive", "weights"], default="predictive",
                   help="members from the whole predictive distribution, the sparse points' residual included "
                        "(default), or from the weights' posterior only (docs/validation.md#the-committee)")
    v.add_argument("--reference", metavar="FILE.json", help="reference values by figure name, shown with deviations")
    v.add_argument("--json", action="store_true", help="print one JSON object: figure: value, figure_std: std")
    v.add_argument("--plot", metavar="DIR", help="write eos.png, phonons.png and melting.png into DIR")
    v.add_argument("--no-progress", action="store_true")
    _baseline_flags(v)


# -- gapfit md, learn --------------------------------------------------------------------------------------

def _add_md_parser(sub) -> None:
    m = _subcommand(sub, "md", help="molecular dynamics with a model, watching its uncertainty",
                    description="Run NVE, NVT (Langevin) or NPT (MTK) MD with a model; write an extended "
                                "XYZ trajectory with per-atom uncertainties and a log.")
    m.add_argument("model", help="model file")
    m.add_argument("start", help="starting structure (last frame of the file is used)")
    m.add_argument("--ensemble", choices=["nve", "nvt", "npt"], default="nvt",
                   help="nve: velocity Verlet; nvt: Langevin; npt: isotropic MTK barostat")
    _format_flag(m)
    m.add_argument("--temperature", type=float, default=300.0, help="K (initial velocities and thermostat)")
    m.add_argument("--timestep", type=float, default=1.0, help="fs")
    m.add_argument("--steps", type=int, default=1000, help="MD steps")
    m.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and the thermostat")
    m.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    m.add_argument("--pressure", type=float, default=0.0, help="NPT pressure, GPa")
    m.add_argument("--interval", type=int, default=10, help="steps between trajectory frames and log lines")
    m.add_argument("--max-force-std", type=float, help="stop cleanly when an atom's force std norm exceeds this (eV/Å)")
    m.add_argument("--max-local-energy-std", type=float,
                   help="stop cleanly when an atom's local-energy std exceeds this (eV); alone, MD computes only "
                        "local-energy stds, much cheaper than force stds")
    m.add_argument("--check-interval", type=int, default=None,
                   help="steps between tests of the --max-* thresholds (default 1: every step); the stds cost "
                        "more than the step itself, so checking every N steps makes watched MD nearly N times "
                        "cheaper, at the price of stopping up to N-1 steps later")
    m.add_argument("-o", "--trajectory", default="md.xyz", help="trajectory file (extended XYZ)")
    m.add_argument("--log", default=None, help="log file (default: TRAJECTORY.log)")
    m.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    m.add_argument("--committee", type=int, default=0, metavar="K",
                   help="write every member's energy (and stress) of a K-member posterior committee into each "
                        "trajectory frame, for gapfit analyze (0: none; 8 to 16 give a usable spread)")
    m.add_argument("--committee-seed", type=int, default=0, metavar="S", help="seed of the committee's members")
    m.add_argument("--committee-kind", choices=["predictive", "weights"], default="predictive",
                   help="members from the whole predictive distribution, the sparse points' residual included "
                        "(default), or from the weights' posterior only (docs/reweighting.md)")
    _baseline_flags(m)
    m.add_argument("--no-progress", action="store_true")


def _add_analyze_parser(sub) -> None:
    a = _subcommand(sub, "analyze", help="committee mean and std of an MD observable, reweighted from one trajectory",
                    description="Reweight the frames of a 'gapfit md --committee K' trajectory to every committee "
                                "member: each member's average of the observable, their mean and std (the model "
                                "uncertainty), the mean model's average with its statistical error, and each "
                                "member's effective sample size (docs/reweighting.md).")
    a.add_argument("trajectory", help="extended XYZ trajectory of gapfit md --committee K")
    a.add_argument("--observable", required=True, choices=["energy", "volume", "density", "rdf", "msd"],
                   help="energy: potential energy per atom (eV/atom); volume (Å³/atom) and density (g/cm³): NPT; "
                        "rdf: g(r); msd: mean-square displacement (Å²) and diffusion coefficient")
    a.add_argument("--temperature", type=float, default=None,
                   help="K, of the weights (default: the run's thermostat; NVE: the frames' mean kinetic temperature)")
    a.add_argument("--r-max", type=float, default=6.0, help="rdf: largest distance, Å")
    a.add_argument("--bins", type=int, default=120, help="rdf: bins on [0, r-max]")
    a.add_argument("--pairs", nargs="+", metavar="A-B", help="rdf: partial g(r) of these pairs, e.g. Na-Cl Na-Na "
                                                             "(default: the total g(r))")
    a.add_argument("--timestep-fs", type=float, default=None,
                   help="msd: fs between saved frames (default: from the frames' time_fs)")
    a.add_argument("--skip", type=int, default=0, help="frames left out at the start (equilibration)")
    a.add_argument("--min-ess", type=float, default=0.1,
                   help="members whose effective sample size falls below this fraction of the frames get the "
                        "cumulant estimate (0: never)")
    a.add_argument("--blocks", type=int, default=20, help="blocks of the statistical (block) error")
    a.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a.add_argument("--plot", metavar="FILE.png", help="rdf, msd: draw the curve with the committee's ±1 std band")


def _add_learn_parser(sub) -> None:
    ln = _subcommand(sub, "learn", help="on-the-fly learning: MD + reference calls where the model is unsure",
                     description="Run MD with a model that calls a reference calculator where its uncertainty "
                                 "passes a threshold, learns from the result and carries on. --resume continues "
                                 "an interrupted run with every setting it was started with.")
    ln.add_argument("start", nargs="?", help="starting structure (with --resume: optional, the run's own is used)")
    ln.add_argument("--reference", help="ASE calculator as MODULE:CLASS, e.g. ase.calculators.emt:EMT "
                                        "(with --resume: optional, the run's own is used)")
    ln.add_argument("--reference-kwargs", help="JSON object of keyword arguments for the reference calculator")
    ln.add_argument("-o", "--output", default="learn", help="output folder (default: learn)")
    ln.add_argument("--config", help="YAML file with GAP parameters for the model (when starting from nothing)")
    ln.add_argument("--model", help="start from this model file instead of from nothing (needs --initial-data)")
    ln.add_argument("--initial-data", help="the labelled frames the --model was fitted to")
    _baseline_flags(ln)
    _learn_run_flags(ln)
    ln.add_argument("--resume", action="store_true",
                    help="continue the run in the output folder with its stored settings")
    ln.add_argument("--override", action="store_true",
                    help="with --resume: options given again replace the stored ones (each change is logged); "
                         "without it a contradicting option is refused")
    ln.add_argument("--json", action="store_true", help="last line printed: one JSON summary")
    ln.add_argument("--no-progress", action="store_true")


def _learn_run_flags(ln) -> None:
    """The flags of LEARN_OPTIONS, each with the default of a new run in its help (None: --resume keeps)."""
    from .params import LEARN_DEFAULTS
    for flag, dest, typ, hlp in LEARN_OPTIONS:
        kw = {"choices": ["nve", "nvt"]} if dest == "ensemble" else {}
        default = LEARN_DEFAULTS.get(dest)
        ln.add_argument(flag, dest=dest, type=typ, default=None,
                        help=hlp + (f" (default {default})" if default is not None else ""), **kw)


# -- flags shared by several subcommands -------------------------------------------------------------------

def _format_flag(parser) -> None:
    parser.add_argument("--format", metavar="NAME", default=None,
                        help="ase.io format of the structure files (e.g. extxyz, vasp-xml, lammps-data); "
                             "default: from each file's name and content")


def _baseline_flags(group) -> None:
    group.add_argument("--baseline", metavar="MODULE:CLASS",
                       help="Δ-learning: the ASE calculator the model corrects, e.g. ase.calculators.emt:EMT "
                            "(a model fitted with one needs the same one to be used)")
    group.add_argument("--baseline-kwargs", metavar="JSON", help="keyword arguments of the --baseline calculator")


def _baseline_calculator(args):
    """The --baseline calculator object, or None."""
    if getattr(args, "baseline_kwargs", None) and not getattr(args, "baseline", None):
        raise CLIError("--baseline-kwargs needs --baseline MODULE:CLASS")
    if not getattr(args, "baseline", None):
        return None
    from .baselines import import_calculator
    return import_calculator(args.baseline, args.baseline_kwargs).calculator


def _load_model_for(args):
    from .model import load
    return load(args.model, baseline=_baseline_calculator(args))


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status (also callable from tests).

    Ctrl-C at any moment ends with the one line ``gapfit COMMAND: interrupted``
    and status 130, without a traceback: the SIGINT handler of
    :mod:`gapfit._interrupt` comes first (before the heavy modules load) and
    raises the interrupt only where Python can unwind it.
    """
    from . import _interrupt
    with _interrupt.handling_sigint(process_exit=argv is None):
        command = _command_in(sys.argv[1:] if argv is None else argv)
        try:
            with _interrupt.deferred():  # an interrupt while parsing is raised at its end, inside this try
                args = build_parser(command).parse_args(argv)
                command = args.command
            return _run_command(args)
        except KeyboardInterrupt:
            _interrupt.reported()
            print(f"gapfit {command}: interrupted", file=sys.stderr)
            return 130


def _command_in(argv) -> str:
    """The subcommand named in ``argv`` (before it is parsed, for the message of an interrupt), or ""."""
    return next((a for a in argv if a in COMMANDS), "")


def _run_command(args) -> int:
    from . import _interrupt
    from .errors import GapfitError
    try:
        return COMMANDS[args.command].run(args)
    except (GapfitError, CLIError) as exc:
        if _interrupt.requested():  # raised on the way out of an interrupt: report the interrupt
            raise KeyboardInterrupt from None
        if args.traceback:
            raise
        print(f"gapfit {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # the reader went away (gapfit ... | head): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush at exit
        return 128 + signal.SIGPIPE
    except OSError as exc:  # the environment, not gapfit: a full disk, a vanished folder
        if _interrupt.requested():
            raise KeyboardInterrupt from None
        if args.traceback:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"gapfit {args.command}: error: {where}{exc.strerror or exc} (-T shows the traceback)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:
        if _interrupt.requested():  # a library that failed because Ctrl-C came: report the interrupt
            raise KeyboardInterrupt from None
        raise


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _load_config(path: Optional[str]) -> dict:
    """The parameters of a YAML config file, each checked by name (errors name the file)."""
    if not path:
        return {}
    import yaml

    from .errors import InputError
    from .params import check_params
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh)
    except FileNotFoundError:
        raise CLIError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a text file; a config is YAML text") from None
    except yaml.YAMLError as exc:
        raise CLIError(f"{path}: not valid YAML ({_one_line(exc)})") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise CLIError(f"{path}: expected a mapping of parameter names to values, got {type(cfg).__name__}")
    odd = [k for k in cfg if not isinstance(k, str)]
    if odd:
        raise CLIError(f"{path}: parameter names must be text, got {odd[0]!r}")
    try:
        check_params(cfg)
    except InputError as exc:
        raise CLIError(f"{path}: {exc}") from None
    return cfg


def _setup_logging(log_path: str, mode: str = "w") -> logging.Logger:
    log = logging.getLogger("gapfit")
    log.setLevel(logging.INFO)
    _close_logging(log)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for h in (logging.StreamHandler(sys.stderr), logging.FileHandler(log_path, mode=mode)):
        h.setFormatter(fmt)
        log.addHandler(h)
    log.propagate = False
    return log


def _warnings_to_stderr() -> None:
    """Warnings of gapfit's loggers to stderr, one line each, for commands that keep no log file."""
    log = logging.getLogger("gapfit")
    _close_logging(log)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    h.setLevel(logging.WARNING)
    log.addHandler(h)
    log.propagate = False


def _close_logging(log: logging.Logger) -> None:
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)


def _model_params(args, config_keys) -> dict:
    """Config values overridden by the flags given."""
    params = _load_config(args.config)
    config_keys.update(params)
    calc = _baseline_calculator(args)
    if calc is not None:
        params["baseline"] = calc
    # --baseline gives a calculator (above) and --no-progress is not a setting of the model: the other
    # flags' values are the GAP parameters of their dest
    dests = [name for name in DEDICATED_FIT_FLAGS if name not in ("baseline", "progress")]
    for dest in dests + [option.dest for option in fit_options()]:
        value = getattr(args, dest)
        if value is not None:
            params[dest] = parse_coulomb_spec(value) if dest == "charges" else value
            config_keys.discard(dest)
    return params


def _name_config(args, config_keys, exc):
    """An InputError about a setting read from --config, with the file named."""
    from .errors import InputError
    if getattr(exc, "param", None) in config_keys:
        return InputError(f"{args.config}: {exc}", param=exc.param)
    return exc


def _fit(args) -> int:
    from . import _interrupt
    from .errors import InputError
    from .files import StagedFile, TargetLock
    from .model import GAP

    config_keys: set = set()
    params = _model_params(args, config_keys)
    params["progress"] = not args.no_progress
    if args.workers is not None and args.workers < 1:  # before the log, the lock or any reading
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.search:  # a bad search file fails before anything is read or written
        from .search import load_search
        args.search_spec = load_search(args.search)
    log_path = args.log or args.output + ".log"
    if args.dry_run:
        from .files import check_output_path
        from .stream import FrameSource
        for path in (args.output, log_path, args.output + ".hygiene.csv"):
            check_output_path(path)  # what the fit would refuse at its start, the dry run refuses too
        _warnings_to_stderr()
        try:
            summary = GAP(**params).check_data(FrameSource(args.train, format=args.format))
        except InputError as exc:
            raise _name_config(args, config_keys, exc) from None
        print(_format_summary(args.train, summary))
        return 0
    # Nothing of the previous model, its log or its hygiene report changes
    # until the new ones are complete: all are written under temporary names
    # and renamed at the end, while a lock refuses a second fit to the same
    # output. Ctrl-C interrupts the fit, not the setting up or the tearing
    # down of these (gapfit._interrupt), and is ignored once they are being
    # committed.
    with _interrupt.deferred(), contextlib.ExitStack() as outputs:
        outputs.enter_context(TargetLock(args.output))
        model_out = outputs.enter_context(StagedFile(args.output))
        log_out = outputs.enter_context(StagedFile(log_path))
        log = _setup_logging(log_out.tmp)
        outputs.callback(_close_logging, log)
        companions: list = []  # outputs committed with the model (the hygiene report)

        def stage(path: str):
            with _interrupt.deferred():
                companions.append(outputs.enter_context(StagedFile(path)))
            return companions[-1]

        with _interrupt.interruptible():
            _fit_logged(args, params, config_keys, log, model_out, stage)
            _interrupt.point_of_no_return()
        model_out.commit()
        for staged in companions:
            staged.commit()
        log.info("wrote %s and its log %s", args.output, log_path)
        _close_logging(log)
        log_out.commit()
    return 0


def _format_summary(paths, summary: dict) -> str:
    lines = [f"{', '.join(paths)}: {summary['n_frames']} frames, {summary['n_atoms']} atoms, "
             f"species {summary['species']}",
             f"labels: {summary['n_energies']} energies, {summary['n_forces']} force sets, "
             f"{summary['n_stresses']} stresses",
             f"config types: {summary['config_types']}",
             "settings and data are usable (dry run: nothing fitted, nothing written)"]
    return "\n".join(lines)


def _fit_logged(args, params, config_keys, log, model_out, stage) -> None:
    """Read, fit, write the model to its staged file, report the training error: all into ``log``.

    ``stage(path)``: a staged file for another output, committed with the model.
    """
    with contextlib.ExitStack() as stack:
        _fit_in(stack, args, params, config_keys, log, model_out, stage)


def _fit_in(stack, args, params, config_keys, log, model_out, stage) -> None:
    import numpy as np
    from sklearn.base import clone

    from .data import LabelReader, read_frames, where_of
    from .errors import InputError
    from .metrics import error_metrics, format_table, metrics_by_config_type
    from .model import GAP
    from .model_io import model_writer
    from .stream import FrameSource, MemorySource
    t0 = time.perf_counter()
    # --search and --drop-outliers refit on subsets: they hold the frames; a plain fit streams them
    if args.search or args.drop_outliers is not None:
        frames = read_frames(args.train, format=args.format)
        source = MemorySource(frames)
    else:
        frames, source = None, FrameSource(args.train, format=args.format)
    log.info("gapfit fit: %d frames from %s", len(source), args.train)
    search = None
    if args.search:
        from .search import apply_best, run_search, search_summary
        try:
            search = run_search(params, frames, args.search_spec, progress=params.get("progress", False))
        except InputError as exc:
            raise _name_config(args, config_keys, exc) from None
        log.info("%s", search.table())
        log.info("fitting with the best settings: %s", search.best)
        params = apply_best(params, search)
    model = GAP(**params)
    settings = model.get_params()
    if settings.get("terms") is not None:
        # the top-level SOAP settings belong to the default recipe: with terms given they are unused
        from .model import SOAP_PARAMS
        settings = {k: v for k, v in settings.items() if k not in SOAP_PARAMS}
    log.info("settings: %s", json.dumps(settings, default=str))
    # the cluster (if any) stays up for the refit of --drop-outliers
    client = stack.enter_context(_dask_client(args, log))
    try:
        model.fit(source, client=client)
    except InputError as exc:
        raise _name_config(args, config_keys, exc) from None
    log.info("fitted %d frames, %d atoms", model.training_summary_["n_frames"], model.training_summary_["n_atoms"])
    log.info("e0 (eV): %s; terms: %s", {int(z): round(v, 6) for z, v in model.e0_.items()},
             "; ".join(f"{t.type} δ {t.delta_eV:.4g} eV, {t.n_columns} sparse points" for t in model.terms_))
    from .errors import InputError as _InputError
    from .gapstring import format_gap_string
    try:
        log.info("terms as a gap_fit string: %s", format_gap_string([t.to_dict() for t in model.terms_]))
    except _InputError:  # a setting gap_fit has no spelling for: the settings line above has it all
        pass
    report = getattr(model, "hygiene_", None)
    if args.drop_outliers is not None and report is not None:
        dropped = report.above(args.drop_outliers)
        if dropped:
            log.info("dropping %d frame(s) with hygiene score > %g and fitting again:\n%s", len(dropped),
                     args.drop_outliers, "\n".join(f"  frame {f.index} ({f.where}, {f.config_type}): score "
                                                   f"{f.score:.3g}" for f in dropped))
            gone = {f.index for f in dropped}
            frames = [a for k, a in enumerate(frames) if k not in gone]
            given = model.state_.training.get("input_frames")
            model = clone(model)  # the same settings, unfitted
            model.fit(frames, client=client)
            model.state_.training["dropped_frames"] = sorted(gone)
            model.state_.training["input_frames"] = given  # inspect takes all of them, the dropped marked
            for f in report.frames:
                f.dropped = f.index in gone
        else:
            log.info("no frame has a hygiene score above %g: nothing dropped", args.drop_outliers)
    if search is not None:
        model.state_.training["search"] = search_summary(search)
    model_out.write(model_writer(model))
    if report is not None:
        report.write_csv(stage(args.output + ".hygiene.csv").tmp)
        log.info("hygiene of %d frames (leverage, leave-one-out z; worst first) in %s",
                 len(report), args.output + ".hygiene.csv")
    log.info("fit wall time %.1f s", time.perf_counter() - t0)
    if frames is not None:
        source = MemorySource(frames)
    n_check = min(args.train_error_frames, len(source))
    if n_check > 0:
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(source), size=n_check, replace=False))
        sub = source.take(idx)
        preds = model.predict(sub)
        labels = LabelReader.of(model).read_all(sub, wheres=[where_of(a, k) for k, a in zip(idx, sub)])
        n_at = [len(a) for a in sub]
        overall = error_metrics(preds, labels, n_at)
        log.info("training error on %d of %d frames:\n%s", n_check, len(source),
                 format_table(overall, metrics_by_config_type(preds, labels, n_at)))


@contextlib.contextmanager
def _dask_client(args, log):
    """A Dask client for --workers N (a local cluster, closed at the end) or --dask ADDRESS; else None."""
    if getattr(args, "workers", None) is None and getattr(args, "dask", None) is None:
        yield None
        return
    from distributed import Client, LocalCluster

    from . import _interrupt
    from .errors import WorkerError
    if args.workers is not None:
        # Started and closed whole (Ctrl-C waits for either), so no worker outlives the fit. The workers
        # inherit a blocked SIGINT: Ctrl-C in a terminal signals the whole process group, and stopping
        # them is this process's job (closing the cluster), not theirs.
        with _interrupt.deferred(), contextlib.ExitStack() as cluster_stack:
            with _interrupt.sigint_blocked():
                # one BLAS thread per worker: the workers are the parallelism
                cluster = cluster_stack.enter_context(LocalCluster(
                    n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                    silence_logs=logging.ERROR))
                client = cluster_stack.enter_context(Client(cluster))
            log.info("running on %d local worker processes", args.workers)
            with _quiet_dask_when_interrupted(workers_of=client), _interrupt.interruptible():
                yield client
        return
    try:
        client = Client(args.dask, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise WorkerError(f"--dask {args.dask}: cannot reach the scheduler ({exc}); check the address and that "
                          "the scheduler is running (dask scheduler)") from None
    with client, _quiet_dask_when_interrupted():
        log.info("running on the Dask cluster at %s (%d workers)", args.dask,
                 len(client.scheduler_info().get("workers", {})))
        yield client


@contextlib.contextmanager
def _quiet_dask_when_interrupted(workers_of=None):
    """Once Ctrl-C came, Dask's, tornado's and asyncio's logs are silenced for the rest of the process
    (and in the workers of the client ``workers_of``: a local cluster's, about to be closed).

    Closing a cluster under requests still in flight (a scatter, a heartbeat)
    makes its scheduler and workers log tracebacks (a worker gone, a stream
    closed, "Task exception was never retrieved") that only describe the
    teardown the interrupt asked for.
    """
    from . import _interrupt
    try:
        yield
    except BaseException:
        if _interrupt.requested():
            _silence_dask_logs()
            if workers_of is not None:
                try:
                    workers_of.run(_silence_dask_logs, callback_timeout=5, on_error="ignore")
                except Exception:  # a worker gone or too slow to answer: its logs were all it could add
                    pass
        raise


def _silence_dask_logs() -> None:
    """Silence the loggers of distributed, tornado and asyncio in this process (also run on workers)."""
    for name in ["distributed", "asyncio", "tornado"] + list(logging.root.manager.loggerDict):
        if name.partition(".")[0] in ("distributed", "asyncio", "tornado"):
            logger = logging.getLogger(name)
            logger.disabled = True
            for handler in logger.handlers:  # records of loggers made later reach these
                handler.setLevel(logging.CRITICAL + 1)


def _eval(args) -> int:
    from .data import LabelReader, read_frames
    from .metrics import charge_metrics, error_metrics, format_table, metrics_by_config_type, parity_plot
    model = _load_model_for(args)
    frames = read_frames(args.data, format=args.format)
    # --energy-key etc. name labels stored under other keys than the model's own
    reader = LabelReader(args.energy_key or model.energy_key, args.forces_key or model.forces_key,
                         args.stress_key or model.stress_key)
    labels = reader.read_all(frames)
    from .errors import InputError
    from .prediction import UncertaintyRequest
    try:
        request = UncertaintyRequest.parse(False if args.no_uncertainty else
                                           [s.strip() for s in args.uncertainty.split(",") if s.strip()])
    except ValueError as exc:
        raise InputError(f"--uncertainty: {exc}") from None
    n_labelled = sum(lb.energy_eV is not None or lb.forces_eV_per_A is not None
                     or lb.stress_eV_per_A3 is not None for lb in labels)
    nothing = (f"{', '.join(args.data)}: none of the {len(frames)} frames has a label ({reader.fields()}): nothing to "
               "score")
    if not n_labelled and not args.output:  # before the prediction's cost
        raise CLIError(nothing + "; -o FILE.xyz writes the model's predictions, --energy-key etc. name "
                                 "labels stored under other keys")
    output = None
    if args.output:
        from .files import StagedFile
        output = StagedFile(args.output)  # a path that cannot be written fails before the prediction
    model.progress = not args.no_progress
    try:
        t0 = time.perf_counter()
        preds = model.predict(frames, uncertainty=request)  # one pass: the stds come with the prediction
        dt = time.perf_counter() - t0
        if output is not None:
            _write_predictions(output, frames, preds)
            output.commit()
    finally:
        if output is not None:
            output.discard()
    n_at = [len(a) for a in frames]
    if not n_labelled:
        if args.json:
            print(json.dumps({"n_frames": len(frames), "n_atoms": int(sum(n_at)), "n_labelled_frames": 0,
                              "predictions": args.output}))
        else:
            print(f"{nothing}; predictions of {len(frames)} frames written to {args.output}")
        return 0
    overall = error_metrics(preds, labels, n_at)
    overall["predict_ms_per_atom"] = 1e3 * dt / max(1, sum(n_at))  # including the stds asked
    overall.update(charge_metrics(preds, frames))
    if request:
        from .calibration import uncertainty_metrics
        overall.update(uncertainty_metrics(preds, labels))
    if args.plot:
        parity_plot(preds, labels, n_at, args.plot)
    if args.json:
        print(json.dumps(overall))
    else:
        print(format_table(overall, metrics_by_config_type(preds, labels, n_at)))
        if "charge_rmse_me" in overall:
            print(f"charges against initial_charges ({overall['n_charges']} atoms): MAE {overall['charge_mae_me']:.2f} "
                  f"me, RMSE {overall['charge_rmse_me']:.2f} me")
        unc = {k: v for k, v in overall.items() if "sigma" in k or "spearman" in k}
        if unc:
            print("uncertainty: " + ", ".join(f"{k} {v:.3f}" for k, v in unc.items()))
        if args.plot:
            print(f"parity plot: {args.plot}")
        if args.output:
            print(f"predictions: {args.output}")
    return 0


def _write_predictions(staged, frames, preds) -> None:
    """Each frame with its prediction under ``gapfit_*`` names (reference labels untouched) into ``staged``."""
    import io

    import ase.io
    import numpy as np
    buf = io.StringIO()
    out = []
    for atoms, p in zip(frames, preds):
        a = atoms.copy()
        a.calc = atoms.calc  # the reference labels, written as they were read
        a.info.pop("gapfit_source", None)
        a.info["gapfit_energy"] = float(p.energy)
        if p.stress is not None:
            a.info["gapfit_stress"] = np.asarray(p.stress)
        if p.energy_std is not None:
            a.info["gapfit_energy_std"] = float(p.energy_std)
        for key, value in (("gapfit_energies", p.energies), ("gapfit_forces", p.forces),
                           ("gapfit_local_energy_std", p.local_energy_std), ("gapfit_forces_std", p.forces_std),
                           ("gapfit_charges", p.charges), ("gapfit_charges_std", p.charges_std)):
            if value is not None:
                a.arrays[key] = np.asarray(value)
        out.append(a)
    ase.io.write(buf, out, format="extxyz")
    staged.write(lambda fh: fh.write(buf.getvalue().encode()))


def _inspect(args) -> int:
    from .data import read_frames
    model = _load_model_for(args)
    model.progress = not args.no_progress
    frames = read_frames(args.train, format=args.format)
    report = model.hygiene_report(frames)
    if args.plot:
        report.plot(args.plot)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(report.table(args.top))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def _miller(text: str):
    parts = text.split(",") if "," in text else list(text.replace(" ", ""))
    try:
        hkl = tuple(int(p) for p in parts)
    except ValueError:
        hkl = ()
    if len(hkl) != 3 or not any(hkl):
        raise CLIError(f"--surface {text!r}: give three Miller indices, e.g. 111 or 1,-1,0")
    return hkl


def _reference_values(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            ref = json.load(fh)
    except FileNotFoundError:
        raise CLIError(f"{path}: no such reference file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CLIError(f"{path}: not valid JSON ({_one_line(exc)})") from None
    if not isinstance(ref, dict):
        raise CLIError(f"{path}: expected an object of figure names to numbers, e.g. {{\"C11_GPa\": 156}}")
    for k, val in ref.items():
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise CLIError(f"{path}: key {k!r}: expected a number, got {val!r}")
    return {k: float(val) for k, val in ref.items()}


def _validate(args) -> int:
    from .data import check_structure, read_frames
    from .validation import CommitteeEvaluator, lattice_structure, report_json, report_table, validate

    def melting_options() -> Optional[dict]:
        """The keyword arguments of ``melting_point`` from the --melting flags (None without --melting)."""
        import math

        from .validation.melting import MELTING_LATTICES
        given = [f for f, v in (("--melting-guess", args.melting_guess), ("--melting-temperatures",
                                                                          args.melting_temperatures))
                 if v is not None]
        given += [f for f, v, d in (("--melting-steps", args.melting_steps, 5000),
                                    ("--melting-cell", args.melting_cell, [3, 3, 8]),
                                    ("--melting-timestep", args.melting_timestep, 4.0)) if v != d]
        if not args.melting:
            if given:
                raise CLIError(f"{given[0]} sets the melting workflow: it needs --melting")
            return None
        if args.lattice not in MELTING_LATTICES or not args.element or args.a is None:
            raise CLIError(f"--melting builds its cells from --lattice {'|'.join(MELTING_LATTICES)} --element X "
                           "--a A (a starting lattice constant in Å); --structure and hcp are not supported")
        temps = args.melting_temperatures
        if temps is not None and (len(set(temps)) < 2 or not all(math.isfinite(t) and t > 0 for t in temps)):
            raise CLIError(f"--melting-temperatures needs at least two different positive temperatures in K, got "
                           f"{' '.join(f'{t:g}' for t in temps)}")
        guess = args.melting_guess
        if guess is None:
            if temps is None:
                raise CLIError("--melting needs --melting-guess K (a temperature near the melting point, e.g. the "
                               "experimental one: Cu 1358 K) or --melting-temperatures K K ...")
            guess = float(sorted(temps)[len(temps) // 2]) if len(temps) % 2 else \
                0.5 * float(sum(sorted(temps)[len(temps) // 2 - 1:len(temps) // 2 + 1]))
        if not (math.isfinite(guess) and guess > 0):
            raise CLIError(f"--melting-guess must be a positive temperature in K, got {guess:g}")
        if args.melting_steps < 100:
            raise CLIError(f"--melting-steps must be at least 100 (a rate needs frames; 5000 is the default), got "
                           f"{args.melting_steps}")
        if min(args.melting_cell) < 1 or args.melting_cell[2] < 2:
            raise CLIError(f"--melting-cell needs three repeats ≥ 1 and a z repeat ≥ 2, got "
                           f"{' '.join(map(str, args.melting_cell))}")
        if not (math.isfinite(args.melting_timestep) and args.melting_timestep > 0):
            raise CLIError(f"--melting-timestep must be a positive time in fs, got {args.melting_timestep:g}")
        return {"temperature_guess_K": guess, "temperatures_K": temps, "steps": args.melting_steps,
                "cell": tuple(args.melting_cell), "timestep_fs": args.melting_timestep}

    props = {}
    if args.eos or args.all:
        props["eos"] = {}
    if args.elastic or args.all:
        props["elastic"] = {}
    if args.phonons or args.all:
        props["phonons"] = {"supercell": args.supercell} if args.supercell else {}
    if args.vacancy or args.all:
        props["vacancy"] = {}
    if args.surface or args.all:
        props["surface"] = _miller(args.surface or "111")
    if args.nve or args.all:
        if args.nve_steps <= 0 or args.temperature <= 0:
            raise CLIError("--nve-steps and --temperature must be positive")
        props["nve"] = {"n_steps": args.nve_steps, "temperature_K": args.temperature}
    if args.stress_consistency or args.all:
        props["stress_consistency"] = {}
    melting = melting_options()
    if not props and melting is None:
        raise CLIError("nothing to compute: give one or more of --eos --elastic --phonons --vacancy --surface HKL "
                       "--nve --stress-consistency --melting (or --all)")
    if args.supercell and "phonons" not in props:
        raise CLIError("--supercell sets the phonon supercell: it needs --phonons")
    if args.supercell and min(args.supercell) < 1:
        raise CLIError(f"--supercell needs three repeats ≥ 1, got {' '.join(map(str, args.supercell))}")
    if args.structure and (args.element or args.a is not None or args.c is not None):
        raise CLIError("--element, --a and --c build a --lattice; with --structure the file gives the cell")
    if args.committee < 0 or args.committee == 1:
        raise CLIError(f"--committee must be 0 (none) or at least 2, got {args.committee}")
    reference = _reference_values(args.reference) if args.reference else None
    if args.lattice:
        if not args.element or args.a is None:
            raise CLIError("--lattice needs --element and --a (a starting lattice constant in Å)")
        atoms = lattice_structure(args.lattice, args.element, args.a, args.c)
    else:
        atoms = read_frames([args.structure], format=args.format)[-1]
        check_structure(atoms, atoms.info.get("gapfit_source", args.structure))
    model = _load_model_for(args)
    model.check_frames([atoms])
    evaluator = CommitteeEvaluator(model, args.committee, seed=args.seed, kind=args.committee_kind)
    results = validate(evaluator, atoms, props, plot_dir=args.plot, progress=not args.no_progress) if props else {}
    if melting is not None:
        from .validation import melting_point
        results["melting"] = melting_point(evaluator, args.element, args.a, lattice=args.lattice, seed=args.seed,
                                           progress=not args.no_progress, plot_dir=args.plot, **melting)
    if args.json:
        print(json.dumps(report_json(results, reference)))
    else:
        print(report_table(results, reference))
        if args.plot:
            print(f"plots: {args.plot}")
    return 0


def _md(args) -> int:
    from .data import check_structure, read_frames
    from .md import run_md
    model = _load_model_for(args)
    atoms = read_frames([args.start], format=args.format)[-1]
    check_structure(atoms, atoms.info["gapfit_source"])
    for name in ("timestep", "steps", "interval"):
        if getattr(args, name) <= 0:
            raise CLIError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.check_interval is not None:
        if args.check_interval <= 0:
            raise CLIError(f"--check-interval must be positive, got {args.check_interval}")
        if args.max_force_std is None and args.max_local_energy_std is None:
            raise CLIError("--check-interval sets how often the --max-force-std or --max-local-energy-std "
                           "threshold is tested: give one of them (without, stds are computed every --interval "
                           "steps, for the trajectory and log)")
    if args.committee < 0 or args.committee == 1:
        raise CLIError(f"--committee must be 0 (none) or a number of members ≥ 2 (8 to 16 give a usable spread), "
                       f"got {args.committee}")
    if args.committee_seed < 0:
        raise CLIError(f"--committee-seed must be ≥ 0, got {args.committee_seed}")
    res = run_md(model, atoms, ensemble=args.ensemble, temperature_K=args.temperature,
                 timestep_fs=args.timestep, steps=args.steps, seed=args.seed, friction_per_fs=args.friction,
                 pressure_GPa=args.pressure, trajectory=args.trajectory,
                 log=args.log or args.trajectory + ".log", interval=args.interval,
                 max_force_std=args.max_force_std, max_local_energy_std=args.max_local_energy_std,
                 check_interval=args.check_interval, progress=not args.no_progress,
                 committee=args.committee, committee_seed=args.committee_seed,
                 committee_kind=args.committee_kind)
    summary = {"steps": res.steps, "stop_reason": res.stop_reason, "message": res.message,
               "trajectory": res.trajectory, "log": res.log, "max_force_std_seen": res.max_force_std_seen}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{res.steps} steps, stopped: {res.stop_reason} {res.message}".rstrip())
        print(f"trajectory {res.trajectory}, log {res.log}")
    return 0


def _analyze(args) -> int:
    from .analyze import analyze, parse_pairs
    if args.pairs and args.observable != "rdf":
        raise CLIError(f"--pairs applies to --observable rdf, not {args.observable}")
    if args.plot and args.observable not in ("rdf", "msd"):
        raise CLIError(f"--plot draws the curves of rdf and msd; {args.observable} is one number (see the table "
                       "or --json)")
    result = analyze(args.trajectory, args.observable, temperature_K=args.temperature, r_max_A=args.r_max,
                     n_bins=args.bins, pairs=parse_pairs(args.pairs), timestep_fs=args.timestep_fs, skip=args.skip,
                     min_ess_fraction=args.min_ess, n_blocks=args.blocks)
    if args.plot:
        result.plot(args.plot)
    print(result.to_json() if args.json else result.table())
    if args.plot and not args.json:
        print(f"plot: {args.plot}")
    return 0


def _learn(args) -> int:
    import os

    from .data import check_structure, read_frames
    from .learn import Threshold, learn, load_reference

    if not args.resume:
        missing = [name for name, v in (("START", args.start), ("--reference", args.reference)) if v is None]
        if missing:
            raise CLIError(f"{' and '.join(missing)} needed to start a run (only --resume can do without)")
    elif not os.path.isdir(args.output):
        raise CLIError(f"{args.output}: no such run folder to resume")
    if args.override and not args.resume:
        raise CLIError("--override only applies with --resume")
    params = _load_config(args.config) if args.config else None
    reference = load_reference(args.reference, args.reference_kwargs) if args.reference else None
    start = None
    if args.start:
        start = read_frames([args.start])[-1]
        check_structure(start, start.info["gapfit_source"])
        start.info.pop("gapfit_source", None)
    os.makedirs(args.output, exist_ok=True)
    # a resumed run adds to the log of the run it continues
    log = _setup_logging(os.path.join(args.output, "gapfit.log"), mode="a" if args.resume else "w")
    given = {dest: getattr(args, dest) for _, dest, _, _ in LEARN_OPTIONS if not dest.startswith("threshold_")}
    thresholds = [args.threshold_force_std, args.threshold_force_std_relative, args.threshold_local_energy_std]
    thr = Threshold(*thresholds) if any(v is not None for v in thresholds) else None
    try:
        res = learn(start, reference, args.output, params=params, threshold=thr, resume=args.resume,
                    override=args.override, progress=not args.no_progress, initial_model=args.model,
                    initial_data=args.initial_data, baseline=args.baseline, baseline_kwargs=args.baseline_kwargs,
                    **given)
    finally:
        _close_logging(log)
    summary = {"model": res.model, "data": res.data, "reference_calls": res.reference_calls, "steps": res.steps,
               "stop_reason": res.stop_reason, "message": res.message}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{res.steps} steps, {res.reference_calls} reference calls, stopped: {res.stop_reason} "
              f"{res.message}".rstrip())
        print(f"model {res.model}, labelled data {res.data}")
    return 0


# -- gapfit lammps -----------------------------------------------------------------------------------------

def _add_lammps_parser(sub) -> None:
    lp = _subcommand(sub, "lammps", help="run a LAMMPS input whose potential is a gapfit model",
                     description="Run a LAMMPS input (units metal) that names a model as 'pair_style gapfit "
                                 "MODEL.npz [uncertainty local_energy|forces] [every N]' and 'pair_coeff * * "
                                 "ELEMENT...' (one element per atom type); everything else is LAMMPS's own. Under "
                                 "mpirun -np N the model's work is shared by the ranks (docs/lammps.md).")
    lp.add_argument("input", help="LAMMPS input file")
    lp.add_argument("-v", "--var", nargs=2, action="append", default=None, metavar=("NAME", "VALUE"),
                    help="set a LAMMPS index variable before the input is read (as lmp -var NAME VALUE); repeatable")
    lp.add_argument("-l", "--log", default="log.lammps", help="LAMMPS log file ('none' for none)")
    lp.add_argument("--no-screen", action="store_true", help="no LAMMPS screen output")
    _baseline_flags(lp)


def _lammps(args) -> int:
    from . import lammps
    from .errors import GapfitError
    try:
        res = lammps.run(args.input, variables=args.var or (), log=None if args.log == "none" else args.log,
                         screen=not args.no_screen, baseline=_baseline_calculator(args))
    except GapfitError:
        if lammps.world_rank() > 0:  # every rank meets the same error: rank 0 reports it
            return EXIT_BAD_INPUT
        raise
    if lammps.world_rank() == 0:
        share = 100 * res.model_seconds / max(res.wall_seconds, 1e-9)
        print(f"gapfit lammps: step {res.steps}, {res.model_calls} model evaluations on {res.ranks} rank(s), "
              f"{res.model_seconds:.2f} s in the model of {res.wall_seconds:.2f} s ({share:.0f} %)")
    return 0


class Command(NamedTuple):
    """A subcommand: what adds its parser to the subparsers, and what runs it (returning the exit status)."""

    add_parser: Callable[[argparse._SubParsersAction], None]
    run: Callable[[argparse.Namespace], int]


#: The subcommands, in the order of ``gapfit --help``: the one list of their names.
COMMANDS: Dict[str, Command] = {
    "fit": Command(_add_fit_parser, _fit),
    "eval": Command(_add_eval_parser, _eval),
    "inspect": Command(_add_inspect_parser, _inspect),
    "validate": Command(_add_validate_parser, _validate),
    "md": Command(_add_md_parser, _md),
    "analyze": Command(_add_analyze_parser, _analyze),
    "learn": Command(_add_learn_parser, _learn),
    "lammps": Command(_add_lammps_parser, _lammps),
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
