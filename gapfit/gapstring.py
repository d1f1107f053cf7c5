"""gap_fit's descriptor strings and command lines, read into gapfit's terms and parameters.

``gap_fit`` (QUIP/GAP) describes a model by a string of terms separated by
``:``, each ``name key=value key=value ...``::

    distance_2b cutoff=5.0 delta=2.0 n_sparse=30 : soap cutoff=5.0 n_max=8 l_max=8 atom_sigma=0.5 zeta=4

:func:`parse_gap_string` turns such a string into gapfit's term list
(``[{"type": "distance_2b", ...}, {"type": "soap", ...}]``), with gapfit's
setting names (``theta_uniform`` becomes ``theta``, ``cur_points`` becomes
``"cur"``); :func:`format_gap_string` writes a term list back in gap_fit's
spelling, and ``parse_gap_string(format_gap_string(terms)) == terms``.
:func:`parse_gap_fit_command` reads a whole gap_fit command line (options
such as ``default_sigma``, ``e0``, ``config_type_sigma``, ``gp_file``) and
lists, in ``notes``, what gapfit will do differently from gap_fit.
gap_fit's ``distance_Nb order=2`` is read as gapfit's ``distance_2b``: both
count each pair once (gap_fit's own ``distance_2b`` counts it from both atoms).

Keys are read as gap_fit's parser (libAtoms' ``param_read_line``) reads
them: fields are separated by spaces or commas, a value may be grouped by
``{...}`` or quotes, a bare key means ``T``, and key names are matched
without regard to case. Unlike gap_fit, which ignores keys it does not know,
every key must be one gapfit understands: a key that would change the model
in a way gapfit cannot reproduce is refused with a message naming the term,
the key and what to do instead. Settings not written stay absent, so they get
gapfit's defaults (which are not all gap_fit's: see ``docs/gap_fit.md``).
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import InputError

#: The term types gapfit has, in the order their keys are listed in messages.
TERM_TYPES = ("soap", "distance_2b", "angle_3b")

#: Every descriptor name gap_fit knows (descriptors.f90, get_descriptor_type), lower case.
GAP_FIT_DESCRIPTORS = (
    "bispectrum_so4", "bispectrum_so3", "behler", "distance_2b", "coordination", "angle_3b", "co_angle_3b",
    "co_distance_2b", "cosnx", "trihis", "water_monomer", "water_dimer", "a2_dimer", "ab_dimer",
    "bond_real_space", "atom_real_space", "power_so3", "power_so4", "soap", "an_monomer", "general_monomer",
    "general_dimer", "general_trimer", "water_trimer", "rdf", "as_distance_2b", "molecule_lo_d", "alex",
    "com_dimer", "distance_nb", "soap_express", "soap_turbo",
)

#: Settings of each term type that a gap string can carry (gapfit's names).
TERM_SETTINGS: Dict[str, Tuple[str, ...]] = {
    "soap": ("cutoff", "cutoff_transition_width", "n_max", "l_max", "atom_sigma", "zeta", "delta", "n_sparse",
             "sparse_method", "backend", "dscribe_mode"),
    "distance_2b": ("cutoff", "cutoff_transition_width", "theta", "delta", "n_sparse", "sparse_method"),
    "angle_3b": ("cutoff", "cutoff_transition_width", "theta", "delta", "n_sparse", "sparse_method"),
}

#: gapfit setting -> its gap_fit spelling, where they differ.
GAP_FIT_SPELLING = {"theta": "theta_uniform"}

#: sparse_method values each term accepts (gapfit's names).
SPARSE_METHODS: Dict[str, Tuple[str, ...]] = {
    "soap": ("cur", "fps", "random"),
    "distance_2b": ("uniform", "fps", "random"),
    "angle_3b": ("fps", "random"),
}
#: gap_fit's sparse_method values (case does not matter) -> gapfit's; ``fps`` and ``cur`` are gapfit's own.
_SPARSE_NAMES = {"cur_points": "cur", "cur": "cur", "random": "random", "uniform": "uniform", "fps": "fps"}
#: gap_fit's other sparse_method values (gp_predict.f90), none of which gapfit has.
_GAP_FIT_SPARSE_OTHER = ("pivot", "cluster", "kmeans", "covariance", "none", "fuzzy", "file", "index_file",
                         "cur_covariance", "uniq")
_TO_GAP_FIT_SPARSE = {"cur": "cur_points"}

#: Settings that are whole numbers.
_WHOLE_SETTINGS = ("n_max", "l_max", "n_sparse")
#: Settings that are real numbers.
_REAL_SETTINGS = ("cutoff", "cutoff_transition_width", "atom_sigma", "zeta", "delta", "theta")
_BACKENDS = ("featomic", "dscribe")
_DSCRIBE_MODES = ("smooth", "analytic")
_KERNELS = {"soap": ("dot_product",), "distance_2b": ("ard_se", "gaussian"), "angle_3b": ("ard_se", "gaussian")}
_SPECIES_BLOCKS = {"soap": "one block per centre species",
                   "distance_2b": "one block per species pair",
                   "angle_3b": "one block per species triplet"}

# ---------------------------------------------------------------- tokenising
def _split(text: str, seps: str, where: str, *, param: Optional[str] = "gap") -> List[str]:
    """Split ``text`` at characters of ``seps`` outside ``{...}`` and quotes (libAtoms' split_string)."""
    out: List[str] = []
    cur: List[str] = []
    depth = 0
    quote = ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'" and depth == 0:
            quote = ch
            cur.append(ch)
        elif ch == "{":
            depth += 1
            cur.append(ch)
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise InputError(f"{where}: a '}}' without its '{{' in {_quote(text)}", param=param)
            cur.append(ch)
        elif depth == 0 and (ch in seps or (ch.isspace() and " " in seps)):
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if quote:
        raise InputError(f"{where}: a {quote} quote is not closed in {_quote(text)}", param=param)
    if depth:
        raise InputError(f"{where}: a '{{' is not closed in {_quote(text)}", param=param)
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def _quote(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def _unwrap(value: str) -> str:
    """``{x}``, ``"x"`` or ``'x'`` -> ``x`` (repeatedly), when the group spans the whole value."""
    value = value.strip()
    while len(value) >= 2:
        first, last = value[0], value[-1]
        if first in "\"'" and last == first and first not in value[1:-1]:
            value = value[1:-1].strip()
        elif first == "{" and last == "}" and _group_end(value) == len(value) - 1:
            value = value[1:-1].strip()
        else:
            break
    return value


def _group_end(value: str) -> int:
    """Index of the '}' closing the '{' at ``value[0]`` (-1 if none)."""
    depth = 0
    quote = ""
    for i, ch in enumerate(value):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'" and depth == 1:
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _fields(text: str, where: str, param: Optional[str] = "gap") -> List[Tuple[str, Optional[str]]]:
    """``key=value`` fields of a parameter line: [(key as written, value or None for a bare key)]."""
    out = []
    for field in _split(text, " ,", where, param=param):
        if "=" in field and not field.startswith(("{", "\"", "'")):
            key, value = field.split("=", 1)
            if not key:
                raise InputError(f"{where}: field {_quote(field)} has no key before '='", param=param)
            out.append((key, value))
        else:
            out.append((field, None))
    return out


# ---------------------------------------------------------------- values
class _Bad(ValueError):
    """A value that does not fit its key; the message says what was expected."""


def _real(text: Optional[str]) -> float:
    if text is None or not _unwrap(text):
        raise _Bad("needs a value (key=number)")
    raw = _unwrap(text)
    try:
        value = float(re.sub(r"(?<=[0-9.])[dD](?=[+-]?[0-9])", "e", raw))
    except ValueError:
        raise _Bad(f"must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise _Bad(f"must be a finite number, got {raw!r}")
    return value


def _positive(text: Optional[str]) -> float:
    value = _real(text)
    if value <= 0:
        raise _Bad(f"must be positive, got {_unwrap(text or '')!r}")
    return value


def _whole(minimum: int) -> Callable[[Optional[str]], int]:
    def convert(text: Optional[str]) -> int:
        if text is None or not _unwrap(text):
            raise _Bad("needs a value (key=whole number)")
        raw = _unwrap(text)
        if not re.fullmatch(r"[+-]?[0-9]+", raw):
            raise _Bad(f"must be a whole number, got {raw!r}")
        value = int(raw)
        if value < minimum:
            raise _Bad(f"must be at least {minimum}, got {value}")
        return value
    return convert


def _logical(text: Optional[str]) -> bool:
    if text is None:
        return True  # a bare key is T, as in gap_fit
    raw = _unwrap(text).lower()
    if raw in ("t", "true", ".true.", ""):
        return True
    if raw in ("f", "false", ".false."):
        return False
    raise _Bad(f"must be T or F, got {_unwrap(text)!r}")


def _word(text: Optional[str]) -> str:
    if text is None or not _unwrap(text):
        raise _Bad("needs a value")
    return _unwrap(text)


def _species_key(key: str) -> Union[int, str]:
    from .params import species_number
    key = key.strip()
    if re.fullmatch(r"[0-9]+", key):
        if species_number(int(key)) is None:
            raise _Bad(f"{key} is not an atomic number")
        return int(key)
    if species_number(key) is None:
        raise _Bad(f"{key!r} is not a chemical element (write Si, O, ... or an atomic number)")
    return key


def _n_sparse_value(per_species: bool) -> Callable[[Optional[str]], Any]:
    whole = _whole(1)

    def convert(text: Optional[str]) -> Any:
        raw = (text or "").strip()
        if raw.startswith("{") and ":" in raw:
            if not per_species:
                raise _Bad("takes one number here (points per species pair or triplet), not a per-species list")
            parts = _split(_unwrap(raw), ":", "n_sparse")  # balanced: the term was split already
            if len(parts) % 2:
                raise _Bad(f"per-species form is {{Si:1000:O:500}}, got {raw!r}")
            out: Dict[Union[int, str], int] = {}
            for sym, num in zip(parts[::2], parts[1::2]):
                key = _species_key(sym)
                if key in out:
                    raise _Bad(f"names {sym} twice")
                out[key] = whole(num)
            return out
        return whole(text)
    return convert


def _sparse_method(term: str) -> Callable[[Optional[str]], str]:
    def convert(text: Optional[str]) -> str:
        raw = _word(text)
        name = raw.lower()
        allowed = SPARSE_METHODS[term]
        spelled = [_TO_GAP_FIT_SPARSE.get(m, m) for m in allowed]
        if name in _SPARSE_NAMES and _SPARSE_NAMES[name] in allowed:
            return _SPARSE_NAMES[name]
        if name == "cur_covariance" and term == "soap":
            raise _Bad("gapfit's CUR works on the descriptor matrix, as gap_fit's cur_points: "
                       "use sparse_method=cur_points")
        if name in _SPARSE_NAMES or name in _GAP_FIT_SPARSE_OTHER:
            hint = {"distance_2b": "uniform, a grid of distances, is gapfit's default",
                    "angle_3b": "fps, farthest-point sampling, is gapfit's default and the closest to an even cover",
                    "soap": "cur_points is gapfit's default"}[term]
            raise _Bad(f"{raw!r} is not available for {term} in gapfit; use one of {', '.join(spelled)} "
                       f"({hint})")
        raise _Bad(f"unknown sparse_method {raw!r}; {term} takes one of {', '.join(spelled)}")
    return convert


def _one_of(*choices: str) -> Callable[[Optional[str]], str]:
    def convert(text: Optional[str]) -> str:
        raw = _word(text)
        if raw.lower() not in choices:
            raise _Bad(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw.lower()
    return convert


# -------------------------------------------------------- the key tables
# A key's rule is one of
#   ("set", gapfit_name, convert)             the value becomes a setting
#   ("neutral", check, what)                  accepted only when check(value) holds: gap_fit's default,
#                                             which is what gapfit does; otherwise refused with `what`
#   ("refuse", why)                           gap_fit knows it, gapfit does not do it
Rule = Tuple[Any, ...]


def _equals(expected: Any, convert: Callable[[Optional[str]], Any]) -> Callable[[Optional[str]], bool]:
    def check(text: Optional[str]) -> bool:
        value = convert(text)
        return value == expected
    return check


def _is_true(text: Optional[str]) -> bool:
    return _logical(text)


def _is_false(text: Optional[str]) -> bool:
    return not _logical(text)


def _kernel_is(term: str) -> Callable[[Optional[str]], bool]:
    def check(text: Optional[str]) -> bool:
        return _word(text).lower() in _KERNELS[term]
    return check


def _species_rule(term: str) -> Rule:
    return ("refuse", f"gapfit makes {_SPECIES_BLOCKS[term]} by itself, for every species in the data "
                      "(as gap_fit's add_species=T): remove this key")


def _rules(term: str) -> Dict[str, Rule]:
    """gap_fit key (lower case, altkeys included) -> rule, for one term type."""
    soap = term == "soap"
    rules: Dict[str, Rule] = {
        "cutoff": ("set", "cutoff", _positive),
        "cutoff_transition_width": ("set", "cutoff_transition_width", _positive),
        "delta": ("set", "delta", _positive),
        "energy_scale": ("set", "delta", _positive),
        "n_sparse": ("set", "n_sparse", _n_sparse_value(per_species=soap)),
        "sparse_method": ("set", "sparse_method", _sparse_method(term)),
        "covariance_type": ("neutral", _kernel_is(term),
                            f"gapfit's {term} uses the {_KERNELS[term][0]} kernel"
                            + (" (gap_fit's gaussian is the same)" if not soap else "")
                            + f": write covariance_type={_KERNELS[term][0]} or leave it out"),
        "add_species": ("neutral", _is_true,
                        f"gapfit always makes {_SPECIES_BLOCKS[term]} for every species in the data, "
                        "so hand-written per-species terms cannot be given: remove add_species=F"),
        "f0": ("neutral", _equals(0.0, _real),
               "gapfit's Gaussian process has mean zero; shift the energies through e0 instead"),
        "mark_sparse_atoms": ("neutral", _is_false,
                              "gapfit does not rewrite the training file with sparse atoms marked: remove it"),
        "unique_hash_tolerance": ("neutral", _equals(1e-10, _real),
                                  "gapfit removes exact duplicate environments with its own tolerance: remove it"),
        "unique_descriptor_tolerance": ("neutral", _equals(1e-10, _real),
                                        "gapfit removes exact duplicate environments with its own tolerance: "
                                        "remove it"),
        "config_type_n_sparse": ("refuse", "gapfit chooses n_sparse points per species, not per config_type: "
                                           "use n_sparse"),
        "lengthscale_factor": ("refuse", "gapfit takes the kernel length scale in Å: use theta_uniform"),
        "theta_fac": ("refuse", "gapfit takes the kernel length scale in Å: use theta_uniform"),
        "lengthscale_file": ("refuse", "gapfit takes one kernel length scale in Å: use theta_uniform"),
        "theta_file": ("refuse", "gapfit takes one kernel length scale in Å: use theta_uniform"),
        "sparse_file": ("refuse", "gapfit chooses its sparse points itself (sparse_method); "
                                  "sparse points from a file are not supported"),
        "print_sparse_index": ("refuse", "gapfit does not write sparse-point index files (the model file holds "
                                         "the sparse points): remove it"),
    }
    if soap:
        rules.update({
            "n_max": ("set", "n_max", _whole(1)),
            "l_max": ("set", "l_max", _whole(0)),
            "atom_sigma": ("set", "atom_sigma", _positive),
            "atom_gaussian_width": ("set", "atom_sigma", _positive),
            "zeta": ("set", "zeta", _positive),
            "soap_exponent": ("set", "zeta", _positive),
            "backend": ("set", "backend", _one_of(*_BACKENDS)),
            "dscribe_mode": ("set", "dscribe_mode", _one_of(*_DSCRIBE_MODES)),
            "lengthscale_uniform": ("refuse", "soap's dot_product kernel has no length scale: remove it"),
            "theta_uniform": ("refuse", "soap's dot_product kernel has no length scale: remove it"),
            "central_weight": ("neutral", _equals(1.0, _real),
                               "gapfit's SOAP weighs the central atom as 1 (central_weight=1.0): remove it"),
            "normalise": ("neutral", _is_true, "gapfit always normalises the SOAP vector: remove normalise=F"),
            "normalize": ("neutral", _is_true, "gapfit always normalises the SOAP vector: remove normalize=F"),
            "central_reference_all_species": ("neutral", _is_false,
                                              "gapfit places the central atom's Gaussian in its own species' "
                                              "density only: remove it"),
            "average": ("neutral", _is_false, "gapfit's SOAP is per atom; averaged SOAP is not supported"),
            "diagonal_radial": ("neutral", _is_false, "gapfit computes the full power spectrum: remove it"),
            "covariance_sigma0": ("neutral", _equals(0.0, _real),
                                  "gapfit's kernel is (q·q')^zeta without sigma0: remove it"),
            "cutoff_dexp": ("neutral", _equals(0, _whole(0)),
                            "gapfit's cutoff is the shifted cosine over cutoff_transition_width, "
                            "without decay: remove it"),
            "cutoff_scale": ("neutral", _equals(1.0, _real), "gapfit's cutoff has no decay scale: remove it"),
            "cutoff_rate": ("neutral", _equals(1.0, _real), "gapfit's cutoff has no decay rate: remove it"),
            "basis_error_exponent": ("neutral", _equals(10.0, _real),
                                     "gapfit's radial basis is featomic's (or dscribe's), not gap_fit's: "
                                     "remove it"),
            "radial_basis": ("neutral", lambda t: _word(t).lower() == "gto",
                             "gapfit's radial functions are Gaussian-type orbitals (radial_basis=GTO); "
                             "gap_fit's EQUISPACED_GAUSS and POLY bases are not available: remove it"),
            "nu_r": ("neutral", _equals(2, _whole(0)), "gapfit computes the power spectrum (nu_R=2) only"),
            "nu_s": ("neutral", _equals(2, _whole(0)), "gapfit computes the power spectrum (nu_S=2) only"),
            "z_mix": ("neutral", _is_false, "species mixing is not supported: remove it"),
            "r_mix": ("neutral", _is_false, "radial mixing is not supported: remove it"),
            "sym_mix": ("neutral", _is_false, "channel mixing is not supported: remove it"),
            "coupling": ("neutral", _is_true, "gapfit computes the full tensor product (coupling=T)"),
            "k": ("neutral", _equals(0, _whole(0)), "channel mixing is not supported: remove it"),
            "mix_shift": ("neutral", _equals(0, _whole(0)), "channel mixing is not supported: remove it"),
            "z_map": ("refuse", "species maps are not supported: gapfit keeps one density channel per species"),
            "xml_version": ("refuse", "xml_version belongs to gap_fit's XML files: remove it"),
            "n_species": _species_rule(term),
            "species_z": _species_rule(term),
            "z": _species_rule(term),
            "n_z": _species_rule(term),
            "radial_scaling": ("refuse", "radial_scaling is not a key of gap_fit's soap (gap_fit ignores it "
                                         "silently, so it has no effect there): remove it"),
        })
    else:
        rules.update({
            "theta_uniform": ("set", "theta", _positive),
            "lengthscale_uniform": ("set", "theta", _positive),
            "z1": _species_rule(term),
            "z2": _species_rule(term),
        })
        for key in ("n_max", "l_max", "atom_sigma", "atom_gaussian_width", "backend", "dscribe_mode"):
            rules[key] = ("refuse", f"{key} is a soap key; {term} has none: remove it")
        for key in ("zeta", "soap_exponent"):
            rules[key] = ("refuse", f"{key} is the exponent of soap's dot_product kernel; {term} uses ard_se: "
                                    "remove it")
    if term == "distance_2b":
        rules.update({
            "only_intra": ("neutral", _is_false, "gapfit has no residue-based selection of pairs"),
            "only_inter": ("neutral", _is_false, "gapfit has no residue-based selection of pairs"),
            "resid_name": ("refuse", "gapfit has no residue-based selection of pairs: remove it"),
            "n_exponents": ("neutral", _equals(1, _whole(0)),
                            "gapfit's distance_2b descriptor is the distance itself (one exponent, 1)"),
            "exponents": ("neutral", _equals(1.0, _real),
                          "gapfit's distance_2b descriptor is the distance itself (exponents=1)"),
            "tail_exponent": ("neutral", _equals(0, _whole(-10**6)), "gapfit's distance_2b has no tail term"),
            "tail_range": ("neutral", _equals(1.0, _real), "gapfit's distance_2b has no tail term"),
        })
    if term == "angle_3b":
        rules["z_center"] = _species_rule(term)
        rules["z"] = _species_rule(term)
    return rules


def _distance_nb_rules() -> Dict[str, Rule]:
    """gap_fit's distance_Nb with order=2: gapfit's distance_2b (each pair once, the same delta)."""
    rules = {k: r for k, r in _rules("distance_2b").items()
             if k not in ("only_intra", "only_inter", "resid_name", "n_exponents", "exponents", "tail_exponent",
                          "tail_range")}
    rules["compact_clusters"] = ("neutral", lambda t: _logical(t) in (True, False),
                                 "compact_clusters is T or F")  # the same for a pair
    rules["z"] = _species_rule("distance_2b")
    rules["xml_version"] = ("refuse", "xml_version belongs to gap_fit's XML files: remove it")
    return rules


_RULES = {term: _rules(term) for term in TERM_TYPES}
_RULES["distance_nb"] = _distance_nb_rules()
_DESCRIPTOR_HINTS = {
    "distance_nb": "gapfit reads distance_Nb with order=2 only (as its distance_2b); gapfit's three-body term is "
                   "angle_3b, on other coordinates (r_ij + r_ik, (r_ij - r_ik)², r_jk)",
    "soap_turbo": "gapfit has no soap_turbo: write soap with cutoff, n_max, l_max and atom_sigma",
}


# ---------------------------------------------------------------- parsing
def _split_terms(text: str, where: str) -> List[str]:
    body = text.strip()
    if re.match(r"(?i)gap\s*=", body):
        body = body.split("=", 1)[1]
    body = _unwrap(body)
    return [_unwrap(t) for t in _split(body, ":;", where) if _unwrap(t)]


def _term_name(fields: List[Tuple[str, Optional[str]]], label: str) -> Tuple[str, str, int]:
    """(gapfit term type, name as written, index of the field) of one term's fields."""
    named = []
    for i, (key, value) in enumerate(fields):
        if key.lower() in GAP_FIT_DESCRIPTORS:
            try:
                flag = _logical(value)
            except _Bad:
                raise InputError(f"{label}: {key}={value} is not a term name (write the name alone)",
                                 param="gap") from None
            if flag:
                named.append((i, key))
    if len(named) > 1:
        raise InputError(f"{label}: two term names ({named[0][1]}, {named[1][1]}) in one term; "
                         "separate terms with ':'", param="gap")
    if not named:
        first, value = fields[0]
        if value is None:
            raise InputError(f"{label}: unknown term {first!r}; gapfit's terms are {', '.join(TERM_TYPES)}",
                             param="gap")
        raise InputError(f"{label}: no term name; start the term with one of {', '.join(TERM_TYPES)}",
                         param="gap")
    i, name = named[0]
    if name.lower() not in TERM_TYPES and name.lower() != "distance_nb":
        hint = _DESCRIPTOR_HINTS.get(name.lower(), f"gapfit's terms are {', '.join(TERM_TYPES)}")
        raise InputError(f"{label}: gap_fit's {name} descriptor is not supported by gapfit; {hint}", param="gap")
    return name.lower(), name, i


def parse_gap_string(text: str, where: str = "--gap", notes: Optional[List[str]] = None) -> List[dict]:
    """gapfit's term list from gap_fit's ``gap={...}`` descriptor string.

    Parameters
    ----------
    text : str
        Terms separated by ``:`` (or ``;``), each ``name key=value ...``; values
        may be grouped by ``{...}`` or quotes. An outer ``{...}`` or ``gap={...}``
        is accepted, and so is each term in its own braces. Term names:
        ``soap``, ``distance_2b``, ``angle_3b``, and gap_fit's
        ``distance_Nb order=2``, which is gapfit's ``distance_2b``.
    where : str
        Where the string came from (an option, a config file), for messages.
    notes : list, optional
        If given, sentences are appended to it where the result, read with
        gapfit's meaning and defaults, differs from what gap_fit would fit
        (a default that differs, distance_2b's and angle_3b's delta).

    Returns
    -------
    list of dict
        ``{"type": "soap" | "distance_2b" | "angle_3b", **settings}`` in
        gapfit's names (``theta_uniform`` -> ``theta``; ``sparse_method``
        ``cur_points`` -> ``"cur"``); keys not written are absent.

    Raises
    ------
    InputError
        (``param="gap"``) naming ``where``, the term (position and name) and
        the key, for an unknown term or key, a key gapfit does not support,
        or a value of the wrong type.
    """
    if not isinstance(text, str):
        raise InputError(f"{where}: a gap_fit descriptor string is text, got {type(text).__name__}", param="gap")
    terms = [t for t in _split_terms(text, where) if _split(t, " ,", where)]
    if not terms:
        raise InputError(f"{where}: no terms in {_quote(text)}; write e.g. 'soap cutoff=5.0 n_max=8 l_max=8'",
                         param="gap")
    out = []
    for k, term_text in enumerate(terms, start=1):
        fields = _fields(term_text, f"{where}: term {k}")
        term, written, name_at = _term_name(fields, f"{where}: term {k}")
        label = f"{where}: term {k} ({written})"
        rules = _RULES[term]
        settings: Dict[str, Any] = {"type": term}
        seen: Dict[str, str] = {}
        order = None
        for i, (key, value) in enumerate(fields):
            if i == name_at:
                continue
            low = key.lower()
            if term == "distance_nb" and low == "order":
                try:
                    order = _whole(1)(value)
                except _Bad as exc:
                    raise InputError(f"{label}: key {key!r}: {exc}", param="gap") from None
                continue
            rule = rules.get(low)
            if rule is None:
                if low in GAP_FIT_DESCRIPTORS:
                    continue  # another descriptor flag set to F: means nothing
                known = sorted(k2 for k2, r in rules.items() if r[0] == "set")
                raise InputError(f"{label}: unknown key {key!r}; {written} keys gapfit reads: "
                                 f"{', '.join(known)}", param="gap")
            target = rule[1] if rule[0] == "set" else low
            if target in seen:
                also = "" if seen[target].lower() == low else f" (as {seen[target]!r})"
                raise InputError(f"{label}: key {key!r} is given twice{also}; keep one", param="gap")
            seen[target] = key
            try:
                if rule[0] == "set":
                    settings[rule[1]] = rule[2](value)
                elif rule[0] == "neutral":
                    if not rule[1](value):
                        raise _Bad(f"{key}={_unwrap(value) if value is not None else 'T'} is not supported: "
                                   f"{rule[2]}")
                else:
                    raise _Bad(f"not supported: {rule[1]}")
            except _Bad as exc:
                raise InputError(f"{label}: key {key!r}: {exc}", param="gap") from None
        if term == "distance_nb":
            if order != 2:
                got = "no order" if order is None else f"order={order}"
                raise InputError(f"{label}: {got}: {_DESCRIPTOR_HINTS['distance_nb']}", param="gap")
            settings["type"] = "distance_2b"
        elif notes is not None and term in ("distance_2b", "angle_3b") and "delta" in settings:
            what = "pair from both of its atoms" if term == "distance_2b" else "triplet in both neighbour orders"
            notes.append(f"{label}: gap_fit's {term} counts each {what}, gapfit's counts it once, so delta="
                         f"{settings['delta']:g} gives half gap_fit's prior energy scale; delta="
                         f"{2 * settings['delta']:g} reproduces gap_fit's")
        if notes is not None:
            if term == "soap" and settings.get("backend", "featomic") == "featomic":
                notes.append(f"{label}: gapfit's SOAP radial functions are featomic's Gaussian-type orbitals, "
                             "not gap_fit's basis (EQUISPACED_GAUSS unless radial_basis is given): the same "
                             "n_max and l_max give comparable, not identical, descriptors")
            _default_notes(settings, label, notes)
        out.append(settings)
    return out


def _default_notes(settings: Dict[str, Any], label: str, notes: List[str]) -> None:
    """Where gapfit's default for a setting left out is not gap_fit's."""
    term = settings["type"]
    if "cutoff_transition_width" not in settings:
        notes.append(f"{label}: no cutoff_transition_width: gapfit's default is 1.0 Å, gap_fit's 0.5 Å")
    if "sparse_method" not in settings:
        default = {"soap": "cur_points", "distance_2b": "uniform", "angle_3b": "fps"}[term]
        notes.append(f"{label}: no sparse_method: gapfit's default is {default}, gap_fit's random")


# ---------------------------------------------------------------- formatting
def _format_value(value: Any, label: str, key: str) -> str:
    if isinstance(value, bool):
        raise InputError(f"{label}: {key} = {value!r} is not a number or a name", param="gap")
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return str(int(value))
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        return repr(float(value))
    if isinstance(value, str):
        if not value or re.search(r"[\s,:;{}=\"']", value):
            raise InputError(f"{label}: {key} = {value!r} cannot be written in a gap_fit string", param="gap")
        return value
    if isinstance(value, Mapping):
        if not value:
            raise InputError(f"{label}: {key} is an empty mapping", param="gap")
        parts = []
        for sym, num in value.items():
            parts += [_format_value(sym, label, key), _format_value(num, label, key)]
        return "{" + ":".join(parts) + "}"
    raise InputError(f"{label}: {key} = {value!r} cannot be written in a gap_fit string", param="gap")


def format_gap_string(terms: Sequence[Mapping[str, Any]]) -> str:
    """gap_fit's spelling of a gapfit term list: the inverse of :func:`parse_gap_string`.

    Each term is written as its type followed by its settings in gap_fit's
    names, sorted, ``None`` values left out, e.g.
    ``distance_2b cutoff=5.0 delta=2.0 n_sparse=30 theta_uniform=0.5 : soap ...``.
    ``parse_gap_string(format_gap_string(terms)) == terms`` for every valid
    term list (with ``None`` values removed). gapfit-only values (``sparse_method=fps``,
    ``backend``, ``dscribe_mode``, per-species ``n_sparse={Si:1000:O:500}``)
    are written as such; gap_fit itself would also need ``covariance_type``
    and ``delta`` in each term.

    Raises
    ------
    InputError
        (``param="gap"``) for an unknown term type, a setting the type does
        not have, or a value that is not valid for it.
    """
    if isinstance(terms, (str, bytes)) or not isinstance(terms, Sequence) or not terms:
        raise InputError(f"format_gap_string needs a non-empty list of terms, got {terms!r}", param="gap")
    parts = []
    for k, term in enumerate(terms, start=1):
        if not isinstance(term, Mapping):
            raise InputError(f"format_gap_string: term {k} must be a mapping with a 'type', got {term!r}",
                             param="gap")
        kind = term.get("type")
        if kind not in TERM_TYPES:
            raise InputError(f"format_gap_string: term {k} has type {kind!r}; gapfit's terms are "
                             f"{', '.join(TERM_TYPES)}", param="gap")
        label = f"format_gap_string: term {k} ({kind})"
        words = []
        for key, value in term.items():
            if key == "type" or value is None:
                continue
            if key not in TERM_SETTINGS[kind]:
                raise InputError(f"{label}: setting {key!r} has no gap_fit spelling; {kind} settings: "
                                 f"{', '.join(TERM_SETTINGS[kind])}", param="gap")
            if key == "sparse_method" and isinstance(value, str):
                value = _TO_GAP_FIT_SPARSE.get(value, value)
            if key in _WHOLE_SETTINGS and isinstance(value, float) and value.is_integer():
                value = int(value)  # 8.0 is a fine n_max in Python; gap_fit wants 8
            elif key in _REAL_SETTINGS and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # written 4.0, as it reads back
            words.append((GAP_FIT_SPELLING.get(key, key), _format_value(value, label, key)))
        parts.append(" ".join([kind] + [f"{name}={text}" for name, text in sorted(words)]))
    text = " : ".join(parts)
    parsed = parse_gap_string(text, where="format_gap_string")  # validates every value
    for k, (term, back) in enumerate(zip(terms, parsed), start=1):
        given = {key: value for key, value in term.items() if value is not None}
        if back != given:
            bad = sorted(key for key in given if back.get(key) != given[key])
            raise InputError(f"format_gap_string: term {k} ({term['type']}): {', '.join(bad)} cannot be "
                             "written exactly in a gap_fit string", param="gap")
    return text


# ---------------------------------------------------------------- command line
#: gap_fit's alternative option names (gap_fit_module.f90) -> the name used below.
_COMMAND_ALTKEYS = {
    "at_file": "atoms_filename", "default_sigma": "default_kernel_regularisation",
    "default_local_property_sigma": "default_kernel_regularisation_local_property",
    "hessian_delta": "hessian_displacement", "core_param_file": "baseline_param_filename",
    "core_ip_args": "baseline_ip_args", "sigma_parameter_name": "kernel_regularisation_parameter_name",
    "config_type_sigma": "config_type_kernel_regularisation", "sigma_per_atom": "kernel_regularisation_is_per_atom",
    "do_copy_at_file": "do_copy_atoms_file", "gp_file": "gap_file",
}
#: Options that only steer gap_fit's own output, logging, parallelism or diagnostics: any value is fine.
_COMMAND_IGNORED = ("sparse_separate_file", "verbosity", "openmp_chunk_size", "do_ip_timing",
                    "condition_number_norm", "mpi_blocksize_rows", "mpi_blocksize_cols", "mpi_print_all")
#: Options accepted only at gap_fit's default (which is gapfit's behaviour): (value check, why not otherwise).
_COMMAND_NEUTRAL: Dict[str, Tuple[Callable[[Optional[str]], bool], str]] = {
    "e0_offset": (_equals(0.0, _real), "add the offset to each e0 value instead"),
    "kernel_regularisation_is_per_atom": (_is_true, "gapfit's energy and virial sigmas are per atom "
                                                    "(scaled by sqrt(N)), as with sigma_per_atom=T"),
    "sparse_use_actual_gpcov": (_is_false, "gapfit's sparse-point selection does not use the GP covariance"),
    "sparsify_only_no_fit": (_is_false, "gapfit fit always fits; gapfit fit --dry-run checks data and settings"),
    "config_type_parameter_name": (lambda t: _word(t) == "config_type",
                                   "gapfit reads the config type from info['config_type']; rename the key "
                                   "in the training files"),
    "kernel_regularisation_parameter_name": (lambda t: _word(t) == "sigma",
                                             "gapfit reads per-frame sigmas from info keys energy_sigma, "
                                             "force_sigma and virial_sigma; rename the keys in the training "
                                             "files"),
    "force_mask_parameter_name": (lambda t: _word(t) == "force_mask", "gapfit does not mask forces"),
    "local_property_mask_parameter_name": (lambda t: _word(t) == "local_property_mask",
                                           "gapfit does not fit local properties"),
    "local_property_parameter_name": (lambda t: _word(t) == "local_property", "gapfit does not fit local properties"),
    "hessian_parameter_name": (lambda t: _word(t) == "hessian", "gapfit does not fit Hessians"),
    "parameter_name_prefix": (lambda t: t is not None and _unwrap(t) == "",
                              "write the full key names in energy_parameter_name, force_parameter_name and "
                              "stress_parameter_name instead"),
}
_COMMAND_REFUSED = {
    "local_property0": "gapfit does not fit local properties",
    "template_file": "gapfit has no template file",
    "linear_system_dump_file": "gapfit does not dump its linear system",
    "virial_parameter_name": "gapfit reads stresses, not virials: store each frame's stress = -virial / volume "
                             "(eV/Å³, ASE's sign, Voigt order xx yy zz yz xz xy) in the training files and "
                             "give stress_parameter_name (gapfit's --stress-key), or remove "
                             "virial_parameter_name to fit energies and forces only",
    "--help": "gapfit fit --help lists gapfit's options",
}
#: The options a translation uses, in gap_fit's usual spelling (for messages).
_COMMAND_KNOWN = ("at_file", "gap", "gp_file", "default_sigma", "config_type_sigma", "e0", "e0_method",
                  "sparse_jitter", "core_param_file", "core_ip_args", "energy_parameter_name",
                  "force_parameter_name", "stress_parameter_name", "rnd_seed", "dryrun", "config_file",
                  "do_copy_at_file", "sparse_separate_file", "export_covariance", "verbosity")


def _command_text(argv_or_text: Union[str, Sequence[str]]) -> str:
    """One line of ``key=value`` fields, as gap_fit joins its arguments (param_read_args)."""
    if isinstance(argv_or_text, str):
        lines = []
        for line in argv_or_text.replace("\\\r\n", " ").replace("\\\n", " ").splitlines():
            lines.append(_strip_comment(line))
        return " ".join(lines)
    parts = []
    for arg in argv_or_text:
        arg = str(arg)
        if " " in arg.strip():
            if "=" in arg:
                key, value = arg.split("=", 1)
                arg = f'{key}="{value}"' if value[:1] not in ("'", '"', "{") else arg
            elif arg[:1] not in ("{", "'", '"'):
                arg = f'"{arg}"'
        parts.append(arg)
    return " ".join(parts)


def _strip_comment(line: str) -> str:
    """The line up to a '#' that starts a word outside quotes (shell-style comments, as in gap_fit's docs)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _drop_program(fields: List[Tuple[str, Optional[str]]]) -> List[Tuple[str, Optional[str]]]:
    """Fields after the program name (``gap_fit``, ``/path/gap_fit``, ``mpirun -np 4 gap_fit``)."""
    for i, (key, value) in enumerate(fields):
        if value is not None:
            break
        if os.path.basename(key.lstrip("!")).lower() == "gap_fit":
            return fields[i + 1:]
    return fields


def _sigmas(text: Optional[str], label: str) -> List[float]:
    values = [_real(v) for v in _split(_unwrap(text or ""), " ,", label, param=None)]
    if len(values) not in (3, 4):
        raise _Bad(f"takes 4 numbers {{energy force virial hessian}}, got {len(values)}")
    return values


def parse_gap_fit_command(argv_or_text: Union[str, Sequence[str]], _in_config_file: bool = False) -> Dict[str, Any]:
    """gapfit's settings from a whole gap_fit command line.

    Parameters
    ----------
    argv_or_text : str or sequence of str
        The command as typed (``gap_fit at_file=train.xyz gap={...} ...``;
        backslash line continuations and ``#`` comments are allowed) or its
        argument list (``sys.argv``-style). A leading ``gap_fit`` (or a path
        to it, or ``mpirun ... gap_fit``) is skipped.

    Returns
    -------
    dict with, as present in the command:
        ``"params"``: :class:`gapfit.GAP` parameters (``sigma_energy``,
        ``sigma_forces``, ``sigma_virial``, ``config_type_sigma``, ``e0``,
        ``jitter``, ``seed``, ``energy_key``, ``forces_key``, ``stress_key``);
        ``"terms"``: the term list of ``gap={...}``; ``"train"``: the training
        file (``at_file``); ``"output"``: the model file (``gp_file``, with
        ``.xml`` replaced by ``.npz``); ``"core_file"``: the pair baseline file
        (``core_param_file``, when ``core_ip_args`` is given, as gap_fit uses it
        only then); ``"e0_all_species"``: a single ``e0`` number, which gap_fit
        applies to every species (set ``e0`` to it for each species of the
        data); ``"dry_run"``: True for ``dryrun=T``; ``"notes"``: sentences on
        what gapfit does differently from gap_fit for this command (always
        present; show them to the user).

    Raises
    ------
    InputError
        (``param="gap"`` for the descriptor string, else the gap_fit option)
        naming the option for an unknown option, one gapfit does not support,
        or a bad value.
    """
    text = _command_text(argv_or_text)
    fields = _drop_program(_fields(text, "gap_fit command", param=None))
    names = {}
    for key, value in fields:
        low = key.lower()
        name = _COMMAND_ALTKEYS.get(low, low)
        if name == "config_file":
            if _in_config_file:
                raise InputError("gap_fit config_file: a config file cannot name another one",
                                 param="config_file")
            if len(fields) > 1:
                raise InputError("gap_fit config_file: gap_fit reads only the config file and ignores the other "
                                 "options; give either config_file or the options", param="config_file")
            path = _unwrap(value or "")
            try:
                with open(path, encoding="utf-8") as fh:
                    content = fh.read()
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise InputError(f"gap_fit config_file={path}: cannot read it ({why})",
                                 param="config_file") from None
            return parse_gap_fit_command(content, _in_config_file=True)
        if name in names:
            raise InputError(f"gap_fit option {key!r} is given twice (also as {names[name][0]!r}); keep one",
                             param=name)
        names[name] = (key, value)

    result: Dict[str, Any] = {"params": {}}
    params: Dict[str, Any] = result["params"]
    notes: List[str] = []
    # default_sigma before config_type_sigma, whose 'default' entry replaces it
    order = sorted(names, key=lambda n: n != "default_kernel_regularisation")
    for name in order:
        key, value = names[name]
        label = f"gap_fit option {key}"
        try:
            _command_option(name, key, value, label, result, params, notes)
        except _Bad as exc:
            raise InputError(f"{label}: {exc}", param=name) from None
        except InputError as exc:
            if exc.param is None:
                raise InputError(str(exc), param=name) from None
            raise
    _finish_core(names, result, notes)
    notes.append("gapfit adds ZBL core repulsion to the baseline by default and gap_fit does not: "
                 "--no-core-repulsion (core_repulsion: false) leaves it out")
    if "force_parameter_name" not in names:
        notes.append("gap_fit reads forces from the per-atom column 'force' unless force_parameter_name is given; "
                     "gapfit reads the calculator's 'forces' (what ASE's extended XYZ reader makes of a 'forces' "
                     "column): give forces_key='force' (--forces-key force) if the files have 'force'")
    if "stress_parameter_name" not in names:
        notes.append("gap_fit also reads virials (info key 'virial'); gapfit reads only stresses "
                     "(the calculator's 'stress', or stress_key)")
    result["notes"] = notes
    return result


def _command_option(name: str, key: str, value: Optional[str], label: str, result: Dict[str, Any],
                    params: Dict[str, Any], notes: List[str]) -> None:
    if name in _COMMAND_IGNORED:
        return
    if name in _COMMAND_REFUSED:
        raise _Bad(f"not supported: {_COMMAND_REFUSED[name]}")
    if name in _COMMAND_NEUTRAL:
        check, why = _COMMAND_NEUTRAL[name]
        if not check(value):
            raise _Bad(f"{key}={_unwrap(value) if value is not None else 'T'} is not supported: {why}")
        return
    if name == "atoms_filename":
        result["train"] = _word(value)
    elif name == "gap_file":
        out = _word(value)
        if out.lower().endswith(".xml"):
            notes.append(f"gapfit writes one .npz model file, not gap_fit's XML: output {out[:-4]}.npz")
            out = out[:-4] + ".npz"
        result["output"] = out
    elif name == "gap":
        result["terms"] = parse_gap_string(_word(value), where=f"gap_fit option {key}", notes=notes)
    elif name == "default_kernel_regularisation":
        _set_default_sigmas(_sigmas(value, label), "default_sigma", params, notes)
    elif name == "config_type_kernel_regularisation":
        _config_type_sigma(value, label, params, notes)
    elif name == "e0":
        _e0(value, label, result, params)
    elif name == "e0_method":
        method = _word(value).lower()
        if method == "average":
            raise _Bad("e0_method=average is not supported: gapfit takes e0 from isolated-atom frames, else by "
                       "least squares on the training energies; give e0 explicitly for a fixed value")
        if method != "isolated":
            raise _Bad(f"unknown e0_method {_word(value)!r}; gap_fit's are isolated and average")
        notes.append("e0_method=isolated: gapfit takes e0 from isolated-atom frames too, but falls back to a "
                     "least-squares e0 for a species without one (gap_fit stops)")
    elif name == "sparse_jitter":
        params["jitter"] = _positive(value)
        notes.append("sparse_jitter is absolute in gap_fit (eV², added to K_MM's diagonal) and relative to "
                     "delta² in gapfit (jitter); the number is passed on unchanged")
    elif name == "rnd_seed":
        seed = _whole(-1)(value)
        if seed >= 0:
            params["seed"] = seed
            notes.append("rnd_seed -> seed: gapfit's random choices are its own, so the same seed does not give "
                         "gap_fit's sparse points")
    elif name == "energy_parameter_name":
        params["energy_key"] = _word(value)
    elif name == "force_parameter_name":
        params["forces_key"] = _word(value)
    elif name == "stress_parameter_name":
        params["stress_key"] = _word(value)
    elif name == "do_copy_atoms_file":
        if _logical(value):
            notes.append("do_copy_at_file: gapfit never copies the training data into the model file")
    elif name == "export_covariance":
        if _logical(value):
            notes.append("export_covariance: a gapfit model always carries what its uncertainties need")
    elif name == "dryrun":
        if _logical(value):
            result["dry_run"] = True
    elif name in ("default_kernel_regularisation_local_property",):
        _real(value)
        notes.append(f"{key} applies to local-property data, which gapfit does not fit; ignored")
    elif name == "hessian_displacement":
        _real(value)
        notes.append(f"{key} applies to Hessian data, which gapfit does not fit; ignored")
    elif name in ("baseline_param_filename", "baseline_ip_args"):
        _word(value)  # handled with its partner in _finish_core
    else:
        raise _Bad(f"unknown gap_fit option; gap_fit options gapfit translates include "
                   f"{', '.join(_COMMAND_KNOWN)} (docs/gap_fit.md has them all)")


def _set_default_sigmas(values: List[float], what: str, params: Dict[str, Any], notes: List[str]) -> None:
    for name, v in zip(("sigma_energy", "sigma_forces", "sigma_virial"), values):
        group = name.split("_")[1]
        if v < 0:
            raise _Bad(f"the {group} sigma must not be negative, got {v}")
        if v == 0:
            notes.append(f"{what}: a zero {group} sigma is left out (gap_fit refuses {group} data with a zero "
                         f"sigma); gapfit's default sigma_{group} applies")
        else:
            params[name] = v
    if len(values) == 4 and values[3] != 0:
        notes.append(f"{what}: the Hessian sigma ({values[3]:g}) is ignored: gapfit does not fit Hessians")


def _config_type_sigma(value: Optional[str], label: str, params: Dict[str, Any], notes: List[str]) -> None:
    fields = _split(_unwrap(value or ""), " :;", label, param=None)
    if not fields or len(fields) % 5:
        raise _Bad(f"takes groups of 5 fields {{config_type:energy:force:virial:hessian:...}}, got {len(fields)} "
                   "fields")
    table: Dict[str, Dict[str, float]] = {}
    seen = set()
    hessian = False
    for i in range(0, len(fields), 5):
        ct = _unwrap(fields[i])
        values = [_real(v) for v in fields[i + 1:i + 5]]
        if ct in seen:
            raise _Bad(f"config_type {ct!r} appears twice")
        seen.add(ct)
        hessian = hessian or values[3] != 0
        if ct == "default":
            # gap_fit's 'default' entry replaces default_sigma: it applies to every frame
            # whose config_type has no entry of its own.
            for name in ("sigma_energy", "sigma_forces", "sigma_virial"):
                params.pop(name, None)
            _set_default_sigmas(values[:3], "config_type_sigma[default]", params, notes)
            continue
        entry = {}
        for group, v in zip(("energy", "forces", "virial"), values[:3]):
            if v < 0:
                raise _Bad(f"config_type {ct!r}: the {group} sigma must not be negative, got {v}")
            if v == 0:
                notes.append(f"config_type_sigma[{ct}]: a zero {group} sigma is left out (gap_fit refuses data "
                             "with a zero sigma); the model-level sigma applies")
            else:
                entry[group] = v
        if entry:
            table[ct] = entry
    if hessian:
        notes.append("config_type_sigma: the Hessian sigmas are ignored: gapfit does not fit Hessians")
    if table:
        params["config_type_sigma"] = table


def _e0(value: Optional[str], label: str, result: Dict[str, Any], params: Dict[str, Any]) -> None:
    fields = _split(_unwrap(value or ""), ":", label, param=None)
    if len(fields) == 1:
        result["e0_all_species"] = _real(fields[0])
        return
    if not fields or len(fields) % 2:
        raise _Bad("takes one number (every species) or pairs {Si:-158.5:O:-432.0}")
    e0: Dict[Union[int, str], float] = {}
    for sym, num in zip(fields[::2], fields[1::2]):
        species = _species_key(sym)
        if species in e0:
            raise _Bad(f"names {sym} twice")
        e0[species] = _real(num)
    params["e0"] = e0


def _finish_core(names: Dict[str, Tuple[str, Optional[str]]], result: Dict[str, Any], notes: List[str]) -> None:
    """core_param_file / core_ip_args: gap_fit subtracts a baseline only when core_ip_args is given."""
    has_file = "baseline_param_filename" in names
    has_args = "baseline_ip_args" in names
    if has_args:
        path = _unwrap(names["baseline_param_filename"][1] or "") if has_file else "quip_params.xml"
        result["core_file"] = path
        args = _unwrap(names["baseline_ip_args"][1] or "")
        notes.append(f"core_ip_args={args!r} selects a potential inside a QUIP XML file; gapfit's --core-file "
                     f"({path}) must hold a tabulated pair potential in gapfit's format")
    elif has_file:
        notes.append("core_param_file without core_ip_args: gap_fit subtracts no baseline, and neither does "
                     "this translation")
