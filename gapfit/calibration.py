"""Calibrating predicted uncertainties, and measuring how well they are calibrated.

Raw sparse-GP posterior standard deviations are rarely calibrated: they
measure distance from the data in kernel space, not the size of the error.
gapfit fits one multiplicative scale per quantity on frames held out of the
fit: the scale makes 95.45 % of the held-out |error| / std fall within 2, as
for a Gaussian. The same statistics, evaluated on any labelled data, say how
well the calibrated values work there.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Sequence

import numpy as np

from .data import Labels

if TYPE_CHECKING:  # for annotations only
    from .prediction import Prediction

#: Fraction of a Gaussian within 2 standard deviations.
TWO_SIGMA = 0.9545


def _pairs(preds: Sequence["Prediction"], labels: Sequence[Labels], key: str):
    """(absolute errors, predicted stds, per-atom error norms, per-atom std norms)."""
    err, std, err_norm, std_norm = [], [], [], []
    for p, lb in zip(preds, labels):
        if key == "forces":
            if lb.forces_eV_per_A is None or p.forces_std is None:
                continue
            e = p.forces - lb.forces_eV_per_A
            s = p.forces_std
            err.append(np.abs(e).ravel())
            std.append(s.ravel())
            err_norm.append(np.linalg.norm(e, axis=1))
            std_norm.append(np.linalg.norm(s, axis=1))
        else:
            if lb.energy_eV is None or p.energy_std is None:
                continue
            err.append([abs(p.energy - lb.energy_eV)])
            std.append([p.energy_std])
    if not err:
        return None
    cat = lambda xs: np.concatenate([np.asarray(x, dtype=float) for x in xs])  # noqa: E731
    return cat(err), cat(std), (cat(err_norm) if err_norm else None), (cat(std_norm) if std_norm else None)


#: Fewest (error, std) pairs of a quantity that fix its calibration scale.
MIN_CALIBRATION_PAIRS = 5


def _usable_z(preds, labels, key: str) -> np.ndarray:
    got = _pairs(preds, labels, key)
    if got is None:
        return np.zeros(0)
    err, std = got[0], got[1]
    ok = (std > 0) & np.isfinite(std) & np.isfinite(err)
    return err[ok] / std[ok]


def fit_scales(preds: Sequence["Prediction"], labels: Sequence[Labels]) -> Dict[str, Optional[float]]:
    """Scale per quantity so that 95.45 % of |error|/(scale·std) fall within 2 (None: too few pairs)."""
    out: Dict[str, Optional[float]] = {}
    for key in ("energy", "forces"):
        z = _usable_z(preds, labels, key)
        if len(z) < MIN_CALIBRATION_PAIRS:  # too few usable pairs to say anything
            out[f"{key}_scale"] = None
            continue
        out[f"{key}_scale"] = float(max(np.quantile(z, TWO_SIGMA) / 2.0, 1e-12))
    return out


def describe_scales(scales: Dict[str, Optional[float]], preds: Sequence["Prediction"],
                    labels: Sequence[Labels]) -> str:
    """The fitted scales in words for the log, with the reason wherever a quantity stays uncalibrated."""
    parts = []
    for key, unit in (("energy", "energies"), ("forces", "force components")):
        value = scales.get(f"{key}_scale")
        if value is not None:
            parts.append(f"{key} stds × {value:.4g}")
        else:
            n = len(_usable_z(preds, labels, key))
            parts.append(f"{key} stds not calibrated (the held-out frames give {n} {unit}, "
                         f"{MIN_CALIBRATION_PAIRS} needed; raise calibration_fraction or add frames)")
    return "; ".join(parts)


def uncertainty_metrics(preds: Sequence["Prediction"], labels: Sequence[Labels]) -> Dict[str, float]:
    """Spearman correlation of std and error, and z coverage, for forces and energies.

    Forces: Spearman over atoms between the norm of the predicted force std and
    the norm of the force error; coverage over components. Energies: per
    structure.
    """
    out: Dict[str, float] = {}
    got = _pairs(preds, labels, "forces")
    if got is not None:
        err, std, err_norm, std_norm = got
        out.update(_stats("force", std_norm, err_norm, err, std))
    got = _pairs(preds, labels, "energy")
    if got is not None:
        err, std, _, _ = got
        out.update(_stats("energy", std, err, err, std))
    return out


def _stats(prefix: str, rank_std, rank_err, err, std) -> Dict[str, float]:
    """Spearman of (rank_std, rank_err) and the fractions of err/std within 1 and 2."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(rank_std, rank_err).statistic) if len(rank_err) > 2 else float("nan")
    z = err / np.where(std > 0, std, np.inf)
    return {f"{prefix}_std_spearman": rho, f"{prefix}_z_within_1sigma": float(np.mean(z <= 1.0)),
            f"{prefix}_z_within_2sigma": float(np.mean(z <= 2.0))}


def calibration_plot(preds: Sequence["Prediction"], labels: Sequence[Labels], ax_pair) -> None:
    """Draw predicted std against actual error (forces, per atom) and the z histogram."""
    got = _pairs(preds, labels, "forces")
    if got is None:
        return
    err, std, en, sn = got
    ax1, ax2 = ax_pair
    ax1.loglog(sn, en, ".", ms=2, alpha=0.4)
    lo, hi = max(min(sn.min(), en[en > 0].min() if np.any(en > 0) else 1e-3), 1e-6), max(sn.max(), en.max())
    ax1.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="error = std")
    ax1.set_xlabel("predicted force std norm (eV/Å)")
    ax1.set_ylabel("force error norm (eV/Å)")
    ax1.legend(loc="upper left", fontsize=8)
    z = err / np.where(std > 0, std, np.inf)
    ax2.hist(z[np.isfinite(z)], bins=np.linspace(0, 5, 51), density=True, alpha=0.7, label="|error|/std")
    x = np.linspace(0, 5, 200)
    ax2.plot(x, 2 * np.exp(-x * x / 2) / np.sqrt(2 * np.pi), "k-", lw=1, label="|N(0,1)|")
    ax2.set_xlabel("|z| (force components)")
    ax2.set_title(f"within 1σ {np.mean(z <= 1):.2f}, 2σ {np.mean(z <= 2):.2f}")
    ax2.legend(fontsize=8)
