"""Checking GAP settings by name, before any work is done.

:func:`check_params` is the one place that knows the type and range of every
:class:`gapfit.GAP` parameter; ``GAP.fit`` and the command line's ``--config``
reader both call it, so a wrong value is reported with the parameter's name
(and, on the command line, the file it came from) instead of failing deep
inside a fit. :func:`check_species_settings` then rejects per-species entries
for species that the data do not contain, which would otherwise be ignored,
and per-species settings (the Coulomb baseline's charges) that miss a
species the data contain.

The parameters themselves are declared once, in the signature of
``GAP.__init__`` and the numpydoc "Parameters" section of the class
docstring: :func:`scalar_flags` derives command-line flags (type and help)
from those two, so the command line does not list them again.
"""
from __future__ import annotations

import inspect
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from .errors import InputError

#: Settings of an on-the-fly learning run (``gapfit.learn.learn``), stored in
#: ``DIR/run.json`` and restored by ``resume``, with their defaults for a new run.
LEARN_DEFAULTS = {
    "temperature_K": 300.0, "timestep_fs": 1.0, "steps": 1000, "ensemble": "nvt", "friction_per_fs": 0.01,
    "seed": 0, "threshold_force_std": None, "threshold_force_std_relative": None,
    "threshold_local_energy_std": None, "max_reference_calls": 100, "min_steps_between_calls": 10,
    "check_interval": 1, "sparse_per_update": 16,
}
#: Names of the noise groups in ``config_type_sigma`` entries.
SIGMA_GROUPS = ("energy", "forces", "virial")
#: Largest accepted cutoff and Gaussian width (Å), and radial or angular basis size:
#: beyond them a descriptor no longer fits in memory, so the value is a typo.
MAX_CUTOFF_A = 50.0
MAX_BASIS = 40


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _is_real(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def _is_whole(value: Any) -> bool:
    return _is_real(value) and float(value).is_integer()


def _positive(name: str, value: Any) -> None:
    if not (_is_real(value) and value > 0):
        raise InputError(f"{name} must be a positive number, got {_describe(value)}", param=name)


def _whole(minimum: int, maximum: Optional[int] = None) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not (_is_whole(value) and value >= minimum and (maximum is None or value <= maximum)):
            span = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise InputError(f"{name} must be a whole number {span}, got {_describe(value)}", param=name)
    return check


def _length(name: str, value: Any) -> None:
    if not (_is_real(value) and 0 < value <= MAX_CUTOFF_A):
        raise InputError(f"{name} must be a length in (0, {MAX_CUTOFF_A:g}] Å, got {_describe(value)}", param=name)


def _one_of(*choices: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise InputError(f"{name} must be one of {list(choices)}, got {_describe(value)}", param=name)
    return check


def _optional(check: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
    def wrapped(name: str, value: Any) -> None:
        if value is not None:
            check(name, value)
    return wrapped


def species_number(key: Any) -> Optional[int]:
    """Atomic number of a per-species key (``29``, ``"29"`` or ``"Cu"``), or None if it names no element."""
    from ase.data import atomic_numbers
    if isinstance(key, bool):
        return None
    if isinstance(key, numbers.Integral):
        z = int(key)
    elif isinstance(key, str) and key.strip().isdigit():
        z = int(key.strip())
    elif isinstance(key, str) and key in atomic_numbers:
        z = atomic_numbers[key]
    else:
        return None
    return z if 1 <= z <= 118 else None


def _per_species(value_check: Callable[[str, Any], None], what: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise InputError(f"{name} must be a mapping {{species: {what}}}, got {_describe(value)}", param=name)
        for key, v in value.items():
            if species_number(key) is None:
                raise InputError(f"{name}: {key!r} is not a chemical element (use a symbol such as 'Si' "
                                 "or an atomic number)", param=name)
            value_check(f"{name}[{key!r}]", v)
    return check


def _n_sparse(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        _per_species(_whole(1), "whole number")(name, value)
    else:
        _whole(1)(name, value)


def _finite(name: str, value: Any) -> None:
    if not _is_real(value):
        raise InputError(f"{name} must be a finite number, got {_describe(value)}", param=name.split("[")[0])


def _config_type_sigma(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise InputError(f"{name} must be a mapping {{config_type: {{energy: .., forces: .., virial: ..}}}}, "
                         f"got {_describe(value)}", param=name)
    for ct, entry in value.items():
        if not isinstance(entry, Mapping):
            raise InputError(f"{name}[{ct!r}] must be a mapping with keys among {list(SIGMA_GROUPS)}, "
                             f"got {_describe(entry)}", param=name)
        for group, sigma in entry.items():
            if group not in SIGMA_GROUPS:
                raise InputError(f"{name}[{ct!r}]: unknown key {group!r}; use {', '.join(SIGMA_GROUPS)}",
                                 param=name)
            if not (_is_real(sigma) and sigma > 0):
                raise InputError(f"{name}[{ct!r}][{group!r}] must be a positive number, got {_describe(sigma)}",
                                 param=name)


def _sigma_floor(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise InputError(f"{name} must be a mapping {{energy: .., forces: .., virial: ..}} of the smallest σ "
                         f"--optimize may choose, got {_describe(value)}", param=name)
    for group, floor in value.items():
        if group not in SIGMA_GROUPS:
            raise InputError(f"{name}: unknown key {group!r}; use {', '.join(SIGMA_GROUPS)}", param=name)
        if not (floor is None or (_is_real(floor) and floor >= 0)):
            raise InputError(f"{name}[{group!r}] must be a number >= 0 (0: no floor), got {_describe(floor)}",
                             param=name)


def _fraction(name: str, value: Any) -> None:
    if not (_is_real(value) and 0 <= value < 1):
        raise InputError(f"{name} must be a number in [0, 1), got {_describe(value)}", param=name)


def _text(name: str, value: Any) -> None:
    if not (isinstance(value, str) and value):
        raise InputError(f"{name} must be a non-empty string, got {_describe(value)}", param=name)


def _optimize(name: str, value: Any) -> None:
    if not (isinstance(value, bool) or value in ("global", "config_type")):
        raise InputError(f"{name} must be true, false, \"global\" or \"config_type\", got {_describe(value)}",
                         param=name)


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true or false, got {_describe(value)}", param=name)


#: The ``charges`` that are not a mapping: per-atom charges read from each frame, or learned by the fit.
CHARGE_MODES = ("initial_charges", "learn", "qeq")
#: Keys of the ``coulomb`` settings.
COULOMB_KEYS = ("width", "accuracy", "screening")
#: Keys of the ``coulomb`` settings that only charge equilibration (``charges="qeq"``) reads.
QEQ_KEYS = ("hardness", "electronegativity", "charge_sigma", "reference_charges")
#: Accuracies of the Ewald sum accepted: [MIN_COULOMB_ACCURACY, MAX_COULOMB_ACCURACY) (relative error).
MIN_COULOMB_ACCURACY = 1e-15
MAX_COULOMB_ACCURACY = 0.1


def _yaml_hint(value: Any) -> str:
    """A hint for numbers that a YAML file turned into text (PyYAML reads 1e-6 as a string; 1.0e-6 is a number)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (in YAML write it with a decimal point, e.g. 1.0e-6: PyYAML reads 1e-6 as text)"
    return ""


def _charges(name: str, value: Any) -> None:
    if value is None or (isinstance(value, str) and value in CHARGE_MODES):
        return
    if isinstance(value, Mapping):
        if not value:
            raise InputError(f"{name} is empty: give a charge (in e) per species, e.g. {{Na: 1.0, Cl: -1.0}}",
                             param=name)
        for key, v in value.items():
            if species_number(key) is None:
                raise InputError(f"{name}: {key!r} is not a chemical element (use a symbol such as 'Na' or an "
                                 "atomic number)", param=name)
            if not _is_real(v):
                raise InputError(f"{name}[{key!r}] must be a finite number (charge in e), got {_describe(v)}"
                                 + _yaml_hint(v), param=name)
        return
    raise InputError(f"{name} must be a mapping {{species: charge in e}} (e.g. {{Na: 1.0, Cl: -1.0}}), "
                     f"\"initial_charges\" (each frame's per-atom charges), \"learn\" (learned from the data) "
                     f"or \"qeq\" (charge equilibration), "
                     f"got {_describe(value)}", param=name)


def _coulomb(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise InputError(f"{name} must be a mapping with keys among {list(COULOMB_KEYS)} (e.g. {{width: 0.5, "
                         f"accuracy: 1.0e-6, screening: [1.0, 3.0]}}), got {_describe(value)}", param=name)
    unknown = [k for k in value if k not in COULOMB_KEYS + QEQ_KEYS]
    if unknown:
        raise InputError(f"{name}: unknown key {unknown[0]!r}; use {', '.join(COULOMB_KEYS)} (and with charges "
                         f"qeq {', '.join(QEQ_KEYS)})", param=name)
    _qeq_settings(name, value)
    width = value.get("width")
    if isinstance(width, Mapping):
        for key, w in width.items():
            if species_number(key) is None:
                raise InputError(f"{name}['width']: {key!r} is not a chemical element (use a symbol such as 'Na' "
                                 "or an atomic number)", param=name)
            if not (_is_real(w) and 0 < w <= MAX_CUTOFF_A):
                raise InputError(f"{name}['width'][{key!r}] must be a Gaussian width in (0, {MAX_CUTOFF_A:g}] Å, "
                                 f"got {_describe(w)}" + _yaml_hint(w), param=name)
    elif width is not None and not (_is_real(width) and 0 < width <= MAX_CUTOFF_A):
        raise InputError(f"{name}['width'] must be a Gaussian width in (0, {MAX_CUTOFF_A:g}] Å for every species, "
                         f"a mapping {{species: width}} or null (point charges), got {_describe(width)}"
                         + _yaml_hint(width), param=name)
    accuracy = value.get("accuracy")
    if "accuracy" in value and not (_is_real(accuracy) and MIN_COULOMB_ACCURACY <= accuracy < MAX_COULOMB_ACCURACY):
        raise InputError(f"{name}['accuracy'] must be a number in [{MIN_COULOMB_ACCURACY:g}, "
                         f"{MAX_COULOMB_ACCURACY:g}) (the relative error of the Ewald sum; default 1.0e-6), "
                         f"got {_describe(accuracy)}" + _yaml_hint(accuracy), param=name)
    screening = value.get("screening")
    if screening is not None:
        ok = (isinstance(screening, Sequence) and not isinstance(screening, str) and len(screening) == 2
              and all(_is_real(r) for r in screening))
        if not ok:
            raise InputError(f"{name}['screening'] must be two radii [r_in, r_out] in Å or null, got "
                             f"{_describe(screening)}", param=name)
        r_in, r_out = screening
        if not 0 <= r_in < r_out <= MAX_CUTOFF_A:
            raise InputError(f"{name}['screening'] = [{r_in}, {r_out}]: need 0 <= r_in < r_out <= "
                             f"{MAX_CUTOFF_A:g} Å", param=name)


def _qeq_settings(name: str, value: Mapping) -> None:
    """The charge-equilibration keys of ``coulomb``: hardness and reference charges per species, χ's term, σ_q."""
    for key, what, positive in (("hardness", "hardness in eV/e²", True), ("reference_charges", "charge in e", False)):
        table = value.get(key)
        if table is None:
            continue
        if not isinstance(table, Mapping) or not table:
            raise InputError(f"{name}['{key}'] must be a mapping {{species: {what}}}, got {_describe(table)}",
                             param=name)
        for k, v in table.items():
            if species_number(k) is None:
                raise InputError(f"{name}['{key}']: {k!r} is not a chemical element", param=name)
            if not _is_real(v) or (positive and v <= 0):
                raise InputError(f"{name}['{key}'][{k!r}] must be a {'positive' if positive else 'finite'} number "
                                 f"({what}), got {_describe(v)}" + _yaml_hint(v), param=name)
    sigma = value.get("charge_sigma")
    if sigma is not None and not (_is_real(sigma) and sigma > 0):
        raise InputError(f"{name}['charge_sigma'] must be a positive number (the starting noise of the reference "
                         f"charges, e), got {_describe(sigma)}" + _yaml_hint(sigma), param=name)
    chi = value.get("electronegativity")
    if chi is not None and not isinstance(chi, Mapping):
        raise InputError(f"{name}['electronegativity'] must be a mapping of soap settings (e.g. {{cutoff: 4.0, "
                         f"n_sparse: 200}}), got {_describe(chi)}", param=name)


#: Every GAP parameter and its check (the same names as ``GAP.__init__``).
CHECKS: Dict[str, Callable[[str, Any], None]] = {
    "cutoff": _length,
    "cutoff_transition_width": _length,
    "n_max": _whole(1, MAX_BASIS),
    "l_max": _whole(0, MAX_BASIS),
    "atom_sigma": _length,
    "backend": _one_of("featomic", "dscribe"),
    "dscribe_mode": _one_of("smooth", "analytic"),
    "zeta": _positive,
    "delta": _optional(_positive),
    "n_sparse": _n_sparse,
    "sparse_method": _one_of("cur", "fps", "random"),
    "sigma_energy": _positive,
    "sigma_forces": _positive,
    "sigma_virial": _positive,
    "config_type_sigma": _config_type_sigma,
    "e0": _optional(_per_species(_finite, "energy in eV")),
    "jitter": _positive,
    "seed": _whole(0),
    "calibration_fraction": _fraction,
    "energy_key": _optional(_text),
    "forces_key": _optional(_text),
    "stress_key": _optional(_text),
    "progress": _flag,
    "optimize": _optimize,
    "optimize_delta": _flag,
    "sigma_floor": _sigma_floor,
    "hygiene": _flag,
    "hygiene_spool_gb": _positive,
    "sparse_candidates": _optional(_whole(1)),
    "atoms_per_block": _optional(_whole(1)),
    "terms": lambda name, value: None,  # parsed and checked term by term by gapfit.terms.build_terms
    "core_repulsion": _flag,
    "core_radii": _one_of("data", "covalent"),
    "core_file": _optional(_text),
    "charges": _charges,
    "coulomb": _coulomb,
    "baseline": lambda name, value: None,  # an ASE calculator object, checked by gapfit.baselines
}


def check_params(params: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` (with ``param`` set) for the first unknown or ill-typed setting."""
    for name, value in params.items():
        if name not in CHECKS:
            raise InputError(f"unknown parameter {name!r}; known: {sorted(k for k in CHECKS if k != 'progress')}",
                             param=name)
        CHECKS[name](name, value)
    cutoff, width = params.get("cutoff"), params.get("cutoff_transition_width")
    if cutoff is not None and width is not None and width > cutoff:
        raise InputError(f"cutoff_transition_width ({width} Å) must not exceed cutoff ({cutoff} Å)",
                         param="cutoff_transition_width")


def check_species_settings(params: Mapping[str, Any], species: Iterable[int],
                           terms: Sequence[Mapping[str, Any]] = ()) -> None:
    """Check the per-species settings against the species of the data.

    Rejects per-species entries (``n_sparse``, ``e0``, ``charges``, the
    Coulomb ``width``, a term's ``n_sparse``) for species absent from the
    data, and requires a charge (fixed charges) and a width (per-species
    widths) for every species present; ``coulomb`` settings without
    ``charges`` are refused (they would have no effect). ``terms``: the
    terms' settings (``Term.to_dict()``), checked as given (a misspelt or
    absent species would otherwise fall back to the default).
    """
    from ase.data import chemical_symbols
    present = sorted(set(int(z) for z in species))
    _check_coulomb_species(params, present)
    given = [(name, params.get(name)) for name in ("n_sparse", "e0", "charges")]
    given.append(("coulomb width", (params.get("coulomb") or {}).get("width")))
    given += [(f"terms[{k}] ({t.get('type')}) n_sparse", t.get("n_sparse")) for k, t in enumerate(terms)]
    for name, value in given:
        if not isinstance(value, Mapping):
            continue
        absent = [key for key in value if species_number(key) not in present]
        if absent:
            raise InputError(f"{name} has entries for {[str(k) for k in absent]}, which the data do not contain "
                             f"(species: {[chemical_symbols[z] for z in present]}); remove them or check the "
                             "data files", param=name.split(" ")[0].split("[")[0])


def _check_coulomb_species(params: Mapping[str, Any], present: Sequence[int]) -> None:
    """Every species of the data has a fixed charge and a width where they are given per species."""
    from ase.data import chemical_symbols
    charges, coulomb = params.get("charges"), params.get("coulomb")
    if charges is None:
        if coulomb is not None:
            raise InputError("coulomb settings are given but no charges, so there is no Coulomb baseline for "
                             "them to set: add charges ({species: e}, \"initial_charges\" or \"learn\"; "
                             "--coulomb on the command line) or remove coulomb", param="coulomb")
        return
    names = [chemical_symbols[z] for z in present]
    qeq_given = [k for k in (coulomb or {}) if k in QEQ_KEYS]
    if qeq_given and charges != "qeq":
        raise InputError(f"coulomb {', '.join(qeq_given)} set charge equilibration, but charges is {charges!r}: "
                         "use charges qeq (--coulomb qeq) or remove them", param="coulomb")
    if isinstance(charges, Mapping):
        missing = [chemical_symbols[z] for z in present if z not in {species_number(k) for k in charges}]
        if missing:
            example = " ".join(f"{s}=..." for s in missing)
            raise InputError(f"charges has no charge for {', '.join(missing)}, which the data contain (species: "
                             f"{names}); give every species a charge in e: add {', '.join(missing)} to charges "
                             f"in the config, or to --coulomb (e.g. --coulomb \"... {example}\"); 0 for a "
                             "neutral species", param="charges")
    width = (coulomb or {}).get("width")
    if isinstance(width, Mapping):
        missing = [chemical_symbols[z] for z in present if z not in {species_number(k) for k in width}]
        if missing:
            raise InputError(f"coulomb width has no Gaussian width for {', '.join(missing)}, which the data "
                             f"contain (species: {names}); give every species a width in Å, or one number for "
                             "all", param="coulomb")


# -- parameters declared by a signature and a numpydoc docstring -------------------------------------------

#: The annotation names that make a parameter settable by a flag of one value, and the value's type.
_SCALAR_TYPES: Dict[str, type] = {"int": int, "float": float, "str": str}


@dataclass(frozen=True)
class ScalarFlag:
    """A command-line flag setting one scalar parameter of an estimator."""

    flag: str  #: ``--name-with-dashes``
    dest: str  #: the parameter's name
    type: type  #: int, float or str: what argparse converts the value to
    help: str  #: the first sentence of the parameter's docstring entry, with its default


def docstring_parameters(cls: type) -> Dict[str, str]:
    """The entries of the numpydoc "Parameters" section of ``cls``'s docstring: {name: text}.

    The text is the entry's description, its lines joined by single spaces
    (the ``name : type`` line itself is not part of it).
    """
    lines = (inspect.getdoc(cls) or "").splitlines()
    entries: Dict[str, List[str]] = {}
    name = None
    for k, line in enumerate(_section_lines(lines, "Parameters")):
        if line and not line[0].isspace():  # "name : type" (or just "name") starts an entry
            name = line.split(":")[0].strip()
            entries[name] = []
        elif name is not None and line.strip():
            entries[name].append(line.strip())
    return {name: " ".join(text) for name, text in entries.items()}


def _section_lines(lines: Sequence[str], title: str) -> List[str]:
    """The lines of a numpydoc section (after its underline, up to the next section's title)."""
    def is_title(k: int) -> bool:
        return (k + 1 < len(lines) and lines[k].strip() != "" and not lines[k][0].isspace()
                and set(lines[k + 1].strip()) == {"-"})
    starts = [k for k in range(len(lines)) if is_title(k) and lines[k].strip() == title]
    if not starts:
        return []
    body = []
    for k in range(starts[0] + 2, len(lines)):
        if is_title(k):
            break
        body.append(lines[k])
    return body


def first_sentence(text: str) -> str:
    """The first sentence of reStructuredText ``text``, as plain text without its full stop.

    ``literal`` and :role:`target` markup keep only their text, so the
    sentence reads as a command line's help.
    """
    plain = re.sub(r":\w+:`~?([^`]*)`", r"\1", " ".join(text.split()))
    plain = re.sub(r"``([^`]*)``", r"\1", plain)
    end = re.search(r"\.(\s|$)", plain)
    return plain[:end.start()] if end else plain


def _help_case(sentence: str) -> str:
    """A sentence as a help line: lower case first like argparse's own ("Energy" -> "energy", "SOAP" kept)."""
    if sentence[:1].isupper() and sentence[1:2].islower():
        return sentence[0].lower() + sentence[1:]
    return sentence


def scalar_type(annotation: Any) -> Optional[type]:
    """int, float or str when ``annotation`` takes values of that one scalar type (None aside), else None.

    ``annotation`` may be a string (``from __future__ import annotations``):
    ``"float"``, ``"Optional[int]"`` and ``"Union[int, Mapping, None]"`` give
    int/float/int (a mapping is then given in a config file instead), while a
    bool among the types (a switch: a flag of its own) or no scalar type at
    all gives None.
    """
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    names = set(re.findall(r"[A-Za-z_][\w.]*", text))
    scalars = [_SCALAR_TYPES[n] for n in sorted(names & set(_SCALAR_TYPES))]
    if "bool" in names or len(scalars) != 1:
        return None
    return scalars[0]


def scalar_flags(estimator: type, exclude: Iterable[str] = ()) -> List[ScalarFlag]:
    """One flag per scalar parameter of ``estimator.__init__``, in signature order, help from the docstring.

    ``exclude``: parameters set otherwise (a flag of their own, a config file).
    The help is the first sentence of the parameter's docstring entry (lower
    case first), with the signature's default appended when it is not None. A scalar parameter
    without an entry is an error: its flag would have no help.
    """
    helps = docstring_parameters(estimator)
    skipped = set(exclude)
    flags = []
    for name, param in inspect.signature(estimator.__init__).parameters.items():
        value_type = scalar_type(param.annotation)
        if name in skipped or name == "self" or value_type is None:
            continue
        if name not in helps:
            raise ValueError(f"{estimator.__name__} parameter {name!r} has no entry in the docstring's "
                             "Parameters section")
        text = _help_case(first_sentence(helps[name]))
        if param.default is not None and param.default is not inspect.Parameter.empty:
            text += f" (default {param.default})"
        flags.append(ScalarFlag("--" + name.replace("_", "-"), name, value_type,
                                text.replace("%", "%%")))  # argparse formats help with %
    return flags
