"""Error metrics of predictions against reference labels, with units in the names."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Sequence

import numpy as np

from .data import Labels

if TYPE_CHECKING:  # for annotations only
    from .prediction import Prediction

EV_PER_A3_TO_GPA = 160.21766208


def charge_metrics(preds: Sequence["Prediction"], frames: Sequence) -> Dict[str, float]:
    """MAE and RMSE (me) of the predicted charges against the frames' ``initial_charges``, where both exist.

    Empty when the model predicts no charges or no frame carries reference charges.
    """
    err = [np.asarray(p.charges) - np.asarray(a.arrays["initial_charges"], dtype=float)
           for p, a in zip(preds, frames) if p.charges is not None and "initial_charges" in a.arrays]
    if not err:
        return {}
    e = np.concatenate(err)
    return {"charge_mae_me": float(1e3 * np.mean(np.abs(e))), "charge_rmse_me": float(1e3 * np.sqrt(np.mean(e * e))),
            "n_charges": int(len(e))}


def error_metrics(preds: Sequence["Prediction"], labels: Sequence[Labels], n_atoms: Sequence[int]) -> Dict[str, float]:
    """MAE and RMSE of energy (per atom and per structure, meV), forces (meV/Å), stress (GPa).

    Quantities missing from the reference are skipped; counts say how many
    values each figure rests on.
    """
    e_struct, e_atom, f_err, s_err = [], [], [], []
    for p, lb, n in zip(preds, labels, n_atoms):
        if lb.energy_eV is not None:
            d = p.energy - lb.energy_eV
            e_struct.append(d)
            e_atom.append(d / n)
        if lb.forces_eV_per_A is not None and p.forces is not None:
            f_err.append((p.forces - lb.forces_eV_per_A).ravel())
        if lb.stress_eV_per_A3 is not None and p.stress is not None:
            s_err.append(p.stress - lb.stress_eV_per_A3)
    out: Dict[str, float] = {"n_frames": len(preds), "n_atoms": int(sum(n_atoms))}
    if e_struct:
        ea, es = np.abs(e_atom), np.abs(e_struct)
        out.update(energy_mae_mev_per_atom=1e3 * ea.mean(), energy_rmse_mev_per_atom=1e3 * np.sqrt(np.mean(ea ** 2)),
                   energy_mae_mev_per_structure=1e3 * es.mean(),
                   energy_rmse_mev_per_structure=1e3 * np.sqrt(np.mean(es ** 2)), n_energies=len(es))
    if f_err:
        f = np.concatenate(f_err)
        out.update(force_mae_mev_per_ang=1e3 * np.mean(np.abs(f)), force_rmse_mev_per_ang=1e3 * np.sqrt(np.mean(f ** 2)),
                   n_force_components=int(len(f)))
    if s_err:
        s = np.concatenate(s_err) * EV_PER_A3_TO_GPA
        out.update(stress_mae_gpa=float(np.mean(np.abs(s))), stress_rmse_gpa=float(np.sqrt(np.mean(s ** 2))),
                   n_stress_components=int(len(s)))
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}


def metrics_by_config_type(preds, labels, n_atoms) -> Dict[str, Dict[str, float]]:
    """:func:`error_metrics` for each ``config_type`` separately."""
    groups: Dict[str, List[int]] = {}
    for k, lb in enumerate(labels):
        groups.setdefault(lb.config_type, []).append(k)
    return {ct: error_metrics([preds[k] for k in idx], [labels[k] for k in idx], [n_atoms[k] for k in idx])
            for ct, idx in sorted(groups.items())}


def format_table(overall: Dict[str, float], by_type: Dict[str, Dict[str, float]]) -> str:
    """Plain-text table: one line per config_type and one for all."""
    cols = [("energy_mae_mev_per_atom", "E MAE meV/at"), ("energy_rmse_mev_per_atom", "E RMSE meV/at"),
            ("force_mae_mev_per_ang", "F MAE meV/Å"), ("force_rmse_mev_per_ang", "F RMSE meV/Å"),
            ("stress_mae_gpa", "S MAE GPa")]
    head = f"{'config_type':<16}{'frames':>7}" + "".join(f"{h:>15}" for _, h in cols)
    lines = [head]
    for name, m in list(by_type.items()) + [("ALL", overall)]:
        vals = "".join(f"{m[k]:>15.3f}" if k in m else f"{'-':>15}" for k, _ in cols)
        lines.append(f"{name:<16}{m['n_frames']:>7}" + vals)
    return "\n".join(lines)


def parity_plot(preds, labels, n_atoms, path: str) -> None:
    """Write a parity plot (energy per atom, force components, stress) to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    e = [(lb.energy_eV / n, p.energy / n) for p, lb, n in zip(preds, labels, n_atoms) if lb.energy_eV is not None]
    if e:
        panels.append(("energy (eV/atom)", np.array(e)))
    f = [np.stack([lb.forces_eV_per_A.ravel(), p.forces.ravel()], 1) for p, lb in zip(preds, labels)
         if lb.forces_eV_per_A is not None and p.forces is not None]
    if f:
        panels.append(("force components (eV/Å)", np.concatenate(f)))
    s = [np.stack([lb.stress_eV_per_A3, p.stress], 1) * EV_PER_A3_TO_GPA for p, lb in zip(preds, labels)
         if lb.stress_eV_per_A3 is not None and p.stress is not None]
    if s:
        panels.append(("stress (GPa)", np.concatenate(s)))
    with_cal = any(p.forces_std is not None for p in preds)
    n_panels = len(panels) + (2 if with_cal else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 4), squeeze=False)
    if with_cal:
        from .calibration import calibration_plot
        calibration_plot(preds, labels, axes[0][len(panels):])
    for ax, (title, xy) in zip(axes[0], panels):
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.5)
        lo, hi = xy.min(), xy.max()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        mae = np.mean(np.abs(xy[:, 1] - xy[:, 0]))
        ax.set_title(f"{title}\nMAE {mae:.4g}")
        ax.set_xlabel("reference")
        ax.set_ylabel("gapfit")
    fig.tight_layout()
    from .files import atomic_write
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format=path.rsplit(".", 1)[-1] if "." in path else "png", dpi=120)
    plt.close(fig)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))
