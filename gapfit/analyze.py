"""Committee averages of MD observables from one trajectory: what ``gapfit analyze`` computes.

``gapfit md --committee K`` writes, into every frame of its extended XYZ
trajectory, each committee member's total energy
(``info["gapfit_energy_committee"]``, eV), the mean model's energy (the
frame's ``energy``, eV) and the run's ensemble and temperature. From those,
:func:`analyze` computes an observable on every frame and reweights it to
each member (:func:`gapfit.reweight.reweight`): every member's average, their
mean and standard deviation (the model uncertainty of the average), the mean
model's own average with its statistical (block) error, each member's
effective sample size, and which members fell back on the cumulant estimate.
The physics, and when reweighting fails, are in :mod:`gapfit.reweight` and
docs/reweighting.md.

Observables (:data:`OBSERVABLES`):

``energy``
    Potential energy per atom, eV/atom. Each member's average is of its own
    energy, ``⟨V_k/N⟩_k`` (what member k's own MD would give), not of the
    mean model's.
``volume``, ``density``
    Cell volume per atom (Å³/atom) and mass density (g/cm³): NPT runs.
``rdf``
    g(r) on ``n_bins`` bins up to ``r_max_A`` (total, or partial for
    ``pairs``), with the highest peak's height per member.
``msd``
    Mean-square displacement (Å²) against the lag time, averaged over time
    origins, and the diffusion coefficient (Einstein) of each member's
    curve. Each origin is weighted by its own frame's weight: that reweights
    the starting configurations, not the dynamics, so the spread is an
    indication only (a member's own MD is the rigorous route).

The temperature of the weights: ``temperature_K`` when given; otherwise the
trajectory's thermostat temperature (``info["gapfit_temperature_K"]`` of an
NVT or NPT run); for NVE, the mean kinetic temperature of the frames.
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms

from .errors import InputError
from .reweight import (A2_PER_PS_IN_CM2_PER_S, ReweightResult, density_g_cm3, diffusion_coefficient, msd, rdf,
                       reweight, volume_per_atom)

#: The observables :func:`analyze` computes, with their units.
OBSERVABLES: Dict[str, str] = {"energy": "eV/atom", "volume": "Å³/atom", "density": "g/cm³", "rdf": "",
                               "msd": "Å²"}
#: Keys of a frame's info written by ``gapfit md`` (see :mod:`gapfit.md`).
INFO_ENERGY_COMMITTEE = "gapfit_energy_committee"
INFO_TEMPERATURE = "gapfit_temperature_K"
INFO_ENSEMBLE = "gapfit_ensemble"
#: The fewest frames an MSD is fitted on (after ``skip``).
MIN_MSD_FRAMES = 8


# ----------------------------------------------------------------------------- reading a trajectory

@dataclass
class Trajectory:
    """The frames of a ``gapfit md --committee K`` trajectory with their energies.

    Attributes
    ----------
    path : str
    frames : list of ase.Atoms
        The frames analysed (after ``skip``).
    skipped : int
        Frames left out at the start.
    member_energies_eV : ndarray (K, T)
        Each member's total potential energy of each frame, eV.
    mean_energies_eV : ndarray (T,)
        The mean model's (the one that ran the MD) total energy of each frame, eV.
    incomplete_tail : bool
        The file ended in a frame still being written (or cut off), which was left out.
    """

    path: str
    frames: List[Atoms]
    skipped: int
    member_energies_eV: np.ndarray
    mean_energies_eV: np.ndarray
    incomplete_tail: bool = False

    @property
    def n_members(self) -> int:
        """K, the committee size."""
        return int(self.member_energies_eV.shape[0])


def read_trajectory(path: str, *, skip: int = 0) -> Trajectory:
    """Read a trajectory written by ``gapfit md --committee K`` (extended XYZ), leaving out the first ``skip`` frames.

    Only whole frames are read: a run still writing (or killed) can be
    analysed. Raises :class:`gapfit.errors.InputError` naming the file and the
    frame when a frame has no committee energies or no energy.
    """
    from .data import read_error
    from .md_io import complete_xyz_frames

    if isinstance(skip, bool) or not isinstance(skip, (int, np.integer)) or skip < 0:
        raise InputError(f"skip must be a whole number of frames ≥ 0; got {skip!r}", param="skip")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    n_whole, n_bytes = complete_xyz_frames(path)
    if n_whole == 0:
        raise InputError(f"{path}: no whole extended XYZ frame in it; give the trajectory of gapfit md")
    import ase.io
    with open(path, "rb") as fh:
        text = fh.read(n_bytes).decode("utf-8")
    try:
        frames = ase.io.read(io.StringIO(text), ":", format="extxyz")
    except Exception as exc:  # ase raises many types for unreadable files
        raise read_error(path, exc, "extxyz") from None
    incomplete = n_bytes < os.path.getsize(path)
    members, mean = [], []
    for k, a in enumerate(frames[skip:], start=skip):
        e = a.info.get(INFO_ENERGY_COMMITTEE)
        if e is None:
            raise InputError(f"{path}, frame {k}: no committee energies ({INFO_ENERGY_COMMITTEE}); run gapfit md "
                             "with --committee K (K ≥ 2, 8 to 16 usual) to write them")
        try:
            e = np.atleast_1d(np.asarray(e, dtype=np.float64)).ravel()
        except (TypeError, ValueError):
            e = np.array([np.nan])
        if not np.all(np.isfinite(e)):
            raise InputError(f"{path}, frame {k}: {INFO_ENERGY_COMMITTEE} is not a list of finite energies (eV); "
                             "give the trajectory of gapfit md --committee K as written")
        if members and e.shape != members[0].shape:
            raise InputError(f"{path}, frame {k}: {e.size} committee energies where frame {skip} has "
                             f"{members[0].size}; analyze one run at a time")
        try:
            energy = a.get_potential_energy()
        except Exception:  # no calculator results: ase raises its own types
            raise InputError(f"{path}, frame {k}: no energy; give the trajectory of gapfit md") from None
        members.append(e)
        mean.append(float(energy))
    if len(members) < 2:
        raise InputError(f"{path}: --skip {skip} leaves {len(members)} of its {len(frames)} frames; averages need "
                         "at least 2: skip fewer (or run longer)", param="skip")
    frames = frames[skip:]
    V = np.array(members, dtype=np.float64).T
    if V.shape[0] < 2:
        raise InputError(f"{path}: {V.shape[0]} committee energy per frame; a spread needs at least 2 "
                         "(gapfit md --committee K with K ≥ 2)")
    return Trajectory(path, frames, skip, V, np.array(mean, dtype=np.float64), incomplete)


def run_temperature(traj: Trajectory, temperature_K: Optional[float] = None) -> Tuple[float, str]:
    """``(T, where from)``: the temperature of the weights, K (see the module docstring)."""
    if temperature_K is not None:
        t = float(temperature_K)
        if not (math.isfinite(t) and t > 0):
            raise InputError(f"--temperature must be a positive number of K; got {temperature_K!r}",
                             param="temperature_K")
        return t, "given"
    ensembles = {a.info.get(INFO_ENSEMBLE) for a in traj.frames}
    temps = {a.info.get(INFO_TEMPERATURE) for a in traj.frames}
    if ensembles <= {"nvt", "npt"} and None not in temps:
        if len(temps) > 1:
            raise InputError(f"{traj.path}: the frames were run at different temperatures ({sorted(temps)} K); "
                             "analyze one run at a time, or give --temperature K")
        return float(temps.pop()), f"the run's {ensembles.pop()} thermostat"
    if all("momenta" in a.arrays for a in traj.frames) and len(traj.frames[0]) > 1:
        return float(np.mean([_internal_temperature(a) for a in traj.frames])), "mean kinetic temperature of the frames"
    raise InputError(f"{traj.path}: the frames say neither the thermostat temperature ({INFO_TEMPERATURE}) "
                     "nor the momenta; give --temperature K")


def _internal_temperature(atoms: Atoms) -> float:
    """Kinetic temperature without the centre of mass' motion, K: 2 (KE − P²/2M) / ((3N − 3) k_B).

    NVE conserves the total momentum, so the centre of mass' kinetic energy is not thermal and its 3
    degrees of freedom are not counted (ASE's ``get_temperature`` counts 3N).
    """
    from ase import units
    p = atoms.get_momenta().sum(axis=0)
    ke = atoms.get_kinetic_energy() - p @ p / (2.0 * atoms.get_masses().sum())
    return 2.0 * ke / ((3 * len(atoms) - 3) * units.kB)


def frame_interval_fs(traj: Trajectory, timestep_fs: Optional[float] = None) -> float:
    """Time between saved frames, fs: ``timestep_fs`` when given, else from the frames' ``time_fs``."""
    if timestep_fs is not None:
        dt = float(timestep_fs)
        if not (math.isfinite(dt) and dt > 0):
            raise InputError(f"--timestep-fs must be a positive number of fs; got {timestep_fs!r}",
                             param="timestep_fs")
        return dt
    times = [a.info.get("time_fs") for a in traj.frames]
    if None in times:
        raise InputError(f"{traj.path}: the frames have no time_fs; give --timestep-fs (fs between saved frames)")
    steps = np.diff(np.array(times, dtype=np.float64))
    if not (np.all(steps > 0) and np.allclose(steps, steps[0], rtol=1e-6)):
        raise InputError(f"{traj.path}: the frames are not equally spaced in time (time_fs steps from "
                         f"{steps.min():g} to {steps.max():g} fs); an MSD needs one run saved at a fixed interval")
    return float(steps[0])


def parse_pairs(texts: Optional[Sequence[str]]) -> Optional[List[Tuple[str, str]]]:
    """``["Na-Cl", "Na-Na"]`` → ``[("Na", "Cl"), ("Na", "Na")]`` (None stays None: the total g(r))."""
    if not texts:
        return None
    out = []
    for text in texts:
        for item in str(text).replace(",", " ").split():
            parts = item.split("-")
            if len(parts) != 2 or not all(parts):
                raise InputError(f"--pairs: {item!r} is not a pair of species such as Na-Cl", param="pairs")
            out.append((parts[0], parts[1]))
    return out


# ----------------------------------------------------------------------------- the analysis

@dataclass
class Analysis:
    """One observable of one trajectory, averaged by every committee member.

    Attributes
    ----------
    observable : str
        A key of :data:`OBSERVABLES`.
    unit : str
    path : str
    skipped : int
        Frames left out at the start.
    n_frames : int
        Frames analysed (for ``msd`` the result has one row per time origin instead).
    temperature_K : float
        The temperature of the weights, K.
    temperature_source : str
    result : ReweightResult
        Per-frame observable reweighted to each member (for ``energy``, each
        member's own energy; for ``msd``, one row per time origin).
    axis : ndarray or None
        ``rdf``: the bin centres r, Å; ``msd``: the lag times, fs.
    pairs : list of str or None
        ``rdf`` with partials: the pairs ("Na-Cl"), in the order of the result's second axis.
    summary : dict
        The headline figures: ``rdf``, the highest peak (``peak_r_A``,
        ``peak_height`` committee mean/std, members, mean model); ``msd``, the
        diffusion coefficient (Å²/ps, cm²/s) of each member and of the mean model.
    warnings : list of str
    """

    observable: str
    unit: str
    path: str
    skipped: int
    n_frames: int
    temperature_K: float
    temperature_source: str
    result: ReweightResult
    axis: Optional[np.ndarray] = None
    pairs: Optional[List[str]] = None
    summary: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """Everything as plain JSON values (non-finite numbers as null)."""
        r = self.result
        d = {"trajectory": self.path, "observable": self.observable, "unit": self.unit,
             "frames": self.n_frames, "skipped": self.skipped, "members": r.n_members,
             "temperature_K": self.temperature_K, "temperature_source": self.temperature_source,
             "committee_mean": r.committee_mean, "committee_std": r.committee_std,
             "mean_model_average": r.mean_model_average, "statistical_error": r.statistical_error,
             "n_blocks": r.n_blocks, "member_average": r.member_average,
             "member_statistical_error": r.member_statistical_error,
             "ess": r.ess, "ess_fraction": r.ess_fraction, "min_ess_fraction": r.min_ess_fraction,
             "method": list(r.method), "warnings": list(self.warnings), "summary": self.summary}
        if self.axis is not None:
            d["r_A" if self.observable == "rdf" else "lag_fs"] = self.axis
        if self.pairs is not None:
            d["pairs"] = self.pairs
        return _plain(d)

    def to_json(self) -> str:
        """One JSON object (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), allow_nan=False)

    def table(self) -> str:
        """The human-readable report: headline, each member, the curve for rdf and msd, warnings."""
        return _table(self)

    def plot(self, path: str) -> None:
        """Draw g(r) (rdf) or the MSD (msd) with the committee's band into ``path`` (PNG, or any matplotlib format)."""
        _plot(self, path)


def analyze(trajectory, observable: str, *, temperature_K: Optional[float] = None, r_max_A: float = 6.0,
            n_bins: int = 120, pairs: Optional[Sequence] = None, timestep_fs: Optional[float] = None,
            skip: int = 0, min_ess_fraction: float = 0.1, n_blocks: int = 20) -> Analysis:
    """Every committee member's average of an MD observable, reweighted from one trajectory.

    Parameters
    ----------
    trajectory : str or Trajectory
        The extended XYZ trajectory of ``gapfit md --committee K`` (or one read by :func:`read_trajectory`).
    observable : str
        One of :data:`OBSERVABLES`: energy, volume, density, rdf, msd.
    temperature_K : float, optional
        Temperature of the weights, K (default: the run's; see the module docstring).
    r_max_A, n_bins : float, int
        rdf: largest distance (Å) and number of bins.
    pairs : sequence of pairs of species, optional
        rdf: partial g(r) of these pairs (``[("Na", "Cl")]``); the total g(r) without.
    timestep_fs : float, optional
        msd: time between saved frames, fs (default: from the frames' ``time_fs``).
    skip : int
        Frames left out at the start (equilibration); only with a path.
    min_ess_fraction, n_blocks
        As in :func:`gapfit.reweight.reweight`.

    Returns
    -------
    Analysis
    """
    if observable not in OBSERVABLES:
        raise InputError(f"observable must be one of {', '.join(OBSERVABLES)}; got {observable!r}",
                         param="observable")
    traj = trajectory if isinstance(trajectory, Trajectory) else read_trajectory(str(trajectory), skip=skip)
    T, source = run_temperature(traj, temperature_K)
    kw = dict(min_ess_fraction=min_ess_fraction, n_blocks=n_blocks)
    V, Vbar = traj.member_energies_eV, traj.mean_energies_eV
    axis, pair_names, summary, notes, constant = None, None, {}, [], False
    if observable == "energy":
        result = _own_energy_result(traj, T, kw)
    elif observable in ("volume", "density"):
        values = volume_per_atom(traj.frames) if observable == "volume" else density_g_cm3(traj.frames)
        result = reweight(values, V, Vbar, T, **kw)
        constant = bool(np.ptp(values) <= 1e-9 * abs(values.mean()))
        if constant:
            notes.append(f"the {observable} is the same in every frame: volume and density need an NPT run")
    elif observable == "rdf":
        g = rdf(traj.frames, r_max_A, n_bins, pairs)
        result, axis = reweight(g.g, V, Vbar, T, **kw), g.r_A
        if pairs is not None:
            pair_names = [f"{a}-{b}" for a, b in ([tuple(pairs)] if _is_one_pair(pairs) else pairs)]
        summary = _rdf_peak(result, g.r_A)
    else:
        result, axis, summary = _msd_analysis(traj, frame_interval_fs(traj, timestep_fs), T, kw)
        notes.append("msd: the MSD and D are dynamical; weighting the time origins reweights the starting "
                     "configurations, not the dynamics, so the committee spread is an indication only (a "
                     "member's own MD is the rigorous route); the mean model's D error treats atoms as "
                     "independent (a lower bound)")
    out = Analysis(observable, OBSERVABLES[observable], traj.path, traj.skipped, len(traj.frames), T, source,
                   result, axis, pair_names, summary)
    out.warnings = _warnings(out, traj, source, constant=constant) + notes
    return out


def _is_one_pair(pairs) -> bool:
    items = list(pairs)
    return len(items) == 2 and all(isinstance(x, (str, int, np.integer)) for x in items)


def _own_energy_result(traj: Trajectory, T: float, kw: dict) -> ReweightResult:
    """Each member's average of its own energy per atom, ⟨V_k/N⟩_k, and the mean model's ⟨V̄/N⟩.

    One reweighting of K+1 columns (the mean model's energy, then each
    member's); member k's estimate is column k+1 of its own row.
    """
    V, Vbar = traj.member_energies_eV, traj.mean_energies_eV
    n = np.array([len(a) for a in traj.frames], dtype=np.float64)
    columns = np.column_stack([Vbar / n] + [v / n for v in V])  # (T, K+1) eV/atom
    r = reweight(columns, V, Vbar, T, **kw)
    k = np.arange(V.shape[0])

    def own(x):
        return np.asarray(x)[k, k + 1]

    member = own(r.member_average)
    return replace(r, member_average=member, committee_mean=np.asarray(member.mean()),
                   committee_std=np.asarray(member.std(ddof=1)),
                   mean_model_average=np.asarray(r.mean_model_average[0]),
                   statistical_error=np.asarray(r.statistical_error[0]),
                   member_statistical_error=own(r.member_statistical_error),
                   weighted_average=own(r.weighted_average), cumulant_average=own(r.cumulant_average))


def _rdf_peak(r: ReweightResult, r_A: np.ndarray) -> Dict[str, Any]:
    """The highest peak of g(r) (per pair): its height for each member, their mean and std, and the mean model's."""
    member = r.member_average  # (K, nb) or (K, P, nb)
    heights = member.max(axis=-1)  # (K,) or (K, P)
    mm = r.mean_model_average
    at = mm.argmax(axis=-1)  # bin of the mean model's peak
    err = np.take_along_axis(r.statistical_error, np.expand_dims(at, -1), axis=-1)[..., 0]
    member_err = np.take_along_axis(r.member_statistical_error, np.expand_dims(np.broadcast_to(at, heights.shape), -1),
                                    axis=-1)[..., 0]
    return {"peak_r_A": r_A[at], "peak_height_committee_mean": heights.mean(axis=0),
            "peak_height_committee_std": heights.std(axis=0, ddof=1), "peak_height_members": heights,
            "peak_r_members_A": r_A[member.argmax(axis=-1)],
            "peak_height_mean_model": mm.max(axis=-1), "peak_height_statistical_error": err,
            "peak_height_member_statistical_error": member_err}


def _msd_analysis(traj: Trajectory, dt_fs: float, T: float, kw: dict
                  ) -> Tuple[ReweightResult, np.ndarray, Dict[str, Any]]:
    """MSD against lag, averaged over time origins each weighted by its frame; D of every member's curve.

    Lags run from 0 to T/2 frames, origins over the first T/2 + 1 frames (every origin has every lag).
    Returns the reweighted MSD (one row per origin), the lags (fs) and the diffusion coefficients.
    """
    frames = traj.frames
    if len(frames) < MIN_MSD_FRAMES:
        raise InputError(f"{traj.path}: {len(frames)} frames after --skip; an MSD and its diffusion coefficient "
                         f"need at least {MIN_MSD_FRAMES}: save frames more often or skip fewer", param="skip")
    msd(frames, dt_fs)  # refuses wrapped positions (an atom moving half a cell between frames)
    pos = np.array([a.positions for a in frames], dtype=np.float64)  # (T, n, 3), unwrapped as ASE's MD writes them
    masses = frames[0].get_masses()
    pos -= np.einsum("tnc,n->tc", pos, masses / masses.sum())[:, None, :]  # remove the centre of mass' drift
    n_lags = len(frames) // 2 + 1
    n_origins = len(frames) - n_lags + 1
    by_origin = np.empty((n_origins, n_lags))  # MSD over the atoms, per origin and lag, Å²
    by_atom = np.empty((n_lags, pos.shape[1]))  # MSD over the origins, per lag and atom, Å²
    for lag in range(n_lags):
        d = pos[lag:lag + n_origins] - pos[:n_origins]
        sq = np.einsum("tnc,tnc->tn", d, d)
        by_origin[:, lag], by_atom[lag] = sq.mean(axis=1), sq.mean(axis=0)
    lags = dt_fs * np.arange(n_lags)
    V, Vbar = traj.member_energies_eV[:, :n_origins], traj.mean_energies_eV[:n_origins]
    r = reweight(by_origin, V, Vbar, T, **kw)
    D = np.array([diffusion_coefficient(r.member_average[k], lags).D_A2_per_ps for k in range(r.n_members)])
    own = diffusion_coefficient(by_atom, lags)
    summary = {"D_A2_per_ps_committee_mean": D.mean(), "D_A2_per_ps_committee_std": D.std(ddof=1),
               "D_A2_per_ps_members": D, "D_A2_per_ps_mean_model": own.D_A2_per_ps,
               "D_A2_per_ps_mean_model_error": own.error_A2_per_ps,
               "D_cm2_per_s_committee_mean": D.mean() * A2_PER_PS_IN_CM2_PER_S,
               "D_cm2_per_s_committee_std": D.std(ddof=1) * A2_PER_PS_IN_CM2_PER_S,
               "D_cm2_per_s_mean_model": own.D_cm2_per_s, "fit_window_fs": [own.fit_start_fs, own.fit_end_fs],
               "time_origins": n_origins}
    return r, lags, summary


def _warnings(out: Analysis, traj: Trajectory, source: str, constant: bool = False) -> List[str]:
    """What the reader must know: collapsed weights, a spread below the MD noise (unless the observable is
    ``constant`` over the frames), few frames, an NVE temperature, a cut-off last frame."""
    r, w = out.result, []
    for k in np.flatnonzero(r.degenerate):
        w.append(f"member {k}: ESS {r.ess[k]:.1f} of {r.n_frames} frames ({r.ess_fraction[k]:.3f} < "
                 f"{r.min_ess_fraction:g}): the weights collapsed, the cumulant estimate is used")
    if r.degenerate.all():
        w.append("every member's weights collapsed: the committee's energies differ by more than k_B T over the "
                 "frames (large cells spread ΔV like √N); the cumulant estimates are approximations")
    std, err = np.asarray(r.committee_std), np.asarray(r.statistical_error)
    if not constant and not np.any(std > err):
        w.append("the committee std is nowhere above the statistical error: the model uncertainty is not "
                 "resolved by this run (run longer)")
    if r.n_frames < 2 * r.n_blocks:
        what = "time origins" if out.observable == "msd" else "frames"
        w.append(f"{r.n_frames} {what} for {r.n_blocks} blocks: the statistical errors are rough (run longer or "
                 "save frames more often)")
    if source.startswith("mean kinetic"):
        w.append(f"the weights use the mean kinetic temperature of the frames, {out.temperature_K:.1f} K (an NVE "
                 "run); give --temperature to set it")
    if traj.incomplete_tail:
        w.append("the last frame of the file is incomplete (a run still writing, or cut off) and was left out")
    return w


def _plain(x):
    """Numpy arrays and scalars as lists and floats, non-finite floats as None, for json."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    return x


# ----------------------------------------------------------------------------- the report

def _g(x) -> str:
    return "nan" if x is None or not math.isfinite(float(x)) else f"{float(x):.6g}"


def _table(a: Analysis) -> str:
    """The report of :meth:`Analysis.table`."""
    r = a.result
    unit = f" ({a.unit})" if a.unit else ""
    lines = [f"{a.path}: {a.observable}{unit}, {a.n_frames} frames (first {a.skipped} skipped), "
             f"{r.n_members} committee members, weights at {a.temperature_K:.6g} K ({a.temperature_source})"]
    s = a.summary
    if a.observable == "rdf":
        names = a.pairs or ["total"]
        for p, name in enumerate(names):
            def at(key):
                return np.atleast_1d(s[key])[p] if np.ndim(s[key]) else s[key]
            lines.append(f"  highest peak of g(r) {name}: r = {_g(at('peak_r_A'))} Å; height committee mean "
                         f"{_g(at('peak_height_committee_mean'))} ± {_g(at('peak_height_committee_std'))} (std), "
                         f"mean model {_g(at('peak_height_mean_model'))} ± "
                         f"{_g(at('peak_height_statistical_error'))} (statistical)")
        member_value, member_error = s["peak_height_members"], s["peak_height_member_statistical_error"]
        head = "peak height"
    elif a.observable == "msd":
        lines.append(f"  D committee mean {_g(s['D_A2_per_ps_committee_mean'])} ± "
                     f"{_g(s['D_A2_per_ps_committee_std'])} (std) Å²/ps = {_g(s['D_cm2_per_s_committee_mean'])} ± "
                     f"{_g(s['D_cm2_per_s_committee_std'])} cm²/s")
        lines.append(f"  D mean model {_g(s['D_A2_per_ps_mean_model'])} ± {_g(s['D_A2_per_ps_mean_model_error'])} "
                     f"Å²/ps (fit {_g(s['fit_window_fs'][0])}-{_g(s['fit_window_fs'][1])} fs, "
                     f"{s['time_origins']} time origins)")
        member_value, member_error = s["D_A2_per_ps_members"], None
        head = "D Å²/ps"
    else:
        lines.append(f"  committee mean {_g(r.committee_mean)} ± {_g(r.committee_std)} (std over members)")
        lines.append(f"  mean model     {_g(r.mean_model_average)} ± {_g(r.statistical_error)} "
                     f"(statistical: block error, {r.n_blocks} blocks)")
        member_value, member_error = r.member_average, r.member_statistical_error
        head = "average"
    lines.append(f"  {'member':>6}  {head:>24}  {'stat. error':>12}  {'ESS frames':>10}  {'ESS/T':>6}  estimate")
    for k in range(r.n_members):
        v = np.atleast_1d(member_value[k])
        e = "-" if member_error is None else " ".join(_g(x) for x in np.atleast_1d(member_error[k]))
        lines.append(f"  {k:>6}  {' '.join(_g(x) for x in v):>24}  {e:>12}  "
                     f"{r.ess[k]:>10.1f}  {r.ess_fraction[k]:>6.3f}  {r.method[k]}")
    if a.observable in ("rdf", "msd"):
        lines += _curve_table(a)
    lines += [f"warning: {w}" for w in a.warnings]
    return "\n".join(lines)


def _curve_table(a: Analysis) -> List[str]:
    """g(r) or the MSD: x, committee mean and std, mean model and its statistical error, one row per point."""
    r = a.result
    x_name = "r_A" if a.observable == "rdf" else "lag_fs"
    curves = [(name, p) for p, name in enumerate(a.pairs)] if a.pairs else [("", None)]
    out = []
    for name, p in curves:
        def pick(v):
            return np.asarray(v) if p is None else np.asarray(v)[p]
        out.append(f"  {x_name + (' ' + name if name else ''):>14}  {'committee mean':>14}  {'committee std':>14}  "
                   f"{'mean model':>14}  {'stat. error':>14}")
        for i, x in enumerate(a.axis):
            vals = (pick(r.committee_mean)[i], pick(r.committee_std)[i], pick(r.mean_model_average)[i],
                    pick(r.statistical_error)[i])
            out.append(f"  {x:>14.6g}" + "".join(f"  {v:>14.6g}" for v in vals))
    return out


def _plot(a: Analysis, path: str) -> None:
    """The curve of rdf or msd: the mean model's, and the committee mean with a ±1 std band."""
    if a.observable not in ("rdf", "msd"):
        raise InputError(f"--plot draws the curves of rdf and msd; {a.observable} is one number (see the table "
                         "or --json)", param="plot")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .files import atomic_write

    r = a.result
    curves = [(name, p) for p, name in enumerate(a.pairs)] if a.pairs else [("", None)]
    fig, (ax, ax_err) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    for c, (name, p) in enumerate(curves):
        def pick(v):
            return np.asarray(v) if p is None else np.asarray(v)[p]
        mean, std = pick(r.committee_mean), pick(r.committee_std)
        ax.fill_between(a.axis, mean - std, mean + std, color=f"C{c}", alpha=0.3, lw=0,
                        label=f"committee ±1 std {name}".rstrip())
        ax.plot(a.axis, pick(r.mean_model_average), color=f"C{c}", lw=1.5, label=f"mean model {name}".rstrip())
        ax_err.plot(a.axis, std, color=f"C{c}", lw=1.5, label=f"committee std {name}".rstrip())
        ax_err.plot(a.axis, pick(r.statistical_error), color=f"C{c}", lw=1, ls="--",
                    label=f"statistical error {name}".rstrip())
    y_name = "g(r)" if a.observable == "rdf" else "MSD (Å²)"
    ax.set_ylabel(y_name)
    ax_err.set_ylabel("std, error")
    ax_err.set_xlabel("r (Å)" if a.observable == "rdf" else "lag (fs)")
    ax.set_title(f"{os.path.basename(a.path)}: {r.n_members} members, {a.n_frames} frames, "
                 f"{a.temperature_K:.6g} K", fontsize=9)
    ax.legend(fontsize=8)
    ax_err.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=path.rsplit(".", 1)[-1] if "." in os.path.basename(path) else "png", dpi=120)
    plt.close(fig)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))
