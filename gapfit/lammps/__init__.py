"""gapfit in LAMMPS: run LAMMPS inputs whose potential is a gapfit model (docs/lammps.md).

The model is named as LAMMPS users name a potential::

    units metal
    read_data si.data
    pair_style gapfit si_model.npz uncertainty local_energy every 10
    pair_coeff * * Si

:func:`run` (and ``gapfit lammps INPUT``) reads the input, hands every line
to LAMMPS except the ``pair_style gapfit`` and ``pair_coeff`` lines, and
puts in their place ``pair_style zero CUTOFF`` (LAMMPS's neighbour lists and
ghost atoms as for a real potential) and ``fix gapfit all external
pf/callback 1 1``, whose Python callback gives LAMMPS the model's energy,
forces, global and per-atom virial and per-atom energies. Thermostats,
barostats, computes, dumps, restarts, variables, loops and ``include`` are
LAMMPS's own. Under ``mpirun -np N`` each rank predicts the environments
of its own atoms and the shares are summed. ``committee K [seed S] [file
PATH]`` adds a posterior committee's energies on the check steps (the fix's
vector entries 4.., and frames for ``gapfit analyze``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ..errors import GapfitError, InputError
from ._bridge import FIX_ID, STD_FIX_ID, STD_PROPERTIES, ModelFix, load_library
from ._input import Line, PairStyle, include_target, names_gapfit, parse_pair_coeff, read_lines, split_words, \
    touches_pair_style

__all__ = ["run", "LammpsRun", "Session", "world_rank", "FIX_ID", "STD_PROPERTIES"]


@dataclass
class LammpsRun:
    """What a LAMMPS run with a gapfit model did."""

    steps: int  # LAMMPS's step counter at the end
    model_calls: int  # callbacks (force evaluations) on this rank
    model_seconds: float  # wall time in the callback (gathering, prediction, reduction)
    predict_seconds: float  # of which in the prediction itself
    wall_seconds: float  # wall time of the whole input
    ranks: int  # MPI ranks
    uncertainty_maxima: Tuple[float, float, float]  # [max local-energy std, max force std, step] at the last check


def run(input: str, *, variables: Union[Mapping[str, Any], Iterable[Tuple[str, Any]], None] = None,
        log: Optional[str] = "log.lammps", screen: bool = True, baseline: Any = None) -> LammpsRun:
    """Run the LAMMPS input file ``input`` with its ``pair_style gapfit`` models.

    ``variables``: LAMMPS index variables set before the input is read
    (as ``lmp -var NAME VALUE``); ``log``: LAMMPS's log file (None for none);
    ``screen``: LAMMPS's screen output; ``baseline``: the ASE calculator of a
    Δ-learning model (see :func:`gapfit.load`). Units must be metal (eV, Å,
    ps). Raises :class:`gapfit.errors.InputError` naming the line for a
    gapfit line that cannot be used, and for LAMMPS's own errors.
    """
    t0 = time.perf_counter()
    with Session(variables=variables, log=log, screen=screen, baseline=baseline) as session:
        session.file(input)
        return session.summary(time.perf_counter() - t0)


def world_rank() -> int:
    """This process's MPI rank (0 without MPI or mpi4py)."""
    try:
        from mpi4py import MPI
    except ImportError:
        return 0
    return MPI.COMM_WORLD.Get_rank()


