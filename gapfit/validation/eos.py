"""Equation of state: energy against volume, V0, E0 and the bulk modulus (ase.eos)."""
from __future__ import annotations

import time

import numpy as np
from ase import Atoms
from ase.units import GPa

from .evaluate import Evaluator
from .results import PropertyResult
from .structures import cubic_lattice_constant, require_periodic


def equation_of_state(evaluator: Evaluator, atoms: Atoms, *, strain_range: float = 0.06, n_points: int = 11,
                      eos: str = "birchmurnaghan") -> PropertyResult:
    """E(V) of ``atoms`` scaled uniformly by volumes within ±``strain_range``, fitted with ``eos``.

    Figures: ``volume_per_atom_A3``, ``energy_per_atom_eV``,
    ``bulk_modulus_GPa`` and, for a cubic crystal in a cubic cell,
    ``lattice_constant_A`` (the conventional cell's edge at V0). Positions scale with the cell (no internal
    relaxation: exact for cells whose atoms sit at fixed fractional positions
    by symmetry, such as diamond, fcc, bcc). Each committee member fits its own
    curve on the same structures.
    """
    from ase.eos import EquationOfState
    require_periodic(atoms, "the equation of state")
    t0 = time.perf_counter()
    n = len(atoms)
    V_ref = atoms.get_volume()
    volumes = V_ref * np.linspace(1 - strain_range, 1 + strain_range, n_points)
    energies = []
    for V in volumes:
        a = atoms.copy()
        a.set_cell(atoms.cell * (V / V_ref) ** (1 / 3), scale_atoms=True)
        energies.append(evaluator.evaluate(a, forces=False).energy_eV)
    E = np.array(energies)  # (n_points, 1 + K)
    fits = []
    failed = 0
    for c in range(E.shape[1]):
        try:
            v0, e0, B = EquationOfState(volumes, E[:, c], eos=eos).fit()
        except (RuntimeError, ValueError):  # curve_fit gave up on this column
            if c == 0:
                raise
            v0 = e0 = B = np.nan
            failed += 1
        fits.append((v0, e0, B))
    fits = np.array(fits)
    a_conv = cubic_lattice_constant(atoms)
    cubic = a_conv is not None
    edge = a_conv

    def figures(v0, e0, B):
        out = {"volume_per_atom_A3": v0 / n, "energy_per_atom_eV": e0 / n, "bulk_modulus_GPa": B / GPa}
        if cubic:
            out["lattice_constant_A"] = edge * (v0 / V_ref) ** (1 / 3)
        return out
    per = [figures(*f) for f in fits]
    res = PropertyResult("eos", per[0], details={"volumes_A3": volumes.tolist(), "energies_eV": E[:, 0].tolist(),
                                                 "member_energies_eV": E[:, 1:].T.tolist(), "eos": eos,
                                                 "n_atoms": n})
    if len(per) > 1:
        res.members = {k: np.array([p[k] for p in per[1:] if np.isfinite(p[k])]) for k in per[0]}
    if failed:
        res.notes.append(f"the EOS fit failed for {failed} committee members; their spread leaves them out")
    if not (volumes.min() < fits[0, 0] < volumes.max()):
        res.notes.append("the minimum lies outside the sampled volumes: start nearer the equilibrium (--a)")
    res.seconds = time.perf_counter() - t0
    return res


def plot_eos(result: PropertyResult, path: str) -> None:
    """E(V) per atom: the model's points and fit, each member's curve in light grey."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.eos import EquationOfState
    d = result.details
    n = d["n_atoms"]
    V = np.array(d["volumes_A3"])
    fig, ax = plt.subplots(figsize=(5, 4))
    grid = np.linspace(V.min(), V.max(), 200)
    for e in d["member_energies_eV"]:
        eos = EquationOfState(V, np.array(e), eos=d["eos"])
        try:
            eos.fit()
        except (RuntimeError, ValueError):  # as in equation_of_state: the member's points, joined
            ax.plot(V / n, np.array(e) / n, color="0.75", lw=0.8, ls=":")
            continue
        ax.plot(grid / n, eos.func(grid, *eos.eos_parameters) / n, color="0.75", lw=0.8)
    eos = EquationOfState(V, np.array(d["energies_eV"]), eos=d["eos"])
    eos.fit()
    ax.plot(grid / n, eos.func(grid, *eos.eos_parameters) / n, color="C0", lw=2, label="model")
    ax.plot(V / n, np.array(d["energies_eV"]) / n, "o", color="C0")
    v = result.values
    label = f"B = {v['bulk_modulus_GPa']:.1f}"
    if result.std("bulk_modulus_GPa") is not None:
        label += f" ± {result.std('bulk_modulus_GPa'):.1f}"
    ax.set_title(label + " GPa")
    ax.set_xlabel("volume per atom (Å³)")
    ax.set_ylabel("energy per atom (eV)")
    if d["member_energies_eV"]:
        ax.plot([], [], color="0.75", label=f"committee ({len(d['member_energies_eV'])})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
