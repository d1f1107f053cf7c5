"""Phonons with phonopy: force constants from displaced supercells, bands along the standard path, DOS."""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
from ase import Atoms

from .evaluate import Evaluator
from .results import PropertyResult

#: phonopy's factor from sqrt(eV/Å²/amu) to THz
THZ = 15.633302


def _phonopy(atoms: Atoms, supercell: Sequence[int], primitive: Optional[str]):
    import warnings
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms
    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.array(atoms.cell),
                        scaled_positions=atoms.get_scaled_positions(), masses=atoms.get_masses())
    with warnings.catch_warnings():  # "auto" is asked for on purpose: the notice of its default is noise here
        warnings.simplefilter("ignore")
        return Phonopy(unit, supercell_matrix=np.diag(supercell), primitive_matrix=primitive)


def _to_ase(cell) -> Atoms:
    return Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)


def default_supercell(atoms: Atoms, min_length_A: float = 10.0) -> tuple:
    """Repeats making each axis of the supercell at least ``min_length_A`` long (perpendicular widths)."""
    widths = atoms.get_volume() / np.linalg.norm(np.cross(atoms.cell[[1, 2, 0]], atoms.cell[[2, 0, 1]]), axis=1)
    return tuple(int(max(1, np.ceil(min_length_A / w))) for w in widths)


def phonons(evaluator: Evaluator, atoms: Atoms, *, supercell: Optional[Sequence[int]] = None,
            primitive: Optional[str] = "auto", displacement_A: float = 0.01, n_path_points: int = 120,
            mesh: int = 16, imaginary_threshold_THz: float = -0.1) -> PropertyResult:
    """Band structure along the standard path and DOS of ``atoms`` (relaxed beforehand by the caller).

    Force constants come from phonopy's symmetry-reduced displacements of
    the supercell (default: each axis ≥ 10 Å), less the forces on the
    undisplaced supercell; each committee member gets its own force
    constants from its forces on the same cells, so the band's spread costs
    no more descriptor evaluations. Figures:
    ``max_frequency_THz``, ``min_frequency_THz`` (over the path; negative
    means imaginary), ``gamma_max_frequency_THz`` and
    ``imaginary_modes`` (1 when a mode on the path lies below
    ``imaginary_threshold_THz`` away from Γ's acoustic modes).
    """
    from .structures import require_periodic
    require_periodic(atoms, "phonons")
    t0 = time.perf_counter()
    supercell = tuple(supercell) if supercell else default_supercell(atoms)
    if len(supercell) != 3 or min(supercell) < 1:
        from ..errors import InputError
        raise InputError(f"the phonon supercell must be three repeats ≥ 1, got {list(supercell)}")
    ph = _phonopy(atoms, supercell, primitive)
    ph.generate_displacements(distance=displacement_A)
    forces = []
    for sc in ph.supercells_with_displacements:
        forces.append(evaluator.evaluate(_to_ase(sc), forces=True).forces_eV_per_A)
    # a member's forces on the undisplaced cell are not zero (only the model's
    # are, after relaxation): subtract them so they do not enter its force constants
    residual = evaluator.evaluate(_to_ase(ph.supercell), forces=True).forces_eV_per_A
    F = np.array(forces) - residual[None]  # (n_disp, 1 + K, n_atoms, 3)
    prim = _to_ase(ph.primitive)
    path = prim.cell.bandpath(npoints=n_path_points)
    # q in the primitive reciprocal basis; ASE's path is in the same cell's scaled coordinates
    qpts = path.kpts
    x, xlabels, labels = path.get_linear_kpoint_axis()
    bands, gamma_max, dos_f, dos = [], [], None, []
    for c in range(F.shape[1]):
        ph.forces = F[:, c]
        ph.produce_force_constants()
        ph.symmetrize_force_constants()
        ph.run_qpoints(qpts)
        bands.append(ph.qpoints.frequencies)
        ph.run_qpoints([[0.0, 0.0, 0.0]])
        gamma_max.append(float(np.max(ph.qpoints.frequencies)))
        ph.run_mesh([mesh] * 3, is_gamma_center=True)
        ph.run_total_dos()
        dos_f = ph.total_dos.frequency_points
        dos.append(ph.total_dos.dos)
    bands = np.array(bands)  # (1 + K, n_q, n_branch)
    q_norm = np.linalg.norm(qpts, axis=1)
    away = q_norm > 0.05  # Γ's acoustic modes are zero up to noise; judge imaginary modes elsewhere

    def figures(b, gmax):
        return {"max_frequency_THz": float(b.max()), "min_frequency_THz": float(b.min()),
                "gamma_max_frequency_THz": gmax,
                "imaginary_modes": int(bool(np.any(b[away] < imaginary_threshold_THz)))}
    per = [figures(b, g) for b, g in zip(bands, gamma_max)]
    res = PropertyResult("phonons", per[0], details={
        "supercell": list(supercell), "n_displacements": len(F), "path": path.path, "x": x.tolist(),
        "x_labels": xlabels.tolist(), "labels": list(labels), "frequencies_THz": bands[0].tolist(),
        "member_frequencies_THz": bands[1:].tolist(), "dos_frequencies_THz": np.asarray(dos_f).tolist(),
        "dos": np.asarray(dos[0]).tolist(), "member_dos": np.asarray(dos[1:]).tolist()})
    if len(per) > 1:
        res.members = {k: np.array([p[k] for p in per[1:]]) for k in per[0]}
    if per[0]["imaginary_modes"]:
        res.notes.append(f"imaginary modes: the lowest frequency on the path is {per[0]['min_frequency_THz']:.2f} THz")
    res.seconds = time.perf_counter() - t0
    return res


