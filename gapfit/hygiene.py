"""Data hygiene: which training frames the model cannot explain, from the fit's factor, without refits.

The weights solve a linear least-squares problem: weighted data rows ``W``
(each row divided by its noise level σ) and targets ``t`` stacked over the
prior rows, with triangular factor ``R``. For the block of rows of one frame,

* its **leverage** is the trace of its block of the hat matrix,
  ``H_ff = W_f (RᵀR)⁻¹ W_fᵀ``: how many of the model's degrees of freedom
  the frame pins down on its own (a frame unlike any other has a leverage
  near its number of observations);
* its **leave-one-out residuals** are ``(I − H_ff)⁻¹ (t_f − W_f α)``: exactly
  the residuals of a model refitted without the frame (same sparse points
  and hyperparameters), in units of σ. They are z-scores: a frame whose
  labels agree with the rest of the data gives values of order one, a frame
  with a shifted energy or a wrong force gives large ones, however well the
  full fit (which has seen it) reproduces it.

Each frame gets ``energy_z`` (signed), ``forces_z_rms`` and ``forces_z_max``
(over its components), ``virial_z_rms``, and a ``score``: the largest of
``|energy_z|``, ``forces_z_max`` and ``virial_z_max``, by which frames are
ranked, worst first.
"""
from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import scipy.linalg

from . import sgp

KIND_CODES = {"energy": 0, "forces": 1, "virial": 2}