class Session:
    """One LAMMPS instance whose input lines may name gapfit models.

    :meth:`file` runs an input file, :meth:`command` one line; ``lmp`` is the
    ``lammps`` object itself (for reading atoms, computes and variables from
    Python). Close it (or use it as a context manager) to free LAMMPS.
    """

    def __init__(self, *, variables: Union[Mapping[str, Any], Iterable[Tuple[str, Any]], None] = None,
                 log: Optional[str] = "log.lammps", screen: bool = True, baseline: Any = None,
                 cmdargs: Iterable[str] = ()):
        lammps, MPI = load_library()
        args = ["-log", log or "none"] + ([] if screen else ["-screen", "none"]) + list(cmdargs)
        pairs = variables.items() if isinstance(variables, Mapping) else (variables or ())
        for name, value in pairs:
            args += ["-var", str(name), str(value)]
        # a communicator only where there are several ranks (a serial LAMMPS build refuses one)
        several = MPI is not None and MPI.COMM_WORLD.Get_size() > 1
        try:
            self.lmp = lammps(cmdargs=args, comm=MPI.COMM_WORLD) if several else lammps(cmdargs=args)
        except Exception as exc:  # LAMMPS refusing its command-line arguments (a bad -var name, a log path)
            raise InputError(f"LAMMPS: {' '.join(str(exc).split())}") from None
        self.ranks = int(self.lmp.extract_setting("world_size"))
        if self.ranks > 1 and MPI is None:
            self.lmp.close()
            raise InputError(f"LAMMPS runs on {self.ranks} MPI ranks: gapfit needs mpi4py to share the model's "
                             "work between them: pip install 'gapfit[lammps]'")
        self.comm = MPI.COMM_WORLD if self.ranks > 1 else None
        self.baseline = baseline
        self.fix: Optional[ModelFix] = None
        self.pending: Optional[Tuple[PairStyle, Any, str]] = None  # pair_style read, pair_coeff not yet
        self._last_style: Optional[Tuple[PairStyle, Any, str]] = None  # that of the fix in place
        self._models: Dict[str, Any] = {}
        self._tmp = tempfile.mkdtemp(prefix="gapfit-lammps-")
        self._segments = 0

    # -- running input ----------------------------------------------------------------------------------
    def file(self, path: str) -> None:
        """Run an input file; InputError for a gapfit line that cannot be used or a LAMMPS error."""
        self._run_lines(read_lines(path))

    def command(self, text: str) -> None:
        """Run one input line (a ``pair_style gapfit`` or ``pair_coeff`` line included)."""
        self._run_lines([Line(text, "command", 1)])

    def _run_lines(self, lines: List[Line]) -> None:
        """LAMMPS reads runs of ordinary lines itself (loops, variables, ``jump SELF`` within them)."""
        plain: List[Line] = []
        for line in lines:
            if self._is_ours(line.words, line.text):
                self._flush(plain)
                plain = []
                self._handle(line)
            else:
                plain.append(line)
        self._flush(plain)

    def _is_ours(self, words: List[str], text: str) -> bool:
        """Whether gapfit must handle the line itself (LAMMPS's variables in it are expanded first)."""
        if not words:
            return False
        active = self.fix is not None or self.pending is not None
        if words[0] == "pair_style":
            return names_gapfit(words) or active
        if words[0] in ("pair_coeff", "clear"):
            return active
        if words[0] == "include":
            target = include_target(words)
            return "$" in text or (target is not None and touches_pair_style(target))
        return False

    def _handle(self, line: Line) -> None:
        text = self._expand(line)
        words = split_words(text)
        if not words:
            return
        if words[0] == "pair_style" and names_gapfit(words):
            self._pair_style(PairStyle.parse(words, line.where), line.where)
        elif words[0] == "pair_coeff":
            self._pair_coeff(words, line.where)
        elif words[0] == "include" and include_target(words) is not None and touches_pair_style(words[1]):
            self._run_lines(read_lines(words[1]))
        else:  # another pair style or a clear ends the gapfit model
            if words[0] in ("pair_style", "clear"):
                self._remove_fix()
                self.pending = None
            self._lammps(self.lmp.command, text, where=line.where)

    def _expand(self, line: Line) -> str:
        if "$" not in line.text:
            return line.text
        return self._lammps(self.lmp.expand, line.text, where=line.where) or ""

    def _flush(self, lines: List[Line]) -> None:
        """Let LAMMPS read these lines as one file."""
        if not any(ln.words for ln in lines):
            return
        self._segments += 1
        path = os.path.join(self._tmp, f"segment{self._segments}.in")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(ln.text for ln in lines) + "\n")
        self._lammps(self.lmp.file, path, where=f"{lines[0].where}-{lines[-1].number}")

    def _lammps(self, call, *args, where: str):
        """A call into LAMMPS; its error, or one raised in the model's callback meanwhile, as InputError."""
        try:
            out = call(*args)
        except GapfitError:
            raise
        except Exception as exc:  # LAMMPS raises plain Exception with its own message
            if self.fix is not None and self.fix.error is not None:
                raise self.fix.error from None
            raise InputError(f"{where}: LAMMPS: {' '.join(str(exc).split())}") from None
        if self.fix is not None and self.fix.error is not None:
            error, self.fix.error = self.fix.error, None
            raise error
        return out

    # -- the gapfit lines ---------------------------------------------------------------------------------
    def _pair_style(self, style: PairStyle, where: str) -> None:
        model = self._together(lambda: self._model(style.model, where))
        self._remove_fix()
        self._lammps(self.lmp.command, f"pair_style zero {model_cutoff(model):.6f}", where=where)
        self.pending = (style, model, where)

    def _pair_coeff(self, words: List[str], where: str) -> None:
        if self.pending is None:  # a second pair_coeff: the style stands, the type map changes
            if self.fix is None:
                raise InputError(f"{where}: pair_coeff before pair_style gapfit")
            self.pending = self._last_style
        style, model, style_where = self.pending
        if not self.lmp.extract_setting("box_exist"):
            raise InputError(f"{where}: pair_coeff before the simulation box exists: put it after read_data, "
                             "create_box or read_restart")
        units = self.lmp.extract_global("units")
        if units != "metal":
            raise InputError(f"{style_where}: gapfit models work in units metal (eV, Å, ps), this input sets "
                             f"units {units}: put 'units metal' before the box is made")
        periodic = self.lmp.extract_box()[5]
        if len(set(periodic)) > 1:
            raise InputError(f"{where}: boundary {' '.join('p' if p else 'f/s' for p in periodic)}: gapfit needs a "
                             "box periodic in all three directions or in none")
        elements = parse_pair_coeff(words, int(self.lmp.extract_global("ntypes")), where)
        from ase.data import atomic_numbers, chemical_symbols
        known = [chemical_symbols[z] for z in model.state_.species]
        unknown = [e for e in elements if atomic_numbers[e] not in model.state_.species]
        if unknown:
            raise InputError(f"{where}: element {unknown[0]} is not in the model {style.model} (it knows "
                             f"{', '.join(known)}); map each atom type to one of these")
        self._remove_fix()
        for cmd in ("pair_coeff * *", f"fix {FIX_ID} all external pf/callback 1 1",
                    f"fix_modify {FIX_ID} energy yes virial yes"):
            self._lammps(self.lmp.command, cmd, where=where)
        if style.uncertainty and not self._has_fix(STD_FIX_ID):
            self._lammps(self.lmp.command, f"fix {STD_FIX_ID} all property/atom {' '.join(STD_PROPERTIES)}",
                         where=where)
        committee = None
        if style.committee:
            from ..committee import Committee
            committee = Committee(model, style.committee, seed=style.committee_seed, member_forces=False)
        self.fix = ModelFix(self.lmp, self.comm, model, elements, style.uncertainty, style.every,
                            committee=committee, committee_file=style.committee_file)
        self.lmp.set_fix_external_callback(FIX_ID, self.fix)
        self.lmp.fix_external_set_vector_length(FIX_ID, 3 + style.committee)
        for k, value in enumerate(list(self.fix.maxima) + [0.0] * style.committee, start=1):
            self.lmp.fix_external_set_vector(FIX_ID, k, value)  # no check yet: LAMMPS leaves the vector unset
        self._last_style = self.pending
        self.pending = None

    def _model(self, path: str, where: str):
        if path not in self._models:
            from ..model import load
            try:
                self._models[path] = load(path, baseline=self.baseline)
            except FileNotFoundError:
                raise InputError(f"{where}: pair_style gapfit {path}: no such model file") from None
            except OSError as exc:
                raise InputError(f"{where}: pair_style gapfit {path}: cannot read the model "
                                 f"({exc.strerror or exc})") from None
            except GapfitError as exc:  # its message names the file
                raise InputError(f"{where}: pair_style gapfit: {exc}") from None
        return self._models[path]

    def _together(self, fn):
        """``fn()`` on every rank; if it failed on any, the first failure is raised on all (none is left waiting)."""
        result, failure = None, None
        try:
            result = fn()
        except GapfitError as exc:
            failure = exc
        if self.comm is not None:
            reasons = self.comm.allgather(None if failure is None else str(failure))
            if failure is None and any(reasons):
                failure = InputError(next(r for r in reasons if r))
        if failure is not None:
            raise failure
        return result

    def _has_fix(self, fix_id: str) -> bool:
        return bool(self.lmp.has_id("fix", fix_id))

    def _remove_fix(self) -> None:
        if self.fix is not None:
            self.fix.close()
            if self._has_fix(FIX_ID):
                self._lammps(self.lmp.command, f"unfix {FIX_ID}", where="gapfit")
        self.fix = None

    # -- results ----------------------------------------------------------------------------------------
    def summary(self, wall_seconds: float) -> LammpsRun:
        fix = self.fix
        return LammpsRun(steps=int(self.lmp.extract_global("ntimestep")), model_calls=fix.calls if fix else 0,
                         model_seconds=fix.seconds if fix else 0.0,
                         predict_seconds=fix.predict_seconds if fix else 0.0, wall_seconds=wall_seconds,
                         ranks=self.ranks,
                         uncertainty_maxima=tuple(fix.maxima) if fix else (0.0, 0.0, -1.0))

    def close(self) -> None:
        if self.fix is not None:
            self.fix.close()
        if self.lmp is not None:
            self.lmp.close()
            self.lmp = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def model_cutoff(model) -> float:
    """The largest distance (Å) at which the model's terms and baseline see a neighbour (pair_style zero's cutoff)."""
    state = model.state_
    cut = max([float(t.cutoff_A) for t in state.terms] or [0.0])
    for part in getattr(state.baseline, "parts", [state.baseline]):
        value = getattr(part, "cutoff", None)
        if isinstance(value, (int, float)) and value > 0:
            cut = max(cut, float(value))
    return cut