def gamma_frequencies(evaluator: Evaluator, atoms: Atoms, *, displacement_A: float = 0.01) -> np.ndarray:
    """All 3N frequencies (THz, imaginary as negative) at Γ of ``atoms`` itself as the cell, through phonopy."""
    ph = _phonopy(atoms, (1, 1, 1), "P")
    ph.generate_displacements(distance=displacement_A)
    ph.forces = np.array([evaluator.evaluate(_to_ase(sc), forces=True).forces_eV_per_A[0]
                          for sc in ph.supercells_with_displacements])
    ph.produce_force_constants()
    ph.run_qpoints([[0.0, 0.0, 0.0]])
    return np.sort(ph.qpoints.frequencies[0])


def plot_phonons(result: PropertyResult, path: str) -> None:
    """Bands (model line, committee min-max band shaded) and the DOS beside them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d = result.details
    x = np.array(d["x"])
    f = np.array(d["frequencies_THz"])
    members = np.array(d["member_frequencies_THz"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 4.5), gridspec_kw={"width_ratios": [4, 1]}, sharey=True)
    if len(members):
        lo, hi = members.min(axis=0), members.max(axis=0)
        for b in range(f.shape[1]):
            ax.fill_between(x, lo[:, b], hi[:, b], color="C0", alpha=0.25, lw=0)
    ax.plot(x, f, color="C0", lw=1.2)
    for xl in d["x_labels"]:
        ax.axvline(xl, color="0.6", lw=0.6)
    ax.axhline(0, color="0.3", lw=0.6)
    ticks, names = [], []
    for xl, name in zip(d["x_labels"], d["labels"]):
        name = "Γ" if name == "G" else name
        if ticks and abs(xl - ticks[-1]) < 1e-9:  # a break in the path: both ends at one x
            names[-1] += "|" + name
        else:
            ticks.append(xl)
            names.append(name)
    ax.set_xticks(ticks)
    ax.set_xticklabels(names)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylabel("frequency (THz)")
    title = "phonons"
    if len(members):
        title += f" (shaded: range of {len(members)} committee members)"
    ax.set_title(title, fontsize=10)
    fd = np.array(d["dos_frequencies_THz"])
    for m in d["member_dos"]:
        ax2.plot(m, fd, color="0.75", lw=0.6)
    ax2.plot(d["dos"], fd, color="C0")
    ax2.set_xlabel("DOS")
    ax2.set_xticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