@dataclass
class FrameHygiene:
    """Leverage and leave-one-out z-scores of one training frame (see the module docstring).

    ``index`` is the 0-based position among the frames as read; ``where``
    names the file and frame when known. z-scores are None for labels the
    frame does not have. ``forces_worst_atom`` is the atom of ``forces_z_max``.
    ``dropped``: not part of the fit (``gapfit fit --drop-outliers`` left it
    out); its z-scores are then plain out-of-sample residuals over σ.
    """

    index: int
    where: str
    config_type: str
    n_atoms: int
    leverage: float
    energy_z: Optional[float]
    energy_loo_meV_per_atom: Optional[float]
    forces_z_rms: Optional[float]
    forces_z_max: Optional[float]
    forces_worst_atom: Optional[int]
    virial_z_rms: Optional[float]
    virial_z_max: Optional[float]
    score: float
    dropped: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class HygieneReport:
    """Per-frame hygiene of a training set, ranked worst first."""

    COLUMNS = ("rank", "index", "where", "config_type", "n_atoms", "leverage", "energy_z",
               "energy_loo_meV_per_atom", "forces_z_rms", "forces_z_max", "forces_worst_atom",
               "virial_z_rms", "virial_z_max", "score", "dropped")

    def __init__(self, frames: Sequence[FrameHygiene]):
        self.frames: List[FrameHygiene] = sorted(frames, key=lambda f: (-f.score, f.index))

    def __len__(self) -> int:
        return len(self.frames)

    def worst(self, n: int = 10) -> List[FrameHygiene]:
        """The ``n`` frames with the largest scores."""
        return self.frames[:n]

    def rank_of(self, index: int) -> int:
        """1-based rank of the frame at position ``index`` among the frames as read."""
        for r, f in enumerate(self.frames, 1):
            if f.index == index:
                return r
        raise KeyError(f"frame {index} is not in the report")

    def above(self, threshold: float) -> List[FrameHygiene]:
        """Frames whose score exceeds ``threshold``, worst first."""
        return [f for f in self.frames if f.score > threshold]

    def to_json(self) -> dict:
        """``{"n_frames": .., "frames": [..worst first..]}``."""
        return {"n_frames": len(self.frames), "score": "max(|energy_z|, forces_z_max, virial_z_max)",
                "frames": [{"rank": r, **f.to_dict()} for r, f in enumerate(self.frames, 1)]}

    def write_csv(self, path: str) -> None:
        """Write the ranking as CSV, atomically (temporary file, then rename)."""
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".hygiene-", suffix=".csv", dir=directory)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a report, readable as any output file (mkstemp makes it private)
        try:
            with os.fdopen(fd, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(self.COLUMNS)
                for r, f in enumerate(self.frames, 1):
                    d = f.to_dict()
                    w.writerow([r] + [_fmt(d[c]) for c in self.COLUMNS[1:]])
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def table(self, n: int = 10) -> str:
        """The ``n`` worst frames as a text table."""
        head = f"{'rank':>4} {'index':>6} {'config_type':<16} {'atoms':>5} {'leverage':>8} {'E z':>8} " \
               f"{'F z rms':>8} {'F z max':>8} {'V z rms':>8} {'score':>8}  where"
        lines = [head]
        for r, f in enumerate(self.worst(n), 1):
            lines.append(f"{r:>4} {f.index:>6} {f.config_type[:16]:<16} {f.n_atoms:>5} {f.leverage:>8.3f} "
                         f"{_fmt(f.energy_z, 8)} {_fmt(f.forces_z_rms, 8)} {_fmt(f.forces_z_max, 8)} "
                         f"{_fmt(f.virial_z_rms, 8)} {f.score:>8.2f}  {f.where}")
        return "\n".join(lines)

    def plot(self, path: str, label: int = 10) -> None:
        """Score against leverage, one point per frame, the ``label`` worst labelled by index."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        types = sorted({f.config_type for f in self.frames})
        cmap = plt.get_cmap("tab10" if len(types) <= 10 else "tab20")
        for k, ct in enumerate(types):
            for dropped in (False, True):
                sel = [f for f in self.frames if f.config_type == ct and f.dropped == dropped]
                if sel:
                    ax.scatter([f.leverage for f in sel], [f.score for f in sel], s=14 if not dropped else 28,
                               color=cmap(k % cmap.N), marker="x" if dropped else "o",
                               label=ct if not dropped else f"{ct} (not in the fit)")
        for f in self.worst(label):
            ax.annotate(str(f.index), (f.leverage, f.score), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("leverage (trace of the frame's hat-matrix block)")
        ax.set_ylabel("leave-one-out |z|, largest over energy, forces, virial")
        ax.axhline(5.0, color="grey", lw=0.8, ls="--")
        ax.legend(fontsize=7, loc="best")
        ax.set_title("training-frame hygiene (worst frames labelled by index)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _fmt(v, width: Optional[int] = None) -> str:
    if v is None:
        s = "" if width is None else "-"
    elif isinstance(v, bool):
        s = str(int(v))
    elif isinstance(v, float):
        s = f"{v:.4g}" if width is None else f"{v:.2f}"
    else:
        s = str(v)
    return s if width is None else f"{s:>{width}}"


class RowSpool:
    """Weighted design rows kept in a temporary file, chunk by chunk, for the hygiene pass.

    Each chunk records the rows, their targets, frame, kind and noise group,
    and the log scales (hyperparameters relative to the fit's initial ones)
    they were weighted with, so they can be brought to the final ones.
    """

    def __init__(self, n_cols: int, directory: Optional[str] = None):
        self.n_cols = n_cols
        self._fh = tempfile.TemporaryFile(prefix="gapfit-rows-", dir=directory)
        self._chunks: List[tuple] = []
        self.nbytes = 0

    def add(self, A: np.ndarray, b: np.ndarray, frame: np.ndarray, kind: np.ndarray, group: np.ndarray,
            x: np.ndarray) -> None:
        data = np.ascontiguousarray(np.hstack([A, b[:, None]]), dtype=np.float64)
        offset = self._fh.seek(0, os.SEEK_END)
        self._fh.write(data.tobytes())
        self.nbytes += data.nbytes
        self._chunks.append((offset, len(A), np.asarray(frame), np.asarray(kind), np.asarray(group),
                             np.array(x, dtype=float)))

    def __iter__(self) -> Iterator[tuple]:
        """(A, b, frame, kind, group, x) per chunk, in the order written."""
        for offset, n, frame, kind, group, x in self._chunks:
            self._fh.seek(offset)
            data = np.fromfile(self._fh, dtype=np.float64, count=n * (self.n_cols + 1)).reshape(n, self.n_cols + 1)
            yield data[:, :-1], data[:, -1], frame, kind, group, x

    def close(self) -> None:
        self._fh.close()


def frame_statistics(R: np.ndarray, alpha: np.ndarray, A: np.ndarray, b: np.ndarray, frame: np.ndarray,
                     kind: np.ndarray, not_fitted: Sequence[int] = ()) -> Dict[int, dict]:
    """Leverage and leave-one-out residuals (units of σ) of each frame of a chunk of weighted rows.

    ``R`` is the final factor (M × M, or the (M+1)-square factor of
    ``[A | b]``: see :func:`gapfit.sgp.solve_rt`), ``alpha`` the weights, ``A``/``b``
    the chunk's rows and targets divided by their σ, ``frame``/``kind``
    the frame index and kind code of each row (a frame's rows contiguous).
    Frames in ``not_fitted`` were left out of the fit: their residuals are
    already out of sample and are returned as they are. Returns
    ``{frame: {"leverage", "loo" (per row), "kind" (per row), "fitted"}}``;
    a frame whose ``I − H_ff`` is not positive definite cannot have been
    fitted and is returned as not fitted.
    """
    not_fitted = set(int(k) for k in not_fitted)
    V = sgp.solve_rt(R, A)  # (M, rows)
    resid = b - A @ alpha
    out: Dict[int, dict] = {}
    bounds = np.flatnonzero(np.diff(frame)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(frame)]):
        Vf = V[:, lo:hi]
        H = Vf.T @ Vf
        f = int(frame[lo])
        loo, fitted = resid[lo:hi], False
        if f not in not_fitted:
            try:
                # for a fitted frame I − H_ff is positive definite (the prior rows keep H_ff below I)
                c = scipy.linalg.cho_factor(np.eye(hi - lo) - H, check_finite=False)
                loo, fitted = scipy.linalg.cho_solve(c, resid[lo:hi], check_finite=False), True
            except np.linalg.LinAlgError:
                pass
        out[f] = {"leverage": float(np.trace(H)), "loo": loo, "kind": kind[lo:hi], "fitted": fitted}
    return out


def summarise(index: int, where: str, config_type: str, n_atoms: int, stats: dict,
              sigma_energy_per_frame_eV: Optional[float] = None) -> FrameHygiene:
    """One frame's :class:`FrameHygiene` from :func:`frame_statistics` output."""
    loo, kind = stats["loo"], stats["kind"]
    e = loo[kind == 0]
    f = loo[kind == 1]
    v = loo[kind == 2]
    energy_z = float(e[0]) if len(e) else None
    e_mev = None
    if energy_z is not None and sigma_energy_per_frame_eV is not None:
        e_mev = energy_z * sigma_energy_per_frame_eV / n_atoms * 1e3
    fz_rms = float(np.sqrt(np.mean(f ** 2))) if len(f) else None
    fz_max = float(np.max(np.abs(f))) if len(f) else None
    worst_atom = int(np.argmax(np.abs(f)) // 3) if len(f) else None
    vz_rms = float(np.sqrt(np.mean(v ** 2))) if len(v) else None
    vz_max = float(np.max(np.abs(v))) if len(v) else None
    score = max([abs(energy_z) if energy_z is not None else 0.0, fz_max or 0.0, vz_max or 0.0])
    return FrameHygiene(index=index, where=where, config_type=config_type, n_atoms=n_atoms,
                        leverage=stats["leverage"], energy_z=energy_z, energy_loo_meV_per_atom=e_mev,
                        forces_z_rms=fz_rms, forces_z_max=fz_max, forces_worst_atom=worst_atom,
                        virial_z_rms=vz_rms, virial_z_max=vz_max, score=float(score),
                        dropped=not stats.get("fitted", True))

